//! `dtml distance`: a distance map of a mask, as NIfTI with its geometry.

use crate::args::int_list;
use crate::masks::{read_mask, zyx};
use anyhow::{Context, Result};
use dtml_volume::{Volume, VoxelData, write_nifti};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct DistanceArgs {
    /// Mask (NIfTI or NRRD); non-zero voxels are foreground unless --foreground is given.
    #[arg(long)]
    mask: PathBuf,
    /// Output NIfTI (.nii or .nii.gz), f32.
    #[arg(long)]
    out: PathBuf,
    /// Signed map: negative inside, positive outside (mm).
    #[arg(long, conflicts_with = "normalized")]
    signed: bool,
    /// The normalised SDM training target of the method, in voxel units, in [-1, 1].
    #[arg(long)]
    normalized: bool,
    /// Foreground label value(s), comma-separated.
    #[arg(long, value_parser = int_list)]
    foreground: Option<::std::vec::Vec<i64>>,
}

pub fn run(a: DistanceArgs) -> Result<()> {
    let m = read_mask(&a.mask, a.foreground.as_deref())?;
    let (shape, spacing) = zyx(&m.volume);
    let map = if a.normalized {
        dtml_edt::normalized_sdm(&m.mask, &shape)?
    } else if a.signed {
        dtml_edt::signed_distance(&m.mask, &shape, &spacing)?
    } else {
        dtml_edt::edt(&m.mask, &shape, &spacing)?
    };
    if !a.signed && !a.normalized && m.mask.iter().all(|&v| v == 1) {
        tracing::warn!(
            "{}: the mask has no background; every distance is +inf",
            a.mask.display()
        );
    }
    let out = Volume::new(
        VoxelData::F32(map),
        m.volume.shape,
        m.volume.geometry.clone(),
    )?;
    write_nifti(&a.out, &out).with_context(|| format!("writing {}", a.out.display()))?;
    Ok(())
}
