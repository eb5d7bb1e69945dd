//! Looking things up by id or by listing from the command line (issue 17): `match get`, and
//! `takedown list` (the ListTakedowns RPC) with its filters and pages, against a real daemon.
use crate::common::{relist_cli, Daemon};
use relist_proto::api::pb;

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

/// `takedown list --json` as parsed JSON Lines; asserts success.
fn list(d: &Daemon, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["takedown", "list", "--addr", &d.addr, "--json"];
    all.extend(args);
    let out = relist_cli(&all);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::str::from_utf8(&out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn ids(rows: &[serde_json::Value]) -> Vec<u64> {
    rows.iter().map(|r| r["id"].as_u64().expect("an id")).collect()
}

#[tokio::test]
async fn takedown_list_filters_by_marketplace_and_listing_and_pages() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::serve(&tmp.path().join("data"), &[]);
    let a = add_takedown(&d, "shopee", "a-1", "sepatu nike air jordan");
    let b = add_takedown(&d, "tokopedia", "b-1", "tas gucci marmont");
    let c = add_takedown(&d, "Shopee", "a-2", "jam casio g-shock");
    d.cli(&["takedown", "remove", &b.to_string()]);

    // Live ones, in id order; removed ones only when asked.
    assert_eq!(ids(&list(&d, &[])), vec![a, c]);
    assert_eq!(ids(&list(&d, &["--include-removed"])), vec![a, b, c]);
    // One marketplace's, named in any case.
    assert_eq!(ids(&list(&d, &["--marketplace", "SHOPEE"])), vec![a, c]);
    assert_eq!(ids(&list(&d, &["--marketplace", "tokopedia"])), Vec::<u64>::new());
    // Find by marketplace + listing id.
    let found = list(&d, &["--marketplace", "shopee", "--listing-id", "a-2"]);
    assert_eq!(ids(&found), vec![c]);
    assert_eq!(found[0]["listing"]["listing_id"], "a-2", "{found:?}");
    assert_eq!(
        ids(&list(
            &d,
            &["--marketplace", "tokopedia", "--listing-id", "b-1", "--include-removed"]
        )),
        vec![b]
    );
    assert!(list(&d, &["--marketplace", "shopee", "--listing-id", "nope"]).is_empty());
    // --limit, and pages of one still reach every takedown (the command follows the tokens).
    assert_eq!(ids(&list(&d, &["--limit", "1"])), vec![a]);
    let mut c1 = d.client().await;
    let mut token = String::new();
    let mut seen = Vec::new();
    loop {
        let page = c1
            .list_takedowns(pb::ListTakedownsRequest {
                include_removed: true,
                page_size: 1,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("a page")
            .into_inner();
        seen.extend(page.takedowns.iter().map(|t| t.takedown_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, vec![a, b, c]);

    // Bad input names the field.
    let bad = [
        (
            pb::ListTakedownsRequest {
                page_size: 501,
                ..Default::default()
            },
            "page_size",
        ),
        (
            pb::ListTakedownsRequest {
                listing_id: "a-1".into(),
                ..Default::default()
            },
            "listing_id",
        ),
        (
            pb::ListTakedownsRequest {
                page_token: "zzz".into(),
                ..Default::default()
            },
            "page_token",
        ),
    ];
    for (req, field) in bad {
        let e = c1.list_takedowns(req).await.expect_err("refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().starts_with(field), "{e:?}");
    }
}
