//! UA-MT, the uncertainty-aware mean teacher (Yu et al., MICCAI 2019), as
//! its released code trains it on LA (`docs/methods/ua-mt.md`): the mean
//! teacher of [`super::mean_teacher`] whose consistency counts only the
//! voxels where the teacher is certain. Certainty is the entropy of the
//! teacher's mean prediction over 8 noisy, dropout-perturbed passes (4
//! forward passes of the unlabelled patches twice over), kept below a
//! threshold that rises from 0.75 ln 2 to ln 2 over the run.

use super::mean_teacher::{MeanTeacher, NOISE_BOUND, NOISE_STD, student_and_teacher};
use super::*;

/// Monte-Carlo predictions per unlabelled patch (`T = 8`), made as
/// `MC_PASSES` forward passes of the unlabelled patches repeated twice.
const MC_SAMPLES: usize = 8;
const MC_PASSES: usize = MC_SAMPLES / 2;

pub(super) struct UaMt;

/// `exp(-5 (1 - min(t / length, 1))^2)`, the ramp of the released
/// `sigmoid_rampup` without the flooring the consistency weight's has.
fn smooth_rampup(t: usize, length: usize) -> f64 {
    if length == 0 {
        return 1.0;
    }
    let phase = 1.0 - (t as f64 / length as f64).clamp(0.0, 1.0);
    (-5.0 * phase * phase).exp()
}

impl TrainingMethod for UaMt {
    fn method(&self) -> Method {
        Method::UaMt
    }

    /// Student and teacher, the consistency weight and dropout: the mean
    /// teacher's.
    fn networks(&self) -> &'static [NetworkSpec] {
        MeanTeacher.networks()
    }

    fn default_consistency(&self) -> f64 {
        MeanTeacher.default_consistency()
    }

    fn default_dropout(&self) -> f64 {
        MeanTeacher.default_dropout()
    }

    /// The mean teacher's two passes (student on the batch, teacher on the
    /// noisy unlabelled patches), then the teacher's Monte-Carlo passes on
    /// the unlabelled patches repeated twice, each with fresh noise and
    /// dropout. Outputs: student, teacher, then one per Monte-Carlo pass,
    /// all but the student's detached.
    fn forward(
        &self,
        cfg: &TrainConfig,
        nets: &[&VNet],
        image: &Tensor,
        labelled: usize,
        iteration: usize,
        draws: &mut StepDraws,
    ) -> Result<Forward> {
        let mut outputs = MeanTeacher
            .forward(cfg, nets, image, labelled, iteration, draws)?
            .outputs;
        let unlabelled = image.narrow(0, labelled, image.dim(0)? - labelled)?;
        let repeated = Tensor::cat(&[&unlabelled, &unlabelled], 0)?;
        for pass in 0..MC_PASSES {
            let noisy = (&repeated + draws.noise_like(&repeated, NOISE_STD, NOISE_BOUND)?)?;
            let out = nets[1].forward(&noisy, true, draws.dropout_for(2 + pass)?)?;
            outputs.push(out.detach());
        }
        Ok(outputs.into())
    }

    /// `0.5 (BCE + Dice)` on the labelled patches + `lambda` times the
    /// masked squared difference `sum(m d) / (sum(m) + 1e-16 / 2)` over the
    /// unlabelled voxels, `d = (sigmoid(s_u) - sigmoid(t_u))^2` and `m = 1`
    /// where the entropy of the mean Monte-Carlo prediction is below
    /// `(0.75 + 0.25 ramp(t, N)) ln 2` (the released two-class form, whose
    /// channel sums double numerator and denominator alike).
    fn objective(
        &self,
        cfg: &TrainConfig,
        outputs: &[VNetOutput],
        targets: &Targets,
        lambda: f64,
        iteration: usize,
    ) -> Result<Objective> {
        let (supervised, p_student, p_teacher) = student_and_teacher(cfg, outputs, targets)?;
        let u = p_student.dim(0)?;
        let diff = (&p_student - &p_teacher)?.sqr()?;
        // Mean foreground probability of the 8 samples of each patch: pass
        // k holds the patches twice, rows [0, u) and [u, 2u).
        let mut sum: Option<Tensor> = None;
        for out in &outputs[2..] {
            let p = candle_nn::ops::sigmoid(&out.seg_logits)?;
            let both = (p.narrow(0, 0, u)? + p.narrow(0, u, u)?)?;
            sum = Some(match sum {
                Some(s) => (s + both)?,
                None => both,
            });
        }
        let mean = (sum
            .ok_or_else(|| crate::TrainError::Other("no Monte-Carlo passes".into()))?
            / MC_SAMPLES as f64)?;
        // -sum_c p_c log(p_c + 1e-6) over the two classes.
        let entropy = |p: &Tensor| -> Result<Tensor> { Ok((p * (p + 1e-6)?.log()?)?) };
        let uncertainty = (entropy(&mean)? + entropy(&(1.0 - &mean)?)?)?.neg()?;
        let threshold =
            (0.75 + 0.25 * smooth_rampup(iteration, cfg.iterations)) * std::f64::consts::LN_2;
        let mask = uncertainty.lt(threshold)?.to_dtype(diff.dtype())?;
        let kept = mask.sum_all()?;
        let masked = ((&mask * &diff)?.sum_all()? * 2.0)?;
        let cons = (masked / ((kept * 2.0)? + 1e-16)?)?;
        let total = (&supervised + (&cons * lambda)?)?;
        let certain = (mask.mean_all()?).detach();
        Ok(Objective {
            total,
            parts: vec![
                ("loss", supervised),
                ("consistency", cons),
                ("certain_share", certain),
            ],
        })
    }

    /// The teacher's moving average, as the mean teacher's.
    fn after_update(&self, cfg: &TrainConfig, nets: &[&VNet], iteration: usize) -> Result<()> {
        MeanTeacher.after_update(cfg, nets, iteration)
    }
}
