//! Masks as files: read and binarised by the one rule
//! ([`dtml_volume::prepare::binarize`]), paired and scored against
//! reference masks (`dtml metrics`), and turned into distance maps on their
//! own grid (`dtml distance`).

use crate::error::{InferError, Result};
use dtml_edt::{SegmentationMetrics, Units, surface_metrics};
use dtml_volume::files::{case_name, volume_files};
use dtml_volume::{Volume, VoxelData, Xyz};
use std::path::{Path, PathBuf};

/// A mask read from a file: 1 where the voxel is foreground.
pub struct Mask {
    pub volume: Volume,
    pub mask: Vec<u8>,
}

/// Reads `path` and binarises it: foreground is any non-zero voxel, or the
/// given label values.
pub fn read_mask(path: &Path, foreground: Option<&[i64]>) -> Result<Mask> {
    let volume = dtml_volume::read_volume(path)?;
    let (mask, _) = dtml_volume::prepare::binarize(path, &volume, foreground)?;
    Ok(Mask { volume, mask })
}

/// How a mask pair is scored: the units of the distances and, when
/// asked, the surface Dice's tolerance (in those units).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Scoring {
    pub units: Units,
    pub surface_dice: Option<f64>,
}

impl From<Units> for Scoring {
    fn from(units: Units) -> Scoring {
        Scoring {
            units,
            surface_dice: None,
        }
    }
}

/// Every metric of a mask pair on one grid (`shape` and `spacing` of the
/// reference, x fastest), as `scoring` asks.
pub fn score_pair(
    prediction: &[u8],
    reference: &[u8],
    shape: Xyz<usize>,
    spacing: Xyz<f64>,
    scoring: Scoring,
) -> Result<SegmentationMetrics> {
    let shape = shape.zyx();
    let spacing = match scoring.units {
        Units::Millimetres => spacing.zyx(),
        Units::Voxels => [1.0; 3],
    };
    let mut metrics = surface_metrics(prediction, reference, &shape, &spacing, scoring.units)?;
    if let Some(tolerance) = scoring.surface_dice {
        metrics.surface_dice =
            dtml_edt::surface_dice(prediction, reference, &shape, &spacing, tolerance)?;
    }
    Ok(metrics)
}

/// How predicted masks are scored against references.
#[derive(Debug, Clone, Default)]
pub struct MaskScoring {
    /// Foreground label values of both masks (`None`: any non-zero).
    pub foreground: Option<Vec<i64>>,
    pub scoring: Scoring,
    /// Compare voxel by voxel even when the two grids lie differently in
    /// space (distances then use the reference's spacing).
    pub voxel_grid: bool,
}

/// The `(case, prediction, reference)` triples of two masks, or of two
/// folders matched by case name (every reference needs its prediction).
pub fn mask_pairs(pred: &Path, reference: &Path) -> Result<Vec<(String, PathBuf, PathBuf)>> {
    if pred.is_file() && reference.is_file() {
        let name = case_name(reference).unwrap_or_else(|| "case".into());
        return Ok(vec![(name, pred.to_path_buf(), reference.to_path_buf())]);
    }
    let preds = volume_files(pred)?;
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for r in volume_files(reference)? {
        let Some(name) = case_name(&r) else {
            continue;
        };
        match preds
            .iter()
            .find(|p| case_name(p).as_deref() == Some(name.as_str()))
        {
            Some(p) => out.push((name, p.clone(), r)),
            None => missing.push(name),
        }
    }
    if !missing.is_empty() {
        return Err(InferError::file(
            pred,
            format!(
                "no prediction for {} reference case(s): {missing:?}",
                missing.len()
            ),
        ));
    }
    if out.is_empty() {
        return Err(InferError::file(reference, "no reference volumes found"));
    }
    Ok(out)
}

/// Scores one predicted mask file against its reference; the two must
/// share a grid (shape always, placement unless `voxel_grid`).
pub fn score_mask_file(
    pred: &Path,
    reference: &Path,
    how: &MaskScoring,
) -> Result<SegmentationMetrics> {
    let p = read_mask(pred, how.foreground.as_deref())?;
    let r = read_mask(reference, how.foreground.as_deref())?;
    if p.volume.shape != r.volume.shape {
        return Err(InferError::file(
            pred,
            format!(
                "shape {:?} differs from reference {} shape {:?}",
                p.volume.shape,
                reference.display(),
                r.volume.shape
            ),
        ));
    }
    if let Some(difference) = p.volume.geometry.difference(&r.volume.geometry)
        && !how.voxel_grid
    {
        return Err(InferError::file(
            pred,
            format!(
                "not on the grid of reference {}: {difference}; resample it, or pass --voxel-grid to compare voxel by voxel anyway",
                reference.display()
            ),
        ));
    }
    score_pair(
        &p.mask,
        &r.mask,
        r.volume.shape,
        r.volume.spacing(),
        how.scoring,
    )
}

/// Scores every pair of [`mask_pairs`], in reference order.
pub fn score_mask_files(
    pred: &Path,
    reference: &Path,
    how: &MaskScoring,
) -> Result<Vec<(String, SegmentationMetrics)>> {
    mask_pairs(pred, reference)?
        .into_iter()
        .map(|(name, p, r)| Ok((name, score_mask_file(&p, &r, how)?)))
        .collect()
}

/// Which distance map of a mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DistanceMap {
    /// Distance to the nearest foreground voxel (mm), 0 inside.
    Plain,
    /// Negative inside, positive outside (mm).
    Signed,
    /// The method's normalised SDM target, in voxel units, in [-1, 1].
    Normalized,
}

/// The distance map of a mask on the mask's grid and geometry (f32),
/// with a warning where one class is missing and the map is degenerate.
pub fn distance_map(mask: &Mask, kind: DistanceMap, path: &Path) -> Result<Volume> {
    let (shape, spacing) = (mask.volume.shape.zyx(), mask.volume.spacing().zyx());
    let map = match kind {
        DistanceMap::Normalized => dtml_edt::normalized_sdm(&mask.mask, &shape)?,
        DistanceMap::Signed => dtml_edt::signed_distance(&mask.mask, &shape, &spacing)?,
        DistanceMap::Plain => dtml_edt::edt(&mask.mask, &shape, &spacing)?,
    };
    let all_foreground = mask.mask.iter().all(|&v| v == 1);
    let all_background = mask.mask.iter().all(|&v| v == 0);
    if kind != DistanceMap::Normalized && all_foreground {
        tracing::warn!(
            "{}: the mask has no background; every distance is {}",
            path.display(),
            if kind == DistanceMap::Signed {
                "-inf"
            } else {
                "+inf"
            }
        );
    }
    if all_background {
        tracing::warn!(
            "{}: the mask is empty; {}",
            path.display(),
            match kind {
                DistanceMap::Normalized =>
                    "the normalised SDM is 0 everywhere (as the reference's compute_sdf)",
                DistanceMap::Signed => "every signed distance is +inf",
                DistanceMap::Plain => "every distance is 0",
            }
        );
    }
    Ok(Volume::new(
        VoxelData::F32(map),
        mask.volume.shape,
        mask.volume.geometry.clone(),
    )?)
}
