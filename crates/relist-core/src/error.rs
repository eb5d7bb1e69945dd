//! Library errors. They are mapped to gRPC status codes in one place, relist-proto's
//! `api::status` (and to HTTP statuses by the web page).
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
    /// The store could not be read or written (an I/O error other than a full disk).
    #[error("storage: {0}")]
    Storage(sled::Error),
    /// The disk holding the store is full: writes are refused until space is freed, while
    /// checks and reads go on from what is already stored.
    #[error("disk full: {0}")]
    DiskFull(String),
    /// The shared store (PostgreSQL) cannot be reached: writes are refused, checks go on from
    /// the replica's memory and say the bank may be stale. Retrying later works.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A concurrent write to the same thing won (two replicas registering one listing):
    /// retrying reads the winner's record.
    #[error("conflict: {0}")]
    Conflict(String),
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

impl From<sled::Error> for Error {
    /// Tells a full disk (ENOSPC) apart from other storage failures: the operator's fix differs.
    fn from(e: sled::Error) -> Self {
        match &e {
            sled::Error::Io(io) if is_disk_full(io) => Error::DiskFull(format!(
                "the store's disk is full ({io}); writes are refused until space is freed"
            )),
            _ => Error::Storage(e),
        }
    }
}

/// Whether an I/O error means the filesystem has no space left. sled re-raises a failed
/// write's error as a copy that keeps its kind but may lose the OS code, so both are checked.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.raw_os_error() == Some(28)
        || e.to_string().contains("No space left on device")
}

impl From<sled::transaction::TransactionError<Error>> for Error {
    fn from(e: sled::transaction::TransactionError<Error>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => Error::from(e),
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_told_apart() {
        let enospc = sled::Error::Io(std::io::Error::from_raw_os_error(28));
        let e = Error::from(enospc);
        assert!(matches!(e, Error::DiskFull(_)), "{e:?}");
        assert!(e.to_string().starts_with("disk full"), "{e}");
        // sled's re-raised copy keeps the kind only.
        let copy = sled::Error::Io(std::io::Error::new(std::io::ErrorKind::StorageFull, "copy"));
        assert!(matches!(Error::from(copy), Error::DiskFull(_)));
        let other = sled::Error::Io(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert!(matches!(Error::from(other), Error::Storage(_)));
    }
}
