//! Register-blocked inner kernels of the direct 3D convolution.
//!
//! Two shapes of work cover forward, input gradient and weight gradient:
//!
//! - [`Real::fwd_tile`]: `CB` output channels times `TILE` consecutive
//!   output positions, summed over a list of input offsets (one per input
//!   channel and kernel tap). Vectorised along the positions, weights
//!   broadcast: `CB * R` accumulators of 16 lanes stay in registers for the
//!   whole reduction, so each weight and each input vector loaded feeds
//!   several FMAs and nothing is written until the tile is done.
//! - [`Real::dw_tile`]: `NT` weight columns (input channel, tap) times `CO`
//!   output channels, summed over positions. Vectorised along the output
//!   channels (the gradient is pre-transposed to position-major), input
//!   values broadcast, so the reduction over positions needs no horizontal
//!   sums and accumulators are the weight gradient itself.
//!
//! f32 on x86-64 with AVX-512 uses intrinsics; everything else (f64, other
//! CPUs) uses portable loops the compiler vectorises as it can.

use candle_core::WithDType;
use std::ops::{Add, AddAssign, Mul};

/// Output channels per forward tile.
pub(crate) const CB: usize = 4;
/// 16-lane vectors per forward tile.
pub(crate) const R: usize = 6;
/// Output positions per forward tile.
pub(crate) const TILE: usize = 16 * R;
/// Accumulators of one weight-gradient tile (`NT * CO`).
pub(crate) const DW_ACC: usize = 384;

/// The float types our CPU kernels support (f32 and f64).
pub(crate) trait Real:
    WithDType + Default + Add<Output = Self> + Mul<Output = Self> + AddAssign + Send + Sync
{
    /// `out[c * TILE + i] = sum_j w[j * CB + c] * x[offs[j] + i]`.
    ///
    /// # Safety
    /// `x + offs[j] + i` must be readable for every `j` and `i < TILE`, and
    /// `w` must hold `offs.len() * CB` values.
    unsafe fn fwd_tile(x: *const Self, offs: &[usize], w: *const Self, out: &mut [Self; CB * TILE]);

    /// `acc[t * acc_stride + c] += sum_{q < nq} x[offs[t] + q] * dyt[q * dyt_stride + c]`
    /// for `t < NT`, `c < 16 * CV`.
    ///
    /// # Safety
    /// All addresses named above must be valid (`acc` writable).
    #[allow(clippy::too_many_arguments)]
    unsafe fn dw_tile<const CV: usize, const NT: usize>(
        dyt: *const Self,
        dyt_stride: usize,
        nq: usize,
        x: *const Self,
        offs: &[usize; NT],
        acc: *mut Self,
        acc_stride: usize,
    );
}

/// Portable forward tile (any `Real`).
///
/// # Safety
/// As [`Real::fwd_tile`].
#[inline(always)]
unsafe fn fwd_tile_portable<T: Real>(
    x: *const T,
    offs: &[usize],
    w: *const T,
    out: &mut [T; CB * TILE],
) {
    out.fill(T::default());
    for (j, &off) in offs.iter().enumerate() {
        // SAFETY: the caller guarantees TILE readable values at x + off and
        // CB weights at w + j * CB.
        let (xs, ws) = unsafe {
            (
                std::slice::from_raw_parts(x.add(off), TILE),
                std::slice::from_raw_parts(w.add(j * CB), CB),
            )
        };
        for (c, &wv) in ws.iter().enumerate() {
            let o = &mut out[c * TILE..(c + 1) * TILE];
            for (oi, &xi) in o.iter_mut().zip(xs) {
                *oi += wv * xi;
            }
        }
    }
}

/// Portable weight-gradient tile (any `Real`).
///
/// # Safety
/// As [`Real::dw_tile`].
#[inline(always)]
unsafe fn dw_tile_portable<T: Real, const CV: usize, const NT: usize>(
    dyt: *const T,
    dyt_stride: usize,
    nq: usize,
    x: *const T,
    offs: &[usize; NT],
    acc: *mut T,
    acc_stride: usize,
) {
    let co = 16 * CV;
    for (t, &off) in offs.iter().enumerate() {
        let mut a = [T::default(); 32];
        let a = &mut a[..co];
        for q in 0..nq {
            // SAFETY: guaranteed by the caller.
            let (xv, d) = unsafe {
                (
                    *x.add(off + q),
                    std::slice::from_raw_parts(dyt.add(q * dyt_stride), co),
                )
            };
            for (ai, &di) in a.iter_mut().zip(d) {
                *ai += xv * di;
            }
        }
        // SAFETY: guaranteed by the caller.
        let dst = unsafe { std::slice::from_raw_parts_mut(acc.add(t * acc_stride), co) };
        for (o, &ai) in dst.iter_mut().zip(a.iter()) {
            *o += ai;
        }
    }
}

impl Real for f64 {
    unsafe fn fwd_tile(
        x: *const Self,
        offs: &[usize],
        w: *const Self,
        out: &mut [Self; CB * TILE],
    ) {
        // SAFETY: same contract.
        unsafe { fwd_tile_portable(x, offs, w, out) }
    }

    unsafe fn dw_tile<const CV: usize, const NT: usize>(
        dyt: *const Self,
        dyt_stride: usize,
        nq: usize,
        x: *const Self,
        offs: &[usize; NT],
        acc: *mut Self,
        acc_stride: usize,
    ) {
        // SAFETY: same contract.
        unsafe { dw_tile_portable::<f64, CV, NT>(dyt, dyt_stride, nq, x, offs, acc, acc_stride) }
    }
}

/// Whether the AVX-512 kernels may run (detected once, then cached by std).
#[inline]
fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the f32 kernels use AVX-512 on this machine (for reports).
pub fn uses_avx512() -> bool {
    has_avx512()
}

impl Real for f32 {
    unsafe fn fwd_tile(
        x: *const Self,
        offs: &[usize],
        w: *const Self,
        out: &mut [Self; CB * TILE],
    ) {
        #[cfg(target_arch = "x86_64")]
        if has_avx512() {
            // SAFETY: AVX-512F is present; memory contract as documented.
            unsafe { avx512::fwd_tile(x, offs, w, out.as_mut_ptr()) };
            return;
        }
        // SAFETY: same contract.
        unsafe { fwd_tile_portable(x, offs, w, out) }
    }

    unsafe fn dw_tile<const CV: usize, const NT: usize>(
        dyt: *const Self,
        dyt_stride: usize,
        nq: usize,
        x: *const Self,
        offs: &[usize; NT],
        acc: *mut Self,
        acc_stride: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        if has_avx512() {
            // SAFETY: AVX-512F is present; memory contract as documented.
            unsafe { avx512::dw_tile::<CV, NT>(dyt, dyt_stride, nq, x, offs, acc, acc_stride) };
            return;
        }
        // SAFETY: same contract.
        unsafe { dw_tile_portable::<f32, CV, NT>(dyt, dyt_stride, nq, x, offs, acc, acc_stride) }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{CB, R, TILE};
    use std::arch::x86_64::*;

    /// AVX-512 forward tile: `CB x R` zmm accumulators (24 of 32 registers),
    /// `R` unaligned input loads and `CB` weight broadcasts per offset.
    ///
    /// # Safety
    /// AVX-512F must be available; memory as in `Real::fwd_tile`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fwd_tile(x: *const f32, offs: &[usize], w: *const f32, out: *mut f32) {
        let mut acc = [[_mm512_setzero_ps(); R]; CB];
        for (j, &off) in offs.iter().enumerate() {
            // SAFETY: the caller guarantees the reads.
            unsafe {
                let p = x.add(off);
                let mut xv = [_mm512_setzero_ps(); R];
                for (r, v) in xv.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(p.add(16 * r));
                }
                let wj = w.add(j * CB);
                for (c, row) in acc.iter_mut().enumerate() {
                    let wv = _mm512_set1_ps(*wj.add(c));
                    for (a, &xr) in row.iter_mut().zip(xv.iter()) {
                        *a = _mm512_fmadd_ps(wv, xr, *a);
                    }
                }
            }
        }
        for (c, row) in acc.iter().enumerate() {
            for (r, &a) in row.iter().enumerate() {
                // SAFETY: out holds CB * TILE values.
                unsafe { _mm512_storeu_ps(out.add(c * TILE + 16 * r), a) };
            }
        }
    }

    /// AVX-512 weight-gradient tile: `NT x CV` zmm accumulators, `CV` loads
    /// of the transposed gradient and `NT` input broadcasts per position.
    ///
    /// # Safety
    /// AVX-512F must be available; memory as in `Real::dw_tile`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dw_tile<const CV: usize, const NT: usize>(
        dyt: *const f32,
        dyt_stride: usize,
        nq: usize,
        x: *const f32,
        offs: &[usize; NT],
        acc: *mut f32,
        acc_stride: usize,
    ) {
        let mut a = [[_mm512_setzero_ps(); CV]; NT];
        let mut xp = [x; NT];
        for t in 0..NT {
            // SAFETY: in-bounds by the caller's contract.
            xp[t] = unsafe { x.add(offs[t]) };
        }
        for q in 0..nq {
            // SAFETY: the caller guarantees the reads.
            unsafe {
                let d = dyt.add(q * dyt_stride);
                let mut dv = [_mm512_setzero_ps(); CV];
                for (v, dvv) in dv.iter_mut().enumerate() {
                    *dvv = _mm512_loadu_ps(d.add(16 * v));
                }
                for t in 0..NT {
                    let b = _mm512_set1_ps(*xp[t].add(q));
                    for v in 0..CV {
                        a[t][v] = _mm512_fmadd_ps(b, dv[v], a[t][v]);
                    }
                }
            }
        }
        for t in 0..NT {
            for v in 0..CV {
                // SAFETY: the caller guarantees acc is writable there.
                unsafe {
                    let p = acc.add(t * acc_stride + 16 * v);
                    _mm512_storeu_ps(p, _mm512_add_ps(_mm512_loadu_ps(p), a[t][v]));
                }
            }
        }
    }
}
