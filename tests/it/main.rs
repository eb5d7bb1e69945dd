//! The integration tests, as one test binary (each test file used to link its own copy of the
//! daemon, the client and the core): real daemons on 127.0.0.1:0 over temporary sled dirs,
//! the real `relist` binary, the web page in a real browser. The slow release-mode ones
//! (`crash`, `soak`, `batch_catalog`) stay separate: `.ci/run` runs them on their own.
#[path = "../common/mod.rs"]
mod common;

mod access;
mod api;
mod architecture;
mod backup;
mod batch;
mod batch_cli;
mod check_order;
mod config_example;
mod daemon;
mod detection_modes;
#[cfg(feature = "eval")]
mod eval;
mod exchange;
mod first_hour;
mod fuzz_corpus;
mod history;
mod http_api;
mod keys_cli;
mod limits;
mod lookups;
mod metrics;
mod packaging;
mod python_example;
mod quick_start;
mod reflection;
mod reregister;
mod snapshot;
mod tls;
mod web;
