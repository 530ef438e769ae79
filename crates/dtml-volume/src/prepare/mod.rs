//! Preparation of a split dataset into a cache that loads fast: one
//! safetensors file per case plus `manifest.json`, which keeps everything
//! needed to map a prediction back to the original grid and header.
//!
//! As in `method.md`: intensities are z-scored over the whole original
//! volume; labelled cases are cropped to the label's bounding box plus a
//! margin; unlabelled, validation and test cases, whose labels a real user
//! would not have at that point, are cropped to the non-zero intensity box
//! (or not at all); every case is padded to at least the patch size.
//! `reference_crop` reproduces the reference code's label-box crop for all
//! cases that have a label file, for comparison with published tables.

use crate::atomic::write_bytes_atomic;
use crate::axes::Xyz;
use crate::dataset::{CaseFiles, Role, Split};
use crate::error::{Result, VolumeError};
use crate::geometry::Geometry;
use crate::nii::ReadOptions;
use crate::output::{self, Kind, LockMode};
use crate::volume::{DataType, Volume, VoxelData};
use crate::{Layout, read_volume_with};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use strum::{Display, EnumString};

mod cache;
mod case_file;
mod label;
mod receipt;
pub use cache::*;
pub use case_file::{CaseFile, GridBox};
pub use label::{binarize, read_label};

/// The paper's training patch (x, y, z): the default of preparation,
/// training and inference.
pub const PAPER_PATCH: Xyz<usize> = Xyz::new(112, 112, 80);

/// How unlabelled and test scans are cropped.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, Display, EnumString,
)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum ScanCrop {
    /// To the bounding box of non-zero intensities (plus the margin).
    #[default]
    #[cfg_attr(feature = "clap", value(name = "nonzero"))]
    NonZero,
    /// Not cropped.
    None,
}

/// The intensity normalisation of preparation and inference: a z-score
/// over the whole volume with the population standard deviation, computed
/// in f64. A constant image gets `std = 1` (all intensities become 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZScore {
    pub mean: f64,
    pub std: f64,
    /// The image is constant (standard deviation below 1e-12).
    pub constant: bool,
}

impl ZScore {
    /// Mean and standard deviation of `values` (f32 or f64 intensities).
    pub fn of<T: Copy + Into<f64>>(values: &[T]) -> ZScore {
        let n = values.len().max(1) as f64;
        let mean = values.iter().map(|&v| v.into()).sum::<f64>() / n;
        let var = values
            .iter()
            .map(|&v| {
                let d = v.into() - mean;
                d * d
            })
            .sum::<f64>()
            / n;
        let std = var.sqrt();
        let constant = std < 1e-12;
        ZScore {
            mean,
            std: if constant { 1.0 } else { std },
            constant,
        }
    }

    /// Mean and standard deviation of a volume's voxels, in their stored type.
    pub fn of_data(data: &VoxelData) -> ZScore {
        match data {
            VoxelData::U8(v) => ZScore::of(v),
            VoxelData::I8(v) => ZScore::of(v),
            VoxelData::I16(v) => ZScore::of(v),
            VoxelData::U16(v) => ZScore::of(v),
            VoxelData::I32(v) => ZScore::of(v),
            VoxelData::U32(v) => ZScore::of(v),
            VoxelData::F32(v) => ZScore::of(v),
            VoxelData::F64(v) => ZScore::of(v),
        }
    }

    /// The normalised value of one intensity, as stored (f32).
    pub fn apply(&self, v: f64) -> f32 {
        ((v - self.mean) / self.std) as f32
    }
}

/// Options of [`prepare`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrepareOptions {
    /// Patch size: every case is padded to at least this.
    pub patch: Xyz<usize>,
    /// Margin in voxels around a crop box per axis; `None` keeps that axis
    /// whole (the reference keeps z whole).
    pub margin: Xyz<Option<usize>>,
    /// Label values that make the foreground (binarised to 1).
    pub foreground: Vec<i64>,
    /// Crop of scans without a usable label.
    pub scan_crop: ScanCrop,
    /// Crop every case that has a label file to its label box (reference).
    pub reference_crop: bool,
    /// The image channel (modality) of a multi-channel dataset the cases
    /// were read with: a 4D file's volume, or nnU-Net's `_000C` files.
    /// Recorded so a trained run reads the same modality.
    #[serde(default)]
    pub channel: usize,
}

impl Default for PrepareOptions {
    fn default() -> Self {
        PrepareOptions {
            patch: PAPER_PATCH,
            margin: Xyz::new(Some(15), Some(15), None),
            foreground: vec![1],
            scan_crop: ScanCrop::default(),
            reference_crop: false,
            channel: 0,
        }
    }
}

/// Counts and warnings of a preparation run.
#[derive(Debug, Clone, Default)]
pub struct PrepareReport {
    pub cases: usize,
    /// Cases taken as they were from an unfinished run or the cache being
    /// replaced (their sources and the options unchanged).
    pub reused: usize,
    pub warnings: Vec<String>,
}

struct Prepared {
    record: CaseRecord,
    warnings: Vec<String>,
    values_present: BTreeSet<i64>,
}

/// Prepares every case of `split` into `out`, in parallel; `tick` is called
/// once per finished case (for a progress bar).
pub fn prepare(
    dataset_root: &Path,
    layout: Layout,
    split: &Split,
    out: &Path,
    options: &PrepareOptions,
    tick: &(dyn Fn(&str) + Sync),
) -> Result<PrepareReport> {
    if options.patch.any(|p| p == 0) {
        return Err(VolumeError::invalid(
            out,
            "patch size must be positive on every axis",
        ));
    }
    if options.foreground.is_empty() {
        return Err(VolumeError::invalid(
            out,
            "no foreground label value chosen",
        ));
    }
    check_case_memory(out, options)?;
    // Built beside `out` and swapped in only when complete: a failed or
    // killed run leaves the old cache (if any) as it was, and its staging
    // folder, whose finished cases the next run reuses ([`receipt`]).
    // A dataset dtml generated is not rewritten while it is read.
    let _input = output::lock_input(dataset_root)?;
    let mut lock = output::claim(
        out,
        &CACHE_KIND,
        &[dataset_root],
        LockMode::Exclusive,
        "--out",
    )?;
    check_cases_owned(out)?;
    let staging = sibling(out, "preparing")?;
    // Checked now, not after the build: the swap moves the old cache there.
    remove_leftover(&sibling(out, "replaced")?)?;
    // The new cache carries its own lock, taken before it is swapped in,
    // so no other writer gets between the swap and the end of this run.
    let staged = output::claim(&staging, &STAGING_KIND, &[], LockMode::Exclusive, "--out")
        .map_err(|_| {
            VolumeError::invalid(
                &staging,
                "is in the way of preparation (dtml stages a cache there) but is not dtml's; move it away",
            )
        })?;
    // A manifest there is an earlier run's, finished but not swapped in:
    // its cases are reused by their receipts, the manifest written anew.
    let stale = staging.join(MANIFEST);
    if stale.exists() {
        std::fs::remove_file(&stale).map_err(|e| VolumeError::io(&stale, e))?;
    }
    let stage_cases = staging.join("cases");
    std::fs::create_dir_all(&stage_cases).map_err(|e| VolumeError::io(&stage_cases, e))?;
    let built = build(dataset_root, layout, split, &staging, out, options, tick);
    match built {
        Ok(report) => {
            drop_unnamed_cases(&staging)?;
            swap_in(&staging, out)?;
            lock.keep();
            drop(staged);
            Ok(report)
        }
        Err(e) => {
            drop(staged);
            // Kept for the next run when it holds finished cases.
            let finished = std::fs::read_dir(&stage_cases).is_ok_and(|mut d| d.next().is_some());
            if finished {
                tracing::warn!(
                    "the cases finished so far stay in {}: the next prepare into {} reuses them",
                    staging.display(),
                    out.display()
                );
            } else {
                let _ = std::fs::remove_dir_all(&staging);
            }
            Err(e)
        }
    }
}

/// A cache being built (`.<out>.preparing`): dtml's lock file, `cases/`
/// and, last, the manifest. The lock file is what says it is dtml's.
const STAGING_KIND: Kind = Kind {
    name: "cache being prepared",
    records: &[output::LOCK_FILE],
    recognise: holds_lock,
    only: Some(&["cases", MANIFEST]),
};

fn holds_lock(path: &Path) -> bool {
    path.is_file()
}

/// Removes from a finished staging folder's `cases/` what its manifest
/// does not name (cases of an earlier run no longer in the split), so
/// the published cache holds only its own cases and their receipts.
fn drop_unnamed_cases(staging: &Path) -> Result<()> {
    let manifest = PreparedDataset::open(staging)?.manifest;
    let named: BTreeSet<String> = manifest.cases.iter().map(|c| c.file.clone()).collect();
    let cases = staging.join("cases");
    for e in std::fs::read_dir(&cases).map_err(|e| VolumeError::io(&cases, e))? {
        let e = e.map_err(|e| VolumeError::io(&cases, e))?;
        let name = format!("cases/{}", e.file_name().to_string_lossy());
        let case = name.strip_suffix(receipt::RECEIPT_SUFFIX).unwrap_or(&name);
        if !named.contains(case) {
            std::fs::remove_file(e.path()).map_err(|err| VolumeError::io(e.path(), err))?;
        }
    }
    Ok(())
}

/// A prepared cache: `manifest.json` and `cases/`, nothing else.
pub const CACHE_KIND: Kind = Kind {
    name: "prepared cache",
    records: &[MANIFEST],
    recognise: is_manifest,
    only: Some(&["cases"]),
};

/// A manifest of this dtml or an older one: a JSON object with the
/// cache's `version` and `cases` (an older cache is replaced, not refused
/// as foreign).
fn is_manifest(path: &Path) -> bool {
    crate::confine::read_bounded(path, MANIFEST_MAX_BYTES, "manifest")
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v["version"].is_u64() && v["cases"].is_array())
}

/// An existing cache's `cases/` holds only the files its manifest names:
/// anything else is not dtml's to delete.
fn check_cases_owned(out: &Path) -> Result<()> {
    let cases = out.join("cases");
    let Ok(entries) = std::fs::read_dir(&cases) else {
        return Ok(());
    };
    let named: BTreeSet<String> =
        crate::confine::read_bounded(&out.join(MANIFEST), MANIFEST_MAX_BYTES, "manifest")
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| {
                v["cases"].as_array().map(|cases| {
                    cases
                        .iter()
                        .filter_map(|c| c["file"].as_str().map(str::to_string))
                        .collect()
                })
            })
            .unwrap_or_default();
    let mut foreign: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            let case = n.strip_suffix(receipt::RECEIPT_SUFFIX).unwrap_or(n);
            !named.contains(&format!("cases/{case}")) && !n.starts_with(".dtml-")
        })
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    foreign.sort();
    Err(VolumeError::invalid(
        out,
        format!(
            "--out is a prepared cache but its cases/ also holds files its manifest does not name ({}); refusing to delete them: move them away or choose another folder",
            foreign.join(", ")
        ),
    ))
}

/// Bytes `prepare` holds per voxel of a case while building it: the
/// original intensities in f64, the padded f32 image and u8 label, and
/// the serialised copy written to disk.
const PREPARE_BYTES_PER_VOXEL: f64 = 8.0 + 5.0 + 5.0;

/// Refuses a patch whose padded cases cannot be held, before any case is
/// read: each case grows to at least the patch, and the cases are built in
/// parallel, one per thread.
fn check_case_memory(out: &Path, options: &PrepareOptions) -> Result<()> {
    let voxels = options.patch.voxels();
    crate::confine::check_voxels(out, &options.patch.xyz(), 4).map_err(|_| {
        VolumeError::invalid(
            out,
            format!(
                "--patch {} pads every case to {voxels} voxels, more than one volume may hold ({} voxels; set {} to change it)",
                options.patch,
                crate::confine::max_voxels().unwrap_or(0),
                crate::confine::MAX_VOXELS_VAR
            ),
        )
    })?;
    let need = voxels as f64 * PREPARE_BYTES_PER_VOXEL * rayon::current_num_threads() as f64;
    crate::confine::check_memory(
        out,
        &format!(
            "preparing cases padded to --patch {} on {} threads",
            options.patch,
            rayon::current_num_threads()
        ),
        need,
    )
}

/// `.<name>.<tag>` beside `out` (same file system, so renames are atomic).
fn sibling(out: &Path, tag: &str) -> Result<PathBuf> {
    let name = out.file_name().ok_or_else(|| {
        VolumeError::invalid(out, "the output folder needs a name (not `.`, `..` or `/`)")
    })?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).map_err(|e| VolumeError::io(parent, e))?;
    let readable = format!(".{}.{tag}", name.to_string_lossy());
    // A legal name near the file-name limit (255 bytes) has no room for
    // the tag: such a folder's sibling is named by a digest of its name.
    if readable.len() <= 255 {
        return Ok(parent.join(readable));
    }
    let h = crate::digest::fnv1a(name.as_encoded_bytes().iter().copied());
    Ok(parent.join(format!(".dtml-{h:016x}.{tag}")))
}

/// Removes what an interrupted earlier run left at `path`, if it is
/// dtml's (it holds dtml's lock file); anything else there is refused.
fn remove_leftover(path: &Path) -> Result<()> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    // dtml's staging folders hold its lock file, or (before locks) only a
    // manifest and cases.
    let ours = path.join(output::LOCK_FILE).is_file()
        || std::fs::read_dir(path).is_ok_and(|entries| {
            entries.filter_map(|e| e.ok()).all(|e| {
                let name = e.file_name();
                name == MANIFEST || name == "cases"
            })
        });
    if !ours {
        return Err(VolumeError::invalid(
            path,
            "is in the way of preparation (dtml stages a cache there) but is not dtml's; move it away",
        ));
    }
    tracing::debug!("removing {} left by an interrupted run", path.display());
    std::fs::remove_dir_all(path).map_err(|e| VolumeError::io(path, e))
}

/// Puts the complete cache `staging` at `out`, the old one moved aside
/// first and deleted last.
fn swap_in(staging: &Path, out: &Path) -> Result<()> {
    let old = sibling(out, "replaced")?;
    remove_leftover(&old)?;
    std::fs::rename(out, &old).map_err(|e| VolumeError::io(out, e))?;
    std::fs::rename(staging, out).map_err(|e| VolumeError::io(out, e))?;
    let parent = old.parent().unwrap_or(Path::new("."));
    crate::atomic::sync_folder(parent).map_err(|e| VolumeError::io(parent, e))?;
    remove_leftover(&old)
}

/// Prepares every case into `out` (a staging folder with `cases/`),
/// reusing those already prepared there or in `published` whose receipts
/// match, and writes the manifest last.
fn build(
    dataset_root: &Path,
    layout: Layout,
    split: &Split,
    out: &Path,
    published: &Path,
    options: &PrepareOptions,
    tick: &(dyn Fn(&str) + Sync),
) -> Result<PrepareReport> {
    let manifest_path = out.join(MANIFEST);
    let results: Vec<Result<(Prepared, bool)>> = split
        .cases
        .par_iter()
        .map(|(case, role)| {
            let r = (|| {
                let inputs = receipt::CaseInputs::of(case, *role, options, &split.declared_labels)?;
                if let Some(found) = receipt::reuse(out, published, &inputs) {
                    return Ok((found, true));
                }
                let p = prepare_case(case, *role, out, options, &split.declared_labels)?;
                receipt::write(out, &inputs, &p)?;
                Ok((p, false))
            })();
            tick(&case.id);
            r
        })
        .collect();
    let mut prepared = Vec::with_capacity(results.len());
    let mut reused = 0;
    for r in results {
        let (p, was_reused) = r?;
        reused += usize::from(was_reused);
        prepared.push(p);
    }
    let mut report = PrepareReport {
        cases: prepared.len(),
        reused,
        warnings: Vec::new(),
    };
    for p in &prepared {
        report.warnings.extend(p.warnings.iter().cloned());
    }
    // A chosen foreground value must occur in some labelled case.
    let labelled: Vec<&Prepared> = prepared
        .iter()
        .filter(|p| p.record.role == Role::Labelled)
        .collect();
    for &v in &options.foreground {
        let n = labelled
            .iter()
            .filter(|p| p.values_present.contains(&v))
            .count();
        if n == 0 {
            return Err(VolumeError::dataset(
                dataset_root,
                format!(
                    "foreground label value {v} occurs in none of the {} labelled cases",
                    labelled.len()
                ),
            ));
        }
        for p in &labelled {
            if !p.values_present.contains(&v) {
                report.warnings.push(format!(
                    "{}: foreground label value {v} does not occur in this case",
                    p.record
                        .label_source
                        .as_deref()
                        .unwrap_or(Path::new("?"))
                        .display()
                ));
            }
        }
    }
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    let manifest = Manifest {
        version: CACHE_VERSION,
        dataset: dataset_root.to_path_buf(),
        layout,
        options: options.clone(),
        cases: prepared.into_iter().map(|p| p.record).collect(),
    };
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| VolumeError::invalid(&manifest_path, e.to_string()))?;
    write_bytes_atomic(&manifest_path, &json)?;
    Ok(report)
}

/// The box `[lo, hi)` of the voxels where `inside(linear index)` holds.
fn bounding_box(
    shape: Xyz<usize>,
    inside: impl Fn(usize) -> bool,
) -> Option<(Xyz<usize>, Xyz<usize>)> {
    let [nx, ny, nz] = shape.xyz();
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    let mut any = false;
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                if inside(x + nx * (y + ny * z)) {
                    any = true;
                    for (a, v) in [x, y, z].into_iter().enumerate() {
                        lo[a] = lo[a].min(v);
                        hi[a] = hi[a].max(v + 1);
                    }
                }
            }
        }
    }
    any.then_some((Xyz::from_xyz(lo), Xyz::from_xyz(hi)))
}

/// Crop box from a content box: margin added, axes with no margin kept
/// whole, then grown to the patch size where the volume allows.
fn crop_box(
    shape: Xyz<usize>,
    content: Option<(Xyz<usize>, Xyz<usize>)>,
    options: &PrepareOptions,
) -> (Xyz<usize>, Xyz<usize>) {
    let mut lo = [0; 3];
    let mut hi = shape.xyz();
    if let Some((clo, chi)) = content {
        for a in 0..3 {
            if let Some(m) = options.margin[a] {
                lo[a] = clo[a].saturating_sub(m);
                hi[a] = (chi[a] + m).min(shape[a]);
            }
        }
    }
    for a in 0..3 {
        let want = options.patch[a].min(shape[a]);
        while hi[a] - lo[a] < want {
            // Grow on the side with room, alternating, so the box stays centred.
            if lo[a] > 0 && (hi[a] == shape[a] || (hi[a] - lo[a]).is_multiple_of(2)) {
                lo[a] -= 1;
            } else {
                hi[a] += 1;
            }
        }
    }
    (Xyz::from_xyz(lo), Xyz::from_xyz(hi))
}

fn prepare_case(
    case: &CaseFiles,
    role: Role,
    out: &Path,
    options: &PrepareOptions,
    declared_labels: &[i64],
) -> Result<Prepared> {
    let image = read_volume_with(
        &case.image,
        ReadOptions {
            channel: case.channel,
        },
    )?;
    image.check_segmentable(&case.image)?;
    let mut warnings = Vec::new();
    let keeps_label = role != Role::Unlabelled;
    let label_for_crop = role == Role::Labelled || options.reference_crop;
    let label = match &case.label {
        Some(p) if keeps_label || label_for_crop => Some((
            p.clone(),
            read_label(p, &options.foreground, Some((&case.image, &image)))?,
        )),
        _ => None,
    };
    if role == Role::Labelled && label.is_none() {
        return Err(VolumeError::dataset(
            &case.image,
            "labelled case without a label file",
        ));
    }
    let mut values_present = BTreeSet::new();
    let mut foreground_voxels = None;
    if let Some((path, (volume, mask, present))) = &label {
        let fg = mask.iter().map(|&v| v as u64).sum::<u64>();
        if role == Role::Labelled && fg == 0 {
            // Only values the dataset does not declare (a 0/255 mask read
            // with foreground 1): an encoding slip, not a case without
            // the target (which a multi-label dataset may well have).
            let other = label::nonzero_values(volume, 8);
            let undeclared = |v: &f64| !declared_labels.iter().any(|&d| d as f64 == *v);
            if !other.is_empty() && other.iter().all(undeclared) {
                return Err(VolumeError::dataset(
                    path,
                    format!(
                        "the label of labelled case {} holds the values {other:?} but none of the foreground values {:?}: training on it would learn an empty mask; choose the foreground with --foreground (255 for LA-style masks)",
                        case.id, options.foreground
                    ),
                ));
            }
        }
        if keeps_label {
            foreground_voxels = Some(fg);
            if fg == 0 {
                warnings.push(format!("{}: label has no foreground voxel", path.display()));
            } else if fg as usize == mask.len() {
                warnings.push(format!(
                    "{}: label is foreground everywhere",
                    path.display()
                ));
            }
        }
        values_present = present.clone();
    }
    // z-score over the whole original volume, in f64 for stability.
    let values = image.data.to_f64();
    let zscore = ZScore::of(&values);
    if zscore.constant {
        warnings.push(format!(
            "{}: image is constant; intensities set to 0",
            case.image.display()
        ));
    }
    let content = match (&label, options.scan_crop) {
        (Some((_, (_, mask, _))), _) if label_for_crop => {
            bounding_box(image.shape, |i| mask[i] != 0)
        }
        (_, ScanCrop::NonZero) => bounding_box(image.shape, |i| values[i] != 0.0),
        (_, ScanCrop::None) => None,
    };
    let (lo, hi) = crop_box(image.shape, content, options);
    let crop = hi.zip_with(lo, |h, l| h - l);
    let shape = crop.zip_with(options.patch, usize::max);
    let pad_before = shape.zip_with(crop, |s, c| (s - c) / 2);
    let (nx, ny) = (image.shape.x(), image.shape.y());
    let count = shape.voxels();
    let mut img = vec![0f32; count];
    let mut lab = keeps_label
        .then(|| vec![0u8; count])
        .filter(|_| label.is_some());
    for z in lo[2]..hi[2] {
        for y in lo[1]..hi[1] {
            let qz = z - lo[2] + pad_before[2];
            let qy = y - lo[1] + pad_before[1];
            let dst = (qz * shape[1] + qy) * shape[0] + pad_before[0];
            let src = (z * ny + y) * nx + lo[0];
            for i in 0..crop[0] {
                img[dst + i] = zscore.apply(values[src + i]);
            }
            if let (Some(l), Some((_, (_, mask, _)))) = (lab.as_mut(), &label) {
                l[dst..dst + crop[0]].copy_from_slice(&mask[src..src + crop[0]]);
            }
        }
    }
    let file = format!("cases/{}.safetensors", case.id);
    write_case(&out.join(&file), shape, &img, lab.as_deref())?;
    let record = CaseRecord {
        id: case.id.clone(),
        role,
        file,
        shape,
        has_label: lab.is_some(),
        image_source: case.image.clone(),
        channel: case.channel,
        label_source: if keeps_label {
            case.label.clone()
        } else {
            None
        },
        original_shape: image.shape,
        original_dtype: image.data.dtype(),
        original_geometry: image.geometry.clone(),
        crop_start: lo,
        crop_end: hi,
        pad_before,
        intensity_mean: zscore.mean,
        intensity_std: zscore.std,
        foreground_voxels,
    };
    Ok(Prepared {
        record,
        warnings,
        values_present,
    })
}

/// Writes one case's arrays as safetensors, atomically.
fn write_case(path: &Path, shape: Xyz<usize>, image: &[f32], label: Option<&[u8]>) -> Result<()> {
    use safetensors::tensor::TensorView;
    let dims = shape.zyx().to_vec();
    let image_bytes: &[u8] = bytemuck::cast_slice(image);
    let mut views = vec![(
        "image".to_string(),
        TensorView::new(safetensors::Dtype::F32, dims.clone(), image_bytes)
            .map_err(|e| VolumeError::invalid(path, e.to_string()))?,
    )];
    if let Some(l) = label {
        views.push((
            "label".to_string(),
            TensorView::new(safetensors::Dtype::U8, dims, l)
                .map_err(|e| VolumeError::invalid(path, e.to_string()))?,
        ));
    }
    let bytes = safetensors::serialize(views, None)
        .map_err(|e| VolumeError::invalid(path, e.to_string()))?;
    write_bytes_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zscore_is_the_population_statistic_in_f64() {
        let z = ZScore::of(&[1.0f32, 2.0, 3.0, 4.0]);
        assert_eq!(z.mean, 2.5);
        assert!((z.std - 1.25f64.sqrt()).abs() < 1e-15);
        assert!(!z.constant);
        assert_eq!(z.apply(2.5), 0.0);
        let typed = ZScore::of_data(&VoxelData::I16(vec![1, 2, 3, 4]));
        assert_eq!(typed, z);
        let flat = ZScore::of(&[7.0f64; 5]);
        assert!(flat.constant);
        assert_eq!((flat.mean, flat.std), (7.0, 1.0));
        assert_eq!(flat.apply(7.0), 0.0);
    }
}
