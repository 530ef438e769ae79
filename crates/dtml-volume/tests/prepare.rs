//! Dataset layouts, splits and the preparation cache, including the bad
//! inputs a user's folder may hold.

use dtml_volume::dataset::{self, OpenOptions};
use dtml_volume::prepare::GridBox;
use dtml_volume::{
    Dataset, Geometry, LabelledSpec, Layout, PrepareOptions, PreparedDataset, Role, ScanCrop,
    Volume, VoxelData, Xyz, prepare, read_volume, write_nifti,
};
use std::path::Path;

const SHAPE: Xyz<usize> = Xyz::new(20, 18, 10);

fn geometry() -> Geometry {
    Geometry::from_affine([
        [-0.8, 0.0, 0.0, 10.0],
        [0.0, -0.8, 0.0, 5.0],
        [0.0, 0.0, 2.0, -4.0],
        [0.0, 0.0, 0.0, 1.0],
    ])
}

/// A scan with a bright box (label `value`) at `at`, zeros outside a border.
fn case(at: [usize; 3], value: u8) -> (Volume, Volume) {
    let n: usize = SHAPE.voxels();
    let mut img = vec![0i16; n];
    let mut lab = vec![0u8; n];
    for z in 0..SHAPE[2] {
        for y in 0..SHAPE[1] {
            for x in 0..SHAPE[0] {
                let i = x + SHAPE[0] * (y + SHAPE[1] * z);
                if x >= 2 && y >= 2 && x < SHAPE[0] - 2 && y < SHAPE[1] - 2 {
                    img[i] = 100 + ((x * 7 + y * 3 + z) % 11) as i16;
                }
                if (at[0]..at[0] + 3).contains(&x)
                    && (at[1]..at[1] + 3).contains(&y)
                    && (at[2]..at[2] + 2).contains(&z)
                {
                    img[i] = 400;
                    lab[i] = value;
                }
            }
        }
    }
    (
        Volume::new(VoxelData::I16(img), SHAPE, geometry()).unwrap(),
        Volume::new(VoxelData::U8(lab), SHAPE, geometry()).unwrap(),
    )
}

/// An MSD dataset: `train` cases named in dataset.json without the `_0000`
/// suffix they carry on disk, and `test` cases with labels in labelsTs.
fn msd(root: &Path, train: usize, test: usize) {
    for d in ["imagesTr", "labelsTr", "imagesTs", "labelsTs"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let mut training = Vec::new();
    for i in 0..train {
        let (img, lab) = case([4 + i % 5, 5, 3], 1);
        write_nifti(&root.join(format!("imagesTr/c_{i:03}_0000.nii.gz")), &img).unwrap();
        write_nifti(&root.join(format!("labelsTr/c_{i:03}.nii.gz")), &lab).unwrap();
        training.push(serde_json::json!({"image": format!("./imagesTr/c_{i:03}.nii.gz"), "label": format!("./labelsTr/c_{i:03}.nii.gz")}));
    }
    let mut tests = Vec::new();
    for i in train..train + test {
        let (img, lab) = case([8, 8, 4], 1);
        write_nifti(&root.join(format!("imagesTs/c_{i:03}_0000.nii.gz")), &img).unwrap();
        write_nifti(&root.join(format!("labelsTs/c_{i:03}.nii.gz")), &lab).unwrap();
        tests.push(format!("./imagesTs/c_{i:03}.nii.gz"));
    }
    let json = serde_json::json!({
        "name": "toy", "labels": {"0": "background", "1": "target"}, "modality": {"0": "MRI"},
        "numTraining": train, "numTest": test, "training": training, "test": tests,
    });
    std::fs::write(
        root.join("dataset.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
}

fn options() -> PrepareOptions {
    PrepareOptions {
        patch: Xyz::new(8, 8, 6),
        margin: Xyz::new(Some(1), Some(1), None),
        ..PrepareOptions::default()
    }
}

fn prepare_msd(
    root: &Path,
    out: &Path,
    labelled: usize,
    options: &PrepareOptions,
) -> dtml_volume::Result<PreparedDataset> {
    let ds = Dataset::open(root, OpenOptions::default())?;
    let split = dataset::split(&ds, &LabelledSpec::Count(labelled), None, None)?;
    prepare(&ds.root, ds.layout, &split, out, options, &|_| {})?;
    PreparedDataset::open(out)
}

#[test]
fn msd_layout_prepares_into_a_cache_that_maps_back() {
    let dir = tempfile::tempdir().unwrap();
    let (root, out) = (dir.path().join("ds"), dir.path().join("prep"));
    msd(&root, 5, 2);
    let prep = prepare_msd(&root, &out, 2, &options()).unwrap();
    let m = &prep.manifest;
    assert_eq!(m.layout, Layout::Msd);
    assert_eq!(prep.cases(Role::Labelled).count(), 2);
    assert_eq!(prep.cases(Role::Unlabelled).count(), 3);
    assert_eq!(prep.cases(Role::Test).count(), 2);
    assert_eq!(
        prep.cases(Role::Labelled)
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>(),
        ["c_000", "c_001"]
    );
    for rec in &m.cases {
        let c = prep.load(rec).unwrap();
        assert!(
            c.shape.into_iter().zip([8, 8, 6]).all(|(s, p)| s >= p),
            "{:?}",
            c.shape
        );
        assert_eq!(
            c.label.is_some(),
            rec.role != Role::Unlabelled,
            "{}",
            rec.id
        );
        // Labelled: label box (x 4..7, y 5..8) plus margin 1, grown to the patch (8).
        if rec.role == Role::Labelled {
            assert_eq!(rec.crop_end[0] - rec.crop_start[0], 8);
            let shift = if rec.id == "c_001" { 1 } else { 0 };
            assert_eq!(
                rec.crop_start[0],
                2 + shift,
                "box 3..8 grown by one on each side to 8"
            );
            assert_eq!(
                (rec.crop_start[2], rec.crop_end[2]),
                (0, SHAPE[2]),
                "z kept whole"
            );
            let original = read_volume(rec.label_source.as_ref().unwrap()).unwrap();
            let back = rec.to_original(c.label.as_ref().unwrap()).unwrap();
            assert_eq!(
                VoxelData::U8(back),
                original.data,
                "label maps back onto the original grid"
            );
        }
        // Unlabelled and test: non-zero box (2..18, 2..16) plus margin 1.
        if rec.role != Role::Labelled {
            assert_eq!(rec.crop_start.xyz(), [1, 1, 0]);
            assert_eq!(rec.crop_end.xyz(), [19, 17, SHAPE.z()]);
        }
        // z-score over the whole original volume.
        let img = read_volume(&rec.image_source).unwrap().data.to_f64();
        let mean = img.iter().sum::<f64>() / img.len() as f64;
        assert!((rec.intensity_mean - mean).abs() < 1e-9);
        let v = c.image[c.image.len() / 2] as f64 * rec.intensity_std + rec.intensity_mean;
        assert!(
            img.iter().any(|x| (x - v).abs() < 1e-3),
            "cached intensities are z-scored originals"
        );
        // The prepared geometry places prepared voxel 0 at the crop start.
        let g = rec.prepared_geometry();
        let want = rec.original_geometry.affine[0][3]
            + rec.original_geometry.affine[0][0]
                * (rec.crop_start[0] as f64 - rec.pad_before[0] as f64);
        assert!((g.affine[0][3] - want).abs() < 1e-9);
    }
}

#[test]
fn padding_reaches_the_patch_and_is_undone() {
    let dir = tempfile::tempdir().unwrap();
    let (root, out) = (dir.path().join("ds"), dir.path().join("prep"));
    msd(&root, 2, 0);
    let opts = PrepareOptions {
        patch: Xyz::new(24, 20, 12),
        ..options()
    };
    let prep = prepare_msd(&root, &out, 1, &opts).unwrap();
    let rec = prep.cases(Role::Labelled).next().unwrap();
    assert_eq!(rec.shape.xyz(), [24, 20, 12]);
    assert_eq!(rec.pad_before.xyz(), [2, 1, 1]);
    let c = prep.load(rec).unwrap();
    let back = rec.to_original(c.label.as_ref().unwrap()).unwrap();
    assert_eq!(
        VoxelData::U8(back),
        read_volume(rec.label_source.as_ref().unwrap())
            .unwrap()
            .data
    );
}

#[test]
fn reference_crop_uses_label_boxes_for_every_case() {
    let dir = tempfile::tempdir().unwrap();
    let (root, out) = (dir.path().join("ds"), dir.path().join("prep"));
    msd(&root, 3, 1);
    let opts = PrepareOptions {
        reference_crop: true,
        ..options()
    };
    let prep = prepare_msd(&root, &out, 1, &opts).unwrap();
    for rec in prep.cases(Role::Unlabelled).chain(prep.cases(Role::Test)) {
        assert_eq!(
            rec.crop_end[0] - rec.crop_start[0],
            8,
            "{}: label box + margin, grown to the patch",
            rec.id
        );
        assert!(prep.load(rec).unwrap().label.is_none() || rec.role == Role::Test);
    }
    let none = PrepareOptions {
        scan_crop: ScanCrop::None,
        ..options()
    };
    let prep = prepare_msd(&root, &dir.path().join("p2"), 1, &none).unwrap();
    let rec = prep.cases(Role::Unlabelled).next().unwrap();
    assert_eq!((rec.crop_start, rec.crop_end), (Xyz::splat(0), SHAPE));
}

#[test]
fn nnunet_v2_layout_is_found_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Dataset001_Toy");
    msd(&root, 3, 1);
    let json = serde_json::json!({"channel_names": {"0": "MRI"}, "labels": {"background": 0, "target": 1}, "numTraining": 3, "file_ending": ".nii.gz"});
    std::fs::write(root.join("dataset.json"), json.to_string()).unwrap();
    let ds = Dataset::open(&root, OpenOptions::default()).unwrap();
    assert_eq!(ds.layout, Layout::NnUnetV2);
    assert_eq!(ds.training.len(), 3);
    assert_eq!(ds.test.len(), 1);
    assert!(ds.test[0].label.is_some());
    assert_eq!(
        ds.label_names,
        vec![(0, "background".into()), (1, "target".into())]
    );
    let bad = serde_json::json!({"channel_names": {"0": "MRI"}, "labels": {"background": 0}, "numTraining": 9, "file_ending": ".nii.gz"});
    std::fs::write(root.join("dataset.json"), bad.to_string()).unwrap();
    let e = Dataset::open(&root, OpenOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("numTraining is 9"), "{e}");
}

#[test]
fn multi_label_foreground_is_binarised_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (root, out) = (dir.path().join("ds"), dir.path().join("prep"));
    msd(&root, 3, 0);
    // Case 1 gets label value 2 instead of 1.
    let (_, lab) = case([5, 5, 3], 2);
    write_nifti(&root.join("labelsTr/c_001.nii.gz"), &lab).unwrap();
    let opts = PrepareOptions {
        foreground: vec![2],
        ..options()
    };
    let ds = Dataset::open(&root, OpenOptions::default()).unwrap();
    let split = dataset::split(&ds, &LabelledSpec::Count(2), None, None).unwrap();
    let report = prepare(&ds.root, ds.layout, &split, &out, &opts, &|_| {}).unwrap();
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("c_000") && w.contains("value 2 does not occur")),
        "{:?}",
        report.warnings
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("c_000") && w.contains("no foreground")),
        "{:?}",
        report.warnings
    );
    let prep = PreparedDataset::open(&out).unwrap();
    let rec = prep
        .manifest
        .cases
        .iter()
        .find(|c| c.id == "c_001")
        .unwrap();
    assert_eq!(rec.foreground_voxels, Some(18));
    assert_eq!(
        prep.load(rec)
            .unwrap()
            .label
            .unwrap()
            .iter()
            .map(|&v| v as usize)
            .sum::<usize>(),
        18
    );
    // A value in no labelled case is an error.
    let opts = PrepareOptions {
        foreground: vec![7],
        ..options()
    };
    let e = prepare(&ds.root, ds.layout, &split, &out, &opts, &|_| {})
        .unwrap_err()
        .to_string();
    // (Or, first, a labelled case that holds only an undeclared value.)
    assert!(
        e.contains("value 7 occurs in none") || e.contains("none of the foreground values [7]"),
        "{e}"
    );
}

fn expect_prepare_error(root: &Path, out: &Path, needle: &str) {
    let e = prepare_msd(root, out, 2, &options())
        .expect_err("must fail")
        .to_string();
    assert!(e.contains(needle), "error {e:?} should mention {needle:?}");
}

#[test]
fn bad_datasets_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("prep");
    // Missing listed file.
    let root = dir.path().join("missing");
    msd(&root, 3, 0);
    std::fs::remove_file(root.join("imagesTr/c_002_0000.nii.gz")).unwrap();
    expect_prepare_error(&root, &out, "c_002.nii.gz is listed but missing");
    // Paths leaving the dataset folder.
    let root = dir.path().join("escape");
    msd(&root, 2, 0);
    let json = serde_json::json!({"training": [{"image": "../../etc/passwd", "label": "./labelsTr/c_000.nii.gz"}]});
    std::fs::write(root.join("dataset.json"), json.to_string()).unwrap();
    expect_prepare_error(&root, &out, "leaves the dataset folder");
    let json = serde_json::json!({"training": [{"image": "/etc/passwd", "label": "./labelsTr/c_000.nii.gz"}]});
    std::fs::write(root.join("dataset.json"), json.to_string()).unwrap();
    expect_prepare_error(&root, &out, "absolute");
    std::fs::write(root.join("dataset.json"), "{ not json").unwrap();
    expect_prepare_error(&root, &out, "invalid JSON");
    // Image/label shape and affine mismatches.
    let root = dir.path().join("mismatch");
    msd(&root, 3, 0);
    let small = Volume::new(VoxelData::U8(vec![0; 8]), Xyz::new(2, 2, 2), geometry()).unwrap();
    write_nifti(&root.join("labelsTr/c_001.nii.gz"), &small).unwrap();
    expect_prepare_error(&root, &out, "label shape (x 2, y 2, z 2) differs");
    let (_, lab) = case([4, 5, 3], 1);
    let moved = Volume::new(
        lab.data.clone(),
        SHAPE,
        geometry().shifted(Xyz::new(1, 0, 0)),
    )
    .unwrap();
    write_nifti(&root.join("labelsTr/c_001.nii.gz"), &moved).unwrap();
    expect_prepare_error(&root, &out, "label affine");
    // Non-integer labels.
    let frac = Volume::new(
        VoxelData::F32(lab.data.to_f32().iter().map(|v| v * 0.5).collect()),
        SHAPE,
        geometry(),
    )
    .unwrap();
    write_nifti(&root.join("labelsTr/c_001.nii.gz"), &frac).unwrap();
    expect_prepare_error(&root, &out, "labels must be integers");
    // NaN intensities.
    let root = dir.path().join("nan");
    msd(&root, 3, 0);
    let mut v = vec![1.0f32; SHAPE.voxels()];
    v[17] = f32::NAN;
    write_nifti(
        &root.join("imagesTr/c_000_0000.nii.gz"),
        &Volume::new(VoxelData::F32(v), SHAPE, geometry()).unwrap(),
    )
    .unwrap();
    expect_prepare_error(&root, &out, "NaN or infinite");
    // Asking for more labelled cases than exist.
    let root = dir.path().join("few");
    msd(&root, 2, 0);
    let ds = Dataset::open(&root, OpenOptions::default()).unwrap();
    let e = dataset::split(&ds, &LabelledSpec::Count(5), None, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("5 labelled cases requested"), "{e}");
    // A folder that is no dataset.
    let e = Dataset::open(dir.path(), OpenOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no dataset.json"), "{e}");
}

#[test]
fn empty_and_full_labels_are_allowed_with_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let (root, out) = (dir.path().join("ds"), dir.path().join("prep"));
    msd(&root, 3, 0);
    let full = Volume::new(VoxelData::U8(vec![1; SHAPE.voxels()]), SHAPE, geometry()).unwrap();
    write_nifti(&root.join("labelsTr/c_000.nii.gz"), &full).unwrap();
    let empty = Volume::new(VoxelData::U8(vec![0; SHAPE.voxels()]), SHAPE, geometry()).unwrap();
    write_nifti(&root.join("labelsTr/c_001.nii.gz"), &empty).unwrap();
    let ds = Dataset::open(&root, OpenOptions::default()).unwrap();
    let split = dataset::split(&ds, &LabelledSpec::Count(3), None, None).unwrap();
    let report = prepare(&ds.root, ds.layout, &split, &out, &options(), &|_| {}).unwrap();
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("c_000") && w.contains("foreground everywhere"))
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("c_001") && w.contains("no foreground"))
    );
}

#[test]
fn validation_and_list_files_split_the_cases() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ds");
    msd(&root, 6, 1);
    std::fs::write(dir.path().join("val.list"), "c_005\n").unwrap();
    std::fs::write(dir.path().join("lab.list"), "# labelled\nc_002\nc_004\n").unwrap();
    let ds = Dataset::open(&root, OpenOptions::default()).unwrap();
    let split = dataset::split(
        &ds,
        &LabelledSpec::List(dir.path().join("lab.list")),
        Some(&dir.path().join("val.list")),
        None,
    )
    .unwrap();
    let ids = |r| split.of(r).map(|c| c.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(Role::Labelled), ["c_002", "c_004"]);
    assert_eq!(ids(Role::Unlabelled), ["c_000", "c_001", "c_003"]);
    assert_eq!(ids(Role::Validation), ["c_005"]);
    assert_eq!(ids(Role::Test), ["c_006"]);
    let split = dataset::split(&ds, &LabelledSpec::Fraction(0.4), None, None).unwrap();
    assert_eq!(split.of(Role::Labelled).count(), 2);
    std::fs::write(dir.path().join("bad.list"), "c_999\n").unwrap();
    let e = dataset::split(
        &ds,
        &LabelledSpec::List(dir.path().join("bad.list")),
        None,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("bad.list") && e.contains("c_999"), "{e}");
}

/// The box `window` of a whole array of `shape`, x fastest.
fn crop<T: Copy>(whole: &[T], shape: Xyz<usize>, window: GridBox) -> Vec<T> {
    let mut out = Vec::new();
    for z in window.start[2]..window.start[2] + window.size[2] {
        for y in window.start[1]..window.start[1] + window.size[1] {
            let row = (z * shape[1] + y) * shape[0];
            out.extend_from_slice(
                &whole[row + window.start[0]..row + window.start[0] + window.size[0]],
            );
        }
    }
    out
}

#[test]
fn windows_read_from_the_cache_equal_the_loaded_case() {
    let dir = tempfile::tempdir().unwrap();
    let (root, out) = (dir.path().join("ds"), dir.path().join("prep"));
    msd(&root, 4, 0);
    let prep = prepare_msd(&root, &out, 2, &options()).unwrap();
    let mut rng = 7u64;
    let mut next = |n: usize| {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng >> 33) as usize % n
    };
    for rec in &prep.manifest.cases {
        let whole = prep.load(rec).unwrap();
        let file = prep.open_case(rec).unwrap();
        assert_eq!(file.shape, rec.shape);
        assert_eq!(file.has_label(), rec.has_label);
        let mut boxes = vec![GridBox::whole(rec.shape)];
        for _ in 0..20 {
            let size = Xyz::from_fn(|a| 1 + next(rec.shape[a]));
            let start = Xyz::from_fn(|a| next(rec.shape[a] - size[a] + 1));
            boxes.push(GridBox { start, size });
        }
        for window in boxes {
            let image = file.read_image(window).unwrap();
            assert_eq!(image, crop(&whole.image, rec.shape, window), "{window:?}");
            match &whole.label {
                Some(label) => assert_eq!(
                    file.read_label(window).unwrap(),
                    crop(label, rec.shape, window)
                ),
                None => assert!(file.read_label(window).is_err()),
            }
        }
        let past = GridBox {
            start: Xyz::new(rec.shape[0], 0, 0),
            size: Xyz::new(1, 1, 1),
        };
        assert!(file.read_image(past).is_err());
    }
}

#[test]
fn damaged_cache_files_are_refused_by_windowed_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (root, out) = (dir.path().join("ds"), dir.path().join("prep"));
    msd(&root, 3, 0);
    let prep = prepare_msd(&root, &out, 1, &options()).unwrap();
    let rec = prep.cases(Role::Labelled).next().unwrap().clone();
    let path = out.join(&rec.file);
    let good = std::fs::read(&path).unwrap();
    let header = 8 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let expect = |bytes: &[u8], needle: &str| {
        std::fs::write(&path, bytes).unwrap();
        let err = prep
            .open_case(&rec)
            .and_then(|f| {
                f.read_image(GridBox::whole(rec.shape))?;
                f.read_label(GridBox::whole(rec.shape))
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{err}");
        assert!(err.contains(&rec.file), "{err}");
    };
    expect(&good[..good.len() - 1], "the file holds");
    expect(&good[..4], "no header");
    let mut huge = good.clone();
    huge[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    expect(&huge, "a header of");
    let mut nan = good.clone();
    nan[header + 4..header + 8].copy_from_slice(&f32::NAN.to_le_bytes());
    expect(&nan, "is finite");
    let mut two = good.clone();
    let last = two.len() - 1;
    two[last] = 2;
    expect(&two, "0 or 1");
    // The manifest promises a larger grid than the file holds.
    std::fs::write(&path, &good).unwrap();
    let mut bigger = rec.clone();
    bigger.shape = Xyz::new(rec.shape[0] + 1, rec.shape[1], rec.shape[2]);
    let err = prep.open_case(&bigger).unwrap_err().to_string();
    assert!(err.contains("manifest says"), "{err}");
    // A case outside the cache folder is refused before it is opened.
    let mut outside = rec.clone();
    outside.file = "../elsewhere.safetensors".into();
    assert!(prep.open_case(&outside).is_err());
}

/// The cases' files of a cache: name -> (inode, modification time).
#[cfg(unix)]
fn case_files(out: &Path) -> std::collections::BTreeMap<String, (u64, std::time::SystemTime)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(out.join("cases"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                (m.ino(), m.modified().unwrap()),
            )
        })
        .filter(|(n, _)| n.ends_with(".safetensors"))
        .collect()
}

/// Rewrites `dataset.json` of an MSD folder to list the training cases
/// `0..train` (their files written by [`msd`] or [`add_case`]).
fn list_training(root: &Path, train: usize) {
    let training: Vec<_> = (0..train)
        .map(|i| serde_json::json!({"image": format!("./imagesTr/c_{i:03}.nii.gz"), "label": format!("./labelsTr/c_{i:03}.nii.gz")}))
        .collect();
    let json = serde_json::json!({
        "name": "toy", "labels": {"0": "background", "1": "target"}, "modality": {"0": "MRI"},
        "numTraining": train, "numTest": 0, "training": training, "test": [],
    });
    std::fs::write(root.join("dataset.json"), json.to_string()).unwrap();
}

fn add_case(root: &Path, i: usize) {
    let (img, lab) = case([4 + i % 5, 6, 3], 1);
    write_nifti(&root.join(format!("imagesTr/c_{i:03}_0000.nii.gz")), &img).unwrap();
    write_nifti(&root.join(format!("labelsTr/c_{i:03}.nii.gz")), &lab).unwrap();
}

fn prepare_report(
    root: &Path,
    out: &Path,
    options: &PrepareOptions,
) -> dtml_volume::Result<dtml_volume::prepare::PrepareReport> {
    let ds = Dataset::open(root, OpenOptions::default())?;
    let split = dataset::split(&ds, &LabelledSpec::Count(2), None, None)?;
    prepare(&ds.root, ds.layout, &split, out, options, &|_| {})
}

#[cfg(unix)]
#[test]
fn prepare_again_redoes_only_new_or_changed_cases() {
    let dir = tempfile::tempdir().unwrap();
    let (root, out) = (dir.path().join("ds"), dir.path().join("prep"));
    msd(&root, 6, 0);
    let first = prepare_report(&root, &out, &options()).unwrap();
    assert_eq!((first.cases, first.reused), (6, 0));
    let before = case_files(&out);
    let loaded = |out: &Path| {
        let p = PreparedDataset::open(out).unwrap();
        p.manifest
            .cases
            .iter()
            .map(|r| (r.id.clone(), p.load(r).unwrap().image))
            .collect::<Vec<_>>()
    };
    let images = loaded(&out);

    // Two scans added to the dataset: only they are prepared.
    add_case(&root, 6);
    add_case(&root, 7);
    list_training(&root, 8);
    let added = prepare_report(&root, &out, &options()).unwrap();
    assert_eq!((added.cases, added.reused), (8, 6));
    let after = case_files(&out);
    for (name, stamp) in &before {
        assert_eq!(after.get(name), Some(stamp), "{name} was not rewritten");
    }
    assert_eq!(loaded(&out)[..6], images[..]);
    assert!(!dir.path().join(".prep.preparing").exists());

    // A source modified since: that case alone is prepared again.
    let touched = root.join("imagesTr/c_003_0000.nii.gz");
    let file = std::fs::File::options().write(true).open(&touched).unwrap();
    file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    let again = prepare_report(&root, &out, &options()).unwrap();
    assert_eq!((again.cases, again.reused), (8, 7));
    assert_ne!(
        case_files(&out)["c_003.safetensors"],
        after["c_003.safetensors"]
    );

    // Other options: every case is prepared again.
    let wider = PrepareOptions {
        patch: Xyz::new(10, 8, 6),
        ..options()
    };
    let other = prepare_report(&root, &out, &wider).unwrap();
    assert_eq!((other.cases, other.reused), (8, 0));
}

#[cfg(unix)]
#[test]
fn a_failed_prepare_keeps_its_finished_cases_for_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let (root, out) = (dir.path().join("ds"), dir.path().join("prep"));
    msd(&root, 6, 0);
    list_training(&root, 6);
    let broken = root.join("imagesTr/c_004_0000.nii.gz");
    let original = std::fs::read(&broken).unwrap();
    std::fs::write(&broken, b"not a scan").unwrap();
    let err = prepare_report(&root, &out, &options())
        .unwrap_err()
        .to_string();
    assert!(err.contains("c_004"), "{err}");
    let staging = dir.path().join(".prep.preparing");
    let kept = case_files(&staging);
    assert_eq!(kept.len(), 5, "the five good cases stay staged: {kept:?}");
    assert!(
        !out.join("manifest.json").exists(),
        "no half cache under --out"
    );

    std::fs::write(&broken, original).unwrap();
    let resumed = prepare_report(&root, &out, &options()).unwrap();
    assert_eq!((resumed.cases, resumed.reused), (6, 5));
    let published = case_files(&out);
    for (name, stamp) in &kept {
        assert_eq!(published.get(name), Some(stamp), "{name} was not rewritten");
    }
    assert!(!staging.exists());
    let p = PreparedDataset::open(&out).unwrap();
    assert_eq!(p.manifest.cases.len(), 6);
    for r in &p.manifest.cases {
        p.load(r).unwrap();
    }
}
