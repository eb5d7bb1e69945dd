//! `relist backup` against a serving daemon and `relist restore` into a new data dir: the
//! takedowns match again, history and keys come back, and new ids never reuse old ones.
use crate::common::*;
use relist_core::auth::{Keys, Role};
use relist_proto::api::pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_serving_and_restore_into_a_new_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("data")).await;
    let admin = server.create_key(Role::Admin, None);
    let checker = server.create_key(Role::Checker, None);
    let mut c = server.client_as(Some(&admin)).await;
    let pics: Vec<_> = (0..3).map(|s| jpeg(&photo(40 + s, 320, 240), 90)).collect();
    let mut ids = Vec::new();
    for (i, p) in pics.iter().enumerate() {
        let r = c
            .register_takedown(pb::RegisterTakedownRequest {
                listing: Some(listing("shopee", &format!("b{i}"), "s", "jam tangan", vec![p.clone()])),
                reason: "fake".into(),
                taken_down_at: None,
            })
            .await
            .unwrap()
            .into_inner();
        ids.push(r.takedown_id);
    }
    let matched = c
        .check_listing(pb::CheckListingRequest {
            listing: Some(listing("lazada", "x", "t", "lain", vec![pics[0].clone()])),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(matched.match_id > 0);

    let url = format!("http://{}", server.addr);
    let file = tmp.path().join("relist.backup");
    let file_s = file.to_str().unwrap();
    let denied = relist_cli(&["backup", file_s, "--addr", &url, "--api-key", &checker]);
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("PermissionDenied"));
    assert!(!file.exists());

    let out = relist_cli(&["backup", file_s, "--addr", &url, "--api-key", &admin, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["header"]["schema_version"], relist_core::store::SCHEMA_VERSION);
    assert!(file.metadata().unwrap().len() > 1000);
    // The daemon still serves after the backup.
    c.check_listing(pb::CheckListingRequest {
        listing: Some(listing("lazada", "y", "t", "lain lagi", vec![])),
        ..Default::default()
    })
    .await
    .expect("serving after the backup");
    server.stop().await;

    let restored = tmp.path().join("restored");
    let restored_s = restored.to_str().unwrap();
    let out = relist_cli(&["restore", file_s, "--data-dir", restored_s, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let again = relist_cli(&["restore", file_s, "--data-dir", restored_s]);
    assert!(!again.status.success(), "never over an existing store");
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    // Serve the restored store: everything is there, old takedowns match, a new one gets a
    // fresh id.
    let server = TestServer::start(&restored).await;
    let bank = &server.bank;
    for id in &ids {
        assert_eq!(bank.get(*id).unwrap().reason, "fake");
    }
    let view = bank.get_match(matched.match_id).unwrap();
    assert_eq!(view.record.matches[0].takedown_id, ids[0]);
    let keys = Keys::open(bank.db()).unwrap();
    assert_eq!(keys.list().unwrap().len(), 2);
    assert!(matches!(
        keys.authenticate_secret(&admin).unwrap(),
        relist_core::auth::Caller::Key(k) if k.role == Role::Admin
    ));
    let mut c = server.client_as(Some(&admin)).await;
    let r = c
        .check_listing(pb::CheckListingRequest {
            listing: Some(listing("lazada", "z", "t", "lain", vec![pics[2].clone()])),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.matches[0].takedown_id, ids[2]);
    assert!(r.match_id > matched.match_id);
    let fresh = c
        .register_takedown(pb::RegisterTakedownRequest {
            listing: Some(listing(
                "shopee",
                "new",
                "s",
                "tas",
                vec![jpeg(&photo(60, 320, 240), 90)],
            )),
            reason: String::new(),
            taken_down_at: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ids.iter().all(|id| fresh.takedown_id > *id));
    server.stop().await;
}
