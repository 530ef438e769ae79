//! One error type for everything this crate reads, writes and prepares.

use std::path::PathBuf;

/// Errors of volume I/O, datasets and preparation. Every variant names the
/// file (or folder) it concerns so a user can act on it.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The OS error is part of the message and deliberately not the
    /// error's `source()`: reporters that print the chain (anyhow's `{:#}`)
    /// would print it twice.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: not a valid {format} file: {reason}")]
    Format {
        path: PathBuf,
        format: &'static str,
        reason: String,
    },
    #[error("{path}: unsupported {format} feature: {reason}")]
    Unsupported {
        path: PathBuf,
        format: &'static str,
        reason: String,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "{path}: file name has no known volume extension (.nii, .nii.gz, .hdr, .img, .nrrd, .nhdr)"
    )]
    UnknownExtension { path: PathBuf },
    #[error("{path}: dataset: {reason}")]
    Dataset { path: PathBuf, reason: String },
    /// A path named inside a file resolves outside the folder it may use
    /// (see [`crate::confine`]).
    #[error(
        "{path}: {what} {target} resolves outside {root}; files named by a dataset, header or cache must lie inside its folder (symlinks followed)"
    )]
    Outside {
        /// The file that named the path.
        path: PathBuf,
        /// The path's role.
        what: String,
        /// The path as named.
        target: PathBuf,
        /// The folder it had to stay in.
        root: PathBuf,
    },
}

impl VolumeError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        VolumeError::Io {
            path: path.into(),
            error: source,
        }
    }

    /// A file that is not valid `format`.
    pub(crate) fn format(
        path: impl Into<PathBuf>,
        format: &'static str,
        reason: impl Into<String>,
    ) -> Self {
        VolumeError::Format {
            path: path.into(),
            format,
            reason: reason.into(),
        }
    }

    /// A valid `format` file using a feature dtml does not read.
    pub(crate) fn unsupported(
        path: impl Into<PathBuf>,
        format: &'static str,
        reason: impl Into<String>,
    ) -> Self {
        VolumeError::Unsupported {
            path: path.into(),
            format,
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        VolumeError::Invalid {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn dataset(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        VolumeError::Dataset {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = VolumeError> = std::result::Result<T, E>;
