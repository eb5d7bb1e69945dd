//! `relist batch`: re-checks a whole catalog against the bank over one `CheckListings`
//! stream and writes one result row per listing, resumably.
//!
//! The pipeline is bounded at every stage, so memory stays flat however large the catalog:
//!
//! ```text
//! catalog reader (thread, lazy) ──► image loading, buffered(--concurrency), in order
//!   ──► dispatcher ──► bounded channel ──► CheckListings request stream ──► daemon
//!              └─► pending queue (bounded) ──► writer ◄── response stream (same order)
//! ```
//!
//! Records that fail on the client (missing file, failed download, malformed record) never
//! reach the daemon; they take their place in the pending queue as error rows, so RESULTS
//! keeps the catalog's order.
pub mod catalog;
pub mod fetch;
pub mod progress;
pub mod results;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use relist_proto::api::pb;
use relist_proto::transport::Connection;

use crate::client::connect;

pub use catalog::Format;
pub use fetch::FetchOptions;
pub use progress::ProgressMode;
use results::{ResultsFile, Row};

/// Everything a batch run needs; `relist batch`'s flags build one, the benchmark another.
#[derive(Clone, Debug)]
pub struct BatchOptions {
    pub catalog: PathBuf,
    pub format: Option<Format>,
    pub out: PathBuf,
    pub out_format: Option<Format>,
    pub addr: String,
    pub concurrency: usize,
    pub only_matches: bool,
    pub base_dir: Option<PathBuf>,
    pub fetch: FetchOptions,
    pub progress: ProgressMode,
    pub progress_interval: Duration,
    /// The API key and TLS settings to reach the daemon with.
    pub conn: Connection,
    /// Submit the catalog as a batch job shared by a shared store's replicas (SubmitBatchJob)
    /// in chunks of this many listings, instead of one CheckListings stream to one daemon.
    pub job_chunk: Option<u32>,
}

impl BatchOptions {
    /// Defaults for everything but the files and the daemon.
    pub fn new(catalog: impl Into<PathBuf>, out: impl Into<PathBuf>, addr: impl Into<String>) -> BatchOptions {
        BatchOptions {
            catalog: catalog.into(),
            format: None,
            out: out.into(),
            out_format: None,
            addr: addr.into(),
            concurrency: 16,
            only_matches: false,
            base_dir: None,
            fetch: FetchOptions::default(),
            progress: ProgressMode::Off,
            progress_interval: Duration::from_secs(5),
            conn: Connection::default(),
            job_chunk: None,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub catalog: String,
    pub results: String,
    /// Listings handled in this run (each got a row, or a key in RESULTS.done).
    pub checked: u64,
    pub reupload: u64,
    pub review: u64,
    pub clear: u64,
    pub errors: u64,
    /// Listings skipped: already in RESULTS, or repeated in the catalog.
    pub skipped: u64,
    pub elapsed_s: f64,
    pub listings_per_s: f64,
    /// Stopped by Ctrl-C before the end of the catalog.
    pub interrupted: bool,
}

impl Summary {
    /// The one-line summary on stderr.
    pub fn print(&self) {
        eprintln!(
            "relist batch: {} checked in {:.1}s ({:.0} listings/s): {} REUPLOAD, {} REVIEW, {} CLEAR, {} errors; \
             {} skipped (already done){}",
            self.checked,
            self.elapsed_s,
            self.listings_per_s,
            self.reupload,
            self.review,
            self.clear,
            self.errors,
            self.skipped,
            if self.interrupted { "; interrupted" } else { "" }
        );
    }
}

/// Where a row goes once its listing is answered (or failed here).
enum Pending {
    Sent {
        record: u64,
        listing_id: String,
        marketplace: String,
        offset: u64,
    },
    Failed(Row, u64),
}

/// Requests queued for the stream beyond what the HTTP/2 window holds.
const REQUEST_QUEUE: usize = 256;
/// Listings sent (or failed) and not yet written.
const PENDING_QUEUE: usize = 4096;

async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The daemon's answers, in request order: a CheckListings stream, or a finished job's results.
type Answers = std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::CheckListingsResponse, tonic::Status>> + Send>>;

/// Waits for a submitted job to finish (a bar of its chunks on a terminal), then streams its
/// results. Ctrl-C stops waiting: the job goes on in the replicas, and its id is printed.
async fn wait_for_job(
    client: &mut crate::client::Client,
    job: pb::BatchJob,
    progress: ProgressMode,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Answers> {
    let bar = match progress {
        ProgressMode::Off => indicatif::ProgressBar::hidden(),
        _ => indicatif::ProgressBar::new(job.chunks),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("job {msg} {bar:40} {pos}/{len} chunks ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(job.job_id.to_string());
    let mut status = job;
    while !status.done {
        tokio::select! {
            _ = stopped(&mut stop) => {
                bar.abandon();
                anyhow::bail!("stopped waiting for batch job {}; it goes on in the replicas", status.job_id);
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        status = client
            .get_batch_job(pb::GetBatchJobRequest { job_id: status.job_id })
            .await
            .map_err(|s| anyhow!("GetBatchJob {}: {:?}: {}", status.job_id, s.code(), s.message()))?
            .into_inner();
        bar.set_position(status.chunks_done);
    }
    bar.finish_and_clear();
    if status.reclaims > 0 {
        tracing::info!(
            job = status.job_id,
            redone = status.reclaims,
            "chunks redone after a replica's lease ran out"
        );
    }
    let results = client
        .get_batch_results(pb::GetBatchResultsRequest {
            job_id: status.job_id,
            from_index: 0,
        })
        .await
        .map_err(|s| anyhow!("GetBatchResults {}: {:?}: {}", status.job_id, s.code(), s.message()))?
        .into_inner();
    Ok(Box::pin(results))
}

/// Runs a batch until the catalog ends or `stop` turns true; returns what it did.
pub async fn run_batch(opts: &BatchOptions, stop: watch::Receiver<bool>) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let format = Format::resolve(opts.format, &opts.catalog, "--format")?;
    let out_format = Format::resolve(opts.out_format, &opts.out, "--out-format")?;
    let base = match &opts.base_dir {
        Some(b) => b.clone(),
        None => opts
            .catalog
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf(),
    };
    let total_bytes = std::fs::metadata(&opts.catalog).ok().map(|m| m.len());
    let entries = catalog::open(&opts.catalog, format, &base)?;
    let (mut results, mut done) = ResultsFile::open(&opts.out, out_format, opts.only_matches)?;
    let loader = fetch::Loader::new(opts.fetch.clone())?;
    let mut client = connect(&opts.addr, &opts.conn).await?;
    let concurrency = opts.concurrency.max(1);

    // Catalog reader: a thread, reading lazily, skipping what is done.
    let skipped = Arc::new(AtomicU64::new(0));
    let (item_tx, item_rx) = mpsc::channel::<catalog::Entry>(concurrency * 4 + 64);
    let reader = {
        let (skipped, stop) = (skipped.clone(), stop.clone());
        std::thread::Builder::new()
            .name("relist-catalog".into())
            .spawn(move || {
                for e in entries {
                    if *stop.borrow() {
                        break;
                    }
                    if !done.insert(results::key(&e.marketplace, &e.listing_id, e.record)) {
                        skipped.fetch_add(1, Relaxed);
                        continue;
                    }
                    if item_tx.blocking_send(e).is_err() {
                        break;
                    }
                }
            })?
    };

    // Image loading, in catalog order, then the dispatcher.
    let loaded = ReceiverStream::new(item_rx)
        .map(move |e| {
            let loader = loader.clone();
            async move {
                let res = match e.parsed {
                    Ok(r) => loader.listing(r).await,
                    Err(m) => Err(m),
                };
                (e.record, e.listing_id, e.marketplace, e.end_offset, res)
            }
        })
        .buffered(concurrency);
    let (req_tx, req_rx) = mpsc::channel::<pb::CheckListingRequest>(REQUEST_QUEUE);
    let (pend_tx, mut pend_rx) = mpsc::channel::<Pending>(PENDING_QUEUE);
    let mut dstop = stop.clone();
    let dispatcher = tokio::spawn(async move {
        let mut loaded = std::pin::pin!(loaded);
        loop {
            let next = tokio::select! {
                biased;
                _ = stopped(&mut dstop) => break,
                n = loaded.next() => n,
            };
            let Some((record, listing_id, marketplace, offset, res)) = next else {
                break;
            };
            let pending = match res {
                Ok(listing) => {
                    let p = Pending::Sent {
                        record,
                        listing_id,
                        marketplace,
                        offset,
                    };
                    if pend_tx.send(p).await.is_err()
                        || req_tx
                            .send(pb::CheckListingRequest {
                                listing: Some(listing),
                                ..Default::default()
                            })
                            .await
                            .is_err()
                    {
                        break;
                    }
                    continue;
                }
                Err(m) => Pending::Failed(Row::error(record, &listing_id, &marketplace, m), offset),
            };
            if pend_tx.send(pending).await.is_err() {
                break;
            }
        }
    });

    let counters = Arc::new(progress::Counters::default());
    let progress = progress::Progress::start(opts.progress, opts.progress_interval, counters.clone(), total_bytes);
    let outcome = async {
        let mut pendings = std::collections::VecDeque::new();
        let mut responses: Answers = match opts.job_chunk {
            None => Box::pin(
                client
                    .check_listings(ReceiverStream::new(req_rx))
                    .await
                    .map_err(|s| anyhow!("CheckListings: {:?}: {}", s.code(), s.message()))?
                    .into_inner(),
            ),
            Some(chunk_size) => {
                // The whole catalog goes into the job first; the rows come once it is done.
                let items = ReceiverStream::new(req_rx).map(move |r| pb::SubmitBatchJobRequest {
                    item: Some(r),
                    chunk_size,
                });
                let collect = async {
                    while let Some(p) = pend_rx.recv().await {
                        pendings.push_back(p);
                    }
                };
                let (job, ()) = tokio::join!(client.submit_batch_job(items), collect);
                if pendings.iter().all(|p| matches!(p, Pending::Failed(..))) {
                    Box::pin(futures::stream::empty())
                } else {
                    let job = job
                        .map_err(|s| anyhow!("SubmitBatchJob: {:?}: {}", s.code(), s.message()))?
                        .into_inner();
                    wait_for_job(&mut client, job, opts.progress, stop.clone()).await?
                }
            }
        };
        loop {
            let p = match opts.job_chunk {
                None => pend_rx.recv().await,
                Some(_) => pendings.pop_front(),
            };
            let Some(p) = p else { break };
            let (row, offset) = match p {
                Pending::Failed(row, offset) => (row, offset),
                Pending::Sent {
                    record,
                    listing_id,
                    marketplace,
                    offset,
                } => {
                    let answer = responses
                        .next()
                        .await
                        .transpose()
                        .map_err(|s| anyhow!("the daemon's stream failed: {:?}: {}", s.code(), s.message()))?
                        .ok_or_else(|| {
                            anyhow!("the daemon's stream ended before answering {marketplace}/{listing_id}")
                        })?;
                    if answer.listing_id != listing_id || answer.marketplace != marketplace {
                        return Err(anyhow!(
                            "the daemon answered {}/{} where {marketplace}/{listing_id} was expected",
                            answer.marketplace,
                            answer.listing_id
                        ));
                    }
                    (Row::answer(record, &listing_id, &marketplace, answer.outcome), offset)
                }
            };
            let write_row = !opts.only_matches || row.is_match() || row.error.is_some();
            results.write(&row, write_row)?;
            counters.add(&row, offset);
        }
        anyhow::Ok(())
    }
    .await;
    progress.finish();
    dispatcher.abort();
    let interrupted = *stop.borrow();
    if outcome.is_ok() && !interrupted {
        // The catalog was read to its end: the reader is done.
        let _ = tokio::task::spawn_blocking(move || reader.join()).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let summary = Summary {
        catalog: opts.catalog.display().to_string(),
        results: opts.out.display().to_string(),
        checked: counters.total(),
        reupload: counters.reupload.load(Relaxed),
        review: counters.review.load(Relaxed),
        clear: counters.clear.load(Relaxed),
        errors: counters.errors.load(Relaxed),
        skipped: skipped.load(Relaxed),
        elapsed_s: elapsed,
        listings_per_s: counters.total() as f64 / elapsed.max(1e-9),
        interrupted,
    };
    outcome.with_context(|| {
        format!(
            "batch stopped after {} listings; {} is valid up to there, run again with the same --out to resume",
            summary.checked,
            opts.out.display()
        )
    })?;
    Ok(summary)
}
