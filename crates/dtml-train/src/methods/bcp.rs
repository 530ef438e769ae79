//! BCP, bidirectional copy-paste (Bai et al., CVPR 2023), as its released
//! code trains it on LA (`docs/methods/bcp.md`). A supervised pre-training
//! stage (the first `pretrain_fraction` of the run) fits the network to
//! labelled patches with a box of one pasted into the other. Then a mean
//! teacher, started as a copy of the pre-trained network, labels the
//! unlabelled patches (threshold 0.5, largest component); a labelled
//! patch gets a box of an unlabelled one pasted in and an unlabelled patch
//! a box of a labelled one, both mixed images are segmented by the
//! student, and each voxel's loss is weighted 1 where its label is real
//! and `unlabelled_weight` where it is a pseudo label. SGD and the LR
//! schedule start afresh at the second stage; the teacher follows the
//! student by an EMA with a fixed factor.

use super::*;
use dtml_edt::{Connectivity, largest_connected_component};

/// Smoothing of the released `mask_DiceLoss`.
const DICE_SMOOTH: f64 = 1e-5;
/// The released cross entropy's guard against an empty region.
const REGION_GUARD: f64 = 1e-16;

pub(super) struct Bcp;

impl Bcp {
    /// The first self-training iteration.
    fn start(cfg: &TrainConfig) -> usize {
        (cfg.pretrain_fraction * cfg.iterations as f64 + 0.5).floor() as usize
    }
}

/// `(N, 1, Z, Y, X)` ones with a zero box of `mask_ratio` of each side at
/// a drawn origin (the released `context_mask`: the box lies in
/// `0..side - size` on each axis), shaped and typed as `like`.
fn context_mask(cfg: &TrainConfig, like: &Tensor, draws: &mut StepDraws) -> Result<Tensor> {
    let dims = like.dims();
    let sides = [dims[2], dims[3], dims[4]];
    let size = sides.map(|s| (s as f64 * cfg.mask_ratio) as usize);
    let origin = draws.box_origin([0, 1, 2].map(|a| sides[a] - size[a]))?;
    let (nz, ny, nx) = (sides[0], sides[1], sides[2]);
    let inside = |v: usize, a: usize| v >= origin[a] && v < origin[a] + size[a];
    let mut m = vec![1.0f64; nz * ny * nx];
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                if inside(z, 0) && inside(y, 1) && inside(x, 2) {
                    m[(z * ny + y) * nx + x] = 0.0;
                }
            }
        }
    }
    Ok(Tensor::from_vec(m, (1, 1, nz, ny, nx), like.device())?.to_dtype(like.dtype())?)
}

/// `a` where `mask` is 1, `b` where it is 0.
fn paste(a: &Tensor, b: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let inverse = mask.affine(-1.0, 1.0)?;
    Ok((a.broadcast_mul(mask)? + b.broadcast_mul(&inverse)?)?)
}

/// The teacher's hard labels of `logits`: `sigmoid >= 0.5`, then each
/// patch's largest 26-connected component (the released
/// `get_cut_mask(..., nms=1)`; an empty mask stays empty).
fn pseudo_labels(logits: &Tensor) -> Result<Tensor> {
    let (n, _, z, y, x) = logits.dims5()?;
    let hard: Vec<u8> = logits
        .ge(0.0)?
        .to_dtype(candle_core::DType::U8)?
        .flatten_all()?
        .to_vec1()?;
    let voxels = z * y * x;
    let mut out = Vec::with_capacity(n * voxels);
    for patch in hard.chunks(voxels) {
        let largest = largest_connected_component(patch, &[z, y, x], Connectivity::Full)
            .map_err(|e| crate::TrainError::Other(format!("pseudo labels: {e}")))?;
        out.extend(largest.iter().map(|&v| if v { 1.0f64 } else { 0.0 }));
    }
    Ok(Tensor::from_vec(out, logits.dims(), logits.device())?.to_dtype(logits.dtype())?)
}

/// The released `mask_DiceLoss` on one logit: per patch and class
/// (background, foreground) `(2 sum(p y m) + s) / (sum((p + y) m) + s)`,
/// one minus their mean; `mask` `(1, 1, Z, Y, X)` weights the voxels.
fn masked_dice(logits: &Tensor, y: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let p = candle_nn::ops::sigmoid(logits)?;
    let n = p.dim(0)?;
    let per_patch = |t: &Tensor| -> Result<Tensor> { Ok(t.reshape((n, ()))?.sum(1)?) };
    let class = |p: &Tensor, y: &Tensor| -> Result<Tensor> {
        let inter = per_patch(&(p * y)?.broadcast_mul(mask)?)?;
        let union = per_patch(&(p + y)?.broadcast_mul(mask)?)?;
        Ok(((inter * 2.0)? + DICE_SMOOTH)?.div(&(union + DICE_SMOOTH)?)?)
    };
    let fg = class(&p, y)?;
    let bg = class(&p.affine(-1.0, 1.0)?, &y.affine(-1.0, 1.0)?)?;
    Ok(Tensor::cat(&[fg, bg], 0)?.mean_all()?.affine(-1.0, 1.0)?)
}

/// Voxel-wise cross entropy of one logit against 0/1 `y`, averaged over
/// the voxels `mask` weights (the released `(CE * mask).sum() /
/// (mask.sum() + 1e-16)`).
fn masked_ce(logits: &Tensor, y: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let ce = dtml_loss::bce_with_logits_per_element(logits, y)?;
    let mask = mask.broadcast_as(ce.shape())?;
    let total = (&ce * &mask)?.sum_all()?;
    Ok(total.div(&(mask.sum_all()? + REGION_GUARD)?)?)
}

/// The released `mix_loss`: the image's own label weighted `image_weight`
/// outside the box, the pasted patch's weighted `patch_weight` inside,
/// `(Dice + CE) / 2`.
fn mix_loss(
    logits: &Tensor,
    image_label: &Tensor,
    patch_label: &Tensor,
    mask: &Tensor,
    (image_weight, patch_weight): (f64, f64),
) -> Result<Tensor> {
    let inside = mask.affine(-1.0, 1.0)?;
    let dice = ((masked_dice(logits, image_label, mask)? * image_weight)?
        + (masked_dice(logits, patch_label, &inside)? * patch_weight)?)?;
    let ce = ((masked_ce(logits, image_label, mask)? * image_weight)?
        + (masked_ce(logits, patch_label, &inside)? * patch_weight)?)?;
    Ok(((dice + ce)? * 0.5)?)
}

impl TrainingMethod for Bcp {
    fn method(&self) -> Method {
        Method::Bcp
    }

    fn networks(&self) -> &'static [NetworkSpec] {
        const NETS: [NetworkSpec; 2] = [
            NetworkSpec::student(StudentRole::Region),
            NetworkSpec::follower(),
        ];
        &NETS
    }

    /// Halves of the labelled and the unlabelled patches pair up: both
    /// counts equal and even; the box must fit the patch.
    fn check(&self, cfg: &TrainConfig) -> Result<()> {
        let bad = |m: String| Err(crate::TrainError::Config(m));
        if !cfg.labelled_batch.is_multiple_of(2) || cfg.unlabelled_batch != cfg.labelled_batch {
            return bad(format!(
                "bcp pairs halves of the batch: labelled_batch ({}) must be even and equal to unlabelled_batch ({})",
                cfg.labelled_batch, cfg.unlabelled_batch
            ));
        }
        if !(cfg.mask_ratio > 0.0 && cfg.mask_ratio < 1.0) {
            return bad(format!("mask_ratio {} must be in (0, 1)", cfg.mask_ratio));
        }
        if cfg
            .patch
            .xyz()
            .iter()
            .any(|&s| (s as f64 * cfg.mask_ratio) < 1.0)
        {
            return bad(format!(
                "mask_ratio {} leaves no box in patch {:?}",
                cfg.mask_ratio, cfg.patch
            ));
        }
        if !(0.0..1.0).contains(&cfg.pretrain_fraction) {
            return bad(format!(
                "pretrain_fraction {} must be in [0, 1)",
                cfg.pretrain_fraction
            ));
        }
        if !(cfg.unlabelled_weight.is_finite() && cfg.unlabelled_weight >= 0.0) {
            return bad(format!(
                "unlabelled_weight {} must be finite and >= 0",
                cfg.unlabelled_weight
            ));
        }
        Ok(())
    }

    fn restart_at(&self, cfg: &TrainConfig) -> Option<usize> {
        Some(Bcp::start(cfg))
    }

    /// Pre-training: the student on labelled halves `a` with a box of `b`
    /// pasted in. Self-training: the teacher (training mode, as released)
    /// labels the unlabelled halves, then the student segments `a` with a
    /// box of unlabelled `a'` and `b'` with a box of `b`. Hands the
    /// objective the box mask and, when self-training, the pseudo labels.
    fn forward(
        &self,
        cfg: &TrainConfig,
        nets: &[&VNet],
        image: &Tensor,
        labelled: usize,
        iteration: usize,
        draws: &mut StepDraws,
    ) -> Result<Forward> {
        let half = labelled / 2;
        let (img_a, img_b) = (image.narrow(0, 0, half)?, image.narrow(0, half, half)?);
        let start = Bcp::start(cfg);
        if iteration < start {
            let mask = context_mask(cfg, &img_a, draws)?;
            let mixed = paste(&img_a, &img_b, &mask)?;
            let out = nets[0].forward(&mixed, true, draws.dropout_for(0)?)?;
            return Ok(Forward {
                outputs: vec![out],
                targets: vec![mask],
            });
        }
        if iteration == start {
            // The teacher starts as the pre-trained network, statistics and
            // all (the released code loads both from the same file).
            let state = nets[0].state_dict()?;
            nets[1].load_state_dict(&state, std::path::Path::new("the pre-trained student"))?;
        }
        let unl_a = image.narrow(0, labelled, half)?;
        let unl_b = image.narrow(0, labelled + half, half)?;
        let plab_a = pseudo_labels(
            &nets[1]
                .forward(&unl_a, true, draws.dropout_for(0)?)?
                .seg_logits
                .detach(),
        )?;
        let plab_b = pseudo_labels(
            &nets[1]
                .forward(&unl_b, true, draws.dropout_for(1)?)?
                .seg_logits
                .detach(),
        )?;
        let mask = context_mask(cfg, &img_a, draws)?;
        let mixed_l = paste(&img_a, &unl_a, &mask)?;
        let mixed_u = paste(&unl_b, &img_b, &mask)?;
        let out_l = nets[0].forward(&mixed_l, true, draws.dropout_for(2)?)?;
        let out_u = nets[0].forward(&mixed_u, true, draws.dropout_for(3)?)?;
        Ok(Forward {
            outputs: vec![out_l, out_u],
            targets: vec![mask, plab_a, plab_b],
        })
    }

    /// Pre-training: `(CE + Dice) / 2` of the pasted labels. Then
    /// `mix_loss(l; lab_a, plab_a) + mix_loss(u; plab_b, lab_b)`, the
    /// pseudo-labelled side weighted `unlabelled_weight`. `lambda` is not
    /// used: the released code computes a ramp and never applies it.
    fn objective(
        &self,
        cfg: &TrainConfig,
        outputs: &[VNetOutput],
        targets: &Targets,
        _lambda: f64,
        iteration: usize,
    ) -> Result<Objective> {
        let half = targets.labelled / 2;
        let (lab_a, lab_b) = (
            targets.label.narrow(0, 0, half)?,
            targets.label.narrow(0, half, half)?,
        );
        let mask = targets.forwarded.first().ok_or_else(|| {
            crate::TrainError::Other("bcp's objective runs without its box".into())
        })?;
        if iteration < Bcp::start(cfg) {
            let z = &outputs[0].seg_logits;
            let label = paste(&lab_a, &lab_b, mask)?;
            let everywhere = mask.ones_like()?;
            let ce = masked_ce(z, &label, &everywhere)?;
            let dice = masked_dice(z, &label, &everywhere)?;
            let total = ((&ce + &dice)? * 0.5)?;
            return Ok(Objective {
                total,
                parts: vec![("pretrain_ce", ce), ("pretrain_dice", dice)],
            });
        }
        let [_, plab_a, plab_b] = targets.forwarded else {
            return Err(crate::TrainError::Other(
                "bcp's objective runs without its pseudo labels".into(),
            ));
        };
        let w = cfg.unlabelled_weight;
        let loss_l = mix_loss(&outputs[0].seg_logits, &lab_a, plab_a, mask, (1.0, w))?;
        let loss_u = mix_loss(&outputs[1].seg_logits, plab_b, &lab_b, mask, (w, 1.0))?;
        let total = (&loss_l + &loss_u)?;
        Ok(Objective {
            total,
            parts: vec![("loss_l", loss_l), ("loss_u", loss_u)],
        })
    }

    /// While self-training, `teacher = d teacher + (1 - d) student` with
    /// the fixed `d = ema_decay` (the released code has no warm-up).
    fn after_update(&self, cfg: &TrainConfig, nets: &[&VNet], iteration: usize) -> Result<()> {
        if iteration >= Bcp::start(cfg) {
            nets[1].average_towards(nets[0], cfg.ema_decay)?;
        }
        Ok(())
    }
}
