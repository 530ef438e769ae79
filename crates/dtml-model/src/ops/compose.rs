//! The ops written with candle's own differentiable operations only.
//!
//! Used off the CPU (candle has no 3D convolution kernels, and our custom
//! ops only implement `cpu_fwd`), and in tests as an independent reference.
//! Inputs are assumed validated by the public functions in `ops`.

use candle_core::{Result, Tensor, Var};

/// 3D convolution as a sum over the kernel's depth taps of 2D convolutions
/// of depth slices: slice `dz` of the (depth-padded) input, folded into the
/// batch, convolved with `w[:, :, dz]`.
pub fn conv3d(x: &Tensor, w: &Tensor, padding: usize) -> Result<Tensor> {
    let (n, cin, d, h, wd) = x.dims5()?;
    let (cout, _, k, _, _) = w.dims5()?;
    let dout = d + 2 * padding + 1 - k;
    // (N, D, Cin, H, W) so that depth folds into the batch.
    let xt = x.permute((0, 2, 1, 3, 4))?;
    let xt = if padding > 0 {
        xt.pad_with_zeros(1, padding, padding)?
    } else {
        xt
    };
    let mut acc: Option<Tensor> = None;
    for dz in 0..k {
        let slab = xt
            .narrow(1, dz, dout)?
            .contiguous()?
            .reshape((n * dout, cin, h, wd))?;
        let wk = w.narrow(2, dz, 1)?.squeeze(2)?.contiguous()?;
        let y = slab.conv2d(&wk, padding, 1, 1, 1)?;
        acc = Some(match acc {
            None => y,
            Some(a) => (a + y)?,
        });
    }
    let y = acc.expect("k >= 1");
    let (_, _, ho, wo) = y.dims4()?;
    y.reshape((n, dout, cout, ho, wo))?
        .permute((0, 2, 1, 3, 4))?
        .contiguous()
}

/// Input gradient of [`conv3d`]: the convolution of `dy` with the
/// spatially flipped, in/out-transposed kernel, padded by `k - 1 - p`.
pub fn conv3d_input_grad(dy: &Tensor, w: &Tensor, padding: usize) -> Result<Tensor> {
    let k = w.dim(2)?;
    let wt = w.flip(&[2, 3, 4])?.transpose(0, 1)?.contiguous()?;
    conv3d(&dy.detach(), &wt.detach(), k - 1 - padding)?.contiguous()
}

/// Weight gradient of [`conv3d`], through candle's autograd of the
/// composition (a zero kernel variable, loss `sum(conv3d(x, w) * dy)`).
pub fn conv3d_weight_grad(x: &Tensor, dy: &Tensor, k: usize, padding: usize) -> Result<Tensor> {
    let (cin, cout) = (x.dim(1)?, dy.dim(1)?);
    let wv = Var::zeros((cout, cin, k, k, k), x.dtype(), x.device())?;
    let y = conv3d(&x.detach(), wv.as_tensor(), padding)?;
    let grads = (y * dy.detach())?.sum_all()?.backward()?;
    match grads.get(wv.as_tensor()) {
        Some(g) => Ok(g.detach()),
        None => candle_core::bail!("conv3d_weight_grad: no gradient reached the kernel"),
    }
}

/// 2x2x2 stride-2 convolution as space-to-depth then a matmul.
pub fn down_conv2(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (n, cin, d, h, wd) = x.dims5()?;
    let cout = w.dim(0)?;
    let (d2, h2, w2) = (d / 2, h / 2, wd / 2);
    let cols = x
        .reshape(vec![n, cin, d2, 2, h2, 2, w2, 2])?
        .permute([0usize, 2, 4, 6, 1, 3, 5, 7])?
        .contiguous()?
        .reshape((n, d2 * h2 * w2, cin * 8))?;
    let wm = w.reshape((cout, cin * 8))?;
    let y = cols.broadcast_matmul(&wm.t()?)?; // (N, V, Cout)
    y.transpose(1, 2)?
        .contiguous()?
        .reshape((n, cout, d2, h2, w2))
}

/// 2x2x2 stride-2 transposed convolution as a matmul then depth-to-space.
pub fn up_conv2(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (n, cin, d, h, wd) = x.dims5()?;
    let cout = w.dim(1)?;
    let wm = w.reshape((cin, cout * 8))?.t()?; // (Cout*8, Cin)
    let y = wm.broadcast_matmul(&x.reshape((n, cin, d * h * wd))?)?; // (N, Cout*8, V)
    y.reshape(vec![n, cout, 2, 2, 2, d, h, wd])?
        .permute([0usize, 1, 5, 2, 6, 3, 7, 4])?
        .contiguous()?
        .reshape((n, cout, 2 * d, 2 * h, 2 * wd))
}

/// 1x1x1 convolution as a matmul over channels.
pub fn conv1x1(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (n, cin, d, h, wd) = x.dims5()?;
    let cout = w.dim(0)?;
    let wm = w.reshape((cout, cin))?;
    wm.broadcast_matmul(&x.reshape((n, cin, d * h * wd))?)?
        .reshape((n, cout, d, h, wd))
}
