//! Checkpoints that `--resume` continues from exactly: every network's
//! state dict (weights and BatchNorm statistics), the optimizer's momentum
//! buffers and a JSON trainer state.
//!
//! A checkpoint is a folder written in full under a temporary name and then
//! swapped in by renames, so a crash at any moment leaves either the old or
//! the new checkpoint readable, never a mixture. The random streams need no
//! saved state: each is derived from the run seed (kept in the trainer
//! state) and the iteration number (see [`crate::batch::rng_for`]).

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use candle_core::Tensor;
use dtml_model::VNet;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Folder of the current checkpoint inside a run directory.
pub const CHECKPOINT_DIR: &str = "checkpoint";
const PREVIOUS_DIR: &str = "checkpoint.previous";
const STATE_FILE: &str = "trainer.json";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const STATE_FORMAT: &str = "dtml-trainer-state";
const STATE_VERSION: u32 = 1;

/// The JSON part of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub format: String,
    pub version: u32,
    /// The 0-based iteration the resumed run starts with.
    pub next_iteration: usize,
    pub config: TrainConfig,
    /// Prepared dataset the run trains on.
    pub dataset: PathBuf,
    /// Best validation Dice so far and its iteration.
    pub best: Option<(usize, f64)>,
    /// Ranks of the data-parallel group that trained it (a resume needs as
    /// many: each rank's batches depend on its rank).
    #[serde(default = "one")]
    pub world_size: usize,
    /// Digest of the cache's `manifest.json` the run started on: a resume
    /// continues only on the same prepared data, not on a cache `prepare`
    /// rewrote meanwhile (absent in checkpoints written before it was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
}

fn one() -> usize {
    1
}

impl TrainerState {
    pub fn new(
        next_iteration: usize,
        config: TrainConfig,
        dataset: PathBuf,
        best: Option<(usize, f64)>,
        world_size: usize,
        manifest_digest: String,
    ) -> Self {
        TrainerState {
            format: STATE_FORMAT.into(),
            version: STATE_VERSION,
            next_iteration,
            config,
            dataset,
            best,
            world_size,
            manifest_digest: Some(manifest_digest),
        }
    }
}

fn network_file(i: usize) -> String {
    format!("network_{i}.safetensors")
}

/// Writes a checkpoint of `networks`, the optimizer `state` and `trainer`.
pub fn save(
    run_dir: &Path,
    networks: &[&VNet],
    optimizer: &HashMap<String, Tensor>,
    trainer: &TrainerState,
) -> Result<()> {
    // A temporary folder named as `dtml_volume::output` cleans up after a
    // killed process.
    let tmp =
        dtml_volume::atomic::temporary_dir_in(run_dir).map_err(|e| TrainError::file(run_dir, e))?;
    let tmp_path = tmp.path().to_path_buf();
    let tmp = &tmp_path;
    for (i, net) in networks.iter().enumerate() {
        let path = tmp.join(network_file(i));
        candle_core::safetensors::save(&net.state_dict()?, &path)
            .map_err(|e| TrainError::file(&path, e))?;
    }
    let path = tmp.join(OPTIMIZER_FILE);
    candle_core::safetensors::save(optimizer, &path).map_err(|e| TrainError::file(&path, e))?;
    let text =
        serde_json::to_string_pretty(trainer).map_err(|e| TrainError::Other(e.to_string()))?;
    let path = tmp.join(STATE_FILE);
    std::fs::write(&path, text).map_err(|e| TrainError::file(&path, e))?;
    for name in [STATE_FILE.to_string(), OPTIMIZER_FILE.to_string()]
        .into_iter()
        .chain((0..networks.len()).map(network_file))
    {
        sync_file(&tmp.join(name));
    }
    sync_dir(tmp);

    let current = run_dir.join(CHECKPOINT_DIR);
    let previous = run_dir.join(PREVIOUS_DIR);
    if previous.exists() {
        std::fs::remove_dir_all(&previous).map_err(|e| TrainError::file(&previous, e))?;
    }
    if current.exists() {
        std::fs::rename(&current, &previous).map_err(|e| TrainError::file(&current, e))?;
    }
    std::fs::rename(tmp, &current).map_err(|e| TrainError::file(&current, e))?;
    sync_dir(run_dir);
    if previous.exists() {
        std::fs::remove_dir_all(&previous).map_err(|e| TrainError::file(&previous, e))?;
    }
    Ok(())
}

fn sync_file(path: &Path) {
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.sync_all();
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// The folder holding the newest complete checkpoint, if any (the current
/// one, or the previous one when a crash hit between the two renames).
pub fn find(run_dir: &Path) -> Option<PathBuf> {
    [CHECKPOINT_DIR, PREVIOUS_DIR]
        .iter()
        .map(|d| run_dir.join(d))
        .find(|d| d.join(STATE_FILE).is_file())
}

/// A checkpoint read back.
pub struct Loaded {
    pub trainer: TrainerState,
    pub optimizer: HashMap<String, Tensor>,
    dir: PathBuf,
}

/// The trainer state of a run directory's newest checkpoint, if it has one:
/// what a `--resume` continues (its configuration and data).
pub fn state_of_run(run_dir: &Path) -> Result<Option<TrainerState>> {
    find(run_dir).map(|dir| read_state(&dir)).transpose()
}

/// Reads the trainer state and optimizer buffers of the checkpoint in `dir`.
pub fn load(dir: &Path) -> Result<Loaded> {
    let trainer = read_state(dir)?;
    let path = dir.join(OPTIMIZER_FILE);
    let optimizer = candle_core::safetensors::load(&path, &candle_core::Device::Cpu)
        .map_err(|e| TrainError::file(&path, e))?;
    Ok(Loaded {
        trainer,
        optimizer,
        dir: dir.to_path_buf(),
    })
}

/// Reads and checks the JSON trainer state of the checkpoint in `dir`.
/// The trainer state of a checkpoint folder, checked.
pub fn load_state(dir: &Path) -> Result<TrainerState> {
    read_state(dir)
}

fn read_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join(STATE_FILE);
    let text = dtml_volume::confine::read_bounded(&path, 1 << 20, "trainer state")?;
    let trainer: TrainerState = serde_json::from_slice(&text)
        .map_err(|e| TrainError::file(&path, format!("not a dtml trainer state: {e}")))?;
    if trainer.format != STATE_FORMAT || trainer.version != STATE_VERSION {
        return Err(TrainError::file(
            &path,
            format!(
                "format {} version {}, this dtml reads {STATE_FORMAT} version {STATE_VERSION}",
                trainer.format, trainer.version
            ),
        ));
    }
    Ok(trainer)
}

/// What a resume asked to change: `field: saved -> asked` for every
/// setting that alters the run (all but [`crate::config::RESUME_MAY_CHANGE`]).
pub fn changes(saved: &TrainConfig, asked: &TrainConfig) -> Vec<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(saved), serde_json::to_value(asked))
    else {
        return vec!["the configuration (not comparable)".into()];
    };
    a.iter()
        .filter(|(k, _)| !crate::config::RESUME_MAY_CHANGE.contains(&k.as_str()))
        .filter(|(k, v)| b.get(k.as_str()) != Some(v))
        .map(|(k, v)| {
            let new = b
                .get(k.as_str())
                .map_or("(none)".to_string(), |n| n.to_string());
            format!("{k}: {v} -> {new}")
        })
        .collect()
}

impl Loaded {
    /// Fills network `i` from the checkpoint.
    pub fn restore_network(&self, i: usize, net: &VNet) -> Result<()> {
        let path = self.dir.join(network_file(i));
        let tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu)
            .map_err(|e| TrainError::file(&path, e))?;
        net.load_state_dict(&tensors, &path)?;
        Ok(())
    }
}
