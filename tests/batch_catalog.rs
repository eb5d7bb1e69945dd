//! The batch issue's acceptance run: a 10,000-listing catalog built from ../shared/data (the
//! 500 dev photos and the Shopee titles) goes through `relist batch` in one command against
//! the real `relist serve`, and every result row is checked.
//!
//! 150 photos are registered as takedowns, each with the first title of a Shopee group. The
//! catalog holds, for each of them, six re-uploads (re-encoded, mirrored, resized, the same
//! file under a rewritten title, its PDQ alone, its pHash alone with a re-cased title) that
//! must come back REUPLOAD against the right takedown; 9,090 honest listings (the other 350
//! photos, and Shopee's own pHashes, under the titles of other groups) that must never be
//! REUPLOAD; and 10 records whose file is missing, which must get their own error rows. A
//! second run with the same --out must skip everything.
//!
//! Fingerprinting 10,000 photos is slow in a debug build, so this test is ignored by a plain
//! `cargo test`; `.ci/run` runs it in release:
//! `cargo test --release --test batch_catalog -- --ignored --nocapture`.
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use common::*;
use image::DynamicImage;
use relist_proto::api::pb;
use serde_json::{json, Value};

const TAKEDOWNS: usize = 150;
const CATALOG: usize = 10_000;
const MISSING: usize = 10;

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free loopback port")
}

/// The Shopee titles, grouped by label_group in order of first appearance.
fn shopee_groups(data: &Path) -> Vec<Vec<(String, String)>> {
    let mut r = csv::Reader::from_path(data.join("titles/shopee-dev.csv")).expect("shopee-dev.csv");
    let headers = r.headers().expect("header").clone();
    let col = |name: &str| headers.iter().position(|h| h == name).expect(name);
    let (title, phash, group) = (col("title"), col("image_phash"), col("label_group"));
    let mut order = Vec::new();
    let mut groups: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for rec in r.records() {
        let rec = rec.expect("csv record");
        let g = rec[group].to_string();
        if !groups.contains_key(&g) {
            order.push(g.clone());
        }
        groups
            .entry(g)
            .or_default()
            .push((rec[title].to_string(), rec[phash].to_string()));
    }
    order
        .into_iter()
        .map(|g| groups.remove(&g).unwrap_or_default())
        .collect()
}

/// Re-listing edits of a title: shouting with promo words, digits for letters, chat words.
fn edit_title(title: &str, how: usize) -> String {
    match how % 3 {
        0 => format!("{} READY 🔥", title.to_uppercase()),
        1 => title
            .split_whitespace()
            .map(|w| {
                if w.len() >= 4 && w.chars().all(|c| c.is_ascii_alphabetic()) {
                    w.replacen('o', "0", 1).replacen('a', "4", 1)
                } else {
                    w.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => format!("{} ori cod bgt", title.to_lowercase()),
    }
}

fn save_jpeg(img: &DynamicImage, quality: u8, path: &Path) {
    std::fs::write(path, jpeg(img, quality)).expect("write photo");
}

/// `relist batch CATALOG --out OUT` (the one command), returning its JSON summary.
fn run_batch(catalog: &Path, out: &Path, addr: &str) -> Value {
    let run = Command::new(env!("CARGO_BIN_EXE_relist"))
        .arg("batch")
        .arg(catalog)
        .arg("--out")
        .arg(out)
        .args(["--addr", addr, "--json", "--allow-errors", "--concurrency", "16"])
        .env("RELIST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run relist batch");
    assert!(
        run.status.success(),
        "relist batch failed: {}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    serde_json::from_slice::<Value>(&run.stdout).expect("summary JSON")
}

#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// REUPLOAD against this takedown listing id.
    Reupload(String),
    /// Anything but REUPLOAD (a title alone can at most ask for REVIEW).
    NotReupload,
    /// An error row naming the missing file.
    Missing,
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "fingerprints 10,000 photos: run in release (.ci/run does)"]
async fn ten_thousand_listing_catalog_from_shared_data() {
    let Some(data) = shared_data() else { return };
    let photos_dir = data.join("photos-dev");
    let mut photos: Vec<PathBuf> = std::fs::read_dir(&photos_dir)
        .expect("photos-dev")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    photos.sort();
    assert!(photos.len() >= 500, "photos-dev has {} photos", photos.len());
    let groups = shopee_groups(&data);
    assert!(groups.len() >= 500, "shopee-dev has {} groups", groups.len());

    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("http://127.0.0.1:{port}");
    let _daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_relist"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(tmp.path().join("bank"))
            .env("RELIST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn relist serve"),
    );
    let mut client = connect(format!("127.0.0.1:{port}").parse().unwrap()).await;

    // Takedowns: photo k under the first title of Shopee group k.
    let edited = tmp.path().join("edited");
    std::fs::create_dir_all(&edited).unwrap();
    let started = Instant::now();
    let mut rows: Vec<(Value, Expect)> = Vec::new();
    for (k, path) in photos.iter().take(TAKEDOWNS).enumerate() {
        let bytes = std::fs::read(path).unwrap();
        let img = image::load_from_memory(&bytes).expect("decode dev photo");
        let title = groups[k][0].0.clone();
        let td = format!("td-{k}");
        let reg = register(
            &mut client,
            listing("shopee", &td, &format!("seller-{k}"), &title, vec![bytes]),
            "illegal used-clothing import",
        )
        .await;
        let fp = reg.fingerprints.expect("fingerprints").images[0].clone();

        let q60 = edited.join(format!("{k}-q60.jpg"));
        save_jpeg(&img, 60, &q60);
        let mirror = edited.join(format!("{k}-mirror.jpg"));
        save_jpeg(&img.fliph(), 85, &mirror);
        let small = edited.join(format!("{k}-300w.jpg"));
        let h = (img.height() * 300 / img.width().max(1)).max(1);
        save_jpeg(
            &img.resize_exact(300, h, image::imageops::FilterType::Triangle),
            80,
            &small,
        );

        let honest_title = &groups[TAKEDOWNS + 50 + k][0].0;
        let variants: [(Value, String); 6] = [
            (json!([q60]), title.clone()),
            (json!([mirror]), edit_title(&title, k)),
            (json!([small]), honest_title.clone()),
            (json!([path]), edit_title(&title, k + 1)),
            (json!([{ "pdq": fp.pdq }]), edit_title(&title, k + 2)),
            // A weak image signal plus the same title, re-cased with a promo word: both
            // together are a re-upload.
            (json!([{ "phash": fp.phash }]), edit_title(&title, 0)),
        ];
        for (v, (images, t)) in variants.into_iter().enumerate() {
            let marketplace = ["tokopedia", "lazada", "shopee"][v % 3];
            rows.push((
                json!({"listing_id": format!("re-{k}-{v}"), "marketplace": marketplace,
                       "seller_id": format!("new-seller-{k}"), "title": t, "images": images}),
                Expect::Reupload(td.clone()),
            ));
        }
    }
    let registered_in = started.elapsed();

    // Honest listings: the other photos and Shopee's own pHashes, under titles of groups that
    // were never taken down.
    let honest_photos = &photos[TAKEDOWNS..];
    let honest_titles: Vec<&(String, String)> = groups[TAKEDOWNS + 50..].iter().flatten().collect();
    let honest = CATALOG - rows.len() - MISSING;
    for i in 0..honest {
        let (title, phash) = honest_titles[i % honest_titles.len()];
        let images = if i % 5 == 4 {
            json!([{ "phash": phash }])
        } else {
            json!([honest_photos[i % honest_photos.len()]])
        };
        rows.push((
            json!({"listing_id": format!("h-{i}"), "marketplace": "tokopedia", "seller_id": format!("honest-{}", i % 997),
                   "title": title, "images": images}),
            Expect::NotReupload,
        ));
    }
    for i in 0..MISSING {
        rows.push((
            json!({"listing_id": format!("m-{i}"), "marketplace": "lazada", "seller_id": "x", "title": "kaos polos",
                   "images": [edited.join(format!("absent-{i}.jpg"))]}),
            Expect::Missing,
        ));
    }
    // Spread the kinds over the catalog, deterministically.
    let n = rows.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) % 1_000_003);
    assert_eq!(n, CATALOG);
    let catalog = tmp.path().join("catalog.jsonl");
    let mut text = String::new();
    let mut expect = HashMap::new();
    for &i in &order {
        text.push_str(&rows[i].0.to_string());
        text.push('\n');
        expect.insert(rows[i].0["listing_id"].as_str().unwrap().to_string(), rows[i].1.clone());
    }
    std::fs::write(&catalog, text).unwrap();

    // One command.
    let out = tmp.path().join("results.jsonl");
    let t = Instant::now();
    let summary = tokio::task::spawn_blocking({
        let (catalog, out, addr) = (catalog.clone(), out.clone(), addr.clone());
        move || run_batch(&catalog, &out, &addr)
    })
    .await
    .unwrap();
    let took = t.elapsed();

    let results: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("results line"))
        .collect();
    assert_eq!(results.len(), CATALOG, "one row per listing");
    let (mut reupload_ok, mut honest_review, mut errors) = (0, Vec::new(), 0);
    for r in &results {
        let id = r["listing_id"].as_str().unwrap();
        let verdict = r["verdict"].as_str();
        match expect.get(id).unwrap_or_else(|| panic!("unexpected row {r}")) {
            Expect::Reupload(td) => {
                assert_eq!(verdict, Some("REUPLOAD"), "re-upload missed: {r}");
                assert_eq!(
                    r["takedown_listing_id"].as_str(),
                    Some(td.as_str()),
                    "wrong takedown: {r}"
                );
                reupload_ok += 1;
            }
            Expect::NotReupload => {
                assert!(r["error"].is_null(), "honest listing failed: {r}");
                assert_ne!(verdict, Some("REUPLOAD"), "honest listing blocked: {r}");
                if verdict == Some("REVIEW") {
                    // Only a title may bring an honest listing to a reviewer; no image.
                    assert!(r["image_distance"].is_null(), "image matched an honest listing: {r}");
                    honest_review.push(r.clone());
                }
            }
            Expect::Missing => {
                let e = r["error"].as_str().unwrap_or_default();
                assert!(e.contains("no such file"), "missing file row: {r}");
                assert!(r["verdict"].is_null(), "{r}");
                errors += 1;
            }
        }
    }
    // A title alone asks for REVIEW at most, and rarely: under 0.1% of honest listings.
    assert!(
        honest_review.len() * 1000 <= honest,
        "{} honest listings sent to REVIEW: {honest_review:#?}",
        honest_review.len()
    );
    assert_eq!(reupload_ok, TAKEDOWNS * 6);
    assert_eq!(errors, MISSING);
    assert_eq!(summary["checked"], json!(CATALOG));
    assert_eq!(summary["errors"], json!(MISSING));
    assert_eq!(summary["reupload"], json!(TAKEDOWNS * 6));
    assert_eq!(summary["review"], json!(honest_review.len()));

    // Rerun with the same --out: everything is already done.
    let again = tokio::task::spawn_blocking({
        let (catalog, out, addr) = (catalog.clone(), out.clone(), addr.clone());
        move || run_batch(&catalog, &out, &addr)
    })
    .await
    .unwrap();
    assert_eq!(again["checked"], json!(0), "{again}");
    assert_eq!(again["skipped"], json!(CATALOG), "{again}");

    // The daemon recorded them as batch checks.
    let page = client
        .query_matches(pb::QueryMatchesRequest {
            source: pb::Source::Batch as i32,
            page_size: 500,
            ..Default::default()
        })
        .await
        .expect("query matches")
        .into_inner();
    assert!(!page.records.is_empty(), "batch matches are in the history");

    println!(
        "{TAKEDOWNS} takedowns registered in {:.1}s; {CATALOG} listings through relist batch in {:.1}s \
         ({:.0} listings/s): {} REUPLOAD, {} REVIEW (honest, title only), {} errors",
        registered_in.as_secs_f64(),
        took.as_secs_f64(),
        CATALOG as f64 / took.as_secs_f64().max(1e-9),
        reupload_ok,
        honest_review.len(),
        errors
    );
}
