//! Unit tests of the window arithmetic, accumulation and post-processing.
use super::*;

#[test]
fn window_layout_matches_the_reference() {
    // Smaller than the patch: padded, one window, pad split // 2.
    let w = AxisWindows::new(28, 32, 8);
    assert_eq!((w.padded, w.pad_before, w.starts.clone()), (32, 2, vec![0]));
    let w = AxisWindows::new(27, 32, 8);
    assert_eq!((w.padded, w.pad_before), (32, 2), "5 = 2 before + 3 after");
    // Equal: one window, no padding.
    let w = AxisWindows::new(32, 32, 8);
    assert_eq!((w.padded, w.pad_before, w.starts.clone()), (32, 0, vec![0]));
    // Larger: ceil((40 - 32) / 8) + 1 = 2 windows at 0 and 8.
    assert_eq!(AxisWindows::new(40, 32, 8).starts, vec![0, 8]);
    // The last window is clamped to the end: ceil(9 / 8) + 1 = 3.
    assert_eq!(AxisWindows::new(41, 32, 8).starts, vec![0, 8, 9]);
    // The paper's LA numbers: 144 with 112 / 18 -> 3 windows, 88 with 80 / 4 -> 3.
    assert_eq!(AxisWindows::new(144, 112, 18).starts, vec![0, 18, 32]);
    assert_eq!(AxisWindows::new(88, 80, 4).starts, vec![0, 4, 8]);
    // Stride 1 visits every offset.
    assert_eq!(AxisWindows::new(20, 16, 1).starts, vec![0, 1, 2, 3, 4]);
    // Coverage counts the windows over each voxel.
    let w = AxisWindows::new(41, 32, 8);
    let c = w.coverage(32);
    assert_eq!(
        (c[0], c[8], c[9], c[31], c[32], c[39], c[40]),
        (1, 2, 3, 3, 2, 2, 1)
    );
    assert!(c.iter().all(|&v| v >= 1));
}

#[test]
fn sigmoid_is_stable_at_the_extremes() {
    assert_eq!(sigmoid(0.0), 0.5);
    assert_eq!(sigmoid(-1500.0), 0.0);
    assert_eq!(sigmoid(1500.0), 1.0);
    assert!((sigmoid(2.0) - 0.880_797).abs() < 1e-6);
    assert!((sigmoid(-2.0) - 0.119_203).abs() < 1e-6);
}

#[test]
fn zscore_matches_preparation() {
    let mut v = vec![1.0f32, 2.0, 3.0, 4.0];
    zscore(&mut v);
    let s = 1.25f64.sqrt();
    for (got, x) in v.iter().zip([1.0f64, 2.0, 3.0, 4.0]) {
        assert_eq!(*got, ((x - 2.5) / s) as f32);
    }
    let mut flat = vec![5.0f32; 8];
    zscore(&mut flat);
    assert!(flat.iter().all(|&v| v == 0.0));
}

#[test]
fn extract_and_accumulate_are_inverse_placements() {
    let dims = Xyz::new(5, 4, 3);
    let padded: Vec<f32> = (0..60).map(|i| i as f32).collect();
    let mut win = vec![0f32; 2 * 2 * 2];
    extract(
        &padded,
        dims,
        Xyz::new(3, 1, 1),
        Xyz::new(2, 2, 2),
        &mut win,
    );
    assert_eq!(win, vec![28.0, 29.0, 33.0, 34.0, 48.0, 49.0, 53.0, 54.0]);
    let mut acc = vec![0f32; 60];
    accumulate(&mut acc, dims, Xyz::new(3, 1, 1), Xyz::new(2, 2, 2), &win);
    for (i, &v) in acc.iter().enumerate() {
        assert_eq!(
            v,
            if win.contains(&(i as f32)) {
                i as f32
            } else {
                0.0
            }
        );
    }
}

fn options(patch: Xyz<usize>, stride: Xyz<usize>, batch: usize) -> InferenceOptions {
    InferenceOptions {
        patch,
        stride,
        batch,
        ensemble: Ensemble::Region,
        threshold: 0.5,
        largest_component: false,
        connectivity: dtml_edt::Connectivity::Full,
        disagreement: false,
        sharpness: SHARPNESS,
    }
}

/// Dyadic values in [0, 1): sums of equal copies divide back exactly.
fn ramp(shape: Xyz<usize>) -> Vec<f32> {
    let n = shape.voxels();
    (0..n).map(|i| ((i * 37) % 64) as f32 / 64.0).collect()
}

#[test]
fn identity_windows_average_back_to_the_input_exactly() {
    let patch = Xyz::new(32, 32, 16);
    for shape in [
        Xyz::new(40, 28, 20),
        Xyz::new(32, 32, 16),
        Xyz::new(20, 13, 9),
        Xyz::new(33, 50, 17),
    ] {
        let windows: usize = (0..3)
            .map(|a| {
                AxisWindows::new(shape[a], patch[a], [8, 8, 4][a])
                    .starts
                    .len()
            })
            .product();
        for batch in [1, 3] {
            let image = ramp(shape);
            let o = options(patch, Xyz::new(8, 8, 4), batch);
            let (mut calls, mut seen) = (0, 0);
            let p = sliding_window(&image, shape, &o, |w, n| {
                calls += 1;
                seen += n;
                assert_eq!(w.len(), n * 32 * 32 * 16);
                Ok((Some(w), None))
            })
            .unwrap();
            assert_eq!(seen, windows, "{shape:?}");
            assert_eq!(calls, windows.div_ceil(batch), "{shape:?} batch {batch}");
            assert_eq!(p.shape, shape);
            assert!(
                p.probability == image,
                "{shape:?}: averaging must give the input"
            );
            let want: Vec<u8> = image.iter().map(|&v| (v > 0.5) as u8).collect();
            assert_eq!(p.mask, want);
            assert!(p.disagreement.is_none());
        }
    }
}

#[test]
fn ensemble_and_disagreement_average_per_window() {
    let shape = Xyz::new(40, 28, 20);
    let image = ramp(shape);
    let mut o = options(Xyz::new(32, 32, 16), Xyz::new(8, 8, 4), 2);
    o.ensemble = Ensemble::Both;
    o.disagreement = true;
    o.threshold = 0.4;
    let p = sliding_window(&image, shape, &o, |w, _| {
        let q = w.iter().map(|v| 1.0 - v).collect();
        Ok((Some(w), Some(q)))
    })
    .unwrap();
    assert!(p.probability.iter().all(|&v| v == 0.5));
    assert!(p.mask.iter().all(|&v| v == 1));
    let d = p.disagreement.unwrap();
    for (d, v) in d.iter().zip(&image) {
        assert_eq!(*d, (2.0 * v - 1.0).abs());
    }
    o.ensemble = Ensemble::Boundary;
    o.disagreement = false;
    let p = sliding_window(&image, shape, &o, |w, _| {
        Ok((None, Some(w.iter().map(|v| 1.0 - v).collect())))
    })
    .unwrap();
    for (got, v) in p.probability.iter().zip(&image) {
        assert_eq!(*got, 1.0 - v);
    }
}

#[test]
fn each_voxel_averages_exactly_the_windows_that_cover_it() {
    // Window i (in visiting order) predicts the constant i everywhere.
    let shape = Xyz::new(41, 20, 18);
    let (patch, stride) = (Xyz::new(32, 16, 16), Xyz::new(8, 16, 4));
    let image = vec![0f32; shape.voxels()];
    let mut next = 0f32;
    let p = sliding_window(&image, shape, &options(patch, stride, 2), |_, n| {
        let mut v = Vec::new();
        for _ in 0..n {
            v.extend(std::iter::repeat_n(next, 32 * 16 * 16));
            next += 1.0;
        }
        Ok((Some(v), None))
    })
    .unwrap();
    let axes: Vec<AxisWindows> = (0..3)
        .map(|a| AxisWindows::new(shape[a], patch[a], stride[a]))
        .collect();
    let mut windows = Vec::new();
    for &x in &axes[0].starts {
        for &y in &axes[1].starts {
            for &z in &axes[2].starts {
                windows.push([x, y, z]);
            }
        }
    }
    assert_eq!(windows.len(), next as usize);
    for &(x, y, z) in &[(0, 0, 0), (8, 3, 2), (9, 19, 17), (40, 10, 9), (31, 5, 4)] {
        let q = [
            x + axes[0].pad_before,
            y + axes[1].pad_before,
            z + axes[2].pad_before,
        ];
        let ids: Vec<f32> = windows
            .iter()
            .enumerate()
            .filter(|(_, w)| (0..3).all(|a| w[a] <= q[a] && q[a] < w[a] + patch[a]))
            .map(|(i, _)| i as f32)
            .collect();
        let want = ids.iter().sum::<f32>() / ids.len() as f32;
        let got = p.probability[(z * shape[1] + y) * shape[0] + x];
        assert_eq!(
            got, want,
            "voxel ({x}, {y}, {z}) covered by windows {ids:?}"
        );
    }
}

#[test]
fn largest_component_uses_26_connectivity_unless_told_6() {
    // Two diagonal voxels touch by a corner (one 26-component) and a
    // separate single voxel: the pair is kept.
    let shape = Xyz::new(20, 20, 20);
    let mut image = vec![0f32; 8000];
    let at = |x: usize, y: usize, z: usize| (z * 20 + y) * 20 + x;
    image[at(2, 2, 2)] = 1.0;
    image[at(3, 3, 3)] = 1.0;
    image[at(15, 15, 15)] = 1.0;
    let mut o = options(Xyz::new(16, 16, 16), Xyz::new(4, 4, 4), 4);
    o.largest_component = true;
    let p = sliding_window(&image, shape, &o, |w, _| Ok((Some(w), None))).unwrap();
    assert_eq!(p.mask.iter().map(|&v| v as usize).sum::<usize>(), 2);
    assert_eq!((p.mask[at(2, 2, 2)], p.mask[at(3, 3, 3)]), (1, 1));
    assert_eq!(p.mask[at(15, 15, 15)], 0);
    // Face neighbours only: three single voxels, and the first in memory
    // order wins the tie (as scipy's label + argmax of the sizes).
    o.connectivity = dtml_edt::Connectivity::Face;
    let p = sliding_window(&image, shape, &o, |w, _| Ok((Some(w), None))).unwrap();
    assert_eq!(p.mask.iter().map(|&v| v as usize).sum::<usize>(), 1);
    assert_eq!(p.mask[at(2, 2, 2)], 1);
}

#[test]
fn bad_options_and_inputs_are_errors() {
    let shape = Xyz::new(20, 20, 20);
    let image = vec![0f32; 8000];
    let none = Students::default();
    let base = options(Xyz::new(16, 16, 16), Xyz::new(4, 4, 4), 1);
    let err = |o: &InferenceOptions, image: &[f32], shape: Xyz<usize>| {
        predict_volume(&none, image, shape, o)
            .unwrap_err()
            .to_string()
    };
    let mut o = base.clone();
    o.patch = Xyz::new(24, 16, 16);
    assert!(err(&o, &image, shape).contains("multiple of 16"));
    o.patch = Xyz::new(0, 16, 16);
    assert!(err(&o, &image, shape).contains("multiple of 16"));
    let mut o = base.clone();
    o.stride = Xyz::new(0, 4, 4);
    assert!(err(&o, &image, shape).contains("stride"));
    o.stride = Xyz::new(17, 4, 4);
    assert!(err(&o, &image, shape).contains("stride"));
    let mut o = base.clone();
    o.batch = 0;
    assert!(err(&o, &image, shape).contains("batch"));
    let mut o = base.clone();
    o.threshold = f32::NAN;
    assert!(err(&o, &image, shape).contains("threshold"));
    assert!(err(&base, &image[1..], shape).contains("voxels"));
    assert!(err(&base, &[], Xyz::new(0, 20, 20)).contains("positive"));
    assert!(err(&base, &image, shape).contains("region student"));
    let mut o = base.clone();
    o.ensemble = Ensemble::Both;
    assert!(err(&o, &image, shape).contains("ensemble"));
    let mut o = base.clone();
    o.ensemble = Ensemble::Boundary;
    assert!(err(&o, &image, shape).contains("boundary student"));
}

#[test]
fn choices_read_and_write_one_name() {
    for (text, e) in [
        ("ensemble", Ensemble::Both),
        ("region", Ensemble::Region),
        ("boundary", Ensemble::Boundary),
    ] {
        assert_eq!(text.parse::<Ensemble>(), Ok(e));
        assert_eq!(e.to_string(), text);
        assert_eq!(serde_json::to_value(e).unwrap(), text);
    }
    assert_eq!("both".parse::<Ensemble>(), Ok(Ensemble::Both));
    let units: dtml_edt::Units = "voxels".parse().unwrap();
    assert_eq!(serde_json::to_value(units).unwrap(), "voxels");
    assert_eq!(dtml_edt::Units::Millimetres.to_string(), "mm");
    assert_eq!(dtml_edt::EmptyScoring::Reference.to_string(), "reference");
    assert_eq!("nonzero".parse(), Ok(dtml_volume::ScanCrop::NonZero));
    assert_eq!("mse".parse(), Ok(dtml_loss::SdmLoss::Mse));
    assert_eq!(dtml_loss::DiceVariant::Squared.to_string(), "squared");
}
