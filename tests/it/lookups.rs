//! Looking things up by id or by listing from the command line (issue 17): `match get`, and
//! `takedown list` with its filters and pages, against a real daemon.
use crate::common::{relist_cli, Daemon};

/// The lines of a failed command's stderr that are its error (tracing output aside).
fn error_lines(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("relist:"))
        .map(str::to_string)
        .collect()
}

fn add_takedown(d: &Daemon, marketplace: &str, id: &str, title: &str) -> u64 {
    let r = d.cli(&[
        "takedown",
        "add",
        "--marketplace",
        marketplace,
        "--listing-id",
        id,
        "--title",
        title,
        "--reason",
        "counterfeit",
    ]);
    r["takedown_id"].as_u64().expect("a takedown id")
}

#[test]
fn match_get_shows_one_recorded_match_with_its_reviews() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::serve(&tmp.path().join("data"), &[]);
    let title = "jam tangan rolex submariner replika";
    let td = add_takedown(&d, "shopee", "1", title);
    let checked = d.cli_exit(
        &[
            "check",
            "--marketplace",
            "tokopedia",
            "--listing-id",
            "9",
            "--title",
            title,
        ],
        3,
    );
    let id = checked["match_id"].as_u64().expect("a recorded match");
    d.cli(&[
        "review",
        &id.to_string(),
        "--label",
        "confirmed",
        "--reviewer",
        "ana",
        "--note",
        "same watch",
    ]);

    let m = d.cli(&["match", "get", &id.to_string()]);
    assert_eq!(m["match_id"], id, "{m}");
    assert_eq!(m["verdict"], "REVIEW", "{m}");
    assert_eq!(m["candidate"]["listing_id"], "9", "{m}");
    assert_eq!(m["matches"][0]["takedown_id"], td, "{m}");
    assert_eq!(m["label"], "CONFIRMED", "{m}");
    assert_eq!(m["reviews"][0]["reviewer"], "ana", "{m}");

    // Text output names the match and its review.
    let out = relist_cli(&["match", "get", &id.to_string(), "--addr", &d.addr]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("match {id}: REVIEW")), "{text}");
    assert!(text.contains("by ana"), "{text}");

    // An unknown id: exit 1, one line that says which match.
    let out = relist_cli(&["match", "get", "999999", "--addr", &d.addr, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = error_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("match 999999 not found"), "{lines:?}");
}
