//! The training objectives, by name, exactly as `shared/method.md` defines
//! them: the paper's DTML, the released code's variant, DTC and a
//! supervised baseline.

use crate::config::TrainConfig;
use crate::error::Result;
use candle_core::Tensor;
use dtml_loss::{
    DiceVariant, SdmLoss, bce_with_logits, consistency, dice_loss, sdm_regression, sdm_to_mask,
};
use dtml_model::VNetOutput;
use serde::{Deserialize, Serialize};

/// A training objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// The paper: `L_A + L_B + lambda * consistency`, one backward pass;
    /// B regresses the SDM and fits `sigmoid(-k d)` to the label.
    Dtml,
    /// The released code: B without SDM regression and the consistency
    /// gradient received twice (`L_A + L_B + 2 lambda consistency`).
    DtmlReleased,
    /// DTC: one V-Net with both heads, Dice + 0.3 MSE on the SDM, and
    /// consistency between its own two heads.
    Dtc,
    /// One V-Net on labelled patches only, `0.5 (BCE + Dice)`.
    Supervised,
}

impl Method {
    /// All methods, for help texts.
    pub const ALL: [Method; 4] = [
        Method::Dtml,
        Method::DtmlReleased,
        Method::Dtc,
        Method::Supervised,
    ];

    /// The name used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            Method::Dtml => "dtml",
            Method::DtmlReleased => "dtml-released",
            Method::Dtc => "dtc",
            Method::Supervised => "supervised",
        }
    }

    /// Parses a name as [`Method::name`] writes it.
    pub fn parse(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Number of networks trained: two students or one.
    pub fn networks(self) -> usize {
        match self {
            Method::Dtml | Method::DtmlReleased => 2,
            Method::Dtc | Method::Supervised => 1,
        }
    }

    /// Whether unlabelled patches enter the batch.
    pub fn uses_unlabelled(self) -> bool {
        self != Method::Supervised
    }

    /// Whether the labelled patches need normalised SDM targets. The
    /// released DTML code computes them and never uses them; we skip that.
    pub fn needs_sdm_target(self) -> bool {
        matches!(self, Method::Dtml | Method::Dtc)
    }

    /// (labelled, unlabelled) patches per batch.
    pub fn batch_shape(self, cfg: &TrainConfig) -> (usize, usize) {
        if self.uses_unlabelled() {
            (cfg.labelled_batch, cfg.unlabelled_batch)
        } else {
            (cfg.labelled_batch + cfg.unlabelled_batch, 0)
        }
    }
}

/// The device-side targets of a batch.
pub struct Targets<'a> {
    /// Labels of the labelled patches `(L, 1, Z, Y, X)`, 0/1 floats.
    pub label: &'a Tensor,
    /// Normalised SDM targets of the labelled patches, same shape.
    pub sdm: Option<&'a Tensor>,
    /// Number of labelled patches at the head of the batch.
    pub labelled: usize,
}

/// The objective's total and its parts (for logs).
pub struct Objective {
    pub total: Tensor,
    pub parts: Vec<(&'static str, Tensor)>,
}

fn head(t: &Tensor, n: usize) -> Result<Tensor> {
    Ok(t.narrow(0, 0, n)?)
}

fn sdm_target<'a>(t: &Targets<'a>, method: Method) -> Result<&'a Tensor> {
    t.sdm.ok_or_else(|| {
        crate::TrainError::Other(format!(
            "method {} needs SDM targets and the batch has none",
            method.name()
        ))
    })
}

/// Computes the objective of `method` from the networks' outputs on the
/// whole batch (`outputs[0]` = student A or the single network).
pub fn objective(
    method: Method,
    cfg: &TrainConfig,
    outputs: &[VNetOutput],
    targets: &Targets,
    lambda: f64,
) -> Result<Objective> {
    let l = targets.labelled;
    let y = targets.label;
    let dice_kind: DiceVariant = cfg.dice.into();
    let k = cfg.sharpness;
    let region_loss = |seg: &Tensor| -> Result<Tensor> {
        let seg_l = head(seg, l)?;
        let p_l = candle_nn::ops::sigmoid(&seg_l)?;
        let bce = bce_with_logits(&seg_l, y)?;
        let dice = dice_loss(&p_l, y, dice_kind)?;
        Ok(((bce + dice)? * 0.5)?)
    };
    Ok(match method {
        Method::Dtml | Method::DtmlReleased => {
            let (a, b) = (&outputs[0], &outputs[1]);
            let p_a = candle_nn::ops::sigmoid(&a.seg_logits)?;
            let q_b = sdm_to_mask(&b.sdm, k)?;
            let loss_a = region_loss(&a.seg_logits)?;
            let dice_b = dice_loss(&head(&q_b, l)?, y, dice_kind)?;
            let cons = consistency(&q_b, &p_a)?;
            let mut parts = vec![("loss_a", loss_a.clone()), ("dice_b", dice_b.clone())];
            let (loss_b, cons_weight) = if method == Method::Dtml {
                let reg = sdm_regression(
                    &head(&b.sdm, l)?,
                    sdm_target(targets, method)?,
                    cfg.sdm_loss.into(),
                )?;
                parts.push(("sdm_b", reg.clone()));
                (((reg * cfg.sdm_weight)? + dice_b)?, lambda)
            } else {
                (dice_b, 2.0 * lambda)
            };
            parts.push(("consistency", cons.clone()));
            let total = ((loss_a + loss_b)? + (cons * cons_weight)?)?;
            Objective { total, parts }
        }
        Method::Dtc => {
            let o = &outputs[0];
            let p = candle_nn::ops::sigmoid(&o.seg_logits)?;
            let q = sdm_to_mask(&o.sdm, k)?;
            let dice = dice_loss(&head(&p, l)?, y, dice_kind)?;
            let mse = sdm_regression(
                &head(&o.sdm, l)?,
                sdm_target(targets, method)?,
                SdmLoss::Mse,
            )?;
            let cons = consistency(&q, &p)?;
            let total = ((&dice + (&mse * cfg.dtc_beta)?)? + (&cons * lambda)?)?;
            Objective {
                total,
                parts: vec![("dice", dice), ("sdm_mse", mse), ("consistency", cons)],
            }
        }
        Method::Supervised => {
            let loss = region_loss(&outputs[0].seg_logits)?;
            Objective {
                total: loss.clone(),
                parts: vec![("loss", loss)],
            }
        }
    })
}
