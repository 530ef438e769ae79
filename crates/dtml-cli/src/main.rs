//! `dtml`: the command-line front end. It parses flags, sets up logging and
//! progress bars, and dispatches to the library crates; no logic lives here.

mod args;
mod distance;
mod evaluate;
mod generate;
mod info;
mod metrics;
mod model_args;
mod predict;
mod prepare;
mod progress;
mod train;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Semi-supervised 3D medical image segmentation by Dual-Task Mutual
/// Learning: prepare scans of which few are labelled, train the two
/// students, predict masks and score them.
#[derive(Parser)]
#[command(name = "dtml", version, propagate_version = true)]
struct Cli {
    /// Log level filter (error, warn, info, debug, trace) or a tracing directive.
    #[arg(long, global = true, default_value = "info", env = "DTML_LOG")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the built-in synthetic dataset (Decathlon layout).
    Generate(generate::GenerateArgs),
    /// Prepare a dataset (Decathlon, nnU-Net v2 or LA layout) into a training cache.
    Prepare(prepare::PrepareArgs),
    /// Print a volume's shape, type, spacing and affine (--system: the CPU, kernel tier and threads).
    Info(info::InfoArgs),
    /// Distance map (plain, signed or normalised SDM) of a mask, as NIfTI.
    Distance(distance::DistanceArgs),
    /// Dice, Jaccard, hd95, ASD and ASSD of predictions against references.
    Metrics(metrics::MetricsArgs),
    /// Segment scans with trained students (a run directory or V-Net weights).
    Predict(predict::PredictArgs),
    /// Predict the test cases of a prepared or dataset folder and score them.
    Evaluate(evaluate::EvaluateArgs),
    /// Train students on a prepared dataset (no dataset: the whole demo job).
    Train(Box<train::TrainArgs>),
}

/// Fixes the CPU worker count for our kernels (rayon) and candle's matrix
/// products (which read `RAYON_NUM_THREADS`). Call before any work starts.
pub fn set_threads(n: usize) -> anyhow::Result<()> {
    anyhow::ensure!(n > 0, "--threads must be at least 1");
    // SAFETY: called on the main thread before any other thread exists
    // (the subcommand has not started work yet), so nothing reads the
    // environment concurrently.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| anyhow::anyhow!("--threads {n}: {e}"))
}

fn main() -> std::process::ExitCode {
    // SAFETY: first statement of main; no other thread exists yet.
    unsafe { dtml_model::runtime::prepare_process() };
    // `train`'s help shows each hyper-parameter's default, read from
    // `TrainConfig::default()` (the one place the paper's recipe lives).
    let cli = match Cli::from_arg_matches(
        &Cli::command()
            .mut_subcommand("train", dtml_train::config::document_defaults)
            .get_matches(),
    ) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // In a data-parallel job rank 0 alone reports; the other ranks say
    // only what goes wrong.
    let rank = dtml_train::collective::launcher_rank();
    let level = if rank == 0 { cli.log.as_str() } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    // A DTML_CPU naming a tier this CPU lacks is an error before any work.
    if let Err(e) = dtml_model::simd::init() {
        eprintln!("error: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Generate(a) => generate::run(a),
        Command::Prepare(a) => prepare::run(a),
        Command::Info(a) => info::run(a),
        Command::Distance(a) => distance::run(a),
        Command::Metrics(a) => metrics::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Evaluate(a) => evaluate::run(a),
        Command::Train(a) => train::run(*a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
