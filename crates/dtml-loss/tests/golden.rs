//! Values and gradients against PyTorch, float64 and float32
//! (data-fixtures/loss/make_loss_fixtures.py writes the fixture).

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::assert_close;
use dtml_loss::{
    DiceVariant, SDM_SHARPNESS, SdmLoss, bce_with_logits, consistency, dice_loss, sdm_regression,
    sdm_to_mask,
};
use safetensors::{Dtype, SafeTensors};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../data-fixtures/loss/loss_golden.safetensors"
);

struct Golden<'a> {
    st: SafeTensors<'a>,
    tag: &'static str,
    dtype: DType,
    rtol: f64,
}

impl Golden<'_> {
    fn get(&self, name: &str) -> Tensor {
        let key = format!("{}.{name}", self.tag);
        let view = self
            .st
            .tensor(&key)
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        let dtype = match view.dtype() {
            Dtype::F64 => DType::F64,
            Dtype::F32 => DType::F32,
            other => panic!("{key}: unexpected dtype {other:?}"),
        };
        assert_eq!(dtype, self.dtype, "{key}: fixture dtype");
        Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu).unwrap()
    }

    fn var(&self, name: &str) -> Var {
        Var::from_tensor(&self.get(name)).unwrap()
    }

    /// Checks `case.value` and `case.grad_<name>` for each leaf.
    fn check(&self, case: &str, value: &Tensor, leaves: &[(&str, &Var)]) {
        assert_eq!(value.dtype(), self.dtype, "{case}: dtype");
        let what = format!("{}.{case}.value", self.tag);
        assert_close(&what, value, &self.get(&format!("{case}.value")), self.rtol);
        let grads = value.backward().unwrap();
        for (name, var) in leaves {
            let what = format!("{}.{case}.grad_{name}", self.tag);
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{what}: no gradient"));
            assert_close(
                &what,
                g,
                &self.get(&format!("{case}.grad_{name}")),
                self.rtol,
            );
        }
    }
}

fn run(tag: &'static str, dtype: DType, rtol: f64) {
    let bytes = std::fs::read(FIXTURE).unwrap();
    let g = Golden {
        st: SafeTensors::deserialize(&bytes).unwrap(),
        tag,
        dtype,
        rtol,
    };
    let k = SDM_SHARPNESS;

    let (p, y) = (g.var("p"), g.var("y"));
    let v = dice_loss(&p, &y, DiceVariant::Squared).unwrap();
    g.check("dice_sq", &v, &[("p", &p), ("y", &y)]);

    let (p, y) = (g.var("p"), g.var("y"));
    let v = dice_loss(&p, &y, DiceVariant::Linear).unwrap();
    g.check("dice_lin", &v, &[("p", &p), ("y", &y)]);

    let d = g.var("d");
    let v = dice_loss(
        &sdm_to_mask(&d, k).unwrap(),
        &g.get("y"),
        DiceVariant::Squared,
    )
    .unwrap();
    g.check("dice_sdm", &v, &[("d", &d)]);

    let l = g.var("logits");
    let p = candle_nn::ops::sigmoid(&l).unwrap();
    let v = dice_loss(&p, &g.get("y"), DiceVariant::Squared).unwrap();
    g.check("dice_logits", &v, &[("logits", &l)]);

    let (l, y) = (g.var("logits"), g.var("y"));
    let v = bce_with_logits(&l, &y).unwrap();
    g.check("bce", &v, &[("logits", &l), ("y", &y)]);

    // Elementwise transform: compare it, then the gradient of sum(mask * r).
    let d = g.var("d");
    let mask = sdm_to_mask(&d, k).unwrap();
    assert_close(
        &format!("{tag}.mask.value"),
        &mask,
        &g.get("mask.value"),
        rtol,
    );
    let grads = (&mask * g.get("r"))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_close(
        &format!("{tag}.mask.grad_d"),
        grads.get(d.as_tensor()).unwrap(),
        &g.get("mask.grad_d"),
        rtol,
    );

    let (d, t) = (g.var("d"), g.var("t"));
    let v = sdm_regression(&d, &t, SdmLoss::L1).unwrap();
    g.check("l1", &v, &[("d", &d), ("t", &t)]);

    let (d, t) = (g.var("d"), g.var("t"));
    let v = sdm_regression(&d, &t, SdmLoss::Mse).unwrap();
    g.check("mse", &v, &[("d", &d), ("t", &t)]);

    let (q, p) = (g.var("q"), g.var("p"));
    let v = consistency(&q, &p).unwrap();
    g.check("cons", &v, &[("q", &q), ("p", &p)]);

    let (d, l) = (g.var("d"), g.var("logits"));
    let q = sdm_to_mask(&d, k).unwrap();
    let p = candle_nn::ops::sigmoid(&l).unwrap();
    let v = consistency(&q, &p).unwrap();
    g.check("cons_chain", &v, &[("d", &d), ("logits", &l)]);
}

#[test]
fn golden_f64() {
    run("f64", DType::F64, 1e-10);
}

#[test]
fn golden_f32() {
    run("f32", DType::F32, 1e-5);
}

/// The fixture really has the hard cases the tests rely on: saturated
/// logits, exact zeros, SDM values at +-1 and on the sigmoid's slope, ties.
#[test]
fn fixture_covers_hard_cases() {
    let bytes = std::fs::read(FIXTURE).unwrap();
    let g = Golden {
        st: SafeTensors::deserialize(&bytes).unwrap(),
        tag: "f64",
        dtype: DType::F64,
        rtol: 0.0,
    };
    let logits = common::to_vec(&g.get("logits"));
    let d = common::to_vec(&g.get("d"));
    let t = common::to_vec(&g.get("t"));
    let count = |v: &[f64], f: &dyn Fn(f64) -> bool| v.iter().filter(|&&x| f(x)).count();
    assert!(count(&logits, &|x| x >= 29.5) >= 8);
    assert!(count(&logits, &|x| x <= -29.5) >= 8);
    assert!(count(&logits, &|x| x == 0.0) >= 2);
    assert!(count(&d, &|x| x.abs() == 1.0) >= 10);
    assert!(count(&d, &|x| x != 0.0 && (SDM_SHARPNESS * x).abs() < 4.5) >= 40);
    let ties = d.iter().zip(&t).filter(|(a, b)| a == b).count();
    assert!(ties >= 6, "ties {ties}");
}
