//! The JSON-over-HTTP API (`/api/v1/` on the web port) through a real HTTP client (reqwest)
//! against the real daemon: keys and roles as gRPC has them, images as base64 and as hashes,
//! bad input named by field, errors as `{"error": {code, message, field}}`, and the OpenAPI
//! document, which must describe every route served and the fields of real answers.
use std::net::SocketAddr;

use relist_core::auth::Role;
use relist_core::fingerprint::DecodeLimits;
use relist_server::grpc::ServerOptions;
use serde_json::{json, Value};

use crate::common::*;

/// A JSON answer.
struct Answer {
    status: u16,
    www_authenticate: Option<String>,
    body: Value,
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(addr: SocketAddr) -> Api {
        Api {
            // One connection per request: reusing a pooled connection that the server closed
            // meanwhile fails a request at random on a loaded machine (seen once in a full run).
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .pool_max_idle_per_host(0)
                .build()
                .expect("reqwest client"),
            base: format!("http://{addr}"),
        }
    }

    async fn send(&self, method: &str, path: &str, key: Option<&str>, body: Option<&Value>) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.header("Authorization", format!("Bearer {k}"));
        }
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(b.to_string());
        }
        let r = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = r.status().as_u16();
        let www_authenticate = r
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        assert_eq!(
            r.headers().get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "{path}"
        );
        let text = r.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"));
        Answer {
            status,
            www_authenticate,
            body,
        }
    }
}

/// Checks `v` against the document's schema `s` for the main things: types, required
/// properties, enums, array items, recursively through `$ref`s. Returns what is wrong.
fn conforms(doc: &Value, s: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/components/schemas/");
        let target = &doc["components"]["schemas"][name];
        assert!(target.is_object(), "dangling $ref {r}");
        return conforms(doc, target, v, at, errors);
    }
    if let Some(options) = s.get("oneOf").and_then(Value::as_array) {
        let ok = options.iter().any(|o| {
            let mut e = Vec::new();
            conforms(doc, o, v, at, &mut e);
            e.is_empty()
        });
        if !ok {
            errors.push(format!("{at}: {v} matches none of {s}"));
        }
        return;
    }
    let types: Vec<&str> = match &s["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !types.is_empty() {
        let ok = types.iter().any(|t| match *t {
            "null" => v.is_null(),
            "string" => v.is_string(),
            "integer" => v.is_u64() || v.is_i64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "array" => v.is_array(),
            "object" => v.is_object(),
            other => panic!("unknown type {other} in the schema at {at}"),
        });
        if !ok {
            errors.push(format!("{at}: {v} is not {types:?}"));
            return;
        }
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array) {
        if !v.is_null() && !allowed.contains(v) {
            errors.push(format!("{at}: {v} is not one of {allowed:?}"));
        }
    }
    if let Some(obj) = v.as_object() {
        for r in s["required"].as_array().into_iter().flatten() {
            let r = r.as_str().unwrap();
            if !obj.contains_key(r) {
                errors.push(format!("{at}: required {r} is missing"));
            }
        }
        if let Some(props) = s.get("properties").and_then(Value::as_object) {
            for (k, sub) in props {
                if let Some(x) = obj.get(k) {
                    conforms(doc, sub, x, &format!("{at}.{k}"), errors);
                }
            }
        }
    }
    if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            conforms(doc, items, x, &format!("{at}[{i}]"), errors);
        }
    }
}

/// Asserts that the answer is what the document says `method path` answers with its status.
fn documented(doc: &Value, method: &str, path: &str, a: &Answer) {
    let op = &doc["paths"][path][method.to_ascii_lowercase()];
    assert!(op.is_object(), "{method} {path} is not in the document");
    let resp = &op["responses"][a.status.to_string()];
    assert!(
        resp.is_object(),
        "{method} {path} answered {} which the document does not list: {}",
        a.status,
        a.body
    );
    let s = &resp["content"]["application/json"]["schema"];
    let mut errors = Vec::new();
    conforms(doc, s, &a.body, "body", &mut errors);
    assert!(
        errors.is_empty(),
        "{method} {path} {}: {errors:#?}\n{}",
        a.status,
        a.body
    );
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

const PDQ: &str = "e8e8d0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6339e23c33b8c";
const PDQ_NEAR: &str = "e8e8d0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6339e23c33b8f";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_checks_registers_removes_and_lists_as_its_openapi_document_says() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_full(dir.path(), DecodeLimits::default(), ServerOptions::default(), true).await;
    let api = Api::new(server.http.expect("web port"));
    let admin = server.create_key(Role::Admin, None);
    let checker = server.create_key(Role::Checker, None);
    let writer = server.create_key(Role::Writer, Some("shopee"));
    let analyst = server.create_key(Role::Analyst, None);

    // The document, open, and in agreement with what the router serves.
    let d = api.send("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(d.status, 200, "{}", d.body);
    let doc = d.body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let served = relist_server::web::api::routes();
    let mut described = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                described.push((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    for (m, p) in &served {
        assert!(
            described.contains(&(m.to_string(), p.to_string())),
            "{m} {p} is served but not described"
        );
    }
    for (m, p) in &described {
        assert!(
            served.iter().any(|(sm, sp)| sm.as_str() == m && sp == p),
            "{m} {p} is described but not served"
        );
        // And the daemon really answers there (an unknown id is a 404 of its own).
        let path = p.replace("{id}", "999999");
        let body = (m == "POST").then(|| json!({}));
        let a = api.send(m, &path, Some(&admin), body.as_ref()).await;
        assert_ne!(a.status, 405, "{m} {p}: {}", a.body);
        assert_ne!(a.body["error"]["message"], "no such page", "{m} {p}");
        documented(&doc, m, p, &a);
    }

    // Keys and roles, as gRPC has them.
    let photo0 = photo(910, 400, 300);
    let image = json!({ "data": b64(&png(&photo0)) });
    let takedown = json!({
        "listing": { "marketplace": "shopee", "listing_id": "t1", "seller_id": "s9",
                     "title": "jaket kulit asli", "images": [image] },
        "reason": "counterfeit"
    });
    let a = api.send("POST", "/api/v1/takedowns", None, Some(&takedown)).await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(a.body["error"]["code"], "UNAUTHENTICATED");
    assert_eq!(a.www_authenticate.as_deref(), Some("Bearer"));
    documented(&doc, "POST", "/api/v1/takedowns", &a);
    let a = api
        .send("POST", "/api/v1/takedowns", Some("rk_wrong"), Some(&takedown))
        .await;
    assert_eq!(a.status, 401);
    let a = api
        .send("POST", "/api/v1/takedowns", Some(&checker), Some(&takedown))
        .await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(a.body["error"]["code"], "PERMISSION_DENIED");
    let mut elsewhere = takedown.clone();
    elsewhere["listing"]["marketplace"] = json!("lazada");
    let a = api
        .send("POST", "/api/v1/takedowns", Some(&writer), Some(&elsewhere))
        .await;
    assert_eq!(a.status, 403, "a writer of shopee may not write lazada: {}", a.body);

    // Register with an image file (base64): created, then updated.
    let a = api
        .send("POST", "/api/v1/takedowns", Some(&writer), Some(&takedown))
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    documented(&doc, "POST", "/api/v1/takedowns", &a);
    let td = a.body["takedown_id"].as_u64().unwrap();
    assert_eq!(a.body["updated"], false);
    assert_eq!(a.body["fingerprints"]["images"][0]["pdq"].as_str().unwrap().len(), 64);
    let a = api
        .send("POST", "/api/v1/takedowns", Some(&writer), Some(&takedown))
        .await;
    assert_eq!(
        (a.status, a.body["takedown_id"].as_u64(), &a.body["updated"]),
        (200, Some(td), &json!(true))
    );
    documented(&doc, "POST", "/api/v1/takedowns", &a);

    // A re-upload (mirrored, re-encoded as JPEG) is found; checks need the checker role.
    let reupload = json!({ "listing": { "marketplace": "tokopedia", "listing_id": "c1", "seller_id": "x",
        "images": [{ "data": b64(&jpeg(&photo0.fliph(), 80)) }] } });
    let a = api.send("POST", "/api/v1/check", Some(&writer), Some(&reupload)).await;
    assert_eq!(a.status, 403, "a writer key does not check: {}", a.body);
    let a = api.send("POST", "/api/v1/check", Some(&checker), Some(&reupload)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    documented(&doc, "POST", "/api/v1/check", &a);
    assert_eq!(a.body["verdict"], "REUPLOAD");
    assert_eq!(a.body["matches"][0]["takedown_id"].as_u64(), Some(td));
    assert_eq!(a.body["matches"][0]["images"][0]["kind"], "pdq");
    let match_id = a.body["match_id"].as_u64().expect("recorded");
    let other = json!({ "listing": { "marketplace": "tokopedia", "listing_id": "c2",
        "images": [{ "data": b64(&png(&photo(911, 400, 300))) }] } });
    let a = api.send("POST", "/api/v1/check", Some(&checker), Some(&other)).await;
    assert_eq!(
        (a.status, &a.body["verdict"], &a.body["match_id"]),
        (200, &json!("CLEAR"), &Value::Null)
    );
    documented(&doc, "POST", "/api/v1/check", &a);

    // Hash-only listings, as gRPC takes them.
    let hashed = json!({ "listing": { "marketplace": "shopee", "listing_id": format!("pdq-{PDQ}"),
        "title": "kemeja flanel import", "images": [{ "pdq": PDQ, "phash": "8f373714acfcf4d0" }] }, "reason": "imported" });
    let a = api.send("POST", "/api/v1/takedowns", Some(&admin), Some(&hashed)).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let hashed_td = a.body["takedown_id"].as_u64().unwrap();
    assert_eq!(a.body["fingerprints"]["images"][0]["phash"], "8f373714acfcf4d0");
    let near = json!({ "listing": { "marketplace": "tokopedia", "listing_id": "h1",
        "title": "kemeja flanel import", "images": [{ "pdq": PDQ_NEAR, "pdq_quality": 90 }] } });
    let a = api.send("POST", "/api/v1/check", Some(&checker), Some(&near)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_ne!(a.body["verdict"], "CLEAR", "{}", a.body);
    assert_eq!(a.body["matches"][0]["takedown_id"].as_u64(), Some(hashed_td));

    // Bad input: 400, the field named, nothing stored.
    let listing =
        |images: Value| json!({ "listing": { "marketplace": "shopee", "listing_id": "bad", "images": images } });
    for (body, field) in [
        (json!({}), "listing"),
        (
            json!({ "listing": { "listing_id": "1", "title": "x" } }),
            "listing.marketplace",
        ),
        (
            json!({ "listing": { "marketplace": "shopee", "title": "x" } }),
            "listing.listing_id",
        ),
        (listing(json!([])), "listing"),
        (listing(json!([{ "pdq": "abc" }])), "listing.images[0].pdq"),
        (listing(json!([{ "phash": "xyz" }])), "listing.images[0].phash"),
        (
            listing(json!([{ "pdq": PDQ }, { "data": "%%%" }])),
            "listing.images[1].data",
        ),
        (
            listing(json!([{ "data": b64(b"not an image at all") }])),
            "listing.images[0].data",
        ),
        (listing(json!([{ "data": b64(b"x"), "pdq": PDQ }])), "listing.images[0]"),
        (
            listing(json!([{ "pdq": PDQ, "pdq_quality": 101 }])),
            "listing.images[0].pdq_quality",
        ),
        (listing(json!([{ "url": "http://example.com/a.jpg" }])), "body"),
        (
            json!({ "listing": { "marketplace": "shopee", "listing_id": "1", "title": "x" }, "extra": 1 }),
            "body",
        ),
    ] {
        for (path, key) in [("/api/v1/check", &checker), ("/api/v1/takedowns", &admin)] {
            if path == "/api/v1/check" && body.get("extra").is_some() {
                continue;
            }
            let a = api.send("POST", path, Some(key), Some(&body)).await;
            assert_eq!(a.status, 400, "{path} {body}: {}", a.body);
            documented(&doc, "POST", path, &a);
            let e = &a.body["error"];
            assert_eq!(e["code"], "INVALID_ARGUMENT", "{body}");
            assert_eq!(e["field"], field, "{path} {body}: {e}");
            assert!(e["message"].as_str().unwrap().starts_with(field), "{e}");
        }
    }
    let a = api
        .send(
            "POST",
            "/api/v1/takedowns",
            Some(&admin),
            Some(
                &json!({ "listing": { "marketplace": "m", "listing_id": "1", "title": "x" }, "taken_down_at_ms": -5 }),
            ),
        )
        .await;
    assert_eq!((a.status, &a.body["error"]["field"]), (400, &json!("taken_down_at_ms")));
    let raw = reqwest::Client::new()
        .post(format!("{}/api/v1/check", api.base))
        .header("Authorization", format!("Bearer {checker}"))
        .header("Content-Type", "text/plain")
        .body(reupload.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 415);
    let e: Value = serde_json::from_str(&raw.text().await.unwrap()).unwrap();
    assert_eq!(e["error"]["code"], "UNSUPPORTED_MEDIA_TYPE");
    let a = api.send("GET", "/api/v1/nothing", Some(&admin), None).await;
    assert_eq!((a.status, &a.body["error"]["code"]), (404, &json!("NOT_FOUND")));

    // The history: the recorded match, for analysts; filters as the page has them.
    let a = api.send("GET", "/api/v1/matches", Some(&checker), None).await;
    assert_eq!(a.status, 403);
    let a = api
        .send("GET", "/api/v1/matches?verdict=REUPLOAD", Some(&analyst), None)
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    documented(&doc, "GET", "/api/v1/matches", &a);
    let ids: Vec<u64> = a.body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["match_id"].as_u64().unwrap())
        .collect();
    assert!(ids.contains(&match_id), "{ids:?}");
    assert_eq!(a.body["records"][ids.len() - 1]["candidate"]["listing_id"], "c1");
    let a = api
        .send(
            "GET",
            &format!("/api/v1/matches?takedown={td}&page_size=1"),
            Some(&analyst),
            None,
        )
        .await;
    assert_eq!(a.body["records"].as_array().unwrap().len(), 1);
    for (q, field) in [
        ("verdict=MAYBE", "verdict"),
        ("page_size=100000", "page_size"),
        ("colour=red", "colour"),
    ] {
        let a = api
            .send("GET", &format!("/api/v1/matches?{q}"), Some(&analyst), None)
            .await;
        assert_eq!(
            (a.status, &a.body["error"]["field"]),
            (400, &json!(field)),
            "{q}: {}",
            a.body
        );
        documented(&doc, "GET", "/api/v1/matches", &a);
    }

    // Get and remove: the takedown stops matching at once.
    let a = api
        .send("GET", &format!("/api/v1/takedowns/{td}"), Some(&writer), None)
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    documented(&doc, "GET", "/api/v1/takedowns/{id}", &a);
    assert_eq!(a.body["listing"]["listing_id"], "t1");
    assert_eq!(a.body["removed_at_ms"], Value::Null);
    let a = api
        .send("DELETE", &format!("/api/v1/takedowns/{hashed_td}"), Some(&writer), None)
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = api
        .send("DELETE", &format!("/api/v1/takedowns/{td}"), Some(&checker), None)
        .await;
    assert_eq!(a.status, 403);
    let a = api
        .send("DELETE", &format!("/api/v1/takedowns/{td}"), Some(&writer), None)
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    documented(&doc, "DELETE", "/api/v1/takedowns/{id}", &a);
    assert!(a.body["removed_at_ms"].as_i64().unwrap() > 0);
    let a = api.send("POST", "/api/v1/check", Some(&checker), Some(&reupload)).await;
    assert_eq!(a.body["verdict"], "CLEAR", "{}", a.body);
    let a = api
        .send("GET", &format!("/api/v1/takedowns/{td}"), Some(&writer), None)
        .await;
    assert!(a.body["removed_at_ms"].as_i64().is_some(), "{}", a.body);
    for (path, status, field) in [
        ("/api/v1/takedowns/abc", 400, json!("id")),
        ("/api/v1/takedowns/0", 400, json!("id")),
        ("/api/v1/takedowns/999999", 404, Value::Null),
    ] {
        let a = api.send("DELETE", path, Some(&admin), None).await;
        assert_eq!(
            (a.status, &a.body["error"]["field"]),
            (status, &field),
            "{path}: {}",
            a.body
        );
        documented(&doc, "DELETE", "/api/v1/takedowns/{id}", &a);
    }

    server.stop().await;
}

/// The JSON API runs under the daemon's configured request limits, as gRPC does (a title
/// longer than --max-title-chars is refused, naming the field).
#[tokio::test]
async fn the_http_api_uses_the_daemons_configured_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let args: Vec<std::ffi::OsString> = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--http".into(),
        "127.0.0.1:0".into(),
        "--max-title-chars".into(),
        "10".into(),
        "--data-dir".into(),
        data.into(),
    ];
    let daemon = crate::common::Daemon::start(args, "relist web page serving");
    let body = |title: &str| {
        serde_json::json!({"listing": {"marketplace": "shopee", "listing_id": "1", "title": title,
            "images": [{"pdq": "e8e8d0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6339e23c33b8c"}]}})
    };
    let client = reqwest::Client::new();
    let url = format!("http://{}/api/v1/check", daemon.addr);
    let post = |title: &str| {
        client
            .post(&url)
            .header("content-type", "application/json")
            .body(body(title).to_string())
            .send()
    };
    let ok = post("short").await.expect("post");
    assert_eq!(ok.status(), reqwest::StatusCode::OK);
    let refused = post("a title well over ten characters").await.expect("post");
    assert_eq!(refused.status(), reqwest::StatusCode::BAD_REQUEST);
    let err: serde_json::Value = serde_json::from_slice(&refused.bytes().await.expect("body")).expect("json error");
    assert_eq!(err["error"]["field"], "listing.title", "{err}");
}
