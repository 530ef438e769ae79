//! One DTML training step on a CUDA GPU: two V-Nets forward on the whole
//! batch with channel dropout, the paper's joint objective, one backward
//! pass and SGD with momentum and weight decay on both nets — the same
//! step, sizes and objective as the PyTorch peer
//! `bench/dtml_step_cuda_peer.py` (see shared/method.md for the objective):
//!
//! ```text
//! A, labelled half:  0.5 (BCE + Dice) on the segmentation logits
//! B, labelled half:  L1(d_B, SDM target) + Dice(sigmoid(-1500 d_B), y)
//! all samples:       lambda * mean((sigmoid(-1500 d_B) - sigmoid(seg_A))^2)
//! ```
//!
//! Self-contained (model crate only) so it can be built and carried alone;
//! the training loop's own step is `dtml_train::trainer::train_step`.
//!
//! Run (needs the `cuda` feature; `cudnn` for the cuDNN convolutions):
//!
//! ```text
//! cargo bench -p dtml-model --features cudnn --bench cuda_step -- \
//!     [--width 16] [--patch 112,112,80] [--labelled 2] [--unlabelled 2] \
//!     [--steps 10] [--warmup 3] [--tf32] [--cudnn-benchmark] [--device 0]
//! ```
//!
//! Defaults: the paper's size, width 16, patch 112x112x80, batch 4 (2
//! labelled + 2 unlabelled), f32 without TF32, cuDNN heuristics. Prints one
//! JSON line: median and min step time, it/s, GPU memory in use after the
//! last step (device total minus free, as the driver reports it).

use candle_core::{DType, Device, Tensor, Var};
use dtml_model::{Dropout, VNet, VNetConfig, ops};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Args {
    width: usize,
    patch: [usize; 3],
    labelled: usize,
    unlabelled: usize,
    steps: usize,
    warmup: usize,
    tf32: bool,
    cudnn_benchmark: bool,
    device: usize,
}

fn parse_args() -> Res<Args> {
    let mut a = Args {
        width: 16,
        patch: [112, 112, 80],
        labelled: 2,
        unlabelled: 2,
        steps: 10,
        warmup: 3,
        tf32: false,
        cudnn_benchmark: false,
        device: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(s) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{s} needs a value"));
        match s.as_str() {
            "--bench" => {}
            "--width" => a.width = val()?.parse()?,
            "--labelled" => a.labelled = val()?.parse()?,
            "--unlabelled" => a.unlabelled = val()?.parse()?,
            "--steps" => a.steps = val()?.parse::<usize>()?.max(1),
            "--warmup" => a.warmup = val()?.parse()?,
            "--device" => a.device = val()?.parse()?,
            "--tf32" => a.tf32 = true,
            "--cudnn-benchmark" => a.cudnn_benchmark = true,
            "--patch" => {
                let v: Vec<usize> = val()?
                    .split(',')
                    .map(str::parse)
                    .collect::<std::result::Result<_, _>>()?;
                a.patch = v
                    .try_into()
                    .map_err(|_| "--patch takes three sizes, e.g. 112,112,80")?;
            }
            other => {
                return Err(format!(
                    "unknown argument {other}; usage: [--width N] [--patch X,Y,Z] [--labelled N] \
                     [--unlabelled N] [--steps N] [--warmup N] [--tf32] [--cudnn-benchmark] [--device N]"
                )
                .into());
            }
        }
    }
    if a.labelled == 0 {
        return Err("--labelled must be at least 1".into());
    }
    Ok(a)
}

fn dice_loss(p: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    let inter = (p * y)?.sum_all()?;
    let den = ((p * p)?.sum_all()? + (y * y)?.sum_all()?)?;
    let ratio = ((inter * 2.0)? + 1e-5)?.div(&(den + 1e-5)?)?;
    ratio.affine(-1.0, 1.0)
}

/// Mean binary cross-entropy with logits, in its stable form
/// `max(x, 0) - x y + log(1 + exp(-|x|))`.
fn bce_with_logits(x: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    let softplus = x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    ((x.relu()? - (x * y)?)? + softplus)?.mean_all()
}

/// PyTorch's SGD with momentum and (coupled) weight decay.
struct Sgd {
    params: Vec<Var>,
    bufs: Vec<Option<Tensor>>,
    lr: f64,
    momentum: f64,
    weight_decay: f64,
}

impl Sgd {
    fn step(&mut self, grads: &candle_core::backprop::GradStore) -> candle_core::Result<()> {
        for (p, buf) in self.params.iter().zip(self.bufs.iter_mut()) {
            let Some(g) = grads.get(p.as_tensor()) else {
                continue;
            };
            let g = (g + (p.as_tensor() * self.weight_decay)?)?;
            let b = match buf.take() {
                None => g,
                Some(b) => ((b * self.momentum)? + g)?,
            };
            p.set(&(p.as_tensor() - (&b * self.lr)?)?)?;
            *buf = Some(b);
        }
        Ok(())
    }
}

fn main() -> Res<()> {
    let a = parse_args()?;
    let device = Device::new_cuda(a.device).map_err(|e| {
        format!(
            "cuda_step: CUDA device {} could not be opened: {e}",
            a.device
        )
    })?;
    #[cfg(feature = "cudnn")]
    {
        ops::cudnn::set_allow_tf32(a.tf32);
        ops::cudnn::set_benchmark(a.cudnn_benchmark);
    }
    #[cfg(not(feature = "cudnn"))]
    {
        if a.cudnn_benchmark {
            return Err("--cudnn-benchmark needs the `cudnn` feature".into());
        }
        candle_core::cuda_backend::set_gemm_reduced_precision_f32(a.tf32);
    }
    let conv = if ops::conv3d_is_native(&device) {
        "cudnn"
    } else {
        "candle-composed"
    };

    let cfg = VNetConfig {
        width: a.width,
        ..VNetConfig::default()
    };
    let nets = [
        VNet::new(cfg.clone(), 1337, DType::F32, &device)?,
        VNet::new(cfg, 1338, DType::F32, &device)?,
    ];
    let params: Vec<Var> = nets.iter().flat_map(|n| n.trainable_vars()).collect();
    let mut sgd = Sgd {
        bufs: vec![None; params.len()],
        params,
        lr: 0.01,
        momentum: 0.9,
        weight_decay: 1e-4,
    };

    // The batch, built once on the host and uploaded once (the loop's data
    // pipeline is not part of the step): a random image, a ball as the
    // label, its clamped radial distance as the SDM target. Our layout is
    // (N, C, Z, Y, X) for the reference's (N, C, x, y, z).
    let [px, py, pz] = a.patch;
    let (nl, n) = (a.labelled, a.labelled + a.unlabelled);
    let vox = px * py * pz;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let image: Vec<f32> = (0..n * vox)
        .map(|_| rng.random::<f32>() * 2.0 - 1.0)
        .collect();
    let radius = px.min(py).min(pz) as f32 / 3.0;
    let rmax = {
        let h = [px as f32 / 2.0, py as f32 / 2.0, pz as f32 / 2.0];
        (h[0] * h[0] + h[1] * h[1] + h[2] * h[2]).sqrt()
    };
    let (mut label, mut sdm) = (Vec::with_capacity(vox), Vec::with_capacity(vox));
    for z in 0..pz {
        for y in 0..py {
            for x in 0..px {
                let d = [
                    x as f32 - px as f32 / 2.0,
                    y as f32 - py as f32 / 2.0,
                    z as f32 - pz as f32 / 2.0,
                ];
                let r = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
                label.push(f32::from(u8::from(r < radius)));
                sdm.push(((r - radius) / rmax).clamp(-1.0, 1.0));
            }
        }
    }
    let shape = (n, 1, pz, py, px);
    let image = Tensor::from_vec(image, shape, &Device::Cpu)?.to_device(&device)?;
    let label = Tensor::from_vec(label, (1, 1, pz, py, px), &Device::Cpu)?
        .to_device(&device)?
        .repeat((nl, 1, 1, 1, 1))?;
    let sdm_target = Tensor::from_vec(sdm, (1, 1, pz, py, px), &Device::Cpu)?
        .to_device(&device)?
        .repeat((nl, 1, 1, 1, 1))?;
    let (lam, k) = (0.1, 1500.0);

    let mut drop_rng = ChaCha8Rng::seed_from_u64(99);
    let mut step = || -> Res<f32> {
        let out_a = nets[0].forward(&image, true, Dropout::Seeded(&mut drop_rng))?;
        let out_b = nets[1].forward(&image, true, Dropout::Seeded(&mut drop_rng))?;
        let seg_a = &out_a.seg_logits;
        let d_b = &out_b.sdm;
        let seg_l = seg_a.narrow(0, 0, nl)?;
        let loss_a = ((bce_with_logits(&seg_l, &label)?
            + dice_loss(&candle_nn::ops::sigmoid(&seg_l)?, &label)?)?
            * 0.5)?;
        let q_b = candle_nn::ops::sigmoid(&(d_b * -k)?)?;
        let l1 = (d_b.narrow(0, 0, nl)? - &sdm_target)?.abs()?.mean_all()?;
        let loss_b = (l1 + dice_loss(&q_b.narrow(0, 0, nl)?, &label)?)?;
        let cons = (q_b - candle_nn::ops::sigmoid(seg_a)?)?.sqr()?.mean_all()?;
        let loss = ((loss_a + loss_b)? + (cons * lam)?)?;
        let grads = loss.backward()?;
        sgd.step(&grads)?;
        // Reading the loss waits for the step's kernels, as `loss.item()`
        // does in PyTorch; synchronize for the parameter updates too.
        let v = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        device.synchronize()?;
        Ok(v)
    };

    let mut times = Vec::with_capacity(a.steps);
    let mut last = f32::NAN;
    for t in 0..a.warmup + a.steps {
        let start = Instant::now();
        last = step()?;
        let s = start.elapsed().as_secs_f64();
        if !last.is_finite() {
            return Err(format!("step {t}: loss is {last}").into());
        }
        if t >= a.warmup {
            times.push(s);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = if times.len() % 2 == 1 {
        times[times.len() / 2]
    } else {
        0.5 * (times[times.len() / 2 - 1] + times[times.len() / 2])
    };
    let used_mb = device
        .as_cuda_device()?
        .cuda_stream()
        .context()
        .mem_get_info()
        .map(|(free, total)| (total - free) as f64 / (1 << 20) as f64)
        .unwrap_or(f64::NAN);
    println!(
        "{{\"impl\": \"dtml\", \"device\": \"cuda:{}\", \"conv\": \"{conv}\", \"width\": {}, \"batch\": {n}, \"labelled\": {nl}, \"patch\": [{px}, {py}, {pz}], \"tf32\": {}, \"cudnn_benchmark\": {}, \"steps\": {}, \"median_s\": {median:.4}, \"min_s\": {:.4}, \"it_per_s\": {:.3}, \"gpu_mem_used_mb\": {used_mb:.0}, \"last_loss\": {last:.5}}}",
        a.device,
        a.width,
        a.tf32,
        a.cudnn_benchmark,
        a.steps,
        times[0],
        1.0 / median,
    );
    Ok(())
}
