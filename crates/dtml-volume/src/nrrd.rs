//! NRRD reading (being written: see the helper's task).

use crate::error::{Result, VolumeError};
use crate::volume::Volume;
use std::path::Path;

/// Whether a path names an NRRD file (by extension).
pub fn is_nrrd_path(path: &Path) -> bool {
    path.to_string_lossy()
        .to_ascii_lowercase()
        .ends_with(".nrrd")
}

/// Reads an NRRD volume.
pub fn read_nrrd(path: &Path) -> Result<Volume> {
    Err(VolumeError::Unsupported {
        path: path.to_path_buf(),
        format: "NRRD",
        reason: "reader not written yet".into(),
    })
}
