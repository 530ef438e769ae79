//! `cargo xtask`: project chores that are not the product: the test suite
//! with its Python peers, the demo data, and side-by-side benchmarks.

mod bench;
mod bench_data;
mod checks;
mod graph;
mod study;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the Python peers into target/pyenv and run every test, fmt and
    /// clippy; compile-check aarch64 (NEON tier) and the CUDA path.
    Test {
        /// Skip `cargo fmt --check` and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Skip the compile check of the CUDA/cuDNN code.
        #[arg(long)]
        no_cuda_check: bool,
    },
    /// Generate the built-in synthetic dataset and prepare it (the main job so far).
    Prepare {
        /// Working folder.
        #[arg(long, default_value = "target/dtml-demo")]
        out: PathBuf,
    },
    /// Methods side by side on one cache (the hard synthetic data, 20 %
    /// labelled, or --prepared), several seeds, with the all-labelled bound and
    /// the PyTorch reference trained on the same cache: Dice, Jaccard, HD95,
    /// ASD, paired differences, times, a picture (long; not part of the tests).
    Study {
        #[arg(long, default_value = "target/study")]
        out: PathBuf,
        /// Training iterations per run.
        #[arg(long, default_value_t = 600)]
        iterations: usize,
        /// Seeds, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
        seeds: Vec<u64>,
        /// Methods dtml trains, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "supervised,dtml")]
        methods: Vec<String>,
        /// Difficulty of the synthetic data, 0 to 1 (`dtml generate --difficulty`).
        #[arg(long, default_value_t = 1.0)]
        difficulty: f64,
        /// Methods the PyTorch reference (bench/torch_reference.py) also trains,
        /// comma-separated; '' for none.
        #[arg(long, value_delimiter = ',', default_value = "supervised,dtml")]
        reference: Vec<String>,
        /// A prepared cache of your own data (`dtml prepare`) in place of the
        /// built-in data; its test cases score every run.
        #[arg(long)]
        prepared: Option<PathBuf>,
        /// The same data prepared with every training case labelled, for the
        /// all-labelled bound row (with --prepared).
        #[arg(long, requires = "prepared")]
        prepared_all: Option<PathBuf>,
        /// Training patch x,y,z of every run (multiples of 16; your scans may want 112,112,80).
        #[arg(long, default_value = study::DEFAULT_PATCH)]
        patch: String,
        /// V-Net width of every run (16 in the paper).
        #[arg(long, default_value_t = study::DEFAULT_WIDTH)]
        width: usize,
        /// Keep each finished run's scores and step times in this folder
        /// (in the repository, a few kB a run) and reuse the runs found
        /// there: a study continues on another machine.
        #[arg(long)]
        record: Option<PathBuf>,
    },
    /// Print each crate's workspace dependencies and module import graph;
    /// fail on import circles (also run by `test`).
    Graph,
    /// Run benchmarks side by side with Python peers when installed.
    Bench {
        /// What to measure.
        #[arg(value_parser = ["edt", "infer", "model", "train", "scale", "data", "python", "all"], default_value = "all")]
        what: String,
        /// Tiny sizes (a smoke test of the bench itself, not a measurement).
        #[arg(long)]
        quick: bool,
        /// Kernel tiers `model` runs (comma-separated; default: every tier
        /// this CPU supports), PyTorch forced to the same level each time.
        #[arg(long, value_delimiter = ',')]
        tiers: Vec<String>,
    },
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Creates (or refreshes) the test venv when the requirements changed.
fn python_env(requirements: &Path) -> Result<PathBuf> {
    let venv = root().join("target/pyenv");
    let python = venv.join("bin/python");
    let wanted = std::fs::read_to_string(requirements)
        .with_context(|| requirements.display().to_string())?;
    let stamp = venv.join("dtml-requirements.txt");
    if python.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(python);
    }
    if !python.exists() {
        let host = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        run(Command::new(host).args(["-m", "venv"]).arg(&venv))?;
    }
    run(pip_install(&python).arg("-r").arg(requirements))?;
    std::fs::write(&stamp, wanted)?;
    Ok(python)
}

/// `python -m pip install`, quietly; the caller adds what to install.
fn pip_install(python: &Path) -> Command {
    let mut pip = Command::new(python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]);
    pip
}

/// One row of the per-tier table: what, dtml seconds, PyTorch seconds,
/// the task's FLOPs.
type TierRow = (String, Option<f64>, Option<f64>, f64);

fn main() -> Result<()> {
    match Cli::parse().command {
        Task::Test {
            no_lint,
            no_cuda_check,
        } => {
            checks::test(no_lint)?;
            checks::arm_check()?;
            if no_cuda_check {
                Ok(())
            } else {
                checks::cuda_check()
            }
        }
        Task::Prepare { out } => bench::prepare(&out),
        Task::Graph => graph::run(&root()),
        Task::Study {
            out,
            iterations,
            seeds,
            methods,
            difficulty,
            reference,
            prepared,
            prepared_all,
            patch,
            width,
            record,
        } => study::study(&study::Study {
            out,
            iterations,
            seeds,
            methods,
            difficulty,
            reference: reference.into_iter().filter(|m| !m.is_empty()).collect(),
            prepared,
            prepared_all,
            patch,
            width,
            record,
        }),
        Task::Bench { what, quick, tiers } => bench::bench(&what, quick, &tiers),
    }
}

#[cfg(test)]
mod tests {
    use crate::bench::json_number;

    #[test]
    fn reads_numbers_from_bench_lines() {
        let line = r#"{"impl": "dtml", "seconds": 12.5, "windows": 27}"#;
        assert_eq!(json_number(line, "seconds"), Some(12.5));
        assert_eq!(json_number(line, "windows"), Some(27.0));
        assert_eq!(json_number(line, "threads"), None);
    }

    #[test]
    fn step_flops_are_the_issues_counts() {
        // PyTorch's FlopCounterMode: 35.5 GFLOP (demo), 959 GFLOP (paper).
        assert_eq!((crate::bench::step_flops("demo") / 1e8).floor(), 355.0);
        assert_eq!((crate::bench::step_flops("paper") / 1e9).floor(), 959.0);
        let peak = serde_json::json!({"fma_peak": [
            {"tier": "avx2", "threads": 1, "gflops": 50.0},
            {"tier": "avx2", "threads": 2, "gflops": 99.0},
        ]});
        assert_eq!(crate::bench::tier_peak(&peak, "avx2", 2), Some(99.0));
        assert_eq!(crate::bench::tier_peak(&peak, "avx512", 2), None);
    }
}
