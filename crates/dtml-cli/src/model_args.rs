//! Flags shared by `dtml predict` and `dtml evaluate`: which trained
//! students to load, on which device, and how to slide the window.

use anyhow::{Context, Result};
use dtml_infer::students::{
    DeviceKind, InferenceChoices, LoadedStudents, load_models, select_device,
};
use dtml_infer::{Ensemble, InferenceOptions, StudentRole};
use dtml_model::vnet::SIZE_MULTIPLE;
use dtml_volume::Xyz;
use dtml_volume::prepare::PAPER_PATCH;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ModelArgs {
    /// A run directory (run.json), or a weight file: our .safetensors or a
    /// PyTorch .pth of the UA-MT/DTC/DTML V-Net. Give two weight files for
    /// the two students (region, then boundary).
    #[arg(long, required = true, num_args = 1, help_heading = "Model")]
    model: Vec<PathBuf>,
    #[arg(long, help = format!(
        "Sliding-window patch x,y,z, multiples of {SIZE_MULTIPLE} [default: the run's training patch, else the paper's {PAPER_PATCH}]"
    ), help_heading = "Sliding window")]
    patch: Option<Xyz<usize>>,
    /// Sliding-window strides x,y,z in voxels.
    #[arg(long, default_value_t = InferenceOptions::default().stride, help_heading = "Sliding window")]
    stride: Xyz<usize>,
    /// Windows per forward pass.
    #[arg(long, default_value_t = InferenceOptions::default().batch, help_heading = "Sliding window")]
    batch: usize,
    /// Which students predict: the ensemble (mean of both), region or
    /// boundary [default: ensemble with two students, else the one given;
    /// a single weight file is the region student unless this says boundary].
    #[arg(long, value_enum, help_heading = "Prediction")]
    student: Option<Ensemble>,
    /// Foreground where the averaged probability is above this.
    #[arg(long, default_value_t = InferenceOptions::default().threshold, help_heading = "Prediction")]
    threshold: f32,
    /// Keep every connected component (by default only the largest,
    /// see --connectivity, is kept).
    #[arg(long, help_heading = "Prediction")]
    no_largest_component: bool,
    /// Neighbourhood of the largest component: 26 (the authors' code,
    /// scikit-image) or 6 (face neighbours only, scipy's default).
    #[arg(long, value_enum, default_value = "26", help_heading = "Prediction")]
    connectivity: dtml_edt::Connectivity,
    /// Device to run the networks on: cpu, or cuda (GPU 0; needs a build
    /// with --features cuda).
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu, help_heading = "Model")]
    device: DeviceKind,
}

impl ModelArgs {
    /// The --model arguments as given.
    pub fn paths(&self) -> &[PathBuf] {
        &self.model
    }

    /// Loads the students and settles the inference options.
    pub fn load(&self, disagreement: bool) -> Result<(LoadedStudents, InferenceOptions)> {
        let device = select_device(self.device)?;
        let single = match self.student {
            Some(Ensemble::Boundary) => StudentRole::Boundary,
            _ => StudentRole::Region,
        };
        let shown: Vec<String> = self.model.iter().map(|m| m.display().to_string()).collect();
        let loaded = load_models(&self.model, single, &device)
            .with_context(|| format!("loading --model {}", shown.join(" ")))?;
        let opts = loaded.options(&InferenceChoices {
            patch: self.patch,
            stride: self.stride,
            batch: self.batch,
            ensemble: self.student,
            threshold: self.threshold,
            largest_component: !self.no_largest_component,
            connectivity: self.connectivity,
            disagreement,
        })?;
        if let Some(c) = loaded.config() {
            tracing::info!(
                "{} (V-Net width {}, {} input channel(s)): {} on {}, patch {:?}, strides {:?}",
                shown.join(" + "),
                c.width,
                c.in_channels,
                opts.ensemble,
                self.device,
                opts.patch,
                self.stride
            );
        }
        Ok((loaded, opts))
    }
}
