//! What the network sees, against the reference's normalisation (issue 21):
//! `../shared/reference/peer_dtml_train.py` z-scores every scan over all
//! its voxels, `(a - a.mean()) / (a.std() + 1e-8)` in numpy's float32,
//! before any crop, padding or sampling. Labelled cases (cropped to their
//! label box), unlabelled and test cases (cropped to the non-zero box) must
//! hold exactly those values inside their crop and 0 (the volume's mean) in
//! their padding, and inference must feed a raw scan the same values, so
//! training and test inputs share one scale. The scans come from numpy and
//! nibabel (`DTML_PYTHON`, set by `cargo xtask test`).

use dtml_volume::dataset::{self, OpenOptions};
use dtml_volume::{Dataset, LabelledSpec, PrepareOptions, PreparedDataset, Role, Xyz, prepare};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

/// Writes an MSD dataset of three training and one test scan (int16 with a
/// zero border in x and y, so the non-zero crop cuts it) and prints each
/// scan's reference-normalised voxels in nibabel order (x fastest).
const WRITE_AND_NORMALISE: &str = r#"
import json, os, sys, numpy as np, nibabel as nib
out = sys.argv[1]; rng = np.random.default_rng(3)
S = (40, 36, 20)
for d in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
    os.makedirs(os.path.join(out, d), exist_ok=True)
cases, training, test = {}, [], []
for i, split in enumerate(["Tr", "Tr", "Tr", "Ts"]):
    img = np.zeros(S, np.int16)
    img[3:-3, 2:-2, :] = rng.integers(50, 400, (S[0] - 6, S[1] - 4, S[2]))
    lab = np.zeros(S, np.uint8); lab[8 + i:20 + i, 10:22, 5:12] = 1
    img[lab > 0] += 300
    name = f"n_{i:03d}"
    nib.save(nib.Nifti1Image(img, np.eye(4)), os.path.join(out, f"images{split}", name + ".nii.gz"))
    nib.save(nib.Nifti1Image(lab, np.eye(4)), os.path.join(out, f"labels{split}", name + ".nii.gz"))
    (training if split == "Tr" else test).append(name)
    a = np.asanyarray(nib.load(os.path.join(out, f"images{split}", name + ".nii.gz")).dataobj).astype(np.float32)
    cases[name] = dict(values=((a - a.mean()) / (a.std() + 1e-8)).ravel(order="F").tolist(),
                       mean=float(a.astype(np.float64).mean()), std=float(a.astype(np.float64).std()))
json.dump({"name": "norm", "labels": {"0": "background", "1": "fg"}, "modality": {"0": "MR"},
           "training": [{"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"} for n in training],
           "test": [f"./imagesTs/{n}.nii.gz" for n in test]}, open(os.path.join(out, "dataset.json"), "w"))
print(json.dumps(cases))
"#;

const SHAPE: Xyz<usize> = Xyz::new(40, 36, 20);

fn python() -> Option<PathBuf> {
    match std::env::var_os("DTML_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("DTML_PYTHON is not set: run the suite with `cargo xtask test`")
        }
        None => {
            eprintln!("skipped: DTML_PYTHON not set (run `cargo xtask test`)");
            None
        }
    }
}

/// Largest difference allowed: numpy's float32 statistics against ours in
/// f64, on values of a few units.
const TOLERANCE: f32 = 1e-4;

#[test]
fn every_role_and_inference_see_the_reference_normalisation() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(&python)
        .args(["-c", WRITE_AND_NORMALISE])
        .arg(&data)
        .output()
        .expect("start DTML_PYTHON");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: BTreeMap<String, Value> = serde_json::from_slice(&out.stdout).unwrap();
    let values = |name: &str| -> Vec<f32> {
        reference[name]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    };

    let ds = Dataset::open(&data, OpenOptions::default()).unwrap();
    let split = dataset::split(&ds, &LabelledSpec::Count(1), None, None).unwrap();
    let cache = dir.path().join("cache");
    let options = PrepareOptions {
        // Wider than the scans in x, so every case is padded there.
        patch: Xyz::new(48, 32, 16),
        margin: Xyz::new(Some(1), Some(1), None),
        ..PrepareOptions::default()
    };
    prepare(&ds.root, ds.layout, &split, &cache, &options, &|_| {}).unwrap();
    let prepared = PreparedDataset::open(&cache).unwrap();
    let mut roles = Vec::new();
    for record in &prepared.manifest.cases {
        let want = values(&record.id);
        let stats = &reference[&record.id];
        assert!((record.intensity_mean - stats["mean"].as_f64().unwrap()).abs() < 1e-9);
        assert!((record.intensity_std - stats["std"].as_f64().unwrap()).abs() < 1e-9);
        let case = prepared.load(record).unwrap();
        let s = case.shape;
        let (mut inside, mut padding) = (0, 0);
        for z in 0..s.z() {
            for y in 0..s.y() {
                for x in 0..s.x() {
                    let got = case.image[(z * s.y() + y) * s.x() + x];
                    let p = Xyz::new(x, y, z);
                    // Where this voxel came from: crop start + offset past
                    // the padding, if inside the crop.
                    let source = Xyz::from_fn(|a| {
                        (p[a] >= record.pad_before[a]
                            && p[a] - record.pad_before[a]
                                < record.crop_end[a] - record.crop_start[a])
                            .then(|| record.crop_start[a] + p[a] - record.pad_before[a])
                    });
                    match (source.x(), source.y(), source.z()) {
                        (Some(sx), Some(sy), Some(sz)) => {
                            let w = want[sx + SHAPE.x() * (sy + SHAPE.y() * sz)];
                            assert!(
                                (got - w).abs() < TOLERANCE,
                                "{} ({:?}) at {p:?}: {got} vs the reference's {w}",
                                record.id,
                                record.role
                            );
                            inside += 1;
                        }
                        _ => {
                            assert_eq!(got, 0.0, "{} padding at {p:?}", record.id);
                            padding += 1;
                        }
                    }
                }
            }
        }
        assert!(inside > 0, "{}: nothing compared", record.id);
        roles.push((
            record.role,
            padding > 0,
            record.crop_end.zip_with(record.crop_start, |e, s| e - s) != SHAPE,
        ));
    }
    // Every role is covered, and crops and padding both occurred.
    for role in [Role::Labelled, Role::Unlabelled, Role::Test] {
        assert!(roles.iter().any(|r| r.0 == role), "no {role:?} case");
    }
    assert!(roles.iter().all(|r| r.1), "every case is padded here");
    assert!(roles.iter().all(|r| r.2), "every case is cropped here");

    // Inference on the raw test scan sees the same values.
    let test = data.join("imagesTs/n_003.nii.gz");
    let (volume, image) = dtml_infer::infer::read_scan(&test, None).unwrap();
    assert_eq!(volume.shape, SHAPE);
    let want = values("n_003");
    // Volume data is x fastest, as nibabel's Fortran order.
    for (i, (g, w)) in image.iter().zip(&want).enumerate() {
        assert!((g - w).abs() < TOLERANCE, "inference voxel {i}: {g} vs {w}");
    }
}
