//! The V-Net both DTML students use (UA-MT / DTC / DTML family): five
//! encoder stages of 1, 2, 3, 3, 3 convolutions, 2x2x2 stride-2 down and
//! transposed-up convolutions, additive skips, channel dropout after the
//! bottleneck and the last decoder stage, a tanh SDM head and a
//! segmentation head.
//!
//! Parameter names are those of the PyTorch state dict of this family
//! (`block_one.conv.0.weight`, ..., `out_conv.weight`, `out_conv2.weight`),
//! so the authors' checkpoints load directly. Tensors here are
//! `(N, C, Z, Y, X)` and kernels `(Cout, Cin, kz, ky, kx)`; the reference
//! pipeline feeds `(N, C, x, y, z)`, so its kernels are `(.., kx, ky, kz)`.
//! Weight files are read and written in the reference layout (the three
//! spatial kernel axes reversed on the way in and out), so a file written
//! here loads in PyTorch with `load_state_dict` and vice versa.

use crate::error::{ModelError, Result};
use crate::init::{Init, uniform};
use crate::ops::{self, Upsampling};
use candle_core::{DType, Device, Module, Tensor, Var};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

mod build;
mod trunk;
mod weights;
pub use weights::read_weight_file;

/// Shape of a V-Net.
/// Every spatial size a V-Net takes is a multiple of this: its encoder
/// halves the resolution four times.
pub const SIZE_MULTIPLE: usize = 16;

/// Checks spatial sizes (patches, windows, inputs) against
/// [`SIZE_MULTIPLE`], with the reason when they do not fit.
pub fn check_spatial_size(sizes: &[usize]) -> std::result::Result<(), String> {
    if sizes
        .iter()
        .any(|&d| d == 0 || !d.is_multiple_of(SIZE_MULTIPLE))
    {
        return Err(format!(
            "each spatial size of {sizes:?} must be a positive multiple of {SIZE_MULTIPLE} (the V-Net halves it four times)"
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VNetConfig {
    pub in_channels: usize,
    /// Base width (16 in the paper); stage widths are 1, 2, 4, 8, 16 times it.
    pub width: usize,
    /// Output channels of each head (1: sigmoid segmentation, one SDM).
    pub classes: usize,
    /// Channel dropout probability in training.
    pub dropout: f64,
    pub bn_eps: f64,
    pub bn_momentum: f64,
    /// Further decoders on the same encoder, each up-sampling its own way
    /// (MC-Net's second and third) and ending in its own segmentation
    /// head ([`VNetOutput::aux_seg`]); inference reads only the first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_decoders: Vec<Upsampling>,
}

/// Channel-dropout probability of the released code family's V-Net, the
/// architecture's value; `dtml` trains without it by default (`dtml-train`'s
/// `TrainConfig::dropout` says why).
pub const RELEASED_DROPOUT: f64 = 0.5;

impl Default for VNetConfig {
    fn default() -> Self {
        VNetConfig {
            in_channels: 1,
            width: 16,
            classes: 1,
            dropout: RELEASED_DROPOUT,
            bn_eps: 1e-5,
            bn_momentum: 0.1,
            extra_decoders: Vec::new(),
        }
    }
}

/// What to do with a network's channel-dropout layers.
pub enum Dropout<'a> {
    /// No dropout (evaluation, or training with dropout disabled).
    Off,
    /// Masks drawn from a seeded stream.
    Seeded(&'a mut ChaCha8Rng),
    /// Given keep-masks of shape (N, C), values 0 or 1 / (1 - p): for the
    /// bottleneck, the last decoder stage, then each extra decoder's last
    /// stage.
    Masks(&'a [Tensor]),
}

impl Dropout<'_> {
    /// The multipliers `(N, C)` of channel dropout with probability `p` at
    /// dropout layer `which` of a network whose activation there is `h`
    /// `(N, C, ...)`: given masks by index, seeded ones drawn as PyTorch's
    /// `Dropout3d` keeps a channel (kept values scaled by `1 / (1 - p)`);
    /// `None` without dropout.
    fn mask(&mut self, h: &Tensor, which: usize, p: f64) -> Result<Option<Tensor>> {
        self.mask_for((h.dim(0)?, h.dim(1)?), h, which, p)
    }

    /// [`Self::mask`] for an activation of `n` samples and `c` channels,
    /// of `like`'s dtype and device.
    fn mask_for(
        &mut self,
        (n, c): (usize, usize),
        like: &Tensor,
        which: usize,
        p: f64,
    ) -> Result<Option<Tensor>> {
        let mask = match self {
            Dropout::Off => return Ok(None),
            Dropout::Masks(masks) => masks
                .get(which)
                .ok_or_else(|| ModelError::Input {
                    shape: vec![masks.len()],
                    reason: format!("no dropout mask for layer {which} among those given"),
                })?
                .detach(),
            Dropout::Seeded(rng) => {
                let keep = 1.0 / (1.0 - p);
                let v: Vec<f64> = (0..n * c)
                    .map(|_| if rng.random::<f64>() < p { 0.0 } else { keep })
                    .collect();
                Tensor::from_vec(v, (n, c), &Device::Cpu)?
            }
        };
        if mask.dims() != [n, c] {
            return Err(ModelError::Input {
                shape: mask.dims().to_vec(),
                reason: format!("dropout mask must be ({n}, {c})"),
            });
        }
        Ok(Some(mask.to_dtype(like.dtype())?.to_device(like.device())?))
    }

    /// Channel dropout of `h` at dropout layer `which` ([`Self::mask`]).
    pub(crate) fn apply(&mut self, h: &Tensor, which: usize, p: f64) -> Result<Tensor> {
        Ok(match self.mask(h, which, p)? {
            Some(mask) => ops::channel_dropout_with_mask(h, &mask)?,
            None => h.clone(),
        })
    }
}

/// The two heads' outputs, `(N, classes, Z, Y, X)`.
#[derive(Debug, Clone)]
pub struct VNetOutput {
    /// The SDM head after its tanh, in [-1, 1].
    pub sdm: Tensor,
    /// The segmentation head's logits.
    pub seg_logits: Tensor,
    /// Each extra decoder's segmentation logits (none for a plain V-Net;
    /// not computed by [`VNet::predict`]).
    pub aux_seg: Vec<Tensor>,
}

impl VNetOutput {
    /// The same outputs cut from the graph (a teacher's prediction).
    pub fn detach(&self) -> VNetOutput {
        VNetOutput {
            sdm: self.sdm.detach(),
            seg_logits: self.seg_logits.detach(),
            aux_seg: self.aux_seg.iter().map(Tensor::detach).collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Conv3,
    Down,
    Up,
    Conv1,
}

struct Conv {
    kind: Kind,
    weight: Var,
    bias: Var,
}

/// How a forward pass runs: batch or running statistics, and whether
/// autograd records it.
#[derive(Clone, Copy)]
struct Pass {
    train: bool,
    track: bool,
}

impl Pass {
    /// A parameter as this pass sees it: detached when nothing will call
    /// `backward`, so no graph keeps activations alive.
    fn param(self, v: &Var) -> Tensor {
        if self.track {
            v.as_tensor().clone()
        } else {
            v.as_tensor().detach()
        }
    }
}

/// Conv + BatchNorm + ReLU; the BatchNorm tensors are the state dict's.
struct Layer {
    conv: Conv,
    gamma: Var,
    beta: Var,
    running_mean: Var,
    running_var: Var,
    eps: f64,
    momentum: f64,
}

impl Layer {
    fn forward(&self, x: &Tensor, pass: Pass) -> candle_core::Result<Tensor> {
        let p = |v: &Var| pass.param(v);
        if !pass.train {
            // Evaluation: the conv bias and BatchNorm with running statistics
            // fold into one per-channel scale and shift.
            let c = self.conv.bias.dim(0)?;
            let scale = (p(&self.gamma) / (p(&self.running_var) + self.eps)?.sqrt()?)?;
            let shift =
                ((p(&self.conv.bias) - p(&self.running_mean))? * &scale)?.add(&p(&self.beta))?;
            if !pass.track {
                // Nothing will differentiate this pass: one fused op.
                return ops::conv_affine_relu(
                    self.layer_conv(),
                    x,
                    &p(&self.conv.weight),
                    &scale,
                    &shift,
                );
            }
            return ops::layer_conv(self.layer_conv(), x, &p(&self.conv.weight))?
                .broadcast_mul(&scale.reshape((1, c, 1, 1, 1))?)?
                .broadcast_add(&shift.reshape((1, c, 1, 1, 1))?)?
                .relu();
        }
        // Training: conv bias, batch-statistics BatchNorm and ReLU as one op
        // (a dozen fewer whole-tensor passes than composing them), then the
        // running statistics as PyTorch updates them (unbiased variance).
        let (y, mean, var) = ops::conv_bn_relu_train(
            self.layer_conv(),
            x,
            &p(&self.conv.weight),
            &p(&self.conv.bias),
            &p(&self.gamma),
            &p(&self.beta),
            self.eps,
        )?;
        self.update_running(&mean, &var)?;
        Ok(y)
    }

    /// The layer's convolution as the fused ops name it.
    fn layer_conv(&self) -> ops::LayerConv {
        match self.conv.kind {
            Kind::Conv3 => ops::LayerConv::Cubic { padding: 1 },
            Kind::Down => ops::LayerConv::Down,
            Kind::Up => ops::LayerConv::Up,
            Kind::Conv1 => unreachable!("no V-Net layer has a 1x1x1 convolution"),
        }
    }

    /// Moves the running statistics towards a batch's mean and unbiased
    /// variance, as PyTorch does.
    fn update_running(&self, mean: &Tensor, var: &Tensor) -> candle_core::Result<()> {
        let m = self.momentum;
        let update = |running: &Var, batch: &Tensor| -> candle_core::Result<()> {
            running.set(&((running.as_tensor().detach() * (1.0 - m))? + (batch.detach() * m)?)?)
        };
        update(&self.running_mean, mean)?;
        update(&self.running_var, var)
    }

    /// [`Self::update_running`] from a forward pass's statistics and its
    /// output `z`.
    fn update_running_stats(&self, saved: &ops::Saved, z: &Tensor) -> candle_core::Result<()> {
        let (mean, var) = saved.running_stat_tensors(self.conv.bias.as_tensor(), z)?;
        self.update_running(&mean, &var)
    }
}

struct Block {
    layers: Vec<Layer>,
}

impl Block {
    fn forward(&self, x: &Tensor, pass: Pass) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for l in &self.layers {
            h = l.forward(&h, pass)?;
        }
        Ok(h)
    }
}

/// A decoder beside the V-Net's own on the same encoder features: each
/// up-sampling step interpolates, then convolves (3x3x3) with BatchNorm and
/// ReLU, as MC-Net's `Upsampling_function`; stages as the V-Net's.
struct ExtraDecoder {
    mode: Upsampling,
    ups: Vec<Layer>,
    stages: Vec<Block>,
    out_seg: Conv,
}

/// Names of the nine stages and eight resampling blocks, as in PyTorch.
const STAGES: [&str; 9] = [
    "block_one",
    "block_two",
    "block_three",
    "block_four",
    "block_five",
    "block_six",
    "block_seven",
    "block_eight",
    "block_nine",
];
const DEPTHS: [usize; 9] = [1, 2, 3, 3, 3, 3, 3, 2, 1];
const WIDTHS: [usize; 9] = [1, 2, 4, 8, 16, 8, 4, 2, 1];
const DOWNS: [&str; 4] = [
    "block_one_dw",
    "block_two_dw",
    "block_three_dw",
    "block_four_dw",
];
const UPS: [&str; 4] = [
    "block_five_up",
    "block_six_up",
    "block_seven_up",
    "block_eight_up",
];

/// A V-Net whose parameters live in named candle `Var`s.
pub struct VNet {
    config: VNetConfig,
    device: Device,
    dtype: DType,
    stages: Vec<Block>,
    downs: Vec<Layer>,
    ups: Vec<Layer>,
    out_sdm: Conv,
    out_seg: Conv,
    extra: Vec<ExtraDecoder>,
    /// Every tensor of the state dict except `num_batches_tracked`, by name.
    vars: BTreeMap<String, Var>,
    /// Training forward passes so far (PyTorch's `num_batches_tracked`).
    batches_tracked: AtomicU64,
}

impl VNetConfig {
    /// Checks every field: what `train` accepts and what a `run.json` or
    /// checkpoint may say (a negative BatchNorm epsilon would give a
    /// constant map, not an error).
    pub fn validate(&self) -> Result<()> {
        let c = self;
        if c.in_channels == 0 || c.width == 0 || c.classes == 0 {
            return Err(ModelError::Config(format!(
                "channels, width and classes must be positive: {c:?}"
            )));
        }
        if !(0.0..1.0).contains(&c.dropout) {
            return Err(ModelError::Config(format!(
                "dropout {} must be in [0, 1)",
                c.dropout
            )));
        }
        if !(c.bn_eps.is_finite() && c.bn_eps > 0.0) {
            return Err(ModelError::Config(format!(
                "bn_eps {} must be finite and positive",
                c.bn_eps
            )));
        }
        if !(0.0..=1.0).contains(&c.bn_momentum) {
            return Err(ModelError::Config(format!(
                "bn_momentum {} must be in [0, 1]",
                c.bn_momentum
            )));
        }
        Ok(())
    }
}

impl VNet {
    pub fn config(&self) -> &VNetConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Element type of the weights and activations.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Forward pass of `x` `(N, C, Z, Y, X)`; `train` selects batch
    /// statistics (and updates the running ones).
    pub fn forward(&self, x: &Tensor, train: bool, dropout: Dropout) -> Result<VNetOutput> {
        self.run(x, Pass { train, track: true }, dropout)
    }

    /// Evaluation-mode forward pass that autograd does not record: each
    /// activation is freed once the next layer has read it, so inference
    /// and validation need a fraction of `forward`'s memory.
    pub fn predict(&self, x: &Tensor) -> Result<VNetOutput> {
        self.run(
            x,
            Pass {
                train: false,
                track: false,
            },
            Dropout::Off,
        )
    }

    fn run(&self, x: &Tensor, pass: Pass, dropout: Dropout) -> Result<VNetOutput> {
        let train = pass.train;
        let dims = x.dims().to_vec();
        if dims.len() != 5 || dims[1] != self.config.in_channels || dims[0] == 0 {
            return Err(ModelError::Input {
                shape: dims,
                reason: format!(
                    "expected (N, {}, Z, Y, X) with at least one sample",
                    self.config.in_channels
                ),
            });
        }
        if let Err(reason) = check_spatial_size(&dims[2..]) {
            return Err(ModelError::Input {
                shape: dims,
                reason,
            });
        }
        if train {
            self.batches_tracked.fetch_add(1, Ordering::Relaxed);
        }
        let mut dropout = dropout;
        if train && pass.track && self.extra.is_empty() && self.device.is_cpu() {
            // The trunk as one graph node with its own backward (`trunk`).
            let bottom = (dims[0], self.stages[4].layers[0].conv.bias.dim(0)?);
            let mask = dropout.mask_for(bottom, x, 0, self.config.dropout)?;
            let h = self.trunk_train(x, mask)?;
            return self.outputs(&h, &mut dropout, pass);
        }
        self.run_layers(x, pass, dropout)
    }

    /// [`Self::run`] as a graph of layers (every device, every decoder).
    fn run_layers(&self, x: &Tensor, pass: Pass, mut dropout: Dropout) -> Result<VNetOutput> {
        let mut skips = Vec::with_capacity(4);
        let mut h = x.clone();
        for s in 0..4 {
            h = self.stages[s].forward(&h, pass)?;
            skips.push(h.clone());
            h = self.downs[s].forward(&h, pass)?;
        }
        h = self.stages[4].forward(&h, pass)?;
        let bottom = self.drop(&h, &mut dropout, 0)?;
        h = bottom.clone();
        for u in 0..4 {
            h = (self.ups[u].forward(&h, pass)? + &skips[3 - u])?;
            h = self.stages[5 + u].forward(&h, pass)?;
        }
        // The heads' dropout draws before the extra decoders'.
        let mut out = self.outputs(&h, &mut dropout, pass)?;
        // Inference reads the first decoder only.
        if pass.track {
            for (k, d) in self.extra.iter().enumerate() {
                let mut h = bottom.clone();
                for u in 0..4 {
                    let up = ops::upsample2x(&h, d.mode)?;
                    h = (d.ups[u].forward(&up, pass)? + &skips[3 - u])?;
                    h = d.stages[u].forward(&h, pass)?;
                }
                let [seg] = self.heads(&h, &mut dropout, 2 + k, [&d.out_seg], pass)?;
                out.aux_seg.push(seg);
            }
        }
        Ok(out)
    }

    /// The two heads on the last decoder stage `h` (no extra decoders'
    /// outputs yet).
    fn outputs(&self, h: &Tensor, dropout: &mut Dropout, pass: Pass) -> Result<VNetOutput> {
        let [sdm, seg_logits] = self.heads(h, dropout, 1, [&self.out_sdm, &self.out_seg], pass)?;
        Ok(VNetOutput {
            sdm: sdm.tanh()?,
            seg_logits,
            aux_seg: Vec::new(),
        })
    }

    fn drop(&self, h: &Tensor, dropout: &mut Dropout, which: usize) -> Result<Tensor> {
        dropout.apply(h, which, self.config.dropout)
    }

    /// The 1x1x1 heads `convs` on a decoder's last stage `h` after its
    /// channel dropout (layer `which`): each head's output with its bias.
    /// On the CPU the dropped-out copy of `h` is no graph node
    /// ([`ops::masked_conv1x1`]). Each head is its own convolution, so a
    /// head the objective does not use gets no gradient (PyTorch's SGD then
    /// leaves it alone, weight decay included).
    fn heads<const K: usize>(
        &self,
        h: &Tensor,
        dropout: &mut Dropout,
        which: usize,
        convs: [&Conv; K],
        pass: Pass,
    ) -> Result<[Tensor; K]> {
        let mask = dropout.mask(h, which, self.config.dropout)?;
        let mut outputs = Vec::with_capacity(K);
        for conv in convs {
            let w = pass.param(&conv.weight);
            let y = ops::masked_conv1x1(h, &w, mask.as_ref())?;
            let c = conv.bias.dim(0)?;
            outputs.push(y.broadcast_add(&pass.param(&conv.bias).reshape((1, c, 1, 1, 1))?)?);
        }
        Ok(outputs
            .try_into()
            .expect("one output per head, by construction"))
    }

    /// Parameters an optimizer updates: conv weights and biases, BN affine.
    /// BN running statistics are not among them.
    pub fn trainable_vars(&self) -> Vec<Var> {
        self.vars
            .iter()
            .filter(|(k, _)| !k.contains("running_"))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Moves every trainable weight towards `student`'s, `w = alpha w +
    /// (1 - alpha) w_student`: the mean teacher's exponential moving
    /// average, as PyTorch's `w.mul_(alpha).add_(w_student, alpha=1 -
    /// alpha)`. BatchNorm running statistics are left alone, as the
    /// released mean-teacher code leaves them (the teacher's come from its
    /// own forward passes). `alpha` must be in [0, 1] and the networks of
    /// one architecture.
    pub fn average_towards(&self, student: &VNet, alpha: f64) -> Result<()> {
        if !(0.0..=1.0).contains(&alpha) {
            return Err(ModelError::Config(format!(
                "moving-average factor {alpha} must be in [0, 1]"
            )));
        }
        if self.config != student.config || self.dtype() != student.dtype() {
            return Err(ModelError::Config(
                "a moving average needs two networks of one architecture and dtype".into(),
            ));
        }
        for (name, var) in self.vars.iter().filter(|(k, _)| !k.contains("running_")) {
            let other = student
                .vars
                .get(name)
                .ok_or_else(|| ModelError::Config(format!("the student has no weight {name}")))?;
            let moved = ((var.as_tensor() * alpha)? + (other.as_tensor() * (1.0 - alpha))?)?;
            var.set(&moved)?;
        }
        Ok(())
    }

    /// Names and variables of trainable parameters, sorted by name.
    pub fn named_trainable_vars(&self) -> Vec<(String, Var)> {
        self.vars
            .iter()
            .filter(|(k, _)| !k.contains("running_"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// A state-dict tensor (our layout) by PyTorch name.
    pub fn get(&self, name: &str) -> Option<&Var> {
        self.vars.get(name)
    }

    /// Number of trainable scalars (9,448,866 at width 16, as PyTorch counts).
    pub fn parameter_count(&self) -> usize {
        self.trainable_vars().iter().map(|v| v.elem_count()).sum()
    }

    /// Training forward passes recorded (PyTorch's `num_batches_tracked`).
    pub fn batches_tracked(&self) -> u64 {
        self.batches_tracked.load(Ordering::Relaxed)
    }
}

impl Module for VNet {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        VNet::forward(self, x, false, Dropout::Off)
            .map(|o| o.seg_logits)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }
}
