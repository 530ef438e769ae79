//! The job `dtml train` runs without `--data`: the built-in synthetic data
//! in its hard, LA-like mode, prepared with the paper's labelled share, a
//! small configuration ([`TrainConfig::demo`]) and an evaluation of the
//! trained students on the test cases, all in one folder.

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use candle_core::Device;
use dtml_infer::evaluate::{Evaluation, EvaluationJob, TestSet, run_evaluation};
use dtml_volume::dataset::{self, LabelledSpec, OpenOptions};
use dtml_volume::prepare::MANIFEST;
use dtml_volume::synthetic::{SyntheticConfig, write_dataset};
use dtml_volume::{Dataset, PrepareOptions, PreparedDataset, Xyz};
use std::path::{Path, PathBuf};

/// Difficulty of the demo's synthetic data (`dtml generate --difficulty`):
/// at 0 a few labelled cases already come close to the all-labelled
/// result, so the methods would look alike; at 1 the demo's short run
/// ends far below a working segmentation (mean Dice 0.44). At 0.25, 200
/// iterations give DTML 0.898 and the supervised baseline 0.884 on the ten
/// test cases (BENCHMARKS.md, "The demo").
pub const DEMO_DIFFICULTY: f64 = 0.25;

/// Test cases of the demo's data: ten, so one hard case does not decide
/// the mean.
pub const DEMO_TEST_CASES: usize = 10;

/// Crop margin of the demo's preparation, in voxels (its volumes are
/// small, so every axis is cropped).
pub const DEMO_MARGIN: Xyz<Option<usize>> = Xyz::new(Some(8), Some(8), Some(4));

/// The folders of a demo under its output folder.
#[derive(Debug, Clone)]
pub struct DemoFolders {
    /// The generated dataset (Decathlon layout).
    pub data: PathBuf,
    /// Its training cache.
    pub prepared: PathBuf,
    /// The run directory.
    pub run: PathBuf,
    /// Masks and metrics of the test cases.
    pub evaluation: PathBuf,
    /// The supervised baseline's run: one V-Net on the same labelled cases
    /// with the same budget, the context a DTML result needs.
    pub baseline: PathBuf,
    /// Its masks and metrics.
    pub baseline_evaluation: PathBuf,
}

impl DemoFolders {
    pub fn under(out: &Path) -> DemoFolders {
        DemoFolders {
            data: out.join("data"),
            prepared: out.join("prepared"),
            run: out.join("run"),
            evaluation: out.join("evaluation"),
            baseline: out.join("supervised"),
            baseline_evaluation: out.join("supervised-evaluation"),
        }
    }
}

/// Generates and prepares the synthetic data, unless an earlier demo in
/// the same folder did (a resume needs it to be there).
pub fn prepare_demo_data(folders: &DemoFolders, resume: bool) -> Result<()> {
    if folders.prepared.join(MANIFEST).is_file() {
        tracing::info!(
            "using the prepared demo data in {}",
            folders.prepared.display()
        );
        return Ok(());
    }
    if resume {
        return Err(TrainError::file(
            &folders.prepared,
            "--resume: no prepared demo data here",
        ));
    }
    let config = SyntheticConfig {
        difficulty: DEMO_DIFFICULTY,
        test_cases: DEMO_TEST_CASES,
        ..Default::default()
    };
    tracing::info!(
        "generating {} synthetic training and {} test cases into {}",
        config.train_cases,
        config.test_cases,
        folders.data.display()
    );
    write_dataset(&folders.data, &config)
        .map_err(|e| TrainError::file(&folders.data, format!("generating the demo data: {e}")))?;
    let ds = Dataset::open(&folders.data, OpenOptions { channel: 0 })?;
    let split = dataset::split(
        &ds,
        &LabelledSpec::Fraction(LabelledSpec::PAPER_FRACTION),
        None,
        None,
    )?;
    let options = PrepareOptions {
        patch: TrainConfig::demo().patch,
        margin: DEMO_MARGIN,
        ..PrepareOptions::default()
    };
    let report = dtml_volume::prepare(
        &ds.root,
        ds.layout,
        &split,
        &folders.prepared,
        &options,
        &|_| {},
    )
    .map_err(|e| TrainError::file(&folders.prepared, format!("preparing the demo data: {e}")))?;
    tracing::info!(
        "prepared {} cases into {} ({} warnings)",
        report.cases,
        folders.prepared.display(),
        report.warnings.len()
    );
    Ok(())
}

/// Scores the students of `run` (the demo's or its baseline's) on the
/// demo's test cases (what `dtml evaluate` does), writing masks and
/// metrics into `evaluation`.
pub fn evaluate_demo(
    folders: &DemoFolders,
    run: &Path,
    evaluation: &Path,
    device: &Device,
) -> Result<Evaluation> {
    let loaded = dtml_infer::students::load_run(run, device)?;
    let _cache = dtml_volume::output::lock_input(&folders.prepared)?;
    let set = TestSet::Prepared(PreparedDataset::open(&folders.prepared)?);
    let opts = loaded.default_options();
    // The demo's evaluation folder follows the policy of `dtml evaluate`;
    // each demo run re-evaluates its fresh students there.
    let record = dtml_infer::shard::Record::new(
        "evaluate",
        &[run.to_path_buf()],
        &folders.prepared,
        opts.describe(),
    );
    let _claim = record.claim(
        evaluation,
        dtml_infer::shard::Shard::WHOLE,
        true,
        &[run, &folders.prepared, &folders.data],
    )?;
    let job = EvaluationJob {
        students: &loaded.students(),
        set: &set,
        opts: &opts,
        scoring: dtml_edt::Units::Millimetres.into(),
        empty_scoring: dtml_edt::EmptyScoring::Exclude,
        out: evaluation,
        about: serde_json::json!({ "model": run, "data": folders.prepared }),
        shard: dtml_infer::shard::Shard::WHOLE,
        keep: false,
    };
    Ok(run_evaluation(&job, &mut |_| {})?)
}
