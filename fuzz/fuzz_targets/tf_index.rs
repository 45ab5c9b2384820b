//! The TensorFlow checkpoint index reader (table blocks, snappy, checksums, bundle protos) on arbitrary
//! bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let _ = effnet_weights::tf_checkpoint::list_variables(Path::new("fuzz.index"), data.to_vec());
});
