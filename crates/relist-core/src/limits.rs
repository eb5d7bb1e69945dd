//! How large a request may be. Request validation (relist-proto) and the daemon's
//! configuration (relist-server) both read these, so they live below both.

/// Longest listing id, in bytes (ids are keys in the store).
pub const MAX_LISTING_ID_BYTES: usize = 256;
/// Longest marketplace name, in bytes.
pub const MAX_MARKETPLACE_BYTES: usize = 64;
/// Longest seller id, in bytes.
pub const MAX_SELLER_ID_BYTES: usize = 256;
/// Default title limit, in characters; the daemon's is in [`RequestLimits`].
pub const MAX_TITLE_CHARS: usize = 1_000;
/// Default description limit, in characters; the daemon's is in [`RequestLimits`].
pub const MAX_DESCRIPTION_CHARS: usize = 20_000;
/// Longest takedown reason, in characters.
pub const MAX_REASON_CHARS: usize = 1_000;

/// Largest `top` a stats request may ask for.
pub const MAX_STATS_TOP: usize = 1000;

/// Largest gRPC message accepted by default: a listing of several full-size photos.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Per-request limits and load shedding of the gRPC service. Defaults suit a daemon on the
/// upload path: a listing of full-size photos fits, a stuck request does not hold a slot
/// for ever, and a burst beyond the concurrency limit is refused at once, not queued.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RequestLimits {
    /// Largest gRPC message, in bytes, either way.
    pub max_message_bytes: usize,
    /// Most images per listing (at most [`crate::matcher::MAX_IMAGES`]).
    pub max_images: usize,
    /// Longest listing title, in characters.
    pub max_title_chars: usize,
    /// Longest listing description, in characters.
    pub max_description_chars: usize,
    /// Largest QueryMatches page (at most [`crate::history::MAX_PAGE_SIZE`]).
    pub max_page_size: usize,
    /// Time a unary request (or one item of a stream) may take before DEADLINE_EXCEEDED.
    pub request_timeout: std::time::Duration,
    /// Requests (a stream counts as one) served at once; beyond: RESOURCE_EXHAUSTED.
    pub max_concurrent_requests: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_message_bytes: MAX_MESSAGE_BYTES,
            max_images: crate::matcher::MAX_IMAGES,
            max_title_chars: MAX_TITLE_CHARS,
            max_description_chars: MAX_DESCRIPTION_CHARS,
            max_page_size: crate::history::MAX_PAGE_SIZE,
            request_timeout: std::time::Duration::from_secs(30),
            max_concurrent_requests: 64,
        }
    }
}

impl RequestLimits {
    /// Refuses limits the daemon cannot honour (zeros, or above what the store supports).
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("max_message_bytes", self.max_message_bytes),
            ("max_images", self.max_images),
            ("max_title_chars", self.max_title_chars),
            ("max_description_chars", self.max_description_chars),
            ("max_page_size", self.max_page_size),
            ("max_concurrent_requests", self.max_concurrent_requests),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be at least 1"));
        }
        if self.max_images > crate::matcher::MAX_IMAGES {
            return Err(format!("max_images must be at most {}", crate::matcher::MAX_IMAGES));
        }
        if self.max_page_size > crate::history::MAX_PAGE_SIZE {
            return Err(format!(
                "max_page_size must be at most {}",
                crate::history::MAX_PAGE_SIZE
            ));
        }
        if self.request_timeout.is_zero() {
            return Err("request_timeout must be above zero".into());
        }
        Ok(())
    }
}
