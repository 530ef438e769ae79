//! The synthetic dataset generator: determinism, plausible and hard data,
//! the Decathlon layout on disk, and the committed tiny fixture.

use dtml_volume::dataset::{Dataset, OpenOptions};
use dtml_volume::synthetic::{SyntheticConfig, generate_case, write_dataset};
use dtml_volume::{DataType, Volume, VoxelData, Xyz, read_volume};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};

fn small(seed: u64) -> SyntheticConfig {
    SyntheticConfig {
        shape: Xyz::new(32, 32, 24),
        train_cases: 3,
        test_cases: 1,
        seed,
        ..SyntheticConfig::default()
    }
}

fn image_values(v: &Volume) -> &[i16] {
    match &v.data {
        VoxelData::I16(d) => d,
        other => panic!("image should be i16, got {:?}", other.dtype()),
    }
}

fn label_values(v: &Volume) -> &[u8] {
    match &v.data {
        VoxelData::U8(d) => d,
        other => panic!("label should be u8, got {:?}", other.dtype()),
    }
}

/// Size of the largest 26-connected component of the foreground.
fn largest_component(label: &[u8], shape: [usize; 3]) -> usize {
    let [nx, ny, nz] = shape;
    let mut seen = vec![false; label.len()];
    let mut best = 0;
    let mut queue = VecDeque::new();
    for start in 0..label.len() {
        if label[start] == 0 || seen[start] {
            continue;
        }
        seen[start] = true;
        queue.push_back(start);
        let mut size = 0;
        while let Some(i) = queue.pop_front() {
            size += 1;
            let (x, y, z) = (i % nx, (i / nx) % ny, i / (nx * ny));
            for dz in -1i64..=1 {
                for dy in -1i64..=1 {
                    for dx in -1i64..=1 {
                        let (a, b, c) = (x as i64 + dx, y as i64 + dy, z as i64 + dz);
                        if a < 0
                            || b < 0
                            || c < 0
                            || a >= nx as i64
                            || b >= ny as i64
                            || c >= nz as i64
                        {
                            continue;
                        }
                        let j = a as usize + nx * (b as usize + ny * c as usize);
                        if label[j] != 0 && !seen[j] {
                            seen[j] = true;
                            queue.push_back(j);
                        }
                    }
                }
            }
        }
        best = best.max(size);
    }
    best
}

/// Best Dice of `image >= t` with the label over all thresholds t, and the
/// best Dice of `lo <= image <= hi` over all intensity bands.
fn best_threshold_dice(image: &[i16], label: &[u8]) -> (f64, f64) {
    let max = image.iter().map(|&v| v.max(0) as usize).max().unwrap_or(0);
    let mut all = vec![0usize; max + 1];
    let mut fg = vec![0usize; max + 1];
    for (&v, &l) in image.iter().zip(label) {
        let v = v.max(0) as usize;
        all[v] += 1;
        fg[v] += usize::from(l != 0);
    }
    let total_fg: usize = fg.iter().sum();
    // Prefix sums: counts of values < t.
    let mut all_below = vec![0usize; max + 2];
    let mut fg_below = vec![0usize; max + 2];
    for v in 0..=max {
        all_below[v + 1] = all_below[v] + all[v];
        fg_below[v + 1] = fg_below[v] + fg[v];
    }
    let dice = |tp: usize, predicted: usize| {
        if predicted + total_fg == 0 {
            1.0
        } else {
            2.0 * tp as f64 / (predicted + total_fg) as f64
        }
    };
    let mut best_threshold: f64 = 0.0;
    let mut best_band: f64 = 0.0;
    // Bands are evaluated on a coarser grid of 4 intensity units to stay fast.
    for lo in (0..=max).step_by(4) {
        let d = dice(total_fg - fg_below[lo], all_below[max + 1] - all_below[lo]);
        best_threshold = best_threshold.max(d);
        for hi in (lo..=max).step_by(4) {
            let tp = fg_below[hi + 1] - fg_below[lo];
            let predicted = all_below[hi + 1] - all_below[lo];
            best_band = best_band.max(dice(tp, predicted));
        }
    }
    for lo in 0..=max {
        let d = dice(total_fg - fg_below[lo], all_below[max + 1] - all_below[lo]);
        best_threshold = best_threshold.max(d);
    }
    (best_threshold, best_band.max(best_threshold))
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let config = small(11);
    let (image_a, label_a) = generate_case(&config, 2).unwrap();
    let (image_b, label_b) = generate_case(&config, 2).unwrap();
    assert_eq!(image_a.data.to_le_bytes(), image_b.data.to_le_bytes());
    assert_eq!(label_a.data.to_le_bytes(), label_b.data.to_le_bytes());
    assert_eq!(image_a.geometry, image_b.geometry);

    let (image_c, label_c) = generate_case(&small(12), 2).unwrap();
    assert_ne!(image_a.data, image_c.data);
    assert_ne!(label_a.data, label_c.data);
    // Another case of the same dataset differs too.
    let (image_d, _) = generate_case(&config, 3).unwrap();
    assert_ne!(image_a.data, image_d.data);
}

#[test]
fn case_does_not_depend_on_case_counts() {
    let mut other = small(11);
    other.train_cases = 40;
    other.test_cases = 0;
    assert_eq!(
        generate_case(&small(11), 1).unwrap(),
        generate_case(&other, 1).unwrap()
    );
}

fn check_case(image: &Volume, label: &Volume) -> (f64, f64, f64) {
    let img = image_values(image);
    let lab = label_values(label);
    assert_eq!(image.shape, label.shape);
    assert_eq!(image.geometry, label.geometry);
    assert!(lab.iter().all(|&v| v <= 1));
    let fg = lab.iter().filter(|&&v| v != 0).count();
    let fraction = fg as f64 / lab.len() as f64;
    let connected = largest_component(lab, label.shape.xyz()) as f64 / fg.max(1) as f64;
    let (threshold, band) = best_threshold_dice(img, lab);
    // Learnable: the target is brighter than the tissue around it on average.
    let mean = |sel: &dyn Fn(usize) -> bool| {
        let (s, n) = (0..img.len())
            .filter(|&i| sel(i))
            .fold((0.0, 0usize), |(s, n), i| (s + img[i] as f64, n + 1));
        s / n.max(1) as f64
    };
    let fg_mean = mean(&|i| lab[i] != 0);
    let bg_mean = mean(&|i| lab[i] == 0 && img[i] > 100);
    eprintln!(
        "fg {:.2}% largest component {:.3} threshold Dice {threshold:.3} band Dice {band:.3} fg mean {fg_mean:.0} bg mean {bg_mean:.0}",
        fraction * 100.0,
        connected
    );
    assert!(
        (0.02..=0.20).contains(&fraction),
        "foreground fraction {fraction}"
    );
    assert!(connected > 0.9, "largest component holds {connected}");
    assert!(fg_mean > 1.3 * bg_mean, "fg {fg_mean} vs bg {bg_mean}");
    (fraction, threshold, band)
}

#[test]
fn small_cases_are_plausible_and_threshold_fails() {
    let config = small(1337);
    let mut thresholds = Vec::new();
    for index in 0..8 {
        let (image, label) = generate_case(&config, index).unwrap();
        let (_, threshold, band) = check_case(&image, &label);
        assert!(threshold < 0.8, "case {index}: threshold Dice {threshold}");
        assert!(band < 0.85, "case {index}: band Dice {band}");
        thresholds.push(threshold);
    }
    let mean = thresholds.iter().sum::<f64>() / thresholds.len() as f64;
    eprintln!("mean best threshold Dice {mean:.3}");
    assert!(mean < 0.75, "mean best threshold Dice {mean}");
}

#[test]
fn default_size_case_is_plausible_and_threshold_fails() {
    let config = SyntheticConfig::default();
    let (image, label) = generate_case(&config, 0).unwrap();
    assert_eq!(image.shape.xyz(), [64, 64, 48]);
    let spacing = image.spacing();
    for a in 0..3 {
        let rel = spacing[a] / config.spacing[a];
        assert!((0.949..=1.051).contains(&rel), "spacing {spacing:?}");
    }
    // LPS-like flips of x and y in a RAS affine, a non-zero origin.
    let affine = image.affine();
    assert!(affine[0][0] < 0.0 && affine[1][1] < 0.0 && affine[2][2] > 0.0);
    assert!((0..3).any(|r| affine[r][3] != 0.0));
    let (_, threshold, band) = check_case(&image, &label);
    assert!(threshold < 0.8, "threshold Dice {threshold}");
    assert!(band < 0.85, "band Dice {band}");
    let max = image_values(&image).iter().copied().max().unwrap();
    assert!((800..4000).contains(&max), "max intensity {max}");
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn writes_decathlon_layout() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("synth");
    let config = SyntheticConfig {
        shape: Xyz::new(32, 24, 16),
        train_cases: 2,
        test_cases: 1,
        seed: 5,
        ..SyntheticConfig::default()
    };
    write_dataset(&out, &config).unwrap();
    assert_eq!(
        file_names(&out.join("imagesTr")),
        ["synth_000_0000.nii.gz", "synth_001_0000.nii.gz"]
    );
    assert_eq!(
        file_names(&out.join("labelsTr")),
        ["synth_000.nii.gz", "synth_001.nii.gz"]
    );
    assert_eq!(file_names(&out.join("imagesTs")), ["synth_002_0000.nii.gz"]);
    assert_eq!(file_names(&out.join("labelsTs")), ["synth_002.nii.gz"]);

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(json["tensorImageSize"], "3D");
    assert_eq!(json["modality"]["0"], "MRI");
    assert_eq!(json["labels"]["0"], "background");
    assert_eq!(json["labels"]["1"], "target");
    assert_eq!(json["numTraining"], 2);
    assert_eq!(json["numTest"], 1);
    assert_eq!(
        json["training"],
        serde_json::json!([
            {"image": "./imagesTr/synth_000.nii.gz", "label": "./labelsTr/synth_000.nii.gz"},
            {"image": "./imagesTr/synth_001.nii.gz", "label": "./labelsTr/synth_001.nii.gz"},
        ])
    );
    assert_eq!(
        json["test"],
        serde_json::json!(["./imagesTs/synth_002.nii.gz"])
    );

    for (index, image, label) in [
        (
            0,
            "imagesTr/synth_000_0000.nii.gz",
            "labelsTr/synth_000.nii.gz",
        ),
        (
            2,
            "imagesTs/synth_002_0000.nii.gz",
            "labelsTs/synth_002.nii.gz",
        ),
    ] {
        let img = read_volume(&out.join(image)).unwrap();
        let lab = read_volume(&out.join(label)).unwrap();
        assert_eq!(img.data.dtype(), DataType::I16);
        assert_eq!(lab.data.dtype(), DataType::U8);
        assert_eq!(img.shape.xyz(), [32, 24, 16]);
        assert_eq!(lab.shape.xyz(), [32, 24, 16]);
        let (mem_img, mem_lab) = generate_case(&config, index).unwrap();
        assert_eq!(img.data, mem_img.data);
        assert_eq!(lab.data, mem_lab.data);
        for a in 0..3 {
            assert!((img.spacing()[a] - mem_img.spacing()[a]).abs() < 1e-5);
            assert!((lab.spacing()[a] - img.spacing()[a]).abs() < 1e-9);
            for c in 0..4 {
                assert!((img.affine()[a][c] - mem_img.affine()[a][c]).abs() < 1e-4);
            }
        }
    }

    // The project's dataset reader finds every case despite the `_0000`
    // suffix on disk.
    let dataset = Dataset::open(&out, OpenOptions::default()).unwrap();
    assert_eq!(dataset.training.len(), 2);
    assert_eq!(dataset.test.len(), 1);
    assert!(dataset.training.iter().all(|c| c.label.is_some()));
    assert!(dataset.training[0].image.is_file());
}

#[test]
fn write_dataset_refuses_bad_shapes() {
    let dir = tempfile::tempdir().unwrap();
    for shape in [Xyz::new(8, 32, 32), Xyz::new(32, 32, 600)] {
        let config = SyntheticConfig {
            shape,
            ..SyntheticConfig::default()
        };
        let err = write_dataset(dir.path(), &config).unwrap_err().to_string();
        assert!(err.contains("16 to 512"), "{err}");
    }
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data-fixtures/synthetic-tiny")
}

fn fixture_config() -> SyntheticConfig {
    SyntheticConfig {
        shape: Xyz::new(32, 32, 16),
        train_cases: 3,
        test_cases: 1,
        seed: 7,
        ..SyntheticConfig::default()
    }
}

const FIXTURE_FILES: [&str; 8] = [
    "imagesTr/synth_000_0000.nii.gz",
    "imagesTr/synth_001_0000.nii.gz",
    "imagesTr/synth_002_0000.nii.gz",
    "imagesTs/synth_003_0000.nii.gz",
    "labelsTr/synth_000.nii.gz",
    "labelsTr/synth_001.nii.gz",
    "labelsTr/synth_002.nii.gz",
    "labelsTs/synth_003.nii.gz",
];

/// Rewrites the committed fixture:
/// `cargo test -p dtml-volume --test synthetic -- --ignored regenerate_fixture`
#[test]
#[ignore = "rewrites data-fixtures/synthetic-tiny; run on purpose"]
fn regenerate_fixture() {
    write_dataset(&fixture_dir(), &fixture_config()).unwrap();
}

#[test]
fn committed_fixture_matches_generator() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), &fixture_config()).unwrap();
    let fixture = fixture_dir();
    let regenerate = "regenerate with `cargo test -p dtml-volume --test synthetic -- --ignored regenerate_fixture` if the generator changed on purpose";
    assert_eq!(
        std::fs::read_to_string(fixture.join("dataset.json")).unwrap(),
        std::fs::read_to_string(dir.path().join("dataset.json")).unwrap(),
        "dataset.json differs; {regenerate}"
    );
    for name in FIXTURE_FILES {
        let committed = read_volume(&fixture.join(name)).unwrap();
        let fresh = read_volume(&dir.path().join(name)).unwrap();
        assert_eq!(committed.shape, fresh.shape, "{name}");
        assert_eq!(committed.geometry, fresh.geometry, "{name}: {regenerate}");
        assert!(
            committed.data == fresh.data,
            "{name}: voxels differ; {regenerate}"
        );
    }
}

/// Prints the statistics of many cases (for tuning the generator):
/// `cargo test -p dtml-volume --test synthetic -- --ignored --nocapture statistics`
#[test]
#[ignore = "prints statistics of many cases; slow in debug builds"]
fn statistics() {
    for config in [small(1337), SyntheticConfig::default()] {
        let (mut fr, mut th, mut worst, mut band) = (Vec::new(), Vec::new(), 0.0f64, 0.0f64);
        let mut conn: f64 = 1.0;
        for index in 0..24 {
            let (image, label) = generate_case(&config, index).unwrap();
            let lab = label_values(&label);
            let fg = lab.iter().filter(|&&v| v != 0).count();
            conn = conn.min(largest_component(lab, label.shape.xyz()) as f64 / fg.max(1) as f64);
            let (t, b) = best_threshold_dice(image_values(&image), lab);
            band = band.max(b);
            fr.push(fg as f64 / lab.len() as f64);
            th.push(t);
            worst = worst.max(t);
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let min = |v: &[f64]| v.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
        eprintln!(
            "{:?}: fg {:.2}..{:.2}% (mean {:.2}%), threshold Dice mean {:.3} max {worst:.3}, band Dice max {band:.3}, worst connectivity {conn:.3}",
            config.shape,
            min(&fr) * 100.0,
            max(&fr) * 100.0,
            mean(&fr) * 100.0,
            mean(&th)
        );
        let dir = tempfile::tempdir().unwrap();
        let start = std::time::Instant::now();
        write_dataset(dir.path(), &config).unwrap();
        eprintln!(
            "write_dataset of {} cases of {:?}: {:.2} s",
            config.total_cases(),
            config.shape,
            start.elapsed().as_secs_f64()
        );
    }
}

/// The difficulty knob makes intensity a worse guide: on the same cases,
/// the best intensity band scores lower at difficulty 1 than at 0, the
/// labels stay plausible, and values outside 0..=1 are refused.
#[test]
fn difficulty_makes_intensity_a_worse_guide() {
    let mut easier = Vec::new();
    let mut harder = Vec::new();
    for index in 0..3 {
        let easy = SyntheticConfig::default();
        let hard = SyntheticConfig {
            difficulty: 1.0,
            ..SyntheticConfig::default()
        };
        let (image_e, label_e) = generate_case(&easy, index).unwrap();
        let (image_h, label_h) = generate_case(&hard, index).unwrap();
        assert_ne!(image_values(&image_e), image_values(&image_h));
        let (fg_fraction, _, band_h) = check_case(&image_h, &label_h);
        assert!(fg_fraction > 0.01, "case {index}: foreground {fg_fraction}");
        easier.push(best_threshold_dice(image_values(&image_e), label_values(&label_e)).1);
        harder.push(band_h);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(
        mean(&harder) < mean(&easier) - 0.03,
        "best band Dice {harder:?} (difficulty 1) vs {easier:?} (0)"
    );
    for bad in [-0.1, 1.5, f64::NAN] {
        let config = SyntheticConfig {
            difficulty: bad,
            ..small(1)
        };
        let err = config.validate(Path::new("out")).unwrap_err().to_string();
        assert!(err.contains("difficulty"), "{err}");
    }
}
