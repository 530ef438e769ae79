//! Doubling every spatial size of `(N, C, Z, Y, X)` by interpolation, as
//! `torch.nn.Upsample(scale_factor=2, mode=...)` does: the up-sampling of
//! MC-Net's second and third decoders. Interpolation is separable, so the
//! op is one small `(2n, n)` matrix per axis applied with candle's matmul:
//! candle differentiates it, it runs on every device, and at the sizes a
//! decoder doubles (at most a few hundred voxels per axis) the matrices
//! are tiny next to the convolution that follows.

use candle_core::{Result, Tensor, bail};

/// How a doubled axis reads the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Upsampling {
    /// Linear along each axis with `align_corners=True`: output `o` reads
    /// input position `o (n - 1) / (2n - 1)`, so both ends map onto the
    /// input's ends.
    Trilinear,
    /// PyTorch's `nearest`: output `o` copies input `floor(o / 2)`.
    Nearest,
}

impl Upsampling {
    /// Row `o` of the `(2n, n)` interpolation matrix, as `(index, weight)`
    /// pairs, computed in f64 as PyTorch computes the source position.
    fn taps(self, n: usize, o: usize) -> [(usize, f64); 2] {
        match self {
            Upsampling::Nearest => [(o / 2, 1.0), (o / 2, 0.0)],
            Upsampling::Trilinear => {
                let scale = if n > 1 {
                    (n - 1) as f64 / (2 * n - 1) as f64
                } else {
                    0.0
                };
                let src = o as f64 * scale;
                let i0 = (src.floor() as usize).min(n - 1);
                let i1 = (i0 + 1).min(n - 1);
                let lambda = src - i0 as f64;
                [(i0, 1.0 - lambda), (i1, lambda)]
            }
        }
    }

    /// The `(n, 2n)` matrix `M` with `out = in @ M` along one axis.
    fn matrix(self, n: usize, like: &Tensor) -> Result<Tensor> {
        let mut m = vec![0.0f64; n * 2 * n];
        for o in 0..2 * n {
            for (i, w) in self.taps(n, o) {
                m[i * 2 * n + o] += w;
            }
        }
        Tensor::from_vec(m, (n, 2 * n), like.device())?.to_dtype(like.dtype())
    }
}

/// `x` `(N, C, Z, Y, X)` with every spatial size doubled by `mode`.
/// Differentiable in `x`.
pub fn upsample2x(x: &Tensor, mode: Upsampling) -> Result<Tensor> {
    if x.rank() != 5 {
        bail!(
            "upsample2x: input must be (N, C, Z, Y, X), got {:?}",
            x.dims()
        );
    }
    if x.elem_count() == 0 {
        bail!("upsample2x: empty input {:?}", x.dims());
    }
    let mut h = x.clone();
    for axis in 2..5 {
        // The axis last, one matmul over it, and back.
        let last = h.transpose(axis, 4)?.contiguous()?;
        let mut dims = last.dims().to_vec();
        let n = dims[4];
        let rows = last.elem_count() / n;
        let up = last.reshape((rows, n))?.matmul(&mode.matrix(n, x)?)?;
        dims[4] = 2 * n;
        h = up.reshape(dims)?.transpose(axis, 4)?;
    }
    h.contiguous()
}
