//! End-to-end tests of the gRPC contract against a real server on 127.0.0.1:0.
use crate::common::*;
use relist_core::fingerprint::DecodeLimits;
use relist_proto::api::pb;
use tonic::Code;

const TITLE: &str = "BAJU BEKAS IMPORT ORI!!";
const EDITED: &str = "b4ju bekas imp0rt original 🔥 READY";

#[tokio::test]
async fn reencoded_resized_and_mirrored_copies_match_their_takedown() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut c = server.client().await;
    let original = photo(1, 500, 375);
    let reg = register(
        &mut c,
        listing("Shopee", "123", "s9", TITLE, vec![jpeg(&original, 92)]),
        "illegal import",
    )
    .await;
    assert!(reg.takedown_id > 0);
    assert!(!reg.updated);
    let fp = reg.fingerprints.unwrap();
    assert_eq!(fp.images.len(), 1);
    assert_eq!(fp.images[0].pdq.len(), 64);
    assert!(fp.images[0].pdq_quality >= 80, "synthetic photo should be high quality");
    assert_eq!(fp.images[0].phash.len(), 16);
    assert_eq!(fp.normalized_title, "baju bekas import ori");

    let variants: Vec<(&str, Vec<u8>, &str)> = vec![
        ("recompressed", jpeg(&original, 40), "original"),
        (
            "resized",
            jpeg(
                &original.resize_exact(250, 188, image::imageops::FilterType::Triangle),
                85,
            ),
            "original",
        ),
        ("mirrored", jpeg(&original.fliph(), 80), "flip_y"),
        ("png", png(&original), "original"),
    ];
    for (name, bytes, transform) in variants {
        let r = check(
            &mut c,
            listing("tokopedia", "777", "other", "something else entirely", vec![bytes]),
        )
        .await;
        assert_eq!(verdict(&r), pb::Verdict::Reupload, "{name}: {r:?}");
        assert!(r.match_id > 0, "{name}: a non-clear result is recorded");
        let m = &r.matches[0];
        assert_eq!(m.takedown_id, reg.takedown_id, "{name}");
        assert_eq!(
            (m.marketplace.as_str(), m.listing_id.as_str(), m.seller_id.as_str()),
            ("shopee", "123", "s9")
        );
        let e = &m.images[0];
        assert_eq!((e.candidate_image_index, e.stored_image_index), (0, 0));
        assert_eq!(e.hash_kind, pb::HashKind::Pdq as i32, "{name}: {r:?}");
        assert!(e.distance <= 31, "{name}: distance {}", e.distance);
        assert_eq!(e.transform, transform, "{name}");
        assert!(!m.same_seller);
        assert!(r.score > 0.5 && r.score <= 1.0, "{name}: score {}", r.score);
        let rec = server.bank.get_match(r.match_id).expect("recorded").record;
        assert_eq!(rec.candidate.listing_id, "777");
        assert_eq!(rec.matches[0].takedown_id, reg.takedown_id);
    }

    // Same photo and edited title from the same seller: REUPLOAD with the text evidence.
    let r = check(
        &mut c,
        listing("shopee", "124", "s9", EDITED, vec![jpeg(&original.fliph(), 70)]),
    )
    .await;
    assert_eq!(verdict(&r), pb::Verdict::Reupload);
    assert_eq!(r.matches[0].text_distance, Some(0));
    assert!(r.matches[0].same_seller);

    // The title alone never blocks a seller: it is sent to review.
    let r = check(
        &mut c,
        listing("lazada", "9", "x", EDITED, vec![jpeg(&photo(77, 500, 375), 85)]),
    )
    .await;
    assert_eq!(verdict(&r), pb::Verdict::Review, "{r:?}");
    assert!(r.matches[0].images.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn unrelated_listings_are_clear_and_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut c = server.client().await;
    for seed in 0..20u64 {
        let l = listing(
            "shopee",
            &format!("t{seed}"),
            "s",
            &format!("kaos polos hitam model {seed}"),
            vec![jpeg(&photo(100 + seed, 400, 300), 90)],
        );
        register(&mut c, l, "").await;
    }
    for seed in 0..20u64 {
        let r = check(
            &mut c,
            listing(
                "tokopedia",
                "n",
                "h",
                "sepatu lari pria ukuran 42",
                vec![jpeg(&photo(500 + seed, 400, 300), 90)],
            ),
        )
        .await;
        assert_eq!(verdict(&r), pb::Verdict::Clear, "seed {seed}: {r:?}");
        assert_eq!(r.match_id, 0);
        assert!(r.matches.is_empty());
        assert_eq!(r.score, 0.0);
    }
    server.stop().await;
}

#[tokio::test]
async fn registration_is_idempotent_and_removal_stops_matching() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut c = server.client().await;
    let (a, b) = (photo(2, 480, 360), photo(3, 480, 360));
    let first = register(
        &mut c,
        listing("shopee", "55", "s1", "jaket kulit bekas", vec![jpeg(&a, 90)]),
        "r1",
    )
    .await;
    let again = register(
        &mut c,
        listing("SHOPEE", "55", "s1", "jaket kulit bekas", vec![jpeg(&b, 90)]),
        "r2",
    )
    .await;
    assert_eq!(
        first.takedown_id, again.takedown_id,
        "same (marketplace, listing_id) -> same takedown"
    );
    assert!(again.updated);
    // The update replaced the image: the old one no longer matches, the new one does.
    let old = check(&mut c, listing("x", "1", "", "", vec![jpeg(&a, 80)])).await;
    assert_eq!(verdict(&old), pb::Verdict::Clear, "{old:?}");
    let new = check(&mut c, listing("x", "1", "", "", vec![jpeg(&b, 80)])).await;
    assert_eq!(verdict(&new), pb::Verdict::Reupload);
    let td = c
        .get_takedown(pb::GetTakedownRequest {
            takedown_id: first.takedown_id,
        })
        .await
        .unwrap()
        .into_inner()
        .takedown
        .unwrap();
    assert_eq!(td.reason, "r2");
    assert!(td.removed_at.is_none());
    assert_eq!(td.listing.unwrap().marketplace, "shopee");

    let removed = c
        .remove_takedown(pb::RemoveTakedownRequest {
            takedown_id: first.takedown_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(removed.removed_at.is_some());
    let after = check(&mut c, listing("x", "1", "", "", vec![jpeg(&b, 80)])).await;
    assert_eq!(verdict(&after), pb::Verdict::Clear, "a removed takedown never matches");
    // Its past match stays in history.
    assert!(server.bank.get_match(new.match_id).is_ok());
    let td = c
        .get_takedown(pb::GetTakedownRequest {
            takedown_id: first.takedown_id,
        })
        .await
        .unwrap()
        .into_inner()
        .takedown
        .unwrap();
    assert!(td.removed_at.is_some(), "removed takedowns stay readable");
    // Registering it again reinstates it under the same id.
    let back = register(
        &mut c,
        listing("shopee", "55", "s1", "jaket kulit bekas", vec![jpeg(&b, 90)]),
        "r3",
    )
    .await;
    assert_eq!(back.takedown_id, first.takedown_id);
    assert_eq!(
        verdict(&check(&mut c, listing("x", "1", "", "", vec![jpeg(&b, 80)])).await),
        pb::Verdict::Reupload
    );

    for id in [999_999u64] {
        let e = c
            .remove_takedown(pb::RemoveTakedownRequest { takedown_id: id })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        let e = c
            .get_takedown(pb::GetTakedownRequest { takedown_id: id })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
    }
    server.stop().await;
}

#[tokio::test]
async fn takedowns_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let img = photo(4, 500, 375);
    let id = {
        let server = TestServer::start(dir.path()).await;
        let mut c = server.client().await;
        let id = register(&mut c, listing("shopee", "1", "s", TITLE, vec![jpeg(&img, 90)]), "")
            .await
            .takedown_id;
        server.stop().await;
        id
    };
    let server = TestServer::start(dir.path()).await;
    let mut c = server.client().await;
    let r = check(&mut c, listing("tokopedia", "2", "", "", vec![jpeg(&img.fliph(), 75)])).await;
    assert_eq!(verdict(&r), pb::Verdict::Reupload);
    assert_eq!(r.matches[0].takedown_id, id);
    server.stop().await;
}

#[tokio::test]
async fn precomputed_hashes_match_like_images() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut c = server.client().await;
    let img = photo(5, 500, 375);
    let reg = register(&mut c, listing("shopee", "h1", "", "", vec![jpeg(&img, 90)]), "").await;
    let fp = reg.fingerprints.unwrap().images[0].clone();
    // A client that hashes on its side sends the same PDQ (upper case is accepted too).
    let hashed = pb::Listing {
        listing_id: "h2".into(),
        marketplace: "blibli".into(),
        images: vec![pb::Image {
            pdq: fp.pdq.to_uppercase(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let r = check(&mut c, hashed).await;
    assert_eq!(verdict(&r), pb::Verdict::Reupload);
    assert_eq!(r.matches[0].images[0].distance, 0);
    // A bare pHash is weaker evidence (it collides on plain backgrounds): review alone.
    let phash_only = pb::Listing {
        listing_id: "h3".into(),
        marketplace: "blibli".into(),
        images: vec![pb::Image {
            phash: fp.phash.clone(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let r = check(&mut c, phash_only).await;
    assert_eq!(verdict(&r), pb::Verdict::Review, "{r:?}");
    assert_eq!(r.matches[0].images[0].hash_kind, pb::HashKind::Phash as i32);
    // Registering hash-only takedowns works the same way.
    let reg = register(
        &mut c,
        pb::Listing {
            listing_id: "h4".into(),
            marketplace: "lazada".into(),
            images: vec![pb::Image {
                pdq: "f".repeat(64),
                pdq_quality: Some(90),
                ..Default::default()
            }],
            ..Default::default()
        },
        "",
    )
    .await;
    assert_eq!(reg.fingerprints.unwrap().images[0].pdq_quality, 90);
    server.stop().await;
}

/// A PNG whose header claims `w` x `h` pixels but whose data is tiny: a decompression bomb.
fn png_bomb(w: u32, h: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(&mut out, b"IEND", &[]);
    out
}

#[tokio::test]
async fn bad_input_gets_invalid_argument_naming_the_field_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let limits = DecodeLimits {
        max_pixels: 1_000_000,
        ..DecodeLimits::default()
    };
    let server = TestServer::start_with(dir.path(), limits).await;
    let mut c = server.client().await;
    let good = jpeg(&photo(6, 320, 240), 90);
    let img = |data: Vec<u8>| pb::Image {
        data,
        ..Default::default()
    };
    let base = || listing("shopee", "bad-1", "s", "judul", vec![]);
    let with_images = |images: Vec<pb::Image>| pb::Listing { images, ..base() };

    let cases: Vec<(&str, pb::Listing, &str)> = vec![
        (
            "corrupt bytes",
            with_images(vec![img(good.clone()), img(b"\xff\xd8\xff\xe0garbage".to_vec())]),
            "listing.images[1].data",
        ),
        (
            "truncated jpeg",
            with_images(vec![img(good[..good.len() / 3].to_vec())]),
            "listing.images[0].data",
        ),
        (
            "truncated png",
            with_images(vec![img({
                let p = png(&photo(8, 320, 240));
                p[..p.len() / 2].to_vec()
            })]),
            "listing.images[0].data",
        ),
        (
            "zero-byte image",
            with_images(vec![img(Vec::new())]),
            "listing.images[0]",
        ),
        (
            "not an image",
            with_images(vec![img(b"%PDF-1.4 hello".to_vec())]),
            "listing.images[0].data",
        ),
        (
            "decompression bomb",
            with_images(vec![img(png_bomb(100_000, 100_000))]),
            "listing.images[0].data",
        ),
        (
            "over the pixel limit",
            with_images(vec![img(jpeg(&photo(7, 1200, 1000), 80))]),
            "listing.images[0].data",
        ),
        (
            "short pdq",
            with_images(vec![pb::Image {
                pdq: "abc".into(),
                ..Default::default()
            }]),
            "listing.images[0].pdq",
        ),
        (
            "non-hex pdq",
            with_images(vec![pb::Image {
                pdq: "z".repeat(64),
                ..Default::default()
            }]),
            "listing.images[0].pdq",
        ),
        (
            "long phash",
            with_images(vec![pb::Image {
                phash: "0".repeat(17),
                ..Default::default()
            }]),
            "listing.images[0].phash",
        ),
        (
            "non-hex phash",
            with_images(vec![pb::Image {
                phash: "g".repeat(16),
                ..Default::default()
            }]),
            "listing.images[0].phash",
        ),
        (
            "data and hashes",
            with_images(vec![pb::Image {
                data: good.clone(),
                phash: "0".repeat(16),
                ..Default::default()
            }]),
            "listing.images[0]",
        ),
        (
            "no title, no images",
            pb::Listing {
                title: "  ".into(),
                ..base()
            },
            "listing",
        ),
        (
            "over-long title",
            pb::Listing {
                title: "x".repeat(1001),
                ..base()
            },
            "listing.title",
        ),
        (
            "over-long description",
            pb::Listing {
                description: "x".repeat(20_001),
                ..base()
            },
            "listing.description",
        ),
        (
            "missing marketplace",
            pb::Listing {
                marketplace: String::new(),
                ..base()
            },
            "listing.marketplace",
        ),
        (
            "missing listing_id",
            pb::Listing {
                listing_id: String::new(),
                ..base()
            },
            "listing.listing_id",
        ),
        (
            "too many images",
            with_images(
                (0..33)
                    .map(|_| pb::Image {
                        phash: "0".repeat(16),
                        ..Default::default()
                    })
                    .collect(),
            ),
            "listing.images",
        ),
    ];
    for (name, l, field) in cases {
        for op in ["register", "check"] {
            let err = if op == "register" {
                c.register_takedown(pb::RegisterTakedownRequest {
                    listing: Some(l.clone()),
                    ..Default::default()
                })
                .await
                .unwrap_err()
            } else {
                c.check_listing(pb::CheckListingRequest {
                    listing: Some(l.clone()),
                    ..Default::default()
                })
                .await
                .unwrap_err()
            };
            assert_eq!(err.code(), Code::InvalidArgument, "{name} ({op}): {err:?}");
            assert!(
                err.message().starts_with(&format!("{field}:")),
                "{name} ({op}): message {:?} should name {field}",
                err.message()
            );
        }
    }
    let err = c
        .register_takedown(pb::RegisterTakedownRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "listing: is required")
    );
    let err = c
        .remove_takedown(pb::RemoveTakedownRequest { takedown_id: 0 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("takedown_id:"));

    // Nothing was half-stored: the listing registers as new, and the daemon still serves.
    let reg = register(&mut c, listing("shopee", "bad-1", "s", "judul", vec![good.clone()]), "").await;
    assert!(!reg.updated, "failed registrations must not have stored anything");
    assert_eq!(
        verdict(&check(&mut c, listing("t", "1", "", "", vec![good])).await),
        pb::Verdict::Reupload
    );
    server.stop().await;
}

#[tokio::test]
async fn health_and_reflection_work_without_our_protos() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "relist.v1.Relist"] {
        let resp = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            resp.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
        server_reflection_response::MessageResponse, ServerReflectionRequest,
    };
    let mut refl = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("{resp:?}")
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"relist.v1.Relist"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
    server.stop().await;
}
