//! The index snapshot against the real `relist serve` binary: a graceful stop writes it, the
//! next start loads from it, and whenever it cannot be known to hold exactly what the store
//! does (kill -9 after more writes, a flipped byte, a missing file, the store opened by another
//! command meanwhile) the start falls back to the full load, with the same index either way.
use crate::common;

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::{Client, Daemon};
use rand::{Rng, SeedableRng};
use relist_core::snapshot::FILE_NAME;
use relist_proto::api::pb;

/// `relist serve` over `data`, as this test runs it.
fn serve(data: &Path) -> Daemon {
    Daemon::serve(data, &["--no-thumbnails"])
}

/// The index sizes the start logged: (how it loaded, pdq entries, title entries).
fn loaded(d: &Daemon) -> (&'static str, usize, usize) {
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains("loaded takedown bank"))
        .unwrap_or_else(|| panic!("no load line:\n{log}"));
    let field = |name: &str| -> usize {
        line.split(&format!(" {name}="))
            .nth(1)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    let how = if line.contains("from the index snapshot") {
        "snapshot"
    } else if line.contains("from the store") {
        "store"
    } else {
        panic!("unknown load line {line}")
    };
    (how, field("pdq"), field("titles"))
}

/// What was registered: takedown id -> (PDQ hex, title, live).
type Bank = BTreeMap<u64, (String, String, bool)>;

fn listing(listing_id: &str, pdq: &str, title: &str) -> pb::Listing {
    pb::Listing {
        listing_id: listing_id.into(),
        marketplace: "snapmart".into(),
        seller_id: "s".into(),
        title: title.into(),
        description: String::new(),
        images: vec![pb::Image {
            pdq: pdq.into(),
            ..Default::default()
        }],
    }
}

/// Registers `n` hash-only takedowns (random PDQs are ~128 bits apart, so each matches only
/// itself), every other one with a random title, then removes `remove` live ones.
async fn write(c: &mut Client, rng: &mut impl Rng, bank: &mut Bank, tag: &str, n: usize, remove: usize) {
    for i in 0..n {
        let pdq = hex::encode(rng.gen::<[u8; 32]>());
        let title = if i % 2 == 0 {
            (0..24).map(|_| rng.gen_range(b'a'..=b'z') as char).collect()
        } else {
            String::new()
        };
        let r = c
            .register_takedown(pb::RegisterTakedownRequest {
                listing: Some(listing(&format!("{tag}-{i}"), &pdq, &title)),
                reason: "snapshot test".into(),
                taken_down_at: None,
            })
            .await
            .expect("register")
            .into_inner();
        bank.insert(r.takedown_id, (pdq, title, true));
    }
    for _ in 0..remove {
        let live: Vec<u64> = bank.iter().filter(|(_, t)| t.2).map(|(id, _)| *id).collect();
        let id = live[rng.gen_range(0..live.len())];
        c.remove_takedown(pb::RemoveTakedownRequest { takedown_id: id })
            .await
            .expect("remove");
        bank.get_mut(&id).expect("registered").2 = false;
    }
}

/// Right after a start: the index holds exactly one PDQ per live takedown and one title per
/// live titled one (a removed takedown's entries would count), and [`answers`] agree.
async fn verify(d: &Daemon, bank: &Bank) {
    let (_, pdq, titles) = loaded(d);
    let live = bank.values().filter(|t| t.2);
    assert_eq!(pdq, live.clone().count(), "PDQ entries loaded\n{}", d.log());
    assert_eq!(titles, live.filter(|t| !t.1.is_empty()).count(), "titles loaded");
    answers(d, bank).await;
}

/// Every live takedown is a REUPLOAD of its own hash (and title); a removed one is in no
/// answer.
async fn answers(d: &Daemon, bank: &Bank) {
    let mut c = d.client().await;
    for (id, (pdq, title, live)) in bank {
        let r = c
            .check_listing(pb::CheckListingRequest {
                listing: Some(listing(&format!("probe-{id}"), pdq, title)),
                ..Default::default()
            })
            .await
            .expect("check")
            .into_inner();
        let hit = r.matches.iter().find(|m| m.takedown_id == *id);
        if *live {
            let m = hit.unwrap_or_else(|| panic!("live takedown {id} does not match"));
            assert_eq!(m.verdict, pb::Verdict::Reupload as i32, "takedown {id}");
        } else {
            assert!(hit.is_none(), "removed takedown {id} matches");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_is_used_only_when_it_is_the_stores() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let snapshot = data.join(FILE_NAME);
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let mut bank = Bank::new();

    // A fresh store: full load; writes; a graceful stop writes the snapshot.
    let d = serve(&data);
    assert_eq!(loaded(&d).0, "store");
    write(&mut d.client().await, &mut rng, &mut bank, "a", 40, 6).await;
    answers(&d, &bank).await;
    let log = d.terminate();
    assert!(log.contains("index snapshot written"), "{log}");
    assert!(snapshot.is_file());

    // Restart: from the snapshot, same index; the file is gone once used.
    let d = serve(&data);
    assert_eq!(loaded(&d).0, "snapshot", "{}", d.log());
    assert!(
        !d.log().lines().any(|l| l.contains("WARN") && l.contains("snapshot")),
        "{}",
        d.log()
    );
    assert!(!snapshot.exists(), "a used snapshot is deleted");
    verify(&d, &bank).await;
    // More writes (removing some of the snapshot's takedowns too), then kill -9: the store
    // has changed since the snapshot, and no new one was written.
    write(&mut d.client().await, &mut rng, &mut bank, "b", 20, 8).await;
    answers(&d, &bank).await;
    d.kill9();
    let d = serve(&data);
    assert_eq!(loaded(&d).0, "store", "{}", d.log());
    verify(&d, &bank).await;
    write(&mut d.client().await, &mut rng, &mut bank, "c", 10, 2).await;
    let log = d.terminate();
    assert!(log.contains("index snapshot written"), "{log}");

    // A flipped byte: warning, full load, same answers.
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x04;
    std::fs::write(&snapshot, &bytes).unwrap();
    let d = serve(&data);
    assert_eq!(loaded(&d).0, "store", "{}", d.log());
    let log = d.log();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("index snapshot not used")),
        "{log}"
    );
    assert!(!snapshot.exists(), "a stale snapshot is deleted");
    verify(&d, &bank).await;
    write(&mut d.client().await, &mut rng, &mut bank, "d", 10, 2).await;
    d.terminate();

    // The key in the store but no file (a copy of the store without it): full load.
    assert!(snapshot.is_file());
    std::fs::remove_file(&snapshot).unwrap();
    let d = serve(&data);
    assert_eq!(loaded(&d).0, "store", "{}", d.log());
    assert!(d.log().contains("index snapshot not used"), "{}", d.log());
    verify(&d, &bank).await;
    d.terminate();

    // Another command opening the stopped daemon's store takes the key: full load after.
    let out = common::relist_cli(&["keys", "list", "--data-dir", data.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let d = serve(&data);
    assert_eq!(loaded(&d).0, "store", "{}", d.log());
    verify(&d, &bank).await;
    d.terminate();

    // Back to the snapshot when nothing happened in between.
    let d = serve(&data);
    assert_eq!(loaded(&d).0, "snapshot", "{}", d.log());
    verify(&d, &bank).await;
    d.kill9();
}

/// Once the snapshot is written the bank refuses writes (they would make the snapshot stale
/// behind the store's back), and the next open loads it with what was registered.
#[test]
fn writes_are_refused_once_the_snapshot_is_written() {
    use relist_core::bank::Bank;
    use relist_core::domain::{ImageInput, Listing, Source, Verdict};
    use relist_core::error::Error;
    use relist_core::fingerprint::pdq::PdqHash;
    use relist_core::policy::Thresholds;

    let dir = tempfile::tempdir().unwrap();
    let listing = |id: &str, byte: u8| Listing {
        listing_id: id.into(),
        marketplace: "snapmart".into(),
        seller_id: String::new(),
        title: String::new(),
        description: String::new(),
        images: vec![ImageInput::Hashes {
            pdq: Some(PdqHash([byte; 32].map(|b| b.wrapping_mul(37) ^ 0x5a))),
            pdq_quality: Some(100),
            phash: None,
        }],
    };
    let open = || Bank::open(dir.path(), Thresholds::default(), Default::default()).unwrap();
    let bank = open();
    let kept = bank.register(&listing("kept", 1), "test", None).unwrap().takedown_id;
    let removed = bank.register(&listing("removed", 2), "test", None).unwrap().takedown_id;
    bank.remove(removed).unwrap();
    let w = bank.write_snapshot().unwrap().expect("a snapshot is written");
    assert!(w.bytes > 0);
    assert!(matches!(
        bank.register(&listing("late", 3), "test", None),
        Err(Error::ResourceExhausted(_))
    ));
    assert!(matches!(bank.remove(kept), Err(Error::ResourceExhausted(_))));
    drop(bank);

    let bank = open();
    assert!(
        !dir.path().join(FILE_NAME).exists(),
        "the snapshot was loaded and deleted"
    );
    let sizes = bank.index_sizes();
    assert_eq!(sizes.pdq, 1, "{sizes:?}");
    let verdict_of = |byte| bank.check(&listing("probe", byte), Source::Upload).unwrap().verdict;
    assert_eq!(verdict_of(1), Verdict::Reupload);
    assert_eq!(verdict_of(2), Verdict::Clear);
    assert_eq!(verdict_of(3), Verdict::Clear);
}
