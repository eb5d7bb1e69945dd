//! The PostgreSQL schema and its numbered migrations, run at start in one transaction under
//! an advisory lock (replicas starting together apply each migration once). The stored
//! layout is a contract like the sled store's: a change is a new migration and a version
//! bump, never an edit of an old one.
use postgres::Client;

/// The schema version this relist writes and reads.
pub const VERSION: i32 = 3;

/// Arbitrary, fixed: the advisory lock key that serialises migrations.
const MIGRATION_LOCK: i64 = 0x7265_6c69_7374; // "relist"

/// Migration `n` (1-based) brings the schema from version `n - 1` to `n`.
const MIGRATIONS: &[&str] = &[
    // 1: takedowns, thumbnails, the change log and its counter row.
    "CREATE SEQUENCE relist_takedown_ids;
     CREATE TABLE relist_takedowns (
         id bigint PRIMARY KEY,
         marketplace text NOT NULL,
         listing_id text NOT NULL,
         record text NOT NULL,
         fingerprints bytea,
         removed boolean NOT NULL,
         updated_at timestamptz NOT NULL DEFAULT now(),
         UNIQUE (marketplace, listing_id)
     );
     CREATE TABLE relist_thumbnails (
         takedown_id bigint NOT NULL REFERENCES relist_takedowns (id),
         image smallint NOT NULL,
         jpeg bytea NOT NULL,
         PRIMARY KEY (takedown_id, image)
     );
     CREATE TABLE relist_seq (id int PRIMARY KEY CHECK (id = 1), seq bigint NOT NULL);
     INSERT INTO relist_seq VALUES (1, 0);
     CREATE TABLE relist_changes (
         seq bigint PRIMARY KEY,
         takedown_id bigint NOT NULL REFERENCES relist_takedowns (id),
         committed_at timestamptz NOT NULL DEFAULT now()
     );",
    // 2: catalog re-check jobs shared by replicas: chunks leased with FOR UPDATE SKIP LOCKED,
    // results keyed by item so each is written once.
    "CREATE SEQUENCE relist_job_ids;
     CREATE TABLE relist_jobs (
         id bigint PRIMARY KEY,
         items bigint NOT NULL,
         chunks bigint NOT NULL,
         created_at timestamptz NOT NULL DEFAULT now()
     );
     CREATE TABLE relist_chunks (
         job bigint NOT NULL REFERENCES relist_jobs (id),
         chunk int NOT NULL,
         first_index int NOT NULL,
         items bytea[] NOT NULL,
         state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'leased', 'done')),
         leased_by text,
         lease_until timestamptz,
         attempts int NOT NULL DEFAULT 0,
         PRIMARY KEY (job, chunk)
     );
     CREATE INDEX relist_chunks_open ON relist_chunks (job, chunk) WHERE state <> 'done';
     CREATE TABLE relist_job_results (
         job bigint NOT NULL REFERENCES relist_jobs (id),
         idx bigint NOT NULL,
         result bytea NOT NULL,
         PRIMARY KEY (job, idx)
     );",
    // 3: the events log (match records, reviews, API keys), gap-free like the change log on
    // counter row 2, and the replicas' slots (they keep match ids unique across replicas).
    "ALTER TABLE relist_seq DROP CONSTRAINT relist_seq_id_check;
     ALTER TABLE relist_seq ADD CONSTRAINT relist_seq_id_check CHECK (id IN (1, 2));
     INSERT INTO relist_seq VALUES (2, 0);
     CREATE TABLE relist_events (
         seq bigint PRIMARY KEY,
         kind text NOT NULL,
         body bytea NOT NULL,
         committed_at timestamptz NOT NULL DEFAULT now()
     );
     CREATE TABLE relist_replicas (
         slot int PRIMARY KEY,
         name text NOT NULL UNIQUE,
         claimed_at timestamptz NOT NULL DEFAULT now()
     );
     CREATE SEQUENCE relist_key_ids;",
];

/// Why the schema could not be brought to [`VERSION`].
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Db(#[from] postgres::Error),
    /// Written by a newer relist: this one must not guess at it.
    #[error(
        "the database has relist schema version {found}; this relist knows versions up to {VERSION}: upgrade relist"
    )]
    Newer { found: i32 },
}

/// Creates or upgrades the schema; returns the bank's id (random, made with the schema).
pub fn migrate(client: &mut Client) -> Result<String, MigrateError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS relist_schema (
             id int PRIMARY KEY CHECK (id = 1),
             version int NOT NULL,
             bank_id text NOT NULL
         );
         INSERT INTO relist_schema VALUES (1, 0, md5(random()::text || clock_timestamp()::text))
         ON CONFLICT (id) DO NOTHING;",
    )?;
    let row = tx.query_one("SELECT version, bank_id FROM relist_schema WHERE id = 1", &[])?;
    let (found, bank_id): (i32, String) = (row.get(0), row.get(1));
    if found > VERSION {
        return Err(MigrateError::Newer { found });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        tx.batch_execute(sql)?;
        tx.execute("UPDATE relist_schema SET version = $1 WHERE id = 1", &[&(i as i32 + 1)])?;
        tracing::info!(version = i + 1, "applied PostgreSQL schema migration");
    }
    tx.commit()?;
    Ok(bank_id)
}
