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
use crate::report::Report;
use dtml_edt::{SegmentationMetrics, Units, surface_metrics};
use dtml_volume::dataset::read_list;
use dtml_volume::prepare::read_label;
use dtml_volume::{
    CaseFiles, CaseRecord, Dataset, Geometry, PreparedDataset, Role, Volume, VoxelData,
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
    /// The original grid (x, y, z).
    pub shape: [usize; 3],
    /// The original image's geometry (for writing the mask).
    pub geometry: Geometry,
}

fn metrics_of(
    mask: &[u8],
    reference: &[u8],
    shape: [usize; 3],
    spacing: [f64; 3],
    units: Units,
) -> Result<SegmentationMetrics> {
    Ok(surface_metrics(
        mask,
        reference,
        &[shape[2], shape[1], shape[0]],
        &[spacing[2], spacing[1], spacing[0]],
        units,
    )?)
}

/// Predicts one prepared case and scores it against its label file.
pub fn evaluate_case(
    students: &Students,
    data: &PreparedDataset,
    record: &CaseRecord,
    opts: &InferenceOptions,
    units: Units,
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
    let metrics = metrics_of(
        &mask,
        &reference,
        label.shape,
        label.geometry.spacing,
        units,
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
    units: Units,
    on_case: &mut dyn FnMut(usize),
) -> Result<Vec<CaseResult>> {
    let mut out = Vec::with_capacity(cases.len());
    for (i, record) in cases.iter().enumerate() {
        out.push(evaluate_case(students, data, record, opts, units)?.result);
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
    units: Units,
) -> Result<CaseEvaluation> {
    let (volume, image) = read_scan(image_path, channel)?;
    let (label, reference, _) = read_label(label_path, foreground, Some((image_path, &volume)))?;
    let start = Instant::now();
    let prediction = predict_volume(students, &image, volume.shape, opts)?;
    let inference_seconds = start.elapsed().as_secs_f64();
    let metrics = metrics_of(
        &prediction.mask,
        &reference,
        volume.shape,
        label.geometry.spacing,
        units,
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

impl TestSet {
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
        match self {
            TestSet::Prepared(data) => data
                .cases(Role::Test)
                .filter(|c| c.label_source.is_some())
                .count(),
            TestSet::Files { cases, .. } => cases.len(),
        }
    }

    /// Whether there is nothing to score.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What an evaluation wrote.
pub struct Evaluation {
    pub report: Report,
    /// Seconds of sliding-window inference over all cases.
    pub inference_seconds: f64,
}

/// Predicts and scores every case of `set`, writing each predicted mask
/// (`<case>.nii.gz`, on the original grid and header) into `out`, then
/// `metrics.csv` and `metrics.json` (cases, summary, the inference
/// settings and `about`); `on_case` is called after each case.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_to_folder(
    students: &Students,
    set: &TestSet,
    opts: &InferenceOptions,
    units: Units,
    reference_scoring: bool,
    out: &Path,
    about: serde_json::Value,
    on_case: &mut dyn FnMut(&str),
) -> Result<Evaluation> {
    if set.is_empty() {
        return Err(InferError::Config(
            "no test case with a label to evaluate".into(),
        ));
    }
    dtml_volume::atomic::check_writable(out)?;
    let mut rows = Vec::new();
    let mut seconds = 0.0;
    let mut record = |e: CaseEvaluation| -> Result<()> {
        let path = out.join(format!("{}.nii.gz", e.result.id));
        let mask = Volume::new(VoxelData::U8(e.mask), e.shape, e.geometry)?;
        dtml_volume::write_nifti(&path, &mask)?;
        seconds += e.result.inference_seconds;
        on_case(&e.result.id);
        rows.push((e.result.id, e.result.metrics));
        Ok(())
    };
    match set {
        TestSet::Prepared(data) => {
            for c in data.cases(Role::Test).filter(|c| c.label_source.is_some()) {
                record(
                    evaluate_case(students, data, c, opts, units).map_err(|e| in_case(&c.id, e))?,
                )?;
            }
        }
        TestSet::Files { cases, foreground } => {
            for c in cases {
                let Some(label) = c.label.as_deref() else {
                    continue;
                };
                let e = evaluate_files(
                    students, &c.id, &c.image, c.channel, label, foreground, opts, units,
                )
                .map_err(|e| in_case(&c.id, e))?;
                record(e)?;
            }
        }
    }
    let report = Report::new(rows, units == Units::Voxels, reference_scoring);
    let mut json = report.to_json();
    json["inference"] = opts.describe();
    json["inference_seconds"] = serde_json::json!(seconds);
    if let serde_json::Value::Object(extra) = about {
        for (k, v) in extra {
            json[k] = v;
        }
    }
    let write = |name: &str, bytes: &[u8]| -> Result<PathBuf> {
        let path = out.join(name);
        dtml_volume::atomic::write_bytes_atomic(&path, bytes)?;
        Ok(path)
    };
    write("metrics.csv", report.to_csv()?.as_bytes())?;
    let text = serde_json::to_string_pretty(&json).map_err(|e| InferError::Other(e.to_string()))?;
    write("metrics.json", text.as_bytes())?;
    Ok(Evaluation {
        report,
        inference_seconds: seconds,
    })
}

/// An error of one case, naming it.
fn in_case(id: &str, e: InferError) -> InferError {
    InferError::Other(format!("evaluating case {id}: {e}"))
}
