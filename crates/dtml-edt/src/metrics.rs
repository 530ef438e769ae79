//! Overlap and surface-distance metrics with medpy's conventions.

use crate::kernel::{self, Finish, Mode};
use crate::{EdtError, Grid, MaskValue};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use strum::{Display, EnumString};

/// Units of the surface distances, named `mm` / `voxels` in files.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, Display, EnumString,
)]
pub enum Units {
    /// Physical units of `spacing` (millimetres for medical volumes).
    #[default]
    #[serde(rename = "mm")]
    #[strum(to_string = "mm")]
    Millimetres,
    /// Voxel units (spacing ignored), as the published LA tables (medpy
    /// called without `voxelspacing`).
    #[serde(rename = "voxels")]
    #[strum(to_string = "voxels")]
    Voxels,
}

/// Surface distances between two non-empty masks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistanceMetrics {
    /// 95th percentile (numpy linear interpolation) of both directed
    /// surface-distance sets concatenated (medpy `hd95`).
    pub hd95: f64,
    /// The larger of the two directed 95th percentiles (numpy linear
    /// interpolation of each directed set): MONAI's
    /// `compute_hausdorff_distance(percentile=95)` and seg-metrics' hd95.
    /// Never below [`DistanceMetrics::hd95`]'s pooled value by much, often
    /// above it when one surface is much larger than the other.
    pub hd95_max_directed: f64,
    /// Hausdorff distance: maximum of both directed sets (medpy `hd`).
    pub hausdorff: f64,
    /// Mean distance from the prediction's surface voxels to the reference
    /// surface (medpy `asd(prediction, reference)`).
    pub asd: f64,
    /// Mean distance from the reference's surface voxels to the prediction
    /// surface (medpy `asd(reference, prediction)`).
    pub asd_reference_to_prediction: f64,
    /// Average symmetric surface distance as medpy 0.5 computes `assd`: the
    /// mean over the union of both directed distance sets (each surface
    /// voxel of either mask counts once).
    pub assd: f64,
    /// The mean of the two directed means, `(asd + asd_reference_to_prediction)
    /// / 2`: medpy <= 0.4's `assd` and method.md's wording. Differs from
    /// [`DistanceMetrics::assd`] when the surfaces have different sizes.
    pub assd_mean_of_means: f64,
    /// Surface voxels of the prediction.
    pub prediction_surface_voxels: usize,
    /// Surface voxels of the reference.
    pub reference_surface_voxels: usize,
}

/// Surface distances, or why there are none (medpy raises on empty masks).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SurfaceDistances {
    /// Both masks have foreground.
    Computed(DistanceMetrics),
    /// The prediction is empty, the reference is not.
    EmptyPrediction,
    /// The reference is empty, the prediction is not.
    EmptyReference,
    /// Both masks are empty.
    BothEmpty,
}

impl SurfaceDistances {
    /// The distances when both masks have foreground.
    pub fn computed(&self) -> Option<&DistanceMetrics> {
        match self {
            SurfaceDistances::Computed(d) => Some(d),
            _ => None,
        }
    }
}

/// Dice, Jaccard and surface distances of a prediction against a reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegmentationMetrics {
    /// `2 |P & R| / (|P| + |R|)`; `None` when both masks are empty (medpy
    /// `dc` returns 0 there).
    pub dice: Option<f64>,
    /// `|P & R| / |P | R|`; `None` when both masks are empty.
    pub jaccard: Option<f64>,
    /// Foreground voxels of the prediction.
    pub prediction_voxels: usize,
    /// Foreground voxels of the reference.
    pub reference_voxels: usize,
    /// Surface distances, or which mask was empty.
    pub distances: SurfaceDistances,
    /// Surface Dice at a tolerance, when the caller asked for one
    /// ([`crate::surface_dice`]; [`surface_metrics`] leaves it `None`).
    pub surface_dice: Option<f64>,
}

impl SegmentationMetrics {
    /// The reference evaluation script's scoring `[dice, jaccard, hd95,
    /// asd]`: an empty prediction scores `[0, 0, 0, 0]` (which flatters hd95
    /// and asd; report such cases separately). `None` when the reference is
    /// empty but the prediction is not: medpy raises there and the reference
    /// script has no answer.
    pub fn reference_scoring(&self) -> Option<[f64; 4]> {
        match &self.distances {
            SurfaceDistances::Computed(d) => Some([
                self.dice.unwrap_or(0.0),
                self.jaccard.unwrap_or(0.0),
                d.hd95,
                d.asd,
            ]),
            SurfaceDistances::EmptyPrediction | SurfaceDistances::BothEmpty => Some([0.0; 4]),
            SurfaceDistances::EmptyReference => None,
        }
    }
}

pub(crate) fn check_pair<M: MaskValue>(
    grid: &Grid,
    prediction: &[M],
    reference: &[M],
) -> Result<(), EdtError> {
    grid.check_len("prediction", prediction.len())?;
    grid.check_len("reference", reference.len())
}

fn pair_lengths<M: MaskValue>(prediction: &[M], reference: &[M]) -> Result<(), EdtError> {
    if prediction.len() != reference.len() {
        return Err(EdtError::LengthMismatch {
            what: "reference",
            len: reference.len(),
            expected: prediction.len(),
            shape: vec![prediction.len()],
        });
    }
    Ok(())
}

pub(crate) fn counts<M: MaskValue>(a: &[M], b: &[M]) -> (usize, usize, usize) {
    a.par_chunks(1 << 16)
        .zip(b.par_chunks(1 << 16))
        .map(|(a, b)| {
            let mut c = (0usize, 0usize, 0usize);
            for (&x, &y) in a.iter().zip(b) {
                let (x, y) = (x.is_fg(), y.is_fg());
                c.0 += x as usize;
                c.1 += y as usize;
                c.2 += (x & y) as usize;
            }
            c
        })
        .reduce(|| (0, 0, 0), |p, q| (p.0 + q.0, p.1 + q.1, p.2 + q.2))
}

fn dice_of(na: usize, nb: usize, inter: usize) -> Option<f64> {
    (na + nb > 0).then(|| 2.0 * inter as f64 / (na + nb) as f64)
}

fn jaccard_of(na: usize, nb: usize, inter: usize) -> Option<f64> {
    let union = na + nb - inter;
    (union > 0).then(|| inter as f64 / union as f64)
}

/// Dice coefficient `2 |A & B| / (|A| + |B|)` of two masks of equal length;
/// `None` when both are empty.
pub fn dice<M: MaskValue>(a: &[M], b: &[M]) -> Result<Option<f64>, EdtError> {
    pair_lengths(a, b)?;
    let (na, nb, i) = counts(a, b);
    Ok(dice_of(na, nb, i))
}

/// Jaccard index `|A & B| / |A | B|` of two masks of equal length; `None`
/// when both are empty.
pub fn jaccard<M: MaskValue>(a: &[M], b: &[M]) -> Result<Option<f64>, EdtError> {
    pair_lengths(a, b)?;
    let (na, nb, i) = counts(a, b);
    Ok(jaccard_of(na, nb, i))
}

/// Dice, Jaccard, hd95, Hausdorff, asd and assd (medpy 0.5) of `prediction` against
/// `reference` with medpy's conventions: surface = mask XOR its binary
/// erosion by the face-connected structuring element (voxels outside the
/// array count as background); distances from each surface voxel of one
/// mask to the nearest surface voxel of the other via the exact EDT with
/// `spacing` (ignored for [`Units::Voxels`]); hd95 = numpy's 95th
/// percentile (linear interpolation) of both directed sets concatenated.
///
/// Empty masks give [`SurfaceDistances::EmptyPrediction`] etc. instead of a
/// panic or a made-up number; see [`SegmentationMetrics::reference_scoring`]
/// for the reference script's scoring.
pub fn surface_metrics<M: MaskValue>(
    prediction: &[M],
    reference: &[M],
    shape: &[usize],
    spacing: &[f64],
    units: Units,
) -> Result<SegmentationMetrics, EdtError> {
    let mut grid = Grid::new(shape, Some(spacing))?;
    check_pair(&grid, prediction, reference)?;
    if units == Units::Voxels {
        grid.spacing = [1.0; 3];
    }
    let (na, nb, inter) = counts(prediction, reference);
    let distances = match (na > 0, nb > 0) {
        (false, false) => SurfaceDistances::BothEmpty,
        (false, true) => SurfaceDistances::EmptyPrediction,
        (true, false) => SurfaceDistances::EmptyReference,
        (true, true) => SurfaceDistances::Computed(distances(prediction, reference, &grid)),
    };
    Ok(SegmentationMetrics {
        dice: dice_of(na, nb, inter),
        jaccard: jaccard_of(na, nb, inter),
        prediction_voxels: na,
        reference_voxels: nb,
        distances,
        surface_dice: None,
    })
}

/// Bounding box `[lo, hi)` per axis of the union of both masks (non-empty).
pub(crate) fn union_bbox<M: MaskValue>(a: &[M], b: &[M], dims: [usize; 3]) -> [[usize; 2]; 3] {
    let [_, ny, nx] = dims;
    let plane = ny * nx;
    let empty = [[usize::MAX, 0]; 3];
    let merge = |p: [[usize; 2]; 3], q: [[usize; 2]; 3]| {
        let mut r = p;
        for k in 0..3 {
            r[k] = [p[k][0].min(q[k][0]), p[k][1].max(q[k][1])];
        }
        r
    };
    a.par_chunks(plane)
        .zip(b.par_chunks(plane))
        .enumerate()
        .map(|(z, (pa, pb))| {
            let mut r = empty;
            for (y, (ra, rb)) in pa.chunks(nx).zip(pb.chunks(nx)).enumerate() {
                let first = ra.iter().zip(rb).position(|(x, y)| x.is_fg() | y.is_fg());
                if let Some(x0) = first {
                    let x1 = nx
                        - ra.iter()
                            .zip(rb)
                            .rev()
                            .position(|(x, y)| x.is_fg() | y.is_fg())
                            .unwrap_or(0);
                    r = merge(r, [[z, z + 1], [y, y + 1], [x0, x1]]);
                }
            }
            r
        })
        .reduce(|| empty, merge)
}

/// Surface (mask minus its face-connected erosion, outside = background) of
/// the mask cropped to `bbox`, as "not surface" bytes (the EDT input: the
/// surface voxels are the zero set) plus the flag vector of surface voxels.
fn surface<M: MaskValue>(
    m: &[M],
    dims: [usize; 3],
    bbox: &[[usize; 2]; 3],
    real: [bool; 3],
) -> Vec<u8> {
    let [_, ny, nx] = dims;
    let c = [
        bbox[0][1] - bbox[0][0],
        bbox[1][1] - bbox[1][0],
        bbox[2][1] - bbox[2][0],
    ];
    let cplane = c[1] * c[2];
    let mut out = vec![0u8; c[0] * cplane];
    let at = |z: usize, y: usize, x: usize| m[(z * ny + y) * nx + x].is_fg();
    out.par_chunks_mut(cplane).enumerate().for_each(|(cz, o)| {
        let z = bbox[0][0] + cz;
        for cy in 0..c[1] {
            let y = bbox[1][0] + cy;
            for cx in 0..c[2] {
                let x = bbox[2][0] + cx;
                let fg = at(z, y, x);
                let mut interior = fg;
                if fg {
                    let p = [z, y, x];
                    for k in 0..3 {
                        if !real[k] {
                            continue;
                        }
                        let mut q = p;
                        let lo_ok = p[k] > 0 && {
                            q[k] = p[k] - 1;
                            at(q[0], q[1], q[2])
                        };
                        let hi_ok = p[k] + 1 < dims[k] && {
                            q[k] = p[k] + 1;
                            at(q[0], q[1], q[2])
                        };
                        if !(lo_ok && hi_ok) {
                            interior = false;
                            break;
                        }
                    }
                }
                // 1 = not a surface voxel (EDT foreground), 0 = surface.
                o[cy * c[2] + cx] = (!fg || interior) as u8;
            }
        }
    });
    out
}

fn distances<M: MaskValue>(a: &[M], b: &[M], grid: &Grid) -> DistanceMetrics {
    let dims = grid.dims;
    let bbox = union_bbox(a, b, dims);
    let real = [grid.ndim >= 3, grid.ndim >= 2, true];
    let not_surf_a = surface(a, dims, &bbox, real);
    let not_surf_b = surface(b, dims, &bbox, real);
    let cdims = [
        bbox[0][1] - bbox[0][0],
        bbox[1][1] - bbox[1][0],
        bbox[2][1] - bbox[2][0],
    ];
    let cgrid = Grid {
        dims: cdims,
        spacing: grid.spacing,
        ndim: grid.ndim,
    };
    let mut buf = vec![0.0f32; not_surf_a.len()];
    // Prediction surface -> reference surface.
    kernel::transform(
        &not_surf_b,
        &cgrid,
        Mode::Foreground,
        Finish::Squared,
        &mut buf,
    );
    let d_ab = gather(&buf, &not_surf_a);
    kernel::transform(
        &not_surf_a,
        &cgrid,
        Mode::Foreground,
        Finish::Squared,
        &mut buf,
    );
    let d_ba = gather(&buf, &not_surf_b);
    drop(buf);
    let (sum_ab, sum_ba) = (d_ab.iter().sum::<f64>(), d_ba.iter().sum::<f64>());
    let asd = sum_ab / d_ab.len() as f64;
    let asd_rev = sum_ba / d_ba.len() as f64;
    let assd = (sum_ab + sum_ba) / (d_ab.len() + d_ba.len()) as f64;
    let (np, nr) = (d_ab.len(), d_ba.len());
    let mut all = d_ab;
    all.extend_from_slice(&d_ba);
    let hd95_max_directed = {
        let (ab, ba) = all.split_at_mut(np);
        percentile_linear(ab, 95.0).max(percentile_linear(ba, 95.0))
    };
    let hausdorff = all.iter().copied().fold(0.0f64, f64::max);
    let hd95 = percentile_linear(&mut all, 95.0);
    DistanceMetrics {
        hd95,
        hd95_max_directed,
        hausdorff,
        asd,
        asd_reference_to_prediction: asd_rev,
        assd,
        assd_mean_of_means: 0.5 * (asd + asd_rev),
        prediction_surface_voxels: np,
        reference_surface_voxels: nr,
    }
}

/// Distances (square roots of `d2`) at the surface voxels (`not_surf == 0`).
fn gather(d2: &[f32], not_surf: &[u8]) -> Vec<f64> {
    d2.par_chunks(1 << 16)
        .zip(not_surf.par_chunks(1 << 16))
        .flat_map_iter(|(d, s)| {
            d.iter()
                .zip(s)
                .filter(|&(_, &s)| s == 0)
                .map(|(&d, _)| (d as f64).sqrt())
        })
        .collect()
}

/// numpy `percentile(x, q)` with the default linear method (non-empty `x`,
/// no NaN); reorders `x`.
pub(crate) fn percentile_linear(x: &mut [f64], q: f64) -> f64 {
    let n = x.len();
    let virt = (q / 100.0) * (n - 1) as f64;
    let lo = (virt.floor() as usize).min(n - 1);
    let hi = (lo + 1).min(n - 1);
    let t = virt - lo as f64;
    let (_, &mut a, rest) = x.select_nth_unstable_by(lo, f64::total_cmp);
    let b = if hi == lo {
        a
    } else {
        rest.iter().copied().fold(f64::INFINITY, f64::min)
    };
    // numpy's _lerp.
    let diff = b - a;
    if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    }
}
