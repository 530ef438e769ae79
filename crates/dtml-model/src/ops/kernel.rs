//! Register-blocked inner kernels of the direct 3D convolution.
//!
//! Two shapes of work cover forward, input gradient and weight gradient:
//!
//! - [`Real::fwd_tile`]: `CB` output channels times `16 R` consecutive
//!   output positions, summed over a list of input offsets (one per input
//!   channel and kernel tap). Vectorised along the positions, weights
//!   broadcast: the `CB x R` accumulators of 16 lanes stay in registers for
//!   the whole reduction (or a chunk of it, continued by the next call), so
//!   each weight and each input vector loaded feeds several FMAs. A tier
//!   offers several `(CB, R)` of the same register count ([`fwd_shapes`]):
//!   long tiles for large planes, short tiles over more channels for the
//!   small planes of the deep levels, where a 96-position tile would mostly
//!   compute padding (a 3x3 plane is 15 padded positions).
//! - [`Real::dw_tile`]: `NT` weight columns (input channel, tap) times `CO`
//!   output channels, summed over positions. Vectorised along the output
//!   channels (the gradient is pre-transposed to position-major), input
//!   values broadcast, so the reduction over positions needs no horizontal
//!   sums and accumulators are the weight gradient itself.
//!
//! f32 runs one generic source per instruction-set tier (`crate::simd`):
//! AVX-512 (24 zmm accumulators), AVX2 + FMA (8 or 12 ymm over sub-tiles
//! of 16 or 8 positions), NEON (24 q registers) or portable 4-lane arrays
//! (the baseline's 16 registers, no FMA). f64 uses the plain loops below.

use crate::simd::{self, Lanes, Quad, Tier};
use candle_core::WithDType;
use std::ops::{Add, AddAssign, Mul, MulAssign};

/// A forward tile: `cb` output channels times `16 * r` positions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct TileShape {
    /// Output channels per tile.
    pub cb: usize,
    /// Positions per tile, in units of 16.
    pub r: usize,
    /// Relative time per multiply-add (more broadcast loads per FMA in the
    /// short tiles), for choosing between shapes.
    pub cost: f32,
}

impl TileShape {
    /// Output positions per tile.
    pub fn positions(self) -> usize {
        16 * self.r
    }
}

/// Positions of the longest tile (the padded slab's slack covers it).
pub(crate) const MAX_TILE: usize = 96;

const fn shape(cb: usize, r: usize, cost: f32) -> TileShape {
    TileShape { cb, r, cost }
}

/// The forward tile shapes of `tier` for type `T` (f64 and the tiers with
/// 4-lane vectors keep 4 output channels; AVX-512 trades positions for
/// channels at a constant 24 accumulators).
pub(crate) fn fwd_shapes(tier: Tier, is_f32: bool) -> &'static [TileShape] {
    const WIDE: [TileShape; 4] = [
        shape(4, 6, 1.0),
        shape(8, 3, 1.0),
        shape(12, 2, 1.05),
        shape(24, 1, 1.15),
    ];
    const SUBTILED: [TileShape; 4] = [
        shape(4, 6, 1.0),
        shape(4, 3, 1.0),
        shape(4, 2, 1.0),
        shape(4, 1, 1.0),
    ];
    const NEON: [TileShape; 2] = [shape(4, 6, 1.0), shape(4, 3, 1.0)];
    match tier {
        Tier::Avx512 if is_f32 => &WIDE,
        Tier::Neon if is_f32 => &NEON,
        _ => &SUBTILED,
    }
}

/// Accumulators of one weight-gradient tile (`NT * CO`).
pub(crate) const DW_ACC: usize = 384;

/// The float types our CPU kernels support (f32 and f64).
pub(crate) trait Real:
    WithDType + Default + Add<Output = Self> + Mul<Output = Self> + AddAssign + MulAssign + Send + Sync
{
    /// Whether this is f32 (the type the SIMD tiers serve).
    const IS_F32: bool;

    /// `out[c * 16 R + i] = sum_j w[j * CB + c] * x[offs[j] + i]` for
    /// `c < CB`, `i < 16 R`; with `accumulate`, the sum continues from the
    /// values in `out` (the same additions, in the same order, as one call
    /// over the concatenated offsets).
    ///
    /// # Safety
    /// `x + offs[j] + i` must be readable for every `j` and `i < 16 R`, `w`
    /// must hold `offs.len() * CB` values and `out` `CB * 16 R` (written
    /// ones, with `accumulate`).
    unsafe fn fwd_tile<const CB: usize, const R: usize>(
        x: *const Self,
        offs: &[usize],
        w: *const Self,
        out: *mut Self,
        accumulate: bool,
    );

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
unsafe fn fwd_tile_portable<T: Real, const CB: usize, const R: usize>(
    x: *const T,
    offs: &[usize],
    w: *const T,
    out: *mut T,
    accumulate: bool,
) {
    let tile = 16 * R;
    // SAFETY: the caller guarantees CB * tile writable values at out.
    let out = unsafe { std::slice::from_raw_parts_mut(out, CB * tile) };
    if !accumulate {
        out.fill(T::default());
    }
    for (j, &off) in offs.iter().enumerate() {
        // SAFETY: the caller guarantees tile readable values at x + off and
        // CB weights at w + j * CB.
        let (xs, ws) = unsafe {
            (
                std::slice::from_raw_parts(x.add(off), tile),
                std::slice::from_raw_parts(w.add(j * CB), CB),
            )
        };
        for (c, &wv) in ws.iter().enumerate() {
            let o = &mut out[c * tile..(c + 1) * tile];
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
    const IS_F32: bool = false;

    unsafe fn fwd_tile<const CB: usize, const R: usize>(
        x: *const Self,
        offs: &[usize],
        w: *const Self,
        out: *mut Self,
        accumulate: bool,
    ) {
        // SAFETY: same contract.
        unsafe { fwd_tile_portable::<f64, CB, R>(x, offs, w, out, accumulate) }
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

/// Forward tile over any [`Lanes`]: `CB x RV` vector accumulators per
/// sub-tile of `RV * V::N` positions, over the tile's `tile` positions (the
/// weights are read again per sub-tile, the inputs once).
///
/// # Safety
/// As [`Real::fwd_tile`] with `16 R = tile`; `V`'s features must be
/// enabled in the caller.
#[inline(always)]
unsafe fn fwd_tile_lanes<V: Lanes, const CB: usize, const RV: usize>(
    x: *const f32,
    offs: &[usize],
    w: *const f32,
    out: *mut f32,
    tile: usize,
    accumulate: bool,
) {
    let step = RV * V::N;
    debug_assert_eq!(tile % step, 0);
    for s in (0..tile).step_by(step) {
        // SAFETY: the caller guarantees the reads and writes and the features.
        unsafe {
            let mut acc = [[V::zero(); RV]; CB];
            if accumulate {
                for (c, row) in acc.iter_mut().enumerate() {
                    for (r, a) in row.iter_mut().enumerate() {
                        *a = V::load(out.add(c * tile + s + r * V::N));
                    }
                }
            }
            for (j, &off) in offs.iter().enumerate() {
                let p = x.add(off + s);
                let mut xv = [V::zero(); RV];
                for (r, v) in xv.iter_mut().enumerate() {
                    *v = V::load(p.add(r * V::N));
                }
                let wj = w.add(j * CB);
                for (c, row) in acc.iter_mut().enumerate() {
                    let wv = V::splat(*wj.add(c));
                    for (a, &xr) in row.iter_mut().zip(xv.iter()) {
                        *a = V::mul_add(wv, xr, *a);
                    }
                }
            }
            for (c, row) in acc.iter().enumerate() {
                for (r, a) in row.iter().enumerate() {
                    a.store(out.add(c * tile + s + r * V::N));
                }
            }
        }
    }
}

/// Weight-gradient tile over any [`Lanes`]: the `NT` weight columns in
/// blocks of `TB`, each block holding `TB x (16 CV / V::N)` accumulators
/// (at most `MV` vectors per column) while the positions stream by.
///
/// # Safety
/// As [`Real::dw_tile`]; `V`'s features must be enabled in the caller.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn dw_tile_lanes<
    V: Lanes,
    const CV: usize,
    const NT: usize,
    const TB: usize,
    const MV: usize,
>(
    dyt: *const f32,
    dyt_stride: usize,
    nq: usize,
    x: *const f32,
    offs: &[usize; NT],
    acc: *mut f32,
    acc_stride: usize,
) {
    let vpt = 16 * CV / V::N;
    debug_assert!(vpt <= MV && NT.is_multiple_of(TB));
    for t0 in (0..NT).step_by(TB) {
        // SAFETY: the caller guarantees the reads and writes and the features.
        unsafe {
            let mut a = [[V::zero(); MV]; TB];
            let mut xp = [x; TB];
            for (t, p) in xp.iter_mut().enumerate() {
                *p = x.add(offs[t0 + t]);
            }
            for q in 0..nq {
                let d = dyt.add(q * dyt_stride);
                let mut dv = [V::zero(); MV];
                for (v, dvv) in dv.iter_mut().enumerate().take(vpt) {
                    *dvv = V::load(d.add(v * V::N));
                }
                for t in 0..TB {
                    let b = V::splat(*xp[t].add(q));
                    for v in 0..vpt {
                        a[t][v] = V::mul_add(b, dv[v], a[t][v]);
                    }
                }
            }
            for t in 0..TB {
                for v in 0..vpt {
                    let p = acc.add((t0 + t) * acc_stride + v * V::N);
                    V::add(V::load(p), a[t][v]).store(p);
                }
            }
        }
    }
}

/// Runs the weight-gradient tile with the largest column block that
/// divides `NT` and keeps its accumulators, the `16 CV / lanes` gradient
/// vectors and one broadcast within the tier's `$regs` vector registers.
macro_rules! dw_blocks {
    ($lanes:ty, $regs:expr, $max_v:expr, $cv:ident, $nt:ident, $args:expr) => {{
        let (dyt, dyt_stride, nq, x, offs, acc, acc_stride) = $args;
        let vpt = 16 * $cv / <$lanes as Lanes>::N;
        let fits = |tb: usize| $nt % tb == 0 && tb * vpt + vpt < $regs;
        // SAFETY (for the calls): forwarded contract; features enabled.
        unsafe {
            if fits(24) {
                dw_tile_lanes::<$lanes, $cv, $nt, 24, $max_v>(
                    dyt, dyt_stride, nq, x, offs, acc, acc_stride,
                )
            } else if fits(12) {
                dw_tile_lanes::<$lanes, $cv, $nt, 12, $max_v>(
                    dyt, dyt_stride, nq, x, offs, acc, acc_stride,
                )
            } else if fits(6) {
                dw_tile_lanes::<$lanes, $cv, $nt, 6, $max_v>(
                    dyt, dyt_stride, nq, x, offs, acc, acc_stride,
                )
            } else if fits(4) {
                dw_tile_lanes::<$lanes, $cv, $nt, 4, $max_v>(
                    dyt, dyt_stride, nq, x, offs, acc, acc_stride,
                )
            } else if fits(3) {
                dw_tile_lanes::<$lanes, $cv, $nt, 3, $max_v>(
                    dyt, dyt_stride, nq, x, offs, acc, acc_stride,
                )
            } else if fits(2) {
                dw_tile_lanes::<$lanes, $cv, $nt, 2, $max_v>(
                    dyt, dyt_stride, nq, x, offs, acc, acc_stride,
                )
            } else {
                dw_tile_lanes::<$lanes, $cv, $nt, 1, $max_v>(
                    dyt, dyt_stride, nq, x, offs, acc, acc_stride,
                )
            }
        }
    }};
}

impl Real for f32 {
    const IS_F32: bool = true;

    unsafe fn fwd_tile<const CB: usize, const R: usize>(
        x: *const Self,
        offs: &[usize],
        w: *const Self,
        out: *mut Self,
        accumulate: bool,
    ) {
        let acc = accumulate;
        match simd::active() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the tier is supported (checked when it was chosen).
            Tier::Avx512 => unsafe { x86::fwd_avx512::<CB, R>(x, offs, w, out, acc) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Tier::Avx2 => unsafe { x86::fwd_avx2::<CB, R>(x, offs, w, out, acc) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: as above.
            Tier::Neon => unsafe { arm::fwd_neon::<CB, R>(x, offs, w, out, acc) },
            // SAFETY: same contract; the portable lanes need no feature.
            _ => unsafe {
                if CB <= 4 {
                    fwd_tile_lanes::<Quad, CB, 2>(x, offs, w, out, 16 * R, acc)
                } else {
                    fwd_tile_lanes::<Quad, CB, 1>(x, offs, w, out, 16 * R, acc)
                }
            },
        }
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
        match simd::active() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the tier is supported (checked when it was chosen).
            Tier::Avx512 => unsafe {
                x86::dw_avx512::<CV, NT>(dyt, dyt_stride, nq, x, offs, acc, acc_stride)
            },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Tier::Avx2 => unsafe {
                x86::dw_avx2::<CV, NT>(dyt, dyt_stride, nq, x, offs, acc, acc_stride)
            },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: as above.
            Tier::Neon => unsafe {
                arm::dw_neon::<CV, NT>(dyt, dyt_stride, nq, x, offs, acc, acc_stride)
            },
            // SAFETY: same contract; the portable lanes need no feature.
            _ => dw_blocks!(
                Quad,
                16,
                8,
                CV,
                NT,
                (dyt, dyt_stride, nq, x, offs, acc, acc_stride)
            ),
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Lanes, dw_tile_lanes, fwd_tile_lanes};
    use crate::simd::x86::{Ymm, Zmm};

    /// AVX-512 forward tile: `CB x R` zmm accumulators (24 of 32 registers
    /// in every shape of `fwd_shapes`).
    ///
    /// # Safety
    /// AVX-512F must be available; memory as in `Real::fwd_tile`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn fwd_avx512<const CB: usize, const R: usize>(
        x: *const f32,
        offs: &[usize],
        w: *const f32,
        out: *mut f32,
        acc: bool,
    ) {
        // SAFETY: forwarded contract; AVX-512F enabled here.
        unsafe { fwd_tile_lanes::<Zmm, CB, R>(x, offs, w, out, 16 * R, acc) }
    }

    /// AVX2 forward tile: `4 x 2` ymm accumulators over sub-tiles of 16
    /// positions (`4 x 3` plus the loads needs 17 of the 16 registers, and
    /// the spilled accumulator cost more than the extra weight broadcasts),
    /// or `CB x 1` over sub-tiles of 8 for wider channel blocks.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; memory as in `Real::fwd_tile`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn fwd_avx2<const CB: usize, const R: usize>(
        x: *const f32,
        offs: &[usize],
        w: *const f32,
        out: *mut f32,
        acc: bool,
    ) {
        // SAFETY: forwarded contract; AVX2 and FMA enabled here.
        unsafe {
            if CB <= 4 {
                fwd_tile_lanes::<Ymm, CB, 2>(x, offs, w, out, 16 * R, acc)
            } else {
                fwd_tile_lanes::<Ymm, CB, 1>(x, offs, w, out, 16 * R, acc)
            }
        }
    }

    /// AVX-512 weight-gradient tile: up to 24 zmm accumulators of 32 registers.
    ///
    /// # Safety
    /// AVX-512F must be available; memory as in `Real::dw_tile`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn dw_avx512<const CV: usize, const NT: usize>(
        dyt: *const f32,
        dyt_stride: usize,
        nq: usize,
        x: *const f32,
        offs: &[usize; NT],
        acc: *mut f32,
        acc_stride: usize,
    ) {
        dw_blocks!(
            Zmm,
            32,
            2,
            CV,
            NT,
            (dyt, dyt_stride, nq, x, offs, acc, acc_stride)
        )
    }

    /// AVX2 weight-gradient tile: accumulators, gradient vectors and a
    /// broadcast within the 16 ymm registers.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; memory as in `Real::dw_tile`.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn dw_avx2<const CV: usize, const NT: usize>(
        dyt: *const f32,
        dyt_stride: usize,
        nq: usize,
        x: *const f32,
        offs: &[usize; NT],
        acc: *mut f32,
        acc_stride: usize,
    ) {
        dw_blocks!(
            Ymm,
            16,
            4,
            CV,
            NT,
            (dyt, dyt_stride, nq, x, offs, acc, acc_stride)
        )
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::{Lanes, dw_tile_lanes, fwd_tile_lanes};
    use crate::simd::arm::Q;

    /// NEON forward tile: `CB x 6` q accumulators (24 of 32 registers) over
    /// sub-tiles of 24 positions, or `CB x 4` over 16 when 24 does not
    /// divide the tile.
    ///
    /// # Safety
    /// NEON must be available; memory as in `Real::fwd_tile`.
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn fwd_neon<const CB: usize, const R: usize>(
        x: *const f32,
        offs: &[usize],
        w: *const f32,
        out: *mut f32,
        acc: bool,
    ) {
        // SAFETY: forwarded contract; NEON enabled here.
        unsafe {
            if (16 * R).is_multiple_of(24) {
                fwd_tile_lanes::<Q, CB, 6>(x, offs, w, out, 16 * R, acc)
            } else {
                fwd_tile_lanes::<Q, CB, 4>(x, offs, w, out, 16 * R, acc)
            }
        }
    }

    /// NEON weight-gradient tile: within the 32 q registers.
    ///
    /// # Safety
    /// NEON must be available; memory as in `Real::dw_tile`.
    #[target_feature(enable = "neon")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn dw_neon<const CV: usize, const NT: usize>(
        dyt: *const f32,
        dyt_stride: usize,
        nq: usize,
        x: *const f32,
        offs: &[usize; NT],
        acc: *mut f32,
        acc_stride: usize,
    ) {
        dw_blocks!(
            Q,
            32,
            8,
            CV,
            NT,
            (dyt, dyt_stride, nq, x, offs, acc, acc_stride)
        )
    }
}
