//! Candidate generation: the live in-memory indexes over every live takedown's fingerprints,
//! and the queries that turn a checked listing into per-takedown evidence.
//!
//! Each image entry's id packs the takedown id, a variant byte and the stored image index
//! (`takedown_id << 16 | variant << 8 | image_index`; variant 0 is the whole image, 1.. its
//! stored regions in order), so a hit says which image matched without a lookup. Local
//! features live in an index of their own, with ids `takedown_id << 20 | image << 15 |
//! feature_number` and their positions beside it, for the placement check.
use std::collections::{BTreeMap, HashMap};

use crate::codec::{le_u16, le_u64, Decoder, Encoder, SnapshotError};
use crate::domain::LOCAL_MAX;
use crate::domain::{
    CandidateImage, ColourCheck, HashKind, ImageEvidence, ImageFingerprint, ListingFingerprints, RegionFingerprint,
    RegionRect, TakedownId,
};
use crate::fingerprint::appearance::{self, Appearance};
use crate::fingerprint::local::Feature;
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
pub struct LiveIndex {
    pdq: HammingIndex<4>,
    phash: HammingIndex<1>,
    title: HammingIndex<1>,
    local: HammingIndex<4>,
    /// Level and position of each local feature, by entry id.
    local_at: HashMap<u64, (u8, u16, u16)>,
    /// The appearance of each stored picture decoded from pixels, by image entry id
    /// (variant 0), for the colour check of global-hash hits.
    appearances: HashMap<u64, Appearance>,
    /// Where each stored region lies in its picture, by region entry id.
    region_rects: HashMap<u64, RegionRect>,
}

impl Default for LiveIndex {
    /// The local-feature index keeps 16-bit substrings whatever its size: its bucket cap
    /// ([`LiveIndex::local_bucket_cap`]) is over those buckets.
    fn default() -> Self {
        LiveIndex {
            pdq: HammingIndex::new(),
            phash: HammingIndex::new(),
            title: HammingIndex::new(),
            local: HammingIndex::new_fixed(),
            local_at: HashMap::new(),
            appearances: HashMap::new(),
            region_rects: HashMap::new(),
        }
    }
}

/// Most local features kept per image: feature numbers must fit 15 bits of an entry id.
pub const MAX_FEATURES: usize = 1 << 15;
/// Descriptor distance (of 256) at or under which two local features match. Under 32, so the
/// multi-index probe flips at most one bit per 16-bit substring.
pub const LOCAL_RADIUS: u32 = 15;
/// A checked feature with more stored hits than this is not distinctive (edges and
/// gradients describe alike everywhere) and is skipped; this also bounds the lookup cost.
const MAX_HITS_PER_FEATURE: usize = 32;
/// Buckets of the local-feature index with more than this many times the mean number of
/// records are not read by a lookup: they hold the descriptors of patches that are one
/// straight edge (a few bit patterns and their complements), which match everything alike.
const LOCAL_BUCKET_SKEW: usize = 32;
/// ... and no bucket of up to this many records is skipped, however small the index.
const LOCAL_BUCKET_FLOOR: usize = 128;
/// A region of a checked photo that matches more takedowns than this is a shared element (a
/// shop stamp on a mostly empty picture cut out as a block of its own) and is not counted.
/// The same photo taken down again and again stays matchable by its whole-picture hashes.
const MAX_REGION_TAKEDOWNS: usize = 3;
/// A checked feature counts only for the stored image it matches best, and only when every
/// other image's best match is at least this many bits further (a ratio test in bits).
const DISTINCT_MARGIN: u32 = 4;
/// Size, in pixels of the checked level, of the cells in which matches vote for a placement.
const PLACEMENT_CELL: i32 = 8;
/// Agreeing features must spread at least this far (pixels of the checked level, of 320) in
/// both directions: a shared shop-name stamp or logo on two different photos is a thin or
/// small patch of agreeing corners, a re-upload agrees all over.
const MIN_SPREAD: u16 = 48;
/// ... and their bounding box must cover at least this share of the box holding all the
/// checked picture's features, or of all the stored picture's (a crop of the stored photo
/// agrees all over the checked one; a collage tile all over the stored one). A shop stamp
/// on two different products covers its own corner and band only: on a product drawn in
/// flat colours, whose own corners are few, it otherwise gathers a dozen agreeing features.
const MIN_COVERAGE: f64 = 0.25;

/// A bounding box of feature positions.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Bbox {
    x0: u16,
    y0: u16,
    x1: u16,
    y1: u16,
}

impl Bbox {
    fn of(points: impl IntoIterator<Item = (u16, u16)>) -> Bbox {
        points.into_iter().fold(
            Bbox {
                x0: u16::MAX,
                y0: u16::MAX,
                x1: 0,
                y1: 0,
            },
            |b, (x, y)| Bbox {
                x0: b.x0.min(x),
                y0: b.y0.min(y),
                x1: b.x1.max(x),
                y1: b.y1.max(y),
            },
        )
    }

    fn width(&self) -> u16 {
        self.x1.saturating_sub(self.x0)
    }

    fn height(&self) -> u16 {
        self.y1.saturating_sub(self.y0)
    }

    /// At least `min` wide and high.
    fn spreads(&self, min: u16) -> bool {
        self.width() >= min && self.height() >= min
    }

    /// Whether this box's area is at least `share` of `frame`'s.
    fn covers(&self, frame: &Bbox, share: f64) -> bool {
        let area = |b: &Bbox| f64::from(b.width()) * f64::from(b.height());
        area(self) >= share * area(frame)
    }
}

/// (takedown << 5 | image, stored level, checked level): votes are only comparable within one.
type VoteKey = (u64, u8, u8);
/// A translation between two feature positions, in cells of [`PLACEMENT_CELL`] pixels.
type Cell = (i32, i32);
/// A feature's position in its level's pixels.
type Pos = (u16, u16);
/// (translation cell, checked feature number, stored feature position).
type Vote = (Cell, u16, Pos);

fn feature_id(takedown: TakedownId, image: usize, k: usize) -> u64 {
    (takedown << 20) | ((image as u64) << 15) | k as u64
}

/// Stored features with their number (counted per image), capped at [`MAX_FEATURES`].
fn feature_entries(f: &ListingFingerprints) -> impl Iterator<Item = (usize, usize, &Feature)> {
    let mut seen = [0usize; MAX_IMAGES];
    f.features.iter().filter_map(move |(image, feat)| {
        let image = usize::from(*image);
        let n = seen.get_mut(image)?;
        *n += 1;
        (*n <= MAX_FEATURES).then_some((image, *n - 1, feat))
    })
}

/// Most stored regions per image: region variants must fit the variant byte of an entry id
/// beside [`PART_BIT`].
pub const MAX_REGIONS: usize = 127;
/// Set in the variant byte of a region that is only a part of its picture.
const PART_BIT: usize = 0x80;

fn entry_id(takedown: TakedownId, image: usize, variant: usize) -> u64 {
    (takedown << 16) | ((variant as u64) << 8) | image as u64
}

/// Stored regions with their variant number (1.., counted per image, with [`PART_BIT`] set
/// for parts), capped at [`MAX_REGIONS`] per image.
fn region_entries(f: &ListingFingerprints) -> impl Iterator<Item = (usize, usize, &RegionFingerprint)> {
    let mut seen = [0usize; MAX_IMAGES];
    f.regions.iter().filter_map(move |r| {
        let image = usize::from(r.image);
        let n = seen.get_mut(image)?;
        *n += 1;
        let variant = *n | if r.part { PART_BIT } else { 0 };
        (*n <= MAX_REGIONS).then_some((image, variant, r))
    })
}

/// Whether an entry id is a stored region that is only a part of its picture.
fn is_part_entry(entry: u64) -> bool {
    (entry >> 8) as usize & PART_BIT != 0
}

/// Sizes of the live indexes, for logs and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexSizes {
    pub pdq: usize,
    pub phash: usize,
    pub title: usize,
    /// Local features (see [`crate::fingerprint::local`]).
    pub local: usize,
}

/// An image's pHash when it may count as evidence: not when the same image's PDQ says it is
/// too featureless (quality under the floor). A featureless image (a flat colour, or a
/// transparent drawing whose hidden pixels are one colour: hashes ignore alpha) has a
/// degenerate pHash that thousands of different images share; on Debian's openclipart 6.4% of
/// all pairs of distinct drawings were at pHash distance 0. A pHash sent without a PDQ (e.g.
/// a marketplace's stored 64-bit hash) has no quality to judge by and counts.
fn counted_phash(img: &ImageFingerprint, min_quality: u8) -> Option<u64> {
    img.phash
        .filter(|_| img.pdq.is_none() || img.pdq_quality >= min_quality)
}

impl LiveIndex {
    /// Adds a takedown's fingerprints. PDQ hashes under the quality floor are left out: they
    /// are too featureless to be evidence, and so are those images' pHashes.
    pub fn add(&mut self, id: TakedownId, f: &ListingFingerprints, min_quality: u8) {
        self.add_entries(id, f, min_quality, false);
    }

    /// [`LiveIndex::add`] for a takedown read from the store at start-up: its entries cannot
    /// be in the index yet, so the duplicate checks (a bucket scan of random reads per entry,
    /// most of the start-up time at millions of takedowns) are skipped.
    pub fn load(&mut self, id: TakedownId, f: &ListingFingerprints, min_quality: u8) {
        self.add_entries(id, f, min_quality, true);
    }

    fn add_entries(&mut self, id: TakedownId, f: &ListingFingerprints, min_quality: u8, fresh: bool) {
        fn put<const W: usize>(ix: &mut HammingIndex<W>, code: [u64; W], entry: u64, fresh: bool) {
            if fresh {
                ix.insert_unique(code, entry);
            } else {
                ix.insert(code, entry);
            }
        }
        for (i, img) in f.images.iter().enumerate() {
            if let Some(p) = img.pdq.filter(|_| img.pdq_quality >= min_quality) {
                put(&mut self.pdq, p.words(), entry_id(id, i, 0), fresh);
            }
            if let Some(h) = counted_phash(img, min_quality) {
                put(&mut self.phash, [h], entry_id(id, i, 0), fresh);
            }
        }
        for (i, v, r) in region_entries(f) {
            if let Some(p) = r.pdq.filter(|_| r.pdq_quality >= min_quality) {
                put(&mut self.pdq, p.words(), entry_id(id, i, v), fresh);
            }
            if let Some(rect) = r.rect {
                self.region_rects.insert(entry_id(id, i, v), rect);
            }
        }
        for (i, a) in &f.appearances {
            if usize::from(*i) < MAX_IMAGES {
                self.appearances.insert(entry_id(id, usize::from(*i), 0), a.clone());
            }
        }
        for (i, k, feat) in feature_entries(f) {
            let e = feature_id(id, i, k);
            put(&mut self.local, feat.bits, e, fresh);
            self.local_at.insert(e, (feat.level, feat.x, feat.y));
        }
        if let Some(h) = f.title_simhash {
            put(&mut self.title, [h], id, fresh);
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
            self.region_rects.remove(&entry_id(id, i, v));
        }
        for (i, _) in &f.appearances {
            self.appearances.remove(&entry_id(id, usize::from(*i), 0));
        }
        for (i, k, feat) in feature_entries(f) {
            let e = feature_id(id, i, k);
            self.local.remove(&feat.bits, e);
            self.local_at.remove(&e);
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
            local: self.local.len(),
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
        // Global-hash hits wait here until every lookup is done: each (takedown, checked
        // image, stored image, kind) then keeps its closest hit whose colours agree.
        let mut global: BTreeMap<(TakedownId, u32, u32, HashKind), Vec<Hit>> = BTreeMap::new();
        let mut hits = Vec::new();
        for (ci, img) in images.iter().enumerate() {
            let fp = &img.fingerprint;
            let ci32 = ci as u32;
            let mut add = |entry: u64, kind: HashKind, distance: u32, seen: Seen| {
                let (takedown, stored) = (entry >> 16, (entry & 0xff) as u32);
                global
                    .entry((takedown, ci32, stored, kind))
                    .or_default()
                    .push(Hit { distance, seen, entry });
            };
            if let Some(pdq) = fp.pdq.filter(|_| fp.pdq_quality >= t.pdq_min_quality) {
                let variants: Vec<(Seen, _, bool)> = match &img.pdq_variants {
                    Some(v) => Dihedral::ALL
                        .iter()
                        .zip(v)
                        .map(|(d, code)| (Seen::Whole(*d), *code, false))
                        .collect(),
                    None => vec![(Seen::Whole(Dihedral::Original), pdq, false)],
                };
                // Regions of the checked image carry no rotation/flip of their own.
                let regions = img
                    .regions
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.quality >= t.pdq_min_quality)
                    .map(|(k, r)| (Seen::Region(k), r.pdq, r.part));
                for (seen, code, part) in variants.into_iter().chain(regions) {
                    hits.clear();
                    self.pdq.range(&code.words(), t.pdq_review, &mut hits);
                    if matches!(seen, Seen::Region(_)) && shared_element(&hits) {
                        continue;
                    }
                    for &(entry, distance) in &hits {
                        // A part of one picture like a part of another: a shared block such as
                        // a seller's stamp looks like this too, so it is weaker evidence.
                        let kind = if part && is_part_entry(entry) {
                            HashKind::PdqPart
                        } else {
                            HashKind::Pdq
                        };
                        add(entry, kind, distance, seen);
                    }
                }
            }
            if let Some(h) = counted_phash(fp, t.pdq_min_quality) {
                hits.clear();
                self.phash.range(&[h], t.phash_review, &mut hits);
                for &(entry, distance) in &hits {
                    add(entry, HashKind::Phash, distance, Seen::Whole(Dihedral::Original));
                }
            }
            let local_floor = t.local_review.min(t.local_corroborate);
            for (entry, agree) in self.local_matches(&img.features, local_floor, &mut hits) {
                if agree >= local_floor {
                    let e = Found {
                        kind: HashKind::Local,
                        distance: LOCAL_MAX.saturating_sub(agree),
                        transform: None,
                        colour: None,
                        region: false,
                    };
                    push_best(&mut found, entry, ci, e);
                }
            }
        }
        // A check depends on the pictures only (checked image, what of it was seen, stored
        // entry), and the same pair comes up under several hash kinds (PDQ and pHash).
        let mut colours: Vec<((u32, Seen, u64), Colour)> = Vec::new();
        for ((_, ci, _, kind), mut candidates) in global {
            let img = &images[ci as usize];
            candidates.sort_by_key(|h| (h.distance, h.entry));
            // The closest hit whose colours agree (or that cannot be checked); else the
            // closest, with the check that failed it, for the policy to discard.
            let mut chosen: Option<(Hit, Option<ColourCheck>)> = None;
            for hit in candidates.iter().take(MAX_COLOUR_CHECKS) {
                let pair = (ci, hit.seen, hit.entry);
                let colour = match colours.iter().find(|(p, _)| *p == pair) {
                    Some(&(_, c)) => c,
                    None => {
                        let c = self.colour_check(img, hit);
                        colours.push((pair, c));
                        c
                    }
                };
                let check = match colour {
                    Colour::TooSmall => continue,
                    Colour::Unknown => None,
                    Colour::Checked(c) => Some(c),
                };
                let agrees = check.is_none_or(|c| t.colour_counts(kind, hit.distance, &c));
                if agrees {
                    chosen = Some((*hit, check));
                    break;
                }
                chosen.get_or_insert((*hit, check));
            }
            if let Some((hit, check)) = chosen {
                let (transform, region) = match hit.seen {
                    Seen::Whole(d) if kind != HashKind::Phash => (Some(d), (hit.entry >> 8) & 0xff != 0),
                    Seen::Whole(_) => (None, false),
                    Seen::Region(k) => (img.regions.get(k).filter(|r| r.mirrored).map(|_| Dihedral::FlipY), true),
                };
                let e = Found {
                    kind,
                    distance: hit.distance,
                    transform,
                    colour: check,
                    region,
                };
                push_best(&mut found, hit.entry, ci as usize, e);
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
                    match e.kind {
                        HashKind::Pdq => 0,
                        HashKind::Local => 1,
                        HashKind::PdqPart => 2,
                        HashKind::Phash => 3,
                    },
                    e.distance,
                    e.candidate_image_index,
                    e.stored_image_index,
                )
            });
        }
        found
    }
}

/// Bytes per `local_at` entry in a snapshot: id, level, x, y.
const LOCAL_AT_BYTES: usize = 8 + 1 + 2 + 2;
/// Bytes per appearance in a snapshot: entry id, effective side, cells.
const APPEARANCE_BYTES: usize = 8 + 2 + appearance::BYTES;
/// Bytes per region rect in a snapshot: entry id, four u16.
const RECT_BYTES: usize = 8 + 8;

impl LiveIndex {
    /// Writes the whole index for a snapshot (see [`crate::snapshot`]): the four Hamming
    /// indexes, then the local features' positions.
    pub(crate) fn write_snapshot<W: std::io::Write>(&self, e: &mut Encoder<W>) -> std::io::Result<()> {
        self.pdq.write_snapshot(e)?;
        self.phash.write_snapshot(e)?;
        self.title.write_snapshot(e)?;
        self.local.write_snapshot(e)?;
        e.u64(self.local_at.len() as u64)?;
        for (&id, &(level, x, y)) in &self.local_at {
            e.u64(id)?;
            e.u8(level)?;
            e.u16(x)?;
            e.u16(y)?;
        }
        e.u64(self.appearances.len() as u64)?;
        for (&id, a) in &self.appearances {
            e.u64(id)?;
            e.u16(a.effective_side)?;
            e.bytes(&a.cells[..])?;
        }
        e.u64(self.region_rects.len() as u64)?;
        for (&id, r) in &self.region_rects {
            e.u64(id)?;
            for v in r.0 {
                e.u16(v)?;
            }
        }
        Ok(())
    }

    /// Reads what [`LiveIndex::write_snapshot`] wrote.
    pub(crate) fn read_snapshot<R: std::io::Read>(d: &mut Decoder<R>) -> Result<Self, SnapshotError> {
        let pdq = HammingIndex::read_snapshot(d)?;
        let phash = HammingIndex::read_snapshot(d)?;
        let title = HammingIndex::read_snapshot(d)?;
        let local = HammingIndex::read_snapshot(d)?;
        let n = d.count(LOCAL_AT_BYTES as u64)?;
        let mut local_at = HashMap::with_capacity(n);
        d.records(n, LOCAL_AT_BYTES, |b| {
            local_at.insert(le_u64(&b[..8]), (b[8], le_u16(&b[9..11]), le_u16(&b[11..13])));
        })?;
        if local_at.len() != n {
            return Err(SnapshotError::Invalid("duplicate local feature positions".into()));
        }
        let na = d.count(APPEARANCE_BYTES as u64)?;
        let mut appearances = HashMap::with_capacity(na);
        d.records(na, APPEARANCE_BYTES, |b| {
            let mut cells = Box::new([0u8; appearance::BYTES]);
            cells.copy_from_slice(&b[10..]);
            appearances.insert(
                le_u64(&b[..8]),
                Appearance {
                    cells,
                    effective_side: le_u16(&b[8..10]),
                },
            );
        })?;
        let nr = d.count(RECT_BYTES as u64)?;
        let mut region_rects = HashMap::with_capacity(nr);
        d.records(nr, RECT_BYTES, |b| {
            let v = |k: usize| le_u16(&b[8 + 2 * k..10 + 2 * k]);
            region_rects.insert(le_u64(&b[..8]), RegionRect([v(0), v(1), v(2), v(3)]));
        })?;
        if appearances.len() != na || region_rects.len() != nr {
            return Err(SnapshotError::Invalid("duplicate appearances or region rects".into()));
        }
        Ok(LiveIndex {
            pdq,
            phash,
            title,
            local,
            local_at,
            appearances,
            region_rects,
        })
    }

    /// Approximate heap bytes of the index, a bound on a snapshot's size.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.pdq.heap_bytes()
            + self.phash.heap_bytes()
            + self.title.heap_bytes()
            + self.local.heap_bytes()
            + self.local_at.capacity() * (8 + 6)
            + self.appearances.capacity() * (8 + 8 + appearance::BYTES + 2)
            + self.region_rects.capacity() * (8 + 8)
    }
}

impl LiveIndex {
    /// Largest bucket of the local-feature index a lookup reads (see
    /// [`HammingIndex::range_capped`]): [`LOCAL_BUCKET_SKEW`] times a bucket's mean size, and
    /// never under [`LOCAL_BUCKET_FLOOR`].
    pub fn local_bucket_cap(&self) -> usize {
        let mean = self.local.len() / (1 << 16);
        (mean * LOCAL_BUCKET_SKEW).max(LOCAL_BUCKET_FLOOR)
    }

    /// Per stored image (as an image entry id), the most checked features that match its
    /// features and agree on one placement: each match votes for the translation between
    /// the two positions (checked level 0 against each stored level), and the votes in the
    /// best cell and its neighbours count once per checked feature.
    fn local_matches(&self, features: &[Feature], min_agree: u32, hits: &mut Vec<(u64, u32)>) -> Vec<(u64, u32)> {
        if features.is_empty() || self.local.is_empty() {
            return Vec::new();
        }
        // The box holding each checked level's features (every level that votes has some).
        let levels = features.iter().map(|f| usize::from(f.level) + 1).max().unwrap_or(0);
        let frames: Vec<Bbox> = (0..levels)
            .map(|l| {
                Bbox::of(
                    features
                        .iter()
                        .filter(|f| usize::from(f.level) == l)
                        .map(|f| (f.x, f.y)),
                )
            })
            .collect();
        let mut votes: HashMap<VoteKey, Vec<Vote>> = HashMap::new();
        let cap = self.local_bucket_cap();
        for (q, feat) in features.iter().enumerate() {
            hits.clear();
            self.local.range_capped(&feat.bits, LOCAL_RADIUS, cap, hits);
            if hits.is_empty() || hits.len() > MAX_HITS_PER_FEATURE {
                continue;
            }
            // Best distance per stored image; keep the feature only if one image stands out.
            hits.sort_unstable_by_key(|&(e, d)| (d, e));
            let best_image = hits[0].0 >> 15;
            let runner_up = hits.iter().find(|(e, _)| e >> 15 != best_image).map(|&(_, d)| d);
            if runner_up.is_some_and(|d| d < hits[0].1 + DISTINCT_MARGIN) {
                continue;
            }
            for &(e, _) in hits.iter().filter(|(e, _)| e >> 15 == best_image) {
                let Some(&(level, x, y)) = self.local_at.get(&e) else {
                    continue;
                };
                let dx = i32::from(feat.x) - i32::from(x);
                let dy = i32::from(feat.y) - i32::from(y);
                let cell = (dx.div_euclid(PLACEMENT_CELL), dy.div_euclid(PLACEMENT_CELL));
                votes
                    .entry((e >> 15, level, feat.level))
                    .or_default()
                    .push((cell, q as u16, (x, y)));
            }
        }
        let mut best: BTreeMap<u64, u32> = BTreeMap::new();
        for ((image_key, slevel, clevel), v) in votes {
            if v.len() < 4 {
                continue;
            }
            let (takedown, image) = (image_key >> 5, (image_key & 0x1f) as usize);
            // Per translation cell: (checked feature number, stored feature position).
            let mut cells: HashMap<Cell, Vec<(u16, Pos)>> = HashMap::new();
            for &(cell, q, at) in &v {
                cells.entry(cell).or_default().push((q, at));
            }
            // The stored image's features at this level, for the coverage test: found once
            // per stored image, and only when a placement has enough agreeing features.
            let mut stored_all: Option<Bbox> = None;
            let agree = cells
                .keys()
                .map(|&cell| {
                    let near = || around(cell).filter_map(|c| cells.get(&c)).flatten();
                    let mut qs: Vec<u16> = near().map(|&(q, _)| q).collect();
                    qs.sort_unstable();
                    qs.dedup();
                    let checked = Bbox::of(
                        qs.iter()
                            .map(|&q| (features[usize::from(q)].x, features[usize::from(q)].y)),
                    );
                    if !checked.spreads(MIN_SPREAD) {
                        return 0;
                    }
                    let n = qs.len() as u32;
                    if n < min_agree {
                        return n;
                    }
                    if checked.covers(&frames[usize::from(clevel)], MIN_COVERAGE) {
                        return n;
                    }
                    let stored = Bbox::of(near().map(|&(_, at)| at));
                    let stored_frame = *stored_all.get_or_insert_with(|| {
                        Bbox::of(
                            (0..MAX_FEATURES)
                                .map_while(|k| self.local_at.get(&feature_id(takedown, image, k)))
                                .filter(|(level, ..)| *level == slevel)
                                .map(|&(_, x, y)| (x, y)),
                        )
                    });
                    if stored.covers(&stored_frame, MIN_COVERAGE) {
                        n
                    } else {
                        0
                    }
                })
                .max()
                .unwrap_or(0);
            // An image entry id: takedown << 16 | image (variant 0).
            let e = best.entry(entry_id(takedown, image, 0)).or_default();
            *e = (*e).max(agree);
        }
        best.into_iter().collect()
    }
}

/// Most hits of one (takedown, checked image, stored image, hash kind) whose colours are
/// checked, closest first: bounds the work a check can cause.
const MAX_COLOUR_CHECKS: usize = 4;

/// Effective side, in pixels, under which a region is too small to be evidence (a block of
/// a thumbnail: 14 pixels of a 60x80 catalog photo).
const MIN_REGION_DETAIL: u16 = 24;

/// What the colour check of a hit found.
#[derive(Clone, Copy, Debug)]
enum Colour {
    /// Either picture has no appearance: the hash alone speaks.
    Unknown,
    /// A region too small to be evidence at all.
    TooSmall,
    Checked(ColourCheck),
}

/// What part of the checked picture a global hash saw.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Seen {
    /// The whole picture under a rotation/flip.
    Whole(Dihedral),
    /// Its `k`-th region.
    Region(usize),
}

/// One global-hash hit, before the colour check.
#[derive(Clone, Copy, Debug)]
struct Hit {
    distance: u32,
    seen: Seen,
    /// The stored entry (takedown, variant, image).
    entry: u64,
}

impl LiveIndex {
    /// Compares the appearances of the two pictures of a hit.
    fn colour_check(&self, img: &CandidateImage, hit: &Hit) -> Colour {
        self.colour_of(img, hit).unwrap_or(Colour::Unknown)
    }

    /// [`LiveIndex::colour_check`]; `None` when either picture has no appearance (sent as
    /// hashes, or stored before appearances were kept, or a stored region without its rect).
    fn colour_of(&self, img: &CandidateImage, hit: &Hit) -> Option<Colour> {
        let stored = self.appearances.get(&(hit.entry & !0xff00))?;
        let whole = img.appearance.as_ref()?;
        let (checked, checked_region_detail) = match hit.seen {
            Seen::Whole(d) => (whole.grid().dihedral(d), whole.effective_side),
            Seen::Region(k) => {
                let a = img.region_appearances.get(k)?;
                let grid = a.grid();
                let mirrored = img.regions.get(k).is_some_and(|r| r.mirrored);
                (
                    if mirrored { grid.dihedral(Dihedral::FlipY) } else { grid },
                    a.effective_side,
                )
            }
        };
        let variant = (hit.entry >> 8) & 0xff;
        let (stored_grid, stored_region_detail) = if variant == 0 {
            (stored.grid(), stored.effective_side)
        } else {
            let [x0, y0, x1, y1] = self.region_rects.get(&hit.entry)?.fractions();
            // The stored region's cells as the stored appearance has them: no finer.
            let cells = |f: f32| ((f * appearance::SIDE as f32).round() as usize).clamp(4, appearance::SIDE);
            let (w, h) = (cells(x1 - x0), cells(y1 - y0));
            let share = (x1 - x0).min(y1 - y0).clamp(0.0, 1.0);
            (
                stored.grid().resample(x0, y0, x1, y1, w, h),
                (f32::from(stored.effective_side) * share).round() as u16,
            )
        };
        let checked = if (checked.w, checked.h) == (stored_grid.w, stored_grid.h) {
            checked
        } else {
            checked.resample(0.0, 0.0, 1.0, 1.0, stored_grid.w, stored_grid.h)
        };
        // A region with less detail than this is a few cells of a thumbnail: neither its hash
        // nor its colours say anything.
        let region = matches!(hit.seen, Seen::Region(_)) || variant != 0;
        if region && checked_region_detail.min(stored_region_detail) < MIN_REGION_DETAIL {
            return Some(Colour::TooSmall);
        }
        let agreement = appearance::compare(&checked, &stored_grid);
        Some(Colour::Checked(ColourCheck {
            residual: agreement.map(|a| a.residual),
            residual_90: agreement.map(|a| a.residual_90),
            checked_detail: whole.effective_side,
            stored_detail: stored.effective_side,
        }))
    }
}

/// A translation cell and its eight neighbours: votes a cell apart still agree.
fn around((cx, cy): Cell) -> impl Iterator<Item = Cell> {
    (-1..=1).flat_map(move |dy| (-1..=1).map(move |dx| (cx + dx, cy + dy)))
}

/// Whether a checked region's hits span more than [`MAX_REGION_TAKEDOWNS`] takedowns: then
/// the region is something many listings share (a seller's logo and name stamped on every
/// photo, a platform's frame), not the photo, and is no evidence.
fn shared_element(hits: &[(u64, u32)]) -> bool {
    let mut takedowns: Vec<u64> = hits.iter().map(|&(entry, _)| entry >> 16).collect();
    takedowns.sort_unstable();
    takedowns.dedup();
    takedowns.len() > MAX_REGION_TAKEDOWNS
}

/// One piece of evidence before it is kept.
struct Found {
    kind: HashKind,
    distance: u32,
    transform: Option<Dihedral>,
    colour: Option<ColourCheck>,
    region: bool,
}

/// Keeps the smallest distance per (takedown, candidate image, stored image, kind).
fn push_best(found: &mut BTreeMap<TakedownId, Evidence>, entry: u64, candidate: usize, f: Found) {
    let (takedown, stored) = (entry >> 16, (entry & 0xff) as u32);
    let ev = found.entry(takedown).or_default();
    let candidate = candidate as u32;
    let new = ImageEvidence {
        candidate_image_index: candidate,
        stored_image_index: stored,
        kind: f.kind,
        distance: f.distance,
        transform: f.transform,
        colour: f.colour,
        region: f.region,
    };
    match ev
        .images
        .iter_mut()
        .find(|e| e.candidate_image_index == candidate && e.stored_image_index == stored && e.kind == f.kind)
    {
        Some(e) if e.distance <= f.distance => {}
        Some(e) => *e = new,
        None => ev.images.push(new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RegionHash;
    use crate::fingerprint::pdq::PdqHash;

    fn image(pdq: Option<u8>) -> ImageFingerprint {
        ImageFingerprint {
            pdq: pdq.map(|_| PdqHash([0x5a; 32])),
            pdq_quality: pdq.unwrap_or(0),
            phash: Some(0x0123_4567_89ab_cdef),
        }
    }

    fn checked(img: ImageFingerprint) -> CandidateImage {
        CandidateImage {
            fingerprint: img,
            pdq_variants: None,
            regions: Vec::new(),
            features: Vec::new(),
            appearance: None,
            region_appearances: Vec::new(),
            thumbnail: None,
        }
    }

    #[test]
    fn a_featureless_images_phash_is_no_evidence() {
        let t = Thresholds::default();
        let mut ix = LiveIndex::default();
        for (id, pdq) in [(1, Some(10)), (2, None), (3, Some(90))] {
            let f = ListingFingerprints {
                images: vec![image(pdq)],
                ..Default::default()
            };
            ix.add(id, &f, t.pdq_min_quality);
        }
        let ids = |img| ix.find(&[checked(img)], None, &t).into_keys().collect::<Vec<_>>();
        // Takedown 1's photo is featureless (PDQ quality 10): neither of its hashes counts.
        assert_eq!(ids(image(None)), [2, 3], "a bare pHash finds the countable ones");
        assert_eq!(ids(image(Some(90))), [2, 3]);
        assert!(
            ids(image(Some(10))).is_empty(),
            "a featureless checked photo's pHash is no evidence"
        );
    }

    #[test]
    fn a_region_many_takedowns_share_is_no_evidence() {
        let t = Thresholds::default();
        let stamp = PdqHash([0x3c; 32]);
        // Four photos at least 128 bits from each other, from the stamp and from the check.
        let own = |k: u8| PdqHash([[0x0f, 0xf0, 0x55, 0xaa][usize::from(k - 1)]; 32]);
        let takedown = |k: u8| ListingFingerprints {
            images: vec![ImageFingerprint {
                pdq: Some(own(k)),
                pdq_quality: 100,
                phash: None,
            }],
            regions: vec![RegionFingerprint {
                image: 0,
                pdq: Some(stamp),
                pdq_quality: 100,
                part: false,
                rect: None,
            }],
            ..Default::default()
        };
        let region_check = |regions: Vec<PdqHash>| CandidateImage {
            regions: regions
                .into_iter()
                .map(|pdq| RegionHash {
                    pdq,
                    quality: 100,
                    part: false,
                    rect: RegionRect([0, 0, 65535, 65535]),
                    mirrored: false,
                })
                .collect(),
            ..checked(ImageFingerprint {
                pdq: Some(PdqHash([0xa5; 32])),
                pdq_quality: 100,
                phash: None,
            })
        };
        let mut ix = LiveIndex::default();
        // One seller's stamp band, cut out as a region, on the photos of four takedowns.
        for k in 1..=4 {
            ix.add(u64::from(k), &takedown(k), t.pdq_min_quality);
        }
        assert!(
            ix.find(&[region_check(vec![stamp])], None, &t).is_empty(),
            "a region shared by {} takedowns is a stamp, not the photo",
            MAX_REGION_TAKEDOWNS + 1
        );
        // A region that is one takedown's photo still counts, beside the shared one.
        let found = ix.find(&[region_check(vec![stamp, own(2)])], None, &t);
        assert_eq!(found.into_keys().collect::<Vec<_>>(), [2]);
        // Up to MAX_REGION_TAKEDOWNS takedowns (a photo taken down again and again) it counts.
        let mut few = LiveIndex::default();
        for k in 1..=MAX_REGION_TAKEDOWNS as u8 {
            few.add(u64::from(k), &takedown(k), t.pdq_min_quality);
        }
        assert_eq!(
            few.find(&[region_check(vec![stamp])], None, &t).len(),
            MAX_REGION_TAKEDOWNS
        );
    }

    #[test]
    fn agreeing_features_must_cover_a_share_of_either_picture() {
        let t = Thresholds::default();
        let mut state = 7u64;
        let mut bits = || -> [u64; 4] {
            std::array::from_fn(|_| {
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let z = (state ^ (state >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z ^ (z >> 29)
            })
        };
        let at = |x: u16, y: u16, bits: [u64; 4]| Feature { x, y, level: 0, bits };
        // A product all over the picture, and a stamp in a band along its bottom (a fifth of
        // the picture's features' box).
        let product: Vec<Feature> = (0..40u16)
            .map(|k| at(20 + k * 7, 20 + (k * 37) % 160, bits()))
            .collect();
        let stamp: Vec<Feature> = (0..16u16)
            .map(|k| at(40 + k * 14, 190 + (k * 11) % 50, bits()))
            .collect();
        let mut ix = LiveIndex::default();
        let stored = ListingFingerprints {
            images: vec![image(Some(90))],
            features: product.iter().chain(&stamp).map(|f| (0, *f)).collect(),
            ..Default::default()
        };
        ix.add(1, &stored, t.pdq_min_quality);
        let check = |features: Vec<Feature>| {
            let c = CandidateImage {
                features,
                ..checked(ImageFingerprint {
                    pdq: None,
                    pdq_quality: 0,
                    phash: None,
                })
            };
            ix.find(&[c], None, &t)
        };
        // Another product under the same stamp: 16 agreeing features, all in the band.
        let other: Vec<Feature> = (0..40u16)
            .map(|k| at(25 + k * 7, 15 + (k * 53) % 165, bits()))
            .collect();
        assert!(
            check(other.iter().chain(&stamp).copied().collect()).is_empty(),
            "a shared stamp is no local evidence"
        );
        // The same photo again: the agreeing features cover it.
        let found = check(product.iter().chain(&stamp).copied().collect());
        let ev = &found[&1].images;
        assert_eq!((ev[0].kind, ev[0].distance), (HashKind::Local, LOCAL_MAX - 56));
        // A crop of the product with the stamp cut off agrees all over itself: a match.
        let crop: Vec<Feature> = product.iter().filter(|f| f.x < 180).copied().collect();
        assert!(crop.len() >= t.local_reupload as usize);
        assert!(!check(crop).is_empty(), "a crop agrees all over the checked picture");
    }

    #[test]
    fn a_part_like_a_part_is_its_own_weaker_kind() {
        let t = Thresholds::default();
        let (block, photo) = (PdqHash([0x3c; 32]), PdqHash([0x0f; 32]));
        let region = |pdq, part| RegionFingerprint {
            image: 0,
            pdq: Some(pdq),
            pdq_quality: 100,
            part,
            rect: None,
        };
        // Takedown 1 stores the block as a part of its picture, takedown 2 as a whole region
        // (a crop, say).
        let takedown = |part| ListingFingerprints {
            images: vec![ImageFingerprint {
                pdq: Some(PdqHash([0xa5; 32])),
                pdq_quality: 100,
                phash: None,
            }],
            regions: vec![region(block, part), region(photo, false)],
            ..Default::default()
        };
        let mut ix = LiveIndex::default();
        for (id, part) in [(1, true), (2, false)] {
            ix.add(id, &takedown(part), t.pdq_min_quality);
        }
        let kinds = |ix: &LiveIndex, part: bool| {
            let c = CandidateImage {
                regions: vec![RegionHash {
                    pdq: block,
                    quality: 100,
                    part,
                    rect: RegionRect([0, 0, 65535, 65535]),
                    mirrored: false,
                }],
                ..checked(ImageFingerprint {
                    pdq: Some(PdqHash([0x55; 32])),
                    pdq_quality: 100,
                    phash: None,
                })
            };
            ix.find(&[c], None, &t)
                .into_iter()
                .map(|(id, ev)| (id, ev.images.iter().map(|e| e.kind).collect::<Vec<_>>()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            kinds(&ix, true),
            [(1, vec![HashKind::PdqPart]), (2, vec![HashKind::Pdq])],
            "only a part against a part is weaker"
        );
        assert_eq!(kinds(&ix, false), [(1, vec![HashKind::Pdq]), (2, vec![HashKind::Pdq])]);
        // Removing a takedown removes its part entries too.
        ix.remove(1, &takedown(true));
        assert_eq!(kinds(&ix, true), [(2, vec![HashKind::Pdq])]);
    }
}
