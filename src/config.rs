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
/// cache_mb = 256
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
    pub matching: MatchingSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatchingSection {
    /// Hash regions of photos (default true).
    pub regions: Option<bool>,
    /// Local features of photos (default true).
    pub local_features: Option<bool>,
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
    /// sled's page cache, in MiB (default 256).
    pub cache_mb: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    pub max_image_bytes: Option<usize>,
    pub max_image_pixels: Option<u64>,
    pub max_message_bytes: Option<usize>,
    pub max_images: Option<usize>,
    pub max_title_chars: Option<usize>,
    pub max_description_chars: Option<usize>,
    pub max_page_size: Option<usize>,
    /// Per-request deadline, humantime (e.g. "30s").
    pub request_timeout: Option<String>,
    pub max_concurrent_requests: Option<usize>,
    /// Free space kept on the store's disk; writes are refused under it (0: no reserve).
    pub min_free_disk_bytes: Option<u64>,
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
    /// Fingerprints computed beyond the whole-image hashes.
    pub detection: crate::fingerprint::Detection,
    /// Delete match history older than this; `None` keeps it forever.
    pub history_retention: Option<std::time::Duration>,
    /// Per-request limits and load shedding.
    pub requests: RequestLimits,
    /// Free space kept on the store's disk (see [`crate::disk`]).
    pub min_free_disk_bytes: u64,
    /// sled's page cache, in bytes (see [`crate::store::DEFAULT_CACHE_BYTES`]).
    pub cache_bytes: u64,
}

pub use relist_core::limits::RequestLimits;
