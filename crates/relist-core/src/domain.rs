//! Domain types shared by the core, the store and the API layer. Nothing here depends on the
//! generated protobuf types: `api` converts between the two.
use serde::{Deserialize, Serialize};

use crate::hashes::{Appearance, Dihedral, Feature, PdqHash};

/// The bank's id of a takedown. Never 0 (0 means "none" on the wire).
pub type TakedownId = u64;
/// The history's id of a recorded non-clear check. Never 0.
pub type MatchId = u64;

/// A listing as received, already checked for shape (lengths, hex) by `api`.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    pub listing_id: String,
    /// Lowercased marketplace name.
    pub marketplace: String,
    pub seller_id: String,
    pub title: String,
    pub description: String,
    pub images: Vec<ImageInput>,
}

/// One listing photo as the client sent it.
#[derive(Clone, Debug)]
pub enum ImageInput {
    /// An encoded file, to be decoded and hashed here.
    Encoded(Vec<u8>),
    /// Hashes computed by the client.
    Hashes {
        pdq: Option<PdqHash>,
        pdq_quality: Option<u8>,
        phash: Option<u64>,
    },
}

/// The fingerprints of one image, as stored and reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageFingerprint {
    #[serde(with = "hex_pdq")]
    pub pdq: Option<PdqHash>,
    pub pdq_quality: u8,
    #[serde(with = "hex_u64")]
    pub phash: Option<u64>,
}

/// The fingerprints of a listing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListingFingerprints {
    pub images: Vec<ImageFingerprint>,
    #[serde(with = "hex_u64")]
    pub title_simhash: Option<u64>,
    pub normalized_title: String,
    /// PDQ hashes of regions of the images (trimmed, segments, crops; see
    /// [`crate::fingerprint::regions`]), so crops, frames and collages still match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<RegionFingerprint>,
    /// Local features of the images (image index, feature; see
    /// [`crate::fingerprint::local`]). Kilobytes per image, so they live in the binary
    /// fingerprints record only, not in JSON.
    #[serde(skip)]
    pub features: Vec<(u8, Feature)>,
    /// The appearance of each image decoded from pixels (image index, appearance; see
    /// [`crate::fingerprint::appearance`]), for verifying global-hash matches. Binary
    /// record only, like the features; images sent as hashes have none.
    #[serde(skip)]
    pub appearances: Vec<(u8, Appearance)>,
}

/// The PDQ hash of one region of one image of a listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionFingerprint {
    /// Index of the image in the listing.
    pub image: u8,
    /// Always set by relist; optional like [`ImageFingerprint::pdq`], whose hex form it shares.
    #[serde(with = "hex_pdq")]
    pub pdq: Option<PdqHash>,
    pub pdq_quality: u8,
    /// Only a block of the picture (see [`crate::fingerprint::regions::Region::part`]).
    /// Takedowns registered before this was recorded read as false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub part: bool,
    /// Where the region lies in its picture (see [`RegionRect`]); takedowns registered
    /// before it was recorded have none, and their region matches cannot be verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rect: Option<RegionRect>,
}

/// A region's place in its picture: left, top, right, bottom as fractions of the picture's
/// width and height, in 1/65535ths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionRect(pub [u16; 4]);

impl RegionRect {
    /// Left, top, right, bottom as fractions in 0..=1.
    pub fn fractions(&self) -> [f32; 4] {
        self.0.map(|v| f32::from(v) / 65535.0)
    }
}

/// The PDQ hash of one region of a hashed image, as computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionHash {
    pub pdq: PdqHash,
    pub quality: u8,
    /// Only a block of the picture (see [`crate::fingerprint::regions::Region::part`]).
    pub part: bool,
    /// Where it lies in the picture.
    pub rect: RegionRect,
    /// The hash is of the region's mirror image (checked side only: a mirrored re-upload
    /// in a frame, a screenshot or a collage).
    pub mirrored: bool,
}

/// What a check computes for a candidate image: its fingerprint plus the PDQ hashes of its
/// eight rotations/flips (only when the image itself was sent; a bare hash has no variants).
#[derive(Clone, Debug)]
pub struct CandidateImage {
    pub fingerprint: ImageFingerprint,
    pub pdq_variants: Option<[PdqHash; 8]>,
    /// PDQ hashes (with quality) of regions of the image: stored ones for a takedown, checked
    /// ones for a check (see [`crate::fingerprint::regions::Side`]).
    pub regions: Vec<RegionHash>,
    /// Local features of the image (stored levels or the checked level, as for `regions`).
    pub features: Vec<Feature>,
    /// The appearance of the whole picture (none for an image sent as hashes).
    pub appearance: Option<Appearance>,
    /// The appearance of each of `regions` (checked side only, where the pixels are at hand;
    /// a stored region's is cut from the stored picture's by its rect).
    pub region_appearances: Vec<Appearance>,
    /// A small JPEG for people to look at (history page), when thumbnails are kept.
    pub thumbnail: Option<Vec<u8>>,
}

/// The stored part of a listing (images are kept as fingerprints only).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListingInfo {
    pub listing_id: String,
    pub marketplace: String,
    pub seller_id: String,
    pub title: String,
    pub description: String,
}

impl From<&Listing> for ListingInfo {
    fn from(l: &Listing) -> Self {
        ListingInfo {
            listing_id: l.listing_id.clone(),
            marketplace: l.marketplace.clone(),
            seller_id: l.seller_id.clone(),
            title: l.title.clone(),
            description: l.description.clone(),
        }
    }
}

/// A taken-down listing as stored in the bank. Times are Unix milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Takedown {
    pub id: TakedownId,
    pub listing: ListingInfo,
    pub reason: String,
    pub taken_down_at_ms: i64,
    pub registered_at_ms: i64,
    pub updated_at_ms: i64,
    pub removed_at_ms: Option<i64>,
    pub fingerprints: ListingFingerprints,
}

/// The result of registering a takedown.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Registered {
    pub takedown_id: TakedownId,
    pub updated: bool,
    pub fingerprints: ListingFingerprints,
}

/// How sure relist is that a listing is a re-upload; ordered from weakest to strongest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    Clear,
    Review,
    Reupload,
}

impl Verdict {
    /// Upper-case name as shown to people and scripts.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Clear => "CLEAR",
            Verdict::Review => "REVIEW",
            Verdict::Reupload => "REUPLOAD",
        }
    }
}

/// Which fingerprint an image match was found with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashKind {
    Pdq,
    Phash,
    /// Local features agreeing on one placement; the evidence's distance is
    /// [`LOCAL_MAX`] minus the number of agreeing features (0: [`LOCAL_MAX`] or more).
    Local,
    /// PDQ of a block of the checked picture (a quarter, a segment) against a block of a
    /// stored one. Two listings can share such a block without being one photo (a seller's
    /// logo and name cut out as a block of its own), so alone it is weaker evidence.
    #[serde(rename = "pdq_part")]
    PdqPart,
}

impl HashKind {
    /// The name used in JSON, CSV and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            HashKind::Pdq => "pdq",
            HashKind::Phash => "phash",
            HashKind::Local => "local",
            HashKind::PdqPart => "pdq_part",
        }
    }
}

/// Scale of the distance of [`HashKind::Local`] evidence.
pub const LOCAL_MAX: u32 = 64;

/// Evidence that one candidate image matches one stored image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageEvidence {
    pub candidate_image_index: u32,
    pub stored_image_index: u32,
    pub kind: HashKind,
    pub distance: u32,
    /// For PDQ, the rotation/flip of the candidate that matched.
    #[serde(with = "dihedral_name")]
    pub transform: Option<Dihedral>,
    /// The pixel check of a global-hash match (PDQ, a region's PDQ, pHash), when both
    /// pictures' appearances are known; `None` for local features and hash-only images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub colour: Option<ColourCheck>,
    /// A PDQ match that involves a region of either picture (a crop, a frame's inside, a
    /// collage tile) rather than two whole pictures.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub region: bool,
}

/// What the appearances of the two pictures of a global-hash match said (see
/// [`crate::fingerprint::appearance::compare`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColourCheck {
    /// RMS colour difference over the informative cells after the photometric fit, in RGB
    /// levels; `None` when the pictures carry too little to compare.
    pub residual: Option<f32>,
    /// The same over the best-fitting 90% of those cells (an overlay left out).
    pub residual_90: Option<f32>,
    /// The checked picture's effective shorter side, in pixels: the detail it really
    /// carries (see [`crate::fingerprint::appearance::effective_side`]).
    pub checked_detail: u16,
    /// The same for the stored picture.
    pub stored_detail: u16,
}

/// One takedown a checked listing resembles, with the evidence and its own verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Match {
    pub takedown_id: TakedownId,
    pub marketplace: String,
    pub listing_id: String,
    pub seller_id: String,
    pub images: Vec<ImageEvidence>,
    pub text_distance: Option<u32>,
    pub same_seller: bool,
    pub verdict: Verdict,
    pub score: f64,
}

/// The answer to a check.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckOutcome {
    pub verdict: Verdict,
    pub score: f64,
    pub matches: Vec<Match>,
    /// Set when the result was recorded in the match history (non-clear results).
    pub match_id: Option<MatchId>,
    pub fingerprints: ListingFingerprints,
    /// The answer may miss takedowns recorded on other replicas: this replica has not
    /// reached the shared store lately (never set on a single-box bank).
    pub bank_stale: bool,
}

/// Where a recorded check came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A marketplace's upload-time CheckListing.
    Upload,
    /// A catalog re-check through CheckListings.
    Batch,
}

/// A non-clear check, as kept in the match history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatchRecord {
    pub match_id: MatchId,
    pub at_ms: i64,
    pub source: Source,
    pub candidate: ListingInfo,
    pub verdict: Verdict,
    pub score: f64,
    pub matches: Vec<Match>,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Serialises an optional PDQ hash as its reference hex string.
mod hex_pdq {
    use super::PdqHash;
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<PdqHash>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(h) => s.serialize_some(&h.to_hex()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PdqHash>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => PdqHash::from_hex(&s)
                .map(Some)
                .ok_or_else(|| D::Error::custom("bad pdq hex")),
            None => Ok(None),
        }
    }
}

/// Serialises an optional 64-bit hash as 16 lowercase hex characters.
mod hex_u64 {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(h) => s.serialize_some(&format!("{h:016x}")),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => u64::from_str_radix(&s, 16)
                .map(Some)
                .map_err(|_| D::Error::custom("bad 64-bit hex")),
            None => Ok(None),
        }
    }
}

/// Serialises a dihedral transform by its name.
mod dihedral_name {
    use super::Dihedral;
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Dihedral>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(t) => s.serialize_some(t.name()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Dihedral>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => Dihedral::ALL
                .into_iter()
                .find(|t| t.name() == s)
                .map(Some)
                .ok_or_else(|| D::Error::custom("unknown transform")),
            None => Ok(None),
        }
    }
}
