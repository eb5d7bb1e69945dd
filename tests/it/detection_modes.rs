//! The detection switches: `--no-regions` / `--no-local-features` (and `[matching]` in the
//! config) turn the extra fingerprints off for new registrations and checks; the default
//! keeps both, and a daemon with them off still matches whole-image copies.
use crate::common::*;
use clap::Parser;
use relist::cli::{Cli, Command};
use relist_core::bank::Bank;
use relist_core::domain::{ImageInput, Listing, Source, Verdict};
use relist_core::fingerprint::{DecodeLimits, Detection};
use relist_core::policy::Thresholds;

fn resolve(toml: &str, extra: &[&str]) -> Detection {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relist.toml");
    std::fs::write(&path, toml).unwrap();
    let args = [&["relist", "serve", "--config", path.to_str().unwrap()], extra].concat();
    match Cli::try_parse_from(args).expect("parses").command {
        Command::Serve(s) => s.resolve().expect("resolves").detection,
        _ => unreachable!(),
    }
}

#[test]
fn switches_come_from_flags_and_the_config_file() {
    assert_eq!(resolve("", &[]), Detection::default());
    assert!(Detection::default().regions && Detection::default().local_features);
    let d = resolve("[matching]\nlocal_features = false\n", &[]);
    assert_eq!((d.regions, d.local_features), (true, false));
    let d = resolve("", &["--no-regions"]);
    assert_eq!((d.regions, d.local_features), (false, true));
}

fn listing(id: &str, jpeg_bytes: Vec<u8>) -> Listing {
    Listing {
        listing_id: id.into(),
        marketplace: "shopee".into(),
        images: vec![ImageInput::Encoded(jpeg_bytes)],
        ..Default::default()
    }
}

#[test]
fn off_stores_no_regions_or_features_and_still_matches_copies() {
    let img = photo(77, 480, 360);
    for detection in [
        Detection::default(),
        Detection {
            regions: false,
            local_features: false,
        },
    ] {
        let dir = tempfile::tempdir().unwrap();
        let bank = Bank::open(dir.path(), Thresholds::default(), DecodeLimits::default())
            .unwrap()
            .with_detection(detection);
        let reg = bank.register(&listing("td", jpeg(&img, 90)), "test", None).unwrap();
        let f = &reg.fingerprints;
        assert_eq!(!f.regions.is_empty(), detection.regions, "{detection:?}");
        assert_eq!(!f.features.is_empty(), detection.local_features, "{detection:?}");
        let copy = bank
            .check(&listing("c", jpeg(&img.fliph(), 70)), Source::Upload)
            .unwrap();
        assert_eq!(copy.verdict, Verdict::Reupload, "{detection:?}");
        let other = bank
            .check(&listing("o", jpeg(&photo(78, 480, 360), 80)), Source::Upload)
            .unwrap();
        assert_eq!(other.verdict, Verdict::Clear, "{detection:?}");
    }
}
