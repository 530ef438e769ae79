//! The supervised baseline: one V-Net on labelled patches only, trained
//! with `0.5 (BCE + Dice)`: what the semi-supervised methods must beat.

use super::*;

pub(super) struct Supervised;

impl TrainingMethod for Supervised {
    fn method(&self) -> Method {
        Method::Supervised
    }

    fn networks(&self) -> &'static [NetworkSpec] {
        &ONE_STUDENT
    }

    fn uses_unlabelled(&self) -> bool {
        false
    }

    fn objective(
        &self,
        cfg: &TrainConfig,
        outputs: &[VNetOutput],
        targets: &Targets,
        _lambda: f64,
        _iteration: usize,
    ) -> Result<Objective> {
        let loss = region_loss(cfg, &outputs[0].seg_logits, targets)?;
        Ok(Objective {
            total: loss.clone(),
            parts: vec![("loss", loss)],
        })
    }
}
