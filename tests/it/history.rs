//! Match history through gRPC and the CLI: queries, pagination, reviews with suppression,
//! statistics, and clear errors for bad queries.
use crate::common::*;
use relist_proto::api::pb;
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_relist");

async fn query(c: &mut Client, req: pb::QueryMatchesRequest) -> Vec<pb::MatchRecord> {
    let mut req = req;
    let mut out = Vec::new();
    for _ in 0..1000 {
        let page = c.query_matches(req.clone()).await.expect("query").into_inner();
        out.extend(page.records);
        if page.next_page_token.is_empty() {
            return out;
        }
        req.page_token = page.next_page_token;
    }
    panic!("pagination did not end");
}

// Multi-threaded: the test blocks on the CLI binary while the server answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysts_query_review_and_count_matches() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut c = server.client().await;
    let photos: Vec<_> = (0..3u64).map(|s| photo(300 + s, 400, 300)).collect();
    let mut takedowns = Vec::new();
    for (i, p) in photos.iter().enumerate() {
        let reg = register(
            &mut c,
            listing(
                "shopee",
                &format!("t{i}"),
                &format!("orig{i}"),
                "jaket kulit",
                vec![jpeg(p, 90)],
            ),
            "",
        )
        .await;
        takedowns.push(reg.takedown_id);
    }
    // 12 upload checks: candidate i re-lists photo i % 3 from seller "rep" or "other".
    let mut match_ids = Vec::new();
    for i in 0..12usize {
        let seller = if i % 2 == 0 { "rep" } else { "other" };
        let r = check(
            &mut c,
            listing(
                "tokopedia",
                &format!("c{i}"),
                seller,
                "",
                vec![jpeg(&photos[i % 3].fliph(), 80)],
            ),
        )
        .await;
        assert_eq!(verdict(&r), pb::Verdict::Reupload);
        match_ids.push(r.match_id);
    }
    // Thumbnails are kept for people to look at: the takedown's and the candidate's.
    use relist_core::bank::ThumbnailOf;
    for of in [ThumbnailOf::Takedown(takedowns[0]), ThumbnailOf::Match(match_ids[0])] {
        let jpeg = server.bank.thumbnail(of, 0).unwrap().expect("thumbnail kept");
        let t = image::load_from_memory(&jpeg).unwrap();
        assert_eq!((t.width(), t.height()), (160, 120), "{of:?}");
    }
    assert!(server
        .bank
        .thumbnail(ThumbnailOf::Match(match_ids[0]), 1)
        .unwrap()
        .is_none());
    // One batch check.
    let mut s = c
        .check_listings(tokio_stream::iter(vec![pb::CheckListingRequest {
            listing: Some(listing("lazada", "b1", "rep", "", vec![jpeg(&photos[0], 85)])),
            ..Default::default()
        }]))
        .await
        .unwrap()
        .into_inner();
    let batch_item = s.message().await.unwrap().unwrap();
    let Some(pb::check_listings_response::Outcome::Result(batch)) = batch_item.outcome else {
        panic!()
    };

    // Everything, newest first, across pages of 5.
    let all = query(
        &mut c,
        pb::QueryMatchesRequest {
            page_size: 5,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(all.len(), 13);
    assert!(all.windows(2).all(|w| w[0].match_id > w[1].match_id), "newest first");
    assert_eq!(all[0].match_id, batch.match_id);
    // By takedown, seller (candidate's and taken-down listing's), source, marketplace.
    let by_td = query(
        &mut c,
        pb::QueryMatchesRequest {
            takedown_id: takedowns[1],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_td.len(), 4);
    assert!(by_td.iter().all(|r| r.matches[0].takedown_id == takedowns[1]));
    let rep = query(
        &mut c,
        pb::QueryMatchesRequest {
            seller_id: "rep".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(rep.len(), 7);
    let orig0 = query(
        &mut c,
        pb::QueryMatchesRequest {
            seller_id: "orig0".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(orig0.len(), 5, "4 uploads and the batch check re-list orig0's takedown");
    let batch_only = query(
        &mut c,
        pb::QueryMatchesRequest {
            source: pb::Source::Batch as i32,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        batch_only.iter().map(|r| r.match_id).collect::<Vec<_>>(),
        vec![batch.match_id]
    );
    let lazada = query(
        &mut c,
        pb::QueryMatchesRequest {
            marketplace: "LAZADA".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(lazada.len(), 1);
    // Time range: a window in the future is empty; one around now has everything.
    let now = relist_core::domain::now_ms();
    let future = query(
        &mut c,
        pb::QueryMatchesRequest {
            from: Some(relist_proto::api::timestamp(now + 3_600_000)),
            ..Default::default()
        },
    )
    .await;
    assert!(future.is_empty());
    let window = query(
        &mut c,
        pb::QueryMatchesRequest {
            from: Some(relist_proto::api::timestamp(now - 3_600_000)),
            to: Some(relist_proto::api::timestamp(now + 1000)),
            verdict: pb::Verdict::Reupload as i32,
            min_score: 0.5,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(window.len(), 13);

    // A false positive stops that evidence from flagging that listing again, and can be undone.
    let fp = match_ids[0]; // c0 re-listing photo 0
    let reviewed = c
        .review_match(pb::ReviewMatchRequest {
            match_id: fp,
            label: pb::ReviewLabel::FalsePositive as i32,
            reviewer: "ana@association".into(),
            note: "different jacket".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reviewed.label, pb::ReviewLabel::FalsePositive as i32);
    let again = check(
        &mut c,
        listing("tokopedia", "c0", "rep", "", vec![jpeg(&photos[0].fliph(), 80)]),
    )
    .await;
    assert_eq!(verdict(&again), pb::Verdict::Clear, "suppressed for c0: {again:?}");
    let other = check(
        &mut c,
        listing("tokopedia", "c99", "rep", "", vec![jpeg(&photos[0].fliph(), 80)]),
    )
    .await;
    assert_eq!(verdict(&other), pb::Verdict::Reupload, "other listings still match");
    let fps = query(
        &mut c,
        pb::QueryMatchesRequest {
            label: pb::ReviewLabel::FalsePositive as i32,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(fps.iter().map(|r| r.match_id).collect::<Vec<_>>(), vec![fp]);
    c.review_match(pb::ReviewMatchRequest {
        match_id: fp,
        label: pb::ReviewLabel::Confirmed as i32,
        reviewer: "budi@ministry".into(),
        note: "it is the same".into(),
    })
    .await
    .unwrap();
    let undone = check(
        &mut c,
        listing("tokopedia", "c0", "rep", "", vec![jpeg(&photos[0].fliph(), 80)]),
    )
    .await;
    assert_eq!(verdict(&undone), pb::Verdict::Reupload, "undone");
    let got = c
        .get_match(pb::GetMatchRequest { match_id: fp })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.label, pb::ReviewLabel::Confirmed as i32);
    assert_eq!(got.reviews.len(), 2, "every label is kept");
    assert_eq!(got.reviews[0].reviewer, "ana@association");

    let stats = c
        .match_stats(pb::MatchStatsRequest {
            from: Some(relist_proto::api::timestamp(now - 86_400_000)),
            to: Some(relist_proto::api::timestamp(now + 86_400_000)),
            top: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.total, 15);
    assert_eq!(stats.per_verdict[0].name, "REUPLOAD");
    assert_eq!(stats.top_takedowns.len(), 2);
    assert_eq!(stats.top_takedowns[0].takedown_id, takedowns[0], "{stats:?}");
    assert_eq!(stats.top_takedowns[0].count, 7);
    assert_eq!(stats.top_sellers[0].name, "tokopedia/rep");

    // The CLI: CSV export, review, stats.
    let addr = format!("http://{}", server.addr);
    let out = std::process::Command::new(BIN)
        .args([
            "history",
            "--format",
            "csv",
            "--limit",
            "0",
            "--takedown",
            &takedowns[2].to_string(),
            "--addr",
            &addr,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(rdr.headers().unwrap().get(0), Some("match_id"));
    assert_eq!(rdr.records().count(), 4);
    let out = std::process::Command::new(BIN)
        .args([
            "review",
            &match_ids[1].to_string(),
            "--label",
            "false-positive",
            "--reviewer",
            "cli",
            "--json",
            "--addr",
            &addr,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["label"], "FALSE_POSITIVE");
    let out = std::process::Command::new(BIN)
        .args(["stats", "--json", "--addr", &addr])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["total"], 15);
    server.stop().await;
}

#[tokio::test]
async fn bad_history_requests_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut c = server.client().await;
    let ts = relist_proto::api::timestamp;
    let cases = vec![
        (
            pb::QueryMatchesRequest {
                from: Some(ts(2000)),
                to: Some(ts(1000)),
                ..Default::default()
            },
            "from",
        ),
        (
            pb::QueryMatchesRequest {
                from: Some(ts(-5)),
                ..Default::default()
            },
            "from",
        ),
        (
            pb::QueryMatchesRequest {
                to: Some(ts(i64::MAX / 2000)),
                ..Default::default()
            },
            "to",
        ),
        (
            pb::QueryMatchesRequest {
                page_size: 501,
                ..Default::default()
            },
            "page_size",
        ),
        (
            pb::QueryMatchesRequest {
                page_token: "not-a-token".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            pb::QueryMatchesRequest {
                min_score: 7.0,
                ..Default::default()
            },
            "min_score",
        ),
        (
            pb::QueryMatchesRequest {
                label: 99,
                ..Default::default()
            },
            "label",
        ),
    ];
    for (req, field) in cases {
        let e = c.query_matches(req.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{req:?}");
        assert!(
            e.message().starts_with(&format!("{field}:")),
            "{} should name {field}",
            e.message()
        );
    }
    let e = c.get_match(pb::GetMatchRequest { match_id: 12345 }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .review_match(pb::ReviewMatchRequest {
            match_id: 12345,
            label: 2,
            reviewer: "x".into(),
            note: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .review_match(pb::ReviewMatchRequest {
            match_id: 1,
            label: 2,
            reviewer: String::new(),
            note: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message().starts_with("reviewer:")),
        (Code::InvalidArgument, true)
    );
    let e = c
        .match_stats(pb::MatchStatsRequest {
            from: Some(ts(0)),
            to: None,
            top: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message().starts_with("to:")),
        (Code::InvalidArgument, true)
    );
    let e = c
        .match_stats(pb::MatchStatsRequest {
            from: Some(ts(5000)),
            to: Some(ts(0)),
            top: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    server.stop().await;
}
