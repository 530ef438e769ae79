//! The training log: one JSON line per iteration in `RUN_DIR/log.jsonl`,
//! read back for plots and cut back to the checkpoint on resume.

use crate::error::{Result, TrainError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// File of per-iteration JSON lines inside a run directory.
pub const LOG_FILE: &str = "log.jsonl";

/// One line of the training log.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct IterationLog {
    /// 1-based count of iterations done.
    pub iteration: usize,
    pub loss: f64,
    pub parts: BTreeMap<String, f64>,
    pub lambda: f64,
    pub lr: f64,
    /// Wall time of this iteration.
    pub seconds: f64,
    /// Mean validation Dice, on iterations that validated.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub validation_dice: Option<f64>,
}

/// Opens the log for appending, first dropping lines past `first` (left by
/// a run that went on after its last checkpoint).
pub(crate) fn open_log(run_dir: &Path, first: usize) -> Result<std::fs::File> {
    let path: PathBuf = run_dir.join(LOG_FILE);
    let kept: Vec<String> = match std::fs::read_to_string(&path) {
        Ok(text) => text
            .lines()
            .filter(|l| serde_json::from_str::<IterationLog>(l).is_ok_and(|e| e.iteration <= first))
            .map(str::to_string)
            .collect(),
        Err(_) => Vec::new(),
    };
    let mut body = kept.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    crate::atomic_write(&path, body.as_bytes())?;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|e| TrainError::file(&path, e))
}

/// Reads a run's log.
pub fn read_log(run_dir: &Path) -> Result<Vec<IterationLog>> {
    let path = run_dir.join(LOG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::file(&path, e))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .map_err(|e| TrainError::file(&path, format!("bad log line: {e}")))
        })
        .collect()
}
