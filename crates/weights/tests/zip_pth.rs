//! A zip-format `.pth` (torch >= 1.6) built here with the same pickle opcodes `torch.save` writes, in the timm
//! layout, with one tensor stored transposed (a strided view); loading it must give back the exact tensors.

use effnet_arch::scaling::custom;
use effnet_arch::{resolve, Variant};
use effnet_weights::layout::{params, Layout};
use effnet_weights::random::random_weights;
use effnet_weights::{load, LoadOptions};
use std::io::Write;

/// Just enough of a protocol-2 pickler to write a torch state dict.
struct Pickler(Vec<u8>);

impl Pickler {
    fn op(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
    fn global(&mut self, module: &str, name: &str) {
        self.op(format!("c{module}\n{name}\n").as_bytes());
    }
    fn string(&mut self, s: &str) {
        self.op(b"X");
        self.op(&(s.len() as u32).to_le_bytes());
        self.op(s.as_bytes());
    }
    fn int(&mut self, v: usize) {
        // LONG1 with 8 bytes: any usize, as torch writes large ones.
        self.op(b"\x8a\x09");
        self.op(&(v as u64).to_le_bytes());
        self.op(&[0]);
    }
    fn tuple(&mut self, values: &[usize]) {
        self.op(b"(");
        values.iter().for_each(|&v| self.int(v));
        self.op(b"t");
    }
    /// `key: _rebuild_tensor_v2(('storage', FloatStorage, storage, 'cpu', numel), offset, size, stride, False, OrderedDict())`
    fn tensor(&mut self, key: &str, storage: &str, numel: usize, size: &[usize], stride: &[usize]) {
        self.string(key);
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.op(b"((");
        self.string("storage");
        self.global("torch", "FloatStorage");
        self.string(storage);
        self.string("cpu");
        self.int(numel);
        self.op(b"tQ");
        self.int(0);
        self.tuple(size);
        self.tuple(stride);
        self.op(b"\x89");
        self.global("collections", "OrderedDict");
        self.op(b")Rq\x05tR");
    }
}

fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

#[test]
fn a_zip_pth_in_timm_layout_loads_exactly_with_strides_honoured() {
    let config = custom(&Variant::by_name("b0").unwrap().config(), 0.25, 0.34, 64).unwrap();
    let plan = resolve(&config).unwrap();
    let tensors = random_weights(&plan, 7);
    let mut pickle = Pickler(b"\x80\x02".to_vec());
    pickle.global("collections", "OrderedDict");
    pickle.op(b")Rq\x00(");
    let mut storages = Vec::new();
    for (i, p) in params(&plan).iter().enumerate() {
        let t = &tensors[&p.name];
        let key = Layout::Timm.key(&plan, p);
        if p.name == "classifier.weight" {
            // Stored like `w.t().contiguous().t()`: storage in [in][out] order, strides (1, out).
            let (out, inp) = (t.shape[0], t.shape[1]);
            let mut transposed = vec![0f32; t.data.len()];
            for o in 0..out {
                for k in 0..inp {
                    transposed[k * out + o] = t.data[o * inp + k];
                }
            }
            pickle.tensor(&key, &i.to_string(), t.data.len(), &t.shape, &[1, out]);
            storages.push((i.to_string(), transposed));
        } else {
            pickle.tensor(
                &key,
                &i.to_string(),
                t.data.len(),
                &t.shape,
                &contiguous_strides(&t.shape),
            );
            storages.push((i.to_string(), t.data.clone()));
        }
    }
    pickle.op(b"u.");

    let path = std::env::temp_dir().join(format!("effnet-zip-{}.pth", std::process::id()));
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", stored).unwrap();
    zip.write_all(&pickle.0).unwrap();
    for (key, data) in &storages {
        zip.start_file(format!("archive/data/{key}"), stored)
            .unwrap();
        zip.write_all(
            &data
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        )
        .unwrap();
    }
    zip.start_file("archive/version", stored).unwrap();
    zip.write_all(b"3\n").unwrap();
    zip.finish().unwrap();

    let loaded = load(
        &path,
        &LoadOptions {
            model: Some(config),
            ..LoadOptions::default()
        },
    )
    .unwrap();
    assert_eq!(loaded.layout, Layout::Timm);
    assert_eq!(loaded.tensors, tensors, "every tensor back bit for bit");
    std::fs::remove_file(&path).unwrap();
}

/// Writes a zip `.pth` holding one tensor `w` of `size` and `stride` over a float storage of `data`.
fn one_tensor_pth(
    name: &str,
    (size, stride): (&[usize], &[usize]),
    data: &[f32],
    compression: zip::CompressionMethod,
) -> std::path::PathBuf {
    let mut pickle = Pickler(b"\x80\x02}q\x00(".to_vec());
    pickle.tensor("w", "0", data.len(), size, stride);
    pickle.op(b"u.");
    let path = std::env::temp_dir().join(format!("effnet-{name}-{}.pth", std::process::id()));
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let options = zip::write::SimpleFileOptions::default().compression_method(compression);
    zip.start_file("archive/data.pkl", options).unwrap();
    zip.write_all(&pickle.0).unwrap();
    zip.start_file("archive/data/0", options).unwrap();
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    zip.write_all(&bytes).unwrap();
    zip.finish().unwrap();
    path
}

fn read_error(path: &std::path::Path) -> String {
    let e = effnet_weights::pth::read_pth(path).unwrap_err().to_string();
    std::fs::remove_file(path).unwrap();
    e
}

#[test]
fn a_zero_stride_cannot_expand_a_small_storage_into_a_huge_tensor() {
    let stored = zip::CompressionMethod::Stored;
    let path = one_tensor_pth("zero-stride", (&[1 << 28], &[0]), &[1.0], stored);
    let e = read_error(&path);
    assert!(e.contains("holds more elements than its storage"), "{e}");
}

#[test]
fn strides_whose_extent_overflows_are_an_error_not_a_panic() {
    let stored = zip::CompressionMethod::Stored;
    let big = 1usize << 63;
    let path = one_tensor_pth("overflow", (&[2, 2], &[big, big]), &[0.0; 4], stored);
    let e = read_error(&path);
    assert!(e.contains("reads past the end of its storage"), "{e}");
}

#[test]
fn a_storage_that_inflates_a_hundredfold_is_refused() {
    let deflated = zip::CompressionMethod::Deflated;
    let zeros = vec![0f32; 5 << 20]; // 20 MiB of zeros deflate a thousandfold
    let path = one_tensor_pth("bomb", (&[zeros.len()], &[1]), &zeros, deflated);
    assert!(std::fs::metadata(&path).unwrap().len() < 1 << 20);
    let e = read_error(&path);
    assert!(e.contains("zip bomb"), "{e}");
}
