//! The `relist` command line: the daemon (`serve`) and the client commands that talk to it
//! over gRPC (`takedown add|remove|get`, `check`). Every client command takes `--json`.
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::api::{self, pb};
use crate::bank::Bank;
use crate::config::{FileConfig, RequestLimits, ServeConfig, DEFAULT_DATA_DIR, DEFAULT_LISTEN};
use crate::domain::{CheckOutcome, ListingFingerprints, Registered, Takedown};
use crate::fingerprint::DecodeLimits;
use crate::transport::Connection;

#[derive(Debug, Parser)]
#[command(
    name = "relist",
    version,
    about = "Remembers taken-down listings and catches their re-uploads"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC daemon on an embedded sled store.
    Serve(ServeArgs),
    /// Register, remove or show taken-down listings.
    #[command(subcommand)]
    Takedown(TakedownCommand),
    /// Check whether a listing is a re-upload of a taken-down one.
    Check(CheckArgs),
    /// Search the match history (newest first); CSV and JSON export stream.
    History(HistoryArgs),
    /// Match statistics over a time range.
    Stats(StatsArgs),
    /// Label a recorded match as confirmed or false-positive (or take a label back).
    Review(ReviewArgs),
    /// Re-check a whole catalog (JSON Lines or CSV) and write one result row per listing;
    /// resumable, bounded memory. See `relist batch --help` for the formats.
    #[command(after_long_help = crate::batch::FORMATS_HELP)]
    Batch(crate::batch::BatchArgs),
    /// Create, list or revoke API keys (admin). Through the daemon, or with --data-dir
    /// directly on a stopped daemon's store (how the first admin key is made).
    #[command(subcommand)]
    Keys(crate::cmd::keys::KeysCommand),
    /// Write a consistent backup of the running daemon's whole store to FILE (admin).
    Backup(crate::cmd::backup::BackupArgs),
    /// Restore a backup into a new, empty data dir (offline).
    Restore(crate::cmd::backup::RestoreArgs),
    /// Measure detection quality on photos and/or titles with generated evasions; see
    /// `relist eval --help`.
    Eval(crate::eval::EvalArgs),
    /// Write the bank's PDQ hashes for other platforms: hex lines or ThreatExchange CSV.
    Export(crate::cmd::exchange::ExportArgs),
    /// Register a shared hash list (hex lines or ThreatExchange CSV) as hash-only takedowns.
    Import(crate::cmd::exchange::ImportArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file; flags and environment variables override it.
    #[arg(long, env = "RELIST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory of the sled store [default: ./relist-data].
    #[arg(long, env = "RELIST_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address; port 0 picks a free port [default: 127.0.0.1:50051].
    #[arg(long, env = "RELIST_LISTEN")]
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
    #[arg(long, env = "RELIST_HTTP")]
    pub http: Option<SocketAddr>,
    /// Also serve Prometheus `/metrics` alone on this address (it is on `--http` too).
    #[arg(long, env = "RELIST_METRICS")]
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
    pub fn resolve(&self, file: &crate::config::LimitsSection) -> anyhow::Result<RequestLimits> {
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
            .unwrap_or(crate::store::DEFAULT_CACHE_BYTES >> 20);
        if !(1..=1 << 20).contains(&cache_mb) {
            bail!("server.cache_mb must be between 1 and 1048576 (MiB), not {cache_mb}");
        }
        Ok(ServeConfig {
            requests,
            cache_bytes: cache_mb << 20,
            min_free_disk_bytes: self
                .min_free_disk_bytes
                .or(file.limits.min_free_disk_bytes)
                .unwrap_or(crate::disk::DEFAULT_MIN_FREE_BYTES),
            listen: match self.listen.or(file.server.listen) {
                Some(a) => a,
                None => DEFAULT_LISTEN.parse()?,
            },
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
            detection: crate::fingerprint::Detection {
                regions: !self.no_regions && file.matching.regions.unwrap_or(true),
                local_features: !self.no_local_features && file.matching.local_features.unwrap_or(true),
            },
            history_retention: self
                .history_retention_days
                .or(file.history.retention_days)
                .filter(|d| *d > 0)
                .map(|d| std::time::Duration::from_secs(u64::from(d) * 86_400)),
        })
    }
}

/// Where the daemon is and how to print.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Address of the relist daemon.
    #[arg(long, env = "RELIST_ADDR", default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// Print machine-readable JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// A client's API key and TLS settings.
#[derive(Clone, Debug, Default, Args)]
pub struct ConnArgs {
    /// API key, sent as `authorization: Bearer <key>`.
    #[arg(long, env = "RELIST_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// CA certificate (PEM) of the daemon's TLS certificate; implies TLS.
    #[arg(long, env = "RELIST_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for a daemon that requires one (mutual TLS).
    #[arg(long = "tls-cert", env = "RELIST_CLIENT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long = "tls-key", env = "RELIST_CLIENT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl ConnArgs {
    pub fn connection(&self) -> Connection {
        Connection {
            api_key: self.api_key.clone().filter(|k| !k.trim().is_empty()),
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
        }
    }
}

/// A listing given on the command line.
#[derive(Debug, Args)]
pub struct ListingArgs {
    #[arg(long)]
    pub marketplace: String,
    #[arg(long)]
    pub listing_id: String,
    #[arg(long, default_value = "")]
    pub seller_id: String,
    #[arg(long, default_value = "")]
    pub title: String,
    #[arg(long, default_value = "")]
    pub description: String,
    /// Image file (JPEG, PNG, WebP, GIF); repeat for several.
    #[arg(long = "image")]
    pub images: Vec<PathBuf>,
    /// A precomputed PDQ hash (64 hex) as an image; repeat for several.
    #[arg(long = "pdq")]
    pub pdqs: Vec<String>,
    /// A precomputed 64-bit pHash (16 hex) as an image; repeat for several.
    #[arg(long = "phash")]
    pub phashes: Vec<String>,
}

impl ListingArgs {
    fn to_proto(&self) -> anyhow::Result<pb::Listing> {
        let mut images = Vec::new();
        for path in &self.images {
            let data = std::fs::read(path).with_context(|| format!("reading image {}", path.display()))?;
            images.push(pb::Image {
                data,
                ..Default::default()
            });
        }
        images.extend(self.pdqs.iter().map(|h| pb::Image {
            pdq: h.clone(),
            ..Default::default()
        }));
        images.extend(self.phashes.iter().map(|h| pb::Image {
            phash: h.clone(),
            ..Default::default()
        }));
        Ok(pb::Listing {
            listing_id: self.listing_id.clone(),
            marketplace: self.marketplace.clone(),
            seller_id: self.seller_id.clone(),
            title: self.title.clone(),
            description: self.description.clone(),
            images,
        })
    }
}

// Parsed once per process: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum TakedownCommand {
    /// Register a taken-down listing (again: updates it).
    Add {
        #[command(flatten)]
        listing: ListingArgs,
        /// Why it was taken down.
        #[arg(long, default_value = "")]
        reason: String,
        /// When it was taken down, RFC 3339 (e.g. 2023-04-01T10:00:00Z) [default: now].
        #[arg(long)]
        taken_down_at: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Reverse a takedown (e.g. after an appeal); it stops matching at once.
    Remove {
        takedown_id: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a stored takedown.
    Get {
        takedown_id: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub listing: ListingArgs,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Output format of `relist history`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HistoryFormat {
    Table,
    Csv,
    Json,
}

/// A review label on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LabelArg {
    Confirmed,
    FalsePositive,
    Unreviewed,
}

impl LabelArg {
    fn to_proto(self) -> pb::ReviewLabel {
        match self {
            LabelArg::Confirmed => pb::ReviewLabel::Confirmed,
            LabelArg::FalsePositive => pb::ReviewLabel::FalsePositive,
            LabelArg::Unreviewed => pb::ReviewLabel::Unreviewed,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum VerdictArg {
    Review,
    Reupload,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceArg {
    Upload,
    Batch,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only records at or after this time (RFC 3339, or YYYY-MM-DD for midnight UTC).
    #[arg(long)]
    pub from: Option<String>,
    /// Only records before this time (RFC 3339, or YYYY-MM-DD).
    #[arg(long)]
    pub to: Option<String>,
    /// Only records matching this takedown.
    #[arg(long)]
    pub takedown: Option<u64>,
    /// Only records involving this marketplace (candidate's or taken-down listing's).
    #[arg(long)]
    pub marketplace: Option<String>,
    /// Only records involving this seller (candidate's or taken-down listing's).
    #[arg(long)]
    pub seller: Option<String>,
    #[arg(long, value_enum)]
    pub verdict: Option<VerdictArg>,
    /// Only records with at least this score (0-1).
    #[arg(long)]
    pub min_score: Option<f64>,
    #[arg(long, value_enum)]
    pub label: Option<LabelArg>,
    #[arg(long, value_enum)]
    pub source: Option<SourceArg>,
    /// At most this many records; 0 for all.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    #[arg(long, value_enum, default_value = "table")]
    pub format: HistoryFormat,
    /// Address of the relist daemon.
    #[arg(long, env = "RELIST_ADDR", default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Start of the range (RFC 3339 or YYYY-MM-DD) [default: 30 days ago].
    #[arg(long)]
    pub from: Option<String>,
    /// End of the range, exclusive [default: now].
    #[arg(long)]
    pub to: Option<String>,
    /// How many top takedowns and sellers.
    #[arg(long, default_value_t = 10)]
    pub top: u32,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ReviewArgs {
    pub match_id: u64,
    #[arg(long, value_enum)]
    pub label: LabelArg,
    #[arg(long, default_value = "")]
    pub note: String,
    /// Who reviews.
    #[arg(long, env = "RELIST_REVIEWER")]
    pub reviewer: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Parses "YYYY-MM-DD" (midnight UTC) or RFC 3339 into a timestamp.
fn parse_time(flag: &str, s: &str) -> anyhow::Result<prost_types::Timestamp> {
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_string()
    };
    let t = humantime::parse_rfc3339_weak(&full).with_context(|| format!("{flag} {s}: not a date or RFC 3339 time"))?;
    let d = t
        .duration_since(std::time::UNIX_EPOCH)
        .with_context(|| format!("{flag} {s}: before 1970"))?;
    Ok(api::timestamp(d.as_millis() as i64))
}

impl Command {
    /// The client connection flags of a client command.
    fn conn(&self) -> Option<&ConnArgs> {
        match self {
            Command::Serve(_) | Command::Restore(_) | Command::Eval(_) => None,
            Command::Backup(a) => Some(&a.client.conn),
            Command::Takedown(TakedownCommand::Add { client, .. })
            | Command::Takedown(TakedownCommand::Remove { client, .. })
            | Command::Takedown(TakedownCommand::Get { client, .. }) => Some(&client.conn),
            Command::Check(a) => Some(&a.client.conn),
            Command::History(a) => Some(&a.conn),
            Command::Stats(a) => Some(&a.client.conn),
            Command::Review(a) => Some(&a.client.conn),
            Command::Batch(a) => Some(&a.client.conn),
            Command::Keys(k) => Some(&k.client().conn),
            Command::Export(a) => Some(&a.client.conn),
            Command::Import(a) => Some(&a.client.conn),
        }
    }
}

/// Parses the command line and runs it.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    keep_freed_buffers();
    init_tracing();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if let Some(conn) = cli.command.conn() {
        let _ = CONNECTION.set(conn.connection());
    }
    rt.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Takedown(cmd) => takedown(cmd).await,
            Command::Check(args) => check(args).await,
            Command::History(args) => history(args).await,
            Command::Stats(args) => stats(args).await,
            Command::Review(args) => review(args).await,
            Command::Batch(args) => crate::batch::run(args).await,
            Command::Keys(cmd) => crate::cmd::keys::run(cmd).await,
            Command::Backup(args) => crate::cmd::backup::run_backup(args).await,
            Command::Restore(args) => crate::cmd::backup::run_restore(args),
            Command::Eval(args) => tokio::task::spawn_blocking(move || crate::eval::run(args)).await?,
            Command::Export(args) => crate::cmd::exchange::run_export(args).await,
            Command::Import(args) => crate::cmd::exchange::run_import(args).await,
        }
    })
}

/// Lets glibc's allocator keep freed buffers of up to 8 MiB for reuse, in one arena per core
/// (glibc's default is eight per core). Checking a photo allocates and frees a few MiB of
/// pixel planes (decoded pixels, luma, grey levels, filter scratch); with glibc's defaults
/// each plane over 128 KiB-32 MiB is a fresh mapping that the kernel zeroes page by page
/// through faults, then unmaps. Measured on the JPEG batch benchmark: 302-312 -> 330-340
/// listings/s with 32 MiB / 64 MiB thresholds and glibc's default arenas, but then the soak
/// test saw RSS creep while nothing was stored (226 -> 249 MiB: every new thread's arena kept
/// its own 64 MiB); with these settings (two arenas on this 2-core machine) 371-376
/// listings/s and the soak's read-only phase flat (213 -> 217 MiB). A photo's planes are at
/// most ~3 MiB (1000x750 f32); larger buffers are still mapped and returned at once.
fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let arenas = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 64) as libc::c_int;
        // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 8 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RELIST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = args.resolve()?;
    let bank = {
        let (dir, thresholds, limits) = (cfg.data_dir.clone(), cfg.thresholds, cfg.limits);
        let (thumbnails, detection, min_free) = (cfg.thumbnails, cfg.detection, cfg.min_free_disk_bytes);
        let cache_bytes = cfg.cache_bytes;
        tokio::task::spawn_blocking(move || {
            Bank::open_with_cache(&dir, thresholds, limits, cache_bytes)
                .map(|b| if thumbnails { b } else { b.without_thumbnails() })
                .map(|b| b.with_detection(detection).with_min_free_disk(min_free))
        })
        .await?
        .with_context(|| format!("opening store {}", cfg.data_dir.display()))?
    };
    let no_keys = crate::auth::Keys::open(bank.db())?.is_empty();
    check_exposure(
        no_keys,
        args.insecure,
        [Some(cfg.listen), args.http].into_iter().flatten(),
    )?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(crate::transport::server_tls(cert, key, args.tls_client_ca.as_deref())?),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let bank = Arc::new(bank);
    let metrics = Arc::new(crate::metrics::Metrics::default());
    if let Some(max_age) = cfg.history_retention {
        crate::server::spawn_retention(bank.clone(), max_age, std::time::Duration::from_secs(600));
    }
    // One shutdown signal stops both servers.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        crate::server::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let web = match args.http {
        Some(addr) => {
            let http = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr} (--http)"))?;
            Some(tokio::spawn(crate::web::serve_with(
                crate::web::router_with(bank.clone(), metrics.clone()),
                http,
                stopped(stop_rx.clone()),
            )))
        }
        None => None,
    };
    let metrics_page = match args.metrics {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr} (--metrics)"))?;
            Some(tokio::spawn(crate::web::serve_with(
                crate::web::metrics_router(bank.clone(), metrics.clone()),
                l,
                stopped(stop_rx.clone()),
            )))
        }
        None => None,
    };
    let options = crate::server::ServerOptions {
        limits: cfg.requests,
        tls,
        metrics: Some(metrics),
    };
    crate::server::serve_with(bank.clone(), listener, options, stopped(stop_rx)).await?;
    for task in [web, metrics_page].into_iter().flatten() {
        task.await.context("web server task")??;
    }
    crate::server::write_snapshot(bank).await;
    Ok(())
}

/// Refuses to serve an open daemon (no API keys yet) on anything but loopback, unless the
/// operator said `--insecure`: relist holds evidence and sits on marketplaces' upload path.
pub fn check_exposure(
    no_keys: bool,
    insecure: bool,
    addrs: impl IntoIterator<Item = SocketAddr>,
) -> anyhow::Result<()> {
    if !no_keys {
        return Ok(());
    }
    for addr in addrs {
        if addr.ip().is_loopback() {
            continue;
        }
        if !insecure {
            bail!(
                "refusing to serve {addr} without API keys: anyone could read and change the bank. \
                 Create an admin key first (relist keys create --role admin --data-dir DIR), \
                 or pass --insecure"
            );
        }
        tracing::warn!(%addr, "serving without API keys on a non-loopback address (--insecure)");
    }
    Ok(())
}

pub(crate) type Client = crate::transport::Client;

/// The running command's API key and TLS settings. Process-wide because `batch` reaches the
/// daemon by address alone; set once by [`run`] from the command's flags.
static CONNECTION: std::sync::OnceLock<Connection> = std::sync::OnceLock::new();

/// Connects a client to the daemon with the server's message-size limits, the API key and
/// TLS settings of the command line.
pub(crate) async fn connect(addr: &str) -> anyhow::Result<Client> {
    CONNECTION
        .get_or_init(Connection::default)
        .connect(addr, crate::server::MAX_MESSAGE_BYTES)
        .await
        .map_err(anyhow::Error::from)
}

pub(crate) fn rpc_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

pub(crate) fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

async fn takedown(cmd: TakedownCommand) -> anyhow::Result<()> {
    match cmd {
        TakedownCommand::Add {
            listing,
            reason,
            taken_down_at,
            client,
        } => {
            let taken_down_at = match taken_down_at {
                Some(s) => {
                    let t = humantime::parse_rfc3339_weak(&s).with_context(|| format!("--taken-down-at {s}"))?;
                    let d = t
                        .duration_since(std::time::UNIX_EPOCH)
                        .context("--taken-down-at before 1970")?;
                    Some(api::timestamp(d.as_millis() as i64))
                }
                None => None,
            };
            let req = pb::RegisterTakedownRequest {
                listing: Some(listing.to_proto()?),
                reason,
                taken_down_at,
            };
            let resp = connect(&client.addr)
                .await?
                .register_takedown(req)
                .await
                .map_err(rpc_error)?
                .into_inner();
            let r = api::registered_from_proto(resp);
            if client.json {
                return print_json(&r);
            }
            print_registered(&r);
        }
        TakedownCommand::Remove { takedown_id, client } => {
            let resp = connect(&client.addr)
                .await?
                .remove_takedown(pb::RemoveTakedownRequest { takedown_id })
                .await
                .map_err(rpc_error)?
                .into_inner();
            let at = resp.removed_at.map(|t| {
                t.seconds
                    .saturating_mul(1000)
                    .saturating_add(i64::from(t.nanos / 1_000_000))
            });
            if client.json {
                return print_json(&serde_json::json!({ "takedown_id": takedown_id, "removed_at_ms": at }));
            }
            println!("takedown {takedown_id} removed at {}", fmt_ms(at.unwrap_or(0)));
        }
        TakedownCommand::Get { takedown_id, client } => {
            let resp = connect(&client.addr)
                .await?
                .get_takedown(pb::GetTakedownRequest { takedown_id })
                .await
                .map_err(rpc_error)?
                .into_inner();
            let td = api::takedown_from_proto(resp.takedown.unwrap_or_default());
            if client.json {
                return print_json(&td);
            }
            print_takedown(&td);
        }
    }
    Ok(())
}

async fn check(args: CheckArgs) -> anyhow::Result<()> {
    let req = pb::CheckListingRequest {
        listing: Some(args.listing.to_proto()?),
    };
    let resp = connect(&args.client.addr)
        .await?
        .check_listing(req)
        .await
        .map_err(rpc_error)?
        .into_inner();
    let outcome = api::check_from_proto(resp);
    if args.client.json {
        return print_json(&outcome);
    }
    print_check(&outcome);
    Ok(())
}

pub(crate) fn fmt_ms(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

fn print_fingerprints(f: &ListingFingerprints) {
    for (i, img) in f.images.iter().enumerate() {
        println!(
            "  image {i}: pdq {} (quality {}), phash {}",
            img.pdq.map(|p| p.to_hex()).unwrap_or_else(|| "-".into()),
            img.pdq_quality,
            img.phash.map(|h| format!("{h:016x}")).unwrap_or_else(|| "-".into()),
        );
    }
    println!(
        "  title: simhash {} of \"{}\"",
        f.title_simhash
            .map(|h| format!("{h:016x}"))
            .unwrap_or_else(|| "-".into()),
        f.normalized_title
    );
}

fn print_registered(r: &Registered) {
    let what = if r.updated { "updated" } else { "registered" };
    println!("takedown {} {what}", r.takedown_id);
    print_fingerprints(&r.fingerprints);
}

fn print_takedown(t: &Takedown) {
    println!(
        "takedown {}: {}/{} seller {:?}",
        t.id, t.listing.marketplace, t.listing.listing_id, t.listing.seller_id
    );
    println!("  title: {}", t.listing.title);
    println!("  reason: {}", t.reason);
    println!(
        "  taken down {}, registered {}",
        fmt_ms(t.taken_down_at_ms),
        fmt_ms(t.registered_at_ms)
    );
    if let Some(at) = t.removed_at_ms {
        println!("  REMOVED at {} (no longer matches)", fmt_ms(at));
    }
    print_fingerprints(&t.fingerprints);
}

fn print_check(c: &CheckOutcome) {
    match c.match_id {
        Some(id) => println!("{}  score {:.3}  (recorded as match {id})", c.verdict.as_str(), c.score),
        None => println!("{}", c.verdict.as_str()),
    }
    for m in &c.matches {
        let same = if m.same_seller { "  [same seller]" } else { "" };
        println!(
            "  {} takedown {}: {}/{} seller {:?}  score {:.3}{same}",
            m.verdict.as_str(),
            m.takedown_id,
            m.marketplace,
            m.listing_id,
            m.seller_id,
            m.score
        );
        for e in &m.images {
            let kind = e.kind.name();
            let transform = e.transform.map(|t| format!(" ({})", t.name())).unwrap_or_default();
            println!(
                "    image {} ~ stored image {}: {kind} distance {}{transform}",
                e.candidate_image_index, e.stored_image_index, e.distance
            );
        }
        if let Some(d) = m.text_distance {
            println!("    title distance {d}");
        }
    }
}

const HISTORY_CSV_HEADER: [&str; 14] = [
    "match_id",
    "time",
    "source",
    "verdict",
    "score",
    "label",
    "candidate_marketplace",
    "candidate_listing_id",
    "candidate_seller_id",
    "candidate_title",
    "takedown_id",
    "takedown_marketplace",
    "takedown_listing_id",
    "takedown_seller_id",
];

async fn history(args: HistoryArgs) -> anyhow::Result<()> {
    let mut req = pb::QueryMatchesRequest {
        from: args.from.as_deref().map(|s| parse_time("--from", s)).transpose()?,
        to: args.to.as_deref().map(|s| parse_time("--to", s)).transpose()?,
        takedown_id: args.takedown.unwrap_or(0),
        marketplace: args.marketplace.unwrap_or_default(),
        seller_id: args.seller.unwrap_or_default(),
        verdict: match args.verdict {
            Some(VerdictArg::Review) => pb::Verdict::Review as i32,
            Some(VerdictArg::Reupload) => pb::Verdict::Reupload as i32,
            None => 0,
        },
        min_score: args.min_score.unwrap_or(0.0),
        label: args.label.map_or(0, |l| l.to_proto() as i32),
        source: match args.source {
            Some(SourceArg::Upload) => pb::Source::Upload as i32,
            Some(SourceArg::Batch) => pb::Source::Batch as i32,
            None => 0,
        },
        page_size: crate::history::MAX_PAGE_SIZE as u32,
        page_token: String::new(),
    };
    let mut client = connect(&args.addr).await?;
    let stdout = std::io::stdout();
    let mut csv_out = (args.format == HistoryFormat::Csv).then(|| csv::Writer::from_writer(stdout.lock()));
    if let Some(w) = csv_out.as_mut() {
        w.write_record(HISTORY_CSV_HEADER)?;
    }
    let mut written = 0usize;
    // One page in memory at a time: a year of history exports in constant memory.
    loop {
        if args.limit > 0 {
            req.page_size = req.page_size.min((args.limit - written) as u32);
        }
        let page = client.query_matches(req.clone()).await.map_err(rpc_error)?.into_inner();
        for rec in page.records {
            let v = api::match_view_from_proto(rec);
            match (&mut csv_out, args.format) {
                (Some(w), _) => {
                    let r = &v.record;
                    let best = r.matches.first();
                    w.write_record([
                        r.match_id.to_string(),
                        fmt_ms(r.at_ms),
                        format!("{:?}", r.source).to_lowercase(),
                        r.verdict.as_str().to_string(),
                        format!("{:.4}", r.score),
                        v.label.as_str().to_string(),
                        r.candidate.marketplace.clone(),
                        r.candidate.listing_id.clone(),
                        r.candidate.seller_id.clone(),
                        r.candidate.title.clone(),
                        best.map(|m| m.takedown_id.to_string()).unwrap_or_default(),
                        best.map(|m| m.marketplace.clone()).unwrap_or_default(),
                        best.map(|m| m.listing_id.clone()).unwrap_or_default(),
                        best.map(|m| m.seller_id.clone()).unwrap_or_default(),
                    ])?;
                }
                (None, HistoryFormat::Json) => println!("{}", serde_json::to_string(&v)?),
                (None, _) => {
                    let r = &v.record;
                    let best = r
                        .matches
                        .first()
                        .map(|m| {
                            format!(
                                "takedown {} ({}/{} seller {:?})",
                                m.takedown_id, m.marketplace, m.listing_id, m.seller_id
                            )
                        })
                        .unwrap_or_default();
                    println!(
                        "{:>20}  {}  {:<6} {:<8} {:.3}  {:<14} {}/{} seller {:?} -> {best}",
                        r.match_id,
                        fmt_ms(r.at_ms),
                        format!("{:?}", r.source).to_lowercase(),
                        r.verdict.as_str(),
                        r.score,
                        v.label.as_str(),
                        r.candidate.marketplace,
                        r.candidate.listing_id,
                        r.candidate.seller_id,
                    );
                }
            }
            written += 1;
        }
        if let Some(w) = csv_out.as_mut() {
            w.flush()?;
        }
        if page.next_page_token.is_empty() || (args.limit > 0 && written >= args.limit) {
            break;
        }
        req.page_token = page.next_page_token;
    }
    Ok(())
}

async fn stats(args: StatsArgs) -> anyhow::Result<()> {
    let now = crate::domain::now_ms();
    let req = pb::MatchStatsRequest {
        from: Some(match &args.from {
            Some(s) => parse_time("--from", s)?,
            None => api::timestamp(now - 30 * 86_400_000),
        }),
        to: Some(match &args.to {
            Some(s) => parse_time("--to", s)?,
            None => api::timestamp(now + 1),
        }),
        top: args.top,
    };
    let resp = connect(&args.client.addr)
        .await?
        .match_stats(req)
        .await
        .map_err(rpc_error)?
        .into_inner();
    let s = api::stats_from_proto(resp);
    if args.client.json {
        return print_json(&s);
    }
    println!("{} matches", s.total);
    let section = |title: &str, rows: &[(String, u64)]| {
        println!("{title}:");
        for (name, n) in rows {
            println!("  {n:>8}  {name}");
        }
    };
    section("per day", &s.per_day);
    section("per marketplace", &s.per_marketplace);
    section("per verdict", &s.per_verdict);
    println!("most re-listed takedowns:");
    for (id, n) in &s.top_takedowns {
        println!("  {n:>8}  takedown {id}");
    }
    section("sellers with the most matches", &s.top_sellers);
    Ok(())
}

async fn review(args: ReviewArgs) -> anyhow::Result<()> {
    let req = pb::ReviewMatchRequest {
        match_id: args.match_id,
        label: args.label.to_proto() as i32,
        reviewer: args.reviewer,
        note: args.note,
    };
    let resp = connect(&args.client.addr)
        .await?
        .review_match(req)
        .await
        .map_err(rpc_error)?
        .into_inner();
    let v = api::match_view_from_proto(resp);
    if args.client.json {
        return print_json(&v);
    }
    println!(
        "match {} is now {} ({} reviews)",
        v.record.match_id,
        v.label.as_str(),
        v.reviews.len()
    );
    Ok(())
}
