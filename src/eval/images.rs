//! Image evaluation: every photo is registered as taken down; its evasions must find it
//! (recall) and no photo may match another (false positives). Runs the daemon's own
//! fingerprinting ([`Fingerprinter`]), index ([`LiveIndex`]) and policy ([`Thresholds::decide`]).
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::transforms::{self, dynamic, Transform};
use super::{par_map, Curve, CurvePoint};
use crate::domain::{CandidateImage, HashKind, TakedownId, Verdict, LOCAL_MAX};
use crate::fingerprint::{listing_fingerprints, DecodeLimits, Fingerprinter, Side};
use crate::matcher::{Evidence, LiveIndex};
use crate::policy::Thresholds;

/// Largest PDQ distance the curves cover.
pub const PDQ_CURVE_MAX: u32 = 64;
/// Largest pHash distance the curves cover.
pub const PHASH_CURVE_MAX: u32 = 16;

/// Recall of one evasion at the configured thresholds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TransformResult {
    pub name: String,
    pub group: String,
    pub queries: usize,
    /// Share of evasions whose original comes back as REUPLOAD.
    pub recall_reupload: f64,
    /// Share whose original comes back as REUPLOAD or REVIEW.
    pub recall_any: f64,
    /// Evasions that also matched (non-clear) a photo they were not made from.
    pub wrong_matches: usize,
}

/// What each step costs, averaged over the photos.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Costs {
    /// Fingerprinting one photo for registration (decoded), ms.
    pub register_ms: f64,
    /// Fingerprinting one photo for a check plus the index lookup, ms.
    pub query_ms: f64,
    /// Of which the index lookup, ms.
    pub lookup_ms: f64,
    /// PDQ index entries per registered photo.
    pub pdq_entries_per_image: f64,
    /// PDQ hashes looked up per checked photo.
    pub pdq_lookups_per_query: f64,
    /// Local features stored per registered photo, and looked up per checked photo.
    pub local_features_per_image: f64,
    pub local_lookups_per_query: f64,
}

/// The image part of the report.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageReport {
    pub photos: usize,
    /// Unordered pairs of distinct photos.
    pub pairs: u64,
    /// Pairs where either photo's check returned the other as REUPLOAD.
    pub fp_pairs_reupload: u64,
    /// Pairs where either check returned the other as REUPLOAD or REVIEW.
    pub fp_pairs_any: u64,
    pub fp_rate_any: f64,
    /// Hard negatives: pairs of distinct photos that both carry the same shop stamp (logo
    /// and shop-name text, as one seller's honest listings do), each stamped photo checked
    /// against a bank of the other stamped ones; pairs matched REUPLOAD or REVIEW.
    pub fp_pairs_same_stamp: u64,
    pub transforms: Vec<TransformResult>,
    /// Per report group (crop_5 = both 5% crops, ...).
    pub groups: Vec<TransformResult>,
    pub overall: TransformResult,
    pub curves: Vec<Curve>,
    pub costs: Costs,
}

/// Smallest distance per hash kind of one piece of evidence, and the verdict it gets.
#[derive(Clone, Copy, Debug)]
struct Seen {
    verdict: Verdict,
    pdq: Option<u32>,
    phash: Option<u32>,
    local: Option<u32>,
}

fn seen(t: &Thresholds, ev: &Evidence) -> Seen {
    let min = |k: HashKind| ev.images.iter().filter(|e| e.kind == k).map(|e| e.distance).min();
    Seen {
        verdict: t.decide(&ev.images, ev.text_distance).0,
        pdq: min(HashKind::Pdq),
        phash: min(HashKind::Phash),
        local: min(HashKind::Local),
    }
}

/// The thresholds used for lookups: wide enough for the curves. The verdict is still taken
/// with the configured thresholds, which ignore evidence past their own limits.
fn wide(t: &Thresholds) -> Thresholds {
    Thresholds {
        pdq_review: t.pdq_review.max(PDQ_CURVE_MAX),
        phash_review: t.phash_review.max(PHASH_CURVE_MAX),
        local_review: t.local_review.min(4),
        ..*t
    }
}

fn lookup(index: &LiveIndex, c: &CandidateImage, wide: &Thresholds) -> BTreeMap<TakedownId, Evidence> {
    index.find(std::slice::from_ref(c), None, wide)
}

/// Runs the image evaluation over `photos` (name, pixels) with `threads` workers.
pub fn evaluate(photos: &[(String, RgbImage)], t: &Thresholds, threads: usize) -> ImageReport {
    evaluate_with(photos, t, threads, transforms::ALL)
}

/// [`evaluate`] with only some of the evasions (quick tests).
pub fn evaluate_with(
    photos: &[(String, RgbImage)],
    t: &Thresholds,
    threads: usize,
    evasions: &[Transform],
) -> ImageReport {
    let n = photos.len();
    let fp = Fingerprinter::new(DecodeLimits::default());
    let wide_t = wide(t);

    // Register every photo (id = position + 1).
    let registered = par_map(photos, threads, |_, (_, img)| {
        let started = Instant::now();
        let c = fp.image(&dynamic(img.clone()), Side::Stored);
        (c, started.elapsed().as_secs_f64())
    });
    let stored_features: usize = registered.iter().map(|(c, _)| c.features.len()).sum();
    let index = bank(registered.iter().map(|(c, _)| c), t);
    let register_s: f64 = registered.iter().map(|(_, s)| s).sum();
    let pdq_entries = index.sizes().pdq;

    // Every photo against the bank of all the others.
    let checks = par_map(photos, threads, |i, (_, img)| {
        let started = Instant::now();
        let c = fp.image(&dynamic(img.clone()), Side::Checked);
        let looked_up = Instant::now();
        let found = lookup(&index, &c, &wide_t);
        let lookup_s = looked_up.elapsed().as_secs_f64();
        let others: Vec<(usize, Seen)> = found
            .iter()
            .filter(|(id, _)| **id != i as u64 + 1)
            .map(|(id, ev)| (*id as usize - 1, seen(t, ev)))
            .collect();
        (others, started.elapsed().as_secs_f64(), lookup_s, lookups(&c))
    });
    let mut pairs: HashMap<(usize, usize), Seen> = HashMap::new();
    for (i, (others, ..)) in checks.iter().enumerate() {
        for &(j, s) in others {
            let key = (i.min(j), i.max(j));
            let e = pairs.entry(key).or_insert(s);
            e.verdict = e.verdict.max(s.verdict);
            e.pdq = min_opt(e.pdq, s.pdq);
            e.phash = min_opt(e.phash, s.phash);
            e.local = min_opt(e.local, s.local);
        }
    }
    let total_pairs = (n as u64) * (n.saturating_sub(1) as u64) / 2;

    let fp_pairs_same_stamp = same_stamp_pairs(photos, &fp, t, &wide_t, threads);

    // Every evasion of every photo against the whole bank.
    let per_photo = par_map(photos, threads, |i, (_, img)| {
        let partners: Vec<usize> = (1..4).map(|k| (i + k) % n).filter(|&j| j != i).collect();
        let partner_imgs: Vec<&RgbImage> = partners.iter().map(|&j| &photos[j].1).collect();
        evasions
            .iter()
            .map(|tr| {
                let evaded = tr.apply(img, seed(i), &partner_imgs);
                let c = fp.image(&dynamic(evaded), Side::Checked);
                let found = lookup(&index, &c, &wide_t);
                let own = found.get(&(i as u64 + 1)).map(|ev| seen(t, ev));
                let wrong = found.iter().any(|(id, ev)| {
                    let j = *id as usize - 1;
                    j != i && !(tr.needs_others() && partners.contains(&j)) && seen(t, ev).verdict != Verdict::Clear
                });
                (own, wrong)
            })
            .collect::<Vec<_>>()
    });

    let result = |name: &str, group: &str, outcomes: &[(Option<Seen>, bool)]| {
        let q = outcomes.len().max(1) as f64;
        let count = |v: Verdict| {
            outcomes
                .iter()
                .filter(|(s, _)| s.is_some_and(|s| s.verdict >= v))
                .count()
        };
        TransformResult {
            name: name.to_string(),
            group: group.to_string(),
            queries: outcomes.len(),
            recall_reupload: count(Verdict::Reupload) as f64 / q,
            recall_any: count(Verdict::Review) as f64 / q,
            wrong_matches: outcomes.iter().filter(|(_, w)| *w).count(),
        }
    };
    let column = |k: usize| per_photo.iter().map(|v| v[k]).collect::<Vec<_>>();
    let all: Vec<(Option<Seen>, bool)> = per_photo.iter().flatten().copied().collect();
    let transforms_out: Vec<TransformResult> = evasions
        .iter()
        .enumerate()
        .map(|(k, tr)| result(tr.name, tr.group, &column(k)))
        .collect();
    let mut groups: Vec<TransformResult> = Vec::new();
    for tr in evasions {
        if groups.iter().any(|g| g.group == tr.group) {
            continue;
        }
        let outcomes: Vec<_> = evasions
            .iter()
            .enumerate()
            .filter(|(_, x)| x.group == tr.group)
            .flat_map(|(k, _)| column(k))
            .collect();
        groups.push(result(tr.group, tr.group, &outcomes));
    }

    let curve = |signal: &str, max: u32, get: &dyn Fn(&Seen) -> Option<u32>| {
        let positives: Vec<Option<u32>> = all.iter().map(|(s, _)| s.as_ref().and_then(get)).collect();
        let negatives: Vec<Option<u32>> = pairs.values().map(get).collect();
        Curve::from_distances(signal, max, &positives, &negatives, total_pairs)
    };
    let curves = vec![
        curve("image_pdq", PDQ_CURVE_MAX, &|s: &Seen| s.pdq),
        curve("image_phash", PHASH_CURVE_MAX, &|s: &Seen| s.phash),
        curve("image_local_64_minus_agreeing", LOCAL_MAX, &|s: &Seen| s.local),
    ];
    let fp_pairs_any = pairs.values().filter(|s| s.verdict != Verdict::Clear).count() as u64;
    let nq = n.max(1) as f64;
    ImageReport {
        photos: n,
        pairs: total_pairs,
        fp_pairs_reupload: pairs.values().filter(|s| s.verdict == Verdict::Reupload).count() as u64,
        fp_pairs_any,
        fp_rate_any: fp_pairs_any as f64 / total_pairs.max(1) as f64,
        fp_pairs_same_stamp,
        overall: result("overall", "overall", &all),
        transforms: transforms_out,
        groups,
        curves,
        costs: Costs {
            register_ms: register_s * 1e3 / nq,
            query_ms: checks.iter().map(|c| c.1).sum::<f64>() * 1e3 / nq,
            lookup_ms: checks.iter().map(|c| c.2).sum::<f64>() * 1e3 / nq,
            pdq_entries_per_image: pdq_entries as f64 / nq,
            pdq_lookups_per_query: checks.iter().map(|c| c.3 .0).sum::<usize>() as f64 / nq,
            local_features_per_image: stored_features as f64 / nq,
            local_lookups_per_query: checks.iter().map(|c| c.3 .1).sum::<usize>() as f64 / nq,
        },
    }
}

/// The index over photos registered as takedowns, photo i as takedown id i + 1.
fn bank<'a>(stored: impl Iterator<Item = &'a CandidateImage>, t: &Thresholds) -> LiveIndex {
    let mut index = LiveIndex::default();
    for (i, c) in stored.enumerate() {
        index.add(
            i as u64 + 1,
            &listing_fingerprints(std::slice::from_ref(c), ""),
            t.pdq_min_quality,
        );
    }
    index
}

/// Distinct photo pairs that match once both carry the same logo and shop name.
fn same_stamp_pairs(
    photos: &[(String, RgbImage)],
    fp: &Fingerprinter,
    t: &Thresholds,
    wide_t: &Thresholds,
    threads: usize,
) -> u64 {
    let stamp = |img: &RgbImage| {
        transforms::ALL
            .iter()
            .filter(|tr| tr.group == "watermark" || tr.group == "text_overlay")
            .fold(img.clone(), |acc, tr| tr.apply(&acc, 0, &[]))
    };
    let stamped = par_map(photos, threads, |_, (_, img)| {
        let s = dynamic(stamp(img));
        (fp.image(&s, Side::Stored), fp.image(&s, Side::Checked))
    });
    let index = bank(stamped.iter().map(|(c, _)| c), t);
    let mut pairs = std::collections::HashSet::new();
    for (i, (_, c)) in stamped.iter().enumerate() {
        for (id, ev) in lookup(&index, c, wide_t) {
            let j = id as usize - 1;
            if j != i && seen(t, &ev).verdict != Verdict::Clear {
                pairs.insert((i.min(j), i.max(j)));
            }
        }
    }
    pairs.len() as u64
}

/// PDQ hashes and local features a check of this candidate looks up.
fn lookups(c: &CandidateImage) -> (usize, usize) {
    (
        c.pdq_variants.map_or(1, |v| v.len()) + c.regions.len(),
        c.features.len(),
    )
}

fn min_opt(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn seed(i: usize) -> u64 {
    transforms::SplitMix(i as u64).next_u64()
}

impl Curve {
    /// Recall and false-positive rate at every threshold 0..=max, from the smallest distance
    /// of each positive (None: not found) and of each negative pair that came within range
    /// (pairs not listed never came within `max`).
    pub fn from_distances(
        signal: &str,
        max: u32,
        positives: &[Option<u32>],
        negatives: &[Option<u32>],
        negative_total: u64,
    ) -> Curve {
        let points = (0..=max)
            .map(|th| {
                let within = |v: &[Option<u32>]| v.iter().filter(|d| d.is_some_and(|d| d <= th)).count();
                CurvePoint {
                    threshold: th,
                    recall: within(positives) as f64 / positives.len().max(1) as f64,
                    fpr: within(negatives) as f64 / negative_total.max(1) as f64,
                }
            })
            .collect();
        Curve {
            signal: signal.to_string(),
            points,
        }
    }
}
