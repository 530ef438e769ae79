//! Autograd gradients against central finite differences in f64.

mod common;

use candle_core::{Tensor, Var};
use common::{Rng, assert_close, scalar, t64};
use dtml_loss::{
    DiceVariant, SDM_SHARPNESS, SdmLoss, bce_with_logits, consistency, dice_loss, rampup_weight,
    sdm_regression, sdm_to_mask,
};

const SHAPE: [usize; 5] = [2, 1, 2, 3, 4];
const N: usize = 48;

/// Checks d f / d inputs[i] for every i in `wrt`, `f` a scalar function of
/// tensors built from `inputs`; `h` is the finite-difference step.
fn gradcheck(
    what: &str,
    inputs: &[Vec<f64>],
    wrt: &[usize],
    h: f64,
    rtol: f64,
    f: &dyn Fn(&[Tensor]) -> Tensor,
) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|v| Var::from_tensor(&t64(v, &SHAPE)).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let grads = f(&ts).backward().unwrap();
    let eval = |vals: &[Vec<f64>]| -> f64 {
        let ts: Vec<Tensor> = vals.iter().map(|v| t64(v, &SHAPE)).collect();
        scalar(&f(&ts))
    };
    for &i in wrt {
        let mut numeric = vec![0.0; inputs[i].len()];
        let mut vals = inputs.to_vec();
        for j in 0..inputs[i].len() {
            let x = inputs[i][j];
            vals[i][j] = x + h;
            let up = eval(&vals);
            vals[i][j] = x - h;
            let down = eval(&vals);
            vals[i][j] = x;
            numeric[j] = (up - down) / (2.0 * h);
        }
        let analytic = grads.get(vars[i].as_tensor()).unwrap();
        assert_close(
            &format!("{what}: d/d input {i}"),
            analytic,
            &t64(&numeric, &SHAPE),
            rtol,
        );
    }
}

#[test]
fn dice_both_variants() {
    let mut rng = Rng::new(1);
    let p = rng.vec(N, 0.05, 0.95);
    let y = rng.vec(N, 0.0, 1.0);
    for variant in [DiceVariant::Squared, DiceVariant::Linear] {
        gradcheck(
            &format!("dice {variant:?}"),
            &[p.clone(), y.clone()],
            &[0, 1],
            1e-6,
            1e-6,
            &|t| dice_loss(&t[0], &t[1], variant).unwrap(),
        );
    }
}

#[test]
fn bce() {
    let mut rng = Rng::new(2);
    let logits = rng.vec(N, -6.0, 6.0);
    let y = rng.vec(N, 0.0, 1.0);
    gradcheck("bce", &[logits, y], &[0, 1], 1e-6, 1e-6, &|t| {
        bce_with_logits(&t[0], &t[1]).unwrap()
    });
}

#[test]
fn sdm_mask_steep_and_shallow() {
    let mut rng = Rng::new(3);
    let r = rng.vec(N, -1.0, 1.0);
    // k = 1500 on its slope (|k d| < 4.5) needs a step well below 1 / k.
    let d = rng.vec(N, -3e-3, 3e-3);
    gradcheck("mask k=1500", &[d, r.clone()], &[0], 1e-9, 1e-6, &|t| {
        (sdm_to_mask(&t[0], SDM_SHARPNESS).unwrap() * &t[1])
            .unwrap()
            .sum_all()
            .unwrap()
    });
    let d = rng.vec(N, -2.0, 2.0);
    gradcheck("mask k=2.5", &[d, r], &[0], 1e-6, 1e-6, &|t| {
        (sdm_to_mask(&t[0], 2.5).unwrap() * &t[1])
            .unwrap()
            .sum_all()
            .unwrap()
    });
}

#[test]
fn sdm_regression_l1_and_mse() {
    let mut rng = Rng::new(4);
    let d = rng.vec(N, -1.0, 1.0);
    let t = rng.vec(N, -1.0, 1.0);
    // L1 has a kink at d = t; the step must not cross it.
    let min_gap = d
        .iter()
        .zip(&t)
        .map(|(a, b)| (a - b).abs())
        .fold(f64::INFINITY, f64::min);
    assert!(min_gap > 1e-4, "inputs too close to the L1 kink: {min_gap}");
    for kind in [SdmLoss::L1, SdmLoss::Mse] {
        gradcheck(
            &format!("sdm {kind:?}"),
            &[d.clone(), t.clone()],
            &[0, 1],
            1e-6,
            1e-6,
            &|x| sdm_regression(&x[0], &x[1], kind).unwrap(),
        );
    }
}

#[test]
fn consistency_both_sides() {
    let mut rng = Rng::new(5);
    let q = rng.vec(N, 0.0, 1.0);
    let p = rng.vec(N, 0.0, 1.0);
    gradcheck("consistency", &[q, p], &[0, 1], 1e-6, 1e-6, &|t| {
        consistency(&t[0], &t[1]).unwrap()
    });
}

/// The DTML objective on one labelled set, end to end: gradient reaches both
/// the region logits and the SDM through every term.
#[test]
fn dtml_objective() {
    let mut rng = Rng::new(6);
    let logits = rng.vec(N, -4.0, 4.0);
    let d = rng.vec(N, -3e-3, 3e-3);
    let y: Vec<f64> = (0..N).map(|_| f64::from(rng.uniform() < 0.5)).collect();
    let target = rng.vec(N, -1.0, 1.0);
    let lambda = rampup_weight(2400, 6000, 1.0);
    let objective = |t: &[Tensor]| {
        let (l, d, y, tgt) = (&t[0], &t[1], &t[2], &t[3]);
        let p = candle_nn::ops::sigmoid(l).unwrap();
        let q = sdm_to_mask(d, SDM_SHARPNESS).unwrap();
        let la = ((bce_with_logits(l, y).unwrap()
            + dice_loss(&p, y, DiceVariant::Squared).unwrap())
        .unwrap()
            * 0.5)
            .unwrap();
        let lb = (sdm_regression(d, tgt, SdmLoss::L1).unwrap()
            + dice_loss(&q, y, DiceVariant::Squared).unwrap())
        .unwrap();
        let lc = (consistency(&q, &p).unwrap() * lambda).unwrap();
        ((la + lb).unwrap() + lc).unwrap()
    };
    let inputs = [logits, d, y, target];
    // Steps suited to each input's scale: the SDM enters through k = 1500.
    gradcheck("dtml objective", &inputs, &[0], 1e-6, 1e-6, &objective);
    gradcheck("dtml objective", &inputs, &[1], 1e-9, 1e-6, &objective);
}
