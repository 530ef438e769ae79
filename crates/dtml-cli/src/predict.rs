//! `dtml predict`: scans in, masks out, with the source header geometry.

use crate::model_args::ModelArgs;
use crate::progress::bar;
use anyhow::{Context, Result, bail};
use dtml_infer::infer::{predict_volume, read_scan};
use dtml_volume::{Volume, VoxelData, write_mask, write_nifti};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct PredictArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A scan (NIfTI or NRRD), a folder of them, or a folder of LA case
    /// folders (`<case>/lgemri.nrrd`).
    #[arg(long)]
    input: PathBuf,
    /// Output folder: <case>.nii.gz masks (u8, 0/1) on each scan's grid and header.
    #[arg(long)]
    out: PathBuf,
    /// Also write <case>_disagreement.nii.gz: |p_A - q_B| averaged over the
    /// windows (f32; needs two students).
    #[arg(long)]
    disagreement: bool,
    /// Also write <case>_probability.nii.gz: the averaged foreground probability (f32).
    #[arg(long)]
    probability: bool,
    /// Volume of a 4D scan to segment (0-based).
    #[arg(long)]
    channel: Option<usize>,
}

fn same_path(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

pub fn run(a: PredictArgs) -> Result<()> {
    let cases = dtml_volume::files::scan_cases(&a.input)?;
    // Before any inference: an unwritable --out fails now, not at the end.
    dtml_volume::atomic::check_writable(&a.out)
        .with_context(|| format!("--out {} is not writable", a.out.display()))?;
    let (loaded, opts) = a.model.load(a.disagreement)?;
    let students = loaded.students();
    for (case, scan) in &cases {
        let out = a.out.join(format!("{case}.nii.gz"));
        if same_path(&out, scan) {
            bail!(
                "{}: the mask would overwrite its own scan; choose another --out",
                scan.display()
            );
        }
    }
    let pb = bar(cases.len(), "predicting");
    let start = std::time::Instant::now();
    for (case, scan) in &cases {
        let t = std::time::Instant::now();
        let (volume, image) = read_scan(scan, a.channel)?;
        let p = predict_volume(&students, &image, volume.shape, &opts)
            .with_context(|| format!("predicting {}", scan.display()))?;
        let out = a.out.join(format!("{case}.nii.gz"));
        let foreground = p.mask.iter().map(|&v| v as usize).sum::<usize>();
        write_mask(&out, p.mask, &volume).with_context(|| format!("writing {}", out.display()))?;
        let f32_map = |values: Vec<f32>, suffix: &str| -> Result<()> {
            let path = a.out.join(format!("{case}_{suffix}.nii.gz"));
            let v = Volume::new(
                VoxelData::F32(values),
                volume.shape,
                volume.geometry.clone(),
            )?;
            write_nifti(&path, &v).with_context(|| format!("writing {}", path.display()))
        };
        if let Some(d) = p.disagreement {
            f32_map(d, "disagreement")?;
        }
        if a.probability {
            f32_map(p.probability, "probability")?;
        }
        pb.suspend(|| {
            tracing::info!(
                "{case}: {:?} voxels, {foreground} foreground ({:.1} %), {:.1} s",
                volume.shape,
                100.0 * foreground as f64 / volume.len() as f64,
                t.elapsed().as_secs_f64()
            )
        });
        pb.inc(1);
    }
    pb.finish_and_clear();
    tracing::info!(
        "predicted {} scan(s) into {} in {:.1} s",
        cases.len(),
        a.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
