//! Reading binary masks from volume files.

use anyhow::{Result, bail};
use dtml_volume::{Volume, read_volume};
use std::path::Path;

/// A mask read from a file: 1 where the voxel is foreground.
pub struct Mask {
    pub volume: Volume,
    pub mask: Vec<u8>,
}

/// Reads `path`; foreground is any non-zero voxel, or the given values.
pub fn read_mask(path: &Path, foreground: Option<&[i64]>) -> Result<Mask> {
    let volume = read_volume(path)?;
    let mut mask = Vec::with_capacity(volume.len());
    for i in 0..volume.len() {
        let v = volume.data.get_f64(i);
        if !v.is_finite() {
            bail!(
                "{}: voxel {i} holds {v}; a mask must be finite",
                path.display()
            );
        }
        let fg = match foreground {
            None => v != 0.0,
            Some(values) => v.fract() == 0.0 && values.contains(&(v as i64)),
        };
        mask.push(fg as u8);
    }
    Ok(Mask { volume, mask })
}

/// `[nz, ny, nx]` and `[sz, sy, sx]`: the order the distance crate takes
/// (last axis contiguous) for a volume stored x fastest.
pub fn zyx(volume: &Volume) -> ([usize; 3], [f64; 3]) {
    let [nx, ny, nz] = volume.shape;
    let [sx, sy, sz] = volume.spacing();
    ([nz, ny, nx], [sz, sy, sx])
}
