//! MC-Net (Wu et al., MICCAI 2021) as its released code trains it on LA
//! (`docs/methods/mc-net.md`): one V-Net encoder with two decoders, the
//! V-Net's own (transposed convolutions) and one that up-samples
//! trilinearly; each decoder's Dice on the labelled patches, plus
//! `lambda(t)` times the squared difference between each decoder's
//! probabilities and the other's sharpened ones on every patch. Inference
//! reads the first decoder, a plain V-Net. MC-Net+ (`plus`) adds a third
//! decoder that up-samples by nearest neighbour, with the same objective
//! over all pairs.

use super::*;
use dtml_loss::{DiceVariant, dice_loss_smoothed};

/// Weight of the decoders' summed Dice (the released `--lamda 0.5`).
const DICE_WEIGHT: f64 = 0.5;
/// Smoothing of the released `Binary_dice_loss`.
const DICE_SMOOTH: f64 = 1e-8;

pub(super) struct McNet {
    /// MC-Net+: three decoders.
    pub plus: bool,
}

impl TrainingMethod for McNet {
    fn method(&self) -> Method {
        if self.plus {
            Method::McNetPlus
        } else {
            Method::McNet
        }
    }

    fn networks(&self) -> &'static [NetworkSpec] {
        &ONE_STUDENT
    }

    fn extra_decoders(&self) -> &'static [Upsampling] {
        if self.plus {
            &[Upsampling::Trilinear, Upsampling::Nearest]
        } else {
            &[Upsampling::Trilinear]
        }
    }

    /// The released code never changes the rate (its step schedule is
    /// commented out).
    fn default_lr_schedule(&self) -> LrSchedule {
        LrSchedule::Constant
    }

    /// `0.5 sum_d Dice(p_d) + lambda sum_{i != j} mean((p_i - s_j)^2)`,
    /// `p_d = sigmoid(z_d)` each decoder's probabilities and `s_j =
    /// sigmoid(z_j / T)` the sharpened `p_j^(1/T) / (p_j^(1/T) + (1 -
    /// p_j)^(1/T))`, not detached (the released code lets the gradient
    /// through the pseudo labels too).
    fn objective(
        &self,
        cfg: &TrainConfig,
        outputs: &[VNetOutput],
        targets: &Targets,
        lambda: f64,
        _iteration: usize,
    ) -> Result<Objective> {
        let out = &outputs[0];
        let logits: Vec<&Tensor> = std::iter::once(&out.seg_logits)
            .chain(&out.aux_seg)
            .collect();
        let probs = logits
            .iter()
            .map(|z| candle_nn::ops::sigmoid(z))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let sharp = logits
            .iter()
            .map(|z| candle_nn::ops::sigmoid(&(*z / cfg.temperature)?))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mut dice = Tensor::zeros((), out.seg_logits.dtype(), out.seg_logits.device())?;
        for p in &probs {
            let d = dice_loss_smoothed(
                &head(p, targets.labelled)?,
                targets.label,
                DiceVariant::Linear,
                DICE_SMOOTH,
            )?;
            dice = (dice + d)?;
        }
        let mut cons = Tensor::zeros((), out.seg_logits.dtype(), out.seg_logits.device())?;
        for (i, p) in probs.iter().enumerate() {
            for (j, s) in sharp.iter().enumerate() {
                if i != j {
                    cons = (cons + (p - s)?.sqr()?.mean_all()?)?;
                }
            }
        }
        let total = ((&dice * DICE_WEIGHT)? + (&cons * lambda)?)?;
        Ok(Objective {
            total,
            parts: vec![("dice", dice), ("consistency", cons)],
        })
    }
}
