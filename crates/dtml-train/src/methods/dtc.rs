//! DTC (dual-task consistency): one V-Net with both heads, Dice on the
//! segmentation, MSE on the signed distance map, and consistency between
//! its own two heads on every patch.

use super::*;
use dtml_loss::{SdmLoss, consistency, dice_loss, sdm_regression, sdm_to_mask};

pub(super) struct Dtc;

impl TrainingMethod for Dtc {
    fn method(&self) -> Method {
        Method::Dtc
    }

    fn networks(&self) -> &'static [NetworkSpec] {
        &ONE_STUDENT
    }

    fn needs_sdm_target(&self) -> bool {
        true
    }

    /// `dice + beta * mse + lambda * consistency`.
    fn objective(
        &self,
        cfg: &TrainConfig,
        outputs: &[VNetOutput],
        targets: &Targets,
        lambda: f64,
        _iteration: usize,
    ) -> Result<Objective> {
        let (o, l) = (&outputs[0], targets.labelled);
        let p = candle_nn::ops::sigmoid(&o.seg_logits)?;
        let q = sdm_to_mask(&o.sdm, cfg.sharpness)?;
        let dice = dice_loss(&head(&p, l)?, targets.label, cfg.dice)?;
        let mse = sdm_regression(
            &head(&o.sdm, l)?,
            sdm_target(targets, self.method())?,
            SdmLoss::Mse,
        )?;
        let cons = consistency(&q, &p)?;
        let total = ((&dice + (&mse * cfg.dtc_beta)?)? + (&cons * lambda)?)?;
        Ok(Objective {
            total,
            parts: vec![("dice", dice), ("sdm_mse", mse), ("consistency", cons)],
        })
    }
}
