//! `dtml predict`: scans in, masks out, with the source header geometry.

use crate::model_args::ModelArgs;
use crate::progress::bar;
use anyhow::{Context, Result, bail};
use dtml_infer::infer::{predict_volume, read_scan};
use dtml_infer::shard::{Record, Shard};
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
    /// Segment only part K of N of the sorted scans (round robin), e.g. 2/8
    /// [default: from SLURM_ARRAY_TASK_ID / _MIN / _COUNT in a Slurm job
    /// array, else all]. Masks already in --out from the same model and
    /// settings are kept, so a killed shard continues where it stopped.
    #[arg(long)]
    shard: Option<Shard>,
    /// Redo every mask even if --out holds finished ones, or masks of
    /// another model.
    #[arg(long)]
    overwrite: bool,
}

fn same_path(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

pub fn run(a: PredictArgs) -> Result<()> {
    let shard = Shard::resolve(a.shard)?;
    let cases = shard.select(dtml_volume::files::scan_cases(&a.input)?);
    // Before any inference: an unwritable --out fails now, not at the end.
    dtml_volume::atomic::check_writable(&a.out)
        .with_context(|| format!("--out {} is not writable", a.out.display()))?;
    let (loaded, opts) = a.model.load(a.disagreement)?;
    let students = loaded.students();
    let mut settings = opts.describe();
    settings["channel"] = serde_json::json!(a.channel);
    settings["probability"] = serde_json::json!(a.probability);
    settings["disagreement"] = serde_json::json!(a.disagreement);
    let record = Record::new("predict", a.model.paths(), &a.input, settings);
    let keep = record
        .claim(&a.out, shard, a.overwrite)
        .with_context(|| format!("--out {}", a.out.display()))?;
    let outputs = |case: &str| -> Vec<PathBuf> {
        let mut files = vec![a.out.join(format!("{case}.nii.gz"))];
        if a.disagreement {
            files.push(a.out.join(format!("{case}_disagreement.nii.gz")));
        }
        if a.probability {
            files.push(a.out.join(format!("{case}_probability.nii.gz")));
        }
        files
    };
    let (done, cases): (Vec<_>, Vec<_>) = cases
        .into_iter()
        .partition(|(case, _)| keep && outputs(case).iter().all(|p| p.is_file()));
    if !done.is_empty() {
        tracing::info!(
            "shard {shard}: {} scan(s) already segmented in {} by this model, {} to go",
            done.len(),
            a.out.display(),
            cases.len()
        );
    }
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
