//! The real `relist` binary: `serve` on 127.0.0.1:0, the client commands with `--json`,
//! kill -9 after an acknowledged takedown, restart on the same data dir, SIGTERM shutdown.
use crate::common::{jpeg, photo, relist_cli, Daemon};
use relist_proto::api::pb;

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

    let d = Daemon::serve(&data, &[]);
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

    let d = Daemon::serve(&data, &[]);
    // `check` exits 4 on REUPLOAD (0 CLEAR, 3 REVIEW), as scripts branch on it.
    let check = d.cli_exit(
        &[
            "check",
            "--marketplace",
            "tokopedia",
            "--listing-id",
            "777",
            "--title",
            "baju bekas import original",
            "--image",
            copy,
        ],
        4,
    );
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
    let out = relist_cli(&["takedown", "get", "987654", "--addr", &d.url()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NotFound"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // SIGTERM: graceful shutdown with a zero exit.
    d.terminate();
}

/// A marketplace's client that gives up (a deadline, a restart, a reset connection) while the
/// daemon is still writing to it must not stop the daemon. The CLI restores SIGPIPE's default
/// action so that `relist ... | head` ends quietly; `serve` must not inherit it, or its first
/// write to a reset socket kills it without a word in its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_hanging_up_do_not_stop_the_daemon() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let mut d = Daemon::serve(&tmp.path().join("data"), &[]);
    for _ in 0..30 {
        // A gRPC client connects (the server sends its settings) and goes away at once.
        drop(d.client().await);
        // A raw HTTP/2 client sends its preface and settings and closes without reading the
        // server's settings: unread data makes the close a reset.
        let mut s = std::net::TcpStream::connect(&d.addr).unwrap();
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        drop(s);
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    if let Some(status) = d.child.try_wait().unwrap() {
        panic!("the daemon stopped ({status}) after clients hung up:\n{}", d.log());
    }
    let mut c = d.client().await;
    let answer = c.get_takedown(pb::GetTakedownRequest { takedown_id: 1 }).await;
    assert_eq!(answer.map(|_| ()).unwrap_err().code(), tonic::Code::NotFound);
}
