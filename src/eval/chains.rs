//! Combined evasions: sellers rarely make one edit. Each photo gets seeded random chains of
//! 2 and 3 edits (a crop then a mirror, a mirrored photo in a screenshot, a cropped one in a
//! collage, a shop name and a re-encode...), applied in the order a seller's tools would:
//! geometry, colour, overlays, a frame, then the encoding.
use std::collections::BTreeMap;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::images::{lookup, seed, seen};
use super::par_map;
use super::transforms::{self, dynamic, SplitMix, Transform};
use relist_core::domain::Verdict;
use relist_core::fingerprint::{Fingerprinter, Side};
use relist_core::matcher::LiveIndex;
use relist_core::policy::Thresholds;

/// Chain lengths measured.
pub const LENGTHS: &[usize] = &[2, 3];
/// Chains per photo and length.
pub const PER_PHOTO: usize = 2;

/// The edits chains draw from, with the stage that orders them (and of which a chain holds
/// at most one, but for geometry: a crop and a mirror go together).
const POOL: &[(&str, u8)] = &[
    ("crop_5_offcentre", 0),
    ("crop_10_centre", 0),
    ("mirror", 0),
    ("rotate_4deg", 0),
    ("saturation_up", 1),
    ("contrast_up", 1),
    ("gamma_2", 1),
    ("text_overlay", 2),
    ("watermark_logo", 2),
    ("border_20pct", 3),
    ("screenshot_frame", 3),
    ("collage_2x2", 3),
    ("jpeg_q60", 4),
    ("resize_50pct", 4),
];

/// The group of each geometric edit: two of one group (two crops, a mirror and a
/// quarter turn) would be one edit twice.
fn geometry_group(name: &str) -> &str {
    match name {
        "crop_5_offcentre" | "crop_10_centre" => "crop",
        _ => "turn",
    }
}

/// Recall on chains of one length.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ChainResult {
    pub length: usize,
    pub queries: usize,
    pub recall_reupload: f64,
    pub recall_any: f64,
    /// Chains that also matched (non-clear) a photo they were not made from.
    pub wrong_matches: usize,
    /// The combinations least often REUPLOAD (name, queries, REUPLOAD share), worst first.
    pub weakest: Vec<(String, usize, f64)>,
}

/// The chain of `length` edits for photo `photo`'s `k`-th chain: distinct stages (two
/// geometric edits of different groups allowed), in stage order.
pub fn chain(photo: usize, length: usize, k: usize) -> Vec<&'static Transform> {
    let mut rng = SplitMix(seed(photo) ^ ((length as u64) << 32) ^ (k as u64) << 40);
    let mut picked: Vec<(&str, u8)> = Vec::new();
    let mut tries = 0;
    while picked.len() < length && tries < 1000 {
        tries += 1;
        let (name, stage) = POOL[rng.below(POOL.len())];
        let clash = picked
            .iter()
            .any(|&(n, s)| n == name || (s == stage && (stage != 0 || geometry_group(n) == geometry_group(name))));
        if !clash {
            picked.push((name, stage));
        }
    }
    picked.sort_by_key(|&(_, stage)| stage);
    picked
        .into_iter()
        .filter_map(|(name, _)| transforms::by_name(name))
        .collect()
}

/// Applies a chain to `img`.
pub fn apply(steps: &[&Transform], img: &RgbImage, seed: u64, others: &[&RgbImage]) -> RgbImage {
    steps.iter().fold(img.clone(), |acc, tr| tr.apply(&acc, seed, others))
}

/// Recall of every chain length over `photos` against `index` (photo i as takedown i + 1).
pub fn evaluate(
    photos: &[(String, RgbImage)],
    index: &LiveIndex,
    fp: &Fingerprinter,
    t: &Thresholds,
    wide: &Thresholds,
    threads: usize,
) -> Vec<ChainResult> {
    let n = photos.len();
    LENGTHS
        .iter()
        .map(|&length| {
            let outcomes = par_map("chains", photos, threads, |i, (_, img)| {
                let partners: Vec<usize> = (1..4).map(|k| (i + k) % n).filter(|&j| j != i).collect();
                let partner_imgs: Vec<&RgbImage> = partners.iter().map(|&j| &photos[j].1).collect();
                (0..PER_PHOTO)
                    .map(|k| {
                        let steps = chain(i, length, k);
                        let name = steps.iter().map(|s| s.name).collect::<Vec<_>>().join("+");
                        let evaded = apply(&steps, img, seed(i), &partner_imgs);
                        let c = fp.image(&dynamic(evaded), Side::Checked);
                        let found = lookup(index, &c, wide);
                        let own = found.get(&(i as u64 + 1)).map(|ev| seen(t, ev).verdict);
                        let collage = steps.iter().any(|s| s.needs_others());
                        let wrong = found.iter().any(|(id, ev)| {
                            let j = *id as usize - 1;
                            j != i && !(collage && partners.contains(&j)) && seen(t, ev).verdict != Verdict::Clear
                        });
                        (name, own.unwrap_or(Verdict::Clear), wrong)
                    })
                    .collect::<Vec<_>>()
            });
            let all: Vec<&(String, Verdict, bool)> = outcomes.iter().flatten().collect();
            let q = all.len().max(1) as f64;
            let mut by_name: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
            for (name, v, _) in &all {
                let e = by_name.entry(name.as_str()).or_default();
                e.0 += 1;
                e.1 += usize::from(*v == Verdict::Reupload);
            }
            let mut weakest: Vec<(String, usize, f64)> = by_name
                .into_iter()
                .map(|(name, (queries, hits))| (name.to_string(), queries, hits as f64 / queries as f64))
                .filter(|(_, _, r)| *r < 1.0)
                .collect();
            weakest.sort_by(|a, b| a.2.total_cmp(&b.2).then(b.1.cmp(&a.1)).then(a.0.cmp(&b.0)));
            weakest.truncate(10);
            ChainResult {
                length,
                queries: all.len(),
                recall_reupload: all.iter().filter(|x| x.1 == Verdict::Reupload).count() as f64 / q,
                recall_any: all.iter().filter(|x| x.1 != Verdict::Clear).count() as f64 / q,
                wrong_matches: all.iter().filter(|x| x.2).count(),
                weakest,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_are_seeded_ordered_and_distinct() {
        for photo in 0..50 {
            for &length in LENGTHS {
                for k in 0..PER_PHOTO {
                    let c = chain(photo, length, k);
                    assert_eq!(c.len(), length);
                    assert_eq!(
                        c.iter().map(|s| s.name).collect::<Vec<_>>(),
                        chain(photo, length, k).iter().map(|s| s.name).collect::<Vec<_>>(),
                        "the same seed gives the same chain"
                    );
                    let stages: Vec<u8> = c
                        .iter()
                        .map(|s| POOL.iter().find(|p| p.0 == s.name).map_or(9, |p| p.1))
                        .collect();
                    assert!(stages.windows(2).all(|w| w[0] <= w[1]), "{stages:?} in stage order");
                }
            }
        }
    }
}
