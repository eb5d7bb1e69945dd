//! The order of a check's matches (issue 17): when an imported hash-only takedown and a
//! takedown registered from a photo tie on verdict and score, the photo one comes first, since
//! it is the one an analyst can look at.
use crate::common::{jpeg, listing, photo, register, TestServer};
use relist_proto::api::pb;

#[tokio::test]
async fn a_photo_takedown_comes_before_a_hash_only_one_it_ties_with() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(tmp.path()).await;
    let mut c = server.client().await;
    let picture = jpeg(&photo(17, 480, 360), 90);
    // The photo's PDQ hash, as a shared hash list carries it.
    let probe = c
        .check_listing(pb::CheckListingRequest {
            listing: Some(listing("shopee", "probe", "", "", vec![picture.clone()])),
            dry_run: true,
        })
        .await
        .expect("dry run")
        .into_inner();
    let pdq = probe.fingerprints.expect("fingerprints").images[0].pdq.clone();
    assert_eq!(pdq.len(), 64);
    let hashed = |id: &str| pb::Listing {
        images: vec![pb::Image {
            pdq: pdq.clone(),
            ..Default::default()
        }],
        ..listing("imported", id, "", "", vec![])
    };
    // The import first: the lower id, which used to win every tie.
    let imported = register(&mut c, hashed(&format!("pdq-{pdq}")), "shared list")
        .await
        .takedown_id;
    let pictured = register(&mut c, listing("shopee", "1", "", "", vec![picture]), "counterfeit")
        .await
        .takedown_id;
    assert!(imported < pictured);

    // A hash-only candidate: the same evidence against both.
    let out = c
        .check_listing(pb::CheckListingRequest {
            listing: Some(hashed("candidate")),
            dry_run: true,
        })
        .await
        .expect("check")
        .into_inner();
    let ids: Vec<u64> = out.matches.iter().map(|m| m.takedown_id).collect();
    assert_eq!(ids.len(), 2, "{:?}", out.matches);
    let (a, b) = (&out.matches[0], &out.matches[1]);
    assert_eq!(
        (a.verdict, a.score),
        (b.verdict, b.score),
        "not a tie: {:?}",
        out.matches
    );
    assert_eq!(ids, vec![pictured, imported], "{:?}", out.matches);
    server.stop().await;
}
