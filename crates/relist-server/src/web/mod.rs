//! The analysts' web page: a read-only view of the match history (with thumbnails side by
//! side, filters, a per-takedown timeline) whose one write is a review. Served by
//! `relist serve --http ADDR` beside the gRPC daemon, through the same [`AsyncBank`] facade.
//!
//! Plain HTML/CSS/JS embedded in the binary (no build step) over a small JSON API:
//!
//! | route | |
//! |---|---|
//! | `GET /` | the page (`static/index.html`, `app.js`, `style.css`) |
//! | `GET /api/matches?from=&to=&takedown=&marketplace=&seller=&verdict=&min_score=&label=&source=&page_size=&page_token=` | a [`Page`] of the history, newest first |
//! | `GET /api/matches/{id}` | one [`MatchView`] |
//! | `POST /api/matches/{id}/review` | `{label, reviewer, note}`: the only write |
//! | `GET /api/stats?from=&to=&top=` | [`Stats`] (default: the last 30 days) |
//! | `GET /api/takedowns/{id}` | the takedown and the timeline of its matches |
//! | `GET /api/thumbs/match/{id}/{i}.jpg`, `/api/thumbs/takedown/{id}/{i}.jpg` | kept thumbnails |
//! | `GET /metrics` | Prometheus metrics (see [`crate::metrics`]) |
//! | `/api/v1/...` | the JSON-over-HTTP API for scripts and services, with its OpenAPI document (see [`api`]) |
//!
//! Errors map like the gRPC ones: bad input is 400 with `{"error": "field: reason", "field"}`,
//! an unknown id 404. Times in queries are Unix milliseconds or RFC 3339. Bank calls go
//! through [`AsyncBank`], off the async runtime. Once API keys exist, `/api/` needs an unscoped analyst or admin key
//! (`Authorization: Bearer <key>`, or the `relist_key` cookie the page sets from the key typed
//! in): 401 without one, 403 for another role. `GET /metrics` (Prometheus) is open. The review POST is guarded against cross-site requests: it needs
//! `Content-Type: application/json`, and `Origin` / `Sec-Fetch-Site`, when sent, must say
//! same-origin.
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tracing::{info, warn};

use relist_core::auth::{Action, Caller, Keys};
use relist_core::bank::{Bank, ThumbnailOf};
use relist_core::domain::{now_ms, MatchId, Source, Takedown, TakedownId, Verdict};
use relist_core::error::Error;
use relist_core::history::{Label, MatchView, Page, Query, Stats, MAX_PAGE_SIZE};
use relist_core::limits::{RequestLimits, MAX_MARKETPLACE_BYTES, MAX_SELLER_ID_BYTES, MAX_STATS_TOP};

use crate::facade::AsyncBank;
use crate::metrics::{BankGauges, Metrics};
use crate::ServerError;

pub mod api;
mod openapi;

const INDEX_HTML: &str = include_str!("static/index.html");
const APP_JS: &str = include_str!("static/app.js");
const STYLE_CSS: &str = include_str!("static/style.css");

/// The page's content security policy: our own files only, no inline script or style.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Matches of one takedown that its timeline lists at most (newest first).
pub const TIMELINE_MAX: usize = 2_000;
/// Default span of `/api/stats` when no range is given.
const DEFAULT_STATS_DAYS: i64 = 30;
const DAY_MS: i64 = 86_400_000;
const MAX_REVIEWER_BYTES: usize = 256;
const MAX_NOTE_CHARS: usize = 2_000;
const MAX_REVIEW_BODY_BYTES: usize = 16 * 1024;

/// The router over `bank` with a fresh set of gRPC metrics; `serve` runs it, tests may too.
pub fn router(bank: Arc<Bank>) -> Router {
    router_with(bank, Arc::new(Metrics::default()))
}

/// The page, its API (which needs an analyst or admin key once keys exist), the JSON API
/// ([`api`], under the default request limits) and `/metrics` over the daemon's shared
/// counters.
pub fn router_with(bank: Arc<Bank>, metrics: Arc<Metrics>) -> Router {
    router_with_limits(bank, metrics, RequestLimits::default())
}

/// [`router_with`], the JSON API under `limits` (sizes, deadline, concurrency), as the gRPC
/// service is.
pub fn router_with_limits(bank: Arc<Bank>, metrics: Arc<Metrics>, limits: RequestLimits) -> Router {
    let facade = AsyncBank::new(bank);
    let page = Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/app.js", get(app_js))
        .route("/style.css", get(style_css))
        .route("/api/matches", get(list_matches))
        .route("/api/matches/{id}", get(get_match))
        .route("/api/matches/{id}/review", post(review))
        .route("/api/stats", get(stats))
        .route("/api/takedowns/{id}", get(takedown))
        .route("/api/thumbs/{of}/{id}/{file}", get(thumbnail))
        .fallback(not_found)
        .with_state(facade.clone())
        .merge(api::router(facade.clone(), limits))
        .layer(axum::middleware::from_fn_with_state(facade.clone(), require_key));
    metrics_router(facade.bank().clone(), metrics).merge(page)
}

/// Prometheus `/metrics` alone (for `serve --metrics ADDR`). Open: it tells counts and
/// sizes, never history.
pub fn metrics_router(bank: Arc<Bank>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page))
        .with_state((AsyncBank::new(bank), metrics))
}

/// Serves the page and its API on `listener` until `shutdown` completes.
pub async fn serve(
    bank: Arc<Bank>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    serve_with(router(bank), listener, shutdown).await
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve_with(
    router: Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let addr = listener.local_addr()?;
    info!(%addr, "relist web page serving");
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await?;
    info!("relist web page stopped");
    Ok(())
}

/// Cookie the page sets from the key typed in (thumbnails are plain `<img>` requests, which
/// cannot carry a header). Session-only and SameSite=Strict.
const KEY_COOKIE: &str = "relist_key";

fn cookie_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == KEY_COOKIE)
        .map(|(_, v)| v.trim().to_string())
}

/// Who presents the request's key: `Authorization: Bearer <key>`, or (for the page only,
/// `cookie`) the page's session cookie. Open while no key exists.
fn authenticate(bank: &AsyncBank, headers: &HeaderMap, cookie: bool) -> Result<Caller, Error> {
    let keys = Keys::open(bank.bank().db())?;
    match headers.get(header::AUTHORIZATION) {
        Some(v) => keys.authenticate(Some(v.to_str().unwrap_or(""))),
        None => match cookie_key(headers).filter(|_| cookie) {
            Some(k) => keys.authenticate_secret(&k),
            None => keys.authenticate(None),
        },
    }
}

/// Once API keys exist, the page's `/api/` needs an unscoped analyst or admin key, as
/// `Authorization: Bearer <key>` or the page's cookie. The JSON API (`/api/v1/`) takes the
/// header only, and each of its routes checks the caller's role itself, as gRPC does; its
/// OpenAPI document is open. The page's files stay open so it can ask for the key.
async fn require_key(
    State(bank): State<AsyncBank>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    if path.starts_with(api::PREFIX) {
        if path == api::OPENAPI_PATH {
            return next.run(request).await;
        }
        return match authenticate(&bank, request.headers(), false) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                next.run(request).await
            }
            Err(e) => api::V1Error::from(e).into_response(),
        };
    }
    if !path.starts_with("/api/") {
        return next.run(request).await;
    }
    let allowed = authenticate(&bank, request.headers(), true).and_then(|c| {
        c.require(Action::ReadHistory)?;
        match c.scope() {
            Some(m) => Err(Error::PermissionDenied(format!(
                "the web page shows every marketplace; this key sees {m:?} only (use the gRPC API)"
            ))),
            None => Ok(()),
        }
    });
    match allowed {
        Ok(()) => next.run(request).await,
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn metrics_page(State((bank, metrics)): State<(AsyncBank, Arc<Metrics>)>) -> Response {
    let store_bytes = bank.store_bytes().await;
    let b = bank.bank();
    let sizes = b.index_sizes();
    let gauges = BankGauges {
        pdq: sizes.pdq,
        phash: sizes.phash,
        title: sizes.title,
        store_bytes,
        ready: b.ready(),
        stale: b.bank_stale(),
        applied_seq: b.applied_seq(),
    };
    let body = metrics.render(&gauges, bank.bank().fingerprint_time());
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// An API error: status and a JSON body naming the field at fault.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    error: String,
    field: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status,
            error: error.into(),
            field: None,
        }
    }

    fn invalid(field: &str, reason: impl std::fmt::Display) -> Self {
        ApiError::from(Error::invalid(field, reason.to_string()))
    }
}

impl ApiError {
    /// The machine-readable name of the status, as the JSON API's `error.code` says it (the
    /// gRPC code's name where there is one).
    fn code(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST => "INVALID_ARGUMENT",
            StatusCode::UNAUTHORIZED => "UNAUTHENTICATED",
            StatusCode::FORBIDDEN => "PERMISSION_DENIED",
            StatusCode::NOT_FOUND => "NOT_FOUND",
            StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
            StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "UNSUPPORTED_MEDIA_TYPE",
            StatusCode::TOO_MANY_REQUESTS => "RESOURCE_EXHAUSTED",
            StatusCode::GATEWAY_TIMEOUT => "DEADLINE_EXCEEDED",
            StatusCode::INSUFFICIENT_STORAGE => "DISK_FULL",
            _ => "INTERNAL",
        }
    }

    /// The response with `body`; a 401 says how to authenticate.
    fn respond<T: Serialize>(&self, body: &T) -> Response {
        let mut r = json_response(self.status, body);
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// The one mapping from core errors to HTTP statuses, for the page and the JSON API.
impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::InvalidArgument { .. } => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::ResourceExhausted(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::PermissionDenied(_) => StatusCode::FORBIDDEN,
            Error::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::DiskFull(_) => StatusCode::INSUFFICIENT_STORAGE,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Storage(_) | Error::Corrupt(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            warn!(error = %e, "web request failed");
        }
        let field = match &e {
            Error::InvalidArgument { field, .. } => Some(field.clone()),
            _ => None,
        };
        ApiError {
            status,
            error: e.to_string(),
            field,
        }
    }
}

impl ApiError {
    /// The page's error body, `{"error": "field: reason", "field"}`, or (`nested`) the JSON
    /// API's, `{"error": {"code", "message", "field"}}`; `field` only when a field is at fault.
    fn body(&self, nested: bool) -> serde_json::Value {
        let mut e = serde_json::Map::new();
        if let Some(f) = &self.field {
            e.insert("field".into(), f.as_str().into());
        }
        if nested {
            e.insert("code".into(), self.code().into());
            e.insert("message".into(), self.error.as_str().into());
            serde_json::json!({ "error": e })
        } else {
            e.insert("error".into(), self.error.as_str().into());
            serde_json::Value::Object(e)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.respond(&self.body(false))
    }
}

type ApiResult = Result<Response, ApiError>;

fn json_response<T: Serialize>(status: StatusCode, v: &T) -> Response {
    let (status, body) = match serde_json::to_vec(v) {
        Ok(b) => (status, b),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "{{\"error\":\"internal: cannot encode JSON: {}\"}}",
                e.to_string().replace('"', "'")
            )
            .into_bytes(),
        ),
    };
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    api_headers(h);
    r
}

fn api_headers(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
}

fn ok<T: Serialize>(v: &T) -> ApiResult {
    Ok(json_response(StatusCode::OK, v))
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

async fn index() -> Response {
    static_file("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    static_file("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> Response {
    static_file("text/css; charset=utf-8", STYLE_CSS)
}

async fn not_found(uri: axum::http::Uri) -> Response {
    let e = ApiError::new(StatusCode::NOT_FOUND, "no such page");
    if uri.path().starts_with(api::PREFIX) {
        api::V1Error(e).into_response()
    } else {
        e.into_response()
    }
}

/// Query-string parameters, percent-decoded; a repeated or unknown name is an error, an
/// empty value counts as absent (what an empty form field sends).
struct Params(BTreeMap<String, String>);

impl Params {
    fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Params, ApiError> {
        let mut out = BTreeMap::new();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = decode(k).map_err(|_| ApiError::invalid("query", "is not valid UTF-8"))?;
            let v = decode(v).map_err(|_| ApiError::invalid(&k, "is not valid UTF-8"))?;
            if !allowed.contains(&k.as_str()) {
                return Err(ApiError::invalid(
                    &k,
                    format!("is not a known parameter (known: {})", allowed.join(", ")),
                ));
            }
            if v.trim().is_empty() {
                continue;
            }
            if out.insert(k.clone(), v).is_some() {
                return Err(ApiError::invalid(&k, "is given twice"));
            }
        }
        Ok(Params(out))
    }

    fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|s| s.trim())
    }

    fn parsed<T: std::str::FromStr>(&self, name: &str, what: &str) -> Result<Option<T>, ApiError> {
        self.str(name)
            .map(|s| {
                s.parse::<T>()
                    .map_err(|_| ApiError::invalid(name, format!("{s:?} is not {what}")))
            })
            .transpose()
    }

    fn time(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.str(name).map(|s| parse_time(name, s)).transpose()
    }
}

fn decode(s: &str) -> Result<String, std::str::Utf8Error> {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8()
        .map(|c| c.into_owned())
}

/// Unix milliseconds, or an RFC 3339 time (`2025-06-01T00:00:00Z`, or without the zone: UTC).
fn parse_time(field: &str, s: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|_| {
        ApiError::invalid(
            field,
            format!("{s:?} is neither Unix milliseconds nor an RFC 3339 time"),
        )
    })?;
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| ApiError::invalid(field, "is before 1970"))?
        .as_millis();
    i64::try_from(ms).map_err(|_| ApiError::invalid(field, "is too far in the future"))
}

fn parse_verdict(field: &str, s: &str) -> Result<Verdict, ApiError> {
    match s.to_ascii_uppercase().as_str() {
        "REVIEW" => Ok(Verdict::Review),
        "REUPLOAD" => Ok(Verdict::Reupload),
        _ => Err(ApiError::invalid(field, format!("{s:?} is not REVIEW or REUPLOAD"))),
    }
}

fn parse_label(field: &str, s: &str) -> Result<Label, ApiError> {
    match s.to_ascii_uppercase().as_str() {
        "UNREVIEWED" => Ok(Label::Unreviewed),
        "CONFIRMED" => Ok(Label::Confirmed),
        "FALSE_POSITIVE" => Ok(Label::FalsePositive),
        _ => Err(ApiError::invalid(
            field,
            format!("{s:?} is not UNREVIEWED, CONFIRMED or FALSE_POSITIVE"),
        )),
    }
}

fn parse_source(field: &str, s: &str) -> Result<Source, ApiError> {
    match s.to_ascii_lowercase().as_str() {
        "upload" => Ok(Source::Upload),
        "batch" => Ok(Source::Batch),
        _ => Err(ApiError::invalid(field, format!("{s:?} is not upload or batch"))),
    }
}

fn parse_id(field: &str, s: &str) -> Result<u64, ApiError> {
    match s.parse::<u64>() {
        Ok(0) | Err(_) => Err(ApiError::invalid(
            field,
            format!("{s:?} is not an id (a positive integer)"),
        )),
        Ok(id) => Ok(id),
    }
}

const MATCH_PARAMS: &[&str] = &[
    "from",
    "to",
    "takedown",
    "marketplace",
    "seller",
    "verdict",
    "min_score",
    "label",
    "source",
    "page_size",
    "page_token",
];

/// A history query from the query string: (query, page size, page token).
fn match_query(raw: Option<&str>) -> Result<(Query, usize, Option<String>), ApiError> {
    let p = Params::parse(raw, MATCH_PARAMS)?;
    let marketplace = p.str("marketplace").map(str::to_lowercase);
    if marketplace.as_ref().is_some_and(|m| m.len() > MAX_MARKETPLACE_BYTES) {
        return Err(ApiError::invalid(
            "marketplace",
            format!("is over {MAX_MARKETPLACE_BYTES} bytes"),
        ));
    }
    let seller = p.str("seller").map(str::to_string);
    if seller.as_ref().is_some_and(|s| s.len() > MAX_SELLER_ID_BYTES) {
        return Err(ApiError::invalid(
            "seller",
            format!("is over {MAX_SELLER_ID_BYTES} bytes"),
        ));
    }
    let min_score = p.parsed::<f64>("min_score", "a number")?;
    if min_score.is_some_and(|s| !(0.0..=1.0).contains(&s)) {
        return Err(ApiError::invalid("min_score", "must be between 0 and 1"));
    }
    let page_size = p.parsed::<usize>("page_size", "a page size")?.unwrap_or(0);
    if page_size > MAX_PAGE_SIZE {
        return Err(ApiError::invalid(
            "page_size",
            format!("is {page_size}, over the maximum of {MAX_PAGE_SIZE}"),
        ));
    }
    let q = Query {
        from_ms: p.time("from")?,
        to_ms: p.time("to")?,
        takedown_id: p.str("takedown").map(|s| parse_id("takedown", s)).transpose()?,
        marketplace,
        seller_id: seller,
        verdict: p.str("verdict").map(|s| parse_verdict("verdict", s)).transpose()?,
        min_score,
        label: p.str("label").map(|s| parse_label("label", s)).transpose()?,
        source: p.str("source").map(|s| parse_source("source", s)).transpose()?,
    };
    Ok((q, page_size, p.str("page_token").map(str::to_string)))
}

async fn list_matches(State(bank): State<AsyncBank>, RawQuery(raw): RawQuery) -> ApiResult {
    let (q, page_size, token) = match_query(raw.as_deref())?;
    let page: Page = bank.query_matches(q, page_size, token).await?;
    ok(&page)
}

async fn get_match(State(bank): State<AsyncBank>, Path(id): Path<String>) -> ApiResult {
    let id = parse_id("id", &id)?;
    let view: MatchView = bank.get_match(id).await?;
    ok(&view)
}

async fn stats(State(bank): State<AsyncBank>, RawQuery(raw): RawQuery) -> ApiResult {
    let p = Params::parse(raw.as_deref(), &["from", "to", "top"])?;
    let to = p.time("to")?.unwrap_or_else(now_ms);
    let from = p
        .time("from")?
        .unwrap_or(to.saturating_sub(DEFAULT_STATS_DAYS * DAY_MS));
    let top = p.parsed::<usize>("top", "a count")?.unwrap_or(10);
    if top > MAX_STATS_TOP {
        return Err(ApiError::invalid(
            "top",
            format!("is {top}, over the maximum of {MAX_STATS_TOP}"),
        ));
    }
    let stats: Stats = bank.match_stats(from, to, top).await?;
    ok(&serde_json::json!({ "from_ms": from, "to_ms": to, "stats": stats }))
}

/// One match of a takedown's timeline: enough to list it and link to it.
#[derive(Serialize)]
struct TimelineItem {
    match_id: MatchId,
    at_ms: i64,
    verdict: Verdict,
    score: f64,
    label: Label,
    source: Source,
    marketplace: String,
    listing_id: String,
    seller_id: String,
    title: String,
    /// This takedown's own verdict and score within the match.
    takedown_verdict: Option<Verdict>,
    takedown_score: Option<f64>,
}

/// A takedown with the timeline of its re-listings.
#[derive(Serialize)]
struct TakedownTimeline {
    takedown: Takedown,
    /// How many stored images it has (thumbnails are 0..images).
    images: usize,
    /// Its matches, newest first (at most [`TIMELINE_MAX`]).
    matches: Vec<TimelineItem>,
    /// (day as YYYY-MM-DD in UTC, matches), oldest first, over the listed matches.
    per_day: Vec<(String, u64)>,
    /// Set when there were more matches than listed.
    truncated: bool,
}

fn timeline(bank: &Bank, id: TakedownId) -> Result<TakedownTimeline, Error> {
    let takedown = bank.get(id)?;
    let q = Query {
        takedown_id: Some(id),
        ..Default::default()
    };
    let mut matches = Vec::new();
    let mut token: Option<String> = None;
    let mut truncated = false;
    loop {
        let page = bank.query_matches(&q, MAX_PAGE_SIZE, token.as_deref())?;
        for v in page.records {
            if matches.len() == TIMELINE_MAX {
                truncated = true;
                break;
            }
            let own = v.record.matches.iter().find(|m| m.takedown_id == id);
            matches.push(TimelineItem {
                match_id: v.record.match_id,
                at_ms: v.record.at_ms,
                verdict: v.record.verdict,
                score: v.record.score,
                label: v.label,
                source: v.record.source,
                takedown_verdict: own.map(|m| m.verdict),
                takedown_score: own.map(|m| m.score),
                marketplace: v.record.candidate.marketplace,
                listing_id: v.record.candidate.listing_id,
                seller_id: v.record.candidate.seller_id,
                title: v.record.candidate.title,
            });
        }
        match page.next_page_token {
            Some(t) if !truncated => token = Some(t),
            _ => break,
        }
    }
    let mut per_day: BTreeMap<String, u64> = BTreeMap::new();
    for m in &matches {
        *per_day.entry(day_of(m.at_ms)).or_default() += 1;
    }
    Ok(TakedownTimeline {
        images: takedown.fingerprints.images.len(),
        takedown,
        matches,
        per_day: per_day.into_iter().collect(),
        truncated,
    })
}

/// YYYY-MM-DD (UTC) of a Unix-ms time.
fn day_of(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    s[..10].to_string()
}

async fn takedown(State(bank): State<AsyncBank>, Path(id): Path<String>) -> ApiResult {
    let id = parse_id("id", &id)?;
    let t = bank.run(move |b| timeline(b, id)).await?;
    ok(&t)
}

async fn thumbnail(State(bank): State<AsyncBank>, Path((of, id, file)): Path<(String, String, String)>) -> ApiResult {
    let id = parse_id("id", &id)?;
    let of = match of.as_str() {
        "match" => ThumbnailOf::Match(id),
        "takedown" => ThumbnailOf::Takedown(id),
        _ => return Err(ApiError::new(StatusCode::NOT_FOUND, "no such page")),
    };
    let Some(index) = file.strip_suffix(".jpg") else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such page"));
    };
    let index: u8 = index
        .parse()
        .map_err(|_| ApiError::invalid("image", format!("{index:?} is not an image index (0-255)")))?;
    let jpeg = bank.thumbnail(of, index).await?;
    let Some(jpeg) = jpeg else {
        let what = match of {
            ThumbnailOf::Match(id) => format!("thumbnail of match {id} image {index}"),
            ThumbnailOf::Takedown(id) => format!("thumbnail of takedown {id} image {index}"),
        };
        return Err(ApiError::from(Error::NotFound(what)));
    };
    let mut r = Response::new(Body::from(jpeg));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    // Thumbnails of an id never change; a private cache spares the daemon on paging back.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Ok(r)
}

/// The body of a review.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewBody {
    label: String,
    reviewer: String,
    #[serde(default)]
    note: String,
}

/// Refuses a write that a browser made on behalf of another site: it must be JSON (which a
/// cross-site form cannot send) and come from this origin.
fn same_origin_write(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        ));
    }
    same_site(headers)
}

/// Refuses a request that a browser made on behalf of another site (`Sec-Fetch-Site`,
/// `Origin`); clients other than browsers send neither.
fn same_site(headers: &HeaderMap) -> Result<(), ApiError> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if site != "same-origin" && site != "none" {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("cross-site request refused (Sec-Fetch-Site: {site})"),
            ));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        let bare = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        if host.is_empty() || bare != Some(host) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("cross-origin request refused (Origin: {origin})"),
            ));
        }
    }
    Ok(())
}

async fn review(State(bank): State<AsyncBank>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> ApiResult {
    same_origin_write(&headers)?;
    let id = parse_id("id", &id)?;
    if body.len() > MAX_REVIEW_BODY_BYTES {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "review body is too large"));
    }
    let r: ReviewBody = serde_json::from_slice(&body).map_err(|e| ApiError::invalid("body", e))?;
    let label = parse_label("label", r.label.trim())?;
    let reviewer = r.reviewer.trim().to_string();
    if reviewer.is_empty() {
        return Err(ApiError::invalid("reviewer", "is required"));
    }
    if reviewer.len() > MAX_REVIEWER_BYTES {
        return Err(ApiError::invalid(
            "reviewer",
            format!("is over {MAX_REVIEWER_BYTES} bytes"),
        ));
    }
    if r.note.chars().count() > MAX_NOTE_CHARS {
        return Err(ApiError::invalid(
            "note",
            format!("is over {MAX_NOTE_CHARS} characters"),
        ));
    }
    let note = r.note;
    let view = bank.review_match(id, label, reviewer, note).await?;
    info!(match_id = id, label = label.as_str(), "match reviewed (web)");
    ok(&view)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_parse_and_name_bad_fields() {
        let (q, size, tok) = match_query(Some(
            "takedown=7&verdict=reupload&min_score=0.5&label=CONFIRMED&source=batch&seller=a%20b&marketplace=Shopee&page_size=20&page_token=p1.x&from=&to=2025-01-01T00:00:00Z",
        ))
        .unwrap();
        assert_eq!(q.takedown_id, Some(7));
        assert_eq!(q.verdict, Some(Verdict::Reupload));
        assert_eq!(q.min_score, Some(0.5));
        assert_eq!(q.label, Some(Label::Confirmed));
        assert_eq!(q.source, Some(Source::Batch));
        assert_eq!(q.seller_id.as_deref(), Some("a b"));
        assert_eq!(q.marketplace.as_deref(), Some("shopee"));
        assert_eq!(q.from_ms, None);
        assert_eq!(q.to_ms, Some(1_735_689_600_000));
        assert_eq!((size, tok.as_deref()), (20, Some("p1.x")));
        for (raw, field) in [
            ("takedown=x", "takedown"),
            ("takedown=0", "takedown"),
            ("verdict=CLEAR", "verdict"),
            ("min_score=2", "min_score"),
            ("label=maybe", "label"),
            ("source=fax", "source"),
            ("from=yesterday", "from"),
            ("page_size=501", "page_size"),
            ("colour=red", "colour"),
            ("seller=a&seller=b", "seller"),
        ] {
            let e = match_query(Some(raw)).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{raw}");
            assert_eq!(e.field.as_deref(), Some(field), "{raw}: {}", e.error);
            assert!(e.error.starts_with(field), "{raw}: {}", e.error);
        }
    }

    #[test]
    fn days_are_utc_dates() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(1_735_689_600_000 - 1), "2024-12-31");
    }

    #[test]
    fn writes_need_json_and_same_origin() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert_eq!(
            same_origin_write(&h).unwrap_err().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(same_origin_write(&h).is_err());
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        same_origin_write(&h).unwrap();
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        same_origin_write(&h).unwrap();
        h.insert(header::ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert_eq!(same_origin_write(&h).unwrap_err().status, StatusCode::FORBIDDEN);
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert_eq!(same_origin_write(&h).unwrap_err().status, StatusCode::FORBIDDEN);
    }
}
