//! Tests of `dtml_model::ops`: every op's forward and both gradients
//! against central finite differences (f64), against PyTorch golden values
//! (f32, `data-fixtures/ops/`), against the candle-only reference
//! compositions on many shapes (which exercises the vector kernels' tails),
//! plus shape/dtype errors and channel dropout.

use candle_core::{DType, Device, Result, Tensor, Var};
use dtml_model::ops;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;

type OpFn = fn(&Tensor, &Tensor) -> Result<Tensor>;

fn random(shape: &[usize], dtype: DType, rng: &mut ChaCha8Rng) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn to_vec(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Max of |a - b| / (1 + |b|).
fn max_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    to_vec(a)
        .iter()
        .zip(to_vec(b))
        .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
        .fold(0.0, f64::max)
}

/// Output and gradients of `sum(op(x, w) * r)` through candle's autograd.
fn value_and_grads(op: OpFn, x: &Tensor, w: &Tensor, r: &Tensor) -> (Tensor, Tensor, Tensor) {
    let (xv, wv) = (Var::from_tensor(x).unwrap(), Var::from_tensor(w).unwrap());
    let y = op(xv.as_tensor(), wv.as_tensor()).unwrap();
    let loss = (&y * r).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    (
        y,
        g.get(xv.as_tensor()).unwrap().clone(),
        g.get(wv.as_tensor()).unwrap().clone(),
    )
}

/// Central differences of `sum(op(x, w) * r)` w.r.t. every entry of `x`
/// (`which == 0`) or `w` (`which == 1`), in f64.
fn numeric_grad(op: OpFn, x: &Tensor, w: &Tensor, r: &Tensor, which: usize) -> Tensor {
    let loss = |x: &Tensor, w: &Tensor| -> f64 {
        (op(x, w).unwrap() * r)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let t = if which == 0 { x } else { w };
    let base = to_vec(t);
    let h = 1e-3;
    let mut g = Vec::with_capacity(base.len());
    for i in 0..base.len() {
        let e = |s: f64| {
            let mut v = base.clone();
            v[i] += s * h;
            let p = Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap();
            if which == 0 { loss(&p, w) } else { loss(x, &p) }
        };
        g.push((e(1.0) - e(-1.0)) / (2.0 * h));
    }
    Tensor::from_vec(g, t.dims(), &Device::Cpu).unwrap()
}

/// The op's output against the reference composition and its gradients
/// against finite differences, all in f64.
fn check_fd(name: &str, op: OpFn, reference: OpFn, xs: &[usize], ws: &[usize], seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x = random(xs, DType::F64, &mut rng);
    let w = random(ws, DType::F64, &mut rng);
    let y_ref = reference(&x, &w).unwrap();
    let r = random(y_ref.dims(), DType::F64, &mut rng);
    let (y, dx, dw) = value_and_grads(op, &x, &w, &r);
    assert!(
        max_err(&y, &y_ref) < 1e-12,
        "{name}: forward differs from reference by {}",
        max_err(&y, &y_ref)
    );
    let ndx = numeric_grad(op, &x, &w, &r, 0);
    let ndw = numeric_grad(op, &x, &w, &r, 1);
    // The loss is bilinear, so central differences are exact up to rounding.
    assert!(
        max_err(&dx, &ndx) < 1e-9,
        "{name}: dx off by {}",
        max_err(&dx, &ndx)
    );
    assert!(
        max_err(&dw, &ndw) < 1e-9,
        "{name}: dw off by {}",
        max_err(&dw, &ndw)
    );
}

fn conv3_p1(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    ops::conv3d(x, w, 1)
}
fn conv3_p0(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    ops::conv3d(x, w, 0)
}
fn conv3_p2(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    ops::conv3d(x, w, 2)
}
fn ref3_p1(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    ops::reference::conv3d(x, w, 1)
}
fn ref3_p0(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    ops::reference::conv3d(x, w, 0)
}
fn ref3_p2(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    ops::reference::conv3d(x, w, 2)
}

#[test]
fn conv3d_finite_differences() {
    check_fd(
        "k3 p1",
        conv3_p1,
        ref3_p1,
        &[2, 2, 4, 5, 6],
        &[3, 2, 3, 3, 3],
        1,
    );
    check_fd(
        "k3 p0",
        conv3_p0,
        ref3_p0,
        &[2, 3, 4, 5, 6],
        &[2, 3, 3, 3, 3],
        2,
    );
    check_fd(
        "k2 p1",
        conv3_p1,
        ref3_p1,
        &[1, 2, 3, 4, 5],
        &[3, 2, 2, 2, 2],
        3,
    );
    check_fd(
        "k3 p2",
        conv3_p2,
        ref3_p2,
        &[1, 2, 3, 4, 3],
        &[2, 2, 3, 3, 3],
        4,
    );
    check_fd(
        "k1 p0",
        conv3_p0,
        ref3_p0,
        &[2, 3, 2, 3, 4],
        &[2, 3, 1, 1, 1],
        5,
    );
}

#[test]
fn resample_finite_differences() {
    check_fd(
        "down",
        ops::down_conv2,
        ops::reference::down_conv2,
        &[2, 3, 4, 2, 6],
        &[2, 3, 2, 2, 2],
        11,
    );
    check_fd(
        "up",
        ops::up_conv2,
        ops::reference::up_conv2,
        &[2, 3, 2, 3, 1],
        &[3, 2, 2, 2, 2],
        12,
    );
    check_fd(
        "1x1",
        ops::conv1x1,
        ops::reference::conv1x1,
        &[2, 3, 4, 5, 6],
        &[2, 3, 1, 1, 1],
        13,
    );
}

fn fixtures() -> std::collections::HashMap<String, Tensor> {
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data-fixtures/ops/ops.safetensors");
    candle_core::safetensors::load(&p, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn pytorch_golden_values() {
    let fx = fixtures();
    let cases: [(&str, OpFn); 10] = [
        ("conv3_p1", conv3_p1),
        ("conv3_p0", conv3_p0),
        ("conv3_odd", conv3_p1),
        ("conv3_c32", conv3_p1),
        ("conv5_p2", conv3_p2),
        ("conv2_p1", conv3_p1),
        ("down", ops::down_conv2),
        ("up", ops::up_conv2),
        ("conv1", ops::conv1x1),
        ("conv4_s2", ops::conv3d_k4_s2),
    ];
    for (name, op) in cases {
        let get = |k: &str| {
            fx.get(&format!("{name}.{k}"))
                .unwrap_or_else(|| panic!("missing {name}.{k}"))
                .clone()
        };
        let (y, dx, dw) = value_and_grads(op, &get("x"), &get("w"), &get("r"));
        assert_eq!(y.dtype(), DType::F32);
        for (what, ours, theirs) in [
            ("y", &y, get("y")),
            ("dx", &dx, get("dx")),
            ("dw", &dw, get("dw")),
        ] {
            let e = max_err(ours, &theirs);
            assert!(e < 1e-4, "{name}.{what}: off PyTorch by {e}");
        }
    }
}

/// The public backward functions (ours and the candle-only references)
/// against PyTorch's gradients.
#[test]
fn conv3d_backward_functions_match_pytorch() {
    let fx = fixtures();
    for (name, pad) in [
        ("conv3_p1", 1),
        ("conv3_p0", 0),
        ("conv3_odd", 1),
        ("conv3_c32", 1),
        ("conv5_p2", 2),
        ("conv2_p1", 1),
    ] {
        let get = |k: &str| fx[&format!("{name}.{k}")].clone();
        let (x, w, r) = (get("x"), get("w"), get("r"));
        let k = w.dim(2).unwrap();
        let dx = [
            ops::conv3d_input_grad(&r, &w, pad).unwrap(),
            ops::reference::conv3d_input_grad(&r, &w, pad).unwrap(),
        ];
        let dw = [
            ops::conv3d_weight_grad(&x, &r, k, pad).unwrap(),
            ops::reference::conv3d_weight_grad(&x, &r, k, pad).unwrap(),
        ];
        for (i, (a, b)) in dx.iter().zip(&dw).enumerate() {
            assert!(
                max_err(a, &get("dx")) < 1e-4,
                "{name} dx #{i}: {}",
                max_err(a, &get("dx"))
            );
            assert!(
                max_err(b, &get("dw")) < 1e-4,
                "{name} dw #{i}: {}",
                max_err(b, &get("dw"))
            );
        }
    }
    let z = |s: &[usize]| Tensor::zeros(s, DType::F32, &Device::Cpu).unwrap();
    assert!(ops::conv3d_input_grad(&z(&[1, 3, 4, 4, 4]), &z(&[2, 3, 3, 3, 3]), 1).is_err());
    assert!(ops::conv3d_input_grad(&z(&[1, 2, 4, 4, 4]), &z(&[2, 3, 3, 3, 3]), 3).is_err());
    assert!(ops::conv3d_weight_grad(&z(&[1, 3, 4, 4, 4]), &z(&[1, 2, 4, 4, 5]), 3, 1).is_err());
    assert!(ops::conv3d_weight_grad(&z(&[1, 3, 4, 4, 4]), &z(&[2, 2, 4, 4, 4]), 3, 1).is_err());
    assert!(ops::conv3d_weight_grad(&z(&[1, 3, 4, 4, 4]), &z(&[1, 2, 4, 4, 4]), 3, 3).is_err());
    assert_eq!(
        ops::conv3d_weight_grad(&z(&[1, 3, 4, 4, 4]), &z(&[1, 2, 4, 4, 4]), 3, 1)
            .unwrap()
            .dims(),
        &[2, 3, 3, 3, 3]
    );
}

/// f32 custom ops against the f64 reference on shapes that hit every tail
/// of the vector kernels: channel counts not multiples of the register
/// blocks, rows shorter and longer than a tile, one input channel.
#[test]
fn conv3d_matches_reference_on_many_shapes() {
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let shapes: [(usize, usize, usize, [usize; 3], usize, usize); 11] = [
        // (n, cin, cout, dhw, k, pad); small planes take the gathered
        // weight-gradient path, over several blocks of positions here:
        (3, 4, 20, [20, 5, 6], 3, 1),
        (1, 1, 16, [5, 9, 17], 3, 1),
        (2, 5, 7, [3, 4, 2], 3, 1),
        (1, 16, 32, [4, 11, 13], 3, 1),
        (1, 32, 16, [3, 6, 40], 3, 1),
        (2, 6, 48, [3, 5, 6], 3, 0),
        (1, 3, 5, [6, 5, 4], 4, 2),
        (1, 4, 9, [4, 4, 4], 2, 0),
        (1, 3, 4, [5, 6, 7], 1, 0),
        (3, 2, 33, [2, 3, 3], 3, 2),
        // Rows wide enough that the forward reduces over input channels
        // in several chunks (4 of 5 channels with AVX-512), and planes
        // enough that each task runs several channel blocks through them:
        (1, 20, 12, [8, 5, 130], 3, 1),
    ];
    for (n, cin, cout, [d, h, w], k, pad) in shapes {
        let x64 = random(&[n, cin, d, h, w], DType::F64, &mut rng);
        let w64 = random(&[cout, cin, k, k, k], DType::F64, &mut rng);
        let (x64v, w64v) = (
            Var::from_tensor(&x64).unwrap(),
            Var::from_tensor(&w64).unwrap(),
        );
        let y_ref = ops::reference::conv3d(x64v.as_tensor(), w64v.as_tensor(), pad).unwrap();
        let r64 = random(y_ref.dims(), DType::F64, &mut rng);
        let g_ref = (&y_ref * &r64)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let f32t = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        let (xv, wv) = (
            Var::from_tensor(&f32t(&x64)).unwrap(),
            Var::from_tensor(&f32t(&w64)).unwrap(),
        );
        let y = ops::conv3d(xv.as_tensor(), wv.as_tensor(), pad).unwrap();
        let g = (&y * &f32t(&r64))
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let tol = 2e-5 * (cin * k * k * k) as f64;
        let what = format!("n{n} {cin}->{cout} {d}x{h}x{w} k{k} p{pad}");
        assert!(
            max_err(&y, &y_ref) < tol,
            "{what}: y {}",
            max_err(&y, &y_ref)
        );
        let e = max_err(
            g.get(xv.as_tensor()).unwrap(),
            g_ref.get(x64v.as_tensor()).unwrap(),
        );
        assert!(e < tol, "{what}: dx {e}");
        let e = max_err(
            g.get(wv.as_tensor()).unwrap(),
            g_ref.get(w64v.as_tensor()).unwrap(),
        );
        assert!(e < tol * (n * d * h * w) as f64 / 8.0, "{what}: dw {e}");
    }
}

#[test]
fn resample_matches_reference_f32() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let x = random(&[2, 16, 6, 8, 10], DType::F32, &mut rng);
    let w = random(&[32, 16, 2, 2, 2], DType::F32, &mut rng);
    assert!(
        max_err(
            &ops::down_conv2(&x, &w).unwrap(),
            &ops::reference::down_conv2(&x, &w).unwrap()
        ) < 1e-5
    );
    let x = random(&[2, 32, 3, 4, 5], DType::F32, &mut rng);
    assert!(
        max_err(
            &ops::up_conv2(&x, &w).unwrap(),
            &ops::reference::up_conv2(&x, &w).unwrap()
        ) < 1e-5
    );
    let w1 = random(&[3, 32, 1, 1, 1], DType::F32, &mut rng);
    assert!(
        max_err(
            &ops::conv1x1(&x, &w1).unwrap(),
            &ops::reference::conv1x1(&x, &w1).unwrap()
        ) < 1e-5
    );
}

/// The stride-2 pair and 1x1 conv, forward and gradients, against the
/// candle-only compositions on shapes split into several work units
/// (low-resolution planes of over 1024 voxels) and partitions.
#[test]
fn resample_gradients_match_reference_on_split_shapes() {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    type Case = (&'static str, OpFn, OpFn, [usize; 5], [usize; 5]);
    let cases: [Case; 4] = [
        (
            "down",
            ops::down_conv2,
            ops::reference::down_conv2,
            [2, 3, 6, 2, 2100],
            [5, 3, 2, 2, 2],
        ),
        (
            "down2",
            ops::down_conv2,
            ops::reference::down_conv2,
            [1, 2, 20, 4, 4],
            [3, 2, 2, 2, 2],
        ),
        (
            "up",
            ops::up_conv2,
            ops::reference::up_conv2,
            [2, 4, 3, 1, 1050],
            [4, 3, 2, 2, 2],
        ),
        (
            "1x1",
            ops::conv1x1,
            ops::reference::conv1x1,
            [2, 5, 3, 4, 70],
            [3, 5, 1, 1, 1],
        ),
    ];
    for (name, op, reference, xs, ws) in cases {
        let x = random(&xs, DType::F64, &mut rng);
        let w = random(&ws, DType::F64, &mut rng);
        let y_ref = reference(&x, &w).unwrap();
        let r = random(y_ref.dims(), DType::F64, &mut rng);
        let (y, dx, dw) = value_and_grads(op, &x, &w, &r);
        let (_, rdx, rdw) = value_and_grads(reference, &x, &w, &r);
        assert!(max_err(&y, &y_ref) < 1e-12, "{name}: y");
        assert!(max_err(&dx, &rdx) < 1e-12, "{name}: dx");
        assert!(
            max_err(&dw, &rdw) < 1e-10,
            "{name}: dw {}",
            max_err(&dw, &rdw)
        );
    }
}

#[test]
fn strided_inputs_and_partial_gradients() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    // A transposed view (not contiguous) is accepted.
    let x = random(&[1, 2, 4, 6, 5], DType::F64, &mut rng)
        .transpose(3, 4)
        .unwrap();
    let w = random(&[3, 2, 3, 3, 3], DType::F64, &mut rng);
    let ours = ops::conv3d(&x, &w, 1).unwrap();
    assert!(
        max_err(
            &ours,
            &ops::reference::conv3d(&x.contiguous().unwrap(), &w, 1).unwrap()
        ) < 1e-12
    );
    // Only the weight is a variable: its gradient exists, the input's not.
    let wv = Var::from_tensor(&w).unwrap();
    let g = ops::conv3d(&x, wv.as_tensor(), 1)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(g.get(wv.as_tensor()).is_some());
    assert!(g.get(&x).is_none());
}

#[test]
fn wrong_shapes_and_dtypes_are_errors() {
    let dev = Device::Cpu;
    let z = |s: &[usize]| Tensor::zeros(s, DType::F32, &dev).unwrap();
    let x = z(&[1, 2, 4, 4, 4]);
    // conv3d
    assert!(ops::conv3d(&z(&[2, 4, 4, 4]), &z(&[3, 2, 3, 3, 3]), 1).is_err());
    assert!(ops::conv3d(&x, &z(&[3, 2, 3, 3]), 1).is_err());
    assert!(ops::conv3d(&x, &z(&[3, 5, 3, 3, 3]), 1).is_err());
    assert!(ops::conv3d(&x, &z(&[3, 2, 3, 3, 1]), 1).is_err());
    assert!(ops::conv3d(&x, &z(&[3, 2, 3, 3, 3]), 3).is_err());
    assert!(ops::conv3d(&z(&[1, 2, 1, 4, 4]), &z(&[3, 2, 3, 3, 3]), 0).is_err());
    assert!(ops::conv3d(&z(&[0, 2, 4, 4, 4]), &z(&[3, 2, 3, 3, 3]), 1).is_err());
    let w64 = Tensor::zeros((3, 2, 3, 3, 3), DType::F64, &dev).unwrap();
    assert!(ops::conv3d(&x, &w64, 1).is_err());
    let xh = x.to_dtype(DType::F16).unwrap();
    assert!(ops::conv3d(&xh, &w64.to_dtype(DType::F16).unwrap(), 1).is_err());
    let xi = x.to_dtype(DType::U32).unwrap();
    assert!(ops::conv3d(&xi, &w64.to_dtype(DType::U32).unwrap(), 1).is_err());
    // down / up / 1x1
    assert!(ops::down_conv2(&z(&[1, 2, 4, 5, 4]), &z(&[3, 2, 2, 2, 2])).is_err());
    assert!(ops::down_conv2(&x, &z(&[3, 2, 3, 3, 3])).is_err());
    assert!(ops::down_conv2(&x, &z(&[2, 3, 2, 2, 2])).is_err());
    assert!(ops::up_conv2(&x, &z(&[3, 2, 2, 2, 2])).is_err());
    assert!(ops::up_conv2(&x, &z(&[2, 3, 2, 2])).is_err());
    assert!(ops::conv1x1(&x, &z(&[3, 2, 1, 1, 2])).is_err());
    assert!(ops::conv1x1(&x, &z(&[3, 4, 1, 1, 1])).is_err());
    assert!(ops::conv1x1(&z(&[2, 4]), &z(&[3, 2, 1, 1, 1])).is_err());
    // dropout
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    assert!(ops::channel_dropout(&x, 1.5, &mut rng).is_err());
    assert!(ops::channel_dropout(&x, -0.1, &mut rng).is_err());
    assert!(ops::channel_dropout(&z(&[3]), 0.5, &mut rng).is_err());
    assert!(ops::channel_dropout_with_mask(&x, &z(&[1, 3])).is_err());
    // The valid shapes of the same ops work.
    assert_eq!(
        ops::down_conv2(&x, &z(&[3, 2, 2, 2, 2])).unwrap().dims(),
        &[1, 3, 2, 2, 2]
    );
    assert_eq!(
        ops::up_conv2(&x, &z(&[2, 3, 2, 2, 2])).unwrap().dims(),
        &[1, 3, 8, 8, 8]
    );
    assert_eq!(
        ops::conv1x1(&x, &z(&[3, 2, 1, 1, 1])).unwrap().dims(),
        &[1, 3, 4, 4, 4]
    );
    assert_eq!(
        ops::conv3d(&x, &z(&[3, 2, 3, 3, 3]), 0).unwrap().dims(),
        &[1, 3, 2, 2, 2]
    );
}

#[test]
fn channel_dropout_semantics() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x = (random(&[4, 50, 2, 2, 3], DType::F32, &mut rng)
        .abs()
        .unwrap()
        + 0.5)
        .unwrap();
    let run = |seed: u64| {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        ops::channel_dropout(&x, 0.5, &mut r).unwrap()
    };
    let (a, b) = (run(42), run(42));
    assert_eq!(to_vec(&a), to_vec(&b), "same seed, same mask");
    assert_ne!(to_vec(&a), to_vec(&run(43)), "other seed, other mask");
    // Whole channels: every value of a (sample, channel) is dropped or
    // scaled by 2 together.
    let (xa, ya) = (to_vec(&x), to_vec(&a));
    let mut dropped = 0;
    for ch in 0..200 {
        let ratios: Vec<f64> = (0..12).map(|i| ya[ch * 12 + i] / xa[ch * 12 + i]).collect();
        assert!(ratios.iter().all(|r| (r - ratios[0]).abs() < 1e-6));
        assert!(ratios[0].abs() < 1e-6 || (ratios[0] - 2.0).abs() < 1e-5);
        dropped += (ratios[0] == 0.0) as usize;
    }
    assert!(
        (60..140).contains(&dropped),
        "{dropped} of 200 dropped at p = 0.5"
    );
    let mut r = ChaCha8Rng::seed_from_u64(1);
    assert_eq!(to_vec(&ops::channel_dropout(&x, 0.0, &mut r).unwrap()), xa);
    assert!(
        to_vec(&ops::channel_dropout(&x, 1.0, &mut r).unwrap())
            .iter()
            .all(|&v| v == 0.0)
    );
    // Gradient is the mask.
    let xv = Var::from_tensor(&x).unwrap();
    let mask = ops::channel_dropout_mask(4, 50, 0.5, &mut r, DType::F32, &Device::Cpu).unwrap();
    let g = ops::channel_dropout_with_mask(xv.as_tensor(), &mask)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let gx = to_vec(g.get(xv.as_tensor()).unwrap());
    let m = to_vec(&mask);
    assert!(gx.iter().enumerate().all(|(i, &v)| v == m[i / 12]));
}

#[test]
fn channel_dropout_reproduces_pytorch_mask() {
    let fx = fixtures();
    let y = ops::channel_dropout_with_mask(&fx["dropout.x"], &fx["dropout.mask"]).unwrap();
    assert!(max_err(&y, &fx["dropout.y"]) < 1e-6);
}

/// Up-sampling by 2 (MC-Net's decoders) against PyTorch's
/// `F.interpolate(scale_factor=2)`: trilinear with `align_corners=True`
/// (an axis of size 1 included) and nearest, output and input gradient.
#[test]
fn upsampling_matches_pytorch() {
    let fx = fixtures();
    for (name, mode) in [
        ("up_trilinear", ops::Upsampling::Trilinear),
        ("up_trilinear_one", ops::Upsampling::Trilinear),
        ("up_nearest", ops::Upsampling::Nearest),
    ] {
        let get = |k: &str| fx[&format!("{name}.{k}")].clone();
        let x = Var::from_tensor(&get("x")).unwrap();
        let y = ops::upsample2x(x.as_tensor(), mode).unwrap();
        let g = (&y * get("r"))
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let e = max_err(&y, &get("y"));
        assert!(e < 1e-6, "{name}.y: off PyTorch by {e}");
        let e = max_err(g.get(x.as_tensor()).unwrap(), &get("dx"));
        assert!(e < 1e-5, "{name}.dx: off PyTorch by {e}");
    }
}

/// The up-sampling's gradient against central differences in f64.
#[test]
fn upsampling_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    for mode in [ops::Upsampling::Trilinear, ops::Upsampling::Nearest] {
        let x = random(&[1, 2, 2, 3, 4], DType::F64, &mut rng);
        let r = random(&[1, 2, 4, 6, 8], DType::F64, &mut rng);
        let loss = |x: &Tensor| -> f64 {
            (ops::upsample2x(x, mode).unwrap() * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        let xv = Var::from_tensor(&x).unwrap();
        let g = (ops::upsample2x(xv.as_tensor(), mode).unwrap() * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let analytic = to_vec(g.get(xv.as_tensor()).unwrap());
        let base = to_vec(&x);
        let h = 1e-6;
        for (i, want) in analytic.iter().enumerate() {
            let at = |d: f64| {
                let mut v = base.clone();
                v[i] += d;
                loss(&Tensor::from_vec(v, x.dims(), &Device::Cpu).unwrap())
            };
            let numeric = (at(h) - at(-h)) / (2.0 * h);
            assert!(
                (numeric - want).abs() < 1e-7 * (1.0 + want.abs()),
                "{mode:?} dx[{i}]: {numeric} vs {want}"
            );
        }
    }
}

/// The discriminator's strided convolution against central differences in
/// f64 (both gradients) and against the stride-1 convolution it must equal
/// at even output positions.
#[test]
fn strided_convolution_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let x = random(&[1, 2, 4, 2, 6], DType::F64, &mut rng);
    let w = random(&[3, 2, 4, 4, 4], DType::F64, &mut rng);
    let r = random(&[1, 3, 2, 1, 3], DType::F64, &mut rng);
    let (_, dx, dw) = value_and_grads(ops::conv3d_k4_s2, &x, &w, &r);
    for (which, analytic) in [(0, dx), (1, dw)] {
        let numeric = numeric_grad(ops::conv3d_k4_s2, &x, &w, &r, which);
        let e = max_err(&analytic, &numeric);
        assert!(e < 1e-7, "gradient {which}: off finite differences by {e}");
    }
    // Every second output of the padded stride-1 convolution with a 4x4x4
    // kernel (padding 1 on each side, one more on the far side).
    let y = ops::conv3d_k4_s2(&x, &w).unwrap();
    let padded = x
        .pad_with_zeros(2, 1, 2)
        .unwrap()
        .pad_with_zeros(3, 1, 2)
        .unwrap()
        .pad_with_zeros(4, 1, 2)
        .unwrap();
    let full = ops::conv3d(&padded, &w, 0).unwrap();
    let (_, _, d, h, wd) = y.dims5().unwrap();
    for (z, yy, xx) in
        (0..d).flat_map(|z| (0..h).flat_map(move |a| (0..wd).map(move |b| (z, a, b))))
    {
        let ours = y
            .get(0)
            .unwrap()
            .get(1)
            .unwrap()
            .get(z)
            .unwrap()
            .get(yy)
            .unwrap()
            .get(xx)
            .unwrap();
        let want = full
            .get(0)
            .unwrap()
            .get(1)
            .unwrap()
            .get(2 * z)
            .unwrap()
            .get(2 * yy)
            .unwrap()
            .get(2 * xx)
            .unwrap();
        let (a, b): (f64, f64) = (ours.to_scalar().unwrap(), want.to_scalar().unwrap());
        assert!((a - b).abs() < 1e-12, "({z}, {yy}, {xx}): {a} vs {b}");
    }
}

/// Inference's fused layer equals the conv followed by candle's
/// per-channel multiply, add and ReLU, bit for bit, for each of a V-Net
/// layer's convolutions, and checks its inputs.
#[test]
fn conv_affine_relu_equals_the_composed_layer() {
    use ops::LayerConv;
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    let cubic = LayerConv::Cubic { padding: 1 };
    // (conv, input shape, weight shape, output channels)
    let cases = [
        (cubic, [2, 3, 4, 6, 7], [5, 3, 3, 3, 3], 5),
        (cubic, [1, 8, 2, 3, 3], [30, 8, 3, 3, 3], 30),
        (LayerConv::Down, [2, 3, 4, 6, 8], [5, 3, 2, 2, 2], 5),
        (LayerConv::Up, [2, 3, 2, 3, 4], [3, 5, 2, 2, 2], 5),
    ];
    for dtype in [DType::F32, DType::F64] {
        for (conv, xs, ws, cout) in cases {
            let x = random(&xs, dtype, &mut rng);
            let w = random(&ws, dtype, &mut rng);
            let scale = random(&[cout], dtype, &mut rng);
            let shift = random(&[cout], dtype, &mut rng);
            let fused = ops::conv_affine_relu(conv, &x, &w, &scale, &shift).unwrap();
            let shape = (1, cout, 1, 1, 1);
            let composed = ops::layer_conv(conv, &x, &w)
                .unwrap()
                .broadcast_mul(&scale.reshape(shape).unwrap())
                .unwrap()
                .broadcast_add(&shift.reshape(shape).unwrap())
                .unwrap()
                .relu()
                .unwrap();
            assert_eq!(
                to_vec(&fused),
                to_vec(&composed),
                "{dtype:?} {conv:?} {xs:?}"
            );
        }
    }
    let x = Tensor::zeros((1, 2, 3, 3, 3), DType::F32, &Device::Cpu).unwrap();
    let w = Tensor::zeros((4, 2, 3, 3, 3), DType::F32, &Device::Cpu).unwrap();
    let c3 = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
    let e = ops::conv3d_affine_relu(&x, &w, 1, &c3, &c3).unwrap_err();
    assert!(e.to_string().contains("conv3d_affine_relu"), "{e}");
    let w2 = Tensor::zeros((4, 2, 2, 2, 2), DType::F32, &Device::Cpu).unwrap();
    let e = ops::conv_affine_relu(LayerConv::Down, &x, &w2, &c3, &c3).unwrap_err();
    assert!(e.to_string().contains("down_conv2_affine_relu"), "{e}");
}

/// The heads' op (`masked_conv1x1`) gives what channel dropout then
/// `conv1x1` give, to rounding (its sums run in another order): output and
/// the gradients of the input and the weight, in f32 and f64, with one and
/// several output channels and a volume of several chunks; a mask that
/// tracks a gradient, or of the wrong shape, is an error.
#[test]
fn masked_conv1x1_equals_dropout_then_conv1x1() {
    for (dtype, tol) in [(DType::F32, 2e-5), (DType::F64, 1e-12)] {
        for (cout, dhw) in [(3, [3, 4, 6]), (1, [5, 40, 50])] {
            let mut rng = ChaCha8Rng::seed_from_u64(12);
            let shape = [2, 5, dhw[0], dhw[1], dhw[2]];
            let x = Var::from_tensor(&random(&shape, dtype, &mut rng)).unwrap();
            let w = Var::from_tensor(&random(&[cout, 5, 1, 1, 1], dtype, &mut rng)).unwrap();
            let mut r = ChaCha8Rng::seed_from_u64(7);
            let mask = ops::channel_dropout_mask(2, 5, 0.4, &mut r, dtype, &Device::Cpu).unwrap();
            let fused = ops::masked_conv1x1(x.as_tensor(), w.as_tensor(), Some(&mask)).unwrap();
            let composed = ops::conv1x1(
                &ops::channel_dropout_with_mask(x.as_tensor(), &mask).unwrap(),
                w.as_tensor(),
            )
            .unwrap();
            let what = format!("{dtype:?}, {cout} outputs");
            assert!(max_err(&fused, &composed) < tol, "{what}: output");
            // No mask: no dropout.
            let plain = ops::masked_conv1x1(x.as_tensor(), w.as_tensor(), None).unwrap();
            let reference = ops::conv1x1(x.as_tensor(), w.as_tensor()).unwrap();
            assert!(max_err(&plain, &reference) < tol, "{what}: no mask");
            let rr = random(fused.dims(), dtype, &mut rng);
            let gf = (&fused * &rr)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let gc = (&composed * &rr)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for (v, name) in [(&x, "x"), (&w, "w")] {
                let (a, b) = (gf.get(v.as_tensor()), gc.get(v.as_tensor()));
                let err = max_err(a.unwrap(), b.unwrap());
                assert!(err < tol, "{what}: d{name} off by {err}");
            }
            // Dropped channels get no gradient.
            let m = to_vec(&mask);
            let dx = to_vec(gf.get(x.as_tensor()).unwrap());
            let volume = dhw.iter().product::<usize>();
            assert!(m.contains(&0.0), "the mask drops a channel");
            assert!(
                dx.iter()
                    .enumerate()
                    .all(|(i, &v)| m[i / volume] != 0.0 || v == 0.0)
            );
        }
    }
    let x = Tensor::zeros((2, 5, 2, 2, 2), DType::F32, &Device::Cpu).unwrap();
    let w = Tensor::zeros((1, 5, 1, 1, 1), DType::F32, &Device::Cpu).unwrap();
    let tracked =
        Var::from_tensor(&Tensor::ones((2, 5), DType::F32, &Device::Cpu).unwrap()).unwrap();
    let e = ops::masked_conv1x1(&x, &w, Some(tracked.as_tensor())).unwrap_err();
    assert!(e.to_string().contains("constant"), "{e}");
    let wrong = Tensor::ones((2, 4), DType::F32, &Device::Cpu).unwrap();
    let e = ops::masked_conv1x1(&x, &w, Some(&wrong)).unwrap_err();
    assert!(e.to_string().contains("mask must be (2, 5)"), "{e}");
}
