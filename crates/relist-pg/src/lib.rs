//! relist's shared store on PostgreSQL: the system of record when many relist replicas
//! serve one bank (`relist serve --store postgres://...`). Implements
//! [`relist_core::storage::Storage`]; every replica mirrors it locally and follows its change
//! log (see `relist_core::bank` and `docs/scale-out.md`).
//!
//! Tables (created and upgraded by [`schema`], versioned in `relist_schema`):
//! - `relist_takedowns`: one row per takedown: its JSON record (the same serde form the sled
//!   store keeps), its binary fingerprints record while live (`store::encode_fingerprints`,
//!   the one codec), `UNIQUE (marketplace, listing_id)`.
//! - `relist_thumbnails`: small JPEGs per takedown image.
//! - `relist_seq` (one row) and `relist_changes(seq, takedown_id)`: the change log. `seq`
//!   comes from the counter row, updated last in the writing transaction, so seqs are
//!   consecutive and in commit order: a reader that has seen seq n can never later find a
//!   new row below n (a plain sequence does not promise that; `scripts/pg-changelog-proof.sh`
//!   shows the difference on a live server).
//!
//! Errors: a server that cannot be reached (refused, reset, shutting down, timed out) is
//! [`Error::Unavailable`], a second takedown for one listing is [`Error::Conflict`], anything
//! else is [`Error::Internal`] with PostgreSQL's message.
use std::str::FromStr;
use std::time::Duration;

use parking_lot::Mutex;
use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Config, NoTls};
use relist_core::domain::{ListingFingerprints, Takedown, TakedownId};
use relist_core::error::{Error, Result};
use relist_core::storage::{Change, ClaimedChunk, Event, JobId, JobStatus, Storage};
use relist_core::store::{decode_fingerprints, encode_fingerprints};

pub mod schema;

/// The NOTIFY channel a commit of the change log wakes followers on.
pub const CHANNEL: &str = "relist_changes";
/// How long a connection attempt may take before the store counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Idle connections kept for reuse; more are opened under load and closed after.
const POOL_MAX: usize = 8;

/// A PostgreSQL database holding one relist bank.
pub struct PgStore {
    config: Config,
    describe: String,
    /// Set once the schema is current (at connect, or at first contact after an outage).
    bank_id: Mutex<Option<String>>,
    /// Idle connections. A connection that failed is dropped, not returned.
    pool: Mutex<Vec<Client>>,
    /// The follower's `LISTEN` connection, opened on first use and after a failure.
    listener: Mutex<Option<Client>>,
}

impl PgStore {
    /// Connects to `url` (`postgres://USER[:PASSWORD]@HOST:PORT/DB`, or key=value form) and
    /// creates or upgrades the schema (under an advisory lock: replicas may start together).
    /// Refuses a database whose schema is newer than this relist. An unreachable server is
    /// not an error here: the store connects (and migrates) at its first use, so a replica
    /// with a local mirror can start, stale, during an outage.
    pub fn connect(url: &str) -> Result<PgStore> {
        let mut config =
            Config::from_str(url).map_err(|e| Error::invalid("store", format!("not a PostgreSQL URL: {e}")))?;
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(15))
            .application_name("relist");
        let store = PgStore {
            describe: describe(&config),
            config,
            bank_id: Mutex::new(None),
            pool: Mutex::new(Vec::new()),
            listener: Mutex::new(None),
        };
        match store.schema() {
            Ok(_) => {}
            Err(Error::Unavailable(e)) => {
                tracing::warn!(error = %e, "shared store unreachable at start; retrying on use")
            }
            Err(e) => return Err(e),
        }
        Ok(store)
    }

    /// The bank id, once the schema is known to be current (migrating on first contact).
    fn schema(&self) -> Result<String> {
        let mut known = self.bank_id.lock();
        if let Some(id) = known.as_ref() {
            return Ok(id.clone());
        }
        let mut client = self
            .config
            .connect(NoTls)
            .map_err(|e| unreachable_or(&self.describe, e))?;
        let id = schema::migrate(&mut client).map_err(|e| match e {
            schema::MigrateError::Db(e) => map_err(&self.describe, e),
            newer => Error::Corrupt(format!("{}: {newer}", self.describe)),
        })?;
        self.pool.lock().push(client);
        *known = Some(id.clone());
        Ok(id)
    }

    /// Runs `f` on a pooled connection; a connection that failed is not reused.
    fn with<T>(&self, f: impl FnOnce(&mut Client) -> std::result::Result<T, postgres::Error>) -> Result<T> {
        self.schema()?;
        let pooled = self.pool.lock().pop().filter(|c| !c.is_closed());
        let mut client = match pooled {
            Some(c) => c,
            None => self
                .config
                .connect(NoTls)
                .map_err(|e| unreachable_or(&self.describe, e))?,
        };
        match f(&mut client) {
            Ok(v) => {
                let mut pool = self.pool.lock();
                if pool.len() < POOL_MAX {
                    pool.push(client);
                }
                Ok(v)
            }
            Err(e) => Err(map_err(&self.describe, e)),
        }
    }
}

impl Drop for PgStore {
    /// The blocking client closes its connection on its own small runtime, which must not
    /// happen on an async runtime's thread: the daemon may drop the bank there.
    fn drop(&mut self) {
        let mut clients = std::mem::take(&mut *self.pool.lock());
        clients.extend(self.listener.lock().take());
        if clients.is_empty() {
            return;
        }
        let _ = std::thread::Builder::new()
            .name("relist-pg-close".into())
            .spawn(move || drop(clients))
            .map(|h| h.join());
    }
}

impl Storage for PgStore {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn next_takedown_id(&self) -> Result<TakedownId> {
        self.with(|c| {
            let row = c.query_one("SELECT nextval('relist_takedown_ids')", &[])?;
            Ok(row.get::<_, i64>(0) as u64)
        })
    }

    fn takedown_id_by_listing(&self, marketplace: &str, listing_id: &str) -> Result<Option<TakedownId>> {
        self.with(|c| {
            let row = c.query_opt(
                "SELECT id FROM relist_takedowns WHERE marketplace = $1 AND listing_id = $2",
                &[&marketplace, &listing_id],
            )?;
            Ok(row.map(|r| r.get::<_, i64>(0) as u64))
        })
    }

    fn takedown(&self, id: TakedownId) -> Result<Option<Takedown>> {
        let row = self.with(|c| {
            c.query_opt(
                "SELECT record, fingerprints FROM relist_takedowns WHERE id = $1",
                &[&(id as i64)],
            )
        })?;
        row.map(|r| decode_takedown(id, r.get(0), r.get(1))).transpose()
    }

    fn live_fingerprints_of(&self, id: TakedownId) -> Result<Option<ListingFingerprints>> {
        let bytes: Option<Vec<u8>> = self.with(|c| {
            let row = c.query_opt(
                "SELECT fingerprints FROM relist_takedowns WHERE id = $1",
                &[&(id as i64)],
            )?;
            Ok(row.and_then(|r| r.get(0)))
        })?;
        bytes
            .map(|b| decode_fingerprints(&b).ok_or_else(|| Error::Corrupt(format!("fingerprints of takedown {id}"))))
            .transpose()
    }

    fn write_takedown(&self, td: &Takedown) -> Result<u64> {
        let record = serde_json::to_string(td).map_err(|e| Error::Internal(e.to_string()))?;
        let fingerprints = td
            .removed_at_ms
            .is_none()
            .then(|| encode_fingerprints(&td.fingerprints));
        let id = td.id as i64;
        let (marketplace, listing_id) = (&td.listing.marketplace, &td.listing.listing_id);
        self.with(|c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "INSERT INTO relist_takedowns (id, marketplace, listing_id, record, fingerprints, removed)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record, fingerprints = EXCLUDED.fingerprints,
                     removed = EXCLUDED.removed, updated_at = now()",
                &[
                    &id,
                    marketplace,
                    listing_id,
                    &record,
                    &fingerprints,
                    &td.removed_at_ms.is_some(),
                ],
            )?;
            // The counter last: it serialises writers only for the insert and the commit.
            let row = tx.query_one(
                "WITH s AS (UPDATE relist_seq SET seq = seq + 1 WHERE id = 1 RETURNING seq)
                 INSERT INTO relist_changes (seq, takedown_id) SELECT seq, $1 FROM s RETURNING seq",
                &[&id],
            )?;
            let seq: i64 = row.get(0);
            tx.batch_execute(&format!("NOTIFY {CHANNEL}"))?;
            tx.commit()?;
            Ok(seq as u64)
        })
        .map_err(|e| match e {
            Error::Conflict(_) => Error::Conflict(format!(
                "listing {marketplace}/{listing_id} was registered meanwhile by another replica"
            )),
            other => other,
        })
    }

    fn put_thumbnails(&self, id: TakedownId, thumbs: &[(u8, Vec<u8>)]) -> Result<()> {
        let id = id as i64;
        self.with(|c| {
            let mut tx = c.transaction()?;
            tx.execute("DELETE FROM relist_thumbnails WHERE takedown_id = $1", &[&id])?;
            for (i, jpeg) in thumbs {
                tx.execute(
                    "INSERT INTO relist_thumbnails (takedown_id, image, jpeg) VALUES ($1, $2, $3)",
                    &[&id, &i16::from(*i), jpeg],
                )?;
            }
            tx.commit()
        })
    }

    fn thumbnail(&self, id: TakedownId, image: u8) -> Result<Option<Vec<u8>>> {
        self.with(|c| {
            let row = c.query_opt(
                "SELECT jpeg FROM relist_thumbnails WHERE takedown_id = $1 AND image = $2",
                &[&(id as i64), &i16::from(image)],
            )?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<Change>> {
        let rows = self.with(|c| {
            c.query(
                "SELECT c.seq, t.id, t.record, t.fingerprints,
                     (extract(epoch FROM c.committed_at) * 1000000)::bigint FROM relist_changes c
                 JOIN relist_takedowns t ON t.id = c.takedown_id
                 WHERE c.seq > $1 ORDER BY c.seq LIMIT $2",
                &[&(after as i64), &(limit as i64)],
            )
        })?;
        rows.into_iter()
            .map(|r| {
                let (seq, id): (i64, i64) = (r.get(0), r.get(1));
                Ok(Change {
                    seq: seq as u64,
                    takedown: decode_takedown(id as u64, r.get(2), r.get(3))?,
                    mark: mark(id, r.get(4)),
                })
            })
            .collect()
    }

    fn mark_at(&self, seq: u64) -> Result<Option<u64>> {
        let row = self.with(|c| {
            c.query_opt(
                "SELECT takedown_id, (extract(epoch FROM committed_at) * 1000000)::bigint FROM relist_changes WHERE seq = $1",
                &[&(seq as i64)],
            )
        })?;
        Ok(row.map(|r| mark(r.get(0), r.get(1))))
    }

    fn wait_for_change(&self, timeout: Duration) -> Result<bool> {
        let mut slot = self.listener.lock();
        if slot.as_ref().is_none_or(|c| c.is_closed()) {
            let mut client = self
                .config
                .connect(NoTls)
                .map_err(|e| unreachable_or(&self.describe, e))?;
            client
                .batch_execute(&format!("LISTEN {CHANNEL}"))
                .map_err(|e| map_err(&self.describe, e))?;
            *slot = Some(client);
            // Changes committed before the LISTEN sent no notification we will see.
            return Ok(true);
        }
        let Some(client) = slot.as_mut() else {
            return Ok(false);
        };
        let mut notifications = client.notifications();
        let woke = notifications.timeout_iter(timeout).next().map(|n| n.is_some());
        // One wake-up covers every notification already queued.
        if woke.is_ok() {
            while let Ok(Some(_)) = notifications.iter().next() {}
        }
        drop(notifications);
        let woke = match woke {
            Ok(w) => w,
            Err(e) => {
                *slot = None;
                return Err(map_err(&self.describe, e));
            }
        };
        Ok(woke)
    }

    fn append_events(&self, events: &[(&str, Vec<u8>)]) -> Result<u64> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            let mut last = 0i64;
            // One counter update per event, last in the transaction, as for the change log.
            for (kind, body) in events {
                last = tx
                    .query_one(
                        "WITH s AS (UPDATE relist_seq SET seq = seq + 1 WHERE id = 2 RETURNING seq)
                         INSERT INTO relist_events (seq, kind, body) SELECT seq, $1, $2 FROM s RETURNING seq",
                        &[kind, body],
                    )?
                    .get(0);
            }
            tx.batch_execute(&format!("NOTIFY {CHANNEL}"))?;
            tx.commit()?;
            Ok(last as u64)
        })
    }

    fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        let rows = self.with(|c| {
            c.query(
                "SELECT seq, kind, body, (extract(epoch FROM committed_at) * 1000000)::bigint
                 FROM relist_events WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&(after as i64), &(limit as i64)],
            )
        })?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let seq: i64 = r.get(0);
                Event {
                    seq: seq as u64,
                    kind: r.get(1),
                    body: r.get(2),
                    mark: mark(seq, r.get(3)),
                }
            })
            .collect())
    }

    fn event_mark_at(&self, seq: u64) -> Result<Option<u64>> {
        let row = self.with(|c| {
            c.query_opt(
                "SELECT (extract(epoch FROM committed_at) * 1000000)::bigint FROM relist_events WHERE seq = $1",
                &[&(seq as i64)],
            )
        })?;
        Ok(row.map(|r| mark(seq as i64, r.get(0))))
    }

    fn claim_slot(&self, name: &str, slots: u32) -> Result<u32> {
        let slot: Option<i32> = self.with(|c| {
            let mut tx = c.transaction()?;
            tx.execute("LOCK TABLE relist_replicas IN EXCLUSIVE MODE", &[])?;
            let mine = tx.query_opt("SELECT slot FROM relist_replicas WHERE name = $1", &[&name])?;
            let slot = match mine {
                Some(r) => Some(r.get(0)),
                None => {
                    let free = tx.query_opt(
                        "SELECT s FROM generate_series(0, $1 - 1) s
                         WHERE s NOT IN (SELECT slot FROM relist_replicas) ORDER BY s LIMIT 1",
                        &[&(slots as i32)],
                    )?;
                    match free {
                        Some(r) => {
                            let s: i32 = r.get(0);
                            tx.execute("INSERT INTO relist_replicas (slot, name) VALUES ($1, $2)", &[&s, &name])?;
                            Some(s)
                        }
                        None => None,
                    }
                }
            };
            tx.commit()?;
            Ok(slot)
        })?;
        slot.map(|s| s as u32).ok_or_else(|| {
            Error::ResourceExhausted(format!(
                "{}: all {slots} replica slots are taken (relist_replicas); free the slot of a replica retired for good",
                self.describe
            ))
        })
    }

    fn next_key_id(&self) -> Result<u64> {
        self.with(|c| Ok(c.query_one("SELECT nextval('relist_key_ids')", &[])?.get::<_, i64>(0) as u64))
    }

    fn create_job(&self, chunks: &[Vec<Vec<u8>>]) -> Result<JobId> {
        self.create_job_(chunks)
    }

    fn claim_chunk(&self, worker: &str, lease: Duration) -> Result<Option<ClaimedChunk>> {
        let row = self.with(|c| {
            c.query_opt(
                "UPDATE relist_chunks SET state = 'leased', leased_by = $1,
                     lease_until = now() + $2 * interval '1 millisecond', attempts = attempts + 1
                 WHERE (job, chunk) = (
                     SELECT job, chunk FROM relist_chunks
                     WHERE state = 'pending' OR (state = 'leased' AND lease_until < now())
                     ORDER BY job, chunk LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING job, chunk, first_index, items, attempts",
                &[&worker, &(lease_ms(lease) as f64)],
            )
        })?;
        Ok(row.map(|r| ClaimedChunk {
            job: r.get::<_, i64>(0) as u64,
            chunk: r.get::<_, i32>(1) as u32,
            first_index: r.get::<_, i32>(2) as u32,
            items: r.get(3),
            attempt: r.get::<_, i32>(4) as u32,
        }))
    }

    fn renew_chunk(&self, job: JobId, chunk: u32, worker: &str, lease: Duration) -> Result<bool> {
        self.with(|c| {
            let n = c.execute(
                "UPDATE relist_chunks SET lease_until = now() + $4 * interval '1 millisecond'
                 WHERE job = $1 AND chunk = $2 AND state = 'leased' AND leased_by = $3",
                &[&(job as i64), &(chunk as i32), &worker, &(lease_ms(lease) as f64)],
            )?;
            Ok(n == 1)
        })
    }

    fn complete_chunk(&self, job: JobId, chunk: u32, worker: &str, results: &[Vec<u8>]) -> Result<bool> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            let row = tx.query_opt(
                "SELECT first_index FROM relist_chunks
                 WHERE job = $1 AND chunk = $2 AND state = 'leased' AND leased_by = $3 FOR UPDATE",
                &[&(job as i64), &(chunk as i32), &worker],
            )?;
            let Some(row) = row else {
                // Taken over after our lease ran out: the new holder writes the results.
                return Ok(false);
            };
            let first = i64::from(row.get::<_, i32>(0));
            let idx: Vec<i64> = (0..results.len() as i64).map(|i| first + i).collect();
            tx.execute(
                "INSERT INTO relist_job_results (job, idx, result)
                 SELECT $1, i, r FROM unnest($2::bigint[], $3::bytea[]) AS u(i, r)
                 ON CONFLICT DO NOTHING",
                &[&(job as i64), &idx, &results],
            )?;
            // The items are not needed any more: free their space.
            tx.execute(
                "UPDATE relist_chunks SET state = 'done', items = '{}', lease_until = NULL
                 WHERE job = $1 AND chunk = $2",
                &[&(job as i64), &(chunk as i32)],
            )?;
            tx.commit()?;
            Ok(true)
        })
    }

    fn job_status(&self, job: JobId) -> Result<Option<JobStatus>> {
        let row = self.with(|c| {
            c.query_opt(
                "SELECT j.items, j.chunks,
                     (SELECT count(*) FROM relist_chunks WHERE job = j.id AND state = 'done'),
                     (SELECT coalesce(sum(greatest(attempts - 1, 0)), 0) FROM relist_chunks WHERE job = j.id)
                 FROM relist_jobs j WHERE j.id = $1",
                &[&(job as i64)],
            )
        })?;
        Ok(row.map(|r| JobStatus {
            job,
            items: r.get::<_, i64>(0) as u64,
            chunks: r.get::<_, i64>(1) as u64,
            chunks_done: r.get::<_, i64>(2) as u64,
            reclaims: r.get::<_, i64>(3) as u64,
        }))
    }

    fn job_results(&self, job: JobId, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let rows = self.with(|c| {
            c.query(
                "SELECT idx, result FROM relist_job_results WHERE job = $1 AND idx >= $2 ORDER BY idx LIMIT $3",
                &[&(job as i64), &(from as i64), &(limit as i64)],
            )
        })?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get(1)))
            .collect())
    }

    fn bank_id(&self) -> Result<String> {
        // Read again rather than cached: this is also how a replica learns the database
        // answers, and a restored database may carry another bank.
        self.with(|c| {
            let row = c.query_one("SELECT bank_id FROM relist_schema WHERE id = 1", &[])?;
            Ok(row.get(0))
        })
        .inspect(|id: &String| {
            if let Some(was) = self.bank_id.lock().as_ref().filter(|was| *was != id) {
                tracing::warn!(%was, now = %id, "the database now holds another bank");
            }
        })
    }
}

/// A change's mark: its takedown and commit time (µs), mixed. A change written again under
/// the same seq after a failover differs in at least one of them.
fn mark(takedown_id: i64, committed_us: i64) -> u64 {
    (committed_us as u64) ^ (takedown_id as u64).rotate_left(32)
}

/// Batch jobs (schema version 2).
impl PgStore {
    fn create_job_(&self, chunks: &[Vec<Vec<u8>>]) -> Result<JobId> {
        let items: usize = chunks.iter().map(Vec::len).sum();
        self.with(|c| {
            let mut tx = c.transaction()?;
            let id: i64 = tx.query_one("SELECT nextval('relist_job_ids')", &[])?.get(0);
            tx.execute(
                "INSERT INTO relist_jobs (id, items, chunks) VALUES ($1, $2, $3)",
                &[&id, &(items as i64), &(chunks.len() as i64)],
            )?;
            let mut first = 0i32;
            for (i, chunk) in chunks.iter().enumerate() {
                tx.execute(
                    "INSERT INTO relist_chunks (job, chunk, first_index, items) VALUES ($1, $2, $3, $4)",
                    &[&id, &(i as i32), &first, chunk],
                )?;
                first += chunk.len() as i32;
            }
            tx.commit()?;
            Ok(id as u64)
        })
    }
}

/// A lease as PostgreSQL arithmetic: milliseconds.
fn lease_ms(lease: Duration) -> i64 {
    lease.as_millis().min(i64::MAX as u128) as i64
}

/// A takedown from its row: the JSON record, with the binary record's fingerprints (which
/// carry the local features the JSON leaves out) while it is live.
fn decode_takedown(id: TakedownId, record: String, fingerprints: Option<Vec<u8>>) -> Result<Takedown> {
    let mut td: Takedown =
        serde_json::from_str(&record).map_err(|e| Error::Corrupt(format!("takedown {id} record: {e}")))?;
    if let Some(b) = fingerprints {
        let mut f = decode_fingerprints(&b).ok_or_else(|| Error::Corrupt(format!("fingerprints of takedown {id}")))?;
        // Not in the binary record: matching never needs it.
        f.normalized_title = std::mem::take(&mut td.fingerprints.normalized_title);
        td.fingerprints = f;
    }
    Ok(td)
}

/// `postgres://user@host:port/db`, without the password, for messages.
fn describe(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("");
    let db = config.get_dbname().unwrap_or(user);
    format!("postgres://{user}@{host}:{port}/{db}")
}

/// A failed connection attempt: the store is unreachable, whatever the detail.
fn unreachable_or(describe: &str, e: postgres::Error) -> Error {
    if let Some(db) = e.as_db_error() {
        // Reached, but refused: wrong password, no such database. Not going to heal alone.
        return Error::Internal(format!("{describe} refused the connection: {}", db.message()));
    }
    Error::Unavailable(format!("cannot reach the shared store {describe}: {}", root_cause(&e)))
}

/// Sorts a query's failure: the server gone (unavailable), a second takedown for one
/// listing (conflict), or anything else (internal, with the server's message).
fn map_err(describe: &str, e: postgres::Error) -> Error {
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => Error::Conflict(format!("{describe}: {e}")),
        Some(c) if is_unavailable_class(c.code()) => Error::Unavailable(format!(
            "the shared store {describe} is unavailable: {}",
            root_cause(&e)
        )),
        Some(_) => Error::Internal(format!("{describe}: {}", root_cause(&e))),
        None => Error::Unavailable(format!("lost the shared store {describe}: {}", root_cause(&e))),
    }
}

/// SQLSTATE classes that mean "the server cannot serve now": connection exceptions (08),
/// insufficient resources (53), operator intervention such as a shutdown (57), system errors (58).
fn is_unavailable_class(code: &str) -> bool {
    ["08", "53", "57", "58"].iter().any(|class| code.starts_with(class))
}

/// The innermost message: rust-postgres wraps I/O errors ("error connecting to server:
/// Connection refused"), and the wrapper's text is repeated by the caller's own.
fn root_cause(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_string();
    }
    let mut inner: &dyn std::error::Error = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}
