//! The takedown bank: the store, the live index and the policy behind one API that the gRPC
//! server (and the evaluation) call. Methods are blocking; the server runs them off the
//! async runtime.
//!
//! Consistency: writes go to sled first (one transaction, then fsync), then to the index,
//! under one writer lock. A crash between the two loses nothing, since the index is rebuilt
//! from sled at start (or read from the snapshot a graceful shutdown wrote, which is used only
//! when it is known to hold exactly what sled does; see [`crate::snapshot`]). A check that
//! sees an index entry whose takedown was just removed finds the record marked removed and
//! drops it.
//!
//! With a shared record (PostgreSQL, see [`crate::storage`]) the local sled store is a
//! mirror: registrations and removals are committed to the record first, and every replica,
//! the writer included, applies the record's change log to its mirror and index in seq order
//! ([`Bank::catch_up`]). Checks read only the mirror and the index, so they go on while the
//! record is unreachable, flagged [`CheckOutcome::bank_stale`].
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tracing::{info, warn};

use crate::auth::{KeyInfo, Keys, Role};
use crate::disk::{DiskGuard, DEFAULT_MIN_FREE_BYTES};
use crate::domain::{
    now_ms, CheckOutcome, Listing, ListingFingerprints, ListingInfo, Match, Registered, Source, Takedown, TakedownId,
    Verdict,
};
use crate::error::{Error, Result};
use crate::fingerprint::{DecodeLimits, Detection, Fingerprinter, Side};
use crate::history::{History, Label, MatchView, Page, Query, Stats};
use crate::matcher::{IndexSizes, LiveIndex};
use crate::policy::Thresholds;
use crate::snapshot;
use crate::storage::{Change, Storage};
use crate::store::{MirrorState, Store};

/// How long without a successful read of the shared record before checks say the bank may
/// be stale: the follower polls every [`FOLLOW_POLL`], so a healthy replica never gets there.
pub const STALE_AFTER: Duration = Duration::from_secs(2);
/// The follower's fallback poll when no change notification arrives.
pub const FOLLOW_POLL: Duration = Duration::from_millis(500);
/// Changes read from the record per query while catching up.
const CATCH_UP_BATCH: usize = 1000;
/// Replicas one shared bank can have: match ids made on replica `slot` are `≡ slot (mod
/// REPLICA_SLOTS)`, so each replica can still make 62 ids per millisecond in time order.
pub const REPLICA_SLOTS: u32 = 16;
/// Match records shipped to the shared store per transaction.
const SHIP_BATCH: usize = 500;

/// The bank and everything needed to check listings against it.
pub struct Bank {
    store: Store,
    history: History,
    index: RwLock<LiveIndex>,
    writer: Mutex<()>,
    fingerprinter: Fingerprinter,
    thresholds: Thresholds,
    /// Time spent decoding and hashing listings, for `/metrics`.
    fingerprint_time: crate::metrics::Histogram,
    /// Every write holds it shared; a backup holds it alone, so it copies one state.
    backup_gate: RwLock<()>,
    /// Refuses writes before the disk fills (see [`crate::disk`]).
    disk: DiskGuard,
    /// The data dir, where the index snapshot is kept.
    dir: PathBuf,
    /// Set (under the writer lock) once the index snapshot is being written: the store must
    /// stay what the snapshot holds, so later writes are refused.
    sealed: AtomicBool,
    /// Set (under the writer lock) when a store write failed or panicked before its index
    /// update: the index may then differ from the store until the next full load, so no
    /// snapshot is written.
    diverged: AtomicBool,
    /// The shared record when the local store is its mirror (see [`crate::storage`]).
    shared: Option<Shared>,
    /// The API keys (in the local store; a replica's follow the shared events log).
    keys: Keys,
}

/// A replica's view of the shared record it mirrors.
struct Shared {
    record: Arc<dyn Storage>,
    /// The record's bank id and the last change applied to the mirror and the index (changed
    /// under the writer lock).
    state: Mutex<MirrorState>,
    /// When the record last answered (ms since the epoch), for [`Bank::bank_stale`].
    contact_ms: AtomicI64,
    /// Whether the mirror has caught up with the record once since start.
    ready: AtomicBool,
    /// The last event of the events log applied here: (seq, mark).
    events: Mutex<(u64, u64)>,
}

/// The events log's entries (see [`Storage::append_events`]).
#[derive(serde::Serialize, serde::Deserialize)]
struct ReviewEvent {
    match_id: u64,
    label: Label,
    reviewer: String,
    note: String,
    at_ms: i64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct KeyEvent {
    info: KeyInfo,
    /// The secret's SHA-256 (hex), for a new key; `None` for a revocation.
    hash: Option<String>,
}

fn event_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Internal(e.to_string()))
}

/// Builds the live index from the store. Reading and decoding sled records and inserting
/// into the index take about the same time, so a reader thread feeds batches to the inserting
/// one: start-up uses both cores.
fn load_index(store: &Store, min_quality: u8) -> Result<(LiveIndex, usize)> {
    const BATCH: usize = 4096;
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<(TakedownId, ListingFingerprints)>>(4);
        let reader = scope.spawn(move || -> Result<()> {
            let mut batch = Vec::with_capacity(BATCH);
            for item in store.live_fingerprints() {
                batch.push(item?);
                if batch.len() == BATCH
                    && tx
                        .send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))
                        .is_err()
                {
                    return Ok(());
                }
            }
            let _ = tx.send(batch);
            Ok(())
        });
        let mut index = LiveIndex::default();
        let mut n = 0usize;
        for batch in rx {
            for (id, f) in &batch {
                index.load(*id, f, min_quality);
            }
            n += batch.len();
        }
        reader
            .join()
            .map_err(|_| Error::Internal("index loader thread panicked".into()))??;
        Ok((index, n))
    })
}

impl Bank {
    /// Opens the store in `dir` and loads every live takedown into the index.
    pub fn open(dir: &Path, thresholds: Thresholds, limits: DecodeLimits) -> Result<Bank> {
        Bank::open_with_cache(dir, thresholds, limits, crate::store::DEFAULT_CACHE_BYTES)
    }

    /// [`Bank::open`] with sled's page cache capped at `cache_bytes`.
    pub fn open_with_cache(dir: &Path, thresholds: Thresholds, limits: DecodeLimits, cache_bytes: u64) -> Result<Bank> {
        Bank::open_inner(dir, thresholds, limits, cache_bytes, None)
    }

    /// Opens a replica of a shared bank: `record` is the system of record, the sled store in
    /// `dir` its local mirror (with this replica's history and API keys). Loads the index from
    /// the mirror (or its snapshot) without waiting for the record; [`Bank::catch_up`] (and
    /// [`Bank::follow`]) then bring it up to date. A mirror of another bank is emptied first;
    /// a data dir holding an embedded bank is refused rather than overwritten.
    pub fn open_shared(
        dir: &Path,
        thresholds: Thresholds,
        limits: DecodeLimits,
        cache_bytes: u64,
        record: Arc<dyn Storage>,
    ) -> Result<Bank> {
        Bank::open_inner(dir, thresholds, limits, cache_bytes, Some(record))
    }

    fn open_inner(
        dir: &Path,
        thresholds: Thresholds,
        limits: DecodeLimits,
        cache_bytes: u64,
        record: Option<Arc<dyn Storage>>,
    ) -> Result<Bank> {
        thresholds.validate().map_err(Error::Internal)?;
        let started = std::time::Instant::now();
        let store = Store::open_with_cache(dir, cache_bytes)?;
        let shared = match record {
            Some(record) => Some(open_mirror(&store, record)?),
            None => None,
        };
        // A mirror emptied just now must not load the snapshot of what it held.
        let claim = match &shared {
            Some(s) if s.shared.state.lock().seq == 0 => None,
            _ => store.snapshot_claim(),
        };
        let build = snapshot::Build::current(thresholds.pdq_min_quality);
        let from_snapshot = match claim {
            Some(claim) => match snapshot::load(dir, claim, &build) {
                Ok(index) => Some(index),
                Err(e) => {
                    warn!(error = %e, "index snapshot not used; loading the index from the store");
                    None
                }
            },
            None => None,
        };
        // Without its key the file can never be valid again: free its disk space.
        if snapshot::discard(dir) && from_snapshot.is_none() {
            info!("deleted a stale index snapshot");
        }
        // The takedown count is known only when the store was read (the snapshot holds entries).
        let (index, takedowns, source) = match from_snapshot {
            Some(index) => (index, None, "the index snapshot"),
            None => {
                let (index, n) = load_index(&store, thresholds.pdq_min_quality)?;
                (index, Some(n), "the store")
            }
        };
        let sizes = index.sizes();
        info!(
            takedowns,
            pdq = sizes.pdq,
            phash = sizes.phash,
            local_features = sizes.local,
            titles = sizes.title,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded takedown bank from {source}"
        );
        let history = match &shared {
            Some(s) => History::open(store.db())?.share(s.slot, REPLICA_SLOTS),
            None => History::open(store.db())?,
        };
        Ok(Bank {
            history,
            keys: Keys::open(store.db())?,
            store,
            index: RwLock::new(index),
            writer: Mutex::new(()),
            fingerprinter: Fingerprinter::new(limits).with_thumbnails(true),
            thresholds,
            fingerprint_time: Default::default(),
            backup_gate: RwLock::new(()),
            disk: DiskGuard::new(dir, DEFAULT_MIN_FREE_BYTES),
            dir: dir.to_path_buf(),
            sealed: AtomicBool::new(false),
            diverged: AtomicBool::new(false),
            shared: shared.map(|s| s.shared),
        })
    }

    /// Writes the index snapshot that lets the next start skip the full load (see
    /// [`crate::snapshot`]), then records it in the store. From the call on, registrations and
    /// removals are refused: the store must stay exactly what the snapshot holds. For graceful
    /// shutdown, after the servers have stopped. Returns `None` when no snapshot could be
    /// trusted (a store write failed earlier) or there is no room for it.
    pub fn write_snapshot(&self) -> Result<Option<snapshot::Written>> {
        let _w = self.writer.lock();
        let started = std::time::Instant::now();
        self.sealed.store(true, Ordering::SeqCst);
        if self.diverged.load(Ordering::SeqCst) {
            warn!("no index snapshot: a store write failed, so the next start loads from the store");
            return Ok(None);
        }
        self.store.flush()?;
        let index = self.index.read();
        let need = index.heap_bytes() as u64 + DEFAULT_MIN_FREE_BYTES;
        if crate::disk::available_bytes(&self.dir).is_ok_and(|free| free < need) {
            warn!(need_bytes = need, "no index snapshot: not enough free disk space");
            return Ok(None);
        }
        let written = snapshot::write(
            &self.dir,
            &index,
            &snapshot::Build::current(self.thresholds.pdq_min_quality),
        )?;
        self.store.publish_snapshot(written.claim)?;
        Ok(Some(snapshot::Written {
            elapsed: started.elapsed(),
            ..written
        }))
    }

    /// Refuses a store write once the snapshot is being written (under the writer lock).
    fn check_open(&self) -> Result<()> {
        if self.sealed.load(Ordering::SeqCst) {
            return Err(Error::ResourceExhausted(
                "relist is shutting down; retry once it has restarted".into(),
            ));
        }
        Ok(())
    }

    /// Armed around a store write and the index update that follows it (see [`Pending`]).
    fn pending(&self) -> Pending<'_> {
        Pending(&self.diverged)
    }

    /// Chooses which fingerprints beyond the whole-image hashes new registrations and checks
    /// compute (both kinds on by default; see [`Detection`]).
    pub fn with_detection(mut self, detection: Detection) -> Self {
        self.fingerprinter = self.fingerprinter.with_detection(detection);
        self
    }

    /// Stops keeping thumbnails (they are on by default, for the history page).
    pub fn without_thumbnails(mut self) -> Self {
        self.fingerprinter = self.fingerprinter.with_thumbnails(false);
        self
    }

    /// Keeps at least `bytes` free on the store's disk: writes are refused below it (0: off).
    pub fn with_min_free_disk(mut self, bytes: u64) -> Self {
        self.disk = self.disk.with_min_free(bytes);
        self
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    pub fn index_sizes(&self) -> IndexSizes {
        self.index.read().sizes()
    }

    /// The sled database, for trees kept beside the bank's (API keys).
    pub fn db(&self) -> &sled::Db {
        self.store.db()
    }

    /// How long fingerprinting listings has taken so far.
    pub fn fingerprint_time(&self) -> &crate::metrics::Histogram {
        &self.fingerprint_time
    }

    fn fingerprint(
        &self,
        listing: &Listing,
        side: Side,
    ) -> Result<(Vec<crate::domain::CandidateImage>, crate::domain::ListingFingerprints)> {
        let started = std::time::Instant::now();
        let out = self.fingerprinter.listing(listing, side);
        self.fingerprint_time.observe(started.elapsed());
        out
    }

    /// Stores a takedown (or updates the one registered for the same listing), durably. An
    /// update without a seller id or a reason keeps the stored ones.
    pub fn register(&self, listing: &Listing, reason: &str, taken_down_at_ms: Option<i64>) -> Result<Registered> {
        self.disk.check()?;
        let (images, fingerprints) = self.fingerprint(listing, Side::Stored)?;
        // Two replicas registering one listing at once: the loser reads the winner's
        // takedown and updates it (bounded: a third attempt would need a third writer).
        let mut attempt = 0;
        let registered = loop {
            match self.write_registration(listing, reason, taken_down_at_ms, &fingerprints) {
                Err(Error::Conflict(_)) if attempt < 3 => attempt += 1,
                other => break other?,
            }
        };
        // The takedown is durable and live by now; a thumbnail that cannot be written (full
        // disk) must not turn that into a failure the client would retry.
        let id = registered.takedown_id;
        if let Err(e) = self.record().put_thumbnails(id, &thumbnails(&images)) {
            tracing::warn!(takedown_id = id, error = %e, "thumbnails not kept");
        }
        Ok(registered)
    }

    fn write_registration(
        &self,
        listing: &Listing,
        reason: &str,
        taken_down_at_ms: Option<i64>,
        fingerprints: &ListingFingerprints,
    ) -> Result<Registered> {
        let record = self.record();
        let _gate = self.backup_gate.read();
        let w = self.writer.lock();
        self.check_open()?;
        // A replica's writes are ordered by PostgreSQL (the counter row, the unique listing
        // key), not by this lock: holding it across the round trips would only serialise
        // one replica's registrations.
        let w = if self.shared.is_some() {
            drop(w);
            None
        } else {
            Some(w)
        };
        let existing = match record.takedown_id_by_listing(&listing.marketplace, &listing.listing_id)? {
            Some(id) => Some(
                record
                    .takedown(id)?
                    .ok_or_else(|| Error::Corrupt(format!("listing key points at missing takedown {id}")))?,
            ),
            None => None,
        };
        let now = now_ms();
        let id = match &existing {
            Some(td) => td.id,
            None => record.next_takedown_id()?,
        };
        let mut info = ListingInfo::from(listing);
        let mut reason = reason.to_string();
        if let Some(old) = &existing {
            if info.seller_id.is_empty() {
                info.seller_id = old.listing.seller_id.clone();
            }
            if reason.is_empty() {
                reason = old.reason.clone();
            }
        }
        let td = Takedown {
            id,
            listing: info,
            reason,
            taken_down_at_ms: taken_down_at_ms.unwrap_or(now),
            registered_at_ms: existing.as_ref().map_or(now, |t| t.registered_at_ms),
            updated_at_ms: now,
            removed_at_ms: None,
            fingerprints: fingerprints.clone(),
        };
        match &self.shared {
            Some(shared) => {
                let seq = shared.record.write_takedown(&td)?;
                drop(w);
                self.applied_through(seq);
            }
            None => {
                // What the index holds for the old version (the JSON record lacks local features).
                let old_fingerprints = match &existing {
                    Some(td) if td.removed_at_ms.is_none() => self.store.live_fingerprints_of(td.id)?,
                    _ => None,
                };
                let pending = self.pending();
                self.store.put_takedown(&td)?;
                self.store.flush()?;
                let mut index = self.index.write();
                if let Some(old) = &old_fingerprints {
                    index.remove(id, old);
                }
                index.add(id, &td.fingerprints, self.thresholds.pdq_min_quality);
                drop(index);
                pending.done();
            }
        }
        Ok(Registered {
            takedown_id: id,
            updated: existing.is_some(),
            fingerprints: td.fingerprints,
        })
    }

    /// Reverses a takedown: it stops matching before this returns. Returns when it was removed.
    pub fn remove(&self, id: TakedownId) -> Result<i64> {
        self.disk.check()?;
        let _gate = self.backup_gate.read();
        let w = self.writer.lock();
        self.check_open()?;
        let mut td = self
            .record()
            .takedown(id)?
            .ok_or_else(|| Error::NotFound(format!("takedown {id}")))?;
        if let Some(at) = td.removed_at_ms {
            return Ok(at);
        }
        let now = now_ms();
        if let Some(shared) = &self.shared {
            td.removed_at_ms = Some(now);
            td.updated_at_ms = now;
            let seq = shared.record.write_takedown(&td)?;
            drop(w);
            self.applied_through(seq);
            return Ok(now);
        }
        let indexed = self
            .store
            .live_fingerprints_of(id)?
            .unwrap_or_else(|| td.fingerprints.clone());
        td.removed_at_ms = Some(now);
        td.updated_at_ms = now;
        let pending = self.pending();
        self.store.put_takedown(&td)?;
        self.store.flush()?;
        self.index.write().remove(id, &indexed);
        pending.done();
        Ok(now)
    }

    /// Every image PDQ hash of the live takedowns (of `marketplace` only, when given), in
    /// takedown id order, until `emit` returns false. Reads a consistent-enough view: a
    /// takedown removed meanwhile may or may not be in it.
    pub fn export_pdq(
        &self,
        marketplace: Option<&str>,
        mut emit: impl FnMut(crate::exchange::ExportedPdq) -> bool,
    ) -> Result<()> {
        for item in self.store.live_fingerprints() {
            let (id, fps) = item?;
            let hashes: Vec<_> = fps.images.iter().filter_map(|i| i.pdq).collect();
            if hashes.is_empty() {
                continue;
            }
            let Some(td) = self.store.takedown(id)?.filter(|t| t.removed_at_ms.is_none()) else {
                continue;
            };
            if marketplace.is_some_and(|m| m != td.listing.marketplace) {
                continue;
            }
            for pdq in hashes {
                let out = crate::exchange::ExportedPdq {
                    pdq,
                    takedown_id: id,
                    marketplace: td.listing.marketplace.clone(),
                    reason: td.reason.clone(),
                };
                if !emit(out) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// A stored takedown, removed ones included: from the record, or from this replica's
    /// mirror while a shared record is unreachable.
    pub fn get(&self, id: TakedownId) -> Result<Takedown> {
        let found = match self.record().takedown(id) {
            Err(Error::Unavailable(e)) => {
                tracing::debug!(error = %e, "takedown read from the mirror");
                self.store.takedown(id)?
            }
            other => other?,
        };
        found.ok_or_else(|| Error::NotFound(format!("takedown {id}")))
    }

    /// Checks a listing against every live takedown; records non-clear results as coming
    /// from `source`.
    pub fn check(&self, listing: &Listing, source: Source) -> Result<CheckOutcome> {
        self.check_with(listing, Some(source))
    }

    /// [`Bank::check`] that records nothing when `source` is `None` (a dry run: the same
    /// verdict, no history entry, no match id).
    pub fn check_with(&self, listing: &Listing, source: Option<Source>) -> Result<CheckOutcome> {
        let outcome = self.evaluate(listing)?;
        match source {
            Some(source) => self.record_outcome(listing, source, outcome),
            None => Ok(outcome),
        }
    }

    /// The verdict on a listing, recorded nowhere: index lookups and reads only, so a caller
    /// that must not wait on disk writes (an async runtime's worker) can run it in place and
    /// hand [`Bank::record_outcome`] to a thread that may block.
    pub fn evaluate(&self, listing: &Listing) -> Result<CheckOutcome> {
        let (images, fingerprints) = self.fingerprint(listing, Side::Checked)?;
        let found = self
            .index
            .read()
            .find(&images, fingerprints.title_simhash, &self.thresholds);
        // Evidence an analyst rejected for this very listing must not flag it again.
        let suppressed = if found.is_empty() {
            Default::default()
        } else {
            self.history.suppressions(&listing.marketplace, &listing.listing_id)?
        };
        let mut matches = Vec::with_capacity(found.len());
        // Takedowns registered from photos (not imported as bare hashes): on a tie they come
        // first, since an analyst can see what they show.
        let mut pictured = std::collections::HashSet::new();
        for (id, mut evidence) in found {
            if let Some(s) = suppressed.get(&id) {
                evidence
                    .images
                    .retain(|e| !s.stored_images.contains(&e.stored_image_index));
                if s.text {
                    evidence.text_distance = None;
                }
            }
            let (verdict, score) = self.thresholds.decide(&evidence.images, evidence.text_distance);
            if verdict == Verdict::Clear {
                continue;
            }
            // Removed between the index read and now: it must not match.
            let Some(td) = self.store.takedown(id)?.filter(|t| t.removed_at_ms.is_none()) else {
                continue;
            };
            if !td.fingerprints.regions.is_empty()
                || td
                    .fingerprints
                    .images
                    .iter()
                    .any(|i| i.pdq.is_some() && i.phash.is_some())
            {
                pictured.insert(id);
            }
            matches.push(Match {
                takedown_id: id,
                same_seller: !listing.seller_id.is_empty()
                    && td.listing.seller_id == listing.seller_id
                    && td.listing.marketplace == listing.marketplace,
                marketplace: td.listing.marketplace,
                listing_id: td.listing.listing_id,
                seller_id: td.listing.seller_id,
                images: evidence.images,
                text_distance: evidence.text_distance,
                verdict,
                score,
            });
        }
        matches.sort_by(|a, b| {
            b.verdict
                .cmp(&a.verdict)
                .then(b.score.total_cmp(&a.score))
                .then(
                    pictured
                        .contains(&b.takedown_id)
                        .cmp(&pictured.contains(&a.takedown_id)),
                )
                .then(a.takedown_id.cmp(&b.takedown_id))
        });
        matches.truncate(self.thresholds.max_matches);
        let (verdict, score) = matches.first().map_or((Verdict::Clear, 0.0), |m| (m.verdict, m.score));
        Ok(CheckOutcome {
            verdict,
            score,
            matches,
            match_id: None,
            fingerprints,
            bank_stale: self.bank_stale(),
        })
    }

    /// Records a non-clear [`Bank::evaluate`] outcome of `listing` in the match history, as
    /// coming from `source`, and sets its match id; a clear one is returned as it is.
    pub fn record_outcome(&self, listing: &Listing, source: Source, mut outcome: CheckOutcome) -> Result<CheckOutcome> {
        if outcome.verdict == Verdict::Clear || outcome.match_id.is_some() {
            return Ok(outcome);
        }
        let _gate = self.backup_gate.read();
        // On a full disk the verdict still goes out, unrecorded: the upload path must keep
        // its answers, and the history is the record of them, not the evidence itself.
        let recorded = self.disk.check().and_then(|()| {
            self.history
                .record(source, listing, outcome.verdict, outcome.score, &outcome.matches)
        });
        match recorded {
            Ok(id) => {
                if let Err(e) = self.history.put_thumbnails(id, &self.fingerprinter.thumbnails(listing)) {
                    tracing::warn!(match_id = id, error = %e, "thumbnails not kept");
                }
                outcome.match_id = Some(id);
            }
            Err(Error::DiskFull(e)) => {
                tracing::warn!(error = %e, "check answered but not recorded in the history");
            }
            Err(e) => return Err(e),
        }
        Ok(outcome)
    }

    /// A recorded match with its reviews.
    pub fn get_match(&self, id: u64) -> Result<MatchView> {
        self.history.get(id)
    }

    /// A page of the match history, newest first.
    pub fn query_matches(&self, q: &Query, page_size: usize, page_token: Option<&str>) -> Result<Page> {
        self.history.query(q, page_size, page_token)
    }

    /// Records an analyst's label on a match (see [`History::review`]).
    pub fn review_match(&self, id: u64, label: Label, reviewer: &str, note: &str) -> Result<MatchView> {
        self.disk.check()?;
        if let Some(shared) = &self.shared {
            // Through the events log, so every replica applies it; the record goes first.
            self.history.get(id)?;
            self.ship(shared)?;
            let review = ReviewEvent {
                match_id: id,
                label,
                reviewer: reviewer.to_string(),
                note: note.to_string(),
                at_ms: now_ms(),
            };
            shared.record.append_events(&[("review", event_json(&review)?)])?;
            if let Err(e) = self.catch_up_events(shared) {
                warn!(match_id = id, error = %e, "review committed but not applied here yet; the follower will");
                // Applied locally at once all the same: the answer shows it.
                return self.history.review_at(id, label, reviewer, note, review.at_ms);
            }
            return self.history.get(id);
        }
        let _gate = self.backup_gate.read();
        let view = self.history.review(id, label, reviewer, note)?;
        self.store.flush()?;
        Ok(view)
    }

    /// Match statistics over [from, to).
    pub fn match_stats(&self, from_ms: i64, to_ms: i64, top: usize) -> Result<Stats> {
        self.history.stats(from_ms, to_ms, top)
    }

    /// Deletes history older than `before_ms` in bounded batches; returns how many.
    pub fn expire_history(&self, before_ms: i64, batch: usize) -> Result<usize> {
        let _gate = self.backup_gate.read();
        self.history.delete_older_than(before_ms, batch)
    }

    /// Runs a write beside the bank's own (API keys) so that a backup waits for it.
    pub fn gated<T>(&self, write: impl FnOnce() -> Result<T>) -> Result<T> {
        self.disk.check()?;
        let _gate = self.backup_gate.read();
        write()
    }

    /// Writes a consistent backup of the whole store (see [`crate::backup`]): writes wait
    /// meanwhile, checks that record nothing go on.
    pub fn backup(&self, out: impl std::io::Write) -> Result<crate::backup::BackupSummary> {
        let _gate = self.backup_gate.write();
        crate::backup::write(self.store.db(), out)
    }

    /// A kept thumbnail: of a takedown's image, or of a recorded match's candidate image.
    pub fn thumbnail(&self, of: ThumbnailOf, image: u8) -> Result<Option<Vec<u8>>> {
        match of {
            ThumbnailOf::Takedown(id) => self.record().thumbnail(id, image),
            ThumbnailOf::Match(id) => self.history.thumbnail(id, image),
        }
    }

    /// Makes everything durable; called on shutdown.
    pub fn flush(&self) -> Result<()> {
        self.store.flush()
    }

    /// The API keys (for authentication, which reads them locally on every replica).
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Creates an API key: in the local store, or, on a replica, through the shared events
    /// log so every replica accepts it. Returns the key and its secret (never shown again).
    pub fn create_key(&self, role: Role, marketplace: Option<&str>, name: &str) -> Result<(KeyInfo, String)> {
        self.disk.check()?;
        let _gate = self.backup_gate.read();
        let Some(shared) = &self.shared else {
            return self.keys.create(role, marketplace, name);
        };
        let (info, secret, hash) = Keys::prepare(shared.record.next_key_id()?, role, marketplace, name)?;
        let event = KeyEvent {
            info: info.clone(),
            hash: Some(hex::encode(hash)),
        };
        shared.record.append_events(&[("key", event_json(&event)?)])?;
        // Usable here at once, whatever the follower is doing.
        self.keys.put(&info, Some(hash))?;
        Ok((info, secret))
    }

    /// Revokes an API key, on every replica of a shared store.
    pub fn revoke_key(&self, id: u64) -> Result<KeyInfo> {
        self.disk.check()?;
        let _gate = self.backup_gate.read();
        let Some(shared) = &self.shared else {
            return self.keys.revoke(id);
        };
        let mut info = self
            .keys
            .get(id)?
            .ok_or_else(|| Error::NotFound(format!("api key {id}")))?;
        if info.revoked_at_ms.is_none() {
            info.revoked_at_ms = Some(now_ms());
            let event = KeyEvent {
                info: info.clone(),
                hash: None,
            };
            shared.record.append_events(&[("key", event_json(&event)?)])?;
            self.keys.put(&info, None)?;
        }
        Ok(info)
    }

    /// Where takedowns are recorded: the shared record, or the local store itself.
    fn record(&self) -> &dyn Storage {
        match &self.shared {
            Some(s) => s.record.as_ref(),
            None => &self.store,
        }
    }

    /// The record's batch jobs (see [`Storage::create_job`]): shared by every replica of a
    /// shared store; a bank that is its own record has none.
    pub fn jobs(&self) -> &dyn Storage {
        self.record()
    }

    /// The record, for messages (`the embedded sled store`, `postgres://...`).
    pub fn describe_record(&self) -> String {
        self.record().describe()
    }

    /// Whether this bank mirrors a shared record (and so must [`Bank::follow`] it).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Whether checks may miss takedowns recorded elsewhere: the shared record has not
    /// answered for [`STALE_AFTER`]. Never for a bank that is its own record.
    pub fn bank_stale(&self) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|s| now_ms() - s.contact_ms.load(Ordering::Relaxed) > STALE_AFTER.as_millis() as i64)
    }

    /// Whether the bank answers with everything recorded at start: a replica is ready once it
    /// has caught up with the shared record once (a bank that is its own record always is).
    pub fn ready(&self) -> bool {
        self.shared.as_ref().is_none_or(|s| s.ready.load(Ordering::SeqCst))
    }

    /// The last change of the shared record applied here (0 without one).
    pub fn applied_seq(&self) -> u64 {
        self.shared.as_ref().map_or(0, |s| s.state.lock().seq)
    }

    /// Applies every change the shared record has after the last one applied, in order, to
    /// the mirror and the index; returns how many. A no-op for a bank that is its own record.
    pub fn catch_up(&self) -> Result<usize> {
        let Some(shared) = &self.shared else {
            return Ok(0);
        };
        self.ship(shared)?;
        let applied = self.catch_up_changes(shared)?;
        Ok(applied + self.catch_up_events(shared)?)
    }

    /// Ships the match records made here to the events log (oldest first, in batches).
    fn ship(&self, shared: &Shared) -> Result<()> {
        loop {
            let records = self.history.unshipped(SHIP_BATCH)?;
            if records.is_empty() {
                return Ok(());
            }
            let events = records
                .iter()
                .map(|r| event_json(r).map(|b| ("match", b)))
                .collect::<Result<Vec<_>>>()?;
            shared.record.append_events(&events)?;
            let ids: Vec<u64> = records.iter().map(|r| r.match_id).collect();
            self.history.shipped(&ids)?;
            if records.len() < SHIP_BATCH {
                return Ok(());
            }
        }
    }

    /// Applies the events log after the last event applied here: match records made on
    /// other replicas, reviews, API keys. Idempotent, so a log that went back is replayed.
    fn catch_up_events(&self, shared: &Shared) -> Result<usize> {
        let mut applied = 0;
        loop {
            let (after, mark) = *shared.events.lock();
            if after > 0 && shared.record.event_mark_at(after)? != Some(mark) {
                warn!(
                    applied = after,
                    "the shared store's events log no longer has the last event applied here; replaying it"
                );
                *shared.events.lock() = (0, 0);
                continue;
            }
            let events = shared.record.events_after(after, CATCH_UP_BATCH)?;
            let Some(last) = events.last() else {
                return Ok(applied);
            };
            let position = (last.seq, last.mark);
            for e in &events {
                self.apply_event(e)?;
            }
            applied += events.len();
            *shared.events.lock() = position;
            let mut v = position.0.to_be_bytes().to_vec();
            v.extend_from_slice(&position.1.to_be_bytes());
            self.store.set_replica_value("events", &v)?;
            if events.len() < CATCH_UP_BATCH {
                self.store.flush()?;
                return Ok(applied);
            }
        }
    }

    fn apply_event(&self, e: &crate::storage::Event) -> Result<()> {
        let corrupt = |what: &str, err: serde_json::Error| Error::Corrupt(format!("event {} ({what}): {err}", e.seq));
        match e.kind.as_str() {
            "match" => {
                let rec: crate::domain::MatchRecord =
                    serde_json::from_slice(&e.body).map_err(|x| corrupt("match", x))?;
                if !self.history.contains(rec.match_id)? {
                    self.history.insert(&rec)?;
                }
            }
            "review" => {
                let r: ReviewEvent = serde_json::from_slice(&e.body).map_err(|x| corrupt("review", x))?;
                match self
                    .history
                    .review_at(r.match_id, r.label, &r.reviewer, &r.note, r.at_ms)
                {
                    Ok(_) => {}
                    // Expired here by retention: nothing to label.
                    Err(Error::NotFound(_)) => {
                        tracing::debug!(match_id = r.match_id, "review of a match not kept here")
                    }
                    Err(err) => return Err(err),
                }
            }
            "key" => {
                let k: KeyEvent = serde_json::from_slice(&e.body).map_err(|x| corrupt("key", x))?;
                let hash = match k.hash {
                    Some(h) => Some(
                        hex::decode(&h)
                            .ok()
                            .and_then(|b| <[u8; 32]>::try_from(b).ok())
                            .ok_or_else(|| Error::Corrupt(format!("event {}: key hash", e.seq)))?,
                    ),
                    None => None,
                };
                self.keys.put(&k.info, hash)?;
            }
            other => warn!(
                seq = e.seq,
                kind = other,
                "unknown event kind (a newer relist?); skipped"
            ),
        }
        Ok(())
    }

    /// The change log after the last change applied here, into the mirror and the index.
    fn catch_up_changes(&self, shared: &Shared) -> Result<usize> {
        let mut applied = 0;
        loop {
            // Shutting down: the mirror must stay what the snapshot holds.
            if self.sealed.load(Ordering::SeqCst) {
                return Ok(applied);
            }
            let (after, mark) = {
                let state = shared.state.lock();
                (state.seq, state.mark)
            };
            // The last change applied must still be in the log as it was: otherwise the log
            // went back and later writes may reuse its seqs.
            if after > 0 && shared.record.mark_at(after)? != Some(mark) {
                self.rebuild_mirror(shared, after)?;
                continue;
            }
            let changes = shared.record.changes_after(after, CATCH_UP_BATCH)?;
            shared.contact_ms.store(now_ms(), Ordering::Relaxed);
            if changes.is_empty() {
                shared.ready.store(true, Ordering::SeqCst);
                return Ok(applied);
            }
            let n = changes.len();
            applied += self.apply_changes(shared, &changes)?;
            if n < CATCH_UP_BATCH {
                shared.ready.store(true, Ordering::SeqCst);
                return Ok(applied);
            }
        }
    }

    /// The record's log ends before what this mirror applied: the writes past its end were
    /// lost (an asynchronous failover, a restored backup). The mirror and the index may hold
    /// takedowns the record no longer has, so both are emptied and replayed from the start.
    fn rebuild_mirror(&self, shared: &Shared, applied: u64) -> Result<()> {
        let _gate = self.backup_gate.read();
        let _w = self.writer.lock();
        let mut state = shared.state.lock();
        warn!(
            record = %shared.record.describe(),
            applied,
            "the shared store's change log no longer has the last change applied here than this replica applied (failover or restore?); rebuilding the mirror"
        );
        // Until the replay completes the index is empty: not ready, checks say stale.
        shared.ready.store(false, Ordering::SeqCst);
        let pending = self.pending();
        self.store.clear_takedowns()?;
        *self.index.write() = LiveIndex::default();
        state.seq = 0;
        state.mark = 0;
        self.store.set_mirror_state(&state)?;
        self.store.flush()?;
        pending.done();
        Ok(())
    }

    /// Applies a batch of changes under the writer lock (a snapshot being written stops it).
    fn apply_changes(&self, shared: &Shared, changes: &[Change]) -> Result<usize> {
        let _gate = self.backup_gate.read();
        let _w = self.writer.lock();
        if self.sealed.load(Ordering::SeqCst) {
            return Ok(0);
        }
        let mut state = shared.state.lock();
        let mut applied = 0;
        for change in changes {
            // Another caller applied it between our read and the lock.
            if change.seq <= state.seq {
                continue;
            }
            if change.seq != state.seq + 1 {
                return Err(Error::Corrupt(format!(
                    "the change log jumps from {} to {}: a change is missing",
                    state.seq, change.seq
                )));
            }
            let td = &change.takedown;
            let old = self.store.live_fingerprints_of(td.id)?;
            let pending = self.pending();
            self.store.put_takedown(td)?;
            let mut index = self.index.write();
            if let Some(old) = &old {
                index.remove(td.id, old);
            }
            if td.removed_at_ms.is_none() {
                index.add(td.id, &td.fingerprints, self.thresholds.pdq_min_quality);
            }
            drop(index);
            pending.done();
            state.seq = change.seq;
            state.mark = change.mark;
            applied += 1;
        }
        self.store.set_mirror_state(&state)?;
        self.store.flush()?;
        Ok(applied)
    }

    /// After this replica committed change `seq`: applies it (and any before it) at once, so
    /// the writer's next check matches. The write is committed either way; when the record
    /// cannot be read back now, [`Bank::follow`] applies it later.
    fn applied_through(&self, seq: u64) {
        if let Err(e) = self.catch_up() {
            warn!(seq, error = %e, "committed, but not applied here yet; the follower will");
        }
    }

    /// Follows the shared record until `stop` is set: waits for a change notification (or
    /// polls every [`FOLLOW_POLL`]) and catches up. Failures are logged and retried with a
    /// backoff: the bank recovers on its own once the record answers again. Returns at once
    /// for a bank that is its own record.
    pub fn follow(&self, stop: &AtomicBool) {
        let Some(shared) = &self.shared else {
            return;
        };
        let mut failures: u32 = 0;
        while !stop.load(Ordering::SeqCst) {
            let step = self.catch_up().and_then(|_| shared.record.wait_for_change(FOLLOW_POLL));
            match step {
                Ok(_) => {
                    if failures > 0 {
                        info!(record = %shared.record.describe(), "shared store reachable again; caught up");
                    }
                    failures = 0;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    if failures == 1 || failures.is_multiple_of(30) {
                        warn!(record = %shared.record.describe(), error = %e, failures, "cannot follow the shared store; checks go on from memory");
                    }
                    let backoff = Duration::from_millis(100 * u64::from(failures.min(10)));
                    sleep_unless(stop, backoff);
                }
            }
        }
    }

    /// A page of stored takedowns in id order, after the takedown `after` (0 for the first
    /// page): `marketplace`'s only when given, the one registered for (`marketplace`,
    /// `listing_id`) when both are, removed ones only with `include_removed`. Returns the
    /// page and the last id examined when there may be more: a page stops at `page_size`
    /// takedowns or after [`crate::history::SCAN_BUDGET`] records read, so a filter that
    /// matches little never reads the whole bank in one call. Read from this replica's store
    /// (the mirror, with a shared record), as checks are.
    pub fn list_takedowns(
        &self,
        marketplace: Option<&str>,
        listing_id: Option<&str>,
        include_removed: bool,
        page_size: usize,
        after: TakedownId,
    ) -> Result<(Vec<Takedown>, Option<TakedownId>)> {
        let wanted = |t: &Takedown| {
            (include_removed || t.removed_at_ms.is_none()) && marketplace.is_none_or(|m| t.listing.marketplace == m)
        };
        if let (Some(m), Some(l)) = (marketplace, listing_id) {
            let found = match self.store.takedown_id_by_listing(m, l)? {
                Some(id) if id > after => self.store.takedown(id)?,
                _ => None,
            };
            return Ok((found.into_iter().filter(|t| wanted(t)).collect(), None));
        }
        let mut page = Vec::new();
        let mut last = None;
        for (examined, td) in self.store.takedowns_after(after).enumerate() {
            if page.len() == page_size || examined == crate::history::SCAN_BUDGET {
                return Ok((page, last));
            }
            let td = td?;
            last = Some(td.id);
            if wanted(&td) {
                page.push(td);
            }
        }
        Ok((page, None))
    }
}

/// Sleeps `d` in short steps, returning early once `stop` is set.
fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let until = std::time::Instant::now() + d;
    while !stop.load(Ordering::SeqCst) {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// Makes `store` the mirror of `record`: keeps it when it mirrors the same bank, empties it
/// when it mirrors another, refuses a data dir that holds an embedded bank of its own. Starts
/// from the mirror alone when the record is unreachable (checks then say stale).
/// What [`open_mirror`] found: the replica's view and its slot.
struct Opened {
    shared: Shared,
    slot: u32,
}

fn open_mirror(store: &Store, record: Arc<dyn Storage>) -> Result<Opened> {
    let mirrored = store.mirror_state()?;
    let state = match record.bank_id() {
        Ok(bank_id) => match mirrored {
            Some(m) if m.bank_id == bank_id => m,
            other => {
                if other.is_none() && store.live_count() > 0 {
                    return Err(Error::invalid(
                        "data_dir",
                        "holds an embedded bank of its own; a replica of a shared store needs a data dir of its own (or an empty one)",
                    ));
                }
                if other.is_some() {
                    warn!(bank = %bank_id, "the data dir mirrors another bank; rebuilding the mirror");
                }
                store.clear_takedowns()?;
                let fresh = MirrorState {
                    bank_id,
                    seq: 0,
                    mark: 0,
                };
                store.set_mirror_state(&fresh)?;
                store.flush()?;
                fresh
            }
        },
        Err(e) => match mirrored {
            Some(m) => {
                warn!(record = %record.describe(), error = %e, seq = m.seq, "shared store unreachable; starting from the local mirror (stale until it answers)");
                m
            }
            None => {
                return Err(Error::Unavailable(format!(
                    "cannot reach {} and this data dir holds no mirror of it yet: {e}",
                    record.describe()
                )))
            }
        },
    };
    let slot = replica_slot(store, record.as_ref())?;
    let events = match store.replica_value("events")? {
        Some(v) if v.len() == 16 => {
            let (seq, mark) = v.split_at(8);
            (crate::codec::be_u64(seq), crate::codec::be_u64(mark))
        }
        _ => (0, 0),
    };
    Ok(Opened {
        shared: Shared {
            record,
            state: Mutex::new(state),
            contact_ms: AtomicI64::new(0),
            ready: AtomicBool::new(false),
            events: Mutex::new(events),
        },
        slot,
    })
}

/// This data dir's replica slot: claimed once in the shared store under a name made for the
/// data dir, then kept locally (so a replica restarting during an outage keeps its ids).
fn replica_slot(store: &Store, record: &dyn Storage) -> Result<u32> {
    let name = match store.replica_value("name")? {
        Some(n) => String::from_utf8(n).map_err(|_| Error::Corrupt("replica name".into()))?,
        None => {
            let mut raw = [0u8; 16];
            getrandom::getrandom(&mut raw).map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
            let name = hex::encode(raw);
            store.set_replica_value("name", name.as_bytes())?;
            name
        }
    };
    let known = store
        .replica_value("slot")?
        .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
        .map(u32::from_be_bytes);
    match record.claim_slot(&name, REPLICA_SLOTS) {
        Ok(slot) => {
            store.set_replica_value("slot", &slot.to_be_bytes())?;
            store.flush()?;
            Ok(slot)
        }
        Err(Error::Unavailable(e)) => known.ok_or(Error::Unavailable(e)),
        Err(e) => Err(e),
    }
}

/// Marks the index as possibly different from the store (no snapshot at shutdown) unless
/// [`Pending::done`] is called: an error or a panic between a store write and the matching
/// index update would otherwise be carried over to the next start by the snapshot.
struct Pending<'a>(&'a AtomicBool);

impl Pending<'_> {
    /// The store write and the index update both happened.
    fn done(self) {
        std::mem::forget(self);
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Whose thumbnail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThumbnailOf {
    Takedown(TakedownId),
    Match(u64),
}

fn thumbnails(images: &[crate::domain::CandidateImage]) -> Vec<(u8, Vec<u8>)> {
    images
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.thumbnail.clone().map(|t| (i as u8, t)))
        .collect()
}
