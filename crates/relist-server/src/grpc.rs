//! The gRPC front end: the `relist.v1.Relist` service over the bank's [`AsyncBank`] facade,
//! plus standard health checking and reflection, served until a shutdown future completes.
//! Every call goes through one path: key and role, a concurrency slot, the per-request
//! deadline, the metrics, and [`api::status`] for errors.
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};

use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use relist_core::auth::{Action, Caller, Keys};
use relist_core::backup::BackupSummary;
use relist_core::bank::Bank;
use relist_core::domain::Source;
use relist_core::error::Error;
use relist_core::history::MatchView;
use relist_core::limits::RequestLimits;
use relist_proto::api::{self, pb};

pub mod jobs;

use crate::facade::AsyncBank;
use crate::metrics::Metrics;
use crate::ServerError;

/// How many items of a CheckListings stream are checked at once. Also the read-ahead: the
/// server pulls a new request only when one of these finishes, so a fast client is held back
/// by HTTP/2 flow control instead of filling the daemon's memory.
pub const STREAM_CONCURRENCY: usize = 8;

/// How the daemon serves, besides the bank: limits, TLS, shared metrics.
#[derive(Clone, Default)]
pub struct ServerOptions {
    /// Request sizes, the deadline and the concurrency limit.
    pub limits: RequestLimits,
    /// Serve gRPC over TLS (and require client certificates when it has a client CA).
    pub tls: Option<tonic::transport::ServerTlsConfig>,
    /// Counters shared with the `/metrics` page; a fresh set when `None`.
    pub metrics: Option<Arc<Metrics>>,
    /// How long a replica holds a batch-job chunk without renewing it ([`jobs::DEFAULT_LEASE`]
    /// when `None`); a replica that dies loses its chunk after this.
    pub batch_lease: Option<std::time::Duration>,
}

/// The `relist.v1.Relist` service.
#[derive(Clone)]
pub struct RelistService {
    bank: AsyncBank,
    keys: Keys,
    limits: RequestLimits,
    slots: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

/// The bearer value of a request's `authorization` metadata, if it is readable.
fn authorization<T>(request: &Request<T>) -> Option<&str> {
    request.metadata().get("authorization").and_then(|v| v.to_str().ok())
}

impl RelistService {
    /// The service over `bank`, with its key store in the bank's database.
    pub fn new(bank: Arc<Bank>, limits: RequestLimits, metrics: Arc<Metrics>) -> Result<Self, Error> {
        Ok(RelistService {
            keys: bank.keys().clone(),
            bank: AsyncBank::new(bank),
            limits,
            slots: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            metrics,
        })
    }

    /// Checks the key and role, then takes a concurrency slot, refusing at once when none
    /// is free: a queue would only grow under overload.
    fn admit<T>(&self, request: &Request<T>, action: Action) -> Result<(Caller, OwnedSemaphorePermit), Error> {
        let caller = self.keys.authenticate(authorization(request))?;
        caller.require(action)?;
        let permit = self.slots.clone().try_acquire_owned().map_err(|_| {
            self.metrics.shed();
            Error::ResourceExhausted(format!(
                "server busy: {} requests in flight (limits.max_concurrent_requests); retry later",
                self.limits.max_concurrent_requests
            ))
        })?;
        Ok((caller, permit))
    }

    /// Runs `work` as its own task, which holds `slot` until the work really ends, and answers
    /// DEADLINE_EXCEEDED when it outlasts the per-request deadline. Blocking work cannot be
    /// cancelled, so its slot stays taken until it finishes: load shedding counts what runs.
    async fn deadline<T, S>(
        &self,
        what: &str,
        slot: S,
        work: impl Future<Output = Result<T, Error>> + Send + 'static,
    ) -> Result<T, Error>
    where
        T: Send + 'static,
        S: Send + 'static,
    {
        let limit = self.limits.request_timeout;
        let task = tokio::spawn(async move {
            let _slot = slot;
            work.await
        });
        match tokio::time::timeout(limit, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(Error::Internal(format!("request task failed: {e}"))),
            Err(_) => Err(Error::DeadlineExceeded(format!(
                "{what} took longer than {} (limits.request_timeout)",
                humantime::format_duration(limit)
            ))),
        }
    }

    /// A unary call: authentication, role, load shedding, deadline, metrics, status mapping.
    async fn unary<T, R, F, Fut>(
        &self,
        rpc: &'static str,
        action: Action,
        request: Request<T>,
        f: F,
    ) -> Result<Response<R>, Status>
    where
        F: FnOnce(RelistService, Caller, T) -> Fut,
        Fut: Future<Output = Result<R, Error>> + Send + 'static,
        R: Send + 'static,
    {
        let started = Instant::now();
        let result = match self.admit(&request, action) {
            Ok((caller, permit)) => {
                self.deadline(rpc, permit, f(self.clone(), caller, request.into_inner()))
                    .await
            }
            Err(e) => Err(e),
        };
        let result = result.map(Response::new).map_err(api::status);
        self.metrics.request(rpc, code_of(&result), started.elapsed());
        result
    }

    /// A listing from a request, under the configured limits.
    fn listing(&self, p: Option<pb::Listing>) -> Result<relist_core::domain::Listing, Error> {
        api::listing_from_proto_limited(p, &self.limits)
    }

    /// The takedown `id`, if `caller` may act on its marketplace.
    async fn scoped_takedown(&self, caller: &Caller, id: u64) -> Result<(), Error> {
        if caller.scope().is_none() {
            return Ok(());
        }
        let td = self.bank.get(id).await?;
        caller.require_marketplace(&td.listing.marketplace)
    }

    /// The match `id`, if `caller` may see it.
    async fn scoped_match(&self, caller: &Caller, id: u64) -> Result<MatchView, Error> {
        let view = self.bank.get_match(id).await?;
        let r = &view.record;
        caller.require_any_marketplace(
            std::iter::once(r.candidate.marketplace.as_str()).chain(r.matches.iter().map(|m| m.marketplace.as_str())),
        )?;
        Ok(view)
    }
}

#[tonic::async_trait]
impl pb::relist_server::Relist for RelistService {
    async fn register_takedown(
        &self,
        request: Request<pb::RegisterTakedownRequest>,
    ) -> Result<Response<pb::RegisterTakedownResponse>, Status> {
        self.unary(
            "RegisterTakedown",
            Action::WriteTakedowns,
            request,
            |s, caller, req| async move {
                let listing = s.listing(req.listing)?;
                caller.require_marketplace(&listing.marketplace)?;
                api::reason_from_proto(&req.reason)?;
                let taken_down_at = api::ms_from_timestamp("taken_down_at", req.taken_down_at)?;
                let registered = s.bank.register(listing, req.reason, taken_down_at).await?;
                info!(
                    takedown_id = registered.takedown_id,
                    updated = registered.updated,
                    "takedown registered"
                );
                Ok(pb::RegisterTakedownResponse::from(&registered))
            },
        )
        .await
    }

    async fn remove_takedown(
        &self,
        request: Request<pb::RemoveTakedownRequest>,
    ) -> Result<Response<pb::RemoveTakedownResponse>, Status> {
        self.unary(
            "RemoveTakedown",
            Action::WriteTakedowns,
            request,
            |s, caller, req| async move {
                let id = req.takedown_id;
                if id == 0 {
                    return Err(Error::invalid("takedown_id", "is required"));
                }
                s.scoped_takedown(&caller, id).await?;
                let removed_at = s.bank.remove(id).await?;
                info!(takedown_id = id, "takedown removed");
                Ok(pb::RemoveTakedownResponse {
                    removed_at: Some(api::timestamp(removed_at)),
                })
            },
        )
        .await
    }

    async fn get_takedown(
        &self,
        request: Request<pb::GetTakedownRequest>,
    ) -> Result<Response<pb::GetTakedownResponse>, Status> {
        self.unary(
            "GetTakedown",
            Action::WriteTakedowns,
            request,
            |s, caller, req| async move {
                let id = req.takedown_id;
                if id == 0 {
                    return Err(Error::invalid("takedown_id", "is required"));
                }
                let td = s.bank.get(id).await?;
                caller.require_marketplace(&td.listing.marketplace)?;
                Ok(pb::GetTakedownResponse {
                    takedown: Some(pb::Takedown::from(&td)),
                })
            },
        )
        .await
    }

    async fn check_listing(
        &self,
        request: Request<pb::CheckListingRequest>,
    ) -> Result<Response<pb::CheckListingResponse>, Status> {
        self.unary("CheckListing", Action::Check, request, |s, caller, req| async move {
            let listing = s.listing(req.listing)?;
            caller.require_marketplace(&listing.marketplace)?;
            let source = (!req.dry_run).then_some(Source::Upload);
            let outcome = s.bank.check(listing, source).await?;
            s.metrics.verdict(outcome.verdict);
            Ok(pb::CheckListingResponse::from(&outcome))
        })
        .await
    }

    type CheckListingsStream = Pin<Box<dyn Stream<Item = Result<pb::CheckListingsResponse, Status>> + Send>>;

    async fn check_listings(
        &self,
        request: Request<tonic::Streaming<pb::CheckListingRequest>>,
    ) -> Result<Response<Self::CheckListingsStream>, Status> {
        let started = Instant::now();
        let admitted = self.admit(&request, Action::Check).map_err(api::status);
        self.metrics
            .request("CheckListings", code_of(&admitted), started.elapsed());
        let (caller, permit) = admitted?;
        // The stream holds its slot until it ends and its last item's work is done; each item
        // has its own deadline and one of the stream's item slots while its work runs.
        let permit = Arc::new(permit);
        let item_slots = Arc::new(Semaphore::new(STREAM_CONCURRENCY));
        let service = self.clone();
        let answers = request
            .into_inner()
            .map(move |item| {
                let service = service.clone();
                let caller = caller.clone();
                let stream_slot = permit.clone();
                let item_slots = item_slots.clone();
                async move {
                    // A broken request stream ends the response stream with its status.
                    let req = item?;
                    let (listing_id, marketplace) = req
                        .listing
                        .as_ref()
                        .map(|l| (l.listing_id.clone(), l.marketplace.clone()))
                        .unwrap_or_default();
                    let item_slot = item_slots
                        .acquire_owned()
                        .await
                        .map_err(|_| Status::internal("stream slots closed"))?;
                    let s = service.clone();
                    let work = async move {
                        let listing = s.listing(req.listing)?;
                        caller.require_marketplace(&listing.marketplace)?;
                        let source = (!req.dry_run).then_some(Source::Batch);
                        let c = s.bank.check(listing, source).await?;
                        s.metrics.verdict(c.verdict);
                        Ok(c)
                    };
                    let slots = (stream_slot, item_slot);
                    let outcome = service.deadline("CheckListings item", slots, work).await;
                    Ok(jobs::item_response(listing_id, marketplace, outcome))
                }
            })
            .buffered(STREAM_CONCURRENCY);
        Ok(Response::new(Box::pin(answers)))
    }

    async fn submit_batch_job(
        &self,
        request: Request<tonic::Streaming<pb::SubmitBatchJobRequest>>,
    ) -> Result<Response<pb::BatchJob>, Status> {
        let started = Instant::now();
        let result = match self.admit(&request, Action::Check) {
            Ok((caller, _permit)) => {
                let mut stream = request.into_inner();
                let mut items = Vec::new();
                let mut chunk_size = None;
                let mut failed = None;
                while let Some(next) = stream.next().await {
                    match next {
                        Ok(m) => {
                            chunk_size.get_or_insert(m.chunk_size as usize);
                            items.push(m.item.unwrap_or_default());
                        }
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                if let Some(e) = failed {
                    return Err(e);
                }
                match jobs::chunk_items(items, chunk_size.unwrap_or(0), &caller) {
                    Ok(chunks) => {
                        self.bank
                            .run(move |b| {
                                let id = b.jobs().create_job(&chunks)?;
                                b.jobs()
                                    .job_status(id)?
                                    .ok_or_else(|| Error::Internal(format!("job {id} vanished")))
                            })
                            .await
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        let result = result
            .map(|s| Response::new(jobs::job_to_proto(&s)))
            .map_err(api::status);
        self.metrics
            .request("SubmitBatchJob", code_of(&result), started.elapsed());
        if let Ok(r) = &result {
            info!(
                job = r.get_ref().job_id,
                listings = r.get_ref().listings,
                chunks = r.get_ref().chunks,
                "batch job submitted"
            );
        }
        result
    }

    async fn get_batch_job(&self, request: Request<pb::GetBatchJobRequest>) -> Result<Response<pb::BatchJob>, Status> {
        self.unary("GetBatchJob", Action::Check, request, |s, _caller, req| async move {
            let job = req.job_id;
            let status = s.bank.run(move |b| b.jobs().job_status(job)).await?;
            let status = status.ok_or_else(|| Error::NotFound(format!("batch job {job}")))?;
            Ok(jobs::job_to_proto(&status))
        })
        .await
    }

    type GetBatchResultsStream = Pin<Box<dyn Stream<Item = Result<pb::CheckListingsResponse, Status>> + Send>>;

    async fn get_batch_results(
        &self,
        request: Request<pb::GetBatchResultsRequest>,
    ) -> Result<Response<Self::GetBatchResultsStream>, Status> {
        let started = Instant::now();
        let admitted = self.admit(&request, Action::Check).map(|_| ());
        let result = admitted.map_err(api::status);
        self.metrics
            .request("GetBatchResults", code_of(&result), started.elapsed());
        result?;
        let req = request.into_inner();
        Ok(Response::new(Box::pin(jobs::results_stream(
            self.clone(),
            req.job_id,
            req.from_index,
        ))))
    }

    async fn query_matches(
        &self,
        request: Request<pb::QueryMatchesRequest>,
    ) -> Result<Response<pb::QueryMatchesResponse>, Status> {
        self.unary(
            "QueryMatches",
            Action::ReadHistory,
            request,
            |s, caller, req| async move {
                let (mut q, page_size, token) = api::query_from_proto(&req)?;
                if page_size > s.limits.max_page_size {
                    return Err(Error::invalid(
                        "page_size",
                        format!("is {page_size}, over the maximum of {}", s.limits.max_page_size),
                    ));
                }
                if let Some(scope) = caller.scope() {
                    // A scoped analyst sees its marketplace's records only, whatever it asks.
                    if let Some(m) = &q.marketplace {
                        caller.require_marketplace(m)?;
                    }
                    q.marketplace = Some(scope.to_string());
                }
                let page = s.bank.query_matches(q, page_size, token).await?;
                Ok(pb::QueryMatchesResponse::from(&page))
            },
        )
        .await
    }

    async fn get_match(&self, request: Request<pb::GetMatchRequest>) -> Result<Response<pb::MatchRecord>, Status> {
        self.unary("GetMatch", Action::ReadHistory, request, |s, caller, req| async move {
            if req.match_id == 0 {
                return Err(Error::invalid("match_id", "is required"));
            }
            let view = s.scoped_match(&caller, req.match_id).await?;
            Ok(pb::MatchRecord::from(&view))
        })
        .await
    }

    async fn match_stats(
        &self,
        request: Request<pb::MatchStatsRequest>,
    ) -> Result<Response<pb::MatchStatsResponse>, Status> {
        self.unary(
            "MatchStats",
            Action::ReadHistory,
            request,
            |s, caller, req| async move {
                if let Some(m) = caller.scope() {
                    return Err(Error::PermissionDenied(format!(
                        "match stats count every marketplace; this key sees {m:?} only"
                    )));
                }
                let (from, to, top) = api::stats_request_from_proto(&req)?;
                let stats = s.bank.match_stats(from, to, top).await?;
                Ok(pb::MatchStatsResponse::from(&stats))
            },
        )
        .await
    }

    async fn review_match(
        &self,
        request: Request<pb::ReviewMatchRequest>,
    ) -> Result<Response<pb::MatchRecord>, Status> {
        self.unary(
            "ReviewMatch",
            Action::ReadHistory,
            request,
            |s, caller, req| async move {
                let (id, label, reviewer, note) = api::review_from_proto(req)?;
                s.scoped_match(&caller, id).await?;
                let view = s.bank.review_match(id, label, reviewer, note).await?;
                info!(match_id = id, label = label.as_str(), "match reviewed");
                Ok(pb::MatchRecord::from(&view))
            },
        )
        .await
    }

    async fn create_key(
        &self,
        request: Request<pb::CreateKeyRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        self.unary("CreateKey", Action::ManageKeys, request, |s, _caller, req| async move {
            let (role, marketplace, name) = api::create_key_from_proto(&req)?;
            let (info, secret) = s
                .bank
                .run(move |bank| bank.create_key(role, marketplace.as_deref(), &name))
                .await?;
            info!(key_id = info.id, role = info.role.as_str(), "api key created");
            Ok(pb::CreateKeyResponse {
                key: Some(pb::ApiKey::from(&info)),
                secret,
            })
        })
        .await
    }

    async fn list_keys(&self, request: Request<pb::ListKeysRequest>) -> Result<Response<pb::ListKeysResponse>, Status> {
        self.unary("ListKeys", Action::ManageKeys, request, |s, _caller, _req| async move {
            let keys = s.keys.clone();
            let list = s.bank.run(move |_| keys.list()).await?;
            Ok(pb::ListKeysResponse {
                keys: list.iter().map(pb::ApiKey::from).collect(),
            })
        })
        .await
    }

    type BackupStream = Pin<Box<dyn Stream<Item = Result<pb::BackupChunk, Status>> + Send>>;

    async fn backup(&self, request: Request<pb::BackupRequest>) -> Result<Response<Self::BackupStream>, Status> {
        let started = Instant::now();
        let admitted = self.admit(&request, Action::Backup);
        let result = match admitted {
            Ok((_caller, permit)) => self
                .bank
                .run(backup_to_temp)
                .await
                .map(|(file, summary)| (file, summary, permit)),
            Err(e) => Err(e),
        };
        let result = result.map_err(api::status);
        self.metrics.request("Backup", code_of(&result), started.elapsed());
        let (file, summary, permit) = result?;
        info!(entries = summary.entries, bytes = summary.bytes, "backup taken");
        // The stream holds its concurrency slot until the last chunk; a read error ends it.
        let chunks = futures::stream::unfold(
            (Some(tokio::fs::File::from_std(file)), permit),
            |(file, permit)| async move {
                use tokio::io::AsyncReadExt;
                let mut file = file?;
                let mut buf = vec![0u8; BACKUP_CHUNK_BYTES];
                match file.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some((Ok(pb::BackupChunk { data: buf }), (Some(file), permit)))
                    }
                    Err(e) => Some((Err(Status::unavailable(format!("reading backup: {e}"))), (None, permit))),
                }
            },
        );
        Ok(Response::new(Box::pin(chunks)))
    }

    type ExportHashesStream = Pin<Box<dyn Stream<Item = Result<pb::ExportedHash, Status>> + Send>>;

    async fn export_hashes(
        &self,
        request: Request<pb::ExportHashesRequest>,
    ) -> Result<Response<Self::ExportHashesStream>, Status> {
        let started = Instant::now();
        let admitted = self.admit(&request, Action::WriteTakedowns).map_err(api::status);
        self.metrics
            .request("ExportHashes", code_of(&admitted), started.elapsed());
        let (caller, permit) = admitted?;
        let scope = caller.scope().map(str::to_string);
        // A bounded channel: the store is read only as fast as the client takes the hashes,
        // and reading stops when it goes away.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::ExportedHash, Status>>(256);
        let bank = self.bank.bank().clone();
        tokio::task::spawn_blocking(move || {
            let _slot = permit;
            let sent = bank.export_pdq(scope.as_deref(), |h| {
                tx.blocking_send(Ok(pb::ExportedHash::from(h))).is_ok()
            });
            if let Err(e) = sent {
                let _ = tx.blocking_send(Err(api::status(e)));
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn list_takedowns(
        &self,
        request: Request<pb::ListTakedownsRequest>,
    ) -> Result<Response<pb::ListTakedownsResponse>, Status> {
        self.unary(
            "ListTakedowns",
            Action::WriteTakedowns,
            request,
            |s, caller, req| async move {
                let mut q = api::takedowns_query_from_proto(&req)?;
                if q.page_size > s.limits.max_page_size {
                    return Err(Error::invalid(
                        "page_size",
                        format!("is {}, over the maximum of {}", q.page_size, s.limits.max_page_size),
                    ));
                }
                if let Some(scope) = caller.scope() {
                    // A scoped writer sees its marketplace's takedowns only, whatever it asks.
                    if let Some(m) = &q.marketplace {
                        caller.require_marketplace(m)?;
                    }
                    q.marketplace = Some(scope.trim().to_lowercase());
                }
                let page_size = if q.page_size == 0 {
                    relist_core::history::DEFAULT_PAGE_SIZE
                } else {
                    q.page_size
                };
                let (page, last) = s
                    .bank
                    .run(move |bank| {
                        bank.list_takedowns(
                            q.marketplace.as_deref(),
                            q.listing_id.as_deref(),
                            q.include_removed,
                            page_size,
                            q.after,
                        )
                    })
                    .await?;
                Ok(api::takedowns_to_proto(&page, last))
            },
        )
        .await
    }

    async fn revoke_key(&self, request: Request<pb::RevokeKeyRequest>) -> Result<Response<pb::ApiKey>, Status> {
        self.unary("RevokeKey", Action::ManageKeys, request, |s, _caller, req| async move {
            let id = req.key_id;
            let info = s.bank.run(move |bank| bank.revoke_key(id)).await?;
            info!(key_id = id, "api key revoked");
            Ok(pb::ApiKey::from(&info))
        })
        .await
    }
}

/// Size of the pieces a backup is streamed in.
pub const BACKUP_CHUNK_BYTES: usize = 1 << 20;

/// Writes a backup of `bank` to an unlinked temporary file (so a slow client never holds
/// writers back) and returns it rewound.
fn backup_to_temp(bank: &Bank) -> Result<(std::fs::File, BackupSummary), Error> {
    use std::io::Seek;
    let io = |e: std::io::Error| Error::Internal(format!("backup temp file: {e}"));
    let path = std::env::temp_dir().join(format!(
        "relist-backup-{}-{}",
        std::process::id(),
        bank.db().generate_id()?
    ));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io)?;
    // Unlinked at once: the open handle keeps the data, nothing is left behind.
    let _ = std::fs::remove_file(&path);
    let summary = bank.backup(std::io::BufWriter::new(&mut file))?;
    file.rewind().map_err(io)?;
    Ok((file, summary))
}

/// The status code a call ends with, for the metrics.
fn code_of<T>(result: &Result<T, Status>) -> tonic::Code {
    result.as_ref().map_or_else(|s| s.code(), |_| tonic::Code::Ok)
}

/// Serves the bank on `listener` with default options until `shutdown` completes.
pub async fn serve(
    bank: Arc<Bank>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    serve_with(bank, listener, ServerOptions::default(), shutdown).await
}

/// Serves the bank on `listener` until `shutdown` completes, then flushes the store.
pub async fn serve_with(
    bank: Arc<Bank>,
    listener: TcpListener,
    options: ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    // NOT_SERVING while the bank does not answer with everything recorded: a replica of a
    // shared store until it has caught up with the change log (at start, and again while it
    // rebuilds its mirror); the embedded store always is.
    let mut serving = bank.ready();
    if serving {
        health_reporter
            .set_serving::<pb::relist_server::RelistServer<RelistService>>()
            .await;
    } else {
        health_reporter
            .set_not_serving::<pb::relist_server::RelistServer<RelistService>>()
            .await;
    }
    if bank.is_shared() {
        // A weak handle: the watch ends with the bank, and never keeps it (or its store) open.
        let (bank, reporter) = (Arc::downgrade(&bank), health_reporter.clone());
        tokio::spawn(async move {
            loop {
                let Some(ready) = bank.upgrade().map(|b| b.ready()) else {
                    return;
                };
                if ready != serving {
                    if ready {
                        reporter
                            .set_serving::<pb::relist_server::RelistServer<RelistService>>()
                            .await;
                        info!("caught up with the shared store: serving");
                    } else {
                        reporter
                            .set_not_serving::<pb::relist_server::RelistServer<RelistService>>()
                            .await;
                    }
                    serving = ready;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        });
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let limits = options.limits;
    limits
        .validate()
        .map_err(|e| ServerError::Config(format!("invalid limits: {e}")))?;
    let metrics = options.metrics.unwrap_or_default();
    let relist = RelistService::new(bank.clone(), limits, metrics)?;
    if relist.keys.is_empty() {
        warn!("no API keys exist: every request is allowed (create one with `relist keys create`)");
    }
    let service = relist;
    let addr = listener.local_addr()?;
    // Every replica of a shared store works through batch jobs; a single box has none.
    let stop_jobs = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let job_worker = bank.is_shared().then(|| {
        let lease = options.batch_lease.unwrap_or(jobs::DEFAULT_LEASE);
        let name = format!("{addr}/{}", std::process::id());
        let idle = std::time::Duration::from_millis(500).min(lease / 3);
        tokio::spawn(jobs::worker(service.clone(), name, lease, idle, stop_jobs.clone()))
    });
    let service = pb::relist_server::RelistServer::new(service)
        .max_decoding_message_size(limits.max_message_bytes)
        .max_encoding_message_size(limits.max_message_bytes);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = options.tls {
        builder = builder.tls_config(tls)?;
        info!(%addr, "relist serving (TLS)");
    } else {
        info!(%addr, "relist serving");
    }
    builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(service)
        .serve_with_incoming_shutdown(no_delay(listener), shutdown)
        .await?;
    stop_jobs.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(w) = job_worker {
        let _ = w.await;
    }
    bank.flush()?;
    info!("relist stopped");
    Ok(())
}

/// The accepted connections with Nagle's algorithm off. tonic sets TCP_NODELAY only on
/// listeners it binds itself; without it a reply written in two pieces waits for the
/// client's delayed ACK (about 40 ms a call, found by the crash test's GetTakedown loop).
fn no_delay(listener: TcpListener) -> impl Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        if let Err(e) = conn.set_nodelay(true) {
            warn!(error = %e, "cannot set TCP_NODELAY");
        }
        Ok(conn)
    })
}
