//! GPU tests: every op of `dtml_model::ops` and the V-Net on a CUDA device
//! compared with the CPU implementation (forward values and both
//! gradients), on small shapes.
//!
//! Compiled only with the `cuda` feature (with `cudnn` the 3D convolution
//! runs through cuDNN; with `cuda` alone through the candle-composed
//! fallback). Built with the feature on a machine without a GPU, every test
//! fails with a message saying that CUDA device 0 could not be opened; a
//! binary that cannot find `libcuda.so.1` does not start at all (see
//! `bench/gpu_verify.sh` for the library path on the GPU machine).
//!
//! The tests share one lock so that they do not run concurrently (global
//! cuDNN settings are switched in one of them, and GPU memory is shared).
//!
//! Tolerance: `max |gpu - cpu| / max |cpu|` over each tensor, 1e-4 in f32
//! (different summation orders; TF32 is off) and 1e-10 in f64 for the ops.
//! The V-Net's f32 gradients are far less stable (BatchNorm over few
//! positions in the deep stages, cancellation): on the CPU its f32 and f64
//! runs differ by 3.2e-5 in the outputs and up to 1.5e-2 in the gradients,
//! so its f32 check is loose (3e-4 / 5e-2, catching layout and indexing
//! errors) and the f64 run (1e-10 / 1e-8) is the strict one.
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Result, Tensor, Var};
use dtml_model::ops;
use dtml_model::{Dropout, VNet, VNetConfig};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::{Mutex, MutexGuard};

static GPU_LOCK: Mutex<()> = Mutex::new(());

/// The GPU (device 0) and the lock serialising the tests; panics with a
/// clear message when no GPU is usable.
fn gpu() -> (Device, MutexGuard<'static, ()>) {
    let guard = GPU_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    match Device::new_cuda(0) {
        Ok(d) => (d, guard),
        Err(e) => panic!(
            "dtml-model was built with the `cuda` feature, so these tests need an NVIDIA GPU, \
             but CUDA device 0 could not be opened: {e}"
        ),
    }
}

fn tol(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-10,
        _ => 1e-4,
    }
}

fn random(shape: &[usize], dtype: DType, rng: &mut ChaCha8Rng) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn to_vec(t: &Tensor) -> Vec<f64> {
    t.to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// `max |a - b| / max |b|` (`b` the CPU reference; 0 when both vanish).
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let (a, b) = (to_vec(a), to_vec(b));
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(&b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        a.iter().all(|v| v.is_finite()),
        "GPU result has non-finite values"
    );
    if scale == 0.0 { diff } else { diff / scale }
}

fn assert_close(what: &str, gpu: &Tensor, cpu: &Tensor) {
    assert_close_tol(what, gpu, cpu, tol(cpu.dtype()), 0.0);
}

fn max_abs(t: &Tensor) -> f64 {
    to_vec(t).iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

/// As [`assert_close`] with tolerance `t`, the error divided by at least
/// `floor` (for gradients that are zero up to rounding).
fn assert_close_tol(what: &str, gpu: &Tensor, cpu: &Tensor, t: f64, floor: f64) {
    assert!(
        gpu.device().is_cuda(),
        "{what}: GPU result is not on the GPU"
    );
    assert_eq!(gpu.dims(), cpu.dims(), "{what}: shapes differ");
    let (a, b) = (to_vec(gpu), to_vec(cpu));
    assert!(
        a.iter().all(|v| v.is_finite()),
        "{what}: GPU result has non-finite values"
    );
    let diff = a
        .iter()
        .zip(&b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    let scale = max_abs(cpu).max(floor);
    let e = if scale == 0.0 { diff } else { diff / scale };
    assert!(
        e <= t,
        "{what}: GPU vs CPU relative error {e:.3e} > {t:.0e}"
    );
}

type OpFn<'a> = &'a dyn Fn(&Tensor, &Tensor) -> Result<Tensor>;

/// Value of `op(x, w)` and the gradients of `sum(op(x, w) * r)` w.r.t. `x`
/// and `w`, all on `x`'s device.
fn value_and_grads(op: OpFn, x: &Tensor, w: &Tensor, r: &Tensor) -> (Tensor, Tensor, Tensor) {
    let (xv, wv) = (Var::from_tensor(x).unwrap(), Var::from_tensor(w).unwrap());
    let y = op(xv.as_tensor(), wv.as_tensor()).unwrap();
    let g = (&y * r).unwrap().sum_all().unwrap().backward().unwrap();
    (
        y,
        g.get(xv.as_tensor()).expect("no input gradient").clone(),
        g.get(wv.as_tensor()).expect("no weight gradient").clone(),
    )
}

/// Forward and both gradients of `op` on the GPU against the CPU.
fn compare(name: &str, op: OpFn, xs: &[usize], ws: &[usize], dtype: DType, seed: u64) {
    let (dev, _lock) = gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x = random(xs, dtype, &mut rng);
    let w = random(ws, dtype, &mut rng);
    let y = op(&x, &w).unwrap();
    let r = random(y.dims(), dtype, &mut rng);
    let (yc, dxc, dwc) = value_and_grads(op, &x, &w, &r);
    let to = |t: &Tensor| t.to_device(&dev).unwrap();
    let (yg, dxg, dwg) = value_and_grads(op, &to(&x), &to(&w), &to(&r));
    let tag = format!("{name} x{xs:?} w{ws:?} {dtype:?}");
    assert_close(&format!("{tag} forward"), &yg, &yc);
    assert_close(&format!("{tag} input gradient"), &dxg, &dxc);
    assert_close(&format!("{tag} weight gradient"), &dwg, &dwc);
}

#[test]
fn conv3d_is_native_on_gpu_with_cudnn() {
    let (dev, _lock) = gpu();
    assert_eq!(ops::conv3d_is_native(&dev), cfg!(feature = "cudnn"));
    #[cfg(feature = "cudnn")]
    {
        let v = ops::cudnn::version();
        assert!(v >= 8000, "cuDNN version {v}");
        eprintln!("cuDNN version {v}");
    }
}

#[test]
fn conv3d_forward_and_gradients_match_cpu() {
    // (input, weight, padding): the V-Net's 3x3x3/p1, unpadded, larger
    // kernels, odd sizes, one channel in or out, several samples.
    let cases: &[(&[usize], &[usize], usize)] = &[
        (&[2, 3, 6, 7, 5], &[4, 3, 3, 3, 3], 1),
        (&[1, 1, 8, 8, 8], &[16, 1, 3, 3, 3], 1),
        (&[2, 16, 8, 10, 12], &[16, 16, 3, 3, 3], 1),
        (&[1, 5, 7, 6, 9], &[2, 5, 3, 3, 3], 0),
        (&[2, 4, 9, 8, 7], &[3, 4, 5, 5, 5], 2),
        (&[1, 3, 6, 6, 6], &[3, 3, 5, 5, 5], 1),
        (&[3, 8, 5, 4, 6], &[1, 8, 3, 3, 3], 1),
        (&[2, 6, 4, 5, 3], &[5, 6, 1, 1, 1], 0),
    ];
    for dtype in [DType::F32, DType::F64] {
        for (i, &(xs, ws, p)) in cases.iter().enumerate() {
            let op = move |x: &Tensor, w: &Tensor| ops::conv3d(x, w, p);
            compare(&format!("conv3d p{p}"), &op, xs, ws, dtype, 100 + i as u64);
        }
    }
}

#[test]
fn conv3d_gradient_functions_match_cpu() {
    let (dev, _lock) = gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for dtype in [DType::F32, DType::F64] {
        for &(n, cin, cout, d, h, w, k, p) in &[
            (2, 3, 4, 6, 7, 5, 3, 1),
            (1, 8, 8, 12, 10, 9, 3, 0),
            (2, 2, 5, 7, 7, 8, 5, 2),
        ] {
            let x = random(&[n, cin, d, h, w], dtype, &mut rng);
            let wt = random(&[cout, cin, k, k, k], dtype, &mut rng);
            let y = ops::conv3d(&x, &wt, p).unwrap();
            let dy = random(y.dims(), dtype, &mut rng);
            let to = |t: &Tensor| t.to_device(&dev).unwrap();
            let tag = format!("x({n},{cin},{d},{h},{w}) k{k} p{p} {dtype:?}");
            let dx_c = ops::conv3d_input_grad(&dy, &wt, p).unwrap();
            let dx_g = ops::conv3d_input_grad(&to(&dy), &to(&wt), p).unwrap();
            assert_eq!(dx_c.dims(), x.dims());
            assert_close(&format!("conv3d_input_grad {tag}"), &dx_g, &dx_c);
            let dw_c = ops::conv3d_weight_grad(&x, &dy, k, p).unwrap();
            let dw_g = ops::conv3d_weight_grad(&to(&x), &to(&dy), k, p).unwrap();
            assert_eq!(dw_c.dims(), wt.dims());
            assert_close(&format!("conv3d_weight_grad {tag}"), &dw_g, &dw_c);
        }
    }
}

/// One V-Net layer at the paper's full resolution (16 -> 16 channels,
/// 80x112x112): large workspaces and the algorithms cuDNN picks for them.
#[test]
fn conv3d_paper_size_layer_matches_cpu() {
    let (dev, _lock) = gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let x = random(&[1, 16, 80, 112, 112], DType::F32, &mut rng);
    let w = random(&[16, 16, 3, 3, 3], DType::F32, &mut rng);
    let dy = random(&[1, 16, 80, 112, 112], DType::F32, &mut rng);
    let to = |t: &Tensor| t.to_device(&dev).unwrap();
    let (xg, wg, dyg) = (to(&x), to(&w), to(&dy));
    assert_close(
        "paper layer forward",
        &ops::conv3d(&xg, &wg, 1).unwrap(),
        &ops::conv3d(&x, &w, 1).unwrap(),
    );
    assert_close(
        "paper layer input gradient",
        &ops::conv3d_input_grad(&dyg, &wg, 1).unwrap(),
        &ops::conv3d_input_grad(&dy, &w, 1).unwrap(),
    );
    assert_close(
        "paper layer weight gradient",
        &ops::conv3d_weight_grad(&xg, &dyg, 3, 1).unwrap(),
        &ops::conv3d_weight_grad(&x, &dy, 3, 1).unwrap(),
    );
}

/// Algorithms chosen by timed trials, and TF32 (loose tolerance), give the
/// same convolution; the switches are restored afterwards.
#[cfg(feature = "cudnn")]
#[test]
fn cudnn_benchmark_mode_and_tf32() {
    let (dev, _lock) = gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let x = random(&[2, 16, 16, 20, 24], DType::F32, &mut rng);
    let w = random(&[32, 16, 3, 3, 3], DType::F32, &mut rng);
    let dy = random(&[2, 32, 16, 20, 24], DType::F32, &mut rng);
    let to = |t: &Tensor| t.to_device(&dev).unwrap();
    let (xg, wg, dyg) = (to(&x), to(&w), to(&dy));
    let cpu = [
        ops::conv3d(&x, &w, 1).unwrap(),
        ops::conv3d_input_grad(&dy, &w, 1).unwrap(),
        ops::conv3d_weight_grad(&x, &dy, 3, 1).unwrap(),
    ];
    let run = || {
        [
            ops::conv3d(&xg, &wg, 1).unwrap(),
            ops::conv3d_input_grad(&dyg, &wg, 1).unwrap(),
            ops::conv3d_weight_grad(&xg, &dyg, 3, 1).unwrap(),
        ]
    };
    ops::cudnn::set_benchmark(true);
    let found = run();
    ops::cudnn::set_benchmark(false);
    for (g, c) in found.iter().zip(&cpu) {
        assert_close("benchmark-mode algorithms", g, c);
    }
    ops::cudnn::set_allow_tf32(true);
    let tf32 = run();
    ops::cudnn::set_allow_tf32(false);
    for (g, c) in tf32.iter().zip(&cpu) {
        let e = rel_err(g, c);
        assert!(e < 1e-2, "TF32 result off by {e:.3e}");
    }
    // A tiny workspace limit still finds an algorithm (the least hungry).
    ops::cudnn::set_workspace_limit(0);
    let small = run();
    ops::cudnn::set_workspace_limit(1 << 30);
    for (g, c) in small.iter().zip(&cpu) {
        assert_close("zero-workspace algorithms", g, c);
    }
}

#[test]
fn resample_ops_match_cpu() {
    for dtype in [DType::F32, DType::F64] {
        compare(
            "down_conv2",
            &ops::down_conv2,
            &[2, 3, 6, 4, 8],
            &[5, 3, 2, 2, 2],
            dtype,
            1,
        );
        compare(
            "down_conv2",
            &ops::down_conv2,
            &[1, 16, 16, 16, 16],
            &[32, 16, 2, 2, 2],
            dtype,
            2,
        );
        compare(
            "up_conv2",
            &ops::up_conv2,
            &[2, 5, 3, 2, 4],
            &[5, 3, 2, 2, 2],
            dtype,
            3,
        );
        compare(
            "up_conv2",
            &ops::up_conv2,
            &[1, 32, 8, 8, 8],
            &[32, 16, 2, 2, 2],
            dtype,
            4,
        );
        compare(
            "conv1x1",
            &ops::conv1x1,
            &[2, 4, 5, 6, 7],
            &[3, 4, 1, 1, 1],
            dtype,
            5,
        );
        compare(
            "conv1x1",
            &ops::conv1x1,
            &[2, 16, 8, 8, 8],
            &[1, 16, 1, 1, 1],
            dtype,
            6,
        );
    }
}

/// Non-contiguous inputs (a transposed view) are handled on the GPU.
#[test]
fn strided_inputs_match_cpu() {
    let (dev, _lock) = gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let x = random(&[2, 3, 6, 6, 8], DType::F32, &mut rng)
        .transpose(2, 4)
        .unwrap();
    let w = random(&[4, 3, 3, 3, 3], DType::F32, &mut rng);
    let xg = x
        .to_device(&dev)
        .unwrap()
        .transpose(2, 4)
        .unwrap()
        .contiguous()
        .unwrap()
        .transpose(2, 4)
        .unwrap();
    assert!(!xg.is_contiguous());
    assert_close(
        "conv3d of a strided input",
        &ops::conv3d(&xg, &w.to_device(&dev).unwrap(), 1).unwrap(),
        &ops::conv3d(&x, &w, 1).unwrap(),
    );
    let wd = random(&[4, 3, 2, 2, 2], DType::F32, &mut rng);
    assert_close(
        "down_conv2 of a strided input",
        &ops::down_conv2(&xg, &wd.to_device(&dev).unwrap()).unwrap(),
        &ops::down_conv2(&x, &wd).unwrap(),
    );
}

#[test]
fn channel_dropout_matches_cpu() {
    let (dev, _lock) = gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x = random(&[3, 6, 4, 5, 2], DType::F32, &mut rng);
    let r = random(&[3, 6, 4, 5, 2], DType::F32, &mut rng);
    // The same seeded stream draws the same mask on either device.
    let yc = ops::channel_dropout(&x, 0.5, &mut ChaCha8Rng::seed_from_u64(21)).unwrap();
    let xg = x.to_device(&dev).unwrap();
    let yg = ops::channel_dropout(&xg, 0.5, &mut ChaCha8Rng::seed_from_u64(21)).unwrap();
    assert_close("channel_dropout", &yg, &yc);
    // Gradient through an explicit mask.
    let mask = ops::channel_dropout_mask(
        3,
        6,
        0.5,
        &mut ChaCha8Rng::seed_from_u64(22),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let grad = |x: &Tensor, r: &Tensor| {
        let v = Var::from_tensor(x).unwrap();
        let y = ops::channel_dropout_with_mask(v.as_tensor(), &mask).unwrap();
        let g = (&y * r).unwrap().sum_all().unwrap().backward().unwrap();
        (y, g.get(v.as_tensor()).unwrap().clone())
    };
    let (yc, gc) = grad(&x, &r);
    let (yg, gg) = grad(&xg, &r.to_device(&dev).unwrap());
    assert_close("channel_dropout_with_mask forward", &yg, &yc);
    assert_close("channel_dropout_with_mask gradient", &gg, &gc);
}

/// The whole V-Net, training mode with given dropout masks, then
/// evaluation mode: outputs, every parameter's gradient and the updated
/// BatchNorm running statistics agree between the CPU and the GPU.
fn vnet_matches_cpu(dtype: DType) {
    let (dev, _lock) = gpu();
    let cfg = VNetConfig {
        width: 4,
        ..VNetConfig::default()
    };
    let cpu_net = VNet::new(cfg.clone(), 42, dtype, &Device::Cpu).unwrap();
    let gpu_net = VNet::new(cfg, 42, dtype, &dev).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let x = random(&[2, 1, 32, 16, 48], dtype, &mut rng);
    let m1 = ops::channel_dropout_mask(2, 64, 0.5, &mut rng, dtype, &Device::Cpu).unwrap();
    let m2 = ops::channel_dropout_mask(2, 4, 0.5, &mut rng, dtype, &Device::Cpu).unwrap();
    let r1 = random(&[2, 1, 32, 16, 48], dtype, &mut rng);
    let r2 = random(&[2, 1, 32, 16, 48], dtype, &mut rng);
    let to = |t: &Tensor| t.to_device(&dev).unwrap();
    let run = |net: &VNet, x: &Tensor, m1: &Tensor, m2: &Tensor, r1: &Tensor, r2: &Tensor| {
        let out = net
            .forward(x, true, Dropout::Masks(&[m1.clone(), m2.clone()]))
            .unwrap();
        let loss = ((&out.sdm * r1).unwrap().sum_all().unwrap()
            + (&out.seg_logits * r2).unwrap().sum_all().unwrap())
        .unwrap();
        let grads = loss.backward().unwrap();
        (out, grads)
    };
    let (oc, gc) = run(&cpu_net, &x, &m1, &m2, &r1, &r2);
    let (og, gg) = run(&gpu_net, &to(&x), &to(&m1), &to(&m2), &to(&r1), &to(&r2));
    let tag = format!("V-Net {dtype:?}");
    let (tol_out, tol_grad) = match dtype {
        DType::F64 => (1e-10, 1e-8),
        _ => (3e-4, 5e-2),
    };
    let check = |what: &str, g: &Tensor, c: &Tensor| assert_close_tol(what, g, c, tol_out, 0.0);
    check(&format!("{tag} train sdm"), &og.sdm, &oc.sdm);
    check(&format!("{tag} train seg"), &og.seg_logits, &oc.seg_logits);
    let (cv, gv) = (
        cpu_net.named_trainable_vars(),
        gpu_net.named_trainable_vars(),
    );
    assert_eq!(cv.len(), gv.len());
    // Conv biases before a BatchNorm have a zero gradient up to rounding:
    // their errors are measured against 1e-3 of the largest gradient.
    let floor = 1e-3
        * cv.iter()
            .map(|(_, c)| gc.get(c.as_tensor()).map_or(0.0, max_abs))
            .fold(0.0, f64::max);
    for ((name, c), (gname, g)) in cv.iter().zip(&gv) {
        assert_eq!(name, gname);
        let dc = gc
            .get(c.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no CPU gradient"));
        let dg = gg
            .get(g.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no GPU gradient"));
        assert_close_tol(
            &format!("{tag} gradient of {name}"),
            dg,
            dc,
            tol_grad,
            floor,
        );
    }
    for name in [
        "block_one.conv.1.running_mean",
        "block_five.conv.7.running_var",
    ] {
        check(
            &format!("{tag} {name}"),
            gpu_net.get(name).unwrap().as_tensor(),
            cpu_net.get(name).unwrap().as_tensor(),
        );
    }
    let ec = cpu_net.forward(&x, false, Dropout::Off).unwrap();
    let eg = gpu_net.forward(&to(&x), false, Dropout::Off).unwrap();
    check(&format!("{tag} eval sdm"), &eg.sdm, &ec.sdm);
    check(&format!("{tag} eval seg"), &eg.seg_logits, &ec.seg_logits);
}

#[test]
fn vnet_forward_backward_matches_cpu_f32() {
    vnet_matches_cpu(DType::F32);
}

#[test]
fn vnet_forward_backward_matches_cpu_f64() {
    vnet_matches_cpu(DType::F64);
}
