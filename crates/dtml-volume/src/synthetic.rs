//! A seeded generator of small synthetic MR-like datasets in the Medical
//! Segmentation Decathlon layout: the built-in default data for training
//! runs and tests, made in about a second without downloading anything.
//!
//! Every element is there to make the task resemble a real one (think left
//! atrium in a cardiac MR) so that a model must learn shape and context, not
//! an intensity threshold:
//!
//! - **Target** (label 1): one smooth irregular blob (an ellipsoid whose
//!   radius is modulated by a few low-frequency sinusoids of direction)
//!   with 1-3 curved tubes (radius 1.5-3 voxels) that leave its surface and
//!   run outward, like pulmonary veins. It is brighter than tissue on
//!   average, so it is learnable.
//! - **Distractors** (label 0): 1-3 bright blobs and 2-5 tubes within ±10%
//!   of the target's intensity, together about as large as the target, some
//!   pressed against it with a gap of 2.5 mm (never touching), so intensity
//!   alone cannot separate them: the best global threshold scores a Dice of
//!   about 0.6-0.75.
//! - **Tissue**: a body cross-section (dark air outside, as in MR) filled
//!   with a smooth random texture, so the background is not flat.
//! - **Bias field**: a smooth multiplicative low-order polynomial (±20-30%),
//!   as coil inhomogeneity makes, so the same tissue differs across the
//!   volume and intensity normalisation matters.
//! - **Rician noise**: the magnitude of complex Gaussian noise added to the
//!   signal, `sqrt((s + n1)^2 + n2^2)`, which is how magnitude MR images
//!   are noisy (a Rayleigh floor in the air, not zero).
//! - **Geometry**: anisotropic spacing (default 1 x 1 x 2 mm, varied a few
//!   percent per case) and a scanner-like affine with x and y flipped (LPS
//!   data in a RAS affine) and a non-zero origin, so geometry handling and
//!   per-case resampling are exercised. All shapes are built in millimetres,
//!   so they are round in space, not in voxels.
//! - **Storage**: images as `i16` (0 to about 1000) to exercise integer
//!   reading; labels as `u8`. Image files carry the nnU-Net channel suffix
//!   `_0000` while `dataset.json` names them without it, deliberately, since
//!   the dataset reader accepts both.
//!
//! **Difficulty** (`SyntheticConfig::difficulty`, 0 to 1; 0, the default,
//! is the dataset above, byte for byte) makes the task harder the way real
//! LA scans are hard, each effect scaled by it: lower target-to-tissue
//! contrast (structures fall up to 50 % of the way to the tissue level),
//! a per-case intensity drift (a gamma curve and a slow slice-to-slice gain
//! wave along z, which z-scoring cannot undo), a bias field up to 2.5x as
//! strong, up to 2x the noise, up to 2x the distractor volume, and 1-3
//! extra thin tubes (0.8-1.5 voxels) attached to the target. Its draws come
//! from a stream of their own, so difficulty 0 leaves every other draw as
//! it was.
//!
//! Each case draws from its own ChaCha8 stream seeded by `(seed, case
//! index)`, so the data do not depend on thread scheduling or on how many
//! cases are made. Test cases continue the numbering after the training
//! cases and come with labels (`labelsTs/`) so evaluation is possible.
//!
//! ```
//! use dtml_volume::synthetic::{SyntheticConfig, generate_case};
//! let config = SyntheticConfig { shape: [32, 32, 24], ..SyntheticConfig::default() };
//! let (image, label) = generate_case(&config, 0).unwrap();
//! assert_eq!(image.shape, [32, 32, 24]);
//! assert_eq!(label.shape, image.shape);
//! ```

use crate::atomic::write_bytes_atomic;
use crate::error::{Result, VolumeError};
use crate::geometry::{Geometry, identity};
use crate::nii::write_nifti;
use crate::volume::{Volume, VoxelData};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::f64::consts::PI;
use std::path::Path;

/// Smallest and largest size accepted per axis.
pub const MIN_SIZE: usize = 16;
/// Largest size accepted per axis.
pub const MAX_SIZE: usize = 512;
/// Most cases (training plus test) one dataset may hold.
pub const MAX_CASES: usize = 10_000;

/// Image intensity of a signal of 1 (about the target's brightness).
const INTENSITY_SCALE: f64 = 800.0;
/// Distractors are kept at least this far (mm) from the target.
const GAP_MM: f64 = 2.5;

/// What to generate. Sizes and spacings are in (x, y, z) order.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticConfig {
    /// Voxels along x, y, z; each in 16..=512.
    pub shape: [usize; 3],
    /// Number of training cases (at least 1).
    pub train_cases: usize,
    /// Number of test cases (with labels in `labelsTs/`).
    pub test_cases: usize,
    /// Seed of the whole dataset; each case derives its own stream from it.
    pub seed: u64,
    /// Nominal spacing in mm; each case varies it by up to ±5%.
    pub spacing: [f64; 3],
    /// How hard the task is, 0 (the default data) to 1: see the module doc.
    pub difficulty: f64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            shape: [64, 64, 48],
            train_cases: 20,
            test_cases: 5,
            seed: 1337,
            spacing: [1.0, 1.0, 2.0],
            difficulty: 0.0,
        }
    }
}

impl SyntheticConfig {
    /// Checks sizes, spacing and case counts; `path` names the output in
    /// the error.
    pub fn validate(&self, path: &Path) -> Result<()> {
        for (a, &n) in self.shape.iter().enumerate() {
            if !(MIN_SIZE..=MAX_SIZE).contains(&n) {
                return Err(VolumeError::invalid(
                    path,
                    format!(
                        "synthetic shape {:?}: axis {} has {n} voxels; each axis must have {MIN_SIZE} to {MAX_SIZE}",
                        self.shape,
                        ["x", "y", "z"][a]
                    ),
                ));
            }
        }
        if self
            .spacing
            .iter()
            .any(|&s| !s.is_finite() || s <= 0.0 || s > 100.0)
        {
            return Err(VolumeError::invalid(
                path,
                format!(
                    "synthetic spacing {:?} mm: each must be positive, finite and at most 100",
                    self.spacing
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.difficulty) {
            return Err(VolumeError::invalid(
                path,
                format!(
                    "synthetic difficulty {}: must be between 0 and 1",
                    self.difficulty
                ),
            ));
        }
        if self.train_cases == 0 {
            return Err(VolumeError::invalid(
                path,
                "synthetic dataset needs at least one training case",
            ));
        }
        if self.train_cases.saturating_add(self.test_cases) > MAX_CASES {
            return Err(VolumeError::invalid(
                path,
                format!(
                    "synthetic dataset of {} training and {} test cases: at most {MAX_CASES} in all",
                    self.train_cases, self.test_cases
                ),
            ));
        }
        Ok(())
    }

    /// Number of cases, training then test.
    pub fn total_cases(&self) -> usize {
        self.train_cases + self.test_cases
    }
}

/// The name of case `index`, e.g. `synth_007`.
pub fn case_name(index: usize) -> String {
    format!("synth_{index:03}")
}

/// Generates case `index` (training cases first, then test cases): the
/// `i16` image and its `u8` label (0 background, 1 target) on the same
/// geometry. Deterministic in `(config, index)`.
pub fn generate_case(config: &SyntheticConfig, index: usize) -> Result<(Volume, Volume)> {
    // Only the grid matters here; case counts are checked by write_dataset.
    let grid_only = SyntheticConfig {
        train_cases: 1,
        test_cases: 0,
        ..config.clone()
    };
    grid_only.validate(Path::new("<synthetic>"))?;
    let mut rng = case_rng(config.seed, index);
    let mut hard = hard_rng(config.seed, index);
    let case = Case::draw(&mut rng, &mut hard, config);
    tracing::debug!(
        "synthetic case {index}: {} distractor blobs, {} distractor tubes",
        case.distractor_blobs,
        case.distractor_tubes
    );
    let (image, label) = case.render(&mut rng);
    let geometry = Geometry::from_affine(case.affine);
    let image = Volume::new(VoxelData::I16(image), config.shape, geometry.clone())?;
    let label = Volume::new(VoxelData::U8(label), config.shape, geometry)?;
    Ok((image, label))
}

/// Writes a whole dataset under `out`: `dataset.json`, `imagesTr/`,
/// `labelsTr/`, `imagesTs/`, `labelsTs/`. Cases are made in parallel; every
/// file is written atomically and `dataset.json` last, so its presence
/// means the dataset is complete.
///
/// `out` must be new, empty, or a synthetic dataset written here before
/// (its `dataset.json` says so), whose case files are then replaced:
/// generating never mixes into, or overwrites the case list of, a real
/// dataset.
pub fn write_dataset(out: &Path, config: &SyntheticConfig) -> Result<()> {
    config.validate(out)?;
    clear_target(out)?;
    for dir in ["imagesTr", "labelsTr", "imagesTs", "labelsTs"] {
        let d = out.join(dir);
        std::fs::create_dir_all(&d).map_err(|e| VolumeError::io(&d, e))?;
    }
    (0..config.total_cases())
        .into_par_iter()
        .try_for_each(|index| -> Result<()> {
            let (image, label) = generate_case(config, index)?;
            let (images, labels) = if index < config.train_cases {
                ("imagesTr", "labelsTr")
            } else {
                ("imagesTs", "labelsTs")
            };
            let name = case_name(index);
            write_nifti(
                &out.join(images).join(format!("{name}_0000.nii.gz")),
                &image,
            )?;
            write_nifti(&out.join(labels).join(format!("{name}.nii.gz")), &label)
        })?;
    let json = dataset_json(config);
    let mut bytes = serde_json::to_vec_pretty(&json)
        .map_err(|e| VolumeError::invalid(out.join("dataset.json"), format!("serialising: {e}")))?;
    bytes.push(b'\n');
    write_bytes_atomic(&out.join("dataset.json"), &bytes)
}

/// How `dataset.json`'s `reference` of a generated dataset begins.
const REFERENCE_PREFIX: &str = "dtml-volume synthetic generator";

/// Checks `out` may be written (see [`write_dataset`]) and removes the case
/// files of an earlier synthetic dataset there, so none outlives it.
fn clear_target(out: &Path) -> Result<()> {
    let mut entries = match std::fs::read_dir(out) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(VolumeError::io(out, e)),
    };
    if entries.next().is_none() {
        return Ok(());
    }
    let json = out.join("dataset.json");
    let ours = std::fs::read(&json)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| {
            v["name"] == "synthetic"
                && v["reference"]
                    .as_str()
                    .is_some_and(|r| r.starts_with(REFERENCE_PREFIX))
        });
    if !ours {
        return Err(VolumeError::invalid(
            out,
            "the folder is not empty and is not a synthetic dataset written by `dtml generate`; refusing to write into it (choose a new or empty folder)",
        ));
    }
    for dir in ["imagesTr", "labelsTr", "imagesTs", "labelsTs"] {
        let d = out.join(dir);
        let Ok(files) = std::fs::read_dir(&d) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.starts_with("synth_") && name.ends_with(".nii.gz") {
                std::fs::remove_file(f.path()).map_err(|e| VolumeError::io(f.path(), e))?;
            }
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct TrainingEntry {
    image: String,
    label: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DatasetJson {
    name: String,
    description: String,
    reference: String,
    tensor_image_size: String,
    modality: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    num_training: usize,
    num_test: usize,
    training: Vec<TrainingEntry>,
    test: Vec<String>,
}

fn dataset_json(config: &SyntheticConfig) -> DatasetJson {
    let [nx, ny, nz] = config.shape;
    DatasetJson {
        name: "synthetic".into(),
        description: "Synthetic MR-like volumes: an irregular blob with attached tubes (target) \
                      among bright distractor blobs and tubes, textured tissue, bias field and \
                      Rician noise. Image files carry the nnU-Net channel suffix _0000."
            .into(),
        reference: format!(
            "{REFERENCE_PREFIX}, seed {}, shape {nx}x{ny}x{nz}, spacing {:?} mm",
            config.seed, config.spacing
        ),
        tensor_image_size: "3D".into(),
        modality: BTreeMap::from([("0".into(), "MRI".into())]),
        labels: BTreeMap::from([
            ("0".into(), "background".into()),
            ("1".into(), "target".into()),
        ]),
        num_training: config.train_cases,
        num_test: config.test_cases,
        training: (0..config.train_cases)
            .map(|i| TrainingEntry {
                image: format!("./imagesTr/{}.nii.gz", case_name(i)),
                label: format!("./labelsTr/{}.nii.gz", case_name(i)),
            })
            .collect(),
        test: (config.train_cases..config.total_cases())
            .map(|i| format!("./imagesTs/{}.nii.gz", case_name(i)))
            .collect(),
    }
}

/// The generator of case `index`: its seed holds the dataset seed, the
/// index and a version tag, so streams never overlap.
fn case_rng(seed: u64, index: usize) -> ChaCha8Rng {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s[8..16].copy_from_slice(&(index as u64).to_le_bytes());
    s[16..].copy_from_slice(b"dtml-synthetic-1");
    ChaCha8Rng::from_seed(s)
}

/// The stream of case `index`'s difficulty effects, apart from
/// [`case_rng`] so that difficulty 0 changes none of its draws.
fn hard_rng(seed: u64, index: usize) -> ChaCha8Rng {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s[8..16].copy_from_slice(&(index as u64).to_le_bytes());
    s[16..].copy_from_slice(b"dtml-synth-hard1");
    ChaCha8Rng::from_seed(s)
}

/// The per-case effects of [`SyntheticConfig::difficulty`]; all identity at 0.
struct Hardness {
    /// Structures' levels move this fraction of the way to the tissue's.
    contrast_loss: f64,
    /// Exponent of the per-case gamma curve applied to the signal.
    gamma: f64,
    /// Amplitude, period (slices) and phase of the gain wave along z.
    wave: (f64, f64, f64),
    /// Multiplier of the bias field amplitude and of the noise level.
    bias_gain: f64,
    noise_gain: f64,
    /// Multiplier of the distractor volume goal.
    distractor_gain: f64,
    /// Extra thin target tubes.
    thin_tubes: usize,
}

impl Hardness {
    fn draw(rng: &mut ChaCha8Rng, d: f64, slices: usize) -> Hardness {
        Hardness {
            contrast_loss: d * uniform(rng, 0.3, 0.5),
            gamma: (d * 0.3 * gaussian(rng)).exp(),
            wave: (
                d * uniform(rng, 0.05, 0.12),
                slices as f64 * uniform(rng, 0.5, 1.5),
                uniform(rng, 0.0, 2.0 * PI),
            ),
            bias_gain: 1.0 + 1.5 * d,
            noise_gain: 1.0 + d,
            distractor_gain: 1.0 + d,
            thin_tubes: if d > 0.0 {
                (d * uniform(rng, 1.0, 3.0)).round().max(1.0) as usize
            } else {
                0
            },
        }
    }
}

type Vec3 = [f64; 3];

fn add(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

fn sub(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn scale(a: Vec3, s: f64) -> Vec3 {
    [a[0] * s, a[1] * s, a[2] * s]
}

fn dot(a: Vec3, b: Vec3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn norm(a: Vec3) -> f64 {
    dot(a, a).sqrt()
}

fn normalize(a: Vec3) -> Vec3 {
    let n = norm(a);
    if n > 1e-12 {
        scale(a, 1.0 / n)
    } else {
        [1.0, 0.0, 0.0]
    }
}

fn uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// Two independent standard normal samples (Box-Muller).
fn gaussian_pair(rng: &mut ChaCha8Rng) -> (f64, f64) {
    let u1 = 1.0 - rng.random::<f64>(); // (0, 1]: ln is finite
    let u2 = rng.random::<f64>();
    let r = (-2.0 * u1.ln()).sqrt();
    let (s, c) = (2.0 * PI * u2).sin_cos();
    (r * c, r * s)
}

fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    gaussian_pair(rng).0
}

fn unit_vector(rng: &mut ChaCha8Rng) -> Vec3 {
    let (a, b) = gaussian_pair(rng);
    normalize([a, b, gaussian(rng)])
}

/// A uniformly random rotation (rows are the body's axes in grid space).
fn random_rotation(rng: &mut ChaCha8Rng) -> [Vec3; 3] {
    let (a, b) = gaussian_pair(rng);
    let (c, d) = gaussian_pair(rng);
    let n = (a * a + b * b + c * c + d * d).sqrt().max(1e-12);
    let (w, x, y, z) = (a / n, b / n, c / n, d / n);
    [
        [
            1.0 - 2.0 * (y * y + z * z),
            2.0 * (x * y - w * z),
            2.0 * (x * z + w * y),
        ],
        [
            2.0 * (x * y + w * z),
            1.0 - 2.0 * (x * x + z * z),
            2.0 * (y * z - w * x),
        ],
        [
            2.0 * (x * z - w * y),
            2.0 * (y * z + w * x),
            1.0 - 2.0 * (x * x + y * y),
        ],
    ]
}

/// An ellipsoid whose radius is modulated by low-frequency sinusoids of
/// direction: smooth, irregular, star-shaped around its centre.
struct Blob {
    centre: Vec3,
    rot: [Vec3; 3],
    axes: Vec3,
    /// (frequency vector, amplitude, phase) of each sinusoid.
    waves: Vec<(Vec3, f64, f64)>,
}

impl Blob {
    fn draw(rng: &mut ChaCha8Rng, centre: Vec3, radius: f64) -> Blob {
        let rot = random_rotation(rng);
        let axes = [
            radius * uniform(rng, 0.8, 1.25),
            radius * uniform(rng, 0.8, 1.25),
            radius * uniform(rng, 0.8, 1.25),
        ];
        let count = rng.random_range(3..=5);
        let waves = (0..count)
            .map(|_| {
                let f = scale(unit_vector(rng), uniform(rng, 1.0, 3.0));
                (f, uniform(rng, 0.05, 0.1), uniform(rng, 0.0, 2.0 * PI))
            })
            .collect();
        Blob {
            centre,
            rot,
            axes,
            waves,
        }
    }

    fn modulation(&self, dir: Vec3) -> f64 {
        1.0 + self
            .waves
            .iter()
            .map(|&(f, a, ph)| a * (dot(f, dir) + ph).sin())
            .sum::<f64>()
    }

    fn mean_axis(&self) -> f64 {
        (self.axes[0] + self.axes[1] + self.axes[2]) / 3.0
    }

    /// Approximate signed distance (mm), negative inside.
    fn sdf(&self, p: Vec3) -> f64 {
        let d = sub(p, self.centre);
        let q = [
            dot(self.rot[0], d) / self.axes[0],
            dot(self.rot[1], d) / self.axes[1],
            dot(self.rot[2], d) / self.axes[2],
        ];
        let rho = norm(q);
        let m = if rho > 1e-12 {
            self.modulation(scale(q, 1.0 / rho))
        } else {
            1.0
        };
        (rho - m) * self.mean_axis()
    }

    /// Largest distance of the surface from the centre.
    fn extent(&self) -> f64 {
        let amp: f64 = self.waves.iter().map(|w| w.1).sum();
        self.axes.iter().cloned().fold(0.0, f64::max) * (1.0 + amp)
    }

    /// Where the ray from the centre along `dir` leaves the blob.
    fn surface_point(&self, dir: Vec3) -> Vec3 {
        let q = [
            dot(self.rot[0], dir) / self.axes[0],
            dot(self.rot[1], dir) / self.axes[1],
            dot(self.rot[2], dir) / self.axes[2],
        ];
        let n = norm(q);
        let t = self.modulation(scale(q, 1.0 / n)) / n;
        add(self.centre, scale(dir, t))
    }
}

/// A curved tube: a polyline with a radius tapering from `r0` to `r1`.
struct Tube {
    points: Vec<Vec3>,
    r0: f64,
    r1: f64,
}

/// Where structures may be: the body cross-section (an elliptic cylinder
/// along z) inside the field of view.
struct Body {
    centre: [f64; 2],
    axes: [f64; 2],
    extent: Vec3,
}

impl Body {
    fn sdf(&self, p: Vec3) -> f64 {
        let u = (p[0] - self.centre[0]) / self.axes[0];
        let v = (p[1] - self.centre[1]) / self.axes[1];
        ((u * u + v * v).sqrt() - 1.0) * self.axes[0].min(self.axes[1])
    }

    /// Whether a point lies `margin` mm inside the body and the grid.
    fn holds(&self, p: Vec3, margin: f64) -> bool {
        self.sdf(p) < -margin && (0..3).all(|a| p[a] > margin && p[a] < self.extent[a] - margin)
    }
}

impl Tube {
    /// Grows a tube from `start` along `dir`, curving smoothly, until it
    /// reaches `length` mm or leaves the body.
    fn grow(
        rng: &mut ChaCha8Rng,
        body: &Body,
        start: Vec3,
        dir: Vec3,
        length: f64,
        radius: f64,
    ) -> Tube {
        let step = 1.0;
        let curvature = uniform(rng, 0.02, 0.08); // rad per mm
        let mut drift = scale(unit_vector(rng), curvature);
        let mut v = normalize(dir);
        let mut p = start;
        let mut points = vec![p];
        let mut travelled = 0.0;
        while travelled < length {
            let (a, b) = gaussian_pair(rng);
            let c = gaussian(rng);
            drift = scale(
                normalize(add(drift, scale([a, b, c], 0.3 * curvature))),
                curvature,
            );
            v = normalize(add(v, scale(drift, step)));
            let next = add(p, scale(v, step));
            if !body.holds(next, radius) {
                break;
            }
            p = next;
            points.push(p);
            travelled += step;
        }
        Tube {
            points,
            r0: radius,
            r1: radius * uniform(rng, 0.7, 0.95),
        }
    }
}

/// The voxel grid in millimetres (x, y, z of voxel `(i, j, k)` is
/// `(i sx, j sy, k sz)`), where shapes are drawn.
struct Grid {
    shape: [usize; 3],
    spacing: Vec3,
}

/// Signed distance fields (mm, negative inside) of the target and of the
/// distractors, and the intensity of the nearest distractor. They are
/// evaluated only near the structures; elsewhere they hold a large value.
struct Fields {
    target: Vec<f32>,
    distractor: Vec<f32>,
    level: Vec<f32>,
}

const FAR: f32 = 1e6;

impl Fields {
    fn new(n: usize) -> Fields {
        Fields {
            target: vec![FAR; n],
            distractor: vec![FAR; n],
            level: vec![0.0; n],
        }
    }

    /// Distractor distance carved away from the target: distractors come
    /// within `GAP_MM` of it but never touch it.
    fn carved(&self, idx: usize) -> f32 {
        self.distractor[idx].max(GAP_MM as f32 - self.target[idx])
    }

    fn target_voxels(&self) -> usize {
        self.target.iter().filter(|&&d| d <= 0.0).count()
    }

    fn distractor_voxels(&self) -> usize {
        (0..self.distractor.len())
            .filter(|&i| self.carved(i) <= 0.0)
            .count()
    }
}

impl Grid {
    fn point(&self, i: usize, j: usize, k: usize) -> Vec3 {
        [
            i as f64 * self.spacing[0],
            j as f64 * self.spacing[1],
            k as f64 * self.spacing[2],
        ]
    }

    /// Calls `f(index, point)` for every voxel whose grid position (mm)
    /// lies in the box `lo..=hi`.
    fn for_box(&self, lo: Vec3, hi: Vec3, mut f: impl FnMut(usize, Vec3)) {
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
    fn splat_blob(&self, blob: &Blob, field: &mut [f32], mut level: Option<(&mut [f32], f32)>) {
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
    fn splat_tube(&self, tube: &Tube, field: &mut [f32], mut level: Option<(&mut [f32], f32)>) {
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
    fn margin(&self) -> f64 {
        GAP_MM + 2.0 * self.spacing.iter().cloned().fold(0.0, f64::max)
    }
}

/// Everything drawn for one case before the intensities are computed.
struct Case {
    grid: Grid,
    affine: [[f64; 4]; 4],
    body: Body,
    fields: Fields,
    target_intensity: f64,
    distractor_blobs: usize,
    distractor_tubes: usize,
    tissue: f64,
    noise_sigma: f64,
    bias_coeffs: [f64; 9],
    hardness: Hardness,
}

impl Case {
    fn draw(rng: &mut ChaCha8Rng, hard: &mut ChaCha8Rng, config: &SyntheticConfig) -> Case {
        let hardness = Hardness::draw(hard, config.difficulty, config.shape[2]);
        let shape = config.shape;
        let spacing: Vec3 = std::array::from_fn(|a| {
            let s = config.spacing[a] * uniform(rng, 0.95, 1.05);
            // Round to 0.01 mm (keeping it positive) so headers read back cleanly.
            ((s * 100.0).round() / 100.0).max(config.spacing[a].min(0.01))
        });
        let grid = Grid { shape, spacing };
        let extent: Vec3 = std::array::from_fn(|a| shape[a] as f64 * spacing[a]);
        // LPS-like: x and y run right-to-left and anterior-to-posterior, as
        // scanners often store them; the grid centre lies near world zero.
        let mut affine = identity();
        let signs = [-1.0, -1.0, 1.0];
        for a in 0..3 {
            affine[a][a] = signs[a] * spacing[a];
            let half = (shape[a] as f64 - 1.0) / 2.0 * spacing[a];
            let jitter = uniform(rng, -10.0, 10.0);
            affine[a][3] = ((-signs[a] * half + jitter) * 100.0).round() / 100.0;
        }

        let body = Body {
            centre: [
                extent[0] / 2.0 + uniform(rng, -0.02, 0.02) * extent[0],
                extent[1] / 2.0 + uniform(rng, -0.02, 0.02) * extent[1],
            ],
            axes: [
                extent[0] * uniform(rng, 0.42, 0.47),
                extent[1] * uniform(rng, 0.42, 0.47),
            ],
            extent,
        };
        let pixel = spacing[0].min(spacing[1]);
        let min_ext = extent.iter().cloned().fold(f64::INFINITY, f64::min);
        let geo_ext = (extent[0] * extent[1] * extent[2]).cbrt();
        let radius = (geo_ext * uniform(rng, 0.19, 0.23)).min(min_ext * 0.27);

        let mut fields = Fields::new(shape.iter().product());
        let centre = std::array::from_fn(|a| extent[a] * (0.5 + uniform(rng, -0.06, 0.06)));
        let target = Blob::draw(rng, centre, radius);
        let target_intensity = uniform(rng, 0.9, 1.0);
        grid.splat_blob(&target, &mut fields.target, None);
        for _ in 0..rng.random_range(1..=3) {
            let dir = unit_vector(rng);
            let surface = target.surface_point(dir);
            let r = pixel * uniform(rng, 1.5, 3.0);
            // Start inside the blob so the tube is attached to it.
            let start = sub(surface, scale(dir, 2.0 * r));
            let length = min_ext * uniform(rng, 0.25, 0.45);
            let tube = Tube::grow(rng, &body, start, dir, length, r);
            grid.splat_tube(&tube, &mut fields.target, None);
        }
        for _ in 0..hardness.thin_tubes {
            let dir = unit_vector(hard);
            let surface = target.surface_point(dir);
            let r = pixel * uniform(hard, 0.8, 1.5);
            let start = sub(surface, scale(dir, 2.0 * r));
            let length = min_ext * uniform(hard, 0.2, 0.4);
            let tube = Tube::grow(hard, &body, start, dir, length, r);
            grid.splat_tube(&tube, &mut fields.target, None);
        }

        // Distractors until they cover about as much as the target: the
        // first blob and the first tube usually pressed against it, then
        // more blobs (at most 3, sized to what is missing) and tubes (at
        // most 5), free or leaving a blob.
        let voxel = spacing[0] * spacing[1] * spacing[2];
        let goal = (fields.target_voxels() as f64
            * uniform(rng, 0.8, 1.1)
            * hardness.distractor_gain) as usize;
        let mut blobs: Vec<Blob> = Vec::new();
        let mut tubes = 0;
        let mut covered = 0;
        for step in 0..12 {
            let intensity = target_intensity * uniform(rng, 0.9, 1.1);
            let level = Some((fields.level.as_mut_slice(), intensity as f32));
            let want_blob = step == 0 || (step > 1 && blobs.len() < 3 && step % 2 == 0);
            if want_blob {
                // A sphere of the missing volume, spread over the blobs
                // still to come, within sensible bounds.
                let missing =
                    goal.saturating_sub(covered) as f64 * voxel / (3 - blobs.len().min(2)) as f64;
                let r = (missing * 3.0 / (4.0 * PI)).cbrt() * uniform(rng, 1.0, 1.2);
                let r = r.clamp(0.45 * radius, 0.85 * radius);
                let near = step == 0 && rng.random_bool(0.8);
                // Free places first; when the target leaves no room, beside it.
                let placed = (0..48).find_map(|attempt| {
                    let c = if near || attempt >= 24 {
                        let dir = unit_vector(rng);
                        add(target.surface_point(dir), scale(dir, r * 0.9 + GAP_MM))
                    } else {
                        std::array::from_fn(|a| extent[a] * uniform(rng, 0.12, 0.88))
                    };
                    let clear = target.sdf(c) > r + GAP_MM
                        && blobs
                            .iter()
                            .all(|o| norm(sub(o.centre, c)) > o.extent() + r);
                    (clear && body.holds(c, r * 0.5)).then_some(c)
                });
                if let Some(c) = placed {
                    let blob = Blob::draw(rng, c, r);
                    grid.splat_blob(&blob, &mut fields.distractor, level);
                    blobs.push(blob);
                }
            } else if tubes < 5 {
                let r = pixel * uniform(rng, 1.5, 3.0);
                let length = min_ext * uniform(rng, 0.3, 0.6);
                let choice = rng.random_range(0..3);
                let (start, dir) = if step == 1 || choice == 0 {
                    // Along the target's surface, a few mm away from it.
                    let n = unit_vector(rng);
                    let start = add(target.surface_point(n), scale(n, r + GAP_MM + 1.0));
                    let w = unit_vector(rng);
                    (start, normalize(sub(w, scale(n, dot(n, w)))))
                } else if choice == 1 && !blobs.is_empty() {
                    let blob = &blobs[rng.random_range(0..blobs.len())];
                    let dir = unit_vector(rng);
                    (sub(blob.surface_point(dir), scale(dir, 2.0 * r)), dir)
                } else {
                    let p = std::array::from_fn(|a| extent[a] * uniform(rng, 0.15, 0.85));
                    (p, unit_vector(rng))
                };
                let tube = Tube::grow(rng, &body, start, dir, length, r);
                grid.splat_tube(&tube, &mut fields.distractor, level);
                tubes += 1;
            }
            covered = fields.distractor_voxels();
            if !blobs.is_empty() && tubes >= 2 && covered >= goal {
                break;
            }
        }

        let tissue = uniform(rng, 0.4, 0.5);
        let noise_sigma = uniform(rng, 0.04, 0.07);
        let mut bias_coeffs = [0.0; 9];
        for (i, c) in bias_coeffs.iter_mut().enumerate() {
            *c = gaussian(rng) * if i < 3 { 1.0 } else { 0.5 };
        }
        Case {
            grid,
            affine,
            body,
            fields,
            target_intensity,
            distractor_blobs: blobs.len(),
            distractor_tubes: tubes,
            tissue,
            noise_sigma: noise_sigma * hardness.noise_gain,
            bias_coeffs,
            hardness,
        }
    }

    /// The multiplicative bias at normalised coordinates `u` in [-1, 1]^3,
    /// before scaling to its amplitude.
    fn bias_raw(&self, u: Vec3) -> f64 {
        let c = &self.bias_coeffs;
        c[0] * u[0]
            + c[1] * u[1]
            + c[2] * u[2]
            + c[3] * u[0] * u[1]
            + c[4] * u[0] * u[2]
            + c[5] * u[1] * u[2]
            + c[6] * (u[0] * u[0] - 1.0 / 3.0)
            + c[7] * (u[1] * u[1] - 1.0 / 3.0)
            + c[8] * (u[2] * u[2] - 1.0 / 3.0)
    }

    /// Computes the image (i16) and label (u8) voxels.
    fn render(&self, rng: &mut ChaCha8Rng) -> (Vec<i16>, Vec<u8>) {
        let extent = self.body.extent;
        let coarse = ValueNoise::new(rng, extent, 16.0);
        let fine = ValueNoise::new(rng, extent, 6.0);
        let amplitude = uniform(rng, 0.2, 0.3) * self.hardness.bias_gain;
        // Scale the bias polynomial so its largest excursion is `amplitude`.
        let mut peak: f64 = 1e-9;
        for a in 0..5 {
            for b in 0..5 {
                for c in 0..5 {
                    let u = [a, b, c].map(|v| v as f64 / 2.0 - 1.0);
                    peak = peak.max(self.bias_raw(u).abs());
                }
            }
        }
        let bias_scale = amplitude / peak;
        // Partial-volume band: a structure fills a voxel gradually over
        // about one in-plane voxel across its boundary.
        let spacing = self.grid.spacing;
        let band = spacing[0].min(spacing[1]);
        let occupancy = |d: f64| (0.5 - d / band).clamp(0.0, 1.0);
        let [nx, ny, nz] = self.grid.shape;
        let n = nx * ny * nz;
        let mut image = Vec::with_capacity(n);
        let mut label = Vec::with_capacity(n);
        for k in 0..nz {
            for j in 0..ny {
                for i in 0..nx {
                    let idx = i + nx * (j + ny * k);
                    let p = self.grid.point(i, j, k);
                    let body = occupancy(self.body.sdf(p));
                    let texture_fine = fine.sample(p);
                    let tissue =
                        self.tissue * (1.0 + 0.22 * coarse.sample(p) + 0.1 * texture_fine) * body;
                    let dt = self.fields.target[idx] as f64;
                    let dd = self.fields.carved(idx) as f64;
                    let (o, level) = if dt <= dd {
                        (occupancy(dt), self.target_intensity)
                    } else {
                        (occupancy(dd), self.fields.level[idx] as f64)
                    };
                    let h = &self.hardness;
                    let level = level + (self.tissue - level) * h.contrast_loss;
                    let structure = level * (1.0 + 0.04 * texture_fine);
                    let u: Vec3 = std::array::from_fn(|a| {
                        2.0 * p[a] / (extent[a] - spacing[a]).max(1e-9) - 1.0
                    });
                    let bias = (1.0 + bias_scale * self.bias_raw(u)).clamp(0.5, 1.5);
                    let mut signal = bias * ((1.0 - o) * tissue + o * structure);
                    if h.gamma != 1.0 || h.wave.0 != 0.0 {
                        let (amp, period, phase) = h.wave;
                        let wave = 1.0 + amp * (2.0 * PI * k as f64 / period + phase).sin();
                        signal = signal.max(0.0).powf(h.gamma) * wave;
                    }
                    let (n1, n2) = gaussian_pair(rng);
                    let (n1, n2) = (n1 * self.noise_sigma, n2 * self.noise_sigma);
                    let magnitude = ((signal + n1).powi(2) + n2 * n2).sqrt();
                    image.push((magnitude * INTENSITY_SCALE).round().clamp(0.0, 32767.0) as i16);
                    label.push(u8::from(dt <= 0.0));
                }
            }
        }
        (image, label)
    }
}

/// Smooth random field: uniform values on a lattice of `cell` mm,
/// interpolated with smoothstep weights. Values lie in [-1, 1].
struct ValueNoise {
    dims: [usize; 3],
    cell: f64,
    values: Vec<f32>,
}

impl ValueNoise {
    fn new(rng: &mut ChaCha8Rng, extent: Vec3, cell: f64) -> ValueNoise {
        let dims = extent.map(|e| (e / cell).ceil() as usize + 2);
        let values = (0..dims.iter().product::<usize>())
            .map(|_| uniform(rng, -1.0, 1.0) as f32)
            .collect();
        ValueNoise { dims, cell, values }
    }

    fn sample(&self, p: Vec3) -> f64 {
        let mut base = [0usize; 3];
        let mut w = [0.0f64; 3];
        for a in 0..3 {
            let g = (p[a] / self.cell).max(0.0);
            let i = (g.floor() as usize).min(self.dims[a] - 2);
            let f = (g - i as f64).clamp(0.0, 1.0);
            base[a] = i;
            w[a] = f * f * (3.0 - 2.0 * f);
        }
        let [dx, dy, _] = self.dims;
        let at = |i: usize, j: usize, k: usize| self.values[i + dx * (j + dy * k)] as f64;
        let lerp = |a: f64, b: f64, t: f64| a + (b - a) * t;
        let [i, j, k] = base;
        let c00 = lerp(at(i, j, k), at(i + 1, j, k), w[0]);
        let c10 = lerp(at(i, j + 1, k), at(i + 1, j + 1, k), w[0]);
        let c01 = lerp(at(i, j, k + 1), at(i + 1, j, k + 1), w[0]);
        let c11 = lerp(at(i, j + 1, k + 1), at(i + 1, j + 1, k + 1), w[0]);
        lerp(lerp(c00, c10, w[1]), lerp(c01, c11, w[1]), w[2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_configs() {
        let out = Path::new("/nonexistent/synthetic");
        let bad = [
            SyntheticConfig {
                shape: [15, 32, 32],
                ..Default::default()
            },
            SyntheticConfig {
                shape: [32, 513, 32],
                ..Default::default()
            },
            SyntheticConfig {
                spacing: [1.0, f64::NAN, 2.0],
                ..Default::default()
            },
            SyntheticConfig {
                spacing: [1.0, 0.0, 2.0],
                ..Default::default()
            },
            SyntheticConfig {
                train_cases: 0,
                ..Default::default()
            },
            SyntheticConfig {
                test_cases: usize::MAX,
                ..Default::default()
            },
        ];
        for config in bad {
            assert!(config.validate(out).is_err(), "{config:?}");
            assert!(write_dataset(out, &config).is_err(), "{config:?}");
        }
        assert!(
            generate_case(
                &SyntheticConfig {
                    shape: [8, 32, 32],
                    ..Default::default()
                },
                0
            )
            .is_err()
        );
        let err = SyntheticConfig {
            shape: [15, 32, 32],
            ..Default::default()
        }
        .validate(out)
        .unwrap_err()
        .to_string();
        assert!(err.contains("axis x has 15 voxels"), "{err}");
    }

    #[test]
    fn value_noise_is_bounded_and_continuous() {
        let mut rng = case_rng(1, 2);
        let noise = ValueNoise::new(&mut rng, [40.0, 40.0, 40.0], 6.0);
        let mut prev = noise.sample([0.0, 10.0, 10.0]);
        for i in 1..400 {
            let v = noise.sample([i as f64 * 0.1, 10.0, 10.0]);
            assert!((-1.0..=1.0).contains(&v));
            assert!((v - prev).abs() < 0.1);
            prev = v;
        }
    }

    #[test]
    fn blob_surface_point_is_on_the_surface() {
        let mut rng = case_rng(3, 4);
        let blob = Blob::draw(&mut rng, [20.0, 20.0, 20.0], 8.0);
        for _ in 0..20 {
            let dir = unit_vector(&mut rng);
            assert!(blob.sdf(blob.surface_point(dir)).abs() < 1e-9);
        }
    }
}
