//! Start-up and memory of the daemon holding a large takedown bank, and how fast a new takedown
//! becomes matchable.
//!
//! Fills a temporary sled store with N hash-only takedowns (one image each: a PDQ and a pHash;
//! and a title simhash) through the store's own write path, then starts the release
//! `relist serve` on it and times the wait until the gRPC health service says SERVING; reports
//! the daemon's resident memory and the store's size on disk. Then registers 200 more
//! takedowns over gRPC, each followed at once by a check of the same hash, and reports how long
//! a registration takes to return (it is flushed to disk first) and that each is matched by
//! the very next check: no rebuild.
//!
//! Then stops the daemon gracefully (SIGTERM), which writes the index snapshot, reports how
//! long the stop took and the snapshot's size, starts it again and times SERVING from the
//! snapshot, with its resident memory, and checks that the registered takedowns still match.
//!
//! Run: `cargo bench --bench startup` (N from RELIST_BENCH_TAKEDOWNS, default 1,000,000).
//!
//! `RELIST_BENCH_SNAPSHOT_ONLY=1` measures only the index part of a start from the snapshot,
//! without sled or the daemon: it builds the live index of N such takedowns in memory, writes
//! its snapshot and times reading it back (file read, checks, and the tables rebuilt in the
//! layout for the size read), which is what a start from the snapshot adds to opening sled.
//! Writing N takedowns through sled takes ~35 min at 10M; this takes about a minute.
use std::path::Path;
use std::time::{Duration, Instant};

#[path = "support/mod.rs"]
mod support;

use relist_core::domain::{ImageFingerprint, ListingFingerprints, ListingInfo, Takedown};
use relist_core::fingerprint::pdq::PdqHash;
use relist_core::matcher::LiveIndex;
use relist_core::snapshot;
use relist_core::store::Store;
use relist_proto::api::pb;
use support::{connect, rss_mib, start_daemon, Client};

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn pdq_of(i: u64) -> PdqHash {
    let mut b = [0u8; 32];
    for (k, chunk) in b.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&mix(i * 4 + k as u64).to_le_bytes());
    }
    PdqHash(b)
}

fn takedown(id: u64) -> Takedown {
    Takedown {
        id,
        listing: ListingInfo {
            listing_id: format!("bulk-{id}"),
            marketplace: "shopee".into(),
            seller_id: format!("seller-{}", id % 100_000),
            title: String::new(),
            description: String::new(),
        },
        reason: "bench".into(),
        taken_down_at_ms: 1_700_000_000_000,
        registered_at_ms: 1_700_000_000_000,
        updated_at_ms: 1_700_000_000_000,
        removed_at_ms: None,
        fingerprints: ListingFingerprints {
            images: vec![ImageFingerprint {
                pdq: Some(pdq_of(id)),
                pdq_quality: 100,
                phash: Some(mix(id ^ 0x5555)),
            }],
            title_simhash: Some(mix(id ^ 0xAAAA)),
            normalized_title: String::new(),
            regions: Vec::new(),
            features: Vec::new(),
            appearances: Vec::new(),
        },
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len().max(1) - 1) as f64 * p).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

/// The index part of a start from the snapshot (see the module comment).
fn snapshot_only(n: u64) {
    let mut index = LiveIndex::default();
    let t = Instant::now();
    for id in 1..=n {
        index.load(id, &takedown(id).fingerprints, 0);
    }
    println!(
        "{n} hash-only takedowns indexed in memory in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let tmp = tempfile::tempdir().expect("temp dir");
    let build = snapshot::Build::current(0);
    let written = snapshot::write(tmp.path(), &index, &build).expect("write snapshot");
    println!(
        "snapshot written in {:.2}s, {:.0} MiB",
        written.elapsed.as_secs_f64(),
        written.bytes as f64 / (1 << 20) as f64
    );
    let sizes = format!("{:?}", index.sizes());
    drop(index);
    let (rss0, _) = rss_mib("self");
    let t = Instant::now();
    let read = snapshot::load(tmp.path(), written.claim, &build).expect("read snapshot");
    let secs = t.elapsed().as_secs_f64();
    let (rss1, _) = rss_mib("self");
    let read_sizes = format!("{:?}", read.sizes());
    assert_eq!(read_sizes, sizes, "the index read back differs from the one written");
    println!(
        "snapshot read back in {secs:.2}s (tables rebuilt at load), RSS +{:.0} MiB; {read_sizes}",
        rss1 - rss0
    );
}

fn main() {
    let n: u64 = std::env::var("RELIST_BENCH_TAKEDOWNS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(1_000_000);
    if std::env::var_os("RELIST_BENCH_SNAPSHOT_ONLY").is_some() {
        return snapshot_only(n);
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("bank");

    let t = Instant::now();
    {
        let store = Store::open(&data).expect("open store");
        for id in 1..=n {
            store.put_takedown(&takedown(id)).expect("put takedown");
            if id % 1_000_000 == 0 {
                println!("  {id} takedowns written ({:.0}s)", t.elapsed().as_secs_f64());
            }
        }
        store.flush().expect("flush");
    }
    println!(
        "{n} hash-only takedowns written in {:.0}s; store on disk {:.0} MiB",
        t.elapsed().as_secs_f64(),
        dir_size(&data) as f64 / (1 << 20) as f64
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (daemon, full) = rt.block_on(start_serving(&data));
    let (rss, peak) = rss_mib(&daemon.child.id().to_string());
    println!(
        "relist serve on {n} takedowns, full load from sled: SERVING after {:.2}s; daemon RSS {rss:.0} MiB (peak {peak:.0})",
        full.as_secs_f64(),
    );
    rt.block_on(async {
        let mut c = connect(&daemon.addr).await;
        let (mut reg_ms, mut visible) = (Vec::new(), 0);
        for i in 0..200u64 {
            let pdq = pdq_of(u64::MAX / 2 + i).to_hex();
            let image = pb::Image {
                pdq: pdq.clone(),
                ..Default::default()
            };
            let t = Instant::now();
            c.register_takedown(pb::RegisterTakedownRequest {
                listing: Some(pb::Listing {
                    listing_id: format!("new-{i}"),
                    marketplace: "shopee".into(),
                    images: vec![image],
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("register");
            reg_ms.push(t.elapsed().as_secs_f64() * 1e3);
            visible += usize::from(is_reupload(&mut c, &format!("probe-{i}"), &pdq).await);
        }
        println!(
            "new takedown, registered (flushed) and matchable: p50 {:.2} ms, p99 {:.2} ms; matched by the next check: {visible}/200",
            percentile(&mut reg_ms, 0.5),
            percentile(&mut reg_ms, 0.99)
        );
    });

    let (written, stop) = terminate(daemon, &data.join(relist_core::snapshot::FILE_NAME));
    let snapshot = std::fs::metadata(data.join(relist_core::snapshot::FILE_NAME)).map_or(0, |m| m.len());
    println!(
        "graceful stop (SIGTERM): index snapshot of {:.0} MiB on disk after {:.2}s, daemon exited after {:.2}s",
        snapshot as f64 / (1 << 20) as f64,
        written.map_or(f64::NAN, |w| w.as_secs_f64()),
        stop.as_secs_f64()
    );
    assert!(snapshot > 0, "no index snapshot was written");
    let (daemon, fast) = rt.block_on(start_serving(&data));
    let (rss, peak) = rss_mib(&daemon.child.id().to_string());
    println!(
        "relist serve on {n} takedowns, from the index snapshot: SERVING after {:.2}s ({:.1}x faster); daemon RSS \
         {rss:.0} MiB (peak {peak:.0})",
        fast.as_secs_f64(),
        full.as_secs_f64() / fast.as_secs_f64(),
    );
    assert!(
        !data.join(relist_core::snapshot::FILE_NAME).exists(),
        "the snapshot was not used (it is deleted once loaded)"
    );
    rt.block_on(async {
        let mut c = connect(&daemon.addr).await;
        let mut matched = 0;
        for (i, id) in [(0u64, 1u64), (7, n / 2), (199, n)] {
            for pdq in [pdq_of(u64::MAX / 2 + i), pdq_of(id)] {
                matched += usize::from(is_reupload(&mut c, &format!("probe-after-{i}-{id}"), &pdq.to_hex()).await);
            }
        }
        println!("after the restart from the snapshot, stored and registered takedowns matched: {matched}/6");
        assert_eq!(matched, 6);
    });
    drop(daemon);
}

/// Whether a hash-only check of `pdq` (hex) comes back REUPLOAD.
async fn is_reupload(c: &mut Client, listing_id: &str, pdq: &str) -> bool {
    let r = c
        .check_listing(pb::CheckListingRequest {
            listing: Some(pb::Listing {
                listing_id: listing_id.into(),
                marketplace: "tokopedia".into(),
                images: vec![pb::Image {
                    pdq: pdq.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            dry_run: false,
        })
        .await
        .expect("check")
        .into_inner();
    r.verdict == pb::Verdict::Reupload as i32
}

/// Starts the release daemon on `data` and waits (at most 600 s) until its health service
/// says SERVING; returns it and how long that took.
async fn start_serving(data: &Path) -> (support::Daemon, Duration) {
    let started = Instant::now();
    let daemon = start_daemon(data);
    let url = daemon.addr.clone();
    for _ in 0..6000 {
        if let Ok(ch) = tonic::transport::Channel::from_shared(url.clone())
            .expect("url")
            .connect()
            .await
        {
            let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
            if let Ok(r) = h
                .check(tonic_health::pb::HealthCheckRequest {
                    service: "relist.v1.Relist".into(),
                })
                .await
            {
                if r.into_inner().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
                    return (daemon, started.elapsed());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("daemon never became SERVING");
}

/// SIGTERM, then waits (at most 600 s) for a clean exit; returns when `snapshot` appeared
/// (renamed into place, so complete) and when the daemon exited.
fn terminate(mut daemon: support::Daemon, snapshot: &Path) -> (Option<Duration>, Duration) {
    let mut written = None;
    let started = Instant::now();
    let pid = daemon.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    while started.elapsed() < Duration::from_secs(600) {
        if written.is_none() && snapshot.exists() {
            written = Some(started.elapsed());
        }
        if let Some(status) = daemon.child.try_wait().expect("wait") {
            assert!(status.success(), "relist serve exited with {status}");
            return (written, started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("relist serve did not stop on SIGTERM");
}
