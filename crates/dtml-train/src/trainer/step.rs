//! One training step: the host batch on the device, the networks' forward
//! passes, the method's objective, one backward pass, the gradients
//! averaged over the ranks and SGD.

use super::*;
use dtml_model::profile::timed;

/// Host batch to device tensors of the networks' `dtype`: images
/// `(N,1,Z,Y,X)`, labels and SDM targets `(L,1,Z,Y,X)`.
pub(super) fn to_device(
    b: &HostBatch,
    patch: Xyz<usize>,
    device: &Device,
    dtype: DType,
) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let image = Tensor::from_slice(&b.image, patch.batch_dims(b.n, 1), device)?.to_dtype(dtype)?;
    let label: Vec<f32> = b.label.iter().map(|v| *v as f32).collect();
    let label =
        Tensor::from_vec(label, patch.batch_dims(b.labelled, 1), device)?.to_dtype(dtype)?;
    let sdm = match &b.sdm {
        Some(s) => {
            Some(Tensor::from_slice(s, patch.batch_dims(b.labelled, 1), device)?.to_dtype(dtype)?)
        }
        None => None,
    };
    Ok((image, label, sdm))
}

/// SGD over every trainable parameter of the networks of `nets` the
/// method trains by gradients, keyed `"{net}/{name}"` (the keys of the
/// checkpoint's momentum buffers).
pub fn optimizer(cfg: &TrainConfig, nets: &[&VNet]) -> Sgd {
    let specs = cfg.plugin().networks();
    let params = nets
        .iter()
        .enumerate()
        .filter(|(i, _)| specs.get(*i).is_none_or(|s| s.trained))
        .flat_map(|(i, n)| {
            n.named_trainable_vars()
                .into_iter()
                .map(move |(name, v)| (format!("{i}/{name}"), v))
        })
        .collect();
    Sgd::new(params, cfg.momentum, cfg.weight_decay)
}

/// Forward, objective, backward, update and the method's step after it
/// for one batch; returns the loss
/// and its parts, or an error if any is not finite (nothing is updated then).
///
/// `nets` are the method's networks (student A first), `sgd` holds their
/// trainable parameters. Public so `benches/step.rs` times exactly the step
/// the training loop runs.
pub fn train_step(
    cfg: &TrainConfig,
    nets: &[&VNet],
    sgd: &mut Sgd,
    state: Option<&mut dyn MethodState>,
    batch: &HostBatch,
    device: &Device,
) -> Result<(f64, BTreeMap<String, f64>)> {
    train_step_with_draws(cfg, nets, sgd, state, batch, device, None)
}

/// [`train_step`] with given dropout masks and input noise in place of
/// the seeded streams: how the lockstep test feeds PyTorch's.
pub fn train_step_with_draws(
    cfg: &TrainConfig,
    nets: &[&VNet],
    sgd: &mut Sgd,
    state: Option<&mut dyn MethodState>,
    batch: &HostBatch,
    device: &Device,
    draws: Option<&GivenDraws>,
) -> Result<(f64, BTreeMap<String, f64>)> {
    step_in_group(cfg, nets, sgd, state, batch, device, draws, &Solo)
}

/// One step as one rank of `group`: the gradients are averaged over the
/// ranks before the update.
#[allow(clippy::too_many_arguments)]
pub(super) fn step_in_group(
    cfg: &TrainConfig,
    nets: &[&VNet],
    sgd: &mut Sgd,
    state: Option<&mut dyn MethodState>,
    batch: &HostBatch,
    device: &Device,
    draws: Option<&GivenDraws>,
    group: &dyn Collective,
) -> Result<(f64, BTreeMap<String, f64>)> {
    let t = batch.iteration;
    let dtype = nets[0].dtype();
    let (image, label, sdm) = to_device(batch, cfg.patch, device, dtype)?;
    let method = cfg.plugin();
    let mut draws = match draws {
        Some(given) => StepDraws::given(given),
        None => StepDraws::seeded(cfg.seed, t),
    };
    if method.restart_at(cfg) == Some(t) {
        // The method's second stage starts afresh.
        sgd.clear_momentum();
    }
    let forward = timed("step: forward", || {
        method.forward(cfg, nets, &image, batch.labelled, t, &mut draws)
    })?;
    let targets = Targets {
        forwarded: &forward.targets,
        image: &image,
        state: state.as_deref(),
        label: &label,
        sdm: sdm.as_ref(),
        labelled: batch.labelled,
    };
    let obj = timed("step: objective", || {
        method.objective(cfg, &forward.outputs, &targets, cfg.lambda_at(t), t)
    })?;
    let loss = obj.total.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let mut parts = BTreeMap::new();
    for (name, v) in &obj.parts {
        parts.insert(
            name.to_string(),
            v.to_dtype(DType::F64)?.to_scalar::<f64>()?,
        );
    }
    if !loss.is_finite() {
        return Err(TrainError::NonFinite {
            iteration: t + 1,
            loss,
            parts: format!("{parts:?}"),
        });
    }
    let mut grads = timed("step: backward", || obj.total.backward())?;
    sgd.average_gradients(&mut grads, group)?;
    timed("step: optimiser", || sgd.step(&grads, cfg.lr_at(t)))?;
    method.after_update(cfg, nets, t)?;
    if let Some(state) = state {
        let step = StateUpdate {
            image: &image,
            labelled: batch.labelled,
            draws: &mut draws,
            group,
        };
        for (name, v) in method.update_state(cfg, nets, t, state, step)? {
            parts.insert(name.to_string(), v);
        }
    }
    Ok((loss, parts))
}
