//! The 4x4x4 convolution with stride 2 and padding 1 of SASSNet's
//! discriminator (PyTorch's `Conv3d(kernel_size=4, stride=2, padding=1)`),
//! composed from differentiable pieces: zero padding, space-to-depth, and
//! the stride-1 2x2x2 convolution ([`super::conv3d`]) over the eight phases.
//! With `k = 2a + b`, output `o` reads padded input `2o + k = 2(o + a) + b`:
//! phase `b` of block `o + a`. So the strided convolution is a stride-1
//! convolution of kernel 2 over `8 Cin` phase channels, and needs no
//! kernel of its own; its gradients are those of the pieces.

use candle_core::{Result, Tensor, bail};

/// `Conv3d(kernel_size=4, stride=2, padding=1)` without bias: `x` `(N, Cin,
/// D, H, W)` with even spatial sizes, `w` `(Cout, Cin, 4, 4, 4)`; returns
/// `(N, Cout, D/2, H/2, W/2)`. Differentiable in `x` and `w`.
pub fn conv3d_k4_s2(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    const OP: &str = "conv3d_k4_s2";
    let (n, cin, d, h, wd) = super::dims5(x, "input", OP)?;
    let (cout, wcin, kz, ky, kx) = super::dims5(w, "weight", OP)?;
    super::check_pair(x, w, OP)?;
    if (wcin, kz, ky, kx) != (cin, 4, 4, 4) {
        bail!(
            "{OP}: weight must be ({cout}, {cin}, 4, 4, 4), got {:?}",
            w.dims()
        );
    }
    if [d, h, wd].iter().any(|&s| s == 0 || s % 2 != 0) {
        bail!(
            "{OP}: spatial sizes must be even and positive, got {:?}",
            x.dims()
        );
    }
    let (bd, bh, bw) = (d / 2 + 1, h / 2 + 1, wd / 2 + 1);
    let phases = x
        .pad_with_zeros(2, 1, 1)?
        .pad_with_zeros(3, 1, 1)?
        .pad_with_zeros(4, 1, 1)?
        .reshape(vec![n, cin, bd, 2, bh, 2, bw, 2])?
        .permute(vec![0, 1, 3, 5, 7, 2, 4, 6])?
        .reshape((n, cin * 8, bd, bh, bw))?;
    let kernel = w
        .reshape(vec![cout, cin, 2, 2, 2, 2, 2, 2])?
        .permute(vec![0, 1, 3, 5, 7, 2, 4, 6])?
        .reshape((cout, cin * 8, 2, 2, 2))?;
    super::conv3d(&phases, &kernel, 0)
}
