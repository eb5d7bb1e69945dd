//! The `relist` binary's library: the command line over the library crates.
//!
//! relist is the shared memory of taken-down marketplace listings. Marketplaces register the
//! listings they take down; at upload time they ask whether a new listing re-uploads one of
//! them, even with re-encoded, mirrored or cropped photos and a lightly edited title.
//!
//! The crates (see `docs/architecture.md` for the check flow and the invariants):
//! - `relist-core`: domain, fingerprints, index, matcher, policy, store, history, bank;
//!   blocking code, no async runtime, transport or command line.
//! - `relist-proto`: the generated gRPC types, the proto <-> domain conversions, TLS.
//! - `relist-server`: the gRPC service and the web page over one async facade of the
//!   bank, configuration, start-up and shutdown.
//! - this crate, `relist`: the command line.
//!
//! Its modules:
//! - [`cli`]: the clap tree and the dispatch to one file per command in [`cmd`].
//! - [`client`]: what client commands share: connecting (each with its own flags), the
//!   listing flags, printing.
//! - [`batch`]: the catalog re-check pipeline behind `relist batch` (and its benchmark).
//! - `eval` (feature `eval`, on by default): `relist eval`, detection quality measured with
//!   the daemon's own fingerprinting, index and policy, and the regression guard.
pub mod batch;
pub mod cli;
pub mod client;
pub mod cmd;
#[cfg(feature = "eval")]
pub mod eval;
