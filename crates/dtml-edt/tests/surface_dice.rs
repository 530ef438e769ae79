//! Surface Dice against DeepMind's `surface-distance` package: golden
//! values for analytic mask pairs at several spacings and tolerances
//! (`data-fixtures/surface/make_surfel_table.py`), and the edge cases.

use dtml_edt::{EdtError, surface_dice};
use serde_json::Value;
use std::path::Path;

fn golden() -> Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data-fixtures/surface/golden.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

/// A mask of the script's analytic kinds: a ball (integer squared radius)
/// or a box `[lo, hi)`.
fn build(spec: &Value, shape: &[usize]) -> Vec<bool> {
    let mut m = vec![false; shape.iter().product()];
    for z in 0..shape[0] {
        for y in 0..shape[1] {
            for x in 0..shape[2] {
                let p = [z, y, x];
                let inside = if spec["kind"] == "ball" {
                    let c = usizes(&spec["centre"]);
                    let r2 = spec["r2"].as_u64().unwrap() as i64;
                    (0..3)
                        .map(|k| (p[k] as i64 - c[k] as i64).pow(2))
                        .sum::<i64>()
                        <= r2
                } else {
                    let (lo, hi) = (usizes(&spec["lo"]), usizes(&spec["hi"]));
                    (0..3).all(|k| lo[k] <= p[k] && p[k] < hi[k])
                };
                m[(z * shape[1] + y) * shape[2] + x] = inside;
            }
        }
    }
    m
}

#[test]
fn equals_surface_distance_package() {
    let g = golden();
    let shape = usizes(&g["shape"]);
    let cases = g["cases"].as_array().unwrap();
    assert!(cases.len() >= 40);
    for case in cases {
        let pred = build(&g["masks"][case["prediction"].as_str().unwrap()], &shape);
        let reference = build(&g["masks"][case["reference"].as_str().unwrap()], &shape);
        let spacing: Vec<f64> = case["spacing"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let tolerance = case["tolerance"].as_f64().unwrap();
        let want = case["surface_dice"].as_f64().unwrap();
        let got = surface_dice(&pred, &reference, &shape, &spacing, tolerance)
            .unwrap()
            .unwrap();
        assert!(
            (got - want).abs() <= 1e-9 * want.max(1e-3),
            "{case}: dtml {got} vs surface-distance {want}"
        );
        // u8 masks read the same.
        let as_u8 = |m: &[bool]| m.iter().map(|&b| b as u8 * 3).collect::<Vec<u8>>();
        let again = surface_dice(
            &as_u8(&pred),
            &as_u8(&reference),
            &shape,
            &spacing,
            tolerance,
        )
        .unwrap();
        assert_eq!(again, Some(got));
    }
}

#[test]
fn empty_masks_bad_tolerances_and_other_ranks() {
    let shape = [6, 7, 8];
    let empty = vec![false; 6 * 7 * 8];
    let mut one = empty.clone();
    one[(3 * 7 + 3) * 8 + 4] = true;
    let sp = [1.0, 1.0, 1.0];
    assert_eq!(
        surface_dice(&empty, &empty, &shape, &sp, 1.0).unwrap(),
        None
    );
    assert_eq!(
        surface_dice(&one, &empty, &shape, &sp, 1.0).unwrap(),
        Some(0.0)
    );
    assert_eq!(
        surface_dice(&empty, &one, &shape, &sp, 1.0).unwrap(),
        Some(0.0)
    );
    assert_eq!(
        surface_dice(&one, &one, &shape, &sp, 0.0).unwrap(),
        Some(1.0)
    );
    // A mask touching the volume's faces: its surface closes there.
    let full = vec![true; 6 * 7 * 8];
    assert_eq!(
        surface_dice(&full, &full, &shape, &sp, 0.0).unwrap(),
        Some(1.0)
    );
    assert!(matches!(
        surface_dice(&one, &one, &shape, &sp, -1.0),
        Err(EdtError::BadTolerance(_))
    ));
    assert!(matches!(
        surface_dice(&one, &one, &shape, &sp, f64::NAN),
        Err(EdtError::BadTolerance(_))
    ));
    assert!(matches!(
        surface_dice(&one[..56], &one[..56], &[7, 8], &[1.0, 1.0], 1.0),
        Err(EdtError::NeedsThreeAxes { got: 2, .. })
    ));
    assert!(matches!(
        surface_dice(&one, &one[..10], &shape, &sp, 1.0),
        Err(EdtError::LengthMismatch { .. })
    ));
}
