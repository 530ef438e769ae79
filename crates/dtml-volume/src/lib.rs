//! Volume I/O for dtml: read NIfTI-1 and NRRD scans and label maps into a
//! [`Volume`] that keeps their geometry, write masks that overlay their
//! scan, read datasets in the Decathlon / nnU-Net and LA layouts and prepare
//! them into a fast cache for training.
//!
//! Axis convention: sizes, indices, strides and spacings are [`Xyz`]
//! values in NIfTI order `(x, y, z)`, and x varies fastest in memory, as in
//! the file; read as a row-major tensor the same memory is `(Z, Y, X)`.
//! [`axes`] holds the only conversions between the two orders.
//!
//! ```
//! use dtml_volume::{Geometry, Volume, VoxelData, Xyz, read_volume, write_nifti};
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("mask.nii.gz");
//! let vol = Volume::new(VoxelData::U8(vec![0, 1, 1, 0]), Xyz::new(2, 2, 1), Geometry::from_spacing(Xyz::new(0.5, 0.5, 2.0))).unwrap();
//! write_nifti(&path, &vol).unwrap();
//! assert_eq!(read_volume(&path).unwrap(), vol);
//! ```

pub mod atomic;
pub mod axes;
pub mod confine;
pub mod dataset;
pub mod digest;
pub mod error;
pub mod files;
pub mod geometry;
pub mod nii;
pub mod nrrd;
pub mod output;
pub mod prepare;
pub mod synthetic;
pub mod volume;

use std::path::Path;

pub use axes::Xyz;
pub use dataset::{CaseFiles, Dataset, LabelledSpec, Layout, Role, Split};
pub use error::{Result, VolumeError};
pub use geometry::{Affine, Geometry, NiftiGeometry};
pub use nii::{ReadOptions, write_mask, write_nifti};
pub use prepare::{
    CaseRecord, Manifest, PrepareOptions, PreparedCase, PreparedDataset, ScanCrop, ZScore, prepare,
};
pub use volume::{DataType, Volume, VoxelData};

/// Reads a NIfTI-1 or NRRD volume, chosen by file extension.
pub fn read_volume(path: &Path) -> Result<Volume> {
    read_volume_with(path, ReadOptions::default())
}

/// Reads a NIfTI-1 or NRRD volume with options (channel of a 4D file).
pub fn read_volume_with(path: &Path, options: ReadOptions) -> Result<Volume> {
    if files::is_nifti_path(path) {
        nii::read_nifti(path, options)
    } else if files::is_nrrd_path(path) {
        nrrd::read_nrrd(path)
    } else {
        Err(VolumeError::UnknownExtension {
            path: path.to_path_buf(),
        })
    }
}
