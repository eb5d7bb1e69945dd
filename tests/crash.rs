//! Crash safety against the real `relist serve` binary, run from `.ci/run` in release:
//!
//! - `kill_9_cycles`: several clients register (and now and then update or remove) takedowns
//!   while the daemon is killed with SIGKILL at random moments, then restarted on the same
//!   data dir. Every acknowledged takedown must be stored, live and matchable; every entry
//!   the index is built from must have its stored record; the store must open.
//! - `disk_full`: the store on a small tmpfs (needs root); registering until the disk fills
//!   must fail with RESOURCE_EXHAUSTED saying so, checks and reads must go on, and nothing
//!   acknowledged may be lost after a restart.
//!
//! `RELIST_CRASH_CYCLES` (default 25) and `RELIST_CRASH_CLIENTS` (default 4) size the run.
mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Client, Daemon};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use relist_core::store::Store;
use relist_proto::api::pb;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn start(data: &Path) -> Daemon {
    start_with(data, &[])
}

fn start_with(data: &Path, extra: &[&str]) -> Daemon {
    let mut args = vec!["--no-thumbnails"];
    args.extend_from_slice(extra);
    Daemon::serve(data, &args)
}

/// A hash-only listing: one random PDQ (random 256-bit hashes are ~128 bits apart, so each
/// matches only itself) and a title.
fn hashed(listing_id: &str, pdq: &str, description: String) -> pb::Listing {
    pb::Listing {
        listing_id: listing_id.into(),
        marketplace: "crashmart".into(),
        seller_id: "s".into(),
        // No title: near-identical generated titles would all match each other by text.
        title: String::new(),
        description,
        images: vec![pb::Image {
            pdq: pdq.into(),
            ..Default::default()
        }],
    }
}

fn random_pdq(rng: &mut impl Rng) -> String {
    hex::encode(rng.gen::<[u8; 32]>())
}

/// What the clients were told: takedown id -> (listing id, PDQ, live). A removal whose answer
/// never came leaves the takedown uncertain (it may or may not be removed).
#[derive(Clone, Default)]
struct Acked {
    takedowns: HashMap<u64, (String, String, bool)>,
    uncertain: HashSet<u64>,
    registrations: usize,
    removals: usize,
}

/// One client: registers new listings, re-registers (updates) its own with a fresh hash, and
/// removes some, until the daemon dies under it.
async fn writer(mut c: Client, acked: Arc<Mutex<Acked>>, name: String, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut mine: Vec<u64> = Vec::new();
    for n in 0..100_000u32 {
        let roll = rng.gen_range(0..100);
        if roll < 5 && !mine.is_empty() {
            let id = mine.swap_remove(rng.gen_range(0..mine.len()));
            acked.lock().uncertain.insert(id);
            if c.remove_takedown(pb::RemoveTakedownRequest { takedown_id: id })
                .await
                .is_err()
            {
                return;
            }
            let mut a = acked.lock();
            a.uncertain.remove(&id);
            a.removals += 1;
            if let Some(t) = a.takedowns.get_mut(&id) {
                t.2 = false;
            }
            continue;
        }
        // An update of one of its own live takedowns replaces its hash: the old must stop
        // matching and the new must match, across crashes too.
        let update = (roll < 15).then(|| mine.last().copied()).flatten();
        let listing_id = match update {
            Some(id) => acked.lock().takedowns[&id].0.clone(),
            None => format!("{name}-{n}"),
        };
        if let Some(id) = update {
            acked.lock().uncertain.insert(id);
        }
        let pdq = random_pdq(&mut rng);
        let description = "x".repeat(rng.gen_range(0..2_000));
        let req = pb::RegisterTakedownRequest {
            listing: Some(hashed(&listing_id, &pdq, description)),
            reason: "crash test".into(),
            taken_down_at: None,
        };
        let Ok(resp) = c.register_takedown(req).await else {
            return;
        };
        let id = resp.into_inner().takedown_id;
        let mut a = acked.lock();
        a.uncertain.remove(&id);
        a.registrations += 1;
        a.takedowns.insert(id, (listing_id, pdq, true));
        if update.is_none() {
            mine.push(id);
        }
    }
}

/// Offline, on the stopped daemon's data dir: the store opens; every live fingerprint entry
/// (what the index is built from) has its live stored record and listing key; every
/// acknowledged takedown is stored, and live ones are in the index's source.
fn verify_store(data: &Path, acked: &Acked) -> usize {
    let store = Store::open(data).expect("the store opens after kill -9");
    let mut live = HashSet::new();
    for item in store.live_fingerprints() {
        let (id, _) = item.expect("fingerprint entry decodes");
        let td = store
            .takedown(id)
            .expect("takedown record readable")
            .unwrap_or_else(|| panic!("index entry {id} has no stored takedown"));
        assert!(td.removed_at_ms.is_none(), "index entry {id} is a removed takedown");
        assert_eq!(
            store
                .takedown_id_by_listing(&td.listing.marketplace, &td.listing.listing_id)
                .expect("listing key readable"),
            Some(id),
            "listing key of takedown {id}"
        );
        live.insert(id);
    }
    for (id, (listing_id, _, is_live)) in &acked.takedowns {
        let td = store
            .takedown(*id)
            .expect("takedown record readable")
            .unwrap_or_else(|| panic!("acknowledged takedown {id} lost"));
        assert_eq!(&td.listing.listing_id, listing_id);
        if acked.uncertain.contains(id) {
            continue;
        }
        assert_eq!(
            live.contains(id),
            *is_live,
            "takedown {id} live={is_live} was acknowledged"
        );
    }
    live.len()
}

/// Through the restarted daemon: every acknowledged takedown in `ids` is there, and its
/// latest acknowledged hash is a REUPLOAD of it exactly when it is live.
async fn verify_daemon(c: &mut Client, acked: &Acked, ids: &[u64]) -> usize {
    let mut verified = 0;
    for id in ids {
        let (listing_id, pdq, live) = &acked.takedowns[id];
        let td = c
            .get_takedown(pb::GetTakedownRequest { takedown_id: *id })
            .await
            .unwrap_or_else(|e| panic!("GetTakedown {id}: {e}"))
            .into_inner()
            .takedown
            .expect("takedown");
        assert_eq!(&td.listing.expect("listing").listing_id, listing_id);
        if acked.uncertain.contains(id) {
            verified += 1;
            continue;
        }
        let check = c
            .check_listing(pb::CheckListingRequest {
                listing: Some(hashed(&format!("probe-{id}"), pdq, String::new())),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("CheckListing of takedown {id}: {e}"))
            .into_inner();
        let hit = check
            .matches
            .iter()
            .any(|m| m.takedown_id == *id && m.verdict == pb::Verdict::Reupload as i32);
        assert_eq!(hit, *live, "takedown {id} (live={live}) as a REUPLOAD of its own hash");
        verified += 1;
    }
    verified
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "slow: run from .ci/run in release"]
async fn kill_9_cycles() {
    let cycles = env_usize("RELIST_CRASH_CYCLES", 25);
    let clients = env_usize("RELIST_CRASH_CLIENTS", 4);
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let acked = Arc::new(Mutex::new(Acked::default()));
    let mut rng = rand::rngs::StdRng::seed_from_u64(env_usize("RELIST_CRASH_SEED", 7) as u64);
    let started = Instant::now();
    let mut verified_total = 0;
    let mut previous: HashSet<u64> = HashSet::new();
    for cycle in 0..cycles {
        let t0 = Instant::now();
        let mut daemon = start(&data);
        let t_start = t0.elapsed();
        // The previous cycle's acknowledgements, through the restarted daemon.
        let fresh: Vec<u64> = {
            let a = acked.lock();
            a.takedowns
                .keys()
                .filter(|id| !previous.contains(id))
                .copied()
                .collect()
        };
        {
            let a = acked.lock().clone();
            let mut c = daemon.client().await;
            verified_total += verify_daemon(&mut c, &a, &fresh).await;
        }
        previous.extend(fresh);
        let t_verify = t0.elapsed();
        let mut tasks = Vec::new();
        for k in 0..clients {
            let c = daemon.client().await;
            tasks.push(tokio::spawn(writer(
                c,
                acked.clone(),
                format!("c{cycle}-{k}"),
                rng.gen(),
            )));
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..1_200))).await;
        daemon.child.kill().expect("kill -9");
        let _ = daemon.child.wait();
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("a client notices the dead daemon")
                .expect("client task");
        }
        drop(daemon);
        let t_killed = t0.elapsed();
        let a = acked.lock();
        let live = verify_store(&data, &a);
        println!(
            "cycle {:>2}: {} takedowns acknowledged so far, {} live in the store (start {:.1}s, verified {:.1}s, \
             killed {:.1}s, store checked {:.1}s)",
            cycle + 1,
            a.takedowns.len(),
            live,
            t_start.as_secs_f64(),
            t_verify.as_secs_f64(),
            t_killed.as_secs_f64(),
            t0.elapsed().as_secs_f64()
        );
    }
    // Last restart: everything acknowledged, over gRPC.
    let daemon = start(&data);
    let mut c = daemon.client().await;
    let a = acked.lock().clone();
    let all: Vec<u64> = a.takedowns.keys().copied().collect();
    let verified = verify_daemon(&mut c, &a, &all).await;
    verified_total += verified;
    assert_eq!(verified, a.takedowns.len());
    assert!(a.takedowns.len() >= cycles, "too few registrations to mean anything");
    println!(
        "kill -9: {cycles} cycles, {clients} clients, {} registrations and {} removals acknowledged, \
         {} takedowns, all {verified} verified after the last restart ({verified_total} checks in all, \
         {} uncertain removals), {:.1}s",
        a.registrations,
        a.removals,
        a.takedowns.len(),
        a.uncertain.len(),
        started.elapsed().as_secs_f64()
    );
}

/// A tmpfs of `size` mounted on `dir`, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("mount -o remount")
            .success();
        assert!(ok, "remount the tmpfs with size={size}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Registers 15 KB takedowns until the daemon refuses one; returns the refusal.
async fn fill(c: &mut Client, rng: &mut impl Rng, prefix: &str, acked: &mut Vec<(u64, String)>) -> tonic::Status {
    for n in 0..20_000 {
        let pdq = random_pdq(rng);
        let description: String = (0..15_000).map(|_| rng.gen_range('a'..='z')).collect();
        let req = pb::RegisterTakedownRequest {
            listing: Some(hashed(&format!("{prefix}-{n}"), &pdq, description)),
            reason: "disk full test".into(),
            taken_down_at: None,
        };
        match c.register_takedown(req).await {
            Ok(r) => acked.push((r.into_inner().takedown_id, pdq)),
            Err(s) => return s,
        }
    }
    panic!("the disk never filled");
}

fn assert_disk_full(s: &tonic::Status) {
    assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
    assert!(s.message().contains("disk full"), "{s:?}");
}

/// Every acknowledged takedown can be fetched and its hash is a REUPLOAD of it.
async fn all_readable(c: &mut Client, acked: &[(u64, String)], probe: &str) {
    for (id, pdq) in acked {
        let td = c
            .get_takedown(pb::GetTakedownRequest { takedown_id: *id })
            .await
            .unwrap_or_else(|e| panic!("GetTakedown {id} ({probe}): {e}"));
        assert!(td.into_inner().takedown.is_some());
        let check = c
            .check_listing(pb::CheckListingRequest {
                listing: Some(hashed(&format!("{probe}-{id}"), pdq, String::new())),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("CheckListing of takedown {id} ({probe}): {e}"))
            .into_inner();
        assert_eq!(check.verdict, pb::Verdict::Reupload as i32, "takedown {id} ({probe})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (mounts a tmpfs): run from .ci/run"]
async fn disk_full() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let fs = match Tmpfs::mount(tmp.path(), "16m") {
        Ok(fs) => fs,
        Err(e) => {
            let msg = format!("DISK-FULL TEST NOT RUN: cannot mount a small tmpfs ({e}); it needs root");
            if std::env::var_os("CI").is_some() {
                panic!("{msg}");
            }
            eprintln!("\n!!!!!!!! {msg} !!!!!!!!\n");
            return;
        }
    };
    let data = tmp.path().join("data");
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut acked: Vec<(u64, String)> = Vec::new();

    // 1. The reserve (6 MiB here): writes are refused before the disk fills; reads go on.
    let daemon = start_with(&data, &["--min-free-disk-bytes", "6291456"]);
    let mut c = daemon.client().await;
    let s = fill(&mut c, &mut rng, "reserve", &mut acked).await;
    println!(
        "reserve reached after {} takedowns: {:?}: {}",
        acked.len(),
        s.code(),
        s.message()
    );
    assert_disk_full(&s);
    assert!(!acked.is_empty());
    all_readable(&mut c, &acked, "reserve").await;
    // Something else fills the disk to the last byte: still refused the same way, reads go on.
    let junk = tmp.path().join("junk");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&junk).expect("junk file");
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.write_all(&[0u8; 512]);
    }
    let t = Instant::now();
    let again = fill(&mut c, &mut rng, "full", &mut acked).await;
    assert_disk_full(&again);
    assert!(t.elapsed() < Duration::from_secs(10), "a refusal is prompt");
    all_readable(&mut c, &acked, "full").await;
    println!(
        "disk at 0 bytes free: writes refused ({}), {} takedowns still read and matched",
        again.message(),
        acked.len()
    );
    drop(c);
    drop(daemon); // kill -9
    std::fs::remove_file(&junk).expect("free the space");

    // 2. No reserve: sled itself hits ENOSPC; the status still says so, and a restart
    // with space freed has everything acknowledged.
    let before = acked.len();
    let daemon = start_with(&data, &["--min-free-disk-bytes", "0"]);
    let mut c = daemon.client().await;
    let s = fill(&mut c, &mut rng, "enospc", &mut acked).await;
    println!(
        "ENOSPC after {} more takedowns: {:?}: {}",
        acked.len() - before,
        s.code(),
        s.message()
    );
    assert_disk_full(&s);
    drop(c);
    drop(daemon); // kill -9
    fs.resize("128m");

    let daemon = start(&data);
    let mut c = daemon.client().await;
    all_readable(&mut c, &acked, "after").await;
    c.register_takedown(pb::RegisterTakedownRequest {
        listing: Some(hashed("after-space", &random_pdq(&mut rng), String::new())),
        reason: String::new(),
        taken_down_at: None,
    })
    .await
    .expect("writes work once space is freed");
    println!(
        "disk full: all {} takedowns acknowledged before the disk filled are present and matchable after restart",
        acked.len()
    );
}
