//! The 3x3x3 convolution at the size that dominates a DTML step: 32 -> 32
//! channels on a `(2, 32, 40, 56, 56)` input (13.9 GFLOP forward).
//! Compare with `bench/conv_peer.py` (PyTorch CPU, same shape, same
//! thread count). Run with `cargo bench -p dtml-model --bench conv`.

use candle_core::{DType, Device, Tensor, Var};
use criterion::{Criterion, criterion_group, criterion_main};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Duration;

fn random(shape: &[usize], scale: f32, rng: &mut ChaCha8Rng) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn conv(c: &mut Criterion) {
    // As `dtml` and PyTorch's caching allocator run: outputs reuse freed
    // pages instead of faulting in fresh ones on every call.
    // SAFETY: `conv` is the group's first function, so criterion runs it
    // before any thread of ours (or of rayon's pool) exists.
    unsafe { dtml_model::runtime::prepare_process() };
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let x = Var::from_tensor(&random(&[2, 32, 40, 56, 56], 1.0, &mut rng)).unwrap();
    let w = Var::from_tensor(&random(&[32, 32, 3, 3, 3], 0.06, &mut rng)).unwrap();
    let tier = dtml_model::simd::init().expect("DTML_CPU");
    eprintln!(
        "conv3d bench: {} rayon threads, {tier} kernels (DTML_CPU; CPU has {:?})",
        rayon::current_num_threads(),
        dtml_model::simd::cpu_features()
    );
    let mut g = c.benchmark_group("conv3d_32x32_2x40x56x56");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(2));
    g.bench_function("forward", |b| {
        b.iter(|| {
            let y = dtml_model::ops::conv3d(x.as_tensor(), w.as_tensor(), 1).unwrap();
            assert_eq!(y.dtype(), DType::F32);
            y
        })
    });
    g.bench_function("forward_backward", |b| {
        b.iter(|| {
            let y = dtml_model::ops::conv3d(x.as_tensor(), w.as_tensor(), 1).unwrap();
            // Seeds backward with ones, like PyTorch's y.backward(ones_like(y)).
            let grads = y.backward().unwrap();
            (
                grads.get(x.as_tensor()).unwrap().dims().to_vec(),
                grads.get(w.as_tensor()).unwrap().dims().to_vec(),
            )
        })
    });
    // Our two backward kernels called directly, without candle's autograd
    // bookkeeping (which seeds with ones and adds each gradient to a zero
    // tensor: full-size passes PyTorch does not make).
    let dy = random(&[2, 32, 40, 56, 56], 1.0, &mut rng);
    g.bench_function("backward_kernels_only", |b| {
        b.iter(|| {
            let dx = dtml_model::ops::conv3d_input_grad(&dy, w.as_tensor(), 1).unwrap();
            let dw = dtml_model::ops::conv3d_weight_grad(x.as_tensor(), &dy, 3, 1).unwrap();
            (dx, dw)
        })
    });
    // The two halves of backward separately: only one side is a variable.
    let xc = x.as_tensor().detach();
    let wc = w.as_tensor().detach();
    g.bench_function("forward_backward_input_only", |b| {
        b.iter(|| {
            dtml_model::ops::conv3d(x.as_tensor(), &wc, 1)
                .unwrap()
                .backward()
                .unwrap()
        })
    });
    g.bench_function("forward_backward_weight_only", |b| {
        b.iter(|| {
            dtml_model::ops::conv3d(&xc, w.as_tensor(), 1)
                .unwrap()
                .backward()
                .unwrap()
        })
    });
    g.finish();
}

/// The V-Net's first-level resampling pair and the 1x1 head at a
/// 112x112x80 training patch, batch 2 (forward + backward).
fn resample(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let x = Var::from_tensor(&random(&[2, 16, 80, 112, 112], 1.0, &mut rng)).unwrap();
    let wd = Var::from_tensor(&random(&[32, 16, 2, 2, 2], 0.1, &mut rng)).unwrap();
    let xs = Var::from_tensor(&random(&[2, 32, 40, 56, 56], 1.0, &mut rng)).unwrap();
    let wu = Var::from_tensor(&random(&[32, 16, 2, 2, 2], 0.1, &mut rng)).unwrap();
    let w1 = Var::from_tensor(&random(&[2, 16, 1, 1, 1], 0.1, &mut rng)).unwrap();
    let mut g = c.benchmark_group("resample_2x16x80x112x112");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("down_conv2_16to32_fwd_bwd", |b| {
        b.iter(|| {
            dtml_model::ops::down_conv2(x.as_tensor(), wd.as_tensor())
                .unwrap()
                .backward()
                .unwrap()
        })
    });
    g.bench_function("up_conv2_32to16_fwd_bwd", |b| {
        b.iter(|| {
            dtml_model::ops::up_conv2(xs.as_tensor(), wu.as_tensor())
                .unwrap()
                .backward()
                .unwrap()
        })
    });
    g.bench_function("conv1x1_16to2_fwd_bwd", |b| {
        b.iter(|| {
            dtml_model::ops::conv1x1(x.as_tensor(), w1.as_tensor())
                .unwrap()
                .backward()
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, conv, resample);
criterion_main!(benches);
