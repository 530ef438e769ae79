//! The separable exact transform.
//!
//! Working encoding of the `f32` buffer during the passes: the sign bit says
//! the voxel's class (negative = foreground), the magnitude is the squared
//! distance, over the axes processed so far, to the nearest voxel of the
//! *opposite* class (`inf` when none yet). A voxel's distance to its own
//! class is 0 in every pass, so one number per voxel carries both
//! transforms of the signed map (Mode::Both); in Mode::Foreground the
//! background keeps magnitude 0 and is skipped.
//!
//! Pass 1 (last, contiguous axis) reads the mask and computes 1D distances
//! run by run. Each later axis runs a Felzenszwalb-Huttenlocher lower
//! envelope per *run* of equal class along the line: the sites are the run's
//! own voxels plus the two bounding voxels of the opposite class (value 0);
//! sites beyond those are dominated by them. Lines are gathered in blocks of
//! adjacent columns so memory is read in whole cache lines, and blocks are
//! processed in parallel with rayon. The last pass applies the output
//! transform (`Finish`) while scattering.

use crate::{Grid, MaskValue};
use rayon::prelude::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mode {
    /// Only foreground voxels get a distance (to the background).
    Foreground,
    /// Every voxel gets its distance to the opposite class.
    Both,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Finish {
    /// Keep the working encoding (signed squared distance).
    None,
    /// Squared distance magnitude.
    Squared,
    /// Distance magnitude.
    Distance,
    /// Signed distance (negative on foreground).
    Signed,
}

/// Columns gathered together for the strided passes (16 f32 = 64 bytes).
const BLOCK: usize = 16;
/// Minimum voxels per rayon task.
const MIN_TASK_VOXELS: usize = 1 << 14;

#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// SAFETY: the pointer is only used to access disjoint elements from
// different tasks (see the call sites).
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}
impl SyncPtr {
    #[inline(always)]
    fn get(self) -> *mut f32 {
        self.0
    }
}

#[derive(Default)]
struct Env {
    // The envelope's sites: position `v`, squared distance `m` as read (in
    // the spacing's units), `c = m / s^2 + v^2` and the left end `z` of the
    // site's region (both in index units).
    v: Vec<usize>,
    m: Vec<f32>,
    c: Vec<f64>,
    z: Vec<f64>,
    /// half_inv[d] = 1 / (2 d): the intersection's division as a product.
    half_inv: Vec<f64>,
    /// The site that owns each voxel of the run.
    own: Vec<usize>,
}

#[derive(Default)]
struct Scratch {
    line: Vec<f32>,
    env: Env,
}

impl Scratch {
    fn ensure(&mut self, len: usize, w: usize) {
        if self.line.len() < len * w {
            self.line.resize(len * w, 0.0);
        }
        let e = &mut self.env;
        if e.v.len() < len + 2 {
            e.v.resize(len + 2, 0);
            e.c.resize(len + 2, 0.0);
            e.z.resize(len + 2, 0.0);
            e.half_inv = (0..len + 2).map(|d| 0.5 / d as f64).collect();
            e.own.resize(len + 3, 0);
            e.m.resize(len + 2, 0.0);
        }
    }
}

/// Runs the whole transform of `mask` on `grid` into `out` (same length).
pub(crate) fn transform<M: MaskValue>(
    mask: &[M],
    grid: &Grid,
    mode: Mode,
    finish: Finish,
    out: &mut [f32],
) {
    let [nz, ny, nx] = grid.dims;
    let n = nz * ny * nx;
    debug_assert_eq!(mask.len(), n);
    debug_assert_eq!(out.len(), n);
    if n == 0 {
        return;
    }
    let [sz, sy, sx] = grid.spacing;
    let last = if nz > 1 {
        0
    } else if ny > 1 {
        1
    } else {
        2
    };
    let fin = |axis: usize| if axis == last { finish } else { Finish::None };
    let plane = ny * nx;
    let threads = rayon::current_num_threads().max(1);
    let nb = nx.div_ceil(BLOCK);

    if nz >= 2 * threads {
        // Passes 1 and 2 fused per plane, planes in parallel: the plane
        // stays in cache between the two passes.
        let (fx, fy) = (fin(2), fin(1));
        out.par_chunks_mut(plane)
            .zip(mask.par_chunks(plane))
            .for_each_init(Scratch::default, |scr, (o, m)| {
                for (orow, mrow) in o.chunks_mut(nx).zip(m.chunks(nx)) {
                    pass_first(mrow, orow, sx, mode, fx);
                }
                if ny > 1 {
                    let ptr = o.as_mut_ptr();
                    for b in 0..nb {
                        let x0 = b * BLOCK;
                        // SAFETY: in-bounds columns x0..x0+w of this plane,
                        // rows 0..ny; `o` is exclusively borrowed here.
                        unsafe {
                            process_block(ptr, x0, nx, ny, BLOCK.min(nx - x0), sy, mode, fy, scr)
                        };
                    }
                }
            });
    } else {
        let rows_per_task = (MIN_TASK_VOXELS / nx.max(1)).max(1);
        let fx = fin(2);
        out.par_chunks_mut(nx)
            .zip(mask.par_chunks(nx))
            .with_min_len(rows_per_task)
            .for_each(|(o, m)| pass_first(m, o, sx, mode, fx));
        if ny > 1 {
            strided_pass(out, nz, nb, ny, nx, plane, nx, sy, mode, fin(1));
        }
    }
    if nz > 1 {
        strided_pass(out, ny, nb, nz, nx, nx, plane, sz, mode, fin(0));
    }
}

/// Processes all lines of one axis: `outer * nb` tasks; task `t` covers the
/// column block `t % nb` of outer index `t / nb` (base `outer_index *
/// outer_stride`), lines of `len` elements `stride` apart.
#[allow(clippy::too_many_arguments)]
fn strided_pass(
    out: &mut [f32],
    outer: usize,
    nb: usize,
    len: usize,
    nx: usize,
    outer_stride: usize,
    stride: usize,
    spacing: f64,
    mode: Mode,
    finish: Finish,
) {
    let total = out.len();
    let p = SyncPtr(out.as_mut_ptr());
    let per_task = (MIN_TASK_VOXELS / (len * BLOCK).max(1)).max(1);
    (0..outer * nb)
        .into_par_iter()
        .with_min_len(per_task)
        .for_each_init(Scratch::default, |scr, t| {
            let o = t / nb;
            let x0 = (t % nb) * BLOCK;
            let w = BLOCK.min(nx - x0);
            let base = o * outer_stride + x0;
            debug_assert!(base + (len - 1) * stride + w <= total);
            let _ = total;
            // SAFETY: every task touches the elements base + i*stride + j
            // (i < len, j < w), in bounds of `out`, and distinct tasks
            // touch disjoint sets (different outer index or column block).
            unsafe { process_block(p.get(), base, stride, len, w, spacing, mode, finish, scr) };
        });
}

/// Applies `fin` to every element (one match, branch-free loops).
#[inline]
fn finish_slice(x: &mut [f32], fin: Finish) {
    match fin {
        Finish::None => {}
        Finish::Squared => x.iter_mut().for_each(|v| *v = v.abs()),
        Finish::Distance => x.iter_mut().for_each(|v| *v = v.abs().sqrt()),
        Finish::Signed => x.iter_mut().for_each(|v| *v = v.abs().sqrt().copysign(*v)),
    }
}

/// First pass along the contiguous axis, straight from the mask.
#[inline(never)]
fn pass_first<M: MaskValue>(mrow: &[M], orow: &mut [f32], s: f64, mode: Mode, fin: Finish) {
    let n = mrow.len();
    let s2 = (s * s) as f32;
    let mut a = 0;
    while a < n {
        let fg = mrow[a].is_fg();
        let mut b = a + 1;
        while b < n && mrow[b].is_fg() == fg {
            b += 1;
        }
        let run = &mut orow[a..b];
        let len = b - a;
        if !fg && mode == Mode::Foreground {
            run.fill(0.0);
        } else {
            // Squared distance to the run's ends, with the class as the sign;
            // d*d is exact in f32 (d < 2^12 or so for any real line), one
            // rounding for the spacing.
            let s2 = if fg { -s2 } else { s2 };
            match (a > 0, b < n) {
                (false, false) => run.fill(s2.signum() * f32::INFINITY),
                (true, true) => run.iter_mut().enumerate().for_each(|(k, o)| {
                    let d = (k + 1).min(len - k) as f32;
                    *o = d * d * s2;
                }),
                (true, false) => run.iter_mut().enumerate().for_each(|(k, o)| {
                    let d = (k + 1) as f32;
                    *o = d * d * s2;
                }),
                (false, true) => run.iter_mut().enumerate().for_each(|(k, o)| {
                    let d = (len - k) as f32;
                    *o = d * d * s2;
                }),
            }
        }
        a = b;
    }
    finish_slice(orow, fin);
}

/// Gathers `w` adjacent lines, runs the envelope on each, scatters back.
///
/// # Safety
/// `ptr.add(base + i * stride + j)` must be valid for reads and writes for
/// all `i < len`, `j < w`, and not accessed concurrently by anyone else.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
unsafe fn process_block(
    ptr: *mut f32,
    base: usize,
    stride: usize,
    len: usize,
    w: usize,
    spacing: f64,
    mode: Mode,
    fin: Finish,
    scr: &mut Scratch,
) {
    scr.ensure(len, w);
    let line = &mut scr.line[..len * w];
    let mut any_fg = 0u32;
    // Whole blocks of BLOCK rows through a square tile, so both the reads
    // and the writes are runs of BLOCK values; the rest one by one.
    let mut i0 = 0;
    if w == BLOCK {
        let mut tile = [[0.0f32; BLOCK]; BLOCK];
        while i0 + BLOCK <= len {
            for (r, t) in tile.iter_mut().enumerate() {
                // SAFETY: caller guarantees the range.
                let row =
                    unsafe { std::slice::from_raw_parts(ptr.add(base + (i0 + r) * stride), BLOCK) };
                t.copy_from_slice(row);
            }
            for j in 0..BLOCK {
                let out = &mut line[j * len + i0..j * len + i0 + BLOCK];
                for (r, o) in out.iter_mut().enumerate() {
                    *o = tile[r][j];
                    any_fg |= o.to_bits();
                }
            }
            i0 += BLOCK;
        }
    }
    for i in i0..len {
        // SAFETY: caller guarantees the range.
        let row = unsafe { std::slice::from_raw_parts(ptr.add(base + i * stride), w) };
        for (j, &v) in row.iter().enumerate() {
            line[j * len + i] = v;
            any_fg |= v.to_bits();
        }
    }
    // Foreground mode: background is +0 and every Finish maps +0 to +0, so
    // a block without foreground is already final.
    if mode == Mode::Foreground && any_fg >> 31 == 0 {
        return;
    }
    let s2 = spacing * spacing;
    for l in line.chunks_exact_mut(len) {
        envelope_line(l, s2, mode, &mut scr.env);
    }
    if fin != Finish::None {
        finish_slice(line, fin);
    }
    let mut i0 = 0;
    if w == BLOCK {
        let mut tile = [[0.0f32; BLOCK]; BLOCK];
        while i0 + BLOCK <= len {
            for (j, t) in tile.iter_mut().enumerate() {
                t.copy_from_slice(&line[j * len + i0..j * len + i0 + BLOCK]);
            }
            for r in 0..BLOCK {
                // SAFETY: caller guarantees the range.
                let row = unsafe {
                    std::slice::from_raw_parts_mut(ptr.add(base + (i0 + r) * stride), BLOCK)
                };
                for (j, o) in row.iter_mut().enumerate() {
                    *o = tile[j][r];
                }
            }
            i0 += BLOCK;
        }
    }
    for i in i0..len {
        // SAFETY: caller guarantees the range.
        let row = unsafe { std::slice::from_raw_parts_mut(ptr.add(base + i * stride), w) };
        for (j, o) in row.iter_mut().enumerate() {
            *o = line[j * len + i];
        }
    }
}

#[inline(never)]
fn envelope_line(line: &mut [f32], s2: f64, mode: Mode, env: &mut Env) {
    let n = line.len();
    let mut a = 0;
    while a < n {
        let neg = line[a].is_sign_negative();
        a = if neg || mode == Mode::Both {
            envelope_run(line, a, s2, neg, env)
        } else {
            let mut b = a + 1;
            while b < n && !line[b].is_sign_negative() {
                b += 1;
            }
            b
        };
    }
}

/// Lower envelope over the run of one class that starts at `a` (its end
/// `b` found on the way) plus its bounding opposite-class voxels,
/// evaluated on the run, in place; returns `b`.
#[inline]
fn envelope_run(line: &mut [f32], a: usize, s2: f64, neg: bool, env: &mut Env) -> usize {
    let n = line.len();
    let inv = 1.0 / s2;
    // The sites as `Env` describes them; the evaluation's `m[k]` is the
    // value read, exactly (`m / s2 * s2` would round back to it anyway).
    let (v, m, c, z) = (
        &mut env.v[..],
        &mut env.m[..],
        &mut env.c[..],
        &mut env.z[..],
    );
    let half_inv = &env.half_inv[..];
    assert!(v.len() > n && m.len() > n && c.len() > n && z.len() > n);
    assert!(half_inv.len() > n && a < n);
    let mut cnt = 0usize;
    // Pushes site (q, mq, cq), first popping the sites it hides.
    // SAFETY (all unchecked accesses): at most one site is pushed per
    // index of the line, so cnt <= n < the scratch lengths (asserted
    // above); the indices used are cnt - 1 (with cnt >= 1) and cnt, and
    // q - p is in 1..=n.
    let mut push = |q: usize, mq: f32, cq: f64| unsafe {
        if cnt == 0 {
            *v.get_unchecked_mut(0) = q;
            *m.get_unchecked_mut(0) = mq;
            *c.get_unchecked_mut(0) = cq;
            *z.get_unchecked_mut(0) = f64::NEG_INFINITY;
            cnt = 1;
            return;
        }
        loop {
            let k = cnt - 1;
            let p = *v.get_unchecked(k);
            let s = (cq - *c.get_unchecked(k)) * *half_inv.get_unchecked(q - p);
            if s <= *z.get_unchecked(k) {
                // z[0] is -inf, so cnt never drops below 1 here.
                cnt = k;
                continue;
            }
            *v.get_unchecked_mut(cnt) = q;
            *m.get_unchecked_mut(cnt) = mq;
            *c.get_unchecked_mut(cnt) = cq;
            *z.get_unchecked_mut(cnt) = s;
            cnt += 1;
            break;
        }
    };
    let square = |q: usize| (q as f64) * (q as f64);
    if a > 0 {
        push(a - 1, 0.0, square(a - 1));
    }
    let mut b = n;
    for (q, value) in (a..n).zip(&line[a..]) {
        if value.is_sign_negative() != neg {
            b = q;
            break;
        }
        let mq = value.abs();
        if mq != f32::INFINITY {
            push(q, mq, mq as f64 * inv + square(q));
        }
    }
    if b < n {
        push(b, 0.0, square(b));
    }
    let sign = if neg { -1.0f32 } else { 1.0 };
    if cnt == 0 {
        line[a..b].fill(sign * f32::INFINITY);
        return b;
    }
    // The owner of each voxel: each parabola marks the first integer of its
    // region (the first x > z[k], clamped to the run), later parabolas
    // overwriting earlier ones that own no integer; a running maximum then
    // gives every voxel its parabola. Unlike walking the parabolas with a
    // per-voxel comparison, the loop carries only that maximum.
    let own = &mut env.own[..];
    assert!(own.len() > n);
    own[a..b].fill(0);
    let (af, bf) = (a as f64, b as f64);
    for k in 0..cnt {
        // SAFETY: k < cnt <= the scratch lengths (asserted above); start is
        // in a..b.
        unsafe {
            let t = *z.get_unchecked(k);
            if t >= bf {
                break;
            }
            let start = if t < af { a } else { t as usize + 1 };
            if start >= b {
                break;
            }
            *own.get_unchecked_mut(start) = k;
        }
    }
    let s2f = s2 as f32;
    let mut k = 0;
    for (x, o) in (a..b).zip(line[a..b].iter_mut()) {
        // SAFETY: x < b <= n < own.len(); k is a marked site index < cnt.
        unsafe {
            k = k.max(*own.get_unchecked(x));
            let d = x as f32 - *v.get_unchecked(k) as f32;
            *o = sign * (d * d * s2f + *m.get_unchecked(k));
        }
    }
    b
}
