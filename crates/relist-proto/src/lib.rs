//! relist's wire: the only crate that knows both the protobuf types and the domain.
//!
//! `build.rs` compiles the top-level `proto/relist/v1/relist.proto` with protox (pure Rust,
//! no system `protoc`). Both sides of the API use this crate: the daemon (relist-server)
//! validates requests into domain types and answers with protobuf, the command line (the
//! `relist` binary) sends protobuf and prints domain types.
//!
//! - [`api`]: the generated types ([`api::pb`]), request validation, the conversions, and
//!   [`api::status`], the one mapping of [`relist_core::error::Error`] to gRPC status codes.
//! - `convert`: the conversions that need nothing but their input, as `From` / `TryFrom`.
//! - [`transport`]: TLS (server and client, mTLS) and the API key on every client call.
//! - `fuzz_targets` (feature `fuzz`): the fuzz targets' bodies, shared by `fuzz/` and the
//!   stable corpus test; never compiled into the daemon.
pub mod api;
mod convert;
#[cfg(feature = "fuzz")]
pub mod fuzz_targets;
pub mod transport;

#[cfg(test)]
mod tests {
    use relist_core::error::Error;

    use crate::api::status;

    #[test]
    fn a_full_disk_maps_to_resource_exhausted_and_other_storage_errors_to_unavailable() {
        let enospc = sled::Error::Io(std::io::Error::from_raw_os_error(28));
        let s = status(Error::from(enospc));
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert!(s.message().starts_with("disk full"), "{}", s.message());
        let other = sled::Error::Io(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert_eq!(status(Error::from(other)).code(), tonic::Code::Unavailable);
    }
}
