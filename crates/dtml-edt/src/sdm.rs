//! The normalised SDM regression target (method.md, "SDM target").

use crate::kernel::{self, Finish, Mode};
use crate::{EdtError, Grid, MaskValue};
use rayon::prelude::*;

/// Normalised signed distance map of one mask, in voxel units (no spacing,
/// as the reference): with `posdis = edt(mask)` and `negdis = edt(!mask)`,
/// `negdis / max(negdis) - posdis / max(posdis)`, then 0 on the inner
/// boundary (foreground voxels with a background face-neighbour inside the
/// array, i.e. scikit-image `find_boundaries(mode='inner')`). Negative
/// inside, positive outside, in `[-1, 1]`. No foreground: all 0 (as the
/// reference); no background (the reference yields NaN): all -1.
pub fn normalized_sdm<M: MaskValue>(mask: &[M], shape: &[usize]) -> Result<Vec<f32>, EdtError> {
    normalized_sdm_batch(mask, 1, shape)
}

/// [`normalized_sdm`] of each of `batch` masks stored back to back in
/// `masks` (each of `shape`), into one output of the same layout.
pub fn normalized_sdm_batch<M: MaskValue>(
    masks: &[M],
    batch: usize,
    shape: &[usize],
) -> Result<Vec<f32>, EdtError> {
    let grid = Grid::new(shape, None)?;
    let expected = grid
        .len()
        .checked_mul(batch)
        .ok_or_else(|| EdtError::TooLarge(shape.to_vec()))?;
    let mut out = vec![0.0f32; expected];
    normalized_sdm_batch_into(masks, batch, shape, &mut out)?;
    Ok(out)
}

/// [`normalized_sdm_batch`] writing into a caller-provided buffer.
pub fn normalized_sdm_batch_into<M: MaskValue>(
    masks: &[M],
    batch: usize,
    shape: &[usize],
    out: &mut [f32],
) -> Result<(), EdtError> {
    let grid = Grid::new(shape, None)?;
    let n = grid.len();
    let expected = n
        .checked_mul(batch)
        .ok_or_else(|| EdtError::TooLarge(shape.to_vec()))?;
    for (what, len) in [("masks", masks.len()), ("output", out.len())] {
        if len != expected {
            return Err(EdtError::LengthMismatch {
                what,
                len,
                expected,
                shape: shape.to_vec(),
            });
        }
    }
    if n == 0 {
        return Ok(());
    }
    for (m, o) in masks.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        kernel::transform(m, &grid, Mode::Both, Finish::None, o);
        normalize(o);
    }
    Ok(())
}

const CHUNK: usize = 1 << 15;

/// Turns signed squared distances (voxel units) into the normalised target.
fn normalize(o: &mut [f32]) {
    // Largest squared magnitudes inside (posdis^2) and outside (negdis^2);
    // -1 marks "class absent". Infinite magnitudes only occur when the
    // opposite class is absent.
    let (max_in, max_out) = o
        .par_chunks(CHUNK)
        .map(|c| {
            c.iter().fold((-1.0f32, -1.0f32), |(mi, mo), &v| {
                if v.is_sign_negative() {
                    (mi.max(-v), mo)
                } else {
                    (mi, mo.max(v))
                }
            })
        })
        .reduce(|| (-1.0, -1.0), |a, b| (a.0.max(b.0), a.1.max(b.1)));
    if max_in < 0.0 {
        o.par_chunks_mut(CHUNK).for_each(|c| c.fill(0.0));
        return;
    }
    if max_out < 0.0 {
        o.par_chunks_mut(CHUNK).for_each(|c| c.fill(-1.0));
        return;
    }
    // Squared distances are integers, exact in f32. The root and the
    // division run in f64 and round once to f32, so the target is the
    // correctly rounded value of the reference's f64 arithmetic (two f32
    // roundings would differ from it by an ulp here and there). Dividing,
    // not multiplying by a reciprocal, keeps the result in [-1, 1].
    let (s_in, s_out) = ((max_in as f64).sqrt(), (max_out as f64).sqrt());
    o.par_chunks_mut(CHUNK).for_each(|c| {
        for v in c {
            let x = *v as f64;
            *v = if x.is_sign_negative() {
                // Squared distance exactly 1 = a face neighbour is background.
                if x == -1.0 {
                    0.0
                } else {
                    (-(-x).sqrt() / s_in) as f32
                }
            } else {
                (x.sqrt() / s_out) as f32
            };
        }
    });
}
