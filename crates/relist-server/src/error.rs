//! Why the daemon could not start or stopped serving. Request errors are not here: they are
//! [`relist_core::error::Error`]s, answered as gRPC statuses by [`relist_proto::api::status`].
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything start-up and serving can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A setting the daemon cannot run with (named in the message).
    #[error("{0}")]
    Config(String),
    /// The config file could not be read.
    #[error("reading config {}", .0.display())]
    ReadConfig(PathBuf, #[source] std::io::Error),
    /// The config file is not valid TOML for [`crate::config::FileConfig`].
    #[error("parsing config {}", .0.display())]
    ParseConfig(PathBuf, #[source] toml::de::Error),
    /// The store in this data dir could not be opened.
    #[error("opening store {}", .0.display())]
    OpenStore(PathBuf, #[source] relist_core::error::Error),
    /// An address could not be bound; the text names the flag, e.g. ` (--http)`, or is empty
    /// for the gRPC address.
    #[error("binding {0}{1}")]
    Bind(SocketAddr, &'static str, #[source] std::io::Error),
    /// The bank failed (opening its trees, flushing at shutdown).
    #[error(transparent)]
    Bank(#[from] relist_core::error::Error),
    /// The daemon's TLS files are not usable.
    #[error(transparent)]
    Tls(#[from] relist_proto::transport::TransportError),
    /// The gRPC server failed.
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
    /// The reflection service could not be built from the descriptors.
    #[error(transparent)]
    Reflection(#[from] tonic_reflection::server::Error),
    /// A socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A task panicked or was cancelled; the text names it.
    #[error("{0} task failed")]
    Task(&'static str, #[source] tokio::task::JoinError),
}
