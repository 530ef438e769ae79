//! Mean teacher (Tarvainen & Valpola, NeurIPS 2017) as the UA-MT code
//! family trains it on LA (`docs/methods/mean-teacher.md`): a student
//! trained by SGD on `0.5 (BCE + Dice)` of the labelled patches plus
//! `lambda(t)` times the mean squared difference between its
//! probabilities and a teacher's on the unlabelled patches; the teacher
//! sees those patches with clamped Gaussian noise, gets no gradient, and
//! after every update moves to an exponential moving average of the
//! student's weights. The student is what the run exports.

use super::*;
use dtml_loss::consistency;

/// Standard deviation and bound of the teacher's input noise
/// (`clamp(randn * 0.1, -0.2, 0.2)` in the released code).
pub(super) const NOISE_STD: f64 = 0.1;
pub(super) const NOISE_BOUND: f64 = 0.2;

/// `alpha` of the teacher's update after 0-based iteration `t`:
/// `min(1 - 1 / (t + 1), decay)`, the true average of the weights so far
/// until the moving average is the better estimate.
fn average_factor(t: usize, decay: f64) -> f64 {
    (1.0 - 1.0 / (t as f64 + 1.0)).min(decay)
}

/// What every mean teacher's objective starts from: the student's
/// `0.5 (BCE + Dice)` on the labelled patches, and the foreground
/// probabilities of student and teacher on the unlabelled ones.
pub(super) fn student_and_teacher(
    cfg: &TrainConfig,
    outputs: &[VNetOutput],
    targets: &Targets,
) -> Result<(Tensor, Tensor, Tensor)> {
    let l = targets.labelled;
    let (student, teacher) = (&outputs[0].seg_logits, &outputs[1].seg_logits);
    let supervised = region_loss(cfg, student, targets)?;
    let p_student = candle_nn::ops::sigmoid(&student.narrow(0, l, student.dim(0)? - l)?)?;
    let p_teacher = candle_nn::ops::sigmoid(teacher)?;
    Ok((supervised, p_student, p_teacher))
}

pub(super) struct MeanTeacher;

impl TrainingMethod for MeanTeacher {
    fn method(&self) -> Method {
        Method::MeanTeacher
    }

    fn networks(&self) -> &'static [NetworkSpec] {
        const NETS: [NetworkSpec; 2] = [
            NetworkSpec::student(StudentRole::Region),
            // The teacher: its own initial weights (the released code
            // creates it as a second network), replaced by the student's at
            // the first update, where the average's factor is 0.
            NetworkSpec::follower(),
        ];
        &NETS
    }

    /// The released code's `--consistency 0.1`.
    fn default_consistency(&self) -> f64 {
        0.1
    }

    /// The student on the whole batch; the teacher, in training mode as in
    /// the released code (batch statistics, dropout, its own BN running
    /// statistics), on the noisy unlabelled patches, detached.
    fn forward(
        &self,
        _cfg: &TrainConfig,
        nets: &[&VNet],
        image: &Tensor,
        labelled: usize,
        _iteration: usize,
        draws: &mut StepDraws,
    ) -> Result<Forward> {
        let student = nets[0].forward(image, true, draws.dropout_for(0)?)?;
        let unlabelled = image.narrow(0, labelled, image.dim(0)? - labelled)?;
        let noisy = (&unlabelled + draws.noise_like(&unlabelled, NOISE_STD, NOISE_BOUND)?)?;
        let teacher = nets[1].forward(&noisy, true, draws.dropout_for(1)?)?;
        Ok(vec![student, teacher.detach()].into())
    }

    /// `0.5 (BCE + Dice)` on the labelled patches + `lambda` times
    /// `mean((sigmoid(s_u) - sigmoid(t_u))^2)` over the unlabelled ones
    /// (the released two-class softmax MSE, averaged over both channels,
    /// is exactly this).
    fn objective(
        &self,
        cfg: &TrainConfig,
        outputs: &[VNetOutput],
        targets: &Targets,
        lambda: f64,
        _iteration: usize,
    ) -> Result<Objective> {
        let (supervised, p_student, p_teacher) = student_and_teacher(cfg, outputs, targets)?;
        let cons = consistency(&p_student, &p_teacher)?;
        let total = (&supervised + (&cons * lambda)?)?;
        Ok(Objective {
            total,
            parts: vec![("loss", supervised), ("consistency", cons)],
        })
    }

    /// `teacher = alpha teacher + (1 - alpha) student`
    /// ([`average_factor`]).
    fn after_update(&self, cfg: &TrainConfig, nets: &[&VNet], iteration: usize) -> Result<()> {
        nets[1].average_towards(nets[0], average_factor(iteration, cfg.ema_decay))?;
        Ok(())
    }
}
