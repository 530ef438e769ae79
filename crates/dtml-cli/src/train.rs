//! `dtml train`: a prepared dataset in, a run directory of trained students
//! out; with no dataset, the whole demo job on the built-in synthetic data.

use crate::args::triple;
use anyhow::{Context, Result, bail};
use dtml_train::config::{DiceName, SdmLossName};
use dtml_train::{Event, Method, TrainConfig, TrainRequest};
use dtml_volume::PreparedDataset;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
// `--lr -1` is a value to refuse with a reason, not an unknown flag.
#[command(allow_negative_numbers = true)]
pub struct TrainArgs {
    /// Prepared dataset (from `dtml prepare`). Without it, dtml generates and
    /// prepares its synthetic data under --out, trains a small configuration
    /// and evaluates it.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Run directory: checkpoints, log, exported students.
    #[arg(long, default_value = "dtml-run")]
    out: PathBuf,
    /// Objective: dtml (the paper), dtml-released, dtc, supervised.
    #[arg(long, value_parser = parse_method)]
    method: Option<Method>,
    /// TOML file of hyper-parameters (keys as in `TrainConfig`); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// cpu or cuda (GPU 0; needs a build with --features cuda).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Continue the run in --out from its last checkpoint, exactly.
    #[arg(long)]
    resume: bool,
    #[arg(long)]
    iterations: Option<usize>,
    #[arg(long)]
    labelled_batch: Option<usize>,
    #[arg(long)]
    unlabelled_batch: Option<usize>,
    /// Patch size x,y,z (multiples of 16).
    #[arg(long, value_parser = triple::<usize>)]
    patch: Option<[usize; 3]>,
    /// Base width of the V-Nets.
    #[arg(long)]
    width: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    momentum: Option<f64>,
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Final weight of the consistency term.
    #[arg(long)]
    consistency: Option<f64>,
    /// Weight of student B's SDM regression.
    #[arg(long)]
    sdm_weight: Option<f64>,
    /// SDM regression loss: l1 or mse.
    #[arg(long, value_parser = ["l1", "mse"])]
    sdm_loss: Option<String>,
    /// Dice denominator: squared or linear.
    #[arg(long, value_parser = ["squared", "linear"])]
    dice: Option<String>,
    #[arg(long)]
    seed: Option<u64>,
    /// Checkpoint every N iterations (0: only at the end).
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Validate on the validation cases every N iterations (0: never).
    #[arg(long)]
    validate_every: Option<usize>,
    /// Sliding-window strides x,y,z of validation.
    #[arg(long, value_parser = triple::<usize>)]
    validation_stride: Option<[usize; 3]>,
    /// LR steps as fractions of the run, comma-separated (paper: 0.41667,0.83333).
    #[arg(long, value_delimiter = ',')]
    lr_steps: Option<Vec<f64>>,
    /// LR factor at each step.
    #[arg(long)]
    lr_gamma: Option<f64>,
    /// Ramp-up length of the consistency weight as a fraction of the run.
    #[arg(long)]
    rampup_fraction: Option<f64>,
    /// Channel-dropout probability of the V-Nets.
    #[arg(long)]
    dropout: Option<f64>,
    /// k of the SDM-to-mask transform sigmoid(-k d).
    #[arg(long)]
    sharpness: Option<f64>,
    /// Weight of DTC's SDM MSE.
    #[arg(long)]
    dtc_beta: Option<f64>,
    /// Worker threads for the CPU [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
}

fn parse_method(s: &str) -> Result<Method, String> {
    Method::parse(s).ok_or_else(|| {
        let names: Vec<_> = Method::ALL.iter().map(|m| m.name()).collect();
        format!("unknown method {s:?}; one of {}", names.join(", "))
    })
}

/// The small configuration of the demo job: a few minutes on 2 cores.
pub fn demo_config() -> TrainConfig {
    TrainConfig {
        iterations: 150,
        patch: [48, 48, 32],
        width: 8,
        checkpoint_every: 50,
        ..TrainConfig::default()
    }
}

fn build_config(a: &TrainArgs, base: TrainConfig) -> Result<TrainConfig> {
    let mut c = match &a.config {
        Some(p) => TrainConfig::from_toml_file(p)?,
        None => base,
    };
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = a.$f.clone() { c.$f = v; } )* };
    }
    set!(
        method,
        iterations,
        labelled_batch,
        unlabelled_batch,
        patch,
        width,
        lr,
        momentum,
        weight_decay,
        consistency,
        sdm_weight,
        seed,
        checkpoint_every,
        validate_every,
        validation_stride,
        lr_steps,
        lr_gamma,
        rampup_fraction,
        dropout,
        sharpness,
        dtc_beta
    );
    if a.threads.is_some() {
        c.threads = a.threads;
    }
    if let Some(s) = &a.sdm_loss {
        c.sdm_loss = if s == "mse" {
            SdmLossName::Mse
        } else {
            SdmLossName::L1
        };
    }
    if let Some(s) = &a.dice {
        c.dice = if s == "linear" {
            DiceName::Linear
        } else {
            DiceName::Squared
        };
    }
    c.validate()?;
    Ok(c)
}

pub fn run(a: TrainArgs) -> Result<()> {
    // `threads` is a flag and a TOML key (the flag wins); set before any
    // parallel work, the demo data included.
    let threads = match (a.threads, &a.config) {
        (Some(n), _) => Some(n),
        (None, Some(p)) => TrainConfig::from_toml_file(p)?.threads,
        (None, None) => None,
    };
    if let Some(n) = threads {
        crate::set_threads(n)?;
    }
    let device = dtml_train::students::select_device(&a.device)?;
    let demo = a.data.is_none();
    let (data_dir, base) = match &a.data {
        Some(d) => (d.clone(), TrainConfig::default()),
        None => (prepare_demo_data(&a.out, a.resume)?, demo_config()),
    };
    // A resume starts from the run's own settings; flags that change them
    // are refused by the trainer.
    let run_dir = if demo {
        a.out.join("run")
    } else {
        a.out.clone()
    };
    let base = match (a.resume, dtml_train::checkpoint::state_of_run(&run_dir)?) {
        (true, Some(state)) => state.config,
        _ => base,
    };
    let config = build_config(&a, base)?;
    let data = PreparedDataset::open(&data_dir)
        .with_context(|| format!("opening the prepared dataset {}", data_dir.display()))?;
    let outcome = train_with_progress(&data, &run_dir, config, device.clone(), a.resume)?;
    if let Some(last) = &outcome.last {
        tracing::info!(
            "trained {} iterations ({}), last loss {:.4}; students in {}",
            last.iteration,
            outcome.run.method,
            last.loss,
            run_dir.display()
        );
    }
    if demo {
        evaluate_demo(&run_dir, &data_dir, &a.out.join("evaluation"), &a.device)?;
    }
    Ok(())
}

/// Runs `dtml evaluate` on the demo's test cases, table on screen.
fn evaluate_demo(run: &Path, data: &Path, out: &Path, device: &str) -> Result<()> {
    #[derive(clap::Parser)]
    struct Evaluate {
        #[command(flatten)]
        args: crate::evaluate::EvaluateArgs,
    }
    let argv: Vec<std::ffi::OsString> = vec![
        "evaluate".into(),
        "--model".into(),
        run.into(),
        "--data".into(),
        data.into(),
        "--out".into(),
        out.into(),
        "--device".into(),
        device.split(':').next().unwrap_or("cpu").into(),
    ];
    let parsed = <Evaluate as clap::Parser>::try_parse_from(argv)?;
    tracing::info!("evaluating the trained students on the test cases");
    crate::evaluate::run(parsed.args)
}

/// Difficulty of the demo's synthetic data (`dtml generate --difficulty`).
pub const DEMO_DIFFICULTY: f64 = 1.0;

/// Generates and prepares the synthetic data under `out` unless a previous
/// demo run already did.
fn prepare_demo_data(out: &Path, resume: bool) -> Result<PathBuf> {
    let raw = out.join("data");
    let prepared = out.join("prepared");
    if prepared.join("manifest.json").is_file() {
        tracing::info!("using the prepared demo data in {}", prepared.display());
        return Ok(prepared);
    }
    if resume {
        bail!("--resume: no prepared demo data in {}", out.display());
    }
    // The hard, LA-like mode: at difficulty 0 a few labelled cases already
    // come close to the all-labelled result, so the methods look alike.
    let config = dtml_volume::synthetic::SyntheticConfig {
        difficulty: DEMO_DIFFICULTY,
        ..Default::default()
    };
    tracing::info!(
        "generating {} synthetic training and {} test cases into {}",
        config.train_cases,
        config.test_cases,
        raw.display()
    );
    dtml_volume::synthetic::write_dataset(&raw, &config)
        .with_context(|| format!("generating into {}", raw.display()))?;
    crate::prepare::prepare_folder(&raw, &prepared, [48, 48, 32], [Some(8), Some(8), Some(4)])?;
    Ok(prepared)
}

fn train_with_progress(
    data: &PreparedDataset,
    run_dir: &Path,
    config: TrainConfig,
    device: candle_core::Device,
    resume: bool,
) -> Result<dtml_train::TrainOutcome> {
    let pb = ProgressBar::hidden();
    pb.set_style(
        ProgressStyle::with_template("{prefix} [{bar:25}] {pos}/{len} {msg} {per_sec} eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb.set_prefix(config.method.name());
    let mut on_event = |e: Event| match e {
        Event::Started { first, iterations } => {
            pb.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            pb.set_length(iterations as u64);
            pb.set_position(first as u64);
            pb.reset_eta();
            if first > 0 {
                tracing::info!("resuming at iteration {first} of {iterations}");
            }
        }
        Event::Iteration(log) => {
            pb.set_position(log.iteration as u64);
            pb.set_message(format!("loss {:.4} lambda {:.3}", log.loss, log.lambda));
            if !pb.is_hidden() && log.iteration % 10 == 0 {
                tracing::debug!("{log:?}");
            }
        }
        Event::Validated {
            iteration,
            dice,
            best,
        } => pb.suspend(|| {
            tracing::info!(
                "iteration {iteration}: validation Dice {dice:.4}{}",
                if best { " (best so far)" } else { "" }
            )
        }),
        Event::Checkpoint { iteration } => {
            pb.suspend(|| tracing::debug!("checkpoint at iteration {iteration}"))
        }
    };
    let outcome = dtml_train::train(
        TrainRequest {
            data,
            run_dir,
            config,
            device,
            resume,
        },
        &mut on_event,
    )
    .with_context(|| format!("training into {}", run_dir.display()))?;
    pb.finish_and_clear();
    Ok(outcome)
}
