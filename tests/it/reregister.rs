//! Issue 17: re-adding a takedown without a seller or a reason keeps the stored ones,
//! `check --dry-run` answers without recording, and a data dir another daemon holds is
//! refused with one clear line instead of a raw OS error.
use crate::common::{relist_cli, Daemon};

const PDQ: &str = "e8e8d0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6339e23c33b8c";
const NEAR: &str = "e8e8d0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6339e23c33b8f";

#[test]
fn re_adding_keeps_seller_and_reason_and_a_dry_run_records_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::serve(&tmp.path().join("data"), &[]);
    let add = |extra: &[&str]| {
        let mut args = vec![
            "takedown",
            "add",
            "--marketplace",
            "shopee",
            "--listing-id",
            "9",
            "--title",
            "sepatu bekas import",
            "--pdq",
            PDQ,
        ];
        args.extend_from_slice(extra);
        d.cli(&args)
    };
    add(&["--seller-id", "s9", "--reason", "illegal import"]);
    d.cli(&["takedown", "remove", "1"]);
    // Re-added after an appeal was reversed, by someone who did not repeat seller and reason.
    add(&[]);
    let td = d.cli(&["takedown", "get", "1"]);
    assert_eq!(td["listing"]["seller_id"], "s9", "{td}");
    assert_eq!(td["reason"], "illegal import", "{td}");
    assert!(td["removed_at_ms"].is_null(), "live again: {td}");
    // A new seller or reason given explicitly still replaces the stored one.
    add(&["--seller-id", "s10", "--reason", "counterfeit"]);
    let td = d.cli(&["takedown", "get", "1"]);
    assert_eq!(
        (td["listing"]["seller_id"].as_str(), td["reason"].as_str()),
        (Some("s10"), Some("counterfeit"))
    );

    // A dry run gets the verdict (exit 4) and no match id, and the history stays empty;
    // without --dry-run the same check is recorded.
    let check = |dry: bool| {
        let mut args = vec![
            "check",
            "--marketplace",
            "tokopedia",
            "--listing-id",
            "5",
            "--pdq",
            NEAR,
        ];
        if dry {
            args.push("--dry-run");
        }
        d.cli_exit(&args, 4)
    };
    let out = check(true);
    assert_eq!(out["verdict"], "REUPLOAD", "{out}");
    assert!(out["match_id"].is_null(), "{out}");
    let history = relist_cli(&["history", "--json", "--addr", &d.addr]);
    assert!(history.status.success(), "{}", String::from_utf8_lossy(&history.stderr));
    assert!(
        history.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&history.stdout)
    );
    let out = check(false);
    assert!(out["match_id"].as_u64().is_some_and(|id| id > 0), "{out}");
}

#[test]
fn a_data_dir_in_use_is_refused_with_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let _running = Daemon::serve(&data, &[]);
    let out = relist_cli(&["serve", "--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use by another relist process"), "{stderr}");
    assert!(!stderr.contains("Os {"), "a raw OS error: {stderr}");
}
