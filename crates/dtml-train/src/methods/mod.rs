//! Training methods as plug-ins. A method is one value implementing
//! [`TrainingMethod`]: the networks it trains (and how each is updated and
//! exported), which patches its batch needs, how its networks see a batch,
//! its objective over their outputs and an optional step after the
//! optimiser. The training loop (`crate::trainer`) knows nothing else
//! about a method, so a new one is a new file here and one line in
//! [`plugin`] (and its name in `dtml_infer::Method`, which a run directory
//! records).

mod dtc;
mod dtml;
mod supervised;

use crate::config::TrainConfig;
use crate::error::Result;
use crate::method::Method;
use candle_core::Tensor;
use dtml_infer::run::StudentRole;
use dtml_model::{Dropout, VNet, VNetOutput};
use rand_chacha::ChaCha8Rng;

/// The registry: the plug-in behind each method name.
pub fn plugin(method: Method) -> &'static dyn TrainingMethod {
    match method {
        Method::Dtml => &dtml::Dtml { released: false },
        Method::DtmlReleased => &dtml::Dtml { released: true },
        Method::Dtc => &dtc::Dtc,
        Method::Supervised => &supervised::Supervised,
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
}

impl NetworkSpec {
    /// A network trained by SGD and exported in `role`.
    pub const fn student(role: StudentRole) -> NetworkSpec {
        NetworkSpec {
            exported_as: Some(role),
            trained: true,
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

/// Where the channel-dropout masks of a step come from.
pub enum DropoutSource<'a> {
    /// The run's seeded stream of this iteration.
    Seeded(Box<ChaCha8Rng>),
    /// Given keep-masks, one (bottleneck, last stage) pair per network:
    /// how the lockstep test feeds PyTorch's.
    Masks(&'a [(Tensor, Tensor)]),
}

impl DropoutSource<'_> {
    /// The dropout of network `index`'s next forward pass.
    pub fn for_network(&mut self, index: usize) -> Dropout<'_> {
        match self {
            DropoutSource::Seeded(rng) => Dropout::Seeded(rng.as_mut()),
            DropoutSource::Masks(masks) => Dropout::Masks(&masks[index].0, &masks[index].1),
        }
    }
}

/// A training method.
pub trait TrainingMethod: Sync {
    /// Its name, as run directories record it.
    fn method(&self) -> Method;

    /// Its networks, in checkpoint order; all share one architecture
    /// (`TrainConfig::width`, `dropout`).
    fn networks(&self) -> &'static [NetworkSpec];

    /// Whether unlabelled patches enter the batch (otherwise the batch
    /// holds `labelled_batch + unlabelled_batch` labelled patches).
    fn uses_unlabelled(&self) -> bool {
        true
    }

    /// Whether the labelled patches need normalised SDM targets.
    fn needs_sdm_target(&self) -> bool {
        false
    }

    /// The networks' outputs on the batch `image` (labelled patches first).
    /// By default every network in training mode, in order, with its own
    /// dropout draw.
    fn forward(
        &self,
        nets: &[&VNet],
        image: &Tensor,
        dropout: &mut DropoutSource,
    ) -> Result<Vec<VNetOutput>> {
        nets.iter()
            .enumerate()
            .map(|(i, net)| Ok(net.forward(image, true, dropout.for_network(i))?))
            .collect()
    }

    /// The loss of one step from [`TrainingMethod::forward`]'s outputs;
    /// `lambda` is the consistency weight of the iteration.
    fn objective(
        &self,
        cfg: &TrainConfig,
        outputs: &[VNetOutput],
        targets: &Targets,
        lambda: f64,
    ) -> Result<Objective>;

    /// Runs after the optimiser's update of 0-based iteration `iteration`
    /// (where an EMA teacher follows its student). Nothing by default.
    fn after_update(&self, _cfg: &TrainConfig, _nets: &[&VNet], _iteration: usize) -> Result<()> {
        Ok(())
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

#[cfg(test)]
mod tests;
