//! Sliding-window inference: a whole scan through one or both students,
//! exactly as the reference `test_single_case` of the UA-MT / DTC / DTML
//! code does it, then the ensemble, the threshold and the largest
//! connected component.
//!
//! Per axis (sizes in (x, y, z), memory x fastest): an axis smaller than
//! the patch is zero-padded to the patch size (`pad // 2` before, the rest
//! after); `ceil((size - patch) / stride) + 1` windows start at
//! `min(stride * i, size - patch)`; every window's probabilities are added
//! into a score map, which is divided by the number of windows covering
//! each voxel; the padding is cropped away. The windows are visited in the
//! reference's order (x outer, z inner) and pushed through the networks in
//! batches, in evaluation mode (running BN statistics, no dropout).
//!
//! The region student contributes `p_A = sigmoid(seg_logits)`, the
//! boundary student `q_B = sigmoid(-k * d_B)` with `k` the run's sharpness
//! (1500 in the paper, [`InferenceOptions::sharpness`]) and `d_B` its
//! SDM head after tanh; [`Ensemble::Both`] averages the two per window.

use crate::error::{InferError, Result};
use candle_core::{DType, Device, Tensor};
use dtml_model::VNet;
use dtml_volume::{ReadOptions, Volume, VoxelData, Xyz, ZScore};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use strum::{Display, EnumString};

/// Sharpness `k` of the SDM-to-mask transform `sigmoid(-k d)`.
pub const SHARPNESS: f32 = dtml_loss::SDM_SHARPNESS as f32;

/// The networks available for inference.
#[derive(Clone, Copy, Default)]
pub struct Students<'a> {
    /// Student A: its segmentation head gives `p_A`.
    pub region: Option<&'a VNet>,
    /// Student B: its SDM head gives `q_B = sigmoid(-k d_B)`.
    pub boundary: Option<&'a VNet>,
}

/// Which students' probabilities make the prediction (`--student`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, Display, EnumString,
)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Ensemble {
    /// The mean of `p_A` and `q_B` (the method's inference).
    #[default]
    #[cfg_attr(feature = "clap", value(name = "ensemble", alias = "both"))]
    #[serde(rename = "ensemble", alias = "both")]
    #[strum(to_string = "ensemble", serialize = "both")]
    Both,
    /// `p_A` alone (what the released test script does).
    Region,
    /// `q_B` alone.
    Boundary,
}

/// The reference test script's window step (x, y, z): the default of
/// inference and of validation during training.
pub const PAPER_STRIDE: Xyz<usize> = Xyz::new(18, 18, 4);

impl Ensemble {
    /// What a set of students predicts with unless told otherwise: both
    /// when there are two, else the one there is.
    pub fn of(students: &Students) -> Ensemble {
        match (students.region.is_some(), students.boundary.is_some()) {
            (true, true) => Ensemble::Both,
            (true, false) => Ensemble::Region,
            _ => Ensemble::Boundary,
        }
    }
}

/// Settings of [`predict_volume`]. Serialised ([`InferenceOptions::describe`])
/// with what decides the mask, not the batch size or the extra map.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InferenceOptions {
    /// Window size; a multiple of 16 on every axis (the V-Net halves the
    /// resolution four times).
    pub patch: Xyz<usize>,
    /// Window step; between 1 and the patch size on every axis.
    pub stride: Xyz<usize>,
    /// Windows per forward pass.
    #[serde(skip)]
    pub batch: usize,
    #[serde(rename = "student")]
    pub ensemble: Ensemble,
    /// A voxel is foreground when its averaged probability is above this.
    pub threshold: f32,
    /// Keep only the largest connected component of the mask.
    pub largest_component: bool,
    /// Its neighbourhood: 26 (`method.md`, the authors' scikit-image
    /// `label`) or 6 (scipy's default, which the shared reference uses).
    #[serde(default)]
    pub connectivity: dtml_edt::Connectivity,
    /// Also compute the averaged `|p_A - q_B|` (needs both students).
    #[serde(skip)]
    pub disagreement: bool,
    /// `k` of the boundary student's `q_B = sigmoid(-k d_B)`: the value the
    /// run was trained with (`run.json`), [`SHARPNESS`] for the paper.
    pub sharpness: f32,
}

impl Default for InferenceOptions {
    fn default() -> Self {
        InferenceOptions {
            patch: dtml_volume::prepare::PAPER_PATCH,
            stride: PAPER_STRIDE,
            batch: 2,
            ensemble: Ensemble::Both,
            threshold: 0.5,
            largest_component: true,
            connectivity: dtml_edt::Connectivity::Full,
            disagreement: false,
            sharpness: SHARPNESS,
        }
    }
}

impl InferenceOptions {
    /// The settings as JSON, for reports (`metrics.json`) and the record
    /// of a prediction job.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("plain fields serialise")
    }

    /// Checks the window, batch and threshold (also done by
    /// [`predict_volume`]; call it early to fail before any work).
    pub fn check(&self) -> Result<()> {
        let opts = self;
        for a in 0..3 {
            let (p, s) = (opts.patch[a], opts.stride[a]);
            if let Err(why) = dtml_model::vnet::check_spatial_size(&[p]) {
                return Err(InferError::Config(format!("patch {:?}: {why}", opts.patch)));
            }
            if s == 0 || s > p {
                return Err(InferError::Config(format!(
                    "stride {:?}: every step must be between 1 and the patch size {:?} (larger steps leave voxels no window covers)",
                    opts.stride, opts.patch
                )));
            }
        }
        if opts.batch == 0 {
            return Err(InferError::Config("batch must be at least 1".into()));
        }
        if !(0.0..=1.0).contains(&opts.threshold) {
            return Err(InferError::Config(format!(
                "threshold {} must be in [0, 1]",
                opts.threshold
            )));
        }
        Ok(())
    }

    /// Refuses a window batch the machine cannot hold, before any scan is
    /// read (the check `train` does for its step, with inference's share
    /// of the memory per voxel).
    pub fn check_memory(&self, config: &dtml_model::VNetConfig, networks: usize) -> Result<()> {
        let need = self.patch.voxels() as f64
            * self.batch as f64
            * config.width as f64
            * networks as f64
            * INFER_BYTES_PER_VOXEL_WINDOW_WIDTH_NET;
        dtml_volume::confine::check_memory(
            std::path::Path::new("--patch"),
            &format!(
                "inference with windows of {:?}, batch {}, width {}",
                self.patch, self.batch, config.width
            ),
            need,
        )
        .map_err(|e| InferError::Config(e.to_string()))
    }
}

/// Bytes of inference memory per voxel of a window, per window of a batch,
/// per unit of width and per network: measured as the peak RSS of `dtml
/// predict` on one 256x256x160 scan with width-16 students, two networks,
/// batch 2, windows of 112x112x80 less the same at 32x32x16 (942 MB over
/// 64.2 M voxel-units: 15), rounded up.
pub const INFER_BYTES_PER_VOXEL_WINDOW_WIDTH_NET: f64 = 16.0;

/// A prediction on the input grid (x fastest).
#[derive(Debug, Clone)]
pub struct Prediction {
    /// The input's shape.
    pub shape: Xyz<usize>,
    /// Overlap-averaged foreground probability of the chosen ensemble.
    pub probability: Vec<f32>,
    /// 1 where `probability > threshold` (after the largest-component
    /// filter when asked), else 0.
    pub mask: Vec<u8>,
    /// Overlap-averaged `|p_A - q_B|`, when asked.
    pub disagreement: Option<Vec<f32>>,
}

/// The window layout along one axis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AxisWindows {
    /// Size of the axis in the input.
    pub size: usize,
    /// Size after zero-padding to at least the patch.
    pub padded: usize,
    /// Zeros added before the input (`(padded - size) / 2`).
    pub pad_before: usize,
    /// First voxel of each window in the padded axis.
    pub starts: Vec<usize>,
}

impl AxisWindows {
    /// The reference's layout for `size` voxels, windows of `patch`, steps
    /// of `stride` (both positive, `stride <= patch` for full coverage).
    pub fn new(size: usize, patch: usize, stride: usize) -> AxisWindows {
        let padded = size.max(patch);
        let pad_before = (padded - size) / 2;
        let count = (padded - patch).div_ceil(stride) + 1;
        let starts = (0..count)
            .map(|i| (stride * i).min(padded - patch))
            .collect();
        AxisWindows {
            size,
            padded,
            pad_before,
            starts,
        }
    }

    /// How many windows cover each voxel of the padded axis.
    pub fn coverage(&self, patch: usize) -> Vec<u32> {
        let mut c = vec![0u32; self.padded];
        for &s in &self.starts {
            for v in &mut c[s..s + patch] {
                *v += 1;
            }
        }
        c
    }
}

/// Numerically stable logistic function.
#[inline]
fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Z-scores intensities in place with preparation's normalisation
/// ([`dtml_volume::ZScore`]: mean and population standard deviation over
/// the whole volume, in f64; a constant image becomes 0).
pub fn zscore(image: &mut [f32]) {
    let z = ZScore::of(image);
    image.par_iter_mut().for_each(|v| *v = z.apply(*v as f64));
}

/// Reads a 3D scan (NIfTI or NRRD; `channel` picks one volume of a 4D
/// file) and returns it with its z-scored intensities, normalised in the
/// stored type exactly as preparation does.
pub fn read_scan(path: &Path, channel: Option<usize>) -> Result<(Volume, Vec<f32>)> {
    let volume = dtml_volume::read_volume_with(path, ReadOptions { channel })?;
    volume.check_segmentable(path)?;
    let (image, constant) = zscored(&volume.data);
    if constant {
        tracing::warn!(
            "{}: the image is constant; its intensities become 0",
            path.display()
        );
    }
    Ok((volume, image))
}

/// A scan's voxels z-scored in their stored type exactly as preparation
/// does (what the students were trained on), and whether the scan is
/// constant (then every intensity is 0).
pub fn zscored(data: &VoxelData) -> (Vec<f32>, bool) {
    let z = ZScore::of_data(data);
    let image = (0..data.len())
        .into_par_iter()
        .map(|i| z.apply(data.get_f64(i)))
        .collect();
    (image, z.constant)
}

/// Checks a network for single-channel, single-class sigmoid inference.
fn check_network(net: &VNet, which: &str) -> Result<()> {
    let c = net.config();
    if c.in_channels != 1 {
        return Err(InferError::Config(format!(
            "the {which} student takes {} input channels; inference feeds one (a single z-scored scan)",
            c.in_channels
        )));
    }
    if c.classes != 1 {
        return Err(InferError::Config(format!(
            "the {which} student has {} output classes; inference supports the binary (one sigmoid channel) V-Net",
            c.classes
        )));
    }
    Ok(())
}

/// Checks options, shapes and students before any work.
fn validate(
    students: &Students,
    image: &[f32],
    shape: Xyz<usize>,
    opts: &InferenceOptions,
) -> Result<()> {
    let voxels = shape
        .into_iter()
        .try_fold(1usize, |n, s| n.checked_mul(s))
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            InferError::Config(format!(
                "volume shape {shape:?} must be positive on every axis"
            ))
        })?;
    if voxels != image.len() {
        return Err(InferError::Config(format!(
            "image holds {} voxels but shape {shape:?} needs {voxels}",
            image.len()
        )));
    }
    opts.check()?;
    let (need_region, need_boundary) = needs(opts);
    if need_region && students.region.is_none() {
        return Err(InferError::Config(format!(
            "{} needs the region student, which was not given",
            what_needs(opts, true)
        )));
    }
    if need_boundary && students.boundary.is_none() {
        return Err(InferError::Config(format!(
            "{} needs the boundary student, which was not given",
            what_needs(opts, false)
        )));
    }
    if let Some(r) = students.region.filter(|_| need_region) {
        check_network(r, "region")?;
    }
    if let Some(b) = students.boundary.filter(|_| need_boundary) {
        check_network(b, "boundary")?;
    }
    if let (Some(r), Some(b)) = (students.region, students.boundary)
        && need_region
        && need_boundary
        && !r.device().same_device(b.device())
    {
        return Err(InferError::Config(
            "the two students live on different devices".into(),
        ));
    }
    if let Some((i, v)) = image.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(InferError::Config(format!(
            "image voxel {i} holds {v}: NaN or infinite intensities cannot be segmented"
        )));
    }
    Ok(())
}

/// Which students a run needs: (region, boundary).
fn needs(opts: &InferenceOptions) -> (bool, bool) {
    (
        opts.ensemble != Ensemble::Boundary || opts.disagreement,
        opts.ensemble != Ensemble::Region || opts.disagreement,
    )
}

fn what_needs(opts: &InferenceOptions, region: bool) -> &'static str {
    let ensemble_needs = match opts.ensemble {
        Ensemble::Both => true,
        Ensemble::Region => region,
        Ensemble::Boundary => !region,
    };
    match (ensemble_needs, opts.ensemble) {
        (true, Ensemble::Both) => "the ensemble of both students",
        (true, Ensemble::Region) => "region-only inference",
        (true, Ensemble::Boundary) => "boundary-only inference",
        (false, _) => "the disagreement map",
    }
}

/// Copies window `w` (its first voxel in the padded volume `dims`) into `dst`.
fn extract(padded: &[f32], dims: Xyz<usize>, w: Xyz<usize>, patch: Xyz<usize>, dst: &mut [f32]) {
    let (px, py) = (dims.x(), dims.y());
    let (wx, wy) = (patch.x(), patch.y());
    for (zz, plane) in dst.chunks_mut(wx * wy).enumerate() {
        for (yy, row) in plane.chunks_mut(wx).enumerate() {
            let src = ((w[2] + zz) * py + w[1] + yy) * px + w[0];
            row.copy_from_slice(&padded[src..src + wx]);
        }
    }
}

/// Adds a window's values into the padded accumulator, planes in parallel.
fn accumulate(acc: &mut [f32], dims: Xyz<usize>, w: Xyz<usize>, patch: Xyz<usize>, src: &[f32]) {
    let (px, py) = (dims.x(), dims.y());
    let [wx, wy, wz] = patch.xyz();
    acc.par_chunks_mut(px * py)
        .skip(w[2])
        .take(wz)
        .zip(src.par_chunks(wx * wy))
        .for_each(|(plane, s)| {
            for (yy, srow) in s.chunks(wx).enumerate() {
                let start = (w[1] + yy) * px + w[0];
                for (a, &b) in plane[start..start + wx].iter_mut().zip(srow) {
                    *a += b;
                }
            }
        });
}

/// A network output as f32 values on the CPU, through `f`.
fn probabilities(t: &Tensor, f: impl Fn(f32) -> f32 + Sync) -> Result<Vec<f32>> {
    let mut v = t
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    v.par_iter_mut().for_each(|x| *x = f(*x));
    // Finite weights and a finite image give finite outputs; anything else
    // would threshold to an empty mask without a word.
    if let Some(bad) = v.par_iter().position_any(|x| !x.is_finite()) {
        return Err(InferError::Config(format!(
            "the network produced a non-finite output ({}) at window voxel {bad}: its weights are corrupt or diverged",
            v[bad]
        )));
    }
    Ok(v)
}

/// Whole-volume sliding-window inference of `image` (z-scored, x fastest,
/// of size `shape`). See the module documentation for the procedure.
pub fn predict_volume(
    students: &Students,
    image: &[f32],
    shape: Xyz<usize>,
    opts: &InferenceOptions,
) -> Result<Prediction> {
    predict_volume_until(students, image, shape, opts, &AtomicBool::new(false))
}

/// [`predict_volume`] that gives up with [`InferError::Stopped`] before
/// the next batch of windows once `stop` is set (by another thread: Ctrl-C
/// in Python, a job being cancelled).
pub fn predict_volume_until(
    students: &Students,
    image: &[f32],
    shape: Xyz<usize>,
    opts: &InferenceOptions,
    stop: &AtomicBool,
) -> Result<Prediction> {
    validate(students, image, shape, opts)?;
    let (need_region, need_boundary) = needs(opts);
    let region = students.region.filter(|_| need_region);
    let boundary = students.boundary.filter(|_| need_boundary);
    let Some(net) = region.or(boundary) else {
        return Err(InferError::Config("no student to run".into()));
    };
    let device = net.device().clone();
    let dtype = net
        .get("out_conv2.weight")
        .map_or(DType::F32, |v| v.dtype());
    sliding_window(image, shape, opts, |input, n| {
        if stop.load(Ordering::Relaxed) {
            return Err(InferError::Stopped);
        }
        let x = Tensor::from_vec(input, opts.patch.batch_dims(n, 1), &device)?.to_dtype(dtype)?;
        let p_a = match region {
            Some(r) => Some(probabilities(&r.predict(&x)?.seg_logits, sigmoid)?),
            None => None,
        };
        let q_b = match boundary {
            Some(b) => Some(probabilities(&b.predict(&x)?.sdm, |d| {
                sigmoid(-opts.sharpness * d)
            })?),
            None => None,
        };
        Ok((p_a, q_b))
    })
}

/// The sliding window around a batch function: `forward(windows, n)` gets
/// `n` windows (each `(Z, Y, X)` of the patch, x fastest) and returns the
/// region and boundary probabilities of those the options need.
pub(crate) fn sliding_window(
    image: &[f32],
    shape: Xyz<usize>,
    opts: &InferenceOptions,
    mut forward: impl FnMut(Vec<f32>, usize) -> Result<(Option<Vec<f32>>, Option<Vec<f32>>)>,
) -> Result<Prediction> {
    let axes: [AxisWindows; 3] =
        std::array::from_fn(|a| AxisWindows::new(shape[a], opts.patch[a], opts.stride[a]));
    let dims = Xyz::from_fn(|a| axes[a].padded);
    let pad = Xyz::from_fn(|a| axes[a].pad_before);
    let (nx, ny) = (shape.x(), shape.y());
    let [px, py, pz] = dims.xyz();

    // The zero-padded volume.
    let mut padded = vec![0f32; px * py * pz];
    padded
        .par_chunks_mut(px * py)
        .skip(pad[2])
        .take(shape.z())
        .enumerate()
        .for_each(|(z, plane)| {
            for y in 0..ny {
                let dst = (pad[1] + y) * px + pad[0];
                let src = (z * ny + y) * nx;
                plane[dst..dst + nx].copy_from_slice(&image[src..src + nx]);
            }
        });

    // The reference's loop order: x outer, then y, z inner.
    let mut windows = Vec::new();
    for &x in &axes[0].starts {
        for &y in &axes[1].starts {
            for &z in &axes[2].starts {
                windows.push(Xyz::new(x, y, z));
            }
        }
    }
    let wvox = opts.patch.voxels();
    tracing::debug!(
        "sliding window: {} windows of {:?} over padded {:?}, batch {}",
        windows.len(),
        opts.patch,
        dims,
        opts.batch
    );

    let mut score = vec![0f32; px * py * pz];
    let mut disagreement = opts.disagreement.then(|| vec![0f32; px * py * pz]);
    for chunk in windows.chunks(opts.batch.max(1)) {
        let n = chunk.len();
        let mut input = vec![0f32; n * wvox];
        input
            .par_chunks_mut(wvox)
            .zip(chunk.par_iter())
            .for_each(|(dst, &w)| extract(&padded, dims, w, opts.patch, dst));
        let (p_a, q_b) = forward(input, n)?;
        for (what, v) in [("region", &p_a), ("boundary", &q_b)] {
            if let Some(v) = v
                && v.len() != n * wvox
            {
                return Err(InferError::Other(format!(
                    "the {what} student returned {} values for {n} windows of {wvox} voxels",
                    v.len()
                )));
            }
        }
        let prob: Vec<f32> = match (opts.ensemble, &p_a, &q_b) {
            (Ensemble::Both, Some(a), Some(b)) => a
                .par_iter()
                .zip(b.par_iter())
                .map(|(a, b)| (a + b) / 2.0)
                .collect(),
            (Ensemble::Region, Some(a), _) => a.clone(),
            (Ensemble::Boundary, _, Some(b)) => b.clone(),
            _ => {
                return Err(InferError::Other(format!(
                    "{:?} inference without the probabilities it needs",
                    opts.ensemble
                )));
            }
        };
        let diff: Option<Vec<f32>> = match (&disagreement, &p_a, &q_b) {
            (None, _, _) => None,
            (Some(_), Some(a), Some(b)) => Some(
                a.par_iter()
                    .zip(b.par_iter())
                    .map(|(a, b)| (a - b).abs())
                    .collect(),
            ),
            _ => {
                return Err(InferError::Other(
                    "the disagreement map needs both students' probabilities".into(),
                ));
            }
        };
        for (i, &w) in chunk.iter().enumerate() {
            let part = i * wvox..(i + 1) * wvox;
            accumulate(&mut score, dims, w, opts.patch, &prob[part.clone()]);
            if let (Some(acc), Some(d)) = (disagreement.as_mut(), &diff) {
                accumulate(acc, dims, w, opts.patch, &d[part]);
            }
        }
    }

    // Divide by the coverage (a product of the per-axis counts) and crop.
    let cover: [Vec<u32>; 3] = std::array::from_fn(|a| axes[a].coverage(opts.patch[a]));
    let crop = |acc: &[f32]| -> Vec<f32> {
        let mut out = vec![0f32; image.len()];
        out.par_chunks_mut(nx * ny)
            .enumerate()
            .for_each(|(z, plane)| {
                let qz = z + pad[2];
                for y in 0..ny {
                    let qy = y + pad[1];
                    let cyz = cover[1][qy] * cover[2][qz];
                    for x in 0..nx {
                        let qx = x + pad[0];
                        let count = (cover[0][qx] * cyz) as f32;
                        plane[y * nx + x] = acc[(qz * py + qy) * px + qx] / count;
                    }
                }
            });
        out
    };
    let probability = crop(&score);
    drop(score);
    let disagreement = disagreement.map(|d| crop(&d));
    let mut mask: Vec<u8> = probability
        .par_iter()
        .map(|&p| (p > opts.threshold) as u8)
        .collect();
    if opts.largest_component {
        let keep = dtml_edt::largest_connected_component(&mask, &shape.zyx(), opts.connectivity)?;
        mask = keep.into_iter().map(u8::from).collect();
    }
    Ok(Prediction {
        shape,
        probability,
        mask,
        disagreement,
    })
}

#[cfg(test)]
mod tests;
