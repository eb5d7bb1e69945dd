//! What the benches share: the release daemon they run against, resident memory, and the
//! 500x375 test photos.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use relist_proto::api::pb;

pub type Client = pb::relist_client::RelistClient<tonic::transport::Channel>;

/// Resident memory of a process, in MiB (current, peak).
pub fn rss_mib(pid: &str) -> (f64, f64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// `relist serve` (the binary under test) on a free loopback port; killed when dropped.
pub struct Daemon {
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub addr: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_daemon(data: &Path) -> Daemon {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_relist"))
        .args(["serve", "--data-dir", &data.display().to_string(), "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .env("RELIST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn relist serve");
    Daemon {
        child,
        addr: format!("http://127.0.0.1:{port}"),
    }
}

pub async fn connect(addr: &str) -> Client {
    for _ in 0..100 {
        if let Ok(c) = Client::connect(addr.to_string()).await {
            return c.max_encoding_message_size(64 << 20);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("daemon at {addr} did not come up");
}

/// 500x375 JPEGs: the dev photos resized, or generated ones.
pub fn photos(n: usize) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/photos-dev");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    let encode = |img: image::DynamicImage| {
        let img = img.resize_exact(500, 375, image::imageops::FilterType::Triangle);
        let mut out = Vec::new();
        let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85);
        img.to_rgb8().write_with_encoder(enc).expect("encode");
        out
    };
    let from_disk: Vec<Vec<u8>> = files
        .iter()
        .take(n)
        .filter_map(|p| image::open(p).ok())
        .map(encode)
        .collect();
    if !from_disk.is_empty() {
        println!("photos: {} from {}", from_disk.len(), dir.display());
        return from_disk;
    }
    println!("photos: {n} generated ({} not found)", dir.display());
    (0..n as u64)
        .map(|seed| {
            let img = image::RgbImage::from_fn(500, 375, |x, y| {
                let v = ((x as u64 * 7 + y as u64 * 13 + seed * 31) ^ (x as u64 * y as u64 / (seed + 3))) as u8;
                image::Rgb([v, v.wrapping_mul(3), v.wrapping_add((seed * 17) as u8)])
            });
            encode(image::DynamicImage::ImageRgb8(img))
        })
        .collect()
}
