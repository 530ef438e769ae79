//! Training methods as plug-ins. A method is one value implementing
//! [`TrainingMethod`]: the networks it trains (and how each is updated and
//! exported), which patches its batch needs, how its networks see a batch,
//! its objective over their outputs and an optional step after the
//! optimiser. The training loop (`crate::trainer`) knows nothing else
//! about a method, so a new one is a new file here and one line in
//! [`plugin`] (and its name in `dtml_infer::Method`, which a run directory
//! records).

mod bcp;
mod cps;
mod dtc;
mod dtml;
mod entropy_min;
mod mc_net;
mod mean_teacher;
mod sassnet;
mod supervised;
mod ua_mt;

use crate::config::{LrSchedule, TrainConfig};
use crate::error::Result;
use crate::method::Method;
use candle_core::Tensor;
use dtml_infer::run::StudentRole;
use dtml_model::{Dropout, Init, Upsampling, VNet, VNetOutput};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;

/// The registry: the plug-in behind each method name.
pub fn plugin(method: Method) -> &'static dyn TrainingMethod {
    match method {
        Method::Dtml => &dtml::Dtml { released: false },
        Method::DtmlReleased => &dtml::Dtml { released: true },
        Method::Dtc => &dtc::Dtc,
        Method::Supervised => &supervised::Supervised,
        Method::MeanTeacher => &mean_teacher::MeanTeacher,
        Method::UaMt => &ua_mt::UaMt,
        Method::Cps => &cps::Cps,
        Method::McNet => &mc_net::McNet { plus: false },
        Method::McNetPlus => &mc_net::McNet { plus: true },
        Method::Sassnet => &sassnet::Sassnet,
        Method::Bcp => &bcp::Bcp,
        Method::EntropyMin => &entropy_min::EntropyMin,
    }
}

/// The configuration as its method reads it: the plug-in, the values a
/// method fills where the configuration leaves them unset, and the checks
/// that depend on the method.
impl TrainConfig {
    /// The plug-in of the configured method.
    pub fn plugin(&self) -> &'static dyn TrainingMethod {
        plugin(self.method)
    }

    /// (labelled, unlabelled) patches per batch: the supervised baseline
    /// takes both counts of labelled patches.
    pub fn batch_shape(&self) -> (usize, usize) {
        if self.plugin().uses_unlabelled() {
            (self.labelled_batch, self.unlabelled_batch)
        } else {
            (self.labelled_batch + self.unlabelled_batch, 0)
        }
    }

    /// Refuses settings that cannot train.
    pub fn validate(&self) -> Result<()> {
        self.check_values()?;
        self.plugin().check(self)?;
        if self.plugin().uses_unlabelled() && self.unlabelled_batch == 0 {
            return Err(crate::TrainError::Config(format!(
                "method {} needs unlabelled_batch > 0",
                self.method.name()
            )));
        }
        Ok(())
    }

    /// Channel-dropout probability: the configured one, else the method's.
    pub fn dropout(&self) -> f64 {
        self.dropout
            .unwrap_or_else(|| self.plugin().default_dropout())
    }

    /// LR schedule: the configured one, else the method's.
    pub fn lr_schedule(&self) -> LrSchedule {
        self.lr_schedule
            .unwrap_or_else(|| self.plugin().default_lr_schedule())
    }

    /// Final consistency weight `w`: the configured one, else the method's.
    pub fn consistency(&self) -> f64 {
        self.consistency
            .unwrap_or_else(|| self.plugin().default_consistency())
    }

    /// Consistency weight `lambda(t)` of 0-based iteration `t`.
    pub fn lambda_at(&self, t: usize) -> f64 {
        let ramp = (self.rampup_fraction * self.iterations as f64).round() as usize;
        dtml_loss::rampup_weight(t, ramp, self.consistency())
    }
}

/// One network of a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkSpec {
    /// How inference reads its output, and so the file it is exported to
    /// (`None`: not exported, it only serves training).
    pub exported_as: Option<StudentRole>,
    /// Trained by SGD on the objective; otherwise only
    /// [`TrainingMethod::after_update`] changes it (an EMA teacher, say).
    pub trained: bool,
    /// How its convolution weights start.
    pub init: Init,
}

impl NetworkSpec {
    /// A network trained by SGD and exported in `role`.
    pub const fn student(role: StudentRole) -> NetworkSpec {
        NetworkSpec {
            exported_as: Some(role),
            trained: true,
            init: Init::PyTorch,
        }
    }

    /// A network only [`TrainingMethod::after_update`] changes (an EMA
    /// teacher), not exported.
    pub const fn follower() -> NetworkSpec {
        NetworkSpec {
            exported_as: None,
            trained: false,
            init: Init::PyTorch,
        }
    }
}

/// What a method's forward passes give its objective.
pub struct Forward {
    /// The networks' outputs, in the method's order.
    pub outputs: Vec<VNetOutput>,
    /// Tensors the passes made that the objective needs (BCP's pseudo
    /// labels and copy-paste mask), in the method's order.
    pub targets: Vec<Tensor>,
}

impl From<Vec<VNetOutput>> for Forward {
    fn from(outputs: Vec<VNetOutput>) -> Forward {
        Forward {
            outputs,
            targets: Vec::new(),
        }
    }
}

/// The networks of a method that trains one V-Net and exports it.
const ONE_STUDENT: [NetworkSpec; 1] = [NetworkSpec::student(StudentRole::Region)];

/// The device-side targets of a batch, with what else an objective may
/// read.
pub struct Targets<'a> {
    /// [`Forward::targets`].
    pub forwarded: &'a [Tensor],
    /// The batch's input patches `(N, 1, Z, Y, X)`, labelled ones first.
    pub image: &'a Tensor,
    /// The method's own state ([`TrainingMethod::state`]), if it has one.
    pub state: Option<&'a dyn MethodState>,
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

/// The random draws of one step: channel-dropout masks and input noise.
pub enum StepDraws<'a> {
    /// The run's streams of this iteration.
    Seeded {
        dropout: Box<ChaCha8Rng>,
        noise: Box<ChaCha8Rng>,
        boxes: Box<ChaCha8Rng>,
    },
    /// Draws a PyTorch run made (how the lockstep test feeds them), and
    /// how many of its noise tensors and boxes the step has used.
    Given {
        draws: &'a GivenDraws,
        used_noise: usize,
        used_boxes: usize,
    },
}

/// Draws fed to a step in place of the seeded streams.
pub struct GivenDraws {
    /// Channel-dropout keep-masks per forward pass, in the method's order
    /// (one pass per network for most methods): `(N, C)` tensors for the
    /// bottleneck, the last stage and each extra decoder's last stage, `N`
    /// the patches the pass sees.
    pub masks: Vec<Vec<Tensor>>,
    /// The step's input noise, one tensor per draw in the method's order,
    /// each shaped as the patches it is added to.
    pub noise: Vec<Tensor>,
    /// The step's box origins (BCP's copy-paste box), (z, y, x), in the
    /// method's order.
    pub boxes: Vec<[usize; 3]>,
}

impl StepDraws<'_> {
    /// The seeded draws of iteration `t` of a run seeded `seed`.
    pub fn seeded(seed: u64, t: usize) -> StepDraws<'static> {
        use crate::streams::{Stream, rng_for};
        StepDraws::Seeded {
            dropout: Box::new(rng_for(seed, Stream::Dropout, t as u64)),
            noise: Box::new(rng_for(seed, Stream::Noise, t as u64)),
            boxes: Box::new(rng_for(seed, Stream::Boxes, t as u64)),
        }
    }

    /// Given draws, used from the first.
    pub fn given(draws: &GivenDraws) -> StepDraws<'_> {
        StepDraws::Given {
            draws,
            used_noise: 0,
            used_boxes: 0,
        }
    }

    /// The dropout of the step's forward pass number `pass` (from 0, in
    /// the method's order; seeded passes draw in the order they run).
    pub fn dropout_for(&mut self, pass: usize) -> Result<Dropout<'_>> {
        match self {
            StepDraws::Seeded { dropout, .. } => Ok(Dropout::Seeded(dropout.as_mut())),
            StepDraws::Given { draws, .. } => {
                let masks = draws.masks.get(pass).ok_or_else(|| {
                    crate::TrainError::Other(format!("no given dropout masks for pass {pass}"))
                })?;
                Ok(Dropout::Masks(masks))
            }
        }
    }

    /// The origin (z, y, x) of a box, each coordinate uniform in
    /// `0..limits[axis]` (every limit positive).
    pub fn box_origin(&mut self, limits: [usize; 3]) -> Result<[usize; 3]> {
        if limits.contains(&0) {
            return Err(crate::TrainError::Other(format!(
                "no room for a box: origin limits {limits:?}"
            )));
        }
        match self {
            StepDraws::Seeded { boxes, .. } => {
                use rand::RngExt;
                Ok(limits.map(|l| boxes.random_range(0..l)))
            }
            StepDraws::Given {
                draws, used_boxes, ..
            } => {
                let origin = *draws.boxes.get(*used_boxes).ok_or_else(|| {
                    crate::TrainError::Other(format!(
                        "the step draws {} boxes and {} were given",
                        *used_boxes + 1,
                        draws.boxes.len()
                    ))
                })?;
                *used_boxes += 1;
                if origin.iter().zip(limits).any(|(o, l)| *o >= l) {
                    return Err(crate::TrainError::Other(format!(
                        "given box origin {origin:?} outside 0..{limits:?}"
                    )));
                }
                Ok(origin)
            }
        }
    }

    /// Gaussian noise of standard deviation `std` clamped to [-bound,
    /// bound] (`torch.clamp(torch.randn_like(x) * std, -bound, bound)`),
    /// shaped, typed and placed as `like`.
    pub fn noise_like(&mut self, like: &Tensor, std: f64, bound: f64) -> Result<Tensor> {
        match self {
            StepDraws::Seeded { noise, .. } => {
                use rand_distr::{Distribution, StandardNormal};
                let values: Vec<f64> = (0..like.elem_count())
                    .map(|_| {
                        let v: f64 = StandardNormal.sample(noise.as_mut());
                        (v * std).clamp(-bound, bound)
                    })
                    .collect();
                Ok(
                    Tensor::from_vec(values, like.shape(), like.device())?
                        .to_dtype(like.dtype())?,
                )
            }
            StepDraws::Given {
                draws, used_noise, ..
            } => {
                let noise = draws.noise.get(*used_noise).ok_or_else(|| {
                    crate::TrainError::Other(format!(
                        "the step draws input noise {} times and {} were given",
                        *used_noise + 1,
                        draws.noise.len()
                    ))
                })?;
                *used_noise += 1;
                if noise.dims() != like.dims() {
                    return Err(crate::TrainError::Other(format!(
                        "given input noise of shape {:?} for patches of shape {:?}",
                        noise.dims(),
                        like.dims()
                    )));
                }
                Ok(noise.to_dtype(like.dtype())?)
            }
        }
    }
}

/// What a method trains besides its V-Nets (SASSNet's discriminator and
/// its optimiser): made once per run by [`TrainingMethod::state`], read by
/// its objective, changed by [`TrainingMethod::update_state`] after each
/// step, and saved in every checkpoint, so a resume continues it exactly.
pub trait MethodState: Send {
    /// Everything a checkpoint keeps, by name, on the CPU.
    fn save(&self) -> Result<HashMap<String, Tensor>>;
    /// Restores what [`MethodState::save`] wrote.
    fn restore(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()>;
    /// For the method's own code to reach its concrete type.
    fn as_any(&self) -> &dyn std::any::Any;
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
}

/// What [`TrainingMethod::update_state`] works with.
pub struct StateUpdate<'a, 'd> {
    /// The step's batch (labelled patches first) and how many are labelled.
    pub image: &'a Tensor,
    pub labelled: usize,
    /// The step's random draws, after the forward passes took theirs.
    pub draws: &'a mut StepDraws<'d>,
    /// The ranks whose gradients a data-parallel step averages.
    pub group: &'a dyn crate::collective::Collective,
}

/// The method's state, downcast, or an error naming the method.
pub(crate) fn state_of<T: 'static>(state: Option<&dyn MethodState>, method: Method) -> Result<&T> {
    state
        .and_then(|s| s.as_any().downcast_ref::<T>())
        .ok_or_else(|| {
            crate::TrainError::Other(format!("method {} runs without its state", method.name()))
        })
}

/// A training method.
pub trait TrainingMethod: Sync {
    /// Its name, as run directories record it.
    fn method(&self) -> Method;

    /// Its networks, in checkpoint order; all share one architecture
    /// (`TrainConfig::width`, `dropout`).
    fn networks(&self) -> &'static [NetworkSpec];

    /// Decoders its networks have beside the V-Net's own (MC-Net's).
    fn extra_decoders(&self) -> &'static [Upsampling] {
        &[]
    }

    /// Whether unlabelled patches enter the batch (otherwise the batch
    /// holds `labelled_batch + unlabelled_batch` labelled patches).
    fn uses_unlabelled(&self) -> bool {
        true
    }

    /// The final consistency weight `w` when the configuration leaves it
    /// unset: the method's released value.
    fn default_consistency(&self) -> f64 {
        1.0
    }

    /// The LR schedule when the configuration leaves it unset: the
    /// method's released code's (steps for the DTML / DTC / UA-MT code).
    fn default_lr_schedule(&self) -> LrSchedule {
        LrSchedule::Step
    }

    /// The channel-dropout probability when the configuration leaves it
    /// unset: the released V-Net's 0.5, unless measurement on both the
    /// LA-like and the hard built-in data found better (BENCHMARKS.md,
    /// "Defaults on LA-like data").
    fn default_dropout(&self) -> f64 {
        dtml_model::RELEASED_DROPOUT
    }

    /// Whether the labelled patches need normalised SDM targets.
    fn needs_sdm_target(&self) -> bool {
        false
    }

    /// The networks' outputs on the batch `image` of 0-based iteration
    /// `iteration`, whose first `labelled` patches are the labelled ones.
    /// By default every network in training mode on the whole batch, in
    /// order, with its own dropout.
    fn forward(
        &self,
        _cfg: &TrainConfig,
        nets: &[&VNet],
        image: &Tensor,
        _labelled: usize,
        _iteration: usize,
        draws: &mut StepDraws,
    ) -> Result<Forward> {
        nets.iter()
            .enumerate()
            .map(|(i, net)| Ok(net.forward(image, true, draws.dropout_for(i)?)?))
            .collect::<Result<Vec<_>>>()
            .map(Forward::from)
    }

    /// Checks the configuration against what the method needs (BCP's even
    /// and equal halves of the batch, say). Nothing by default.
    fn check(&self, _cfg: &TrainConfig) -> Result<()> {
        Ok(())
    }

    /// The iteration at which the method's second stage starts, if it has
    /// one (BCP's self-training after its supervised pre-training): SGD's
    /// momentum is cleared there and the LR schedule starts over, running
    /// over the rest of the run; before it the rate is constant.
    fn restart_at(&self, _cfg: &TrainConfig) -> Option<usize> {
        None
    }

    /// The loss of 0-based iteration `iteration` from
    /// [`TrainingMethod::forward`]'s outputs; `lambda` is its consistency
    /// weight.
    fn objective(
        &self,
        cfg: &TrainConfig,
        outputs: &[VNetOutput],
        targets: &Targets,
        lambda: f64,
        iteration: usize,
    ) -> Result<Objective>;

    /// Runs after the optimiser's update of 0-based iteration `iteration`
    /// (where an EMA teacher follows its student). Nothing by default.
    fn after_update(&self, _cfg: &TrainConfig, _nets: &[&VNet], _iteration: usize) -> Result<()> {
        Ok(())
    }

    /// The method's state beyond its networks for a run (`None` for most
    /// methods); `seed` draws its initial weights.
    fn state(
        &self,
        _cfg: &TrainConfig,
        _seed: u64,
        _dtype: candle_core::DType,
        _device: &candle_core::Device,
    ) -> Result<Option<Box<dyn MethodState>>> {
        Ok(None)
    }

    /// Training memory of the method's state beyond its V-Nets, for a
    /// step over `voxel_samples` patch voxels (voxels times patches), for
    /// the step's memory check.
    fn state_memory_bytes(&self, _cfg: &TrainConfig, _voxel_samples: f64) -> f64 {
        0.0
    }

    /// Updates the state after [`TrainingMethod::after_update`]; returns
    /// loss parts to log (SASSNet's discriminator loss).
    fn update_state(
        &self,
        _cfg: &TrainConfig,
        _nets: &[&VNet],
        _iteration: usize,
        _state: &mut dyn MethodState,
        _step: StateUpdate,
    ) -> Result<Vec<(&'static str, f64)>> {
        Ok(Vec::new())
    }
}

/// The first `n` patches of a batch tensor (the labelled ones).
fn head(t: &Tensor, n: usize) -> Result<Tensor> {
    Ok(t.narrow(0, 0, n)?)
}

/// The SDM targets a method needs, or an error naming it.
fn sdm_target<'a>(t: &Targets<'a>, method: Method) -> Result<&'a Tensor> {
    t.sdm.ok_or_else(|| {
        crate::TrainError::Other(format!(
            "method {} needs SDM targets and the batch has none",
            method.name()
        ))
    })
}

/// `0.5 (BCE + Dice)` of segmentation logits on the labelled patches:
/// the region loss of DTML's student A and of the supervised baseline.
fn region_loss(cfg: &TrainConfig, seg: &Tensor, targets: &Targets) -> Result<Tensor> {
    let seg_l = head(seg, targets.labelled)?;
    let p_l = candle_nn::ops::sigmoid(&seg_l)?;
    let bce = dtml_loss::bce_with_logits(&seg_l, targets.label)?;
    let dice = dtml_loss::dice_loss(&p_l, targets.label, cfg.dice)?;
    Ok(((bce + dice)? * 0.5)?)
}

/// `0.5 (CE + Dice)` on the labelled patches with SSL4MIS's `DiceLoss(2)`
/// (the supervised loss of its 3D baselines, cps among them):
/// the mean of the background's and the foreground's squared-denominator
/// Dice over the batch.
fn ssl4mis_supervised_loss(logits: &Tensor, targets: &Targets) -> Result<Tensor> {
    let z = head(logits, targets.labelled)?;
    let p = candle_nn::ops::sigmoid(&z)?;
    let y = targets.label;
    let fg = dtml_loss::dice_loss(&p, y, dtml_loss::DiceVariant::Squared)?;
    let bg = dtml_loss::dice_loss(
        &p.affine(-1.0, 1.0)?,
        &y.affine(-1.0, 1.0)?,
        dtml_loss::DiceVariant::Squared,
    )?;
    let dice = ((fg + bg)? * 0.5)?;
    Ok(((dtml_loss::bce_with_logits(&z, y)? + dice)? * 0.5)?)
}

#[cfg(test)]
mod tests;
