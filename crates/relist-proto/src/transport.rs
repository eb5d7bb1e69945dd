//! How clients reach the daemon and how the daemon secures its port: TLS (rustls) on both
//! sides, with optional client certificates, and the API key sent as
//! `authorization: Bearer <key>` on every call.
use std::path::{Path, PathBuf};

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};
use tonic::{Request, Status};

use crate::api::pb;

/// Why a connection or the daemon's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A certificate or key file could not be read.
    #[error("reading {what} {}", path.display())]
    Read {
        /// The flag that named the file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// The address is not a URI (`http://host:port`, `https://host:port`).
    #[error("bad address {0}")]
    Address(String, #[source] tonic::transport::Error),
    /// The TLS files are not usable certificates and keys.
    #[error("TLS settings")]
    Tls(#[source] tonic::transport::Error),
    /// A client certificate needs its key and the other way round.
    #[error("--tls-cert and --tls-key go together")]
    HalfIdentity,
    /// The key cannot be sent as an HTTP/2 header value.
    #[error("the API key has characters a header cannot carry")]
    ApiKey,
    /// The daemon could not be reached: the address, the innermost cause and what to try.
    #[error("cannot reach relist at {addr}: {cause}; {hint}")]
    Connect {
        /// The address tried.
        addr: String,
        /// The innermost cause, once (hyper and tonic each repeat their inner error).
        cause: String,
        /// What the user can do about it.
        hint: &'static str,
    },
}

/// `host:port` as the daemon prints it, or a full URI: a bare address gets `http://`
/// (`https://` when TLS is configured), so the address `relist serve` logs works as `--addr`.
fn with_scheme(addr: &str, tls: bool) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else if tls {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    }
}

/// One line for a failed connection: the innermost distinct cause and a hint that fits it.
fn connect_error(addr: &str, tls: bool, e: &tonic::transport::Error) -> TransportError {
    let mut causes: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        causes.push(err.to_string());
        cur = err.source();
    }
    let all = causes.join(": ").to_lowercase();
    // The innermost message is the most specific; the outer ones only restate it.
    let cause = causes.last().cloned().unwrap_or_else(|| e.to_string());
    // A refusal is a refusal with or without TLS; any other failure under TLS is most often
    // a handshake with a plaintext daemon (rustls reports it as a corrupt message).
    let hint = if all.contains("refused") {
        "is `relist serve` running, and is this the addr= of its \"relist serving\" log line?"
    } else if tls {
        "the daemon may serve plaintext: use http:// and drop the --tls-* flags, or start it with --tls-cert/--tls-key"
    } else if all.contains("dns") || all.contains("resolve") || all.contains("lookup") {
        "check the host name in --addr / RELIST_ADDR"
    } else {
        "check --addr / RELIST_ADDR and that `relist serve` runs there"
    };
    TransportError::Connect {
        addr: addr.to_string(),
        cause,
        hint,
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TransportError> {
    std::fs::read(path).map_err(|source| TransportError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// The daemon's TLS: its certificate chain and key (PEM), and when `client_ca` is given,
/// mutual TLS: only clients with a certificate signed by that CA get in.
pub fn server_tls(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<ServerTlsConfig, TransportError> {
    let identity = Identity::from_pem(read("--tls-cert", cert)?, read("--tls-key", key)?);
    let mut tls = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read("--tls-client-ca", ca)?));
    }
    Ok(tls)
}

/// A client's credentials and TLS settings.
#[derive(Clone, Debug, Default)]
pub struct Connection {
    /// Sent as `authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// CA (PEM) that signed the daemon's certificate; without it, `https://` uses the
    /// public web roots.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM), for a daemon that requires one (mTLS).
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

/// Adds the API key to every call.
#[derive(Clone, Debug, Default)]
pub struct ApiKey(Option<MetadataValue<Ascii>>);

impl ApiKey {
    /// The header value for `key`; a key that cannot be a header value is refused here.
    pub fn new(key: Option<&str>) -> Result<ApiKey, TransportError> {
        key.map(|k| MetadataValue::try_from(format!("Bearer {}", k.trim())).map_err(|_| TransportError::ApiKey))
            .transpose()
            .map(ApiKey)
    }
}

impl tonic::service::Interceptor for ApiKey {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// The generated client, with the key interceptor.
pub type Client = pb::relist_client::RelistClient<InterceptedService<Channel, ApiKey>>;

impl Connection {
    fn uses_tls(&self, addr: &str) -> bool {
        addr.starts_with("https://") || self.tls_ca.is_some() || self.tls_cert.is_some()
    }

    /// The endpoint for `addr`, over TLS when the address is `https://` or TLS files are set.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, TransportError> {
        let addr = with_scheme(addr, self.tls_ca.is_some() || self.tls_cert.is_some());
        let addr = addr.as_str();
        if !self.uses_tls(addr) {
            return Endpoint::from_shared(addr.to_string()).map_err(|e| TransportError::Address(addr.to_string(), e));
        }
        let addr = match addr.strip_prefix("http://") {
            Some(rest) => format!("https://{rest}"),
            None => addr.to_string(),
        };
        let mut tls = ClientTlsConfig::new();
        tls = match &self.tls_ca {
            Some(ca) => tls.ca_certificate(Certificate::from_pem(read("--tls-ca", ca)?)),
            None => tls.with_webpki_roots(),
        };
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(read("--tls-cert", cert)?, read("--tls-key", key)?));
            }
            (None, None) => {}
            _ => return Err(TransportError::HalfIdentity),
        }
        Endpoint::from_shared(addr.clone())
            .map_err(|e| TransportError::Address(addr.clone(), e))?
            .tls_config(tls)
            .map_err(TransportError::Tls)
    }

    /// Connects to the daemon at `addr`, allowing messages up to `max_message_bytes`.
    pub async fn connect(&self, addr: &str, max_message_bytes: usize) -> Result<Client, TransportError> {
        let channel = self
            .endpoint(addr)?
            .connect()
            .await
            .map_err(|e| connect_error(addr, self.uses_tls(&with_scheme(addr, false)), &e))?;
        Ok(
            pb::relist_client::RelistClient::with_interceptor(channel, ApiKey::new(self.api_key.as_deref())?)
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
        )
    }
}
