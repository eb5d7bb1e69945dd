//! The real `relist` binary with API keys: the first admin key made offline with
//! `keys create --data-dir`, key management over gRPC, `--api-key` and `RELIST_API_KEY` on
//! client commands, and the refusal to serve an open daemon beyond loopback.
use std::process::{Command, Output};

use crate::common::Daemon;

const BIN: &str = env!("CARGO_BIN_EXE_relist");

fn relist(args: &[&str], key_env: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("RELIST_API_KEY");
    if let Some(k) = key_env {
        cmd.env("RELIST_API_KEY", k);
    }
    cmd.output().expect("run relist")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "relist failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

#[test]
fn first_admin_key_offline_then_keys_over_grpc_and_clients_with_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_s = data.to_str().unwrap();

    let created = json(&relist(
        &[
            "keys",
            "create",
            "--role",
            "admin",
            "--name",
            "ops",
            "--data-dir",
            data_s,
            "--json",
        ],
        None,
    ));
    let admin = created["secret"].as_str().unwrap().to_string();
    assert!(admin.starts_with("rk_"));
    assert_eq!(created["key"]["role"], "admin");

    let d = Daemon::start(["--listen", "127.0.0.1:0", "--data-dir", data_s], "relist serving");
    let url = format!("http://{}", d.addr);
    let url = url.as_str();
    let check = [
        "check",
        "--marketplace",
        "shopee",
        "--listing-id",
        "1",
        "--title",
        "tas kulit",
        "--addr",
        url,
        "--json",
    ];

    // The store is the daemon's while it runs.
    let locked = relist(&["keys", "list", "--data-dir", data_s], None);
    assert!(!locked.status.success());
    assert!(String::from_utf8_lossy(&locked.stderr).contains("is the daemon running"));

    let denied = relist(&check, None);
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("Unauthenticated"));

    // RELIST_API_KEY is the fallback of --api-key.
    let checker = json(&relist(
        &["keys", "create", "--role", "checker", "--addr", url, "--json"],
        Some(&admin),
    ));
    let checker_secret = checker["secret"].as_str().unwrap();
    let verdict = json(&relist(&[&check[..], &["--api-key", checker_secret]].concat(), None));
    assert_eq!(verdict["verdict"], "CLEAR");
    let verdict = json(&relist(&check, Some(checker_secret)));
    assert_eq!(verdict["verdict"], "CLEAR");
    let as_checker = relist(&["stats", "--addr", url, "--json"], Some(checker_secret));
    assert!(String::from_utf8_lossy(&as_checker.stderr).contains("PermissionDenied"));

    let keys = json(&relist(&["keys", "list", "--addr", url, "--json"], Some(&admin)));
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|k| k.get("secret").is_none()));
    let id = checker["key"]["id"].as_u64().unwrap().to_string();
    json(&relist(&["keys", "revoke", &id, "--addr", url, "--json"], Some(&admin)));
    let revoked = relist(&check, Some(checker_secret));
    assert!(String::from_utf8_lossy(&revoked.stderr).contains("Unauthenticated"));
    drop(d);

    // Offline again: the revocation is on disk.
    let keys = json(&relist(&["keys", "list", "--data-dir", data_s, "--json"], None));
    assert!(keys[1]["revoked_at_ms"].is_i64());
}

#[test]
fn an_open_daemon_refuses_non_loopback_addresses() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // The refusal comes before binding, so nothing listens beyond loopback.
    let out = Command::new(BIN)
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run relist serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to serve") && err.contains("--insecure"), "{err}");
}
