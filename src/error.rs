//! Library errors. They are mapped to gRPC status codes in one place, `api::status`.
use thiserror::Error;

/// Everything relist's core can fail with.
#[derive(Debug, Error)]
pub enum Error {
    /// The client sent something unusable; `field` names it as a path into the request
    /// (e.g. `listing.images[2].data`), so the caller can fix the right thing.
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A limit was reached; retrying later or sending less may work.
    #[error("{0}")]
    ResourceExhausted(String),
    /// No valid API key came with the request (missing, unknown or revoked).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The key is valid but its role or marketplace scope does not allow this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The request took longer than the configured per-request deadline.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// The store could not be read or written (disk full, I/O error).
    #[error("storage: {0}")]
    Storage(#[from] sled::Error),
    /// The store holds something this version cannot read.
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    /// A bug or an unexpected condition; never caused by the request's content.
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    /// Shorthand for an [`Error::InvalidArgument`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<sled::transaction::TransactionError<Error>> for Error {
    fn from(e: sled::transaction::TransactionError<Error>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => Error::Storage(e),
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
