//! Prometheus metrics, in the text exposition format, served at `/metrics` on the HTTP port.
//! Hand-written (a few counters and histograms) so no metrics framework is pulled in.
//!
//! | metric | labels |
//! |---|---|
//! | `relist_requests_total` | `rpc`, `code` (gRPC code name, e.g. `Ok`, `PermissionDenied`) |
//! | `relist_request_duration_seconds` (histogram) | `rpc`, `code` |
//! | `relist_verdicts_total` | `verdict` (`CLEAR`, `REVIEW`, `REUPLOAD`) |
//! | `relist_requests_shed_total` | refused by the concurrency limit |
//! | `relist_index_entries` | `kind` (`pdq`, `phash`, `title`) |
//! | `relist_store_size_bytes` | sled's size on disk |
//! | `relist_fingerprint_duration_seconds` (histogram) | time to decode and hash one listing |
//! | `relist_ready` | 1 once the bank answers with everything recorded at start (a replica: caught up with the shared store) |
//! | `relist_bank_stale` | 1 while a replica has not reached its shared store lately (checks say `bank_stale`) |
//! | `relist_applied_seq` | a replica's position in the shared store's change log (0 on a single box) |
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use relist_core::domain::Verdict;
use relist_core::metrics::Histogram;

/// The gRPC service's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// (rpc, code) -> count.
    requests: Mutex<BTreeMap<(&'static str, String), u64>>,
    /// (rpc, code) -> latency.
    latency: Mutex<BTreeMap<(&'static str, String), std::sync::Arc<Histogram>>>,
    verdicts: [AtomicU64; 3],
    shed: AtomicU64,
}

/// What the bank reports at scrape time.
#[derive(Clone, Copy, Debug, Default)]
pub struct BankGauges {
    /// Live PDQ index entries (whole pictures, variants and regions).
    pub pdq: usize,
    /// Live pHash index entries.
    pub phash: usize,
    /// Live title simhash index entries.
    pub title: usize,
    /// sled's size on disk.
    pub store_bytes: u64,
    /// [`relist_core::bank::Bank::ready`].
    pub ready: bool,
    /// [`relist_core::bank::Bank::bank_stale`].
    pub stale: bool,
    /// [`relist_core::bank::Bank::applied_seq`].
    pub applied_seq: u64,
}

impl Metrics {
    /// Counts one finished request.
    pub fn request(&self, rpc: &'static str, code: tonic::Code, elapsed: Duration) {
        let code = format!("{code:?}");
        *self.requests.lock().entry((rpc, code.clone())).or_default() += 1;
        let h = self.latency.lock().entry((rpc, code)).or_default().clone();
        h.observe(elapsed);
    }

    /// Counts one check's verdict.
    pub fn verdict(&self, v: Verdict) {
        let i = match v {
            Verdict::Clear => 0,
            Verdict::Review => 1,
            Verdict::Reupload => 2,
        };
        self.verdicts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one request refused by the concurrency limit.
    pub fn shed(&self) {
        self.shed.fetch_add(1, Ordering::Relaxed);
    }

    /// The whole exposition.
    pub fn render(&self, bank: &BankGauges, fingerprinting: &Histogram) -> String {
        let mut out = String::new();
        out.push_str("# HELP relist_requests_total gRPC requests by method and status code.\n");
        out.push_str("# TYPE relist_requests_total counter\n");
        for ((rpc, code), n) in self.requests.lock().iter() {
            let _ = writeln!(out, "relist_requests_total{{rpc=\"{rpc}\",code=\"{code}\"}} {n}");
        }
        out.push_str("# HELP relist_request_duration_seconds gRPC request latency by method and status code.\n");
        out.push_str("# TYPE relist_request_duration_seconds histogram\n");
        for ((rpc, code), h) in self.latency.lock().iter() {
            let labels = format!("rpc=\"{rpc}\",code=\"{code}\",");
            h.render(&mut out, "relist_request_duration_seconds", &labels);
        }
        out.push_str("# HELP relist_verdicts_total Check verdicts (CheckListing and CheckListings items).\n");
        out.push_str("# TYPE relist_verdicts_total counter\n");
        for (name, n) in ["CLEAR", "REVIEW", "REUPLOAD"].iter().zip(&self.verdicts) {
            let _ = writeln!(
                out,
                "relist_verdicts_total{{verdict=\"{name}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP relist_requests_shed_total Requests refused because the concurrency limit was reached.\n");
        out.push_str("# TYPE relist_requests_shed_total counter\n");
        let _ = writeln!(out, "relist_requests_shed_total {}", self.shed.load(Ordering::Relaxed));
        out.push_str("# HELP relist_index_entries Live index entries by hash kind.\n");
        out.push_str("# TYPE relist_index_entries gauge\n");
        for (kind, n) in [("pdq", bank.pdq), ("phash", bank.phash), ("title", bank.title)] {
            let _ = writeln!(out, "relist_index_entries{{kind=\"{kind}\"}} {n}");
        }
        out.push_str("# HELP relist_store_size_bytes Size of the sled store on disk.\n");
        out.push_str("# TYPE relist_store_size_bytes gauge\n");
        let _ = writeln!(out, "relist_store_size_bytes {}", bank.store_bytes);
        out.push_str("# HELP relist_fingerprint_duration_seconds Time to decode and fingerprint one listing.\n");
        out.push_str("# TYPE relist_fingerprint_duration_seconds histogram\n");
        fingerprinting.render(&mut out, "relist_fingerprint_duration_seconds", "");
        out.push_str("# HELP relist_ready 1 once the bank answers with everything recorded at start.\n");
        out.push_str("# TYPE relist_ready gauge\n");
        let _ = writeln!(out, "relist_ready {}", u8::from(bank.ready));
        out.push_str("# HELP relist_bank_stale 1 while this replica has not reached its shared store lately.\n");
        out.push_str("# TYPE relist_bank_stale gauge\n");
        let _ = writeln!(out, "relist_bank_stale {}", u8::from(bank.stale));
        out.push_str("# HELP relist_applied_seq The last change of the shared store applied here (0: none).\n");
        out.push_str("# TYPE relist_applied_seq gauge\n");
        let _ = writeln!(out, "relist_applied_seq {}", bank.applied_seq);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labelled() {
        let m = Metrics::default();
        m.request("CheckListing", tonic::Code::Ok, Duration::from_millis(3));
        m.request("CheckListing", tonic::Code::Ok, Duration::from_millis(300));
        m.verdict(Verdict::Reupload);
        let fp = Histogram::default();
        let text = m.render(&BankGauges::default(), &fp);
        assert!(text.contains("relist_requests_total{rpc=\"CheckListing\",code=\"Ok\"} 2"));
        assert!(
            text.contains("relist_request_duration_seconds_bucket{rpc=\"CheckListing\",code=\"Ok\",le=\"0.005\"} 1")
        );
        assert!(text.contains("relist_request_duration_seconds_bucket{rpc=\"CheckListing\",code=\"Ok\",le=\"+Inf\"} 2"));
        assert!(text.contains("relist_request_duration_seconds_count{rpc=\"CheckListing\",code=\"Ok\"} 2"));
        assert!(text.contains("relist_verdicts_total{verdict=\"REUPLOAD\"} 1"));
        assert!(text.contains("relist_fingerprint_duration_seconds_count 0"));
    }
}
