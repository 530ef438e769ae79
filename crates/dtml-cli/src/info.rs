//! `dtml info`: what dtml reads from a volume file.

use anyhow::Result;
use dtml_volume::{ReadOptions, read_volume_with};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct InfoArgs {
    /// NIfTI-1 (.nii, .nii.gz, .hdr/.img) or NRRD file.
    file: PathBuf,
    /// Volume of a 4D file to read.
    #[arg(long)]
    channel: Option<usize>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: InfoArgs) -> Result<()> {
    let v = read_volume_with(&a.file, ReadOptions { channel: a.channel })?;
    let data = v.data.to_f64();
    let (min, max) = data
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        });
    if a.json {
        let j = serde_json::json!({
            "file": a.file,
            "shape": v.shape,
            "dtype": v.data.dtype(),
            "spacing": v.spacing(),
            "affine": v.affine(),
            "qform_code": v.geometry.header.qform_code,
            "sform_code": v.geometry.header.sform_code,
            "min": min,
            "max": max,
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!("file     {}", a.file.display());
        println!(
            "shape    {} x {} x {} (x, y, z)",
            v.shape[0], v.shape[1], v.shape[2]
        );
        println!("dtype    {:?}", v.data.dtype());
        println!(
            "spacing  {:.4} x {:.4} x {:.4} mm",
            v.spacing()[0],
            v.spacing()[1],
            v.spacing()[2]
        );
        println!("range    {min} .. {max}");
        println!(
            "codes    qform {} sform {}",
            v.geometry.header.qform_code, v.geometry.header.sform_code
        );
        for row in v.affine() {
            println!(
                "affine   {:>10.4} {:>10.4} {:>10.4} {:>10.4}",
                row[0], row[1], row[2], row[3]
            );
        }
    }
    Ok(())
}
