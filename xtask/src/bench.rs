//! `cargo xtask bench`: side-by-side benchmarks against the PyTorch peers,
//! each printing the CPU and kernel tier it ran on.

use crate::*;

/// `dtml info --system --json` with `DTML_CPU` unset: the CPU's model and
/// features, the tier it picks and the tiers it supports, best first.
pub(crate) fn system_info(dtml: &Path) -> Result<serde_json::Value> {
    system_info_with(dtml, &[])
}

/// [`system_info`] with more `dtml info --system` flags (`--peak`).
pub(crate) fn system_info_with(dtml: &Path, flags: &[&str]) -> Result<serde_json::Value> {
    let out = Command::new(dtml)
        .args(["info", "--system", "--json"])
        .args(flags)
        .env_remove("DTML_CPU")
        .output()
        .with_context(|| format!("running {} info --system", dtml.display()))?;
    if !out.status.success() {
        bail!(
            "dtml info --system failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The strings of a JSON array (none for anything else).
pub(crate) fn json_strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn prepare(out: &Path) -> Result<()> {
    // The demo's data: the hard synthetic mode, as `dtml train` without --data.
    prepare_with(out, &["--difficulty", "1"])
}

/// Builds the release `dtml`, generates the synthetic data (with extra
/// `generate` flags) into `out/data` and prepares it into `out/prepared`
/// (20 % labelled, patch 48x48x32).
pub(crate) fn prepare_with(out: &Path, generate_flags: &[&str]) -> Result<()> {
    run(cargo().args(["build", "--release", "-p", "dtml-cli", "--bin", "dtml"]))?;
    let dtml = root().join("target/release/dtml");
    let out = root().join(out);
    let data = out.join("data");
    run(Command::new(&dtml)
        .arg("generate")
        .args(generate_flags)
        .arg("--out")
        .arg(&data))?;
    run(Command::new(&dtml)
        .args(["prepare", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(out.join("prepared"))
        .args([
            "--labelled-fraction",
            "0.2",
            "--patch",
            "48,48,32",
            "--margin",
            "8,8,4",
        ]))?;
    eprintln!("prepared data in {}", out.join("prepared").display());
    Ok(())
}

/// A Python that imports torch: `DTML_TORCH_PYTHON`, else the test venv,
/// a `torchenv` beside the checkout, or `python3`.
pub(crate) fn torch_python() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("DTML_TORCH_PYTHON") {
        candidates.push(p.into());
    }
    candidates.push(root().join("target/pyenv/bin/python"));
    candidates.push(root().join("../torchenv/bin/python"));
    candidates.push("python3".into());
    candidates.into_iter().find(|p| {
        Command::new(p)
            .args(["-c", "import torch, numpy"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// The number under `key` in a one-line JSON object (None for anything
/// else, a line that is not JSON included).
pub(crate) fn json_number(line: &str, key: &str) -> Option<f64> {
    serde_json::from_str::<serde_json::Value>(line).ok()?[key].as_f64()
}

/// Runs a command and returns the last line of its standard output.
pub(crate) fn last_line(cmd: &mut Command) -> Result<String> {
    eprintln!("$ {cmd:?}");
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed with {}", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().last().unwrap_or_default().to_string())
}

/// Whole-volume sliding-window inference on the CPU: dtml beside the
/// reference PyTorch loop (same V-Net family, size, window and strides).
pub(crate) fn bench_infer(quick: bool) -> Result<()> {
    let args: Vec<&str> = if quick {
        vec![
            "--size", "40,28,20", "--patch", "32,32,16", "--stride", "8,8,4", "--width", "4",
        ]
    } else {
        vec![
            "--size",
            "144,144,88",
            "--patch",
            "112,112,80",
            "--stride",
            "18,18,4",
            "--width",
            "16",
        ]
    };
    let ours = last_line(
        cargo()
            .args([
                "run",
                "--release",
                "--quiet",
                "-p",
                "dtml-infer",
                "--example",
                "bench_infer",
                "--",
            ])
            .args(&args),
    )?;
    println!("{ours}");
    // The share of the machine's FMA peak: a V-Net forward pass per window
    // (convolutions, as `dtml_model::flops` counts them).
    let peak = if quick {
        None
    } else {
        run(cargo().args(["build", "--release", "-p", "dtml-cli"]))?;
        let system = system_info_with(&root().join("target/release/dtml"), &["--peak"])?;
        let threads = system["threads"].as_u64().unwrap_or(1);
        let tier = system["kernel_tier"].as_str().unwrap_or("?").to_string();
        tier_peak(&system, &tier, threads).map(|p| (p, tier, threads))
    };
    let window_flops = {
        let patch: Vec<usize> = args[3].split(',').filter_map(|v| v.parse().ok()).collect();
        let config = dtml_model::VNetConfig {
            width: args[7].parse().unwrap_or(16),
            ..Default::default()
        };
        dtml_model::flops::vnet_flops(&config, [patch[2], patch[1], patch[0]], 1).0 as f64
    };
    let share = |seconds: f64| {
        let windows = json_number(&ours, "windows").unwrap_or(f64::NAN);
        let gflops = windows * window_flops / seconds / 1e9;
        match &peak {
            Some((p, tier, threads)) => format!(
                "{gflops:.1} GFLOP/s, {:.0} % of the {tier} FMA peak ({p:.1} GFLOP/s, {threads} threads)",
                100.0 * gflops / p
            ),
            None => format!("{gflops:.1} GFLOP/s"),
        }
    };
    if let Some(a) = json_number(&ours, "seconds") {
        println!(
            "dtml inference: {:.1} GFLOP per window; {}",
            window_flops / 1e9,
            share(a)
        );
    }
    let peer = root().join("crates/dtml-infer/bench/infer_peer.py");
    let Some(python) = torch_python() else {
        eprintln!("PyTorch peer not run: no Python with torch (set DTML_TORCH_PYTHON to one)");
        return Ok(());
    };
    // The peer reuses the fixture script's sliding window, which needs these.
    let missing = Command::new(&python)
        .args(["-c", "import nibabel, skimage"])
        .output()
        .map_or(true, |o| !o.status.success());
    if missing {
        eprintln!(
            "PyTorch peer not run: {} lacks nibabel or scikit-image (pip install nibabel scikit-image there)",
            python.display()
        );
        return Ok(());
    }
    let theirs = last_line(Command::new(&python).arg(&peer).args(&args))?;
    println!("{theirs}");
    if let (Some(a), Some(b)) = (
        json_number(&ours, "seconds"),
        json_number(&theirs, "seconds"),
    ) {
        println!(
            "inference of {} ({}): dtml {a:.2} s, PyTorch {b:.2} s, dtml / PyTorch = {:.2}",
            args[1],
            if quick {
                "quick smoke run, not a measurement"
            } else {
                "paper size, width 16"
            },
            a / b
        );
        println!("PyTorch inference: {}", share(b));
    }
    Ok(())
}

/// Sizes of the DTML step benches: (name, width, labelled, unlabelled, patch x,y,z).
pub(crate) const STEP_SIZES: [(&str, usize, usize, usize, &str); 2] = [
    ("demo", 8, 2, 2, "48,48,32"),
    ("paper", 16, 1, 1, "112,112,80"),
];

/// Prints `ours` vs `theirs` (JSON lines with `median_s` and `peak_rss_mb`).
pub(crate) fn print_ratio(what: &str, ours: &str, theirs: &str) {
    if let (Some(a), Some(b)) = (
        json_number(ours, "median_s"),
        json_number(theirs, "median_s"),
    ) {
        println!(
            "{what}: dtml {a:.3} s/step ({:.3} it/s), PyTorch {b:.3} s/step ({:.3} it/s), dtml / PyTorch = {:.2}; peak RSS dtml {} MB, PyTorch {} MB",
            1.0 / a,
            1.0 / b,
            a / b,
            json_number(ours, "peak_rss_mb").unwrap_or(f64::NAN),
            json_number(theirs, "peak_rss_mb").unwrap_or(f64::NAN),
        );
    }
}

/// The environment that makes PyTorch's CPU kernels match our `tier`:
/// ATen's dispatch level and oneDNN's ISA ceiling (both read at start-up).
pub(crate) fn torch_tier_env(tier: &str) -> [(&'static str, &'static str); 2] {
    match tier {
        "avx512" => [
            ("ATEN_CPU_CAPABILITY", "avx512"),
            ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE"),
        ],
        "avx2" => [
            ("ATEN_CPU_CAPABILITY", "avx2"),
            ("ONEDNN_MAX_CPU_ISA", "AVX2"),
        ],
        // NEON is aarch64's baseline: PyTorch's default level there.
        _ => [
            ("ATEN_CPU_CAPABILITY", "default"),
            ("ONEDNN_MAX_CPU_ISA", "DEFAULT"),
        ],
    }
}

/// Median of a criterion benchmark's last run, in seconds.
pub(crate) fn criterion_median_s(group: &str, name: &str) -> Option<f64> {
    let path = root().join(format!(
        "target/criterion/{group}/{name}/new/estimates.json"
    ));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    v["median"]["point_estimate"].as_f64().map(|ns| ns * 1e-9)
}

/// `name ... median X ms` from the conv peer's output, in seconds.
pub(crate) fn peer_median_s(text: &str, name: &str) -> Option<f64> {
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))?;
    let mut words = line.split_whitespace();
    words.find(|w| *w == "median")?;
    words.next()?.parse::<f64>().ok().map(|ms| ms * 1e-3)
}

/// The conv3d criterion bench with its peer, then one DTML training step
/// (`crates/dtml-train/benches/step.rs`) at the demo and the paper size
/// (batch 2) beside `bench/dtml_step_peer.py`, one process per size so each
/// peak RSS belongs to its size; all of it once per kernel tier this CPU
/// supports (or those asked for), ours forced through `DTML_CPU` and
/// PyTorch through `ATEN_CPU_CAPABILITY` / `ONEDNN_MAX_CPU_ISA`, then one
/// table with the CPU named.
pub(crate) fn bench_model(quick: bool, tiers: &[String]) -> Result<()> {
    let python = torch_python();
    run(cargo().args(["build", "--release", "-p", "dtml-cli"]))?;
    // The FMA peak of every tier, measured before the benches load the CPU.
    let system = system_info_with(&root().join("target/release/dtml"), &["--peak"])?;
    let tiers = if tiers.is_empty() {
        json_strings(&system["supported_tiers"])
    } else {
        tiers.to_vec()
    };
    let mut table: Vec<(String, Vec<TierRow>)> = Vec::new();
    run(cargo().args(["bench", "-p", "dtml-train", "--bench", "step", "--no-run"]))?;
    for tier in &tiers {
        eprintln!("== kernel tier {tier} ==");
        let mut rows: Vec<TierRow> = Vec::new();
        if !quick {
            run(cargo()
                .args([
                    "bench",
                    "-p",
                    "dtml-model",
                    "--bench",
                    "conv",
                    "--",
                    "--warm-up-time",
                    "1",
                ])
                .args(["--measurement-time", "4"])
                .env("DTML_CPU", tier))?;
            let group = "conv3d_32x32_2x40x56x56";
            let theirs = python.as_ref().map(|py| {
                let out = Command::new(py)
                    .arg(root().join("crates/dtml-model/bench/conv_peer.py"))
                    .envs(torch_tier_env(tier))
                    .output();
                let text = out
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                println!("{text}");
                text
            });
            // 2 FLOPs per multiply-add; backward computes the input and the
            // weight gradients, each as costly as the forward pass.
            let forward = 2.0 * 27.0 * 32.0 * 32.0 * (2 * 40 * 56 * 56) as f64;
            for (name, flops) in [("forward", forward), ("forward_backward", 3.0 * forward)] {
                rows.push((
                    format!("conv3d 32->32, 2x40x56x56, {name}"),
                    criterion_median_s(group, name),
                    theirs.as_deref().and_then(|t| peer_median_s(t, name)),
                    flops,
                ));
            }
        }
        for (size, ..) in STEP_SIZES {
            let steps: &[&str] = if quick {
                &["--steps", "1", "--warmup", "0"]
            } else {
                &[]
            };
            if quick && size == "paper" {
                continue;
            }
            let ours = last_line(
                cargo()
                    .args(["bench", "-p", "dtml-train", "--bench", "step", "--", size])
                    .args(steps)
                    .env("DTML_CPU", tier),
            )?;
            println!("{ours}");
            let theirs = match &python {
                Some(py) => last_line(
                    Command::new(py)
                        .arg(root().join("bench/dtml_step_peer.py"))
                        .args(["--size", size])
                        .args(steps)
                        .envs(torch_tier_env(tier)),
                )?,
                None => {
                    eprintln!(
                        "PyTorch peer not run: no Python with torch (set DTML_TORCH_PYTHON to one)"
                    );
                    String::new()
                }
            };
            println!("{theirs}");
            print_ratio(&format!("DTML step, {size}, tier {tier}"), &ours, &theirs);
            rows.push((
                format!("DTML step, {size}"),
                json_number(&ours, "median_s"),
                json_number(&theirs, "median_s"),
                step_flops(size),
            ));
        }
        table.push((tier.clone(), rows));
    }
    println!(
        "\nCPU: {}; SIMD features: {}; threads: {}",
        system["cpu"].as_str().unwrap_or("?"),
        json_strings(&system["features"]).join(" "),
        system["threads"]
    );
    let threads = system["threads"].as_u64().unwrap_or(1);
    println!(
        "physical cores: {}; FMA peak (f32, register-only loop, {threads} threads): {}",
        system["physical_cores"],
        tiers
            .iter()
            .map(|t| format!(
                "{t} {:.1} GFLOP/s",
                tier_peak(&system, t, threads).unwrap_or(f64::NAN)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "| tier | task | GFLOP | dtml | PyTorch | dtml / PyTorch | dtml GFLOP/s (of peak) | PyTorch GFLOP/s (of peak) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |s| format!("{:.1} ms", s * 1e3));
    for (tier, rows) in &table {
        let peak = tier_peak(&system, tier, threads);
        let rate = |seconds: Option<f64>, flops: f64| match (seconds, peak) {
            (Some(s), Some(p)) => {
                let g = flops / s / 1e9;
                format!("{g:.1} ({:.0} %)", 100.0 * g / p)
            }
            _ => "-".into(),
        };
        for (what, ours, theirs, flops) in rows {
            let ratio = match (ours, theirs) {
                (Some(a), Some(b)) => format!("{:.2}", a / b),
                _ => "-".into(),
            };
            println!(
                "| {tier} | {what} | {:.1} | {} | {} | {ratio} | {} | {} |",
                flops / 1e9,
                ms(*ours),
                ms(*theirs),
                rate(*ours, *flops),
                rate(*theirs, *flops)
            );
        }
    }
    Ok(())
}

/// The measured FMA peak of `tier` at `threads` threads (GFLOP/s), from
/// `dtml info --system --peak --json`.
pub(crate) fn tier_peak(system: &serde_json::Value, tier: &str, threads: u64) -> Option<f64> {
    system["fma_peak"].as_array()?.iter().find_map(|p| {
        (p["tier"] == tier && p["threads"].as_u64() == Some(threads))
            .then(|| p["gflops"].as_f64())
            .flatten()
    })
}

/// FLOPs of one DTML training step at a size of [`STEP_SIZES`]: two V-Nets
/// forward and backward over the whole batch (convolutions, as PyTorch's
/// FlopCounterMode counts them; `dtml_model::flops`).
pub(crate) fn step_flops(size: &str) -> f64 {
    let Some(&(_, width, nl, nu, patch)) = STEP_SIZES.iter().find(|s| s.0 == size) else {
        return f64::NAN;
    };
    let xyz: Vec<usize> = patch.split(',').filter_map(|v| v.parse().ok()).collect();
    let config = dtml_model::VNetConfig {
        width,
        ..Default::default()
    };
    let (_, both) = dtml_model::flops::vnet_flops(&config, [xyz[2], xyz[1], xyz[0]], nl + nu);
    2.0 * both as f64
}

/// The `dtml train` flags of one of [`STEP_SIZES`].
pub(crate) fn step_size_args(width: usize, nl: usize, nu: usize, patch: &str) -> Vec<String> {
    [
        "--patch",
        patch,
        "--width",
        &width.to_string(),
        "--labelled-batch",
        &nl.to_string(),
        "--unlabelled-batch",
        &nu.to_string(),
    ]
    .map(String::from)
    .to_vec()
}

/// Median wall time of a run's iterations from its log (the first, which
/// warms up, left out).
pub(crate) fn median_iteration_seconds(run: &Path) -> f64 {
    let log = std::fs::read_to_string(run.join("log.jsonl")).unwrap_or_default();
    let mut secs: Vec<f64> = log
        .lines()
        .filter_map(|l| json_number(l, "seconds"))
        .skip(1)
        .collect();
    secs.sort_by(f64::total_cmp);
    secs.get(secs.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Iterations per second of the release `dtml train` binary on generated
/// data at the demo and the paper configuration (batch 2 at the paper
/// size), beside the PyTorch step peer.
pub(crate) fn bench_train(quick: bool) -> Result<()> {
    prepare(Path::new("target/dtml-bench"))?;
    let dtml = root().join("target/release/dtml");
    let data = root().join("target/dtml-bench/prepared");
    let python = torch_python();
    for (size, width, nl, nu, patch) in STEP_SIZES {
        if quick && size == "paper" {
            continue;
        }
        let iterations = if quick {
            2
        } else if size == "paper" {
            4
        } else {
            12
        };
        let out = root().join(format!("target/dtml-bench/run-{size}"));
        let _ = std::fs::remove_dir_all(&out);
        let start = std::time::Instant::now();
        run(Command::new(&dtml)
            .args(["train", "--data"])
            .arg(&data)
            .arg("--out")
            .arg(&out)
            .args(step_size_args(width, nl, nu, patch))
            .args(["--iterations", &iterations.to_string()]))?;
        let total = start.elapsed().as_secs_f64();
        let median = median_iteration_seconds(&out);
        println!(
            "dtml train, {size} (width {width}, batch {}, patch {patch}): {iterations} iterations in {total:.1} s, median iteration {median:.3} s = {:.3} it/s",
            nl + nu,
            1.0 / median
        );
        if let Some(py) = &python {
            let theirs = last_line(
                Command::new(py)
                    .arg(root().join("bench/dtml_step_peer.py"))
                    .args(["--size", size])
                    .args(if quick {
                        &["--steps", "1", "--warmup", "0"][..]
                    } else {
                        &[][..]
                    }),
            )?;
            println!("{theirs}");
            if let Some(b) = json_number(&theirs, "median_s") {
                println!(
                    "  PyTorch step: {b:.3} s = {:.3} it/s; dtml / PyTorch = {:.2}",
                    1.0 / b,
                    median / b
                );
            }
        }
    }
    Ok(())
}

/// Trainable parameters in a run's exported students (the values a
/// data-parallel step all-reduces), from the safetensors headers.
pub(crate) fn trained_parameters(run: &Path) -> Result<u64> {
    let mut total = 0u64;
    for file in ["student_a.safetensors", "student_b.safetensors"] {
        let path = run.join(file);
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let n = u64::from_le_bytes(bytes[..8].try_into()?) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n])?;
        for (name, t) in header.as_object().into_iter().flatten() {
            if name.contains("running_")
                || name.contains("num_batches_tracked")
                || name == "__metadata__"
            {
                continue;
            }
            total += t["shape"]
                .as_array()
                .map_or(0, |s| s.iter().filter_map(|d| d.as_u64()).product());
        }
    }
    Ok(total)
}

/// One process with 2 threads against 2 MPI ranks with 1 thread each, at
/// the demo and the paper size: samples per second (each rank trains on
/// the per-rank batch, so 2 ranks see twice the samples per step) and the
/// bytes all-reduced per step.
pub(crate) fn bench_scale(quick: bool) -> Result<()> {
    prepare(Path::new("target/dtml-bench"))?;
    run(cargo().args(["build", "--release", "-p", "dtml-cli", "--features", "mpi"]))?;
    let dtml = root().join("target/release/dtml");
    let data = root().join("target/dtml-bench/prepared");
    for (size, width, nl, nu, patch) in STEP_SIZES {
        if quick && size == "paper" {
            continue;
        }
        let iterations = match (quick, size) {
            (true, _) => 2,
            (false, "paper") => 4,
            _ => 12,
        };
        let mut per_second = Vec::new();
        for ranks in [1usize, 2] {
            let out = root().join(format!("target/dtml-bench/scale-{size}-{ranks}"));
            let _ = std::fs::remove_dir_all(&out);
            let threads = (2 / ranks).to_string();
            let mut cmd = if ranks == 1 {
                Command::new(&dtml)
            } else {
                let mut c = Command::new("mpirun");
                c.args(["-np", "2", "--oversubscribe", "--allow-run-as-root"])
                    .arg(&dtml);
                c
            };
            run(cmd
                .args(["train", "--data"])
                .arg(&data)
                .arg("--out")
                .arg(&out)
                .args(step_size_args(width, nl, nu, patch))
                .args([
                    "--iterations",
                    &iterations.to_string(),
                    "--threads",
                    &threads,
                ])
                .env("DTML_LOG", "warn"))?;
            let median = median_iteration_seconds(&out);
            let samples = (ranks * (nl + nu)) as f64 / median;
            let bytes = 4 * trained_parameters(&out)?;
            let line = serde_json::json!({
                "size": size,
                "processes": ranks,
                "threads_each": 2 / ranks,
                "median_step_s": (median * 1e4).round() / 1e4,
                "samples_per_s": (samples * 1e3).round() / 1e3,
                "allreduce_bytes_per_step": if ranks > 1 { bytes } else { 0 },
            });
            println!("{line}");
            per_second.push(samples);
        }
        println!(
            "{size}: 2 MPI ranks x 1 thread / 1 process x 2 threads = {:.2}x the samples per second",
            per_second[1] / per_second[0]
        );
    }
    Ok(())
}

pub(crate) fn bench(what: &str, quick: bool, tiers: &[String]) -> Result<()> {
    if matches!(what, "infer" | "all") {
        bench_infer(quick)?;
    }
    if matches!(what, "model" | "all") {
        bench_model(quick, tiers)?;
    }
    if matches!(what, "train" | "all") {
        bench_train(quick)?;
    }
    if matches!(what, "scale" | "all") {
        bench_scale(quick)?;
    }
    if matches!(what, "data" | "all") {
        crate::bench_data::bench_data(quick)?;
    }
    if matches!(what, "edt" | "all") {
        run(cargo().args(["bench", "-p", "dtml-edt"]))?;
        let peers = root().join("crates/dtml-edt/bench/peers.py");
        let python = root().join("target/pyenv/bin/python");
        if peers.exists() && python.exists() {
            run(Command::new(&python).arg(&peers))?;
        } else {
            eprintln!(
                "Python peers not run: need {} and target/pyenv (cargo xtask test creates it; pip install edt SimpleITK for all peers)",
                peers.display()
            );
        }
    }
    if matches!(what, "python" | "all") {
        bench_python(quick)?;
    }
    Ok(())
}

/// The dtml wheel against the Python packages for distances and metrics
/// (`crates/dtml-py/bench/python_peers.py`), in one process: builds the
/// wheel into the test venv as `cargo xtask test` does and installs the
/// pinned peers beside it.
fn bench_python(quick: bool) -> Result<()> {
    let python = crate::python_env(&root().join("xtask/requirements-test.txt"))?;
    run(crate::pip_install(&python)
        .arg("-r")
        .arg(root().join("xtask/requirements-bench-python.txt")))?;
    crate::checks::install_wheel(&python)?;
    let reps = if quick { "3" } else { "15" };
    run(Command::new(&python)
        .arg(root().join("crates/dtml-py/bench/python_peers.py"))
        .args(["--reps", reps])
        .current_dir(std::env::temp_dir()))
}
