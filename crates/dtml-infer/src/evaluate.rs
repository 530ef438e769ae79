//! Evaluation: predict cases whose labels are known and score them on the
//! original grid (Dice, Jaccard, hd95, ASD with medpy's conventions, see
//! `dtml_edt::surface_metrics`).
//!
//! Prepared cases are predicted on their prepared grid (cropped, padded,
//! z-scored by preparation) and pasted back with
//! [`CaseRecord::to_original`]; the reference is the label file itself,
//! binarised with the manifest's foreground values, and distances use the
//! label's spacing. Raw cases are read, z-scored and predicted whole.

use crate::error::{InferError, Result};
use crate::infer::{InferenceOptions, Students, predict_volume, read_scan};
use crate::masks::{Scoring, score_pair};
use crate::report::Report;
use crate::run::RunInfo;
use crate::shard::Shard;
use dtml_edt::{EmptyScoring, SegmentationMetrics};
use dtml_volume::dataset::{OpenOptions, read_list};
use dtml_volume::prepare::MANIFEST;
use dtml_volume::prepare::read_label;
use dtml_volume::{
    CaseFiles, CaseRecord, Dataset, Geometry, PreparedDataset, Role, Volume, VoxelData, Xyz,
};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Scores of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub id: String,
    pub metrics: SegmentationMetrics,
    /// Seconds spent in sliding-window inference.
    pub inference_seconds: f64,
}

/// One evaluated case with its predicted mask on the original grid.
#[derive(Debug, Clone)]
pub struct CaseEvaluation {
    pub result: CaseResult,
    /// Predicted mask on the original grid (x fastest).
    pub mask: Vec<u8>,
    /// The original grid.
    pub shape: Xyz<usize>,
    /// The original image's geometry (for writing the mask).
    pub geometry: Geometry,
}

/// Predicts one prepared case and scores it against its label file.
pub fn evaluate_case(
    students: &Students,
    data: &PreparedDataset,
    record: &CaseRecord,
    opts: &InferenceOptions,
    scoring: Scoring,
) -> Result<CaseEvaluation> {
    let Some(label_path) = record.label_source.as_deref() else {
        return Err(InferError::Config(format!(
            "case {} ({:?}) has no label file to evaluate against",
            record.id, record.role
        )));
    };
    let label_path = data.source(record, label_path)?;
    let case = data.load(record)?;
    let start = Instant::now();
    let prediction = predict_volume(students, &case.image, case.shape, opts)?;
    let inference_seconds = start.elapsed().as_secs_f64();
    let mask = record.to_original(&prediction.mask)?;
    drop(prediction);
    let (label, reference, _) = read_label(&label_path, &data.manifest.options.foreground, None)?;
    if label.shape != record.original_shape {
        return Err(InferError::file(
            &label_path,
            format!(
                "label shape {:?} differs from the image's original shape {:?} recorded at preparation",
                label.shape, record.original_shape
            ),
        ));
    }
    let metrics = score_pair(
        &mask,
        &reference,
        label.shape,
        label.geometry.spacing,
        scoring,
    )?;
    Ok(CaseEvaluation {
        result: CaseResult {
            id: record.id.clone(),
            metrics,
            inference_seconds,
        },
        mask,
        shape: record.original_shape,
        geometry: record.original_geometry.clone(),
    })
}

/// Predicts and scores prepared cases (for example the test or validation
/// cases of a manifest); `on_case(i)` is called after case `i`.
pub fn evaluate_prepared(
    students: &Students,
    data: &PreparedDataset,
    cases: &[&CaseRecord],
    opts: &InferenceOptions,
    scoring: Scoring,
    on_case: &mut dyn FnMut(usize),
) -> Result<Vec<CaseResult>> {
    let mut out = Vec::with_capacity(cases.len());
    for (i, record) in cases.iter().enumerate() {
        out.push(evaluate_case(students, data, record, opts, scoring)?.result);
        on_case(i);
    }
    Ok(out)
}

/// Predicts a scan file and scores it against a label file (binarised by
/// `foreground`); the label must share the scan's grid and affine.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_files(
    students: &Students,
    id: &str,
    image_path: &Path,
    channel: Option<usize>,
    label_path: &Path,
    foreground: &[i64],
    opts: &InferenceOptions,
    scoring: Scoring,
) -> Result<CaseEvaluation> {
    let (volume, image) = read_scan(image_path, channel)?;
    let (label, reference, _) = read_label(label_path, foreground, Some((image_path, &volume)))?;
    let start = Instant::now();
    let prediction = predict_volume(students, &image, volume.shape, opts)?;
    let inference_seconds = start.elapsed().as_secs_f64();
    let metrics = score_pair(
        &prediction.mask,
        &reference,
        volume.shape,
        label.geometry.spacing,
        scoring,
    )?;
    Ok(CaseEvaluation {
        result: CaseResult {
            id: id.to_string(),
            metrics,
            inference_seconds,
        },
        mask: prediction.mask,
        shape: volume.shape,
        geometry: volume.geometry,
    })
}

/// The test cases of an evaluation and how their labels are read.
pub enum TestSet {
    /// A prepared cache: its test cases with a label file, binarised with
    /// the manifest's foreground values.
    Prepared(PreparedDataset),
    /// Scans and label files of a dataset folder, with the label values
    /// that are foreground.
    Files {
        cases: Vec<CaseFiles>,
        foreground: Vec<i64>,
    },
}

/// What a user may choose about a dataset folder's test set (a prepared
/// folder has all of it in its manifest).
#[derive(Debug, Clone, Default)]
pub struct DatasetChoices {
    /// Label values that are foreground [default: the run's, else the
    /// layout's].
    pub foreground: Option<Vec<i64>>,
    /// A file of test case ids [default: the layout's test set].
    pub test_list: Option<PathBuf>,
    /// Image channel [default: the run's, else 0].
    pub channel: Option<usize>,
}

impl DatasetChoices {
    /// Refuses choices made for a prepared folder (cheap: call it before
    /// loading models).
    pub fn check_for(&self, folder: &Path) -> Result<()> {
        let any = self.foreground.is_some() || self.test_list.is_some() || self.channel.is_some();
        if any && folder.join(MANIFEST).is_file() {
            return Err(InferError::file(
                folder,
                "a prepared folder evaluates its manifest's test cases with its foreground values; --foreground, --test-list and --channel apply to dataset folders",
            ));
        }
        Ok(())
    }
}

impl TestSet {
    /// The test set of `folder`: a prepared folder's test cases, or a
    /// dataset folder's with `choices`, which fill in from the trained
    /// `run` (foreground values, channel), else the layout's defaults.
    /// Choices given for a prepared folder are refused.
    pub fn open(folder: &Path, choices: &DatasetChoices, run: Option<&RunInfo>) -> Result<TestSet> {
        choices.check_for(folder)?;
        if folder.join(MANIFEST).is_file() {
            return Ok(TestSet::Prepared(PreparedDataset::open(folder)?));
        }
        let channel = choices.channel.or(run.and_then(|r| r.channel)).unwrap_or(0);
        let ds = Dataset::open(folder, OpenOptions { channel })?;
        let foreground = choices
            .foreground
            .clone()
            .or_else(|| run.map(|r| r.foreground.clone()))
            .filter(|f| !f.is_empty())
            .unwrap_or_else(|| ds.layout.default_foreground());
        TestSet::of_dataset(&ds, choices.test_list.as_deref(), foreground)
    }

    /// The test cases of a dataset folder that have labels: `test_list`'s
    /// ids when given, else the layout's test set; unlabelled ones are
    /// left out with a warning.
    pub fn of_dataset(
        ds: &Dataset,
        test_list: Option<&Path>,
        foreground: Vec<i64>,
    ) -> Result<TestSet> {
        let cases: Vec<CaseFiles> = match test_list {
            Some(list) => read_list(list)?
                .into_iter()
                .map(|id| {
                    ds.training
                        .iter()
                        .chain(&ds.test)
                        .find(|c| c.id == id)
                        .cloned()
                        .ok_or_else(|| {
                            InferError::file(list, format!("case {id:?} is not in the dataset"))
                        })
                })
                .collect::<Result<_>>()?,
            None => ds.test.clone(),
        };
        let (labelled, unlabelled): (Vec<_>, Vec<_>) =
            cases.into_iter().partition(|c| c.label.is_some());
        if !unlabelled.is_empty() {
            tracing::warn!(
                "{} test case(s) without a label are not evaluated: {:?}",
                unlabelled.len(),
                unlabelled.iter().map(|c| c.id.as_str()).collect::<Vec<_>>()
            );
        }
        Ok(TestSet::Files {
            cases: labelled,
            foreground,
        })
    }

    /// How many cases will be scored.
    pub fn len(&self) -> usize {
        self.cases().len()
    }

    /// Whether there is nothing to score.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A test case of a [`TestSet`]: its id, and how to find its reference.
enum Case<'a> {
    Prepared(&'a CaseRecord),
    Files(&'a CaseFiles),
}

impl Case<'_> {
    fn id(&self) -> &str {
        match self {
            Case::Prepared(r) => &r.id,
            Case::Files(c) => &c.id,
        }
    }
}

impl TestSet {
    /// Every case that will be scored, sorted by id (the order shards
    /// split).
    fn cases(&self) -> Vec<Case<'_>> {
        let mut cases: Vec<Case> = match self {
            TestSet::Prepared(data) => data
                .cases(Role::Test)
                .filter(|c| c.label_source.is_some())
                .map(Case::Prepared)
                .collect(),
            TestSet::Files { cases, .. } => cases
                .iter()
                .filter(|c| c.label.is_some())
                .map(Case::Files)
                .collect(),
        };
        cases.sort_by(|a, b| a.id().cmp(b.id()));
        cases
    }

    /// Scores a mask already written for `case` against its reference.
    fn score_saved(
        &self,
        case: &Case,
        mask_path: &Path,
        scoring: Scoring,
    ) -> Result<SegmentationMetrics> {
        let (label_path, foreground) = match (self, case) {
            (TestSet::Prepared(data), Case::Prepared(r)) => (
                data.source(r, r.label_source.as_deref().unwrap_or(Path::new("")))?,
                data.manifest.options.foreground.clone(),
            ),
            (TestSet::Files { foreground, .. }, Case::Files(c)) => {
                (c.label.clone().unwrap_or_default(), foreground.clone())
            }
            _ => return Err(InferError::Other("case of another test set".into())),
        };
        let mask = crate::masks::read_mask(mask_path, None)?;
        let (label, reference, _) = read_label(&label_path, &foreground, None)?;
        if mask.volume.shape != label.shape
            || mask.volume.geometry.difference(&label.geometry).is_some()
        {
            return Err(InferError::file(
                mask_path,
                format!("not on the grid of its label {}", label_path.display()),
            ));
        }
        score_pair(
            &mask.mask,
            &reference,
            label.shape,
            label.geometry.spacing,
            scoring,
        )
    }
}

/// One evaluation job: which students and settings score which cases into
/// which folder, and which part of the job this process does.
pub struct EvaluationJob<'a> {
    pub students: &'a Students<'a>,
    pub set: &'a TestSet,
    pub opts: &'a InferenceOptions,
    /// Units and the surface Dice's tolerance.
    pub scoring: Scoring,
    /// How empty predictions enter the summary.
    pub empty_scoring: EmptyScoring,
    pub out: &'a Path,
    /// Extra keys for `metrics.json` (the model, the data).
    pub about: serde_json::Value,
    /// This process's part of the cases.
    pub shard: Shard,
    /// Masks already in `out` count as done (they are this job's: see
    /// [`crate::shard::Record::claim`]).
    pub keep: bool,
}

/// What an evaluation wrote.
pub struct Evaluation {
    pub report: Report,
    /// Seconds of sliding-window inference in this process.
    pub inference_seconds: f64,
    /// Whether the report covers every case of the job (else only this
    /// shard's, in `metrics-shard-K-of-N.*`, until the last shard ends).
    pub complete: bool,
}

/// Runs this shard of `job`: predicts each of its cases whose mask is not
/// in `out` yet, writing `<case>.nii.gz` (on the original grid and header)
/// atomically, calling `on_case` after each. Then, when every case of the
/// job has its mask, scores them all into `metrics.csv` and `metrics.json`
/// (the merge: whichever shard ends last writes it); otherwise this
/// shard's cases into `metrics-shard-K-of-N.csv` / `.json`.
pub fn run_evaluation(job: &EvaluationJob, on_case: &mut dyn FnMut(&str)) -> Result<Evaluation> {
    let all = job.set.cases();
    if all.is_empty() {
        return Err(InferError::Config(
            "no test case with a label to evaluate".into(),
        ));
    }
    dtml_volume::atomic::check_writable(job.out)?;
    let mask_of = |id: &str| crate::outputs::mask_file(job.out, id);
    let mut fresh = std::collections::HashMap::new();
    let mut seconds = 0.0;
    let mine: Vec<&Case> = job.shard.select(all.iter());
    for case in &mine {
        let id = case.id();
        if job.keep && mask_of(id).is_file() {
            on_case(id);
            continue;
        }
        let e = match (job.set, case) {
            (TestSet::Prepared(data), Case::Prepared(r)) => {
                evaluate_case(job.students, data, r, job.opts, job.scoring)
            }
            (TestSet::Files { foreground, .. }, Case::Files(c)) => evaluate_files(
                job.students,
                &c.id,
                &c.image,
                c.channel,
                c.label.as_deref().unwrap_or(Path::new("")),
                foreground,
                job.opts,
                job.scoring,
            ),
            _ => Err(InferError::Other("case of another test set".into())),
        }
        .map_err(|e| in_case(id, e))?;
        let mask = Volume::new(VoxelData::U8(e.mask), e.shape, e.geometry)?;
        dtml_volume::write_nifti(&mask_of(id), &mask)?;
        seconds += e.result.inference_seconds;
        fresh.insert(id.to_string(), e.result.metrics);
        on_case(id);
    }
    let complete = all.iter().all(|c| mask_of(c.id()).is_file());
    let scored: Vec<&Case> = if complete { all.iter().collect() } else { mine };
    let mut rows = Vec::with_capacity(scored.len());
    for case in scored {
        let id = case.id();
        let metrics = match fresh.remove(id) {
            Some(m) => m,
            None => job
                .set
                .score_saved(case, &mask_of(id), job.scoring)
                .map_err(|e| in_case(id, e))?,
        };
        rows.push((id.to_string(), metrics));
    }
    let mut report = Report::new(rows, job.scoring.units, job.empty_scoring);
    report.surface_dice_tolerance = job.scoring.surface_dice;
    let mut json = report.to_json();
    json["inference"] = job.opts.describe();
    json["inference_seconds"] = serde_json::json!(seconds);
    json["shard"] = serde_json::json!(job.shard.to_string());
    json["complete"] = serde_json::json!(complete);
    if let serde_json::Value::Object(extra) = &job.about {
        for (k, v) in extra {
            json[k] = v.clone();
        }
    }
    let stem = crate::outputs::metrics_stem(complete, job.shard.index, job.shard.count);
    let text = serde_json::to_string_pretty(&json).map_err(|e| InferError::Other(e.to_string()))?;
    dtml_volume::atomic::write_bytes_atomic(
        &job.out.join(format!("{stem}.csv")),
        report.to_csv()?.as_bytes(),
    )?;
    dtml_volume::atomic::write_bytes_atomic(
        &job.out.join(format!("{stem}.json")),
        text.as_bytes(),
    )?;
    Ok(Evaluation {
        report,
        inference_seconds: seconds,
        complete,
    })
}

/// An error of one case, naming it.
fn in_case(id: &str, e: InferError) -> InferError {
    InferError::Other(format!("evaluating case {id}: {e}"))
}
