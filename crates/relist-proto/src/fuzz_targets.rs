//! The bodies of the fuzz targets, as plain functions: the cargo-fuzz crate in `fuzz/` calls
//! them, and so does the stable corpus and mutation test (`tests/it/fuzz_corpus.rs`), so CI
//! fuzzes without a nightly toolchain. Each takes arbitrary bytes and must not panic; the
//! asserts are properties any input must keep.
use prost::Message;
use relist_core::domain::{ImageInput, Listing};
use relist_core::fingerprint::{text, DecodeLimits, Fingerprinter, Side};

use crate::api::{self, pb};

/// Limits of the image target: small, so bombs are refused cheaply and runs stay fast.
pub const FUZZ_DECODE_LIMITS: DecodeLimits = DecodeLimits {
    max_bytes: 4 * 1024 * 1024,
    max_pixels: 4_000_000,
};

/// Decoding (with limits and EXIF orientation), PDQ with its 8 dihedral variants, pHash,
/// regions, local features and the thumbnail of arbitrary bytes, as stored and as checked.
pub fn image_fingerprint(data: &[u8]) {
    let f = Fingerprinter::new(FUZZ_DECODE_LIMITS).with_thumbnails(true);
    for side in [Side::Checked, Side::Stored] {
        if let Ok(c) = f.image_bytes(data, side) {
            assert!(c.fingerprint.pdq_quality <= 100);
            assert!(c.fingerprint.pdq.is_some() && c.fingerprint.phash.is_some());
            let variants = c.pdq_variants.expect("decoded images have dihedral variants");
            assert_eq!(Some(variants[0]), c.fingerprint.pdq);
        }
    }
}

/// Title normalisation and simhash of arbitrary UTF-8 (other bytes are lossily converted, so
/// every input exercises the text path).
pub fn text_simhash(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let normalized = text::normalize(&s);
    assert!(!normalized.starts_with(' ') && !normalized.ends_with(' '));
    assert!(!normalized.contains("  "), "tokens are joined by single spaces");
    let h = text::simhash(&s);
    assert_eq!(h, text::simhash(&s), "simhash is deterministic");
    if normalized.is_empty() {
        assert_eq!(h, None, "nothing left after normalisation has no simhash");
    }
    // The whole listing path, as a check computes it.
    let listing = Listing {
        listing_id: "l".into(),
        marketplace: "m".into(),
        seller_id: String::new(),
        title: s.into_owned(),
        description: String::new(),
        images: Vec::new(),
    };
    let (_, fps) = Fingerprinter::new(FUZZ_DECODE_LIMITS)
        .listing(&listing, Side::Checked)
        .expect("a title alone always fingerprints");
    assert_eq!(fps.title_simhash, h);
    assert_eq!(fps.normalized_title, normalized);
}

/// Request validation and the conversions of both sides of the API. The first byte picks
/// the message; the rest is its protobuf encoding (undecodable bytes are dropped early, as
/// tonic would).
pub fn request(data: &[u8]) {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind % 8 {
        0 => {
            if let Ok(r) = pb::CheckListingRequest::decode(body) {
                listing(r.listing);
            }
        }
        1 => {
            if let Ok(r) = pb::RegisterTakedownRequest::decode(body) {
                listing(r.listing);
                let _ = api::reason_from_proto(&r.reason);
                let _ = api::ms_from_timestamp("taken_down_at", r.taken_down_at);
            }
        }
        2 => {
            if let Ok(r) = pb::QueryMatchesRequest::decode(body) {
                if let Ok((q, _, _)) = api::query_from_proto(&r) {
                    if let (Some(from), Some(to)) = (q.from_ms, q.to_ms) {
                        let _ = to.checked_sub(from);
                    }
                }
            }
        }
        3 => {
            if let Ok(r) = pb::MatchStatsRequest::decode(body) {
                if let Ok((_, _, top)) = api::stats_request_from_proto(&r) {
                    assert!((1..=relist_core::limits::MAX_STATS_TOP).contains(&top));
                }
            }
        }
        4 => {
            if let Ok(r) = pb::ReviewMatchRequest::decode(body) {
                let _ = api::review_from_proto(r);
            }
        }
        5 => {
            if let Ok(r) = pb::CreateKeyRequest::decode(body) {
                let _ = api::create_key_from_proto(&r);
            }
        }
        // Replies, as the CLI reads them from a daemon it may not trust.
        6 => {
            if let Ok(t) = pb::Takedown::decode(body) {
                let _ = api::takedown_from_proto(t);
            }
            if let Ok(c) = pb::CheckListingResponse::decode(body) {
                let _ = api::check_from_proto(c);
            }
        }
        _ => {
            if let Ok(m) = pb::MatchRecord::decode(body) {
                let _ = api::match_view_from_proto(m);
            }
            if let Ok(k) = pb::ApiKey::decode(body) {
                let _ = api::key_from_proto(k);
            }
        }
    }
}

/// A listing through validation; a valid one must keep the limits it was checked against.
fn listing(p: Option<pb::Listing>) {
    let Ok(l) = api::listing_from_proto(p) else {
        return;
    };
    assert!(!l.marketplace.is_empty() && !l.listing_id.is_empty());
    assert_eq!(l.marketplace, l.marketplace.to_lowercase());
    assert!(l.images.len() <= relist_core::matcher::MAX_IMAGES);
    assert!(!l.title.trim().is_empty() || !l.images.is_empty());
    for img in &l.images {
        match img {
            ImageInput::Encoded(b) => assert!(!b.is_empty()),
            ImageInput::Hashes {
                pdq,
                pdq_quality,
                phash,
            } => {
                assert!(pdq.is_some() || phash.is_some());
                assert!(pdq_quality.is_none_or(|q| q <= 100 && pdq.is_some()));
            }
        }
    }
    // Hash-only listings fingerprint without decoding; encoded images go through the
    // image target, not here (it would only repeat it slower).
    if l.images.iter().all(|i| matches!(i, ImageInput::Hashes { .. })) {
        let (_, fps) = Fingerprinter::new(FUZZ_DECODE_LIMITS)
            .listing(&l, Side::Checked)
            .expect("hash-only listings fingerprint");
        assert_eq!(fps.images.len(), l.images.len());
    }
}
