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
    // Where one class is missing, the transform has nothing to measure to.
    let (all_fg, all_bg) = (
        m.mask.iter().all(|&v| v == 1),
        m.mask.iter().all(|&v| v == 0),
    );
    if !a.normalized && all_fg {
        tracing::warn!(
            "{}: the mask has no background; every distance is {}",
            a.mask.display(),
            if a.signed { "-inf" } else { "+inf" }
        );
    }
    if all_bg {
        tracing::warn!(
            "{}: the mask is empty; {}",
            a.mask.display(),
            if a.normalized {
                "the normalised SDM is 0 everywhere (as the reference's compute_sdf)"
            } else if a.signed {
                "every signed distance is +inf"
            } else {
                "every distance is 0"
            }
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
