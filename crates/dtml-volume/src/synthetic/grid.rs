//! The voxel grid of a case and the distance fields the shapes are
//! rasterised through.

use super::*;

/// The voxel grid in millimetres (x, y, z of voxel `(i, j, k)` is
/// `(i sx, j sy, k sz)`), where shapes are drawn.
pub(super) struct Grid {
    pub(super) shape: [usize; 3],
    pub(super) spacing: Vec3,
}

/// Signed distance fields (mm, negative inside) of the target and of the
/// distractors, and the intensity of the nearest distractor. They are
/// evaluated only near the structures; elsewhere they hold a large value.
pub(super) struct Fields {
    pub(super) target: Vec<f32>,
    pub(super) distractor: Vec<f32>,
    pub(super) level: Vec<f32>,
}

pub(super) const FAR: f32 = 1e6;

impl Fields {
    pub(super) fn new(n: usize) -> Fields {
        Fields {
            target: vec![FAR; n],
            distractor: vec![FAR; n],
            level: vec![0.0; n],
        }
    }

    /// Distractor distance carved away from the target: distractors come
    /// within `GAP_MM` of it but never touch it.
    pub(super) fn carved(&self, idx: usize) -> f32 {
        self.distractor[idx].max(GAP_MM as f32 - self.target[idx])
    }

    pub(super) fn target_voxels(&self) -> usize {
        self.target.iter().filter(|&&d| d <= 0.0).count()
    }

    pub(super) fn distractor_voxels(&self) -> usize {
        (0..self.distractor.len())
            .filter(|&i| self.carved(i) <= 0.0)
            .count()
    }
}

impl Grid {
    pub(super) fn point(&self, i: usize, j: usize, k: usize) -> Vec3 {
        [
            i as f64 * self.spacing[0],
            j as f64 * self.spacing[1],
            k as f64 * self.spacing[2],
        ]
    }

    /// Calls `f(index, point)` for every voxel whose grid position (mm)
    /// lies in the box `lo..=hi`.
    pub(super) fn for_box(&self, lo: Vec3, hi: Vec3, mut f: impl FnMut(usize, Vec3)) {
        let range = |a: usize| {
            let s = self.spacing[a];
            let first = (lo[a] / s).ceil().max(0.0) as usize;
            let last = (hi[a] / s).floor().min(self.shape[a] as f64 - 1.0);
            if last < 0.0 {
                (1, 0)
            } else {
                (first, last as usize)
            }
        };
        let (x0, x1) = range(0);
        let (y0, y1) = range(1);
        let (z0, z1) = range(2);
        let [nx, ny, _] = self.shape;
        for k in z0..=z1 {
            for j in y0..=y1 {
                for i in x0..=x1 {
                    f(i + nx * (j + ny * k), self.point(i, j, k));
                }
            }
        }
    }

    /// Lowers `field` to the blob's distance near it; where it does, sets
    /// `level` (if given) to the blob's intensity.
    pub(super) fn splat_blob(
        &self,
        blob: &Blob,
        field: &mut [f32],
        mut level: Option<(&mut [f32], f32)>,
    ) {
        let r = blob.extent() + self.margin();
        let lo = sub(blob.centre, [r; 3]);
        let hi = add(blob.centre, [r; 3]);
        self.for_box(lo, hi, |idx, p| {
            let d = blob.sdf(p) as f32;
            if d < field[idx] {
                field[idx] = d;
                if let Some((l, v)) = level.as_mut() {
                    l[idx] = *v;
                }
            }
        });
    }

    /// As [`Grid::splat_blob`], for a tube.
    pub(super) fn splat_tube(
        &self,
        tube: &Tube,
        field: &mut [f32],
        mut level: Option<(&mut [f32], f32)>,
    ) {
        let segments = tube.points.len().saturating_sub(1).max(1);
        for s in 0..segments {
            let a = tube.points[s];
            let b = *tube.points.get(s + 1).unwrap_or(&a);
            let ra = tube.r0 + (tube.r1 - tube.r0) * s as f64 / segments as f64;
            let rb = tube.r0 + (tube.r1 - tube.r0) * (s + 1) as f64 / segments as f64;
            let reach = ra.max(rb) + self.margin();
            let lo = std::array::from_fn(|k| a[k].min(b[k]) - reach);
            let hi = std::array::from_fn(|k| a[k].max(b[k]) + reach);
            let ab = sub(b, a);
            let len2 = dot(ab, ab);
            self.for_box(lo, hi, |idx, p| {
                let t = if len2 > 0.0 {
                    (dot(sub(p, a), ab) / len2).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let closest = add(a, scale(ab, t));
                let d = (norm(sub(p, closest)) - (ra + (rb - ra) * t)) as f32;
                if d < field[idx] {
                    field[idx] = d;
                    if let Some((l, v)) = level.as_mut() {
                        l[idx] = *v;
                    }
                }
            });
        }
    }

    /// How far outside a structure its distance must be known: the gap
    /// kept around the target plus the partial-volume band.
    pub(super) fn margin(&self) -> f64 {
        GAP_MM + 2.0 * self.spacing.iter().cloned().fold(0.0, f64::max)
    }
}
