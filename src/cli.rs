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
    /// Re-check a whole catalog (JSON Lines or CSV) and write one result row per listing;
    /// resumable, bounded memory. See `relist batch --help` for the formats.
    #[command(after_long_help = crate::batch::FORMATS_HELP)]
    Batch(crate::batch::BatchArgs),
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
            Command::Batch(args) => crate::batch::run(args).await,
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
        tokio::task::spawn_blocking(move || Bank::open(&dir, thresholds, limits))
            .await?
            .with_context(|| format!("opening store {}", cfg.data_dir.display()))?
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    crate::server::serve(Arc::new(bank), listener, crate::server::shutdown_signal()).await
}

type Client = pb::relist_client::RelistClient<tonic::transport::Channel>;

async fn connect(addr: &str) -> anyhow::Result<Client> {
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
