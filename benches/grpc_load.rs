//! gRPC end to end: a load generator against the release `relist serve`, both on this box
//! (loopback only; bounded in count and time).
//!
//! 1. Hash-only `CheckListing` (a PDQ and a pHash, one in 50 a copy of a takedown) from
//!    `RELIST_BENCH_CONCURRENCY` (default 48) closed-loop workers over 4 HTTP/2 connections
//!    for `RELIST_BENCH_SECS` (default 10) seconds: the most requests per second.
//! 2. The same at half that rate, open loop (requests start on a fixed schedule whether or not
//!    earlier ones have returned, so queueing shows in the latency): p50/p99.
//! 3. `CheckListing` with one 500x375 JPEG (the dev photos when present), closed loop with 8
//!    workers: requests per second and latency.
//!
//! The bank holds 10,000 hash-only takedowns and 100 photo takedowns.
//!
//! Run: `cargo bench --bench grpc_load`.
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/mod.rs"]
mod support;

use relist_proto::api::pb;
use support::{connect, photos, start_daemon, Client};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn pdq_hex(i: u64) -> String {
    (0..4).map(|k| format!("{:016x}", mix(i * 4 + k))).collect()
}

fn hash_listing(i: u64) -> pb::Listing {
    // One in 50 re-uses a takedown's hash.
    let src = if i.is_multiple_of(50) {
        i % 10_000
    } else {
        1_000_000 + i
    };
    pb::Listing {
        listing_id: format!("l{i}"),
        marketplace: "tokopedia".into(),
        seller_id: format!("s{}", i % 1000),
        images: vec![pb::Image {
            pdq: pdq_hex(src),
            phash: format!("{:016x}", mix(src ^ 0x77)),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted
        .get(((sorted.len().max(1) - 1) as f64 * p).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

struct Run {
    ok: u64,
    errors: u64,
    secs: f64,
    lat_ms: Vec<f64>,
}

impl Run {
    fn print(&mut self, label: &str) {
        self.lat_ms.sort_by(f64::total_cmp);
        println!(
            "{label:<44} {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} ok, {} errors in {:.1}s)",
            self.ok as f64 / self.secs,
            pct(&self.lat_ms, 0.5),
            pct(&self.lat_ms, 0.99),
            self.ok,
            self.errors,
            self.secs
        );
    }
}

/// Closed loop: `workers` tasks, each sending its next request when the last one returns.
async fn closed_loop(
    clients: &[Client],
    workers: usize,
    secs: f64,
    make: Arc<dyn Fn(u64) -> pb::Listing + Send + Sync>,
) -> Run {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let mut c = clients[w % clients.len()].clone();
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut errors, mut lat) = (0u64, 0u64, Vec::new());
            let mut i = w as u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = c
                    .check_listing(pb::CheckListingRequest {
                        listing: Some(make(i)),
                        ..Default::default()
                    })
                    .await;
                lat.push(t.elapsed().as_secs_f64() * 1e3);
                if r.is_ok() {
                    ok += 1;
                } else {
                    errors += 1;
                }
                i += workers as u64;
            }
            (ok, errors, lat)
        }));
    }
    let mut run = Run {
        ok: 0,
        errors: 0,
        secs: 0.0,
        lat_ms: Vec::new(),
    };
    for t in tasks {
        let (ok, errors, lat) = t.await.expect("worker");
        run.ok += ok;
        run.errors += errors;
        run.lat_ms.extend(lat);
    }
    run.secs = start.elapsed().as_secs_f64();
    run
}

/// Open loop: requests start every `1/rate` s for `secs` s, whatever the previous ones do
/// (at most 4,096 in flight: beyond that the generator, not the daemon, is the bottleneck).
async fn open_loop(clients: &[Client], rate: f64, secs: f64) -> Run {
    let start = Instant::now();
    let total = (rate * secs) as u64;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(4096));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(bool, f64)>();
    let mut tick = tokio::time::interval(Duration::from_micros(1000));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let per_ms = rate / 1000.0;
    let mut sent = 0u64;
    let mut due = 0.0f64;
    while sent < total {
        tick.tick().await;
        due += per_ms;
        while (sent as f64) < due && sent < total {
            let permit = in_flight.clone().acquire_owned().await.expect("semaphore");
            let mut c = clients[sent as usize % clients.len()].clone();
            let tx = tx.clone();
            let i = sent;
            tokio::spawn(async move {
                let t = Instant::now();
                let r = c
                    .check_listing(pb::CheckListingRequest {
                        listing: Some(hash_listing(i)),
                        ..Default::default()
                    })
                    .await;
                let _ = tx.send((r.is_ok(), t.elapsed().as_secs_f64() * 1e3));
                drop(permit);
            });
            sent += 1;
        }
    }
    drop(tx);
    let mut run = Run {
        ok: 0,
        errors: 0,
        secs: 0.0,
        lat_ms: Vec::new(),
    };
    while let Some((ok, ms)) = rx.recv().await {
        if ok {
            run.ok += 1;
        } else {
            run.errors += 1;
        }
        run.lat_ms.push(ms);
    }
    run.secs = start.elapsed().as_secs_f64();
    run
}

fn main() {
    let secs = env_num("RELIST_BENCH_SECS", 10) as f64;
    let workers = env_num("RELIST_BENCH_CONCURRENCY", 48) as usize;
    let tmp = tempfile::tempdir().expect("temp dir");
    let daemon = start_daemon(&tmp.path().join("bank"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // Four connections: one HTTP/2 connection is one TCP stream.
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(connect(&daemon.addr).await);
        }
        let photos = Arc::new(photos(200));
        let mut c = clients[0].clone();
        let t = Instant::now();
        for i in 0..10_000u64 {
            c.register_takedown(pb::RegisterTakedownRequest {
                listing: Some(pb::Listing {
                    listing_id: format!("td{i}"),
                    marketplace: "shopee".into(),
                    images: vec![pb::Image {
                        pdq: pdq_hex(i),
                        phash: format!("{:016x}", mix(i ^ 0x77)),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("register");
        }
        for (i, p) in photos.iter().take(100).enumerate() {
            c.register_takedown(pb::RegisterTakedownRequest {
                listing: Some(pb::Listing {
                    listing_id: format!("ph{i}"),
                    marketplace: "shopee".into(),
                    images: vec![pb::Image {
                        data: p.clone(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("register photo");
        }
        println!(
            "bank: 10,000 hash-only + 100 photo takedowns, registered in {:.1}s; {workers} workers over 4 connections, {secs}s per run",
            t.elapsed().as_secs_f64()
        );
        // Warm-up.
        closed_loop(&clients, workers, 1.0, Arc::new(hash_listing)).await;

        let mut max = closed_loop(&clients, workers, secs, Arc::new(hash_listing)).await;
        max.print("hash-only CheckListing, closed loop");
        let half = max.ok as f64 / max.secs / 2.0;
        let mut open = open_loop(&clients, half, secs).await;
        open.print(&format!("hash-only CheckListing, open loop {half:.0}/s"));
        let ph = photos.clone();
        let mut jpeg = closed_loop(
            &clients,
            8,
            secs,
            Arc::new(move |i| pb::Listing {
                listing_id: format!("j{i}"),
                marketplace: "lazada".into(),
                images: vec![pb::Image {
                    data: ph[i as usize % ph.len()].clone(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        )
        .await;
        jpeg.print("CheckListing with one 500x375 JPEG, 8 workers");
    });
}
