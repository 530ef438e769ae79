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
//! use dtml_volume::Xyz;
//! use dtml_volume::synthetic::{SyntheticConfig, generate_case};
//! let config = SyntheticConfig { shape: Xyz::new(32, 32, 24), ..SyntheticConfig::default() };
//! let (image, label) = generate_case(&config, 0).unwrap();
//! assert_eq!(image.shape, Xyz::new(32, 32, 24));
//! assert_eq!(label.shape, image.shape);
//! ```

use crate::atomic::write_bytes_atomic;
use crate::axes::Xyz;
use crate::error::{Result, VolumeError};
use crate::geometry::{Geometry, identity};
use crate::nii::write_nifti;
use crate::volume::{Volume, VoxelData};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;

mod case;
mod grid;
mod random;
mod shapes;
use case::*;
use grid::*;
use random::*;
use shapes::*;
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

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticConfig {
    /// Voxels along x, y, z; each in 16..=512.
    pub shape: Xyz<usize>,
    /// Number of training cases (at least 1).
    pub train_cases: usize,
    /// Number of test cases (with labels in `labelsTs/`).
    pub test_cases: usize,
    /// Seed of the whole dataset; each case derives its own stream from it.
    pub seed: u64,
    /// Nominal spacing in mm; each case varies it by up to ±5%.
    pub spacing: Xyz<f64>,
    /// How hard the task is, 0 (the default data) to 1: see the module doc.
    pub difficulty: f64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            shape: Xyz::new(64, 64, 48),
            train_cases: 20,
            test_cases: 5,
            seed: 1337,
            spacing: Xyz::new(1.0, 1.0, 2.0),
            difficulty: 0.0,
        }
    }
}

impl SyntheticConfig {
    /// Checks sizes, spacing and case counts; `path` names the output in
    /// the error.
    pub fn validate(&self, path: &Path) -> Result<()> {
        for (a, n) in self.shape.into_iter().enumerate() {
            if !(MIN_SIZE..=MAX_SIZE).contains(&n) {
                return Err(VolumeError::invalid(
                    path,
                    format!(
                        "synthetic shape {:?}: axis {} has {n} voxels; each axis must have {MIN_SIZE} to {MAX_SIZE}",
                        self.shape,
                        crate::axes::AXIS_NAMES[a]
                    ),
                ));
            }
        }
        if self
            .spacing
            .any(|s| !s.is_finite() || s <= 0.0 || s > 100.0)
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
    let mut lock = crate::output::claim(
        out,
        &SYNTHETIC_KIND,
        &[],
        crate::output::LockMode::Exclusive,
        "--out",
    )?;
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
    write_bytes_atomic(&out.join("dataset.json"), &bytes)?;
    lock.keep();
    Ok(())
}

/// How `dataset.json`'s `reference` of a generated dataset begins.
const REFERENCE_PREFIX: &str = "dtml-volume synthetic generator";

/// A synthetic dataset written by `dtml generate`.
pub const SYNTHETIC_KIND: crate::output::Kind = crate::output::Kind {
    name: "synthetic dataset",
    records: &["dataset.json"],
    recognise: is_synthetic_json,
    only: None,
};

fn is_synthetic_json(json: &Path) -> bool {
    crate::confine::read_bounded(json, 1 << 20, "dataset.json")
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| {
            v["name"] == "synthetic"
                && v["reference"]
                    .as_str()
                    .is_some_and(|r| r.starts_with(REFERENCE_PREFIX))
        })
}

/// Removes the case files of an earlier synthetic dataset in `out` (a
/// folder [`SYNTHETIC_KIND`] recognised), so none outlives it.
fn clear_target(out: &Path) -> Result<()> {
    for dir in ["imagesTr", "labelsTr", "imagesTs", "labelsTs"] {
        let d = out.join(dir);
        let Ok(files) = std::fs::read_dir(&d) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.starts_with("synth_")
                && name.ends_with(".nii.gz")
                && crate::nii::written_by_dtml(&f.path())
            {
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
    let [nx, ny, nz] = config.shape.xyz();
    DatasetJson {
        name: "synthetic".into(),
        description: "Synthetic MR-like volumes: an irregular blob with attached tubes (target) \
                      among bright distractor blobs and tubes, textured tissue, bias field and \
                      Rician noise. Image files carry the nnU-Net channel suffix _0000."
            .into(),
        reference: format!(
            "{REFERENCE_PREFIX}, seed {}, shape {nx}x{ny}x{nz}, spacing {:?} mm",
            config.seed,
            config.spacing.xyz()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_configs() {
        let out = Path::new("/nonexistent/synthetic");
        let bad = [
            SyntheticConfig {
                shape: Xyz::new(15, 32, 32),
                ..Default::default()
            },
            SyntheticConfig {
                shape: Xyz::new(32, 513, 32),
                ..Default::default()
            },
            SyntheticConfig {
                spacing: Xyz::new(1.0, f64::NAN, 2.0),
                ..Default::default()
            },
            SyntheticConfig {
                spacing: Xyz::new(1.0, 0.0, 2.0),
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
                    shape: Xyz::new(8, 32, 32),
                    ..Default::default()
                },
                0
            )
            .is_err()
        );
        let err = SyntheticConfig {
            shape: Xyz::new(15, 32, 32),
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
