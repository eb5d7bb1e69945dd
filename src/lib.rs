//! relist: the shared memory of taken-down marketplace listings.
//!
//! Marketplaces register the listings they take down; at upload time they ask whether a new
//! listing re-uploads one of them, even with re-encoded, mirrored or cropped photos and a
//! lightly edited title.
//!
//! How a check flows, and where each piece lives:
//!
//! - [`api`]: the gRPC boundary. Generated protobuf types, validation of requests, conversion
//!   to and from [`domain`] types, and the one mapping of [`error::Error`] to status codes.
//! - [`server`]: the tonic daemon (service, health, reflection, graceful shutdown).
//! - [`web`]: the analysts' read-only web page over the match history (axum, `serve --http`);
//!   its one write is a review.
//! - [`bank`]: the core. Registers, removes and checks listings over the store, the live
//!   index and the policy; blocking code, run off the async runtime.
//! - [`fingerprint`]: what is remembered of a listing: PDQ and pHash of its images, a
//!   simhash of its normalised title. Pinned by golden values.
//! - [`index`]: exact Hamming range search (multi-index hashing), no rebuilds.
//! - [`matcher`]: the live indexes over all takedowns and the queries that turn a listing
//!   into per-takedown evidence.
//! - [`policy`]: the one place that turns distances into CLEAR / REVIEW / REUPLOAD.
//! - [`history`]: the record of non-clear checks.
//! - [`snapshot`]: the live index written on graceful shutdown, so the next start skips the full load.
//! - [`store`]: sled trees and the stored formats (a contract, versioned).
//! - [`config`], [`cli`]: flags, environment, TOML; the `relist` command.
//! - [`batch`]: `relist batch`, re-checking a whole catalog over one CheckListings stream.
//! - [`auth`]: API keys (stored hashed) and roles; who may call what, for which marketplace.
//! - [`keys`]: `relist keys create|list|revoke`, over gRPC or offline on a data dir.
//! - [`transport`]: TLS (server and client, mTLS) and the API key on every client call.
//! - [`metrics`]: Prometheus counters and histograms, served at `/metrics` by [`web`].
//! - [`backup`]: `relist backup|restore`, a consistent copy of the store and its restore.
//! - [`eval`]: `relist eval`, detection quality (recall per evasion, false positives, curves)
//!   measured with the same fingerprinting, index and policy, and the regression guard.
//! - [`exchange`]: `relist export|import`, PDQ hash lists shared with other platforms.
//! - [`fuzz_targets`]: the fuzz targets' bodies (image, text, requests), shared by `fuzz/`
//!   and the stable corpus test.
//! - [`disk`]: the free-space reserve that refuses writes before the store's disk fills.
pub mod batch;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod eval;
pub mod metrics;
pub mod server;
pub mod web;

// Moving: the core now lives in crates/relist-core, the wire in crates/relist-proto.
pub use relist_core::{
    auth, backup, bank, disk, domain, error, exchange, fingerprint, history, index, matcher, policy, snapshot, store,
};
pub use relist_proto::{api, transport};
