//! Entropy minimisation (Grandvalet & Bengio, NeurIPS 2004; Vu et al.,
//! CVPR 2019 for segmentation) as SSL4MIS trains it in 3D
//! (`docs/methods/entropy-min.md`): one network, SSL4MIS's supervised
//! loss on the labelled patches, plus `lambda(t)` times the mean
//! normalised entropy of its predictions on every patch.

use super::*;

/// The released `entropy_loss`'s guard inside the logarithm.
const LOG_GUARD: f64 = 1e-6;

pub(super) struct EntropyMin;

impl TrainingMethod for EntropyMin {
    fn method(&self) -> Method {
        Method::EntropyMin
    }

    fn networks(&self) -> &'static [NetworkSpec] {
        &ONE_STUDENT
    }

    /// The released `--consistency 0.1`.
    fn default_consistency(&self) -> f64 {
        0.1
    }

    /// The released `lr (1 - t / N)^0.9`.
    fn default_lr_schedule(&self) -> LrSchedule {
        LrSchedule::Poly
    }

    /// `L_sup + lambda mean(H(p)) / ln 2` over every voxel of every patch,
    /// `H(p) = -(p ln(p + 1e-6) + (1 - p) ln(1 - p + 1e-6))` (the released
    /// two-class `entropy_loss`).
    fn objective(
        &self,
        _cfg: &TrainConfig,
        outputs: &[VNetOutput],
        targets: &Targets,
        lambda: f64,
        _iteration: usize,
    ) -> Result<Objective> {
        let z = &outputs[0].seg_logits;
        let supervised = ssl4mis_supervised_loss(z, targets)?;
        let p = candle_nn::ops::sigmoid(z)?;
        let q = p.affine(-1.0, 1.0)?;
        let plogp = (&p * (&p + LOG_GUARD)?.log()?)?;
        let qlogq = (&q * (&q + LOG_GUARD)?.log()?)?;
        let entropy = ((plogp + qlogq)?.mean_all()? * (-1.0 / std::f64::consts::LN_2))?;
        let total = (&supervised + (&entropy * lambda)?)?;
        Ok(Objective {
            total,
            parts: vec![("loss", supervised), ("entropy", entropy)],
        })
    }
}
