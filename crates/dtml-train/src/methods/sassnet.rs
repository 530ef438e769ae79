//! SASSNet (Li, Zhang & He, MICCAI 2020) as its released code trains it on
//! LA (`docs/methods/sassnet.md`): the V-Net with both heads learns Dice
//! on the segmentation and `beta` times the MSE of its signed distance map
//! on the labelled patches, plus `lambda(t)` times an adversarial loss: a
//! discriminator that sees a predicted map with its image should take an
//! unlabelled patch's for a labelled one's. After every step the
//! discriminator itself learns (Adam) to tell the two apart on the whole
//! batch, from maps the network predicts in evaluation mode.

use super::*;
use crate::optim::Adam;
use candle_core::{D, DType, Device};
use dtml_loss::{DiceVariant, SdmLoss, dice_loss, sdm_regression};
use dtml_model::Discriminator;

/// Adam's betas and epsilon for the discriminator (the released code's
/// `betas=(0.9, 0.99)` and PyTorch's default epsilon).
const BETAS: (f64, f64) = (0.9, 0.99);
const EPS: f64 = 1e-8;

/// The discriminator's class of a labelled patch (the released `Dtarget`
/// is 1 for the labelled half of the batch, 0 for the unlabelled half).
const LABELLED_CLASS: u32 = 1;

/// The discriminator and its optimiser: SASSNet's state beyond its V-Net.
pub(super) struct Adversary {
    disc: Discriminator,
    adam: Adam,
}

impl MethodState for Adversary {
    fn save(&self) -> Result<HashMap<String, Tensor>> {
        let mut out: HashMap<String, Tensor> = self
            .disc
            .state_dict()?
            .into_iter()
            .map(|(k, v)| (format!("disc.{k}"), v))
            .collect();
        for (k, v) in self.adam.state()? {
            out.insert(format!("adam.{k}"), v);
        }
        Ok(out)
    }

    fn restore(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let part = |prefix: &str| -> HashMap<String, Tensor> {
            tensors
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_string(), v.clone())))
                .collect()
        };
        self.disc
            .load_state_dict(&part("disc."), std::path::Path::new("checkpoint"))?;
        self.adam.load_state(&part("adam."))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

impl Adversary {
    /// A discriminator of `cfg.discriminator_width` drawn from `seed`.
    pub(super) fn new(cfg: &TrainConfig, seed: u64, dtype: DType, device: &Device) -> Result<Self> {
        let disc = Discriminator::new(cfg.discriminator_width, seed, dtype, device)?;
        let adam = Adam::new(disc.named_vars(), BETAS, EPS);
        Ok(Adversary { disc, adam })
    }
}

/// Mean cross entropy of two-class `logits` `(N, 2)` against `classes`.
fn cross_entropy(logits: &Tensor, classes: &[u32]) -> Result<Tensor> {
    let target = Tensor::new(classes, logits.device())?;
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    Ok(candle_nn::loss::nll(&log_p, &target)?)
}

pub(super) struct Sassnet;

impl TrainingMethod for Sassnet {
    fn method(&self) -> Method {
        Method::Sassnet
    }

    fn networks(&self) -> &'static [NetworkSpec] {
        &ONE_STUDENT
    }

    fn needs_sdm_target(&self) -> bool {
        true
    }

    /// The released `--consistency 0.01`: the adversarial term's weight.
    fn default_consistency(&self) -> f64 {
        0.01
    }

    fn state(
        &self,
        cfg: &TrainConfig,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Option<Box<dyn MethodState>>> {
        Ok(Some(Box::new(Adversary::new(cfg, seed, dtype, device)?)))
    }

    /// The discriminator's weights, gradients and Adam moments (growing
    /// with the square of its width) and its activations. Measured as peak
    /// RSS over the supervised baseline's at V-Net width 8, 4 patches,
    /// discriminator width 64: 650 MB at 32x32x32, 845 MB at 48x48x32,
    /// 1391 MB at 64x64x48, so about 500 MB fixed and 1130 bytes per patch
    /// voxel (18 per voxel and unit of width; 338 / 566 MB total at widths
    /// 8 / 32 and 48x48x32).
    fn state_memory_bytes(&self, cfg: &TrainConfig, voxel_samples: f64) -> f64 {
        let width = cfg.discriminator_width as f64;
        500e6 * (width / 64.0).powi(2) + 18.0 * width * voxel_samples
    }

    /// `Dice + beta * MSE(sdm) + lambda * CE(D(sdm_u, x_u), labelled)`;
    /// the discriminator in evaluation mode (no dropout). Its weights get a
    /// gradient here too, which its own step never reads (the released
    /// code zeroes it first).
    fn objective(
        &self,
        cfg: &TrainConfig,
        outputs: &[VNetOutput],
        targets: &Targets,
        lambda: f64,
        _iteration: usize,
    ) -> Result<Objective> {
        let (o, l) = (&outputs[0], targets.labelled);
        let adversary: &Adversary = state_of(targets.state, self.method())?;
        let p = candle_nn::ops::sigmoid(&head(&o.seg_logits, l)?)?;
        let dice = dice_loss(&p, targets.label, DiceVariant::Squared)?;
        let mse = sdm_regression(
            &head(&o.sdm, l)?,
            sdm_target(targets, self.method())?,
            SdmLoss::Mse,
        )?;
        let n = o.sdm.dim(0)?;
        let logits = adversary.disc.forward(
            &o.sdm.narrow(0, l, n - l)?,
            &targets.image.narrow(0, l, n - l)?,
            Dropout::Off,
        )?;
        let adversarial = cross_entropy(&logits, &vec![LABELLED_CLASS; n - l])?;
        let total = ((&dice + (&mse * cfg.dtc_beta)?)? + (&adversarial * lambda)?)?;
        Ok(Objective {
            total,
            parts: vec![
                ("dice", dice),
                ("sdm_mse", mse),
                ("adversarial", adversarial),
            ],
        })
    }

    /// The discriminator's step: the network (just updated) predicts maps
    /// of the whole batch in evaluation mode, the discriminator (training
    /// mode, its own dropout) classifies them with their images, and Adam
    /// follows the cross entropy against labelled / unlabelled.
    fn update_state(
        &self,
        cfg: &TrainConfig,
        nets: &[&VNet],
        _iteration: usize,
        state: &mut dyn MethodState,
        step: StateUpdate,
    ) -> Result<Vec<(&'static str, f64)>> {
        let adversary = state
            .as_any_mut()
            .downcast_mut::<Adversary>()
            .ok_or_else(|| {
                crate::TrainError::Other("sassnet runs without its discriminator".into())
            })?;
        let maps = nets[0].predict(step.image)?.sdm;
        let n = maps.dim(0)?;
        let classes: Vec<u32> = (0..n)
            .map(|i| {
                if i < step.labelled {
                    LABELLED_CLASS
                } else {
                    1 - LABELLED_CLASS
                }
            })
            .collect();
        // The network's passes come first in the step's draws.
        let pass = self.networks().len();
        let logits = adversary
            .disc
            .forward(&maps, step.image, step.draws.dropout_for(pass)?)?;
        let loss = cross_entropy(&logits, &classes)?;
        let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !value.is_finite() {
            return Err(crate::TrainError::Other(format!(
                "the discriminator's loss is {value}"
            )));
        }
        let mut grads = loss.backward()?;
        adversary.adam.average_gradients(&mut grads, step.group)?;
        adversary.adam.step(&grads, cfg.discriminator_lr)?;
        Ok(vec![("discriminator", value)])
    }
}
