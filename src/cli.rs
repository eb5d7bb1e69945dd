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
use crate::config::{FileConfig, ServeConfig, DEFAULT_DATA_DIR, DEFAULT_LISTEN};
use crate::domain::{CheckOutcome, ListingFingerprints, Registered, Takedown};
use crate::fingerprint::DecodeLimits;

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
    /// Measure detection quality on photos and/or titles with generated evasions; see
    /// `relist eval --help`.
    Eval(crate::eval::EvalArgs),
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
    /// Delete match history older than this many days (0: keep forever) [default: keep].
    #[arg(long, env = "RELIST_HISTORY_RETENTION_DAYS")]
    pub history_retention_days: Option<u32>,
    /// Also serve the analysts' web page (match history, reviews) on this address, e.g.
    /// 127.0.0.1:8080. It has no login: keep it on loopback or behind an authenticating proxy.
    /// [default: no web page]
    #[arg(long, env = "RELIST_HTTP")]
    pub http: Option<SocketAddr>,
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
        Ok(ServeConfig {
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

/// Parses the command line and runs it.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Takedown(cmd) => takedown(cmd).await,
            Command::Check(args) => check(args).await,
            Command::History(args) => history(args).await,
            Command::Stats(args) => stats(args).await,
            Command::Review(args) => review(args).await,
            Command::Batch(args) => crate::batch::run(args).await,
            Command::Eval(args) => tokio::task::spawn_blocking(move || crate::eval::run(args)).await?,
        }
    })
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
        let thumbnails = cfg.thumbnails;
        tokio::task::spawn_blocking(move || {
            Bank::open(&dir, thresholds, limits).map(|b| if thumbnails { b } else { b.without_thumbnails() })
        })
        .await?
        .with_context(|| format!("opening store {}", cfg.data_dir.display()))?
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let bank = Arc::new(bank);
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
            Some(tokio::spawn(crate::web::serve(
                bank.clone(),
                http,
                stopped(stop_rx.clone()),
            )))
        }
        None => None,
    };
    crate::server::serve(bank, listener, stopped(stop_rx)).await?;
    if let Some(web) = web {
        web.await.context("web server task")??;
    }
    Ok(())
}

pub(crate) type Client = pb::relist_client::RelistClient<tonic::transport::Channel>;

/// Connects a client to the daemon with the server's message-size limits.
pub(crate) async fn connect(addr: &str) -> anyhow::Result<Client> {
    let client = Client::connect(addr.to_string())
        .await
        .with_context(|| format!("connecting to relist at {addr}"))?;
    Ok(client
        .max_decoding_message_size(crate::server::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(crate::server::MAX_MESSAGE_BYTES))
}

fn rpc_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
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
            let at = resp
                .removed_at
                .map(|t| t.seconds * 1000 + i64::from(t.nanos / 1_000_000));
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

fn fmt_ms(ms: i64) -> String {
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
            let kind = match e.kind {
                crate::domain::HashKind::Pdq => "pdq",
                crate::domain::HashKind::Phash => "phash",
                crate::domain::HashKind::Local => "local",
            };
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
