//! Voxel-to-world geometry and the NIfTI header fields that carry it.
//!
//! The affine follows nibabel's priority: the sform when `sform_code > 0`,
//! else the qform when `qform_code > 0`, else nibabel's pixdim-only "base
//! affine" (x flipped, origin at the volume centre). Writing copies the
//! header fields unchanged, so a mask overlays its scan in any viewer.

use crate::axes::Xyz;
use serde::{Deserialize, Serialize};

/// A 4x4 voxel-to-world matrix (RAS+, mm), row-major.
pub type Affine = [[f64; 4]; 4];

/// `NIFTI_XFORM_SCANNER_ANAT`: the code we write for geometry we made.
pub const XFORM_SCANNER_ANAT: i16 = 1;
/// `NIFTI_UNITS_MM` in `xyzt_units`.
pub const UNITS_MM: u8 = 2;

/// The NIfTI-1 header fields that describe geometry, kept as read so they
/// are written back bit for bit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NiftiGeometry {
    pub qform_code: i16,
    pub sform_code: i16,
    /// `quatern_b`, `quatern_c`, `quatern_d`.
    pub quatern: [f32; 3],
    /// `qoffset_x`, `qoffset_y`, `qoffset_z`.
    pub qoffset: [f32; 3],
    /// `pixdim[0..8]`; `pixdim[0]` is qfac.
    pub pixdim: [f32; 8],
    /// `srow_x`, `srow_y`, `srow_z`.
    pub srow: [[f32; 4]; 3],
    pub xyzt_units: u8,
    pub dim_info: u8,
}

/// Geometry of a volume: the affine and spacing used for computation, and
/// the header fields used for writing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Geometry {
    pub affine: Affine,
    /// (sx, sy, sz) in mm, always positive.
    pub spacing: Xyz<f64>,
    pub header: NiftiGeometry,
}

impl Geometry {
    /// Geometry from NIfTI header fields, by nibabel's affine priority.
    pub fn from_header(header: NiftiGeometry, shape: Xyz<usize>) -> Geometry {
        let spacing = spacing_from_pixdim(&header.pixdim);
        let affine = if header.sform_code > 0 {
            sform_affine(&header.srow)
        } else if header.qform_code > 0 {
            qform_affine(&header)
        } else {
            base_affine(shape, spacing)
        };
        Geometry {
            affine,
            spacing,
            header,
        }
    }

    /// Geometry for an affine we computed (NRRD, synthetic data): sform and
    /// qform both set to it, scanner-anatomical code, millimetres.
    pub fn from_affine(affine: Affine) -> Geometry {
        let (quatern, qfac, zooms) = quaternion_from_affine(&affine);
        let mut pixdim = [0.0f32; 8];
        pixdim[0] = qfac as f32;
        for a in 0..3 {
            pixdim[a + 1] = zooms[a] as f32;
        }
        pixdim[4..].fill(1.0);
        let mut srow = [[0.0f32; 4]; 3];
        for r in 0..3 {
            for c in 0..4 {
                srow[r][c] = affine[r][c] as f32;
            }
        }
        let header = NiftiGeometry {
            qform_code: XFORM_SCANNER_ANAT,
            sform_code: XFORM_SCANNER_ANAT,
            quatern: quatern.map(|v| v as f32),
            qoffset: [
                affine[0][3] as f32,
                affine[1][3] as f32,
                affine[2][3] as f32,
            ],
            pixdim,
            srow,
            xyzt_units: UNITS_MM,
            dim_info: 0,
        };
        Geometry {
            affine,
            spacing: Xyz::from_xyz(zooms),
            header,
        }
    }

    /// Axis-aligned geometry with the given spacing and the origin at 0.
    pub fn from_spacing(spacing: Xyz<f64>) -> Geometry {
        let mut affine = identity();
        for (a, s) in spacing.xyz().into_iter().enumerate() {
            affine[a][a] = s;
        }
        Geometry::from_affine(affine)
    }

    /// The geometry of a sub-grid whose voxel (0, 0, 0) is voxel `offset` of
    /// this one (negative offsets describe padding). Header codes, spacing
    /// and orientation are kept; only the translations move.
    pub fn shifted(&self, offset: Xyz<i64>) -> Geometry {
        let mut out = self.clone();
        let o = offset.map(|v| v as f64);
        for r in 0..3 {
            let d: f64 = (0..3).map(|c| self.affine[r][c] * o[c]).sum();
            out.affine[r][3] += d;
        }
        // Move the stored sform and qform origins by the same world vector,
        // each computed from its own matrix so the two stay self-consistent.
        let s = sform_affine(&self.header.srow);
        let q = qform_affine(&self.header);
        for r in 0..3 {
            let ds: f64 = (0..3).map(|c| s[r][c] * o[c]).sum();
            let dq: f64 = (0..3).map(|c| q[r][c] * o[c]).sum();
            out.header.srow[r][3] = (self.header.srow[r][3] as f64 + ds) as f32;
            out.header.qoffset[r] = (self.header.qoffset[r] as f64 + dq) as f32;
        }
        out
    }

    /// How this grid's voxel-to-world map differs from `other`'s, in words
    /// (origin shift in mm, spacing, axis directions), or `None` when they
    /// agree to 1e-3 relative: two volumes on different grids must not be
    /// compared voxel by voxel.
    pub fn difference(&self, other: &Geometry) -> Option<String> {
        let (a, b) = (&self.affine, &other.affine);
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-3 * (1.0 + x.abs().max(y.abs()));
        if (0..3).all(|r| (0..4).all(|c| close(a[r][c], b[r][c]))) {
            return None;
        }
        let mut parts = Vec::new();
        let shift: f64 = (0..3)
            .map(|r| (a[r][3] - b[r][3]).powi(2))
            .sum::<f64>()
            .sqrt();
        if (0..3).any(|r| !close(a[r][3], b[r][3])) {
            parts.push(format!("origin {shift:.3} mm apart"));
        }
        if (0..3).any(|c| !close(self.spacing[c], other.spacing[c])) {
            parts.push(format!(
                "spacing {:?} vs {:?} mm",
                self.spacing, other.spacing
            ));
        }
        let axes: Vec<&str> = (0..3)
            .filter(|&c| {
                (0..3).any(|r| !close(a[r][c] / self.spacing[c], b[r][c] / other.spacing[c]))
            })
            .map(|c| crate::axes::AXIS_NAMES[c])
            .collect();
        if !axes.is_empty() {
            parts.push(format!(
                "direction of axis {} differs (flipped or rotated)",
                axes.join(", ")
            ));
        }
        Some(parts.join("; "))
    }
}

/// The 4x4 identity.
pub fn identity() -> Affine {
    let mut m = [[0.0; 4]; 4];
    for (i, row) in m.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    m
}

fn spacing_from_pixdim(pixdim: &[f32; 8]) -> Xyz<f64> {
    let mut s = [1.0; 3];
    for a in 0..3 {
        let v = (pixdim[a + 1] as f64).abs();
        if v.is_finite() && v > 0.0 {
            s[a] = v;
        } else {
            tracing::warn!(
                "pixdim[{}] = {} is not a usable spacing; using 1 mm",
                a + 1,
                pixdim[a + 1]
            );
        }
    }
    Xyz::from_xyz(s)
}

fn sform_affine(srow: &[[f32; 4]; 3]) -> Affine {
    let mut m = identity();
    for r in 0..3 {
        for c in 0..4 {
            m[r][c] = srow[r][c] as f64;
        }
    }
    m
}

/// The qform affine as nibabel computes it (quaternion normalised, qfac from
/// `pixdim[0]`, treated as 1 unless it is -1).
pub fn qform_affine(h: &NiftiGeometry) -> Affine {
    let [x, y, z] = h.quatern.map(|v| v as f64);
    let w = (1.0 - (x * x + y * y + z * z)).max(0.0).sqrt();
    let n = w * w + x * x + y * y + z * z;
    let rot = if n < f64::EPSILON {
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    } else {
        let s = 2.0 / n;
        let (xs, ys, zs) = (x * s, y * s, z * s);
        let (wx, wy, wz) = (w * xs, w * ys, w * zs);
        let (xx, xy, xz) = (x * xs, x * ys, x * zs);
        let (yy, yz, zz) = (y * ys, y * zs, z * zs);
        [
            [1.0 - (yy + zz), xy - wz, xz + wy],
            [xy + wz, 1.0 - (xx + zz), yz - wx],
            [xz - wy, yz + wx, 1.0 - (xx + yy)],
        ]
    };
    let mut zooms: [f64; 3] = std::array::from_fn(|a| (h.pixdim[a + 1] as f64).abs());
    if h.pixdim[0] == -1.0 {
        zooms[2] = -zooms[2];
    }
    let mut m = identity();
    for r in 0..3 {
        for c in 0..3 {
            m[r][c] = rot[r][c] * zooms[c];
        }
        m[r][3] = h.qoffset[r] as f64;
    }
    m
}

/// nibabel's fallback affine when neither form is set: x flipped, the
/// volume centre at the world origin.
pub fn base_affine(shape: Xyz<usize>, spacing: Xyz<f64>) -> Affine {
    let mut m = identity();
    let signs = [-1.0, 1.0, 1.0];
    for a in 0..3 {
        let z = spacing[a] * signs[a];
        m[a][a] = z;
        m[a][3] = -((shape[a] as f64 - 1.0) / 2.0) * z;
    }
    m
}

/// Quaternion (b, c, d), qfac and zooms of an affine's rotation part.
fn quaternion_from_affine(a: &Affine) -> ([f64; 3], f64, [f64; 3]) {
    let mut r = [[0.0; 3]; 3];
    let mut zooms = [1.0; 3];
    for c in 0..3 {
        let n = (0..3).map(|row| a[row][c] * a[row][c]).sum::<f64>().sqrt();
        zooms[c] = if n > 0.0 { n } else { 1.0 };
        for row in 0..3 {
            r[row][c] = if n > 0.0 {
                a[row][c] / n
            } else if row == c {
                1.0
            } else {
                0.0
            };
        }
    }
    let det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1])
        - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
        + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
    let qfac = if det < 0.0 {
        for row in r.iter_mut() {
            row[2] = -row[2];
        }
        -1.0
    } else {
        1.0
    };
    // Shepperd's method: pick the largest diagonal term for stability.
    let trace = r[0][0] + r[1][1] + r[2][2];
    let (w, x, y, z);
    if trace > 0.0 {
        let s = (trace + 1.0).sqrt() * 2.0;
        w = 0.25 * s;
        x = (r[2][1] - r[1][2]) / s;
        y = (r[0][2] - r[2][0]) / s;
        z = (r[1][0] - r[0][1]) / s;
    } else if r[0][0] > r[1][1] && r[0][0] > r[2][2] {
        let s = (1.0 + r[0][0] - r[1][1] - r[2][2]).sqrt() * 2.0;
        w = (r[2][1] - r[1][2]) / s;
        x = 0.25 * s;
        y = (r[0][1] + r[1][0]) / s;
        z = (r[0][2] + r[2][0]) / s;
    } else if r[1][1] > r[2][2] {
        let s = (1.0 + r[1][1] - r[0][0] - r[2][2]).sqrt() * 2.0;
        w = (r[0][2] - r[2][0]) / s;
        x = (r[0][1] + r[1][0]) / s;
        y = 0.25 * s;
        z = (r[1][2] + r[2][1]) / s;
    } else {
        let s = (1.0 + r[2][2] - r[0][0] - r[1][1]).sqrt() * 2.0;
        w = (r[1][0] - r[0][1]) / s;
        x = (r[0][2] + r[2][0]) / s;
        y = (r[1][2] + r[2][1]) / s;
        z = 0.25 * s;
    }
    let sign = if w < 0.0 { -1.0 } else { 1.0 };
    ([x * sign, y * sign, z * sign], qfac, zooms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &Affine, b: &Affine, tol: f64) -> bool {
        (0..4).all(|r| (0..4).all(|c| (a[r][c] - b[r][c]).abs() <= tol))
    }

    #[test]
    fn affine_survives_quaternion_round_trip() {
        // LPS-like orientation with a flip, anisotropic spacing, an offset.
        let affine = [
            [-0.625, 0.0, 0.0, 10.0],
            [0.0, -0.7, 0.0, -20.5],
            [0.0, 0.0, 2.5, 30.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let g = Geometry::from_affine(affine);
        let mut header = g.header.clone();
        header.sform_code = 0;
        let q = qform_affine(&header);
        assert!(close(&q, &affine, 1e-5), "{q:?}");
    }

    #[test]
    fn rotated_affine_round_trip() {
        let (s, c) = (0.3f64.sin(), 0.3f64.cos());
        let affine = [
            [c * 1.0, -s * 2.0, 0.0, 1.0],
            [s * 1.0, c * 2.0, 0.0, 2.0],
            [0.0, 0.0, -3.0, 3.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let mut h = Geometry::from_affine(affine).header;
        h.sform_code = 0;
        assert!(close(&qform_affine(&h), &affine, 1e-5));
    }

    #[test]
    fn shifted_moves_origin_along_axes() {
        let g = Geometry::from_spacing(Xyz::new(0.5, 1.0, 2.0));
        let s = g.shifted(Xyz::new(2, -1, 3));
        assert_eq!(s.affine[0][3], 1.0);
        assert_eq!(s.affine[1][3], -1.0);
        assert_eq!(s.affine[2][3], 6.0);
        assert_eq!(s.header.srow[2][3], 6.0);
        assert_eq!(s.header.qoffset[0], 1.0);
    }

    #[test]
    fn base_affine_matches_nibabel_convention() {
        let m = base_affine(Xyz::new(4, 5, 6), Xyz::new(2.0, 1.0, 3.0));
        assert_eq!(m[0][0], -2.0);
        assert_eq!(m[0][3], 3.0);
        assert_eq!(m[1][3], -2.0);
        assert_eq!(m[2][3], -7.5);
    }
}
