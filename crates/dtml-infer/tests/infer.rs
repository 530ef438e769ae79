//! Sliding-window inference against PyTorch: the width-4 V-Net of
//! `data-fixtures/vnet` predicts the scan of `data-fixtures/infer` with the
//! reference `test_single_case` (made by `make_infer_fixture.py`); ours must
//! give the same probabilities and masks. Also: loading students from run
//! directories and weight files, and evaluation of prepared cases.

use candle_core::{DType, Device};
use dtml_infer::evaluate::{evaluate_case, evaluate_prepared};
use dtml_infer::infer::{Ensemble, InferenceOptions, Students, predict_volume, read_scan};
use dtml_infer::run::{RUN_FORMAT, RUN_VERSION, RunInfo, StudentFile, StudentRole};
use dtml_infer::students::{DeviceKind, load_models, load_run, load_weight_file, select_device};
use dtml_model::{VNet, VNetConfig};
use dtml_volume::{VoxelData, Xyz, read_volume};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data-fixtures")
}

fn w4() -> VNet {
    load_weight_file(&fixtures().join("vnet/vnet_w4.pth"), &Device::Cpu).unwrap()
}

fn expected_mask(name: &str) -> Vec<u8> {
    match read_volume(&fixtures().join("infer").join(name))
        .unwrap()
        .data
    {
        VoxelData::U8(v) => v,
        other => panic!("{name}: {:?}", other.dtype()),
    }
}

fn dice(a: &[u8], b: &[u8]) -> f64 {
    dtml_edt::dice(a, b).unwrap().unwrap_or(1.0)
}

fn golden_options() -> InferenceOptions {
    InferenceOptions {
        patch: Xyz::new(32, 32, 16),
        stride: Xyz::new(8, 8, 4),
        batch: 2,
        ensemble: Ensemble::Region,
        threshold: 0.5,
        largest_component: false,
        connectivity: dtml_edt::Connectivity::Full,
        disagreement: false,
        sharpness: dtml_infer::infer::SHARPNESS,
    }
}

/// Dice against a PyTorch mask; at most `max_diff` voxels may differ.
fn check(name: &str, got: &[u8], max_diff: usize) {
    let want = expected_mask(name);
    assert_eq!(got.len(), want.len(), "{name}");
    let d = dice(got, &want);
    let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
    let fg = want.iter().filter(|&&v| v == 1).count();
    eprintln!(
        "{name}: Dice {d:.6} vs PyTorch, {differ} voxel(s) differ, {fg} foreground ({:.1} %)",
        100.0 * fg as f64 / want.len() as f64
    );
    assert!(d >= 0.999, "{name}: Dice {d}");
    assert!(differ <= max_diff, "{name}: {differ} voxels differ");
    assert!(fg > 0, "{name}: the golden mask must not be empty");
}

#[test]
fn matches_pytorch_sliding_window() {
    let (volume, image) = read_scan(&fixtures().join("infer/scan.nii.gz"), None).unwrap();
    assert_eq!(volume.shape, Xyz::new(40, 28, 20));
    let net = w4();
    let region = Students {
        region: Some(&net),
        boundary: None,
    };
    let opts = golden_options();
    let p = predict_volume(&region, &image, volume.shape, &opts).unwrap();
    let want = read_volume(&fixtures().join("infer/expected_region_probability.nii.gz")).unwrap();
    let VoxelData::F32(want) = want.data else {
        panic!("probability map is not f32")
    };
    let worst = p
        .probability
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("region probability: max |ours - PyTorch| = {worst:e}");
    assert!(worst < 1e-5, "probability differs by {worst}");
    check("expected_region.nii.gz", &p.mask, 1);

    // Threshold 0.4 and the largest 26-connected component.
    let mut o = opts.clone();
    o.threshold = 0.4;
    o.largest_component = true;
    o.batch = 3;
    let p = predict_volume(&region, &image, volume.shape, &o).unwrap();
    check("expected_region_t040_lcc.nii.gz", &p.mask, 2);

    // The same network's SDM head as the boundary student, alone and in
    // the ensemble with its segmentation head.
    let both = Students {
        region: Some(&net),
        boundary: Some(&net),
    };
    let mut o = opts.clone();
    o.ensemble = Ensemble::Boundary;
    let p = predict_volume(&both, &image, volume.shape, &o).unwrap();
    check("expected_boundary.nii.gz", &p.mask, 3);
    o.ensemble = Ensemble::Both;
    o.disagreement = true;
    let p = predict_volume(&both, &image, volume.shape, &o).unwrap();
    check("expected_ensemble.nii.gz", &p.mask, 3);
    let d = p.disagreement.unwrap();
    assert!(d.iter().all(|v| (0.0..=1.0).contains(v)));
    // Where the ensemble is confident the students agree: |p - q| = 2 |m - 1/2| ...
    // only when one of them is saturated; at least the disagreement is
    // bounded by twice the distance of the ensemble from the far end.
    for (dv, m) in d.iter().zip(&p.probability) {
        assert!(*dv <= 2.0 * m.max(1.0 - m) + 1e-6);
    }
}

#[test]
fn batching_does_not_change_the_result() {
    let (volume, image) = read_scan(&fixtures().join("infer/scan.nii.gz"), None).unwrap();
    let net = w4();
    let s = Students {
        region: Some(&net),
        boundary: Some(&net),
    };
    let mut o = golden_options();
    o.ensemble = Ensemble::Both;
    o.batch = 1;
    let one = predict_volume(&s, &image, volume.shape, &o).unwrap();
    o.batch = 4;
    let four = predict_volume(&s, &image, volume.shape, &o).unwrap();
    let worst = one
        .probability
        .iter()
        .zip(&four.probability)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-5, "batch 1 vs 4 differ by {worst}");
}

fn seeded(width: usize, seed: u64) -> VNet {
    VNet::new(
        VNetConfig {
            width,
            ..Default::default()
        },
        seed,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap()
}

fn run_dir(dir: &Path, students: &[(StudentRole, &VNet, &str)]) {
    for (_, net, file) in students {
        net.save_safetensors(&dir.join(file)).unwrap();
    }
    RunInfo {
        format: RUN_FORMAT.into(),
        version: RUN_VERSION,
        method: dtml_infer::Method::Dtml,
        network: students[0].1.config().clone(),
        patch: Xyz::new(16, 16, 16),
        foreground: vec![1],
        students: students
            .iter()
            .map(|(role, _, file)| StudentFile {
                role: *role,
                file: file.to_string(),
            })
            .collect(),
        iteration: 10,
        sharpness: 1500.0,
        channel: None,
    }
    .write(dir)
    .unwrap();
}

#[test]
fn students_load_from_run_directories_and_weight_files() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (seeded(2, 1), seeded(2, 2));
    run_dir(
        dir.path(),
        &[
            (StudentRole::Region, &a, "region.safetensors"),
            (StudentRole::Boundary, &b, "boundary.safetensors"),
        ],
    );
    let loaded = load_run(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(loaded.patch(), Some(Xyz::new(16, 16, 16)));
    let s = loaded.students();
    assert!(s.region.is_some() && s.boundary.is_some());
    // The loaded students predict what the originals predict.
    let shape = Xyz::new(20, 18, 17);
    let mut image: Vec<f32> = (0..shape.voxels())
        .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
        .collect();
    dtml_infer::zscore(&mut image);
    let mut o = InferenceOptions {
        patch: Xyz::new(16, 16, 16),
        stride: Xyz::new(4, 4, 4),
        ..Default::default()
    };
    o.disagreement = true;
    let want = predict_volume(
        &Students {
            region: Some(&a),
            boundary: Some(&b),
        },
        &image,
        shape,
        &o,
    )
    .unwrap();
    let got = predict_volume(&s, &image, shape, &o).unwrap();
    assert_eq!(got.probability, want.probability);
    assert_eq!(got.disagreement, want.disagreement);
    assert_eq!(got.mask, want.mask);

    // Weight files: one is the region student (or boundary on request),
    // two are region then boundary, the same file twice shares a network.
    let (ra, rb) = (
        dir.path().join("region.safetensors"),
        dir.path().join("boundary.safetensors"),
    );
    let one = load_models(std::slice::from_ref(&ra), StudentRole::Region, &Device::Cpu).unwrap();
    assert!(one.students().region.is_some() && one.students().boundary.is_none());
    let one = load_models(
        std::slice::from_ref(&ra),
        StudentRole::Boundary,
        &Device::Cpu,
    )
    .unwrap();
    assert!(one.students().region.is_none() && one.students().boundary.is_some());
    let two = load_models(&[ra.clone(), rb.clone()], StudentRole::Region, &Device::Cpu).unwrap();
    let got = predict_volume(&two.students(), &image, shape, &o).unwrap();
    assert_eq!(got.probability, want.probability);
    let shared = load_models(&[ra.clone(), ra.clone()], StudentRole::Region, &Device::Cpu).unwrap();
    assert!(shared.shared && shared.boundary.is_none());
    let s = shared.students();
    assert!(std::ptr::eq(s.region.unwrap(), s.boundary.unwrap()));
    assert_eq!(two.config().unwrap().width, 2);

    // The .pth of the reference family loads with its shape inferred.
    let pth = load_weight_file(&fixtures().join("vnet/vnet_w4.pth"), &Device::Cpu).unwrap();
    assert_eq!(
        (
            pth.config().width,
            pth.config().in_channels,
            pth.config().classes
        ),
        (4, 1, 1)
    );
}

#[test]
fn bad_students_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    // run.json says width 4, the file holds width 2.
    let net = seeded(2, 3);
    net.save_safetensors(&dir.path().join("a.safetensors"))
        .unwrap();
    let mut info = RunInfo {
        format: RUN_FORMAT.into(),
        version: RUN_VERSION,
        method: dtml_infer::Method::Dtml,
        network: VNetConfig {
            width: 4,
            ..Default::default()
        },
        patch: Xyz::new(16, 16, 16),
        foreground: vec![1],
        students: vec![StudentFile {
            role: StudentRole::Region,
            file: "a.safetensors".into(),
        }],
        iteration: 1,
        sharpness: 1500.0,
        channel: None,
    };
    info.write(dir.path()).unwrap();
    let err = load_run(dir.path(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("a.safetensors") && err.contains("shape"),
        "{err}"
    );
    // A missing weight file.
    info.students[0].file = "missing.safetensors".into();
    info.write(dir.path()).unwrap();
    let err = load_run(dir.path(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("missing.safetensors"), "{err}");
    // Not a run directory.
    let empty = tempfile::tempdir().unwrap();
    let err = load_run(empty.path(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("run.json"), "{err}");
    // A safetensors file that is not a V-Net.
    let junk = dir.path().join("junk.safetensors");
    candle_core::safetensors::save(
        &[(
            "w".to_string(),
            candle_core::Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
        )]
        .into_iter()
        .collect(),
        &junk,
    )
    .unwrap();
    let err = load_weight_file(&junk, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("junk.safetensors") && err.contains("block_one.conv.0.weight"),
        "{err}"
    );
    // Three files, and a run directory among files.
    let f = dir.path().join("a.safetensors");
    let err = load_models(
        &[f.clone(), f.clone(), f.clone()],
        StudentRole::Region,
        &Device::Cpu,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("one or two"), "{err}");
    let err = load_models(
        &[f.clone(), dir.path().to_path_buf()],
        StudentRole::Region,
        &Device::Cpu,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("run directory"), "{err}");
    // Devices.
    assert!(select_device(DeviceKind::Cpu).unwrap().is_cpu());
    #[cfg(not(feature = "cuda"))]
    assert!(
        select_device(DeviceKind::Cuda)
            .err()
            .unwrap()
            .to_string()
            .contains("--features cuda")
    );
    // A 2D scan.
    let flat = dir.path().join("flat.nii.gz");
    dtml_volume::write_nifti(
        &flat,
        &dtml_volume::Volume::new(
            VoxelData::I16(vec![1; 40 * 28]),
            Xyz::new(40, 28, 1),
            dtml_volume::Geometry::from_spacing(Xyz::splat(1.0)),
        )
        .unwrap(),
    )
    .unwrap();
    let err = read_scan(&flat, None).err().unwrap().to_string();
    assert!(err.contains("2D"), "{err}");
}

#[test]
fn evaluation_scores_prepared_cases_on_the_original_grid() {
    let data = fixtures().join("synthetic-tiny");
    let ds = dtml_volume::Dataset::open(&data, Default::default()).unwrap();
    let split =
        dtml_volume::dataset::split(&ds, &dtml_volume::LabelledSpec::Count(1), None, None).unwrap();
    let out = tempfile::tempdir().unwrap();
    let options = dtml_volume::PrepareOptions {
        patch: Xyz::new(16, 16, 16),
        margin: Xyz::new(Some(2), Some(2), None),
        ..Default::default()
    };
    dtml_volume::prepare(&ds.root, ds.layout, &split, out.path(), &options, &|_| {}).unwrap();
    let prepared = dtml_volume::PreparedDataset::open(out.path()).unwrap();
    let cases: Vec<_> = prepared.cases(dtml_volume::Role::Test).collect();
    assert_eq!(cases.len(), 1);
    let net = seeded(2, 5);
    let s = Students {
        region: Some(&net),
        boundary: None,
    };
    let opts = InferenceOptions {
        patch: Xyz::new(16, 16, 16),
        stride: Xyz::new(8, 8, 8),
        ensemble: Ensemble::Region,
        // A low threshold so the random network predicts some foreground.
        threshold: 0.3,
        ..Default::default()
    };
    let mut seen = Vec::new();
    let results = evaluate_prepared(
        &s,
        &prepared,
        &cases,
        &opts,
        dtml_edt::Units::Millimetres.into(),
        &mut |i| seen.push(i),
    )
    .unwrap();
    assert_eq!(seen, vec![0]);
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].id, "synth_003");
    // The same as scoring the pasted-back mask against the label file.
    let e = evaluate_case(
        &s,
        &prepared,
        cases[0],
        &opts,
        dtml_edt::Units::Millimetres.into(),
    )
    .unwrap();
    let label = read_volume(&data.join("labelsTs/synth_003.nii.gz")).unwrap();
    assert_eq!(e.shape, label.shape);
    let reference: Vec<u8> = label
        .data
        .to_f64()
        .iter()
        .map(|&v| (v == 1.0) as u8)
        .collect();
    let [nx, ny, nz] = label.shape.xyz();
    let [sx, sy, sz] = label.spacing().xyz();
    let direct = dtml_edt::surface_metrics(
        &e.mask,
        &reference,
        &[nz, ny, nx],
        &[sz, sy, sx],
        dtml_edt::Units::Millimetres,
    )
    .unwrap();
    assert_eq!(direct, results[0].metrics);
    assert!(
        e.mask.contains(&1),
        "the random network should predict something"
    );
    assert!(results[0].metrics.reference_voxels > 0);
}
