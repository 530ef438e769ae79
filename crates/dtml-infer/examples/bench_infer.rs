//! Whole-volume sliding-window inference timing, the Rust half of
//! `cargo xtask bench infer` (the PyTorch half is `crates/dtml-infer/bench/infer_peer.py`).
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
use dtml_volume::Xyz;
use std::time::Instant;

#[derive(clap::Parser)]
struct Args {
    /// Volume size x,y,z.
    #[arg(long, default_value = "144,144,88")]
    size: Xyz<usize>,
    /// Window x,y,z [default: the paper's].
    #[arg(long)]
    patch: Option<Xyz<usize>>,
    /// Window step x,y,z [default: the reference's].
    #[arg(long)]
    stride: Option<Xyz<usize>>,
    /// V-Net width.
    #[arg(long, default_value_t = 16)]
    width: usize,
    /// Windows per forward pass [default: as `dtml predict`].
    #[arg(long)]
    batch: Option<usize>,
    /// Runs; the best time is printed.
    #[arg(long, default_value_t = 1)]
    repeats: usize,
}

fn main() {
    // SAFETY: first statement of main; no other thread exists yet.
    unsafe { dtml_model::runtime::prepare_process() };
    let args = <Args as clap::Parser>::parse();
    let defaults = InferenceOptions::default();
    let (size, width, repeats) = (args.size, args.width, args.repeats);
    let patch = args.patch.unwrap_or(defaults.patch);
    let stride = args.stride.unwrap_or(defaults.stride);
    let batch = args.batch.unwrap_or(defaults.batch);
    let config = VNetConfig {
        width,
        ..Default::default()
    };
    let net = VNet::new(config, 1337, DType::F32, &Device::Cpu).expect("V-Net");
    let n = size.voxels();
    // A smooth pattern plus a hash, z-scored: content does not change the time.
    let mut image: Vec<f32> = (0..n)
        .map(|i| {
            let [x, y, z] = size.position(i).xyz();
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
    let line = serde_json::json!({
        "impl": "dtml",
        "seconds": (best * 1e4).round() / 1e4,
        "windows": windows,
        "size": size,
        "patch": patch,
        "stride": stride,
        "width": width,
        "batch": batch,
        "threads": rayon::current_num_threads(),
        "foreground": foreground,
    });
    println!("{line}");
}
