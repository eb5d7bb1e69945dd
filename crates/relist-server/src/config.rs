//! Daemon configuration: the optional TOML file ([`FileConfig`]) and the resolved settings
//! the daemon starts with ([`ServeConfig`]). The `relist` binary lays flags and `RELIST_*`
//! environment variables over the file and the defaults, in that order of precedence; the
//! daemon itself never sees a flag.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use relist_core::fingerprint::{DecodeLimits, Detection};
use relist_core::limits::RequestLimits;
use relist_core::policy::Thresholds;
use serde::Deserialize;

use crate::ServerError;

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
    /// `[server]`: where to listen and store.
    pub server: ServerSection,
    /// `[limits]`: request sizes, deadlines, load shedding, the disk reserve.
    pub limits: LimitsSection,
    /// `[policy]`: the matching thresholds (see [`Thresholds`]).
    pub policy: Thresholds,
    /// `[history]`: retention and thumbnails.
    pub history: HistorySection,
    /// `[matching]`: which fingerprints beyond the whole-image hashes are computed.
    pub matching: MatchingSection,
    /// `[store]`: a shared PostgreSQL store instead of the embedded one.
    pub store: StoreSection,
}

/// `[store]` of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// `postgres://USER@HOST:PORT/DB`: the shared store this daemon is a replica of. Unset:
    /// the embedded sled store in `data_dir` is the bank.
    pub url: Option<String>,
}

/// `[matching]` of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatchingSection {
    /// Hash regions of photos (default true).
    pub regions: Option<bool>,
    /// Local features of photos (default true).
    pub local_features: Option<bool>,
}

/// `[history]` of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistorySection {
    /// Delete match history older than this many days (absent or 0: keep forever).
    pub retention_days: Option<u32>,
    /// Keep small thumbnails of takedown and matched images (default true).
    pub thumbnails: Option<bool>,
}

/// `[server]` of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    /// gRPC listen address (default [`DEFAULT_LISTEN`]).
    pub listen: Option<SocketAddr>,
    /// The sled store's directory (default [`DEFAULT_DATA_DIR`]).
    pub data_dir: Option<PathBuf>,
    /// sled's page cache, in MiB (default 256).
    pub cache_mb: Option<u64>,
}

/// `[limits]` of the config file; each key overrides one default of [`RequestLimits`] or
/// [`DecodeLimits`].
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// Largest accepted encoded image, in bytes.
    pub max_image_bytes: Option<usize>,
    /// Largest accepted image, in pixels (decompression-bomb guard).
    pub max_image_pixels: Option<u64>,
    /// Largest gRPC message either way, in bytes.
    pub max_message_bytes: Option<usize>,
    /// Most images per listing.
    pub max_images: Option<usize>,
    /// Longest listing title, in characters.
    pub max_title_chars: Option<usize>,
    /// Longest listing description, in characters.
    pub max_description_chars: Option<usize>,
    /// Largest QueryMatches page.
    pub max_page_size: Option<usize>,
    /// Per-request deadline, humantime (e.g. "30s").
    pub request_timeout: Option<String>,
    /// Requests served at once; more are refused, not queued.
    pub max_concurrent_requests: Option<usize>,
    /// Free space kept on the store's disk; writes are refused under it (0: no reserve).
    pub min_free_disk_bytes: Option<u64>,
}

impl FileConfig {
    /// Reads a TOML config file; unknown keys are errors, so typos do not pass silently.
    pub fn load(path: &Path) -> Result<FileConfig, ServerError> {
        let text = std::fs::read_to_string(path).map_err(|e| ServerError::ReadConfig(path.to_path_buf(), e))?;
        toml::from_str(&text).map_err(|e| ServerError::ParseConfig(path.to_path_buf(), e))
    }
}

/// The resolved configuration the daemon runs with.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// gRPC listen address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The sled store's directory (with a shared store: this replica's mirror, history and keys).
    pub data_dir: PathBuf,
    /// The shared PostgreSQL store (`postgres://...`), or `None` for the embedded sled store.
    pub store: Option<String>,
    /// How long a replica holds a batch-job chunk without renewing it (shared store only).
    pub batch_lease: std::time::Duration,
    /// Image decoding limits (bytes, pixels).
    pub limits: DecodeLimits,
    /// The matching policy's thresholds.
    pub thresholds: Thresholds,
    /// Keep thumbnails for the history page.
    pub thumbnails: bool,
    /// Fingerprints computed beyond the whole-image hashes.
    pub detection: Detection,
    /// Delete match history older than this; `None` keeps it forever.
    pub history_retention: Option<std::time::Duration>,
    /// Per-request limits and load shedding.
    pub requests: RequestLimits,
    /// Free space kept on the store's disk (see [`relist_core::disk`]).
    pub min_free_disk_bytes: u64,
    /// sled's page cache, in bytes (see [`relist_core::store::DEFAULT_CACHE_BYTES`]).
    pub cache_bytes: u64,
    /// How the daemon faces the network beyond its gRPC address.
    pub exposure: Exposure,
}

/// The daemon's other addresses, its TLS, and whether it may serve without API keys beyond
/// loopback. These come from flags and the environment only, not from the config file.
#[derive(Clone, Debug, Default)]
pub struct Exposure {
    /// Also serve the analysts' web page and `/metrics` here.
    pub http: Option<SocketAddr>,
    /// Also serve `/metrics` alone here.
    pub metrics: Option<SocketAddr>,
    /// Serve without API keys on a non-loopback address.
    pub insecure: bool,
    /// Serve gRPC over TLS.
    pub tls: Option<TlsFiles>,
}

/// The daemon's TLS files (PEM).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key of `cert`.
    pub key: PathBuf,
    /// Require client certificates signed by this CA (mutual TLS).
    pub client_ca: Option<PathBuf>,
}
