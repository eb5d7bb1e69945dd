//! The shared store (PostgreSQL, many replicas) against the embedded one (sled, one box), on
//! a PostgreSQL cluster this bench starts itself (initdb in a temp dir, pg_ctl on a free
//! loopback port: the cluster of `tests/replicas.rs`). In one run:
//!
//! 1. Registrations/s of hash-only takedowns (one random PDQ and pHash and a random title
//!    each) through `Bank::register`, on sled and on PostgreSQL, from one thread and from 4.
//!    Each PostgreSQL registration commits in PostgreSQL, then applies the change log to the
//!    replica's mirror (sled) and index; a follower thread runs, as in the daemon.
//! 2. Hash-only checks/s (`Bank::check_with(listing, None)`: a dry run) on a bank of
//!    RELIST_BENCH_TAKEDOWNS takedowns, on sled and on a PostgreSQL replica, from one thread
//!    and from 4; half the probes carry a stored takedown's hashes, half random ones.
//! 3. Start-up of a replica on RELIST_BENCH_REPLICA_TAKEDOWNS takedowns: a fresh data dir
//!    (the whole change log replayed from PostgreSQL by `Bank::catch_up`), then after a
//!    graceful stop (`Bank::write_snapshot`) from the mirror and its index snapshot with 1,000
//!    changes to replay, then from the mirror alone (no snapshot: a `kill -9` restart).
//!    PostgreSQL is filled with binary COPY in the exact format `PgStore::write_takedown`
//!    writes (the JSON record, `store::encode_fingerprints`, change-log rows 1..N).
//! 4. Propagation delay: register on replica A, time until replica B (its own data dir, a
//!    follower thread running) matches it as REUPLOAD; p50/p99 over RELIST_BENCH_PROPAGATIONS.
//!
//! Run: `cargo bench --bench shared_store` (RELIST_BENCH_TAKEDOWNS default 100,000,
//! RELIST_BENCH_REPLICA_TAKEDOWNS default 1,000,000, RELIST_BENCH_REGISTRATIONS default 2,000
//! per configuration, RELIST_BENCH_CHECKS default 20,000 per configuration,
//! RELIST_BENCH_PROPAGATIONS default 1,000). Needs PostgreSQL installed
//! (/usr/lib/postgresql/*/bin); prints one line and exits without it.
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "../tests/common/pg.rs"]
mod pg;

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use relist_core::bank::Bank;
use relist_core::domain::{ImageInput, Listing, ListingInfo, Takedown, Verdict};
use relist_core::fingerprint::{DecodeLimits, Fingerprinter, Side};
use relist_core::hashes::PdqHash;
use relist_core::policy::Thresholds;
use relist_core::store::{encode_fingerprints, Store, DEFAULT_CACHE_BYTES};
use relist_pg::PgStore;

/// Seeds of generated listings: `space << 40 | i`, so every phase draws its own listings.
const BULK: u64 = 1;
const REGISTERED: u64 = 2;
const MISSES: u64 = 3;
const PROPAGATED: u64 = 4;

fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// A hash-only listing drawn from `seed`: one random PDQ and pHash (random 256-bit hashes are
/// ~128 bits apart, so each matches only itself) and a title of random tokens (generated
/// words would make titles match each other).
fn listing(seed: u64, marketplace: &str, listing_id: &str) -> Listing {
    let mut rng = StdRng::seed_from_u64(seed);
    let title = (0..4)
        .map(|_| format!("{:08x}", rng.gen::<u32>()))
        .collect::<Vec<_>>()
        .join(" ");
    Listing {
        listing_id: listing_id.into(),
        marketplace: marketplace.into(),
        seller_id: format!("seller-{}", seed % 1000),
        title,
        description: String::new(),
        images: vec![ImageInput::Hashes {
            pdq: Some(PdqHash(rng.gen())),
            pdq_quality: Some(100),
            phash: Some(rng.gen()),
        }],
    }
}

fn seed(space: u64, i: u64) -> u64 {
    (space << 40) | i
}

/// Takedown `id` of a bulk-filled bank, fingerprinted as `Bank::register` would.
fn bulk_takedown(fp: &Fingerprinter, id: u64) -> Takedown {
    let l = listing(seed(BULK, id), "shopee", &format!("bulk-{id}"));
    let (_, fingerprints) = fp.listing(&l, Side::Stored).expect("fingerprint");
    let at = 1_700_000_000_000;
    Takedown {
        id,
        listing: ListingInfo::from(&l),
        reason: "bench".into(),
        taken_down_at_ms: at,
        registered_at_ms: at,
        updated_at_ms: at,
        removed_at_ms: None,
        fingerprints,
    }
}

/// A check of takedown `id`'s hashes from another marketplace.
fn probe_of(id: u64) -> Listing {
    listing(seed(BULK, id), "probe", &format!("probe-{id}"))
}

fn pg_client(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).expect("connect to PostgreSQL")
}

/// Writes takedowns `from+1 ..= from+n` and their change-log entries (seq = id) straight into
/// PostgreSQL with binary COPY, in the format `PgStore::write_takedown` writes; moves the
/// change-log counter and the id sequence past them. The schema must exist.
fn fill_pg(url: &str, from: u64, n: u64) {
    let fp = Fingerprinter::new(DecodeLimits::default());
    let mut client = pg_client(url);
    let mut tx = client.transaction().expect("begin");
    let sink = tx
        .copy_in(
            "COPY relist_takedowns (id, marketplace, listing_id, record, fingerprints, removed) \
             FROM STDIN (FORMAT binary)",
        )
        .expect("copy takedowns");
    let mut w = BinaryCopyInWriter::new(
        sink,
        &[Type::INT8, Type::TEXT, Type::TEXT, Type::TEXT, Type::BYTEA, Type::BOOL],
    );
    for id in from + 1..=from + n {
        let td = bulk_takedown(&fp, id);
        let record = serde_json::to_string(&td).expect("record");
        let fingerprints = encode_fingerprints(&td.fingerprints);
        w.write(&[
            &(id as i64),
            &td.listing.marketplace,
            &td.listing.listing_id,
            &record,
            &fingerprints,
            &false,
        ])
        .expect("copy a takedown");
    }
    w.finish().expect("copy takedowns");
    let sink = tx
        .copy_in("COPY relist_changes (seq, takedown_id) FROM STDIN (FORMAT binary)")
        .expect("copy changes");
    let mut w = BinaryCopyInWriter::new(sink, &[Type::INT8, Type::INT8]);
    for id in from + 1..=from + n {
        w.write(&[&(id as i64), &(id as i64)]).expect("copy a change");
    }
    w.finish().expect("copy changes");
    let last = (from + n) as i64;
    tx.execute("UPDATE relist_seq SET seq = $1 WHERE id = 1", &[&last])
        .expect("counter");
    tx.query_one("SELECT setval('relist_takedown_ids', $1)", &[&last])
        .expect("id sequence");
    tx.commit().expect("commit");
    client
        .batch_execute("ANALYZE relist_takedowns; ANALYZE relist_changes")
        .expect("analyze");
}

/// Writes takedowns `1..=n` into a sled store in `dir` through the store's own write path.
fn fill_sled(dir: &Path, n: u64) {
    let fp = Fingerprinter::new(DecodeLimits::default());
    let store = Store::open(dir).expect("open store");
    for id in 1..=n {
        store.put_takedown(&bulk_takedown(&fp, id)).expect("put takedown");
    }
    store.flush().expect("flush");
}

fn sled_bank(dir: &Path) -> Bank {
    Bank::open_with_cache(dir, Thresholds::default(), DecodeLimits::default(), DEFAULT_CACHE_BYTES)
        .expect("open sled bank")
}

fn pg_bank(dir: &Path, url: &str) -> Bank {
    let record = Arc::new(PgStore::connect(url).expect("connect the shared store"));
    Bank::open_shared(
        dir,
        Thresholds::default(),
        DecodeLimits::default(),
        DEFAULT_CACHE_BYTES,
        record,
    )
    .expect("open replica")
}

/// Runs `work` while `bank` follows its shared record on another thread (as the daemon does;
/// returns at once for a sled bank).
fn following<T>(banks: &[&Bank], work: impl FnOnce() -> T) -> T {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for bank in banks {
            let stop = &stop;
            s.spawn(move || bank.follow(stop));
        }
        let out = work();
        stop.store(true, Ordering::SeqCst);
        out
    })
}

/// Registrations/s of `n` new hash-only takedowns spread over `threads` threads.
fn registrations(bank: &Bank, threads: u64, n: u64, tag: &str) -> f64 {
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for i in (t..n).step_by(threads as usize) {
                    let l = listing(seed(REGISTERED, i), "shopee", &format!("{tag}-{i}"));
                    bank.register(&l, "bench", None).expect("register");
                }
            });
        }
    });
    n as f64 / started.elapsed().as_secs_f64()
}

/// Dry-run checks/s over `threads` threads: even probes carry a stored takedown's hashes
/// (and must come back REUPLOAD), odd ones random hashes. Returns the rate and the REUPLOADs.
fn checks(bank: &Bank, threads: u64, n: u64, takedowns: u64) -> (f64, u64) {
    let started = Instant::now();
    let hits: u64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut rng = StdRng::seed_from_u64(t);
                    let mut hits = 0;
                    for i in (t..n).step_by(threads as usize) {
                        let l = if i % 2 == 0 {
                            probe_of(rng.gen_range(1..=takedowns))
                        } else {
                            listing(seed(MISSES, i), "probe", "miss")
                        };
                        let out = bank.check_with(&l, None).expect("check");
                        hits += u64::from(out.verdict == Verdict::Reupload);
                    }
                    hits
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("check thread")).sum()
    });
    (n as f64 / started.elapsed().as_secs_f64(), hits)
}

fn matches(bank: &Bank, probe: &Listing, id: u64) -> bool {
    bank.check_with(probe, None)
        .expect("check")
        .matches
        .iter()
        .any(|m| m.takedown_id == id && m.verdict == Verdict::Reupload)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A directory's size on disk, in MiB (`du`).
fn dir_mib(p: &Path) -> String {
    let out = std::process::Command::new("du").arg("-sm").arg(p).output();
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("?")
            .to_string()
    })
    .unwrap_or_else(|_| "?".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or_else(|| "unknown".into(), |m| m.trim().to_string())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The figures, printed as they come and again as one table at the end.
#[derive(Default)]
struct Table(Vec<(String, String)>);

impl Table {
    fn row(&mut self, what: impl Into<String>, figure: impl Into<String>) {
        let (what, figure) = (what.into(), figure.into());
        println!("  {what}: {figure}");
        self.0.push((what, figure));
    }
}

fn main() {
    let takedowns = env_count("RELIST_BENCH_TAKEDOWNS", 100_000).max(1);
    let replica_takedowns = env_count("RELIST_BENCH_REPLICA_TAKEDOWNS", 1_000_000).max(1);
    let regs = env_count("RELIST_BENCH_REGISTRATIONS", 2_000).max(1);
    let n_checks = env_count("RELIST_BENCH_CHECKS", 20_000).max(2);
    let propagations = env_count("RELIST_BENCH_PROPAGATIONS", 1_000).max(1);
    let Some(pg) = pg::Postgres::start() else {
        return;
    };
    let bench_started = Instant::now();
    let load_before = loadavg();
    let version: String = pg_client(&pg.url("postgres"))
        .query_one("SHOW server_version", &[])
        .expect("server version")
        .get(0);
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut t = Table::default();

    println!("registrations ({regs} per configuration, hash-only, on an empty bank)");
    for threads in [1u64, 4] {
        let sled = sled_bank(&tmp.path().join(format!("sled-reg-{threads}")));
        let rate = registrations(&sled, threads, regs, "reg");
        t.row(
            format!("registrations/s, sled, {threads} thread(s)"),
            format!("{rate:.0}"),
        );
        let url = pg.create_db(&format!("registrations_{threads}"));
        let replica = pg_bank(&tmp.path().join(format!("pg-reg-{threads}")), &url);
        let rate = following(&[&replica], || registrations(&replica, threads, regs, "reg"));
        t.row(
            format!("registrations/s, PostgreSQL, {threads} thread(s)"),
            format!("{rate:.0}"),
        );
    }

    println!("checks ({n_checks} dry-run hash-only checks per configuration, on {takedowns} takedowns)");
    let sled_dir = tmp.path().join("sled-checks");
    let started = Instant::now();
    fill_sled(&sled_dir, takedowns);
    let sled = sled_bank(&sled_dir);
    println!(
        "  sled bank filled and loaded in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let url = pg.create_db("checks");
    drop(PgStore::connect(&url).expect("create the schema"));
    fill_pg(&url, 0, takedowns);
    let replica = pg_bank(&tmp.path().join("pg-checks"), &url);
    let started = Instant::now();
    let applied = replica.catch_up().expect("catch up");
    assert_eq!(applied as u64, takedowns);
    println!(
        "  PostgreSQL replica caught up with {takedowns} takedowns in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    for threads in [1u64, 2, 4] {
        for (name, bank) in [("sled", &sled), ("PostgreSQL", &replica)] {
            let (rate, hits) = following(&[bank], || checks(bank, threads, n_checks, takedowns));
            assert_eq!(hits, n_checks.div_ceil(2), "every stored probe matches, no random one");
            t.row(format!("checks/s, {name}, {threads} thread(s)"), format!("{rate:.0}"));
        }
    }
    drop((sled, replica));

    println!("propagation ({propagations} registrations on replica A, until replica B matches each)");
    let url = pg.create_db("propagation");
    let a = pg_bank(&tmp.path().join("prop-a"), &url);
    let b = pg_bank(&tmp.path().join("prop-b"), &url);
    let mut delays = following(&[&a, &b], || {
        (0..propagations)
            .map(|i| {
                let s = seed(PROPAGATED, i);
                let id = a
                    .register(&listing(s, "shopee", &format!("prop-{i}")), "bench", None)
                    .expect("register on A")
                    .takedown_id;
                let probe = listing(s, "probe", "prop");
                let acked = Instant::now();
                while !matches(&b, &probe, id) {
                    assert!(
                        acked.elapsed() < Duration::from_secs(10),
                        "B never matched takedown {id}"
                    );
                    std::thread::sleep(Duration::from_micros(100));
                }
                acked.elapsed()
            })
            .collect::<Vec<_>>()
    });
    delays.sort();
    t.row(
        "propagation A -> B after the acknowledgement, p50 / p99 / max",
        format!(
            "{:.1} ms / {:.1} ms / {:.1} ms",
            percentile(&delays, 0.5).as_secs_f64() * 1e3,
            percentile(&delays, 0.99).as_secs_f64() * 1e3,
            delays.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        ),
    );
    drop((a, b));

    let n = replica_takedowns;
    println!("replica start-up on {n} takedowns");
    let url = pg.create_db("startup");
    drop(PgStore::connect(&url).expect("create the schema"));
    let started = Instant::now();
    fill_pg(&url, 0, n);
    let fill = started.elapsed().as_secs_f64();
    println!(
        "  PostgreSQL filled with binary COPY in {fill:.1}s ({:.0} takedowns/s)",
        n as f64 / fill
    );
    let dir = tmp.path().join("replica");
    let started = Instant::now();
    let replica = pg_bank(&dir, &url);
    let applied = replica.catch_up().expect("catch up");
    let fresh = started.elapsed().as_secs_f64();
    assert_eq!(applied as u64, n);
    t.row(
        format!("replica start-up, fresh data dir: replays {n} changes"),
        format!("{fresh:.1} s ({:.0} takedowns/s)", n as f64 / fresh),
    );
    let started = Instant::now();
    let written = replica.write_snapshot().expect("write snapshot");
    assert!(written.is_some(), "no index snapshot written");
    drop(replica);
    let stop = started.elapsed().as_secs_f64();
    println!(
        "  graceful stop (index snapshot written, bank dropped) in {stop:.1}s; data dir {} MiB",
        dir_mib(&dir)
    );
    // Written elsewhere while this replica was down: a little to replay.
    let missed = 1_000;
    fill_pg(&url, n, missed);
    let started = Instant::now();
    let replica = pg_bank(&dir, &url);
    let opened = started.elapsed().as_secs_f64();
    let applied = replica.catch_up().expect("catch up");
    let restart = started.elapsed().as_secs_f64();
    assert_eq!(applied as u64, missed);
    t.row(
        format!("replica restart from its mirror and index snapshot, {missed} changes to replay"),
        format!(
            "{restart:.2} s (index {opened:.2} s, {:.0} takedowns/s)",
            (n + missed) as f64 / restart
        ),
    );
    for id in [1, n / 2 + 1, n + missed] {
        assert!(matches(&replica, &probe_of(id), id), "takedown {id} not matched");
    }
    drop(replica);
    // A restart without a snapshot (after kill -9): the index is loaded from the mirror.
    let started = Instant::now();
    let replica = pg_bank(&dir, &url);
    let applied = replica.catch_up().expect("catch up");
    let from_mirror = started.elapsed().as_secs_f64();
    assert_eq!(applied, 0);
    t.row(
        "replica restart from its mirror without a snapshot (after kill -9), nothing to replay",
        format!(
            "{from_mirror:.1} s ({:.0} takedowns/s)",
            (n + missed) as f64 / from_mirror
        ),
    );
    drop(replica);

    let command = format!(
        "RELIST_BENCH_TAKEDOWNS={takedowns} RELIST_BENCH_REPLICA_TAKEDOWNS={n} \
         RELIST_BENCH_REGISTRATIONS={regs} RELIST_BENCH_CHECKS={n_checks} \
         RELIST_BENCH_PROPAGATIONS={propagations} cargo bench --bench shared_store"
    );
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!("| | |");
    println!("|---|---|");
    println!("| command | `{command}` |");
    println!("| machine | {nproc} CPUs (nproc), {} |", cpu_model());
    println!("| PostgreSQL | {version} (initdb defaults, fsync on, loopback TCP) |");
    println!("| load average before / after | {load_before} / {} |", loadavg());
    println!("| bench wall time | {:.0} s |", bench_started.elapsed().as_secs_f64());
    for (what, figure) in &t.0 {
        println!("| {what} | {figure} |");
    }
}
