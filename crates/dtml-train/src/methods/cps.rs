//! Cross pseudo supervision (Chen et al., CVPR 2021) as SSL4MIS trains it
//! in 3D (`docs/methods/cps.md`): two networks of one architecture,
//! initialised differently (Kaiming-normal and Xavier-normal convolution
//! weights), each trained on `0.5 (CE + Dice)` of the labelled patches
//! plus `lambda(t)` times the cross entropy against the other network's
//! hard labels of the unlabelled patches. The first network is the one
//! exported; the second only trains it.

use super::*;
use dtml_loss::bce_with_logits;

pub(super) struct Cps;

impl TrainingMethod for Cps {
    fn method(&self) -> Method {
        Method::Cps
    }

    fn networks(&self) -> &'static [NetworkSpec] {
        const NETS: [NetworkSpec; 2] = [
            NetworkSpec {
                init: Init::KaimingNormal,
                ..NetworkSpec::student(StudentRole::Region)
            },
            NetworkSpec {
                exported_as: None,
                trained: true,
                init: Init::XavierNormal,
            },
        ];
        &NETS
    }

    /// The released code's `--consistency 0.1`.
    fn default_consistency(&self) -> f64 {
        0.1
    }

    /// The released code's `lr (1 - t / N)^0.9`.
    fn default_lr_schedule(&self) -> LrSchedule {
        LrSchedule::Poly
    }

    /// `L_1 + L_2 + lambda (CE(s1_u, [s2_u > 0]) + CE(s2_u, [s1_u > 0]))`,
    /// `L_i` each network's [`ssl4mis_supervised_loss`] and
    /// `[s > 0]` the argmax of the detached two-class prediction (a tie
    /// goes to background, as `argmax` picks the first).
    fn objective(
        &self,
        _cfg: &TrainConfig,
        outputs: &[VNetOutput],
        targets: &Targets,
        lambda: f64,
        _iteration: usize,
    ) -> Result<Objective> {
        let l = targets.labelled;
        let (s1, s2) = (&outputs[0].seg_logits, &outputs[1].seg_logits);
        let loss_1 = ssl4mis_supervised_loss(s1, targets)?;
        let loss_2 = ssl4mis_supervised_loss(s2, targets)?;
        let unlabelled = |s: &Tensor| s.narrow(0, l, s.dim(0)? - l);
        let (u1, u2) = (unlabelled(s1)?, unlabelled(s2)?);
        let hard = |s: &Tensor| -> Result<Tensor> { Ok(s.detach().gt(0.0)?.to_dtype(s.dtype())?) };
        let cps = (bce_with_logits(&u1, &hard(&u2)?)? + bce_with_logits(&u2, &hard(&u1)?)?)?;
        let total = ((&loss_1 + &loss_2)? + (&cps * lambda)?)?;
        Ok(Objective {
            total,
            parts: vec![("loss_1", loss_1), ("loss_2", loss_2), ("cps", cps)],
        })
    }
}
