//! Evaluation: predict cases whose labels are known and score them on the
//! original grid (Dice, Jaccard, hd95, ASD with medpy's conventions, see
//! `dtml_edt::surface_metrics`).
//!
//! Prepared cases are predicted on their prepared grid (cropped, padded,
//! z-scored by preparation) and pasted back with
//! [`CaseRecord::to_original`]; the reference is the label file itself,
//! binarised with the manifest's foreground values, and distances use the
//! label's spacing. Raw cases are read, z-scored and predicted whole.

use crate::error::{Result, TrainError};
use crate::infer::{InferenceOptions, Students, predict_volume, read_scan};
use dtml_edt::{SegmentationMetrics, Units, surface_metrics};
use dtml_volume::prepare::read_label;
use dtml_volume::{CaseRecord, Geometry, PreparedDataset};
use std::path::Path;
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
        return Err(TrainError::Config(format!(
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
        return Err(TrainError::file(
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
