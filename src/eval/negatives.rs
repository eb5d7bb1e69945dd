//! Hard negatives: a folder of distinct pictures that look alike (catalog photos of different
//! products on white), where every match is a false one. Measured as a marketplace would
//! meet it: every picture against a bank of all the others (all pairs), and one half
//! registered, the other checked (per-check rates), at the pictures' own size and scaled up
//! (a seller's enlarged thumbnail), with the signal that carried each false match, before
//! and after the colour check, and the rate projected to a bank of [`PROJECTED_BANK`].
use std::collections::{BTreeMap, HashMap};

use image::imageops::{self, FilterType};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::par_map;
use super::transforms::dynamic;
use relist_core::domain::{CandidateImage, HashKind, ImageEvidence, Verdict};
use relist_core::fingerprint::{listing_fingerprints, DecodeLimits, Fingerprinter, Side};
use relist_core::matcher::LiveIndex;
use relist_core::policy::Thresholds;

/// The bank size the per-check rates are projected to: the seed's 40,000 takedowns with a
/// few photos each.
pub const PROJECTED_BANK: f64 = 200_000.0;
/// Upscaling factors measured by default.
pub const DEFAULT_SCALES: &[u32] = &[1, 4, 8];

/// The signals a false match can rest on.
pub const SIGNALS: &[&str] = &["pdq", "region", "part", "phash", "local"];

/// False matches carried by one signal: pairs where it was counted evidence.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SignalCount {
    pub signal: String,
    /// Pairs with evidence of this signal within the policy's thresholds, before the colour
    /// check (as every global-hash match counted before it existed).
    pub hits_before_colour: u64,
    /// Of those, pairs where it still counts after the colour check.
    pub hits: u64,
    /// Pairs REUPLOAD / REVIEW (and not REUPLOAD) with evidence of this signal.
    pub reupload_pairs: u64,
    pub review_pairs: u64,
}

/// One scale of one negatives run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ScaleReport {
    /// Upscaling factor (bicubic) applied to every picture, both sides.
    pub scale: u32,
    pub photos: usize,
    /// Unordered pairs of distinct pictures, each checked both ways.
    pub pairs: u64,
    pub reupload_pairs: u64,
    /// REVIEW and not REUPLOAD.
    pub review_pairs: u64,
    /// The same counts without the colour check (every hash hit counting as before).
    pub reupload_pairs_before_colour: u64,
    pub review_pairs_before_colour: u64,
    /// Per pair: flagged pairs / pairs.
    pub reupload_rate: f64,
    pub review_rate: f64,
    pub signals: Vec<SignalCount>,
    /// The first half registered (sorted by name), the second half checked against it.
    pub half_bank: usize,
    pub half_checks: usize,
    pub half_checks_reupload: usize,
    pub half_checks_review: usize,
    /// Per check at a bank of [`PROJECTED_BANK`] pictures like these: the per-pair rate
    /// times the bank, and the same with the 95% upper bound of the per-pair rate (the
    /// Poisson bound: 3 / pairs when none was seen).
    pub projected_reupload_per_check: f64,
    pub projected_reupload_per_check_upper95: f64,
    pub projected_review_per_check: f64,
    pub projected_review_per_check_upper95: f64,
    /// The flagged pairs, for a person to look at (names, verdict, evidence).
    pub flagged: Vec<String>,
}

/// The negatives part of the report.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct NegativesReport {
    /// The folder's name (the last path component), which names the figures in a baseline.
    pub set: String,
    pub scales: Vec<ScaleReport>,
}

/// 95% upper bound of a Poisson mean after seeing `k` events (exact for k <= 10, a normal
/// approximation beyond).
fn poisson_upper95(k: u64) -> f64 {
    const EXACT: [f64; 11] = [3.0, 4.74, 6.3, 7.75, 9.15, 10.51, 11.84, 13.15, 14.43, 15.71, 16.96];
    match EXACT.get(k as usize) {
        Some(&u) => u,
        None => k as f64 + 1.645 * (k as f64).sqrt() + 1.0,
    }
}

/// The signal an evidence item belongs to.
fn signal(e: &ImageEvidence) -> &'static str {
    match e.kind {
        HashKind::Pdq if !e.region => "pdq",
        HashKind::Pdq => "region",
        HashKind::PdqPart => "part",
        HashKind::Phash => "phash",
        HashKind::Local => "local",
    }
}

/// A picture scaled up `k` times (bicubic, as photo editors and phones enlarge).
pub fn upscale(img: &RgbImage, k: u32) -> RgbImage {
    if k <= 1 {
        return img.clone();
    }
    imageops::resize(img, img.width() * k, img.height() * k, FilterType::CatmullRom)
}

/// Measures `photos` at every scale in `scales`.
pub fn evaluate(
    set: &str,
    photos: &[(String, RgbImage)],
    t: &Thresholds,
    scales: &[u32],
    threads: usize,
) -> NegativesReport {
    NegativesReport {
        set: set.to_string(),
        scales: scales.iter().map(|&k| measure(photos, t, k, threads)).collect(),
    }
}

/// Thresholds that count every global-hash hit as the policy did before the colour check.
fn without_colour(t: &Thresholds) -> Thresholds {
    Thresholds {
        colour_agree: 255.0,
        colour_strict: 255.0,
        min_detail: 0,
        ..*t
    }
}

/// Per ordered check: (checked, stored, verdict, signals counted, signals hit before the
/// colour check, evidence).
type Outcome = (usize, usize, Verdict, Vec<&'static str>, String);

fn checks(
    index: &LiveIndex,
    checked: &[CandidateImage],
    t: &Thresholds,
    threads: usize,
    offset: usize,
) -> Vec<Vec<Outcome>> {
    par_map(checked, threads, |i, c| {
        let i = i + offset;
        index
            .find(std::slice::from_ref(c), None, t)
            .into_iter()
            .filter(|(id, _)| *id as usize - 1 != i)
            .filter_map(|(id, ev)| {
                let (verdict, _) = t.decide(&ev.images, ev.text_distance);
                if verdict == Verdict::Clear {
                    return None;
                }
                let counted: Vec<&'static str> = ev
                    .images
                    .iter()
                    .filter(|e| e.colour.is_none_or(|c| t.colour_counts(e.kind, e.distance, &c)))
                    .map(signal)
                    .collect();
                let detail = ev
                    .images
                    .iter()
                    .map(|e| match e.colour {
                        Some(c) => format!(
                            "{} {} colour {:.1}/{:.1} detail {}/{}",
                            signal(e),
                            e.distance,
                            c.residual.unwrap_or(f32::NAN),
                            c.residual_90.unwrap_or(f32::NAN),
                            c.checked_detail,
                            c.stored_detail
                        ),
                        None => format!("{} {}", signal(e), e.distance),
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                Some((i, id as usize - 1, verdict, counted, detail))
            })
            .collect()
    })
}

fn measure(photos: &[(String, RgbImage)], t: &Thresholds, scale: u32, threads: usize) -> ScaleReport {
    let n = photos.len();
    let fp = Fingerprinter::new(DecodeLimits::default());
    let prints = par_map(photos, threads, |_, (_, img)| {
        let img = dynamic(upscale(img, scale));
        (fp.image(&img, Side::Stored), fp.image(&img, Side::Checked))
    });
    let index_of = |range: std::ops::Range<usize>| {
        let mut index = LiveIndex::default();
        for i in range {
            let f = listing_fingerprints(std::slice::from_ref(&prints[i].0), "");
            index.add(i as u64 + 1, &f, t.pdq_min_quality);
        }
        index
    };
    let checked: Vec<CandidateImage> = prints.iter().map(|(_, c)| c.clone()).collect();

    // All pairs, with and without the colour check.
    let all = index_of(0..n);
    // The worst verdict per pair, its signals and its lines.
    type Worst = HashMap<(usize, usize), (Verdict, Vec<&'static str>, Vec<String>)>;
    let count = |outcomes: &[Vec<Outcome>]| {
        let mut worst: Worst = HashMap::new();
        for o in outcomes.iter().flatten() {
            let (i, j, v, sig, detail) = o;
            let e = worst
                .entry(((*i).min(*j), (*i).max(*j)))
                .or_insert((*v, Vec::new(), Vec::new()));
            e.0 = e.0.max(*v);
            e.1.extend(sig.iter().copied());
            e.2.push(format!("{} -> {}: {:?} ({detail})", photos[*i].0, photos[*j].0, v));
        }
        worst
    };
    let after = count(&checks(&all, &checked, t, threads, 0));
    let raw_t = without_colour(t);
    let before = count(&checks(&all, &checked, &raw_t, threads, 0));
    let pairs = (n as u64) * (n.saturating_sub(1) as u64) / 2;
    let tally = |m: &Worst| {
        let reupload = m.values().filter(|v| v.0 == Verdict::Reupload).count() as u64;
        (reupload, m.len() as u64 - reupload)
    };
    let (reupload_pairs, review_pairs) = tally(&after);
    let (reupload_before, review_before) = tally(&before);
    let signals = SIGNALS
        .iter()
        .map(|&s| {
            let has = |v: &(Verdict, Vec<&'static str>, Vec<String>)| v.1.contains(&s);
            SignalCount {
                signal: s.to_string(),
                hits_before_colour: before.values().filter(|v| has(v)).count() as u64,
                hits: after.values().filter(|v| has(v)).count() as u64,
                reupload_pairs: after.values().filter(|v| has(v) && v.0 == Verdict::Reupload).count() as u64,
                review_pairs: after.values().filter(|v| has(v) && v.0 == Verdict::Review).count() as u64,
            }
        })
        .collect();
    let mut flagged: Vec<String> = after.values().flat_map(|v| v.2.clone()).collect();
    flagged.sort();

    // Half registered, half checked.
    let half = n / 2;
    let bank = index_of(0..half);
    let half_outcomes = checks(&bank, &checked[half..], t, threads, half);
    let per_check = |v: Verdict| {
        half_outcomes
            .iter()
            .filter(|o| o.iter().map(|x| x.2).max() == Some(v))
            .count()
    };

    let rate = |k: u64| k as f64 / pairs.max(1) as f64;
    let upper = |k: u64| poisson_upper95(k) / pairs.max(1) as f64;
    ScaleReport {
        scale,
        photos: n,
        pairs,
        reupload_pairs,
        review_pairs,
        reupload_pairs_before_colour: reupload_before,
        review_pairs_before_colour: review_before,
        reupload_rate: rate(reupload_pairs),
        review_rate: rate(review_pairs),
        signals,
        half_bank: half,
        half_checks: n - half,
        half_checks_reupload: per_check(Verdict::Reupload),
        half_checks_review: per_check(Verdict::Review),
        projected_reupload_per_check: (rate(reupload_pairs) * PROJECTED_BANK).min(1.0),
        projected_reupload_per_check_upper95: (upper(reupload_pairs) * PROJECTED_BANK).min(1.0),
        projected_review_per_check: (rate(review_pairs) * PROJECTED_BANK).min(1.0),
        projected_review_per_check_upper95: (upper(review_pairs) * PROJECTED_BANK).min(1.0),
        flagged,
    }
}

/// The negatives report as plain-text tables.
pub fn render(r: &NegativesReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for x in &r.scales {
        let _ = writeln!(
            s,
            "\nhard negatives {} at {}x: {} pictures, {} pairs (each checked both ways)",
            r.set, x.scale, x.photos, x.pairs
        );
        let _ = writeln!(
            s,
            "  false REUPLOAD {} pairs ({:.2e}/pair), REVIEW {} pairs ({:.2e}/pair); without the colour check {} and {}",
            x.reupload_pairs,
            x.reupload_rate,
            x.review_pairs,
            x.review_rate,
            x.reupload_pairs_before_colour,
            x.review_pairs_before_colour
        );
        let _ = writeln!(
            s,
            "  {:<8} {:>14} {:>8} {:>9} {:>7}",
            "signal", "hits (before)", "hits", "REUPLOAD", "REVIEW"
        );
        for g in &x.signals {
            let _ = writeln!(
                s,
                "  {:<8} {:>14} {:>8} {:>9} {:>7}",
                g.signal, g.hits_before_colour, g.hits, g.reupload_pairs, g.review_pairs
            );
        }
        let _ = writeln!(
            s,
            "  half vs half: {} checks against {} registered: {} REUPLOAD, {} REVIEW",
            x.half_checks, x.half_bank, x.half_checks_reupload, x.half_checks_review
        );
        let _ = writeln!(
            s,
            "  projected per check at a bank of {:.0}: REUPLOAD {:.2e} (95% bound {:.2e}), REVIEW {:.2e} (95% bound {:.2e})",
            PROJECTED_BANK,
            x.projected_reupload_per_check,
            x.projected_reupload_per_check_upper95,
            x.projected_review_per_check,
            x.projected_review_per_check_upper95
        );
        for f in x.flagged.iter().take(20) {
            let _ = writeln!(s, "    {f}");
        }
    }
    s
}

/// The guarded figures of a negatives report, for the baseline (names start with
/// `negatives.<set>.x<scale>.`).
pub fn baseline_figures(r: &NegativesReport) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for x in &r.scales {
        let key = |name: &str| format!("negatives.{}.x{}.{name}", r.set, x.scale);
        out.insert(key("reupload_pairs"), x.reupload_pairs as f64);
        out.insert(key("review_pairs"), x.review_pairs as f64);
        out.insert(key("half_checks_reupload"), x.half_checks_reupload as f64);
        out.insert(key("half_checks_review"), x.half_checks_review as f64);
    }
    out
}
