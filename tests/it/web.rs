//! The analysts' web page: its JSON API over real matches (filters, pagination, errors,
//! thumbnails, reviews seen through gRPC), and a real headless Chromium driving the page
//! through chromedriver (filter, open a match, confirm it).
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::common::*;
use relist_proto::api::pb;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// Bounds every network wait of these tests.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// An HTTP answer.
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A tiny HTTP/1.1 client: one request per connection, bounded in time.
async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    tokio::time::timeout(IO_TIMEOUT, http_inner(addr, method, path, headers, body))
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: timed out"))
}

async fn http_inner(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    s.write_all(body).await.expect("write body");
    // Read until the response is complete (some servers keep the connection open).
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = s.read(&mut buf).await.expect("read");
        raw.extend_from_slice(&buf[..n]);
        if let Some(resp) = parse_response(&raw, n == 0) {
            return resp;
        }
        assert!(n > 0, "{method} {path}: connection closed mid-response");
    }
}

/// A complete response from `raw`, or None while more bytes are needed (`eof`: no more come).
fn parse_response(raw: &[u8], eof: bool) -> Option<Resp> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let eol = at + rest[at..].windows(2).position(|w| w == b"\r\n")?;
            let size_line = String::from_utf8_lossy(&rest[at..eol]).into_owned();
            let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16).expect("chunk size");
            if size == 0 {
                break out;
            }
            if rest.len() < eol + 2 + size + 2 {
                return None;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            at = eol + 2 + size + 2;
        }
    } else if let Some(len) = header("content-length") {
        let len: usize = len.parse().expect("content-length");
        if rest.len() < len {
            return None;
        }
        rest[..len].to_vec()
    } else if eof {
        rest.to_vec()
    } else {
        return None;
    };
    Some(Resp { status, headers, body })
}

async fn get(addr: SocketAddr, path: &str) -> Resp {
    http(addr, "GET", path, &[], b"").await
}

async fn post_json(addr: SocketAddr, path: &str, body: &Value, extra: &[(&str, &str)]) -> Resp {
    let mut headers = vec![("Content-Type", "application/json")];
    headers.extend_from_slice(extra);
    http(addr, "POST", path, &headers, body.to_string().as_bytes()).await
}

/// The daemon (gRPC) and its web page, in process, over a history of real matches.
struct Fixture {
    server: TestServer,
    web: SocketAddr,
    stop_web: Option<oneshot::Sender<()>>,
    web_task: Option<tokio::task::JoinHandle<()>>,
    client: Client,
    /// Takedowns of photos 0, 1, 2, then the text-only one.
    takedowns: Vec<u64>,
    /// Match ids in the order the checks were made.
    matches: Vec<u64>,
}

const TEXT_TITLE: &str = "sepatu nike air jordan retro high og chicago ukuran 42";

impl Fixture {
    async fn start(dir: &Path) -> Fixture {
        let server = TestServer::start(dir).await;
        let mut client = server.client().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind web");
        let web = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let bank = server.bank.clone();
        let web_task = tokio::spawn(async move {
            relist_server::web::serve(bank, listener, async {
                let _ = rx.await;
            })
            .await
            .expect("web serve");
        });

        let photos: Vec<_> = (0..3u64).map(|s| photo(500 + s, 400, 300)).collect();
        let mut takedowns = Vec::new();
        for (i, p) in photos.iter().enumerate() {
            let l = listing(
                "shopee",
                &format!("t{i}"),
                &format!("orig{i}"),
                &format!("jaket kulit model {i}"),
                vec![jpeg(p, 90)],
            );
            takedowns.push(
                register(&mut client, l, "illegal used clothing import")
                    .await
                    .takedown_id,
            );
        }
        let text = listing("shopee", "t-text", "origtext", TEXT_TITLE, vec![]);
        takedowns.push(register(&mut client, text, "counterfeit").await.takedown_id);

        let mut matches = Vec::new();
        // Six upload checks: candidate i re-lists photo i % 3, mirrored, from "rep" or "other".
        for i in 0..6usize {
            let seller = if i % 2 == 0 { "rep" } else { "other" };
            let l = listing(
                "tokopedia",
                &format!("c{i}"),
                seller,
                "",
                vec![jpeg(&photos[i % 3].fliph(), 80)],
            );
            let r = check(&mut client, l).await;
            assert_eq!(verdict(&r), pb::Verdict::Reupload);
            matches.push(r.match_id);
        }
        // One catalog re-check (source batch) on another marketplace.
        let mut s = client
            .check_listings(tokio_stream::iter(vec![pb::CheckListingRequest {
                listing: Some(listing("lazada", "b1", "rep", "", vec![jpeg(&photos[0], 85)])),
                ..Default::default()
            }]))
            .await
            .unwrap()
            .into_inner();
        let item = s.message().await.unwrap().unwrap();
        let Some(pb::check_listings_response::Outcome::Result(batch)) = item.outcome else {
            panic!("batch item failed: {item:?}")
        };
        matches.push(batch.match_id);
        // A title-only match (no image at all): REVIEW, and no thumbnails to show.
        let r = check(&mut client, listing("tokopedia", "c-text", "other", TEXT_TITLE, vec![])).await;
        assert_eq!(verdict(&r), pb::Verdict::Review);
        matches.push(r.match_id);

        Fixture {
            server,
            web,
            stop_web: Some(tx),
            web_task: Some(web_task),
            client,
            takedowns,
            matches,
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop_web.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.web_task.take() {
            tokio::time::timeout(IO_TIMEOUT, t)
                .await
                .expect("web server stops")
                .expect("web task");
        }
        self.server.stop().await;
    }

    async fn grpc_label(&mut self, id: u64) -> (pb::ReviewLabel, pb::MatchRecord) {
        let rec = self
            .client
            .get_match(pb::GetMatchRequest { match_id: id })
            .await
            .expect("GetMatch")
            .into_inner();
        (pb::ReviewLabel::try_from(rec.label).expect("known label"), rec)
    }
}

fn ids(page: &Value) -> Vec<u64> {
    page["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["match_id"].as_u64().expect("match_id"))
        .collect()
}

async fn list(addr: SocketAddr, query: &str) -> Vec<u64> {
    let r = get(addr, &format!("/api/matches?{query}")).await;
    assert_eq!(r.status, 200, "{query}: {}", r.text());
    ids(&r.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_api_serves_filters_pages_thumbnails_and_reviews() {
    let dir = tempfile::tempdir().unwrap();
    let mut fx = Fixture::start(dir.path()).await;
    let web = fx.web;
    let (td, m) = (fx.takedowns.clone(), fx.matches.clone());
    let newest_first: Vec<u64> = m.iter().rev().copied().collect();

    // Everything, newest first, as JSON that is never cached.
    let r = get(web, "/api/matches").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let page = r.json();
    assert_eq!(ids(&page), newest_first);
    assert!(page["next_page_token"].is_null());
    let first = &page["records"][newest_first.len() - 1];
    assert_eq!(first["candidate"]["marketplace"], "tokopedia");
    assert_eq!(first["label"], "UNREVIEWED");
    assert_eq!(first["source"], "upload");
    let ev = &first["matches"][0]["images"][0];
    assert_eq!(ev["kind"], "pdq");
    assert!(ev["distance"].as_u64().unwrap() <= 31, "{ev}");
    assert!(ev["transform"].is_string(), "{ev}");

    // Filters, alone and together.
    assert_eq!(list(web, &format!("takedown={}", td[1])).await, vec![m[4], m[1]]);
    assert_eq!(list(web, &format!("takedown={}", td[0])).await, vec![m[6], m[3], m[0]]);
    assert_eq!(list(web, "seller=rep").await, vec![m[6], m[4], m[2], m[0]]);
    assert_eq!(list(web, "source=batch").await, vec![m[6]]);
    assert_eq!(list(web, "marketplace=LAZADA").await, vec![m[6]]);
    assert_eq!(list(web, "verdict=REVIEW").await, vec![m[7]]);
    assert_eq!(list(web, "verdict=reupload").await.len(), 7);
    assert_eq!(
        list(web, "seller=rep&source=upload&min_score=0.5").await,
        vec![m[4], m[2], m[0]]
    );
    assert_eq!(list(web, "label=CONFIRMED").await, Vec::<u64>::new());
    let later = relist_core::domain::now_ms() + 3_600_000;
    assert!(list(web, &format!("from={later}")).await.is_empty());
    assert_eq!(list(web, "from=2020-01-01T00:00:00Z&to=").await, newest_first);

    // Pagination with the history's token: pages of 3, the same records, in order.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..10 {
        let q = match &token {
            Some(t) => format!("/api/matches?page_size=3&page_token={t}"),
            None => "/api/matches?page_size=3".to_string(),
        };
        let p = get(web, &q).await.json();
        let got = ids(&p);
        assert!(got.len() <= 3);
        seen.extend(got);
        match p["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, newest_first);

    // One match; unknown ids are 404, bad input 400 naming the field.
    let one = get(web, &format!("/api/matches/{}", m[0])).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["match_id"].as_u64(), Some(m[0]));
    for path in [
        "/api/matches/999".to_string(),
        "/api/takedowns/999".to_string(),
        format!("/api/thumbs/match/{}/3.jpg", m[0]),
        "/api/thumbs/takedown/999/0.jpg".to_string(),
        "/nothing-here".to_string(),
    ] {
        let r = get(web, &path).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert!(r.json()["error"].is_string(), "{path}");
    }
    for (path, field) in [
        ("/api/matches?verdict=MAYBE", "verdict"),
        ("/api/matches?takedown=abc", "takedown"),
        ("/api/matches?min_score=7", "min_score"),
        ("/api/matches?from=last%20week", "from"),
        ("/api/matches?page_size=100000", "page_size"),
        ("/api/matches?page_token=nope", "page_token"),
        ("/api/matches?label=GOOD", "label"),
        ("/api/matches?colour=red", "colour"),
        ("/api/matches/abc", "id"),
        ("/api/stats?from=x", "from"),
        ("/api/thumbs/match/1/x.jpg", "image"),
    ] {
        let r = get(web, path).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        let e = r.json();
        assert_eq!(e["field"], field, "{path}: {e}");
        assert!(e["error"].as_str().unwrap().starts_with(field), "{path}: {e}");
    }

    // Thumbnails: the candidate's image and the takedown's stored image, as JPEG.
    for path in [
        format!("/api/thumbs/match/{}/0.jpg", m[0]),
        format!("/api/thumbs/takedown/{}/0.jpg", td[0]),
    ] {
        let r = get(web, &path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some("image/jpeg"), "{path}");
        let img = image::load_from_memory(&r.body).expect("a JPEG");
        assert_eq!((img.width(), img.height()), (160, 120), "{path}");
    }
    // The title-only match kept no image.
    assert_eq!(get(web, &format!("/api/thumbs/match/{}/0.jpg", m[7])).await.status, 404);

    // A takedown's timeline: its matches over time.
    let t = get(web, &format!("/api/takedowns/{}", td[0])).await.json();
    assert_eq!(t["takedown"]["id"].as_u64(), Some(td[0]));
    assert_eq!(t["images"], 1);
    let tl: Vec<u64> = t["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["match_id"].as_u64().unwrap())
        .collect();
    assert_eq!(tl, vec![m[6], m[3], m[0]]);
    let per_day: u64 = t["per_day"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d[1].as_u64().unwrap())
        .sum();
    assert_eq!(per_day, 3);
    assert_eq!(t["truncated"], false);

    // Statistics (default: the last 30 days).
    let s = get(web, "/api/stats").await;
    assert_eq!(s.status, 200);
    assert_eq!(s.json()["stats"]["total"], 8);

    // Reviews: guarded against cross-site writes, validated, then visible through gRPC.
    let path = format!("/api/matches/{}/review", m[1]);
    let body = json!({"label": "CONFIRMED", "reviewer": "Ayu", "note": "same jacket"});
    let r = http(
        web,
        "POST",
        &path,
        &[("Content-Type", "text/plain")],
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 415, "{}", r.text());
    let r = post_json(web, &path, &body, &[("Origin", "http://evil.example")]).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = post_json(web, &path, &body, &[("Sec-Fetch-Site", "cross-site")]).await;
    assert_eq!(r.status, 403, "{}", r.text());
    for (bad, field) in [
        (json!({"label": "YES", "reviewer": "Ayu"}), "label"),
        (json!({"label": "CONFIRMED", "reviewer": "  "}), "reviewer"),
        (json!({"label": "CONFIRMED"}), "body"),
        (json!({"label": "CONFIRMED", "reviewer": "Ayu", "extra": 1}), "body"),
    ] {
        let r = post_json(web, &path, &bad, &[]).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert_eq!(r.json()["field"], field, "{bad}");
    }
    let r = post_json(web, "/api/matches/999/review", &body, &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(
        fx.grpc_label(m[1]).await.0,
        pb::ReviewLabel::Unreviewed,
        "nothing written yet"
    );

    let origin = format!("http://{web}");
    let r = post_json(
        web,
        &path,
        &body,
        &[("Origin", &origin), ("Sec-Fetch-Site", "same-origin")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let v = r.json();
    assert_eq!(v["label"], "CONFIRMED");
    assert_eq!(v["reviews"][0]["reviewer"], "Ayu");
    let (label, rec) = fx.grpc_label(m[1]).await;
    assert_eq!(label, pb::ReviewLabel::Confirmed);
    assert_eq!(rec.reviews.last().unwrap().note, "same jacket");
    assert_eq!(list(web, "label=CONFIRMED").await, vec![m[1]]);
    // Undo.
    let undo = json!({"label": "UNREVIEWED", "reviewer": "Ayu", "note": "clicked the wrong one"});
    assert_eq!(post_json(web, &path, &undo, &[]).await.status, 200);
    assert_eq!(fx.grpc_label(m[1]).await.0, pb::ReviewLabel::Unreviewed);
    assert!(list(web, "label=CONFIRMED").await.is_empty());

    // The page itself, with its assets, typed and locked down.
    let r = get(web, "/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(r.text().contains("<title>relist"), "{}", r.text());
    assert!(r
        .header("content-security-policy")
        .unwrap()
        .contains("script-src 'self'"));
    for (asset, ty) in [("/app.js", "text/javascript"), ("/style.css", "text/css")] {
        let r = get(web, asset).await;
        assert_eq!(r.status, 200, "{asset}");
        assert!(r.header("content-type").unwrap().starts_with(ty), "{asset}");
    }
    // The page only reads, except for reviews.
    assert_eq!(
        http(web, "DELETE", &format!("/api/matches/{}", m[0]), &[], b"")
            .await
            .status,
        405
    );

    fx.stop().await;
}

// ---------------------------------------------------------------------------------------
// The page in a real browser: Debian's chromium driven by chromedriver over WebDriver.

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const SCREENSHOT: &str = "/tmp/relist-web.png";

/// A chromedriver process, killed on drop.
struct Chromedriver {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One WebDriver session.
struct Browser {
    driver: SocketAddr,
    session: String,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

async fn wd(driver: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Value {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let headers: &[(&str, &str)] = if body.is_empty() {
        &[]
    } else {
        &[("Content-Type", "application/json")]
    };
    let r = http(driver, method, path, headers, body.as_bytes()).await;
    let v = r.json();
    assert_eq!(r.status, 200, "WebDriver {method} {path}: {v}");
    v["value"].clone()
}

impl Browser {
    fn path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    async fn goto(&self, url: &str) {
        wd(self.driver, "POST", &self.path("/url"), Some(json!({ "url": url }))).await;
    }

    async fn js(&self, script: &str) -> Value {
        wd(
            self.driver,
            "POST",
            &self.path("/execute/sync"),
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    async fn find(&self, css: &str) -> String {
        let v = wd(
            self.driver,
            "POST",
            &self.path("/element"),
            Some(json!({ "using": "css selector", "value": css })),
        )
        .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        wd(
            self.driver,
            "POST",
            &self.path(&format!("/element/{e}/click")),
            Some(json!({})),
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        wd(
            self.driver,
            "POST",
            &self.path(&format!("/element/{e}/clear")),
            Some(json!({})),
        )
        .await;
        wd(
            self.driver,
            "POST",
            &self.path(&format!("/element/{e}/value")),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Polls a JS expression until it is true; bounded.
    async fn wait_for(&self, what: &str, expr: &str) {
        let script = format!("return !!({expr});");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if self.js(&script).await == Value::Bool(true) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                self.screenshot("/tmp/relist-web-failure.png").await;
                let page = self.js("return document.body.innerText;").await;
                panic!("timed out waiting for {what} ({expr}); page text:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Types `key` into the sign-in form, submits it and waits for `until`.
    async fn sign_in(&self, key: &str, what: &str, until: &str) {
        self.type_into("#login-key", key).await;
        self.click("#login-submit").await;
        self.wait_for(what, until).await;
    }

    async fn screenshot(&self, to: &str) {
        use base64::Engine;
        let v = wd(self.driver, "GET", &self.path("/screenshot"), None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 PNG"))
            .expect("base64");
        std::fs::write(to, png).expect("write screenshot");
    }

    async fn quit(self) {
        wd(self.driver, "DELETE", &self.path(""), None).await;
    }
}

/// Starts chromedriver and a headless chromium session, or says why not.
async fn start_browser(profile: &Path) -> Option<(Chromedriver, Browser)> {
    if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but {CHROMIUM} or {CHROMEDRIVER} is missing: .ci/run installs them");
        }
        println!("skipped: chromium not found");
        return None;
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().unwrap().port()
    };
    let child = std::process::Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn chromedriver");
    let driver = Chromedriver {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    let mut ready = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(driver.addr).await.is_ok() {
            let r = get(driver.addr, "/status").await;
            if r.status == 200 && r.json()["value"]["ready"] == Value::Bool(true) {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "chromedriver did not become ready on {}", driver.addr);
    let caps = json!({
        "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1440,1300",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
            "timeouts": { "pageLoad": 30000, "script": 10000, "implicit": 0 },
        }}
    });
    let v = wd(driver.addr, "POST", "/session", Some(caps)).await;
    let session = v["sessionId"].as_str().expect("sessionId").to_string();
    let browser = Browser {
        driver: driver.addr,
        session,
    };
    Some((driver, browser))
}

const ROWS: &str = "document.querySelectorAll('#matches tbody tr')";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyst_filters_opens_and_confirms_a_match_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let profile = tempfile::tempdir().unwrap();
    let Some((_driver, b)) = start_browser(profile.path()).await else {
        return;
    };
    let mut fx = Fixture::start(dir.path()).await;
    let (td, m) = (fx.takedowns.clone(), fx.matches.clone());
    let url = format!("http://{}/", fx.web);

    // All matches, with both thumbnails of each image pair loaded (or a placeholder).
    b.goto(&url).await;
    b.wait_for("all rows", &format!("{ROWS}.length === {}", m.len())).await;
    b.wait_for(
        "thumbnails",
        "[...document.images].every(i => i.complete) && document.querySelectorAll('.placeholder').length === 2",
    )
    .await;
    let broken = b
        .js("return [...document.images].filter(i => i.naturalWidth === 0).length;")
        .await;
    assert_eq!(broken, json!(0), "every shown thumbnail decodes");
    b.wait_for(
        "statistics",
        "document.querySelector('#stats b') && document.querySelector('#stats b').textContent === '8'",
    )
    .await;
    b.screenshot(SCREENSHOT).await;

    // Filter by verdict: only the title-only REVIEW match is left.
    b.click("#f-verdict option[value=REVIEW]").await;
    b.click("#apply-filters").await;
    b.wait_for(
        "the REVIEW match alone",
        &format!("{ROWS}.length === 1 && {ROWS}[0].dataset.matchId === '{}'", m[7]),
    )
    .await;
    // Reset, then filter by takedown.
    b.click("#reset-filters").await;
    b.wait_for("all rows again", &format!("{ROWS}.length === {}", m.len()))
        .await;
    b.type_into("#f-takedown", &td[1].to_string()).await;
    b.click("#apply-filters").await;
    b.wait_for(
        "the takedown's two matches",
        &format!(
            "{ROWS}.length === 2 && [...{ROWS}].map(r => r.dataset.matchId).join() === '{},{}'",
            m[4], m[1]
        ),
    )
    .await;

    // Open the newest one and confirm it.
    b.click("#matches tbody tr:first-child a.open").await;
    b.wait_for("the match page", "document.querySelector('#reviewer') !== null")
        .await;
    b.wait_for(
        "its image pair",
        "document.querySelectorAll('#match-view img').length >= 2 && [...document.querySelectorAll('#match-view img')].every(i => i.complete && i.naturalWidth > 0)",
    )
    .await;
    b.type_into("#reviewer", "Ayu (ministry)").await;
    b.type_into("#note", "same jacket, mirrored").await;
    b.click("button[data-label=CONFIRMED]").await;
    b.wait_for(
        "the CONFIRMED label",
        "document.querySelector('#match-label') && document.querySelector('#match-label').textContent === 'CONFIRMED'",
    )
    .await;
    let (label, rec) = fx.grpc_label(m[4]).await;
    assert_eq!(label, pb::ReviewLabel::Confirmed);
    let last = rec.reviews.last().expect("a review");
    assert_eq!(
        (last.reviewer.as_str(), last.note.as_str()),
        ("Ayu (ministry)", "same jacket, mirrored")
    );
    b.screenshot("/tmp/relist-web-match.png").await;

    // The takedown's timeline, and back to the match from it.
    b.click(".chip.link").await;
    b.wait_for(
        "the timeline",
        &format!(
            "document.querySelectorAll('.bar').length >= 1 && document.querySelectorAll('#takedown-view tbody tr').length === 2 && location.hash === '#/takedown/{}'",
            td[1]
        ),
    )
    .await;
    b.screenshot("/tmp/relist-web-takedown.png").await;
    b.click(&format!("#takedown-view a[href='#/match/{}']", m[1])).await;
    b.wait_for(
        "the older match",
        &format!(
            "location.hash === '#/match/{}' && document.querySelector('#reviewer') !== null",
            m[1]
        ),
    )
    .await;

    b.quit().await;
    fx.stop().await;
}

/// A hash-only listing with an imported-style id (`pdq-<64 hex>`) and one PDQ hash.
fn long_id_listing(marketplace: &str, pdq: &str, seller: &str, title: &str) -> pb::Listing {
    pb::Listing {
        listing_id: format!("pdq-{pdq}"),
        marketplace: marketplace.into(),
        seller_id: seller.into(),
        title: title.into(),
        description: String::new(),
        images: vec![pb::Image {
            pdq: pdq.into(),
            ..Default::default()
        }],
    }
}

/// Once API keys exist the page shows a sign-in form (no `prompt()`, which headless browsers
/// and monitors never get past): a wrong key and a key of another role are refused with a
/// clear message, a real analyst key shows the history (thumbnails through the session
/// cookie). At 1920 px, long imported ids stay inside the table. Bulk review labels every
/// selected match of a filtered list, the CSV download holds what is shown, and logging out
/// forgets the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_page_signs_in_reviews_in_bulk_and_downloads_csv_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let profile = tempfile::tempdir().unwrap();
    let Some((_driver, b)) = start_browser(profile.path()).await else {
        return;
    };
    let mut fx = Fixture::start(dir.path()).await;
    // An imported hash-only takedown and a re-upload of it, both with `pdq-<64 hex>` ids; the
    // candidate's title starts with a formula character.
    let stored = "e8e8d0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6339e23c33b8c";
    let seen = "e8e8d0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6339e23c33b8f";
    register(
        &mut fx.client,
        long_id_listing("shopee", stored, "imp", "kemeja flanel import"),
        "imported",
    )
    .await;
    let long = check(
        &mut fx.client,
        long_id_listing("tokopedia", seen, "imp2", "=kemeja flanel import"),
    )
    .await;
    assert_ne!(verdict(&long), pb::Verdict::Clear);
    let mut all = fx.matches.clone();
    all.push(long.match_id);
    let key = fx.server.create_key(relist_core::auth::Role::Analyst, None);
    let checker = fx.server.create_key(relist_core::auth::Role::Checker, None);
    wd(
        b.driver,
        "POST",
        &b.path("/window/rect"),
        Some(json!({"width": 1920, "height": 1200})),
    )
    .await;
    let url = format!("http://{}/", fx.web);
    b.goto(&url).await;
    b.wait_for(
        "the sign-in form",
        "!document.querySelector('#login-view').hidden && document.querySelector('#list-view').offsetParent === null",
    )
    .await;
    let alert = http(b.driver, "GET", &b.path("/alert/text"), &[], b"").await;
    assert_eq!(alert.status, 404, "no prompt: {}", alert.text());

    // A wrong key, then a key of a role that may not read the history.
    let status = "document.querySelector('#login-status').textContent";
    b.sign_in(
        "relist_not-a-key",
        "the wrong-key message",
        &format!("{status}.startsWith('Wrong API key')"),
    )
    .await;
    b.sign_in(
        &checker,
        "the wrong-role message",
        &format!("{status}.includes('may not read the match history')"),
    )
    .await;
    assert_eq!(b.js("return sessionStorage.getItem('relist_key');").await, Value::Null);

    // The real key: the history, with thumbnails through the cookie.
    b.sign_in(&key, "all rows", &format!("{ROWS}.length === {}", all.len()))
        .await;
    assert_eq!(b.js("return sessionStorage.getItem('relist_key');").await, json!(key));
    b.wait_for(
        "thumbnails",
        "[...document.images].every(i => i.complete) && document.querySelectorAll('.placeholder').length >= 2",
    )
    .await;
    let broken = b
        .js("return [...document.images].filter(i => i.naturalWidth === 0).length;")
        .await;
    assert_eq!(broken, json!(0), "thumbnails load with the cookie");
    b.wait_for("statistics", "document.querySelector('#stats b') !== null")
        .await;

    // Long ids: cut with the whole id in the title; the actions column inside the table.
    let widths = b
        .js(&format!(
            "const wrap = document.querySelector('.table-wrap').getBoundingClientRect();
             const row = document.querySelector('#matches tbody tr[data-match-id=\"{}\"]');
             const act = row.querySelector('td.act').getBoundingClientRect();
             const ids = [...row.querySelectorAll('.id')].map(e => e.title);
             return {{ window: window.innerWidth, wrap_right: wrap.right, act_right: act.right,
                      scroll: document.querySelector('.table-wrap').scrollWidth,
                      client: document.querySelector('.table-wrap').clientWidth, ids: ids }};",
            long.match_id
        ))
        .await;
    b.screenshot("/tmp/relist-web-key.png").await;
    assert!(widths["window"].as_f64().unwrap() >= 1800.0, "{widths}");
    assert!(
        widths["act_right"].as_f64().unwrap() <= widths["wrap_right"].as_f64().unwrap(),
        "the actions column sticks out of the table: {widths}"
    );
    assert!(
        widths["scroll"].as_f64().unwrap() <= widths["client"].as_f64().unwrap(),
        "the table scrolls sideways: {widths}"
    );
    assert_eq!(
        widths["ids"],
        json!([
            format!("tokopedia / pdq-{seen}"),
            "seller imp2",
            format!("shopee / pdq-{stored}")
        ])
    );

    // CSV of what is shown: a header and one line per row, in the page's order; a cell that
    // starts like a formula is defused.
    b.js("window.__csv = null; const make = URL.createObjectURL;
          URL.createObjectURL = (blob) => { blob.text().then(t => { window.__csv = t; }); return make.call(URL, blob); };
          return true;")
        .await;
    b.click("#download-csv").await;
    b.wait_for("the CSV", "window.__csv !== null").await;
    let csv = b.js("return window.__csv;").await.as_str().unwrap().to_string();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), all.len() + 1, "{csv}");
    assert!(
        lines[0].starts_with("match_id,at,source,verdict,score,label,marketplace,listing_id,"),
        "{csv}"
    );
    let csv_ids: Vec<u64> = lines[1..]
        .iter()
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(csv_ids, all.iter().rev().copied().collect::<Vec<_>>());
    assert!(
        lines[1].contains(&format!(",pdq-{seen},imp2,'=kemeja flanel import,")),
        "{}",
        lines[1]
    );

    // Bulk review of a filtered list: seller "rep" has four matches; label them all.
    b.type_into("#f-seller", "rep").await;
    b.click("#apply-filters").await;
    b.wait_for("the seller's four matches", &format!("{ROWS}.length === 4"))
        .await;
    let shown: Vec<u64> = b
        .js(&format!("return [...{ROWS}].map(r => Number(r.dataset.matchId));"))
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let m = &fx.matches;
    assert_eq!(shown, vec![m[6], m[4], m[2], m[0]]);
    b.click("#select-all").await;
    b.wait_for(
        "four selected",
        "document.querySelector('#bulk-count').textContent === '4 of 4 selected'",
    )
    .await;
    b.type_into("#bulk-reviewer", "Ayu (bulk)").await;
    b.click("#bulk-label option[value=CONFIRMED]").await;
    b.click("#bulk-apply").await;
    b.wait_for(
        "the bulk result",
        "document.querySelector('#bulk-status').textContent === '4 matches labelled CONFIRMED.'",
    )
    .await;
    b.wait_for(
        "the new labels in the list",
        &format!("[...{ROWS}].every(r => r.textContent.includes('CONFIRMED'))"),
    )
    .await;
    for id in &all {
        let view = fx.server.bank.get_match(*id).unwrap();
        let want = if shown.contains(id) {
            relist_core::history::Label::Confirmed
        } else {
            relist_core::history::Label::Unreviewed
        };
        assert_eq!(view.label, want, "match {id}");
        if shown.contains(id) {
            assert_eq!(view.reviews.last().unwrap().reviewer, "Ayu (bulk)");
        }
    }

    // Log out: the key is forgotten, and a reload asks again.
    b.click("#logout").await;
    b.wait_for(
        "the sign-in form again",
        "!document.querySelector('#login-view').hidden",
    )
    .await;
    assert_eq!(b.js("return sessionStorage.getItem('relist_key');").await, Value::Null);
    assert_eq!(
        b.js("return document.cookie.includes('relist_key=rk_');").await,
        json!(false)
    );
    b.goto(&url).await;
    b.wait_for(
        "the sign-in form after a reload",
        "!document.querySelector('#login-view').hidden",
    )
    .await;
    b.quit().await;
    fx.stop().await;
}
