//! Fingerprinting speed per core, where its time goes, and what JPEG DCT-domain downscaling
//! would save and cost.
//!
//! For 500x375 and 2000x1500 JPEGs (made from the dev photos when present, else generated):
//! images/s on one core for the whole check-side path (`Fingerprinter::image_bytes`: decode,
//! PDQ with its 8 rotations/flips, pHash, region hashes and local features) and the
//! registration side, and
//! for its parts on their own: decode (large JPEGs decode at 1/2-1/8 scale, see below), and
//! PDQ, PDQ dihedral (exact, as stored, and sampled, as checked) and pHash of the decoded
//! pixels. Then jpeg-decoder's
//! DCT-domain scaling (decoding straight to 1/2, 1/4 or 1/8 size): its decode time and the PDQ
//! and pHash drift against the full decode, as a distribution.
//!
//! Then matching: `RELIST_BENCH_BANK` (default 500) photos at 500x375 registered in the live
//! index, and the time of a lookup (`LiveIndex::find`) per checked photo; and the skew of the
//! local-feature index's buckets (records a lookup would verify per checked feature, against
//! a uniform spread, with and without the bucket cap).
//!
//! Run: `cargo bench --bench fingerprint` (`RELIST_BENCH_PHOTOS`, default 60).
use std::path::{Path, PathBuf};
use std::time::Instant;

use image::DynamicImage;
use relist_core::fingerprint::image::{decode, decode_jpeg_scaled, DecodeLimits};
use relist_core::fingerprint::pdq::{pdq_dihedral, pdq_hash, Downsample, Luma};
use relist_core::fingerprint::phash::phash;
use relist_core::fingerprint::{listing_fingerprints, Fingerprinter, Side};
use relist_core::matcher::LiveIndex;
use relist_core::policy::Thresholds;

fn photos(n: usize) -> Vec<DynamicImage> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/photos-dev");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    let from_disk: Vec<DynamicImage> = files.iter().take(n).filter_map(|p| image::open(p).ok()).collect();
    if !from_disk.is_empty() {
        return from_disk;
    }
    println!("(dev photos not found: generated images)");
    (0..n as u32)
        .map(|seed| {
            DynamicImage::ImageRgb8(image::RgbImage::from_fn(640, 480, |x, y| {
                let v = ((x * 7 + y * 13 + seed * 31) ^ (x * y / (seed + 3))) as u8;
                image::Rgb([v, v.wrapping_mul(3), v.wrapping_add(seed as u8)])
            }))
        })
        .collect()
}

fn jpeg(img: &DynamicImage, w: u32, h: u32) -> Vec<u8> {
    let img = img.resize_exact(w, h, image::imageops::FilterType::Lanczos3);
    let mut out = Vec::new();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85);
    img.to_rgb8().write_with_encoder(enc).expect("encode");
    out
}

/// Mean microseconds of `f` over `files`, after one warm-up pass.
fn time_us<T>(files: &[Vec<u8>], mut f: impl FnMut(&[u8]) -> T) -> f64 {
    for b in files.iter().take(3) {
        std::hint::black_box(f(b));
    }
    let t = Instant::now();
    for b in files {
        std::hint::black_box(f(b));
    }
    t.elapsed().as_secs_f64() * 1e6 / files.len() as f64
}

fn dist_summary(mut d: Vec<u32>) -> String {
    d.sort_unstable();
    let at = |p: f64| d[((d.len() - 1) as f64 * p).round() as usize];
    format!("median {}, p95 {}, max {}", at(0.5), at(0.95), at(1.0))
}

fn main() {
    let n = std::env::var("RELIST_BENCH_PHOTOS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let base = photos(n);
    let limits = DecodeLimits::default();
    let fp = Fingerprinter::new(limits);
    println!(
        "fingerprinting on one core, {} photos per size; mean per image",
        base.len()
    );
    for (w, h) in [(500u32, 375u32), (2000, 1500)] {
        let files: Vec<Vec<u8>> = base.iter().map(|p| jpeg(p, w, h)).collect();
        // The full-size pixels, for the drift of scaled decodes.
        let decoded: Vec<DynamicImage> = files
            .iter()
            .map(|b| image::load_from_memory(b).expect("decode"))
            .collect();
        let whole = time_us(&files, |b| fp.image_bytes(b, Side::Checked).is_ok());
        let stored = time_us(&files, |b| fp.image_bytes(b, Side::Stored).is_ok());
        let dec = time_us(&files, |b| decode(b, limits).is_ok());
        // The parts are timed on the pixels a check hashes: large JPEGs decode scaled down.
        let checked: Vec<DynamicImage> = files.iter().map(|b| decode(b, limits).expect("decode")).collect();
        let mut k = 0;
        let mut next = || {
            k += 1;
            &checked[(k - 1) % checked.len()]
        };
        let pdq1 = time_us(&files, |_| pdq_hash(next()).quality);
        let pdq8 = time_us(&files, |_| pdq_dihedral(next()).1);
        // What a check pays for its 8 variants: the sampled downsample, from the luma plane
        // it also reads its regions from.
        let pdq8_checked = time_us(&files, |_| {
            Luma::of_rgb(&next().to_rgb8()).dihedral(Downsample::Sampled).1
        });
        let ph = time_us(&files, |_| phash(next()));
        println!(
            "{w}x{h}: checks {:.0} images/s ({whole:.0} us each: decode {dec:.0}, PDQ with its 8 variants {pdq8_checked:.0} sampled (exact: PDQ {pdq1:.0}, with its 8 variants {pdq8:.0}), pHash {ph:.0}, regions and local features {:.0}); registrations {:.0} images/s",
            1e6 / whole,
            (whole - dec - pdq8_checked - ph).max(0.0),
            1e6 / stored
        );
        for factor in [2u16, 4, 8] {
            let scaled: Vec<DynamicImage> = files
                .iter()
                .map(|b| decode_jpeg_scaled(b, factor).expect("scaled decode"))
                .collect();
            if scaled[0].width() < 64 {
                continue;
            }
            let t = time_us(&files, |b| decode_jpeg_scaled(b, factor).is_some());
            let (mut dp, mut dh) = (Vec::new(), Vec::new());
            for (full, small) in decoded.iter().zip(&scaled) {
                dp.push(pdq_hash(full).hash.distance(&pdq_hash(small).hash));
                dh.push((phash(full) ^ phash(small)).count_ones());
            }
            println!(
                "  DCT-scaled 1/{factor} ({}x{}): decode {t:.0} us ({:.1}x faster); PDQ drift {}; pHash drift {}",
                scaled[0].width(),
                scaled[0].height(),
                dec / t,
                dist_summary(dp),
                dist_summary(dh)
            );
        }
    }
    matching(&fp, &base);
}

/// Lookup cost against a bank of registered photos, and the local-feature buckets' skew.
fn matching(fp: &Fingerprinter, checked_photos: &[DynamicImage]) {
    let n = std::env::var("RELIST_BENCH_BANK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let bank = photos(n);
    let mut ix = LiveIndex::default();
    // Records per bucket of each of the 16 tables of 16-bit descriptor substrings.
    let mut buckets = vec![0u32; 16 << 16];
    let sub = |bits: &[u64; 4], t: usize| t << 16 | usize::from((bits[t / 4] >> (16 * (t % 4))) as u16);
    let mut stored = 0u64;
    for (k, img) in bank.iter().enumerate() {
        let img = img.resize_exact(500, 375, image::imageops::FilterType::Triangle);
        let c = fp.image(&img, Side::Stored);
        for f in &c.features {
            stored += 1;
            (0..16).for_each(|t| buckets[sub(&f.bits, t)] += 1);
        }
        ix.add(k as u64 + 1, &listing_fingerprints(&[c], ""), 50);
    }
    let checked: Vec<_> = checked_photos
        .iter()
        .map(|p| jpeg(p, 500, 375))
        .filter_map(|b| fp.image_bytes(&b, Side::Checked).ok())
        .collect();
    let cap = ix.local_bucket_cap();
    let (mut all, mut capped, mut queries) = (0u64, 0u64, 0u64);
    for f in checked.iter().flat_map(|c| &c.features) {
        queries += 1;
        for t in 0..16 {
            let b = u64::from(buckets[sub(&f.bits, t)]);
            all += b;
            capped += if b as usize <= cap { b } else { 0 };
        }
    }
    let t = Thresholds::default();
    let rounds = 3;
    let start = Instant::now();
    for _ in 0..rounds {
        for c in &checked {
            std::hint::black_box(ix.find(std::slice::from_ref(c), None, &t));
        }
    }
    let per = start.elapsed().as_secs_f64() * 1e6 / (rounds * checked.len()) as f64;
    let q = queries.max(1) as f64;
    println!(
        "matching against {} registered photos ({stored} local features): lookup {per:.0} us per checked photo; local-feature records verified per checked feature: {:.0} without the bucket cap, {:.0} with it (cap {cap} records), {:.0} if spread uniformly",
        bank.len(),
        all as f64 / q,
        capped as f64 / q,
        16.0 * stored as f64 / 65536.0
    );
}
