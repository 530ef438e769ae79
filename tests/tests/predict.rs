//! `dtml predict` and `dtml evaluate` as a user runs them: the authors'
//! PyTorch weights on a scan (golden masks from PyTorch's own sliding
//! window, `data-fixtures/infer`), header geometry kept, run directories,
//! prepared and raw test sets, and the bad inputs a user may give.
//!
//! One file over 600 lines on purpose: every file under `tests/` is a test
//! binary of its own that links the whole stack; the two commands share
//! their fixtures here.

mod common;
use common::{dtml_err, dtml_ok, fake_run, s};
use dtml_volume::{Geometry, Volume, VoxelData, Xyz, read_volume, write_nifti};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::LazyLock;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data-fixtures")
}

fn pth() -> &'static Path {
    static P: LazyLock<PathBuf> = LazyLock::new(|| fixtures().join("vnet/vnet_w4.pth"));
    &P
}

fn scan() -> &'static Path {
    static P: LazyLock<PathBuf> = LazyLock::new(|| fixtures().join("infer/scan.nii.gz"));
    &P
}

const WINDOW: [&str; 4] = ["--patch", "32,32,16", "--stride", "8,8,4"];

fn u8_mask(path: &Path) -> Vec<u8> {
    match read_volume(path).unwrap().data {
        VoxelData::U8(v) => v,
        other => panic!("{}: {:?}, not u8", path.display(), other.dtype()),
    }
}

fn dice(a: &[u8], b: &[u8]) -> f64 {
    let inter = a
        .iter()
        .zip(b)
        .filter(|(x, y)| **x == 1 && **y == 1)
        .count();
    let total = a.iter().chain(b).filter(|v| **v == 1).count();
    2.0 * inter as f64 / total as f64
}

/// nibabel's view of a file's geometry, when the tests have a Python
/// (`DTML_PYTHON`, set by `cargo xtask test`).
fn nibabel_geometry(path: &Path) -> Option<String> {
    let python = std::env::var_os("DTML_PYTHON")?;
    let code = "import sys, nibabel as nib, numpy as np\n\
        i = nib.load(sys.argv[1]); h = i.header\n\
        print(int(h['sform_code']), int(h['qform_code']), i.get_sform().tolist(), i.get_qform().tolist(), [float(z) for z in h.get_zooms()[:3]])";
    let out = Command::new(python)
        .args(["-c", code])
        .arg(path)
        .output()
        .expect("start DTML_PYTHON");
    assert!(
        out.status.success(),
        "nibabel on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `--connectivity 6` keeps what `../shared/reference` keeps: scipy's
/// default (face-connected) largest component of the PyTorch reference's
/// averaged probability, computed live by scipy (`DTML_PYTHON`).
#[test]
fn connectivity_6_keeps_scipys_largest_component() {
    let python = match std::env::var_os("DTML_PYTHON") {
        Some(p) => p,
        None if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("DTML_PYTHON is not set: run the suite with `cargo xtask test`")
        }
        None => return eprintln!("skipped: DTML_PYTHON not set"),
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut args = vec![
        "predict",
        "--model",
        s(pth()),
        "--input",
        s(scan()),
        "--out",
        s(&out),
        // At 0.38 the two neighbourhoods keep masks of about 2200 and
        // 3000 voxels.
        "--threshold",
        "0.38",
        "--connectivity",
        "6",
    ];
    args.extend(WINDOW);
    dtml_ok(&args);
    let (want, full) = (dir.path().join("6.nii.gz"), dir.path().join("26.nii.gz"));
    let code = r#"
import sys, numpy as np, nibabel as nib
from scipy import ndimage as ndi
p = nib.load(sys.argv[1])
for out, st in zip(sys.argv[2:], [None, np.ones((3, 3, 3))]):
    lab, n = ndi.label(np.asanyarray(p.dataobj) > 0.38, structure=st)
    keep = lab == np.argmax(np.bincount(lab.ravel())[1:]) + 1
    nib.save(nib.Nifti1Image(keep.astype(np.uint8), p.affine), out)
"#;
    let run = Command::new(python)
        .args(["-c", code])
        .arg(fixtures().join("infer/expected_region_probability.nii.gz"))
        .arg(&want)
        .arg(&full)
        .output()
        .expect("start DTML_PYTHON");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let (got, want) = (u8_mask(&out.join("scan.nii.gz")), u8_mask(&want));
    let d = dice(&got, &want);
    assert!(d >= 0.999, "Dice {d} against scipy's 6-connected component");
    // The two neighbourhoods keep different masks here, so the flag is
    // what the comparison sees.
    let full = dice(&want, &u8_mask(&full));
    assert!(full < 0.9, "6 and 26 keep masks of Dice {full} here");
}

#[test]
fn pytorch_weights_predict_the_pytorch_mask_with_the_source_geometry() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut args = vec![
        "predict",
        "--model",
        s(pth()),
        "--input",
        s(scan()),
        "--out",
        s(&out),
        "--threshold",
        "0.4",
    ];
    args.extend(WINDOW);
    dtml_ok(&args);
    let mask_path = out.join("scan.nii.gz");
    let mask = u8_mask(&mask_path);
    let want = u8_mask(&fixtures().join("infer/expected_region_t040_lcc.nii.gz"));
    let d = dice(&mask, &want);
    assert!(d >= 0.999, "Dice {d} against PyTorch");
    assert!(mask.iter().all(|&v| v <= 1));
    let source = read_volume(scan()).unwrap();
    let written = read_volume(&mask_path).unwrap();
    assert_eq!(written.shape, source.shape);
    assert_eq!(
        written.geometry, source.geometry,
        "affine, sform, qform and pixdim are copied"
    );
    assert_eq!(written.geometry.header.sform_code, 2);
    assert_eq!(written.geometry.header.qform_code, 1);
    if let (Some(a), Some(b)) = (nibabel_geometry(scan()), nibabel_geometry(&mask_path)) {
        assert_eq!(a, b, "nibabel sees the same geometry");
    }
    // `dtml metrics` agrees (foreground given explicitly).
    let j: serde_json::Value = serde_json::from_str(&dtml_ok(&[
        "metrics",
        "--pred",
        s(&mask_path),
        "--ref",
        s(&fixtures().join("infer/expected_region_t040_lcc.nii.gz")),
        "--foreground",
        "1",
        "--json",
    ]))
    .unwrap();
    assert!(j["cases"][0]["dice"].as_f64().unwrap() >= 0.999, "{j}");

    // Defaults otherwise: threshold 0.5 without the largest component is
    // the reference's own mask.
    let out2 = dir.path().join("out2");
    let mut args = vec![
        "predict",
        "--model",
        s(pth()),
        "--input",
        s(scan()),
        "--out",
        s(&out2),
        "--no-largest-component",
        "--batch",
        "3",
        "--probability",
    ];
    args.extend(WINDOW);
    dtml_ok(&args);
    let d = dice(
        &u8_mask(&out2.join("scan.nii.gz")),
        &u8_mask(&fixtures().join("infer/expected_region.nii.gz")),
    );
    assert!(d >= 0.999, "Dice {d}");
    let p = read_volume(&out2.join("scan_probability.nii.gz")).unwrap();
    assert_eq!(p.data.dtype(), dtml_volume::DataType::F32);
}

#[test]
fn a_folder_of_scans_with_two_students_and_the_disagreement_map() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    // nnU-Net naming: the _0000 channel suffix is dropped from the mask name.
    std::fs::copy(scan(), input.join("case_a_0000.nii.gz")).unwrap();
    let src = read_volume(scan()).unwrap();
    let small = Volume::new(
        VoxelData::I16((0..24 * 20 * 18).map(|i| ((i * 31) % 200) as i16).collect()),
        Xyz::new(24, 20, 18),
        Geometry::from_spacing(Xyz::new(1.2, 1.2, 2.0)),
    )
    .unwrap();
    write_nifti(&input.join("case_b.nii"), &small).unwrap();
    std::fs::write(input.join("notes.txt"), "not a scan").unwrap();
    let out = dir.path().join("out");
    let mut args = vec![
        "predict",
        "--model",
        s(pth()),
        "--model",
        s(pth()),
        "--input",
        s(&input),
        "--out",
        s(&out),
        "--disagreement",
        "--no-largest-component",
    ];
    args.extend(WINDOW);
    dtml_ok(&args);
    // Besides dtml's lock files (hidden).
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".dtml-"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "case_a.nii.gz",
            "case_a_disagreement.nii.gz",
            "case_b.nii.gz",
            "case_b_disagreement.nii.gz",
            "dtml-outputs.json"
        ]
    );
    // The same network as both students: the ensemble of its two heads.
    let d = dice(
        &u8_mask(&out.join("case_a.nii.gz")),
        &u8_mask(&fixtures().join("infer/expected_ensemble.nii.gz")),
    );
    assert!(d >= 0.999, "Dice {d}");
    let dis = read_volume(&out.join("case_a_disagreement.nii.gz")).unwrap();
    assert_eq!(dis.geometry, src.geometry);
    let VoxelData::F32(dis) = dis.data else {
        panic!("disagreement map is not f32")
    };
    assert!(dis.iter().all(|v| (0.0..=1.0).contains(v)));
    assert!(
        dis.iter().any(|&v| v > 0.1),
        "the two heads disagree somewhere"
    );
    let b = read_volume(&out.join("case_b.nii.gz")).unwrap();
    assert_eq!(b.shape.xyz(), [24, 20, 18]);
    assert_eq!(
        b.geometry,
        read_volume(&input.join("case_b.nii")).unwrap().geometry
    );
}

fn tiny_dataset(dir: &Path) -> (PathBuf, PathBuf) {
    let data = dir.join("data");
    let prepared = dir.join("prepared");
    dtml_ok(&[
        "generate",
        "--out",
        s(&data),
        "--shape",
        "30,26,18",
        "--train-cases",
        "2",
        "--test-cases",
        "2",
        "--seed",
        "4",
    ]);
    dtml_ok(&[
        "prepare",
        "--data",
        s(&data),
        "--out",
        s(&prepared),
        "--labelled",
        "1",
        "--patch",
        "16,16,16",
        "--margin",
        "3,3,full",
    ]);
    (data, prepared)
}

fn check_metrics(out: &Path, cases: usize, unit: &str) -> serde_json::Value {
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), cases + 3, "{csv}");
    assert!(
        lines[0].starts_with(&format!("case,status,dice,jaccard,hd95_{unit},asd_{unit}")),
        "{csv}"
    );
    // 9 columns, 10 with the surface Dice.
    let columns = lines[0].split(',').count();
    assert!(
        columns == 9 || (columns == 10 && lines[0].contains(",surface_dice_")),
        "{csv}"
    );
    for row in &lines[1..=cases] {
        let f: Vec<&str> = row.split(',').collect();
        assert_eq!(f.len(), columns, "{row}");
        assert!(f[0].starts_with("synth_"), "{row}");
        let dice: f64 = f[2].parse().unwrap();
        assert!((0.0..=1.0).contains(&dice), "{row}");
        if f[1] == "ok" {
            let hd95: f64 = f[4].parse().unwrap();
            assert!(hd95 >= 0.0);
        }
        assert!(out.join(format!("{}.nii.gz", f[0])).is_file());
    }
    assert!(lines[cases + 1].starts_with("mean,"));
    assert!(lines[cases + 2].starts_with("std,"));
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(j["summary"]["cases"], cases);
    assert_eq!(j["cases"].as_array().unwrap().len(), cases);
    assert_eq!(j["units"], unit);
    assert_eq!(j["inference"]["patch"], serde_json::json!([16, 16, 16]));
    j
}

#[test]
fn evaluate_a_run_on_prepared_and_raw_test_sets() {
    let dir = tempfile::tempdir().unwrap();
    let (data, prepared) = tiny_dataset(dir.path());
    let run = dir.path().join("run");
    fake_run(&run, Xyz::splat(16), 2);

    let out = dir.path().join("eval");
    let table = dtml_ok(&[
        "evaluate",
        "--model",
        s(&run),
        "--data",
        s(&prepared),
        "--out",
        s(&out),
        "--stride",
        "8,8,8",
        "--threshold",
        "0.45",
    ]);
    assert!(table.contains("mean") && table.contains("std"), "{table}");
    let j = check_metrics(&out, 2, "mm");
    assert_eq!(j["inference"]["student"], "ensemble");
    // The masks lie on the original grids with the scans' geometry.
    let scan = read_volume(&data.join("imagesTs/synth_002_0000.nii.gz")).unwrap();
    let mask = read_volume(&out.join("synth_002.nii.gz")).unwrap();
    assert_eq!(mask.shape, scan.shape);
    assert_eq!(mask.geometry, scan.geometry);

    // The raw dataset folder, distances in voxels, the reference scoring.
    let raw = dir.path().join("eval-raw");
    dtml_ok(&[
        "evaluate",
        "--model",
        s(&run),
        "--data",
        s(&data),
        "--out",
        s(&raw),
        "--stride",
        "8,8,8",
        "--voxels",
        "--reference-scoring",
        "--student",
        "region",
        "--surface-dice",
        "1.5",
    ]);
    let j = check_metrics(&raw, 2, "voxels");
    assert_eq!(j["empty_scoring"], "reference");
    assert_eq!(j["inference"]["student"], "region");
    // The surface Dice of each case is `dtml metrics`' of its written mask.
    assert_eq!(j["surface_dice_tolerance"], 1.5);
    let m: serde_json::Value = serde_json::from_str(&dtml_ok(&[
        "metrics",
        "--pred",
        s(&raw),
        "--ref",
        s(&data.join("labelsTs")),
        "--voxels",
        "--surface-dice",
        "1.5",
        "--json",
    ]))
    .unwrap();
    for case in j["cases"].as_array().unwrap() {
        let same = m["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["case"] == case["case"])
            .unwrap();
        assert!(case["surface_dice"].is_number(), "{case}");
        assert_eq!(case["surface_dice"], same["surface_dice"], "{case}");
    }

    // The same evaluation in two shards: the first writes its part, the
    // last to finish merges all cases into the same table.
    let sharded = dir.path().join("eval-sharded");
    let shard = |k: &str| {
        dtml_ok(&[
            "evaluate",
            "--model",
            s(&run),
            "--data",
            s(&prepared),
            "--out",
            s(&sharded),
            "--stride",
            "8,8,8",
            "--threshold",
            "0.45",
            "--shard",
            k,
        ])
    };
    shard("1/2");
    assert!(sharded.join("metrics-shard-1-of-2.csv").is_file());
    assert!(
        !sharded.join("metrics.csv").exists(),
        "one shard is not the whole job"
    );
    shard("2/2");
    assert_eq!(
        std::fs::read_to_string(sharded.join("metrics.csv")).unwrap(),
        std::fs::read_to_string(out.join("metrics.csv")).unwrap(),
        "merged shards score as one run"
    );
    let merged = check_metrics(&sharded, 2, "mm");
    assert_eq!(merged["complete"], true);

    // Flags that do not apply to a prepared folder are refused.
    let err = dtml_err(&[
        "evaluate",
        "--model",
        s(&run),
        "--data",
        s(&prepared),
        "--out",
        s(&out),
        "--foreground",
        "2",
    ]);
    assert!(err.contains("prepared folder"), "{err}");
}

/// A 4D NIfTI: the fixture scan's header with dim[0] = 4, dim[4] = 2.
fn four_d(path: &Path) {
    let v = read_volume(scan()).unwrap();
    let tmp = path.with_extension("tmp.nii");
    write_nifti(&tmp, &v).unwrap();
    let mut bytes = std::fs::read(&tmp).unwrap();
    bytes[40..42].copy_from_slice(&4i16.to_le_bytes());
    bytes[48..50].copy_from_slice(&2i16.to_le_bytes());
    let data = bytes[352..].to_vec();
    bytes.extend_from_slice(&data);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let predict = |model: &Path, input: &Path, extra: &[&str]| -> String {
        let mut args = vec![
            "predict",
            "--model",
            s(model),
            "--input",
            s(input),
            "--out",
            s(&out),
        ];
        // The fixture's window unless the test overrides a part of it.
        for pair in WINDOW.chunks(2) {
            if !extra.contains(&pair[0]) {
                args.extend(pair);
            }
        }
        args.extend(extra);
        dtml_err(&args)
    };
    // A missing scan.
    let missing = dir.path().join("nope.nii.gz");
    let err = predict(pth(), &missing, &[]);
    assert!(err.contains("nope.nii.gz"), "{err}");
    // A missing weight file.
    let err = predict(&dir.path().join("w.pth"), scan(), &[]);
    assert!(
        err.contains("w.pth") && err.contains("no such file"),
        "{err}"
    );
    // A 4D scan without a channel, and a 2D one.
    let four = dir.path().join("four.nii");
    four_d(&four);
    let err = predict(pth(), &four, &[]);
    assert!(err.contains("four.nii") && err.contains("4D"), "{err}");
    let flat = dir.path().join("flat.nii.gz");
    write_nifti(
        &flat,
        &Volume::new(
            VoxelData::I16(vec![3; 40 * 28]),
            Xyz::new(40, 28, 1),
            Geometry::from_spacing(Xyz::splat(1.0)),
        )
        .unwrap(),
    )
    .unwrap();
    let err = predict(pth(), &flat, &[]);
    assert!(err.contains("flat.nii.gz") && err.contains("2D"), "{err}");
    // With a channel the 4D scan is fine (a folder of its own: the error
    // cases here share `out`, and a finished job's folder is refused to
    // other jobs).
    let out_4d = dir.path().join("out-4d");
    let mut args = vec![
        "predict",
        "--model",
        s(pth()),
        "--input",
        s(&four),
        "--out",
        s(&out_4d),
        "--channel",
        "1",
    ];
    args.extend(WINDOW);
    dtml_ok(&args);
    assert!(out_4d.join("four.nii.gz").is_file());
    // A run that trained on channel 1 reads that channel by default.
    let run = dir.path().join("run-channel");
    fake_run(&run, Xyz::splat(16), 2);
    let info = run.join("run.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&info).unwrap()).unwrap();
    json["channel"] = serde_json::json!(1);
    std::fs::write(&info, json.to_string()).unwrap();
    let out4 = dir.path().join("out-channel");
    let mut args = vec![
        "predict",
        "--model",
        s(&run),
        "--input",
        s(&four),
        "--out",
        s(&out4),
    ];
    args.extend(WINDOW);
    dtml_ok(&args);
    assert!(out4.join("four.nii.gz").is_file());
    // ... and a single-volume scan (one file per channel) as it is (another
    // input: the folder of the first job is taken over only on request).
    let mut args = vec![
        "predict",
        "--model",
        s(&run),
        "--input",
        s(scan()),
        "--out",
        s(&out4),
    ];
    args.extend(WINDOW);
    let err = dtml_err(&args);
    assert!(err.contains("--overwrite"), "{err}");
    args.push("--overwrite");
    dtml_ok(&args);
    assert!(
        !out4.join("four.nii.gz").exists(),
        "the first job's mask is gone"
    );
    // A channel the user names is strict: a single-volume scan has no volume 1.
    let err = predict(pth(), scan(), &["--channel", "1"]);
    assert!(err.contains("channel 1"), "{err}");
    // Weights that are not a V-Net, and a run whose weights have the wrong shape.
    let err = predict(&fixtures().join("ops/ops.safetensors"), scan(), &[]);
    assert!(
        err.contains("ops.safetensors") && err.contains("V-Net"),
        "{err}"
    );
    let run = dir.path().join("run");
    fake_run(&run, Xyz::splat(16), 4);
    let err = predict(&run, scan(), &[]);
    assert!(
        err.contains("student_a.safetensors") && err.contains("shape"),
        "{err}"
    );
    // Window sizes the V-Net cannot take, a missing second student, devices.
    let err = predict(pth(), scan(), &["--patch", "30,32,16"]);
    assert!(err.contains("multiple of 16"), "{err}");
    let err = predict(pth(), scan(), &["--stride", "8,0,4"]);
    assert!(err.contains("stride"), "{err}");
    let err = predict(pth(), scan(), &["--student", "ensemble"]);
    assert!(err.contains("two students"), "{err}");
    let err = predict(pth(), scan(), &["--disagreement"]);
    assert!(err.contains("two students"), "{err}");
    let err = predict(pth(), scan(), &["--device", "cuda"]);
    assert!(
        err.contains("CUDA") || err.contains("cuda"),
        "a clear device error: {err}"
    );
    // evaluate on something that is no dataset.
    let err = dtml_err(&[
        "evaluate",
        "--model",
        s(pth()),
        "--data",
        s(dir.path()),
        "--out",
        s(&out),
    ]);
    assert!(err.contains("dataset.json"), "{err}");
}

#[test]
fn sharded_prediction_matches_one_run_and_a_killed_shard_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let scans = dir.path().join("scans");
    std::fs::create_dir(&scans).unwrap();
    let names = ["c1", "c2", "c3", "c4", "c5"];
    for n in names {
        std::fs::copy(scan(), scans.join(format!("{n}.nii.gz"))).unwrap();
    }
    let predict = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "predict",
            "--model",
            s(pth()),
            "--input",
            s(&scans),
            "--out",
            s(out),
        ];
        args.extend(WINDOW);
        args.extend(extra);
        dtml_ok(&args)
    };
    let whole = dir.path().join("whole");
    predict(&whole, &[]);
    let sharded = dir.path().join("sharded");
    predict(&sharded, &["--shard", "1/3"]);
    // Round robin over the sorted cases: shard 1/3 is c1 and c4.
    let present = |d: &Path| -> Vec<String> {
        names
            .iter()
            .filter(|n| d.join(format!("{n}.nii.gz")).is_file())
            .map(|n| n.to_string())
            .collect()
    };
    assert_eq!(present(&sharded), ["c1", "c4"]);
    predict(&sharded, &["--shard", "2/3"]);
    // Shard 3/3 from a Slurm job array (task ids 3..5, this is task 5).
    let mut args = vec![
        "predict",
        "--model",
        s(pth()),
        "--input",
        s(&scans),
        "--out",
        s(&sharded),
    ];
    args.extend(WINDOW);
    let out = Command::new(common::dtml_bin())
        .args(&args)
        .env("DTML_LOG", "info")
        .env("SLURM_ARRAY_TASK_ID", "5")
        .env("SLURM_ARRAY_TASK_MIN", "3")
        .env("SLURM_ARRAY_TASK_COUNT", "3")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("shard 3/3 from the Slurm job array"));
    for n in names {
        let name = format!("{n}.nii.gz");
        assert_eq!(
            std::fs::read(sharded.join(&name)).unwrap(),
            std::fs::read(whole.join(&name)).unwrap(),
            "{name}: sharded and whole runs write the same mask"
        );
    }
    // A shard killed after one case: its finished mask is kept, the rest done.
    let kept = sharded.join("c2.nii.gz");
    let before = std::fs::metadata(&kept).unwrap().modified().unwrap();
    std::fs::remove_file(sharded.join("c5.nii.gz")).unwrap();
    predict(&sharded, &["--shard", "2/3"]);
    assert!(sharded.join("c5.nii.gz").is_file());
    assert_eq!(
        std::fs::metadata(&kept).unwrap().modified().unwrap(),
        before,
        "c2 was not redone"
    );
    // A shard with other settings is refused, not mixed in.
    let mut args = vec![
        "predict",
        "--model",
        s(pth()),
        "--input",
        s(&scans),
        "--out",
        s(&sharded),
    ];
    args.extend([
        "--patch", "32,32,16", "--stride", "16,16,8", "--shard", "1/2",
    ]);
    let err = dtml_err(&args);
    assert!(
        err.contains("another model") && err.contains("--overwrite"),
        "{err}"
    );
    args.push("--overwrite");
    dtml_ok(&args);
    let err = dtml_err(&[
        "predict",
        "--model",
        s(pth()),
        "--input",
        s(&scans),
        "--out",
        s(&sharded),
        "--shard",
        "4/3",
    ]);
    assert!(err.contains("4/3"), "{err}");
}
