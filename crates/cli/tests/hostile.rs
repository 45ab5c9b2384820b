//! Hostile and broken inputs through the binary, each run in a child process with its address space
//! limited (`RLIMIT_AS`): the exit code, one clear error line naming the file, memory within the limit,
//! and no output file half-written or changed. The hostile files are tiny (fuzz/regressions, written by
//! fuzz/make_seeds.py) or generated here.
#![cfg(target_os = "linux")]

mod common;

use common::{asset_image, effnet, lite0_pth, root, scratch};
use effnet_weights::safetensors_io::{read_safetensors, write_safetensors};
use serde_json::Value;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MIB: u64 = 1 << 20;

/// Runs `effnet args` with its address space limited to `limit_mib` MiB (allocator arenas capped so that
/// the limit measures what the program asks for, not how many arenas glibc reserves).
fn limited(args: &[&str], limit_mib: u64) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_effnet"));
    command.args(args).env("MALLOC_ARENA_MAX", "2");
    let limit = limit_mib * MIB;
    // SAFETY: `setrlimit` is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let rlimit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &rlimit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    command.output().expect("the binary runs")
}

/// Asserts a refusal: exit code 1 (not an abort or a panic), and exactly one `effnet: error:` line, which
/// contains every needle.
fn refused(o: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "exit code; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("effnet: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    for needle in needles {
        assert!(errors[0].contains(needle), "`{needle}` in: {}", errors[0]);
    }
}

/// `effnet train` of B0 from scratch on `data` into `run` at `img_size` pixels, one epoch, plus `extra`.
fn train_b0(data: &Path, run: &Path, img_size: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--model",
        "b0",
        "--img-size",
        img_size,
        "--epochs",
        "1",
    ];
    args.extend(extra);
    limited(&args, 4096)
}

fn regression(target: &str, name: &str) -> String {
    root()
        .join("fuzz/regressions")
        .join(target)
        .join(name)
        .display()
        .to_string()
}

/// `effnet predict --json` of every image in `dir` with the real Lite0 weights.
fn predict_folder(dir: &Path) -> Output {
    limited(
        &[
            "predict",
            "--weights",
            &lite0(),
            "--json",
            dir.to_str().unwrap(),
        ],
        1024,
    )
}

fn lite0() -> String {
    lite0_pth().display().to_string()
}

#[test]
fn weight_file_bombs_are_refused_within_bounded_memory() {
    let image = asset_image("chelsea");
    let cases = [
        ("billion_laughs.pth", "memo references copy more"),
        ("huge_memo_index.pth", "no tensors found"),
        ("zero_stride.pth", "holds more elements than its storage"),
        ("stride_overflow.pth", "reads past the end of its storage"),
        ("zip_bomb.pth", "zip bomb"),
    ];
    for (name, why) in cases {
        let file = regression("pth", name);
        let o = limited(&["predict", "--weights", &file, &image], 512);
        refused(&o, &[name, why]);
    }
    // 2 MB of nested lists (generated: too large to keep in the repository).
    let dir = scratch("hostile-deep");
    let legacy_head: &[u8] =
        b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.\x80\x02M\xe9\x03.\x80\x02}.";
    let mut deep = legacy_head.to_vec();
    deep.extend(b"\x80\x02");
    deep.extend(std::iter::repeat_n(b']', 1_000_000));
    deep.extend(std::iter::repeat_n(b'a', 999_999));
    deep.push(b'.');
    let path = dir.join("deep.pth");
    std::fs::write(&path, &deep).unwrap();
    let o = limited(
        &["predict", "--weights", path.to_str().unwrap(), &image],
        512,
    );
    refused(&o, &["deep.pth", "nested deeper than 64"]);
}

#[test]
fn a_refused_image_is_one_warning_and_one_json_entry_and_the_rest_is_processed() {
    let dir = scratch("hostile-images");
    for name in ["60000x60000.png", "truncated.jpg"] {
        std::fs::copy(regression("image", name), dir.join(name)).unwrap();
    }
    std::fs::copy(asset_image("chelsea"), dir.join("chelsea.png")).unwrap();
    let o = predict_folder(&dir);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    let results: Vec<Value> = serde_json::from_slice(&o.stdout).expect("JSON despite the failures");
    assert_eq!(results.len(), 3);
    let error = |name: &str| {
        let r = results
            .iter()
            .find(|r| r["file"].as_str().unwrap().ends_with(name))
            .unwrap();
        r["error"].as_str().unwrap_or("").to_string()
    };
    assert!(error("60000x60000.png").contains("over the limit of 100.0 megapixels"));
    assert!(error("truncated.jpg").contains("truncated JPEG"));
    assert!(
        error("chelsea.png").is_empty(),
        "the good image is classified"
    );
    let warnings = stderr.lines().filter(|l| l.contains("warning: skipped"));
    assert_eq!(warnings.count(), 2, "{stderr}");
    // Raising the limit is what lets a big image through: here the header is refused by the decoder's
    // own memory limit instead, still without allocating the image.
    let o = limited(
        &[
            "predict",
            "--weights",
            &lite0(),
            "--max-pixels",
            "4G",
            &regression("image", "60000x60000.png"),
        ],
        1024,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("60000x60000.png"));
}

#[test]
fn sizes_from_flags_are_checked_against_the_machine() {
    let cases: [(&[&str], &[&str]); 5] = [
        (
            &["bench", "b0", "--batch", "100000"],
            &["needs", "available"],
        ),
        (
            &["bench", "b0", "--num-classes", "4000000000"],
            &["needs", "available"],
        ),
        (&["bench", "b0", "--min-seconds", "inf"], &["--min-seconds"]),
        (&["--threads", "10000", "bench", "b0"], &["--threads 10000"]),
        (
            &["bench", "b0", "--train", "--batch", "100000"],
            &["training b0", "needs"],
        ),
    ];
    for (args, needles) in cases {
        refused(&limited(args, 1024), needles);
    }
    let dir = scratch("hostile-img-size");
    let (train, _) = common::textures(&dir);
    let run = dir.join("run");
    let o = train_b0(&train, &run, "100000", &[]);
    refused(&o, &["training", "needs", "available"]);
    assert!(!run.exists(), "nothing written");
}

/// The Lite0 weights converted to safetensors in `dir`, with `edit` applied to their tensors and metadata.
fn edited_weights(
    dir: &Path,
    name: &str,
    edit: impl FnOnce(&mut effnet_weights::safetensors_io::SafetensorsContents),
) -> PathBuf {
    let out = dir.join(name);
    let o = effnet(&["convert", &lite0(), out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut contents = read_safetensors(&out).unwrap();
    edit(&mut contents);
    write_safetensors(&out, &contents.tensors, contents.metadata).unwrap();
    out
}

#[test]
fn non_finite_weights_and_bad_metadata_are_refused_on_load_and_not_copied() {
    let dir = scratch("hostile-values");
    let image = asset_image("chelsea");
    let nan = edited_weights(&dir, "nan.safetensors", |c| {
        c.tensors.get_mut("stem.weight").unwrap().data[3] = f32::NAN;
    });
    refused(
        &limited(
            &["predict", "--weights", nan.to_str().unwrap(), &image],
            1024,
        ),
        &["nan.safetensors", "`stem.weight`", "NaN"],
    );
    let copy = dir.join("copy.safetensors");
    refused(
        &limited(
            &["convert", nan.to_str().unwrap(), copy.to_str().unwrap()],
            1024,
        ),
        &["`stem.weight`"],
    );
    assert!(!copy.exists(), "convert wrote nothing");
    for (key, value) in [
        ("bn_eps", "NaN"),
        ("bn_eps", "-1"),
        ("std", "0,1,1"),
        ("crop_pct", "NaN"),
    ] {
        let bad = edited_weights(&dir, "meta.safetensors", |c| {
            c.metadata.insert(key.into(), value.into());
        });
        refused(
            &limited(
                &["predict", "--weights", bad.to_str().unwrap(), &image],
                1024,
            ),
            &["meta.safetensors", &format!("metadata `{key}`")],
        );
    }
    // A damaged safetensors file is named as one.
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, [7u8; 100]).unwrap();
    refused(
        &limited(
            &["predict", "--weights", junk.to_str().unwrap(), &image],
            512,
        ),
        &["junk.safetensors", "not a valid safetensors file"],
    );
}

#[test]
fn training_refuses_unusable_data_and_writes_nothing() {
    let dir = scratch("hostile-train-data");
    for class in ["a", "b"] {
        std::fs::create_dir_all(dir.join("corrupt").join(class)).unwrap();
        for i in 0..3 {
            std::fs::write(dir.join(format!("corrupt/{class}/{i}.png")), b"not a png").unwrap();
        }
    }
    std::fs::create_dir_all(dir.join("single/only")).unwrap();
    std::fs::copy(asset_image("chelsea"), dir.join("single/only/1.png")).unwrap();
    std::fs::copy(asset_image("coffee"), dir.join("single/only/2.png")).unwrap();
    let train = |data: &str, run: &str, extra: &[&str]| {
        let run = dir.join(run);
        (train_b0(&dir.join(data), &run, "32", extra), run)
    };
    let (o, run) = train("corrupt", "run1", &[]);
    refused(&o, &["class `a` has no readable training image", "0.png"]);
    assert!(!run.join("best.safetensors").exists());
    let (o, _) = train("single", "run2", &[]);
    refused(&o, &["at least two classes", "only"]);
    let (o, _) = train("corrupt", "run3", &["--val-fraction", "0"]);
    refused(&o, &["--val-fraction"]);
    // Two class folders whose names are not UTF-8 would collapse into one label.
    use std::os::unix::ffi::OsStrExt;
    let odd = dir.join("odd");
    for name in [&b"caf\xe9"[..], &b"caf\xe8"[..]] {
        let class = odd.join(std::ffi::OsStr::from_bytes(name));
        std::fs::create_dir_all(&class).unwrap();
        std::fs::copy(asset_image("chelsea"), class.join("1.png")).unwrap();
    }
    let (o, _) = train("odd", "run4", &[]);
    refused(&o, &["not valid UTF-8"]);
}

#[test]
fn a_link_cycle_lists_each_image_once() {
    let dir = scratch("hostile-cycle");
    std::fs::copy(asset_image("chelsea"), dir.join("chelsea.png")).unwrap();
    std::os::unix::fs::symlink(".", dir.join("self")).unwrap();
    std::os::unix::fs::symlink("chelsea.png", dir.join("again.png")).unwrap();
    let o = predict_folder(&dir);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let results: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(results.len(), 1, "{results:?}");
}

#[test]
fn outputs_are_checked_first_written_as_a_pair_and_never_clobbered() {
    let dir = scratch("hostile-outputs");
    let image = asset_image("chelsea");
    // The output folder is checked before any work: the weights file is never opened.
    let missing = dir.join("no/such/folder/e.npy");
    refused(
        &limited(
            &[
                "embed",
                "--weights",
                "/nonexistent.pth",
                "--out",
                missing.to_str().unwrap(),
                &image,
            ],
            512,
        ),
        &["output folder does not exist"],
    );
    // Someone else's .txt beside the array is not overwritten.
    let out = dir.join("e.npy");
    std::fs::write(dir.join("e.txt"), "my notes\n").unwrap();
    refused(
        &limited(
            &[
                "embed",
                "--weights",
                &lite0(),
                "--out",
                out.to_str().unwrap(),
                &image,
            ],
            1024,
        ),
        &["e.txt", "not the file list"],
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("e.txt")).unwrap(),
        "my notes\n"
    );
    assert!(!out.exists());
    // A run folder another process holds is refused at once.
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    let held = std::fs::File::create(run.join(".lock")).unwrap();
    held.lock().unwrap();
    let (train, _) = common::textures(&dir);
    refused(
        &train_b0(&train, &run, "32", &[]),
        &["in use by another effnet process"],
    );
    assert!(!run.join("config.json").exists());
    drop(held);
    // The same conversion gives the same bytes every time.
    let files: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            let out = dir.join(format!("c{i}.safetensors"));
            let o = effnet(&["convert", &lite0(), out.to_str().unwrap()]);
            assert!(o.status.success());
            std::fs::read(out).unwrap()
        })
        .collect();
    assert!(
        files[1] == files[0] && files[2] == files[0],
        "byte-reproducible"
    );
    // --top-k 0 is refused, not turned into 1.
    refused(
        &limited(
            &["predict", "--weights", &lite0(), "--top-k", "0", &image],
            1024,
        ),
        &["--top-k"],
    );
}
