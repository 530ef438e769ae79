//! Whole-volume sliding-window inference timing, the Rust half of
//! `cargo xtask bench infer` (the PyTorch half is `bench/infer_peer.py`).
//!
//! ```text
//! cargo run --release -p dtml-infer --example bench_infer -- \
//!     [--size 144,144,88] [--patch 112,112,80] [--stride 18,18,4] \
//!     [--width 16] [--batch 2] [--repeats 1]
//! ```
//! A seeded V-Net (the paper's width 16 by default) predicts a synthetic
//! z-scored volume; prints one JSON line with the best wall time.

use candle_core::{DType, Device};
use dtml_infer::infer::{Ensemble, InferenceOptions, Students, predict_volume};
use dtml_model::{VNet, VNetConfig};
use std::time::Instant;

fn triple(s: &str) -> [usize; 3] {
    let v: Vec<usize> = s
        .split([',', 'x'])
        .map(|p| p.trim().parse().expect("a number"))
        .collect();
    v.try_into().expect("three values x,y,z")
}

fn main() {
    // SAFETY: first statement of main; no other thread exists yet.
    unsafe { dtml_model::runtime::prepare_process() };
    let mut size = [144, 144, 88];
    let mut patch = [112, 112, 80];
    let mut stride = [18, 18, 4];
    let (mut width, mut batch, mut repeats) = (16, 2, 1);
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let [flag, value] = pair else {
            panic!("flags come with a value: {args:?}")
        };
        match flag.as_str() {
            "--size" => size = triple(value),
            "--patch" => patch = triple(value),
            "--stride" => stride = triple(value),
            "--width" => width = value.parse().expect("width"),
            "--batch" => batch = value.parse().expect("batch"),
            "--repeats" => repeats = value.parse().expect("repeats"),
            other => panic!("unknown flag {other}"),
        }
    }
    let config = VNetConfig {
        width,
        ..Default::default()
    };
    let net = VNet::new(config, 1337, DType::F32, &Device::Cpu).expect("V-Net");
    let n: usize = size.iter().product();
    // A smooth pattern plus a hash, z-scored: content does not change the time.
    let mut image: Vec<f32> = (0..n)
        .map(|i| {
            let (x, y, z) = (
                i % size[0],
                (i / size[0]) % size[1],
                i / (size[0] * size[1]),
            );
            ((x as f32 * 0.1).sin() + (y as f32 * 0.07).cos() + z as f32 * 0.01)
                + ((i.wrapping_mul(2654435761) % 1000) as f32 / 5000.0)
        })
        .collect();
    dtml_infer::zscore(&mut image);
    let opts = InferenceOptions {
        patch,
        stride,
        batch,
        // One student, as the reference test script runs.
        ensemble: Ensemble::Region,
        ..Default::default()
    };
    let s = Students {
        region: Some(&net),
        boundary: None,
    };
    let windows: usize = (0..3)
        .map(|k| {
            dtml_infer::infer::AxisWindows::new(size[k], patch[k], stride[k])
                .starts
                .len()
        })
        .product();
    let mut best = f64::INFINITY;
    let mut foreground = 0;
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        let p = predict_volume(&s, &image, size, &opts).expect("inference");
        best = best.min(t.elapsed().as_secs_f64());
        foreground = p.mask.iter().map(|&v| v as usize).sum::<usize>();
    }
    println!(
        "{{\"impl\": \"dtml\", \"seconds\": {best:.4}, \"windows\": {windows}, \"size\": {size:?}, \"patch\": {patch:?}, \"stride\": {stride:?}, \"width\": {width}, \"batch\": {batch}, \"threads\": {}, \"foreground\": {foreground}}}",
        rayon::current_num_threads()
    );
}
