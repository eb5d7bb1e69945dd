//! The one async face of the [`Bank`], shared by the gRPC service and the web page.
//!
//! The bank is blocking code (hashing, fsync, sled reads): every call that may block runs on
//! tokio's blocking pool, so neither front end stalls the runtime, and both see the same
//! calls with the same errors. What never blocks (index sizes, counters, the database handle
//! for the key store) is read from [`AsyncBank::bank`] directly.
use std::sync::Arc;

use relist_core::bank::{Bank, ThumbnailOf};
use relist_core::domain::{CheckOutcome, ImageInput, Listing, Registered, Source, Takedown, TakedownId, Verdict};
use relist_core::error::{Error, Result};
use relist_core::history::{Label, MatchView, Page, Query, Stats};

/// A shared handle on the bank whose blocking calls are `async`.
#[derive(Clone)]
pub struct AsyncBank {
    bank: Arc<Bank>,
}

impl AsyncBank {
    /// The facade over a shared bank (the daemon shares it between its front ends).
    pub fn new(bank: Arc<Bank>) -> Self {
        AsyncBank { bank }
    }

    /// The bank itself, for what never blocks.
    pub fn bank(&self) -> &Arc<Bank> {
        &self.bank
    }

    /// Runs blocking bank work off the async runtime.
    pub async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Bank) -> Result<T> + Send + 'static,
    {
        let bank = self.bank.clone();
        tokio::task::spawn_blocking(move || f(&bank))
            .await
            .map_err(|e| Error::Internal(format!("worker failed: {e}")))?
    }

    /// Checks a listing. Evaluating a hash-only listing costs microseconds (index lookups):
    /// handing it to the blocking pool cost more than the work and capped hash-only
    /// throughput, so it runs in place. Recording a match writes to disk, and a runtime
    /// worker waiting on sled stalls every connection it serves, so that goes to the blocking
    /// pool, as do listings with images (decoded and hashed there).
    /// `source: None` is a dry run: nothing is recorded.
    pub async fn check(&self, listing: Listing, source: Option<Source>) -> Result<CheckOutcome> {
        if !listing.images.iter().all(|i| matches!(i, ImageInput::Hashes { .. })) {
            return self.run(move |bank| bank.check_with(&listing, source)).await;
        }
        let outcome = self.bank.evaluate(&listing)?;
        match source {
            Some(source) if outcome.verdict != Verdict::Clear => {
                self.run(move |bank| bank.record_outcome(&listing, source, outcome))
                    .await
            }
            _ => Ok(outcome),
        }
    }

    /// See [`Bank::register`].
    pub async fn register(
        &self,
        listing: Listing,
        reason: String,
        taken_down_at_ms: Option<i64>,
    ) -> Result<Registered> {
        self.run(move |bank| bank.register(&listing, &reason, taken_down_at_ms))
            .await
    }

    /// See [`Bank::remove`].
    pub async fn remove(&self, id: TakedownId) -> Result<i64> {
        self.run(move |bank| bank.remove(id)).await
    }

    /// See [`Bank::get`].
    pub async fn get(&self, id: TakedownId) -> Result<Takedown> {
        self.run(move |bank| bank.get(id)).await
    }

    /// See [`Bank::get_match`].
    pub async fn get_match(&self, id: u64) -> Result<MatchView> {
        self.run(move |bank| bank.get_match(id)).await
    }

    /// See [`Bank::query_matches`].
    pub async fn query_matches(&self, q: Query, page_size: usize, page_token: Option<String>) -> Result<Page> {
        self.run(move |bank| bank.query_matches(&q, page_size, page_token.as_deref()))
            .await
    }

    /// See [`Bank::match_stats`].
    pub async fn match_stats(&self, from_ms: i64, to_ms: i64, top: usize) -> Result<Stats> {
        self.run(move |bank| bank.match_stats(from_ms, to_ms, top)).await
    }

    /// See [`Bank::review_match`].
    pub async fn review_match(&self, id: u64, label: Label, reviewer: String, note: String) -> Result<MatchView> {
        self.run(move |bank| bank.review_match(id, label, &reviewer, &note))
            .await
    }

    /// See [`Bank::thumbnail`].
    pub async fn thumbnail(&self, of: ThumbnailOf, image: u8) -> Result<Option<Vec<u8>>> {
        self.run(move |bank| bank.thumbnail(of, image)).await
    }

    /// The store's size on disk (walking the data dir is blocking I/O); 0 when unknown.
    pub async fn store_bytes(&self) -> u64 {
        self.run(|bank| Ok(bank.db().size_on_disk().unwrap_or(0)))
            .await
            .unwrap_or(0)
    }
}
