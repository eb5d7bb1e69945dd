//! What every client command shares: where the daemon is and how to reach it (`--addr`,
//! `--api-key`, TLS), a listing given as flags, and how replies and errors are printed. Each
//! command connects with its own flags; nothing here is process-wide.
use std::future::Future;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use relist_core::limits::MAX_MESSAGE_BYTES;
use relist_proto::api::{self, pb};
use relist_proto::transport::Connection;
use serde::Serialize;

/// The generated client, with the API key on every call.
pub type Client = relist_proto::transport::Client;

/// Where the daemon is and how to print.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Address of the relist daemon: host:port as `relist serve` prints it, or a URL
    /// (http:// or https://).
    #[arg(long, env = "RELIST_ADDR", default_value = "127.0.0.1:50051")]
    pub addr: String,
    /// Print machine-readable JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

impl ClientArgs {
    /// Connects to the daemon at `--addr` with this command's key and TLS settings.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        connect(&self.addr, &self.conn.connection()).await
    }

    /// Makes one call over a new connection and hands back the reply: what a one-shot
    /// command does. A refused call reads as its status code and the daemon's message.
    pub async fn call<R, F, Fut>(&self, rpc: F) -> anyhow::Result<R>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let client = self.connect().await?;
        Ok(rpc(client).await.map_err(rpc_error)?.into_inner())
    }

    /// Makes one call and prints its reply as the domain type `T` (see [`ClientArgs::print`]).
    pub async fn show<R, T, F, Fut>(&self, rpc: F, text: impl FnOnce(&T)) -> anyhow::Result<()>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
        T: From<R> + Serialize,
    {
        let reply = self.call(rpc).await?;
        self.print(&T::from(reply), text)
    }

    /// Prints a result: as JSON with `--json`, for people with `text` otherwise.
    pub fn print<T: Serialize>(&self, v: &T, text: impl FnOnce(&T)) -> anyhow::Result<()> {
        if self.json {
            return print_json(v);
        }
        text(v);
        Ok(())
    }
}

/// A client's API key and TLS settings.
#[derive(Clone, Debug, Default, Args)]
pub struct ConnArgs {
    /// API key, sent as `authorization: Bearer <key>`.
    #[arg(long, env = "RELIST_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// CA certificate (PEM) of the daemon's TLS certificate; implies TLS.
    #[arg(long, env = "RELIST_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for a daemon that requires one (mutual TLS).
    #[arg(long = "tls-cert", env = "RELIST_CLIENT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long = "tls-key", env = "RELIST_CLIENT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl ConnArgs {
    /// The settings [`connect`] takes.
    pub fn connection(&self) -> Connection {
        Connection {
            api_key: self.api_key.clone().filter(|k| !k.trim().is_empty()),
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
        }
    }
}

/// Connects to the daemon at `addr` with the daemon's default message-size limit.
pub async fn connect(addr: &str, conn: &Connection) -> anyhow::Result<Client> {
    Ok(conn.connect(addr, MAX_MESSAGE_BYTES).await?)
}

/// Where a file is written before it is complete: `FILE.part`, renamed to `FILE` once it is,
/// so an interrupted command never leaves a partial `FILE`.
pub fn part_path(file: &std::path::Path) -> PathBuf {
    let mut part = file.as_os_str().to_owned();
    part.push(".part");
    PathBuf::from(part)
}

/// A failed call as the command reports it: the status code and the daemon's message, and a
/// hint when the reply shows the address is not a gRPC port at all.
pub fn rpc_error(s: tonic::Status) -> anyhow::Error {
    // An HTTP/1 or HTTP/2 server that is not gRPC (the web page's port, typically) answers
    // with a body tonic reads as a malformed gRPC frame, or with no grpc-status at all.
    let msg = s.message();
    if msg.contains("invalid compression flag") || msg.contains("missing grpc-status") || msg.contains("content-type") {
        return anyhow::anyhow!(
            "{:?}: {msg}; this address does not speak gRPC (is it the --http web port?): use the addr= of the daemon's \"relist serving\" log line",
            s.code()
        );
    }
    anyhow::anyhow!("{:?}: {msg}", s.code())
}

/// Prints `v` as pretty JSON on stdout (`--json`).
pub fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Unix milliseconds as an RFC 3339 time.
pub fn fmt_ms(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses "YYYY-MM-DD" (midnight UTC) or RFC 3339 into a timestamp.
pub fn parse_time(flag: &str, s: &str) -> anyhow::Result<prost_types::Timestamp> {
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_string()
    };
    let t = humantime::parse_rfc3339_weak(&full).with_context(|| format!("{flag} {s}: not a date or RFC 3339 time"))?;
    let d = t
        .duration_since(std::time::UNIX_EPOCH)
        .with_context(|| format!("{flag} {s}: before 1970"))?;
    Ok(api::timestamp(d.as_millis() as i64))
}

/// A listing given on the command line.
#[derive(Debug, Args)]
pub struct ListingArgs {
    /// The marketplace the listing is on, e.g. shopee.
    #[arg(long)]
    pub marketplace: String,
    /// The listing's id on its marketplace.
    #[arg(long)]
    pub listing_id: String,
    /// The seller's id on the marketplace (a match by the same seller is flagged).
    #[arg(long, default_value = "")]
    pub seller_id: String,
    /// The listing's title, as the seller wrote it.
    #[arg(long, default_value = "")]
    pub title: String,
    /// The listing's description.
    #[arg(long, default_value = "")]
    pub description: String,
    /// Image file (JPEG, PNG, WebP, GIF); repeat for several.
    #[arg(long = "image")]
    pub images: Vec<PathBuf>,
    /// A precomputed PDQ hash (64 hex) as an image; repeat for several.
    #[arg(long = "pdq")]
    pub pdqs: Vec<String>,
    /// A precomputed 64-bit pHash (16 hex) as an image; repeat for several.
    #[arg(long = "phash")]
    pub phashes: Vec<String>,
}

impl ListingArgs {
    /// The request's listing: image files are read here, hashes go as they are.
    pub fn to_proto(&self) -> anyhow::Result<pb::Listing> {
        let mut images = Vec::new();
        for path in &self.images {
            let data = std::fs::read(path).with_context(|| format!("reading image {}", path.display()))?;
            images.push(pb::Image {
                data,
                ..Default::default()
            });
        }
        images.extend(self.pdqs.iter().map(|h| pb::Image {
            pdq: h.clone(),
            ..Default::default()
        }));
        images.extend(self.phashes.iter().map(|h| pb::Image {
            phash: h.clone(),
            ..Default::default()
        }));
        Ok(pb::Listing {
            listing_id: self.listing_id.clone(),
            marketplace: self.marketplace.clone(),
            seller_id: self.seller_id.clone(),
            title: self.title.clone(),
            description: self.description.clone(),
            images,
        })
    }
}
