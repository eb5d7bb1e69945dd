//! The system of record for takedowns, behind one interface with two implementations: the
//! embedded sled [`crate::store::Store`] (the default, one box) and PostgreSQL (crate
//! `relist-pg`, many replicas sharing one bank).
//!
//! With sled the record *is* the local store. With a shared record every replica keeps a
//! local mirror of it (a sled store in its data dir) and its own in-memory index, both fed
//! from the record's **change log**: a gap-free sequence of committed writes, read in order
//! (see `docs/scale-out.md` for why the sequence is gap-free). Checks therefore never wait on
//! the shared record, and go on from the mirror while it is unreachable.
use std::time::Duration;

use crate::domain::{ListingFingerprints, Takedown, TakedownId};
use crate::error::Result;

/// One committed write of the change log: the takedown as it is in the record *now* (a
/// later change to the same takedown may already be folded in; applying a change is an
/// overwrite, so replaying one is harmless).
#[derive(Clone, Debug)]
pub struct Change {
    /// Position in the change log: consecutive, in commit order, starting at 1.
    pub seq: u64,
    /// The takedown with its full fingerprints record (local features included).
    pub takedown: Takedown,
}

/// Where takedowns are recorded. Every method may block (disk, network).
pub trait Storage: Send + Sync {
    /// Where, for messages and logs (`sled at /var/lib/relist`, `postgres://relist@db:5432/relist`).
    fn describe(&self) -> String;

    /// A fresh takedown id, unique across every replica of the bank; never 0.
    fn next_takedown_id(&self) -> Result<TakedownId>;

    /// The takedown registered for this listing, if any (removed ones included).
    fn takedown_id_by_listing(&self, marketplace: &str, listing_id: &str) -> Result<Option<TakedownId>>;

    /// A recorded takedown (removed ones included).
    fn takedown(&self, id: TakedownId) -> Result<Option<Takedown>>;

    /// The full fingerprints record of a live takedown (with its local features).
    fn live_fingerprints_of(&self, id: TakedownId) -> Result<Option<ListingFingerprints>>;

    /// Writes a takedown, its listing key and (when live) its fingerprints atomically and
    /// durably, with its change-log entry; returns that entry's seq, or 0 when the record
    /// keeps no change log (sled: the writer updates its own index). Another takedown
    /// holding the same listing (a concurrent registration elsewhere) fails with
    /// [`crate::error::Error::Conflict`]: read again and retry.
    fn write_takedown(&self, td: &Takedown) -> Result<u64>;

    /// Replaces a takedown's thumbnails (index, JPEG). Best effort: thumbnails are for people.
    fn put_thumbnails(&self, id: TakedownId, thumbs: &[(u8, Vec<u8>)]) -> Result<()>;

    /// A takedown image's thumbnail, if kept.
    fn thumbnail(&self, id: TakedownId, image: u8) -> Result<Option<Vec<u8>>>;

    /// Up to `limit` changes with a seq above `after`, in seq order. Empty for a record with no
    /// change log.
    fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<Change>>;

    /// Waits up to `timeout` for news of a change (a wake-up only: the caller then reads
    /// [`Storage::changes_after`]); `Ok(false)` on timeout.
    fn wait_for_change(&self, timeout: Duration) -> Result<bool>;

    /// The identity of the bank this record holds: a mirror of another bank (or of a restored
    /// database) must be rebuilt, not caught up.
    fn bank_id(&self) -> Result<String>;
}
