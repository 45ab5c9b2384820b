//! The `.pth` reader (zip and legacy, pickle included) on arbitrary bytes: an error is fine, a panic, an
//! abort or unbounded memory is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Cursor;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let _ = effnet_weights::pth::read_pth_from(Path::new("fuzz.pth"), Cursor::new(data));
});
