//! `dtml predict`: scans in, masks out, with the source header geometry.

use crate::model_args::ModelArgs;
use crate::progress::bar;
use anyhow::{Context, Result};
use dtml_infer::predict::{PredictionEvent, PredictionJob, run_prediction};
use dtml_infer::shard::{Record, Shard};
use std::path::PathBuf;

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
    #[arg(long, help_heading = "Outputs")]
    disagreement: bool,
    /// Also write <case>_probability.nii.gz: the averaged foreground probability (f32).
    #[arg(long, help_heading = "Outputs")]
    probability: bool,
    /// Volume of a 4D scan to segment (0-based) [default: the channel the
    /// run trained on; without one, a scan of several volumes is refused].
    #[arg(long)]
    channel: Option<usize>,
    /// Segment only part K of N of the sorted scans (round robin), e.g. 2/8
    /// [default: from SLURM_ARRAY_TASK_ID / _MIN / _COUNT in a Slurm job
    /// array, else all]. Masks already in --out from the same model and
    /// settings are kept, so a killed shard continues where it stopped.
    #[arg(long, help_heading = "Cohorts and resumption")]
    shard: Option<Shard>,
    /// Redo every mask even if --out holds finished ones; if --out holds
    /// the outputs of another model or settings, remove them first (without
    /// it, such a folder is refused).
    #[arg(long, help_heading = "Cohorts and resumption")]
    overwrite: bool,
}

pub fn run(a: PredictArgs) -> Result<()> {
    let shard = Shard::resolve(a.shard)?;
    let cases = shard.select(dtml_volume::files::scan_cases(&a.input)?);
    let (loaded, opts) = a.model.load(a.disagreement)?;
    let mut settings = opts.describe();
    settings["channel"] = serde_json::json!(a.channel.or(loaded.channel()));
    settings["probability"] = serde_json::json!(a.probability);
    settings["disagreement"] = serde_json::json!(a.disagreement);
    let record = Record::new("predict", a.model.paths(), &a.input, settings);
    // Before any inference: a folder that is not dtml's, lies on the
    // inputs, is unwritable or in use fails now, not at the end.
    let inputs: Vec<&std::path::Path> = std::iter::once(a.input.as_path())
        .chain(a.model.paths().iter().map(|p| p.as_path()))
        .collect();
    let claim = record
        .claim(&a.out, shard, a.overwrite, &inputs)
        .with_context(|| format!("--out {}", a.out.display()))?;
    let keep = claim.keep;
    let job = PredictionJob {
        students: &loaded.students(),
        opts: &opts,
        cases,
        channel: a.channel,
        trained_channel: loaded.channel(),
        out: &a.out,
        probability: a.probability,
        keep,
    };
    let start = std::time::Instant::now();
    let mut pb = None;
    let segmented = run_prediction(&job, &mut |event| match event {
        PredictionEvent::Started { done, to_do } => {
            if done > 0 {
                tracing::info!(
                    "shard {shard}: {done} scan(s) already segmented in {} by this model, {to_do} to go",
                    a.out.display()
                );
            }
            pb = Some(bar(to_do, "predicting"));
        }
        PredictionEvent::Case {
            case,
            shape,
            foreground_voxels,
            seconds,
        } => {
            let Some(pb) = &pb else { return };
            pb.suspend(|| {
                tracing::info!(
                    "{case}: {shape:?} voxels, {foreground_voxels} foreground ({:.1} %), {seconds:.1} s",
                    100.0 * foreground_voxels as f64 / shape.voxels() as f64
                )
            });
            pb.inc(1);
        }
    })?;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    tracing::info!(
        "predicted {segmented} scan(s) into {} in {:.1} s",
        a.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
