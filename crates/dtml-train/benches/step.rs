//! One DTML training step (two V-Nets forward on the whole batch with
//! channel dropout, the paper's objective, one backward pass, SGD with
//! momentum and weight decay) through `dtml_train::trainer::train_step`,
//! the function the training loop calls, on the CPU or an NVIDIA GPU. The
//! PyTorch peers use the same sizes and objective: `bench/dtml_step_peer.py`
//! (CPU) and `bench/dtml_step_cuda_peer.py` (GPU).
//!
//! Run: `cargo bench -p dtml-train --bench step -- [demo|paper] [--steps N]
//! [--warmup N] [--labelled N] [--unlabelled N]`
//!   demo:  width 8,  batch 4 (2 labelled + 2 unlabelled), patch 48x48x32
//!   paper: width 16, batch 2 (1 labelled + 1 unlabelled), patch 112x112x80
//!
//! On a GPU (build with `--features cudnn`, or `cuda` for candle's composed
//! convolution): `-- paper --labelled 2 --unlabelled 2 --cuda 0 [--tf32]
//! [--cudnn-benchmark]`, the size `bench/gpu_verify.sh` runs.
//!
//! Prints one JSON line: median and min step time, it/s, and the peak
//! resident set of this process (`VmHWM`; run one size per process so the
//! peak belongs to it) or, on a GPU, the device memory in use after the
//! last step. `cargo xtask bench model` runs both CPU sizes beside the peer.

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
    /// Timed steps [default: 15 demo, 3 paper on the CPU, 10 on a GPU].
    #[arg(long)]
    steps: Option<usize>,
    /// Untimed steps first [default: 3 demo, 1 paper on the CPU, 3 on a GPU].
    #[arg(long)]
    warmup: Option<usize>,
    /// Labelled patches per step [default: the size's].
    #[arg(long)]
    labelled: Option<usize>,
    /// Unlabelled patches per step [default: the size's].
    #[arg(long)]
    unlabelled: Option<usize>,
    /// Run on CUDA GPU N (needs the `cuda` feature).
    #[arg(long)]
    cuda: Option<usize>,
    /// Allow TF32 in convolutions and matmuls (GPU).
    #[arg(long)]
    tf32: bool,
    /// Let cuDNN time its algorithms (GPU, `cudnn` feature).
    #[arg(long)]
    cudnn_benchmark: bool,
    /// Also time each kernel and each phase of the timed steps
    /// (`dtml_model::profile`): a breakdown on stderr and `profile_ms` in
    /// the JSON line.
    #[arg(long)]
    profile: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Peak resident set size of this process in MiB (Linux `VmHWM`).
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The device to time on, with the GPU settings applied, and the name of
/// its convolution path.
fn open_device(args: &Args) -> Res<(Device, &'static str)> {
    let Some(index) = args.cuda else {
        if args.tf32 || args.cudnn_benchmark {
            return Err("--tf32 and --cudnn-benchmark apply to a GPU (--cuda N)".into());
        }
        return Ok((Device::Cpu, "cpu"));
    };
    #[cfg(feature = "cuda")]
    {
        let device = Device::new_cuda(index)
            .map_err(|e| format!("step bench: CUDA device {index} could not be opened: {e}"))?;
        #[cfg(feature = "cudnn")]
        {
            dtml_model::ops::cudnn::set_allow_tf32(args.tf32);
            dtml_model::ops::cudnn::set_benchmark(args.cudnn_benchmark);
        }
        #[cfg(not(feature = "cudnn"))]
        {
            if args.cudnn_benchmark {
                return Err("--cudnn-benchmark needs the `cudnn` feature".into());
            }
            candle_core::cuda_backend::set_gemm_reduced_precision_f32(args.tf32);
        }
        let conv = if dtml_model::ops::conv3d_is_native(&device) {
            "cudnn"
        } else {
            "candle-composed"
        };
        Ok((device, conv))
    }
    #[cfg(not(feature = "cuda"))]
    Err(format!("--cuda {index}: this bench was built without the `cuda` feature").into())
}

/// Device memory in use (total minus free, as the driver reports it), MiB.
#[cfg(feature = "cuda")]
fn gpu_memory_used_mb(device: &Device) -> Option<f64> {
    let (free, total) = device
        .as_cuda_device()
        .ok()?
        .cuda_stream()
        .context()
        .mem_get_info()
        .ok()?;
    Some((total - free) as f64 / (1 << 20) as f64)
}

#[cfg(not(feature = "cuda"))]
fn gpu_memory_used_mb(_: &Device) -> Option<f64> {
    None
}

/// A batch like the loop's: a random image, a ball as every label, its
/// clamped, scaled radial distance as the SDM target.
fn synthetic_batch(cfg: &TrainConfig) -> HostBatch {
    let (nl, nu) = (cfg.labelled_batch, cfg.unlabelled_batch);
    let [px, py, pz] = cfg.patch.xyz();
    let n = nl + nu;
    let vox = cfg.patch.voxels();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let image: Vec<f32> = (0..n * vox)
        .map(|_| rng.random::<f32>() * 2.0 - 1.0)
        .collect();
    let radius = px.min(py).min(pz) as f32 / 3.0;
    let mut label = Vec::with_capacity(nl * vox);
    let mut sdm = Vec::with_capacity(nl * vox);
    for _ in 0..nl {
        for i in 0..vox {
            let [x, y, z] = cfg.patch.position(i).xyz();
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
    HostBatch {
        iteration: 0,
        image,
        label,
        sdm: Some(sdm),
        n,
        labelled: nl,
        cases: (0..n).collect(),
    }
}

fn main() -> Res<()> {
    // SAFETY: first statement of main; no other thread exists yet.
    unsafe { dtml_model::runtime::prepare_process() };
    let args = <Args as clap::Parser>::parse();
    let tier = dtml_model::simd::init()?;
    eprintln!(
        "step bench: {tier} kernels (CPU has {:?})",
        dtml_model::simd::cpu_features()
    );
    let (device, conv) = open_device(&args)?;
    let gpu = args.cuda.is_some();
    // Paper: the recipe at batch 1 + 1 on the CPU; demo: what `dtml train`
    // runs without --data.
    let (mut cfg, cpu_warmup, cpu_steps) = match args.size.as_str() {
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
    cfg.labelled_batch = args.labelled.unwrap_or(cfg.labelled_batch);
    cfg.unlabelled_batch = args.unlabelled.unwrap_or(cfg.unlabelled_batch);
    if cfg.labelled_batch == 0 {
        return Err("--labelled must be at least 1".into());
    }
    assert_eq!(cfg.method, Method::Dtml);
    let (default_warmup, default_steps) = if gpu {
        (3, 10)
    } else {
        (cpu_warmup, cpu_steps)
    };
    let warmup = args.warmup.unwrap_or(default_warmup);
    let steps = args.steps.unwrap_or(default_steps).max(1);
    let net_cfg = VNetConfig {
        width: cfg.width,
        dropout: cfg.dropout(),
        ..VNetConfig::default()
    };
    let nets = (0..2)
        .map(|i| VNet::new(net_cfg.clone(), 1337 + i, DType::F32, &device))
        .collect::<Result<Vec<_>, _>>()?;
    let refs: Vec<&VNet> = nets.iter().collect();
    let mut sgd = dtml_train::trainer::optimizer(&cfg, &refs);
    let mut batch = synthetic_batch(&cfg);

    let mut times = Vec::with_capacity(steps);
    let mut last = f64::NAN;
    for t in 0..warmup + steps {
        if t == warmup && args.profile {
            dtml_model::profile::enable();
            dtml_model::profile::take();
        }
        batch.iteration = t;
        let start = Instant::now();
        let (loss, _) = train_step(&cfg, &refs, &mut sgd, None, &batch, &device)?;
        // The loss is read on the host; wait for the parameter updates too.
        device.synchronize()?;
        let s = start.elapsed().as_secs_f64();
        last = loss;
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
    let round = |v: f64, digits: i32| {
        let f = 10f64.powi(digits);
        (v * f).round() / f
    };
    let mut line = serde_json::json!({
        "impl": "dtml",
        "size": args.size,
        "device": match args.cuda { Some(i) => format!("cuda:{i}"), None => "cpu".into() },
        "conv": conv,
        "width": cfg.width,
        "batch": batch.n,
        "labelled": batch.labelled,
        "patch": cfg.patch,
        "threads": rayon::current_num_threads(),
        "steps": steps,
        "median_s": round(median, 4),
        "min_s": round(times[0], 4),
        "it_per_s": round(1.0 / median, 4),
        "last_loss": round(last, 5),
    });
    if args.profile {
        line["profile_ms"] = breakdown(steps, times.iter().sum::<f64>() / steps as f64);
    }
    if gpu {
        line["tf32"] = args.tf32.into();
        line["cudnn_benchmark"] = args.cudnn_benchmark.into();
        line["gpu_mem_used_mb"] = gpu_memory_used_mb(&device).map(|v| v.round()).into();
    } else {
        line["peak_rss_mb"] = peak_rss_mb().map(|v| round(v, 1)).into();
    }
    println!("{line}");
    Ok(())
}

/// The profile of the timed steps, per step in ms, printed as a table on
/// stderr: each kernel, each phase of the step, and what the phases hold
/// beyond the kernels (candle's element-wise work, allocation, graph).
fn breakdown(steps: usize, mean_step_s: f64) -> serde_json::Value {
    let parts = dtml_model::profile::take();
    let per_step = |s: f64| s / steps as f64 * 1e3;
    let kernels: f64 = parts
        .iter()
        .filter(|(k, ..)| !k.starts_with("step: "))
        .map(|(_, s, _)| per_step(*s))
        .sum();
    let phases: f64 = parts
        .iter()
        .filter(|(k, ..)| k.starts_with("step: "))
        .map(|(_, s, _)| per_step(*s))
        .sum();
    let step_ms = mean_step_s * 1e3;
    let mut out = serde_json::Map::new();
    eprintln!(
        "{:48} {:>9} {:>7} {:>6}",
        "per step", "ms", "share", "calls"
    );
    let mut row = |name: &str, ms: f64, calls: Option<u64>| {
        eprintln!(
            "{name:48} {ms:9.2} {:6.1}% {:>6}",
            100.0 * ms / step_ms,
            calls.map_or(String::new(), |c| (c / steps as u64).to_string())
        );
        out.insert(name.to_string(), ((ms * 100.0).round() / 100.0).into());
    };
    for (name, s, calls) in &parts {
        row(name, per_step(*s), Some(*calls));
    }
    row("kernels (sum of the kernel rows)", kernels, None);
    row(
        "phases beyond their kernels (element-wise, allocation, graph)",
        phases - kernels,
        None,
    );
    row(
        "outside the phases (batch to tensors, loss readout)",
        step_ms - phases,
        None,
    );
    row("step (mean)", step_ms, None);
    out.into()
}
