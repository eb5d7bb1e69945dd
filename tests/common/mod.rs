//! Shared test support: a real relist server on 127.0.0.1:0 over a temp sled dir, real
//! images generated and encoded here, and the generated tonic client.
#![allow(dead_code)]

pub mod pg;

use std::io::Cursor;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use relist_core::auth::{Keys, Role};
use relist_core::bank::Bank;
use relist_core::fingerprint::DecodeLimits;
use relist_core::policy::Thresholds;
use relist_proto::api::pb;
use relist_proto::transport::Connection;
use relist_server::grpc::ServerOptions;
use tokio::sync::oneshot;

pub type Client = pb::relist_client::RelistClient<tonic::transport::Channel>;

/// An in-process daemon: the real tonic server on a real loopback socket.
pub struct TestServer {
    pub addr: SocketAddr,
    pub bank: Arc<Bank>,
    /// The web page and `/metrics`, when started with [`TestServer::start_full`].
    pub http: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(dir: &Path) -> TestServer {
        Self::start_with(dir, DecodeLimits::default()).await
    }

    pub async fn start_with(dir: &Path, limits: DecodeLimits) -> TestServer {
        Self::start_full(dir, limits, ServerOptions::default(), false).await
    }

    /// The daemon with `options` (limits, TLS), and with `http` the web page and `/metrics`
    /// sharing its counters, as `serve --http` runs them.
    pub async fn start_full(dir: &Path, limits: DecodeLimits, mut options: ServerOptions, http: bool) -> TestServer {
        let bank = Arc::new(Bank::open(dir, Thresholds::default(), limits).expect("open bank"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let (web_tx, web_rx) = tokio::sync::watch::channel(false);
        let metrics = options.metrics.get_or_insert_with(Default::default).clone();
        let http = if http {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind web");
            let web_addr = l.local_addr().expect("web addr");
            let router = relist_server::web::router_with(bank.clone(), metrics);
            let mut rx = web_rx.clone();
            tokio::spawn(async move {
                relist_server::web::serve_with(router, l, async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await
                .expect("web serve");
            });
            Some(web_addr)
        } else {
            None
        };
        let b = bank.clone();
        let task = tokio::spawn(async move {
            relist_server::grpc::serve_with(b, listener, options, async {
                let _ = rx.await;
            })
            .await
            .expect("serve");
            let _ = web_tx.send(true);
        });
        TestServer {
            addr,
            bank,
            http,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// A client sending `key` (and using `conn`'s TLS settings, if any).
    pub async fn client_as(&self, key: Option<&str>) -> KeyedClient {
        let conn = Connection {
            api_key: key.map(str::to_string),
            ..Default::default()
        };
        connect_with(&format!("http://{}", self.addr), &conn).await
    }

    /// Creates a key directly in the store, as `relist keys create --data-dir` does.
    pub fn create_key(&self, role: Role, marketplace: Option<&str>) -> String {
        Keys::open(self.bank.db())
            .expect("keys")
            .create(role, marketplace, "test")
            .expect("create key")
            .1
    }

    pub async fn client(&self) -> Client {
        connect(self.addr).await
    }

    /// Graceful stop; the sled store is closed when the last handle drops.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("server task");
        }
    }
}

/// A client with an API key interceptor and optional TLS.
pub type KeyedClient = relist_proto::transport::Client;

pub async fn connect_with(addr: &str, conn: &Connection) -> KeyedClient {
    conn.connect(addr, 64 << 20).await.expect("connect")
}

pub async fn connect(addr: SocketAddr) -> Client {
    connect_within(addr, 50)
        .await
        .unwrap_or_else(|| panic!("cannot connect to {addr}"))
}

/// A client of `addr` within `tries` tries 100 ms apart (bounded: the server is already
/// listening, so a few tries at most).
async fn connect_within(addr: SocketAddr, tries: usize) -> Option<Client> {
    for _ in 0..tries {
        if let Ok(c) = Client::connect(format!("http://{addr}")).await {
            return Some(
                c.max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20),
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    None
}

/// A deterministic photo-like image: smooth multi-scale noise plus coloured shapes, distinct
/// per seed, with enough structure for a high PDQ quality.
pub fn photo(seed: u64, w: u32, h: u32) -> DynamicImage {
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut waves = Vec::new();
    for _ in 0..6 {
        let fx = (next() % 1000) as f32 / 1000.0 * 0.05 + 0.003;
        let fy = (next() % 1000) as f32 / 1000.0 * 0.05 + 0.003;
        let ph = (next() % 628) as f32 / 100.0;
        let ch = (next() % 3) as usize;
        waves.push((fx, fy, ph, ch));
    }
    let mut shapes = Vec::new();
    for _ in 0..8 {
        let cx = (next() % u64::from(w)) as f32;
        let cy = (next() % u64::from(h)) as f32;
        let r = (next() % u64::from(w / 4).max(1)) as f32 + 10.0;
        let col = [(next() % 256) as f32, (next() % 256) as f32, (next() % 256) as f32];
        shapes.push((cx, cy, r, col));
    }
    let img = RgbImage::from_fn(w, h, |x, y| {
        let (xf, yf) = (x as f32, y as f32);
        let mut c = [110.0f32, 120.0, 130.0];
        for &(fx, fy, ph, ch) in &waves {
            c[ch] += 60.0 * (xf * fx + yf * fy + ph).sin();
        }
        for &(cx, cy, r, col) in &shapes {
            if (xf - cx).powi(2) + (yf - cy).powi(2) < r * r {
                c = [(c[0] + col[0]) / 2.0, (c[1] + col[1]) / 2.0, (c[2] + col[2]) / 2.0];
            }
        }
        Rgb(c.map(|v| v.clamp(0.0, 255.0) as u8))
    });
    DynamicImage::ImageRgb8(img)
}

pub fn jpeg(img: &DynamicImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
    img.to_rgb8().write_with_encoder(enc).expect("encode jpeg");
    out
}

pub fn png(img: &DynamicImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).expect("encode png");
    out.into_inner()
}

pub fn listing(marketplace: &str, id: &str, seller: &str, title: &str, images: Vec<Vec<u8>>) -> pb::Listing {
    pb::Listing {
        listing_id: id.into(),
        marketplace: marketplace.into(),
        seller_id: seller.into(),
        title: title.into(),
        description: String::new(),
        images: images
            .into_iter()
            .map(|data| pb::Image {
                data,
                ..Default::default()
            })
            .collect(),
    }
}

pub async fn register(c: &mut Client, l: pb::Listing, reason: &str) -> pb::RegisterTakedownResponse {
    c.register_takedown(pb::RegisterTakedownRequest {
        listing: Some(l),
        reason: reason.into(),
        taken_down_at: None,
    })
    .await
    .expect("register")
    .into_inner()
}

pub async fn check(c: &mut Client, l: pb::Listing) -> pb::CheckListingResponse {
    c.check_listing(pb::CheckListingRequest {
        listing: Some(l),
        ..Default::default()
    })
    .await
    .expect("check")
    .into_inner()
}

pub fn verdict(r: &pb::CheckListingResponse) -> pb::Verdict {
    pb::Verdict::try_from(r.verdict).expect("known verdict")
}

/// Where the shared evaluation data lives, if this checkout has it beside it.
pub fn shared_data() -> Option<std::path::PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    if p.is_dir() {
        Some(p)
    } else {
        println!("skipped: ../shared/data not found");
        None
    }
}

/// The real `relist serve` in a child process, killed on drop; every log line is kept.
pub struct Daemon {
    pub child: std::process::Child,
    /// The address logged on the first stderr line containing the marker.
    pub addr: String,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    /// Runs `relist serve ARGS` and waits (bounded) for a log line containing `marker` with
    /// an `addr=` field; stderr is drained for the daemon's whole life.
    pub fn start<I, S>(args: I, marker: &str) -> Daemon
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_relist"))
            .arg("serve")
            .args(args)
            .env("RELIST_LOG", "info")
            .env_remove("RELIST_API_KEY")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn relist serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let marker = marker.to_string();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains(&marker) {
                    if let Some(rest) = line.split("addr=").nth(1) {
                        let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                    }
                }
                kept.lock().unwrap().push(line);
            }
        });
        let mut daemon = Daemon {
            child,
            addr: String::new(),
            lines,
            reader: Some(reader),
        };
        daemon.addr = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the daemon logged no address:\n{}", daemon.log()));
        daemon
    }

    /// Every log line so far.
    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// SIGTERM, then waits (bounded) for a zero exit; returns the whole log.
    pub fn terminate(mut self) -> String {
        let pid = self.child.id().to_string();
        assert!(std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(std::time::Instant::now() < deadline, "daemon did not stop on SIGTERM");
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        let log = self.log();
        assert!(status.success(), "{status:?}\n{log}");
        log
    }

    /// SIGKILL.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// The daemon's address as a client's `--addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A gRPC client of this daemon; on failure, prints the daemon's log, so a crash is not
    /// reported as a network problem.
    pub async fn client(&self) -> Client {
        let addr: SocketAddr = self.addr.parse().expect("daemon address");
        connect_within(addr, 100)
            .await
            .unwrap_or_else(|| panic!("cannot connect to the daemon at {addr}; its log:\n{}", self.log()))
    }

    /// Runs a client command against this daemon with `--json`; asserts success and returns
    /// the printed JSON.
    pub fn cli(&self, args: &[&str]) -> serde_json::Value {
        self.cli_exit(args, 0)
    }

    /// [`Daemon::cli`] for a command that exits with `code` when it works (`check`'s verdicts).
    pub fn cli_exit(&self, args: &[&str], code: i32) -> serde_json::Value {
        let url = self.url();
        let mut all = args.to_vec();
        all.extend(["--addr", &url, "--json"]);
        let out = relist_cli(&all);
        assert_eq!(
            out.status.code(),
            Some(code),
            "relist {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("--json prints JSON")
    }

    /// `relist serve` on 127.0.0.1:0 over `data`, with `extra` flags.
    pub fn serve(data: &Path, extra: &[&str]) -> Daemon {
        let mut args: Vec<std::ffi::OsString> = vec!["--listen".into(), "127.0.0.1:0".into(), "--data-dir".into()];
        args.push(data.into());
        args.extend(extra.iter().map(Into::into));
        Daemon::start(args, "relist serving")
    }
}

/// Runs the `relist` binary with `args` (no API key from the environment).
pub fn relist_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_relist"))
        .args(args)
        .env_remove("RELIST_API_KEY")
        .output()
        .expect("run relist")
}

/// CRC-32 (IEEE), as PNG chunks carry it: for hand-made PNG headers.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
