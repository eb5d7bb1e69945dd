//! Prometheus `/metrics` on the HTTP port, scraped after real calls.
use crate::common::*;
use relist_core::fingerprint::DecodeLimits;
use relist_proto::api::pb;
use relist_server::grpc::ServerOptions;

/// The value of the sample line that starts with `series` (name and labels, exactly).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .expect("a number")
}

#[tokio::test]
async fn metrics_count_requests_verdicts_index_and_store() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_full(dir.path(), DecodeLimits::default(), ServerOptions::default(), true).await;
    let mut c = server.client().await;
    let pic = jpeg(&photo(21, 320, 240), 90);
    register(
        &mut c,
        listing("shopee", "1", "s", "jaket kulit", vec![pic.clone()]),
        "",
    )
    .await;
    check(&mut c, listing("lazada", "2", "t", "lain", vec![pic])).await;
    check(&mut c, listing("lazada", "3", "t", "sesuatu yang berbeda", vec![])).await;
    let bad = c
        .check_listing(pb::CheckListingRequest {
            listing: None,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    let resp = reqwest::get(format!("http://{}/metrics", server.http.unwrap()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = resp.text().await.unwrap();
    assert_eq!(
        sample(&text, "relist_requests_total{rpc=\"CheckListing\",code=\"Ok\"}"),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            "relist_requests_total{rpc=\"CheckListing\",code=\"InvalidArgument\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(&text, "relist_requests_total{rpc=\"RegisterTakedown\",code=\"Ok\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "relist_request_duration_seconds_count{rpc=\"CheckListing\",code=\"Ok\"}"
        ),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            "relist_request_duration_seconds_bucket{rpc=\"CheckListing\",code=\"InvalidArgument\",le=\"+Inf\"}"
        ),
        1.0
    );
    assert_eq!(sample(&text, "relist_verdicts_total{verdict=\"REUPLOAD\"}"), 1.0);
    assert_eq!(sample(&text, "relist_verdicts_total{verdict=\"CLEAR\"}"), 1.0);
    assert!(sample(&text, "relist_index_entries{kind=\"pdq\"}") >= 1.0);
    assert_eq!(sample(&text, "relist_index_entries{kind=\"title\"}"), 1.0);
    assert!(sample(&text, "relist_store_size_bytes") > 0.0);
    assert_eq!(sample(&text, "relist_fingerprint_duration_seconds_count"), 3.0);
    assert!(sample(&text, "relist_fingerprint_duration_seconds_sum") > 0.0);
    server.stop().await;
}

/// `serve --metrics ADDR` serves `/metrics` alone on its own address.
#[tokio::test]
async fn the_binary_serves_metrics_alone_on_its_own_address() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let daemon = Daemon::start(
        [
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        "web page serving",
    );
    let addr = &daemon.addr;
    let metrics = reqwest::get(format!("http://{addr}/metrics")).await.unwrap();
    let status = metrics.status();
    let text = metrics.text().await.unwrap();
    let api = reqwest::get(format!("http://{addr}/api/matches"))
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    assert!(text.contains("relist_store_size_bytes "), "{text}");
    assert_eq!(api, 404, "only /metrics on that address");
}
