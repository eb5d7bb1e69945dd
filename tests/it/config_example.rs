//! `relist.toml.example` documents every setting with its default: it must load with the
//! daemon's own loader, set every key, and say the defaults the daemon really has.
use relist_core::fingerprint::DecodeLimits;
use relist_core::limits::RequestLimits;
use relist_core::policy::Thresholds;
use relist_server::config::{FileConfig, HistorySection, LimitsSection, MatchingSection, ServerSection, StoreSection};

#[test]
fn the_example_config_sets_every_key_to_its_default() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("relist.toml.example");
    let c = FileConfig::load(&path).expect("relist.toml.example loads");
    // Exhaustive patterns without `..`: a new setting fails to compile here until the
    // example (and this test) name it.
    let FileConfig {
        server:
            ServerSection {
                listen: Some(listen),
                data_dir: Some(data_dir),
                cache_mb: Some(cache_mb),
            },
        limits:
            LimitsSection {
                max_image_bytes: Some(max_image_bytes),
                max_image_pixels: Some(max_image_pixels),
                max_message_bytes: Some(max_message_bytes),
                max_images: Some(max_images),
                max_title_chars: Some(max_title_chars),
                max_description_chars: Some(max_description_chars),
                max_page_size: Some(max_page_size),
                request_timeout: Some(request_timeout),
                max_concurrent_requests: Some(max_concurrent_requests),
                min_free_disk_bytes: Some(min_free_disk_bytes),
            },
        policy,
        history: HistorySection {
            retention_days: Some(0),
            thumbnails: Some(true),
        },
        matching: MatchingSection {
            regions: Some(true),
            local_features: Some(true),
        },
        // The default is no shared store: the example shows the key commented out.
        store: StoreSection { url: None },
    } = c
    else {
        panic!("relist.toml.example leaves a setting out, or not at its default: {c:?}");
    };
    assert_eq!(listen.to_string(), relist_server::config::DEFAULT_LISTEN);
    assert_eq!(
        data_dir,
        std::path::PathBuf::from(relist_server::config::DEFAULT_DATA_DIR)
    );
    assert_eq!(cache_mb * 1024 * 1024, relist_core::store::DEFAULT_CACHE_BYTES);
    let d = DecodeLimits::default();
    assert_eq!((max_image_bytes, max_image_pixels), (d.max_bytes, d.max_pixels));
    let r = RequestLimits::default();
    assert_eq!(
        (
            max_message_bytes,
            max_images,
            max_title_chars,
            max_description_chars,
            max_page_size
        ),
        (
            r.max_message_bytes,
            r.max_images,
            r.max_title_chars,
            r.max_description_chars,
            r.max_page_size
        )
    );
    assert_eq!(
        humantime::parse_duration(&request_timeout).ok(),
        Some(r.request_timeout)
    );
    assert_eq!(max_concurrent_requests, r.max_concurrent_requests);
    assert_eq!(min_free_disk_bytes, relist_core::disk::DEFAULT_MIN_FREE_BYTES);
    assert_eq!(policy, Thresholds::default());
    // Every policy key is written out, not left to serde's default.
    let text = std::fs::read_to_string(&path).expect("read the example");
    let table: toml::Table = text.parse().expect("TOML");
    let written = table["policy"].as_table().expect("[policy]");
    let all = toml::Table::try_from(Thresholds::default()).expect("thresholds as TOML");
    let missing: Vec<&String> = all.keys().filter(|k| !written.contains_key(*k)).collect();
    assert!(missing.is_empty(), "[policy] of relist.toml.example lacks {missing:?}");
}
