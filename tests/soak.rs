//! Soak: many concurrent clients mixing register, remove, check, CheckListings batches and
//! history queries against one real `relist serve` (run from `.ci/run` in release). Passes
//! with zero errors, flat memory, and every client's view consistent with the final store:
//! its live takedowns match their hashes, its removed ones do not.
//!
//! Memory: sled keeps metadata in memory for every page it stores (whatever its cache size),
//! so resident memory follows the data stored, and the match history is meant to grow: every
//! matching check is recorded. The run therefore has two phases. For the first 70% of the time
//! clients write (registrations over a fixed set of listings, removals, matching checks that
//! are recorded); memory is reported beside the store's size on disk. For the last 30% they
//! keep the same request rate with checks that match nothing, batches and history queries, so
//! nothing is stored: resident memory must then stay flat (within 5% or 8 MiB), which is where
//! a leak per request would show.
//!
//! `RELIST_SOAK_SECS` (default 120), `RELIST_SOAK_CLIENTS` (default 50) and
//! `RELIST_SOAK_CACHE_MB` (sled's page cache, default 32) size it.
mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{jpeg, photo, Client, Daemon};
use futures::StreamExt;
use rand::{Rng, SeedableRng};
use relist_proto::api::pb;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Size of the files under `p`, in KiB.
fn dir_kib(p: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut dirs = vec![p.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => dirs.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total / 1024
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn hashed(marketplace: &str, listing_id: &str, pdq: &str) -> pb::Listing {
    pb::Listing {
        listing_id: listing_id.into(),
        marketplace: marketplace.into(),
        seller_id: "s".into(),
        // No title: near-identical generated titles would all match each other by text.
        title: String::new(),
        description: String::new(),
        images: vec![pb::Image {
            pdq: pdq.into(),
            ..Default::default()
        }],
    }
}

#[derive(Default)]
struct Counts {
    registers: AtomicU64,
    removes: AtomicU64,
    checks: AtomicU64,
    batches: AtomicU64,
    queries: AtomicU64,
    errors: AtomicU64,
}

/// Distinct listings each client registers (then updates, removes and registers again).
const KEYS_PER_CLIENT: u64 = 300;

/// What one client knows at the end: takedown id -> (its hash, live).
type View = HashMap<u64, (String, bool)>;

async fn client_loop(
    mut c: Client,
    k: usize,
    writes_until: Instant,
    until: Instant,
    counts: Arc<Counts>,
    photos: Arc<Vec<Vec<u8>>>,
    errors: Arc<parking_lot::Mutex<Vec<String>>>,
) -> View {
    let mut rng = rand::rngs::StdRng::seed_from_u64(k as u64 * 7919 + 1);
    let marketplace = format!("soak{}", k % 5);
    let mut view = View::new();
    let mut live: Vec<u64> = Vec::new();
    let mut n = 0u64;
    let fail = |what: &str, s: tonic::Status| {
        counts.errors.fetch_add(1, Relaxed);
        errors
            .lock()
            .push(format!("client {k} {what}: {:?}: {}", s.code(), s.message()));
    };
    while Instant::now() < until {
        n += 1;
        let writing = Instant::now() < writes_until;
        // In the read-only phase: only checks that match nothing, batches and history queries.
        let roll = if writing {
            rng.gen_range(0..100)
        } else {
            rng.gen_range(25..100)
        };
        if roll < 20 {
            let pdq = hex::encode(rng.gen::<[u8; 32]>());
            let req = pb::RegisterTakedownRequest {
                // A bounded key space per client: after a while registrations update listings
                // instead of adding them, so the bank's size levels off and memory can be
                // seen to level off with it.
                listing: Some(hashed(&marketplace, &format!("c{k}-{}", n % KEYS_PER_CLIENT), &pdq)),
                reason: "soak".into(),
                taken_down_at: None,
            };
            match c.register_takedown(req).await {
                Ok(r) => {
                    let id = r.into_inner().takedown_id;
                    if view.insert(id, (pdq, true)).is_none_or(|(_, was_live)| !was_live) {
                        live.push(id);
                    }
                    counts.registers.fetch_add(1, Relaxed);
                }
                Err(s) => fail("register", s),
            }
        } else if roll < 25 && !live.is_empty() {
            let id = live.swap_remove(rng.gen_range(0..live.len()));
            match c.remove_takedown(pb::RemoveTakedownRequest { takedown_id: id }).await {
                Ok(_) => {
                    if let Some(v) = view.get_mut(&id) {
                        v.1 = false;
                    }
                    counts.removes.fetch_add(1, Relaxed);
                }
                Err(s) => fail("remove", s),
            }
        } else if roll < 70 {
            // A check: of a photo now and then (decode and hash), else of a known or a new hash.
            let listing = if roll < 30 {
                let p = photos[rng.gen_range(0..photos.len())].clone();
                common::listing(&marketplace, &format!("up{k}-{n}"), "u", "a photo", vec![p])
            } else {
                let pdq = match live.get(rng.gen_range(0..live.len().max(1))) {
                    Some(id) if writing && rng.gen_bool(0.5) => view[id].0.clone(),
                    _ => hex::encode(rng.gen::<[u8; 32]>()),
                };
                hashed(&marketplace, &format!("up{k}-{n}"), &pdq)
            };
            match c
                .check_listing(pb::CheckListingRequest {
                    listing: Some(listing),
                    ..Default::default()
                })
                .await
            {
                Ok(_) => {
                    counts.checks.fetch_add(1, Relaxed);
                }
                Err(s) => fail("check", s),
            }
        } else if roll < 85 {
            let items: Vec<pb::CheckListingRequest> = (0..8)
                .map(|i| pb::CheckListingRequest {
                    listing: Some(hashed(
                        &marketplace,
                        &format!("b{k}-{n}-{i}"),
                        &hex::encode(rng.gen::<[u8; 32]>()),
                    )),
                    ..Default::default()
                })
                .collect();
            match c.check_listings(futures::stream::iter(items)).await {
                Ok(r) => {
                    let mut stream = r.into_inner();
                    let mut answers = 0;
                    while let Some(item) = stream.next().await {
                        match item {
                            Ok(a) if matches!(a.outcome, Some(pb::check_listings_response::Outcome::Result(_))) => {
                                answers += 1
                            }
                            Ok(a) => {
                                counts.errors.fetch_add(1, Relaxed);
                                errors.lock().push(format!("client {k} batch item: {a:?}"));
                            }
                            Err(s) => fail("batch stream", s),
                        }
                    }
                    if answers == 8 {
                        counts.batches.fetch_add(1, Relaxed);
                    }
                }
                Err(s) => fail("batch", s),
            }
        } else {
            let q = pb::QueryMatchesRequest {
                marketplace: marketplace.clone(),
                page_size: 20,
                ..Default::default()
            };
            match c.query_matches(q).await {
                Ok(_) => {
                    counts.queries.fetch_add(1, Relaxed);
                }
                Err(s) => fail("history", s),
            }
        }
    }
    view
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "slow: run from .ci/run in release"]
async fn soak_many_clients_mixed_load() {
    let secs = env_u64("RELIST_SOAK_SECS", 120);
    let clients = env_u64("RELIST_SOAK_CLIENTS", 50) as usize;
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let cache_mb = env_u64("RELIST_SOAK_CACHE_MB", 32).to_string();
    let daemon = Daemon::serve(&data, &["--cache-mb", &cache_mb]);
    let pid = daemon.child.id();
    let addr: std::net::SocketAddr = daemon.addr.parse().expect("address");
    let rss_start = rss_kib(pid);
    let photos = Arc::new((0..6).map(|s| jpeg(&photo(300 + s, 480, 360), 85)).collect::<Vec<_>>());
    let counts = Arc::new(Counts::default());
    let errors = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let writes_until = started + Duration::from_secs_f64(secs as f64 * 0.7);
    let mut tasks = Vec::new();
    for k in 0..clients {
        let c = common::connect(addr).await;
        tasks.push(tokio::spawn(client_loop(
            c,
            k,
            writes_until,
            until,
            counts.clone(),
            photos.clone(),
            errors.clone(),
        )));
    }
    // RSS and the store's size on disk every twentieth of the run, from a tenth in.
    let mut samples: Vec<(f64, u64, u64)> = Vec::new();
    for step in 2..20 {
        tokio::time::sleep_until((started + Duration::from_secs_f64(secs as f64 * step as f64 / 20.0)).into()).await;
        samples.push((step as f64 / 20.0, rss_kib(pid), dir_kib(&data)));
    }
    let mut views = Vec::new();
    for t in tasks {
        views.push(t.await.expect("client task"));
    }
    let elapsed = started.elapsed();
    samples.push((1.0, rss_kib(pid), dir_kib(&data)));
    let at = |f: f64| samples.iter().find(|s| s.0 >= f - 1e-9).copied().unwrap_or((f, 0, 0));
    let (warm, switch, read_only, end) = (at(0.1), at(0.7), at(0.75), at(1.0));
    let curve: Vec<String> = samples
        .iter()
        .step_by(2)
        .map(|s| format!("{:.0}%: {} MiB / {} MiB", s.0 * 100.0, s.1 / 1024, s.2 / 1024))
        .collect();

    // The final store, as every client saw it.
    let mut all: Vec<(u64, String, bool)> = Vec::new();
    for v in views {
        all.extend(v.into_iter().map(|(id, (pdq, live))| (id, pdq, live)));
    }
    let mismatches = Arc::new(AtomicU64::new(0));
    let chunks: Vec<Vec<(u64, String, bool)>> = all.chunks(all.len().div_ceil(16).max(1)).map(<[_]>::to_vec).collect();
    let mut verifiers = Vec::new();
    for chunk in chunks {
        let mut c = common::connect(addr).await;
        let mismatches = mismatches.clone();
        verifiers.push(tokio::spawn(async move {
            for (id, pdq, live) in chunk {
                let r = c
                    .check_listing(pb::CheckListingRequest {
                        listing: Some(hashed("verify", &format!("v{id}"), &pdq)),
                        ..Default::default()
                    })
                    .await
                    .expect("verification check")
                    .into_inner();
                let hit = r
                    .matches
                    .iter()
                    .any(|m| m.takedown_id == id && m.verdict == pb::Verdict::Reupload as i32);
                if hit != live {
                    eprintln!("takedown {id}: live={live} but matched={hit}");
                    mismatches.fetch_add(1, Relaxed);
                }
            }
        }));
    }
    for v in verifiers {
        v.await.expect("verifier");
    }
    let live = all.iter().filter(|t| t.2).count();
    let c = &counts;
    println!(
        "soak: {clients} clients for {:.0}s: {} registers, {} removes, {} checks, {} batches of 8, {} history \
         queries ({:.0} calls/s); {} errors; RSS start {} MiB; writing phase: RSS {} -> {} MiB while the store grew {} -> {} MiB; \
         read-only phase: RSS {} -> {} MiB; (RSS / store along the run: {}); final store: {live} live takedowns matched, {} \
         removed ones not, {} inconsistent",
        elapsed.as_secs_f64(),
        c.registers.load(Relaxed),
        c.removes.load(Relaxed),
        c.checks.load(Relaxed),
        c.batches.load(Relaxed),
        c.queries.load(Relaxed),
        (c.registers.load(Relaxed)
            + c.removes.load(Relaxed)
            + c.checks.load(Relaxed)
            + c.batches.load(Relaxed)
            + c.queries.load(Relaxed)) as f64
            / elapsed.as_secs_f64(),
        c.errors.load(Relaxed),
        rss_start / 1024,
        warm.1 / 1024,
        switch.1 / 1024,
        warm.2 / 1024,
        switch.2 / 1024,
        read_only.1 / 1024,
        end.1 / 1024,
        curve.join(", "),
        all.len() - live,
        mismatches.load(Relaxed),
    );
    let errs = errors.lock();
    assert!(
        errs.is_empty(),
        "{} errors, first: {:#?}",
        errs.len(),
        &errs[..errs.len().min(10)]
    );
    assert_eq!(
        mismatches.load(Relaxed),
        0,
        "client views inconsistent with the final store"
    );
    assert!(c.registers.load(Relaxed) > 0 && c.checks.load(Relaxed) > 0 && c.batches.load(Relaxed) > 0);
    // Nothing stored, nothing grows: the read-only phase stays flat. The last samples' lowest
    // value is compared, so a passing allocation burst does not count but a leak (which
    // raises every later sample) does.
    let late = samples
        .iter()
        .filter(|s| s.0 >= 0.9 - 1e-9)
        .map(|s| s.1)
        .min()
        .unwrap_or(0);
    assert!(
        late <= read_only.1 + (read_only.1 / 20).max(8 * 1024),
        "RSS grew from {} KiB to {late} KiB while nothing was stored",
        read_only.1,
    );
    // While writing, memory follows the data: a loose ceiling on it catches a runaway.
    assert!(
        switch.1 <= warm.1 * 2 + 4 * switch.2.saturating_sub(warm.2) + 64 * 1024,
        "RSS grew from {} KiB to {} KiB while the store grew from {} KiB to {} KiB",
        warm.1,
        switch.1,
        warm.2,
        switch.2
    );
    drop(daemon);
}
