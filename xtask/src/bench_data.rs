//! `cargo xtask bench data`: the data path at cohort scale. Prepare speed
//! (cases per second, and a second prepare that reuses every case), the
//! iteration time of `dtml train` with every case read from the cache per
//! patch against every case in memory (demo and paper size), and the peak
//! resident set of training against the cache's size, with the default
//! data budget and with a fixed one, and of `dtml predict` over every scan
//! of the cohort.

use crate::bench::{
    STEP_SIZES, json_strings, median_iteration_seconds, step_size_args, system_info,
};
use crate::*;

/// Runs `cmd` to completion; its peak resident set in bytes (Linux).
#[cfg(target_os = "linux")]
fn peak_rss(cmd: &mut Command) -> Result<u64> {
    eprintln!("$ {cmd:?}");
    let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let mut status = 0;
    // SAFETY: plain C structs the kernel fills for our own child, which
    // wait4 also reaps.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    if pid != child.id() as i32 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{cmd:?} failed (wait status {status})");
    }
    Ok(usage.ru_maxrss as u64 * 1024)
}

#[cfg(not(target_os = "linux"))]
fn peak_rss(cmd: &mut Command) -> Result<u64> {
    run(cmd)?;
    bail!("peak RSS is measured on Linux only")
}

/// Generates `cases` training scans of `shape` into `dir/data` and times
/// their preparation into `dir/prepared` (20 % labelled, whole volumes):
/// seconds of the first prepare and of a second one that reuses them.
fn cohort(dtml: &Path, dir: &Path, shape: &str, cases: usize) -> Result<(f64, f64)> {
    let _ = std::fs::remove_dir_all(dir);
    let data = dir.join("data");
    run(Command::new(dtml)
        .args([
            "generate",
            "--shape",
            shape,
            "--test-cases",
            "0",
            "--train-cases",
        ])
        .arg(cases.to_string())
        .arg("--out")
        .arg(&data))?;
    let timed = || -> Result<f64> {
        let start = std::time::Instant::now();
        run(Command::new(dtml)
            .args(["prepare", "--data"])
            .arg(&data)
            .arg("--out")
            .arg(dir.join("prepared"))
            .args([
                "--labelled-fraction",
                "0.2",
                "--patch",
                "48,48,32",
                "--margin",
                "full,full,full",
            ])
            .env("DTML_LOG", "warn"))?;
        Ok(start.elapsed().as_secs_f64())
    };
    Ok((timed()?, timed()?))
}

/// Bytes of a cache's case files.
fn cache_bytes(prepared: &Path) -> u64 {
    std::fs::read_dir(prepared.join("cases"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// `dtml train` on `prepared` for `iterations` at one of [`STEP_SIZES`]
/// with `extra` flags: the median iteration time and the peak RSS.
fn train(
    dtml: &Path,
    prepared: &Path,
    out: &Path,
    size: (usize, usize, usize, &str),
    iterations: usize,
    extra: &[&str],
) -> Result<(f64, u64)> {
    let _ = std::fs::remove_dir_all(out);
    let (width, nl, nu, patch) = size;
    let peak = peak_rss(
        Command::new(dtml)
            .args(["train", "--data"])
            .arg(prepared)
            .arg("--out")
            .arg(out)
            .args(step_size_args(width, nl, nu, patch))
            .args(["--iterations", &iterations.to_string()])
            .args(["--checkpoint-every", "0"])
            .args(extra)
            .env("DTML_LOG", "warn"),
    )?;
    Ok((median_iteration_seconds(out), peak))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

pub(crate) fn bench_data(quick: bool) -> Result<()> {
    run(cargo().args(["build", "--release", "-p", "dtml-cli", "--bin", "dtml"]))?;
    let dtml = root().join("target/release/dtml");
    let system = system_info(&dtml)?;
    println!(
        "CPU: {} ({}); kernel tier {}; {} threads",
        system["cpu"].as_str().unwrap_or("?"),
        json_strings(&system["features"]).join(" "),
        system["kernel_tier"].as_str().unwrap_or("?"),
        system["threads"]
    );
    // Its own folder: `prepare` generates the synthetic data into
    // `target/dtml-bench/data`, which `generate` refuses once it holds
    // anything else.
    let base = root().join("target/dtml-bench/cohorts");

    // The loader against the step: cases of 128x128x96 (6 MiB of f32, a
    // cropped CT or MR scan) hold a paper-size patch.
    let cases = if quick { 3 } else { 16 };
    let dir = base.join("loader");
    let (first, again) = cohort(&dtml, &dir, "128,128,96", cases)?;
    let prepared = dir.join("prepared");
    println!(
        "prepare: {cases} cases of 128x128x96 ({:.0} MiB cached) in {first:.2} s = {:.1} cases/s; again with every case reused: {again:.2} s",
        mib(cache_bytes(&prepared)),
        cases as f64 / first
    );
    for (size, width, nl, nu, patch) in STEP_SIZES {
        if quick && size == "paper" {
            continue;
        }
        let iterations = match (quick, size) {
            (true, _) => 2,
            (false, "paper") => 5,
            _ => 13,
        };
        let shape = (width, nl, nu, patch);
        let out = |mode: &str| base.join(format!("run-{size}-{mode}"));
        let (memory, _) = train(
            &dtml,
            &prepared,
            &out("memory"),
            shape,
            iterations,
            &["--data-memory", "1000000"],
        )?;
        let (disk, _) = train(
            &dtml,
            &prepared,
            &out("disk"),
            shape,
            iterations,
            &["--data-memory", "0"],
        )?;
        println!(
            "train {size} (width {width}, batch {}, patch {patch}): median iteration {memory:.3} s with every case in memory, {disk:.3} s with every case read per patch: {:+.1} %",
            nl + nu,
            (disk / memory - 1.0) * 100.0
        );
    }

    // Peak RSS against the cache's size: the demo step on caches of 4 to
    // 96 cases of 96x96x64, with the default budget and with 64 MiB.
    let (width, nl, nu, patch) = (
        STEP_SIZES[0].1,
        STEP_SIZES[0].2,
        STEP_SIZES[0].3,
        STEP_SIZES[0].4,
    );
    let counts: &[usize] = if quick { &[4] } else { &[4, 24, 96] };
    println!(
        "| cases | cache (MiB) | train peak RSS, default budget (MiB) | train peak RSS, --data-memory 64 (MiB) | predict every scan, peak RSS (MiB) |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for &n in counts {
        let dir = base.join(format!("rss-{n}"));
        cohort(&dtml, &dir, "96,96,64", n)?;
        let prepared = dir.join("prepared");
        let iterations = if quick { 2 } else { 5 };
        let shape = (width, nl, nu, patch);
        let (_, default) = train(
            &dtml,
            &prepared,
            &dir.join("run-default"),
            shape,
            iterations,
            &[],
        )?;
        let (_, budget) = train(
            &dtml,
            &prepared,
            &dir.join("run-64"),
            shape,
            iterations,
            &["--data-memory", "64"],
        )?;
        // Inference over the whole cohort: one scan at a time.
        let masks = dir.join("masks");
        let _ = std::fs::remove_dir_all(&masks);
        let predict = peak_rss(
            Command::new(&dtml)
                .args(["predict", "--model"])
                .arg(dir.join("run-64"))
                .arg("--input")
                .arg(dir.join("data/imagesTr"))
                .arg("--out")
                .arg(&masks)
                .env("DTML_LOG", "warn"),
        )?;
        println!(
            "| {n} | {:.0} | {:.0} | {:.0} | {:.0} |",
            mib(cache_bytes(&prepared)),
            mib(default),
            mib(budget),
            mib(predict)
        );
    }
    Ok(())
}
