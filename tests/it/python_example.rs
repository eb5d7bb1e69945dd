//! `examples/python/relist_http.py` (standard library only) against the real `relist serve`
//! with a keyed HTTP API: it registers a takedown from a photo file, checks a re-upload of
//! it and prints the verdict, exiting as `relist check` does.
use std::path::Path;
use std::process::Command;

use crate::common::*;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python/relist_http.py");

/// Runs the example against `url` with `key`; (exit code, stdout, stderr).
fn run_example(
    url: &str,
    key: &str,
    takedown: &Path,
    reupload: &Path,
    extra: &[&str],
) -> (Option<i32>, String, String) {
    let out = Command::new("python3")
        .arg(SCRIPT)
        .args(["--url", url, "--takedown-image"])
        .arg(takedown)
        .arg("--check-image")
        .arg(reupload)
        .args(extra)
        .env("RELIST_API_KEY", key)
        .output()
        .expect("run python3");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_python_http_example_registers_checks_and_prints_the_verdict() {
    if Command::new("python3").arg("--version").output().is_err() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but python3 is missing");
        }
        println!("skipped: python3 not found");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // An admin key first, so the daemon runs keyed, as in production.
    let key = {
        let bank = relist_core::bank::Bank::open(&data, relist_core::policy::Thresholds::default(), Default::default())
            .expect("open bank");
        relist_core::auth::Keys::open(bank.db())
            .unwrap()
            .create(relist_core::auth::Role::Admin, None, "python")
            .unwrap()
            .1
    };
    // Pictures made here: the taken-down photo, its mirrored JPEG re-upload, another photo.
    let original = photo(4242, 480, 360);
    let files = [
        ("takedown.png", png(&original)),
        ("reupload.jpg", jpeg(&original.fliph(), 75)),
        ("other.png", png(&photo(4243, 480, 360))),
    ];
    for (name, bytes) in &files {
        std::fs::write(tmp.path().join(name), bytes).unwrap();
    }
    let mut args: Vec<std::ffi::OsString> = ["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir"]
        .map(Into::into)
        .into();
    args.push(data.clone().into());
    let daemon = Daemon::start(args, "relist web page serving");
    let url = format!("http://{}", daemon.addr);
    let (takedown, reupload, other) = (
        tmp.path().join("takedown.png"),
        tmp.path().join("reupload.jpg"),
        tmp.path().join("other.png"),
    );

    let (code, out, err) = run_example(&url, &key, &takedown, &reupload, &[]);
    assert_eq!(code, Some(4), "REUPLOAD exits 4\nstdout: {out}\nstderr: {err}");
    assert!(out.starts_with("REUPLOAD score "), "{out}");
    let id = err
        .strip_prefix("takedown ")
        .and_then(|r| r.strip_suffix(" registered\n"))
        .unwrap_or_else(|| panic!("the takedown is registered: {err}"));
    assert!(
        out.contains(&format!("takedown {id}: shopee/td-1 pdq distance")),
        "{out}"
    );

    // Another photo is clear (the takedown is updated, not added again), as JSON.
    let (code, out, err) = run_example(&url, &key, &takedown, &other, &["--listing-id", "new-2", "--json"]);
    assert_eq!(code, Some(0), "CLEAR exits 0\nstdout: {out}\nstderr: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(v["verdict"], "CLEAR");
    assert_eq!(err, format!("takedown {id} updated\n"));

    // A wrong key: one line naming the error, exit 1.
    let (code, out, err) = run_example(&url, "rk_wrong", &takedown, &reupload, &[]);
    assert_eq!(code, Some(1), "stdout: {out}\nstderr: {err}");
    assert!(err.contains("HTTP 401 UNAUTHENTICATED"), "{err}");
    daemon.terminate();
}
