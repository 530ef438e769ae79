//! The training crate's error type.

use std::path::PathBuf;

/// Errors of training and checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Model(#[from] dtml_model::ModelError),
    #[error(transparent)]
    Volume(#[from] dtml_volume::VolumeError),
    #[error(transparent)]
    Loss(#[from] dtml_loss::LossError),
    #[error(transparent)]
    Edt(#[from] dtml_edt::EdtError),
    #[error(transparent)]
    Infer(#[from] dtml_infer::InferError),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(
        "loss is not finite at iteration {iteration} ({loss}; parts {parts}); stopped, the last checkpoint is kept"
    )]
    NonFinite {
        iteration: usize,
        loss: f64,
        parts: String,
    },
    /// The caller asked the run to stop ([`crate::TrainRequest::stop`]).
    #[error(
        "stopped after iteration {iteration} as asked; a checkpoint is saved there: resume {run_dir} to go on"
    )]
    Stopped { iteration: usize, run_dir: PathBuf },
    #[error("{0}")]
    Other(String),
}

impl TrainError {
    pub(crate) fn file(path: &std::path::Path, reason: impl std::fmt::Display) -> TrainError {
        TrainError::File {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;
