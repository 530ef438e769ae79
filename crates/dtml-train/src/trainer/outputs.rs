//! What a run produces besides checkpoints: validation Dice, the exported
//! students with `run.json`, the overlay picture and the weights' digest.

use super::*;

/// The networks the method exports, with their roles.
pub(super) fn exported<'a>(
    cfg: &TrainConfig,
    nets: &[&'a VNet],
) -> impl Iterator<Item = (StudentRole, &'a VNet)> {
    cfg.plugin()
        .networks()
        .iter()
        .zip(nets.to_vec())
        .filter_map(|(spec, net)| spec.exported_as.map(|role| (role, net)))
}

/// The students and sliding window used on the run's own data: the
/// exported networks (the ensemble when there are two), the training patch.
pub(super) fn inference_setup<'a>(
    cfg: &TrainConfig,
    nets: &[&'a VNet],
) -> (
    dtml_infer::infer::Students<'a>,
    dtml_infer::infer::InferenceOptions,
) {
    use dtml_infer::infer::{Ensemble, InferenceOptions, Students};
    let mut students = Students {
        region: None,
        boundary: None,
    };
    for (role, net) in exported(cfg, nets) {
        match role {
            StudentRole::Region => students.region = Some(net),
            StudentRole::Boundary => students.boundary = Some(net),
        }
    }
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
        dtml_edt::Units::Millimetres.into(),
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
    opts.disagreement = students.region.is_some() && students.boundary.is_some();
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
    for (role, net) in exported(cfg, nets) {
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
        network: nets
            .first()
            .ok_or_else(|| TrainError::Other("a method without networks".into()))?
            .config()
            .clone(),
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
