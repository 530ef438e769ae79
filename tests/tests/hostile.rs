//! Hostile input and operator mistakes, class by class (issue 14): each
//! test is an attack or a slip a user made with the release binary, and
//! the behaviour we promise instead: files outside the folder a file
//! governs are not read, reads are bounded, silent wrong answers are
//! refused or warned, no data is lost, and errors name file and problem.
//!
//! One file over 600 lines on purpose: every file under `tests/` is a test
//! binary of its own that links the whole stack, and CI's two cores pay
//! for each link; the classes are sections of this file instead.

mod common;
use common::{dtml, dtml_bin, dtml_err, dtml_ok, s, tiny_prepared};
use dtml_volume::{Geometry, Volume, VoxelData, Xyz, write_nifti};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// An NRRD header with a detached data file, uint8 raw, sizes 4 4 4.
fn detached_header(dir: &Path, name: &str, data_file: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!(
            "NRRD0004\ntype: uint8\ndimension: 3\nspace: left-posterior-superior\nsizes: 4 4 4\n\
             space directions: (1,0,0) (0,1,0) (0,0,1)\nencoding: raw\ndata file: {data_file}\n"
        ),
    )
    .unwrap();
    p
}

/// Runs `dtml` but kills it after `limit`: a hang is a failure, not a
/// stuck test run.
fn dtml_within(args: &[&str], limit: Duration) -> (bool, String) {
    let mut child = Command::new(dtml_bin())
        .args(args)
        .env("DTML_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.success(), err);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("dtml {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `dtml train` of one iteration at toy size on `prepared` into `run`,
/// with `extra` flags.
fn tiny_train<'a>(prepared: &'a Path, run: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        "--data",
        s(prepared),
        "--out",
        s(run),
        "--iterations",
        "1",
        "--patch",
        "32,32,16",
        "--width",
        "2",
    ];
    args.extend_from_slice(extra);
    args
}

/// `dtml generate` of a small synthetic dataset (16^3, seed 3) into `out`.
fn generate_small(out: &Path, train: usize, test: usize) {
    let (train, test) = (train.to_string(), test.to_string());
    dtml_ok(&[
        "generate",
        "--out",
        s(out),
        "--shape",
        "16,16,16",
        "--train-cases",
        &train,
        "--test-cases",
        &test,
        "--seed",
        "3",
    ]);
}

fn mask_volume(shape: Xyz<usize>, geometry: Geometry, fill: impl Fn(usize) -> u8) -> Volume {
    let n = shape.voxels();
    Volume::new(VoxelData::U8((0..n).map(fill).collect()), shape, geometry).unwrap()
}

// ---- 1. Reading files outside the dataset --------------------------------

#[test]
fn nrrd_data_files_outside_the_header_folder_are_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.raw"), [7u8; 64]).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.raw"), data.join("link.raw")).unwrap();
    std::fs::write(data.join("ok.raw"), [1u8; 64]).unwrap();

    let good = detached_header(&data, "good.nhdr", "ok.raw");
    dtml_ok(&["info", s(&good)]);
    for (name, target) in [
        ("dotdot.nhdr", "../outside/secret.raw".to_string()),
        ("deep.nhdr", "../../../../../../etc/hostname".to_string()),
        ("absolute.nhdr", s(&outside.join("secret.raw")).to_string()),
        ("symlink.nhdr", "link.raw".to_string()),
    ] {
        let h = detached_header(&data, name, &target);
        let err = dtml_err(&["info", s(&h)]);
        assert!(
            err.contains(name) && err.contains("outside"),
            "{name}: {err}"
        );
        // Refused before it is opened: nothing about the file leaks.
        assert!(
            !err.contains("64 bytes") && !err.contains("holds"),
            "{name}: {err}"
        );
    }
}

#[test]
fn devices_fifos_and_oversized_data_files_are_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A FIFO inside the folder would block a reader forever.
    let fifo = d.join("pipe.raw");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let h = detached_header(d, "fifo.nhdr", "pipe.raw");
    let (ok, err) = dtml_within(&["info", s(&h)], Duration::from_secs(20));
    assert!(!ok && err.contains("not a regular file"), "{err}");
    // A scan that is a symlink to a device, named by the user.
    let zero = d.join("zero.nrrd");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let (ok, err) = dtml_within(&["info", s(&zero)], Duration::from_secs(20));
    assert!(!ok && err.contains("not a regular file"), "{err}");
    // 4 MiB of data for a 4x4x4 header: refused by size, not read.
    std::fs::write(d.join("big.raw"), vec![0u8; 4 << 20]).unwrap();
    let h = detached_header(d, "big.nhdr", "big.raw");
    let err = dtml_err(&["info", s(&h)]);
    assert!(
        err.contains("more than") && err.contains("big.raw"),
        "{err}"
    );
    // Attached data far beyond the sizes, and a "header" that never ends:
    // refused from a bounded prefix, not read whole.
    let mut attached =
        b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 2 2\nencoding: raw\n\n".to_vec();
    attached.resize(attached.len() + (4 << 20), 0);
    std::fs::write(d.join("attached.nrrd"), &attached).unwrap();
    let err = dtml_err(&["info", s(&d.join("attached.nrrd"))]);
    assert!(err.contains("after its header, more than"), "{err}");
    let mut endless = b"NRRD0004\n".to_vec();
    endless.extend(std::iter::repeat_n(b"# comment\n".as_slice(), 300_000).flatten());
    std::fs::write(d.join("endless.nrrd"), &endless).unwrap();
    let err = dtml_err(&["info", s(&d.join("endless.nrrd"))]);
    assert!(err.contains("no blank line ends the header"), "{err}");
    let err = dtml_err(&["info", s(&h)]);
    assert!(
        err.contains("more than") && err.contains("big.raw"),
        "{err}"
    );
}

#[test]
fn dataset_files_that_resolve_outside_the_dataset_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    generate_small(&data, 3, 1);
    // Swap one image for a symlink to a copy outside the dataset.
    let image = data.join("imagesTr/synth_001_0000.nii.gz");
    let elsewhere = dir.path().join("elsewhere.nii.gz");
    std::fs::rename(&image, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &image).unwrap();
    let out = dir.path().join("prepared");
    let err = dtml_err(&[
        "prepare",
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--labelled",
        "1",
    ]);
    assert!(
        err.contains("outside") && err.contains("synth_001") && err.contains("dataset.json"),
        "{err}"
    );
    assert!(!out.exists(), "nothing was written");
}

#[test]
fn cache_manifests_naming_files_outside_the_cache_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let prepared = tiny_prepared(dir.path(), &[]);
    let manifest_path = prepared.join("manifest.json");
    let original = std::fs::read_to_string(&manifest_path).unwrap();
    let run = dir.path().join("run");
    let train = |run: &Path| -> String { dtml_err(&tiny_train(&prepared, run, &[])) };
    for (field, value) in [
        ("file", "../../escape.safetensors"),
        ("file", "/etc/passwd"),
        ("image_source", "/etc/passwd"),
        ("label_source", "/etc/shadow"),
    ] {
        let mut m: serde_json::Value = serde_json::from_str(&original).unwrap();
        m["cases"][0][field] = value.into();
        std::fs::write(&manifest_path, serde_json::to_string(&m).unwrap()).unwrap();
        let err = train(&run);
        assert!(
            err.contains("manifest.json")
                && (err.contains("outside") || err.contains("leaves") || err.contains("absolute")),
            "{field} = {value}: {err}"
        );
    }
    std::fs::write(&manifest_path, &original).unwrap();
    // A case file swapped for a symlink out of the cache.
    let m: serde_json::Value = serde_json::from_str(&original).unwrap();
    let case = prepared.join(m["cases"][0]["file"].as_str().unwrap());
    let moved = dir.path().join("moved.safetensors");
    std::fs::rename(&case, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &case).unwrap();
    let err = train(&run);
    assert!(err.contains("outside"), "{err}");
    assert!(!run.join("run.json").exists());
}

// ---- 2. Unbounded reads ---------------------------------------------------

#[test]
fn volumes_over_the_voxel_limit_are_refused_before_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.nii.gz");
    let v = mask_volume(
        Xyz::new(64, 64, 64),
        Geometry::from_spacing(Xyz::splat(1.0)),
        |_| 0,
    );
    write_nifti(&p, &v).unwrap();
    let out = Command::new(dtml_bin())
        .args(["info", s(&p)])
        .env("DTML_MAX_VOXELS", "100000")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("262144 voxels")
            && err.contains("DTML_MAX_VOXELS")
            && err.contains("big.nii.gz"),
        "{err}"
    );
    // A header that promises far more than its gzip stream can inflate to
    // is refused before inflating (a corrupt header or a bomb's lie).
    let mut bytes = std::fs::read(&p).unwrap();
    let mut raw = Vec::new();
    use std::io::Read;
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_end(&mut raw)
        .unwrap();
    raw[42..44].copy_from_slice(&2000i16.to_le_bytes());
    raw[44..46].copy_from_slice(&2000i16.to_le_bytes());
    raw[46..48].copy_from_slice(&200i16.to_le_bytes());
    bytes.clear();
    let mut enc = flate2::write::GzEncoder::new(&mut bytes, flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, &raw).unwrap();
    enc.finish().unwrap();
    let lie = dir.path().join("lie.nii.gz");
    std::fs::write(&lie, &bytes).unwrap();
    let out = Command::new(dtml_bin())
        .args(["info", s(&lie)])
        .env("DTML_MAX_VOXELS", "1000000000")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("cannot expand"),
        "{err}"
    );
    // A bad override is an error, not a silent default.
    let out = Command::new(dtml_bin())
        .args(["info", s(&p)])
        .env("DTML_MAX_VOXELS", "lots")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("DTML_MAX_VOXELS") && err.contains("lots"),
        "{err}"
    );
}

// ---- 3. Silent wrong answers ----------------------------------------------

#[test]
fn metrics_refuse_masks_on_different_grids_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let shape = Xyz::new(16, 16, 8);
    let blob =
        |i: usize| ((i % 16) > 4 && (i % 16) < 11 && (i / 16) % 16 > 4 && (i / 16) % 16 < 11) as u8;
    let reference = dir.path().join("ref.nii.gz");
    write_nifti(
        &reference,
        &mask_volume(shape, Geometry::from_spacing(Xyz::splat(1.0)), blob),
    )
    .unwrap();
    let moved = Geometry::from_spacing(Xyz::splat(1.0)).shifted(Xyz::new(50, 0, 0));
    let mut flipped_affine = Geometry::from_spacing(Xyz::splat(1.0)).affine;
    flipped_affine[1][1] = -1.0;
    for (name, geometry, needle) in [
        ("moved.nii.gz", moved, "origin"),
        (
            "flipped.nii.gz",
            Geometry::from_affine(flipped_affine),
            "direction of axis y",
        ),
        (
            "spacing.nii.gz",
            Geometry::from_spacing(Xyz::new(1.0, 1.0, 2.0)),
            "spacing",
        ),
    ] {
        let p = dir.path().join(name);
        write_nifti(&p, &mask_volume(shape, geometry, blob)).unwrap();
        let err = dtml_err(&["metrics", "--pred", s(&p), "--ref", s(&reference)]);
        assert!(
            err.contains(name) && err.contains(needle) && err.contains("--voxel-grid"),
            "{err}"
        );
        let json = dtml_ok(&[
            "metrics",
            "--pred",
            s(&p),
            "--ref",
            s(&reference),
            "--json",
            "--voxel-grid",
        ]);
        assert!(json.contains("dice"), "{json}");
    }
}

#[test]
fn resume_refuses_changes_to_the_run_and_continues_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let prepared = tiny_prepared(dir.path(), &[]);
    let run = dir.path().join("run");
    let base = [
        "train",
        "--data",
        s(&prepared),
        "--out",
        s(&run),
        "--method",
        "supervised",
        "--iterations",
        "2",
        "--patch",
        "32,32,16",
        "--width",
        "2",
        "--labelled-batch",
        "1",
        "--unlabelled-batch",
        "1",
        "--checkpoint-every",
        "1",
        "--threads",
        "1",
    ];
    dtml_ok(&base);
    for (flag, value, needle) in [
        ("--width", "4", "width: 2 -> 4"),
        ("--lr", "0.5", "lr: 0.01 -> 0.5"),
        ("--iterations", "4", "iterations: 2 -> 4"),
        ("--method", "dtml", "method"),
    ] {
        let err = dtml_err(&[
            "train",
            "--data",
            s(&prepared),
            "--out",
            s(&run),
            "--resume",
            flag,
            value,
        ]);
        assert!(
            err.contains("--resume would change") && err.contains(needle),
            "{flag}: {err}"
        );
    }
    // Other data under the same run.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    for entry in std::fs::read_dir(&prepared).unwrap() {
        let e = entry.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), other.join(e.file_name())).unwrap();
        }
    }
    let err = dtml_err(&["train", "--data", s(&other), "--out", s(&run), "--resume"]);
    assert!(err.contains("trained on"), "{err}");
    // The run's own settings (and a new thread count) resume fine.
    dtml_ok(&[
        "train",
        "--data",
        s(&prepared),
        "--out",
        s(&run),
        "--resume",
        "--threads",
        "2",
    ]);
}

#[test]
fn non_finite_weights_and_tampered_caches_stop_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let prepared = tiny_prepared(dir.path(), &[]);
    // Weights with a NaN are refused at load, naming the tensor.
    let net = dtml_model::VNet::new(
        dtml_model::VNetConfig {
            width: 2,
            ..Default::default()
        },
        1,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let mut sd = net.state_dict().unwrap();
    let key = "block_one.conv.0.weight";
    let w = sd[key].clone();
    let nan = (w.ones_like().unwrap() * f64::NAN).unwrap();
    sd.insert(key.to_string(), nan);
    let weights = dir.path().join("nan.safetensors");
    candle_core::safetensors::save(&sd, &weights).unwrap();
    let scans = dir.path().join("data/imagesTs");
    let out = dir.path().join("masks");
    let err = dtml_err(&[
        "predict",
        "--model",
        s(&weights),
        "--input",
        s(&scans),
        "--out",
        s(&out),
        "--student",
        "region",
        "--patch",
        "32,32,16",
    ]);
    assert!(err.contains(key) && err.contains("NaN"), "{err}");
    assert!(
        std::fs::read_dir(&out).map_or(true, |mut d| d.next().is_none()),
        "no mask written"
    );

    // A cache whose label holds 7, or whose image is NaN.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(prepared.join("manifest.json")).unwrap())
            .unwrap();
    let case = manifest["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["role"] == "labelled")
        .unwrap();
    let file = prepared.join(case["file"].as_str().unwrap());
    let original = std::fs::read(&file).unwrap();
    for (tensor, needle) in [("label", "label voxel"), ("image", "image voxel")] {
        let mut t = candle_core::safetensors::load(&file, &candle_core::Device::Cpu).unwrap();
        let x = t[tensor].clone();
        let bad = if tensor == "label" {
            (x.ones_like().unwrap() * 7.0).unwrap()
        } else {
            (x.ones_like().unwrap() * f64::NAN).unwrap()
        };
        t.insert(tensor.to_string(), bad);
        candle_core::safetensors::save(&t, &file).unwrap();
        let run = dir.path().join(format!("run-{tensor}"));
        let err = dtml_err(&tiny_train(&prepared, &run, &[]));
        assert!(
            err.contains(needle) && err.contains("damaged cache"),
            "{err}"
        );
        assert!(!run.join("run.json").exists() && !run.join("checkpoint").exists());
        std::fs::write(&file, &original).unwrap();
    }
}

#[test]
fn label_values_left_out_and_unusable_spacings_are_warned() {
    let dir = tempfile::tempdir().unwrap();
    // NRRD `spacings: nan 1 0` becomes 1 mm, with a warning.
    let p = dir.path().join("nan.nrrd");
    let mut bytes =
        b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 2 2\nspacings: nan 1 0\nencoding: raw\n\n"
            .to_vec();
    bytes.extend_from_slice(&[0u8; 8]);
    std::fs::write(&p, bytes).unwrap();
    let out = dtml(&["info", s(&p)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("not a usable spacing"),
        "{err}"
    );
    // Label values other than the foreground count as background, loudly.
    let data = dir.path().join("data");
    generate_small(&data, 2, 0);
    let label_path = data.join("labelsTr/synth_000.nii.gz");
    let mut label = dtml_volume::read_volume(&label_path).unwrap();
    if let VoxelData::U8(v) = &mut label.data {
        v[0] = 2;
        v[1] = 2;
    }
    write_nifti(&label_path, &label).unwrap();
    let out = dtml(&[
        "prepare",
        "--data",
        s(&data),
        "--out",
        s(&dir.path().join("p")),
        "--labelled",
        "2",
        "--patch",
        "16,16,16",
        "--foreground",
        "1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("label values 2 (2 voxels)") && err.contains("synth_000"),
        "{err}"
    );
    // The distance map of an empty mask is +inf everywhere: said, not silent.
    let empty = dir.path().join("empty.nii.gz");
    write_nifti(
        &empty,
        &mask_volume(
            Xyz::new(8, 8, 8),
            Geometry::from_spacing(Xyz::splat(1.0)),
            |_| 0,
        ),
    )
    .unwrap();
    let d = dir.path().join("d.nii.gz");
    let out = dtml(&["distance", "--mask", s(&empty), "--out", s(&d), "--signed"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("the mask is empty"),
        "{err}"
    );
}

#[test]
fn the_sharpness_a_run_trained_with_is_recorded_for_inference() {
    let dir = tempfile::tempdir().unwrap();
    let prepared = tiny_prepared(dir.path(), &[]);
    let run = dir.path().join("run");
    dtml_ok(&tiny_train(
        &prepared,
        &run,
        &[
            "--labelled-batch",
            "1",
            "--unlabelled-batch",
            "1",
            "--sharpness",
            "300",
        ],
    ));
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(info["sharpness"], 300.0);
    // ... and inference takes it from there.
    let loaded = dtml_infer::students::load_run(&run, &candle_core::Device::Cpu).unwrap();
    assert_eq!(loaded.default_options().sharpness, 300.0);
    // A run.json of before the field reads as the paper's 1500.
    let mut old = info.clone();
    old.as_object_mut().unwrap().remove("sharpness");
    std::fs::write(run.join("run.json"), old.to_string()).unwrap();
    let back = dtml_infer::RunInfo::read(&run).unwrap();
    assert_eq!(back.sharpness, 1500.0);
}

// ---- 4. Data loss -----------------------------------------------------------

#[test]
fn generate_never_writes_into_a_real_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir_all(real.join("imagesTr")).unwrap();
    let json = "{\"name\": \"my study\", \"training\": []}";
    std::fs::write(real.join("dataset.json"), json).unwrap();
    let err = dtml_err(&[
        "generate",
        "--out",
        s(&real),
        "--shape",
        "16,16,16",
        "--train-cases",
        "2",
    ]);
    assert!(err.contains("not empty") && err.contains("real"), "{err}");
    assert_eq!(
        std::fs::read_to_string(real.join("dataset.json")).unwrap(),
        json
    );
    assert_eq!(std::fs::read_dir(real.join("imagesTr")).unwrap().count(), 0);
    // A folder of anything else is refused too.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "keep").unwrap();
    dtml_err(&["generate", "--out", s(&other)]);
    // An earlier synthetic dataset is replaced whole: no stale cases.
    let synth = dir.path().join("synth");
    let generate = |n: &str| {
        dtml_ok(&[
            "generate",
            "--out",
            s(&synth),
            "--shape",
            "16,16,16",
            "--train-cases",
            n,
            "--test-cases",
            "0",
        ])
    };
    generate("4");
    generate("2");
    assert_eq!(
        std::fs::read_dir(synth.join("imagesTr")).unwrap().count(),
        2
    );
}

#[test]
fn a_failed_prepare_keeps_the_old_cache_and_foreign_folders_are_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let prepared = tiny_prepared(dir.path(), &[]);
    let manifest = std::fs::read(prepared.join("manifest.json")).unwrap();
    let cases_before = std::fs::read_dir(prepared.join("cases")).unwrap().count();
    // Break one scan, then prepare again into the same folder.
    let data = dir.path().join("data");
    std::fs::write(data.join("imagesTr/synth_003_0000.nii.gz"), b"not gzip").unwrap();
    let err = dtml_err(&[
        "prepare",
        "--data",
        s(&data),
        "--out",
        s(&prepared),
        "--labelled",
        "2",
        "--patch",
        "32,32,16",
    ]);
    assert!(err.contains("synth_003"), "{err}");
    assert_eq!(
        std::fs::read(prepared.join("manifest.json")).unwrap(),
        manifest
    );
    assert_eq!(
        std::fs::read_dir(prepared.join("cases")).unwrap().count(),
        cases_before
    );
    // What is left beside it is the staging folder alone, holding the
    // finished cases and their receipts for the next run to reuse.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".prepared"))
        .collect();
    assert_eq!(leftovers, [".prepared.preparing"]);
    let staged: Vec<String> = std::fs::read_dir(dir.path().join(".prepared.preparing/cases"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        staged.iter().any(|n| n.ends_with(".receipt.json"))
            && staged.iter().all(|n| !n.starts_with("synth_003")),
        "{staged:?}"
    );
    // --out naming a folder that is not a cache is refused, not emptied.
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::write(home.join("thesis.tex"), "keep").unwrap();
    let err = dtml_err(&[
        "prepare",
        "--data",
        s(&data),
        "--out",
        s(&home),
        "--labelled",
        "2",
    ]);
    assert!(err.contains("not a dtml prepared cache"), "{err}");
    assert_eq!(
        std::fs::read_to_string(home.join("thesis.tex")).unwrap(),
        "keep"
    );
}

// ---- 5. Crashes and unclear errors ----------------------------------------

#[test]
fn oversized_patches_negative_values_and_bad_folders_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let prepared = tiny_prepared(dir.path(), &[]);
    let run = dir.path().join("run");
    let (ok, err) = dtml_within(
        &[
            "train",
            "--data",
            s(&prepared),
            "--out",
            s(&run),
            "--patch",
            "1600,1600,1600",
            "--width",
            "2",
        ],
        Duration::from_secs(60),
    );
    assert!(
        !ok && err.contains("over 4 times the largest prepared case"),
        "{err}"
    );
    let err = dtml_err(&[
        "train",
        "--data",
        s(&prepared),
        "--out",
        s(&run),
        "--lr",
        "-1",
    ]);
    assert!(err.contains("lr = -1"), "{err}");
    // `threads` is a TOML key like every flag.
    let config = dir.path().join("t.toml");
    std::fs::write(
        &config,
        "threads = 1\niterations = 1\npatch = [32, 32, 16]\nwidth = 2\n",
    )
    .unwrap();
    dtml_ok(&[
        "train",
        "--data",
        s(&prepared),
        "--out",
        s(&dir.path().join("t")),
        "--config",
        s(&config),
    ]);
    // An output "folder" that is a file fails before any inference, and
    // the OS error is printed once.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let err = dtml_err(&[
        "predict",
        "--model",
        s(&dir.path().join("t")),
        "--input",
        s(&dir.path().join("data/imagesTs")),
        "--out",
        s(&file),
    ]);
    assert!(
        err.contains("a-file") && err.contains("must be a folder"),
        "{err}"
    );
    let err = dtml_err(&["info", s(&dir.path().join("missing.nii.gz"))]);
    assert_eq!(err.matches("os error").count(), 1, "{err}");
}

#[test]
fn nifti_header_errors_name_the_real_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.nii");
    write_nifti(
        &p,
        &mask_volume(
            Xyz::new(4, 4, 4),
            Geometry::from_spacing(Xyz::splat(1.0)),
            |_| 0,
        ),
    )
    .unwrap();
    let good = std::fs::read(&p).unwrap();
    let mut bad = good.clone();
    bad[42..44].copy_from_slice(&(-16i16).to_le_bytes());
    std::fs::write(&p, &bad).unwrap();
    let err = dtml_err(&["info", s(&p)]);
    assert!(
        err.contains("dim[1] = -16") && err.contains("negative"),
        "{err}"
    );
    let mut bad = good.clone();
    bad[40..42].copy_from_slice(&9i16.to_le_bytes());
    std::fs::write(&p, &bad).unwrap();
    let err = dtml_err(&["info", s(&p)]);
    assert!(err.contains("dim[0] = 9"), "{err}");
    // A .pth that is not one says why.
    let pth = dir.path().join("w.pth");
    std::fs::write(&pth, b"garbage").unwrap();
    let err = dtml_err(&[
        "predict",
        "--model",
        s(&pth),
        "--input",
        s(dir.path()),
        "--out",
        s(&dir.path().join("o")),
    ]);
    assert!(
        err.contains("w.pth") && err.contains("not a PyTorch zip archive"),
        "{err}"
    );
}
