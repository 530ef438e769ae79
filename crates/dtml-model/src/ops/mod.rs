//! The 3D operations candle 0.11 lacks, each with its own gradient.
//!
//! Tensors are `(N, C, Z, Y, X)` row-major and kernels `(Cout, Cin, kz, ky,
//! kx)`; the transposed convolution takes PyTorch's `ConvTranspose3d` layout
//! `(Cin, Cout, 2, 2, 2)`. On the CPU every op is a candle custom op
//! ([`candle_core::CustomOp2`]) whose forward and backward run our own
//! kernels: a register-blocked direct 3D convolution (AVX-512 when the CPU
//! has it) for the `k x k x k` case, and space-to-depth + GEMM for the 2x2x2
//! stride-2 pair and the 1x1x1 head. On any other device the same functions
//! compose candle's own differentiable ops (2D convolutions over depth
//! slices, reshapes and matmuls), slower but correct, so a network built on
//! these functions runs everywhere. The exception: with the `cudnn` feature
//! the `k x k x k` convolution and its two gradients on CUDA devices are the
//! same custom ops running cuDNN ([`cudnn`]); on CUDA the resampling ops
//! are reshapes and cuBLAS matmuls either way, all on the device.
//!
//! All functions validate ranks, shapes, dtypes (f32 or f64) and devices
//! and return a candle error instead of panicking.

mod batchnorm;
mod compose;
mod conv3d;
mod conv_bn;
mod cpu;
#[cfg(feature = "cudnn")]
pub mod cudnn;
mod dropout;
mod kernel;
mod masked_conv1x1;
mod resample;
mod strided;
mod upsample;

use candle_core::{DType, Device, Result, Tensor, bail};

pub(crate) use batchnorm::Saved;
pub(crate) use conv_bn::ConvBnReluTrain;
pub use conv_bn::LayerConv;
pub(crate) use cpu::add_detached;
pub use dropout::{channel_dropout, channel_dropout_mask, channel_dropout_with_mask};
pub use strided::conv3d_k4_s2;
pub use upsample::{Upsampling, upsample2x};

/// Reference implementations built only from candle's own differentiable
/// ops. They run on every device and are what the public functions use off
/// the CPU; exposed so tests can compare the custom ops against them.
pub mod reference {
    pub use super::batchnorm::composed as bias_bn_relu_train;
    pub use super::compose::{
        conv1x1, conv3d, conv3d_input_grad, conv3d_weight_grad, down_conv2, up_conv2,
    };
}

/// Training-mode `relu(batch_norm(x + bias))` over `x` `(N, C, ...)` with
/// per-channel `bias`, `gamma` and `beta` `(C)`: the conv bias, BatchNorm
/// (batch statistics, biased variance, `eps`) and ReLU of a V-Net layer as
/// one op. Returns `y` and the batch mean and unbiased batch variance of
/// `x + bias` per channel (no gradient), from which the caller updates the
/// running statistics as PyTorch does. Differentiable in all four inputs;
/// on the CPU a fused custom op, elsewhere [`reference::bias_bn_relu_train`].
pub fn bias_bn_relu_train(
    x: &Tensor,
    bias: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "bias_bn_relu_train";
    if x.rank() < 2 {
        bail!("{OP}: input must be (N, C, ...), got {:?}", x.dims());
    }
    check_channel_params(
        x,
        x.dim(1)?,
        [(bias, "bias"), (gamma, "gamma"), (beta, "beta")],
        OP,
    )?;
    if x.elem_count() == 0 {
        bail!("{OP}: empty input {:?}", x.dims());
    }
    if x.device().is_cpu() {
        batchnorm::cpu(x, bias, gamma, beta, eps)
    } else {
        batchnorm::composed(x, bias, gamma, beta, eps)
    }
}

/// Whether [`conv3d`] and its gradients run as custom ops with their own
/// kernels on `dev`: always on the CPU, and on CUDA devices through cuDNN
/// when built with the `cudnn` feature. Elsewhere they compose candle ops
/// (see [`reference`](mod@reference)).
pub fn conv3d_is_native(dev: &Device) -> bool {
    dev.is_cpu() || (cfg!(feature = "cudnn") && dev.is_cuda())
}

/// Returns the five dimensions of a rank-5 tensor or a descriptive error.
fn dims5(t: &Tensor, what: &str, op: &str) -> Result<(usize, usize, usize, usize, usize)> {
    match t.dims() {
        &[a, b, c, d, e] => Ok((a, b, c, d, e)),
        d => bail!("{op}: {what} must be rank 5, got shape {d:?}"),
    }
}

/// Checks that the two tensors share a float dtype we support and a device.
fn check_pair(x: &Tensor, w: &Tensor, op: &str) -> Result<()> {
    if !matches!(x.dtype(), DType::F32 | DType::F64) {
        bail!("{op}: only f32 and f64 are supported, got {:?}", x.dtype());
    }
    if x.dtype() != w.dtype() {
        bail!(
            "{op}: input is {:?} but weight is {:?}",
            x.dtype(),
            w.dtype()
        );
    }
    if !x.device().same_device(w.device()) {
        bail!("{op}: input and weight are on different devices");
    }
    Ok(())
}

/// 3D convolution, stride 1, cubic kernel, zero padding `padding` on every
/// side, no bias (add it with `broadcast_add`).
///
/// `x` is `(N, Cin, D, H, W)`, `w` is `(Cout, Cin, k, k, k)`; the result is
/// `(N, Cout, D + 2p - k + 1, ...)`. `padding` must be at most `k - 1` (more
/// would only add all-zero borders). Differentiable in `x` and `w`.
pub fn conv3d(x: &Tensor, w: &Tensor, padding: usize) -> Result<Tensor> {
    check_conv3d(x, w, padding, "conv3d")?;
    if conv3d_is_native(x.device()) {
        x.contiguous()?
            .apply_op2(&w.contiguous()?, conv3d::Conv3d { padding })
    } else {
        compose::conv3d(x, w, padding)
    }
}

/// Checks per-channel parameters of an op on `x`: each `(c)`, of `x`'s
/// dtype and device.
fn check_channel_params<const N: usize>(
    x: &Tensor,
    c: usize,
    params: [(&Tensor, &str); N],
    op: &str,
) -> Result<()> {
    for (t, what) in params {
        if t.dims() != [c] {
            bail!("{op}: {what} must be ({c}), got {:?}", t.dims());
        }
        check_pair(x, t, op)?;
    }
    Ok(())
}

/// The checks of [`conv3d`]'s arguments.
fn check_conv3d(x: &Tensor, w: &Tensor, padding: usize, op: &str) -> Result<()> {
    let (_, cin, d, h, wd) = dims5(x, "input", op)?;
    let (_, wcin, kz, ky, kx) = dims5(w, "weight", op)?;
    check_pair(x, w, op)?;
    if wcin != cin {
        bail!(
            "{op}: input has {cin} channels but weight {:?} expects {wcin}",
            w.dims()
        );
    }
    if kz != ky || ky != kx || kz == 0 {
        bail!(
            "{op}: kernel must be cubic and non-empty, got {:?}",
            w.dims()
        );
    }
    let k = kz;
    if padding >= k {
        bail!("{op}: padding {padding} must be smaller than the kernel size {k}");
    }
    if d + 2 * padding < k || h + 2 * padding < k || wd + 2 * padding < k {
        bail!(
            "{op}: input {:?} with padding {padding} is smaller than the kernel {k}",
            x.dims()
        );
    }
    if x.elem_count() == 0 || w.elem_count() == 0 {
        bail!("{op}: empty input {:?} or weight {:?}", x.dims(), w.dims());
    }
    Ok(())
}

/// A V-Net layer in inference: `max(0, scale[c] conv3d(x, w, padding) +
/// shift[c])` with per-output-channel `scale` and `shift` `(Cout)` (the
/// conv bias and BatchNorm's running statistics folded), on the CPU one
/// pass that applies the map as the convolution stores its values. Not
/// differentiable: for forward passes autograd does not record.
pub fn conv3d_affine_relu(
    x: &Tensor,
    w: &Tensor,
    padding: usize,
    scale: &Tensor,
    shift: &Tensor,
) -> Result<Tensor> {
    conv_affine_relu(LayerConv::Cubic { padding }, x, w, scale, shift)
}

/// [`conv3d_affine_relu`] for any of a V-Net layer's convolutions
/// ([`LayerConv`]): `max(0, scale[c] conv(x, w) + shift[c])`, one pass on
/// the CPU. Not differentiable (inference).
pub fn conv_affine_relu(
    conv: LayerConv,
    x: &Tensor,
    w: &Tensor,
    scale: &Tensor,
    shift: &Tensor,
) -> Result<Tensor> {
    let (op, c) = check_layer(
        conv,
        x,
        w,
        [
            "conv3d_affine_relu",
            "down_conv2_affine_relu",
            "up_conv2_affine_relu",
        ],
    )?;
    check_channel_params(x, c, [(scale, "scale"), (shift, "shift")], op)?;
    if !x.device().is_cpu() {
        let shape = (1, c, 1, 1, 1);
        return layer_conv(conv, x, w)?
            .broadcast_mul(&scale.reshape(shape)?)?
            .broadcast_add(&shift.reshape(shape)?)?
            .relu();
    }
    let ss = Tensor::cat(&[scale, shift], 0)?.contiguous()?;
    x.detach().contiguous()?.apply_op3_no_bwd(
        &w.detach().contiguous()?,
        &ss.detach(),
        &conv_bn::LayerAffineRelu { conv },
    )
}

/// The convolution `conv` of `x` by `w` alone: [`conv3d`], [`down_conv2`]
/// or [`up_conv2`].
pub fn layer_conv(conv: LayerConv, x: &Tensor, w: &Tensor) -> Result<Tensor> {
    match conv {
        LayerConv::Cubic { padding } => conv3d(x, w, padding),
        LayerConv::Down => down_conv2(x, w),
        LayerConv::Up => up_conv2(x, w),
    }
}

/// Checks `x` and `w` for the convolution `conv` of an op named, by
/// convolution, `names` (cubic, down, up); returns that name and the
/// output channels.
fn check_layer(
    conv: LayerConv,
    x: &Tensor,
    w: &Tensor,
    [cubic, down, up]: [&'static str; 3],
) -> Result<(&'static str, usize)> {
    match conv {
        LayerConv::Cubic { padding } => {
            check_conv3d(x, w, padding, cubic)?;
            Ok((cubic, w.dim(0)?))
        }
        LayerConv::Down => {
            check_down(x, w, down)?;
            Ok((down, w.dim(0)?))
        }
        LayerConv::Up => {
            check_resample(x, w, up, true)?;
            Ok((up, w.dim(1)?))
        }
    }
}

/// A V-Net layer in training: [`conv3d`] then [`bias_bn_relu_train`] (conv
/// bias, batch-statistics BatchNorm, ReLU); returns the same `(y, batch
/// mean, unbiased batch variance)`. [`conv_bn_relu_train`] with
/// [`LayerConv::Cubic`].
pub fn conv3d_bn_relu_train(
    x: &Tensor,
    w: &Tensor,
    padding: usize,
    bias: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    conv_bn_relu_train(LayerConv::Cubic { padding }, x, w, bias, gamma, beta, eps)
}

/// A V-Net layer in training: the convolution `conv` of `x` by `w` ([`conv3d`],
/// [`down_conv2`] or [`up_conv2`]), then [`bias_bn_relu_train`] (conv bias,
/// batch-statistics BatchNorm, ReLU); returns the same `(y, batch mean,
/// unbiased batch variance)`. On the CPU one custom op, so the convolution's
/// output is never a node of the graph, and the backward frees or
/// recomputes it (`conv_bn`'s module doc); elsewhere the two functions.
/// Differentiable in every input but `eps`.
pub fn conv_bn_relu_train(
    conv: LayerConv,
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    if !x.device().is_cpu() {
        return bias_bn_relu_train(&layer_conv(conv, x, w)?, bias, gamma, beta, eps);
    }
    let (op, cout) = check_layer(
        conv,
        x,
        w,
        [
            "conv3d_bn_relu_train",
            "down_conv2_bn_relu_train",
            "up_conv2_bn_relu_train",
        ],
    )?;
    check_channel_params(
        x,
        cout,
        [(bias, "bias"), (gamma, "gamma"), (beta, "beta")],
        op,
    )?;
    let p = Tensor::stack(&[bias, gamma, beta], 0)?.contiguous()?;
    let (y, saved) =
        conv_bn::ConvBnReluTrain::apply(&x.contiguous()?, &w.contiguous()?, &p, conv, eps)?;
    let (mean, var) = saved.running_stat_tensors(bias, &y)?;
    Ok((y, mean, var))
}

/// Checks a conv3d weight and padding; returns `k`.
fn check_kernel(w: &Tensor, padding: usize, op: &str) -> Result<usize> {
    let (_, _, kz, ky, kx) = dims5(w, "weight", op)?;
    if kz != ky || ky != kx || kz == 0 {
        bail!(
            "{op}: kernel must be cubic and non-empty, got {:?}",
            w.dims()
        );
    }
    if padding >= kz {
        bail!("{op}: padding {padding} must be smaller than the kernel size {kz}");
    }
    Ok(kz)
}

/// Gradient of [`conv3d`] with respect to its input: `dy` is the output
/// gradient `(N, Cout, Do, Ho, Wo)`, `w` the kernel `(Cout, Cin, k, k, k)`;
/// returns `(N, Cin, Do + k - 1 - 2p, ...)`. This is what autograd runs
/// (a convolution with the flipped, transposed kernel); public for
/// benchmarks and hand-written backward passes. Not differentiable.
pub fn conv3d_input_grad(dy: &Tensor, w: &Tensor, padding: usize) -> Result<Tensor> {
    const OP: &str = "conv3d_input_grad";
    let (_, cout, d, h, wd) = dims5(dy, "output gradient", OP)?;
    check_pair(dy, w, OP)?;
    let k = check_kernel(w, padding, OP)?;
    if w.dim(0)? != cout {
        bail!(
            "{OP}: gradient has {cout} channels but weight {:?} has {}",
            w.dims(),
            w.dim(0)?
        );
    }
    if d + k < 2 * padding + 2
        || h + k < 2 * padding + 2
        || wd + k < 2 * padding + 2
        || dy.elem_count() == 0
        || w.elem_count() == 0
    {
        bail!(
            "{OP}: gradient {:?} does not fit kernel {k} with padding {padding}",
            dy.dims()
        );
    }
    if conv3d_is_native(dy.device()) {
        dy.contiguous()?
            .apply_op2_no_bwd(&w.contiguous()?, &conv3d::Conv3dInputGrad { padding })
    } else {
        compose::conv3d_input_grad(dy, w, padding)
    }
}

/// Gradient of [`conv3d`] with respect to its `k x k x k` kernel: `x` is
/// the input `(N, Cin, D, H, W)`, `dy` the output gradient `(N, Cout, Do,
/// Ho, Wo)`; returns `(Cout, Cin, k, k, k)`. What autograd runs; public for
/// benchmarks and hand-written backward passes. Not differentiable.
pub fn conv3d_weight_grad(x: &Tensor, dy: &Tensor, k: usize, padding: usize) -> Result<Tensor> {
    const OP: &str = "conv3d_weight_grad";
    let (n, _, d, h, wd) = dims5(x, "input", OP)?;
    let (gn, _, gd, gh, gw) = dims5(dy, "output gradient", OP)?;
    check_pair(x, dy, OP)?;
    if k == 0 || padding >= k {
        bail!("{OP}: need 0 <= padding {padding} < k {k}");
    }
    let fits = |a: usize, b: usize| a + 2 * padding + 1 == b + k;
    if gn != n
        || !fits(d, gd)
        || !fits(h, gh)
        || !fits(wd, gw)
        || x.elem_count() == 0
        || dy.elem_count() == 0
    {
        bail!(
            "{OP}: input {:?} and gradient {:?} do not match kernel {k}, padding {padding}",
            x.dims(),
            dy.dims()
        );
    }
    if conv3d_is_native(x.device()) {
        x.contiguous()?
            .apply_op2_no_bwd(&dy.contiguous()?, &conv3d::Conv3dWeightGrad { padding, k })
    } else {
        compose::conv3d_weight_grad(x, dy, k, padding)
    }
}

/// Checks of [`down_conv2`]'s input and weight.
fn check_down(x: &Tensor, w: &Tensor, op: &str) -> Result<()> {
    check_resample(x, w, op, false)?;
    let (_, _, d, h, wd) = x.dims5()?;
    if d % 2 != 0 || h % 2 != 0 || wd % 2 != 0 {
        bail!("{op}: spatial dims must be even, got {:?}", x.dims());
    }
    Ok(())
}

/// Shared checks of the 2x2x2 stride-2 pair; `wa` is the weight's first
/// dimension, which must equal the channels of `x` when `x_is_first`.
fn check_resample(x: &Tensor, w: &Tensor, op: &str, x_matches_first: bool) -> Result<()> {
    let (_, c, _, _, _) = dims5(x, "input", op)?;
    let (wa, wb, k0, k1, k2) = dims5(w, "weight", op)?;
    check_pair(x, w, op)?;
    if (k0, k1, k2) != (2, 2, 2) {
        bail!("{op}: weight must be (_, _, 2, 2, 2), got {:?}", w.dims());
    }
    let want = if x_matches_first { wa } else { wb };
    if c != want {
        bail!(
            "{op}: input has {c} channels but weight {:?} expects {want}",
            w.dims()
        );
    }
    if x.elem_count() == 0 || w.elem_count() == 0 {
        bail!("{op}: empty input {:?} or weight {:?}", x.dims(), w.dims());
    }
    Ok(())
}

/// 2x2x2 convolution with stride 2 (the V-Net's down-sampling), no bias.
///
/// `x` is `(N, Cin, D, H, W)` with even `D, H, W`; `w` is `(Cout, Cin, 2, 2,
/// 2)`; the result is `(N, Cout, D/2, H/2, W/2)`. Computed as
/// space-to-depth followed by one GEMM, since the windows do not overlap.
pub fn down_conv2(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    const OP: &str = "down_conv2";
    check_down(x, w, OP)?;
    if x.device().is_cpu() {
        x.contiguous()?.apply_op2(&w.contiguous()?, resample::Down)
    } else {
        compose::down_conv2(x, w)
    }
}

/// 2x2x2 transposed convolution with stride 2 (the V-Net's up-sampling),
/// no bias.
///
/// `x` is `(N, Cin, D, H, W)`; `w` is in PyTorch's `ConvTranspose3d` layout
/// `(Cin, Cout, 2, 2, 2)`; the result is `(N, Cout, 2D, 2H, 2W)`. Computed
/// as one GEMM followed by depth-to-space. It is the adjoint of
/// [`down_conv2`] with the same weight tensor.
pub fn up_conv2(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    const OP: &str = "up_conv2";
    check_resample(x, w, OP, true)?;
    if x.device().is_cpu() {
        x.contiguous()?.apply_op2(&w.contiguous()?, resample::Up)
    } else {
        compose::up_conv2(x, w)
    }
}

/// [`channel_dropout_with_mask`] then [`conv1x1`]: `conv1x1(x * mask[n, c],
/// w)`, the V-Net's heads; no `mask` is no dropout. On the CPU one op whose
/// graph holds no dropped-out copy of `x`, with loops for few output
/// channels (`masked_conv1x1`'s module doc); equal to the two ops to
/// rounding. `mask` is `(N, C)` and a constant: differentiable in `x` and
/// `w`, and an error if `mask` tracks a gradient.
pub fn masked_conv1x1(x: &Tensor, w: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    const OP: &str = "masked_conv1x1";
    check_conv1x1(x, w, OP)?;
    let (n, c, _, _, _) = x.dims5()?;
    if let Some(mask) = mask {
        if mask.dims() != [n, c] {
            bail!("{OP}: mask must be ({n}, {c}), got {:?}", mask.dims());
        }
        if mask.track_op() {
            bail!("{OP}: the mask must be a constant, not a tensor that tracks gradients");
        }
        if mask.dtype() != x.dtype() || !mask.device().same_device(x.device()) {
            bail!("{OP}: mask must have the input's dtype and device");
        }
    }
    if !x.device().is_cpu() {
        return match mask {
            Some(mask) => conv1x1(&channel_dropout_with_mask(x, mask)?, w),
            None => conv1x1(x, w),
        };
    }
    // No dropout: multipliers of one, exact.
    let ones;
    let mask = match mask {
        Some(mask) => mask,
        None => {
            ones = Tensor::ones((n, c), x.dtype(), x.device())?;
            &ones
        }
    };
    x.contiguous()?.apply_op3(
        &w.contiguous()?,
        &mask.contiguous()?,
        masked_conv1x1::MaskedConv1x1,
    )
}

/// Checks a 1x1x1 convolution's input and weight.
fn check_conv1x1(x: &Tensor, w: &Tensor, op: &str) -> Result<()> {
    let (_, cin, _, _, _) = dims5(x, "input", op)?;
    let (_, wcin, k0, k1, k2) = dims5(w, "weight", op)?;
    check_pair(x, w, op)?;
    if (k0, k1, k2) != (1, 1, 1) {
        bail!(
            "{op}: weight must be (Cout, Cin, 1, 1, 1), got {:?}",
            w.dims()
        );
    }
    if wcin != cin {
        bail!(
            "{op}: input has {cin} channels but weight {:?} expects {wcin}",
            w.dims()
        );
    }
    if x.elem_count() == 0 || w.elem_count() == 0 {
        bail!("{op}: empty input {:?} or weight {:?}", x.dims(), w.dims());
    }
    Ok(())
}

/// 1x1x1 convolution (a matmul over channels), no bias.
///
/// `x` is `(N, Cin, D, H, W)`, `w` is `(Cout, Cin, 1, 1, 1)`.
pub fn conv1x1(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    check_conv1x1(x, w, "conv1x1")?;
    if x.device().is_cpu() {
        x.contiguous()?
            .apply_op2(&w.contiguous()?, resample::Conv1x1 { transpose: false })
    } else {
        compose::conv1x1(x, w)
    }
}
