//! The JSON-over-HTTP API on the web port, for scripts and services that do not speak gRPC
//! (as Meta's HMA has `/m/lookup`): check, register, get and remove takedowns, the match
//! history. Described by an OpenAPI 3 document at [`OPENAPI_PATH`] (see `openapi.rs`).
//!
//! | route | gRPC | role |
//! |---|---|---|
//! | `POST /api/v1/check` | `CheckListing` | checker |
//! | `POST /api/v1/takedowns` | `RegisterTakedown` | writer |
//! | `GET /api/v1/takedowns/{id}` | `GetTakedown` | writer |
//! | `DELETE /api/v1/takedowns/{id}` | `RemoveTakedown` | writer |
//! | `GET /api/v1/matches?...` | `QueryMatches` | analyst |
//! | `GET /api/v1/openapi.json` | | open |
//!
//! It is the gRPC API in JSON: the same keys and roles (`Authorization: Bearer <key>`, checked
//! by the core's [`Caller::require`]; a key scoped to a marketplace acts on that marketplace
//! only), the same validation (relist-proto's [`api::listing_from_proto_limited`]: a listing
//! is turned into the protobuf listing and validated there, so field paths and messages are
//! the gRPC ones), the same [`AsyncBank`] calls, the same per-request deadline and load
//! shedding limits. Images are `{"data": "<base64 of the file>"}` or hashes,
//! `{"pdq": "<64 hex>", "phash": "<16 hex>", "pdq_quality": 0-100}`, exactly as gRPC takes
//! them. Errors are `{"error": {"code", "message", "field"}}` with the HTTP status of
//! [`ApiError`]'s one mapping.
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::{Extension, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tracing::info;

use relist_core::auth::{Action, Caller};
use relist_core::domain::{ImageFingerprint, Listing, ListingFingerprints, Source, Takedown};
use relist_core::error::Error;
use relist_core::limits::RequestLimits;
use relist_proto::api::{self, pb};

use super::{json_response, match_query, parse_id, same_origin_write, same_site, ApiError};
use crate::facade::AsyncBank;

/// Where the JSON API lives.
pub const PREFIX: &str = "/api/v1/";
/// The OpenAPI document (open, like `/metrics`).
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// An error of the JSON API: [`ApiError`]'s status, as `{"error": {"code", "message", "field"}}`.
#[derive(Debug)]
pub struct V1Error(pub(super) ApiError);

impl From<Error> for V1Error {
    fn from(e: Error) -> Self {
        V1Error(ApiError::from(e))
    }
}

impl From<ApiError> for V1Error {
    fn from(e: ApiError) -> Self {
        V1Error(e)
    }
}

impl IntoResponse for V1Error {
    fn into_response(self) -> Response {
        self.0.respond(&self.0.body(true))
    }
}

type V1Result = Result<Response, V1Error>;

fn reply<T: Serialize>(status: StatusCode, v: &T) -> V1Result {
    Ok(json_response(status, v))
}

/// What the handlers share: the bank, the request limits and the concurrency slots.
#[derive(Clone)]
struct V1 {
    bank: AsyncBank,
    limits: RequestLimits,
    slots: Arc<Semaphore>,
}

impl V1 {
    /// Runs `work` under a concurrency slot (refused at once when none is free) and the
    /// per-request deadline, as the gRPC service does; the slot is held until the work ends.
    async fn limited<T: Send + 'static>(
        &self,
        what: &str,
        work: impl std::future::Future<Output = Result<T, Error>> + Send + 'static,
    ) -> Result<T, Error> {
        let slot = self.slots.clone().try_acquire_owned().map_err(|_| {
            Error::ResourceExhausted(format!(
                "server busy: {} requests in flight (limits.max_concurrent_requests); retry later",
                self.limits.max_concurrent_requests
            ))
        })?;
        let task = tokio::spawn(async move {
            let _slot = slot;
            work.await
        });
        match tokio::time::timeout(self.limits.request_timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(Error::Internal(format!("request task failed: {e}"))),
            Err(_) => Err(Error::DeadlineExceeded(format!(
                "{what} took longer than {} (limits.request_timeout)",
                humantime::format_duration(self.limits.request_timeout)
            ))),
        }
    }

    /// A JSON body holding a listing (`take` takes it out), from a caller allowed `action` on
    /// the listing's marketplace; the listing validated by relist-proto under the configured
    /// limits.
    fn listing_body<T: for<'de> Deserialize<'de>>(
        &self,
        caller: &Caller,
        action: Action,
        headers: &HeaderMap,
        bytes: &Bytes,
        take: impl FnOnce(&mut T) -> Option<ListingJson>,
    ) -> Result<(T, Listing), V1Error> {
        caller.require(action)?;
        let mut b: T = body(headers, bytes)?;
        let p = take(&mut b).map(ListingJson::into_proto).transpose()?;
        let listing = api::listing_from_proto_limited(p, &self.limits)?;
        caller.require_marketplace(&listing.marketplace)?;
        Ok((b, listing))
    }

    /// The takedown `id`, if `caller` may act on its marketplace.
    async fn scoped_takedown(&self, caller: &Caller, id: u64) -> Result<Takedown, Error> {
        let td = self.bank.get(id).await?;
        caller.require_marketplace(&td.listing.marketplace)?;
        Ok(td)
    }
}

/// The routes of the JSON API, each once: the router is built from this table and the
/// OpenAPI test checks the document against [`routes`].
fn table() -> Vec<(&'static str, MethodRouter<V1>)> {
    vec![
        ("/api/v1/check", post(check)),
        ("/api/v1/takedowns", post(register)),
        ("/api/v1/takedowns/{id}", get(get_takedown).merge(delete(remove))),
        ("/api/v1/matches", get(matches)),
        (OPENAPI_PATH, get(openapi)),
    ]
}

/// (method, path) of every route the JSON API serves, with paths as OpenAPI writes them.
pub fn routes() -> Vec<(Method, &'static str)> {
    vec![
        (Method::POST, "/api/v1/check"),
        (Method::POST, "/api/v1/takedowns"),
        (Method::GET, "/api/v1/takedowns/{id}"),
        (Method::DELETE, "/api/v1/takedowns/{id}"),
        (Method::GET, "/api/v1/matches"),
        (Method::GET, OPENAPI_PATH),
    ]
}

/// The JSON API over `bank` under `limits`. Authentication is the web router's middleware;
/// each handler checks its role.
pub(super) fn router(bank: AsyncBank, limits: RequestLimits) -> Router {
    let state = V1 {
        bank,
        limits,
        slots: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
    };
    // Base64 grows a body by 4/3: room for the largest gRPC message, in JSON.
    let body_limit = limits.max_message_bytes / 3 * 4 + 64 * 1024;
    let mut r = Router::new();
    for (path, method) in table() {
        r = r.route(path, method);
    }
    r.layer(DefaultBodyLimit::max(body_limit)).with_state(state)
}

// ---- request bodies ----

/// A listing in JSON: the fields of the protobuf `Listing`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListingJson {
    #[serde(default)]
    marketplace: String,
    #[serde(default)]
    listing_id: String,
    #[serde(default)]
    seller_id: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    images: Vec<ImageJson>,
}

/// An image: the file as base64, or hashes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageJson {
    #[serde(default)]
    data: String,
    #[serde(default)]
    pdq: String,
    #[serde(default)]
    phash: String,
    #[serde(default)]
    pdq_quality: Option<u32>,
}

impl ListingJson {
    fn into_proto(self) -> Result<pb::Listing, Error> {
        let images = self
            .images
            .into_iter()
            .enumerate()
            .map(|(i, img)| {
                let data = if img.data.is_empty() {
                    Vec::new()
                } else {
                    base64::engine::general_purpose::STANDARD
                        .decode(img.data.trim())
                        .map_err(|e| {
                            Error::invalid(format!("listing.images[{i}].data"), format!("is not base64: {e}"))
                        })?
                };
                Ok(pb::Image {
                    data,
                    pdq: img.pdq,
                    phash: img.phash,
                    pdq_quality: img.pdq_quality,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(pb::Listing {
            listing_id: self.listing_id,
            marketplace: self.marketplace,
            seller_id: self.seller_id,
            title: self.title,
            description: self.description,
            images,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckBody {
    listing: Option<ListingJson>,
    /// Answer without recording (as CheckListingRequest.dry_run).
    #[serde(default)]
    dry_run: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    listing: Option<ListingJson>,
    #[serde(default)]
    reason: String,
    /// When the listing was taken down (Unix ms); default: now.
    #[serde(default)]
    taken_down_at_ms: Option<i64>,
}

/// A JSON body: `Content-Type: application/json`, same-site when a browser sends it, and
/// well-formed (400 naming `body` otherwise).
fn body<T: for<'de> Deserialize<'de>>(headers: &HeaderMap, bytes: &Bytes) -> Result<T, ApiError> {
    same_origin_write(headers)?;
    serde_json::from_slice(bytes).map_err(|e| ApiError::invalid("body", e))
}

// ---- responses ----

/// A listing's fingerprints as gRPC's `Fingerprints` has them (no regions or features).
#[derive(Serialize)]
struct FingerprintsJson<'a> {
    images: &'a [ImageFingerprint],
    title_simhash: Option<String>,
    normalized_title: &'a str,
}

impl<'a> From<&'a ListingFingerprints> for FingerprintsJson<'a> {
    fn from(f: &'a ListingFingerprints) -> Self {
        FingerprintsJson {
            images: &f.images,
            title_simhash: f.title_simhash.map(|h| format!("{h:016x}")),
            normalized_title: &f.normalized_title,
        }
    }
}

/// `v` in JSON, with its `fingerprints` as gRPC's `Fingerprints` has them, and a takedown's
/// `id` named `takedown_id` as everywhere else in the API.
fn with_fingerprints<T: Serialize>(v: &T, f: &ListingFingerprints) -> Result<serde_json::Value, Error> {
    let encode = |e: serde_json::Error| Error::Internal(format!("cannot encode JSON: {e}"));
    let mut j = serde_json::to_value(v).map_err(encode)?;
    if let Some(o) = j.as_object_mut() {
        if let Some(id) = o.remove("id") {
            o.insert("takedown_id".into(), id);
        }
        o.insert(
            "fingerprints".into(),
            serde_json::to_value(FingerprintsJson::from(f)).map_err(encode)?,
        );
    }
    Ok(j)
}

// ---- handlers ----

async fn check(
    State(s): State<V1>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    bytes: Bytes,
) -> V1Result {
    let (b, listing) = s.listing_body(&caller, Action::Check, &headers, &bytes, |b: &mut CheckBody| {
        b.listing.take()
    })?;
    let bank = s.bank.clone();
    let source = (!b.dry_run).then_some(Source::Upload);
    let outcome = s
        .limited("check", async move { bank.check(listing, source).await })
        .await?;
    reply(StatusCode::OK, &with_fingerprints(&outcome, &outcome.fingerprints)?)
}

async fn register(
    State(s): State<V1>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    bytes: Bytes,
) -> V1Result {
    let (b, listing) = s.listing_body(
        &caller,
        Action::WriteTakedowns,
        &headers,
        &bytes,
        |b: &mut RegisterBody| b.listing.take(),
    )?;
    api::reason_from_proto(&b.reason)?;
    if b.taken_down_at_ms.is_some_and(|t| t < 0) {
        return Err(Error::invalid("taken_down_at_ms", "must be Unix milliseconds (0 or more)").into());
    }
    let bank = s.bank.clone();
    let (reason, at) = (b.reason, b.taken_down_at_ms);
    let r = s
        .limited("register", async move { bank.register(listing, reason, at).await })
        .await?;
    info!(
        takedown_id = r.takedown_id,
        updated = r.updated,
        "takedown registered (http)"
    );
    let status = if r.updated { StatusCode::OK } else { StatusCode::CREATED };
    reply(status, &with_fingerprints(&r, &r.fingerprints)?)
}

async fn get_takedown(State(s): State<V1>, Extension(caller): Extension<Caller>, Path(id): Path<String>) -> V1Result {
    caller.require(Action::WriteTakedowns)?;
    let id = parse_id("id", &id)?;
    let td = s.scoped_takedown(&caller, id).await?;
    reply(StatusCode::OK, &with_fingerprints(&td, &td.fingerprints)?)
}

async fn remove(
    State(s): State<V1>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> V1Result {
    caller.require(Action::WriteTakedowns)?;
    same_site(&headers)?;
    let id = parse_id("id", &id)?;
    s.scoped_takedown(&caller, id).await?;
    let bank = s.bank.clone();
    let removed_at_ms = s.limited("remove", async move { bank.remove(id).await }).await?;
    info!(takedown_id = id, "takedown removed (http)");
    reply(
        StatusCode::OK,
        &serde_json::json!({ "takedown_id": id, "removed_at_ms": removed_at_ms }),
    )
}

async fn matches(State(s): State<V1>, Extension(caller): Extension<Caller>, RawQuery(raw): RawQuery) -> V1Result {
    caller.require(Action::ReadHistory)?;
    let (mut q, page_size, token) = match_query(raw.as_deref())?;
    if page_size > s.limits.max_page_size {
        return Err(ApiError::invalid(
            "page_size",
            format!("is {page_size}, over the maximum of {}", s.limits.max_page_size),
        )
        .into());
    }
    if let Some(scope) = caller.scope() {
        // A scoped analyst sees its marketplace's records only, whatever it asks.
        if let Some(m) = &q.marketplace {
            caller.require_marketplace(m)?;
        }
        q.marketplace = Some(scope.to_string());
    }
    let bank = s.bank.clone();
    let page = s
        .limited("matches", async move { bank.query_matches(q, page_size, token).await })
        .await?;
    reply(StatusCode::OK, &page)
}

async fn openapi() -> Response {
    json_response(StatusCode::OK, &super::openapi::document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_and_the_route_list_agree() {
        let listed: Vec<&str> = routes().iter().map(|(_, p)| *p).collect();
        for (path, _) in table() {
            assert!(listed.contains(&path), "{path} is served but not in routes()");
        }
        let served: Vec<&str> = table().iter().map(|(p, _)| *p).collect();
        for p in listed {
            assert!(served.contains(&p), "{p} is in routes() but not served");
        }
    }

    #[test]
    fn images_are_base64_or_hashes_and_bad_base64_names_the_image() {
        let l: ListingJson = serde_json::from_str(
            r#"{"marketplace":"m","listing_id":"1","images":[{"data":"aGVsbG8="},{"pdq":"ab","phash":"cd","pdq_quality":7}]}"#,
        )
        .unwrap();
        let p = l.into_proto().unwrap();
        assert_eq!(p.images[0].data, b"hello");
        assert_eq!((p.images[1].pdq.as_str(), p.images[1].pdq_quality), ("ab", Some(7)));
        let l: ListingJson =
            serde_json::from_str(r#"{"marketplace":"m","listing_id":"1","images":[{"pdq":"ab"},{"data":"%%"}]}"#)
                .unwrap();
        match l.into_proto() {
            Err(Error::InvalidArgument { field, .. }) => assert_eq!(field, "listing.images[1].data"),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}
