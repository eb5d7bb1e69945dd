//! The matching policy: the one place that turns distances into a verdict and a score.
//!
//! Principles (see docs/detection.md, "Matching policy"):
//! - An image match is the strong signal. PDQ at distance <= `pdq_reupload` (over its 8
//!   rotations/flips, both hashes of quality >= `pdq_min_quality`) is a re-upload on its own.
//! - So is a local-feature match: at least `local_reupload` corners whose descriptors match
//!   and agree on one placement of the stored photo in the checked one.
//! - A weaker image match (PDQ up to `pdq_review`; the 64-bit pHash, which collides on
//!   plain-background product shots; a block of the checked picture like a block of the
//!   stored one, which one seller's stamp on two different products also gives) is a
//!   re-upload only when the title agrees too; alone it goes to a person.
//! - The title alone never blocks a seller: honest listings share words ("kaos polos hitam").
//!   A near-identical title alone is REVIEW at most.
use serde::{Deserialize, Serialize};

use crate::domain::{HashKind, ImageEvidence, Verdict, LOCAL_MAX};

/// Distance thresholds, in bits. Configurable; defaults are the measured ones.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// PDQ distance (of 256) at or under which an image alone is a re-upload.
    pub pdq_reupload: u32,
    /// PDQ distance at or under which an image is evidence at all.
    pub pdq_review: u32,
    /// PDQ hashes of lower quality (0-100) are too featureless to match on.
    pub pdq_min_quality: u8,
    /// pHash distance (of 64) at or under which an image is evidence.
    pub phash_review: u32,
    /// Title simhash distance (of 64) at or under which the title supports an image match.
    /// 16 holds 99.6% of one-letter typos; 2.5 in 10,000 unrelated Shopee title pairs are
    /// that close (docs/detection.md, "Detection quality").
    pub text_support: u32,
    /// Title simhash distance at or under which the title alone is worth a review.
    pub text_review: u32,
    /// Local features agreeing on one placement at or over which an image alone is a
    /// re-upload (crops, rotations, overlays).
    pub local_reupload: u32,
    /// Agreeing local features at or over which an image is evidence at all.
    pub local_review: u32,
    /// Most matches returned per check.
    pub max_matches: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            pdq_reupload: 31,
            pdq_review: 40,
            pdq_min_quality: 50,
            phash_review: 6,
            text_support: 16,
            text_review: 8,
            local_reupload: 12,
            local_review: 8,
            max_matches: 10,
        }
    }
}

impl Thresholds {
    /// Rejects settings that would make the policy incoherent.
    pub fn validate(&self) -> Result<(), String> {
        if self.pdq_reupload > self.pdq_review {
            return Err("policy.pdq_reupload must not exceed policy.pdq_review".into());
        }
        if self.text_review > self.text_support {
            return Err("policy.text_review must not exceed policy.text_support".into());
        }
        if self.pdq_review > 128 || self.phash_review > 32 || self.text_support > 32 {
            return Err("policy thresholds above half the hash length match noise".into());
        }
        if self.local_review == 0 || self.local_review > self.local_reupload || self.local_reupload > LOCAL_MAX {
            return Err(format!(
                "policy.local_review must be at least 1 and at most policy.local_reupload, itself at most {LOCAL_MAX}"
            ));
        }
        if self.max_matches == 0 {
            return Err("policy.max_matches must be at least 1".into());
        }
        Ok(())
    }

    /// Verdict and 0-1 score for one takedown, from its best evidence.
    pub fn decide(&self, images: &[ImageEvidence], text_distance: Option<u32>) -> (Verdict, f64) {
        let best_pdq = best(images, HashKind::Pdq);
        let best_phash = best(images, HashKind::Phash);
        let best_part = best(images, HashKind::PdqPart);
        // Local evidence's distance counts down from LOCAL_MAX agreeing features.
        let local_agree = best(images, HashKind::Local).map(|d| LOCAL_MAX.saturating_sub(d));
        let text_supports = text_distance.is_some_and(|d| d <= self.text_support);

        let pdq_strength = best_pdq.map(|d| strength(d, self.pdq_review));
        let phash_strength = best_phash.map(|d| strength(d, self.phash_review));
        let part_strength = best_part.map(|d| strength(d, self.pdq_review));
        let local_strength = local_agree.map(|n| strength(LOCAL_MAX.saturating_sub(n), LOCAL_MAX - self.local_review));
        let image_strength = pdq_strength
            .into_iter()
            .chain(phash_strength)
            .chain(part_strength)
            .chain(local_strength)
            .fold(0.0, f64::max);
        let text_strength = text_distance.map_or(0.0, |d| strength(d, self.text_support));

        let verdict = if best_pdq.is_some_and(|d| d <= self.pdq_reupload)
            || local_agree.is_some_and(|n| n >= self.local_reupload)
            || (image_strength > 0.0 && text_supports)
        {
            Verdict::Reupload
        } else if image_strength > 0.0 || text_distance.is_some_and(|d| d <= self.text_review) {
            Verdict::Review
        } else {
            Verdict::Clear
        };
        // Image evidence dominates; an agreeing title adds up to a quarter of what is left.
        let score = if verdict == Verdict::Clear {
            0.0
        } else if image_strength > 0.0 {
            image_strength + (1.0 - image_strength) * 0.25 * text_strength
        } else {
            0.5 * text_strength
        };
        (verdict, score)
    }
}

fn best(images: &[ImageEvidence], kind: HashKind) -> Option<u32> {
    images.iter().filter(|e| e.kind == kind).map(|e| e.distance).min()
}

/// 1 at distance 0, falling linearly to a floor of 0.05 at the threshold; 0 past it.
fn strength(distance: u32, threshold: u32) -> f64 {
    if distance > threshold {
        return 0.0;
    }
    let t = f64::from(threshold.max(1));
    (1.0 - f64::from(distance) / (t + 1.0)).max(0.05)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: HashKind, distance: u32) -> ImageEvidence {
        ImageEvidence {
            candidate_image_index: 0,
            stored_image_index: 0,
            kind,
            distance,
            transform: None,
        }
    }

    #[test]
    fn verdicts_follow_the_documented_rules() {
        let t = Thresholds::default();
        assert_eq!(t.decide(&[ev(HashKind::Pdq, 0)], None).0, Verdict::Reupload);
        assert_eq!(
            t.decide(&[ev(HashKind::Pdq, t.pdq_reupload)], None).0,
            Verdict::Reupload
        );
        assert_eq!(
            t.decide(&[ev(HashKind::Pdq, t.pdq_reupload + 1)], None).0,
            Verdict::Review
        );
        assert_eq!(
            t.decide(&[ev(HashKind::Pdq, t.pdq_reupload + 1)], Some(t.text_support))
                .0,
            Verdict::Reupload
        );
        assert_eq!(t.decide(&[ev(HashKind::Phash, 0)], None).0, Verdict::Review);
        assert_eq!(t.decide(&[ev(HashKind::Phash, 0)], Some(0)).0, Verdict::Reupload);
        // A block like a block (one seller's stamp on two products) is not enough alone.
        assert_eq!(t.decide(&[ev(HashKind::PdqPart, 0)], None).0, Verdict::Review);
        assert_eq!(
            t.decide(&[ev(HashKind::PdqPart, t.pdq_reupload)], Some(t.text_support))
                .0,
            Verdict::Reupload
        );
        assert_eq!(
            t.decide(&[ev(HashKind::PdqPart, t.pdq_review + 1)], None).0,
            Verdict::Clear
        );
        // The title alone never blocks.
        assert_eq!(t.decide(&[], Some(0)).0, Verdict::Review);
        assert_eq!(t.decide(&[], Some(t.text_review + 1)).0, Verdict::Clear);
        assert_eq!(
            t.decide(&[ev(HashKind::Pdq, t.pdq_review + 1)], None),
            (Verdict::Clear, 0.0)
        );
    }

    #[test]
    fn score_is_monotone_in_distance_and_bounded() {
        let t = Thresholds::default();
        let mut last = 2.0;
        for d in 0..=t.pdq_review {
            let (_, s) = t.decide(&[ev(HashKind::Pdq, d)], None);
            assert!(s <= last && s > 0.0 && s <= 1.0, "d={d} s={s}");
            last = s;
        }
        let (_, with_text) = t.decide(&[ev(HashKind::Pdq, 20)], Some(0));
        let (_, without) = t.decide(&[ev(HashKind::Pdq, 20)], None);
        assert!(with_text > without && with_text <= 1.0);
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Thresholds::default().validate(), Ok(()));
        let bad = Thresholds {
            pdq_reupload: 50,
            pdq_review: 40,
            ..Thresholds::default()
        };
        assert!(bad.validate().is_err());
    }
}
