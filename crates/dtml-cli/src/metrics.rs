//! `dtml metrics`: Dice, Jaccard, hd95, ASD and ASSD of predictions against
//! references, per case and summarised.

use crate::args::int_list;
use anyhow::Result;
use dtml_edt::{EmptyScoring, Units};
use dtml_infer::masks::{MaskScoring, Scoring, score_mask_files};
use dtml_infer::report::Report;
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
    /// Also the surface Dice at this tolerance (mm, or voxels with
    /// --voxels): the share of both surfaces, by area, within the
    /// tolerance of the other, as DeepMind's surface-distance package.
    #[arg(long, value_name = "TOLERANCE")]
    surface_dice: Option<f64>,
}

pub fn run(a: MetricsArgs) -> Result<()> {
    let how = MaskScoring {
        foreground: a.foreground.clone(),
        scoring: Scoring {
            units: if a.voxels {
                Units::Voxels
            } else {
                Units::Millimetres
            },
            surface_dice: a.surface_dice,
        },
        voxel_grid: a.voxel_grid,
    };
    let scoring = if a.reference_scoring {
        EmptyScoring::Reference
    } else {
        EmptyScoring::Exclude
    };
    let rows = score_mask_files(&a.pred, &a.reference, &how)?;
    let mut report = Report::new(rows, how.scoring.units, scoring);
    report.surface_dice_tolerance = a.surface_dice;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        println!("{}", report.table());
    }
    Ok(())
}
