//! Loading a record's images on the client: local files, http(s) downloads (timeouts, a size
//! limit, retries with exponential backoff on 5xx, timeouts and connection errors), or
//! precomputed hashes passed through.
use std::path::Path;
use std::time::Duration;

use relist_proto::api::pb;

use super::catalog::{ImageRef, Record};

/// How images are fetched.
#[derive(Clone, Debug)]
pub struct FetchOptions {
    /// Largest image accepted, in bytes (files and downloads).
    pub max_bytes: u64,
    /// Time allowed to establish a connection.
    pub connect_timeout: Duration,
    /// Time allowed for one whole download attempt (connect, headers and body).
    pub timeout: Duration,
    /// Further attempts after a retryable failure.
    pub retries: u32,
    /// Wait before the first retry; doubled for each next one.
    pub backoff: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            max_bytes: 20 * 1024 * 1024,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            retries: 3,
            backoff: Duration::from_millis(250),
        }
    }
}

/// Loads records' images into protobuf listings.
#[derive(Clone)]
pub struct Loader {
    http: reqwest::Client,
    opts: FetchOptions,
}

struct Failure {
    message: String,
    retryable: bool,
}

impl Loader {
    pub fn new(opts: FetchOptions) -> anyhow::Result<Loader> {
        let http = reqwest::Client::builder()
            .connect_timeout(opts.connect_timeout)
            .timeout(opts.timeout)
            .user_agent(concat!("relist-batch/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Loader { http, opts })
    }

    /// The listing to send, or the first image that could not be loaded ("images[1]: ...").
    pub async fn listing(&self, r: Record) -> Result<pb::Listing, String> {
        let mut images = Vec::with_capacity(r.images.len());
        for (i, img) in r.images.into_iter().enumerate() {
            images.push(self.image(img).await.map_err(|e| format!("images[{i}]: {e}"))?);
        }
        Ok(pb::Listing {
            listing_id: r.listing_id,
            marketplace: r.marketplace,
            seller_id: r.seller_id,
            title: r.title,
            description: r.description,
            images,
        })
    }

    async fn image(&self, img: ImageRef) -> Result<pb::Image, String> {
        let data = match img {
            ImageRef::Hashes {
                pdq,
                phash,
                pdq_quality,
            } => {
                return Ok(pb::Image {
                    data: Vec::new(),
                    pdq,
                    phash,
                    pdq_quality,
                })
            }
            ImageRef::Path(p) => self.file(&p).await.map_err(|e| format!("{}: {e}", p.display()))?,
            ImageRef::Url(u) => self.download(&u).await.map_err(|e| format!("GET {u}: {e}"))?,
        };
        Ok(pb::Image {
            data,
            ..Default::default()
        })
    }

    async fn file(&self, p: &Path) -> Result<Vec<u8>, String> {
        let meta = tokio::fs::metadata(p).await.map_err(io_message)?;
        if !meta.is_file() {
            return Err("is not a file".into());
        }
        if meta.len() > self.opts.max_bytes {
            return Err(format!(
                "is {} bytes, over the limit of {}",
                meta.len(),
                self.opts.max_bytes
            ));
        }
        let data = tokio::fs::read(p).await.map_err(io_message)?;
        if data.len() as u64 > self.opts.max_bytes {
            return Err(format!("is over the limit of {} bytes", self.opts.max_bytes));
        }
        Ok(data)
    }

    /// GET with retries: 5xx, 408, 429, timeouts and connection errors are retried with
    /// exponential backoff; other 4xx and oversize answers are not.
    async fn download(&self, url: &str) -> Result<Vec<u8>, String> {
        let mut attempt = 0u32;
        loop {
            match self.download_once(url).await {
                Ok(data) => return Ok(data),
                Err(f) if f.retryable && attempt < self.opts.retries => {
                    let wait = self.opts.backoff.saturating_mul(1u32 << attempt.min(16));
                    tracing::debug!(url, attempt, error = %f.message, ?wait, "retrying download");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(f) if attempt > 0 => return Err(format!("{} (after {} attempts)", f.message, attempt + 1)),
                Err(f) => return Err(f.message),
            }
        }
    }

    async fn download_once(&self, url: &str) -> Result<Vec<u8>, Failure> {
        let max = self.opts.max_bytes;
        let mut resp = self.http.get(url).send().await.map_err(|e| self.failure(e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(Failure {
                message: status.to_string(),
                retryable: status.is_server_error()
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS,
            });
        }
        if let Some(len) = resp.content_length().filter(|&n| n > max) {
            return Err(Failure {
                message: format!("Content-Length {len} is over the limit of {max} bytes"),
                retryable: false,
            });
        }
        let mut body = Vec::with_capacity(resp.content_length().unwrap_or(64 * 1024).min(max) as usize);
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.failure(e))? {
            if (body.len() + chunk.len()) as u64 > max {
                return Err(Failure {
                    message: format!("body is over the limit of {max} bytes"),
                    retryable: false,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn failure(&self, e: reqwest::Error) -> Failure {
        let message = if e.is_timeout() {
            format!("timed out after {}", humantime::format_duration(self.opts.timeout))
        } else if e.is_connect() {
            format!("cannot connect: {}", root_cause(&e))
        } else {
            root_cause(&e)
        };
        Failure {
            message,
            retryable: e.is_timeout() || e.is_connect() || e.is_request() || e.is_body(),
        }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn io_message(e: std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        _ => e.to_string(),
    }
}
