//! Hash exchange through the real binary: `relist export` from one daemon, `relist import`
//! into another, and the imported hashes catch the original photos there.
use crate::common;

use std::path::Path;

use crate::common::{jpeg, listing, photo, Daemon};
use relist_proto::api::pb;

fn serve(data: &Path) -> Daemon {
    Daemon::serve(data, &[])
}

/// Runs the client; returns (success, stdout as JSON when it is, stderr).
fn relist(args: &[&str]) -> (bool, serde_json::Value, String) {
    let out = common::relist_cli(args);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.success(),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_into_another_daemon_matches_the_photos() {
    let tmp = tempfile::tempdir().unwrap();
    let a = serve(&tmp.path().join("a"));
    let mut ca = a.client().await;
    let photos: Vec<Vec<u8>> = (0..3).map(|s| jpeg(&photo(500 + s, 320, 240), 90)).collect();
    for (i, p) in photos.iter().enumerate() {
        common::register(
            &mut ca,
            listing("shopa", &format!("l{i}"), "s", "a watch", vec![p.clone()]),
            "counterfeit",
        )
        .await;
    }
    // A removed takedown is not exported.
    let gone = common::register(
        &mut ca,
        listing("shopa", "gone", "s", "", vec![jpeg(&photo(999, 320, 240), 90)]),
        "x",
    )
    .await;
    ca.remove_takedown(pb::RemoveTakedownRequest {
        takedown_id: gone.takedown_id,
    })
    .await
    .unwrap();

    let hex = tmp.path().join("hashes.txt");
    let csv = tmp.path().join("hashes.csv");
    let (ok, summary, err) = relist(&[
        "export",
        "--format",
        "hex",
        "--out",
        hex.to_str().unwrap(),
        "--addr",
        &a.url(),
        "--json",
    ]);
    assert!(ok, "{err}");
    assert_eq!(summary["hashes"], 3);
    let lines: Vec<String> = std::fs::read_to_string(&hex)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines
        .iter()
        .all(|l| l.len() == 64 && l.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))));
    let (ok, _, err) = relist(&[
        "export",
        "--format",
        "te-csv",
        "--out",
        csv.to_str().unwrap(),
        "--addr",
        &a.url(),
    ]);
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(
        text.starts_with("signal_type,signal_str,collab,category,tags\n"),
        "{text}"
    );
    assert_eq!(text.lines().filter(|l| l.starts_with("pdq,")).count(), 3);

    let b = serve(&tmp.path().join("b"));
    // The format comes from the file name when --format is absent (.csv: te-csv), as in batch.
    let import = |file: &Path, format: &str| {
        let mut args = vec!["import", file.to_str().unwrap()];
        if !format.is_empty() {
            args.extend(["--format", format]);
        }
        relist(
            &[
                &args[..],
                &[
                    "--marketplace",
                    "shared",
                    "--reason",
                    "shared by shopa",
                    "--addr",
                    &b.url(),
                    "--json",
                ],
            ]
            .concat(),
        )
    };
    let (ok, s, err) = import(&csv, "");
    assert!(ok, "{err}");
    assert_eq!(
        (s["imported"].as_u64(), s["skipped"].as_u64()),
        (Some(3), Some(0)),
        "{s}"
    );
    // Again, and in the other format: the same takedowns, nothing new.
    let (ok, s, err) = import(&hex, "hex");
    assert!(ok, "{err}");
    assert_eq!(
        (s["imported"].as_u64(), s["already_present"].as_u64()),
        (Some(0), Some(3)),
        "{s}"
    );

    let mut cb = b.client().await;
    for (i, p) in photos.iter().enumerate() {
        let r = common::check(&mut cb, listing("shopb", &format!("up{i}"), "x", "", vec![p.clone()])).await;
        assert_eq!(common::verdict(&r), pb::Verdict::Reupload, "photo {i} after import");
        assert_eq!(r.matches[0].marketplace, "shared");
        assert!(r.matches[0].listing_id.starts_with("pdq-"));
    }
    let r = common::check(
        &mut cb,
        listing("shopb", "other", "x", "", vec![jpeg(&photo(999, 320, 240), 90)]),
    )
    .await;
    assert_eq!(
        common::verdict(&r),
        pb::Verdict::Clear,
        "the removed takedown was not exported"
    );
}

#[test]
fn import_reports_bad_lines_with_their_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let d = serve(&tmp.path().join("d"));
    let good = "0f".repeat(32);
    let list = tmp.path().join("list.txt");
    std::fs::write(
        &list,
        format!(
            "# comment\n{good}\nxyz\n\n{}\n{good}\n{}zz\n",
            "AB".repeat(32),
            "1".repeat(62)
        ),
    )
    .unwrap();
    let (ok, s, _) = relist(&[
        "import",
        list.to_str().unwrap(),
        "--marketplace",
        "shared",
        "--addr",
        &format!("http://{}", d.addr),
        "--json",
    ]);
    assert!(!ok, "bad lines make the exit status non-zero");
    assert_eq!(s["imported"], 2, "{s}");
    assert_eq!(s["duplicates"], 1, "{s}");
    let lines: Vec<u64> = s["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![3, 7], "{s}");
}

#[tokio::test]
async fn export_is_for_writers_of_their_own_marketplace() {
    use futures::StreamExt;
    use relist_core::auth::Role;
    let tmp = tempfile::tempdir().unwrap();
    let server = common::TestServer::start(tmp.path()).await;
    let admin = server.create_key(Role::Admin, None);
    let writer = server.create_key(Role::Writer, Some("shopa"));
    let checker = server.create_key(Role::Checker, None);
    let mut c = server.client_as(Some(&admin)).await;
    for (m, b) in [("shopa", 1u8), ("shopb", 2)] {
        c.register_takedown(relist::cmd::exchange::import_request(
            &relist_core::fingerprint::pdq::PdqHash([b; 32]),
            m,
            "r",
        ))
        .await
        .unwrap();
    }
    async fn export(c: &mut relist_proto::transport::Client) -> Result<Vec<String>, tonic::Status> {
        let mut s = c.export_hashes(pb::ExportHashesRequest {}).await?.into_inner();
        let mut out = Vec::new();
        while let Some(h) = s.next().await {
            out.push(h?.marketplace);
        }
        Ok(out)
    }
    assert_eq!(export(&mut c).await.unwrap(), vec!["shopa", "shopb"]);
    let mut w = server.client_as(Some(&writer)).await;
    assert_eq!(export(&mut w).await.unwrap(), vec!["shopa"]);
    let mut k = server.client_as(Some(&checker)).await;
    assert_eq!(export(&mut k).await.unwrap_err().code(), tonic::Code::PermissionDenied);
    let mut anon = server.client_as(None).await;
    assert_eq!(
        export(&mut anon).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    server.stop().await;
}
