//! `relist batch`: re-checks a whole catalog over one `CheckListings` stream (the pipeline is
//! [`crate::batch`]); Ctrl-C, the summary and the exit codes.
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tokio::sync::watch;

use crate::batch::{run_batch, BatchOptions, FetchOptions, Format, ProgressMode};
use crate::client::ClientArgs;

/// The formats, resuming and exit codes: the long help of `relist batch` (`--help`).
pub const FORMATS_HELP: &str = r#"CATALOG holds one listing per record, with listing_id, marketplace, seller_id, title,
description and images. An image is a local path (relative to --base-dir, by default the
catalog's directory), an http(s) URL (downloaded here) or a precomputed hash.

JSON Lines (.jsonl, .ndjson), one object per line:
  {"listing_id": "123", "marketplace": "shopee", "seller_id": "s9", "title": "baju bekas",
   "description": "", "images": ["a.jpg", "https://cdn/x.jpg", {"pdq": "<64 hex>"},
   {"phash": "<16 hex>"}, {"pdq": "...", "phash": "...", "pdq_quality": 80}]}
CSV (.csv), with a header row; columns listing_id, marketplace, seller_id, title,
description, images (entries separated by '|': a path, a URL, pdq:HEX or phash:HEX), and
optionally pdq and phash ('|'-separated hashes, paired by position into images).

RESULTS (--out, .jsonl or .csv) gets one row per listing: record (position in the
catalog), listing_id, marketplace, verdict (REUPLOAD, REVIEW, CLEAR), score, the strongest
match (takedown_id, takedown_marketplace, takedown_listing_id, image_distance,
image_hash_kind, text_distance, same_seller), matches, match_id, or error. Records that
fail here (missing file, failed download, malformed record) get an error row and are not
sent.

Resuming: run again with the same --out and the listings already in RESULTS (by
marketplace, case-insensitively, and listing_id) are skipped; a torn last line from a
crash is cut. A listing that appears twice in the catalog is checked once. Error rows count
as done: to retry them, remove them from RESULTS first. With --only-matches, RESULTS gets
only REUPLOAD and REVIEW rows (and error rows), and the keys of all listings done go to
RESULTS.done, so resuming skips the clear ones too.

Ctrl-C stops reading the catalog, lets the listings already sent finish, writes their rows
and exits with 130; RESULTS is complete up to its last line. Exit code 1 when any listing
failed, unless --allow-errors."#;

/// `relist batch`: re-check a whole catalog (JSON Lines or CSV) against the bank, one result
/// row per listing. The formats and behaviour are documented in [`FORMATS_HELP`], shown by
/// `relist batch --help`.
#[derive(Debug, Args)]
pub struct BatchArgs {
    /// The catalog file (`-` for standard input, with --format).
    pub catalog: PathBuf,
    /// Catalog format [default: from the extension].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Results file; appended to, and resumed from when it exists.
    #[arg(long)]
    pub out: PathBuf,
    /// Results format [default: from --out's extension].
    #[arg(long, value_enum)]
    pub out_format: Option<Format>,
    /// Listings whose images are loaded at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Write only REUPLOAD and REVIEW rows (and errors); done keys go to RESULTS.done.
    #[arg(long)]
    pub only_matches: bool,
    /// Exit 0 even when some listings could not be checked.
    #[arg(long)]
    pub allow_errors: bool,
    /// Directory that relative image paths are resolved against [default: the catalog's].
    #[arg(long)]
    pub base_dir: Option<PathBuf>,
    /// Time allowed for one download attempt (connect, headers and body).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Time allowed to connect to an image server.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Retries of a download after a 5xx, 408, 429, timeout or connection error.
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// Wait before the first retry; doubled for each next one.
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    pub retry_backoff: Duration,
    /// Largest image accepted, in bytes (files and downloads).
    #[arg(long, default_value_t = 20 * 1024 * 1024)]
    pub max_image_bytes: u64,
    /// Interval of the plain progress lines when stderr is not a terminal.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub progress_interval: Duration,
    /// No progress output (the summary is still printed).
    #[arg(long)]
    pub quiet: bool,
    /// Replicas of a shared store only: submit the catalog as a batch job that every replica
    /// works through (a replica that dies loses its chunk to another), then write the rows.
    #[arg(long)]
    pub shared_job: bool,
    /// Listings per chunk of a --shared-job (the unit a replica claims).
    #[arg(long, default_value_t = 100, requires = "shared_job", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub chunk_size: u32,
    #[command(flatten)]
    pub client: ClientArgs,
}

impl BatchArgs {
    /// The pipeline's options from the flags.
    pub fn options(&self) -> BatchOptions {
        BatchOptions {
            catalog: self.catalog.clone(),
            format: self.format,
            out: self.out.clone(),
            out_format: self.out_format,
            addr: self.client.addr.clone(),
            concurrency: self.concurrency,
            only_matches: self.only_matches,
            base_dir: self.base_dir.clone(),
            fetch: FetchOptions {
                max_bytes: self.max_image_bytes,
                connect_timeout: self.connect_timeout,
                timeout: self.timeout,
                retries: self.retries,
                backoff: self.retry_backoff,
            },
            progress: if self.quiet {
                ProgressMode::Off
            } else {
                ProgressMode::Auto
            },
            progress_interval: self.progress_interval,
            conn: self.client.conn.connection(),
            job_chunk: self.shared_job.then_some(self.chunk_size),
        }
    }
}

/// Runs `relist batch`: the summary on stderr (and as JSON on stdout with --json); exits
/// 130 when interrupted, 1 when a listing failed (unless --allow-errors).
pub async fn run(args: BatchArgs) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        eprintln!("relist batch: interrupted; finishing the listings in flight (Ctrl-C again to quit now)");
        let _ = stop_tx.send(true);
        if tokio::signal::ctrl_c().await.is_ok() {
            // Every row is written whole, so RESULTS is still a valid prefix.
            std::process::exit(130);
        }
    });
    let summary = run_batch(&args.options(), stop_rx).await?;
    summary.print();
    if args.client.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    let code = if summary.interrupted {
        130
    } else if summary.errors > 0 && !args.allow_errors {
        eprintln!(
            "relist batch: {} listings failed (see the error column; --allow-errors to exit 0)",
            summary.errors
        );
        1
    } else {
        0
    };
    if code != 0 {
        use std::io::Write;
        let _ = std::io::stdout().flush();
        std::process::exit(code);
    }
    Ok(())
}
