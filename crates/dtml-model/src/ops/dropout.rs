//! Channel dropout with PyTorch `Dropout3d` semantics: every (sample,
//! channel) volume is zeroed with probability `p`, the others scaled by
//! `1 / (1 - p)`. Built from a broadcast multiply, so it is differentiable
//! and runs on every device; the mask is drawn on the host from the
//! caller's seeded generator, so runs are reproducible.

use candle_core::{DType, Device, Result, Tensor, bail};
use rand::{Rng, RngExt};

/// Draws a `(n, c)` mask of multipliers: 0 with probability `p`, else
/// `1 / (1 - p)` (all zeros when `p == 1`, as PyTorch). One uniform draw
/// per entry, row-major.
pub fn channel_dropout_mask(
    n: usize,
    c: usize,
    p: f64,
    rng: &mut impl Rng,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    if !(0.0..=1.0).contains(&p) {
        bail!("channel_dropout: p = {p} must be in [0, 1]");
    }
    let scale = if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 };
    let v: Vec<f64> = (0..n * c)
        .map(|_| if rng.random::<f64>() < p { 0.0 } else { scale })
        .collect();
    Tensor::from_vec(v, (n, c), device)?.to_dtype(dtype)
}

/// Channel dropout of `x` `(N, C, ...)` with a fresh mask from `rng`.
pub fn channel_dropout(x: &Tensor, p: f64, rng: &mut impl Rng) -> Result<Tensor> {
    if x.rank() < 2 {
        bail!(
            "channel_dropout: input must be (N, C, ...), got shape {:?}",
            x.dims()
        );
    }
    let (n, c) = (x.dim(0)?, x.dim(1)?);
    let mask = channel_dropout_mask(n, c, p, rng, x.dtype(), x.device())?;
    channel_dropout_with_mask(x, &mask)
}

/// Multiplies each (sample, channel) of `x` `(N, C, ...)` by `mask[n, c]`;
/// `mask` holds the multipliers (0 or `1 / (1 - p)`), e.g. from
/// [`channel_dropout_mask`] or reproduced from PyTorch.
pub fn channel_dropout_with_mask(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    if x.rank() < 2 {
        bail!(
            "channel_dropout: input must be (N, C, ...), got shape {:?}",
            x.dims()
        );
    }
    let (n, c) = (x.dim(0)?, x.dim(1)?);
    if mask.dims() != [n, c] {
        bail!(
            "channel_dropout: mask must be ({n}, {c}), got {:?}",
            mask.dims()
        );
    }
    let mut shape = vec![n, c];
    shape.resize(x.rank(), 1);
    x.broadcast_mul(
        &mask
            .to_dtype(x.dtype())?
            .to_device(x.device())?
            .reshape(shape)?,
    )
}
