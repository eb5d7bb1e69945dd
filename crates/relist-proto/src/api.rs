//! The gRPC boundary: generated protobuf types, their conversion to and from domain types,
//! request validation, and the mapping of library errors to gRPC status codes. This is the
//! only module that knows both worlds.
use prost_types::Timestamp;
use tonic::Status;

use relist_core::auth::{KeyInfo, Role};
use relist_core::domain::{
    CheckOutcome, ColourCheck, HashKind, ImageEvidence, ImageFingerprint, ImageInput, Listing, ListingFingerprints,
    ListingInfo, Match, MatchRecord, Registered, Source, Takedown, Verdict,
};
use relist_core::error::Error;
use relist_core::fingerprint::pdq::{Dihedral, PdqHash};
use relist_core::history::{Label, MatchView, Page, Query, Review, Stats};
use relist_core::limits::{
    RequestLimits, MAX_LISTING_ID_BYTES, MAX_MARKETPLACE_BYTES, MAX_REASON_CHARS, MAX_SELLER_ID_BYTES, MAX_STATS_TOP,
};
use relist_core::matcher::MAX_IMAGES;

/// Types and service stubs generated from `proto/relist/v1/relist.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("relist.v1");
}

/// Encoded descriptor set of our protos, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/relist_descriptor.bin"));

/// The one mapping from library errors to gRPC status codes.
pub fn status(e: Error) -> Status {
    match &e {
        Error::InvalidArgument { .. } => Status::invalid_argument(e.to_string()),
        Error::NotFound(_) => Status::not_found(e.to_string()),
        Error::ResourceExhausted(_) => Status::resource_exhausted(e.to_string()),
        Error::Unauthenticated(_) => Status::unauthenticated(e.to_string()),
        Error::PermissionDenied(_) => Status::permission_denied(e.to_string()),
        Error::DeadlineExceeded(_) => Status::deadline_exceeded(e.to_string()),
        Error::Unavailable(_) => {
            tracing::warn!(error = %e, "request refused");
            Status::unavailable(e.to_string())
        }
        Error::Conflict(_) => Status::aborted(e.to_string()),
        Error::DiskFull(_) => {
            tracing::error!(error = %e, "write refused");
            Status::resource_exhausted(e.to_string())
        }
        Error::Storage(_) | Error::Corrupt(_) | Error::Internal(_) => {
            tracing::error!(error = %e, "request failed");
            Status::unavailable(e.to_string())
        }
    }
}

fn check_len(field: &str, value: &str, max: usize, unit_chars: bool) -> Result<(), Error> {
    let n = if unit_chars { value.chars().count() } else { value.len() };
    if n > max {
        let unit = if unit_chars { "characters" } else { "bytes" };
        return Err(Error::invalid(field, format!("is {n} {unit}, over the limit of {max}")));
    }
    Ok(())
}

fn parse_hex_u64(field: &str, s: &str) -> Result<u64, Error> {
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::invalid(field, "must be exactly 16 hex characters"));
    }
    u64::from_str_radix(s, 16).map_err(|_| Error::invalid(field, "must be exactly 16 hex characters"))
}

/// Validates a request's listing under the default limits (see [`listing_from_proto_limited`]).
pub fn listing_from_proto(p: Option<pb::Listing>) -> Result<Listing, Error> {
    listing_from_proto_limited(p, &RequestLimits::default())
}

/// Validates a request's listing under the daemon's configured limits and turns it into a
/// domain [`Listing`].
pub fn listing_from_proto_limited(p: Option<pb::Listing>, limits: &RequestLimits) -> Result<Listing, Error> {
    let p = p.ok_or_else(|| Error::invalid("listing", "is required"))?;
    let marketplace = p.marketplace.trim().to_lowercase();
    if marketplace.is_empty() {
        return Err(Error::invalid("listing.marketplace", "is required"));
    }
    if marketplace.contains('\0') {
        return Err(Error::invalid("listing.marketplace", "must not contain NUL"));
    }
    check_len("listing.marketplace", &marketplace, MAX_MARKETPLACE_BYTES, false)?;
    if p.listing_id.is_empty() {
        return Err(Error::invalid("listing.listing_id", "is required"));
    }
    check_len("listing.listing_id", &p.listing_id, MAX_LISTING_ID_BYTES, false)?;
    check_len("listing.seller_id", &p.seller_id, MAX_SELLER_ID_BYTES, false)?;
    check_len("listing.title", &p.title, limits.max_title_chars, true)?;
    check_len(
        "listing.description",
        &p.description,
        limits.max_description_chars,
        true,
    )?;
    let max_images = limits.max_images.min(MAX_IMAGES);
    if p.images.len() > max_images {
        return Err(Error::invalid(
            "listing.images",
            format!("has {} images, over the limit of {max_images}", p.images.len()),
        ));
    }
    if p.title.trim().is_empty() && p.images.is_empty() {
        return Err(Error::invalid("listing", "needs a title or at least one image"));
    }
    let images = p
        .images
        .into_iter()
        .enumerate()
        .map(|(i, img)| image_from_proto(i, img))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Listing {
        listing_id: p.listing_id,
        marketplace,
        seller_id: p.seller_id,
        title: p.title,
        description: p.description,
        images,
    })
}

fn image_from_proto(i: usize, img: pb::Image) -> Result<ImageInput, Error> {
    let has_hashes = !img.pdq.is_empty() || !img.phash.is_empty();
    if !img.data.is_empty() {
        if has_hashes {
            return Err(Error::invalid(
                format!("listing.images[{i}]"),
                "send either data or precomputed hashes, not both",
            ));
        }
        return Ok(ImageInput::Encoded(img.data));
    }
    if !has_hashes {
        return Err(Error::invalid(
            format!("listing.images[{i}]"),
            "needs data or a pdq or phash hash",
        ));
    }
    let pdq =
        if img.pdq.is_empty() {
            None
        } else {
            Some(PdqHash::from_hex(&img.pdq).ok_or_else(|| {
                Error::invalid(format!("listing.images[{i}].pdq"), "must be exactly 64 hex characters")
            })?)
        };
    let phash = if img.phash.is_empty() {
        None
    } else {
        Some(parse_hex_u64(&format!("listing.images[{i}].phash"), &img.phash)?)
    };
    let pdq_quality = match img.pdq_quality {
        Some(q) if q > 100 => {
            return Err(Error::invalid(
                format!("listing.images[{i}].pdq_quality"),
                "must be 0-100",
            ));
        }
        Some(q) if pdq.is_none() => {
            let _ = q;
            return Err(Error::invalid(
                format!("listing.images[{i}].pdq_quality"),
                "given without a pdq hash",
            ));
        }
        q => q.map(|q| q as u8),
    };
    Ok(ImageInput::Hashes {
        pdq,
        pdq_quality,
        phash,
    })
}

/// Validates a free-text reason.
pub fn reason_from_proto(reason: &str) -> Result<(), Error> {
    check_len("reason", reason, MAX_REASON_CHARS, true)
}

/// Milliseconds since the Unix epoch from an optional timestamp.
pub fn ms_from_timestamp(field: &str, t: Option<Timestamp>) -> Result<Option<i64>, Error> {
    match t {
        None => Ok(None),
        Some(t) if !(0..1_000_000_000).contains(&t.nanos) => Err(Error::invalid(field, "nanos out of range")),
        Some(t) => t
            .seconds
            .checked_mul(1000)
            .and_then(|ms| ms.checked_add(i64::from(t.nanos / 1_000_000)))
            .map(Some)
            .ok_or_else(|| Error::invalid(field, "out of range")),
    }
}

/// A timestamp from milliseconds since the Unix epoch.
pub fn timestamp(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// Milliseconds of a reply's timestamp; saturating, since a reply's seconds may be anything
/// (found by fuzzing: `seconds * 1000` overflowed on i64::MAX).
fn ts_ms(t: &Option<Timestamp>) -> Option<i64> {
    t.as_ref().map(|t| {
        t.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(t.nanos / 1_000_000))
    })
}

// ---- domain -> proto (server replies) ----

pub fn fingerprints_to_proto(f: &ListingFingerprints) -> pb::Fingerprints {
    pb::Fingerprints {
        images: f
            .images
            .iter()
            .map(|i| pb::ImageFingerprint {
                pdq: i.pdq.map(|p| p.to_hex()).unwrap_or_default(),
                pdq_quality: u32::from(i.pdq_quality),
                phash: i.phash.map(|h| format!("{h:016x}")).unwrap_or_default(),
            })
            .collect(),
        title_simhash: f.title_simhash.map(|h| format!("{h:016x}")).unwrap_or_default(),
        normalized_title: f.normalized_title.clone(),
    }
}

pub fn registered_to_proto(r: &Registered) -> pb::RegisterTakedownResponse {
    pb::RegisterTakedownResponse {
        takedown_id: r.takedown_id,
        updated: r.updated,
        fingerprints: Some(fingerprints_to_proto(&r.fingerprints)),
    }
}

pub fn takedown_to_proto(t: &Takedown) -> pb::Takedown {
    pb::Takedown {
        takedown_id: t.id,
        listing: Some(pb::Listing {
            listing_id: t.listing.listing_id.clone(),
            marketplace: t.listing.marketplace.clone(),
            seller_id: t.listing.seller_id.clone(),
            title: t.listing.title.clone(),
            description: t.listing.description.clone(),
            images: Vec::new(),
        }),
        reason: t.reason.clone(),
        taken_down_at: Some(timestamp(t.taken_down_at_ms)),
        registered_at: Some(timestamp(t.registered_at_ms)),
        updated_at: Some(timestamp(t.updated_at_ms)),
        removed_at: t.removed_at_ms.map(timestamp),
        fingerprints: Some(fingerprints_to_proto(&t.fingerprints)),
    }
}

fn verdict_to_proto(v: Verdict) -> pb::Verdict {
    match v {
        Verdict::Clear => pb::Verdict::Clear,
        Verdict::Review => pb::Verdict::Review,
        Verdict::Reupload => pb::Verdict::Reupload,
    }
}

pub fn check_to_proto(c: &CheckOutcome) -> pb::CheckListingResponse {
    pb::CheckListingResponse {
        verdict: verdict_to_proto(c.verdict) as i32,
        score: c.score,
        matches: c.matches.iter().map(match_to_proto).collect(),
        match_id: c.match_id.unwrap_or(0),
        fingerprints: Some(fingerprints_to_proto(&c.fingerprints)),
        bank_stale: c.bank_stale,
    }
}

// ---- proto -> domain (client side: the CLI prints domain types) ----

fn fingerprints_from_proto(f: Option<pb::Fingerprints>) -> ListingFingerprints {
    let f = f.unwrap_or_default();
    ListingFingerprints {
        images: f
            .images
            .iter()
            .map(|i| ImageFingerprint {
                pdq: PdqHash::from_hex(&i.pdq),
                pdq_quality: i.pdq_quality.min(100) as u8,
                phash: u64::from_str_radix(&i.phash, 16).ok(),
            })
            .collect(),
        title_simhash: u64::from_str_radix(&f.title_simhash, 16).ok(),
        normalized_title: f.normalized_title,
        regions: Vec::new(),
        features: Vec::new(),
        appearances: Vec::new(),
    }
}

fn verdict_from_proto(v: i32) -> Verdict {
    match pb::Verdict::try_from(v) {
        Ok(pb::Verdict::Reupload) => Verdict::Reupload,
        Ok(pb::Verdict::Review) => Verdict::Review,
        _ => Verdict::Clear,
    }
}

pub fn registered_from_proto(r: pb::RegisterTakedownResponse) -> Registered {
    Registered {
        takedown_id: r.takedown_id,
        updated: r.updated,
        fingerprints: fingerprints_from_proto(r.fingerprints),
    }
}

pub fn takedown_from_proto(t: pb::Takedown) -> Takedown {
    let l = t.listing.unwrap_or_default();
    Takedown {
        id: t.takedown_id,
        listing: ListingInfo {
            listing_id: l.listing_id,
            marketplace: l.marketplace,
            seller_id: l.seller_id,
            title: l.title,
            description: l.description,
        },
        reason: t.reason,
        taken_down_at_ms: ts_ms(&t.taken_down_at).unwrap_or(0),
        registered_at_ms: ts_ms(&t.registered_at).unwrap_or(0),
        updated_at_ms: ts_ms(&t.updated_at).unwrap_or(0),
        removed_at_ms: ts_ms(&t.removed_at),
        fingerprints: fingerprints_from_proto(t.fingerprints),
    }
}

pub fn check_from_proto(c: pb::CheckListingResponse) -> CheckOutcome {
    CheckOutcome {
        verdict: verdict_from_proto(c.verdict),
        score: c.score,
        matches: c.matches.into_iter().map(match_from_proto).collect(),
        match_id: (c.match_id != 0).then_some(c.match_id),
        fingerprints: fingerprints_from_proto(c.fingerprints),
        bank_stale: c.bank_stale,
    }
}

fn match_to_proto(m: &Match) -> pb::Match {
    pb::Match {
        takedown_id: m.takedown_id,
        marketplace: m.marketplace.clone(),
        listing_id: m.listing_id.clone(),
        seller_id: m.seller_id.clone(),
        images: m
            .images
            .iter()
            .map(|e| pb::ImageEvidence {
                candidate_image_index: e.candidate_image_index,
                stored_image_index: e.stored_image_index,
                hash_kind: kind_to_proto(e.kind) as i32,
                distance: e.distance,
                transform: e.transform.map(|t| t.name().to_string()).unwrap_or_default(),
                colour: e.colour.map(|c| pb::ColourCheck {
                    residual: c.residual,
                    residual_90: c.residual_90,
                    checked_detail: u32::from(c.checked_detail),
                    stored_detail: u32::from(c.stored_detail),
                }),
                region: e.region,
            })
            .collect(),
        text_distance: m.text_distance,
        same_seller: m.same_seller,
        verdict: verdict_to_proto(m.verdict) as i32,
        score: m.score,
    }
}

fn kind_to_proto(k: HashKind) -> pb::HashKind {
    match k {
        HashKind::Pdq => pb::HashKind::Pdq,
        HashKind::Phash => pb::HashKind::Phash,
        HashKind::Local => pb::HashKind::Local,
        HashKind::PdqPart => pb::HashKind::PdqPart,
    }
}

/// The hash kind of a proto evidence; unknown values (a newer daemon) read as PDQ.
pub fn kind_from_proto(k: i32) -> HashKind {
    match pb::HashKind::try_from(k) {
        Ok(pb::HashKind::Phash) => HashKind::Phash,
        Ok(pb::HashKind::Local) => HashKind::Local,
        Ok(pb::HashKind::PdqPart) => HashKind::PdqPart,
        _ => HashKind::Pdq,
    }
}

fn match_from_proto(m: pb::Match) -> Match {
    Match {
        takedown_id: m.takedown_id,
        marketplace: m.marketplace,
        listing_id: m.listing_id,
        seller_id: m.seller_id,
        images: m
            .images
            .into_iter()
            .map(|e| ImageEvidence {
                candidate_image_index: e.candidate_image_index,
                stored_image_index: e.stored_image_index,
                kind: kind_from_proto(e.hash_kind),
                distance: e.distance,
                transform: Dihedral::ALL.into_iter().find(|d| d.name() == e.transform),
                colour: e.colour.map(|c| ColourCheck {
                    residual: c.residual,
                    residual_90: c.residual_90,
                    checked_detail: c.checked_detail.min(u32::from(u16::MAX)) as u16,
                    stored_detail: c.stored_detail.min(u32::from(u16::MAX)) as u16,
                }),
                region: e.region,
            })
            .collect(),
        text_distance: m.text_distance,
        same_seller: m.same_seller,
        verdict: verdict_from_proto(m.verdict),
        score: m.score,
    }
}

// ---- match history ----

fn label_to_proto(l: Label) -> pb::ReviewLabel {
    match l {
        Label::Unreviewed => pb::ReviewLabel::Unreviewed,
        Label::Confirmed => pb::ReviewLabel::Confirmed,
        Label::FalsePositive => pb::ReviewLabel::FalsePositive,
    }
}

/// A review label from a request; `None` for UNSPECIFIED.
pub fn label_from_proto(field: &str, v: i32) -> Result<Option<Label>, Error> {
    match pb::ReviewLabel::try_from(v) {
        Ok(pb::ReviewLabel::Unspecified) => Ok(None),
        Ok(pb::ReviewLabel::Unreviewed) => Ok(Some(Label::Unreviewed)),
        Ok(pb::ReviewLabel::Confirmed) => Ok(Some(Label::Confirmed)),
        Ok(pb::ReviewLabel::FalsePositive) => Ok(Some(Label::FalsePositive)),
        Err(_) => Err(Error::invalid(field, format!("unknown review label {v}"))),
    }
}

fn source_to_proto(s: Source) -> pb::Source {
    match s {
        Source::Upload => pb::Source::Upload,
        Source::Batch => pb::Source::Batch,
    }
}

fn source_from_proto(v: i32) -> Result<Option<Source>, Error> {
    match pb::Source::try_from(v) {
        Ok(pb::Source::Unspecified) => Ok(None),
        Ok(pb::Source::Upload) => Ok(Some(Source::Upload)),
        Ok(pb::Source::Batch) => Ok(Some(Source::Batch)),
        Err(_) => Err(Error::invalid("source", format!("unknown source {v}"))),
    }
}

fn verdict_filter_from_proto(v: i32) -> Result<Option<Verdict>, Error> {
    match pb::Verdict::try_from(v) {
        Ok(pb::Verdict::Unspecified) => Ok(None),
        Ok(pb::Verdict::Clear) => Ok(Some(Verdict::Clear)),
        Ok(pb::Verdict::Review) => Ok(Some(Verdict::Review)),
        Ok(pb::Verdict::Reupload) => Ok(Some(Verdict::Reupload)),
        Err(_) => Err(Error::invalid("verdict", format!("unknown verdict {v}"))),
    }
}

pub fn match_view_to_proto(v: &MatchView) -> pb::MatchRecord {
    let r = &v.record;
    pb::MatchRecord {
        match_id: r.match_id,
        at: Some(timestamp(r.at_ms)),
        source: source_to_proto(r.source) as i32,
        candidate: Some(pb::Listing {
            listing_id: r.candidate.listing_id.clone(),
            marketplace: r.candidate.marketplace.clone(),
            seller_id: r.candidate.seller_id.clone(),
            title: r.candidate.title.clone(),
            description: r.candidate.description.clone(),
            images: Vec::new(),
        }),
        verdict: verdict_to_proto(r.verdict) as i32,
        score: r.score,
        matches: r.matches.iter().map(match_to_proto).collect(),
        label: label_to_proto(v.label) as i32,
        reviews: v
            .reviews
            .iter()
            .map(|rv| pb::Review {
                label: label_to_proto(rv.label) as i32,
                reviewer: rv.reviewer.clone(),
                note: rv.note.clone(),
                at: Some(timestamp(rv.at_ms)),
            })
            .collect(),
    }
}

pub fn match_view_from_proto(p: pb::MatchRecord) -> MatchView {
    let c = p.candidate.unwrap_or_default();
    let label = |v: i32| label_from_proto("label", v).ok().flatten().unwrap_or(Label::Unreviewed);
    MatchView {
        record: MatchRecord {
            match_id: p.match_id,
            at_ms: ts_ms(&p.at).unwrap_or(0),
            source: source_from_proto(p.source).ok().flatten().unwrap_or(Source::Upload),
            candidate: ListingInfo {
                listing_id: c.listing_id,
                marketplace: c.marketplace,
                seller_id: c.seller_id,
                title: c.title,
                description: c.description,
            },
            verdict: verdict_from_proto(p.verdict),
            score: p.score,
            matches: p.matches.into_iter().map(match_from_proto).collect(),
        },
        label: label(p.label),
        reviews: p
            .reviews
            .into_iter()
            .map(|r| Review {
                label: label(r.label),
                reviewer: r.reviewer,
                note: r.note,
                at_ms: ts_ms(&r.at).unwrap_or(0),
            })
            .collect(),
    }
}

/// Validates a history query.
pub fn query_from_proto(r: &pb::QueryMatchesRequest) -> Result<(Query, usize, Option<String>), Error> {
    let q = Query {
        from_ms: ms_from_timestamp("from", r.from)?,
        to_ms: ms_from_timestamp("to", r.to)?,
        takedown_id: (r.takedown_id != 0).then_some(r.takedown_id),
        marketplace: (!r.marketplace.is_empty()).then(|| r.marketplace.trim().to_lowercase()),
        seller_id: (!r.seller_id.is_empty()).then(|| r.seller_id.clone()),
        verdict: verdict_filter_from_proto(r.verdict)?,
        min_score: (r.min_score != 0.0).then_some(r.min_score),
        label: label_from_proto("label", r.label)?,
        source: source_from_proto(r.source)?,
    };
    check_len(
        "marketplace",
        q.marketplace.as_deref().unwrap_or(""),
        MAX_MARKETPLACE_BYTES,
        false,
    )?;
    check_len(
        "seller_id",
        q.seller_id.as_deref().unwrap_or(""),
        MAX_SELLER_ID_BYTES,
        false,
    )?;
    Ok((
        q,
        r.page_size as usize,
        (!r.page_token.is_empty()).then(|| r.page_token.clone()),
    ))
}

pub fn page_to_proto(p: &Page) -> pb::QueryMatchesResponse {
    pb::QueryMatchesResponse {
        records: p.records.iter().map(match_view_to_proto).collect(),
        next_page_token: p.next_page_token.clone().unwrap_or_default(),
    }
}

/// Validates a stats request: (from, to, top).
pub fn stats_request_from_proto(r: &pb::MatchStatsRequest) -> Result<(i64, i64, usize), Error> {
    let from = ms_from_timestamp("from", r.from)?.ok_or_else(|| Error::invalid("from", "is required"))?;
    let to = ms_from_timestamp("to", r.to)?.ok_or_else(|| Error::invalid("to", "is required"))?;
    let top = match r.top as usize {
        0 => 10,
        n if n > MAX_STATS_TOP => {
            return Err(Error::invalid(
                "top",
                format!("is {n}, over the maximum of {MAX_STATS_TOP}"),
            ));
        }
        n => n,
    };
    Ok((from, to, top))
}

fn named(v: &[(String, u64)]) -> Vec<pb::NamedCount> {
    v.iter()
        .map(|(name, count)| pb::NamedCount {
            name: name.clone(),
            count: *count,
        })
        .collect()
}

pub fn stats_to_proto(s: &Stats) -> pb::MatchStatsResponse {
    pb::MatchStatsResponse {
        total: s.total,
        per_day: named(&s.per_day),
        per_marketplace: named(&s.per_marketplace),
        per_verdict: named(&s.per_verdict),
        top_takedowns: s
            .top_takedowns
            .iter()
            .map(|(takedown_id, count)| pb::TakedownCount {
                takedown_id: *takedown_id,
                count: *count,
            })
            .collect(),
        top_sellers: named(&s.top_sellers),
    }
}

pub fn stats_from_proto(p: pb::MatchStatsResponse) -> Stats {
    let unnamed = |v: Vec<pb::NamedCount>| v.into_iter().map(|n| (n.name, n.count)).collect();
    Stats {
        total: p.total,
        per_day: unnamed(p.per_day),
        per_marketplace: unnamed(p.per_marketplace),
        per_verdict: unnamed(p.per_verdict),
        top_takedowns: p.top_takedowns.into_iter().map(|t| (t.takedown_id, t.count)).collect(),
        top_sellers: unnamed(p.top_sellers),
    }
}

/// Validates a review request: (match id, label, reviewer, note).
pub fn review_from_proto(r: pb::ReviewMatchRequest) -> Result<(u64, Label, String, String), Error> {
    if r.match_id == 0 {
        return Err(Error::invalid("match_id", "is required"));
    }
    let label = label_from_proto("label", r.label)?.ok_or_else(|| Error::invalid("label", "is required"))?;
    if r.reviewer.trim().is_empty() {
        return Err(Error::invalid("reviewer", "is required"));
    }
    check_len("reviewer", &r.reviewer, 256, false)?;
    check_len("note", &r.note, 2_000, true)?;
    Ok((r.match_id, label, r.reviewer, r.note))
}

// ---- hash exchange ----

pub fn exported_to_proto(h: relist_core::exchange::ExportedPdq) -> pb::ExportedHash {
    pb::ExportedHash {
        pdq: h.pdq.to_hex(),
        takedown_id: h.takedown_id,
        marketplace: h.marketplace,
        reason: h.reason,
    }
}

// ---- API keys ----

pub fn key_to_proto(k: &KeyInfo) -> pb::ApiKey {
    pb::ApiKey {
        key_id: k.id,
        name: k.name.clone(),
        role: k.role.as_str().to_string(),
        marketplace: k.marketplace.clone().unwrap_or_default(),
        created_at: Some(timestamp(k.created_at_ms)),
        revoked_at: k.revoked_at_ms.map(timestamp),
    }
}

pub fn key_from_proto(k: pb::ApiKey) -> Result<KeyInfo, Error> {
    Ok(KeyInfo {
        id: k.key_id,
        role: Role::parse(&k.role).ok_or_else(|| Error::invalid("role", format!("unknown role {:?}", k.role)))?,
        name: k.name,
        marketplace: (!k.marketplace.is_empty()).then_some(k.marketplace),
        created_at_ms: ts_ms(&k.created_at).unwrap_or(0),
        revoked_at_ms: ts_ms(&k.revoked_at),
    })
}

/// Validates a key-creation request: (role, marketplace, name).
pub fn create_key_from_proto(r: &pb::CreateKeyRequest) -> Result<(Role, Option<String>, String), Error> {
    let role = Role::parse(&r.role).ok_or_else(|| {
        Error::invalid(
            "role",
            format!("{:?} is not one of checker, writer, analyst, admin", r.role),
        )
    })?;
    Ok((
        role,
        (!r.marketplace.trim().is_empty()).then(|| r.marketplace.clone()),
        r.name.clone(),
    ))
}

// ---- takedown listing ----

/// A validated ListTakedowns request (see [`takedowns_query_from_proto`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TakedownsQuery {
    /// Lowercased and trimmed, as registration stores it.
    pub marketplace: Option<String>,
    pub listing_id: Option<String>,
    pub include_removed: bool,
    /// As asked (0: the default); the daemon checks it against its maximum.
    pub page_size: usize,
    /// The last takedown id of the previous page (0 for the first page).
    pub after: u64,
}

/// Validates a ListTakedowns request.
pub fn takedowns_query_from_proto(r: &pb::ListTakedownsRequest) -> Result<TakedownsQuery, Error> {
    let marketplace = r.marketplace.trim().to_lowercase();
    check_len("marketplace", &marketplace, MAX_MARKETPLACE_BYTES, false)?;
    check_len("listing_id", &r.listing_id, MAX_LISTING_ID_BYTES, false)?;
    if !r.listing_id.is_empty() && marketplace.is_empty() {
        return Err(Error::invalid(
            "listing_id",
            "needs marketplace: a listing id is unique per marketplace only",
        ));
    }
    let after = if r.page_token.is_empty() {
        0
    } else {
        r.page_token
            .strip_prefix("t")
            .and_then(|id| id.parse::<u64>().ok())
            .ok_or_else(|| Error::invalid("page_token", "is not a token this server issued"))?
    };
    Ok(TakedownsQuery {
        marketplace: (!marketplace.is_empty()).then_some(marketplace),
        listing_id: (!r.listing_id.is_empty()).then(|| r.listing_id.clone()),
        include_removed: r.include_removed,
        page_size: r.page_size as usize,
        after,
    })
}

/// A page of takedowns as ListTakedowns answers it; `last` is where the next page starts.
pub fn takedowns_to_proto(page: &[Takedown], last: Option<u64>) -> pb::ListTakedownsResponse {
    pb::ListTakedownsResponse {
        takedowns: page.iter().map(takedown_to_proto).collect(),
        next_page_token: last.map(|id| format!("t{id}")).unwrap_or_default(),
    }
}
