//! `relist serve`: the daemon. Maps the flags, the environment and the TOML file to the
//! [`ServeConfig`] that relist-server starts from.
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use relist_core::disk::DEFAULT_MIN_FREE_BYTES;
use relist_core::fingerprint::{DecodeLimits, Detection};
use relist_core::limits::RequestLimits;
use relist_core::store::DEFAULT_CACHE_BYTES;
use relist_server::config::{
    Exposure, FileConfig, LimitsSection, ServeConfig, TlsFiles, DEFAULT_DATA_DIR, DEFAULT_LISTEN,
};

/// `relist serve`: flags and `RELIST_*` variables over the TOML file over the defaults.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file; flags and environment variables override it.
    #[arg(long, env = "RELIST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory of the sled store [default: ./relist-data].
    #[arg(long, env = "RELIST_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Shared PostgreSQL store, postgres://USER@HOST:PORT/DB: run as one of several replicas
    /// of one bank (docs/scale-out.md). Unset: the embedded store in --data-dir is the bank.
    #[arg(long, env = "RELIST_STORE")]
    pub store: Option<String>,
    /// With --store: seconds a replica holds a chunk of a shared batch job without renewing
    /// it; a replica that dies loses its chunk to another after this [default: 30].
    #[arg(long, env = "RELIST_BATCH_LEASE_SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub batch_lease_secs: Option<u64>,
    /// gRPC listen address; port 0 picks a free port [default: 127.0.0.1:50051].
    #[arg(long, env = "RELIST_LISTEN", value_parser = parse_listen)]
    pub listen: Option<SocketAddr>,
    /// Largest accepted encoded image, in bytes [default: 20 MiB].
    #[arg(long, env = "RELIST_MAX_IMAGE_BYTES")]
    pub max_image_bytes: Option<usize>,
    /// Largest accepted image, in pixels (decompression-bomb guard) [default: 40,000,000].
    #[arg(long, env = "RELIST_MAX_IMAGE_PIXELS")]
    pub max_image_pixels: Option<u64>,
    /// PDQ distance at or under which an image alone is a re-upload.
    #[arg(long, env = "RELIST_PDQ_REUPLOAD")]
    pub pdq_reupload: Option<u32>,
    /// PDQ distance at or under which an image is evidence at all.
    #[arg(long, env = "RELIST_PDQ_REVIEW")]
    pub pdq_review: Option<u32>,
    /// Title simhash distance at or under which a title supports an image match.
    #[arg(long, env = "RELIST_TEXT_SUPPORT")]
    pub text_support: Option<u32>,
    /// Title simhash distance at or under which a title alone is sent to review.
    #[arg(long, env = "RELIST_TEXT_REVIEW")]
    pub text_review: Option<u32>,
    /// Do not keep small thumbnails of takedown and matched images (they feed the history page).
    #[arg(long, env = "RELIST_NO_THUMBNAILS")]
    pub no_thumbnails: bool,
    /// Do not hash regions of photos (borders, frames, collages go undetected; faster).
    #[arg(long, env = "RELIST_NO_REGIONS")]
    pub no_regions: bool,
    /// Do not compute local features of photos (crops, small rotations, overlays go
    /// undetected; about 5x faster checks and ~400x fewer index entries per stored photo).
    #[arg(long, env = "RELIST_NO_LOCAL_FEATURES")]
    pub no_local_features: bool,
    /// Delete match history older than this many days (0: keep forever) [default: keep].
    #[arg(long, env = "RELIST_HISTORY_RETENTION_DAYS")]
    pub history_retention_days: Option<u32>,
    /// Also serve the analysts' web page (match history, reviews) and Prometheus `/metrics`
    /// on this address, e.g. 127.0.0.1:8080. Once API keys exist the page's API needs an
    /// analyst or admin key. It speaks plain HTTP: keep it on loopback or behind a TLS proxy.
    /// [default: no web page]
    #[arg(long, env = "RELIST_HTTP", value_parser = parse_listen)]
    pub http: Option<SocketAddr>,
    /// Also serve Prometheus `/metrics` alone on this address (it is on `--http` too).
    #[arg(long, env = "RELIST_METRICS", value_parser = parse_listen)]
    pub metrics: Option<SocketAddr>,
    /// Allow serving without API keys on a non-loopback address (everyone may do anything).
    #[arg(long, env = "RELIST_INSECURE")]
    pub insecure: bool,
    /// Serve gRPC over TLS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "RELIST_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "RELIST_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this PEM CA (mutual TLS).
    #[arg(long, env = "RELIST_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Free space to keep on the store's disk: under it writes are refused with
    /// RESOURCE_EXHAUSTED ("disk full") while checks go on; 0 disables it [default: 64 MiB].
    #[arg(long, env = "RELIST_MIN_FREE_DISK_BYTES")]
    pub min_free_disk_bytes: Option<u64>,
    /// sled's page cache, in MiB: resident memory grows with writes until it is full. It
    /// serves history queries; matching runs on the in-memory index [default: 256].
    #[arg(long, env = "RELIST_CACHE_MB")]
    pub cache_mb: Option<u64>,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// `[limits]` of the config file, as flags.
#[derive(Debug, Default, Args)]
pub struct LimitArgs {
    /// Largest gRPC message either way, in bytes [default: 64 MiB].
    #[arg(long, env = "RELIST_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Most images per listing [default and maximum: 32].
    #[arg(long, env = "RELIST_MAX_IMAGES")]
    pub max_images: Option<usize>,
    /// Longest listing title, in characters [default: 1000].
    #[arg(long, env = "RELIST_MAX_TITLE_CHARS")]
    pub max_title_chars: Option<usize>,
    /// Longest listing description, in characters [default: 20000].
    #[arg(long, env = "RELIST_MAX_DESCRIPTION_CHARS")]
    pub max_description_chars: Option<usize>,
    /// Largest QueryMatches page [default and maximum: 500].
    #[arg(long, env = "RELIST_MAX_PAGE_SIZE")]
    pub max_page_size: Option<usize>,
    /// Per-request deadline, e.g. 30s; past it: DEADLINE_EXCEEDED [default: 30s].
    #[arg(long, env = "RELIST_REQUEST_TIMEOUT", value_parser = humantime::parse_duration)]
    pub request_timeout: Option<std::time::Duration>,
    /// Requests served at once (a stream counts as one); more are refused with
    /// RESOURCE_EXHAUSTED, not queued [default: 64].
    #[arg(long, env = "RELIST_MAX_CONCURRENT_REQUESTS")]
    pub max_concurrent_requests: Option<usize>,
}

impl LimitArgs {
    /// Flags over the file's `[limits]` over defaults.
    pub fn resolve(&self, file: &LimitsSection) -> anyhow::Result<RequestLimits> {
        let d = RequestLimits::default();
        let request_timeout = match (&self.request_timeout, &file.request_timeout) {
            (Some(t), _) => *t,
            (None, Some(s)) => humantime::parse_duration(s).with_context(|| format!("limits.request_timeout {s:?}"))?,
            (None, None) => d.request_timeout,
        };
        let limits = RequestLimits {
            max_message_bytes: self
                .max_message_bytes
                .or(file.max_message_bytes)
                .unwrap_or(d.max_message_bytes),
            max_images: self.max_images.or(file.max_images).unwrap_or(d.max_images),
            max_title_chars: self
                .max_title_chars
                .or(file.max_title_chars)
                .unwrap_or(d.max_title_chars),
            max_description_chars: self
                .max_description_chars
                .or(file.max_description_chars)
                .unwrap_or(d.max_description_chars),
            max_page_size: self.max_page_size.or(file.max_page_size).unwrap_or(d.max_page_size),
            request_timeout,
            max_concurrent_requests: self
                .max_concurrent_requests
                .or(file.max_concurrent_requests)
                .unwrap_or(d.max_concurrent_requests),
        };
        limits.validate().map_err(|e| anyhow::anyhow!("invalid limits: {e}"))?;
        Ok(limits)
    }
}

impl ServeArgs {
    /// Flags and environment over the config file over defaults.
    pub fn resolve(&self) -> anyhow::Result<ServeConfig> {
        let file = match &self.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let defaults = DecodeLimits::default();
        let mut thresholds = file.policy;
        if let Some(v) = self.pdq_reupload {
            thresholds.pdq_reupload = v;
        }
        if let Some(v) = self.pdq_review {
            thresholds.pdq_review = v;
        }
        if let Some(v) = self.text_support {
            thresholds.text_support = v;
        }
        if let Some(v) = self.text_review {
            thresholds.text_review = v;
        }
        if let Err(e) = thresholds.validate() {
            bail!("invalid policy: {e}");
        }
        let requests = self.limits.resolve(&file.limits)?;
        let cache_mb = self
            .cache_mb
            .or(file.server.cache_mb)
            .unwrap_or(DEFAULT_CACHE_BYTES >> 20);
        if !(1..=1 << 20).contains(&cache_mb) {
            bail!("server.cache_mb must be between 1 and 1048576 (MiB), not {cache_mb}");
        }
        Ok(ServeConfig {
            requests,
            cache_bytes: cache_mb << 20,
            min_free_disk_bytes: self
                .min_free_disk_bytes
                .or(file.limits.min_free_disk_bytes)
                .unwrap_or(DEFAULT_MIN_FREE_BYTES),
            listen: match self.listen.or(file.server.listen) {
                Some(a) => a,
                None => DEFAULT_LISTEN.parse()?,
            },
            store: self.store.clone().or(file.store.url).filter(|u| !u.is_empty()),
            batch_lease: self
                .batch_lease_secs
                .map_or(relist_server::grpc::jobs::DEFAULT_LEASE, std::time::Duration::from_secs),
            data_dir: self
                .data_dir
                .clone()
                .or(file.server.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            limits: DecodeLimits {
                max_bytes: self
                    .max_image_bytes
                    .or(file.limits.max_image_bytes)
                    .unwrap_or(defaults.max_bytes),
                max_pixels: self
                    .max_image_pixels
                    .or(file.limits.max_image_pixels)
                    .unwrap_or(defaults.max_pixels),
            },
            thresholds,
            thumbnails: !self.no_thumbnails && file.history.thumbnails.unwrap_or(true),
            detection: Detection {
                regions: !self.no_regions && file.matching.regions.unwrap_or(true),
                local_features: !self.no_local_features && file.matching.local_features.unwrap_or(true),
            },
            history_retention: self
                .history_retention_days
                .or(file.history.retention_days)
                .filter(|d| *d > 0)
                .map(|d| std::time::Duration::from_secs(u64::from(d) * 86_400)),
            exposure: Exposure {
                http: self.http,
                metrics: self.metrics,
                insecure: self.insecure,
                tls: match (&self.tls_cert, &self.tls_key) {
                    (Some(cert), Some(key)) => Some(TlsFiles {
                        cert: cert.clone(),
                        key: key.clone(),
                        client_ca: self.tls_client_ca.clone(),
                    }),
                    _ => None,
                },
            },
        })
    }
}

/// Runs `relist serve` until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    Ok(relist_server::daemon::run(args.resolve()?).await?)
}

/// A listen address as IP:port or host name:port (`localhost:50051`): a name is resolved once,
/// at start, to its first address.
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    use std::net::ToSocketAddrs;
    let mut addrs = s
        .to_socket_addrs()
        .map_err(|e| format!("{s}: not an address (IP:PORT or HOST:PORT): {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{s}: the name resolves to no address"))
}
