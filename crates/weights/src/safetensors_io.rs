//! Safetensors files: reading into f32 tensors one tensor at a time, and atomic writing with string
//! metadata.
//!
//! The reader parses and validates the header with the `safetensors` crate's own [`Metadata`], then reads
//! each tensor's bytes with plain file reads into one reused buffer. A memory map would put the whole file
//! into the process's resident memory beside the converted tensors (twice the weights at the peak).

use crate::atomic::write_atomically;
use crate::error::{Result, WeightsError};
use crate::tensor::{FloatType, Tensor};
use safetensors::tensor::Metadata;
use safetensors::Dtype;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The longest header the reader accepts, as the `safetensors` crate's own limit.
const MAX_HEADER_BYTES: u64 = 100_000_000;

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

/// The validated header of an open safetensors file and the offset where its tensor data starts.
fn read_header<R: Read + Seek>(path: &Path, file: &mut R) -> Result<(Metadata, u64)> {
    let bad = |reason: String| {
        WeightsError::file(path, format!("not a valid safetensors file: {reason}"))
    };
    let file_len = file
        .seek(SeekFrom::End(0))
        .and_then(|len| file.rewind().map(|()| len))
        .map_err(|e| WeightsError::file(path, format!("cannot read: {e}")))?;
    let mut length = [0u8; 8];
    file.read_exact(&mut length)
        .map_err(|_| bad("shorter than its 8-byte header length".into()))?;
    let header_len = u64::from_le_bytes(length);
    if header_len > MAX_HEADER_BYTES || header_len > file_len - 8 {
        return Err(bad(format!(
            "its header length {header_len} exceeds the file ({file_len} bytes) or the {MAX_HEADER_BYTES}-byte limit"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)
        .map_err(|e| bad(format!("cannot read the header: {e}")))?;
    let metadata: Metadata =
        serde_json::from_slice(&header).map_err(|e| bad(format!("bad header: {e}")))?;
    let data_start = 8 + header_len;
    let data_len = file_len - data_start;
    if metadata.data_len() as u64 != data_len {
        return Err(bad(format!(
            "the header describes {} bytes of tensor data but the file holds {data_len}",
            metadata.data_len()
        )));
    }
    Ok((metadata, data_start))
}

/// f32 values of little-endian `bytes` of type `dtype`; `None` for non-floating types.
fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    let float = match dtype {
        Dtype::F32 => FloatType::F32,
        Dtype::F64 => FloatType::F64,
        Dtype::F16 => FloatType::F16,
        Dtype::BF16 => FloatType::Bf16,
        _ => return None,
    };
    Some(float.decode(bytes))
}

/// Reads a safetensors file, tensor by tensor in file order.
pub fn read_safetensors(path: &Path) -> Result<SafetensorsContents> {
    let file =
        File::open(path).map_err(|e| WeightsError::file(path, format!("cannot open: {e}")))?;
    read_safetensors_from(path, file)
}

/// Reads safetensors from `file` (a file, or bytes in a cursor); `path` names it in errors.
pub fn read_safetensors_from<R: Read + Seek>(
    path: &Path,
    mut file: R,
) -> Result<SafetensorsContents> {
    let (header, data_start) = read_header(path, &mut file)?;
    let mut bytes = Vec::new();
    let mut tensors = BTreeMap::new();
    for name in header.offset_keys() {
        let info = header.info(&name).expect("a name the header lists");
        let (begin, end) = info.data_offsets;
        bytes.resize(end - begin, 0);
        file.seek(SeekFrom::Start(data_start + begin as u64))
            .and_then(|_| file.read_exact(&mut bytes))
            .map_err(|e| WeightsError::file(path, format!("cannot read tensor `{name}`: {e}")))?;
        if let Some(data) = to_f32(info.dtype, &bytes) {
            tensors.insert(name, Tensor::new(info.shape.clone(), data));
        }
    }
    let metadata = header.metadata().clone().unwrap_or_default();
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
    write_atomically(path, &with_sorted_header(&encoded))
        .map_err(|e| WeightsError::file(path, e.reason))
}

/// The same safetensors bytes with the header's keys in sorted order. The crate writes the metadata map in
/// a hash map's order, which differs from run to run; sorted, the same tensors and metadata always give
/// the same file.
fn with_sorted_header(encoded: &[u8]) -> Vec<u8> {
    let header_len = u64::from_le_bytes(encoded[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value =
        serde_json::from_slice(&encoded[8..8 + header_len]).expect("the crate wrote valid JSON");
    // serde_json's map keeps keys sorted.
    let mut sorted = serde_json::to_vec(&header).expect("a JSON value serialises");
    // The data keeps its 8-byte alignment: pad the header with spaces, as the crate does.
    sorted.resize(sorted.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(encoded.len());
    out.extend((sorted.len() as u64).to_le_bytes());
    out.extend(sorted);
    out.extend(&encoded[8 + header_len..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("effnet-st-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("w.safetensors")
    }

    fn sample() -> BTreeMap<String, Tensor> {
        BTreeMap::from([
            (
                "a".to_string(),
                Tensor::new(vec![2, 3], (0..6).map(|i| i as f32).collect()),
            ),
            (
                "b".to_string(),
                Tensor::new(vec![4], vec![-1.5, 0.25, 8.0, 1e-3]),
            ),
        ])
    }

    #[test]
    fn tensors_and_metadata_round_trip() {
        let path = scratch("round-trip");
        let metadata = HashMap::from([("k".to_string(), "v".to_string())]);
        write_safetensors(&path, &sample(), metadata.clone()).unwrap();
        let read = read_safetensors(&path).unwrap();
        assert_eq!(read.tensors, sample());
        assert_eq!(read.metadata, metadata);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn the_same_tensors_and_metadata_always_give_the_same_bytes() {
        let path = scratch("reproducible");
        let metadata: HashMap<String, String> = (0..20)
            .map(|i| (format!("key{i}"), format!("value{i}")))
            .collect();
        write_safetensors(&path, &sample(), metadata.clone()).unwrap();
        let first = std::fs::read(&path).unwrap();
        for _ in 0..3 {
            // A fresh map each time: a new hash order.
            let again: HashMap<String, String> = metadata.clone().into_iter().collect();
            write_safetensors(&path, &sample(), again).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), first);
        }
        assert_eq!(read_safetensors(&path).unwrap().metadata, metadata);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_truncated_file_or_an_impossible_header_length_is_refused() {
        let path = scratch("broken");
        write_safetensors(&path, &sample(), HashMap::new()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        let e = read_safetensors(&path).err().unwrap().to_string();
        assert!(
            e.contains("tensor data") && e.contains("w.safetensors"),
            "{e}"
        );
        let mut huge = bytes.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        std::fs::write(&path, &huge).unwrap();
        let e = read_safetensors(&path).err().unwrap().to_string();
        assert!(e.contains("header length"), "{e}");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
