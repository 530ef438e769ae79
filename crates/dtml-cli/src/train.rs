//! `dtml train`: a prepared dataset in, a run directory of trained students
//! out; with no dataset, the whole demo job on the built-in synthetic data.

use anyhow::{Context, Result, bail};
use dtml_infer::students::DeviceKind;
use dtml_train::collective::{Collective, launched_group};
use dtml_train::config::TrainOverrides;
use dtml_train::demo::{DemoFolders, evaluate_demo, prepare_demo_data};
use dtml_train::{Event, Method, TrainConfig, TrainRequest};
use dtml_volume::{PreparedDataset, Role};
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
    /// TOML file of hyper-parameters (keys as in `TrainConfig`); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Device to train on (cuda: GPU 0, needs a build with --features cuda).
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    device: DeviceKind,
    /// Continue the run in --out from its last checkpoint, exactly (the run's
    /// own settings; flags that would change them are refused).
    #[arg(long)]
    resume: bool,

    /// Every hyper-parameter as a flag (declared once, in dtml-train).
    #[command(flatten)]
    hyper: TrainOverrides,
}

fn build_config(a: &TrainArgs, base: TrainConfig) -> Result<TrainConfig> {
    let mut c = match &a.config {
        Some(p) => TrainConfig::from_toml_file(p)?,
        None => base,
    };
    a.hyper.apply_to(&mut c);
    c.validate()?;
    Ok(c)
}

pub fn run(a: TrainArgs) -> Result<()> {
    // `threads` is a flag and a TOML key (the flag wins); set before any
    // parallel work, the demo data included.
    let threads = match (a.hyper.threads, &a.config) {
        (Some(n), _) => Some(n),
        (None, Some(p)) => TrainConfig::from_toml_file(p)?.threads,
        (None, None) => None,
    };
    if let Some(n) = threads {
        crate::set_threads(n)?;
    }
    let (group, device) = launched_group(a.device)?;
    let demo = a.data.is_none();
    if demo && group.size() > 1 {
        bail!(
            "a data-parallel job needs --data (a prepared cache every rank can read); prepare it once before `mpirun`"
        );
    }
    let folders = DemoFolders::under(&a.out);
    let (data_dir, run_dir, base) = match &a.data {
        Some(d) => (d.clone(), a.out.clone(), TrainConfig::default()),
        None => {
            prepare_demo_data(&folders, a.resume)?;
            (
                folders.prepared.clone(),
                folders.run.clone(),
                TrainConfig::demo(),
            )
        }
    };
    // A resume starts from the run's own settings; flags that change them
    // are refused by the trainer.
    let base = match (a.resume, dtml_train::checkpoint::state_of_run(&run_dir)?) {
        (true, Some(state)) => state.config,
        _ => base,
    };
    let config = build_config(&a, base)?;
    let data = PreparedDataset::open(&data_dir)
        .with_context(|| format!("opening the prepared dataset {}", data_dir.display()))?;
    let outcome = train_with_progress(
        &data,
        &run_dir,
        config.clone(),
        device.clone(),
        a.resume,
        group.as_ref(),
    )?;
    if group.rank() != 0 {
        return Ok(());
    }
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
        demo_report(&a, &folders, &data, &config, &device, group.as_ref())?;
    }
    Ok(())
}

/// The demo's end: its students scored on the test cases, then the
/// supervised baseline on the same labelled cases with the same budget
/// (unless the demo trained the supervised method itself), and the two
/// results side by side with the paper's recipe, so a newcomer can read
/// what the numbers mean.
fn demo_report(
    a: &TrainArgs,
    folders: &DemoFolders,
    data: &PreparedDataset,
    config: &TrainConfig,
    device: &candle_core::Device,
    group: &dyn Collective,
) -> Result<()> {
    tracing::info!("evaluating the trained students on the test cases");
    let done = evaluate_demo(folders, &folders.run, &folders.evaluation, device)?;
    println!("{}", done.report.table());
    tracing::info!(
        "masks, metrics.csv and metrics.json in {}",
        folders.evaluation.display()
    );
    let count = |role: Role| {
        data.manifest
            .cases
            .iter()
            .filter(|c| c.role == role)
            .count()
    };
    let (labelled, unlabelled) = (count(Role::Labelled), count(Role::Unlabelled));
    let dice = |e: &dtml_infer::evaluate::Evaluation| e.report.summary.dice.mean;
    let method = config.method;
    let mut lines = vec![format!(
        "{}: mean test Dice {:.3} over {} test cases ({labelled} labelled{} training cases)",
        method.name(),
        dice(&done),
        done.report.summary.cases,
        if dtml_train::methods::plugin(method).uses_unlabelled() {
            format!(" + {unlabelled} unlabelled")
        } else {
            String::new()
        }
    )];
    if dtml_train::methods::plugin(method).uses_unlabelled() {
        tracing::info!(
            "training the supervised baseline on the same {labelled} labelled cases, same budget, into {}",
            folders.baseline.display()
        );
        let baseline = TrainConfig {
            method: Method::Supervised,
            ..config.clone()
        };
        let resume = a.resume && dtml_train::checkpoint::state_of_run(&folders.baseline)?.is_some();
        train_with_progress(
            data,
            &folders.baseline,
            baseline,
            device.clone(),
            resume,
            group,
        )?;
        let base = evaluate_demo(
            folders,
            &folders.baseline,
            &folders.baseline_evaluation,
            device,
        )?;
        lines.push(format!(
            "supervised baseline: mean test Dice {:.3} (one V-Net on the {labelled} labelled cases only; masks in {})",
            dice(&base),
            folders.baseline_evaluation.display()
        ));
    }
    let paper = TrainConfig::default();
    lines.push(format!(
        "this demo: {} iterations, patch {}, width {}; the paper's recipe is {} iterations, patch {}, width {} (`dtml train --data PREPARED`)",
        config.iterations,
        config.patch,
        config.width,
        paper.iterations,
        paper.patch,
        paper.width
    ));
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

fn train_with_progress(
    data: &PreparedDataset,
    run_dir: &Path,
    config: TrainConfig,
    device: candle_core::Device,
    resume: bool,
    group: &dyn Collective,
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
            if group.rank() == 0 {
                pb.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            }
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
    let outcome = dtml_train::trainer::train_in_group(
        TrainRequest {
            data,
            run_dir,
            config,
            device,
            resume,
            stop: None,
        },
        group,
        &mut on_event,
    )
    .with_context(|| format!("training into {}", run_dir.display()))?;
    pb.finish_and_clear();
    Ok(outcome)
}
