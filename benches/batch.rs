//! Throughput of `relist batch` (the library pipeline, not the binary) against a real daemon
//! (the release `relist serve`, spawned, so that client and server memory are measured
//! apart) on this machine's loopback:
//!
//! - listings with one 500x375 JPEG each, sent as bytes (photos from ../shared/data/photos-dev
//!   when present, else generated);
//! - hash-only listings (a PDQ and a pHash each), 200,000 by default, with the client's and
//!   the daemon's resident memory before and after, to show it stays flat.
//!
//! Run: `cargo bench --bench batch` (sizes: RELIST_BENCH_IMAGES, RELIST_BENCH_HASHES).
use std::io::Write;

#[path = "support/mod.rs"]
mod support;

use relist::batch::{run_batch, BatchOptions, Summary};
use relist_proto::api::pb;
use support::{connect, photos, rss_mib, start_daemon};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn hex64(mut x: u64) -> String {
    let mut s = String::with_capacity(64);
    for _ in 0..4 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(&format!("{x:016x}"));
    }
    s
}

fn report(kind: &str, s: &Summary) {
    println!(
        "{kind}: {} listings in {:.2}s = {:.0} listings/s ({} REUPLOAD, {} REVIEW, {} CLEAR, {} errors)",
        s.checked, s.elapsed_s, s.listings_per_s, s.reupload, s.review, s.clear, s.errors
    );
}

fn main() {
    let n_images = env_usize("RELIST_BENCH_IMAGES", 3000);
    let n_hashes = env_usize("RELIST_BENCH_HASHES", 200_000);
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&dir.path().join("db"));
    let server_pid = daemon.child.id().to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    // The bank: 100 photo takedowns and 1,000 hash takedowns.
    let photos = photos(500);
    rt.block_on(async {
        let mut c = connect(&daemon.addr).await;
        for (i, data) in photos.iter().take(100).enumerate() {
            c.register_takedown(pb::RegisterTakedownRequest {
                listing: Some(pb::Listing {
                    listing_id: format!("p{i}"),
                    marketplace: "shopee".into(),
                    title: format!("barang takedown {i}"),
                    images: vec![pb::Image {
                        data: data.clone(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("register");
        }
        for i in 0..1000u64 {
            c.register_takedown(pb::RegisterTakedownRequest {
                listing: Some(pb::Listing {
                    listing_id: format!("h{i}"),
                    marketplace: "shopee".into(),
                    images: vec![pb::Image {
                        pdq: hex64(i + 1),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("register");
        }
    });

    // Listings with one JPEG file each.
    let photo_dir = dir.path().join("photos");
    std::fs::create_dir_all(&photo_dir).unwrap();
    for (i, data) in photos.iter().enumerate() {
        std::fs::write(photo_dir.join(format!("{i}.jpg")), data).unwrap();
    }
    let catalog = dir.path().join("images.jsonl");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&catalog).unwrap());
        for i in 0..n_images {
            let rec = serde_json::json!({
                "listing_id": format!("i{i}"), "marketplace": "tokopedia",
                "title": format!("barang bekas nomor {i}"), "images": [format!("photos/{}.jpg", i % photos.len())],
            });
            writeln!(f, "{rec}").unwrap();
        }
    }
    let opts = BatchOptions::new(&catalog, dir.path().join("images-out.jsonl"), &daemon.addr);
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let s = rt.block_on(run_batch(&opts, stop.clone())).expect("image batch");
    report("one 500x375 JPEG each", &s);

    // Hash-only listings, in five equal parts through the same pipeline, with the client's
    // and the daemon's resident memory after each: flat memory shows as flat rows.
    const PARTS: usize = 5;
    let per_part = n_hashes.div_ceil(PARTS);
    let (c0, s0) = (rss_mib("self"), rss_mib(&server_pid));
    println!(
        "RSS MiB before the hash-only listings: client {:.0}, server {:.0}",
        c0.0, s0.0
    );
    let (mut checked, mut elapsed, mut reupload, mut clear) = (0u64, 0f64, 0u64, 0u64);
    for part in 0..PARTS {
        let catalog = dir.path().join(format!("hashes-{part}.jsonl"));
        {
            let mut f = std::io::BufWriter::new(std::fs::File::create(&catalog).unwrap());
            for i in (part * per_part) as u64..((part + 1) * per_part).min(n_hashes) as u64 {
                // One in 50 is a copy of a takedown hash, the rest random.
                let pdq = if i % 50 == 0 {
                    hex64(i % 1000 + 1)
                } else {
                    hex64(i + 1_000_000)
                };
                let phash = format!("{:016x}", (i + 7).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                writeln!(
                    f,
                    r#"{{"listing_id":"h{i}","marketplace":"tokopedia","title":"","images":[{{"pdq":"{pdq}","phash":"{phash}"}}]}}"#
                )
                .unwrap();
            }
        }
        let mut opts = BatchOptions::new(
            &catalog,
            dir.path().join(format!("hashes-{part}-out.jsonl")),
            &daemon.addr,
        );
        opts.concurrency = 64;
        let s = rt.block_on(run_batch(&opts, stop.clone())).expect("hash batch");
        std::fs::remove_file(&catalog).ok();
        checked += s.checked;
        elapsed += s.elapsed_s;
        reupload += s.reupload;
        clear += s.clear;
        let (c, sv) = (rss_mib("self"), rss_mib(&server_pid));
        println!(
            "  after {checked:>9} hash-only listings: {:.0} listings/s; RSS MiB client {:.0} (peak {:.0}), server {:.0} (peak {:.0})",
            s.listings_per_s, c.0, c.1, sv.0, sv.1
        );
    }
    println!(
        "hash-only: {checked} listings in {elapsed:.2}s = {:.0} listings/s ({reupload} REUPLOAD, {clear} CLEAR)",
        checked as f64 / elapsed.max(1e-9)
    );
    drop(daemon);
}
