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
//! - A global-hash match between two pictures relist decoded itself is checked by their
//!   colours (see [`crate::fingerprint::appearance`]): every hash is computed from grey
//!   levels, and distinct products shot alike on white are within PDQ's radius of each
//!   other. Colours that disagree discard the match; colours that agree only outside an
//!   overlay, or pictures with too little detail (a thumbnail, scaled up or not), make it
//!   weaker evidence, a re-upload only with the title or local features agreeing too.
use serde::{Deserialize, Serialize};

use crate::domain::{ColourCheck, HashKind, ImageEvidence, Verdict, LOCAL_MAX};

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
    /// Agreeing local features at or over which they corroborate a global-hash match whose
    /// colours agree (two independent looks at the picture); under `local_review` they are
    /// no evidence alone. No distinct pair of the dev photos reaches 4.
    pub local_corroborate: u32,
    /// Colour residual (RGB levels, after undoing whole-picture edits) over the
    /// best-fitting 90% of the cells that carry something, at or under which the pictures
    /// of a strong PDQ match (within `pdq_reupload`, a picture with `min_detail`) agree; an
    /// overlay (a logo, a shop name) is left out. Over it the match is discarded.
    pub colour_agree: f32,
    /// The same over all those cells, for every other global-hash match: a weaker hash
    /// (PDQ up to `pdq_review`, a part, the 64-bit pHash), or two thumbnails, where one
    /// colour variant of a catalog shot differs from another in a tenth of the picture.
    pub colour_strict: f32,
    /// Effective shorter side, in pixels, under which a picture carries too little detail
    /// for a global-hash match alone to block a seller (a catalog thumbnail, even scaled
    /// up): such a match is REVIEW unless the title or local features agree too.
    pub min_detail: u16,
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
            local_corroborate: 4,
            colour_agree: 10.0,
            colour_strict: 6.0,
            min_detail: 100,
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
        if !(0.0..=255.0).contains(&self.colour_agree) || !(0.0..=255.0).contains(&self.colour_strict) {
            return Err("policy.colour_agree and policy.colour_strict must be between 0 and 255".into());
        }
        if self.local_corroborate == 0 || self.local_corroborate > self.local_review {
            return Err("policy.local_corroborate must be at least 1 and at most policy.local_review".into());
        }
        if self.max_matches == 0 {
            return Err("policy.max_matches must be at least 1".into());
        }
        Ok(())
    }

    /// Whether a colour check lets its global-hash match (of `kind`, at `distance`) count
    /// at all. A strong hash match (PDQ within `pdq_reupload`) between pictures with enough
    /// detail needs the colours to agree outside an overlay (a logo, a shop name); any other
    /// (PDQ up to `pdq_review`, a part, the 64-bit pHash: a hash that says less; or a
    /// thumbnail, where an "overlay" is as large as the product) needs them to agree
    /// everywhere.
    pub fn colour_counts(&self, kind: HashKind, distance: u32, c: &ColourCheck) -> bool {
        if kind == HashKind::Pdq && distance <= self.pdq_reupload && self.detailed(c) {
            c.residual_90.is_none_or(|r| r <= self.colour_agree)
        } else {
            c.residual.is_none_or(|r| r <= self.colour_strict)
        }
    }

    /// Whether a global-hash match may count at full strength: its pictures could not be
    /// checked (hashes sent, or stored before appearances were kept), or both carry enough
    /// detail (and, as every counted match, their colours agree).
    fn colour_full(&self, c: &Option<ColourCheck>) -> bool {
        c.is_none_or(|c| self.detailed(&c))
    }

    /// Whether the pair says enough for a global hash to block a seller: either picture
    /// carries `min_detail`. Two thumbnails do not (two colour variants of one catalog shot
    /// agree within a re-encode's noise); a blurred or shrunk re-upload of a detailed stored
    /// photo is compared against what the bank knows in detail.
    fn detailed(&self, c: &ColourCheck) -> bool {
        c.checked_detail.max(c.stored_detail) >= self.min_detail
    }

    /// Verdict and 0-1 score for one takedown, from its best evidence.
    pub fn decide(&self, images: &[ImageEvidence], text_distance: Option<u32>) -> (Verdict, f64) {
        // Global-hash evidence whose colours disagree is no evidence.
        let counted = |e: &&ImageEvidence| e.colour.is_none_or(|c| self.colour_counts(e.kind, e.distance, &c));
        let best = |kind: HashKind| {
            images
                .iter()
                .filter(counted)
                .filter(|e| e.kind == kind)
                .map(|e| e.distance)
                .min()
        };
        let best_pdq = best(HashKind::Pdq);
        let best_phash = best(HashKind::Phash);
        let best_part = best(HashKind::PdqPart);
        // A PDQ match strong enough alone: within the re-upload radius, at full strength.
        let pdq_alone = images
            .iter()
            .filter(counted)
            .any(|e| e.kind == HashKind::Pdq && e.distance <= self.pdq_reupload && self.colour_full(&e.colour));
        // Local evidence's distance counts down from LOCAL_MAX agreeing features; fewer than
        // `local_review` only corroborate.
        let corroborating = best(HashKind::Local).map(|d| LOCAL_MAX.saturating_sub(d));
        let local_agree = corroborating.filter(|&n| n >= self.local_review);
        let text_supports = text_distance.is_some_and(|d| d <= self.text_support);

        let pdq_strength = best_pdq.map(|d| strength(d, self.pdq_review));
        let phash_strength = best_phash.map(|d| strength(d, self.phash_review));
        let part_strength = best_part.map(|d| strength(d, self.pdq_review));
        let local_strength = local_agree.map(|n| strength(LOCAL_MAX.saturating_sub(n), LOCAL_MAX - self.local_review));
        let global_strength = pdq_strength
            .into_iter()
            .chain(phash_strength)
            .chain(part_strength)
            .fold(0.0, f64::max);
        let image_strength = global_strength.max(local_strength.unwrap_or(0.0));
        // Two independent looks at the picture: a global hash whose colours agree, and
        // corners agreeing on one placement.
        let corroborated = global_strength > 0.0 && corroborating.is_some_and(|n| n >= self.local_corroborate);

        let verdict = if pdq_alone
            || local_agree.is_some_and(|n| n >= self.local_reupload)
            || (image_strength > 0.0 && text_supports)
            || corroborated
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
            image_strength + (1.0 - image_strength) * 0.25 * text_strength(self, text_distance)
        } else {
            0.5 * text_strength(self, text_distance)
        };
        (verdict, score)
    }
}

fn text_strength(t: &Thresholds, text_distance: Option<u32>) -> f64 {
    text_distance.map_or(0.0, |d| strength(d, t.text_support))
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
            colour: None,
            region: false,
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

    fn checked(kind: HashKind, distance: u32, residual: f32, residual_90: f32, detail: u16) -> ImageEvidence {
        ImageEvidence {
            colour: Some(ColourCheck {
                residual: Some(residual),
                residual_90: Some(residual_90),
                checked_detail: detail,
                stored_detail: detail,
            }),
            ..ev(kind, distance)
        }
    }

    #[test]
    fn colour_checks_gate_global_hash_matches() {
        let t = Thresholds::default();
        let photo = 400;
        // Agreeing colours of detailed pictures: a strong PDQ blocks alone.
        let agree = checked(HashKind::Pdq, 20, 3.0, 2.0, photo);
        assert_eq!(t.decide(&[agree], None).0, Verdict::Reupload);
        // An overlay: all cells disagree, the best 90% agree: still a re-upload.
        let overlay = checked(HashKind::Pdq, 20, 30.0, t.colour_agree, photo);
        assert_eq!(t.decide(&[overlay], None).0, Verdict::Reupload);
        // Colours that disagree discard the match, whatever the hash says.
        let variant = checked(HashKind::Pdq, 0, 40.0, t.colour_agree + 1.0, photo);
        assert_eq!(t.decide(std::slice::from_ref(&variant), None).0, Verdict::Clear);
        // Even with the title within support, a discarded match is no image evidence.
        assert_eq!(t.decide(&[variant], Some(t.text_support)).0, Verdict::Clear);
        // Thumbnails: a strong PDQ with agreeing colours is REVIEW alone...
        let thumbs = checked(HashKind::Pdq, 10, 3.0, 2.0, t.min_detail - 1);
        assert_eq!(t.decide(std::slice::from_ref(&thumbs), None).0, Verdict::Review);
        // ...and a re-upload with the title, or with corroborating local features.
        assert_eq!(
            t.decide(std::slice::from_ref(&thumbs), Some(t.text_support)).0,
            Verdict::Reupload
        );
        let corners = ev(HashKind::Local, LOCAL_MAX - t.local_corroborate);
        assert_eq!(t.decide(&[thumbs, corners.clone()], None).0, Verdict::Reupload);
        // Too few corners alone are nothing.
        assert_eq!(t.decide(std::slice::from_ref(&corners), None).0, Verdict::Clear);
        // Thumbnails are held to the strict all-cells residual: an "overlay" there is
        // as large as the product.
        let thumb_overlay = checked(HashKind::Pdq, 10, t.colour_strict + 1.0, 2.0, t.min_detail - 1);
        assert_eq!(t.decide(&[thumb_overlay], None).0, Verdict::Clear);
        // pHash is held to the strict residual too, and stays REVIEW alone.
        let phash = checked(HashKind::Phash, 2, t.colour_strict - 1.0, 1.0, photo);
        assert_eq!(t.decide(&[phash], None).0, Verdict::Review);
        let phash_off = checked(HashKind::Phash, 2, t.colour_strict + 1.0, 1.0, photo);
        assert_eq!(t.decide(&[phash_off], None).0, Verdict::Clear);
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
