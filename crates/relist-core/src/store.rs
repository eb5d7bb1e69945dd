//! Durable storage in sled: the takedown bank and the match history.
//!
//! Trees (the stored format is a contract, versioned by [`SCHEMA_VERSION`] in `meta`):
//! - `meta`: `schema_version` -> u32 big-endian; [`META_KEY`] -> the index snapshot's [`Claim`].
//! - `takedowns`: takedown id (u64 BE) -> JSON [`Takedown`], removed ones included.
//! - `listing_keys`: `marketplace \0 listing_id` -> takedown id, for idempotent registration.
//! - `fingerprints`: takedown id -> compact binary fingerprints of *live* takedowns only; the
//!   in-memory index is rebuilt from this tree alone at start, without parsing JSON.
//! - `takedown_thumbs`: takedown id ++ image index (u8) -> small JPEG, when kept.
//! - the match history's trees, documented in [`crate::history`].
//!
//! A takedown and its keys are written in one transaction, so a crash never leaves a
//! half-written takedown.
use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::{Transactional, Tree};

use crate::codec::{be_u64, Reader};
use crate::domain::{ImageFingerprint, ListingFingerprints, RegionFingerprint, RegionRect, Takedown, TakedownId};
use crate::error::{Error, Result};
use crate::fingerprint::appearance::{self, Appearance};
use crate::fingerprint::local::Feature;
use crate::fingerprint::pdq::PdqHash;
use crate::fingerprint::text::{self, TEXT_FINGERPRINT_VERSION};

/// Version of the stored layout. Bump it, with a migration, on any change of what is stored
/// or of the fingerprints' output.
///
/// - 1: fingerprints record format 1 (whole-image hashes and title simhash).
/// - 2: adds fingerprints record format 2 (plus region hashes and local features). Records
///   of format 1 stay readable as they are; takedowns registered before have no region
///   hashes until they are registered again.
/// - 3: title simhashes of text fingerprint version 2 ([`TEXT_FINGERPRINT_VERSION`]); older
///   stores have theirs recomputed from the stored titles on open.
///
/// Older stores are upgraded in place on open.
pub const SCHEMA_VERSION: u32 = 3;
const SCHEMA_KEY: &[u8] = b"schema_version";

/// sled's page cache by default. sled's own default (1 GiB) filled with the fingerprint pages
/// read once at start-up and made resident memory grow with the bank; matching never reads
/// them again (the index is in memory), so the cache only serves history queries and
/// lookups. Resident memory grows with writes until the cache is full, then levels off.
pub const DEFAULT_CACHE_BYTES: u64 = 256 << 20;

/// The sled database and its trees.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    takedowns: Tree,
    listing_keys: Tree,
    fingerprints: Tree,
    thumbs: Tree,
    /// The index snapshot the store named when opened (see [`crate::snapshot`]).
    snapshot_claim: Option<Claim>,
}

impl Store {
    /// Opens (or creates) the store in `dir` with the default page cache: upgrades a store written by an older schema
    /// in place and refuses one written by a newer relist.
    pub fn open(dir: &Path) -> Result<Store> {
        Store::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// [`Store::open`] with a page cache of `cache_bytes` (see [`DEFAULT_CACHE_BYTES`]).
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Store> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(|e| match &e {
                // sled locks its directory: EAGAIN/EWOULDBLOCK means another process has it
                // (sled wraps it in an error of its own, so its text is checked too).
                sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.raw_os_error() == Some(11)
                        || io.to_string().contains("could not acquire lock") =>
                {
                    Error::invalid(
                        "data_dir",
                        format!(
                            "{} is in use by another relist process (the store is locked); stop it, or give this one another --data-dir",
                            dir.display()
                        ),
                    )
                }
                _ => Error::from(e),
            })?;
        // Before anything can write: whatever opens the store may change it, so its index
        // snapshot is stale from here on (the daemon uses what the key said).
        let snapshot_claim = take_snapshot_claim(&db)?;
        let meta = db.open_tree("meta")?;
        let found = match meta.get(SCHEMA_KEY)? {
            Some(v) => <[u8; 4]>::try_from(v.as_ref())
                .map(u32::from_be_bytes)
                .map_err(|_| Error::Corrupt("schema_version is not a u32".into()))?,
            None => {
                meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
                db.flush()?;
                SCHEMA_VERSION
            }
        };
        if found == 0 || found > SCHEMA_VERSION {
            return Err(Error::Corrupt(format!(
                "store has schema version {found}, this relist reads versions 1 to {SCHEMA_VERSION}"
            )));
        }
        let store = Store {
            takedowns: db.open_tree("takedowns")?,
            listing_keys: db.open_tree("listing_keys")?,
            fingerprints: db.open_tree("fingerprints")?,
            thumbs: db.open_tree("takedown_thumbs")?,
            snapshot_claim,
            db,
        };
        if found < SCHEMA_VERSION {
            store.upgrade(found)?;
            // Written last: a crash during the upgrade leaves the old version, and the
            // upgrade (idempotent) runs again at the next open.
            meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
            store.db.flush()?;
        }
        Ok(store)
    }

    fn upgrade(&self, from: u32) -> Result<()> {
        if from < 2 {
            tracing::warn!(
                "upgrading store schema {from} -> {SCHEMA_VERSION}: takedowns registered before have no region \
                 hashes (crops, frames, collages) until registered again"
            );
        }
        if from < 3 {
            let started = std::time::Instant::now();
            let changed = self.rehash_titles()?;
            tracing::info!(
                changed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "upgraded store schema {from} -> {SCHEMA_VERSION}: title simhashes recomputed (text fingerprint \
                 version {TEXT_FINGERPRINT_VERSION})"
            );
        }
        Ok(())
    }

    /// Recomputes every takedown's title simhash and normalised title from its stored title,
    /// after a change of the text fingerprint; returns how many changed. Images keep their
    /// hashes: recomputing those would need the photos, which are not kept.
    fn rehash_titles(&self) -> Result<u64> {
        const CHUNK: usize = 10_000;
        let (mut json, mut fps) = (sled::Batch::default(), sled::Batch::default());
        let (mut pending, mut changed) = (0usize, 0u64);
        for kv in self.takedowns.iter() {
            let (k, v) = kv?;
            let mut td: Takedown =
                serde_json::from_slice(&v).map_err(|e| Error::Corrupt(format!("takedown record: {e}")))?;
            let (normalized, simhash) = text::fingerprint(&td.listing.title);
            if td.fingerprints.title_simhash == simhash && td.fingerprints.normalized_title == normalized {
                continue;
            }
            td.fingerprints.title_simhash = simhash;
            td.fingerprints.normalized_title = normalized;
            json.insert(&k, serde_json::to_vec(&td).map_err(|e| Error::Internal(e.to_string()))?);
            if let Some(b) = self.fingerprints.get(&k)? {
                let mut f = decode_fingerprints(&b)
                    .ok_or_else(|| Error::Corrupt(format!("fingerprints of takedown {}", td.id)))?;
                f.title_simhash = simhash;
                fps.insert(&k, encode_fingerprints(&f));
            }
            changed += 1;
            pending += 1;
            if pending == CHUNK {
                self.takedowns.apply_batch(std::mem::take(&mut json))?;
                self.fingerprints.apply_batch(std::mem::take(&mut fps))?;
                pending = 0;
            }
        }
        self.takedowns.apply_batch(json)?;
        self.fingerprints.apply_batch(fps)?;
        Ok(changed)
    }

    /// A fresh id, unique across restarts; never 0.
    pub fn next_id(&self) -> Result<u64> {
        Ok(self.db.generate_id()? + 1)
    }

    /// Makes every write so far durable (fsync). Called before acknowledging a takedown.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// The takedown registered for this listing, if any (removed ones included).
    pub fn takedown_id_by_listing(&self, marketplace: &str, listing_id: &str) -> Result<Option<TakedownId>> {
        match self.listing_keys.get(listing_key(marketplace, listing_id))? {
            Some(v) => Ok(Some(decode_id(&v)?)),
            None => Ok(None),
        }
    }

    /// A stored takedown.
    pub fn takedown(&self, id: TakedownId) -> Result<Option<Takedown>> {
        match self.takedowns.get(id.to_be_bytes())? {
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| Error::Corrupt(format!("takedown {id}: {e}"))),
            None => Ok(None),
        }
    }

    /// Writes a takedown, its listing key and (when it is live) its fingerprints atomically.
    pub fn put_takedown(&self, td: &Takedown) -> Result<()> {
        let json = serde_json::to_vec(td).map_err(|e| Error::Internal(e.to_string()))?;
        let key = td.id.to_be_bytes();
        let lkey = listing_key(&td.listing.marketplace, &td.listing.listing_id);
        let fps = td
            .removed_at_ms
            .is_none()
            .then(|| encode_fingerprints(&td.fingerprints));
        (&self.takedowns, &self.listing_keys, &self.fingerprints).transaction(
            |(t, l, f): &(TransactionalTree, TransactionalTree, TransactionalTree)| {
                t.insert(&key, json.as_slice())?;
                l.insert(lkey.as_slice(), &key)?;
                match &fps {
                    Some(b) => f.insert(&key, b.as_slice())?,
                    None => f.remove(&key)?,
                };
                Ok::<(), ConflictableTransactionError<Error>>(())
            },
        )?;
        Ok(())
    }

    /// The fingerprints of every live takedown, in id order; used to build the index at start.
    pub fn live_fingerprints(&self) -> impl Iterator<Item = Result<(TakedownId, ListingFingerprints)>> + '_ {
        self.fingerprints.iter().map(|kv| {
            let (k, v) = kv?;
            let id = decode_id(&k)?;
            let fps =
                decode_fingerprints(&v).ok_or_else(|| Error::Corrupt(format!("fingerprints of takedown {id}")))?;
            Ok((id, fps))
        })
    }

    /// The binary fingerprints record of a live takedown (with its local features, which the
    /// JSON record leaves out).
    pub fn live_fingerprints_of(&self, id: TakedownId) -> Result<Option<ListingFingerprints>> {
        match self.fingerprints.get(id.to_be_bytes())? {
            Some(v) => decode_fingerprints(&v)
                .map(Some)
                .ok_or_else(|| Error::Corrupt(format!("fingerprints of takedown {id}"))),
            None => Ok(None),
        }
    }

    /// Number of live takedowns.
    pub fn live_count(&self) -> usize {
        self.fingerprints.len()
    }

    /// Replaces a takedown's thumbnails (index, JPEG). Best effort: thumbnails are for
    /// people, and the takedown itself is already stored.
    pub fn put_thumbnails(&self, id: TakedownId, thumbs: &[(u8, Vec<u8>)]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for k in self.thumbs.scan_prefix(id.to_be_bytes()).keys() {
            batch.remove(k?);
        }
        for (i, jpeg) in thumbs {
            batch.insert([&id.to_be_bytes()[..], &[*i]].concat(), jpeg.as_slice());
        }
        self.thumbs.apply_batch(batch)?;
        Ok(())
    }

    /// A takedown image's thumbnail, if kept.
    pub fn thumbnail(&self, id: TakedownId, image: u8) -> Result<Option<Vec<u8>>> {
        Ok(self
            .thumbs
            .get([&id.to_be_bytes()[..], &[image]].concat())?
            .map(|v| v.to_vec()))
    }

    /// The index snapshot the store named when it was opened (the key is gone from the store
    /// since): the only snapshot the bank may load.
    pub fn snapshot_claim(&self) -> Option<Claim> {
        self.snapshot_claim
    }

    /// Records `claim` as the store's valid index snapshot (and flushes). Only once the file is
    /// on disk and nothing can write to the store any more (see [`crate::snapshot`]).
    pub fn publish_snapshot(&self, claim: Claim) -> Result<()> {
        publish(&self.db, claim)
    }

    /// The database, for the history's own trees.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// What this store mirrors when a shared store is the record (see [`crate::storage`]):
    /// the shared bank's id and the last change applied; `None` for a store that is its own
    /// record (or a fresh one).
    pub fn mirror_state(&self) -> Result<Option<MirrorState>> {
        let meta = self.db.open_tree("meta")?;
        let Some(bank) = meta.get(MIRROR_BANK_KEY)? else {
            return Ok(None);
        };
        let bank_id = String::from_utf8(bank.to_vec()).map_err(|_| Error::Corrupt("mirror bank id".into()))?;
        let (seq, mark) = match meta.get(MIRROR_SEQ_KEY)? {
            Some(v) if v.len() == 16 => (decode_id(&v[..8])?, decode_id(&v[8..])?),
            Some(_) => return Err(Error::Corrupt("mirror seq is not 16 bytes".into())),
            None => (0, 0),
        };
        Ok(Some(MirrorState { bank_id, seq, mark }))
    }

    /// Records the last change applied to this mirror (written after the changes themselves:
    /// after a crash the mirror replays from an older seq, which is harmless).
    pub fn set_mirror_state(&self, state: &MirrorState) -> Result<()> {
        let meta = self.db.open_tree("meta")?;
        meta.insert(MIRROR_BANK_KEY, state.bank_id.as_bytes())?;
        meta.insert(
            MIRROR_SEQ_KEY,
            [state.seq.to_be_bytes(), state.mark.to_be_bytes()].concat(),
        )?;
        Ok(())
    }

    /// A replica's own value in `meta` (its name, slot, events position): `mirror_<name>`.
    pub fn replica_value(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let meta = self.db.open_tree("meta")?;
        Ok(meta.get(format!("mirror_{name}"))?.map(|v| v.to_vec()))
    }

    /// Sets a replica's own value in `meta` (see [`Store::replica_value`]).
    pub fn set_replica_value(&self, name: &str, value: &[u8]) -> Result<()> {
        let meta = self.db.open_tree("meta")?;
        meta.insert(format!("mirror_{name}"), value)?;
        Ok(())
    }

    /// Empties the takedown trees (a mirror of another bank is rebuilt from scratch). The
    /// history and the API keys stay.
    pub fn clear_takedowns(&self) -> Result<()> {
        for tree in [&self.takedowns, &self.listing_keys, &self.fingerprints, &self.thumbs] {
            tree.clear()?;
        }
        let meta = self.db.open_tree("meta")?;
        meta.remove(MIRROR_BANK_KEY)?;
        meta.remove(MIRROR_SEQ_KEY)?;
        self.flush()
    }

    /// Stored takedowns (removed ones included) with ids above `after`, in id order.
    pub fn takedowns_after(&self, after: TakedownId) -> impl Iterator<Item = Result<Takedown>> + '_ {
        let start = after.checked_add(1);
        start
            .into_iter()
            .flat_map(move |from| self.takedowns.range(from.to_be_bytes()..))
            .map(|kv| {
                let (k, v) = kv?;
                let id = decode_id(&k)?;
                serde_json::from_slice(&v).map_err(|e| Error::Corrupt(format!("takedown {id}: {e}")))
            })
    }
}

/// `meta` keys of a mirror: the shared bank's id (UTF-8), and the last applied change's seq
/// and mark (two u64 BE).
const MIRROR_BANK_KEY: &[u8] = b"mirror_bank";
const MIRROR_SEQ_KEY: &[u8] = b"mirror_seq";

/// A mirror's position in the shared store's change log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorState {
    pub bank_id: String,
    pub seq: u64,
    /// The last applied change's [`crate::storage::Change::mark`] (0 before any).
    pub mark: u64,
}

/// sled as the record: the store itself, no change log (the writer updates its own index).
impl crate::storage::Storage for Store {
    fn describe(&self) -> String {
        "the embedded sled store".into()
    }

    fn next_takedown_id(&self) -> Result<TakedownId> {
        self.next_id()
    }

    fn takedown_id_by_listing(&self, marketplace: &str, listing_id: &str) -> Result<Option<TakedownId>> {
        Store::takedown_id_by_listing(self, marketplace, listing_id)
    }

    fn takedown(&self, id: TakedownId) -> Result<Option<Takedown>> {
        Store::takedown(self, id)
    }

    fn live_fingerprints_of(&self, id: TakedownId) -> Result<Option<ListingFingerprints>> {
        Store::live_fingerprints_of(self, id)
    }

    fn write_takedown(&self, td: &Takedown) -> Result<u64> {
        if let Some(other) = Store::takedown_id_by_listing(self, &td.listing.marketplace, &td.listing.listing_id)?
            .filter(|other| *other != td.id)
        {
            return Err(Error::Conflict(format!(
                "listing {}/{} is takedown {other}",
                td.listing.marketplace, td.listing.listing_id
            )));
        }
        self.put_takedown(td)?;
        self.flush()?;
        Ok(0)
    }

    fn put_thumbnails(&self, id: TakedownId, thumbs: &[(u8, Vec<u8>)]) -> Result<()> {
        Store::put_thumbnails(self, id, thumbs)
    }

    fn thumbnail(&self, id: TakedownId, image: u8) -> Result<Option<Vec<u8>>> {
        Store::thumbnail(self, id, image)
    }

    fn changes_after(&self, _after: u64, _limit: usize) -> Result<Vec<crate::storage::Change>> {
        Ok(Vec::new())
    }

    fn wait_for_change(&self, timeout: std::time::Duration) -> Result<bool> {
        std::thread::sleep(timeout);
        Ok(false)
    }

    fn bank_id(&self) -> Result<String> {
        Ok("sled".into())
    }
}

// ---- the index snapshot's claim (the protocol is described in `crate::snapshot`) ----

/// The `meta` tree's key for the valid snapshot's id and checksum (two u64 big-endian).
pub const META_KEY: &[u8] = b"index_snapshot";

/// What the store said about its snapshot when it was opened: the only snapshot it may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    pub id: u64,
    pub checksum: u64,
}

/// Takes the snapshot key out of `meta` (and flushes) and returns what it said. Called by the
/// store's open before anything can write: from then on the snapshot is stale until the next
/// graceful shutdown writes a new one.
fn take_snapshot_claim(db: &sled::Db) -> Result<Option<Claim>> {
    let meta = db.open_tree("meta")?;
    let Some(v) = meta.remove(META_KEY)? else {
        return Ok(None);
    };
    db.flush()?;
    let claim = <[u8; 16]>::try_from(v.as_ref()).ok().map(|b| {
        let (id, sum) = b.split_at(8);
        Claim {
            id: be_u64(id),
            checksum: be_u64(sum),
        }
    });
    if claim.is_none() {
        tracing::warn!("the store's index snapshot key is malformed; ignored");
    }
    Ok(claim)
}

/// Records `claim` as the store's valid snapshot (and flushes). Only once the file is on disk
/// and nothing can write to the store any more.
fn publish(db: &sled::Db, claim: Claim) -> Result<()> {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&claim.id.to_be_bytes());
    v[8..].copy_from_slice(&claim.checksum.to_be_bytes());
    db.open_tree("meta")?.insert(META_KEY, &v)?;
    db.flush()?;
    Ok(())
}

fn listing_key(marketplace: &str, listing_id: &str) -> Vec<u8> {
    // Marketplace names cannot contain NUL (validated), so the key is unambiguous.
    let mut k = Vec::with_capacity(marketplace.len() + 1 + listing_id.len());
    k.extend_from_slice(marketplace.as_bytes());
    k.push(0);
    k.extend_from_slice(listing_id.as_bytes());
    k
}

fn decode_id(v: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(v)
        .map(u64::from_be_bytes)
        .map_err(|_| Error::Corrupt("id is not 8 bytes".into()))
}

/// Record format written now; formats 1 (no regions section) and 2 (no region rects, no
/// appearances) are still read.
const FP_FORMAT: u8 = 3;
const FP_FORMAT_V2: u8 = 2;
const FP_FORMAT_V1: u8 = 1;
const HAS_SIMHASH: u8 = 1;
const HAS_PDQ: u8 = 1;
const HAS_PHASH: u8 = 2;
/// Region flag: the region is only a part of its picture. Records written before it was
/// recorded do not set it and read as whole regions, as they were matched then.
const IS_PART: u8 = 2;
/// Region flag (format 3): the region's rect follows.
const HAS_RECT: u8 = 4;

/// Compact binary fingerprints: format byte, flags, optional simhash, image count, and per
/// image flags, optional PDQ (32 bytes + quality) and optional pHash; then (format 2) the
/// region count (u16 BE) and per region its image index, flags (PDQ present, part of the
/// picture) and optional PDQ + quality;
/// then the local-feature count (u16 BE) and per feature its image index, level, x and y
/// (u16 BE each) and 32 descriptor bytes (four u64 BE); then (format 3) the appearance
/// count (u8) and per appearance its image index, effective side (u16 BE) and its
/// [`appearance::BYTES`] cells. Format 3 regions may carry a rect (flag [`HAS_RECT`]: four
/// u16 BE after the PDQ).
/// The normalised title is not needed for matching and lives in the takedown's JSON only.
/// The one codec of this record: the sled store and PostgreSQL (`relist-pg`) both store it.
pub fn encode_fingerprints(f: &ListingFingerprints) -> Vec<u8> {
    let mut b = Vec::with_capacity(13 + f.images.len() * 42 + f.regions.len() * 35);
    b.push(FP_FORMAT);
    match f.title_simhash {
        Some(h) => {
            b.push(HAS_SIMHASH);
            b.extend_from_slice(&h.to_be_bytes());
        }
        None => b.push(0),
    }
    b.push(f.images.len() as u8);
    for img in &f.images {
        b.push(if img.pdq.is_some() { HAS_PDQ } else { 0 } | if img.phash.is_some() { HAS_PHASH } else { 0 });
        if let Some(p) = img.pdq {
            b.extend_from_slice(&p.0);
            b.push(img.pdq_quality);
        }
        if let Some(h) = img.phash {
            b.extend_from_slice(&h.to_be_bytes());
        }
    }
    let regions = &f.regions[..f.regions.len().min(usize::from(u16::MAX))];
    b.extend_from_slice(&(regions.len() as u16).to_be_bytes());
    for r in regions {
        b.push(r.image);
        b.push(
            if r.pdq.is_some() { HAS_PDQ } else { 0 }
                | if r.part { IS_PART } else { 0 }
                | if r.rect.is_some() { HAS_RECT } else { 0 },
        );
        if let Some(p) = r.pdq {
            b.extend_from_slice(&p.0);
            b.push(r.pdq_quality);
        }
        if let Some(rect) = r.rect {
            rect.0.iter().for_each(|v| b.extend_from_slice(&v.to_be_bytes()));
        }
    }
    let features = &f.features[..f.features.len().min(usize::from(u16::MAX))];
    b.extend_from_slice(&(features.len() as u16).to_be_bytes());
    for (image, feat) in features {
        b.push(*image);
        b.push(feat.level);
        b.extend_from_slice(&feat.x.to_be_bytes());
        b.extend_from_slice(&feat.y.to_be_bytes());
        feat.bits.iter().for_each(|w| b.extend_from_slice(&w.to_be_bytes()));
    }
    let appearances = &f.appearances[..f.appearances.len().min(usize::from(u8::MAX))];
    b.push(appearances.len() as u8);
    for (image, a) in appearances {
        b.push(*image);
        b.extend_from_slice(&a.effective_side.to_be_bytes());
        b.extend_from_slice(&a.cells[..]);
    }
    b
}

/// Reads a record written by [`encode_fingerprints`] (any stored format); `None` when malformed.
pub fn decode_fingerprints(b: &[u8]) -> Option<ListingFingerprints> {
    let mut r = Reader(b);
    let format = r.u8()?;
    if ![FP_FORMAT, FP_FORMAT_V2, FP_FORMAT_V1].contains(&format) {
        return None;
    }
    let title_simhash = if r.u8()? & HAS_SIMHASH != 0 {
        Some(r.u64()?)
    } else {
        None
    };
    let n = r.u8()?;
    let mut images = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let flags = r.u8()?;
        let (pdq, pdq_quality) = if flags & HAS_PDQ != 0 {
            let bytes: [u8; 32] = r.take(32)?.try_into().ok()?;
            (Some(PdqHash(bytes)), r.u8()?)
        } else {
            (None, 0)
        };
        let phash = if flags & HAS_PHASH != 0 { Some(r.u64()?) } else { None };
        images.push(ImageFingerprint {
            pdq,
            pdq_quality,
            phash,
        });
    }
    let mut regions = Vec::new();
    let mut features = Vec::new();
    let mut appearances = Vec::new();
    if format >= FP_FORMAT_V2 {
        let n = r.u16()?;
        regions.reserve(usize::from(n));
        for _ in 0..n {
            let image = r.u8()?;
            let flags = r.u8()?;
            let (pdq, pdq_quality) = if flags & HAS_PDQ != 0 {
                let bytes: [u8; 32] = r.take(32)?.try_into().ok()?;
                (Some(PdqHash(bytes)), r.u8()?)
            } else {
                (None, 0)
            };
            let rect = if flags & HAS_RECT != 0 {
                Some(RegionRect([r.u16()?, r.u16()?, r.u16()?, r.u16()?]))
            } else {
                None
            };
            regions.push(RegionFingerprint {
                image,
                pdq,
                pdq_quality,
                part: flags & IS_PART != 0,
                rect,
            });
        }
        let n = r.u16()?;
        features.reserve(usize::from(n));
        for _ in 0..n {
            let (image, level, x, y) = (r.u8()?, r.u8()?, r.u16()?, r.u16()?);
            let bits = [r.u64()?, r.u64()?, r.u64()?, r.u64()?];
            features.push((image, Feature { x, y, level, bits }));
        }
    }
    if format >= FP_FORMAT {
        for _ in 0..r.u8()? {
            let (image, effective_side) = (r.u8()?, r.u16()?);
            let cells: [u8; appearance::BYTES] = r.take(appearance::BYTES)?.try_into().ok()?;
            appearances.push((
                image,
                Appearance {
                    cells: Box::new(cells),
                    effective_side,
                },
            ));
        }
    }
    r.0.is_empty().then_some(ListingFingerprints {
        images,
        title_simhash,
        normalized_title: String::new(),
        regions,
        features,
        appearances,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_encoding_round_trips_and_is_pinned() {
        let f = ListingFingerprints {
            images: vec![
                ImageFingerprint {
                    pdq: Some(PdqHash([0xab; 32])),
                    pdq_quality: 87,
                    phash: Some(0x0123_4567_89ab_cdef),
                },
                ImageFingerprint {
                    pdq: None,
                    pdq_quality: 0,
                    phash: Some(7),
                },
            ],
            title_simhash: Some(0xdead_beef_0000_0001),
            normalized_title: String::new(),
            regions: vec![
                RegionFingerprint {
                    image: 1,
                    pdq: Some(PdqHash([0xcd; 32])),
                    pdq_quality: 66,
                    part: false,
                    rect: None,
                },
                RegionFingerprint {
                    image: 0,
                    pdq: Some(PdqHash([0xef; 32])),
                    pdq_quality: 70,
                    part: true,
                    rect: None,
                },
            ],
            features: vec![(
                0,
                Feature {
                    x: 300,
                    y: 2,
                    level: 1,
                    bits: [1, 2, 3, u64::MAX],
                },
            )],
            appearances: Vec::new(),
        };
        let b = encode_fingerprints(&f);
        assert_eq!(decode_fingerprints(&b), Some(f.clone()));
        // Golden bytes: the layout is a stored contract.
        assert_eq!(hex::encode(&b[..12]), "0301deadbeef000000010203");
        let images_end = 1 + 1 + 8 + 1 + (1 + 32 + 1 + 8) + (1 + 8);
        let regions_end = images_end + 2 + 2 * (1 + 1 + 32 + 1);
        let features_end = regions_end + 2 + (1 + 1 + 2 + 2 + 32);
        assert_eq!(b.len(), features_end + 1, "no appearances: a zero count");
        // Format 2 records (no rects, no appearances section) still decode.
        let mut v2 = b[..features_end].to_vec();
        v2[0] = FP_FORMAT_V2;
        assert_eq!(decode_fingerprints(&v2), Some(f.clone()));
        assert_eq!(hex::encode(&b[images_end..images_end + 4]), "00020101");
        assert_eq!(b[images_end + 2 + 34], 66);
        // The second region: image 0, flags PDQ | part.
        assert_eq!(hex::encode(&b[images_end + 2 + 35..images_end + 2 + 37]), "0003");
        assert_eq!(b[regions_end - 1], 70);
        assert_eq!(
            hex::encode(&b[regions_end..regions_end + 16]),
            "00010001012c00020000000000000001"
        );
        assert_eq!(
            decode_fingerprints(&b[..b.len() - 1]),
            None,
            "truncated must not decode"
        );
        // Format 1 records (schema 1 stores) still decode, without regions.
        let mut v1 = b[..images_end].to_vec();
        v1[0] = FP_FORMAT_V1;
        let old = ListingFingerprints {
            regions: Vec::new(),
            features: Vec::new(),
            ..f
        };
        assert_eq!(decode_fingerprints(&v1), Some(old));
        assert_eq!(
            hex::encode(&v1[..12]),
            "0101deadbeef000000010203",
            "format 1 golden bytes"
        );
    }

    #[test]
    fn region_rects_and_appearances_round_trip_and_are_pinned() {
        let mut cells = Box::new([0u8; appearance::BYTES]);
        cells.iter_mut().enumerate().for_each(|(i, c)| *c = (i * 7 % 251) as u8);
        let f = ListingFingerprints {
            images: vec![ImageFingerprint {
                pdq: Some(PdqHash([0x11; 32])),
                pdq_quality: 90,
                phash: None,
            }],
            regions: vec![RegionFingerprint {
                image: 0,
                pdq: Some(PdqHash([0x22; 32])),
                pdq_quality: 80,
                part: true,
                rect: Some(RegionRect([1, 2, 65534, 65535])),
            }],
            appearances: vec![(
                0,
                Appearance {
                    cells,
                    effective_side: 300,
                },
            )],
            ..Default::default()
        };
        let b = encode_fingerprints(&f);
        assert_eq!(decode_fingerprints(&b), Some(f.clone()));
        let images_end = 1 + 1 + 1 + (1 + 32 + 1);
        // Region: image 0, flags PDQ | part | rect, PDQ, quality, then the rect.
        assert_eq!(hex::encode(&b[images_end + 2..images_end + 4]), "0007");
        let rect_at = images_end + 2 + 2 + 33;
        assert_eq!(hex::encode(&b[rect_at..rect_at + 8]), "00010002fffeffff");
        // No features, then one appearance: image 0, effective side 300, the cells.
        let app_at = rect_at + 8 + 2;
        assert_eq!(hex::encode(&b[app_at..app_at + 6]), "0100012c0007");
        assert_eq!(b.len(), app_at + 4 + appearance::BYTES);
        assert_eq!(
            decode_fingerprints(&b[..b.len() - 1]),
            None,
            "truncated must not decode"
        );
    }

    fn takedown(id: TakedownId, title: &str, removed: bool) -> Takedown {
        Takedown {
            id,
            listing: crate::domain::ListingInfo {
                listing_id: format!("l{id}"),
                marketplace: "shopee".into(),
                title: title.into(),
                ..Default::default()
            },
            reason: String::new(),
            taken_down_at_ms: 1,
            registered_at_ms: 1,
            updated_at_ms: 1,
            removed_at_ms: removed.then_some(2),
            fingerprints: ListingFingerprints {
                images: vec![ImageFingerprint {
                    pdq: None,
                    pdq_quality: 0,
                    phash: Some(42),
                }],
                // What text fingerprint version 1 stored: not what the current one computes.
                title_simhash: Some(1),
                normalized_title: "old".into(),
                ..Default::default()
            },
        }
    }

    /// Opens a store whose previous handle was just dropped: sled releases its file lock
    /// when its background flusher, which holds the last reference, has exited, a moment
    /// after the drop. Retries only that error, for 2 s at most.
    fn open_released(dir: &Path) -> Result<Store> {
        for _ in 0..100 {
            match Store::open(dir) {
                // What `open` turns sled's lock error into.
                Err(Error::InvalidArgument { field, .. }) if field == "data_dir" => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                other => return other,
            }
        }
        Store::open(dir)
    }

    fn set_schema(dir: &Path, v: u32) {
        let s = open_released(dir).unwrap();
        s.db.open_tree("meta")
            .unwrap()
            .insert(SCHEMA_KEY, &v.to_be_bytes())
            .unwrap();
        s.flush().unwrap();
    }

    #[test]
    fn upgrades_older_stores_and_recomputes_title_simhashes() {
        for from in [1, 2] {
            let dir = tempfile::tempdir().unwrap();
            {
                let s = Store::open(dir.path()).unwrap();
                s.put_takedown(&takedown(1, "b4ju bek4s imp0rt", false)).unwrap();
                s.put_takedown(&takedown(2, "K40S P0L0S", true)).unwrap();
                s.put_takedown(&takedown(3, "", false)).unwrap();
            }
            set_schema(dir.path(), from);
            let s = open_released(dir.path()).unwrap();
            let v = s.db.open_tree("meta").unwrap().get(SCHEMA_KEY).unwrap().unwrap();
            assert_eq!(v.as_ref(), SCHEMA_VERSION.to_be_bytes());

            let live = s.takedown(1).unwrap().unwrap();
            assert_eq!(live.fingerprints.title_simhash, text::simhash("baju bekas import"));
            assert_eq!(live.fingerprints.normalized_title, "baju bekas import");
            let record = s.live_fingerprints_of(1).unwrap().unwrap();
            assert_eq!(record.title_simhash, live.fingerprints.title_simhash);
            assert_eq!(record.images, live.fingerprints.images, "image hashes are kept");

            let removed = s.takedown(2).unwrap().unwrap();
            assert_eq!(removed.fingerprints.normalized_title, "kaos polos");
            assert!(
                s.live_fingerprints_of(2).unwrap().is_none(),
                "a removed takedown stays out of the index"
            );

            let untitled = s.live_fingerprints_of(3).unwrap().unwrap();
            assert_eq!(untitled.title_simhash, None);
            assert_eq!(s.live_count(), 2);
        }
    }

    #[test]
    fn refuses_other_schema_versions() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.db.open_tree("meta")
                .unwrap()
                .insert(SCHEMA_KEY, &99u32.to_be_bytes())
                .unwrap();
            s.flush().unwrap();
        }
        assert!(matches!(open_released(dir.path()), Err(Error::Corrupt(_))));
    }

    #[test]
    fn the_claim_is_taken_out_of_the_store_once() {
        let dir = tempfile::tempdir().unwrap();
        let claim = Claim {
            id: 0x0123_4567_89ab_cdef,
            checksum: 42,
        };
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.snapshot_claim(), None);
            store.publish_snapshot(claim).unwrap();
        }
        // Any open takes it: the first sees it, the next does not.
        assert_eq!(Store::open(dir.path()).unwrap().snapshot_claim(), Some(claim));
        assert_eq!(Store::open(dir.path()).unwrap().snapshot_claim(), None);
    }
}
