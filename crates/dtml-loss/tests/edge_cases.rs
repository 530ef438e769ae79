//! Degenerate inputs, saturation, errors and the ramp-up schedule.

mod common;

use candle_core::{DType, Device, IndexOp, Tensor, Var};
use common::{Rng, scalar, t64, to_vec};
use dtml_loss::{
    DiceVariant, LossError, SDM_SHARPNESS, SdmLoss, bce_with_logits, consistency, dice_loss,
    rampup_weight, sdm_regression, sdm_to_mask,
};

const DTYPES: [DType; 2] = [DType::F32, DType::F64];

fn all_finite(t: &Tensor) -> bool {
    to_vec(t).iter().all(|x| x.is_finite())
}

#[test]
fn dice_all_zero_is_zero_with_finite_gradient() {
    for dtype in DTYPES {
        for variant in [DiceVariant::Squared, DiceVariant::Linear] {
            let p = Var::zeros((2, 1, 3, 4, 5), dtype, &Device::Cpu).unwrap();
            let y = Tensor::zeros((2, 1, 3, 4, 5), dtype, &Device::Cpu).unwrap();
            let loss = dice_loss(&p, &y, variant).unwrap();
            assert_eq!(scalar(&loss), 0.0, "{dtype:?} {variant:?}");
            let g = loss.backward().unwrap();
            let gp = g.get(p.as_tensor()).unwrap();
            assert!(all_finite(gp), "{dtype:?} {variant:?}: {gp}");
        }
    }
}

#[test]
fn dice_perfect_and_disjoint() {
    let y = t64(&[1.0, 0.0, 1.0, 1.0], &[4]);
    let perfect = dice_loss(&y, &y, DiceVariant::Squared).unwrap();
    assert!(scalar(&perfect).abs() < 1e-12);
    let p = t64(&[0.0, 1.0, 0.0, 0.0], &[4]);
    let disjoint = dice_loss(&p, &y, DiceVariant::Linear).unwrap();
    // 1 - 1e-5 / (1 + 3 + 1e-5)
    assert!((scalar(&disjoint) - (1.0 - 1e-5 / (4.0 + 1e-5))).abs() < 1e-15);
}

#[test]
fn integer_labels_are_cast_to_the_prediction_dtype() {
    let p = Tensor::new(&[0.9f32, 0.2, 0.7, 0.4], &Device::Cpu).unwrap();
    let y_u8 = Tensor::new(&[1u8, 0, 1, 0], &Device::Cpu).unwrap();
    let y_f32 = y_u8.to_dtype(DType::F32).unwrap();
    let a = dice_loss(&p, &y_u8, DiceVariant::Squared).unwrap();
    let b = dice_loss(&p, &y_f32, DiceVariant::Squared).unwrap();
    assert_eq!(a.dtype(), DType::F32);
    assert_eq!(scalar(&a), scalar(&b));
    let a = bce_with_logits(&p, &y_u8).unwrap();
    let b = bce_with_logits(&p, &y_f32).unwrap();
    assert_eq!(scalar(&a), scalar(&b));
}

#[test]
fn huge_logits_stay_finite() {
    for dtype in DTYPES {
        for mag in [30.0, 1e4, 1e30] {
            let x = [mag, -mag, mag, -mag, 0.0];
            let l = Var::from_tensor(&t64(&x, &[5]).to_dtype(dtype).unwrap()).unwrap();
            let y = t64(&[1.0, 0.0, 0.0, 1.0, 1.0], &[5])
                .to_dtype(dtype)
                .unwrap();
            let loss = bce_with_logits(&l, &y).unwrap();
            let v = scalar(&loss);
            // Right-signed logits cost ~0, wrong-signed ones |x|, 0 costs ln 2.
            let expected = (2.0 * mag + std::f64::consts::LN_2) / 5.0;
            let tol = if dtype == DType::F32 { 1e-6 } else { 1e-12 };
            assert!(
                (v - expected).abs() <= tol * expected,
                "{dtype:?} {mag}: {v} vs {expected}"
            );
            let g = to_vec(loss.backward().unwrap().get(l.as_tensor()).unwrap());
            // (sigmoid(x) - y) / n
            let want = [0.0, 0.0, 0.2, -0.2, -0.1];
            for (a, b) in g.iter().zip(want) {
                assert!((a - b).abs() < 1e-7, "{dtype:?} {mag}: {g:?}");
            }
        }
    }
}

#[test]
fn steep_mask_saturates_without_nan() {
    for dtype in DTYPES {
        // k d = -1e4, +1e4, 0, -1500, 1500
        let d = t64(
            &[-1e4 / SDM_SHARPNESS, 1e4 / SDM_SHARPNESS, 0.0, -1.0, 1.0],
            &[5],
        )
        .to_dtype(dtype)
        .unwrap();
        let d = Var::from_tensor(&d).unwrap();
        let q = sdm_to_mask(&d, SDM_SHARPNESS).unwrap();
        assert_eq!(q.dtype(), dtype);
        assert_eq!(to_vec(&q), vec![1.0, 0.0, 0.5, 1.0, 0.0], "{dtype:?}");
        let g = to_vec(
            q.sum_all()
                .unwrap()
                .backward()
                .unwrap()
                .get(d.as_tensor())
                .unwrap(),
        );
        assert_eq!(
            g,
            vec![0.0, 0.0, -SDM_SHARPNESS / 4.0, 0.0, 0.0],
            "{dtype:?}"
        );
        // Also through a loss: Dice and consistency on the saturated mask.
        let y = t64(&[1.0, 0.0, 1.0, 0.0, 1.0], &[5])
            .to_dtype(dtype)
            .unwrap();
        let q = sdm_to_mask(&d, 1e6).unwrap();
        let loss = (dice_loss(&q, &y, DiceVariant::Squared).unwrap()
            + consistency(&q, &y).unwrap())
        .unwrap();
        assert!(scalar(&loss).is_finite());
        let g = loss.backward().unwrap();
        assert!(all_finite(g.get(d.as_tensor()).unwrap()), "{dtype:?}");
    }
}

#[test]
fn l1_gradient_is_zero_at_ties() {
    let d = Var::from_tensor(&t64(&[0.25, -0.5, 0.0, 0.75], &[4])).unwrap();
    let t = t64(&[0.25, 0.0, 0.0, 0.5], &[4]);
    let loss = sdm_regression(&d, &t, SdmLoss::L1).unwrap();
    assert!((scalar(&loss) - 0.75 / 4.0).abs() < 1e-15);
    let g = to_vec(loss.backward().unwrap().get(d.as_tensor()).unwrap());
    assert_eq!(g, vec![0.0, -0.25, 0.0, 0.25]);
}

type LossFn = fn(&Tensor, &Tensor) -> Tensor;

/// Losses on views (the labelled half of the batch at an offset, as
/// training slices it; a transposed, non-contiguous view) equal the losses
/// on contiguous copies.
#[test]
fn strided_inputs() {
    let mut rng = Rng::new(9);
    let shape = [4, 1, 2, 3, 4];
    let a = t64(&rng.vec(96, -3.0, 3.0), &shape);
    let b = t64(&rng.vec(96, 0.0, 1.0), &shape);
    let halves = (a.narrow(0, 0, 2).unwrap(), b.i(2..4).unwrap());
    let transposed = (a.transpose(2, 4).unwrap(), b.transpose(2, 4).unwrap());
    assert!(!transposed.0.is_contiguous());
    let pairs: [(&str, LossFn); 5] = [
        ("dice", |x, y| {
            dice_loss(x, y, DiceVariant::Squared).unwrap()
        }),
        ("bce", |x, y| bce_with_logits(x, y).unwrap()),
        ("l1", |x, y| sdm_regression(x, y, SdmLoss::L1).unwrap()),
        ("cons", |x, y| consistency(x, y).unwrap()),
        ("mask", |x, y| {
            consistency(&sdm_to_mask(x, 2.0).unwrap(), y).unwrap()
        }),
    ];
    for (av, bv) in [halves, transposed] {
        let (ac, bc) = (av.contiguous().unwrap(), bv.contiguous().unwrap());
        for (name, f) in pairs {
            let (v, c) = (scalar(&f(&av, &bv)), scalar(&f(&ac, &bc)));
            assert!((v - c).abs() <= 1e-14 * c.abs(), "{name}: {v} vs {c}");
        }
    }
}

fn expect_shape_error(r: dtml_loss::Result<Tensor>, a: &[usize], b: &[usize]) {
    match r {
        Err(e @ LossError::Shape { .. }) => {
            let LossError::Shape { a: ea, b: eb, .. } = &e else {
                unreachable!()
            };
            assert_eq!((ea.as_slice(), eb.as_slice()), (a, b));
            let msg = e.to_string();
            assert!(msg.contains(&format!("{a:?}")), "{msg}");
        }
        other => panic!("expected a shape error, got {other:?}"),
    }
}

#[test]
fn shape_mismatch_is_an_error() {
    let a = Tensor::zeros((2, 1, 4, 5, 6), DType::F32, &Device::Cpu).unwrap();
    let b = Tensor::zeros((2, 1, 4, 5, 5), DType::F32, &Device::Cpu).unwrap();
    let c = Tensor::zeros((1, 2, 4, 5, 6), DType::F32, &Device::Cpu).unwrap();
    let (sa, sb, sc) = ([2, 1, 4, 5, 6], [2, 1, 4, 5, 5], [1, 2, 4, 5, 6]);
    for v in [DiceVariant::Squared, DiceVariant::Linear] {
        expect_shape_error(dice_loss(&a, &b, v), &sa, &sb);
    }
    // Same element count, different shape: no silent broadcasting or reshape.
    expect_shape_error(dice_loss(&a, &c, DiceVariant::Squared), &sa, &sc);
    expect_shape_error(bce_with_logits(&b, &a), &sb, &sa);
    expect_shape_error(sdm_regression(&a, &c, SdmLoss::L1), &sa, &sc);
    expect_shape_error(sdm_regression(&a, &b, SdmLoss::Mse), &sa, &sb);
    expect_shape_error(consistency(&c, &a), &sc, &sa);
}

#[test]
fn mean_of_nothing_is_an_error() {
    let e = Tensor::zeros((0, 1, 4), DType::F64, &Device::Cpu).unwrap();
    expect_shape_error(bce_with_logits(&e, &e), &[0, 1, 4], &[0, 1, 4]);
    expect_shape_error(sdm_regression(&e, &e, SdmLoss::L1), &[0, 1, 4], &[0, 1, 4]);
    expect_shape_error(consistency(&e, &e), &[0, 1, 4], &[0, 1, 4]);
}

#[test]
fn rampup_matches_the_reference_schedule() {
    // DTC's sigmoid_rampup(t // 150, 40): r = min(t // 150, 40) / 40.
    let reference = |t: usize, w: f64| {
        let r = (t / 150).min(40) as f64 / 40.0;
        w * (-5.0 * (1.0 - r) * (1.0 - r)).exp()
    };
    for w in [1.0, 0.1] {
        for t in [0, 1, 149, 150, 151, 2999, 3000, 5999, 6000, 10000] {
            assert_eq!(rampup_weight(t, 6000, w), reference(t, w), "t = {t}");
        }
    }
    assert_eq!(rampup_weight(0, 6000, 1.0), (-5.0f64).exp());
    assert_eq!(rampup_weight(149, 6000, 1.0), (-5.0f64).exp());
    assert_eq!(
        rampup_weight(150, 6000, 1.0),
        (-5.0 * (39.0f64 / 40.0).powi(2)).exp()
    );
    assert_eq!(
        rampup_weight(5999, 6000, 1.0),
        (-5.0 * (1.0f64 / 40.0).powi(2)).exp()
    );
    assert_eq!(rampup_weight(6000, 6000, 1.0), 1.0);
    assert_eq!(rampup_weight(10000, 6000, 2.0), 2.0);
}

#[test]
fn rampup_scales_with_the_run_and_r0_means_full_weight() {
    // A 600-iteration ramp: 40 segments of 15 iterations.
    for t in [0, 14, 15, 300, 599, 600, 900] {
        let r = (t / 15).min(40) as f64 / 40.0;
        assert_eq!(
            rampup_weight(t, 600, 1.0),
            (-5.0 * (1.0 - r) * (1.0 - r)).exp()
        );
    }
    // Non-multiple of 40: segment 2.5 iterations.
    assert_eq!(
        rampup_weight(4, 100, 1.0),
        (-5.0 * (39.0f64 / 40.0).powi(2)).exp()
    );
    assert_eq!(
        rampup_weight(5, 100, 1.0),
        (-5.0 * (38.0f64 / 40.0).powi(2)).exp()
    );
    assert_eq!(rampup_weight(0, 0, 0.7), 0.7);
    assert_eq!(rampup_weight(123, 0, 0.7), 0.7);
    // Monotone non-decreasing over the ramp.
    let ws: Vec<f64> = (0..=6100).map(|t| rampup_weight(t, 6000, 1.0)).collect();
    assert!(ws.windows(2).all(|w| w[0] <= w[1]));
}
