//! The proto <-> domain conversions that need nothing but their input, as `From` / `TryFrom`,
//! so callers write `pb::Takedown::from(&td)` or `Takedown::from(reply)`. The bodies are the
//! functions of [`crate::api`]; conversions that need more (the daemon's limits, a field name
//! for errors, a default) stay functions there.
use relist_core::auth::KeyInfo;
use relist_core::domain::{CheckOutcome, Listing, ListingFingerprints, Registered, Takedown};
use relist_core::error::Error;
use relist_core::exchange::ExportedPdq;
use relist_core::fingerprint::pdq::PdqHash;
use relist_core::history::{MatchView, Page, Stats};

use crate::api::{self, pb};

/// `impl From<$from> for $to` by calling `$f`.
macro_rules! from_via {
    ($($from:ty => $to:ty = $f:path;)*) => {$(
        impl From<$from> for $to {
            fn from(v: $from) -> Self {
                $f(v)
            }
        }
    )*};
}

// Replies, as the daemon sends them.
from_via! {
    &ListingFingerprints => pb::Fingerprints = api::fingerprints_to_proto;
    &Registered => pb::RegisterTakedownResponse = api::registered_to_proto;
    &Takedown => pb::Takedown = api::takedown_to_proto;
    &CheckOutcome => pb::CheckListingResponse = api::check_to_proto;
    &MatchView => pb::MatchRecord = api::match_view_to_proto;
    &Page => pb::QueryMatchesResponse = api::page_to_proto;
    &Stats => pb::MatchStatsResponse = api::stats_to_proto;
    &KeyInfo => pb::ApiKey = api::key_to_proto;
    ExportedPdq => pb::ExportedHash = api::exported_to_proto;
}

// Replies, as a client reads them: whatever a daemon sends reads as something.
from_via! {
    pb::RegisterTakedownResponse => Registered = api::registered_from_proto;
    pb::Takedown => Takedown = api::takedown_from_proto;
    pb::CheckListingResponse => CheckOutcome = api::check_from_proto;
    pb::MatchRecord => MatchView = api::match_view_from_proto;
    pb::MatchStatsResponse => Stats = api::stats_from_proto;
}

/// A request's listing, validated under the default limits (the daemon applies its
/// configured ones with [`api::listing_from_proto_limited`]).
impl TryFrom<pb::Listing> for Listing {
    type Error = Error;

    fn try_from(p: pb::Listing) -> Result<Self, Error> {
        api::listing_from_proto(Some(p))
    }
}

impl TryFrom<pb::ApiKey> for KeyInfo {
    type Error = Error;

    fn try_from(k: pb::ApiKey) -> Result<Self, Error> {
        api::key_from_proto(k)
    }
}

/// An exported hash as `relist export` reads it; a malformed hash is refused.
impl TryFrom<pb::ExportedHash> for ExportedPdq {
    type Error = Error;

    fn try_from(p: pb::ExportedHash) -> Result<Self, Error> {
        Ok(ExportedPdq {
            pdq: PdqHash::from_hex(&p.pdq)
                .ok_or_else(|| Error::invalid("pdq", format!("{:?} is not a PDQ hash (64 hex characters)", p.pdq)))?,
            takedown_id: p.takedown_id,
            marketplace: p.marketplace,
            reason: p.reason,
        })
    }
}
