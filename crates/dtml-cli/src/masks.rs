//! Reading binary masks from volume files.

use anyhow::Result;
use dtml_volume::{Volume, read_volume};
use std::path::Path;

/// A mask read from a file: 1 where the voxel is foreground.
pub struct Mask {
    pub volume: Volume,
    pub mask: Vec<u8>,
}

/// Reads `path` and binarises it by `dtml_volume::prepare::binarize`:
/// foreground is any non-zero voxel, or the given values.
pub fn read_mask(path: &Path, foreground: Option<&[i64]>) -> Result<Mask> {
    let volume = read_volume(path)?;
    let (mask, _) = dtml_volume::prepare::binarize(path, &volume, foreground)?;
    Ok(Mask { volume, mask })
}

/// `[nz, ny, nx]` and `[sz, sy, sx]`: the order the distance crate takes
/// (last axis contiguous) for a volume stored x fastest.
pub fn zyx(volume: &Volume) -> ([usize; 3], [f64; 3]) {
    (volume.shape.zyx(), volume.spacing().zyx())
}
