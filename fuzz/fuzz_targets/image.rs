//! Image decoding (format detection, header checks, the pixel limit, the decoders' memory limits) on
//! arbitrary bytes, with the limit lowered so that a run stays within libFuzzer's memory bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Cursor;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    effnet_data::set_max_pixels(4_000_000);
    let _ = effnet_data::decode_from(Path::new("fuzz.img"), Cursor::new(data));
});
