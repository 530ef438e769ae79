//! `dtml distance`: a distance map of a mask, as NIfTI with its geometry.

use crate::args::int_list;
use anyhow::{Context, Result};
use dtml_infer::masks::{DistanceMap, distance_map, read_mask};
use dtml_volume::write_nifti;
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
    let kind = match (a.normalized, a.signed) {
        (true, _) => DistanceMap::Normalized,
        (false, true) => DistanceMap::Signed,
        (false, false) => DistanceMap::Plain,
    };
    dtml_volume::output::check_file(
        &a.out,
        &[&a.mask],
        "--out",
        dtml_volume::nii::written_by_dtml,
    )?;
    let mask = read_mask(&a.mask, a.foreground.as_deref())?;
    let map = distance_map(&mask, kind, &a.mask)?;
    write_nifti(&a.out, &map).with_context(|| format!("writing {}", a.out.display()))?;
    Ok(())
}
