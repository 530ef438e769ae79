//! A V-Net layer's training step as one CPU op: a convolution (3D 3x3x3,
//! or the 2x2x2 stride-2 down or transposed up convolution), conv bias,
//! batch-statistics BatchNorm and ReLU, `relu(BN_train(conv(x, w) + b))`.
//!
//! Why one op and not two: candle's backward pass gives every gradient of a
//! graph node a zero-filled tensor and adds the incoming gradient into it,
//! so the convolution's output, as a node between the two ops, cost two
//! whole-tensor allocations, a fill and an add on every step, the largest
//! item beyond the kernels at the paper's patch size. Inside one op the
//! gradient of the convolution's output goes straight from the BatchNorm
//! backward to the two convolution gradients. The kernels and the
//! arithmetic are those of [`super::conv3d`], [`super::resample`] and
//! [`super::batchnorm`], so the results are the same to the bit.
//!
//! Memory: the BatchNorm backward needs the convolution's output. Where
//! recomputing it costs little against the layer's backward (the stride-2
//! convolutions, 8 taps per output on the input's channels, and a 3x3x3
//! convolution of one input channel) the backward recomputes it and the
//! forward keeps nothing; otherwise the forward keeps it and the backward
//! takes it out, so it is freed as soon as this layer's gradients exist
//! rather than when the whole backward pass ends (candle keeps every graph
//! node until then), as PyTorch frees a node's saved tensors.

use super::batchnorm::{self, Saved};
use super::conv3d::{Conv3d, Conv3dAffineRelu, Conv3dInputGrad, Conv3dWeightGrad, Epilogue};
use super::cpu::{Kernel2, Kernel3, apply3, forward_op2, forward_op3};
use super::kernel::Real;
use super::resample::{Down, PairWGrad, Up};
use candle_core::{CpuStorage, CustomOp3, Device, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// The convolution of a V-Net layer ([`super::conv_bn_relu_train`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LayerConv {
    /// Cubic kernel, stride 1, zero padding on every side.
    Cubic { padding: usize },
    /// 2x2x2, stride 2 ([`super::down_conv2`]).
    Down,
    /// 2x2x2 transposed, stride 2 ([`super::up_conv2`]).
    Up,
}

/// The convolution alone, on slices (inside the fused ops) and as a
/// forward-only candle op (the backward's recomputation).
impl Kernel2 for LayerConv {
    fn op_name(&self) -> &'static str {
        match self {
            LayerConv::Cubic { .. } => Conv3d { padding: 0 }.op_name(),
            LayerConv::Down => Down.op_name(),
            LayerConv::Up => Up.op_name(),
        }
    }

    fn run<T: Real>(&self, x: &[T], sx: &Shape, w: &[T], sw: &Shape) -> Result<(Vec<T>, Shape)> {
        match *self {
            LayerConv::Cubic { padding } => Conv3d { padding }.run(x, sx, w, sw),
            LayerConv::Down => Down.run(x, sx, w, sw),
            LayerConv::Up => Up.run(x, sx, w, sw),
        }
    }
}

forward_op2!(LayerConv, "dtml-layer-conv");

impl LayerConv {
    fn input_grad(&self, dy: &Tensor, w: &Tensor) -> Result<Tensor> {
        match *self {
            LayerConv::Cubic { padding } => dy.apply_op2_no_bwd(w, &Conv3dInputGrad { padding }),
            LayerConv::Down => dy.apply_op2_no_bwd(w, &Up),
            LayerConv::Up => dy.apply_op2_no_bwd(w, &Down),
        }
    }

    fn weight_grad(&self, x: &Tensor, dy: &Tensor, w: &Tensor) -> Result<Tensor> {
        match *self {
            LayerConv::Cubic { padding } => {
                let k = w.dim(2)?;
                x.apply_op2_no_bwd(dy, &Conv3dWeightGrad { padding, k })
            }
            LayerConv::Down => dy.apply_op2_no_bwd(x, &PairWGrad),
            LayerConv::Up => x.apply_op2_no_bwd(dy, &PairWGrad),
        }
    }

    /// Whether the backward recomputes the output of this convolution of
    /// `cin` input channels instead of the forward keeping it (module doc).
    fn recomputes(&self, cin: usize) -> bool {
        match self {
            LayerConv::Cubic { .. } => cin == 1,
            LayerConv::Down | LayerConv::Up => true,
        }
    }
}

/// What the forward pass keeps for the backward: the BatchNorm statistics
/// and, unless the backward recomputes it, the convolution's output, which
/// the backward takes out (module doc).
type State = Arc<Mutex<Option<(Saved, Option<Tensor>)>>>;

/// `(x, w, p = [bias; gamma; beta])` to `relu(BN_train(conv(x, w) + bias))`.
pub(crate) struct ConvBnReluTrain {
    pub conv: LayerConv,
    pub eps: f64,
    state: State,
}

const OP: &str = "conv + batch norm";

/// The batch statistics a forward pass left in `state`.
fn saved_in(state: &State) -> Result<Saved> {
    state
        .lock()
        .expect("conv batch norm state")
        .as_ref()
        .map(|(s, _)| s.clone())
        .ok_or_else(|| candle_core::Error::Msg(format!("{OP}: statistics missing")))
}

impl ConvBnReluTrain {
    pub(crate) fn new(conv: LayerConv, eps: f64) -> ConvBnReluTrain {
        ConvBnReluTrain {
            conv,
            eps,
            state: Arc::new(Mutex::new(None)),
        }
    }

    /// Applies the op to contiguous `x`, `w`, `p`: the output and the
    /// batch statistics.
    pub fn apply(
        x: &Tensor,
        w: &Tensor,
        p: &Tensor,
        conv: LayerConv,
        eps: f64,
    ) -> Result<(Tensor, Saved)> {
        let op = ConvBnReluTrain::new(conv, eps);
        let state = op.state.clone();
        let z = x.apply_op3(w, p, op)?;
        Ok((z, saved_in(&state)?))
    }

    /// The layer's output for contiguous `x`, `w`, `p` as no graph node:
    /// `self` keeps what [`Self::grads`] needs (a caller running its own
    /// backward pass).
    pub(crate) fn forward_detached(&self, x: &Tensor, w: &Tensor, p: &Tensor) -> Result<Tensor> {
        x.apply_op3_no_bwd(w, p, self)
    }

    /// [`Self::forward_detached`] as the storage a graph node returns from
    /// its `cpu_fwd` (no copy of the output); CPU tensors only.
    pub(crate) fn forward_storage(
        &self,
        x: &Tensor,
        w: &Tensor,
        p: &Tensor,
    ) -> Result<(CpuStorage, Shape)> {
        let (sx, lx) = x.storage_and_layout();
        let (sw, lw) = w.storage_and_layout();
        let (sp, lp) = p.storage_and_layout();
        match (&*sx, &*sw, &*sp) {
            (Storage::Cpu(cx), Storage::Cpu(cw), Storage::Cpu(cp)) => {
                apply3(self, (cx, lx), (cw, lw), (cp, lp))
            }
            _ => candle_core::bail!("{OP}: tensors must be on the CPU"),
        }
    }

    /// The batch statistics of the forward pass.
    pub(crate) fn saved(&self) -> Result<Saved> {
        saved_in(&self.state)
    }

    /// Gradients of the inputs `x`, `w`, `p` (those `want` names) for the
    /// output `z`'s gradient `dz`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        p: &Tensor,
        z: &Tensor,
        dz: &Tensor,
        [want_x, want_w, want_p]: [bool; 3],
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let conv = self.conv;
        let (saved, y) = {
            let mut state = self.state.lock().expect("conv batch norm state");
            let (saved, y) = state
                .as_mut()
                .ok_or_else(|| candle_core::Error::Msg(format!("{OP}: backward before forward")))?;
            (saved.clone(), y.take())
        };
        // Recomputed where the forward kept nothing, and by a second backward
        // pass over the same graph: the same kernel on the same inputs, so
        // the same bits.
        let y = match y {
            Some(y) => y,
            None => x.apply_op2_no_bwd(w, &conv)?,
        };
        let (dy, dp) = batchnorm::backward(saved, &y, z, dz, p)?;
        drop(y);
        let dx = want_x.then(|| conv.input_grad(&dy, w)).transpose()?;
        let dw = want_w.then(|| conv.weight_grad(x, &dy, w)).transpose()?;
        Ok((dx, dw, want_p.then_some(dp)))
    }
}

impl Kernel3 for ConvBnReluTrain {
    fn op_name(&self) -> &'static str {
        OP
    }

    fn run<T: Real>(
        &self,
        x: &[T],
        sx: &Shape,
        w: &[T],
        sw: &Shape,
        p: &[T],
    ) -> Result<(Vec<T>, Shape)> {
        let conv = self.conv;
        let (y, shape) = crate::profile::timed(conv.op_name(), || conv.run(x, sx, w, sw))?;
        let (z, saved) =
            crate::profile::timed("batch norm", || batchnorm::forward(self.eps, &y, &shape, p))?;
        let cin = sx.dims().get(1).copied().unwrap_or(0);
        let y = if conv.recomputes(cin) {
            None
        } else {
            Some(Tensor::from_vec(y, shape.clone(), &Device::Cpu)?)
        };
        *self.state.lock().expect("conv batch norm state") = Some((saved, y));
        Ok((z, shape))
    }
}

impl CustomOp3 for ConvBnReluTrain {
    fn name(&self) -> &'static str {
        "dtml-conv-bias-bn-relu-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        apply3(self, (s1, l1), (s2, l2), (s3, l3))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        p: &Tensor,
        z: &Tensor,
        dz: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        self.grads(x, w, p, z, dz, [x.track_op(), w.track_op(), p.track_op()])
    }
}

/// Inference's V-Net layer: `(x, w, ss = [scale; shift] (2, Cout))` to
/// `max(0, scale[c] conv(x, w) + shift[c])`, the conv bias and the
/// BatchNorm's running statistics folded into `scale` and `shift`. The 3x3x3
/// convolution applies them as it stores its values; the stride-2 ones in
/// one parallel pass over their output. Forward only.
pub(crate) struct LayerAffineRelu {
    pub conv: LayerConv,
}

impl Kernel3 for LayerAffineRelu {
    fn op_name(&self) -> &'static str {
        "conv + affine + relu"
    }

    fn run<T: Real>(
        &self,
        x: &[T],
        sx: &Shape,
        w: &[T],
        sw: &Shape,
        ss: &[T],
    ) -> Result<(Vec<T>, Shape)> {
        if let LayerConv::Cubic { padding } = self.conv {
            return Conv3dAffineRelu { padding }.run(x, sx, w, sw, ss);
        }
        let (mut y, shape) =
            crate::profile::timed(self.conv.op_name(), || self.conv.run(x, sx, w, sw))?;
        let (scale, shift) = ss.split_at(ss.len() / 2);
        let epilogue = Epilogue { scale, shift };
        let c = scale.len();
        let volume = y.len() / (shape.dims()[0] * c).max(1);
        y.par_chunks_mut(volume.max(1))
            .enumerate()
            .for_each(|(i, values)| epilogue.apply(i % c, values));
        Ok((y, shape))
    }
}

forward_op3!(LayerAffineRelu, "dtml-conv-affine-relu");
