//! `relist batch` end to end: the real binary against an in-process daemon, with a catalog of
//! generated photos on disk, hashes, and URLs served by a tiny local HTTP server (200, 404, a
//! slow one, a flaky one); resuming after a torn write; Ctrl-C.
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use relist_core::domain::Source;
use serde_json::Value;

// ---- a tiny HTTP server for image URLs ----

struct ImageServer {
    addr: SocketAddr,
    flaky_hits: Arc<AtomicU32>,
}

/// Serves /img.jpg (200), /missing.jpg (404), /slow.jpg (answers after 3 s), /flaky.jpg
/// (503 twice, then 200), /big.jpg (a Content-Length over any small limit), /paced.jpg (200
/// after 20 ms). One thread per connection; it lives as long as the test process.
fn image_server(image: Vec<u8>) -> ImageServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let flaky_hits = Arc::new(AtomicU32::new(0));
    let image = Arc::new(image);
    let hits = flaky_hits.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let (image, hits) = (image.clone(), hits.clone());
            std::thread::spawn(move || serve_one(conn, &image, &hits));
        }
    });
    ImageServer { addr, flaky_hits }
}

fn serve_one(mut conn: TcpStream, image: &[u8], flaky: &AtomicU32) {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&req);
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
    let ok = |conn: &mut TcpStream| {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            image.len()
        );
        let _ = conn.write_all(head.as_bytes());
        let _ = conn.write_all(image);
    };
    let status = |conn: &mut TcpStream, s: &str| {
        let _ = conn.write_all(format!("HTTP/1.1 {s}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes());
    };
    match path.as_str() {
        "/img.jpg" => ok(&mut conn),
        "/paced.jpg" => {
            std::thread::sleep(Duration::from_millis(20));
            ok(&mut conn)
        }
        "/slow.jpg" => {
            std::thread::sleep(Duration::from_secs(3));
            ok(&mut conn)
        }
        "/flaky.jpg" => {
            if flaky.fetch_add(1, Ordering::SeqCst) < 2 {
                status(&mut conn, "503 Service Unavailable")
            } else {
                ok(&mut conn)
            }
        }
        "/big.jpg" => {
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 500000000\r\nConnection: close\r\n\r\n");
        }
        _ => status(&mut conn, "404 Not Found"),
    }
    let _ = conn.flush();
}

// ---- running the binary ----

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn relist(args: Vec<String>) -> Run {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_relist"))
            .args(&args)
            .env("RELIST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("run relist");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    })
    .await
    .unwrap()
}

fn batch_args(addr: SocketAddr, catalog: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = vec![
        "batch".to_string(),
        catalog.display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--addr".into(),
        format!("http://{addr}"),
        "--json".into(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn read_jsonl(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad results line {l:?}: {e}")))
        .collect()
}

fn read_csv(p: &Path) -> Vec<HashMap<String, String>> {
    let mut r = csv::Reader::from_path(p).unwrap();
    let headers = r.headers().unwrap().clone();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            headers
                .iter()
                .map(String::from)
                .zip(rec.iter().map(String::from))
                .collect()
        })
        .collect()
}

fn summary(run: &Run) -> Value {
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("summary JSON: {e}\nstdout: {}\nstderr: {}", run.stdout, run.stderr))
}

// ---- the catalog ----

#[derive(Clone, Debug)]
enum Expect {
    Verdict(&'static str),
    Error(String),
}

struct Catalog {
    /// (listing_id, JSON record, CSV images cell, expectation)
    rows: Vec<(String, Value, String, Expect)>,
}

impl Catalog {
    fn write_jsonl(&self, p: &Path) {
        let mut s = String::new();
        for (i, (_, v, _, _)) in self.rows.iter().enumerate() {
            s.push_str(&v.to_string());
            s.push('\n');
            if i == 10 {
                s.push_str("{this is not json\n");
            }
        }
        std::fs::write(p, s).unwrap();
    }

    fn write_csv(&self, p: &Path) {
        let mut w = csv::Writer::from_path(p).unwrap();
        w.write_record([
            "listing_id",
            "marketplace",
            "seller_id",
            "title",
            "description",
            "images",
        ])
        .unwrap();
        for (id, v, images, _) in &self.rows {
            w.write_record([
                id.as_str(),
                v["marketplace"].as_str().unwrap(),
                v["seller_id"].as_str().unwrap(),
                v["title"].as_str().unwrap(),
                "",
                images.as_str(),
            ])
            .unwrap();
        }
        w.flush().unwrap();
    }

    fn expect(&self) -> HashMap<String, Expect> {
        self.rows.iter().map(|(id, _, _, e)| (id.clone(), e.clone())).collect()
    }
}

/// Registers 10 takedowns and writes a 300-listing catalog around them.
async fn build_catalog(server: &TestServer, dir: &Path, http: SocketAddr) -> Catalog {
    let mut c = server.client().await;
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    let mut taken = Vec::new();
    for k in 0..10u64 {
        let img = photo(500 + k, 320, 240);
        let reg = register(
            &mut c,
            listing(
                "shopee",
                &format!("td{k}"),
                "s1",
                &format!("takedown title {k}"),
                vec![jpeg(&img, 90)],
            ),
            "test",
        )
        .await;
        let fp = reg.fingerprints.unwrap().images[0].clone();
        std::fs::write(photos.join(format!("copy{k}.jpg")), jpeg(&img, 70)).unwrap();
        std::fs::write(photos.join(format!("mirror{k}.jpg")), jpeg(&img.fliph(), 80)).unwrap();
        taken.push(fp);
    }
    for k in 0..10u64 {
        std::fs::write(
            photos.join(format!("other{k}.jpg")),
            jpeg(&photo(9000 + k, 320, 240), 85),
        )
        .unwrap();
    }
    let mut rows = Vec::new();
    for i in 0..300usize {
        let k = i % 10;
        let id = format!("L{i}");
        let title = format!("barang nomor {i} {}", ["merah", "biru", "hijau"][i % 3]);
        let (images, cell, expect): (Value, String, Expect) = match i % 12 {
            0 | 1 => (
                serde_json::json!([format!("photos/copy{k}.jpg")]),
                format!("photos/copy{k}.jpg"),
                Expect::Verdict("REUPLOAD"),
            ),
            2 => (
                serde_json::json!([format!("photos/mirror{k}.jpg")]),
                format!("photos/mirror{k}.jpg"),
                Expect::Verdict("REUPLOAD"),
            ),
            3..=5 => (
                serde_json::json!([format!("photos/other{k}.jpg")]),
                format!("photos/other{k}.jpg"),
                Expect::Verdict("CLEAR"),
            ),
            6 => (
                serde_json::json!([{ "pdq": taken[k].pdq }]),
                format!("pdq:{}", taken[k].pdq),
                Expect::Verdict("REUPLOAD"),
            ),
            7 => {
                let pdq = format!("{:064x}", (i as u128) * 0x9E37_79B9_7F4A_7C15_u128);
                (
                    serde_json::json!([{ "pdq": pdq }]),
                    format!("pdq:{pdq}"),
                    Expect::Verdict("CLEAR"),
                )
            }
            8 => (
                serde_json::json!([{ "phash": taken[k].phash }]),
                format!("phash:{}", taken[k].phash),
                Expect::Verdict("REVIEW"),
            ),
            9 => {
                let p = dir.join(format!("photos/absent{i}.jpg"));
                (
                    serde_json::json!([format!("photos/absent{i}.jpg")]),
                    format!("photos/absent{i}.jpg"),
                    Expect::Error(format!("images[0]: {}: no such file", p.display())),
                )
            }
            10 => (
                serde_json::json!([{ "pdq": "nothex" }]),
                "pdq:nothex".to_string(),
                Expect::Error("daemon: InvalidArgument: listing.images[0].pdq: must be exactly 64 hex".into()),
            ),
            _ => (
                serde_json::json!([format!("photos/other{k}.jpg"), format!("photos/copy{k}.jpg")]),
                format!("photos/other{k}.jpg|photos/copy{k}.jpg"),
                Expect::Verdict("REUPLOAD"),
            ),
        };
        rows.push((
            id.clone(),
            serde_json::json!({"listing_id": id, "marketplace": "Tokopedia", "seller_id": "x", "title": title, "images": images}),
            cell,
            expect,
        ));
    }
    // URLs: an image of takedown 0, a 404, one slower than --timeout, one that fails twice
    // with 503 before it answers, one announcing a body over the size limit.
    let url = |p: &str| format!("http://{http}{p}");
    for (id, path, expect) in [
        ("U-ok", "/img.jpg", Expect::Verdict("REUPLOAD")),
        (
            "U-404",
            "/missing.jpg",
            Expect::Error(format!("images[1]: GET {}: 404 Not Found", url("/missing.jpg"))),
        ),
        (
            "U-slow",
            "/slow.jpg",
            Expect::Error(format!(
                "images[1]: GET {}: timed out after 500ms (after 3 attempts)",
                url("/slow.jpg")
            )),
        ),
        ("U-flaky", "/flaky.jpg", Expect::Verdict("REUPLOAD")),
        (
            "U-big",
            "/big.jpg",
            Expect::Error(format!(
                "images[1]: GET {}: Content-Length 500000000 is over the limit of 5000000 bytes",
                url("/big.jpg")
            )),
        ),
    ] {
        let images = serde_json::json!([{ "pdq": format!("{:064x}", 7u8) }, url(path)]);
        rows.push((
            id.to_string(),
            serde_json::json!({"listing_id": id, "marketplace": "lazada", "seller_id": "", "title": "sesuatu", "images": images}),
            format!("pdq:{:064x}|{}", 7u8, url(path)),
            expect,
        ));
    }
    Catalog { rows }
}

fn check_rows<'a>(
    rows: impl Iterator<Item = (&'a str, Option<&'a str>, Option<&'a str>)>,
    expect: &HashMap<String, Expect>,
) {
    let mut seen = HashSet::new();
    for (id, verdict, error) in rows {
        assert!(seen.insert(id.to_string()), "{id} twice");
        match (&expect[id], verdict, error) {
            (Expect::Verdict(v), Some(got), None) => assert_eq!(got, *v, "listing {id}"),
            (Expect::Error(e), None, Some(got)) => {
                assert!(got.starts_with(e.as_str()), "listing {id}: {got:?} vs {e:?}")
            }
            (e, v, err) => panic!("listing {id}: expected {e:?}, got verdict {v:?} error {err:?}"),
        }
    }
    assert_eq!(seen.len(), expect.len());
}

const NET: &[&str] = &[
    "--timeout",
    "500ms",
    "--retries",
    "2",
    "--retry-backoff",
    "50ms",
    "--max-image-bytes",
    "5000000",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_checks_a_catalog_in_jsonl_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("db")).await;
    let http = image_server(jpeg(&photo(500, 320, 240), 75));
    let cat = build_catalog(&server, dir.path(), http.addr).await;
    let expect = cat.expect();
    let jsonl = dir.path().join("catalog.jsonl");
    cat.write_jsonl(&jsonl);

    // JSONL in, JSONL out; errors make the exit code 1.
    let out = dir.path().join("results.jsonl");
    let run = relist(batch_args(server.addr, &jsonl, &out, NET)).await;
    assert_eq!(run.code, 1, "stderr: {}", run.stderr);
    let s = summary(&run);
    let rows = read_jsonl(&out);
    assert_eq!(rows.len(), 306, "305 listings and one malformed line");
    let bad: Vec<&Value> = rows.iter().filter(|r| r["listing_id"] == "").collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0]["record"], 12);
    assert!(
        bad[0]["error"].as_str().unwrap().starts_with("malformed record"),
        "{}",
        bad[0]
    );
    check_rows(
        rows.iter().filter(|r| r["listing_id"] != "").map(|r| {
            (
                r["listing_id"].as_str().unwrap(),
                r["verdict"].as_str(),
                r["error"].as_str(),
            )
        }),
        &expect,
    );
    assert_eq!(http.flaky_hits.load(Ordering::SeqCst), 3, "two 503s, then the image");
    // Order is the catalog's; details of a strong match are filled in.
    let records: Vec<u64> = rows.iter().map(|r| r["record"].as_u64().unwrap()).collect();
    assert!(records.windows(2).all(|w| w[0] < w[1]));
    let r0 = &rows[0];
    assert_eq!(r0["takedown_marketplace"], "shopee");
    assert_eq!(r0["takedown_listing_id"], "td0");
    assert_eq!(r0["image_hash_kind"], "pdq");
    assert!(r0["image_distance"].as_u64().unwrap() <= 31);
    assert!(r0["match_id"].as_u64().unwrap() > 0);
    assert_eq!(
        server
            .bank
            .get_match(r0["match_id"].as_u64().unwrap())
            .unwrap()
            .record
            .source,
        Source::Batch
    );
    let count = |v: &str| rows.iter().filter(|r| r["verdict"] == v).count() as u64;
    assert_eq!(s["checked"], 306);
    assert_eq!(s["reupload"], count("REUPLOAD"));
    assert_eq!(s["review"], count("REVIEW"));
    assert_eq!(s["clear"], count("CLEAR"));
    assert_eq!(s["errors"], 25 + 25 + 3 + 1);
    assert!(run.stderr.contains("306 checked"), "{}", run.stderr);

    // A rerun finds everything done.
    let run = relist(batch_args(server.addr, &jsonl, &out, NET)).await;
    assert_eq!(run.code, 0, "nothing failed in this run: {}", run.stderr);
    assert_eq!(
        (summary(&run)["checked"].as_u64(), summary(&run)["skipped"].as_u64()),
        (Some(0), Some(306))
    );
    assert_eq!(read_jsonl(&out).len(), 306);

    // CSV in, CSV out, --allow-errors.
    let csv_in = dir.path().join("catalog.csv");
    cat.write_csv(&csv_in);
    let out = dir.path().join("results.csv");
    let run = relist(batch_args(
        server.addr,
        &csv_in,
        &out,
        &[NET, &["--allow-errors"]].concat(),
    ))
    .await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let rows = read_csv(&out);
    let opt = |s: &String| (!s.is_empty()).then_some(s.clone());
    let triples: Vec<(String, Option<String>, Option<String>)> = rows
        .iter()
        .map(|r| (r["listing_id"].clone(), opt(&r["verdict"]), opt(&r["error"])))
        .collect();
    check_rows(
        triples.iter().map(|(a, b, c)| (a.as_str(), b.as_deref(), c.as_deref())),
        &expect,
    );

    // --only-matches: only REUPLOAD, REVIEW and error rows; a rerun skips everything.
    let out = dir.path().join("matches.jsonl");
    let run = relist(batch_args(
        server.addr,
        &jsonl,
        &out,
        &[NET, &["--only-matches"]].concat(),
    ))
    .await;
    assert_eq!(run.code, 1);
    let rows = read_jsonl(&out);
    assert!(rows
        .iter()
        .all(|r| matches!(r["verdict"].as_str(), Some("REUPLOAD" | "REVIEW")) || r["error"].is_string()));
    let want = expect
        .values()
        .filter(|e| !matches!(e, Expect::Verdict("CLEAR")))
        .count()
        + 1;
    assert_eq!(rows.len(), want);
    let run = relist(batch_args(
        server.addr,
        &jsonl,
        &out,
        &[NET, &["--only-matches"]].concat(),
    ))
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(summary(&run)["skipped"], 306);
    assert_eq!(read_jsonl(&out).len(), want);
    server.stop().await;
}

/// Every listing is a title-alone REVIEW, so the daemon records each check it sees.
fn review_catalog(p: &Path, n: usize, url: Option<String>) {
    let mut s = String::new();
    for i in 0..n {
        let image = match &url {
            Some(u) => serde_json::json!(u),
            None => serde_json::json!({ "pdq": format!("{:064x}", (i as u128 + 1) * 0x9E37_79B9_7F4A_7C15_u128) }),
        };
        s.push_str(
            &serde_json::json!({"listing_id": format!("R{i}"), "marketplace": "blibli", "title": "baju bekas import original", "images": [image]})
                .to_string(),
        );
        s.push('\n');
    }
    std::fs::write(p, s).unwrap();
}

async fn batch_checks_seen(server: &TestServer, _max_id: u64) -> usize {
    // Match ids are time-ordered, not dense: count through the history's source filter.
    let q = relist_core::history::Query {
        source: Some(Source::Batch),
        ..Default::default()
    };
    let mut n = 0;
    let mut token: Option<String> = None;
    for _ in 0..10_000 {
        let page = server.bank.query_matches(&q, 500, token.as_deref()).expect("query");
        n += page.records.len();
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => return n,
        }
    }
    panic!("history pagination did not end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_resumes_after_a_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("db")).await;
    let mut c = server.client().await;
    register(
        &mut c,
        listing(
            "shopee",
            "t1",
            "s",
            "BAJU BEKAS IMPORT ORI",
            vec![jpeg(&photo(1, 200, 150), 90)],
        ),
        "",
    )
    .await;
    let catalog = dir.path().join("catalog.jsonl");
    review_catalog(&catalog, 300, None);
    let out = dir.path().join("results.jsonl");

    let run = relist(batch_args(server.addr, &catalog, &out, &[])).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let full = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = full.lines().collect();
    assert_eq!(lines.len(), 300);
    assert!(lines.iter().all(|l| l.contains("\"REVIEW\"")));

    // Keep 120 lines and half of the 121st, as a crash mid-write would.
    let kept = 120;
    let mut torn: String = lines[..kept].iter().map(|l| format!("{l}\n")).collect();
    torn.push_str(&lines[kept][..lines[kept].len() / 2]);
    std::fs::write(&out, torn).unwrap();

    let run = relist(batch_args(server.addr, &catalog, &out, &[])).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let s = summary(&run);
    assert_eq!((s["checked"].as_u64(), s["skipped"].as_u64()), (Some(180), Some(120)));
    let rows = read_jsonl(&out);
    assert_eq!(rows.len(), 300);
    let ids: HashSet<&str> = rows.iter().map(|r| r["listing_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 300, "each listing exactly once");
    // The daemon saw 300 + 180 checks: the first run's and the missing ones only.
    let max_id = rows.iter().map(|r| r["match_id"].as_u64().unwrap()).max().unwrap();
    assert_eq!(batch_checks_seen(&server, max_id).await, 480);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_leaves_a_valid_prefix_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("db")).await;
    let http = image_server(jpeg(&photo(77, 200, 150), 80));
    let catalog = dir.path().join("catalog.jsonl");
    // 3,000 listings whose image takes 20 ms to download, one at a time: a minute's work.
    review_catalog(&catalog, 3000, Some(format!("http://{}/paced.jpg", http.addr)));
    let out = dir.path().join("results.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_relist"))
        .args(batch_args(server.addr, &catalog, &out, &["--concurrency", "1"]))
        .env("RELIST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::fs::read_to_string(&out).map_or(0, |s| s.lines().count()) < 20 {
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let out_ = tokio::task::spawn_blocking(move || {
        // Bounded: the batch stops within the in-flight work.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if child.try_wait().unwrap().is_some() {
                return child.wait_with_output().unwrap();
            }
            if Instant::now() > deadline {
                child.kill().ok();
                panic!("batch did not stop after SIGINT");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out_.stderr);
    assert_eq!(out_.status.code(), Some(130), "{stderr}");
    let s: Value = serde_json::from_slice(&out_.stdout).unwrap();
    assert_eq!(s["interrupted"], true);
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.ends_with('\n'));
    let rows = read_jsonl(&out);
    assert_eq!(rows.len() as u64, s["checked"].as_u64().unwrap());
    assert!(rows.len() >= 20 && rows.len() < 3000, "{}", rows.len());
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["listing_id"], format!("R{i}"), "a prefix of the catalog, once each");
        assert_eq!(r["verdict"], "CLEAR", "an empty bank");
    }
    server.stop().await;
}
