//! Loading trained students for inference: from a run directory
//! (`run.json` + safetensors) or from weight files of the reference V-Net
//! family (the authors' PyTorch `.pth` checkpoints or our `.safetensors`),
//! whose network shape is read off the tensors.

use crate::error::{InferError, Result};
use crate::infer::{Ensemble, InferenceOptions, Students};
use crate::run::{RUN_FILE, RunInfo, StudentRole};
use candle_core::{DType, Device, Tensor};
use dtml_model::{VNet, VNetConfig};
use dtml_volume::Xyz;
use dtml_volume::files::same_file;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use strum::{Display, EnumString};

/// Where the networks run (`--device`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, Display, EnumString,
)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum DeviceKind {
    /// The CPU, with the kernels of `dtml_model::simd`'s tier.
    #[default]
    Cpu,
    /// NVIDIA GPU 0 (a build with `--features cuda`).
    #[cfg_attr(feature = "clap", value(alias = "gpu"))]
    #[serde(alias = "gpu")]
    #[strum(to_string = "cuda", serialize = "gpu")]
    Cuda,
}

/// The candle device of a [`DeviceKind`]; CUDA fails with a reason when
/// the build or the machine has none.
pub fn select_device(kind: DeviceKind) -> Result<Device> {
    match kind {
        DeviceKind::Cpu => Ok(Device::Cpu),
        DeviceKind::Cuda => cuda_device(),
    }
}

#[cfg(feature = "cuda")]
fn cuda_device() -> Result<Device> {
    // cudarc panics when the CUDA driver library cannot be loaded; turn
    // that into an error (with the default hook silenced meanwhile).
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let made = std::panic::catch_unwind(|| Device::new_cuda(0));
    std::panic::set_hook(hook);
    match made {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(e)) => Err(InferError::Config(format!("no usable CUDA device 0: {e}"))),
        Err(p) => {
            let why = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the CUDA driver could not be loaded".into());
            Err(InferError::Other(format!("no usable CUDA device 0: {why}")))
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_device() -> Result<Device> {
    Err(InferError::Other(
        "this dtml was built without CUDA support; rebuild with --features cuda".into(),
    ))
}

/// Students loaded from disk, with what their source says about them.
pub struct LoadedStudents {
    pub region: Option<VNet>,
    pub boundary: Option<VNet>,
    /// True when one network serves as both students (its two heads).
    pub shared: bool,
    /// The run's description, when loaded from a run directory.
    pub run: Option<RunInfo>,
}

impl LoadedStudents {
    /// References for [`crate::infer::predict_volume`].
    pub fn students(&self) -> Students<'_> {
        let region = self.region.as_ref();
        let boundary = if self.shared {
            region
        } else {
            self.boundary.as_ref()
        };
        Students { region, boundary }
    }

    /// The training patch of a run, if known.
    pub fn patch(&self) -> Option<Xyz<usize>> {
        self.run.as_ref().map(|r| r.patch)
    }

    /// The scan channel the run trained on, if it recorded one.
    pub fn channel(&self) -> Option<usize> {
        self.run.as_ref().and_then(|r| r.channel)
    }

    /// Inference settings these students call for unless told otherwise:
    /// the run's training patch and SDM sharpness (else the defaults), the
    /// ensemble when there are two students, else the one there is.
    pub fn default_options(&self) -> InferenceOptions {
        let defaults = InferenceOptions::default();
        let s = self.students();
        InferenceOptions {
            patch: self.patch().unwrap_or(defaults.patch),
            sharpness: self
                .run
                .as_ref()
                .map_or(defaults.sharpness, |r| r.sharpness as f32),
            ensemble: Ensemble::of(&s),
            ..defaults
        }
    }

    /// The network configuration of the first student.
    pub fn config(&self) -> Option<&VNetConfig> {
        self.region
            .as_ref()
            .or(self.boundary.as_ref())
            .map(|n| n.config())
    }

    /// How many networks are loaded (one when one network is both students).
    pub fn networks(&self) -> usize {
        if self.shared {
            1
        } else {
            usize::from(self.region.is_some()) + usize::from(self.boundary.is_some())
        }
    }

    /// The inference options for a user's choices, checked against these
    /// students (the ensemble and the disagreement map need two) and
    /// against the machine's memory, before any scan is read.
    pub fn options(&self, choices: &InferenceChoices) -> Result<InferenceOptions> {
        let students = self.students();
        let two = students.region.is_some() && students.boundary.is_some();
        let base = self.default_options();
        let ensemble = choices.ensemble.unwrap_or(base.ensemble);
        if ensemble == Ensemble::Both && !two {
            return Err(InferError::Config(
                "the ensemble needs two students: load a run of two students or two weight files (region, then boundary), or choose the region or boundary student".into(),
            ));
        }
        if choices.disagreement && !two {
            return Err(InferError::Config(
                "the disagreement map compares two students: load a run of two students or two weight files (region, then boundary)".into(),
            ));
        }
        let opts = InferenceOptions {
            patch: choices.patch.unwrap_or(base.patch),
            stride: choices.stride,
            batch: choices.batch,
            ensemble,
            threshold: choices.threshold,
            largest_component: choices.largest_component,
            connectivity: choices.connectivity,
            disagreement: choices.disagreement,
            ..base
        };
        opts.check()?;
        if let Some(c) = self.config() {
            opts.check_memory(c, self.networks())?;
        }
        Ok(opts)
    }
}

/// What a user chooses about inference (`dtml predict`'s flags, the Python
/// `Model.predict`'s arguments); `None` takes the students' default
/// ([`LoadedStudents::default_options`]).
#[derive(Debug, Clone, PartialEq)]
pub struct InferenceChoices {
    /// Window size [default: the run's training patch, else the paper's].
    pub patch: Option<Xyz<usize>>,
    pub stride: Xyz<usize>,
    pub batch: usize,
    /// [default: the ensemble with two students, else the one there is].
    pub ensemble: Option<Ensemble>,
    pub threshold: f32,
    pub largest_component: bool,
    pub connectivity: dtml_edt::Connectivity,
    pub disagreement: bool,
}

impl Default for InferenceChoices {
    fn default() -> Self {
        let d = InferenceOptions::default();
        InferenceChoices {
            patch: None,
            stride: d.stride,
            batch: d.batch,
            ensemble: None,
            threshold: d.threshold,
            largest_component: d.largest_component,
            connectivity: d.connectivity,
            disagreement: d.disagreement,
        }
    }
}

/// The V-Net shape of a state dict: width and input channels from
/// `block_one.conv.0.weight` (Cout, Cin, 3, 3, 3), classes from
/// `out_conv2.weight`.
pub fn infer_config(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<VNetConfig> {
    let dims = |name: &str| -> Result<Vec<usize>> {
        tensors.get(name).map(|t| t.dims().to_vec()).ok_or_else(|| {
            InferError::file(
                path,
                format!("no tensor {name}: not a V-Net state dict of the UA-MT/DTC/DTML family"),
            )
        })
    };
    let first = dims("block_one.conv.0.weight")?;
    if first.len() != 5 || first[2..] != [3, 3, 3] {
        return Err(InferError::file(
            path,
            format!(
                "block_one.conv.0.weight has shape {first:?}; a V-Net's first conv is (width, channels, 3, 3, 3)"
            ),
        ));
    }
    let seg = dims("out_conv2.weight")?;
    if seg.len() != 5 || seg[1] != first[0] || seg[2..] != [1, 1, 1] {
        return Err(InferError::file(
            path,
            format!(
                "out_conv2.weight has shape {seg:?}; a V-Net of width {} needs (classes, {}, 1, 1, 1)",
                first[0], first[0]
            ),
        ));
    }
    Ok(VNetConfig {
        in_channels: first[1],
        width: first[0],
        classes: seg[0],
        ..VNetConfig::default()
    })
}

/// A V-Net from a weight file whose shape is read off its tensors.
pub fn load_weight_file(path: &Path, device: &Device) -> Result<VNet> {
    let tensors = dtml_model::vnet::read_weight_file(path)?;
    let config = infer_config(&tensors, path)?;
    let net = VNet::new(config, 0, DType::F32, device)?;
    net.load_state_dict(&tensors, path)?;
    Ok(net)
}

/// A V-Net of a known shape from a weight file.
fn load_with_config(path: &Path, config: &VNetConfig, device: &Device) -> Result<VNet> {
    let net = VNet::new(config.clone(), 0, DType::F32, device)?;
    net.load_weights(path)?;
    Ok(net)
}

/// Loads the students of a run directory (`run.json` and its weights).
pub fn load_run(dir: &Path, device: &Device) -> Result<LoadedStudents> {
    let info = RunInfo::read(dir)?;
    let paths = info.student_paths(dir);
    if paths.is_empty() {
        return Err(InferError::file(
            &dir.join(RUN_FILE),
            "the run lists no student weights",
        ));
    }
    let mut out = LoadedStudents {
        region: None,
        boundary: None,
        shared: false,
        run: None,
    };
    let mut loaded: Vec<(StudentRole, PathBuf)> = Vec::new();
    for (role, path) in paths {
        if let Some((r, _)) = loaded.iter().find(|(r, _)| *r == role) {
            return Err(InferError::file(
                &dir.join(RUN_FILE),
                format!("the run lists two {r:?} students"),
            ));
        }
        if loaded.iter().any(|(_, p)| same_file(p, &path)) {
            // One network with both heads serves as both students.
            out.shared = true;
        } else {
            let net = load_with_config(&path, &info.network, device)?;
            match role {
                StudentRole::Region => out.region = Some(net),
                StudentRole::Boundary => out.boundary = Some(net),
            }
        }
        loaded.push((role, path));
    }
    if out.shared {
        // Keep the one network in the region slot; `students()` lends it twice.
        if out.region.is_none() {
            out.region = out.boundary.take();
        }
    }
    out.run = Some(info);
    Ok(out)
}

/// Loads students from weight files: one file is the `single` student, two
/// files are the region then the boundary student (the same file twice
/// uses one network's two heads).
pub fn load_weight_files(
    files: &[PathBuf],
    single: StudentRole,
    device: &Device,
) -> Result<LoadedStudents> {
    let mut out = LoadedStudents {
        region: None,
        boundary: None,
        shared: false,
        run: None,
    };
    match files {
        [one] => {
            let net = load_weight_file(one, device)?;
            match single {
                StudentRole::Region => out.region = Some(net),
                StudentRole::Boundary => out.boundary = Some(net),
            }
        }
        [a, b] => {
            out.region = Some(load_weight_file(a, device)?);
            if same_file(a, b) {
                out.shared = true;
            } else {
                out.boundary = Some(load_weight_file(b, device)?);
            }
        }
        _ => {
            return Err(InferError::Config(format!(
                "give one or two weight files (region, then boundary), not {}",
                files.len()
            )));
        }
    }
    Ok(out)
}

/// Loads `--model` arguments: one run directory, or one or two weight files.
pub fn load_models(
    models: &[PathBuf],
    single: StudentRole,
    device: &Device,
) -> Result<LoadedStudents> {
    match models {
        [dir] if dir.is_dir() => load_run(dir, device),
        _ => {
            if let Some(d) = models.iter().find(|m| m.is_dir()) {
                return Err(InferError::file(
                    d,
                    "a run directory must be the only --model",
                ));
            }
            load_weight_files(models, single, device)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DeviceKind;

    #[test]
    fn device_names() {
        assert_eq!("gpu".parse::<DeviceKind>(), Ok(DeviceKind::Cuda));
        assert_eq!(DeviceKind::Cuda.to_string(), "cuda");
        assert!("tpu".parse::<DeviceKind>().is_err());
    }
}
