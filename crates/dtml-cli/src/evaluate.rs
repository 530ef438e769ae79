//! `dtml evaluate`: predict the test cases of a prepared folder or a
//! dataset folder and score them on their original grids.

use crate::args::int_list;
use crate::model_args::ModelArgs;
use crate::progress::bar;
use anyhow::{Context, Result};
use dtml_edt::{EmptyScoring, Units};
use dtml_infer::evaluate::{DatasetChoices, EvaluationJob, TestSet, run_evaluation};
use dtml_infer::masks::Scoring;
use dtml_infer::shard::{Record, Shard};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A prepared folder (manifest.json: its test cases), or a dataset
    /// folder (Decathlon / nnU-Net with labelsTs, or LA with test.list).
    #[arg(long)]
    data: PathBuf,
    /// Output folder: predicted masks, metrics.csv and metrics.json.
    #[arg(long)]
    out: PathBuf,
    /// Distances in voxels (as published tables) instead of mm.
    #[arg(long, help_heading = "Scoring")]
    voxels: bool,
    /// Score an empty prediction as (0, 0, 0, 0) like the reference script
    /// (by default it is counted and left out of the distance means).
    #[arg(long, help_heading = "Scoring")]
    reference_scoring: bool,
    /// Also the surface Dice at this tolerance (mm, or voxels with
    /// --voxels), as `dtml metrics --surface-dice`.
    #[arg(long, value_name = "TOLERANCE", help_heading = "Scoring")]
    surface_dice: Option<f64>,
    /// Foreground label value(s) of a dataset folder's labels [default: the
    /// run's, else 1; 255 for LA]. A prepared folder uses its manifest's.
    #[arg(long, value_parser = int_list, help_heading = "Dataset folders")]
    foreground: Option<::std::vec::Vec<i64>>,
    /// File listing the test case ids of a dataset folder (instead of
    /// imagesTs / test.list).
    #[arg(long, help_heading = "Dataset folders")]
    test_list: Option<PathBuf>,
    /// Image channel of a multi-channel dataset folder [default: the
    /// channel the run trained on, else 0].
    #[arg(long, help_heading = "Dataset folders")]
    channel: Option<usize>,
    /// Predict only part K of N of the test cases (sorted by id, round
    /// robin), e.g. 2/8 [default: from a Slurm job array, else all]; masks
    /// already in --out from the same model and settings are kept. The
    /// shard that finds every mask present writes metrics.csv/json for all
    /// cases; the others write metrics-shard-K-of-N.*.
    #[arg(long, help_heading = "Cohorts and resumption")]
    shard: Option<Shard>,
    /// Redo every case even if --out holds finished ones; if --out holds
    /// the outputs of another model or settings, remove them first (without
    /// it, such a folder is refused).
    #[arg(long, help_heading = "Cohorts and resumption")]
    overwrite: bool,
}

pub fn run(a: EvaluateArgs) -> Result<()> {
    let units = if a.voxels {
        Units::Voxels
    } else {
        Units::Millimetres
    };
    let scoring = if a.reference_scoring {
        EmptyScoring::Reference
    } else {
        EmptyScoring::Exclude
    };
    let choices = DatasetChoices {
        foreground: a.foreground.clone(),
        test_list: a.test_list.clone(),
        channel: a.channel,
    };
    choices.check_for(&a.data)?;
    let (loaded, opts) = a.model.load(false)?;
    // A cache is locked before it is read, and read unchanged to the end.
    let _cache_lock = dtml_volume::output::lock_input(&a.data)?;
    let set = TestSet::open(&a.data, &choices, loaded.run.as_ref())?;
    let shard = Shard::resolve(a.shard)?;
    let mut settings = opts.describe();
    settings["units"] = serde_json::json!(units);
    settings["reference_scoring"] = serde_json::json!(scoring == EmptyScoring::Reference);
    settings["foreground"] = serde_json::json!(a.foreground);
    settings["test_list"] = serde_json::json!(a.test_list);
    settings["channel"] = serde_json::json!(a.channel);
    let record = Record::new("evaluate", a.model.paths(), &a.data, settings);
    // A cache's labels are read from the dataset it was prepared from.
    let source = match &set {
        TestSet::Prepared(p) => Some(p.manifest.dataset.as_path()),
        _ => None,
    };
    let inputs: Vec<&std::path::Path> = std::iter::once(a.data.as_path())
        .chain(source)
        .chain(a.model.paths().iter().map(|p| p.as_path()))
        .chain(a.test_list.as_deref())
        .collect();
    let claim = record
        .claim(&a.out, shard, a.overwrite, &inputs)
        .with_context(|| format!("--out {}", a.out.display()))?;
    let keep = claim.keep;
    let job = EvaluationJob {
        students: &loaded.students(),
        set: &set,
        opts: &opts,
        scoring: Scoring {
            units,
            surface_dice: a.surface_dice,
        },
        empty_scoring: scoring,
        out: &a.out,
        about: serde_json::json!({
            "model": a.model.paths().iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "data": a.data.display().to_string(),
        }),
        shard,
        keep,
    };
    let pb = bar(shard.select(0..set.len()).len(), "evaluating");
    let done = run_evaluation(&job, &mut |_| pb.inc(1))
        .with_context(|| format!("evaluating {} into {}", a.data.display(), a.out.display()))?;
    pb.finish_and_clear();
    println!("{}", done.report.table());
    let stem = dtml_infer::outputs::metrics_stem(done.complete, shard.index, shard.count);
    let written = if done.complete {
        format!("{stem}.csv and {stem}.json (all cases)")
    } else {
        format!("{stem}.* (this shard; the last shard to finish writes the merged table)")
    };
    tracing::info!(
        "{} case(s) scored ({:.1} s of inference); masks and {written} in {}",
        done.report.rows.len(),
        done.inference_seconds,
        a.out.display()
    );
    Ok(())
}
