//! The safetensors reader (header, metadata, tensors) on arbitrary bytes, metadata decoding included.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Cursor;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.safetensors");
    if let Ok(contents) =
        effnet_weights::safetensors_io::read_safetensors_from(path, Cursor::new(data))
    {
        let _ = effnet_weights::WeightMetadata::from_map(path, &contents.metadata);
    }
});
