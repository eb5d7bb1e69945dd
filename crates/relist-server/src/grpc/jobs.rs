//! Catalog re-check jobs shared by the replicas of a shared store: `SubmitBatchJob` records
//! the listings as chunks in PostgreSQL, every replica's [`worker`] claims chunks with a lease
//! (renewed while it works), checks their listings as `CheckListings` would, and writes the
//! answers once; a chunk whose replica died is claimed again when its lease runs out.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use relist_core::domain::Source;
use relist_core::error::Error;
use relist_core::storage::{ClaimedChunk, JobStatus};
use relist_proto::api::{self, pb};
use tracing::{info, warn};

use super::{RelistService, STREAM_CONCURRENCY};

/// Listings per chunk when the client does not say.
pub const DEFAULT_CHUNK: usize = 100;
/// Most listings in one job, and most encoded bytes: a job lives in PostgreSQL until done.
pub const MAX_JOB_ITEMS: usize = 1_000_000;
pub const MAX_JOB_BYTES: usize = 1 << 30;
/// How long a replica holds a chunk without renewing; renewed every third of it.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// Results read from the store per page of GetBatchResults.
const RESULTS_PAGE: usize = 500;

/// The job as the API shows it.
pub fn job_to_proto(s: &JobStatus) -> pb::BatchJob {
    pb::BatchJob {
        job_id: s.job,
        listings: s.items,
        chunks: s.chunks,
        chunks_done: s.chunks_done,
        reclaims: s.reclaims,
        done: s.done(),
    }
}

/// Splits submitted items into chunks (checking each listing's presence and the caller's
/// marketplace scope at submission, so a job never fails later for a reason known now).
pub fn chunk_items(
    items: Vec<pb::CheckListingRequest>,
    chunk_size: usize,
    caller: &relist_core::auth::Caller,
) -> Result<Vec<Vec<Vec<u8>>>, Error> {
    let chunk_size = if chunk_size == 0 { DEFAULT_CHUNK } else { chunk_size };
    if items.is_empty() {
        return Err(Error::invalid("item", "a job needs at least one listing"));
    }
    if items.len() > MAX_JOB_ITEMS {
        return Err(Error::ResourceExhausted(format!(
            "a job holds at most {MAX_JOB_ITEMS} listings, not {}; split the catalog",
            items.len()
        )));
    }
    let mut bytes = 0usize;
    let mut chunks: Vec<Vec<Vec<u8>>> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(listing) = &item.listing else {
            return Err(Error::invalid(format!("item[{i}].listing"), "is required"));
        };
        caller.require_marketplace(&listing.marketplace)?;
        let encoded = item.encode_to_vec();
        bytes += encoded.len();
        if bytes > MAX_JOB_BYTES {
            return Err(Error::ResourceExhausted(format!(
                "a job holds at most {MAX_JOB_BYTES} bytes of listings; split the catalog"
            )));
        }
        match chunks.last_mut() {
            Some(c) if c.len() < chunk_size => c.push(encoded),
            _ => chunks.push(vec![encoded]),
        }
    }
    Ok(chunks)
}

impl RelistService {
    /// One item of a chunk, answered as a CheckListings item is.
    async fn answer(&self, encoded: Vec<u8>) -> pb::CheckListingsResponse {
        let req = match pb::CheckListingRequest::decode(encoded.as_slice()) {
            Ok(r) => r,
            Err(e) => {
                return item_response(
                    String::new(),
                    String::new(),
                    Err(Error::Corrupt(format!("job item: {e}"))),
                )
            }
        };
        let (listing_id, marketplace) = req
            .listing
            .as_ref()
            .map(|l| (l.listing_id.clone(), l.marketplace.clone()))
            .unwrap_or_default();
        let s = self.clone();
        let work = async move {
            let listing = s.listing(req.listing)?;
            let source = (!req.dry_run).then_some(Source::Batch);
            let c = s.bank.check(listing, source).await?;
            s.metrics.verdict(c.verdict);
            Ok(c)
        };
        let outcome = self.deadline("batch job item", (), work).await;
        item_response(listing_id, marketplace, outcome)
    }

    /// Checks a claimed chunk's items (several at once), renewing the lease meanwhile;
    /// returns the answers, or `None` when the chunk was abandoned (stop requested or the
    /// lease lost).
    async fn run_chunk(
        &self,
        worker: &str,
        lease: Duration,
        chunk: ClaimedChunk,
        stop: &AtomicBool,
    ) -> Option<Vec<Vec<u8>>> {
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = {
            let (bank, worker, lost) = (self.bank.clone(), worker.to_string(), lost.clone());
            let (job, n) = (chunk.job, chunk.chunk);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(lease / 3).await;
                    let w = worker.clone();
                    match bank.run(move |b| b.jobs().renew_chunk(job, n, &w, lease)).await {
                        Ok(true) => {}
                        Ok(false) => {
                            lost.store(true, Ordering::SeqCst);
                            return;
                        }
                        Err(e) => warn!(job, chunk = n, error = %e, "cannot renew a batch chunk's lease"),
                    }
                }
            })
        };
        let answers: Vec<pb::CheckListingsResponse> = futures::stream::iter(chunk.items)
            .take_while(|_| {
                let go = !stop.load(Ordering::SeqCst) && !lost.load(Ordering::SeqCst);
                async move { go }
            })
            .map(|item| self.answer(item))
            .buffered(STREAM_CONCURRENCY)
            .collect()
            .await;
        renewer.abort();
        if stop.load(Ordering::SeqCst) || lost.load(Ordering::SeqCst) {
            return None;
        }
        Some(answers.iter().map(Message::encode_to_vec).collect())
    }
}

/// Claims and works through chunks until `stop` is set: the replica's share of every job.
/// Sleeps `idle` when there is nothing to claim (or the store is unreachable).
pub async fn worker(service: RelistService, worker: String, lease: Duration, idle: Duration, stop: Arc<AtomicBool>) {
    let mut failures = 0u32;
    while !stop.load(Ordering::SeqCst) {
        let w = worker.clone();
        let claimed = service.bank.run(move |b| b.jobs().claim_chunk(&w, lease)).await;
        let chunk = match claimed {
            Ok(Some(c)) => {
                failures = 0;
                c
            }
            Ok(None) => {
                failures = 0;
                tokio::time::sleep(idle).await;
                continue;
            }
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    warn!(error = %e, "cannot claim batch chunks; retrying");
                }
                tokio::time::sleep(idle).await;
                continue;
            }
        };
        let (job, n, total) = (chunk.job, chunk.chunk, chunk.items.len());
        if chunk.attempt > 1 {
            info!(
                job,
                chunk = n,
                attempt = chunk.attempt,
                "redoing a batch chunk whose lease ran out"
            );
        }
        let Some(results) = service.run_chunk(&worker, lease, chunk, &stop).await else {
            continue;
        };
        let w = worker.clone();
        match service
            .bank
            .run(move |b| b.jobs().complete_chunk(job, n, &w, &results))
            .await
        {
            Ok(true) => tracing::debug!(job, chunk = n, items = total, "batch chunk done"),
            Ok(false) => warn!(
                job,
                chunk = n,
                "batch chunk taken over after its lease ran out; its results come from the new holder"
            ),
            Err(e) => {
                warn!(job, chunk = n, error = %e, "batch chunk results not written; it is redone when the lease runs out")
            }
        }
    }
}

/// GetBatchResults: pages of results decoded back into answers, in submission order.
pub fn results_stream(
    service: RelistService,
    job: u64,
    from: u64,
) -> impl futures::Stream<Item = Result<pb::CheckListingsResponse, tonic::Status>> + Send {
    futures::stream::unfold(Some(from), move |next| {
        let service = service.clone();
        async move {
            let from = next?;
            let page = service
                .bank
                .run(move |b| b.jobs().job_results(job, from, RESULTS_PAGE))
                .await;
            match page {
                Err(e) => Some((vec![Err(api::status(e))], None)),
                Ok(rows) => {
                    let more = (rows.len() == RESULTS_PAGE).then(|| rows.last().map_or(from, |r| r.0 + 1));
                    if rows.is_empty() {
                        return None;
                    }
                    let items = rows
                        .into_iter()
                        .map(|(_, bytes)| {
                            pb::CheckListingsResponse::decode(bytes.as_slice())
                                .map_err(|e| tonic::Status::internal(format!("stored batch result: {e}")))
                        })
                        .collect();
                    Some((items, more))
                }
            }
        }
    })
    .flat_map(futures::stream::iter)
}

/// An item's answer: the check's result or its error, naming the listing.
pub fn item_response(
    listing_id: String,
    marketplace: String,
    outcome: Result<relist_core::domain::CheckOutcome, Error>,
) -> pb::CheckListingsResponse {
    let outcome = match outcome {
        Ok(c) => pb::check_listings_response::Outcome::Result(pb::CheckListingResponse::from(&c)),
        Err(e) => {
            let s = api::status(e);
            pb::check_listings_response::Outcome::Error(pb::ItemError {
                code: s.code() as i32,
                message: s.message().to_string(),
            })
        }
    };
    pb::CheckListingsResponse {
        listing_id,
        marketplace,
        outcome: Some(outcome),
    }
}
