//! The model crate's error type.

use std::path::PathBuf;

/// Errors of model construction, forward passes and weight files.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("input of shape {shape:?}: {reason}")]
    Input { shape: Vec<usize>, reason: String },
    #[error("{path}: {reason}")]
    Weights { path: PathBuf, reason: String },
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Result alias of this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
