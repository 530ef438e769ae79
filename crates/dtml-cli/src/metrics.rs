//! `dtml metrics`: Dice, Jaccard, hd95, ASD and ASSD of predictions against
//! references, per case and summarised.

use crate::args::int_list;
use crate::masks::{read_mask, zyx};
use anyhow::{Result, bail};
use dtml_edt::{Units, surface_metrics};
use dtml_infer::report::Report;
use dtml_volume::files::{case_name, volume_files};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct MetricsArgs {
    /// Predicted mask, or a folder of them.
    #[arg(long)]
    pred: PathBuf,
    /// Reference mask, or a folder of them (pairs are matched by file name).
    #[arg(long = "ref")]
    reference: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Distances in voxels (as published tables) instead of mm.
    #[arg(long)]
    voxels: bool,
    /// Score an empty prediction as (0, 0, 0, 0) like the reference script
    /// (by default it is counted and left out of the distance means).
    #[arg(long)]
    reference_scoring: bool,
    /// Compare on the voxel grids even when the two files place them
    /// differently in space (other origin, spacing or axis directions);
    /// distances then use the reference's spacing. By default such pairs
    /// are refused, as `prepare` and `evaluate` do.
    #[arg(long)]
    voxel_grid: bool,
    /// Foreground label value(s) of both masks [default: any non-zero].
    #[arg(long, value_parser = int_list)]
    foreground: Option<::std::vec::Vec<i64>>,
}

fn pairs(a: &MetricsArgs) -> Result<Vec<(String, PathBuf, PathBuf)>> {
    if a.pred.is_file() && a.reference.is_file() {
        let name = case_name(&a.reference).unwrap_or_else(|| "case".into());
        return Ok(vec![(name, a.pred.clone(), a.reference.clone())]);
    }
    let preds = volume_files(&a.pred)?;
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for r in volume_files(&a.reference)? {
        let name = case_name(&r).expect("listed volume files have a case name");
        match preds
            .iter()
            .find(|p| case_name(p).as_deref() == Some(name.as_str()))
        {
            Some(p) => out.push((name, p.clone(), r)),
            None => missing.push(name),
        }
    }
    if !missing.is_empty() {
        bail!(
            "{}: no prediction for {} reference case(s): {missing:?}",
            a.pred.display(),
            missing.len()
        );
    }
    if out.is_empty() {
        bail!("{}: no reference volumes found", a.reference.display());
    }
    Ok(out)
}

pub fn run(a: MetricsArgs) -> Result<()> {
    let units = if a.voxels {
        Units::Voxels
    } else {
        Units::Millimetres
    };
    let mut rows = Vec::new();
    for (name, pred, reference) in pairs(&a)? {
        let p = read_mask(&pred, a.foreground.as_deref())?;
        let r = read_mask(&reference, a.foreground.as_deref())?;
        if p.volume.shape != r.volume.shape {
            bail!(
                "{}: shape {:?} differs from reference {} shape {:?}",
                pred.display(),
                p.volume.shape,
                reference.display(),
                r.volume.shape
            );
        }
        if let Some(how) = p.volume.geometry.difference(&r.volume.geometry)
            && !a.voxel_grid
        {
            bail!(
                "{}: not on the grid of reference {}: {how}; resample it, or pass --voxel-grid to compare voxel by voxel anyway",
                pred.display(),
                reference.display()
            );
        }
        let (shape, spacing) = zyx(&r.volume);
        rows.push((
            name,
            surface_metrics(&p.mask, &r.mask, &shape, &spacing, units)?,
        ));
    }
    let report = Report::new(rows, a.voxels, a.reference_scoring);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        println!("{}", report.table());
    }
    Ok(())
}
