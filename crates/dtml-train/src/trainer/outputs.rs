//! What a run produces besides checkpoints: validation Dice, the exported
//! students with `run.json`, the overlay picture and the weights' digest.

use super::*;

/// The students and sliding window used on the run's own data: the
/// ensemble when there are two students, the training patch.
pub(super) fn inference_setup<'a>(
    cfg: &TrainConfig,
    nets: &[&'a VNet],
) -> (
    dtml_infer::infer::Students<'a>,
    dtml_infer::infer::InferenceOptions,
) {
    use dtml_infer::infer::{Ensemble, InferenceOptions, Students};
    let students = Students {
        region: Some(nets[0]),
        boundary: nets.get(1).copied(),
    };
    let opts = InferenceOptions {
        patch: cfg.patch,
        stride: cfg.validation_stride,
        sharpness: cfg.sharpness as f32,
        ensemble: Ensemble::of(&students),
        ..InferenceOptions::default()
    };
    (students, opts)
}

/// Mean Dice of the students on the validation cases, on their original grids.
pub(super) fn validate(
    cfg: &TrainConfig,
    nets: &[&VNet],
    data: &PreparedDataset,
    cases: &[&dtml_volume::CaseRecord],
) -> Result<f64> {
    let (students, opts) = inference_setup(cfg, nets);
    let results = dtml_infer::evaluate::evaluate_prepared(
        &students,
        data,
        cases,
        &opts,
        dtml_edt::Units::Millimetres,
        &mut |_| {},
    )?;
    let dices: Vec<f64> = results
        .iter()
        .map(|r| r.metrics.dice.unwrap_or(1.0))
        .collect();
    Ok(dices.iter().sum::<f64>() / dices.len().max(1) as f64)
}

/// Draws the final students' prediction on one prepared case.
pub(super) fn overlay(
    cfg: &TrainConfig,
    nets: &[&VNet],
    data: &PreparedDataset,
    case: &dtml_volume::CaseRecord,
    path: &Path,
) -> Result<()> {
    let loaded = data.load(case)?;
    let (students, mut opts) = inference_setup(cfg, nets);
    opts.disagreement = nets.len() == 2;
    let pred = dtml_infer::infer::predict_volume(&students, &loaded.image, loaded.shape, &opts)?;
    crate::plot::overlay(
        &loaded.image,
        loaded.label.as_deref(),
        &pred.mask,
        pred.disagreement.as_deref(),
        loaded.shape,
        path,
    )
}

/// Writes the students' weights and `run.json` (what inference reads).
pub(super) fn export(
    run_dir: &Path,
    cfg: &TrainConfig,
    nets: &[&VNet],
    iteration: usize,
    data: &PreparedDataset,
) -> Result<RunInfo> {
    let mut students = Vec::new();
    for (net, role) in nets.iter().zip(roles(cfg)) {
        let file = match role {
            StudentRole::Region => "student_a.safetensors",
            StudentRole::Boundary => "student_b.safetensors",
        };
        net.save_safetensors(&run_dir.join(file))?;
        students.push(StudentFile {
            role,
            file: file.into(),
        });
    }
    let info = RunInfo {
        format: RUN_FORMAT.into(),
        version: RUN_VERSION,
        method: cfg.method,
        network: nets[0].config().clone(),
        patch: cfg.patch,
        foreground: data.manifest.options.foreground.clone(),
        students,
        iteration,
        sharpness: cfg.sharpness,
        channel: Some(data.manifest.options.channel),
    };
    info.write(run_dir)?;
    Ok(info)
}

/// FNV-1a over the bits of every trained weight of `nets`, in name order.
pub(super) fn digest(nets: &[&VNet]) -> Result<u64> {
    let mut h = dtml_volume::digest::Fnv1a::default();
    for net in nets {
        for (name, var) in net.named_trainable_vars() {
            let values = var
                .as_tensor()
                .to_dtype(DType::F64)?
                .flatten_all()?
                .to_vec1::<f64>()?;
            h.update(
                name.bytes()
                    .chain(values.iter().flat_map(|v| v.to_bits().to_le_bytes())),
            );
        }
    }
    Ok(h.finish())
}
