//! TensorFlow checkpoints (the tensor-bundle format `tf.train.Saver` and `tf.train.Checkpoint` write), read
//! without TensorFlow, so the official EfficientNet checkpoints load directly.
//!
//! `PREFIX.index` is a LevelDB-style sorted table: data blocks of prefix-compressed `(key, value)`
//! entries (snappy-compressed when that saved space), an index block of their handles, and a footer ending
//! in a magic number; every block carries a masked CRC32C. The key `""` holds the `BundleHeaderProto`
//! (shard count, endianness); every other key is a variable name with its `BundleEntryProto` (dtype, shape,
//! shard, offset, size, CRC32C of the bytes). The bytes are in `PREFIX.data-0000K-of-0000N`.
//!
//! Official checkpoints keep an exponential moving average of every variable beside it
//! (`NAME/ExponentialMovingAverage`), which is what the published accuracy was measured with: it replaces
//! the variable here. Optimizer slots (`NAME/RMSProp`, ...) and integer counters are left out.

use crate::error::{Result, WeightsError};
use crate::tensor::{FloatType, Tensor};
use prost::Message;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The table footer's magic number.
const TABLE_MAGIC: u64 = 0xdb47_7524_8b80_fb57;
/// Footer length: two block handles padded to 40 bytes, then the magic.
const FOOTER_LEN: u64 = 48;
/// Largest index file read (the official B7 index is under 100 KiB).
const MAX_INDEX_BYTES: u64 = 256 << 20;
/// The suffix of the moving averages official checkpoints keep.
const EMA_SUFFIX: &str = "/ExponentialMovingAverage";
/// Variable-name parts of optimizer state, never weights.
const OPTIMIZER_SLOTS: [&str; 4] = [
    "/RMSProp",
    "/Momentum",
    "/Adam",
    "/ExponentialMovingAverage",
];

/// `BundleHeaderProto`.
#[derive(Clone, PartialEq, prost::Message)]
struct BundleHeader {
    #[prost(int32, tag = "1")]
    num_shards: i32,
    /// 0 little-endian, 1 big-endian.
    #[prost(int32, tag = "2")]
    endianness: i32,
}

/// `TensorShapeProto.Dim`.
#[derive(Clone, PartialEq, prost::Message)]
struct Dim {
    #[prost(int64, tag = "1")]
    size: i64,
}

/// `TensorShapeProto`.
#[derive(Clone, PartialEq, prost::Message)]
struct Shape {
    #[prost(message, repeated, tag = "2")]
    dim: Vec<Dim>,
    #[prost(bool, tag = "3")]
    unknown_rank: bool,
}

/// `TensorSliceProto` (only its presence matters: partitioned variables are refused).
#[derive(Clone, PartialEq, prost::Message)]
struct Slice {}

/// `BundleEntryProto`.
#[derive(Clone, PartialEq, prost::Message)]
struct BundleEntry {
    #[prost(int32, tag = "1")]
    dtype: i32,
    #[prost(message, optional, tag = "2")]
    shape: Option<Shape>,
    #[prost(int32, tag = "3")]
    shard_id: i32,
    #[prost(int64, tag = "4")]
    offset: i64,
    #[prost(int64, tag = "5")]
    size: i64,
    #[prost(fixed32, tag = "6")]
    crc32c: u32,
    #[prost(message, repeated, tag = "7")]
    slices: Vec<Slice>,
}

/// The element type of a floating-point TF `DataType`.
fn float_dtype(dtype: i32) -> Option<FloatType> {
    match dtype {
        1 => Some(FloatType::F32),   // DT_FLOAT
        2 => Some(FloatType::F64),   // DT_DOUBLE
        14 => Some(FloatType::Bf16), // DT_BFLOAT16
        19 => Some(FloatType::F16),  // DT_HALF
        _ => None,
    }
}

/// LevelDB's and TF's masked CRC32C.
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// The checkpoint prefix `path` names: `PREFIX`, `PREFIX.index`, a data shard, or a folder holding a
/// `checkpoint` state file (or a single `.index`). `None` when `path` is not a TF checkpoint.
pub fn checkpoint_prefix(path: &Path) -> Option<PathBuf> {
    let text = path.to_str()?;
    if path.is_dir() {
        if let Ok(state) = std::fs::read_to_string(path.join("checkpoint")) {
            let name = state.lines().find_map(|l| {
                let rest = l.trim().strip_prefix("model_checkpoint_path:")?;
                Some(rest.trim().trim_matches('"').to_string())
            })?;
            // TF writes the path as it was saved, often absolute; a moved folder still holds the file.
            let saved = Path::new(&name);
            let moved = saved.file_name().map(|f| path.join(f));
            let prefix = moved
                .into_iter()
                .chain(std::iter::once(path.join(saved)))
                .find(|p| index_file(p).is_file())?;
            return Some(prefix);
        }
        let indexes: Vec<PathBuf> = std::fs::read_dir(path)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "index"))
            .collect();
        return match indexes.as_slice() {
            [one] => Some(one.with_extension("")),
            _ => None,
        };
    }
    if let Some(prefix) = text.strip_suffix(".index") {
        return Some(PathBuf::from(prefix));
    }
    if let Some((prefix, _)) = text.rsplit_once(".data-") {
        let prefix = PathBuf::from(prefix);
        return index_file(&prefix).is_file().then_some(prefix);
    }
    index_file(path).is_file().then(|| path.to_path_buf())
}

/// The index file of a checkpoint prefix (what identifies the checkpoint, e.g. for its sha256).
pub fn index_file(prefix: &Path) -> PathBuf {
    let mut name = prefix.as_os_str().to_os_string();
    name.push(".index");
    PathBuf::from(name)
}

/// A little-endian base-128 integer at `*at`, advancing it.
fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// A block handle (offset, size) at `*at`.
fn handle(bytes: &[u8], at: &mut usize) -> Option<(u64, u64)> {
    Some((varint(bytes, at)?, varint(bytes, at)?))
}

/// Reads an index file's tables.
struct Table<'a> {
    path: &'a Path,
    bytes: Vec<u8>,
}

impl Table<'_> {
    fn bad(&self, what: impl Into<String>) -> WeightsError {
        WeightsError::file(
            self.path,
            format!("not a TensorFlow checkpoint index: {}", what.into()),
        )
    }

    /// The contents of the block at `(offset, size)`, its checksum verified and decompressed.
    fn block(&self, (offset, size): (u64, u64)) -> Result<Vec<u8>> {
        let end = offset
            .checked_add(size)
            .and_then(|e| e.checked_add(5))
            .filter(|&e| e <= self.bytes.len() as u64)
            .ok_or_else(|| self.bad("a block lies outside the file"))?;
        let (offset, size) = (offset as usize, size as usize);
        let contents = &self.bytes[offset..offset + size];
        let kind = self.bytes[offset + size];
        let stored = u32::from_le_bytes(
            self.bytes[offset + size + 1..end as usize]
                .try_into()
                .expect("4 bytes"),
        );
        if masked_crc(&self.bytes[offset..offset + size + 1]) != stored {
            return Err(self.bad(format!("the block at byte {offset} fails its checksum")));
        }
        match kind {
            0 => Ok(contents.to_vec()),
            1 => {
                let len = snap::raw::decompress_len(contents)
                    .map_err(|e| self.bad(format!("snappy block at byte {offset}: {e}")))?;
                if len as u64 > MAX_INDEX_BYTES {
                    return Err(self.bad("a block decompresses to more than the index limit"));
                }
                snap::raw::Decoder::new()
                    .decompress_vec(contents)
                    .map_err(|e| self.bad(format!("snappy block at byte {offset}: {e}")))
            }
            other => Err(self.bad(format!("unknown block compression {other}"))),
        }
    }

    /// The `(key, value)` entries of a block.
    fn entries(&self, block: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let count_at = block
            .len()
            .checked_sub(4)
            .ok_or_else(|| self.bad("a block is too short"))?;
        let restarts = u32::from_le_bytes(block[count_at..].try_into().expect("4 bytes")) as usize;
        let end = restarts
            .checked_mul(4)
            .and_then(|r| count_at.checked_sub(r))
            .ok_or_else(|| self.bad("a block's restart array is larger than the block"))?;
        let mut out = Vec::new();
        let (mut at, mut key) = (0usize, Vec::<u8>::new());
        while at < end {
            let start = at;
            let bad = || self.bad(format!("a block entry at byte {start} is cut"));
            let shared = varint(block, &mut at).ok_or_else(bad)? as usize;
            let fresh = varint(block, &mut at).ok_or_else(bad)? as usize;
            let len = varint(block, &mut at).ok_or_else(bad)? as usize;
            if shared > key.len()
                || at
                    .checked_add(fresh)
                    .and_then(|a| a.checked_add(len))
                    .is_none_or(|e| e > end)
            {
                return Err(bad());
            }
            key.truncate(shared);
            key.extend_from_slice(&block[at..at + fresh]);
            at += fresh;
            out.push((key.clone(), block[at..at + len].to_vec()));
            at += len;
        }
        Ok(out)
    }

    /// Every `(key, value)` of the table, in key order.
    fn all(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let len = self.bytes.len() as u64;
        if len < FOOTER_LEN {
            return Err(self.bad("shorter than its footer"));
        }
        let footer = &self.bytes[(len - FOOTER_LEN) as usize..];
        if u64::from_le_bytes(footer[40..48].try_into().expect("8 bytes")) != TABLE_MAGIC {
            return Err(self.bad("no table magic number at its end"));
        }
        let mut at = 0;
        let _meta = handle(footer, &mut at).ok_or_else(|| self.bad("a cut footer"))?;
        let index = handle(footer, &mut at).ok_or_else(|| self.bad("a cut footer"))?;
        let mut out = Vec::new();
        for (_, value) in self.entries(&self.block(index)?)? {
            let data = handle(&value, &mut 0).ok_or_else(|| self.bad("a cut block handle"))?;
            out.extend(self.entries(&self.block(data)?)?);
        }
        Ok(out)
    }
}

/// A parsed index: the shard count and every variable's entry.
struct Index {
    num_shards: i32,
    entries: BTreeMap<String, BundleEntry>,
}

/// Parses the bytes of an index file (`path` names it in errors).
fn parse_index(path: &Path, bytes: Vec<u8>) -> Result<Index> {
    let table = Table { path, bytes };
    let mut header = None;
    let mut entries = BTreeMap::new();
    for (key, value) in table.all()? {
        if key.is_empty() {
            header = Some(
                BundleHeader::decode(value.as_slice())
                    .map_err(|e| table.bad(format!("header: {e}")))?,
            );
            continue;
        }
        let name = String::from_utf8(key).map_err(|_| table.bad("a variable name is not UTF-8"))?;
        let entry = BundleEntry::decode(value.as_slice())
            .map_err(|e| table.bad(format!("entry `{name}`: {e}")))?;
        entries.insert(name, entry);
    }
    let header = header.ok_or_else(|| table.bad("no bundle header"))?;
    if header.endianness != 0 {
        return Err(WeightsError::file(
            path,
            "a big-endian checkpoint; effnet reads little-endian ones",
        ));
    }
    if !(1..=10_000).contains(&header.num_shards) {
        return Err(table.bad(format!("{} shards", header.num_shards)));
    }
    Ok(Index {
        num_shards: header.num_shards,
        entries,
    })
}

/// Every variable of a checkpoint index with its shape, as TF's `tf.train.list_variables` lists them,
/// from the index file's bytes (`path` names it in errors).
pub fn list_variables(path: &Path, bytes: Vec<u8>) -> Result<Vec<(String, Vec<i64>)>> {
    let index = parse_index(path, bytes)?;
    Ok(index
        .entries
        .into_iter()
        .map(|(name, e)| {
            (
                name,
                e.shape
                    .unwrap_or_default()
                    .dim
                    .iter()
                    .map(|d| d.size)
                    .collect(),
            )
        })
        .collect())
}

/// Reads the floating-point variables of the checkpoint at `prefix` as f32 tensors, moving averages in
/// place of the variables they average, optimizer slots and counters left out.
pub fn read_tf_checkpoint(prefix: &Path) -> Result<BTreeMap<String, Tensor>> {
    let index = index_file(prefix);
    let size = std::fs::metadata(&index)
        .map_err(|e| WeightsError::file(&index, format!("cannot read: {e}")))?
        .len();
    if size > MAX_INDEX_BYTES {
        return Err(WeightsError::file(
            &index,
            format!("{size} bytes is more than a checkpoint index holds"),
        ));
    }
    let bytes = std::fs::read(&index)
        .map_err(|e| WeightsError::file(&index, format!("cannot read: {e}")))?;
    let Index {
        num_shards,
        entries,
    } = parse_index(&index, bytes)?;
    let bad = |what: String| {
        WeightsError::file(&index, format!("not a TensorFlow checkpoint index: {what}"))
    };
    let wanted: Vec<(&String, &String)> = entries
        .keys()
        .filter(|name| !OPTIMIZER_SLOTS.iter().any(|s| name.contains(s)))
        .filter(|name| float_dtype(entries[*name].dtype).is_some())
        .map(|name| {
            let ema = format!("{name}{EMA_SUFFIX}");
            let source = entries.get_key_value(&ema).map_or(name, |(k, _)| k);
            (name, source)
        })
        .collect();
    let mut shards: BTreeMap<i32, std::fs::File> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (name, source) in wanted {
        let entry = &entries[source];
        if !entry.slices.is_empty() {
            return Err(WeightsError::file(
                &index,
                format!("`{source}` is a partitioned variable; effnet reads whole ones"),
            ));
        }
        let float = float_dtype(entry.dtype)
            .ok_or_else(|| bad(format!("`{source}` is not floating point")))?;
        let shape = entry.shape.clone().unwrap_or_default();
        if shape.unknown_rank || shape.dim.iter().any(|d| d.size < 0) {
            return Err(bad(format!("`{source}` has no full shape")));
        }
        let dims: Vec<usize> = shape.dim.iter().map(|d| d.size as usize).collect();
        let count = dims
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| bad(format!("`{source}`'s shape overflows")))?;
        if count.checked_mul(float.size()) != Some(entry.size as usize)
            || entry.size < 0
            || entry.offset < 0
        {
            return Err(bad(format!(
                "`{source}`: {} bytes do not hold shape {dims:?}",
                entry.size
            )));
        }
        if !(0..num_shards).contains(&entry.shard_id) {
            return Err(bad(format!(
                "`{source}` is in shard {} of {}",
                entry.shard_id, num_shards
            )));
        }
        let shard_path = PathBuf::from(format!(
            "{}.data-{:05}-of-{:05}",
            prefix.display(),
            entry.shard_id,
            num_shards
        ));
        let file = match shards.entry(entry.shard_id) {
            std::collections::btree_map::Entry::Occupied(f) => f.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(std::fs::File::open(&shard_path).map_err(|e| {
                    WeightsError::file(&shard_path, format!("cannot open the data shard: {e}"))
                })?)
            }
        };
        let shard_len = file.metadata().map_or(0, |m| m.len());
        if (entry.offset as u64)
            .checked_add(entry.size as u64)
            .is_none_or(|e| e > shard_len)
        {
            return Err(WeightsError::file(
                &shard_path,
                format!("`{source}` lies beyond the end of the data"),
            ));
        }
        let mut raw = vec![0u8; entry.size as usize];
        file.seek(SeekFrom::Start(entry.offset as u64))
            .and_then(|_| file.read_exact(&mut raw))
            .map_err(|e| WeightsError::file(&shard_path, format!("cannot read `{source}`: {e}")))?;
        if masked_crc(&raw) != entry.crc32c {
            return Err(WeightsError::file(
                &shard_path,
                format!("`{source}` fails its checksum: the data is damaged"),
            ));
        }
        let data = float.decode(&raw);
        out.insert(name.clone(), Tensor::new(dims, data));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_mask_is_leveldbs() {
        // LevelDB's crc32c_test: Mask(Value("foo")) round-trips and differs from the plain CRC.
        let crc = crc32c::crc32c(b"foo");
        let masked = masked_crc(b"foo");
        assert_ne!(crc, masked);
        let unmasked = masked.wrapping_sub(0xa282_ead8).rotate_left(15);
        assert_eq!(unmasked, crc);
        // The CRC32C of "123456789" is 0xe3069283 (the standard check value).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }

    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// A block of `entries` (no key sharing, one restart), compressed with snappy when `snappy`, with its
    /// trailer; returns its bytes and handle size.
    fn block(entries: &[(&[u8], Vec<u8>)], snappy: bool) -> (Vec<u8>, u64) {
        let mut raw = Vec::new();
        for (k, v) in entries {
            put_varint(&mut raw, 0);
            put_varint(&mut raw, k.len() as u64);
            put_varint(&mut raw, v.len() as u64);
            raw.extend_from_slice(k);
            raw.extend_from_slice(v);
        }
        raw.extend_from_slice(&0u32.to_le_bytes());
        raw.extend_from_slice(&1u32.to_le_bytes());
        let (mut contents, kind) = if snappy {
            (snap::raw::Encoder::new().compress_vec(&raw).unwrap(), 1u8)
        } else {
            (raw, 0u8)
        };
        let size = contents.len() as u64;
        contents.push(kind);
        let crc = masked_crc(&contents);
        contents.extend_from_slice(&crc.to_le_bytes());
        (contents, size)
    }

    #[test]
    fn a_snappy_compressed_table_reads_back() {
        let dir = std::env::temp_dir().join(format!("effnet-tf-snappy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let values: Vec<f32> = (0..64).map(|i| i as f32 * 0.5).collect();
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let header = BundleHeader {
            num_shards: 1,
            endianness: 0,
        }
        .encode_to_vec();
        let entry = BundleEntry {
            dtype: 1,
            shape: Some(Shape {
                dim: vec![Dim { size: 8 }, Dim { size: 8 }],
                unknown_rank: false,
            }),
            shard_id: 0,
            offset: 0,
            size: data.len() as i64,
            crc32c: masked_crc(&data),
            slices: vec![],
        }
        .encode_to_vec();
        // Repeated keys compress well, so the data block really is snappy.
        let (data_block, data_size) = block(&[(b"", header), (b"w/kernel", entry)], true);
        assert_eq!(data_block[data_size as usize], 1, "snappy-compressed");
        let mut handle_bytes = Vec::new();
        put_varint(&mut handle_bytes, 0);
        put_varint(&mut handle_bytes, data_size);
        let (index_block, index_size) = block(&[(b"w/kernel\x00", handle_bytes)], false);
        let mut file = data_block.clone();
        let index_at = file.len() as u64;
        file.extend_from_slice(&index_block);
        let mut footer = Vec::new();
        put_varint(&mut footer, 0);
        put_varint(&mut footer, 0);
        put_varint(&mut footer, index_at);
        put_varint(&mut footer, index_size);
        footer.resize(40, 0);
        footer.extend_from_slice(&TABLE_MAGIC.to_le_bytes());
        file.extend_from_slice(&footer);
        let prefix = dir.join("model.ckpt");
        std::fs::write(dir.join("model.ckpt.index"), file).unwrap();
        std::fs::write(dir.join("model.ckpt.data-00000-of-00001"), &data).unwrap();
        let tensors = read_tf_checkpoint(&prefix).unwrap();
        assert_eq!(tensors["w/kernel"].shape, vec![8, 8]);
        assert_eq!(tensors["w/kernel"].data, values);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn varints_decode_and_cut_ones_are_none() {
        let mut at = 0;
        assert_eq!(varint(&[0xac, 0x02], &mut at), Some(300));
        assert_eq!(at, 2);
        assert_eq!(varint(&[0xff], &mut 0), None);
    }
}
