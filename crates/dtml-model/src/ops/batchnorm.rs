//! Training-mode batch normalisation fused with the conv bias before it and
//! the ReLU after it: `relu(BN_train(x + bias))`, one custom op with its own
//! backward. candle-nn's `BatchNorm` composes about a dozen whole-tensor
//! passes (a transposed copy, two means, subtract, square, divide, scale,
//! shift, then a strided ReLU and a copy back), each a node of the autograd
//! graph whose gradient is summed into a fresh zero tensor; here the forward
//! reads `x` twice and writes `y` once, the backward reads `x`, `y`, `dy`
//! twice and writes `dx` once.
//!
//! Statistics are PyTorch's (and candle-nn's): per channel over (N, spatial),
//! biased variance for normalising, unbiased variance returned for the
//! running estimate. Sums run in the input's type over 16 lanes and blocks
//! of 1024 values, then in f64, around a per-channel shift: the loops
//! vectorise and f32 inputs lose nothing to cancellation or long sums. The
//! conv bias gets its exact gradient, zero (the normalisation cancels it).

use super::cpu::{Kernel2, Kernel3, apply2, apply3, par_filled};
use super::kernel::Real;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// Per-channel statistics of the forward pass, kept for the backward.
#[derive(Debug, Clone)]
pub(crate) struct Saved {
    /// Mean of `x` (without the bias, which the normalisation cancels).
    mean: Vec<f64>,
    /// `1 / sqrt(var + eps)`, biased variance.
    invstd: Vec<f64>,
    /// Biased variance.
    var: Vec<f64>,
    gamma: Vec<f64>,
}

impl Saved {
    /// Batch mean of `x + bias` and unbiased batch variance over `count`
    /// values per channel, for the running statistics.
    fn running_stats(&self, bias: &[f64], count: usize) -> (Vec<f64>, Vec<f64>) {
        let mean = self.mean.iter().zip(bias).map(|(m, b)| m + b).collect();
        let k = count as f64 / (count as f64 - 1.0).max(1.0);
        let var = self.var.iter().map(|v| v * k).collect();
        (mean, var)
    }

    /// [`Self::running_stats`] of the layer output `y` (its `count` values
    /// per channel) as tensors of `y`'s dtype and device.
    pub(crate) fn running_stat_tensors(
        &self,
        bias: &Tensor,
        y: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let c = self.mean.len();
        let b: Vec<f64> = bias.to_dtype(DType::F64)?.to_vec1()?;
        let (mean, var) = self.running_stats(&b, y.elem_count() / c);
        Ok((
            Tensor::from_vec(mean, c, y.device())?.to_dtype(y.dtype())?,
            Tensor::from_vec(var, c, y.device())?.to_dtype(y.dtype())?,
        ))
    }
}

/// `(x (N, C, ...), p (3, C) = [bias; gamma; beta])` to `y`.
pub(crate) struct BnReluTrain {
    pub eps: f64,
    saved: Arc<Mutex<Option<Saved>>>,
}

pub(super) fn layout_of(x: &Shape) -> Result<(usize, usize, usize)> {
    let d = x.dims();
    if d.len() < 2 {
        bail!("batch norm: input must be (N, C, ...), got {d:?}");
    }
    let s: usize = d[2..].iter().product();
    Ok((d[0], d[1], s))
}

/// Partial sums run in `T` over `LANES` independent lanes (so the loops
/// vectorise) for at most `BLOCK` values, then move to f64: f32 rounding
/// stays at the level of a 64-term sum however large the volume.
const LANES: usize = 16;
const BLOCK: usize = 1024;

fn lane_total<T: Real>(lanes: &[T; LANES]) -> f64 {
    lanes.iter().map(|v| v.to_f64()).sum()
}

/// Reinterprets `x` as f32 when `T` is f32 (checked through its dtype).
/// Only the x86 tiers have an f32 path here so far.
#[cfg(target_arch = "x86_64")]
fn as_f32<T: Real>(x: &[T]) -> Option<&[f32]> {
    (T::DTYPE == DType::F32)
        // SAFETY: the only `WithDType` type whose DTYPE is F32 is f32.
        .then(|| unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<f32>(), x.len()) })
}

/// [`shifted_sums_generic`], with an AVX2 path for f32.
fn shifted_sums<T: Real>(x: &[T], offset: T) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if let Some(xf) = as_f32(x)
        && simd::available()
    {
        // SAFETY: AVX2 and FMA are available (checked above).
        return unsafe { simd::shifted_sums(xf, offset.to_f64() as f32) };
    }
    shifted_sums_generic(x, offset)
}

/// [`masked_sums_generic`], with an AVX2 path for f32.
fn masked_sums<T: Real>(x: &[T], y: &[T], dy: &[T], centre: T) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if let (Some(xf), Some(yf), Some(gf)) = (as_f32(x), as_f32(y), as_f32(dy))
        && simd::available()
    {
        // SAFETY: AVX2 and FMA are available (checked above).
        return unsafe { simd::masked_sums(xf, yf, gf, centre.to_f64() as f32) };
    }
    masked_sums_generic(x, y, dy, centre)
}

/// Sum and sum of squares of `x + offset` (`offset` is minus a sample of
/// the channel, so the terms stay small and nothing cancels).
fn shifted_sums_generic<T: Real>(x: &[T], offset: T) -> (f64, f64) {
    let (mut s1, mut s2) = (0f64, 0f64);
    for block in x.chunks(BLOCK) {
        let mut a = [T::zero(); LANES];
        let mut b = [T::zero(); LANES];
        let mut chunks = block.chunks_exact(LANES);
        for ch in &mut chunks {
            for l in 0..LANES {
                let v = ch[l] + offset;
                a[l] += v;
                b[l] += v * v;
            }
        }
        for (l, &v) in chunks.remainder().iter().enumerate() {
            let v = v + offset;
            a[l] += v;
            b[l] += v * v;
        }
        s1 += lane_total(&a);
        s2 += lane_total(&b);
    }
    (s1, s2)
}

/// `sum(dz)` and `sum(dz (x + centre))` with `dz = dy` where `y > 0`.
fn masked_sums_generic<T: Real>(x: &[T], y: &[T], dy: &[T], centre: T) -> (f64, f64) {
    let zero = T::zero();
    let (mut s1, mut s2) = (0f64, 0f64);
    for ((xb, yb), gb) in x.chunks(BLOCK).zip(y.chunks(BLOCK)).zip(dy.chunks(BLOCK)) {
        let mut a = [zero; LANES];
        let mut b = [zero; LANES];
        let mut xc = xb.chunks_exact(LANES);
        let mut yc = yb.chunks_exact(LANES);
        let mut gc = gb.chunks_exact(LANES);
        for ((xs, ys), gs) in (&mut xc).zip(&mut yc).zip(&mut gc) {
            for l in 0..LANES {
                let g = if ys[l] > zero { gs[l] } else { zero };
                a[l] += g;
                b[l] += g * (xs[l] + centre);
            }
        }
        let rest = xc
            .remainder()
            .iter()
            .zip(yc.remainder())
            .zip(gc.remainder());
        for (l, ((&xv, &yv), &gv)) in rest.enumerate() {
            let g = if yv > zero { gv } else { zero };
            a[l] += g;
            b[l] += g * (xv + centre);
        }
        s1 += lane_total(&a);
        s2 += lane_total(&b);
    }
    (s1, s2)
}

impl BnReluTrain {
    pub fn new(eps: f64) -> BnReluTrain {
        BnReluTrain {
            eps,
            saved: Arc::new(Mutex::new(None)),
        }
    }
}

impl Kernel2 for BnReluTrain {
    fn op_name(&self) -> &'static str {
        "batch norm"
    }

    fn run<T: Real>(&self, x: &[T], sx: &Shape, p: &[T], _: &Shape) -> Result<(Vec<T>, Shape)> {
        let (y, saved) = forward(self.eps, x, sx, p)?;
        *self.saved.lock().expect("batch norm state") = Some(saved);
        Ok((y, sx.clone()))
    }
}

/// `relu(BN_train(x + bias))` of `x` `(N, C, ...)` with `p = [bias; gamma;
/// beta]`, and the statistics its backward needs.
pub(super) fn forward<T: Real>(eps: f64, x: &[T], sx: &Shape, p: &[T]) -> Result<(Vec<T>, Saved)> {
    let (n, c, s) = layout_of(sx)?;
    if p.len() != 3 * c {
        bail!(
            "batch norm: parameters must be (3, {c}), got {} values",
            p.len()
        );
    }
    let m = (n * s) as f64;
    // Shift by each channel's first value: sums of (x - shift) stay small.
    let shift: Vec<f64> = (0..c).map(|ch| x[ch * s].to_f64()).collect();
    let sums: Vec<(f64, f64)> = (0..n * c)
        .into_par_iter()
        .map(|pl| {
            let offset = T::from_f64(-shift[pl % c]);
            shifted_sums(&x[pl * s..(pl + 1) * s], offset)
        })
        .collect();
    let mut mean = vec![0f64; c];
    let mut var = vec![0f64; c];
    let mut invstd = vec![0f64; c];
    let gamma: Vec<f64> = p[c..2 * c].iter().map(|v| v.to_f64()).collect();
    for ch in 0..c {
        let (mut a, mut b) = (0f64, 0f64);
        for k in 0..n {
            a += sums[k * c + ch].0;
            b += sums[k * c + ch].1;
        }
        let d = a / m;
        mean[ch] = shift[ch] + d;
        var[ch] = (b / m - d * d).max(0.0);
        invstd[ch] = 1.0 / (var[ch] + eps).sqrt();
    }
    let scale: Vec<T> = (0..c)
        .map(|ch| T::from_f64(gamma[ch] * invstd[ch]))
        .collect();
    // y = a (x - mean) + beta: centred first, so f32 loses nothing to
    // cancellation when the mean is large.
    let centre: Vec<T> = mean.iter().map(|m| T::from_f64(-m)).collect();
    let offset: Vec<T> = (0..c).map(|ch| p[2 * c + ch]).collect();
    // Each chunk is one (sample, channel) plane, every value written.
    let y = par_filled(x.len(), s, |pl, out| {
        let ch = pl % c;
        let (a, b, m) = (scale[ch], offset[ch], centre[ch]);
        let zero = T::zero();
        for (o, v) in out.iter_mut().zip(&x[pl * s..(pl + 1) * s]) {
            let t = a * (*v + m) + b;
            o.write(if t > zero { t } else { zero });
        }
    });
    Ok((
        y,
        Saved {
            mean,
            invstd,
            var,
            gamma,
        },
    ))
}

impl CustomOp2 for BnReluTrain {
    fn name(&self) -> &'static str {
        "dtml-bias-bn-relu-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        apply2(self, s1, l1, s2, l2)
    }

    fn bwd(
        &self,
        x: &Tensor,
        p: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let saved = self
            .saved
            .lock()
            .expect("batch norm state")
            .clone()
            .ok_or_else(|| candle_core::Error::Msg("batch norm: backward before forward".into()))?;
        let (dx, dp) = backward(saved, x, y, dy, p)?;
        Ok((x.track_op().then_some(dx), p.track_op().then_some(dp)))
    }
}

/// Gradients of [`forward`]'s output `y` (input `x`, parameters `p`) for
/// the output gradient `dy`: `(dx, dp)`.
pub(super) fn backward(
    saved: Saved,
    x: &Tensor,
    y: &Tensor,
    dy: &Tensor,
    p: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let c = saved.mean.len();
    let grads = Arc::new(Mutex::new(None));
    let op = BnReluBwd {
        saved,
        grads: grads.clone(),
    };
    let dx = x.apply_op3_no_bwd(y, &dy.contiguous()?, &op)?;
    let g: Vec<f64> = grads
        .lock()
        .expect("batch norm gradients")
        .take()
        .ok_or_else(|| candle_core::Error::Msg("batch norm: no parameter gradients".into()))?;
    let dp = Tensor::from_vec(g, (3, c), p.device())?.to_dtype(p.dtype())?;
    Ok((dx, dp))
}

/// `(x, y, dy)` to `dx`; stores `[dbias; dgamma; dbeta]` in `grads`.
struct BnReluBwd {
    saved: Saved,
    grads: Arc<Mutex<Option<Vec<f64>>>>,
}

impl Kernel3 for BnReluBwd {
    fn op_name(&self) -> &'static str {
        OP_BWD
    }

    fn run<T: Real>(
        &self,
        x: &[T],
        sx: &Shape,
        y: &[T],
        _: &Shape,
        dy: &[T],
    ) -> Result<(Vec<T>, Shape)> {
        let (n, c, s) = layout_of(sx)?;
        if y.len() != x.len() || dy.len() != x.len() {
            bail!("batch norm backward: x, y and dy sizes differ");
        }
        let sv = &self.saved;
        let zero = T::zero();
        // Pass 1: sum(dz) and sum(dz (x - mean)), dz = dy where y > 0.
        let sums: Vec<(f64, f64)> = (0..n * c)
            .into_par_iter()
            .map(|pl| {
                let r = pl * s..(pl + 1) * s;
                let centre = T::from_f64(-sv.mean[pl % c]);
                masked_sums(&x[r.clone()], &y[r.clone()], &dy[r], centre)
            })
            .collect();
        let m = (n * s) as f64;
        let mut dgamma = vec![0f64; c];
        let mut dbeta = vec![0f64; c];
        for pl in 0..n * c {
            dbeta[pl % c] += sums[pl].0;
            dgamma[pl % c] += sums[pl].1;
        }
        // dx = k (dz - dbeta / M - xhat dgamma / M), k = gamma invstd,
        // written dx = A dz + B (x - mean) + C per channel.
        let mut ca = vec![zero; c];
        let mut cb = vec![zero; c];
        let mut cc = vec![zero; c];
        let mut cm = vec![zero; c];
        for ch in 0..c {
            let is = sv.invstd[ch];
            dgamma[ch] *= is;
            let k = sv.gamma[ch] * is;
            ca[ch] = T::from_f64(k);
            cb[ch] = T::from_f64(-k * is * dgamma[ch] / m);
            cc[ch] = T::from_f64(-k * dbeta[ch] / m);
            cm[ch] = T::from_f64(-sv.mean[ch]);
        }
        let dx = par_filled(x.len(), s, |pl, o| {
            let ch = pl % c;
            let (a, b, cst, mc) = (ca[ch], cb[ch], cc[ch], cm[ch]);
            let r = pl * s..(pl + 1) * s;
            for (((o, &xv), &yv), &gv) in o
                .iter_mut()
                .zip(&x[r.clone()])
                .zip(&y[r.clone()])
                .zip(&dy[r])
            {
                let g = if yv > zero { gv } else { zero };
                o.write(a * g + b * (xv + mc) + cst);
            }
        });
        // The conv bias before BatchNorm cancels in the normalisation, so its
        // gradient is exactly zero (PyTorch returns the rounding noise of
        // `sum(dx)` there).
        let mut g = vec![0f64; 3 * c];
        g[c..2 * c].copy_from_slice(&dgamma);
        g[2 * c..].copy_from_slice(&dbeta);
        *self.grads.lock().expect("batch norm gradients") = Some(g);
        Ok((dx, sx.clone()))
    }
}

/// Name in the backward pass's error messages.
const OP_BWD: &str = "batch norm backward";

impl CustomOp3 for BnReluBwd {
    fn name(&self) -> &'static str {
        "dtml-bias-bn-relu-train-backward"
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
        crate::profile::timed(OP_BWD, || apply3(self, (s1, l1), (s2, l2), (s3, l3)))
    }
}

/// Training-mode `relu(batch_norm(x + bias))` on the CPU custom op; returns
/// `y` and the batch mean and unbiased batch variance of `x + bias` per
/// channel, for the running statistics.
pub(crate) fn cpu(
    x: &Tensor,
    bias: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    layout_of(x.shape())?;
    let p = Tensor::stack(&[bias, gamma, beta], 0)?;
    let op = BnReluTrain::new(eps);
    let saved = op.saved.clone();
    let y = x.contiguous()?.apply_op2(&p.contiguous()?, op)?;
    let (mean, var) = saved
        .lock()
        .expect("batch norm state")
        .as_ref()
        .ok_or_else(|| candle_core::Error::Msg("batch norm: statistics missing".into()))?
        .running_stat_tensors(bias, &y)?;
    Ok((y, mean, var))
}

/// The same computation from candle's own differentiable ops (any device):
/// `relu((z - mean) / sqrt(var + eps) * gamma + beta)`, `z = x + bias`.
pub fn composed(
    x: &Tensor,
    bias: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (_, c, _) = layout_of(x.shape())?;
    let mut shape = vec![1, c];
    shape.resize(x.rank(), 1);
    let z = x.broadcast_add(&bias.reshape(shape.as_slice())?)?;
    let zt = z.transpose(0, 1)?.flatten_from(1)?.contiguous()?;
    let count = zt.dim(1)?;
    let mean = zt.mean_keepdim(1)?;
    let centred = zt.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(1)?;
    let var_unbiased = (var.flatten_all()? * (count as f64 / (count as f64 - 1.0).max(1.0)))?;
    let m = mean.flatten_all()?.reshape(shape.as_slice())?;
    let inv = (var.flatten_all()? + eps)?.sqrt()?.recip()?;
    let scale = (inv * gamma)?.reshape(shape.as_slice())?;
    let y = z
        .broadcast_sub(&m)?
        .broadcast_mul(&scale)?
        .broadcast_add(&beta.reshape(shape.as_slice())?)?
        .relu()?;
    Ok((y, mean.flatten_all()?.detach(), var_unbiased.detach()))
}

/// The two reductions with AVX2 and FMA: LLVM does not vectorise the
/// generic versions (their lane arrays stay on the stack).
#[cfg(target_arch = "x86_64")]
mod simd {
    use super::BLOCK;
    use std::arch::x86_64::*;

    /// Whether the process's kernel tier has AVX2 and FMA.
    pub(super) fn available() -> bool {
        use crate::simd::{Tier, active};
        matches!(active(), Tier::Avx512 | Tier::Avx2)
    }

    #[target_feature(enable = "avx2,fma")]
    fn total(v: __m256) -> f64 {
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds 8 f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
        lanes.iter().map(|&l| l as f64).sum()
    }

    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn shifted_sums(x: &[f32], offset: f32) -> (f64, f64) {
        let (mut s1, mut s2) = (0f64, 0f64);
        let off = _mm256_set1_ps(offset);
        for block in x.chunks(BLOCK) {
            let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let (mut b0, mut b1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut chunks = block.chunks_exact(16);
            for ch in &mut chunks {
                // SAFETY: `ch` holds 16 f32.
                let (v0, v1) = unsafe {
                    (
                        _mm256_add_ps(_mm256_loadu_ps(ch.as_ptr()), off),
                        _mm256_add_ps(_mm256_loadu_ps(ch.as_ptr().add(8)), off),
                    )
                };
                a0 = _mm256_add_ps(a0, v0);
                a1 = _mm256_add_ps(a1, v1);
                b0 = _mm256_fmadd_ps(v0, v0, b0);
                b1 = _mm256_fmadd_ps(v1, v1, b1);
            }
            s1 += total(_mm256_add_ps(a0, a1));
            s2 += total(_mm256_add_ps(b0, b1));
            for &v in chunks.remainder() {
                let v = (v + offset) as f64;
                s1 += v;
                s2 += v * v;
            }
        }
        (s1, s2)
    }

    /// # Safety
    /// AVX2 and FMA must be available; the slices have equal lengths.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn masked_sums(x: &[f32], y: &[f32], dy: &[f32], centre: f32) -> (f64, f64) {
        let (mut s1, mut s2) = (0f64, 0f64);
        let c = _mm256_set1_ps(centre);
        let zero = _mm256_setzero_ps();
        let blocks = x.chunks(BLOCK).zip(y.chunks(BLOCK)).zip(dy.chunks(BLOCK));
        for ((xb, yb), gb) in blocks {
            let (mut a0, mut a1) = (zero, zero);
            let (mut b0, mut b1) = (zero, zero);
            let full = xb.len() / 16 * 16;
            for i in (0..full).step_by(16) {
                // SAFETY: i + 16 <= len of all three blocks.
                unsafe {
                    let m0 = _mm256_cmp_ps::<_CMP_GT_OQ>(_mm256_loadu_ps(yb.as_ptr().add(i)), zero);
                    let m1 =
                        _mm256_cmp_ps::<_CMP_GT_OQ>(_mm256_loadu_ps(yb.as_ptr().add(i + 8)), zero);
                    let g0 = _mm256_and_ps(_mm256_loadu_ps(gb.as_ptr().add(i)), m0);
                    let g1 = _mm256_and_ps(_mm256_loadu_ps(gb.as_ptr().add(i + 8)), m1);
                    let x0 = _mm256_add_ps(_mm256_loadu_ps(xb.as_ptr().add(i)), c);
                    let x1 = _mm256_add_ps(_mm256_loadu_ps(xb.as_ptr().add(i + 8)), c);
                    a0 = _mm256_add_ps(a0, g0);
                    a1 = _mm256_add_ps(a1, g1);
                    b0 = _mm256_fmadd_ps(g0, x0, b0);
                    b1 = _mm256_fmadd_ps(g1, x1, b1);
                }
            }
            s1 += total(_mm256_add_ps(a0, a1));
            s2 += total(_mm256_add_ps(b0, b1));
            for i in full..xb.len() {
                if yb[i] > 0.0 {
                    let g = gb[i] as f64;
                    s1 += g;
                    s2 += g * (xb[i] + centre) as f64;
                }
            }
        }
        (s1, s2)
    }
}
