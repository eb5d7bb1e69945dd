//! The gRPC daemon: the `relist.v1.Relist` service over a [`Bank`], plus standard health
//! checking and reflection, with graceful shutdown.
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use tracing::info;

use crate::api::{self, pb};
use crate::bank::Bank;
use crate::domain::Source;
use crate::error::Error;

/// How many items of a CheckListings stream are checked at once. Also the read-ahead: the
/// server pulls a new request only when one of these finishes, so a fast client is held back
/// by HTTP/2 flow control instead of filling the daemon's memory.
pub const STREAM_CONCURRENCY: usize = 8;

/// The `relist.v1.Relist` service.
#[derive(Clone)]
pub struct RelistService {
    bank: Arc<Bank>,
}

impl RelistService {
    pub fn new(bank: Arc<Bank>) -> Self {
        RelistService { bank }
    }

    /// Runs blocking bank work (hashing, fsync) off the async runtime.
    async fn blocking<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Bank) -> Result<T, Error> + Send + 'static,
    {
        let bank = self.bank.clone();
        tokio::task::spawn_blocking(move || f(&bank))
            .await
            .map_err(|e| api::status(Error::Internal(format!("worker failed: {e}"))))?
            .map_err(api::status)
    }
}

#[tonic::async_trait]
impl pb::relist_server::Relist for RelistService {
    async fn register_takedown(
        &self,
        request: Request<pb::RegisterTakedownRequest>,
    ) -> Result<Response<pb::RegisterTakedownResponse>, Status> {
        let req = request.into_inner();
        let listing = api::listing_from_proto(req.listing).map_err(api::status)?;
        api::reason_from_proto(&req.reason).map_err(api::status)?;
        let taken_down_at = api::ms_from_timestamp("taken_down_at", req.taken_down_at).map_err(api::status)?;
        let reason = req.reason;
        let registered = self
            .blocking(move |bank| bank.register(&listing, &reason, taken_down_at))
            .await?;
        info!(
            takedown_id = registered.takedown_id,
            updated = registered.updated,
            "takedown registered"
        );
        Ok(Response::new(api::registered_to_proto(&registered)))
    }

    async fn remove_takedown(
        &self,
        request: Request<pb::RemoveTakedownRequest>,
    ) -> Result<Response<pb::RemoveTakedownResponse>, Status> {
        let id = request.into_inner().takedown_id;
        if id == 0 {
            return Err(api::status(Error::invalid("takedown_id", "is required")));
        }
        let removed_at = self.blocking(move |bank| bank.remove(id)).await?;
        info!(takedown_id = id, "takedown removed");
        Ok(Response::new(pb::RemoveTakedownResponse {
            removed_at: Some(api::timestamp(removed_at)),
        }))
    }

    async fn get_takedown(
        &self,
        request: Request<pb::GetTakedownRequest>,
    ) -> Result<Response<pb::GetTakedownResponse>, Status> {
        let id = request.into_inner().takedown_id;
        if id == 0 {
            return Err(api::status(Error::invalid("takedown_id", "is required")));
        }
        let td = self.blocking(move |bank| bank.get(id)).await?;
        Ok(Response::new(pb::GetTakedownResponse {
            takedown: Some(api::takedown_to_proto(&td)),
        }))
    }

    async fn check_listing(
        &self,
        request: Request<pb::CheckListingRequest>,
    ) -> Result<Response<pb::CheckListingResponse>, Status> {
        let listing = api::listing_from_proto(request.into_inner().listing).map_err(api::status)?;
        let outcome = self.blocking(move |bank| bank.check(&listing, Source::Upload)).await?;
        Ok(Response::new(api::check_to_proto(&outcome)))
    }

    type CheckListingsStream = Pin<Box<dyn Stream<Item = Result<pb::CheckListingsResponse, Status>> + Send>>;

    async fn check_listings(
        &self,
        request: Request<tonic::Streaming<pb::CheckListingRequest>>,
    ) -> Result<Response<Self::CheckListingsStream>, Status> {
        let service = self.clone();
        let answers = request
            .into_inner()
            .map(move |item| {
                let service = service.clone();
                async move {
                    // A broken request stream ends the response stream with its status.
                    let req = item?;
                    let (listing_id, marketplace) = req
                        .listing
                        .as_ref()
                        .map(|l| (l.listing_id.clone(), l.marketplace.clone()))
                        .unwrap_or_default();
                    let result = match api::listing_from_proto(req.listing) {
                        Ok(listing) => service.blocking(move |bank| bank.check(&listing, Source::Batch)).await,
                        Err(e) => Err(api::status(e)),
                    };
                    let outcome = match result {
                        Ok(c) => pb::check_listings_response::Outcome::Result(api::check_to_proto(&c)),
                        Err(s) => pb::check_listings_response::Outcome::Error(pb::ItemError {
                            code: s.code() as i32,
                            message: s.message().to_string(),
                        }),
                    };
                    Ok(pb::CheckListingsResponse {
                        listing_id,
                        marketplace,
                        outcome: Some(outcome),
                    })
                }
            })
            .buffered(STREAM_CONCURRENCY);
        Ok(Response::new(Box::pin(answers)))
    }

    async fn query_matches(
        &self,
        request: Request<pb::QueryMatchesRequest>,
    ) -> Result<Response<pb::QueryMatchesResponse>, Status> {
        let (q, page_size, token) = api::query_from_proto(request.get_ref()).map_err(api::status)?;
        let page = self
            .blocking(move |bank| bank.query_matches(&q, page_size, token.as_deref()))
            .await?;
        Ok(Response::new(api::page_to_proto(&page)))
    }

    async fn get_match(&self, request: Request<pb::GetMatchRequest>) -> Result<Response<pb::MatchRecord>, Status> {
        let id = request.into_inner().match_id;
        if id == 0 {
            return Err(api::status(Error::invalid("match_id", "is required")));
        }
        let view = self.blocking(move |bank| bank.get_match(id)).await?;
        Ok(Response::new(api::match_view_to_proto(&view)))
    }

    async fn match_stats(
        &self,
        request: Request<pb::MatchStatsRequest>,
    ) -> Result<Response<pb::MatchStatsResponse>, Status> {
        let (from, to, top) = api::stats_request_from_proto(request.get_ref()).map_err(api::status)?;
        let stats = self.blocking(move |bank| bank.match_stats(from, to, top)).await?;
        Ok(Response::new(api::stats_to_proto(&stats)))
    }

    async fn review_match(
        &self,
        request: Request<pb::ReviewMatchRequest>,
    ) -> Result<Response<pb::MatchRecord>, Status> {
        let (id, label, reviewer, note) = api::review_from_proto(request.into_inner()).map_err(api::status)?;
        let view = self
            .blocking(move |bank| bank.review_match(id, label, &reviewer, &note))
            .await?;
        info!(match_id = id, label = label.as_str(), "match reviewed");
        Ok(Response::new(api::match_view_to_proto(&view)))
    }
}

/// Largest gRPC message accepted: a listing of several full-size photos.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Serves the bank on `listener` until `shutdown` completes, then flushes the store.
pub async fn serve(
    bank: Arc<Bank>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<pb::relist_server::RelistServer<RelistService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let service = pb::relist_server::RelistServer::new(RelistService::new(bank.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let addr = listener.local_addr()?;
    info!(%addr, "relist serving");
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    bank.flush()?;
    info!("relist stopped");
    Ok(())
}

/// Records deleted per retention batch: small enough that a batch never holds up requests.
pub const RETENTION_BATCH: usize = 1_000;

/// Deletes match history older than `max_age`, now and then every `every`, in bounded
/// batches with a pause between them so checks are not starved.
pub fn spawn_retention(
    bank: Arc<Bank>,
    max_age: std::time::Duration,
    every: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let before = crate::domain::now_ms() - max_age.as_millis() as i64;
            let mut total = 0usize;
            loop {
                let bank = bank.clone();
                match tokio::task::spawn_blocking(move || bank.expire_history(before, RETENTION_BATCH)).await {
                    Ok(Ok(0)) => break,
                    Ok(Ok(n)) => total += n,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "history retention failed; will retry");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "history retention task failed");
                        break;
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            if total > 0 {
                info!(deleted = total, "expired match history");
            }
        }
    })
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    info!("shutdown signal received");
}
