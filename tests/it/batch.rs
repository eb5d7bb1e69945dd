//! CheckListings: the streaming re-check gives exactly CheckListing's answers, in order,
//! with per-item errors that do not end the stream, recorded with source "batch".
use crate::common::*;
use relist_core::domain::Source;
use relist_proto::api::pb;

fn hash_image(pdq: &str, phash: &str) -> pb::Image {
    pb::Image {
        pdq: pdq.into(),
        phash: phash.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn streamed_checks_equal_unary_checks_for_1000_listings() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut c = server.client().await;
    let titles = [
        "baju bekas import",
        "kaos polos hitam",
        "jaket kulit bekas",
        "sepatu lari pria",
        "celana jeans bekas",
    ];
    let mut stored = Vec::new();
    for seed in 0..25u64 {
        let img = photo(1000 + seed, 320, 240);
        let reg = register(
            &mut c,
            listing(
                "shopee",
                &format!("td{seed}"),
                &format!("s{}", seed % 3),
                titles[seed as usize % 5],
                vec![jpeg(&img, 90)],
            ),
            "",
        )
        .await;
        stored.push((img, reg.fingerprints.unwrap().images[0].clone()));
    }
    // A mix: hash-only copies of takedowns, flipped bits, unrelated hashes, titles only, real
    // image bytes (some mirrored), and bad items.
    let mut requests = Vec::new();
    for i in 0..1000usize {
        let (img, fp) = &stored[i % stored.len()];
        let mut l = pb::Listing {
            listing_id: format!("c{i}"),
            marketplace: ["tokopedia", "lazada", "blibli"][i % 3].into(),
            seller_id: format!("s{}", i % 4),
            title: if i % 7 == 0 {
                titles[i % 5].to_uppercase()
            } else {
                format!("barang {i}")
            },
            ..Default::default()
        };
        match i % 10 {
            0..=3 => l.images.push(hash_image(&fp.pdq, &fp.phash)),
            4 => {
                // Flip a few hex digits of the PDQ: a near copy.
                let mut p: Vec<char> = fp.pdq.chars().collect();
                for k in [3, 17, 40] {
                    p[k] = if p[k] == '0' { '1' } else { '0' };
                }
                l.images.push(hash_image(&p.into_iter().collect::<String>(), ""));
            }
            5 => l.images.push(hash_image(&format!("{:064x}", i * 7919), "")),
            6 if i % 50 == 6 => l.images.push(pb::Image {
                data: jpeg(&img.fliph(), 70),
                ..Default::default()
            }),
            7 if i % 100 == 7 => l.images.push(pb::Image {
                data: b"not an image".to_vec(),
                ..Default::default()
            }),
            8 if i % 100 == 8 => l.marketplace.clear(),
            _ => {}
        }
        requests.push(pb::CheckListingRequest {
            listing: Some(l),
            ..Default::default()
        });
    }

    let mut stream = c
        .check_listings(tokio_stream::iter(requests.clone()))
        .await
        .expect("stream")
        .into_inner();
    let mut streamed = Vec::new();
    while let Some(item) = stream.message().await.expect("stream item") {
        streamed.push(item);
    }
    assert_eq!(streamed.len(), requests.len(), "one answer per request");

    let (mut errors, mut flagged) = (0, 0);
    for (req, got) in requests.into_iter().zip(streamed) {
        let l = req.listing.clone().unwrap();
        assert_eq!(
            (got.listing_id.as_str(), got.marketplace.as_str()),
            (l.listing_id.as_str(), l.marketplace.as_str()),
            "in order"
        );
        let unary = c.check_listing(req).await;
        match (got.outcome.expect("outcome"), unary) {
            (pb::check_listings_response::Outcome::Result(mut s), Ok(u)) => {
                let mut u = u.into_inner();
                assert_eq!(s.match_id == 0, u.match_id == 0);
                if s.match_id != 0 {
                    flagged += 1;
                    let rec = server.bank.get_match(s.match_id).expect("batch result recorded").record;
                    assert_eq!(rec.source, Source::Batch);
                    assert_eq!(server.bank.get_match(u.match_id).unwrap().record.source, Source::Upload);
                }
                s.match_id = 0;
                u.match_id = 0;
                assert_eq!(s, u, "listing {}", l.listing_id);
            }
            (pb::check_listings_response::Outcome::Error(e), Err(status)) => {
                errors += 1;
                assert_eq!(e.code, status.code() as i32);
                assert_eq!(e.message, status.message());
                assert!(e.message.starts_with("listing."), "{}", e.message);
            }
            (s, u) => panic!("stream and unary disagree for {}: {s:?} vs {u:?}", l.listing_id),
        }
    }
    assert_eq!(errors, 20, "10 undecodable images and 10 missing marketplaces");
    assert!(flagged > 400, "copies must be flagged: {flagged}");
    server.stop().await;
}
