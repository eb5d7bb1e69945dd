//! The match history: every non-clear check (upload-time and batch) is recorded, so analysts
//! can see who re-listed what, when and how often, confirm or reject matches, and export the
//! evidence.
//!
//! Stored in sled (part of the store's versioned format):
//! - `matches`: match id (u64 BE) -> JSON [`MatchRecord`]. Match ids are time-ordered:
//!   `max(last + 1, at_ms * 1000)`, so the primary tree is also the time index, and every
//!   secondary index suffixed with the match id can seek to a time range.
//! - `mx_takedown` (takedown id BE ++ match id), `mx_seller` (seller ++ 0 ++ match id, for the
//!   candidate's and the taken-down listings' sellers), `mx_marketplace` (likewise),
//!   `mx_label` (label byte ++ match id, latest label only): secondary indexes, empty values.
//! - `reviews`: match id ++ sequence (u32 BE) -> JSON [`Review`]: every label ever given.
//! - `labels`: match id -> latest label byte.
//! - `suppressions`: candidate marketplace ++ 0 ++ listing id ++ 0 ++ takedown id BE -> JSON
//!   [`Suppression`]: what a FALSE_POSITIVE review stopped from matching that listing again.
//! - `match_thumbs`: match id ++ candidate image index (u8) -> small JPEG, when kept.
//! - `stats`: day (u32 BE, days since epoch) ++ kind byte ++ name -> u64 BE count, kept
//!   up to date on every record so statistics never scan the history.
//!
//! - `history_outbox`: match id -> empty: records made here and not yet shipped to a shared
//!   store's events log (replicas only; see [`History::share`]).
//!
//! A record, its index entries, its counters and its outbox entry are written in one
//! transaction, together with the other records waiting at that moment (group commit).
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::{Transactional, Tree};

use crate::domain::{now_ms, Listing, ListingInfo, Match, MatchId, MatchRecord, Source, TakedownId, Verdict};
use crate::error::{Error, Result};

/// An analyst's judgement of a recorded match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Label {
    /// Not reviewed yet, or a review was taken back.
    Unreviewed,
    /// The match is a real re-upload.
    Confirmed,
    /// The match is wrong: the same evidence must not flag that listing again.
    FalsePositive,
}

impl Label {
    fn byte(self) -> u8 {
        match self {
            Label::Unreviewed => 0,
            Label::Confirmed => 1,
            Label::FalsePositive => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Label> {
        match b {
            0 => Some(Label::Unreviewed),
            1 => Some(Label::Confirmed),
            2 => Some(Label::FalsePositive),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Label::Unreviewed => "UNREVIEWED",
            Label::Confirmed => "CONFIRMED",
            Label::FalsePositive => "FALSE_POSITIVE",
        }
    }
}

/// One review of a match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub label: Label,
    pub reviewer: String,
    pub note: String,
    pub at_ms: i64,
}

/// What a FALSE_POSITIVE review stops from matching one candidate listing again.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppression {
    /// The review's match.
    pub match_id: MatchId,
    /// Stored images of the takedown that may no longer match this listing.
    pub stored_images: BTreeSet<u32>,
    /// Whether the title may no longer match.
    pub text: bool,
}

/// A recorded match with its reviews, as analysts see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatchView {
    #[serde(flatten)]
    pub record: MatchRecord,
    pub label: Label,
    pub reviews: Vec<Review>,
}

/// Filters of a history query; every field is optional.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query {
    /// Inclusive lower bound on the record time (Unix ms).
    pub from_ms: Option<i64>,
    /// Exclusive upper bound on the record time (Unix ms).
    pub to_ms: Option<i64>,
    pub takedown_id: Option<TakedownId>,
    /// Records involving this marketplace (the candidate's or a matched takedown's).
    pub marketplace: Option<String>,
    /// Records involving this seller (the candidate's or a matched takedown's).
    pub seller_id: Option<String>,
    pub verdict: Option<Verdict>,
    pub min_score: Option<f64>,
    pub label: Option<Label>,
    pub source: Option<Source>,
}

/// A page of query results.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Page {
    pub records: Vec<MatchView>,
    /// Set when more records may follow: pass it back to continue.
    pub next_page_token: Option<String>,
}

/// Largest page a query may ask for.
pub const MAX_PAGE_SIZE: usize = 500;
/// Default page size.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Index entries a single query call may examine before it returns a short page with a
/// continuation token: no request scans the whole history.
pub const SCAN_BUDGET: usize = 20_000;
/// Earliest and latest times a query may name (1970 to 2200): anything else is a mistake.
const MAX_TIME_MS: i64 = 7_258_118_400_000;

/// Counts over a time range.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    pub total: u64,
    /// (day as YYYY-MM-DD, count), oldest first.
    pub per_day: Vec<(String, u64)>,
    pub per_marketplace: Vec<(String, u64)>,
    pub per_verdict: Vec<(String, u64)>,
    /// Most re-listed takedowns: (takedown id, matches), most first.
    pub top_takedowns: Vec<(TakedownId, u64)>,
    /// Sellers with the most matches: ("marketplace/seller", matches), most first.
    pub top_sellers: Vec<(String, u64)>,
}

const STAT_TOTAL: u8 = 0;
const STAT_MARKETPLACE: u8 = 1;
const STAT_VERDICT: u8 = 2;
const STAT_TAKEDOWN: u8 = 3;
const STAT_SELLER: u8 = 4;
const DAY_MS: i64 = 86_400_000;

/// The match history's trees.
pub struct History {
    matches: Tree,
    by_takedown: Tree,
    by_seller: Tree,
    by_marketplace: Tree,
    by_label: Tree,
    reviews: Tree,
    labels: Tree,
    suppressions: Tree,
    stats: Tree,
    thumbs: Tree,
    outbox: Tree,
    last_id: AtomicU64,
    /// Records waiting to be written, and whether a commit is running (see [`History::write`]).
    group: Mutex<Group>,
    group_done: Condvar,
    /// With a shared store: this replica's slot and the number of slots. Match ids are then
    /// `≡ slot (mod slots)`, so ids made on different replicas never collide, and records
    /// made here go to the outbox for shipping.
    shared: Option<(u64, u64)>,
}

fn id_be(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn suffix_id(key: &[u8]) -> Result<u64> {
    key.len()
        .checked_sub(8)
        .and_then(|at| <[u8; 8]>::try_from(&key[at..]).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| Error::Corrupt("history index key too short".into()))
}

/// Most records one group commit writes: bounds a transaction's size and a writer's wait.
const MAX_GROUP: usize = 256;

/// The group commit's state.
#[derive(Default)]
struct Group {
    next_ticket: u64,
    queue: Vec<(u64, Prepared)>,
    writing: bool,
    done: HashMap<u64, Result<MatchId>>,
}

/// A record ready to write: its JSON, index keys and counter keys, computed by its own writer
/// outside the group lock.
struct Prepared {
    id: MatchId,
    value: Vec<u8>,
    keys: IndexKeys,
    counters: Vec<Vec<u8>>,
    ship: bool,
}

impl Prepared {
    fn new(rec: &MatchRecord, ship: bool) -> Result<Prepared> {
        Ok(Prepared {
            id: rec.match_id,
            value: json(rec)?,
            keys: index_keys(rec),
            counters: stat_keys(rec),
            ship,
        })
    }
}

fn writer_stopped() -> Result<MatchId> {
    Err(Error::Internal(
        "the history writer stopped before this record was written".into(),
    ))
}

/// The secondary index keys of one record.
struct IndexKeys {
    takedown: Vec<Vec<u8>>,
    seller: Vec<Vec<u8>>,
    marketplace: Vec<Vec<u8>>,
}

fn index_keys(rec: &MatchRecord) -> IndexKeys {
    let id = id_be(rec.match_id);
    let mut takedowns = BTreeSet::new();
    let mut sellers = BTreeSet::new();
    let mut markets = BTreeSet::new();
    if !rec.candidate.seller_id.is_empty() {
        sellers.insert(rec.candidate.seller_id.as_str());
    }
    markets.insert(rec.candidate.marketplace.as_str());
    for m in &rec.matches {
        takedowns.insert(m.takedown_id);
        if !m.seller_id.is_empty() {
            sellers.insert(m.seller_id.as_str());
        }
        markets.insert(m.marketplace.as_str());
    }
    IndexKeys {
        takedown: takedowns.into_iter().map(|t| cat(&[&id_be(t), &id])).collect(),
        seller: sellers.into_iter().map(|s| cat(&[s.as_bytes(), &[0], &id])).collect(),
        marketplace: markets.into_iter().map(|s| cat(&[s.as_bytes(), &[0], &id])).collect(),
    }
}

fn stat_keys(rec: &MatchRecord) -> Vec<Vec<u8>> {
    let day = (rec.at_ms.div_euclid(DAY_MS) as u32).to_be_bytes();
    let mut keys = vec![
        cat(&[&day, &[STAT_TOTAL]]),
        cat(&[&day, &[STAT_MARKETPLACE], rec.candidate.marketplace.as_bytes()]),
        cat(&[&day, &[STAT_VERDICT], rec.verdict.as_str().as_bytes()]),
    ];
    if !rec.candidate.seller_id.is_empty() {
        let seller = format!("{}/{}", rec.candidate.marketplace, rec.candidate.seller_id);
        keys.push(cat(&[&day, &[STAT_SELLER], seller.as_bytes()]));
    }
    let takedowns: BTreeSet<_> = rec.matches.iter().map(|m| m.takedown_id).collect();
    keys.extend(takedowns.into_iter().map(|t| cat(&[&day, &[STAT_TAKEDOWN], &id_be(t)])));
    keys
}

fn add_count(
    t: &TransactionalTree,
    key: &[u8],
    delta: i64,
) -> std::result::Result<(), sled::transaction::UnabortableTransactionError> {
    let old = t
        .get(key)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, u64::from_be_bytes);
    let new = (old as i64 + delta).max(0) as u64;
    if new == 0 {
        t.remove(key)?;
    } else {
        t.insert(key, &new.to_be_bytes())?;
    }
    Ok(())
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Internal(e.to_string()))
}

fn parse<T: for<'de> Deserialize<'de>>(what: &str, v: &[u8]) -> Result<T> {
    serde_json::from_slice(v).map_err(|e| Error::Corrupt(format!("{what}: {e}")))
}

/// Encodes a continuation point as an opaque token.
fn encode_page_token(next_below: MatchId) -> String {
    format!("p1.{next_below:016x}")
}

fn parse_page_token(token: &str) -> Result<MatchId> {
    token
        .strip_prefix("p1.")
        .filter(|h| h.len() == 16)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .ok_or_else(|| Error::invalid("page_token", "is not a token this server issued"))
}

impl History {
    /// Opens the history's trees in `db`.
    pub fn open(db: &sled::Db) -> Result<History> {
        let matches = db.open_tree("matches")?;
        let last = match matches.last()? {
            Some((k, _)) => suffix_id(&k)?,
            None => 0,
        };
        Ok(History {
            matches,
            by_takedown: db.open_tree("mx_takedown")?,
            by_seller: db.open_tree("mx_seller")?,
            by_marketplace: db.open_tree("mx_marketplace")?,
            by_label: db.open_tree("mx_label")?,
            reviews: db.open_tree("reviews")?,
            labels: db.open_tree("labels")?,
            suppressions: db.open_tree("suppressions")?,
            stats: db.open_tree("stats")?,
            thumbs: db.open_tree("match_thumbs")?,
            outbox: db.open_tree("history_outbox")?,
            last_id: AtomicU64::new(last),
            group: Mutex::default(),
            group_done: Condvar::new(),
            shared: None,
        })
    }

    /// Makes this the history of replica `slot` of `slots` sharing one bank: ids made here
    /// are unique across replicas, and records made here wait in the outbox until shipped.
    pub fn share(mut self, slot: u32, slots: u32) -> History {
        self.shared = Some((u64::from(slot), u64::from(slots.max(1))));
        self
    }

    /// Whether a record with this id is kept here.
    pub fn contains(&self, id: MatchId) -> Result<bool> {
        Ok(self.matches.contains_key(id_be(id))?)
    }

    /// Up to `limit` records made here and not shipped yet, oldest first.
    pub fn unshipped(&self, limit: usize) -> Result<Vec<MatchRecord>> {
        let mut out = Vec::new();
        for k in self.outbox.iter().keys().take(limit) {
            let id = suffix_id(&k?)?;
            match self.record_by_id(id)? {
                Some(r) => out.push(r),
                // Expired by retention before it was shipped: nothing left to ship.
                None => {
                    self.outbox.remove(id_be(id))?;
                }
            }
        }
        Ok(out)
    }

    /// Records now in the shared store: out of the outbox.
    pub fn shipped(&self, ids: &[MatchId]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for id in ids {
            batch.remove(&id_be(*id));
        }
        self.outbox.apply_batch(batch)?;
        Ok(())
    }

    /// Records waiting in the outbox.
    pub fn unshipped_count(&self) -> usize {
        self.outbox.len()
    }

    /// A new time-ordered match id for a record made at `at_ms`.
    fn next_id(&self, at_ms: i64) -> MatchId {
        let floor = (at_ms.max(0) as u64).saturating_mul(1000);
        let mut cur = self.last_id.load(Ordering::Relaxed);
        loop {
            let mut next = floor.max(cur + 1);
            if let Some((slot, slots)) = self.shared {
                // The next id of this replica's residue: still time-ordered to the ms.
                next += (slot + slots - next % slots) % slots;
            }
            match self
                .last_id
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Records a non-clear check and returns its id. Not fsynced on its own: sled flushes
    /// within its flush interval, and losing the last history records in a crash costs less
    /// than an fsync on every upload check.
    pub fn record(
        &self,
        source: Source,
        candidate: &Listing,
        verdict: Verdict,
        score: f64,
        matches: &[Match],
    ) -> Result<MatchId> {
        let at_ms = now_ms();
        let rec = MatchRecord {
            match_id: self.next_id(at_ms),
            at_ms,
            source,
            candidate: ListingInfo::from(candidate),
            verdict,
            score,
            matches: matches.to_vec(),
        };
        self.write(&rec, self.shared.is_some())
    }

    /// Keeps the candidate's thumbnails (index, JPEG) beside a record.
    pub fn put_thumbnails(&self, id: MatchId, thumbs: &[(u8, Vec<u8>)]) -> Result<()> {
        // An empty batch would still take sled's exclusive write lock.
        if thumbs.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (i, jpeg) in thumbs {
            batch.insert(cat(&[&id_be(id), &[*i]]), jpeg.as_slice());
        }
        self.thumbs.apply_batch(batch)?;
        Ok(())
    }

    /// A candidate image's thumbnail, if kept.
    pub fn thumbnail(&self, id: MatchId, image: u8) -> Result<Option<Vec<u8>>> {
        Ok(self.thumbs.get(cat(&[&id_be(id), &[image]]))?.map(|v| v.to_vec()))
    }

    /// Writes a record with its index entries and counters atomically.
    pub fn insert(&self, rec: &MatchRecord) -> Result<MatchId> {
        self.write(rec, false)
    }

    /// [`History::insert`], also queueing the record for shipping when `ship`.
    ///
    /// Group commit: every record bumps the same day's counters, so concurrent writers each
    /// running their own transaction conflict and retry (at 256 checks in flight a recorded
    /// match cost 6x a clear one). Instead a writer queues its prepared record; whoever finds
    /// no commit running writes everything queued in one transaction, with each counter
    /// added once, and hands every writer its own outcome.
    fn write(&self, rec: &MatchRecord, ship: bool) -> Result<MatchId> {
        let prepared = Prepared::new(rec, ship)?;
        let mut g = self.group.lock();
        let ticket = g.next_ticket;
        g.next_ticket += 1;
        g.queue.push((ticket, prepared));
        loop {
            if let Some(outcome) = g.done.remove(&ticket) {
                return outcome;
            }
            if g.writing {
                self.group_done.wait(&mut g);
                continue;
            }
            g.writing = true;
            let take = g.queue.len().min(MAX_GROUP);
            let batch: Vec<_> = g.queue.drain(..take).collect();
            let mut outcomes: Vec<_> = batch.iter().map(|(t, _)| (*t, None)).collect();
            parking_lot::MutexGuard::unlocked(&mut g, || {
                // A panic must not leave the other writers waiting: they get an error.
                let commit = std::panic::AssertUnwindSafe(|| self.commit(&batch, &mut outcomes));
                if std::panic::catch_unwind(commit).is_err() {
                    tracing::error!(records = batch.len(), "the history writer panicked");
                }
            });
            g.writing = false;
            g.done
                .extend(outcomes.into_iter().map(|(t, o)| (t, o.unwrap_or_else(writer_stopped))));
            self.group_done.notify_all();
        }
    }

    /// Writes `batch` in one transaction; if that fails, each record alone, so one bad record
    /// fails only its own writer.
    fn commit(&self, batch: &[(u64, Prepared)], outcomes: &mut [(u64, Option<Result<MatchId>>)]) {
        let recs: Vec<&Prepared> = batch.iter().map(|(_, p)| p).collect();
        match self.transact(&recs) {
            Ok(()) => {
                for (o, p) in outcomes.iter_mut().zip(&recs) {
                    o.1 = Some(Ok(p.id));
                }
            }
            Err(e) if recs.len() == 1 => outcomes[0].1 = Some(Err(e)),
            Err(_) => {
                for (o, p) in outcomes.iter_mut().zip(&recs) {
                    o.1 = Some(self.transact(&[*p]).map(|()| p.id));
                }
            }
        }
    }

    /// Records with their index entries, counters and outbox entries, atomically.
    fn transact(&self, recs: &[&Prepared]) -> Result<()> {
        let mut counters: BTreeMap<&[u8], i64> = BTreeMap::new();
        for k in recs.iter().flat_map(|p| &p.counters) {
            *counters.entry(k.as_slice()).or_default() += 1;
        }
        (
            &self.matches,
            &self.by_takedown,
            &self.by_seller,
            &self.by_marketplace,
            &self.stats,
            &self.outbox,
        )
            .transaction(|(m, t, s, mp, st, ob)| {
                for p in recs {
                    let id = id_be(p.id);
                    m.insert(&id, p.value.as_slice())?;
                    if p.ship {
                        ob.insert(&id, &[])?;
                    }
                    for k in &p.keys.takedown {
                        t.insert(k.as_slice(), &[])?;
                    }
                    for k in &p.keys.seller {
                        s.insert(k.as_slice(), &[])?;
                    }
                    for k in &p.keys.marketplace {
                        mp.insert(k.as_slice(), &[])?;
                    }
                }
                for (k, n) in &counters {
                    add_count(st, k, *n)?;
                }
                Ok::<(), ConflictableTransactionError<Error>>(())
            })?;
        // Keep ids monotonic after inserting records made elsewhere (tests, restores).
        for p in recs {
            self.last_id.fetch_max(p.id, Ordering::Relaxed);
        }
        Ok(())
    }

    fn record_by_id(&self, id: MatchId) -> Result<Option<MatchRecord>> {
        match self.matches.get(id_be(id))? {
            Some(v) => parse(&format!("match {id}"), &v).map(Some),
            None => Ok(None),
        }
    }

    fn view(&self, record: MatchRecord) -> Result<MatchView> {
        let id = id_be(record.match_id);
        let label = match self.labels.get(id)? {
            Some(v) => v
                .first()
                .copied()
                .and_then(Label::from_byte)
                .unwrap_or(Label::Unreviewed),
            None => Label::Unreviewed,
        };
        let reviews = if label == Label::Unreviewed && self.reviews.scan_prefix(id).next().is_none() {
            Vec::new()
        } else {
            self.reviews
                .scan_prefix(id)
                .map(|kv| kv.map_err(Error::from).and_then(|(_, v)| parse("review", &v)))
                .collect::<Result<Vec<Review>>>()?
        };
        Ok(MatchView { record, label, reviews })
    }

    /// One recorded match with its reviews.
    pub fn get(&self, id: MatchId) -> Result<MatchView> {
        let rec = self
            .record_by_id(id)?
            .ok_or_else(|| Error::NotFound(format!("match {id}")))?;
        self.view(rec)
    }

    /// Records an analyst's label. The latest label wins; every label is kept. A
    /// FALSE_POSITIVE stops the same stored images and title of the matched takedowns from
    /// matching the same candidate listing again; any later label undoes that.
    pub fn review(&self, id: MatchId, label: Label, reviewer: &str, note: &str) -> Result<MatchView> {
        self.review_at(id, label, reviewer, note, now_ms())
    }

    /// [`History::review`] given at `at_ms` (a review made on another replica). The same
    /// review twice is kept once, so replaying the events log is harmless.
    pub fn review_at(&self, id: MatchId, label: Label, reviewer: &str, note: &str, at_ms: i64) -> Result<MatchView> {
        let rec = self
            .record_by_id(id)?
            .ok_or_else(|| Error::NotFound(format!("match {id}")))?;
        let key = id_be(id);
        let old = self
            .labels
            .get(key)?
            .and_then(|v| v.first().copied())
            .and_then(Label::from_byte);
        let this = Review {
            label,
            reviewer: reviewer.to_string(),
            note: note.to_string(),
            at_ms,
        };
        let mut seq = 0u32;
        for kv in self.reviews.scan_prefix(key) {
            let (_, v) = kv?;
            if parse::<Review>("review", &v)? == this {
                return self.get(id);
            }
            seq += 1;
        }
        let review = json(&this)?;
        let supp_keys: Vec<(Vec<u8>, Vec<u8>)> = rec
            .matches
            .iter()
            .map(|m| {
                let k = cat(&[
                    rec.candidate.marketplace.as_bytes(),
                    &[0],
                    rec.candidate.listing_id.as_bytes(),
                    &[0],
                    &id_be(m.takedown_id),
                ]);
                let s = Suppression {
                    match_id: id,
                    stored_images: m.images.iter().map(|e| e.stored_image_index).collect(),
                    text: m.text_distance.is_some(),
                };
                json(&s).map(|v| (k, v))
            })
            .collect::<Result<_>>()?;
        (&self.reviews, &self.labels, &self.by_label, &self.suppressions).transaction(|(rv, lb, bl, sp)| {
            rv.insert(cat(&[&key, &seq.to_be_bytes()]), review.as_slice())?;
            lb.insert(&key, &[label.byte()])?;
            if let Some(old) = old {
                bl.remove(cat(&[&[old.byte()], &key]))?;
            }
            if label != Label::Unreviewed {
                bl.insert(cat(&[&[label.byte()], &key]), &[])?;
            }
            for (k, v) in &supp_keys {
                let current: Option<Suppression> = sp.get(k)?.and_then(|b| serde_json::from_slice(&b).ok());
                if label == Label::FalsePositive {
                    sp.insert(k.as_slice(), v.as_slice())?;
                } else if current.is_some_and(|c| c.match_id == id) {
                    sp.remove(k.as_slice())?;
                }
            }
            Ok::<(), ConflictableTransactionError<Error>>(())
        })?;
        self.get(id)
    }

    /// What FALSE_POSITIVE reviews stop from matching this candidate listing, per takedown.
    pub fn suppressions(&self, marketplace: &str, listing_id: &str) -> Result<HashMap<TakedownId, Suppression>> {
        let prefix = cat(&[marketplace.as_bytes(), &[0], listing_id.as_bytes(), &[0]]);
        let mut out = HashMap::new();
        for kv in self.suppressions.scan_prefix(&prefix) {
            let (k, v) = kv?;
            if k.len() != prefix.len() + 8 {
                continue; // a longer listing id that shares this prefix
            }
            out.insert(suffix_id(&k)?, parse("suppression", &v)?);
        }
        Ok(out)
    }

    /// One page of records matching `q`, newest first.
    pub fn query(&self, q: &Query, page_size: usize, page_token: Option<&str>) -> Result<Page> {
        if page_size > MAX_PAGE_SIZE {
            return Err(Error::invalid(
                "page_size",
                format!("is {page_size}, over the maximum of {MAX_PAGE_SIZE}"),
            ));
        }
        let page_size = if page_size == 0 { DEFAULT_PAGE_SIZE } else { page_size };
        for (field, t) in [("from", q.from_ms), ("to", q.to_ms)] {
            if t.is_some_and(|t| !(0..=MAX_TIME_MS).contains(&t)) {
                return Err(Error::invalid(field, "is outside 1970-2200"));
            }
        }
        if let (Some(f), Some(t)) = (q.from_ms, q.to_ms) {
            if f > t {
                return Err(Error::invalid("from", "is after to"));
            }
        }
        if q.min_score.is_some_and(|s| !(0.0..=1.0).contains(&s)) {
            return Err(Error::invalid("min_score", "must be between 0 and 1"));
        }
        // Ids are time-ordered: a time bound is an id bound.
        let lo = q.from_ms.map_or(0, |t| t as u64 * 1000);
        let mut hi = q.to_ms.map_or(u64::MAX, |t| t as u64 * 1000);
        if let Some(tok) = page_token {
            hi = hi.min(parse_page_token(tok)?);
        }
        let (tree, prefix): (&Tree, Vec<u8>) = if let Some(t) = q.takedown_id {
            (&self.by_takedown, id_be(t).to_vec())
        } else if let Some(s) = &q.seller_id {
            (&self.by_seller, cat(&[s.as_bytes(), &[0]]))
        } else if let Some(l) = q.label.filter(|l| *l != Label::Unreviewed) {
            (&self.by_label, vec![l.byte()])
        } else if let Some(m) = &q.marketplace {
            (&self.by_marketplace, cat(&[m.as_bytes(), &[0]]))
        } else {
            (&self.matches, Vec::new())
        };
        let start = cat(&[&prefix, &id_be(lo)]);
        let end = cat(&[&prefix, &id_be(hi)]);
        let mut records = Vec::new();
        let mut examined = 0usize;
        let mut last_seen = None;
        for kv in tree.range(start..end).rev() {
            let (k, _) = kv?;
            let id = suffix_id(&k)?;
            if k.len() != prefix.len() + 8 {
                continue;
            }
            examined += 1;
            last_seen = Some(id);
            if let Some(rec) = self.record_by_id(id)? {
                if matches_filters(&rec, q) {
                    let view = self.view(rec)?;
                    if q.label.is_none_or(|l| l == view.label) {
                        records.push(view);
                    }
                }
            }
            if records.len() == page_size || examined >= SCAN_BUDGET {
                break;
            }
        }
        // More may follow when we stopped early; the token resumes below the last id seen.
        let stopped_early = records.len() == page_size || examined >= SCAN_BUDGET;
        let next_page_token = match last_seen {
            Some(id) if stopped_early && id > lo => Some(encode_page_token(id)),
            _ => None,
        };
        Ok(Page {
            records,
            next_page_token,
        })
    }

    /// Counts over [from, to): per day, per marketplace, per verdict, and the top takedowns
    /// and sellers. Reads only the per-day counters.
    pub fn stats(&self, from_ms: i64, to_ms: i64, top: usize) -> Result<Stats> {
        if !(0..=MAX_TIME_MS).contains(&from_ms) || !(0..=MAX_TIME_MS).contains(&to_ms) {
            return Err(Error::invalid("from", "time range must be within 1970-2200"));
        }
        if from_ms > to_ms {
            return Err(Error::invalid("from", "is after to"));
        }
        if to_ms - from_ms > 3660 * DAY_MS {
            return Err(Error::invalid("to", "range is longer than ten years"));
        }
        let first = (from_ms.div_euclid(DAY_MS) as u32).to_be_bytes();
        let last = ((to_ms - 1).max(from_ms).div_euclid(DAY_MS) as u32).to_be_bytes();
        let mut per_day: BTreeMap<u32, u64> = BTreeMap::new();
        let mut maps: [BTreeMap<Vec<u8>, u64>; 5] = Default::default();
        let mut end = last.to_vec();
        end.push(0xff);
        for kv in self.stats.range(first.to_vec()..end) {
            let (k, v) = kv?;
            if k.len() < 5 {
                continue;
            }
            let day = u32::from_be_bytes([k[0], k[1], k[2], k[3]]);
            let n = <[u8; 8]>::try_from(v.as_ref()).map(u64::from_be_bytes).unwrap_or(0);
            let kind = k[4] as usize;
            if kind == STAT_TOTAL as usize {
                *per_day.entry(day).or_default() += n;
            } else if kind < maps.len() {
                *maps[kind].entry(k[5..].to_vec()).or_default() += n;
            }
        }
        let sorted = |m: &BTreeMap<Vec<u8>, u64>| {
            let mut v: Vec<(Vec<u8>, u64)> = m.iter().map(|(k, n)| (k.clone(), *n)).collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            v
        };
        let text = |v: Vec<(Vec<u8>, u64)>| -> Vec<(String, u64)> {
            v.into_iter()
                .map(|(k, n)| (String::from_utf8_lossy(&k).into_owned(), n))
                .collect()
        };
        let mut top_sellers = text(sorted(&maps[STAT_SELLER as usize]));
        top_sellers.truncate(top);
        let mut top_takedowns: Vec<(TakedownId, u64)> = sorted(&maps[STAT_TAKEDOWN as usize])
            .into_iter()
            .filter_map(|(k, n)| {
                <[u8; 8]>::try_from(k.as_slice())
                    .ok()
                    .map(|b| (u64::from_be_bytes(b), n))
            })
            .collect();
        top_takedowns.truncate(top);
        Ok(Stats {
            total: per_day.values().sum(),
            per_day: per_day.into_iter().map(|(d, n)| (day_string(d), n)).collect(),
            per_marketplace: text(sorted(&maps[STAT_MARKETPLACE as usize])),
            per_verdict: text(sorted(&maps[STAT_VERDICT as usize])),
            top_takedowns,
            top_sellers,
        })
    }

    /// Deletes up to `batch` records older than `before_ms`, with their index entries,
    /// reviews, labels and counters. Returns how many were deleted; call again until 0.
    pub fn delete_older_than(&self, before_ms: i64, batch: usize) -> Result<usize> {
        let end = id_be((before_ms.max(0) as u64).saturating_mul(1000));
        let mut n = 0;
        for kv in self.matches.range(..end.to_vec()).take(batch) {
            let (k, v) = kv?;
            let rec: MatchRecord = parse("match", &v)?;
            let IndexKeys {
                takedown: tk,
                seller: sk,
                marketplace: mk,
            } = index_keys(&rec);
            let counters = stat_keys(&rec);
            let review_keys: Vec<_> = self
                .reviews
                .scan_prefix(&k)
                .keys()
                .collect::<std::result::Result<_, _>>()?;
            let label = self.labels.get(&k)?.and_then(|v| v.first().copied());
            (
                &self.matches,
                &self.by_takedown,
                &self.by_seller,
                &self.by_marketplace,
                &self.stats,
                &self.reviews,
                &self.labels,
                &self.by_label,
            )
                .transaction(|(m, t, s, mp, st, rv, lb, bl)| {
                    m.remove(&k)?;
                    for key in &tk {
                        t.remove(key.as_slice())?;
                    }
                    for key in &sk {
                        s.remove(key.as_slice())?;
                    }
                    for key in &mk {
                        mp.remove(key.as_slice())?;
                    }
                    for key in &counters {
                        add_count(st, key, -1)?;
                    }
                    for key in &review_keys {
                        rv.remove(key)?;
                    }
                    lb.remove(&k)?;
                    if let Some(l) = label {
                        bl.remove(cat(&[&[l], &k]))?;
                    }
                    Ok::<(), ConflictableTransactionError<Error>>(())
                })?;
            for t in self.thumbs.scan_prefix(&k).keys() {
                self.thumbs.remove(t?)?;
            }
            n += 1;
        }
        Ok(n)
    }

    /// Number of recorded matches.
    pub fn len(&self) -> usize {
        self.matches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.matches.is_empty()
    }
}

fn matches_filters(rec: &MatchRecord, q: &Query) -> bool {
    q.takedown_id
        .is_none_or(|t| rec.matches.iter().any(|m| m.takedown_id == t))
        && q.seller_id
            .as_ref()
            .is_none_or(|s| rec.candidate.seller_id == *s || rec.matches.iter().any(|m| m.seller_id == *s))
        && q.marketplace
            .as_ref()
            .is_none_or(|mk| rec.candidate.marketplace == *mk || rec.matches.iter().any(|m| m.marketplace == *mk))
        && q.verdict.is_none_or(|v| rec.verdict == v)
        && q.min_score.is_none_or(|s| rec.score >= s)
        && q.source.is_none_or(|s| rec.source == s)
        && q.from_ms.is_none_or(|f| rec.at_ms >= f)
        && q.to_ms.is_none_or(|t| rec.at_ms < t)
}

/// "YYYY-MM-DD" of a day number (days since 1970-01-01), proleptic Gregorian.
pub fn day_string(day: u32) -> String {
    // Howard Hinnant's civil_from_days.
    let z = i64::from(day) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ImageEvidence;

    fn rec(id: MatchId, at_ms: i64, takedown: u64, seller: &str, verdict: Verdict) -> MatchRecord {
        MatchRecord {
            match_id: id,
            at_ms,
            source: Source::Upload,
            candidate: ListingInfo {
                listing_id: format!("c{id}"),
                marketplace: "tokopedia".into(),
                seller_id: seller.into(),
                ..Default::default()
            },
            verdict,
            score: 0.9,
            matches: vec![Match {
                takedown_id: takedown,
                marketplace: "shopee".into(),
                listing_id: format!("t{takedown}"),
                seller_id: format!("orig{takedown}"),
                images: vec![ImageEvidence {
                    candidate_image_index: 0,
                    stored_image_index: 1,
                    kind: crate::domain::HashKind::Pdq,
                    distance: 3,
                    transform: None,
                    colour: None,
                    region: false,
                }],
                text_distance: Some(2),
                same_seller: false,
                verdict,
                score: 0.9,
            }],
        }
    }

    fn open() -> (tempfile::TempDir, History) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        (dir, History::open(&db).unwrap())
    }

    #[test]
    fn concurrent_writers_each_get_their_own_outcome_and_every_record_and_count_lands() {
        let (_d, h) = open();
        let t0: i64 = 1_680_000_000_000;
        let (threads, each) = (8u64, 150u64);
        std::thread::scope(|s| {
            for w in 0..threads {
                let h = &h;
                s.spawn(move || {
                    for i in 0..each {
                        let n = w * each + i;
                        // Two days, three takedowns and one seller per writer: hot counters.
                        let at = t0 + (n % 2) as i64 * DAY_MS;
                        let r = rec(
                            (at as u64) * 1000 + n,
                            at,
                            n % 3 + 1,
                            &format!("s{w}"),
                            Verdict::Reupload,
                        );
                        assert_eq!(h.insert(&r).unwrap(), r.match_id, "a writer got another's outcome");
                    }
                });
            }
        });
        let total = threads * each;
        assert_eq!(h.matches.len() as u64, total);
        let st = h.stats(t0 - DAY_MS, t0 + 3 * DAY_MS, 10).unwrap();
        assert_eq!(st.total, total);
        assert_eq!(
            st.per_day.iter().map(|d| d.1).collect::<Vec<_>>(),
            [total / 2, total / 2]
        );
        assert_eq!(st.top_takedowns.iter().map(|t| t.1).sum::<u64>(), total);
        assert!(st.top_sellers.iter().all(|(_, n)| *n == each), "{:?}", st.top_sellers);
        let q = Query {
            seller_id: Some("s3".into()),
            ..Default::default()
        };
        assert_eq!(h.query(&q, MAX_PAGE_SIZE, None).unwrap().records.len() as u64, each);
        // Ids stay monotonic after the last commit.
        assert!(h.next_id(t0) > (t0 as u64 + DAY_MS as u64) * 1000 + total - 1);
    }

    #[test]
    fn day_strings() {
        assert_eq!(day_string(0), "1970-01-01");
        assert_eq!(day_string(19_448), "2023-04-01");
        assert_eq!(day_string(11_016), "2000-02-29");
    }

    #[test]
    fn query_filters_paginate_newest_first() {
        let (_d, h) = open();
        let t0 = 1_680_000_000_000;
        for i in 0..100u64 {
            let v = if i % 2 == 0 { Verdict::Reupload } else { Verdict::Review };
            h.insert(&rec(
                (t0 as u64 + i * 1000) * 1000,
                t0 + (i as i64) * 1000,
                i % 5,
                &format!("s{}", i % 3),
                v,
            ))
            .unwrap();
        }
        let mut seen = Vec::new();
        let mut token = None;
        for _ in 0..100 {
            let page = h
                .query(
                    &Query {
                        takedown_id: Some(2),
                        ..Default::default()
                    },
                    7,
                    token.as_deref(),
                )
                .unwrap();
            seen.extend(page.records.iter().map(|r| r.record.match_id));
            token = page.next_page_token;
            if token.is_none() {
                break;
            }
        }
        assert_eq!(seen.len(), 20);
        assert!(seen.windows(2).all(|w| w[0] > w[1]), "newest first");
        let q = Query {
            seller_id: Some("s1".into()),
            verdict: Some(Verdict::Reupload),
            from_ms: Some(t0 + 10_000),
            to_ms: Some(t0 + 50_000),
            ..Default::default()
        };
        let page = h.query(&q, 100, None).unwrap();
        let want: Vec<_> = (10..50u64).rev().filter(|i| i % 3 == 1 && i % 2 == 0).collect();
        let got: Vec<_> = page
            .records
            .iter()
            .map(|r| r.record.candidate.listing_id.clone())
            .collect();
        let want_ids: Vec<_> = want
            .iter()
            .map(|i| format!("c{}", (t0 as u64 + i * 1000) * 1000))
            .collect();
        assert_eq!(got, want_ids);
        assert!(matches!(
            h.query(&Query::default(), MAX_PAGE_SIZE + 1, None),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            h.query(&Query::default(), 10, Some("garbage")),
            Err(Error::InvalidArgument { .. })
        ));
        let inverted = Query {
            from_ms: Some(10),
            to_ms: Some(5),
            ..Default::default()
        };
        assert!(matches!(
            h.query(&inverted, 10, None),
            Err(Error::InvalidArgument { .. })
        ));
    }

    #[test]
    fn reviews_label_suppress_and_undo() {
        let (_d, h) = open();
        let id = h.insert(&rec(5_000_000, 5000, 9, "bad", Verdict::Review)).unwrap();
        assert_eq!(h.get(id).unwrap().label, Label::Unreviewed);
        let v = h.review(id, Label::FalsePositive, "ana", "different jacket").unwrap();
        assert_eq!(v.label, Label::FalsePositive);
        let s = h.suppressions("tokopedia", &format!("c{id}")).unwrap();
        assert_eq!(s[&9].stored_images, BTreeSet::from([1]));
        assert!(s[&9].text);
        let fp = h
            .query(
                &Query {
                    label: Some(Label::FalsePositive),
                    ..Default::default()
                },
                10,
                None,
            )
            .unwrap();
        assert_eq!(fp.records.len(), 1);
        let v = h.review(id, Label::Confirmed, "budi", "on second look it is").unwrap();
        assert_eq!(v.reviews.len(), 2, "every label is kept");
        assert_eq!(v.label, Label::Confirmed, "the latest wins");
        assert!(
            h.suppressions("tokopedia", &format!("c{id}")).unwrap().is_empty(),
            "undone"
        );
        assert!(h
            .query(
                &Query {
                    label: Some(Label::FalsePositive),
                    ..Default::default()
                },
                10,
                None
            )
            .unwrap()
            .records
            .is_empty());
        assert!(matches!(
            h.review(42, Label::Confirmed, "", ""),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn stats_and_retention() {
        let (_d, h) = open();
        for i in 0..30u64 {
            let at = 19_448 * DAY_MS + (i as i64) * DAY_MS / 10; // 2023-04-01 onwards, 10 a day
            h.insert(&rec(at as u64 * 1000 + i, at, i % 2, "repeat", Verdict::Reupload))
                .unwrap();
        }
        let s = h.stats(19_448 * DAY_MS, 19_451 * DAY_MS, 5).unwrap();
        assert_eq!(s.total, 30);
        assert_eq!(
            s.per_day,
            vec![
                ("2023-04-01".into(), 10),
                ("2023-04-02".into(), 10),
                ("2023-04-03".into(), 10)
            ]
        );
        assert_eq!(s.per_verdict, vec![("REUPLOAD".into(), 30)]);
        assert_eq!(s.top_takedowns, vec![(0, 15), (1, 15)]);
        assert_eq!(s.top_sellers, vec![("tokopedia/repeat".into(), 30)]);
        assert_eq!(h.delete_older_than(19_449 * DAY_MS, 4).unwrap(), 4);
        assert_eq!(h.delete_older_than(19_449 * DAY_MS, 100).unwrap(), 6);
        assert_eq!(h.delete_older_than(19_449 * DAY_MS, 100).unwrap(), 0);
        let s = h.stats(19_448 * DAY_MS, 19_451 * DAY_MS, 5).unwrap();
        assert_eq!(s.total, 20);
        assert_eq!(
            h.query(
                &Query {
                    takedown_id: Some(0),
                    ..Default::default()
                },
                100,
                None
            )
            .unwrap()
            .records
            .len(),
            10
        );
        assert!(matches!(h.stats(10, 5, 5), Err(Error::InvalidArgument { .. })));
    }
}
