//! The V-Net's heads in training: channel dropout with given multipliers,
//! then the 1x1x1 convolution, `conv1x1(x * mask[n, c], w)`, as one CPU op.
//!
//! Why one op: as two, the dropped-out copy of the last decoder stage (16
//! channels at full resolution, 128 MB per network at the paper's patch)
//! is a graph node that candle keeps until the whole backward pass ends,
//! and candle's backward of a multiply also computes the gradient of the
//! mask (a full-size product and a full-size zero tensor it then keeps to
//! the end, the mask being no variable). Here the scaled copy lives only
//! while a kernel runs, and the backward computes the input's gradient
//! alone: `mask * conv1x1^T(g, w)`. The products and the kernels are those
//! of [`super::channel_dropout_with_mask`] and [`super::conv1x1`].

use super::cpu::{Kernel2, Kernel3, apply3};
use super::kernel::Real;
use super::resample::{Conv1x1, Conv1x1WGrad};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Multiplies each (sample, channel) volume of `x (N, C, ...)` by
/// `mask[n, c]`.
fn scale<T: Real>(x: &mut [T], mask: &[T]) {
    let volume = (x.len() / mask.len().max(1)).max(1);
    x.par_chunks_mut(volume)
        .zip(mask.par_iter())
        .for_each(|(v, &m)| v.iter_mut().for_each(|a| *a *= m));
}

/// `x` scaled by [`scale`], as a new buffer.
fn scaled<T: Real>(x: &[T], mask: &[T]) -> Vec<T> {
    let mut out = x.to_vec();
    scale(&mut out, mask);
    out
}

/// `(x, w, mask)` to `conv1x1(x * mask, w)`.
pub(crate) struct MaskedConv1x1;

impl Kernel3 for MaskedConv1x1 {
    fn op_name(&self) -> &'static str {
        "masked conv1x1"
    }

    fn run<T: Real>(
        &self,
        x: &[T],
        sx: &Shape,
        w: &[T],
        sw: &Shape,
        mask: &[T],
    ) -> Result<(Vec<T>, Shape)> {
        Conv1x1 { transpose: false }.run(&scaled(x, mask), sx, w, sw)
    }
}

impl CustomOp3 for MaskedConv1x1 {
    fn name(&self) -> &'static str {
        "dtml-masked-conv1x1"
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
        mask: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let dx = x
            .track_op()
            .then(|| g.apply_op3_no_bwd(w, mask, &InputGrad))
            .transpose()?;
        let dw = w
            .track_op()
            .then(|| g.apply_op3_no_bwd(x, mask, &WeightGrad))
            .transpose()?;
        // The mask is a constant: `super::masked_conv1x1` refuses one that
        // tracks a gradient.
        Ok((dx, dw, None))
    }
}

/// `(g, w, mask)` to `mask * conv1x1^T(g, w)`.
struct InputGrad;

impl Kernel3 for InputGrad {
    fn op_name(&self) -> &'static str {
        "masked conv1x1 input gradient"
    }

    fn run<T: Real>(
        &self,
        g: &[T],
        sg: &Shape,
        w: &[T],
        sw: &Shape,
        mask: &[T],
    ) -> Result<(Vec<T>, Shape)> {
        let (mut dx, shape) = Conv1x1 { transpose: true }.run(g, sg, w, sw)?;
        scale(&mut dx, mask);
        Ok((dx, shape))
    }
}

/// `(g, x, mask)` to the weight gradient of `conv1x1(x * mask, w)`.
struct WeightGrad;

impl Kernel3 for WeightGrad {
    fn op_name(&self) -> &'static str {
        "masked conv1x1 weight gradient"
    }

    fn run<T: Real>(
        &self,
        g: &[T],
        sg: &Shape,
        x: &[T],
        sx: &Shape,
        mask: &[T],
    ) -> Result<(Vec<T>, Shape)> {
        Conv1x1WGrad.run(g, sg, &scaled(x, mask), sx)
    }
}

/// The two gradient kernels as candle ops (forward only; never
/// differentiated).
macro_rules! gradient_op {
    ($kernel:ty, $name:literal) => {
        impl CustomOp3 for $kernel {
            fn name(&self) -> &'static str {
                $name
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
        }
    };
}

gradient_op!(InputGrad, "dtml-masked-conv1x1-input-grad");
gradient_op!(WeightGrad, "dtml-masked-conv1x1-weight-grad");
