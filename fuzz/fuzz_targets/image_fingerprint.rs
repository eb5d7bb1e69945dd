#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| relist_proto::fuzz_targets::image_fingerprint(data));
