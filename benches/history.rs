//! Match-history query latency with a large history.
//!
//! `cargo bench --bench history -- [RECORDS]` (default 1,000,000): fills a temporary sled
//! store with RECORDS match records spread over a year (10,000 takedowns, 50,000 sellers,
//! 5 marketplaces), then times the first page (50 records) of a query by takedown, by seller,
//! by time range and by marketplace + verdict, each repeated on different keys; prints
//! p50/p99/max in milliseconds. Then records new matches from 1, 8 and 64 threads at once
//! (as concurrent upload checks do, all bumping the same day's counters) and prints
//! records/s and the p50/p99 of a single write.
use std::time::Instant;

use relist_core::domain::{HashKind, ImageEvidence, ListingInfo, Match, MatchRecord, Source, Verdict};
use relist_core::history::{History, Query};

const DAY_MS: i64 = 86_400_000;

fn record(i: u64, start_ms: i64, span_ms: i64, n: u64) -> MatchRecord {
    let mix = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let at_ms = start_ms + (i as i64) * span_ms / n as i64;
    let takedown = mix % 10_000 + 1;
    let marketplace = ["shopee", "tokopedia", "lazada", "tiktok", "blibli"][(mix >> 20) as usize % 5];
    MatchRecord {
        match_id: at_ms as u64 * 1000 + i % 1000,
        at_ms,
        source: if i.is_multiple_of(10) {
            Source::Batch
        } else {
            Source::Upload
        },
        candidate: ListingInfo {
            listing_id: format!("l{i}"),
            marketplace: marketplace.into(),
            seller_id: format!("s{}", (mix >> 32) % 50_000),
            title: "baju bekas import original".into(),
            description: String::new(),
        },
        verdict: if i.is_multiple_of(3) {
            Verdict::Review
        } else {
            Verdict::Reupload
        },
        score: 0.5 + (i % 50) as f64 / 100.0,
        matches: vec![Match {
            takedown_id: takedown,
            marketplace: "shopee".into(),
            listing_id: format!("t{takedown}"),
            seller_id: format!("orig{}", takedown % 3000),
            images: vec![ImageEvidence {
                candidate_image_index: 0,
                stored_image_index: 0,
                kind: HashKind::Pdq,
                distance: (i % 31) as u32,
                transform: None,
                colour: None,
                region: false,
            }],
            text_distance: Some((i % 12) as u32),
            same_seller: false,
            verdict: Verdict::Reupload,
            score: 0.9,
        }],
    }
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), v[v.len() - 1])
}

fn main() {
    let n: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(512 << 20)
        .open()
        .expect("sled");
    let h = History::open(&db).expect("history");
    let start_ms = 19_448 * DAY_MS; // 2023-04-01
    let span_ms = 365 * DAY_MS;
    let t = Instant::now();
    for i in 0..n {
        h.insert(&record(i, start_ms, span_ms, n)).expect("insert");
        if i.is_multiple_of(100_000) && i > 0 {
            eprintln!("  {i} records, {:.0} records/s", i as f64 / t.elapsed().as_secs_f64());
        }
    }
    db.flush().expect("flush");
    println!("filled {n} records in {:.1} s", t.elapsed().as_secs_f64());

    let runs = 200u64;
    let mut table = Vec::new();
    let mut time = |name: &str, make: &dyn Fn(u64) -> Query| {
        let mut ms = Vec::new();
        let mut rows = 0;
        for k in 0..runs {
            let q = make(k);
            let t = Instant::now();
            let page = h.query(&q, 50, None).expect("query");
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            rows += page.records.len();
        }
        let (p50, p99, max) = percentiles(ms);
        table.push(format!(
            "| {name} | {:.1} | {p50:.2} | {p99:.2} | {max:.2} |",
            rows as f64 / runs as f64
        ));
    };
    time("by takedown", &|k| Query {
        takedown_id: Some(k * 37 % 10_000 + 1),
        ..Default::default()
    });
    time("by seller (candidate)", &|k| Query {
        seller_id: Some(format!("s{}", k * 131 % 50_000)),
        ..Default::default()
    });
    time("by seller (taken down)", &|k| Query {
        seller_id: Some(format!("orig{}", k * 7 % 3000)),
        ..Default::default()
    });
    time("by time range (one day)", &|k| {
        let from = start_ms + (k as i64 % 360) * DAY_MS;
        Query {
            from_ms: Some(from),
            to_ms: Some(from + DAY_MS),
            ..Default::default()
        }
    });
    time("by marketplace + verdict", &|k| Query {
        marketplace: Some(["shopee", "tokopedia", "lazada", "tiktok", "blibli"][k as usize % 5].into()),
        verdict: Some(Verdict::Review),
        ..Default::default()
    });
    time("newest, no filter", &|_| Query::default());
    println!("\nfirst page (50 records) with {n} records, {runs} queries each:\n");
    println!("| query | rows/page | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    for row in table {
        println!("{row}");
    }

    // Concurrent writes: today's records, so every one bumps the same counters.
    let per_round = 12_800u64;
    let today = relist_core::domain::now_ms();
    let mut next = n;
    println!("\nrecording {per_round} new matches on top, from T threads at once:\n");
    println!("| threads | records/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    for threads in [1u64, 8, 64] {
        let each = per_round / threads;
        let t = Instant::now();
        let ms: Vec<f64> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|w| {
                    let h = &h;
                    s.spawn(move || {
                        (0..each)
                            .map(|i| {
                                let mut r = record(next + w * each + i, today, 1, 1);
                                r.match_id = (today as u64) * 1000 + next + w * each + i;
                                let t = Instant::now();
                                h.insert(&r).expect("insert");
                                t.elapsed().as_secs_f64() * 1000.0
                            })
                            .collect::<Vec<f64>>()
                    })
                })
                .collect();
            workers.into_iter().flat_map(|w| w.join().expect("writer")).collect()
        });
        let rate = (threads * each) as f64 / t.elapsed().as_secs_f64();
        next += threads * each;
        let (p50, p99, _) = percentiles(ms);
        println!("| {threads} | {rate:.0} | {p50:.3} | {p99:.3} |");
    }
}
