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
    /// Tells this entry from another one that later got the same seq (after a failover lost
    /// the log's tail); see [`Storage::mark_at`].
    pub mark: u64,
}

/// One entry of the events log: what replicas share besides takedowns (match records,
/// reviews, API keys), applied by every replica in seq order like the change log.
#[derive(Clone, Debug)]
pub struct Event {
    pub seq: u64,
    /// `match`, `review` or `key`.
    pub kind: String,
    /// The event's JSON.
    pub body: Vec<u8>,
    /// See [`Change::mark`].
    pub mark: u64,
}

/// A catalog re-check job shared by replicas (see [`Storage::create_job`]).
pub type JobId = u64;

/// A chunk of a job, leased to one replica until it completes it or the lease runs out.
#[derive(Clone, Debug)]
pub struct ClaimedChunk {
    pub job: JobId,
    pub chunk: u32,
    /// The job-wide index of the chunk's first item.
    pub first_index: u32,
    /// The items, opaque to the store (the server keeps encoded requests).
    pub items: Vec<Vec<u8>>,
    /// How many times the chunk has been claimed, this claim included (over 1: redone).
    pub attempt: u32,
}

/// Where a job stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobStatus {
    pub job: JobId,
    pub items: u64,
    pub chunks: u64,
    pub chunks_done: u64,
    /// Claims beyond the first, over all chunks: chunks redone after a lease ran out.
    pub reclaims: u64,
}

impl JobStatus {
    /// Every chunk's results are written.
    pub fn done(&self) -> bool {
        self.chunks_done == self.chunks
    }
}

fn no_jobs() -> crate::error::Error {
    crate::error::Error::invalid(
        "store",
        "batch jobs shared by replicas need a shared store (relist serve --store postgres://...); \
         on one box, stream the catalog through CheckListings (relist batch)",
    )
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

    /// The mark of the change at `seq` (see [`Change::mark`]), `None` when there is none. A
    /// mirror whose last applied change no longer has its mark is ahead of a log that went
    /// back (an asynchronous failover, a restored backup) and must be rebuilt.
    fn mark_at(&self, _seq: u64) -> Result<Option<u64>> {
        Ok(None)
    }

    /// Waits up to `timeout` for news of a change (a wake-up only: the caller then reads
    /// [`Storage::changes_after`]); `Ok(false)` on timeout.
    fn wait_for_change(&self, timeout: Duration) -> Result<bool>;

    /// The identity of the bank this record holds: a mirror of another bank (or of a restored
    /// database) must be rebuilt, not caught up.
    fn bank_id(&self) -> Result<String>;

    /// Appends events to the events log in one transaction; returns the last one's seq.
    fn append_events(&self, _events: &[(&str, Vec<u8>)]) -> Result<u64> {
        Err(no_jobs())
    }

    /// Up to `limit` events with a seq above `after`, in seq order.
    fn events_after(&self, _after: u64, _limit: usize) -> Result<Vec<Event>> {
        Ok(Vec::new())
    }

    /// The mark of the event at `seq` ([`Storage::mark_at`] for the events log).
    fn event_mark_at(&self, _seq: u64) -> Result<Option<u64>> {
        Ok(None)
    }

    /// This replica's slot among at most `slots` (the same name gets the same slot again).
    fn claim_slot(&self, _name: &str, _slots: u32) -> Result<u32> {
        Ok(0)
    }

    /// A fresh API key id, unique across replicas.
    fn next_key_id(&self) -> Result<u64> {
        Err(no_jobs())
    }

    /// Records a job of `chunks` (each a list of opaque items) for any replica to claim;
    /// returns its id. Only a shared store has jobs.
    fn create_job(&self, _chunks: &[Vec<Vec<u8>>]) -> Result<JobId> {
        Err(no_jobs())
    }

    /// Leases the first chunk nobody holds (pending, or its lease ran out) to `worker` for
    /// `lease`; `None` when there is none. Concurrent claimers never get the same chunk.
    fn claim_chunk(&self, _worker: &str, _lease: Duration) -> Result<Option<ClaimedChunk>> {
        Ok(None)
    }

    /// Extends `worker`'s lease on a chunk; `false` when the lease is no longer its own.
    fn renew_chunk(&self, _job: JobId, _chunk: u32, _worker: &str, _lease: Duration) -> Result<bool> {
        Err(no_jobs())
    }

    /// Writes a chunk's results (one per item, in order) and marks it done, atomically and
    /// only while `worker` holds the lease: `false` (nothing written) when another replica
    /// took the chunk over. Each item's result is therefore written once.
    fn complete_chunk(&self, _job: JobId, _chunk: u32, _worker: &str, _results: &[Vec<u8>]) -> Result<bool> {
        Err(no_jobs())
    }

    /// Where a job stands; `None` for an unknown job.
    fn job_status(&self, _job: JobId) -> Result<Option<JobStatus>> {
        Err(no_jobs())
    }

    /// Up to `limit` results of a job with an item index at or above `from`, in index order.
    fn job_results(&self, _job: JobId, _from: u64, _limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        Err(no_jobs())
    }
}
