//! Image evaluation: every photo is registered as taken down; its evasions must find it
//! (recall) and no photo may match another (false positives). Runs the daemon's own
//! fingerprinting ([`Fingerprinter`]), index ([`LiveIndex`]) and policy ([`Thresholds::decide`]).
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::transforms::{self, dynamic, Transform};
use super::{par_map, Curve, CurvePoint};
use relist_core::domain::{CandidateImage, HashKind, TakedownId, Verdict, LOCAL_MAX};
use relist_core::fingerprint::{listing_fingerprints, DecodeLimits, Fingerprinter, Side};
use relist_core::matcher::{Evidence, LiveIndex};
use relist_core::policy::Thresholds;

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
    /// Hard negatives: one seller's honest listings, distinct photos that carry the same
    /// shop stamp (see [`SameStamp`]).
    pub same_stamp: SameStamp,
    pub transforms: Vec<TransformResult>,
    /// Per report group (crop_5 = both 5% crops, ...).
    pub groups: Vec<TransformResult>,
    pub overall: TransformResult,
    /// Combined evasions, per chain length (see [`super::chains`]).
    #[serde(default)]
    pub chains: Vec<super::chains::ChainResult>,
    pub curves: Vec<Curve>,
    pub costs: Costs,
}

/// Smallest distance per hash kind of one piece of evidence, and the verdict it gets.
#[derive(Clone, Copy, Debug)]
pub(super) struct Seen {
    pub(super) verdict: Verdict,
    pdq: Option<u32>,
    phash: Option<u32>,
    local: Option<u32>,
}

pub(super) fn seen(t: &Thresholds, ev: &Evidence) -> Seen {
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
pub(super) fn wide(t: &Thresholds) -> Thresholds {
    Thresholds {
        pdq_review: t.pdq_review.max(PDQ_CURVE_MAX),
        phash_review: t.phash_review.max(PHASH_CURVE_MAX),
        local_review: t.local_review.min(4),
        ..*t
    }
}

pub(super) fn lookup(index: &LiveIndex, c: &CandidateImage, wide: &Thresholds) -> BTreeMap<TakedownId, Evidence> {
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
    let registered = par_map("register photos", photos, threads, |_, (_, img)| {
        let started = Instant::now();
        let c = fp.image(&dynamic(img.clone()), Side::Stored);
        (c, started.elapsed().as_secs_f64())
    });
    let stored_features: usize = registered.iter().map(|(c, _)| c.features.len()).sum();
    let index = bank(registered.iter().map(|(c, _)| c), t);
    let register_s: f64 = registered.iter().map(|(_, s)| s).sum();
    let pdq_entries = index.sizes().pdq;

    // Every photo against the bank of all the others.
    let checks = par_map("check distinct pairs", photos, threads, |i, (_, img)| {
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

    let same_stamp = SameStamp::measure(photos, &fp, t, &wide_t, threads);

    // Every evasion of every photo against the whole bank.
    let per_photo = par_map("evasions", photos, threads, |i, (_, img)| {
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

    let chains = if evasions.is_empty() {
        Vec::new()
    } else {
        super::chains::evaluate(photos, &index, &fp, t, &wide_t, threads)
    };

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
        same_stamp,
        overall: result("overall", "overall", &all),
        chains,
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
    bank_of(stored.enumerate().map(|(i, c)| (i as u64 + 1, c)), t)
}

/// The index over (takedown id, photo) pairs.
fn bank_of<'a>(stored: impl Iterator<Item = (u64, &'a CandidateImage)>, t: &Thresholds) -> LiveIndex {
    let mut index = LiveIndex::default();
    for (id, c) in stored {
        index.add(
            id,
            &listing_fingerprints(std::slice::from_ref(c), ""),
            t.pdq_min_quality,
        );
    }
    index
}

/// Hard negatives: distinct photos that carry the same shop stamp (a logo ring and the shop's
/// name, as one seller puts on every listing), in two scenes: the photo itself, and the
/// photo shrunk to a product on a white canvas (where a stamp is most of what a global hash
/// sees). Photos are grouped in threes and each stamped photo is checked against a bank of
/// its group: a seller with few takedowns, so the shared-element rule (a region matching
/// more than 3 takedowns is no evidence) cannot help. Several groupings, so each scene
/// tests [`STAMP_ROUNDS`] x n pairs.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SameStamp {
    /// Distinct pairs tested per scene.
    pub pairs: u64,
    /// Pairs matched REUPLOAD, and REUPLOAD or REVIEW: photos as they are.
    pub photo_reupload: u64,
    pub photo_any: u64,
    /// The same for products on white.
    pub on_white_reupload: u64,
    pub on_white_any: u64,
}

/// Groupings of the photos into threes.
pub const STAMP_ROUNDS: u64 = 8;

impl SameStamp {
    fn measure(
        photos: &[(String, RgbImage)],
        fp: &Fingerprinter,
        t: &Thresholds,
        wide_t: &Thresholds,
        threads: usize,
    ) -> SameStamp {
        let n = photos.len();
        // Each round orders the photos by a seeded hash and cuts the order into threes.
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for round in 0..STAMP_ROUNDS {
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by_key(|&i| transforms::SplitMix((i as u64) << 8 | round).next_u64());
            groups.extend(order.chunks(3).filter(|g| g.len() > 1).map(|g| g.to_vec()));
        }
        let mut pairs = std::collections::HashSet::new();
        for g in &groups {
            for (a, &i) in g.iter().enumerate() {
                for &j in &g[a + 1..] {
                    pairs.insert((i.min(j), i.max(j)));
                }
            }
        }
        let scene = |prepare: &(dyn Fn(usize, &RgbImage) -> RgbImage + Sync)| {
            let stamped = par_map("one seller's stamp", photos, threads, |i, (_, img)| {
                let s = dynamic(stamp(&prepare(i, img)));
                (fp.image(&s, Side::Stored), fp.image(&s, Side::Checked))
            });
            let verdicts = par_map("stamped pairs", &groups, threads, |_, g| {
                let index = bank_of(g.iter().map(|&i| (i as u64 + 1, &stamped[i].0)), t);
                let mut out = Vec::new();
                for &i in g {
                    for (id, ev) in lookup(&index, &stamped[i].1, wide_t) {
                        let j = id as usize - 1;
                        if j != i {
                            out.push(((i.min(j), i.max(j)), seen(t, &ev).verdict));
                        }
                    }
                }
                out
            });
            let mut worst: HashMap<(usize, usize), Verdict> = HashMap::new();
            for (pair, v) in verdicts.into_iter().flatten() {
                let e = worst.entry(pair).or_insert(v);
                *e = (*e).max(v);
            }
            let count = |at: Verdict| worst.values().filter(|v| **v >= at).count() as u64;
            (count(Verdict::Reupload), count(Verdict::Review))
        };
        let (photo_reupload, photo_any) = scene(&|_, img| img.clone());
        let (on_white_reupload, on_white_any) = scene(&|i, img| on_white(img, seed(i)));
        SameStamp {
            pairs: pairs.len() as u64,
            photo_reupload,
            photo_any,
            on_white_reupload,
            on_white_any,
        }
    }
}

/// The shop stamp: the logo ring and the shop-name text of the watermark and text-overlay
/// evasions, both at once, the same on every photo.
fn stamp(img: &RgbImage) -> RgbImage {
    transforms::ALL
        .iter()
        .filter(|tr| tr.group == "watermark" || tr.group == "text_overlay")
        .fold(img.clone(), |acc, tr| tr.apply(&acc, 0, &[]))
}

/// The photo as a product shot: shrunk to 45-65% of each side (by `seed`) and centred on a
/// white canvas of the photo's size.
fn on_white(img: &RgbImage, seed: u64) -> RgbImage {
    let (w, h) = img.dimensions();
    let scale = 0.45 + 0.2 * transforms::SplitMix(seed).unit();
    let (pw, ph) = (((w as f32 * scale) as u32).max(1), ((h as f32 * scale) as u32).max(1));
    let product = image::imageops::resize(img, pw, ph, image::imageops::FilterType::Triangle);
    let mut canvas = RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]));
    image::imageops::replace(&mut canvas, &product, i64::from((w - pw) / 2), i64::from((h - ph) / 2));
    canvas
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

pub(super) fn seed(i: usize) -> u64 {
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
