//! Candidate generation: the live in-memory indexes over every live takedown's fingerprints,
//! and the queries that turn a checked listing into per-takedown evidence.
//!
//! Each image entry's id packs the takedown id, a variant byte and the stored image index
//! (`takedown_id << 16 | variant << 8 | image_index`; variant 0 is the whole image, 1.. its
//! stored regions in order), so a hit says which image matched without a lookup.
use std::collections::BTreeMap;

use crate::domain::{CandidateImage, HashKind, ImageEvidence, ListingFingerprints, RegionFingerprint, TakedownId};
use crate::fingerprint::pdq::Dihedral;
use crate::index::HammingIndex;
use crate::policy::Thresholds;

/// Most images a listing may have; image indexes must fit the low 8 bits of an entry id.
pub const MAX_IMAGES: usize = 32;

/// What the indexes found for one takedown, before the policy weighs it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evidence {
    /// Best evidence per (candidate image, stored image, hash kind): PDQ (the stronger hash)
    /// first, then by distance.
    pub images: Vec<ImageEvidence>,
    pub text_distance: Option<u32>,
}

/// Exact Hamming indexes over every live takedown; updated in place on every change.
#[derive(Default)]
pub struct LiveIndex {
    pdq: HammingIndex<4>,
    phash: HammingIndex<1>,
    title: HammingIndex<1>,
}

/// Most stored regions per image: region variants must fit the variant byte of an entry id.
pub const MAX_REGIONS: usize = 255;

fn entry_id(takedown: TakedownId, image: usize, variant: usize) -> u64 {
    (takedown << 16) | ((variant as u64) << 8) | image as u64
}

/// Stored regions with their variant number (1.., counted per image), capped at
/// [`MAX_REGIONS`] per image.
fn region_entries(f: &ListingFingerprints) -> impl Iterator<Item = (usize, usize, &RegionFingerprint)> {
    let mut seen = [0usize; MAX_IMAGES];
    f.regions.iter().filter_map(move |r| {
        let image = usize::from(r.image);
        let n = seen.get_mut(image)?;
        *n += 1;
        (*n <= MAX_REGIONS).then_some((image, *n, r))
    })
}

/// Sizes of the live indexes, for logs and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexSizes {
    pub pdq: usize,
    pub phash: usize,
    pub title: usize,
}

impl LiveIndex {
    /// Adds a takedown's fingerprints. PDQ hashes under the quality floor are left out: they
    /// are too featureless to be evidence.
    pub fn add(&mut self, id: TakedownId, f: &ListingFingerprints, min_quality: u8) {
        for (i, img) in f.images.iter().enumerate() {
            if let Some(p) = img.pdq.filter(|_| img.pdq_quality >= min_quality) {
                self.pdq.insert(p.words(), entry_id(id, i, 0));
            }
            if let Some(h) = img.phash {
                self.phash.insert([h], entry_id(id, i, 0));
            }
        }
        for (i, v, r) in region_entries(f) {
            if let Some(p) = r.pdq.filter(|_| r.pdq_quality >= min_quality) {
                self.pdq.insert(p.words(), entry_id(id, i, v));
            }
        }
        if let Some(h) = f.title_simhash {
            self.title.insert([h], id);
        }
    }

    /// Removes what [`LiveIndex::add`] added for the same fingerprints.
    pub fn remove(&mut self, id: TakedownId, f: &ListingFingerprints) {
        for (i, img) in f.images.iter().enumerate() {
            if let Some(p) = img.pdq {
                self.pdq.remove(&p.words(), entry_id(id, i, 0));
            }
            if let Some(h) = img.phash {
                self.phash.remove(&[h], entry_id(id, i, 0));
            }
        }
        for (i, v, r) in region_entries(f) {
            if let Some(p) = r.pdq {
                self.pdq.remove(&p.words(), entry_id(id, i, v));
            }
        }
        if let Some(h) = f.title_simhash {
            self.title.remove(&[h], id);
        }
    }

    pub fn sizes(&self) -> IndexSizes {
        IndexSizes {
            pdq: self.pdq.len(),
            phash: self.phash.len(),
            title: self.title.len(),
        }
    }

    /// Every takedown with some evidence within the policy's widest thresholds.
    pub fn find(
        &self,
        images: &[CandidateImage],
        title_simhash: Option<u64>,
        t: &Thresholds,
    ) -> BTreeMap<TakedownId, Evidence> {
        let mut found: BTreeMap<TakedownId, Evidence> = BTreeMap::new();
        let mut hits = Vec::new();
        for (ci, img) in images.iter().enumerate() {
            let fp = &img.fingerprint;
            if let Some(pdq) = fp.pdq.filter(|_| fp.pdq_quality >= t.pdq_min_quality) {
                let variants: Vec<(Option<Dihedral>, _)> = match &img.pdq_variants {
                    Some(v) => Dihedral::ALL.iter().map(|d| Some(*d)).zip(v.iter().copied()).collect(),
                    None => vec![(Some(Dihedral::Original), pdq)],
                };
                // Regions of the checked image carry no rotation/flip of their own.
                let regions = img
                    .regions
                    .iter()
                    .filter(|(_, q)| *q >= t.pdq_min_quality)
                    .map(|(code, _)| (None, *code));
                for (transform, code) in variants.into_iter().chain(regions) {
                    hits.clear();
                    self.pdq.range(&code.words(), t.pdq_review, &mut hits);
                    for &(entry, distance) in &hits {
                        push_best(&mut found, entry, ci, HashKind::Pdq, distance, transform);
                    }
                }
            }
            if let Some(h) = fp.phash {
                hits.clear();
                self.phash.range(&[h], t.phash_review, &mut hits);
                for &(entry, distance) in &hits {
                    push_best(&mut found, entry, ci, HashKind::Phash, distance, None);
                }
            }
        }
        if let Some(h) = title_simhash {
            hits.clear();
            self.title.range(&[h], t.text_support, &mut hits);
            for &(id, distance) in &hits {
                found.entry(id).or_default().text_distance = Some(distance);
            }
        }
        for ev in found.values_mut() {
            ev.images.sort_by_key(|e| {
                (
                    e.kind == HashKind::Phash,
                    e.distance,
                    e.candidate_image_index,
                    e.stored_image_index,
                )
            });
        }
        found
    }
}

/// Keeps the smallest distance per (takedown, candidate image, stored image, kind).
fn push_best(
    found: &mut BTreeMap<TakedownId, Evidence>,
    entry: u64,
    candidate: usize,
    kind: HashKind,
    distance: u32,
    transform: Option<Dihedral>,
) {
    let (takedown, stored) = (entry >> 16, (entry & 0xff) as u32);
    let ev = found.entry(takedown).or_default();
    let candidate = candidate as u32;
    match ev
        .images
        .iter_mut()
        .find(|e| e.candidate_image_index == candidate && e.stored_image_index == stored && e.kind == kind)
    {
        Some(e) if e.distance <= distance => {}
        Some(e) => {
            e.distance = distance;
            e.transform = transform;
        }
        None => ev.images.push(ImageEvidence {
            candidate_image_index: candidate,
            stored_image_index: stored,
            kind,
            distance,
            transform,
        }),
    }
}
