//! Safetensors files: memory-mapped reading into f32 tensors, and atomic writing with string metadata.

use crate::atomic::write_atomically;
use crate::error::{Result, WeightsError};
use crate::tensor::Tensor;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Tensors and the `__metadata__` map of a safetensors file.
pub struct SafetensorsContents {
    /// Floating-point tensors converted to f32 (integer tensors are skipped).
    pub tensors: BTreeMap<String, Tensor>,
    /// The string metadata, empty if the file has none.
    pub metadata: HashMap<String, String>,
}

/// Whether `bytes` start like a safetensors file (a little-endian header length, then a JSON object).
pub fn looks_like_safetensors(bytes: &[u8]) -> bool {
    bytes.len() > 9 && bytes[8] == b'{'
}

/// Reads a safetensors file through a memory map.
pub fn read_safetensors(path: &Path) -> Result<SafetensorsContents> {
    let file = std::fs::File::open(path)
        .map_err(|e| WeightsError::file(path, format!("cannot open: {e}")))?;
    // SAFETY: the map is read-only and dropped before this function returns; a concurrent truncation of the
    // file is the only hazard, as with any reader.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|e| WeightsError::file(path, format!("cannot map: {e}")))?;
    let st = SafeTensors::deserialize(&map)
        .map_err(|e| WeightsError::file(path, format!("not a valid safetensors file: {e}")))?;
    let (_, header) = SafeTensors::read_metadata(&map)
        .map_err(|e| WeightsError::file(path, format!("bad header: {e}")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let bytes = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
            Dtype::F64 => bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => continue,
        };
        tensors.insert(name, Tensor::new(view.shape().to_vec(), data));
    }
    Ok(SafetensorsContents { tensors, metadata })
}

/// Writes f32 tensors and metadata to `path` atomically (temporary file in the same folder, then rename).
pub fn write_safetensors(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
    metadata: HashMap<String, String>,
) -> Result<()> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(name, t)| {
            (
                name.clone(),
                t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                t.shape.clone(),
            )
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, data, shape)| {
            safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|v| (name.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| WeightsError::file(path, format!("cannot encode tensors: {e}")))?;
    let encoded = safetensors::serialize(views, Some(metadata))
        .map_err(|e| WeightsError::file(path, format!("cannot encode: {e}")))?;
    write_atomically(path, &encoded).map_err(|e| WeightsError::file(path, e.reason))
}
