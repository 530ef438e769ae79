//! The inference crate's error type.

use std::path::PathBuf;

/// Errors of inference, scoring and run directories.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Model(#[from] dtml_model::ModelError),
    #[error(transparent)]
    Volume(#[from] dtml_volume::VolumeError),
    #[error(transparent)]
    Edt(#[from] dtml_edt::EdtError),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The caller asked inference to stop ([`crate::infer::predict_volume_until`]).
    #[error("stopped as asked")]
    Stopped,
    #[error("{0}")]
    Other(String),
}

impl InferError {
    pub(crate) fn file(path: &std::path::Path, reason: impl std::fmt::Display) -> InferError {
        InferError::File {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = InferError> = std::result::Result<T, E>;
