//! A V-Net layer's training step as one CPU op: 3D convolution, conv bias,
//! batch-statistics BatchNorm and ReLU, `relu(BN_train(conv3d(x, w) + b))`.
//!
//! Why one op and not two: candle's backward pass gives every gradient of a
//! graph node a zero-filled tensor and adds the incoming gradient into it,
//! so the convolution's output, as a node between the two ops, cost two
//! whole-tensor allocations, a fill and an add on every step, the largest
//! item beyond the kernels at the paper's patch size. Inside one op the
//! gradient of the convolution's output goes straight from the BatchNorm
//! backward to the two convolution gradients. The kernels and the
//! arithmetic are those of [`super::conv3d`] and [`super::batchnorm`], so the
//! results are the same to the bit.

use super::batchnorm::{self, Saved};
use super::conv3d::{Conv3d, Conv3dInputGrad, Conv3dWeightGrad};
use super::cpu::{Kernel2, Kernel3, apply3};
use super::kernel::Real;
use candle_core::{CpuStorage, CustomOp3, Device, Layout, Result, Shape, Tensor};
use std::sync::{Arc, Mutex};

/// What the forward pass keeps for the backward: the BatchNorm statistics
/// and the convolution's output.
type State = Arc<Mutex<Option<(Saved, Tensor)>>>;

/// `(x, w, p = [bias; gamma; beta])` to `relu(BN_train(conv3d(x, w) + bias))`.
pub(crate) struct ConvBnReluTrain {
    pub padding: usize,
    pub eps: f64,
    state: State,
}

const OP: &str = "conv3d + batch norm";

impl ConvBnReluTrain {
    /// Applies the op to contiguous `x`, `w`, `p`: the output and the
    /// batch statistics.
    pub fn apply(
        x: &Tensor,
        w: &Tensor,
        p: &Tensor,
        padding: usize,
        eps: f64,
    ) -> Result<(Tensor, Saved)> {
        let state: State = Arc::new(Mutex::new(None));
        let op = ConvBnReluTrain {
            padding,
            eps,
            state: state.clone(),
        };
        let z = x.apply_op3(w, p, op)?;
        let saved = state
            .lock()
            .expect("conv batch norm state")
            .as_ref()
            .map(|(s, _)| s.clone())
            .ok_or_else(|| candle_core::Error::Msg(format!("{OP}: statistics missing")))?;
        Ok((z, saved))
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
        let conv = Conv3d {
            padding: self.padding,
        };
        let (y, shape) = crate::profile::timed(conv.op_name(), || conv.run(x, sx, w, sw))?;
        let (z, saved) =
            crate::profile::timed("batch norm", || batchnorm::forward(self.eps, &y, &shape, p))?;
        let y = Tensor::from_vec(y, shape.clone(), &Device::Cpu)?;
        *self.state.lock().expect("conv batch norm state") = Some((saved, y));
        Ok((z, shape))
    }
}

impl CustomOp3 for ConvBnReluTrain {
    fn name(&self) -> &'static str {
        "dtml-conv3d-bias-bn-relu-train"
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
        let (saved, y) = self
            .state
            .lock()
            .expect("conv batch norm state")
            .clone()
            .ok_or_else(|| candle_core::Error::Msg(format!("{OP}: backward before forward")))?;
        let (dy, dp) = batchnorm::backward(saved, &y, z, dz, p)?;
        let padding = self.padding;
        let dx = x
            .track_op()
            .then(|| dy.apply_op2_no_bwd(w, &Conv3dInputGrad { padding }))
            .transpose()?;
        let dw = w
            .track_op()
            .then(|| {
                let k = w.dim(2)?;
                x.apply_op2_no_bwd(&dy, &Conv3dWeightGrad { padding, k })
            })
            .transpose()?;
        Ok((dx, dw, p.track_op().then_some(dp)))
    }
}
