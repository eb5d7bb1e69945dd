//! The match history: every non-clear check is recorded, so analysts can see who re-listed
//! what and when. Records are kept in the store's `matches` tree under time-ordered ids.
use crate::domain::{now_ms, Listing, ListingInfo, Match, MatchId, MatchRecord, Source, Verdict};
use crate::error::Result;
use crate::store::Store;

/// Records a non-clear check and returns its id.
pub fn record(
    store: &Store,
    source: Source,
    candidate: &Listing,
    verdict: Verdict,
    score: f64,
    matches: &[Match],
) -> Result<MatchId> {
    let rec = MatchRecord {
        match_id: store.next_id()?,
        at_ms: now_ms(),
        source,
        candidate: ListingInfo::from(candidate),
        verdict,
        score,
        matches: matches.to_vec(),
    };
    store.insert_match(&rec)?;
    Ok(rec.match_id)
}
