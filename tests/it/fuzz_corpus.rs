//! Fuzzing on stable: every file of `fuzz/corpus/<target>/` through the same bodies the
//! cargo-fuzz targets run (`relist_proto::fuzz_targets`), then a bounded random-mutation run over
//! those seeds: a few seconds a target by default, `RELIST_FUZZ_SECS` seconds each when set.
//! An input that panics is written to `target/fuzz-findings/<target>/` and fails the test.
//!
//! `cargo test --test it -- --ignored write_seed_corpora` regenerates the seeds.
use crate::common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use prost::Message;
use rand::{Rng, SeedableRng};
use relist_proto::api::pb;
use relist_proto::fuzz_targets;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 3] = [
    ("image_fingerprint", fuzz_targets::image_fingerprint),
    ("text_simhash", fuzz_targets::text_simhash),
    ("request", fuzz_targets::request),
];

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target)
}

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.expect("corpus entry").path();
            (p.display().to_string(), std::fs::read(&p).expect("corpus file"))
        })
        .collect();
    out.sort();
    out
}

/// Runs `input`; on a panic keeps it where a developer can replay it, and says where.
fn run(name: &str, target: Target, input: &[u8]) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(|| target(input))).map_err(|e| {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/fuzz-findings")
            .join(name);
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join(format!("crash-{:016x}", xxhash(input)));
        let _ = std::fs::write(&file, input);
        format!("{name}: panic {msg:?} on an input saved to {}", file.display())
    })
}

fn xxhash(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3)
    })
}

#[test]
fn every_corpus_file_runs_without_panic() {
    let mut failures = Vec::new();
    for (name, target) in TARGETS {
        let files = seeds(name);
        assert!(files.len() >= 5, "{name}: corpus too small");
        for (path, data) in &files {
            if let Err(e) = run(name, target, data) {
                failures.push(format!("{path}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Byte-level mutations in the manner of libFuzzer's: flips, interesting values, inserts,
/// erases, copies within the input and splices with another seed.
fn mutate(rng: &mut impl Rng, input: &mut Vec<u8>, other: &[u8], max_len: usize) {
    const INTERESTING: [u8; 10] = [0, 1, 0x7f, 0x80, 0xff, 0xfe, b'0', b'f', 0xc3, 0xe2];
    for _ in 0..rng.gen_range(1..=4) {
        let len = input.len();
        match rng.gen_range(0..9) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                input[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                input[i] = INTERESTING[rng.gen_range(0..INTERESTING.len())];
            }
            2 if len > 0 => {
                let i = rng.gen_range(0..len);
                input[i] = rng.gen();
            }
            3 => {
                let i = rng.gen_range(0..=len);
                let n = rng.gen_range(1..=16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                input.splice(i..i, bytes);
            }
            4 if len > 1 => {
                let i = rng.gen_range(0..len);
                let n = rng.gen_range(1..=(len - i).min(64));
                input.drain(i..i + n);
            }
            5 if len > 1 => {
                // Copy a chunk over another place (repeats structure: markers, chunks).
                let (a, b) = (rng.gen_range(0..len), rng.gen_range(0..len));
                let n = rng.gen_range(1..=(len - a.max(b)).min(64));
                let chunk = input[a..a + n].to_vec();
                input[b..b + n].copy_from_slice(&chunk);
            }
            6 if !other.is_empty() => {
                let cut = rng.gen_range(0..=len);
                let from = rng.gen_range(0..other.len());
                input.truncate(cut);
                input.extend_from_slice(&other[from..]);
            }
            7 if len > 0 => input.truncate(rng.gen_range(0..len)),
            _ if len >= 4 => {
                // A 16- or 32-bit field set to an edge value (sizes, lengths, dimensions).
                let i = rng.gen_range(0..len - 3);
                let v: [u8; 4] = match rng.gen_range(0..4) {
                    0 => [0xff; 4],
                    1 => [0; 4],
                    2 => [0x7f, 0xff, 0xff, 0xff],
                    _ => [0x00, 0x01, 0x00, 0x00],
                };
                input[i..i + 4].copy_from_slice(&v);
            }
            _ => input.push(rng.gen()),
        }
    }
    input.truncate(max_len);
}

/// Mutates the corpus for `budget`; returns the inputs tried.
fn mutation_run(name: &str, target: Target, budget: Duration, seed: u64) -> Result<u64, String> {
    let corpus: Vec<Vec<u8>> = seeds(name).into_iter().map(|(_, d)| d).collect();
    let max_len = corpus.iter().map(Vec::len).max().unwrap_or(0).max(4096) * 2;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut tried = 0u64;
    // Bounded by time and by a count, whichever comes first.
    while started.elapsed() < budget && tried < 2_000_000_000 {
        let mut input = corpus[rng.gen_range(0..corpus.len())].clone();
        let other = &corpus[rng.gen_range(0..corpus.len())];
        // Stack a few rounds of mutations, checking each step.
        for _ in 0..rng.gen_range(1..=8) {
            mutate(&mut rng, &mut input, other, max_len);
            run(name, target, &input)?;
            tried += 1;
        }
    }
    Ok(tried)
}

#[test]
fn mutation_run_over_the_seed_corpora() {
    let secs: f64 = std::env::var("RELIST_FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0);
    let only = std::env::var("RELIST_FUZZ_TARGET").ok();
    let seed = std::env::var("RELIST_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    // The default panic hook would print every caught panic; findings are reported below.
    // Other tests of this binary run meanwhile: their panics still go to the hook.
    let hook = std::sync::Arc::new(std::panic::take_hook());
    let (fuzzing, others) = (std::thread::current().id(), hook.clone());
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() != fuzzing {
            others(info)
        }
    }));
    let mut report = Vec::new();
    for (name, target) in TARGETS {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let started = Instant::now();
        let result = mutation_run(name, target, Duration::from_secs_f64(secs), seed);
        report.push((name, result, started.elapsed()));
    }
    std::panic::set_hook(Box::new(move |info| hook(info)));
    let mut failed = Vec::new();
    for (name, result, took) in report {
        match result {
            Ok(n) => println!(
                "fuzz {name}: {n} inputs in {:.1}s, no panic (seed {seed})",
                took.as_secs_f64()
            ),
            Err(e) => {
                println!("fuzz {name}: FOUND {e} (seed {seed})");
                failed.push(e);
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ---- seed corpora ----

fn encode(img: &image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode");
    out.into_inner()
}

/// A PNG whose header claims `w` x `h` (a decompression bomb's header), CRC fixed up.
fn png_claiming(png: &[u8], w: u32, h: u32) -> Vec<u8> {
    let mut b = png.to_vec();
    // Signature (8), length (4), "IHDR" (4), then width and height.
    b[16..20].copy_from_slice(&w.to_be_bytes());
    b[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = common::crc32(&b[12..29]);
    b[29..33].copy_from_slice(&crc.to_be_bytes());
    b
}

/// A JPEG whose SOF0 frame claims `w` x `h`.
fn jpeg_claiming(jpeg: &[u8], w: u16, h: u16) -> Vec<u8> {
    let mut b = jpeg.to_vec();
    if let Some(i) = b.windows(2).position(|m| m == [0xff, 0xc0]) {
        b[i + 5..i + 7].copy_from_slice(&h.to_be_bytes());
        b[i + 7..i + 9].copy_from_slice(&w.to_be_bytes());
    }
    b
}

fn listing_request(kind: u8, msg: &impl Message) -> Vec<u8> {
    let mut b = vec![kind];
    msg.encode(&mut b).expect("encode");
    b
}

#[test]
#[ignore = "writes fuzz/corpus; run by hand when the seeds should change"]
fn write_seed_corpora() {
    use image::ImageFormat::{Gif, Jpeg, Png, WebP};
    let mut files: Vec<(&str, String, Vec<u8>)> = Vec::new();
    // Images: small valid ones of each format, odd shapes, truncations, bombs.
    for (i, (w, h)) in [(64, 48), (1, 1), (3, 200), (17, 9)].into_iter().enumerate() {
        let img = common::photo(i as u64 + 1, w, h);
        for (ext, f) in [("jpg", Jpeg), ("png", Png), ("webp", WebP), ("gif", Gif)] {
            files.push(("image_fingerprint", format!("{w}x{h}.{ext}"), encode(&img, f)));
        }
    }
    let jpeg = encode(&common::photo(9, 64, 48), Jpeg);
    let png = encode(&common::photo(9, 64, 48), Png);
    let gif = encode(&common::photo(9, 64, 48), Gif);
    for (ext, full) in [("jpg", &jpeg), ("png", &png), ("gif", &gif)] {
        for cut in [8usize, 40, full.len() / 2, full.len() - 2] {
            files.push((
                "image_fingerprint",
                format!("truncated-{cut}.{ext}"),
                full[..cut].to_vec(),
            ));
        }
    }
    files.push((
        "image_fingerprint",
        "bomb-65500x65500.jpg".into(),
        jpeg_claiming(&jpeg, 65500, 65500),
    ));
    files.push(("image_fingerprint", "bomb-0x0.jpg".into(), jpeg_claiming(&jpeg, 0, 0)));
    files.push((
        "image_fingerprint",
        "bomb-100000x100000.png".into(),
        png_claiming(&png, 100_000, 100_000),
    ));
    files.push((
        "image_fingerprint",
        "bomb-1x4000000.png".into(),
        png_claiming(&png, 1, 4_000_000),
    ));
    let mut gif_bomb = gif.clone();
    gif_bomb[6..10].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    files.push(("image_fingerprint", "bomb-65535x65535.gif".into(), gif_bomb));
    files.push(("image_fingerprint", "empty".into(), Vec::new()));
    files.push(("image_fingerprint", "not-an-image.txt".into(), b"hello".to_vec()));

    // Text: scripts, marks, widths, spacing and promo tricks, and invalid UTF-8.
    let texts: [(&str, &[u8]); 16] = [
        ("ascii", b"Original Rolex Submariner 40mm READY STOCK COD"),
        ("indonesian", b"b4ju b a j u muslim wanita yg murah!!! 500ml"),
        (
            "zalgo",
            "z\u{0351}\u{0307}a\u{0352}\u{0308}l\u{0353}g\u{0354}o\u{0355}".as_bytes(),
        ),
        (
            "fullwidth",
            "\u{ff32}\u{ff2f}\u{ff2c}\u{ff25}\u{ff38} \u{1d411}\u{1d428}\u{1d425}".as_bytes(),
        ),
        (
            "rtl",
            "\u{202e}\u{0633}\u{0627}\u{0639}\u{0629} \u{05e9}\u{05e2}\u{05d5}\u{05df}".as_bytes(),
        ),
        ("zero-width", "ro\u{200b}lex\u{200d}\u{feff} wa\u{2060}tch".as_bytes()),
        (
            "emoji",
            "\u{1f525}\u{1f525} sale \u{1f468}\u{200d}\u{1f469}\u{200d}\u{1f467} \u{1f1ee}\u{1f1e9}".as_bytes(),
        ),
        (
            "turkish",
            "\u{130}stanbul \u{131}i\u{307} stra\u{df}e \u{3a3}\u{3c3}\u{3c2}".as_bytes(),
        ),
        (
            "cjk",
            "\u{5546}\u{54c1} \u{30bb}\u{30fc}\u{30eb} \u{d55c}\u{ae00}".as_bytes(),
        ),
        ("nul-and-controls", b"a\0b\x01c\x7f\r\n\t d"),
        ("invalid-utf8", b"abc\xff\xfe\xc3\x28 \xe2\x82"),
        ("long-repeat", &[b'a'; 3000]),
        ("spaces", b"   \t\n  "),
        ("digits", b"0000 1111 4x6 b4ju imp0rt @pple $hoes"),
        ("empty", b""),
        ("mixed-marks", "e\u{301}\u{301}\u{301}\u{301} n\u{303}".as_bytes()),
    ];
    for (name, t) in texts {
        files.push(("text_simhash", name.to_string(), t.to_vec()));
    }

    // Requests: listings with edge values, and the other messages.
    let img = |data: &[u8], pdq: &str, phash: &str, q: Option<u32>| pb::Image {
        data: data.to_vec(),
        pdq: pdq.into(),
        phash: phash.into(),
        pdq_quality: q,
    };
    let l = |id: &str, m: &str, title: &str, images: Vec<pb::Image>| pb::Listing {
        listing_id: id.into(),
        marketplace: m.into(),
        seller_id: "seller".into(),
        title: title.into(),
        description: "d".into(),
        images,
    };
    let pdq = "ab".repeat(32);
    let listings = [
        (
            "valid-hashes",
            l("1", "Shop", "t", vec![img(b"", &pdq, "0123456789abcdef", Some(90))]),
        ),
        ("valid-image", l("2", "shop", "", vec![img(&jpeg, "", "", None)])),
        (
            "both-data-and-hash",
            l("3", "shop", "t", vec![img(b"x", &pdq, "", None)]),
        ),
        ("quality-101", l("4", "shop", "t", vec![img(b"", &pdq, "", Some(101))])),
        (
            "quality-no-pdq",
            l("5", "shop", "t", vec![img(b"", "", "0123456789abcdef", Some(5))]),
        ),
        (
            "bad-hex",
            l("6", "shop", "t", vec![img(b"", &"zz".repeat(32), "0123", None)]),
        ),
        ("nul-marketplace", l("7", "sh\0op", "t", vec![])),
        ("empty", l("", "", "", vec![])),
        (
            "too-many-images",
            l("8", "shop", "t", vec![img(b"", &pdq, "", None); 40]),
        ),
        ("long-title", l("9", "SHOP", &"\u{1f525}".repeat(1200), vec![])),
        ("unicode-marketplace", l("10", "\u{130}SHOP", "t", vec![])),
    ];
    for (name, listing) in listings {
        let check = pb::CheckListingRequest {
            listing: Some(listing.clone()),
            ..Default::default()
        };
        files.push(("request", format!("check-{name}"), listing_request(0, &check)));
        let reg = pb::RegisterTakedownRequest {
            listing: Some(listing),
            reason: "r".repeat(10),
            taken_down_at: Some(prost_types::Timestamp {
                seconds: i64::MAX / 999,
                nanos: 999_999_999,
            }),
        };
        files.push(("request", format!("register-{name}"), listing_request(1, &reg)));
    }
    let ts = |seconds, nanos| Some(prost_types::Timestamp { seconds, nanos });
    let query = pb::QueryMatchesRequest {
        from: ts(i64::MIN, 0),
        to: ts(i64::MAX, -1),
        page_size: u32::MAX,
        page_token: "\u{0}garbage".into(),
        verdict: 99,
        label: -1,
        ..Default::default()
    };
    files.push(("request", "query-edges".into(), listing_request(2, &query)));
    let stats = pb::MatchStatsRequest {
        from: ts(0, 0),
        to: ts(1_700_000_000, 0),
        top: u32::MAX,
    };
    files.push(("request", "stats-top-max".into(), listing_request(3, &stats)));
    let review = pb::ReviewMatchRequest {
        match_id: u64::MAX,
        label: 2,
        reviewer: " ".into(),
        note: "n".repeat(3000),
    };
    files.push(("request", "review-edges".into(), listing_request(4, &review)));
    let key = pb::CreateKeyRequest {
        role: "ADMIN ".into(),
        marketplace: "  ".into(),
        name: "k".into(),
    };
    files.push(("request", "create-key".into(), listing_request(5, &key)));
    let td = pb::Takedown {
        takedown_id: 1,
        taken_down_at: ts(i64::MAX, 0),
        removed_at: ts(i64::MIN, 0),
        ..Default::default()
    };
    files.push(("request", "reply-takedown-edges".into(), listing_request(6, &td)));
    let record = pb::MatchRecord {
        match_id: 1,
        at: ts(i64::MAX, 999_999_999),
        source: 7,
        label: 9,
        ..Default::default()
    };
    files.push(("request", "reply-match-edges".into(), listing_request(7, &record)));

    for (target, name, data) in files {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        std::fs::write(dir.join(name), data).expect("write seed");
    }
}
