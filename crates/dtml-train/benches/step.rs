//! One DTML training step on the CPU (two V-Nets forward on the whole batch
//! with channel dropout, the paper's objective, one backward pass, SGD with
//! momentum and weight decay) through `dtml_train::trainer::train_step`,
//! the function the training loop calls. The PyTorch peer is
//! `bench/dtml_step_peer.py` (same sizes, same objective).
//!
//! Run: `cargo bench -p dtml-train --bench step -- [demo|paper] [--steps N]
//! [--warmup N]`
//!   demo:  width 8,  batch 4 (2 labelled + 2 unlabelled), patch 48x48x32
//!   paper: width 16, batch 2 (1 labelled + 1 unlabelled), patch 112x112x80
//! Prints one JSON line: median step time, it/s and the peak resident set
//! of this process (`VmHWM`). Run one size per process so the peak belongs
//! to that size. `cargo xtask bench model` runs both beside the peer.

use candle_core::{DType, Device};
use dtml_model::{VNet, VNetConfig};
use dtml_train::batch::HostBatch;
use dtml_train::trainer::train_step;
use dtml_train::{Method, TrainConfig};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

/// The bench's command line (after cargo's own `--bench`).
#[derive(clap::Parser)]
struct Args {
    /// demo or paper.
    #[arg(default_value = "demo", value_parser = ["demo", "paper"])]
    size: String,
    /// Timed steps [default: 15 demo, 3 paper].
    #[arg(long)]
    steps: Option<usize>,
    /// Untimed steps first [default: 3 demo, 1 paper].
    #[arg(long)]
    warmup: Option<usize>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`).
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() {
    // SAFETY: first statement of main; no other thread exists yet.
    unsafe { dtml_model::runtime::prepare_process() };
    let args = <Args as clap::Parser>::parse();
    let (size, steps, warmup) = (args.size, args.steps, args.warmup);
    let tier = dtml_model::simd::init().expect("DTML_CPU");
    eprintln!(
        "step bench: {tier} kernels (CPU has {:?})",
        dtml_model::simd::cpu_features()
    );
    // Paper: the recipe at batch 1 + 1; demo: what `dtml train` runs
    // without --data.
    let (cfg, default_warmup, default_steps) = match size.as_str() {
        "paper" => (
            TrainConfig {
                labelled_batch: 1,
                unlabelled_batch: 1,
                ..TrainConfig::default()
            },
            1,
            3,
        ),
        _ => (TrainConfig::demo(), 3, 15),
    };
    assert_eq!(cfg.method, Method::Dtml);
    let (width, nl, nu, patch) = (
        cfg.width,
        cfg.labelled_batch,
        cfg.unlabelled_batch,
        cfg.patch,
    );
    let warmup: usize = warmup.unwrap_or(default_warmup);
    let steps: usize = steps.unwrap_or(default_steps).max(1);
    let device = Device::Cpu;
    let net_cfg = VNetConfig {
        width,
        dropout: cfg.dropout,
        ..VNetConfig::default()
    };
    let nets: Vec<VNet> = (0..2)
        .map(|i| VNet::new(net_cfg.clone(), 1337 + i, DType::F32, &device).unwrap())
        .collect();
    let refs: Vec<&VNet> = nets.iter().collect();
    let mut sgd = dtml_train::trainer::optimizer(&cfg, &refs);

    // A batch like the loop's: random image, a ball as the label, its
    // (clamped, scaled) radial distance as the SDM target.
    let [px, py, pz] = patch;
    let n = nl + nu;
    let vox = px * py * pz;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let image: Vec<f32> = (0..n * vox)
        .map(|_| rng.random::<f32>() * 2.0 - 1.0)
        .collect();
    let radius = px.min(py).min(pz) as f32 / 3.0;
    let mut label = Vec::with_capacity(nl * vox);
    let mut sdm = Vec::with_capacity(nl * vox);
    for _ in 0..nl {
        for z in 0..pz {
            for y in 0..py {
                for x in 0..px {
                    let d = [
                        x as f32 - px as f32 / 2.0,
                        y as f32 - py as f32 / 2.0,
                        z as f32 - pz as f32 / 2.0,
                    ];
                    let r = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
                    label.push(u8::from(r < radius));
                    sdm.push(((r - radius) / (px.max(py).max(pz) as f32)).clamp(-1.0, 1.0));
                }
            }
        }
    }
    let mut batch = HostBatch {
        iteration: 0,
        image,
        label,
        sdm: Some(sdm),
        n,
        labelled: nl,
        cases: (0..n).collect(),
    };

    let mut times = Vec::with_capacity(steps);
    for t in 0..warmup + steps {
        batch.iteration = t;
        let start = Instant::now();
        let (loss, _) = train_step(&cfg, &refs, &mut sgd, &batch, &device).unwrap();
        let s = start.elapsed().as_secs_f64();
        assert!(loss.is_finite());
        if t >= warmup {
            times.push(s);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = if times.len() % 2 == 1 {
        times[times.len() / 2]
    } else {
        0.5 * (times[times.len() / 2 - 1] + times[times.len() / 2])
    };
    println!(
        "{{\"impl\": \"dtml\", \"size\": \"{size}\", \"width\": {width}, \"batch\": {n}, \"patch\": [{px}, {py}, {pz}], \"threads\": {}, \"steps\": {steps}, \"median_s\": {median:.4}, \"min_s\": {:.4}, \"it_per_s\": {:.4}, \"peak_rss_mb\": {:.1}}}",
        rayon::current_num_threads(),
        times[0],
        1.0 / median,
        peak_rss_mb().unwrap_or(f64::NAN)
    );
}
