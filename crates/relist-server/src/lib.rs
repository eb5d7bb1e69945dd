//! relist's daemon: the two front ends over the bank, and the daemon's life.
//!
//! Both front ends reach the blocking [`relist_core::bank::Bank`] through one async facade,
//! [`facade::AsyncBank`], so they make the same calls with the same errors. Start-up takes a
//! [`config::ServeConfig`], never command-line types: the `relist` binary maps its flags to one.
//!
//! - [`grpc`]: the `relist.v1.Relist` service (keys and roles, load shedding, deadlines,
//!   metrics), health checking and reflection.
//! - [`web`]: the analysts' read-only page over the match history, its one write a review,
//!   and Prometheus `/metrics`.
//! - [`facade`]: the async face of the bank both front ends use.
//! - [`config`]: the TOML file and the resolved settings the daemon starts with.
//! - [`daemon`]: start-up, history retention and graceful shutdown (the index snapshot).
//! - [`metrics`]: the service's counters, rendered for Prometheus.
//! - [`error`]: why the daemon could not start or stopped serving.
pub mod config;
pub mod daemon;
pub mod error;
pub mod facade;
pub mod grpc;
pub mod metrics;
pub mod web;

pub use error::ServerError;
