//! Direct 3D convolution on the CPU: forward, input gradient and weight
//! gradient as candle custom ops.
//!
//! The trick that makes a direct kernel simple and fast: work on
//! zero-padded planes and index every output plane in *padded-width*
//! coordinates `q = yo * Wp + xo` (`Wp` the padded row length). In those
//! coordinates a kernel tap `(dz, dy, dx)` of input channel `ci` is a
//! constant offset, so every (channel, tap) pair reads one contiguous run
//! of padded input and no im2col matrix is ever built. Positions with
//! `xo >= Wo` are computed and dropped (2 of 58 columns at the benchmark
//! size). Register tiles come from [`super::kernel`].
//!
//! The padded input never exists as a whole: each task walks a run of
//! output planes keeping a ring of the `k` padded input planes it needs
//! (per channel), so every input plane is padded about once, into a buffer
//! that stays in cache, and no large temporary is allocated (fresh large
//! allocations cost page faults on every call).
//!
//! Input gradient = convolution of the output gradient, padded by
//! `k - 1 - p`, with the spatially flipped, in/out-transposed kernel: the
//! same forward driver. Weight gradient = sum over positions of
//! `dy[co][q] * x[off(ci, tap) + q]`, with `dy` transposed position-major
//! per block of rows so the reduction vectorises over output channels.

use super::cpu::{
    Kernel2, Kernel3, SendPtr, apply2, assume_init, linear_grads, par_filled, uninit_vec,
};
use super::kernel::{DW_ACC, MAX_TILE, Real, TileShape, fwd_shapes};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

/// Target positions per weight-gradient block (whole rows; its transposed
/// gradient, `rows * Wp x Cout`, stays in L1/L2 while every column group
/// reuses it).
const QC: usize = 256;

/// Geometry of one convolution: input `(n, c, d, h, w)`, cubic kernel `k`,
/// padding `pad`.
#[derive(Clone, Copy, Debug)]
struct Geom {
    n: usize,
    c: usize,
    d: usize,
    h: usize,
    w: usize,
    k: usize,
    pad: usize,
}

impl Geom {
    fn hp(&self) -> usize {
        self.h + 2 * self.pad
    }
    fn wp(&self) -> usize {
        self.w + 2 * self.pad
    }
    /// Output dims `(do, ho, wo)`.
    fn out(&self) -> (usize, usize, usize) {
        let o = |a: usize| a + 2 * self.pad + 1 - self.k;
        (o(self.d), o(self.h), o(self.w))
    }
    fn plane(&self) -> usize {
        self.hp() * self.wp()
    }
}

/// Zeros after the last slab plane so the last tile's vector reads (up to
/// a whole tile past the last valid position) stay in bounds.
fn slack(k: usize) -> usize {
    MAX_TILE + k + 16
}

/// A ring of the `k` zero-padded input planes (padded depth `zp` in slot
/// `zp % k`) of every channel of one sample: layout `[c][slot][Hp * Wp]`.
struct Slab<T> {
    g: Geom,
    buf: Vec<T>,
    tags: Vec<Option<(usize, usize)>>,
}

impl<T: Real> Slab<T> {
    fn new(g: Geom) -> Self {
        Slab {
            g,
            buf: vec![T::default(); g.c * g.k * g.plane() + slack(g.k)],
            tags: vec![None; g.k],
        }
    }

    /// Makes padded planes `zo .. zo + k` of sample `ni` present.
    fn load(&mut self, x: &[T], ni: usize, zo: usize) {
        let g = self.g;
        let (hp, wp, pl, pad) = (g.hp(), g.wp(), g.plane(), g.pad);
        for dz in 0..g.k {
            let zp = zo + dz;
            let slot = zp % g.k;
            if self.tags[slot] == Some((ni, zp)) {
                continue;
            }
            for ci in 0..g.c {
                let dst = &mut self.buf[(ci * g.k + slot) * pl..][..pl];
                if zp < pad || zp >= pad + g.d {
                    dst.fill(T::default());
                    continue;
                }
                let src = &x[((ni * g.c + ci) * g.d + zp - pad) * g.h * g.w..][..g.h * g.w];
                dst[..pad * wp].fill(T::default());
                for y in 0..g.h {
                    let row = &mut dst[(y + pad) * wp..][..wp];
                    row[..pad].fill(T::default());
                    row[pad..pad + g.w].copy_from_slice(&src[y * g.w..][..g.w]);
                    row[pad + g.w..].fill(T::default());
                }
                dst[(pad + g.h) * wp..hp * wp].fill(T::default());
            }
            self.tags[slot] = Some((ni, zp));
        }
    }

    /// Offsets in `buf` of every (channel, tap) run for output plane `zo`,
    /// in weight order `j = ci * k^3 + tap`.
    fn offsets(&self, zo: usize, offs: &mut Vec<usize>) {
        let g = self.g;
        let (wp, pl, k) = (g.wp(), g.plane(), g.k);
        offs.clear();
        for ci in 0..g.c {
            for dz in 0..k {
                let s = (ci * k + (zo + dz) % k) * pl;
                for dy in 0..k {
                    for dx in 0..k {
                        offs.push(s + dy * wp + dx);
                    }
                }
            }
        }
    }
}

/// Packs weights as `[co block][j = ci * k^3 + tap][cb]`, zero beyond
/// `cout`, from `get(co, ci, tap)`.
fn pack_weights<T: Real>(
    cb: usize,
    cout: usize,
    cin: usize,
    k3: usize,
    get: impl Fn(usize, usize, usize) -> T + Sync,
) -> Vec<T> {
    let nb = cout.div_ceil(cb);
    let jn = cin * k3;
    // One channel block per task (the deep levels' weights are megabytes).
    let mut out = vec![T::default(); nb * jn * cb];
    out.par_chunks_mut(jn * cb)
        .enumerate()
        .for_each(|(b, block)| {
            for c in 0..cb.min(cout - b * cb) {
                for ci in 0..cin {
                    for tap in 0..k3 {
                        block[(ci * k3 + tap) * cb + c] = get(b * cb + c, ci, tap);
                    }
                }
            }
        });
    out
}

/// Splits `total` items into `parts` contiguous ranges.
fn range(total: usize, parts: usize, i: usize) -> std::ops::Range<usize> {
    i * total / parts..(i + 1) * total / parts
}

/// The forward tile shape that computes `cout` channels over planes of
/// `qlen` padded positions in the least time: multiply-adds done,
/// padding and rounding included, times the shape's cost per FMA.
fn best_shape(shapes: &[TileShape], qlen: usize, cout: usize) -> TileShape {
    let time = |s: &TileShape| {
        let t = s.positions();
        (qlen.div_ceil(t) * t * cout.div_ceil(s.cb) * s.cb) as f32 * s.cost
    };
    *shapes
        .iter()
        .min_by(|a, b| time(a).total_cmp(&time(b)))
        .expect("every tier has a tile shape")
}

/// A per-output-channel affine map and ReLU, `max(0, scale[c] v +
/// shift[c])`, applied to the convolution's values as they are stored:
/// inference's conv bias and BatchNorm folded, at no extra pass.
#[derive(Clone, Copy)]
pub(crate) struct Epilogue<'a, T> {
    pub scale: &'a [T],
    pub shift: &'a [T],
}

impl<T: Real> Epilogue<'_, T> {
    /// `max(0, scale[c] v + shift[c])` for each value `v` of channel `c`.
    pub(crate) fn apply(&self, c: usize, values: &mut [T]) {
        let (a, t, zero) = (self.scale[c], self.shift[c], T::default());
        for v in values.iter_mut() {
            let y = a * *v + t;
            *v = if y > zero { y } else { zero };
        }
    }
}

/// Convolution of `x` (geometry `g`) for `cout` output channels with the
/// weights `get(co, ci, tap)`, then `epilogue` if any; returns `(n, cout,
/// do, ho, wo)`.
fn conv_forward<T: Real>(
    x: &[T],
    g: Geom,
    cout: usize,
    get: impl Fn(usize, usize, usize) -> T + Sync,
    epilogue: Option<Epilogue<'_, T>>,
) -> Vec<T> {
    let (_, ho, _) = g.out();
    let shape = best_shape(
        fwd_shapes(crate::simd::active(), T::IS_F32),
        ho * g.wp(),
        cout,
    );
    let wpk = pack_weights(shape.cb, cout, g.c, g.k * g.k * g.k, get);
    conv_forward_in(shape, x, g, cout, &wpk, epilogue)
}

/// [`conv_forward_tiled`] instantiated for `shape` (every shape of
/// [`fwd_shapes`]), weights packed for it.
fn conv_forward_in<T: Real>(
    shape: TileShape,
    x: &[T],
    g: Geom,
    cout: usize,
    wpk: &[T],
    epilogue: Option<Epilogue<'_, T>>,
) -> Vec<T> {
    match (shape.cb, shape.r) {
        (4, 6) => conv_forward_tiled::<T, 4, 6>(x, g, cout, wpk, epilogue),
        (4, 3) => conv_forward_tiled::<T, 4, 3>(x, g, cout, wpk, epilogue),
        (4, 2) => conv_forward_tiled::<T, 4, 2>(x, g, cout, wpk, epilogue),
        (4, 1) => conv_forward_tiled::<T, 4, 1>(x, g, cout, wpk, epilogue),
        (8, 3) => conv_forward_tiled::<T, 8, 3>(x, g, cout, wpk, epilogue),
        (12, 2) => conv_forward_tiled::<T, 12, 2>(x, g, cout, wpk, epilogue),
        (24, 1) => conv_forward_tiled::<T, 24, 1>(x, g, cout, wpk, epilogue),
        other => unreachable!("no forward tile {other:?}"),
    }
}

/// Bytes of input window a forward tile's reduction chunk may read, so it
/// stays in L1 (32 KB or more on every x86 and Arm core we target) while
/// every channel block of the group reads it.
const L1_WINDOW: usize = 24 << 10;

/// Input channels per reduction chunk: a channel's window is `k` padded
/// planes of `k - 1` rows plus the tile (and `k - 1` columns).
fn channels_per_chunk<T>(g: Geom, tile: usize) -> usize {
    let per_channel = g.k * ((g.k - 1) * g.wp() + tile + g.k) * std::mem::size_of::<T>();
    (L1_WINDOW / per_channel).clamp(1, g.c.max(1))
}

/// [`conv_forward`] with tiles of `CB` channels by `16 R` positions and
/// weights packed for them.
fn conv_forward_tiled<T: Real, const CB: usize, const R: usize>(
    x: &[T],
    g: Geom,
    cout: usize,
    wpk: &[T],
    epilogue: Option<Epilogue<'_, T>>,
) -> Vec<T> {
    let tile = 16 * R;
    let (do_, ho, wo) = g.out();
    let wp = g.wp();
    let jn = g.c * g.k * g.k * g.k;
    let nb = cout.div_ceil(CB);
    assert!(x.len() == g.n * g.c * g.d * g.h * g.w && wpk.len() == nb * jn * CB);
    let planes = g.n * do_;
    let qlen = ho * wp;
    let ntiles = qlen.div_ceil(tile);
    // Runs of planes (each refills k - 1 planes at its start), and when
    // planes are few, groups of output-channel blocks, for load balance.
    let want = 4 * rayon::current_num_threads();
    let runs = planes.min(want);
    let groups = want.div_ceil(runs).min(nb);
    // Every output value is written once below (each plane by one run, each
    // channel block by one group, each valid position of a row by a copy).
    let mut out = uninit_vec::<T>(g.n * cout * do_ * ho * wo);
    let optr = SendPtr(out.as_mut_ptr().cast::<T>());
    let k3 = g.k * g.k * g.k;
    let chunk = channels_per_chunk::<T>(g, tile);
    (0..runs * groups).into_par_iter().for_each(|task| {
        let (run, grp) = (task / groups, task % groups);
        let blocks = range(nb, groups, grp);
        let mut slab = Slab::new(g);
        let mut offs = Vec::with_capacity(jn);
        let mut buf = vec![T::default(); blocks.len() * CB * tile];
        for plane in range(planes, runs, run) {
            let (ni, zo) = (plane / do_, plane % do_);
            slab.load(x, ni, zo);
            slab.offsets(zo, &mut offs);
            for t in 0..ntiles {
                let q0 = t * tile;
                let qend = (q0 + tile).min(qlen);
                // The reduction over input channels runs in chunks, each
                // through every channel block of the group, so a chunk's
                // input window is read from L1 by all blocks but the first.
                // (No input channel: one empty chunk, which zero-fills.)
                for c0 in (0..g.c.max(1)).step_by(chunk) {
                    let js = c0 * k3..(c0 + chunk).min(g.c) * k3;
                    for (i, b) in blocks.clone().enumerate() {
                        // SAFETY: reads stay below offs[jn - 1] + q0 + tile
                        // <= slab size + MAX_TILE + k (see `slack`); weights
                        // j in js of block b exist; buf holds CB * tile per
                        // block of the group.
                        unsafe {
                            T::fwd_tile::<CB, R>(
                                slab.buf.as_ptr().add(q0),
                                &offs[js.clone()],
                                wpk.as_ptr().add((b * jn + js.start) * CB),
                                buf.as_mut_ptr().add(i * CB * tile),
                                c0 > 0,
                            )
                        };
                    }
                }
                for (i, b) in blocks.clone().enumerate() {
                    for c in 0..CB.min(cout - b * CB) {
                        let co = b * CB + c;
                        let obase = ((ni * cout + co) * do_ + zo) * ho * wo;
                        let vals = &mut buf[(i * CB + c) * tile..(i * CB + c + 1) * tile];
                        if let Some(e) = epilogue {
                            e.apply(co, vals);
                        }
                        // Copy the valid run of each output row in the tile.
                        let mut q = q0;
                        while q < qend {
                            let (yo, xo) = (q / wp, q % wp);
                            let row_end = (yo * wp + wp).min(qend);
                            if xo < wo {
                                let len = (wo - xo).min(row_end - q);
                                // SAFETY: in bounds; (plane, q) pairs are
                                // disjoint between tasks.
                                unsafe {
                                    std::ptr::copy_nonoverlapping(
                                        vals.as_ptr().add(q - q0),
                                        optr.get().add(obase + yo * wo + xo),
                                        len,
                                    )
                                };
                            }
                            q = row_end;
                        }
                    }
                }
            }
        }
    });
    // SAFETY: see above: every value was written.
    unsafe { assume_init(out) }
}

/// Weight gradient: `x` input (geometry `g`), `dy` the output gradient
/// `(n, cout, do, ho, wo)`; returns `(cout, cin, k, k, k)`.
fn conv_wgrad<T: Real>(x: &[T], g: Geom, dy: &[T], cout: usize) -> Vec<T> {
    let (do_, ho, wo) = g.out();
    assert!(x.len() == g.n * g.c * g.d * g.h * g.w && dy.len() == g.n * cout * do_ * ho * wo);
    if ho * wo <= SMALL_PLANE {
        conv_wgrad_columns(x, g, dy, cout)
    } else {
        conv_wgrad_planes(x, g, dy, cout)
    }
}

/// Weight gradient plane by plane over the padded slab (large planes).
fn conv_wgrad_planes<T: Real>(x: &[T], g: Geom, dy: &[T], cout: usize) -> Vec<T> {
    let (do_, ho, wo) = g.out();
    let wp = g.wp();
    let (cin, k) = (g.c, g.k);
    let lay = WgradLayout::new(cin, k, cout);
    let (coutp, jn, jp) = (lay.coutp, lay.jn, lay.jp);
    let planes = g.n * do_;
    let rows_per = (QC / wp).max(1);
    // Fixed partition of the planes (independent of the thread count, so
    // the summation order and hence the result is reproducible); each part
    // has its own accumulator, capped at ~32 MB in total.
    let acc_len = jp * coutp;
    let cap = ((32usize << 20) / (acc_len * std::mem::size_of::<T>())).max(1);
    // A part costs one accumulator (zeroed, then summed): worth it only
    // when it has a few dozen output positions to work through.
    let positions = planes * ho * wo;
    let parts = planes.min(8).min(cap).min(positions / 32).max(1);
    let partials: Vec<Vec<T>> = (0..parts)
        .into_par_iter()
        .map(|s| {
            let mut acc = vec![T::default(); acc_len];
            // Positions with xo >= wo and channels >= cout are never
            // written, so they stay zero and add nothing.
            let mut dyt = vec![T::default(); rows_per * wp * coutp];
            let mut slab = Slab::new(g);
            let mut offs = Vec::with_capacity(jp);
            for plane in range(planes, parts, s) {
                let (ni, zo) = (plane / do_, plane % do_);
                slab.load(x, ni, zo);
                slab.offsets(zo, &mut offs);
                offs.resize(jp, 0);
                for y0 in (0..ho).step_by(rows_per) {
                    let rows = rows_per.min(ho - y0);
                    let nq = rows * wp;
                    // dyt[(r, xo), co] = dy[co, (r, xo)], in 16 x 16 blocks
                    // so reads and writes both stay within a few lines.
                    let plane_stride = do_ * ho * wo;
                    let first = (ni * cout * do_ + zo) * ho * wo + y0 * wo;
                    for c0 in (0..cout).step_by(16) {
                        let cn = 16.min(cout - c0);
                        for r in 0..rows {
                            for x0 in (0..wo).step_by(16) {
                                let xn = 16.min(wo - x0);
                                for co in c0..c0 + cn {
                                    let src = &dy[first + co * plane_stride + r * wo + x0..][..xn];
                                    let base = (r * wp + x0) * coutp + co;
                                    for (i, v) in src.iter().enumerate() {
                                        dyt[base + i * coutp] = *v;
                                    }
                                }
                            }
                        }
                    }
                    // SAFETY: x reads as in the forward (q < ho * wp); dyt
                    // has nq rows of coutp; acc jp rows.
                    unsafe {
                        lay.accumulate(slab.buf.as_ptr().add(y0 * wp), &offs, &dyt, nq, &mut acc)
                    };
                }
            }
            acc
        })
        .collect();
    finish_wgrad(partials, acc_len, coutp, cout, jn)
}

/// Sums the parts' `(j, co)` accumulators element by element in a fixed
/// order (contiguous, so it streams), then moves `(j, co)` to `(co, j)`.
fn finish_wgrad<T: Real>(
    partials: Vec<Vec<T>>,
    acc_len: usize,
    coutp: usize,
    cout: usize,
    jn: usize,
) -> Vec<T> {
    let mut parts_iter = partials.into_iter();
    let mut total = parts_iter
        .next()
        .unwrap_or_else(|| vec![T::default(); acc_len]);
    for part in parts_iter {
        total
            .par_chunks_mut(1 << 14)
            .zip(part.par_chunks(1 << 14))
            .for_each(|(t, p)| t.iter_mut().zip(p).for_each(|(a, b)| *a += *b));
    }
    // One output channel's row per task: the deep levels' weights are
    // megabytes, too many for one thread's strided reads.
    par_filled(cout * jn, jn, |co, row| {
        for (j, v) in row.iter_mut().enumerate() {
            v.write(total[j * coutp + co]);
        }
    })
}

/// Output planes of at most this many positions take the weight-gradient
/// path over gathered columns ([`conv_wgrad_columns`]).
const SMALL_PLANE: usize = 100;
/// Output positions per gathered block of [`conv_wgrad_columns`].
const COLUMN_BLOCK: usize = 256;

/// The weight-gradient layout shared by both paths: output channels per
/// vector block, weight columns per tile, padded channel and column counts.
struct WgradLayout {
    co_w: usize,
    nt: usize,
    coutp: usize,
    jn: usize,
    jp: usize,
}

impl WgradLayout {
    fn new(cin: usize, k: usize, cout: usize) -> Self {
        let co_w = if cout.is_multiple_of(32) { 32 } else { 16 };
        let nt = DW_ACC / co_w;
        let jn = cin * k * k * k;
        WgradLayout {
            co_w,
            nt,
            coutp: cout.next_multiple_of(co_w),
            jn,
            jp: jn.next_multiple_of(nt),
        }
    }

    /// `acc[j][co] += sum_q x[offs[j] + q] * dyt[q][co]` over the column
    /// groups and channel blocks, `nq` positions.
    ///
    /// # Safety
    /// `x + offs[j] + q` readable for `j < jp`, `q < nq`; `dyt` holds `nq`
    /// rows of `coutp`; `acc` `jp` rows of `coutp`.
    unsafe fn accumulate<T: Real>(
        &self,
        x: *const T,
        offs: &[usize],
        dyt: &[T],
        nq: usize,
        acc: &mut [T],
    ) {
        // SAFETY: forwarded contract.
        unsafe { self.accumulate_groups(x, offs, dyt, nq, acc, 0..self.jp / self.nt) }
    }

    /// [`Self::accumulate`] for the column groups `groups` only: `offs`
    /// and `acc` start at the first group's first column.
    ///
    /// # Safety
    /// As [`Self::accumulate`] for those columns.
    unsafe fn accumulate_groups<T: Real>(
        &self,
        x: *const T,
        offs: &[usize],
        dyt: &[T],
        nq: usize,
        acc: &mut [T],
        groups: std::ops::Range<usize>,
    ) {
        let (nt, co_w, coutp) = (self.nt, self.co_w, self.coutp);
        for gi in 0..groups.len() {
            for v in 0..coutp / co_w {
                let dptr = dyt[v * co_w..].as_ptr();
                let aptr = acc[gi * nt * coutp + v * co_w..].as_mut_ptr();
                // SAFETY: forwarded contract.
                unsafe {
                    if co_w == 32 {
                        let o: &[usize; DW_ACC / 32] = offs[gi * nt..][..nt].try_into().unwrap();
                        T::dw_tile::<2, { DW_ACC / 32 }>(dptr, coutp, nq, x, o, aptr, coutp);
                    } else {
                        let o: &[usize; DW_ACC / 16] = offs[gi * nt..][..nt].try_into().unwrap();
                        T::dw_tile::<1, { DW_ACC / 16 }>(dptr, coutp, nq, x, o, aptr, coutp);
                    }
                }
            }
        }
    }
}

/// Weight gradient for small output planes (the deep levels): the input
/// values each weight meets are gathered into columns over the valid
/// output positions of several planes and samples at once (an im2col of
/// `COLUMN_BLOCK` positions), so a reduction runs over hundreds of
/// positions with no padding, where the plane-by-plane path would run
/// over a few dozen of which up to 40 % are padding columns.
fn conv_wgrad_columns<T: Real>(x: &[T], g: Geom, dy: &[T], cout: usize) -> Vec<T> {
    let (do_, ho, wo) = g.out();
    let (cin, k, pad) = (g.c, g.k, g.pad);
    let lay = WgradLayout::new(cin, k, cout);
    let (coutp, jn, jp) = (lay.coutp, lay.jn, lay.jp);
    let vol = do_ * ho * wo;
    let positions = g.n * vol;
    let acc_len = jp * coutp;
    let blocks = positions.div_ceil(COLUMN_BLOCK);
    // Tasks own disjoint runs of weight columns (their rows of the
    // accumulator), so each sums over every position in a fixed order and
    // no partial sums are needed; every task gathers only its columns.
    let groups = jp / lay.nt;
    let tasks = groups.min(4 * rayon::current_num_threads()).max(1);
    // The input zero-padded on every side, so a tap is a constant offset:
    // `xpad[base(q) + off(ci, tap)]`.
    let (dp, hp, wp) = (g.d + 2 * pad, g.hp(), g.wp());
    let pvol = dp * hp * wp;
    let mut xpad = vec![T::default(); g.n * cin * pvol];
    xpad.par_chunks_mut(pvol).enumerate().for_each(|(nc, dst)| {
        let src = &x[nc * g.d * g.h * g.w..][..g.d * g.h * g.w];
        for z in 0..g.d {
            for y in 0..g.h {
                let o = ((z + pad) * hp + y + pad) * wp + pad;
                dst[o..o + g.w].copy_from_slice(&src[(z * g.h + y) * g.w..][..g.w]);
            }
        }
    });
    let k3 = k * k * k;
    let tap_off: Vec<usize> = (0..jn)
        .map(|j| {
            let (ci, tap) = (j / k3, j % k3);
            ci * pvol + (tap / (k * k)) * hp * wp + (tap / k % k) * wp + tap % k
        })
        .collect();
    let nt = lay.nt;
    let pieces: Vec<Vec<T>> = (0..tasks)
        .into_par_iter()
        .map(|t| {
            let gr = range(groups, tasks, t);
            let (j0, j1) = (gr.start * nt, gr.end * nt);
            let mut acc = vec![T::default(); (j1 - j0) * coutp];
            // Rows beyond jn stay zero: the padded columns add nothing.
            let mut cols = vec![T::default(); (j1 - j0) * COLUMN_BLOCK];
            let mut dyt = vec![T::default(); COLUMN_BLOCK * coutp];
            let mut base = vec![0usize; COLUMN_BLOCK];
            let offs: Vec<usize> = (0..j1 - j0).map(|j| j * COLUMN_BLOCK).collect();
            for b in 0..blocks {
                let p0 = b * COLUMN_BLOCK;
                let m = COLUMN_BLOCK.min(positions - p0);
                // Each position's input base and its row of the transposed
                // gradient: dyt[q][co] = dy[ni][co][r], channels >= cout
                // staying zero.
                for (q, bq) in base[..m].iter_mut().enumerate() {
                    let (ni, r) = ((p0 + q) / vol, (p0 + q) % vol);
                    let (zo, yo, xo) = (r / (ho * wo), r / wo % ho, r % wo);
                    *bq = ni * cin * pvol + (zo * hp + yo) * wp + xo;
                    for (co, v) in dyt[q * coutp..][..cout].iter_mut().enumerate() {
                        *v = dy[(ni * cout + co) * vol + r];
                    }
                }
                // Gather: cols[j][q] = the input value weight column j
                // meets at position p0 + q.
                for (j, &off) in tap_off[j0.min(jn)..j1.min(jn)].iter().enumerate() {
                    let row = &mut cols[j * COLUMN_BLOCK..][..m];
                    let src = &xpad[off..];
                    for (out, &bq) in row.iter_mut().zip(&base[..m]) {
                        *out = src[bq];
                    }
                }
                // SAFETY: cols holds j1 - j0 rows of COLUMN_BLOCK >= m; dyt
                // m rows of coutp; acc j1 - j0 rows of coutp.
                unsafe {
                    lay.accumulate_groups(cols.as_ptr(), &offs, &dyt, m, &mut acc, gr.clone())
                };
            }
            acc
        })
        .collect();
    finish_wgrad(vec![pieces.concat()], acc_len, coutp, cout, jn)
}

pub(crate) struct Conv3d {
    pub padding: usize,
}

impl Kernel2 for Conv3d {
    fn op_name(&self) -> &'static str {
        "conv3d"
    }

    fn run<T: Real>(&self, x: &[T], sx: &Shape, w: &[T], sw: &Shape) -> Result<(Vec<T>, Shape)> {
        layer_forward(self.op_name(), self.padding, x, sx, w, sw, None)
    }
}

/// The convolution of `x` `(n, cin, d, h, w)` with `w` `(cout, cin, k, k,
/// k)` at `padding`, then `epilogue`: forward for [`Conv3d`] and
/// [`Conv3dAffineRelu`].
fn layer_forward<T: Real>(
    op: &str,
    padding: usize,
    x: &[T],
    sx: &Shape,
    w: &[T],
    sw: &Shape,
    epilogue: Option<Epilogue<'_, T>>,
) -> Result<(Vec<T>, Shape)> {
    let (n, cin, d, h, wd) = sx.dims5()?;
    let (cout, wcin, k, _, _) = sw.dims5()?;
    if wcin != cin
        || padding >= k
        || epilogue.is_some_and(|e| e.scale.len() != cout || e.shift.len() != cout)
    {
        bail!("{op}: bad shapes {sx:?} {sw:?}");
    }
    let k3 = k * k * k;
    let g = Geom {
        n,
        c: cin,
        d,
        h,
        w: wd,
        k,
        pad: padding,
    };
    let out = conv_forward(
        x,
        g,
        cout,
        |co, ci, tap| w[(co * cin + ci) * k3 + tap],
        epilogue,
    );
    let (do_, ho, wo) = g.out();
    Ok((out, Shape::from((n, cout, do_, ho, wo))))
}

impl CustomOp2 for Conv3d {
    fn name(&self) -> &'static str {
        "dtml-conv3d"
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

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::cudnn::forward(s1, l1, s2, l2, self.padding)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let padding = self.padding;
        linear_grads(
            x,
            w,
            || g.apply_op2_no_bwd(w, &Conv3dInputGrad { padding }),
            || {
                let k = w.dim(2)?;
                x.apply_op2_no_bwd(&g, &Conv3dWeightGrad { padding, k })
            },
        )
    }
}

/// Inference's V-Net layer: `(x, w, ss = [scale; shift] (2, Cout))` to
/// `max(0, scale[c] conv3d(x, w) + shift[c])`, the conv bias and the
/// BatchNorm's running statistics folded into `scale` and `shift` and
/// applied as the convolution stores its values. Forward only, run by
/// `conv_bn::LayerAffineRelu`.
pub(crate) struct Conv3dAffineRelu {
    pub padding: usize,
}

impl Kernel3 for Conv3dAffineRelu {
    fn op_name(&self) -> &'static str {
        "conv3d + affine + relu"
    }

    fn run<T: Real>(
        &self,
        x: &[T],
        sx: &Shape,
        w: &[T],
        sw: &Shape,
        ss: &[T],
    ) -> Result<(Vec<T>, Shape)> {
        let (scale, shift) = ss.split_at(ss.len() / 2);
        crate::profile::timed("conv3d", || {
            layer_forward(
                self.op_name(),
                self.padding,
                x,
                sx,
                w,
                sw,
                Some(Epilogue { scale, shift }),
            )
        })
    }
}

/// Input gradient: `(dy, w)` to `dx`.
pub(crate) struct Conv3dInputGrad {
    pub padding: usize,
}

impl Kernel2 for Conv3dInputGrad {
    fn op_name(&self) -> &'static str {
        "conv3d input gradient"
    }

    fn run<T: Real>(&self, g: &[T], sg: &Shape, w: &[T], sw: &Shape) -> Result<(Vec<T>, Shape)> {
        let (n, gc, do_, ho, wo) = sg.dims5()?;
        let (cout, cin, k, _, _) = sw.dims5()?;
        if gc != cout || self.padding >= k {
            bail!("conv3d input gradient: bad shapes {sg:?} {sw:?}");
        }
        let k3 = k * k * k;
        let pad = k - 1 - self.padding;
        let geom = Geom {
            n,
            c: cout,
            d: do_,
            h: ho,
            w: wo,
            k,
            pad,
        };
        // Flipped taps, in/out swapped: w'[ci][co][tap] = w[co][ci][k3-1-tap].
        let out = conv_forward(
            g,
            geom,
            cin,
            |ci, co, tap| w[(co * cin + ci) * k3 + k3 - 1 - tap],
            None,
        );
        let (d, h, wd) = geom.out();
        Ok((out, Shape::from((n, cin, d, h, wd))))
    }
}

impl CustomOp2 for Conv3dInputGrad {
    fn name(&self) -> &'static str {
        "dtml-conv3d-input-grad"
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

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::cudnn::input_grad(s1, l1, s2, l2, self.padding)
    }
}

/// Weight gradient: `(x, dy)` to `dw`.
pub(crate) struct Conv3dWeightGrad {
    pub padding: usize,
    pub k: usize,
}

impl Kernel2 for Conv3dWeightGrad {
    fn op_name(&self) -> &'static str {
        "conv3d weight gradient"
    }

    fn run<T: Real>(&self, x: &[T], sx: &Shape, g: &[T], sg: &Shape) -> Result<(Vec<T>, Shape)> {
        let (n, cin, d, h, wd) = sx.dims5()?;
        let (gn, cout, do_, ho, wo) = sg.dims5()?;
        let k = self.k;
        let fits = |a: usize, b: usize| a + 2 * self.padding + 1 == b + k;
        if gn != n || !fits(d, do_) || !fits(h, ho) || !fits(wd, wo) {
            bail!("conv3d weight gradient: bad shapes {sx:?} {sg:?}");
        }
        let geom = Geom {
            n,
            c: cin,
            d,
            h,
            w: wd,
            k,
            pad: self.padding,
        };
        let dw = conv_wgrad(x, geom, g, cout);
        Ok((dw, Shape::from((cout, cin, k, k, k))))
    }
}

impl CustomOp2 for Conv3dWeightGrad {
    fn name(&self) -> &'static str {
        "dtml-conv3d-weight-grad"
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

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::cudnn::weight_grad(s1, l1, s2, l2, self.k, self.padding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::kernel::fwd_shapes;
    use crate::simd::Tier;

    /// Direct `(n, cout, do, ho, wo)` convolution by the definition.
    fn naive(x: &[f32], g: Geom, cout: usize, w: &[f32]) -> Vec<f32> {
        let (do_, ho, wo) = g.out();
        let (k, p) = (g.k as isize, g.pad as isize);
        let mut out = vec![0f32; g.n * cout * do_ * ho * wo];
        for ni in 0..g.n {
            for co in 0..cout {
                for z in 0..do_ {
                    for y in 0..ho {
                        for xo in 0..wo {
                            let mut acc = 0f64;
                            for ci in 0..g.c {
                                for t in 0..(k * k * k) {
                                    let (dz, dy, dx) = (t / (k * k), t / k % k, t % k);
                                    let (iz, iy, ix) = (
                                        z as isize + dz - p,
                                        y as isize + dy - p,
                                        xo as isize + dx - p,
                                    );
                                    let inside = |v: isize, n: usize| v >= 0 && v < n as isize;
                                    if inside(iz, g.d) && inside(iy, g.h) && inside(ix, g.w) {
                                        let xi = (((ni * g.c + ci) * g.d + iz as usize) * g.h
                                            + iy as usize)
                                            * g.w
                                            + ix as usize;
                                        let wi =
                                            (co * g.c + ci) * (k * k * k) as usize + t as usize;
                                        acc += x[xi] as f64 * w[wi] as f64;
                                    }
                                }
                            }
                            out[(((ni * cout + co) * do_ + z) * ho + y) * wo + xo] = acc as f32;
                        }
                    }
                }
            }
        }
        out
    }

    /// Every forward tile shape of every tier runs the active tier's
    /// kernel correctly, on planes that leave partial tiles and partial
    /// channel blocks.
    #[test]
    fn every_tile_shape_computes_the_convolution() {
        let mut shapes: Vec<TileShape> = Vec::new();
        for tier in Tier::ALL {
            for is_f32 in [true, false] {
                for s in fwd_shapes(tier, is_f32) {
                    if !shapes.contains(s) {
                        shapes.push(*s);
                    }
                }
            }
        }
        let mut seed = 12345u64;
        let mut rand = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        for (n, cin, cout, d, h, w) in [(2, 3, 29, 3, 5, 7), (1, 2, 5, 2, 9, 11)] {
            let g = Geom {
                n,
                c: cin,
                d,
                h,
                w,
                k: 3,
                pad: 1,
            };
            let x: Vec<f32> = (0..n * cin * d * h * w).map(|_| rand()).collect();
            let wt: Vec<f32> = (0..cout * cin * 27).map(|_| rand()).collect();
            let want = naive(&x, g, cout, &wt);
            for s in &shapes {
                let wpk = pack_weights(s.cb, cout, cin, 27, |co, ci, t| {
                    wt[(co * cin + ci) * 27 + t]
                });
                let got = conv_forward_in(*s, &x, g, cout, &wpk, None);
                let err = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(
                    err < 1e-4,
                    "tile {s:?}, {n}x{cin}->{cout} {d}x{h}x{w}: {err}"
                );
            }
        }
    }

    /// Small planes choose short tiles over more channels; large planes the
    /// long tile.
    #[test]
    fn tile_choice_follows_the_plane_size() {
        let wide = fwd_shapes(Tier::Avx512, true);
        // A 3x3 plane padded to 5 wide: 15 positions.
        assert_eq!(best_shape(wide, 15, 128).positions(), 16);
        // 112 x 114 padded positions: the longest tile.
        assert_eq!(best_shape(wide, 112 * 114, 16).positions(), 96);
        assert_eq!(best_shape(fwd_shapes(Tier::Portable, true), 15, 128).cb, 4);
    }
}
