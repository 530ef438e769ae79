//! A run directory: what training writes and inference reads.
//!
//! `RUN_DIR/run.json` names the method, the network shape, the patch size
//! and the weight file of each student; weights are safetensors in the
//! PyTorch state-dict layout (see `dtml_model::vnet`). Checkpoints for
//! `--resume` live under `RUN_DIR/checkpoint/` and are not read here.

use crate::error::{InferError, Result};
use dtml_model::VNetConfig;
use dtml_volume::Xyz;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// File name of the run description inside a run directory.
pub const RUN_FILE: &str = "run.json";
/// Format tag written into `run.json`.
pub const RUN_FORMAT: &str = "dtml-run";
/// The largest `run.json` read.
const RUN_FILE_MAX_BYTES: u64 = 1 << 20;
/// Version of the `run.json` layout.
pub const RUN_VERSION: u32 = 1;

/// Which output of a network a student contributes at inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StudentRole {
    /// Student A: `sigmoid(seg_logits)`.
    Region,
    /// Student B: `sigmoid(-k * tanh(sdm_out))`.
    Boundary,
}

/// One trained network of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudentFile {
    pub role: StudentRole,
    /// Weight file, relative to the run directory.
    pub file: String,
}

/// Contents of `run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub format: String,
    pub version: u32,
    /// The training objective.
    pub method: crate::method::Method,
    pub network: VNetConfig,
    /// Training patch size; the default sliding window.
    pub patch: Xyz<usize>,
    /// Label values that were foreground.
    pub foreground: Vec<i64>,
    pub students: Vec<StudentFile>,
    /// Iteration the exported weights come from.
    pub iteration: usize,
    /// `k` of the boundary student's `sigmoid(-k d)` in training, which
    /// inference must use too (runs written before it was recorded used
    /// the paper's 1500).
    #[serde(default = "paper_sharpness")]
    pub sharpness: f64,
    /// The image channel (modality) the students were trained on
    /// (`dtml prepare --channel`): evaluation on a dataset folder reads it,
    /// prediction reads that volume of a scan of several volumes. `None`
    /// in runs written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<usize>,
}

fn paper_sharpness() -> f64 {
    dtml_loss::SDM_SHARPNESS
}

impl RunInfo {
    /// Reads `dir/run.json`, checked as strictly as the flags that wrote
    /// it ([`RunInfo::validate`]).
    pub fn read(dir: &Path) -> Result<RunInfo> {
        let path = dir.join(RUN_FILE);
        let text =
            dtml_volume::confine::read_bounded(&path, RUN_FILE_MAX_BYTES, "run description")?;
        let info: RunInfo = serde_json::from_slice(&text)
            .map_err(|e| InferError::file(&path, format!("not a dtml run description: {e}")))?;
        if info.format != RUN_FORMAT || info.version != RUN_VERSION {
            return Err(InferError::file(
                &path,
                format!(
                    "format {} version {} (this dtml reads {RUN_FORMAT} version {RUN_VERSION})",
                    info.format, info.version
                ),
            ));
        }
        info.validate(dir)
            .map_err(|why| InferError::file(&path, format!("{why} (train would refuse it)")))?;
        Ok(info)
    }

    /// The rules `train` applies to the same settings: the network, the
    /// patch, the boundary student's sharpness, the foreground values,
    /// and student files that are plain names inside the run folder.
    pub fn validate(&self, dir: &Path) -> std::result::Result<(), String> {
        self.network.validate().map_err(|e| e.to_string())?;
        dtml_model::vnet::check_spatial_size(&self.patch.xyz())
            .map_err(|why| format!("patch: {why}"))?;
        dtml_loss::check_sharpness(self.sharpness)?;
        if self.foreground.is_empty() {
            return Err("no foreground label value".into());
        }
        if self.students.is_empty() {
            return Err("the run lists no student weights".into());
        }
        for s in &self.students {
            let plain = Path::new(&s.file)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !plain || s.file.is_empty() {
                return Err(format!(
                    "student file {:?} is not a file name inside the run folder",
                    s.file
                ));
            }
            if let Ok(real) = dir.join(&s.file).canonicalize()
                && dir.canonicalize().is_ok_and(|d| !real.starts_with(d))
            {
                return Err(format!(
                    "student file {:?} resolves outside the run folder (to {})",
                    s.file,
                    real.display()
                ));
            }
        }
        Ok(())
    }

    /// Writes `dir/run.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let text =
            serde_json::to_string_pretty(self).map_err(|e| InferError::Other(e.to_string()))?;
        Ok(dtml_volume::atomic::write_bytes_atomic(
            &dir.join(RUN_FILE),
            text.as_bytes(),
        )?)
    }

    /// Absolute path of each student's weights.
    pub fn student_paths(&self, dir: &Path) -> Vec<(StudentRole, PathBuf)> {
        self.students
            .iter()
            .map(|s| (s.role, dir.join(&s.file)))
            .collect()
    }
}
