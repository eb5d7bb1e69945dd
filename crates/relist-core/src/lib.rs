//! relist's core: what a takedown is, how it is fingerprinted, indexed, stored and matched.
//!
//! Blocking, synchronous code with no async runtime, no transport and no command line (no
//! tokio, tonic, axum, clap or prost, which `tests/it/architecture.rs` checks), so that the
//! gRPC service, the web page, the evaluation and the benchmarks all drive the same bank.
//!
//! How a check flows through it: [`bank::Bank::check`] asks [`fingerprint`] for the
//! listing's hashes, [`matcher`] for the takedowns within range of them (exact Hamming
//! search in [`index`]), and [`policy`] for the verdict; a non-clear result is written to
//! [`history`]. Registrations go to [`store`] first, then into the live index.
//!
//! - [`domain`]: the types every layer shares (listings, fingerprints, matches, verdicts).
//! - [`error`]: everything the core can fail with; front ends map it to their status codes.
//! - [`limits`]: request size limits, shared by request validation and configuration.
//! - [`hashes`]: the hash values fingerprints are made of (PDQ, its rotations, local features).
//! - [`fingerprint`]: PDQ and pHash of images, regions, local features, title simhash;
//!   pinned by golden values.
//! - [`index`]: exact Hamming range search (multi-index hashing), updated in place.
//! - [`matcher`]: the live indexes over all takedowns, turning a listing into evidence.
//! - [`policy`]: the one place that turns distances into CLEAR / REVIEW / REUPLOAD.
//! - [`codec`]: the binary encoding of the stored records and of the index snapshot.
//! - [`store`]: sled trees and the stored formats (a versioned contract), and the claim
//!   that says which index snapshot the store still matches.
//! - [`storage`]: the record of takedowns behind one interface (sled here, PostgreSQL in
//!   `relist-pg`) and its change log, which replicas of a shared bank follow.
//! - [`snapshot`]: the live index written on graceful shutdown, read at the next start.
//! - [`history`]: the record of non-clear checks, their reviews and statistics.
//! - [`auth`]: API keys (stored hashed) and roles.
//! - [`bank`]: the store, the live index and the policy behind one blocking API.
//! - [`backup`]: the backup file format: a consistent copy of the store, and its restore.
//! - [`exchange`]: the hash list formats shared with other platforms (hex, ThreatExchange CSV).
//! - [`disk`]: the free-space reserve that refuses writes before the store's disk fills.
//! - [`metrics`]: the latency histogram the bank feeds (served by the front ends).
pub mod auth;
pub mod backup;
pub mod bank;
pub mod codec;
pub mod disk;
pub mod domain;
pub mod error;
pub mod exchange;
pub mod fingerprint;
pub mod hashes;
pub mod history;
pub mod index;
pub mod limits;
pub mod matcher;
pub mod metrics;
pub mod policy;
pub mod snapshot;
pub mod storage;
pub mod store;
