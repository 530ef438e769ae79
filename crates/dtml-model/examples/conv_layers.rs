//! Speed of every 3x3x3 convolution shape of a DTML training step, layer
//! by layer: forward, input gradient and weight gradient kernels, in
//! GFLOP/s and as a share of the step's convolution time. Shows which
//! shapes (small deep levels, thin first levels) fall short of the big
//! ones. Run with
//! `cargo run --release -p dtml-model --example conv_layers -- demo|paper`
//! (`DTML_CPU` picks the kernel tier).

use candle_core::{Device, Tensor};
use std::time::Instant;

/// `(batch, width, [Z, Y, X])` of the step sizes of `cargo xtask bench`.
fn size(name: &str) -> Option<(usize, usize, [usize; 3])> {
    match name {
        "demo" => Some((4, 8, [32, 48, 48])),
        "paper" => Some((2, 16, [80, 112, 112])),
        _ => None,
    }
}

/// `(cin, cout, level, convs per V-Net)` of the 3x3x3 convolutions.
fn layers(width: usize) -> Vec<(usize, usize, u32, usize)> {
    let c = |l: u32| width << l;
    vec![
        (1, c(0), 0, 1),
        (c(0), c(0), 0, 1),
        (c(1), c(1), 1, 4),
        (c(2), c(2), 2, 6),
        (c(3), c(3), 3, 6),
        (c(4), c(4), 4, 3),
    ]
}

/// Median seconds of `f` over enough runs to fill about half a second.
fn median_s(mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    f();
    let once = start.elapsed().as_secs_f64();
    let runs = ((0.5 / once.max(1e-6)) as usize).clamp(3, 200);
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

fn main() -> candle_core::Result<()> {
    // As `dtml` itself runs: without it every call faults in its output's
    // pages afresh (a third of the full-resolution layers' time).
    // SAFETY: first statement of main; no other thread exists yet.
    unsafe { dtml_model::runtime::prepare_process() };
    let name = std::env::args().nth(1).unwrap_or_else(|| "demo".into());
    let Some((batch, width, spatial)) = size(&name) else {
        eprintln!("usage: conv_layers demo|paper");
        std::process::exit(2);
    };
    let tier = dtml_model::simd::init().map_err(candle_core::Error::wrap)?;
    println!(
        "{name} step convolutions (two V-Nets): CPU {}, {tier} kernels, {} threads",
        dtml_model::simd::cpu_model(),
        rayon::current_num_threads()
    );
    println!(
        "| cin -> cout | batch x D x H x W | convs | fwd GFLOP/s | dx GFLOP/s | dw GFLOP/s | ms per step |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let dev = Device::Cpu;
    let mut total = [0.0f64; 3];
    let mut total_flops = 0.0;
    for (cin, cout, level, convs) in layers(width) {
        let [z, y, x] = spatial.map(|s| s >> level);
        let xs = Tensor::randn(0f32, 1.0, (batch, cin, z, y, x), &dev)?;
        let w = Tensor::randn(0f32, 0.05, (cout, cin, 3, 3, 3), &dev)?;
        let dy = Tensor::randn(0f32, 1.0, (batch, cout, z, y, x), &dev)?;
        let flops = 2.0 * 27.0 * (cin * cout * batch * z * y * x) as f64;
        let fwd = median_s(|| drop(dtml_model::ops::conv3d(&xs, &w, 1).unwrap()));
        // The network's input needs no gradient.
        let dx = (cin > 1)
            .then(|| median_s(|| drop(dtml_model::ops::conv3d_input_grad(&dy, &w, 1).unwrap())));
        let dw = median_s(|| drop(dtml_model::ops::conv3d_weight_grad(&xs, &dy, 3, 1).unwrap()));
        // Two V-Nets per step.
        let per_step = 2.0 * convs as f64;
        total[0] += per_step * fwd;
        total[1] += per_step * dx.unwrap_or(0.0);
        total[2] += per_step * dw;
        total_flops += per_step * flops * if dx.is_some() { 3.0 } else { 2.0 };
        let rate = |s: f64| format!("{:.1}", flops / s / 1e9);
        println!(
            "| {cin} -> {cout} | {batch} x {z} x {y} x {x} | {} | {} | {} | {} | {:.1} |",
            2 * convs,
            rate(fwd),
            dx.map_or("-".into(), rate),
            rate(dw),
            1e3 * per_step * (fwd + dx.unwrap_or(0.0) + dw)
        );
    }
    let all: f64 = total.iter().sum();
    println!(
        "3x3x3 convolutions per step: forward {:.1} ms, input gradient {:.1} ms, weight gradient {:.1} ms; {:.1} GFLOP in {:.1} ms = {:.1} GFLOP/s",
        1e3 * total[0],
        1e3 * total[1],
        1e3 * total[2],
        total_flops / 1e9,
        1e3 * all,
        total_flops / all / 1e9
    );
    Ok(())
}
