//! Many replicas of one bank on a real PostgreSQL (issue 16), against the real `relist serve`
//! binary: every test starts its own cluster (initdb in a temp dir, pg_ctl on a free loopback
//! port; see `common::pg`) and skips with one line where PostgreSQL is not installed.
//!
//! - `the_storage_suite_runs_on_sled_and_postgres`: one suite, both implementations.
//! - `three_replicas_see_each_registration_within_two_seconds`: p50/p99 of the delay.
//! - `racing_writers_and_a_long_transaction_skip_no_change`: the change log is gap-free.
//! - `a_replica_killed_during_writes_converges`: kill -9 cycles, nothing acknowledged lost.
//! - `postgres_down_then_back`: stale checks, UNAVAILABLE writes, recovery without restart.
mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pg::Postgres;
use common::{Client, Daemon};
use futures::StreamExt;
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use relist_core::domain::{ListingInfo, Takedown};
use relist_core::storage::Storage;
use relist_proto::api::pb;

/// A hash-only listing: one random PDQ (random 256-bit hashes are ~128 bits apart, so each
/// matches only itself), no title (generated titles would match each other by text).
fn hashed(marketplace: &str, listing_id: &str, pdq: &str) -> pb::Listing {
    pb::Listing {
        listing_id: listing_id.into(),
        marketplace: marketplace.into(),
        seller_id: "seller".into(),
        title: String::new(),
        description: String::new(),
        images: vec![pb::Image {
            pdq: pdq.into(),
            ..Default::default()
        }],
    }
}

fn random_pdq(rng: &mut impl Rng) -> String {
    hex::encode(rng.gen::<[u8; 32]>())
}

fn replica(pg_url: &str, data: &std::path::Path) -> Daemon {
    Daemon::serve(data, &["--store", pg_url])
}

async fn register(c: &mut Client, l: pb::Listing) -> Result<u64, tonic::Status> {
    c.register_takedown(pb::RegisterTakedownRequest {
        listing: Some(l),
        reason: "replica test".into(),
        taken_down_at: None,
    })
    .await
    .map(|r| r.into_inner().takedown_id)
}

/// A dry-run check (the history stays empty): the takedown ids it matches as REUPLOAD and
/// whether the replica says its bank may be stale.
async fn reuploads(c: &mut Client, probe: &str) -> (Vec<u64>, bool) {
    let r = c
        .check_listing(pb::CheckListingRequest {
            listing: Some(hashed("probe", "p", probe)),
            dry_run: true,
        })
        .await
        .expect("check")
        .into_inner();
    let ids = r
        .matches
        .iter()
        .filter(|m| m.verdict == pb::Verdict::Reupload as i32)
        .map(|m| m.takedown_id)
        .collect();
    (ids, r.bank_stale)
}

/// Waits (bounded) until `probe` matches takedown `id` as a REUPLOAD on `c`; the delay.
async fn until_matched(c: &mut Client, probe: &str, id: u64, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if reuploads(c, probe).await.0.contains(&id) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

/// The health service's status for relist (1 SERVING, 2 NOT_SERVING).
async fn health(addr: &str) -> i32 {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "relist.v1.Relist".into(),
        })
        .await
        .expect("health")
        .into_inner()
        .status
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn takedown(id: u64, marketplace: &str, listing_id: &str, pdq: [u8; 32]) -> Takedown {
    let mut fingerprints = relist_core::domain::ListingFingerprints::default();
    fingerprints.images.push(relist_core::domain::ImageFingerprint {
        pdq: Some(relist_core::hashes::PdqHash(pdq)),
        pdq_quality: 100,
        phash: Some(0x0123_4567_89ab_cdef),
    });
    Takedown {
        id,
        listing: ListingInfo {
            listing_id: listing_id.into(),
            marketplace: marketplace.into(),
            seller_id: "s".into(),
            title: "baju bekas".into(),
            description: String::new(),
        },
        reason: "suite".into(),
        taken_down_at_ms: 1,
        registered_at_ms: 1,
        updated_at_ms: 1,
        removed_at_ms: None,
        fingerprints,
    }
}

/// What every record must do, whatever it is built on.
fn storage_suite(s: &dyn Storage) {
    let a = s.next_takedown_id().expect("id");
    let b = s.next_takedown_id().expect("id");
    assert!(a != 0 && b != 0 && a != b, "ids are unique and never 0: {a} {b}");
    assert!(s.takedown(a).expect("read").is_none());
    assert_eq!(s.takedown_id_by_listing("m", "l1").expect("read"), None);

    let mut td = takedown(a, "m", "l1", [7; 32]);
    s.write_takedown(&td).expect("write");
    assert_eq!(s.takedown_id_by_listing("m", "l1").expect("read"), Some(a));
    let back = s.takedown(a).expect("read").expect("stored");
    assert_eq!(
        (back.listing.listing_id.as_str(), back.reason.as_str()),
        ("l1", "suite")
    );
    let live = s.live_fingerprints_of(a).expect("read").expect("live");
    assert_eq!(live.images[0].pdq, td.fingerprints.images[0].pdq);
    assert_eq!(live.images[0].phash, Some(0x0123_4567_89ab_cdef));

    // A second takedown for the same listing is a conflict, not a silent duplicate.
    let dup = takedown(b, "m", "l1", [9; 32]);
    assert!(
        matches!(s.write_takedown(&dup), Err(relist_core::error::Error::Conflict(_))),
        "{}",
        s.describe()
    );

    // Removal: the record stays, the fingerprints go.
    td.removed_at_ms = Some(2);
    s.write_takedown(&td).expect("remove");
    assert_eq!(s.takedown(a).expect("read").expect("kept").removed_at_ms, Some(2));
    assert_eq!(s.live_fingerprints_of(a).expect("read"), None);

    s.put_thumbnails(a, &[(0, vec![1, 2, 3]), (1, vec![4])])
        .expect("thumbs");
    s.put_thumbnails(a, &[(0, vec![5])]).expect("thumbs replaced");
    assert_eq!(s.thumbnail(a, 0).expect("read"), Some(vec![5]));
    assert_eq!(s.thumbnail(a, 1).expect("read"), None);
    assert!(!s.bank_id().expect("bank id").is_empty());
}

#[test]
fn the_storage_suite_runs_on_sled_and_postgres() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sled = relist_core::store::Store::open(dir.path()).expect("sled");
    storage_suite(&sled);
    assert!(
        sled.changes_after(0, 10).expect("changes").is_empty(),
        "sled keeps no change log"
    );

    let Some(pg) = Postgres::start() else { return };
    let store = relist_pg::PgStore::connect(&pg.create_db("suite")).expect("connect");
    storage_suite(&store);
    // The change log: one entry per write, consecutive from 1, the record as it is now.
    let changes = store.changes_after(0, 100).expect("changes");
    let seqs: Vec<u64> = changes.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, vec![1, 2]);
    assert!(changes.iter().all(|c| c.takedown.removed_at_ms == Some(2)));
    assert_eq!(store.changes_after(1, 100).expect("changes").len(), 1);
    // A second connection sees the same bank and the same log; migrations ran once.
    let again = relist_pg::PgStore::connect(&pg.url("suite")).expect("connect again");
    assert_eq!(again.bank_id().expect("id"), store.bank_id().expect("id"));
    assert_eq!(
        pg.psql("suite", "SELECT version FROM relist_schema").trim(),
        relist_pg::schema::VERSION.to_string()
    );
    // Batch jobs: chunks claimed once each, results written once, by the lease holder only.
    let job = store
        .create_job(&[vec![b"a".to_vec(), b"b".to_vec()], vec![b"c".to_vec()]])
        .expect("job");
    let lease = Duration::from_secs(60);
    let first = store.claim_chunk("w1", lease).expect("claim").expect("a chunk");
    let second = store.claim_chunk("w2", lease).expect("claim").expect("the other chunk");
    assert_ne!(first.chunk, second.chunk, "two claimers never get the same chunk");
    assert!(
        store.claim_chunk("w3", lease).expect("claim").is_none(),
        "both chunks are leased"
    );
    assert!(
        !store.complete_chunk(job, first.chunk, "w2", &[]).expect("complete"),
        "not w2's lease"
    );
    let answers: Vec<Vec<u8>> = first.items.iter().map(|i| [b"r:".as_slice(), i].concat()).collect();
    assert!(store
        .complete_chunk(job, first.chunk, "w1", &answers)
        .expect("complete"));
    assert!(
        !store.complete_chunk(job, first.chunk, "w1", &answers).expect("again"),
        "done once"
    );
    let status = store.job_status(job).expect("status").expect("known job");
    assert_eq!(
        (status.items, status.chunks, status.chunks_done, status.done()),
        (3, 2, 1, false)
    );
    let results = store.job_results(job, 0, 10).expect("results");
    assert_eq!(results.len(), first.items.len());
    assert!(
        Storage::create_job(&sled, &[vec![b"a".to_vec()]]).is_err(),
        "a single box has no shared jobs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_see_each_registration_within_two_seconds() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_db("propagation");
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let replicas: Vec<Daemon> = dirs.iter().map(|d| replica(&url, d.path())).collect();
    let (mut a, mut b, mut c) = (
        replicas[0].client().await,
        replicas[1].client().await,
        replicas[2].client().await,
    );
    let n: usize = std::env::var("RELIST_PROPAGATION_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    let mut delays = Vec::with_capacity(2 * n);
    for i in 0..n {
        let pdq = random_pdq(&mut rng);
        let id = register(&mut a, hashed("shopee", &format!("l{i}"), &pdq))
            .await
            .expect("register on A");
        let acked = Instant::now();
        // The writer applies its own change before acknowledging it.
        assert!(
            reuploads(&mut a, &pdq).await.0.contains(&id),
            "A matches its own write at once"
        );
        for (name, client) in [("B", &mut b), ("C", &mut c)] {
            let waited = until_matched(client, &pdq, id, Duration::from_secs(5)).await;
            let Some(_) = waited else {
                panic!("registration {i} (takedown {id}) not matched on {name} within 5 s");
            };
            delays.push(acked.elapsed());
        }
    }
    delays.sort();
    let (p50, p99, max) = (
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        delays[delays.len() - 1],
    );
    println!(
        "propagation over {n} registrations on A, seen on B and C: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    assert!(
        max < Duration::from_secs(2),
        "a registration took {max:?} to reach another replica"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_and_a_long_transaction_skip_no_change() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_db("racing");
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let replicas: Vec<Daemon> = dirs.iter().map(|d| replica(&url, d.path())).collect();
    // A long transaction that wrote (holding a snapshot and locks of its own) stays open
    // while both writers race: it must not make any follower skip a change.
    let long = {
        let pg_url = url.clone();
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&pg_url, postgres::NoTls).expect("connect");
            let mut tx = c.transaction().expect("begin");
            tx.query("SELECT count(*) FROM relist_takedowns", &[]).expect("read");
            tx.execute("CREATE TEMP TABLE hold (x int)", &[]).expect("write");
            std::thread::sleep(Duration::from_secs(3));
            tx.commit().expect("commit");
        })
    };
    let per_writer = 150;
    let mut writers = Vec::new();
    for (w, r) in replicas.iter().take(2).enumerate() {
        let mut client = r.client().await;
        writers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(w as u64);
            let mut done = Vec::new();
            for i in 0..per_writer {
                let pdq = random_pdq(&mut rng);
                let id = register(&mut client, hashed("tokopedia", &format!("w{w}-{i}"), &pdq))
                    .await
                    .expect("register");
                done.push((id, pdq));
            }
            done
        }));
    }
    let mut all = Vec::new();
    for w in writers {
        all.extend(w.await.expect("writer"));
    }
    long.join().expect("long transaction");
    assert_eq!(all.len(), 2 * per_writer);
    // Gap-free and complete: seqs 1..=N, one per registration.
    let (count, min, max) = {
        let row = pg.psql("racing", "SELECT count(*), min(seq), max(seq) FROM relist_changes");
        let v: Vec<u64> = row.trim().split('|').map(|x| x.parse().expect("number")).collect();
        (v[0], v[1], v[2])
    };
    assert_eq!((count, min, max), (all.len() as u64, 1, all.len() as u64));
    for (r, name) in replicas.iter().zip(["A", "B", "C"]) {
        let mut c = r.client().await;
        for (id, pdq) in &all {
            assert!(
                until_matched(&mut c, pdq, *id, Duration::from_secs(5)).await.is_some(),
                "takedown {id} never matched on replica {name}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_during_writes_converges() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_db("killed");
    let (dir_a, dir_b) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let a = replica(&url, dir_a.path());
    let cycles: usize = std::env::var("RELIST_REPLICA_KILL_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    // Acknowledged writes, from either replica: takedown id -> its hash.
    let acked: Arc<Mutex<HashMap<u64, String>>> = Default::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for cycle in 0..cycles {
        let b = replica(&url, dir_b.path());
        let mut writers = Vec::new();
        for (w, target) in [a.addr.clone(), b.addr.clone()].into_iter().enumerate() {
            let acked = acked.clone();
            let seed = rng.gen::<u64>();
            writers.push(tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                let mut c = common::connect(target.parse().expect("addr")).await;
                for i in 0..10_000 {
                    let pdq = random_pdq(&mut rng);
                    match register(&mut c, hashed("lazada", &format!("c{cycle}-w{w}-{i}"), &pdq)).await {
                        Ok(id) => {
                            acked.lock().insert(id, pdq);
                        }
                        Err(_) => return,
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(150..600))).await;
        b.kill9();
        // The writer on B stops at its first failure; stop the one on A too.
        for w in &writers {
            w.abort();
        }
        for w in writers {
            let _ = w.await;
        }
    }
    let b = replica(&url, dir_b.path());
    let acked = acked.lock().clone();
    assert!(
        acked.len() > 20,
        "the cycles wrote too little to test anything: {}",
        acked.len()
    );
    for (d, name) in [(&a, "A"), (&b, "B")] {
        let mut c = d.client().await;
        for (id, pdq) in &acked {
            assert!(
                until_matched(&mut c, pdq, *id, Duration::from_secs(10)).await.is_some(),
                "acknowledged takedown {id} not matched on replica {name} after {cycles} kill -9 cycles"
            );
        }
    }
    println!(
        "{cycles} kill -9 cycles: {} acknowledged registrations all matched on both replicas",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_then_back() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_db("outage");
    let (dir_a, dir_b) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let (ra, rb) = (replica(&url, dir_a.path()), replica(&url, dir_b.path()));
    let (mut a, mut b) = (ra.client().await, rb.client().await);
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let before = random_pdq(&mut rng);
    let id = register(&mut a, hashed("shopee", "before", &before))
        .await
        .expect("register");
    until_matched(&mut b, &before, id, Duration::from_secs(5))
        .await
        .expect("propagated");
    assert!(
        !reuploads(&mut b, &before).await.1,
        "not stale while PostgreSQL answers"
    );

    pg.stop();
    // Checks go on from memory; after a few seconds they say the bank may be stale.
    let started = Instant::now();
    loop {
        let (ids, stale) = reuploads(&mut b, &before).await;
        assert!(ids.contains(&id), "still matched from memory");
        if stale {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "checks never said the bank may be stale"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Writes fail with UNAVAILABLE, saying what is unreachable.
    let err = register(&mut a, hashed("shopee", "during", &random_pdq(&mut rng)))
        .await
        .expect_err("no write without PostgreSQL");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("shared store"), "{}", err.message());
    let err = a
        .remove_takedown(pb::RemoveTakedownRequest { takedown_id: id })
        .await
        .expect_err("no removal without PostgreSQL");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");

    // A replica restarted meanwhile starts from its mirror: it answers (stale) but reports
    // NOT_SERVING until it has caught up with PostgreSQL.
    drop(b);
    rb.terminate();
    let rb = replica(&url, dir_b.path());
    let mut b = rb.client().await;
    let (ids, stale) = reuploads(&mut b, &before).await;
    assert!(ids.contains(&id) && stale, "answered from the mirror, flagged stale");
    assert_eq!(health(&rb.addr).await, 2, "NOT_SERVING before catching up");

    pg.start_server();
    let started = Instant::now();
    while health(&rb.addr).await != 1 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never SERVING after PostgreSQL came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Both replicas recover without a restart: writes work, propagate, checks are fresh.
    let after = random_pdq(&mut rng);
    let mut written = None;
    for _ in 0..100 {
        match register(&mut a, hashed("shopee", "after", &after)).await {
            Ok(id) => {
                written = Some(id);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let id2 = written.expect("writes work again once PostgreSQL is back");
    until_matched(&mut b, &after, id2, Duration::from_secs(5))
        .await
        .expect("propagated after recovery");
    assert!(!reuploads(&mut b, &after).await.1, "fresh again");
    assert!(!reuploads(&mut a, &after).await.1, "fresh again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_job_split_over_two_replicas_survives_one_killed() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_db("batchjob");
    let (dir_a, dir_b) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let lease = ["--store", &url, "--batch-lease-secs", "2"];
    let ra = Daemon::serve(dir_a.path(), &lease);
    let rb = Daemon::serve(dir_b.path(), &lease);
    let mut a = ra.client().await;
    // Photos, so a chunk takes long enough for the kill to land in the middle of one.
    let photos: Vec<Vec<u8>> = (0..8)
        .map(|i| common::jpeg(&common::photo(100 + i, 480, 360), 90))
        .collect();
    let mut takedowns = Vec::new();
    for (i, p) in photos.iter().take(4).enumerate() {
        let l = common::listing("shopee", &format!("td{i}"), "s", "", vec![p.clone()]);
        takedowns.push(register(&mut a, l).await.expect("register"));
    }
    // 240 listings: each photo 30 times; the first four photos are re-uploads.
    let n = 240;
    let items: Vec<pb::SubmitBatchJobRequest> = (0..n)
        .map(|i| pb::SubmitBatchJobRequest {
            item: Some(pb::CheckListingRequest {
                listing: Some(common::listing(
                    "tokopedia",
                    &format!("c{i}"),
                    "x",
                    "",
                    vec![photos[i % 8].clone()],
                )),
                dry_run: false,
            }),
            chunk_size: 6,
        })
        .collect();
    let job = a
        .submit_batch_job(tokio_stream::iter(items))
        .await
        .expect("submit")
        .into_inner();
    assert_eq!((job.listings, job.chunks, job.done), (n as u64, 40, false));
    // Kill B while it holds a chunk: its lease runs out and A redoes the chunk.
    let held_by_b = format!(
        "SELECT count(*) FROM relist_chunks WHERE state = 'leased' AND leased_by LIKE '{}/%'",
        rb.addr
    );
    let started = Instant::now();
    while pg.psql("batchjob", &held_by_b).trim() == "0" {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "replica B never claimed a chunk"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    rb.kill9();
    let started = Instant::now();
    let status = loop {
        let s = a
            .get_batch_job(pb::GetBatchJobRequest { job_id: job.job_id })
            .await
            .expect("status")
            .into_inner();
        if s.done {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "job not done: {s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut results = a
        .get_batch_results(pb::GetBatchResultsRequest {
            job_id: job.job_id,
            from_index: 0,
        })
        .await
        .expect("results")
        .into_inner();
    let mut answered = Vec::new();
    while let Some(r) = results.next().await {
        answered.push(r.expect("result"));
    }
    // Every listing answered exactly once, in submission order, each right.
    assert_eq!(answered.len(), n, "{status:?}");
    for (i, r) in answered.iter().enumerate() {
        assert_eq!(r.listing_id, format!("c{i}"));
        let Some(pb::check_listings_response::Outcome::Result(res)) = &r.outcome else {
            panic!("item {i} failed: {r:?}");
        };
        let hit = res.matches.iter().any(|m| m.verdict == pb::Verdict::Reupload as i32);
        assert_eq!(hit, i % 8 < 4, "item {i}: {res:?}");
        if hit {
            assert_eq!(res.matches[0].takedown_id, takedowns[i % 8]);
        }
    }
    println!(
        "batch job over two replicas, one killed: {n} listings in {} chunks answered once each; {} chunk(s) redone",
        status.chunks, status.reclaims
    );
    assert!(
        status.reclaims >= 1,
        "the killed replica held no chunk: nothing was redone ({status:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_log_that_went_back_is_replayed_from_scratch() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_db("failover");
    let (dir_a, dir_b) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let (ra, rb) = (replica(&url, dir_a.path()), replica(&url, dir_b.path()));
    let (mut a, mut b) = (ra.client().await, rb.client().await);
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let (kept, lost) = (random_pdq(&mut rng), random_pdq(&mut rng));
    let id_kept = register(&mut a, hashed("blibli", "kept", &kept))
        .await
        .expect("register");
    let id_lost = register(&mut a, hashed("blibli", "lost", &lost))
        .await
        .expect("register");
    until_matched(&mut b, &lost, id_lost, Duration::from_secs(5))
        .await
        .expect("propagated");
    // What an asynchronous failover does: the new primary never saw the last write.
    pg.psql(
        "failover",
        &format!(
            "BEGIN; DELETE FROM relist_changes WHERE takedown_id = {id_lost}; \
             DELETE FROM relist_thumbnails WHERE takedown_id = {id_lost}; \
             DELETE FROM relist_takedowns WHERE id = {id_lost}; \
             UPDATE relist_seq SET seq = 1; COMMIT;"
        ),
    );
    // A new write at once takes seq 2 again: the replicas must not take it for the one they
    // applied (the change's mark tells them apart).
    let next = random_pdq(&mut rng);
    let id_next = register(&mut a, hashed("blibli", "next", &next))
        .await
        .expect("register");
    for (c, name) in [(&mut a, "A"), (&mut b, "B")] {
        let started = Instant::now();
        while reuploads(c, &lost).await.0.contains(&id_lost) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "replica {name} still matches a lost write"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        until_matched(c, &kept, id_kept, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("replica {name} lost a kept takedown in the rebuild"));
    }
    until_matched(&mut b, &next, id_next, Duration::from_secs(5))
        .await
        .expect("followed after the rebuild");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relist_batch_shared_job_writes_one_row_per_listing() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_db("batchcli");
    let (dir_a, dir_b) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let (ra, _rb) = (replica(&url, dir_a.path()), replica(&url, dir_b.path()));
    let mut a = ra.client().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let stored: Vec<String> = (0..5).map(|_| random_pdq(&mut rng)).collect();
    for (i, pdq) in stored.iter().enumerate() {
        register(&mut a, hashed("shopee", &format!("t{i}"), pdq))
            .await
            .expect("register");
    }
    let work = tempfile::tempdir().expect("dir");
    let catalog = work.path().join("catalog.jsonl");
    let mut lines = String::new();
    for i in 0..40 {
        let pdq = if i % 4 == 0 {
            stored[i / 8].clone()
        } else {
            random_pdq(&mut rng)
        };
        lines.push_str(&format!(
            "{{\"listing_id\": \"c{i}\", \"marketplace\": \"lazada\", \"seller_id\": \"x\", \"title\": \"\", \"images\": [{{\"pdq\": \"{pdq}\"}}]}}\n"
        ));
    }
    std::fs::write(&catalog, lines).expect("catalog");
    let out = work.path().join("results.jsonl");
    let run = common::relist_cli(&[
        "batch",
        catalog.to_str().expect("path"),
        "--out",
        out.to_str().expect("path"),
        "--shared-job",
        "--chunk-size",
        "5",
        "--quiet",
        "--addr",
        &ra.addr,
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .expect("results")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json row"))
        .collect();
    assert_eq!(rows.len(), 40);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["listing_id"], format!("c{i}"));
        let want = if i % 4 == 0 { "REUPLOAD" } else { "CLEAR" };
        assert_eq!(row["verdict"], want, "row {i}: {row}");
    }
}

/// A recorded check (not a dry run) of `pdq` as listing `listing_id`: the match id, if any.
async fn recorded_check(c: &mut Client, listing_id: &str, pdq: &str) -> u64 {
    c.check_listing(pb::CheckListingRequest {
        listing: Some(hashed("tiktok", listing_id, pdq)),
        dry_run: false,
    })
    .await
    .expect("check")
    .into_inner()
    .match_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_reviews_and_keys_are_shared_by_replicas() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_db("shared");
    let (dir_a, dir_b) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let (ra, rb) = (replica(&url, dir_a.path()), replica(&url, dir_b.path()));
    let (mut a, mut b) = (ra.client().await, rb.client().await);
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    let pdqs: Vec<String> = (0..6).map(|_| random_pdq(&mut rng)).collect();
    let mut ids = Vec::new();
    for (i, p) in pdqs.iter().enumerate() {
        ids.push(
            register(&mut a, hashed("shopee", &format!("t{i}"), p))
                .await
                .expect("register"),
        );
        until_matched(&mut b, p, ids[i], Duration::from_secs(5))
            .await
            .expect("propagated");
    }
    // Checks recorded on both replicas at once get distinct match ids, and every record
    // reaches both replicas' history.
    let mut made = Vec::new();
    for (i, p) in pdqs.iter().enumerate() {
        let (la, lb) = (format!("a{i}"), format!("b{i}"));
        let (ma, mb) = tokio::join!(recorded_check(&mut a, &la, p), recorded_check(&mut b, &lb, p));
        assert!(ma != 0 && mb != 0);
        made.extend([ma, mb]);
    }
    let unique: std::collections::HashSet<_> = made.iter().collect();
    assert_eq!(unique.len(), made.len(), "match ids collide across replicas: {made:?}");
    for (c, name) in [(&mut a, "A"), (&mut b, "B")] {
        for m in &made {
            let started = Instant::now();
            while c.get_match(pb::GetMatchRequest { match_id: *m }).await.is_err() {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "match {m} never reached replica {name}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let page = c
            .query_matches(pb::QueryMatchesRequest {
                page_size: 100,
                ..Default::default()
            })
            .await
            .expect("query")
            .into_inner();
        assert_eq!(page.records.len(), made.len(), "replica {name}'s history");
    }
    // A FALSE_POSITIVE on A stops the same listing matching on B.
    let on_b = made[1];
    a.review_match(pb::ReviewMatchRequest {
        match_id: on_b,
        label: pb::ReviewLabel::FalsePositive as i32,
        reviewer: "analyst".into(),
        note: "different product".into(),
    })
    .await
    .expect("review on A");
    let started = Instant::now();
    loop {
        let r = b
            .check_listing(pb::CheckListingRequest {
                listing: Some(hashed("tiktok", "b0", &pdqs[0])),
                dry_run: true,
            })
            .await
            .expect("check")
            .into_inner();
        if r.verdict == pb::Verdict::Clear as i32 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the review never reached B");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Records made while PostgreSQL is down wait in B's outbox and arrive on A afterwards.
    pg.stop();
    let offline = recorded_check(&mut b, "offline", &pdqs[2]).await;
    assert!(offline != 0, "recorded locally while PostgreSQL is down");
    let err = a
        .review_match(pb::ReviewMatchRequest {
            match_id: made[0],
            label: pb::ReviewLabel::Confirmed as i32,
            reviewer: "analyst".into(),
            note: String::new(),
        })
        .await
        .expect_err("reviews need PostgreSQL");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    pg.start_server();
    let started = Instant::now();
    while a.get_match(pb::GetMatchRequest { match_id: offline }).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the outbox was never shipped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A key created on A is required and accepted on B; revoked on B, refused on A.
    let created = a
        .create_key(pb::CreateKeyRequest {
            role: "admin".into(),
            marketplace: String::new(),
            name: "ops".into(),
        })
        .await
        .expect("create key")
        .into_inner();
    let key = created.secret;
    let key_id = created.key.expect("key").key_id;
    let started = Instant::now();
    loop {
        match b.get_takedown(pb::GetTakedownRequest { takedown_id: ids[0] }).await {
            Err(e) if e.code() == tonic::Code::Unauthenticated => break,
            _ => {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "B never required the new key"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let conn = relist_proto::transport::Connection {
        api_key: Some(key.clone()),
        ..Default::default()
    };
    let mut b_keyed = common::connect_with(&rb.url(), &conn).await;
    b_keyed
        .get_takedown(pb::GetTakedownRequest { takedown_id: ids[0] })
        .await
        .expect("the key works on B");
    b_keyed
        .revoke_key(pb::RevokeKeyRequest { key_id })
        .await
        .expect("revoke on B");
    let mut a_keyed = common::connect_with(&ra.url(), &conn).await;
    let started = Instant::now();
    while a_keyed
        .get_takedown(pb::GetTakedownRequest { takedown_id: ids[0] })
        .await
        .is_ok()
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "A still accepts a key revoked on B"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The README's local demo runs as written: three replicas, a takedown on A, REUPLOAD on B and C.
#[test]
fn the_three_replica_demo_script_runs() {
    if Postgres::start().is_none() {
        return;
    }
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    };
    // Three consecutive free ports for the replicas: retry a few bases (bounded).
    let base = (0..20)
        .map(|_| free() - 1)
        .find(|b| (1..=3).all(|i| std::net::TcpListener::bind(("127.0.0.1", b + i)).is_ok()))
        .expect("three free consecutive ports");
    let out = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/replicas-demo.sh"))
        .env("RELIST_BIN", env!("CARGO_BIN_EXE_relist"))
        .env("RELIST_DEMO_PG_PORT", free().to_string())
        .env("RELIST_DEMO_PORT_BASE", base.to_string())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("\nREUPLOAD\n").count(), 2, "{stdout}");
}
