//! API keys and roles against a real daemon on 127.0.0.1:0: who may call what, marketplace
//! scopes, key management over gRPC, the open health service, and the web page's guard.
use crate::common::*;
use relist_core::auth::Role;
use relist_core::fingerprint::DecodeLimits;
use relist_proto::api::pb;
use relist_server::grpc::ServerOptions;
use tonic::Code;

fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

fn reg(l: pb::Listing) -> pb::RegisterTakedownRequest {
    pb::RegisterTakedownRequest {
        listing: Some(l),
        reason: String::new(),
        taken_down_at: None,
    }
}

fn chk(l: pb::Listing) -> pb::CheckListingRequest {
    pb::CheckListingRequest {
        listing: Some(l),
        ..Default::default()
    }
}

fn recent() -> pb::QueryMatchesRequest {
    pb::QueryMatchesRequest::default()
}

#[tokio::test]
async fn roles_and_marketplace_scopes_decide_who_may_call_what() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_full(dir.path(), DecodeLimits::default(), ServerOptions::default(), true).await;

    // Open while no key exists.
    let mut anon = server.client_as(None).await;
    assert_eq!(
        code(
            anon.check_listing(chk(listing("shopee", "x", "", "apa saja", vec![])))
                .await
        ),
        Code::Ok
    );

    let admin = server.create_key(Role::Admin, None);
    let checker = server.create_key(Role::Checker, None);
    let writer = server.create_key(Role::Writer, Some("Shopee"));
    let analyst = server.create_key(Role::Analyst, None);
    let scoped = server.create_key(Role::Analyst, Some("lazada"));
    let (mut admin, mut checker, mut writer, mut analyst, mut scoped) = (
        server.client_as(Some(&admin)).await,
        server.client_as(Some(&checker)).await,
        server.client_as(Some(&writer)).await,
        server.client_as(Some(&analyst)).await,
        server.client_as(Some(&scoped)).await,
    );

    // No key, a malformed or unknown key: UNAUTHENTICATED, with the reason.
    let e = anon
        .check_listing(chk(listing("shopee", "x", "", "apa saja", vec![])))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("API key is required"), "{e:?}");
    let mut unknown = server.client_as(Some("rk_0000")).await;
    assert_eq!(code(unknown.query_matches(recent()).await), Code::Unauthenticated);

    // The health service stays open.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "relist.v1.Relist".into(),
        })
        .await
        .expect("health is open");
    assert_eq!(health.into_inner().status, 1, "SERVING");

    // Writers register, get and remove their own marketplace's takedowns only.
    let pic = |seed| jpeg(&photo(seed, 320, 240), 90);
    let own = writer
        .register_takedown(reg(listing("shopee", "w1", "s1", "tas kulit asli", vec![pic(11)])))
        .await
        .expect("writer registers its marketplace")
        .into_inner()
        .takedown_id;
    let e = writer
        .register_takedown(reg(listing("lazada", "w2", "s1", "tas kulit asli", vec![pic(12)])))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("shopee"), "{e:?}");
    let other = admin
        .register_takedown(reg(listing("lazada", "a1", "s2", "sepatu lari merah", vec![pic(13)])))
        .await
        .expect("admin registers anywhere")
        .into_inner()
        .takedown_id;
    assert_eq!(
        code(writer.get_takedown(pb::GetTakedownRequest { takedown_id: other }).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            writer
                .remove_takedown(pb::RemoveTakedownRequest { takedown_id: other })
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(writer.get_takedown(pb::GetTakedownRequest { takedown_id: own }).await),
        Code::Ok
    );
    assert_eq!(
        code(
            writer
                .check_listing(chk(listing("shopee", "c", "", "tas", vec![])))
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(code(writer.query_matches(recent()).await), Code::PermissionDenied);

    // Checkers check, nothing else.
    let shopee_match = checker
        .check_listing(chk(listing("tokopedia", "c1", "z", "lain", vec![pic(11)])))
        .await
        .expect("checker checks")
        .into_inner();
    assert_eq!(shopee_match.verdict, pb::Verdict::Reupload as i32);
    let lazada_match = checker
        .check_listing(chk(listing("tokopedia", "c2", "z", "lain", vec![pic(13)])))
        .await
        .unwrap()
        .into_inner();
    assert!(lazada_match.match_id > 0);
    assert_eq!(
        code(
            checker
                .register_takedown(reg(listing("shopee", "c3", "", "x", vec![])))
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(code(checker.query_matches(recent()).await), Code::PermissionDenied);
    assert_eq!(
        code(checker.list_keys(pb::ListKeysRequest {}).await),
        Code::PermissionDenied
    );

    // Analysts read and review the history; a scoped one sees its marketplace only.
    let all = analyst.query_matches(recent()).await.unwrap().into_inner().records;
    assert_eq!(all.len(), 2);
    let seen = scoped.query_matches(recent()).await.unwrap().into_inner().records;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].match_id, lazada_match.match_id);
    let asked_other = scoped
        .query_matches(pb::QueryMatchesRequest {
            marketplace: "shopee".into(),
            ..recent()
        })
        .await;
    assert_eq!(code(asked_other), Code::PermissionDenied);
    assert_eq!(
        code(
            scoped
                .get_match(pb::GetMatchRequest {
                    match_id: shopee_match.match_id
                })
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            scoped
                .get_match(pb::GetMatchRequest {
                    match_id: lazada_match.match_id
                })
                .await
        ),
        Code::Ok
    );
    let review = |id| pb::ReviewMatchRequest {
        match_id: id,
        label: pb::ReviewLabel::Confirmed as i32,
        reviewer: "ana".into(),
        note: String::new(),
    };
    assert_eq!(
        code(scoped.review_match(review(shopee_match.match_id)).await),
        Code::PermissionDenied
    );
    assert_eq!(code(scoped.review_match(review(lazada_match.match_id)).await), Code::Ok);
    let stats = pb::MatchStatsRequest {
        from: Some(relist_proto::api::timestamp(relist_core::domain::now_ms() - 86_400_000)),
        to: Some(relist_proto::api::timestamp(relist_core::domain::now_ms() + 1000)),
        top: 5,
    };
    assert_eq!(code(scoped.match_stats(stats).await), Code::PermissionDenied);
    assert_eq!(code(analyst.match_stats(stats).await), Code::Ok);
    assert_eq!(
        code(
            analyst
                .check_listing(chk(listing("shopee", "c", "", "tas", vec![])))
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            analyst
                .create_key(pb::CreateKeyRequest {
                    role: "admin".into(),
                    ..Default::default()
                })
                .await
        ),
        Code::PermissionDenied
    );

    // Admins manage keys over gRPC; a revoked key stops working at once.
    let created = admin
        .create_key(pb::CreateKeyRequest {
            role: "checker".into(),
            marketplace: String::new(),
            name: "upload service".into(),
        })
        .await
        .expect("admin creates keys")
        .into_inner();
    let mut fresh = server.client_as(Some(&created.secret)).await;
    assert_eq!(
        code(
            fresh
                .check_listing(chk(listing("shopee", "f", "", "tas", vec![])))
                .await
        ),
        Code::Ok
    );
    let listed = admin.list_keys(pb::ListKeysRequest {}).await.unwrap().into_inner().keys;
    assert_eq!(listed.len(), 6);
    let key = created.key.unwrap();
    assert!(listed
        .iter()
        .any(|k| k.key_id == key.key_id && k.name == "upload service" && k.role == "checker"));
    let revoked = admin
        .revoke_key(pb::RevokeKeyRequest { key_id: key.key_id })
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoked_at.is_some());
    assert_eq!(
        code(
            fresh
                .check_listing(chk(listing("shopee", "f", "", "tas", vec![])))
                .await
        ),
        Code::Unauthenticated
    );
    let bad_role = admin
        .create_key(pb::CreateKeyRequest {
            role: "root".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_role.code(), Code::InvalidArgument);
    assert!(bad_role.message().starts_with("role:"), "{bad_role:?}");
    let writer_without_marketplace = admin
        .create_key(pb::CreateKeyRequest {
            role: "writer".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(writer_without_marketplace.message().starts_with("marketplace:"));

    // The web page's API needs an unscoped analyst or admin key once keys exist.
    let web = format!("http://{}", server.http.unwrap());
    let http = reqwest::Client::new();
    let get = |key: Option<String>, cookie: bool| {
        let mut r = http.get(format!("{web}/api/matches"));
        if let Some(k) = key {
            r = if cookie {
                r.header("Cookie", format!("theme=dark; relist_key={k}"))
            } else {
                r.bearer_auth(k)
            };
        }
        r.send()
    };
    assert_eq!(get(None, false).await.unwrap().status(), 401);
    let analyst_key = server.create_key(Role::Analyst, None);
    let checker_key = server.create_key(Role::Checker, None);
    let scoped_key = server.create_key(Role::Analyst, Some("lazada"));
    assert_eq!(get(Some(analyst_key.clone()), false).await.unwrap().status(), 200);
    assert_eq!(get(Some(analyst_key.clone()), true).await.unwrap().status(), 200);
    assert_eq!(get(Some(checker_key), false).await.unwrap().status(), 403);
    assert_eq!(get(Some(scoped_key), false).await.unwrap().status(), 403);
    assert_eq!(get(Some("rk_nope".into()), false).await.unwrap().status(), 401);
    let thumb = http
        .get(format!("{web}/api/thumbs/match/{}/0.jpg", lazada_match.match_id))
        .send()
        .await
        .unwrap();
    assert_eq!(thumb.status(), 401, "thumbnails are history too");
    let page = http.get(format!("{web}/")).send().await.unwrap();
    assert_eq!(page.status(), 200, "the page itself loads, to ask for a key");
    server.stop().await;
}
