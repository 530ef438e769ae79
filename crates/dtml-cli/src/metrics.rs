//! `dtml metrics`: Dice, Jaccard, hd95, ASD and ASSD of predictions against
//! references, per case and summarised.

use crate::args::int_list;
use crate::masks::{case_name, read_mask, volume_files, zyx};
use anyhow::{Result, bail};
use dtml_edt::{
    EmptyScoring, SegmentationMetrics, SurfaceDistances, Units, summarize, surface_metrics,
};
use serde_json::json;
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
    /// Foreground label value(s) of both masks [default: any non-zero].
    #[arg(long, value_parser = int_list)]
    foreground: Option<Vec<i64>>,
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

fn status(m: &SegmentationMetrics) -> &'static str {
    match m.distances {
        SurfaceDistances::Computed(_) => "ok",
        SurfaceDistances::EmptyPrediction => "empty prediction",
        SurfaceDistances::EmptyReference => "empty reference",
        SurfaceDistances::BothEmpty => "both empty",
    }
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
        let (shape, spacing) = zyx(&r.volume);
        rows.push((
            name,
            surface_metrics(&p.mask, &r.mask, &shape, &spacing, units)?,
        ));
    }
    let scoring = if a.reference_scoring {
        EmptyScoring::Reference
    } else {
        EmptyScoring::Exclude
    };
    let metrics: Vec<SegmentationMetrics> = rows.iter().map(|(_, m)| *m).collect();
    let s = summarize(&metrics, scoring);
    let unit = if a.voxels { "voxels" } else { "mm" };
    if a.json {
        let cases: Vec<_> = rows
            .iter()
            .map(|(name, m)| {
                let d = m.distances.computed();
                json!({
                    "case": name, "status": status(m), "dice": m.dice, "jaccard": m.jaccard,
                    "hd95": d.map(|d| d.hd95), "asd": d.map(|d| d.asd), "assd": d.map(|d| d.assd),
                    "prediction_voxels": m.prediction_voxels, "reference_voxels": m.reference_voxels,
                })
            })
            .collect();
        let ms = |m: dtml_edt::MeanStd| json!({"mean": m.mean, "std": m.std, "n": m.n});
        let j = json!({
            "units": unit,
            "empty_scoring": if a.reference_scoring { "reference" } else { "exclude" },
            "cases": cases,
            "summary": {
                "cases": s.cases, "dice": ms(s.dice), "jaccard": ms(s.jaccard), "hd95": ms(s.hd95),
                "asd": ms(s.asd), "assd": ms(s.assd), "empty_prediction": s.empty_prediction,
                "empty_reference": s.empty_reference, "both_empty": s.both_empty,
            }
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
        return Ok(());
    }
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    println!(
        "{:<24} {:>8} {:>8} {:>10} {:>10} {:>10}  status",
        "case",
        "dice",
        "jaccard",
        format!("hd95 {unit}"),
        format!("asd {unit}"),
        format!("assd {unit}")
    );
    for (name, m) in &rows {
        let d = m.distances.computed();
        println!(
            "{name:<24} {:>8} {:>8} {:>10} {:>10} {:>10}  {}",
            f(m.dice),
            f(m.jaccard),
            f(d.map(|d| d.hd95)),
            f(d.map(|d| d.asd)),
            f(d.map(|d| d.assd)),
            status(m)
        );
    }
    let g = |m: dtml_edt::MeanStd| {
        if m.n == 0 {
            "-".to_string()
        } else {
            format!("{:.4}", m.mean)
        }
    };
    let sd = |m: dtml_edt::MeanStd| {
        if m.n == 0 {
            "-".to_string()
        } else {
            format!("{:.4}", m.std)
        }
    };
    println!(
        "{:<24} {:>8} {:>8} {:>10} {:>10} {:>10}",
        "mean",
        g(s.dice),
        g(s.jaccard),
        g(s.hd95),
        g(s.asd),
        g(s.assd)
    );
    println!(
        "{:<24} {:>8} {:>8} {:>10} {:>10} {:>10}",
        "std",
        sd(s.dice),
        sd(s.jaccard),
        sd(s.hd95),
        sd(s.asd),
        sd(s.assd)
    );
    if s.empty_prediction + s.empty_reference + s.both_empty > 0 {
        println!(
            "empty: {} prediction(s), {} reference(s), {} both; {}",
            s.empty_prediction,
            s.empty_reference,
            s.both_empty,
            if a.reference_scoring {
                "empty predictions scored 0 (reference scoring)"
            } else {
                "left out of the distance means"
            }
        );
    }
    Ok(())
}
