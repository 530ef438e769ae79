//! Two-stream batches: which cases an iteration sees, their augmented
//! patches, and the SDM targets of the labelled ones.
//!
//! Every random choice of iteration `t` is drawn from streams derived from
//! `(run seed, t)` alone, so a resumed run sees exactly the batches an
//! uninterrupted run would, with no sampler state to save beyond the seed
//! and the iteration.

use crate::cases::TrainingCase;
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use dtml_volume::prepare::GridBox;
use dtml_volume::{PreparedCase, Xyz};
use rand::RngExt;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

pub use crate::streams::{Stream, rng_for};

/// Cases a run trains on, in memory or read patch by patch
/// ([`crate::cases`]).
pub struct TrainingSet {
    pub labelled: Vec<TrainingCase>,
    pub unlabelled: Vec<TrainingCase>,
}

impl TrainingSet {
    /// A set whose cases are all in memory.
    pub fn in_memory(labelled: Vec<PreparedCase>, unlabelled: Vec<PreparedCase>) -> TrainingSet {
        TrainingSet {
            labelled: labelled.into_iter().map(TrainingCase::resident).collect(),
            unlabelled: unlabelled.into_iter().map(TrainingCase::resident).collect(),
        }
    }
}

/// One iteration's input on the host: labelled patches first.
#[derive(Debug, Clone)]
pub struct HostBatch {
    pub iteration: usize,
    /// Patches, `(n, Z, Y, X)` with x fastest.
    pub image: Vec<f32>,
    /// Labels of the first `labelled` patches, 0/1.
    pub label: Vec<u8>,
    /// Normalised SDM targets of the labelled patches, when the method
    /// trains on them.
    pub sdm: Option<Vec<f32>>,
    pub n: usize,
    pub labelled: usize,
    /// Case indices used (labelled list, then unlabelled list).
    pub cases: Vec<usize>,
}

/// The `k`-th item of an endless stream made of fresh permutations of
/// `0..n`, one per pass.
fn stream_item(seed: u64, stream: Stream, n: usize, k: usize) -> usize {
    let pass = k / n;
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng_for(seed, stream, pass as u64));
    order[k % n]
}

/// Where one patch of a batch comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchSource {
    /// From the labelled list (else the unlabelled one).
    pub labelled: bool,
    /// Index into that list.
    pub case: usize,
    /// The augmentation and crop applied to the case.
    pub view: Augmentation,
}

/// Draws which cases iteration `t` sees and how each is augmented:
/// labelled patches first.
pub fn plan_for(t: usize, cfg: &TrainConfig, set: &TrainingSet) -> Result<Vec<PatchSource>> {
    let (nl, nu) = cfg.batch_shape();
    if set.labelled.is_empty() {
        return Err(TrainError::Config("no labelled cases to train on".into()));
    }
    if nu > 0 && set.unlabelled.is_empty() {
        return Err(TrainError::Config(format!(
            "method {} needs unlabelled cases and the dataset has none",
            cfg.method.name()
        )));
    }
    let mut aug = rng_for(cfg.seed, Stream::Augment, t as u64);
    Ok((0..nl + nu)
        .map(|i| {
            let labelled = i < nl;
            let (pool, stream, k) = if labelled {
                (&set.labelled, Stream::LabelledOrder, t * nl + i)
            } else {
                (&set.unlabelled, Stream::UnlabelledOrder, t * nu + (i - nl))
            };
            let case = stream_item(cfg.seed, stream, pool.len(), k);
            let view = Augmentation::draw(&mut aug, pool[case].shape, cfg.patch);
            PatchSource {
                labelled,
                case,
                view,
            }
        })
        .collect())
}

/// Builds the batch of 0-based iteration `t`.
pub fn batch_for(t: usize, cfg: &TrainConfig, set: &TrainingSet) -> Result<HostBatch> {
    assemble(t, cfg, set, &plan_for(t, cfg, set)?)
}

/// Cuts and augments the patches `plan` names (labelled ones first) and
/// computes the SDM targets when the method trains on them.
pub fn assemble(
    t: usize,
    cfg: &TrainConfig,
    set: &TrainingSet,
    plan: &[PatchSource],
) -> Result<HostBatch> {
    let nl = plan.iter().take_while(|p| p.labelled).count();
    if plan[nl..].iter().any(|p| p.labelled) {
        return Err(TrainError::Other(
            "batch plan: labelled patches must come first".into(),
        ));
    }
    let voxels = cfg.patch.voxels();
    let n = plan.len();
    let mut image = vec![0.0f32; n * voxels];
    let mut label = vec![0u8; nl * voxels];
    for (i, source) in plan.iter().enumerate() {
        let pool = if source.labelled {
            &set.labelled
        } else {
            &set.unlabelled
        };
        let case = pool.get(source.case).ok_or_else(|| {
            TrainError::Other(format!(
                "batch plan names case {} of {}",
                source.case,
                pool.len()
            ))
        })?;
        let view = &source.view;
        let window = case.window(view.source_box(case.shape, cfg.patch), source.labelled)?;
        view.extract(
            &window.image,
            window.window,
            case.shape,
            cfg.patch,
            &mut image[i * voxels..(i + 1) * voxels],
            0.0,
        );
        if let Some(src) = &window.label {
            view.extract(
                src,
                window.window,
                case.shape,
                cfg.patch,
                &mut label[i * voxels..(i + 1) * voxels],
                0,
            );
        }
    }
    let sdm = if cfg.plugin().needs_sdm_target() {
        Some(dtml_edt::normalized_sdm_batch(
            &label,
            nl,
            &cfg.patch.zyx(),
        )?)
    } else {
        None
    };
    Ok(HostBatch {
        iteration: t,
        image,
        label,
        sdm,
        n,
        labelled: nl,
        cases: plan.iter().map(|p| p.case).collect(),
    })
}

/// A random rot90 in the x-y plane, a flip of x or y, and a crop origin in
/// the transformed volume (negative or past the end: zero padding), as the
/// reference's `RandomRotFlip` then `RandomCrop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Augmentation {
    /// Quarter turns, as `np.rot90(volume, k)` over axes (x, y).
    pub quarter_turns: usize,
    /// Flip axis after the turn: 0 = x, 1 = y.
    pub flip_axis: usize,
    /// Crop origin in the turned volume.
    pub origin: Xyz<i64>,
}

impl Augmentation {
    /// Draws a transform for a volume of `shape` and a crop of `patch`.
    pub fn draw(rng: &mut ChaCha8Rng, shape: Xyz<usize>, patch: Xyz<usize>) -> Augmentation {
        let quarter_turns = rng.random_range(0..4usize);
        let flip_axis = rng.random_range(0..2usize);
        let turned = turned_shape(shape, quarter_turns);
        let origin = Xyz::from_fn(|a| {
            let slack = turned[a] as i64 - patch[a] as i64;
            let (lo, hi) = if slack >= 0 { (0, slack) } else { (slack, 0) };
            rng.random_range(lo..=hi)
        });
        Augmentation {
            quarter_turns,
            flip_axis,
            origin,
        }
    }

    /// Source voxel of turned-and-flipped coordinates `(i, j)` in x-y.
    fn source_xy(&self, shape: Xyz<usize>, mut i: usize, mut j: usize) -> (usize, usize) {
        let turned = turned_shape(shape, self.quarter_turns);
        if self.flip_axis == 0 {
            i = turned[0] - 1 - i;
        } else {
            j = turned[1] - 1 - j;
        }
        // Undo the turns one by one: np.rot90 gives r[i, j] = m[j, B - 1 - i]
        // for m of shape (A, B).
        for r in (0..self.quarter_turns).rev() {
            let before = turned_shape(shape, r);
            let (ni, nj) = (j, before[1] - 1 - i);
            i = ni;
            j = nj;
        }
        (i, j)
    }

    /// The box of a volume of `shape` that the crop of `patch` reads: the
    /// crop clipped to the turned volume, mapped back (a quarter turn or a
    /// flip maps opposite corners of a box to opposite corners).
    pub fn source_box(&self, shape: Xyz<usize>, patch: Xyz<usize>) -> GridBox {
        let turned = turned_shape(shape, self.quarter_turns);
        let range = |a: usize| {
            let lo = self.origin[a].max(0);
            let hi = (self.origin[a] + patch[a] as i64).min(turned[a] as i64);
            (lo as usize, hi.max(lo) as usize)
        };
        let ([i0, j0, z0], [i1, j1, z1]) = {
            let r = [range(0), range(1), range(2)];
            ([r[0].0, r[1].0, r[2].0], [r[0].1, r[1].1, r[2].1])
        };
        if i1 == i0 || j1 == j0 || z1 == z0 {
            return GridBox {
                start: Xyz::splat(0),
                size: Xyz::splat(0),
            };
        }
        let (xa, ya) = self.source_xy(shape, i0, j0);
        let (xb, yb) = self.source_xy(shape, i1 - 1, j1 - 1);
        GridBox {
            start: Xyz::new(xa.min(xb), ya.min(yb), z0),
            size: Xyz::new(xa.abs_diff(xb) + 1, ya.abs_diff(yb) + 1, z1 - z0),
        }
    }

    /// Writes the transformed crop of a volume of `shape` into `out` (of
    /// `patch`), `fill` outside the volume; `src` holds the volume's box
    /// `window`, which covers [`Self::source_box`].
    pub fn extract<T: Copy + Send + Sync>(
        &self,
        src: &[T],
        window: GridBox,
        shape: Xyz<usize>,
        patch: Xyz<usize>,
        out: &mut [T],
        fill: T,
    ) {
        let nz = shape.z();
        let [wx, wy, _] = window.size.xyz();
        let [sx, sy, sz] = window.start.xyz();
        let turned = turned_shape(shape, self.quarter_turns);
        let (px, py) = (patch.x(), patch.y());
        for (k, plane) in out.chunks_exact_mut(px * py).enumerate() {
            let z = self.origin[2] + k as i64;
            for (jj, row) in plane.chunks_exact_mut(px).enumerate() {
                let j = self.origin[1] + jj as i64;
                for (ii, v) in row.iter_mut().enumerate() {
                    let i = self.origin[0] + ii as i64;
                    let inside = z >= 0
                        && (z as usize) < nz
                        && j >= 0
                        && (j as usize) < turned[1]
                        && i >= 0
                        && (i as usize) < turned[0];
                    *v = if inside {
                        let (x, y) = self.source_xy(shape, i as usize, j as usize);
                        src[((z as usize - sz) * wy + (y - sy)) * wx + (x - sx)]
                    } else {
                        fill
                    };
                }
            }
        }
    }
}

/// Shape after `k` quarter turns in x-y.
fn turned_shape(shape: Xyz<usize>, k: usize) -> Xyz<usize> {
    if k % 2 == 1 {
        Xyz::new(shape.y(), shape.x(), shape.z())
    } else {
        shape
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// np.rot90 / np.flip on an (x, y) grid written out by hand.
    fn reference(src: &[u32], shape: Xyz<usize>, a: &Augmentation) -> (Vec<u32>, Xyz<usize>) {
        let [mut nx, mut ny, nz] = shape.xyz();
        let mut v = src.to_vec();
        for _ in 0..a.quarter_turns {
            // r[i, j] = m[j, ny - 1 - i], r has shape (ny, nx)
            let mut r = vec![0; v.len()];
            for z in 0..nz {
                for j in 0..nx {
                    for i in 0..ny {
                        r[(z * nx + j) * ny + i] = v[(z * ny + (ny - 1 - i)) * nx + j];
                    }
                }
            }
            v = r;
            std::mem::swap(&mut nx, &mut ny);
        }
        let mut f = v.clone();
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    let (sx, sy) = if a.flip_axis == 0 {
                        (nx - 1 - x, y)
                    } else {
                        (x, ny - 1 - y)
                    };
                    f[(z * ny + y) * nx + x] = v[(z * ny + sy) * nx + sx];
                }
            }
        }
        (f, Xyz::new(nx, ny, nz))
    }

    #[test]
    fn transforms_match_numpy_rot90_and_flip() {
        let shape = Xyz::new(5, 3, 2);
        let src: Vec<u32> = (0..30).collect();
        for k in 0..4 {
            for flip in 0..2 {
                let a = Augmentation {
                    quarter_turns: k,
                    flip_axis: flip,
                    origin: Xyz::splat(0),
                };
                let (want, tshape) = reference(&src, shape, &a);
                let mut got = vec![u32::MAX; 30];
                a.extract(
                    &src,
                    GridBox::whole(shape),
                    shape,
                    tshape,
                    &mut got,
                    u32::MAX,
                );
                assert_eq!(got, want, "k = {k}, flip {flip}");
            }
        }
    }

    #[test]
    fn crops_outside_the_volume_are_filled() {
        let shape = Xyz::new(2, 2, 1);
        let src = vec![1u8, 2, 3, 4];
        let a = Augmentation {
            quarter_turns: 0,
            flip_axis: 1,
            origin: Xyz::new(-1, 0, 0),
        };
        let mut out = vec![9u8; 4 * 2];
        a.extract(
            &src,
            GridBox::whole(shape),
            shape,
            Xyz::new(4, 2, 1),
            &mut out,
            0,
        );
        // y flipped: rows (3, 4) then (1, 2), shifted right by one.
        assert_eq!(out, vec![0, 3, 4, 0, 0, 1, 2, 0]);
    }

    #[test]
    fn crops_from_the_source_box_equal_crops_from_the_whole_volume() {
        let mut rng = rng_for(11, Stream::Augment, 0);
        for trial in 0..300 {
            let shape = Xyz::new(
                rng.random_range(1..12usize),
                rng.random_range(1..12usize),
                rng.random_range(1..6usize),
            );
            let patch = Xyz::new(
                rng.random_range(1..14usize),
                rng.random_range(1..14usize),
                rng.random_range(1..8usize),
            );
            let a = Augmentation::draw(&mut rng, shape, patch);
            let src: Vec<u32> = (0..shape.voxels() as u32).collect();
            let mut whole = vec![0u32; patch.voxels()];
            a.extract(
                &src,
                GridBox::whole(shape),
                shape,
                patch,
                &mut whole,
                u32::MAX,
            );
            let b = a.source_box(shape, patch);
            assert!(b.fits(shape), "trial {trial}: {b:?} outside {shape:?}");
            let mut window = Vec::new();
            for z in b.start.z()..b.start.z() + b.size.z() {
                for y in b.start.y()..b.start.y() + b.size.y() {
                    let row = (z * shape.y() + y) * shape.x() + b.start.x();
                    window.extend_from_slice(&src[row..row + b.size.x()]);
                }
            }
            let mut part = vec![0u32; patch.voxels()];
            a.extract(&window, b, shape, patch, &mut part, u32::MAX);
            assert_eq!(part, whole, "trial {trial}: {a:?} {shape:?} {patch:?}");
            // The box is the smallest: every voxel of it is read.
            let read: std::collections::HashSet<u32> =
                whole.iter().copied().filter(|&v| v != u32::MAX).collect();
            assert_eq!(read.len(), b.size.voxels(), "trial {trial}");
        }
    }

    #[test]
    fn draws_cover_every_transform_and_stay_in_range() {
        let mut rng = rng_for(7, Stream::Augment, 0);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..400 {
            let a = Augmentation::draw(&mut rng, Xyz::new(20, 12, 8), Xyz::new(16, 16, 8));
            seen.insert((a.quarter_turns, a.flip_axis));
            let turned = turned_shape(Xyz::new(20, 12, 8), a.quarter_turns);
            for ax in 0..3 {
                let slack = turned[ax] as i64 - [16, 16, 8][ax] as i64;
                assert!(a.origin[ax] >= slack.min(0) && a.origin[ax] <= slack.max(0));
            }
        }
        assert_eq!(seen.len(), 8);
    }

    #[test]
    fn streams_visit_every_case_once_per_pass() {
        for pass in 0..3 {
            let mut got: Vec<usize> = (0..7)
                .map(|k| stream_item(3, Stream::LabelledOrder, 7, pass * 7 + k))
                .collect();
            got.sort();
            assert_eq!(got, (0..7).collect::<Vec<_>>());
        }
    }
}
