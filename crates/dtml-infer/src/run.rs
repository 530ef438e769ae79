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
    /// Reads `dir/run.json`.
    pub fn read(dir: &Path) -> Result<RunInfo> {
        let path = dir.join(RUN_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| InferError::file(&path, e))?;
        let info: RunInfo = serde_json::from_str(&text)
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
        Ok(info)
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
