//! `relist eval`: measures detection quality on a folder of photos and/or a CSV of titles with
//! the daemon's own fingerprinting, index and policy, and guards against regressions.
//!
//! - [`transforms`]: the generated image evasions (and [`font`], the text they stamp).
//! - [`images`]: per-evasion recall, false positives over all pairs of distinct photos, costs.
//! - [`titles`]: text recall on real label groups and synthetic edits, cross-group FPR, and the
//!   combined verdict with the listing's 64-bit pHash.
//! - [`plot`]: the threshold curves and recalls as a hand-written SVG.
//! - [`baseline`]: recorded figures; a run fails when one drops below them.
pub mod baseline;
pub mod chains;
pub mod font;
pub mod images;
pub mod negatives;
pub mod plot;
pub mod titles;
pub mod transforms;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::Args;
use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use relist_core::fingerprint::image::{decode, DecodeLimits};
use relist_core::fingerprint::phash::phash;
use relist_core::policy::Thresholds;

/// Why an evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{0}")]
    Input(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub use relist_core::fingerprint::phash::IMAGEHASH_GOLDEN_DEFAULT;

/// `relist eval` flags.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Folder of distinct photos (JPEG/PNG/WebP/GIF); each is registered, evaded and checked.
    #[arg(long)]
    pub photos: Option<PathBuf>,
    /// CSV of listings with `title`, `label_group` and optionally `image_phash` columns.
    #[arg(long)]
    pub titles: Option<PathBuf>,
    /// TOML config whose [policy] thresholds to evaluate [default: the daemon's defaults].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the report as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Also write the threshold curves and recalls as an SVG plot.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Recorded figures (JSON): exit non-zero when a figure is worse. A missing data folder
    /// prints "skipped" and exits 0.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Write this run's figures as the new baseline.
    #[arg(long)]
    pub write_baseline: Option<PathBuf>,
    /// imagehash's values (filename,phash) to compare the pHash against, made by
    /// `scripts/imagehash_golden.py` from the photos (`.ci/run` does it for photos-dev).
    #[arg(long, default_value = IMAGEHASH_GOLDEN_DEFAULT)]
    pub phash_golden: PathBuf,
    /// Use only the first N photos (sorted by path).
    #[arg(long)]
    pub limit: Option<usize>,
    /// False positives only: register every photo and check each against all the others,
    /// without generating evasions. For large sets of hard negatives (distinct objects on
    /// plain backgrounds, e.g. Debian's openclipart-png), where evasions would take hours.
    #[arg(long)]
    pub negatives_only: bool,
    /// Folder of distinct pictures that look alike (catalog photos of different products
    /// on white): every match among them is false. Measured all pairs and half against
    /// half, per signal, before and after the colour check, projected to a bank of 200,000.
    #[arg(long)]
    pub negatives: Option<PathBuf>,
    /// Upscaling factors the negatives are measured at (a seller's enlarged thumbnail).
    #[arg(long, value_delimiter = ',', default_value = "1,4,8")]
    pub upscale: Vec<u32>,
    /// Worker threads [default: available cores].
    #[arg(long)]
    pub threads: Option<usize>,
}

/// One point of a threshold curve.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CurvePoint {
    pub threshold: u32,
    pub recall: f64,
    pub fpr: f64,
}

/// Recall and false-positive rate of one signal as its threshold moves.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Curve {
    pub signal: String,
    pub points: Vec<CurvePoint>,
}

/// Distances between relist's pHash and imagehash's golden values.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PhashAgreement {
    pub photos: usize,
    pub median: u32,
    pub p95: u32,
    pub max: u32,
    /// Photos at distance 0, 1, 2, ... (up to the largest seen).
    pub histogram: Vec<usize>,
}

/// The whole report.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub thresholds: Option<Thresholds>,
    pub images: Option<images::ImageReport>,
    pub phash_vs_imagehash: Option<PhashAgreement>,
    pub titles: Option<titles::TitleReport>,
    /// Hard negatives (see [`negatives`]).
    #[serde(default)]
    pub negatives: Option<negatives::NegativesReport>,
    /// Wall-clock seconds of the whole run.
    pub seconds: f64,
}

/// Runs `f` over `items` on `threads` workers; results keep the items' order. A progress
/// bar named `what` shows on a terminal (an evaluation runs for minutes).
pub fn par_map<T: Sync, R: Send>(what: &str, items: &[T], threads: usize, f: impl Fn(usize, &T) -> R + Sync) -> Vec<R> {
    let bar = progress_bar(what, items.len());
    let next = AtomicUsize::new(0);
    let mut out: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut local = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        local.push((i, f(i, item)));
                        bar.inc(1);
                    }
                    local
                })
            })
            .collect();
        for w in workers {
            let done = w.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            for (i, r) in done {
                out[i] = Some(r);
            }
        }
    });
    bar.finish_and_clear();
    out.into_iter().flatten().collect()
}

/// A bar on stderr when it is a terminal (hidden otherwise, so logs and CI stay clean).
fn progress_bar(what: &str, len: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{msg:>24} [{wide_bar}] {pos}/{len} ETA {eta}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

/// Decodes every image in `dir` (sorted by file name) with the daemon's decoder; files that
/// do not decode are skipped with a warning.
pub fn load_photos(dir: &Path, limit: Option<usize>, threads: usize) -> Result<Vec<(String, RgbImage)>, EvalError> {
    // Sub-folders too (image collections are often filed by category), in a stable order.
    let mut names: Vec<PathBuf> = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let entries = std::fs::read_dir(&d).map_err(|source| EvalError::Io {
            path: d.clone(),
            source,
        })?;
        for e in entries.filter_map(Result::ok) {
            match e.file_type() {
                Ok(t) if t.is_dir() => dirs.push(e.path()),
                Ok(_) if e.path().is_file() => names.push(e.path()),
                _ => {}
            }
        }
    }
    names.sort();
    // A file reached twice (symlinks) is one photo, not a pair of identical ones; so is a
    // copy of its pixels (below).
    let mut seen = std::collections::HashSet::new();
    names.retain(|p| seen.insert(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())));
    names.truncate(limit.unwrap_or(usize::MAX));
    let decoded = par_map("decode", &names, threads, |_, path| {
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        let img = decode(&bytes, DecodeLimits::default()).map_err(|e| e.to_string())?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Same size, layout and pixels: the same picture (collections file one picture under
        // several categories, or save it again), which would count as a false positive.
        let mut content = format!("{}x{}", img.width(), img.height()).into_bytes();
        content.extend_from_slice(img.to_rgba8().as_raw());
        let content = xxhash_rust::xxh3::xxh3_128(&content);
        Ok::<_, String>((name, img.to_rgb8(), content))
    });
    let mut photos = Vec::with_capacity(decoded.len());
    let mut contents = std::collections::HashSet::new();
    let mut copies = 0usize;
    for (path, d) in names.iter().zip(decoded) {
        match d {
            Ok((name, img, content)) if contents.insert(content) => photos.push((name, img)),
            Ok(_) => copies += 1,
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "skipping photo"),
        }
    }
    if copies > 0 {
        tracing::warn!(copies, "left out files whose pixels equal an earlier file's");
    }
    if photos.len() < 2 {
        return Err(EvalError::Input(format!("{}: needs at least 2 photos", dir.display())));
    }
    Ok(photos)
}

/// Compares relist's pHash of each photo with imagehash's golden value for the same file.
pub fn phash_agreement(photos: &[(String, RgbImage)], golden: &Path) -> Option<PhashAgreement> {
    let text = std::fs::read_to_string(golden).ok()?;
    let wanted: std::collections::HashMap<&str, u64> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(','))
        .filter_map(|(name, h)| Some((name, u64::from_str_radix(h.trim(), 16).ok()?)))
        .collect();
    let mut d: Vec<u32> = photos
        .iter()
        .filter_map(|(name, img)| {
            let g = wanted.get(name.as_str())?;
            Some((phash(&transforms::dynamic(img.clone())) ^ g).count_ones())
        })
        .collect();
    if d.is_empty() {
        return None;
    }
    d.sort_unstable();
    let max = *d.last().unwrap_or(&0);
    let mut histogram = vec![0; max as usize + 1];
    d.iter().for_each(|&x| histogram[x as usize] += 1);
    Some(PhashAgreement {
        photos: d.len(),
        median: d[d.len() / 2],
        p95: d[(d.len() * 95).div_ceil(100).saturating_sub(1)],
        max,
        histogram,
    })
}

/// Distinct synthetic "photos" (smooth colour fields with a few shapes), for tests that must
/// not depend on the real data.
pub fn synthetic_photos(n: usize, width: u32, height: u32, seed: u64) -> Vec<(String, RgbImage)> {
    (0..n)
        .map(|k| {
            let mut rng = transforms::SplitMix(seed.wrapping_add(k as u64 * 7919));
            let mut coef = [[0f32; 6]; 3];
            coef.iter_mut().flatten().for_each(|c| *c = rng.unit() * 2.0 - 1.0);
            let freq: Vec<f32> = (0..6).map(|_| 1.0 + rng.unit() * 5.0).collect();
            let mut img = RgbImage::from_fn(width, height, |x, y| {
                let (u, v) = (x as f32 / width as f32, y as f32 / height as f32);
                Rgb(std::array::from_fn(|ch| {
                    let c = &coef[ch];
                    let s = c[0] * (freq[0] * u * 3.1).sin()
                        + c[1] * (freq[1] * v * 3.1).cos()
                        + c[2] * (freq[2] * (u + v) * 3.1).sin()
                        + c[3] * (freq[3] * (u - v) * 3.1).cos()
                        + c[4] * (freq[4] * u * v * 6.2).sin()
                        + c[5] * (freq[5] * (u * u + v) * 3.1).cos();
                    (128.0 + 40.0 * s).clamp(0.0, 255.0) as u8
                }))
            });
            for _ in 0..6 {
                let (cx, cy) = (rng.unit() * width as f32, rng.unit() * height as f32);
                let r = (0.05 + rng.unit() * 0.15) * width as f32;
                let colour = [rng.below(256) as u8, rng.below(256) as u8, rng.below(256) as u8];
                for (x, y, p) in img.enumerate_pixels_mut() {
                    if (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2) <= r * r {
                        p.0 = colour;
                    }
                }
            }
            (format!("synthetic-{k:03}"), img)
        })
        .collect()
}

/// Evaluates what `args` names and returns the report.
pub fn evaluate(args: &EvalArgs, t: &Thresholds) -> Result<Report, EvalError> {
    let started = std::time::Instant::now();
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut report = Report {
        thresholds: Some(*t),
        ..Report::default()
    };
    if let Some(dir) = &args.photos {
        let photos = load_photos(dir, args.limit, threads)?;
        report.phash_vs_imagehash = phash_agreement(&photos, &args.phash_golden);
        let evasions: &[transforms::Transform] = if args.negatives_only { &[] } else { transforms::ALL };
        report.images = Some(images::evaluate_with(&photos, t, threads, evasions));
    }
    if let Some(csv) = &args.titles {
        report.titles = Some(titles::evaluate(&titles::read_csv(csv)?, t)?);
    }
    if let Some(dir) = &args.negatives {
        let photos = load_photos(dir, args.limit, threads)?;
        let set = dir
            .file_name()
            .map_or_else(|| "negatives".to_string(), |n| n.to_string_lossy().into_owned());
        report.negatives = Some(negatives::evaluate(&set, &photos, t, &args.upscale, threads));
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// The report as plain-text tables.
pub fn render_table(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    if let Some(t) = &r.thresholds {
        let _ = writeln!(
            s,
            "thresholds: pdq_reupload {} pdq_review {} pdq_min_quality {} phash_review {} text_support {} text_review {}",
            t.pdq_reupload, t.pdq_review, t.pdq_min_quality, t.phash_review, t.text_support, t.text_review
        );
    }
    if let Some(im) = &r.images {
        let _ = writeln!(s, "\nimages: {} photos, {} distinct pairs", im.photos, im.pairs);
        let _ = writeln!(
            s,
            "{:<22} {:>7} {:>10} {:>15} {:>7}",
            "transform", "queries", "REUPLOAD", "REUPLOAD+REVIEW", "wrong"
        );
        let evasions = im.transforms.iter().chain(std::iter::once(&im.overall));
        for x in evasions.filter(|_| !im.transforms.is_empty()) {
            let _ = writeln!(
                s,
                "{:<22} {:>7} {:>10} {:>15} {:>7}",
                x.name,
                x.queries,
                pct(x.recall_reupload),
                pct(x.recall_any),
                x.wrong_matches
            );
        }
        for c in &im.chains {
            let _ = writeln!(
                s,
                "{:<22} {:>7} {:>10} {:>15} {:>7}",
                format!("chains of {}", c.length),
                c.queries,
                pct(c.recall_reupload),
                pct(c.recall_any),
                c.wrong_matches
            );
            for (name, q, r) in c.weakest.iter().take(5) {
                let _ = writeln!(s, "    {name}: {} of {q} REUPLOAD", pct(*r));
            }
        }
        let _ = writeln!(
            s,
            "false positives: {} pairs REUPLOAD, {} pairs REUPLOAD+REVIEW of {} (rate {:.2e})",
            im.fp_pairs_reupload, im.fp_pairs_any, im.pairs, im.fp_rate_any
        );
        let st = &im.same_stamp;
        let _ = writeln!(
            s,
            "same shop stamp on distinct photos ({} pairs, banks of 3): photos {} REUPLOAD, {} REUPLOAD+REVIEW; products on white {} REUPLOAD, {} REUPLOAD+REVIEW",
            st.pairs, st.photo_reupload, st.photo_any, st.on_white_reupload, st.on_white_any
        );
        let c = &im.costs;
        let _ = writeln!(
            s,
            "cost: register {:.1} ms/photo, check {:.1} ms/photo (lookup {:.2} ms), {:.1} PDQ entries/photo, {:.1} PDQ lookups/check, {:.0} local features/photo, {:.0} local lookups/check",
            c.register_ms,
            c.query_ms,
            c.lookup_ms,
            c.pdq_entries_per_image,
            c.pdq_lookups_per_query,
            c.local_features_per_image,
            c.local_lookups_per_query
        );
        for curve in &im.curves {
            s.push_str(&render_curve(curve, 4));
        }
    }
    if let Some(p) = &r.phash_vs_imagehash {
        let _ = writeln!(
            s,
            "\npHash vs imagehash: {} photos, median {}, p95 {}, max {}, histogram {:?}",
            p.photos, p.median, p.p95, p.max, p.histogram
        );
    }
    if let Some(tr) = &r.titles {
        let _ = writeln!(s, "\ntitles: {} listings in {} groups", tr.listings, tr.groups);
        let _ = writeln!(
            s,
            "{:<22} {:>7} {:>10} {:>10}",
            "candidates", "queries", "support", "review"
        );
        for x in std::iter::once(&tr.real).chain(&tr.edits) {
            let _ = writeln!(
                s,
                "{:<22} {:>7} {:>10} {:>10}",
                x.name,
                x.queries,
                pct(x.recall_support),
                pct(x.recall_review)
            );
        }
        let _ = writeln!(
            s,
            "cross-group pairs: {}; within support {} ({:.3}%), within review {} ({:.3}%); text-only REUPLOAD: {}",
            tr.cross_pairs,
            tr.fp_pairs_support,
            tr.fpr_support * 100.0,
            tr.fp_pairs_review,
            tr.fpr_review * 100.0,
            tr.text_only_reupload
        );
        let _ = writeln!(
            s,
            "title + pHash (hash-only): own takedown REUPLOAD {}, REUPLOAD+REVIEW {}; flagged against another group: {} REUPLOAD, {} any",
            pct(tr.combined_recall_reupload),
            pct(tr.combined_recall_any),
            tr.combined_wrong_reupload,
            tr.combined_wrong_any
        );
        s.push_str(&render_curve(&tr.curve, 2));
    }
    if let Some(n) = &r.negatives {
        s.push_str(&negatives::render(n));
    }
    let _ = writeln!(s, "\n{:.1} s", r.seconds);
    s
}

fn render_curve(c: &Curve, step: usize) -> String {
    let mut s = format!("curve {}: threshold recall fpr\n", c.signal);
    for p in c.points.iter().step_by(step.max(1)) {
        s.push_str(&format!("  {:>3} {:>7} {:.2e}\n", p.threshold, pct(p.recall), p.fpr));
    }
    s
}

/// `relist eval`: prints the report, writes the plot and baseline, and fails on regression.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    if args.photos.is_none() && args.titles.is_none() && args.negatives.is_none() {
        anyhow::bail!("relist eval needs --photos DIR, --titles CSV and/or --negatives DIR");
    }
    let missing = args
        .photos
        .iter()
        .chain(&args.titles)
        .chain(&args.negatives)
        .any(|p| !p.exists());
    if missing && args.baseline.is_some() {
        println!("skipped");
        return Ok(());
    }
    let t = match &args.config {
        Some(path) => relist_server::config::FileConfig::load(path)?.policy,
        None => Thresholds::default(),
    };
    let report = evaluate(&args, &t)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_table(&report));
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, plot::svg(&report))?;
    }
    if let Some(path) = &args.write_baseline {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&baseline::Baseline::from_report(&report))? + "\n",
        )?;
    }
    if let Some(path) = &args.baseline {
        let recorded: baseline::Baseline = serde_json::from_str(&std::fs::read_to_string(path)?)?;
        let regressions = recorded.regressions(&report);
        if !regressions.is_empty() {
            for r in &regressions {
                eprintln!("regression: {r}");
            }
            anyhow::bail!(
                "{} figure(s) below the baseline in {}",
                regressions.len(),
                path.display()
            );
        }
        eprintln!("baseline {}: no regression", path.display());
    }
    Ok(())
}
