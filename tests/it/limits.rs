//! Each configured limit, crossed against a real daemon: the status code, and the field (or
//! the limit's config key) named in the message.
use std::time::Duration;

use crate::common::*;
use relist_core::fingerprint::DecodeLimits;
use relist_core::limits::RequestLimits;
use relist_proto::api::pb;
use relist_server::grpc::ServerOptions;
use tonic::Code;

fn options(limits: RequestLimits) -> ServerOptions {
    ServerOptions {
        limits,
        ..Default::default()
    }
}

fn pdq_image(seed: u8) -> pb::Image {
    pb::Image {
        pdq: format!("{:064x}", u128::from(seed) * 0x1234_5678_9abc_def1),
        ..Default::default()
    }
}

async fn check_err(c: &mut Client, l: pb::Listing) -> tonic::Status {
    c.check_listing(pb::CheckListingRequest {
        listing: Some(l),
        ..Default::default()
    })
    .await
    .expect_err("over the limit")
}

#[tokio::test]
async fn size_and_count_limits_name_their_field() {
    let dir = tempfile::tempdir().unwrap();
    let limits = RequestLimits {
        max_message_bytes: 1 << 20,
        max_images: 2,
        max_title_chars: 10,
        max_description_chars: 20,
        max_page_size: 20,
        max_concurrent_requests: 1,
        ..RequestLimits::default()
    };
    let decode = DecodeLimits {
        max_bytes: 100_000,
        max_pixels: 1_000_000,
    };
    let server = TestServer::start_full(dir.path(), decode, options(limits), false).await;
    let mut c = server.client().await;
    let base = || listing("shopee", "1", "", "tas kulit", vec![]);

    let e = check_err(
        &mut c,
        pb::Listing {
            images: (0..3).map(pdq_image).collect(),
            ..base()
        },
    )
    .await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message()
            .starts_with("listing.images: has 3 images, over the limit of 2"),
        "{e:?}"
    );
    check(
        &mut c,
        pb::Listing {
            images: (0..2).map(pdq_image).collect(),
            ..base()
        },
    )
    .await;

    let e = check_err(&mut c, listing("shopee", "1", "", "sebelas huruf", vec![])).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message()
            .starts_with("listing.title: is 13 characters, over the limit of 10"),
        "{e:?}"
    );

    let e = check_err(
        &mut c,
        pb::Listing {
            description: "d".repeat(21),
            ..base()
        },
    )
    .await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("listing.description:"), "{e:?}");

    // Bytes per image, then pixels per image (the decoder's limits).
    let noisy = jpeg(&photo(3, 900, 700), 95);
    assert!(noisy.len() > 100_000 && noisy.len() < (1 << 20));
    let e = check_err(&mut c, listing("shopee", "1", "", "tas", vec![noisy])).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("listing.images[0].data:"), "{e:?}");
    let flat = png(&image::DynamicImage::new_rgb8(1200, 1000));
    assert!(flat.len() < 100_000);
    let e = check_err(&mut c, listing("shopee", "1", "", "tas", vec![flat])).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("listing.images[0].data:"), "{e:?}");

    // The whole message.
    let e = check_err(
        &mut c,
        pb::Listing {
            description: "d".repeat(2 << 20),
            ..base()
        },
    )
    .await;
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    assert!(e.message().contains("message length too large"), "{e:?}");

    // Page size.
    let e = c
        .query_matches(pb::QueryMatchesRequest {
            page_size: 21,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with("page_size: is 21, over the maximum of 20"),
        "{e:?}"
    );
    c.query_matches(pb::QueryMatchesRequest {
        page_size: 20,
        ..Default::default()
    })
    .await
    .expect("at the limit");

    // Concurrency: an open CheckListings stream holds the only slot, so a unary call is shed
    // at once instead of waiting.
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::CheckListingRequest>(1);
    let mut other = server.client().await;
    let stream = other
        .check_listings(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("stream opened");
    let started = std::time::Instant::now();
    let e = check_err(&mut c, base()).await;
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("max_concurrent_requests"), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "shed, not queued");
    drop(tx);
    drop(stream);
    let mut ok = false;
    for _ in 0..100 {
        if c.check_listing(pb::CheckListingRequest {
            listing: Some(base()),
            ..Default::default()
        })
        .await
        .is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "the slot comes back when the stream ends");
    server.stop().await;
}

#[tokio::test]
async fn slow_requests_get_deadline_exceeded() {
    let dir = tempfile::tempdir().unwrap();
    let limits = RequestLimits {
        request_timeout: Duration::from_millis(5),
        max_concurrent_requests: 1,
        ..RequestLimits::default()
    };
    let server = TestServer::start_full(dir.path(), DecodeLimits::default(), options(limits), false).await;
    let mut c = server.client().await;
    // Decoding and hashing a 3000x2400 photo takes far longer than 5 ms.
    let big = listing("shopee", "1", "", "tas", vec![jpeg(&photo(4, 3000, 2400), 90)]);
    let e = check_err(&mut c, big.clone()).await;
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(e.message().contains("limits.request_timeout"), "{e:?}");
    // The timed-out work cannot be cancelled: it keeps its slot until it is done, so load
    // shedding still counts it.
    let small = listing("shopee", "2", "", "tas", vec![]);
    let e = check_err(&mut c, small.clone()).await;
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    let mut freed = false;
    for _ in 0..200 {
        if c.check_listing(pb::CheckListingRequest {
            listing: Some(small.clone()),
            ..Default::default()
        })
        .await
        .is_ok()
        {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(freed, "the slot comes back when the work ends");

    // In a stream, the item fails and the stream goes on.
    let items = vec![pb::CheckListingRequest {
        listing: Some(big),
        ..Default::default()
    }];
    let mut answers = c
        .check_listings(tokio_stream::iter(items))
        .await
        .expect("stream")
        .into_inner();
    let first = answers.message().await.expect("answer").expect("one answer");
    match first.outcome {
        Some(pb::check_listings_response::Outcome::Error(e)) => assert_eq!(e.code, Code::DeadlineExceeded as i32),
        other => panic!("expected an item error, got {other:?}"),
    }
    server.stop().await;
}

#[test]
fn limits_come_from_flags_over_the_config_file_over_defaults() {
    use clap::Parser;
    use relist::cli::{Cli, Command};
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("relist.toml");
    std::fs::write(
        &toml,
        "[server]\ncache_mb = 64\n[limits]\nmax_images = 4\nmax_page_size = 100\nrequest_timeout = \"2s\"\n\
         max_concurrent_requests = 8\n",
    )
    .unwrap();
    let resolve = |extra: &[&str]| {
        let args = [&["relist", "serve", "--config", toml.to_str().unwrap()], extra].concat();
        match Cli::try_parse_from(args).expect("parses").command {
            Command::Serve(s) => s.resolve(),
            _ => unreachable!(),
        }
    };
    let cfg = resolve(&["--max-images", "3"]).unwrap();
    let r = cfg.requests;
    assert_eq!((r.max_images, r.max_page_size, r.max_concurrent_requests), (3, 100, 8));
    assert_eq!(r.request_timeout, Duration::from_secs(2));
    assert_eq!(r.max_title_chars, RequestLimits::default().max_title_chars);
    let e = resolve(&["--max-images", "33"]).unwrap_err();
    assert!(e.to_string().contains("max_images"), "{e}");
    let e = resolve(&["--max-concurrent-requests", "0"]).unwrap_err();
    assert!(e.to_string().contains("max_concurrent_requests"), "{e}");
    // sled's page cache: the file's value, a flag over it, and a nonsense value named.
    assert_eq!(cfg.cache_bytes, 64 << 20);
    assert_eq!(resolve(&["--cache-mb", "16"]).unwrap().cache_bytes, 16 << 20);
    let e = resolve(&["--cache-mb", "0"]).unwrap_err();
    assert!(e.to_string().contains("cache_mb"), "{e}");
}
