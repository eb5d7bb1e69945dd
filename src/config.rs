//! Daemon configuration: flags, `RELIST_*` environment variables, an optional TOML file, and
//! defaults, in that order of precedence.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use crate::fingerprint::DecodeLimits;
use crate::policy::Thresholds;

/// Default gRPC listen address: loopback, so a fresh daemon is not exposed by accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./relist-data";

/// The optional TOML file (`--config`). Every key is optional.
///
/// ```toml
/// [server]
/// listen = "127.0.0.1:50051"
/// data_dir = "/var/lib/relist"
/// [limits]
/// max_image_bytes = 20971520
/// max_image_pixels = 40000000
/// [policy]
/// pdq_reupload = 31
/// [history]
/// retention_days = 730
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub server: ServerSection,
    pub limits: LimitsSection,
    pub policy: Thresholds,
    pub history: HistorySection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistorySection {
    /// Delete match history older than this many days (absent or 0: keep forever).
    pub retention_days: Option<u32>,
    /// Keep small thumbnails of takedown and matched images (default true).
    pub thumbnails: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    pub max_image_bytes: Option<usize>,
    pub max_image_pixels: Option<u64>,
}

impl FileConfig {
    /// Reads a TOML config file; unknown keys are errors, so typos do not pass silently.
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))
    }
}

/// The resolved configuration the daemon runs with.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub limits: DecodeLimits,
    pub thresholds: Thresholds,
    /// Keep thumbnails for the history page.
    pub thumbnails: bool,
    /// Delete match history older than this; `None` keeps it forever.
    pub history_retention: Option<std::time::Duration>,
}
