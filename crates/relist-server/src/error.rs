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
    #[error("reading config {}", path.display())]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing config {}", path.display())]
    ParseConfig {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("opening store {}", path.display())]
    OpenStore {
        path: PathBuf,
        #[source]
        source: relist_core::error::Error,
    },
    /// `what` names the flag, e.g. ` (--http)`, or is empty for the gRPC address.
    #[error("binding {addr}{what}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Bank(#[from] relist_core::error::Error),
    #[error(transparent)]
    Tls(#[from] relist_proto::transport::TransportError),
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{0} task failed")]
    Task(&'static str, #[source] tokio::task::JoinError),
}
