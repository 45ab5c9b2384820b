//! PyTorch `.pth` state dicts without Python: the zip format (torch >= 1.6) and the legacy stream format
//! (magic number, protocol, sys info, pickled dict, storage keys, then raw storages). Views are materialised
//! honouring their offsets and strides, because legacy files store permuted views.

use crate::error::{Result, WeightsError};
use crate::pickle::{self, TensorView, Value};
use crate::tensor::{gather, view_end, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

/// The magic number at the start of a legacy `.pth` stream.
pub const LEGACY_MAGIC: i128 = 0x1950a86a20f9469cfc6c;
const LEGACY_PROTOCOL: i128 = 1001;

/// Element types a storage can hold.
#[derive(Debug, Clone, Copy, PartialEq)]
enum StorageType {
    F32,
    F64,
    F16,
    Bf16,
    I64,
    I32,
    U8,
    Bool,
}

impl StorageType {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => Self::F32,
            "DoubleStorage" => Self::F64,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::Bf16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ByteStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::Bf16 => 2,
            Self::U8 | Self::Bool => 1,
        }
    }

    fn is_float(self) -> bool {
        matches!(self, Self::F32 | Self::F64 | Self::F16 | Self::Bf16)
    }

    /// Decodes little-endian floats to f32 (only called for float types).
    fn to_f32(self, bytes: &[u8]) -> Vec<f32> {
        let chunks = bytes.chunks_exact(self.size());
        match self {
            Self::F32 => chunks
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
            Self::F64 => chunks
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            Self::F16 => chunks
                .map(|c| half::f16::from_le_bytes(c.try_into().expect("2 bytes")).to_f32())
                .collect(),
            Self::Bf16 => chunks
                .map(|c| half::bf16::from_le_bytes(c.try_into().expect("2 bytes")).to_f32())
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// A storage's identity as its persistent id names it.
struct StorageRef {
    kind: StorageType,
    key: String,
}

fn storage_ref(path: &Path, id: &Value) -> Result<StorageRef> {
    let bad = |why: &str| WeightsError::file(path, format!("malformed storage id {id:?}: {why}"));
    let Value::Tuple(items) = id else {
        return Err(bad("not a tuple"));
    };
    match items.as_slice() {
        [Value::Str(tag), Value::Global(_, type_name), Value::Str(key), ..] if tag == "storage" => {
            Ok(StorageRef {
                kind: StorageType::from_name(type_name)
                    .ok_or_else(|| bad("unknown storage type"))?,
                key: key.clone(),
            })
        }
        _ => Err(bad("expected ('storage', type, key, ...)")),
    }
}

/// Finds the dict of tensors: the top-level dict, or a nested `state_dict` / `model` entry.
fn state_dict(path: &Path, root: Value) -> Result<Vec<(String, TensorView)>> {
    let Value::Dict(items) = root else {
        return Err(WeightsError::file(path, "the pickle is not a dict"));
    };
    let tensors: Vec<(String, TensorView)> = items
        .iter()
        .filter_map(|(k, v)| match (k, v) {
            (Value::Str(k), Value::Tensor(t)) => Some((k.clone(), t.clone())),
            _ => None,
        })
        .collect();
    if !tensors.is_empty() {
        return Ok(tensors);
    }
    for wrapper in [
        "state_dict_ema",
        "model_ema",
        "state_dict",
        "model",
        "model_state_dict",
    ] {
        if let Some((_, inner)) = items.iter().find(|(k, _)| *k == Value::Str(wrapper.into())) {
            return state_dict(path, inner.clone());
        }
    }
    Err(WeightsError::file(
        path,
        "no tensors found in the pickled dict",
    ))
}

/// Materialises every floating-point tensor of a state dict; integer buffers (`num_batches_tracked`) are skipped.
fn materialise(
    path: &Path,
    views: Vec<(String, TensorView)>,
    storages: &HashMap<String, &[u8]>,
) -> Result<BTreeMap<String, Tensor>> {
    let mut out = BTreeMap::new();
    for (name, view) in views {
        let storage = storage_ref(path, &view.storage)?;
        if !storage.kind.is_float() {
            continue;
        }
        let bytes = storages.get(&storage.key).ok_or_else(|| {
            WeightsError::file(
                path,
                format!(
                    "tensor `{name}` names storage `{}`, which the file lacks",
                    storage.key
                ),
            )
        })?;
        if view.size.len() != view.stride.len() {
            return Err(WeightsError::file(
                path,
                format!(
                    "tensor `{name}` has {} sizes but {} strides",
                    view.size.len(),
                    view.stride.len()
                ),
            ));
        }
        let elements = bytes.len() / storage.kind.size();
        if view_end(view.offset, &view.size, &view.stride) > elements {
            return Err(WeightsError::file(
                path,
                format!("tensor `{name}` reads past the end of its storage (truncated file?)"),
            ));
        }
        let values = storage.kind.to_f32(bytes);
        let data = gather(&values, view.offset, &view.size, &view.stride);
        out.insert(name, Tensor::new(view.size, data));
    }
    Ok(out)
}

/// Reads a `.pth` file in either format.
pub fn read_pth(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let bytes =
        std::fs::read(path).map_err(|e| WeightsError::file(path, format!("cannot read: {e}")))?;
    if bytes.starts_with(b"PK\x03\x04") {
        read_zip(path, &bytes)
    } else {
        read_legacy(path, &bytes)
    }
}

fn pickle_at(path: &Path, bytes: &[u8], pos: &mut usize, what: &str) -> Result<Value> {
    pickle::load(bytes, pos).map_err(|e| WeightsError::file(path, format!("{what}: {e}")))
}

fn read_legacy(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, Tensor>> {
    let mut pos = 0;
    let not_pth = || {
        WeightsError::file(
            path,
            "not a PyTorch .pth file (neither a zip archive nor the legacy magic number)",
        )
    };
    match pickle::load(bytes, &mut pos) {
        Ok(Value::Int(LEGACY_MAGIC)) => {}
        _ => return Err(not_pth()),
    }
    if pickle_at(path, bytes, &mut pos, "protocol")? != Value::Int(LEGACY_PROTOCOL) {
        return Err(WeightsError::file(
            path,
            "unsupported legacy .pth protocol version",
        ));
    }
    if let Value::Dict(info) = pickle_at(path, bytes, &mut pos, "system info")? {
        if info
            .iter()
            .any(|(k, v)| *k == Value::Str("little_endian".into()) && *v == Value::Bool(false))
        {
            return Err(WeightsError::file(
                path,
                "big-endian .pth files are not supported",
            ));
        }
    }
    let views = state_dict(path, pickle_at(path, bytes, &mut pos, "state dict")?)?;
    let Value::List(keys) = pickle_at(path, bytes, &mut pos, "storage keys")? else {
        return Err(WeightsError::file(path, "storage key list missing"));
    };
    let mut kinds = HashMap::new();
    for (_, view) in &views {
        let s = storage_ref(path, &view.storage)?;
        kinds.insert(s.key, s.kind);
    }
    let mut storages = HashMap::new();
    for key in keys {
        let Value::Str(key) = key else {
            return Err(WeightsError::file(path, "storage key is not a string"));
        };
        let kind = *kinds.get(&key).ok_or_else(|| {
            WeightsError::file(path, format!("storage `{key}` is used by no tensor"))
        })?;
        let truncated = || {
            WeightsError::file(
                path,
                format!("truncated: storage `{key}` ends past the end of the file"),
            )
        };
        let count_bytes = bytes.get(pos..pos + 8).ok_or_else(truncated)?;
        let count = u64::from_le_bytes(count_bytes.try_into().expect("8 bytes")) as usize;
        let start = pos + 8;
        let end = count
            .checked_mul(kind.size())
            .and_then(|n| n.checked_add(start))
            .filter(|&e| e <= bytes.len())
            .ok_or_else(truncated)?;
        storages.insert(key, &bytes[start..end]);
        pos = end;
    }
    materialise(path, views, &storages)
}

fn read_zip(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, Tensor>> {
    let bad =
        |e: zip::result::ZipError| WeightsError::file(path, format!("corrupt zip archive: {e}"));
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(bad)?;
    let pickle_name = archive
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .find(|n| n.ends_with("data.pkl"))
        .ok_or_else(|| {
            WeightsError::file(
                path,
                "zip archive without data.pkl: not a PyTorch checkpoint",
            )
        })?;
    let prefix = pickle_name.trim_end_matches("data.pkl").to_owned();
    let mut read_entry = |name: &str| -> Result<Vec<u8>> {
        let mut entry = archive.by_name(name).map_err(bad)?;
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .map_err(|e| WeightsError::file(path, format!("cannot read `{name}`: {e}")))?;
        Ok(data)
    };
    let pkl = read_entry(&pickle_name)?;
    let views = state_dict(path, pickle_at(path, &pkl, &mut 0, "data.pkl")?)?;
    let mut owned = HashMap::new();
    for (_, view) in &views {
        let s = storage_ref(path, &view.storage)?;
        if let std::collections::hash_map::Entry::Vacant(slot) = owned.entry(s.key) {
            let data = read_entry(&format!("{prefix}data/{}", slot.key()))?;
            slot.insert(data);
        }
    }
    let storages: HashMap<String, &[u8]> = owned
        .iter()
        .map(|(k, v)| (k.clone(), v.as_slice()))
        .collect();
    materialise(path, views, &storages)
}
