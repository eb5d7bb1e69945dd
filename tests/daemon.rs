//! The real `relist` binary: `serve` on 127.0.0.1:0, the client commands with `--json`,
//! kill -9 after an acknowledged takedown, restart on the same data dir, SIGTERM shutdown.
mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{jpeg, photo};

const BIN: &str = env!("CARGO_BIN_EXE_relist");

struct Daemon {
    child: Child,
    addr: String,
}

impl Daemon {
    fn start(data_dir: &Path) -> Daemon {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("RELIST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn relist serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        // Keep draining stderr so the daemon never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("addr=").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("daemon announced its address");
        Daemon { child, addr }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn cli(&self, args: &[&str]) -> serde_json::Value {
        let out = Command::new(BIN)
            .args(args)
            .args(["--addr", &self.url(), "--json"])
            .output()
            .expect("run relist client");
        assert!(
            out.status.success(),
            "relist {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("--json prints JSON")
    }

    fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn cli_round_trip_survives_kill_9_and_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let a = tmp.path().join("a.jpg");
    let copy = tmp.path().join("a-recompressed-and-mirrored.jpg");
    let other = tmp.path().join("other.jpg");
    let img = photo(42, 500, 375);
    std::fs::write(&a, jpeg(&img, 92)).unwrap();
    std::fs::write(&copy, jpeg(&img.fliph(), 60)).unwrap();
    std::fs::write(&other, jpeg(&photo(43, 500, 375), 90)).unwrap();
    let (a, copy, other) = (a.to_str().unwrap(), copy.to_str().unwrap(), other.to_str().unwrap());

    let d = Daemon::start(&data);
    let reg = d.cli(&[
        "takedown",
        "add",
        "--marketplace",
        "shopee",
        "--listing-id",
        "123",
        "--seller-id",
        "s9",
        "--title",
        "BAJU BEKAS IMPORT ORI",
        "--image",
        a,
        "--reason",
        "illegal used clothing import",
    ]);
    let id = reg["takedown_id"].as_u64().expect("takedown_id");
    assert_eq!(reg["updated"], false);
    // Acknowledged, so it must survive an immediate kill -9.
    d.kill9();

    let d = Daemon::start(&data);
    let check = d.cli(&[
        "check",
        "--marketplace",
        "tokopedia",
        "--listing-id",
        "777",
        "--title",
        "baju bekas import original",
        "--image",
        copy,
    ]);
    assert_eq!(check["verdict"], "REUPLOAD", "{check}");
    assert_eq!(check["matches"][0]["takedown_id"].as_u64(), Some(id));
    assert_eq!(check["matches"][0]["images"][0]["kind"], "pdq");
    assert!(check["matches"][0]["images"][0]["distance"].as_u64().unwrap() <= 31);
    assert!(check["matches"][0]["text_distance"].is_u64());
    assert!(check["match_id"].as_u64().unwrap() > 0);

    let clear = d.cli(&[
        "check",
        "--marketplace",
        "tokopedia",
        "--listing-id",
        "778",
        "--title",
        "sepatu lari",
        "--image",
        other,
    ]);
    assert_eq!(clear["verdict"], "CLEAR");
    assert!(clear["match_id"].is_null());

    let td = d.cli(&["takedown", "get", &id.to_string()]);
    assert_eq!(td["reason"], "illegal used clothing import");
    assert_eq!(td["listing"]["seller_id"], "s9");
    assert!(td["removed_at_ms"].is_null());
    let removed = d.cli(&["takedown", "remove", &id.to_string()]);
    assert!(removed["removed_at_ms"].is_i64());
    let after = d.cli(&[
        "check",
        "--marketplace",
        "tokopedia",
        "--listing-id",
        "777",
        "--image",
        copy,
    ]);
    assert_eq!(after["verdict"], "CLEAR");

    // A client error is reported on stderr with the status, and a non-zero exit.
    let out = Command::new(BIN)
        .args(["takedown", "get", "987654", "--addr", &d.url()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NotFound"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // SIGTERM: graceful shutdown with a zero exit.
    let mut d = d;
    let pid = d.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = d.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "daemon did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}
