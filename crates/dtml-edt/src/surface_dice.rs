//! Surface Dice at a tolerance (the normalised surface Dice of Nikolov et
//! al. 2021), as DeepMind's `surface-distance` package computes it: the
//! share of both surfaces, by area, that lies within `tolerance` of the
//! other surface.
//!
//! Surfaces are taken between voxels: every corner point of the voxel grid
//! whose 2x2x2 neighbourhood holds both foreground and background is a
//! surface element, weighted by the area of its marching-cubes triangles
//! under the spacing ([`crate::surfels`], generated and checked against
//! the package by `data-fixtures/surface/make_surfel_table.py`). An
//! element is within the tolerance when the exact Euclidean distance from
//! its corner to the nearest corner element of the other surface is. The
//! squared distances are f32; a distance equal to the tolerance counts as
//! within it whatever their rounding (`TIE_SLACK`), as in exact arithmetic.

use crate::kernel::{self, Finish, Mode};
use crate::metrics::{check_pair, counts, union_bbox};
use crate::surfels::SURFELS;
use crate::{EdtError, Grid, MaskValue};
use rayon::prelude::*;

/// Surface Dice of `prediction` against `reference` at `tolerance` (in
/// the units of `spacing`); 3D masks only (row-major, the last axis
/// contiguous, `spacing` in the same order). `None` when both masks are
/// empty; 0 when exactly one is.
pub fn surface_dice<M: MaskValue>(
    prediction: &[M],
    reference: &[M],
    shape: &[usize],
    spacing: &[f64],
    tolerance: f64,
) -> Result<Option<f64>, EdtError> {
    if shape.len() != 3 {
        return Err(EdtError::NeedsThreeAxes {
            what: "surface Dice",
            got: shape.len(),
        });
    }
    if !(tolerance.is_finite() && tolerance >= 0.0) {
        return Err(EdtError::BadTolerance(tolerance));
    }
    let grid = Grid::new(shape, Some(spacing))?;
    check_pair(&grid, prediction, reference)?;
    let (na, nb, _) = counts(prediction, reference);
    match (na > 0, nb > 0) {
        (false, false) => return Ok(None),
        (true, false) | (false, true) => return Ok(Some(0.0)),
        (true, true) => {}
    }
    let bbox = union_bbox(prediction, reference, grid.dims);
    // Corner points: one more than the cropped voxels along every axis.
    let corners: [usize; 3] = std::array::from_fn(|k| bbox[k][1] - bbox[k][0] + 1);
    let code_a = neighbour_codes(prediction, grid.dims, &bbox, corners);
    let code_b = neighbour_codes(reference, grid.dims, &bbox, corners);
    let area = element_areas(grid.spacing);
    let cgrid = Grid {
        dims: corners,
        spacing: grid.spacing,
        ndim: 3,
    };
    let tolerance2 = tolerance * tolerance * (1.0 + TIE_SLACK);
    let mut d2 = vec![0.0f32; code_a.len()];
    // Squared distance from every corner to the reference's surface.
    kernel::transform(
        &not_surface(&code_b),
        &cgrid,
        Mode::Foreground,
        Finish::Squared,
        &mut d2,
    );
    let (near_a, all_a) = weigh(&code_a, &d2, &area, tolerance2);
    kernel::transform(
        &not_surface(&code_a),
        &cgrid,
        Mode::Foreground,
        Finish::Squared,
        &mut d2,
    );
    let (near_b, all_b) = weigh(&code_b, &d2, &area, tolerance2);
    Ok(Some((near_a + near_b) / (all_a + all_b)))
}

/// Relative slack on the squared tolerance: more than the f32 rounding of
/// a squared distance (6e-8), far less than the gap between two distances
/// on a voxel grid at any tolerance a user sets.
const TIE_SLACK: f64 = 1e-6;

/// Area of each neighbourhood code's surface element under `spacing`
/// (axes in the masks' order): an area vector `n` of a triangle in voxel
/// units becomes `(n0 s1 s2, n1 s0 s2, n2 s0 s1)`.
fn element_areas(spacing: [f64; 3]) -> [f64; 256] {
    let [s0, s1, s2] = spacing;
    let scale = [s1 * s2, s0 * s2, s0 * s1];
    std::array::from_fn(|code| {
        SURFELS[code]
            .iter()
            .map(|n| {
                let v: [f64; 3] = std::array::from_fn(|k| n[k] as f64 / 8.0 * scale[k]);
                (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt()
            })
            .sum()
    })
}

/// The neighbourhood code of every corner point of the cropped grid:
/// corner `(i, j, k)` sits between voxels `i - 1` and `i` (and so on) of
/// the crop, and voxel offset `(a, b, c)` of its 2x2x2 neighbourhood sets
/// bit `128 >> (4a + 2b + c)`. Voxels outside the crop are background.
fn neighbour_codes<M: MaskValue>(
    m: &[M],
    dims: [usize; 3],
    bbox: &[[usize; 2]; 3],
    corners: [usize; 3],
) -> Vec<u8> {
    let [_, ny, nx] = dims;
    let inside = |k: usize, c: usize| -> Option<usize> {
        // Corner index c, offset 0 or 1 -> crop voxel c - 1 + offset.
        let v = (bbox[k][0] + c).checked_sub(1)?;
        (v >= bbox[k][0] && v < bbox[k][1]).then_some(v)
    };
    let plane = corners[1] * corners[2];
    let mut out = vec![0u8; corners[0] * plane];
    out.par_chunks_mut(plane).enumerate().for_each(|(i, o)| {
        for j in 0..corners[1] {
            for k in 0..corners[2] {
                let mut code = 0u8;
                for a in 0..2 {
                    let Some(z) = inside(0, i + a) else { continue };
                    for b in 0..2 {
                        let Some(y) = inside(1, j + b) else { continue };
                        for c in 0..2 {
                            let Some(x) = inside(2, k + c) else { continue };
                            if m[(z * ny + y) * nx + x].is_fg() {
                                code |= 128u8 >> (4 * a + 2 * b + c);
                            }
                        }
                    }
                }
                o[j * corners[2] + k] = code;
            }
        }
    });
    out
}

/// Whether a code is a surface element: its neighbourhood is mixed.
#[inline]
fn is_surface(code: u8) -> bool {
    code != 0 && code != 255
}

/// The EDT input that makes surface corners the zero set.
fn not_surface(codes: &[u8]) -> Vec<u8> {
    codes.par_iter().map(|&c| (!is_surface(c)) as u8).collect()
}

/// (area within the tolerance, whole area) of one mask's surface elements,
/// given the squared distance of every corner to the other surface.
fn weigh(codes: &[u8], d2: &[f32], area: &[f64; 256], tolerance2: f64) -> (f64, f64) {
    codes
        .par_chunks(1 << 16)
        .zip(d2.par_chunks(1 << 16))
        .map(|(codes, d2)| {
            let mut near = 0.0;
            let mut all = 0.0;
            for (&c, &d) in codes.iter().zip(d2) {
                if is_surface(c) {
                    let a = area[c as usize];
                    all += a;
                    if d as f64 <= tolerance2 {
                        near += a;
                    }
                }
            }
            (near, all)
        })
        .reduce(|| (0.0, 0.0), |x, y| (x.0 + y.0, x.1 + y.1))
}
