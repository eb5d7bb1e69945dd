//! Fingerprints: what relist remembers of a listing instead of the listing itself.
//!
//! - [`pdq`]: Meta's 256-bit PDQ hash with its 0-100 quality and its 8 rotations/flips.
//! - [`image`]: decoding with limits and EXIF orientation.
//! - [`phash`]: the 64-bit DCT pHash, bit-compatible with Python's `imagehash.phash`, which
//!   many marketplaces already store.
//! - [`text`]: title normalisation and the 64-bit simhash.
//!
//! Every stored fingerprint is pinned by golden-value tests: a change of output is a change of
//! stored format and needs a schema migration.
pub mod appearance;
pub mod image;
pub mod local;
pub mod pdq;
pub mod phash;
pub mod regions;
pub mod text;

use std::borrow::Cow;

use ::image::{DynamicImage, RgbImage};

use crate::domain::{
    CandidateImage, ImageFingerprint, ImageInput, Listing, ListingFingerprints, RegionFingerprint, RegionHash,
};
use crate::error::{Error, Result};

pub use self::image::DecodeLimits;
pub use self::pdq::Downsample;
pub use self::regions::Side;

/// Computes the fingerprints of listings. Cheap to share; holds no per-call state.
pub struct Fingerprinter {
    limits: DecodeLimits,
    thumbnails: bool,
    detection: Detection,
}

/// Which fingerprints beyond the whole-image PDQ (with its 8 rotations/flips) and pHash are
/// computed. Both are on by default: they catch crops, frames, screenshots, collages, small
/// rotations and overlays (see docs/detection.md for the figures). Off, a checked photo costs
/// its decode, whole-picture hashes and lookups only (about half of the 4.2 ms a 500x375
/// photo costs with both on), and a stored photo keeps 2 index entries instead of ~400: the
/// choice for banks of millions of photos, at the price of those evasions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Detection {
    /// PDQ of trimmed, segmented, cropped (stored) and quartered (checked) regions.
    pub regions: bool,
    /// FAST corners with BRIEF descriptors, matched with a placement vote.
    pub local_features: bool,
}

impl Default for Detection {
    fn default() -> Self {
        Detection {
            regions: true,
            local_features: true,
        }
    }
}

/// Longest side of a kept thumbnail, in pixels.
pub const THUMBNAIL_SIZE: u32 = 160;

impl Fingerprinter {
    pub fn new(limits: DecodeLimits) -> Self {
        Fingerprinter {
            limits,
            thumbnails: false,
            detection: Detection::default(),
        }
    }

    /// Chooses which fingerprints beyond the whole-image hashes are computed.
    pub fn with_detection(mut self, detection: Detection) -> Self {
        self.detection = detection;
        self
    }

    /// Also makes a small JPEG thumbnail of every decoded image.
    pub fn with_thumbnails(mut self, on: bool) -> Self {
        self.thumbnails = on;
        self
    }

    /// Thumbnails of a listing's encoded images, by image index (none when thumbnails are
    /// off): for a check that turned out to be a match, decoded again rather than made for
    /// every check.
    pub fn thumbnails(&self, listing: &Listing) -> Vec<(u8, Vec<u8>)> {
        if !self.thumbnails {
            return Vec::new();
        }
        listing
            .images
            .iter()
            .enumerate()
            .filter_map(|(i, input)| match input {
                ImageInput::Encoded(bytes) => image::decode(bytes, self.limits)
                    .ok()
                    .and_then(|img| image::thumbnail_jpeg(&img, THUMBNAIL_SIZE))
                    .map(|t| (i as u8, t)),
                ImageInput::Hashes { .. } => None,
            })
            .collect()
    }

    /// Decodes and hashes one encoded image.
    pub fn image_bytes(&self, bytes: &[u8], side: Side) -> Result<CandidateImage, image::DecodeError> {
        Ok(self.image(&image::decode(bytes, self.limits)?, side))
    }

    /// Hashes one decoded image and the regions `side` calls for (the evaluation feeds
    /// generated images straight in).
    pub fn image(&self, img: &DynamicImage, side: Side) -> CandidateImage {
        let d = self.detection;
        let layout_needed = d.regions || d.local_features;
        // A takedown's hashes are stored and exchanged: the reference's, bit for bit. A checked
        // picture's are only compared, so its PDQs (whole picture, 8 variants, regions) take
        // the sampled downsample, several times cheaper (see `pdq::Downsample`).
        let mode = match side {
            Side::Stored => Downsample::Exact,
            Side::Checked => Downsample::Sampled,
        };
        // Every decoded picture gets its appearance (the colour check of global-hash matches),
        // so the RGB pixels are always needed.
        let rgb: Cow<RgbImage> = match img {
            DynamicImage::ImageRgb8(rgb) => Cow::Borrowed(rgb),
            other => Cow::Owned(other.to_rgb8()),
        };
        let rgb = Some(rgb);
        let fine = rgb.as_deref().and_then(appearance::Fine::of);
        let luma = rgb
            .as_deref()
            .filter(|_| side == Side::Checked || d.regions)
            .map(pdq::Luma::of_rgb);
        // A stored picture's whole-picture PDQs read its pixels as the reference does (grey
        // and RGBA ones as they are, not through RGB), so they come from `img` itself, not
        // from the RGB luma plane its regions use.
        let (variants, quality) = match (&luma, side) {
            (Some(luma), Side::Checked) => luma.dihedral(mode),
            _ => pdq::pdq_dihedral(img),
        };
        let layout = rgb.as_deref().filter(|_| layout_needed).map(regions::Layout::of);
        let (w, h) = (img.width(), img.height());
        let found: Vec<regions::Region> = match (&luma, &layout) {
            (Some(_), Some(layout)) if d.regions => regions::regions(layout, side),
            _ => Vec::new(),
        };
        // A checked region is also hashed mirrored (a mirrored photo in a new frame); its
        // appearance is cut now, while the pixels are at hand. A stored region's appearance is
        // cut from the stored picture's by its rect when needed.
        let mut regions = Vec::new();
        let mut region_appearances = Vec::new();
        if let Some(luma) = &luma {
            for region in &found {
                let r = region.rect;
                let rect = r.stored(w, h);
                let (x, y, rw, rh) = (r.x as usize, r.y as usize, r.w as usize, r.h as usize);
                let hashes = match side {
                    Side::Stored => vec![(luma.region_hash(x, y, rw, rh, mode), false)],
                    Side::Checked => {
                        let (plain, mirrored) = luma.region_hash_and_mirror(x, y, rw, rh);
                        vec![(plain, false), (mirrored, true)]
                    }
                };
                let seen = match (&fine, side) {
                    (Some(fine), Side::Checked) => Some(fine.appearance(r)),
                    _ => None,
                };
                for (hash, mirrored) in hashes {
                    regions.push(RegionHash {
                        pdq: hash.hash,
                        quality: hash.quality,
                        part: region.part,
                        rect,
                        mirrored,
                    });
                    region_appearances.extend(seen.clone());
                }
            }
        }
        let features = match (&rgb, &layout) {
            (Some(rgb), Some(layout)) if d.local_features => local::features(rgb, layout, side),
            _ => Vec::new(),
        };
        CandidateImage {
            fingerprint: ImageFingerprint {
                pdq: Some(variants[0]),
                pdq_quality: quality,
                phash: Some(phash::phash(img)),
            },
            pdq_variants: Some(variants),
            regions,
            features,
            appearance: fine.as_ref().map(|f| f.appearance(regions::Rect { x: 0, y: 0, w, h })),
            region_appearances,
            // A checked photo's thumbnail is only wanted when the check is recorded as a
            // match, which most are not: [`Fingerprinter::thumbnails`] makes it then.
            thumbnail: (self.thumbnails && side == Side::Stored)
                .then(|| image::thumbnail_jpeg(img, THUMBNAIL_SIZE))
                .flatten(),
        }
    }

    /// Fingerprints every image and the title of a listing. CPU-bound: call it off the async
    /// runtime. Errors name the offending field, e.g. `listing.images[1].data`.
    /// `side` says whether the listing is being registered or checked: each hashes other
    /// regions of its images.
    pub fn listing(&self, listing: &Listing, side: Side) -> Result<(Vec<CandidateImage>, ListingFingerprints)> {
        let mut images = Vec::with_capacity(listing.images.len());
        for (i, input) in listing.images.iter().enumerate() {
            let candidate = match input {
                ImageInput::Encoded(bytes) => self
                    .image_bytes(bytes, side)
                    .map_err(|e| Error::invalid(format!("listing.images[{i}].data"), e.to_string()))?,
                ImageInput::Hashes {
                    pdq,
                    pdq_quality,
                    phash,
                } => CandidateImage {
                    fingerprint: ImageFingerprint {
                        pdq: *pdq,
                        pdq_quality: if pdq.is_some() { pdq_quality.unwrap_or(100) } else { 0 },
                        phash: *phash,
                    },
                    pdq_variants: None,
                    regions: Vec::new(),
                    features: Vec::new(),
                    appearance: None,
                    region_appearances: Vec::new(),
                    thumbnail: None,
                },
            };
            images.push(candidate);
        }
        let fingerprints = listing_fingerprints(&images, &listing.title);
        Ok((images, fingerprints))
    }
}

/// What is stored of a listing, from its hashed images and its title.
pub fn listing_fingerprints(images: &[CandidateImage], title: &str) -> ListingFingerprints {
    let (normalized_title, title_simhash) = text::fingerprint(title);
    ListingFingerprints {
        images: images.iter().map(|c| c.fingerprint).collect(),
        title_simhash,
        normalized_title,
        regions: images
            .iter()
            .enumerate()
            .flat_map(|(i, c)| {
                c.regions.iter().map(move |r| RegionFingerprint {
                    image: i as u8,
                    pdq: Some(r.pdq),
                    pdq_quality: r.quality,
                    part: r.part,
                    rect: Some(r.rect),
                })
            })
            .collect(),
        features: images
            .iter()
            .enumerate()
            .flat_map(|(i, c)| c.features.iter().map(move |f| (i as u8, *f)))
            .collect(),
        appearances: images
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((i as u8, c.appearance.clone()?)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::image::{Rgb, RgbImage};

    /// A generated product shot: a textured object on a white background, with a grey band
    /// above it (so trimming and segmenting have work to do) and a second, smaller object.
    fn product_shot(w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
            let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
            if fy < 0.08 {
                Rgb([120, 120, 120])
            } else if (0.12..0.62).contains(&fx) && (0.15..0.9).contains(&fy) {
                let v = ((x * 7 + y * 3) ^ (x * y / 11)) as u8;
                Rgb([v, v.wrapping_mul(5) / 2, 255 - v / 3])
            } else if (0.7..0.92).contains(&fx) && (0.5..0.8).contains(&fy) {
                let v = ((x / 4 + y / 3) % 7 * 36) as u8;
                Rgb([v, 200 - v / 2, v / 2])
            } else {
                Rgb([250, 250, 250])
            }
        }))
    }

    /// A digest of everything stored or compared of an image, in a fixed byte layout.
    fn digest(c: &CandidateImage) -> (usize, usize, u64) {
        let mut bytes = Vec::new();
        for v in c.pdq_variants.iter().flatten() {
            bytes.extend_from_slice(&v.0);
        }
        bytes.extend_from_slice(&c.fingerprint.phash.unwrap_or(0).to_le_bytes());
        for r in &c.regions {
            bytes.extend_from_slice(&r.pdq.0);
            bytes.push(r.quality);
        }
        for f in &c.features {
            bytes.extend_from_slice(&f.x.to_le_bytes());
            bytes.extend_from_slice(&f.y.to_le_bytes());
            bytes.push(f.level);
            f.bits.iter().for_each(|w| bytes.extend_from_slice(&w.to_le_bytes()));
        }
        (c.regions.len(), c.features.len(), xxhash_rust::xxh3::xxh3_64(&bytes))
    }

    /// Region hashes and local features of takedowns are stored and cannot be recomputed (the
    /// photos are not kept): any change of their output must be deliberate (a version bump),
    /// never a side effect of making them faster. A checked picture's values are pinned too
    /// (its PDQs take the sampled downsample, which is allowed to differ from the exact one
    /// by rounding, see `pdq::tests::sampled_downsample_is_the_exact_one_up_to_rounding`),
    /// so that they change only on purpose.
    #[test]
    fn golden_regions_and_features() {
        let fp = Fingerprinter::new(DecodeLimits::default());
        let got: Vec<(usize, usize, u64)> = [(500, 375), (900, 700)]
            .into_iter()
            .flat_map(|(w, h)| {
                let img = product_shot(w, h);
                [Side::Stored, Side::Checked].map(|side| digest(&fp.image(&img, side)))
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (13, 400, 15095569354647157448),
                (22, 800, 7939359083762466097),
                (13, 400, 2001259517600513258),
                (22, 800, 8708444329118971797),
            ]
        );
    }

    /// Appearances and region rects are stored with a takedown since fingerprint format 3
    /// and are compared against later checks: pinned like the hashes above.
    #[test]
    fn golden_appearances_and_rects() {
        let fp = Fingerprinter::new(DecodeLimits::default());
        let got: Vec<(u16, u64)> = [(500, 375), (900, 700), (60, 80)]
            .into_iter()
            .map(|(w, h)| {
                let c = fp.image(&product_shot(w, h), Side::Stored);
                let a = c.appearance.as_ref().map(|a| (a.effective_side, a.cells.to_vec()));
                let (side, mut bytes) = a.unwrap_or_default();
                for r in &c.regions {
                    r.rect.0.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
                }
                (side, xxhash_rust::xxh3::xxh3_64(&bytes))
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (375, 11330254544742261332),
                (700, 7891643201424550069),
                (60, 8006579452510582087),
            ]
        );
    }
}
