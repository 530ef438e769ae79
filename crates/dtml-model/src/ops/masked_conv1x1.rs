//! The V-Net's heads in training: channel dropout with given multipliers,
//! then the 1x1x1 convolution, `conv1x1(x * mask[n, c], w)`, as one CPU op.
//!
//! Why one op: as two, the dropped-out copy of the last decoder stage (16
//! channels at full resolution, 128 MB per network at the paper's patch)
//! is a graph node that candle keeps until the whole backward pass ends,
//! and candle's backward of a multiply also computes the gradient of the
//! mask (a full-size product and a full-size zero tensor it then keeps to
//! the end, the mask being no variable). Here the scaled input is never
//! stored, and the backward computes the input's gradient alone.
//!
//! Why its own loops and not a GEMM: a head has one or two output channels,
//! so the product is a matrix-vector one, which the GEMM of the other 1x1x1
//! convolutions ran at a tenth of memory speed. Each kernel here reads its
//! inputs from memory once, in chunks of positions spread over the threads
//! (each chunk's repeated reads come from the cache). Values
//! agree with channel dropout then [`super::conv1x1`] to rounding (the sums
//! run in another order; test).

use super::cpu::{Kernel3, apply3, forward_op3};
use super::kernel::Real;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

/// Positions per task: a few pages of each channel.
const CHUNK: usize = 4096;
/// Independent partial sums of the weight gradient's dot products, so the
/// loop vectorises.
const LANES: usize = 16;

/// `(N, C, V)` of a `(N, C, ...)` shape: samples, channels, positions.
fn ncv(s: &Shape) -> (usize, usize, usize) {
    let d = s.dims();
    (d[0], d[1], d[2..].iter().product())
}

/// The tasks over `n` samples of `v` positions: `n` times the chunks of `v`.
fn tasks(n: usize, v: usize) -> usize {
    n * v.div_ceil(CHUNK)
}

/// Task `t` of [`tasks`]: its sample and its chunk of positions.
fn task(t: usize, v: usize) -> (usize, std::ops::Range<usize>) {
    let chunks = v.div_ceil(CHUNK);
    let (s, k) = (t / chunks, t % chunks);
    (s, k * CHUNK..((k + 1) * CHUNK).min(v))
}

/// `(N, C, V)` of `x` and the output channels of `w` `(Cout, C, 1, 1, 1)`,
/// checked against `mask` `(N, C)`.
fn dims(sx: &Shape, sw: &Shape, mask: usize, op: &str) -> Result<(usize, usize, usize, usize)> {
    let (n, c, v) = ncv(sx);
    let (cout, wc) = (sw.dims()[0], sw.dims()[1]);
    if wc != c || mask != n * c {
        bail!("{op}: bad shapes {sx:?} {sw:?}, mask of {mask}");
    }
    Ok((n, c, v, cout))
}

/// `(x, w, mask)` to `conv1x1(x * mask, w)`: each output value is
/// `sum_c w[o, c] (x[n, c, v] mask[n, c])`, summed over `c` in order, the
/// scaled input never stored.
pub(crate) struct MaskedConv1x1;

impl Kernel3 for MaskedConv1x1 {
    fn op_name(&self) -> &'static str {
        "masked conv1x1"
    }

    fn run<T: Real>(
        &self,
        x: &[T],
        sx: &Shape,
        w: &[T],
        sw: &Shape,
        mask: &[T],
    ) -> Result<(Vec<T>, Shape)> {
        let (n, c, v, cout) = dims(sx, sw, mask.len(), self.op_name())?;
        let mut out = vec![T::default(); n * cout * v];
        // Task (sample, chunk) writes its chunk of every output channel.
        let optr = super::cpu::SendPtr(out.as_mut_ptr());
        (0..tasks(n, v)).into_par_iter().for_each(|t| {
            let (s, range) = task(t, v);
            let (v0, v1) = (range.start, range.end);
            for o in 0..cout {
                // SAFETY: out[s, o, v0..v1] is this task's alone.
                let acc = unsafe {
                    std::slice::from_raw_parts_mut(optr.get().add((s * cout + o) * v + v0), v1 - v0)
                };
                for ci in 0..c {
                    let (wo, m) = (w[o * c + ci], mask[s * c + ci]);
                    let xs = &x[(s * c + ci) * v + v0..(s * c + ci) * v + v1];
                    for (a, &xv) in acc.iter_mut().zip(xs) {
                        *a += wo * (xv * m);
                    }
                }
            }
        });
        let mut shape = sx.dims().to_vec();
        shape[1] = cout;
        Ok((out, Shape::from(shape)))
    }
}

impl CustomOp3 for MaskedConv1x1 {
    fn name(&self) -> &'static str {
        "dtml-masked-conv1x1"
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
        crate::profile::timed(self.op_name(), || {
            apply3(self, (s1, l1), (s2, l2), (s3, l3))
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        mask: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let dx = x
            .track_op()
            .then(|| {
                crate::profile::timed(InputGrad.op_name(), || {
                    g.apply_op3_no_bwd(w, mask, &InputGrad)
                })
            })
            .transpose()?;
        let dw = w
            .track_op()
            .then(|| {
                crate::profile::timed(WeightGrad.op_name(), || {
                    g.apply_op3_no_bwd(x, mask, &WeightGrad)
                })
            })
            .transpose()?;
        // The mask is a constant: `super::masked_conv1x1` refuses one that
        // tracks a gradient.
        Ok((dx, dw, None))
    }
}

/// `(g, w, mask)` to `dx[n, c, v] = mask[n, c] sum_o w[o, c] g[n, o, v]`.
struct InputGrad;

impl Kernel3 for InputGrad {
    fn op_name(&self) -> &'static str {
        "masked conv1x1 input gradient"
    }

    fn run<T: Real>(
        &self,
        g: &[T],
        sg: &Shape,
        w: &[T],
        sw: &Shape,
        mask: &[T],
    ) -> Result<(Vec<T>, Shape)> {
        let (n, cout, v) = ncv(sg);
        let c = sw.dims()[1];
        if sw.dims()[0] != cout || mask.len() != n * c {
            bail!("{}: bad shapes {sg:?} {sw:?}", self.op_name());
        }
        let mut dx = vec![T::default(); n * c * v];
        let ptr = super::cpu::SendPtr(dx.as_mut_ptr());
        (0..tasks(n, v)).into_par_iter().for_each(|t| {
            let (s, range) = task(t, v);
            let (v0, v1) = (range.start, range.end);
            for ci in 0..c {
                // SAFETY: dx[s, ci, v0..v1] is this task's alone.
                let acc = unsafe {
                    std::slice::from_raw_parts_mut(ptr.get().add((s * c + ci) * v + v0), v1 - v0)
                };
                for o in 0..cout {
                    let wo = w[o * c + ci];
                    let gs = &g[(s * cout + o) * v + v0..(s * cout + o) * v + v1];
                    for (a, &gv) in acc.iter_mut().zip(gs) {
                        *a += wo * gv;
                    }
                }
                let m = mask[s * c + ci];
                acc.iter_mut().for_each(|a| *a *= m);
            }
        });
        let mut shape = sg.dims().to_vec();
        shape[1] = c;
        Ok((dx, Shape::from(shape)))
    }
}

/// `(g, x, mask)` to `dw[o, c] = sum_{n, v} g[n, o, v] (x[n, c, v]
/// mask[n, c])`: partial sums over lanes and chunks of positions, the
/// chunks added in f64 in a fixed order (the same bits on every run).
struct WeightGrad;

impl Kernel3 for WeightGrad {
    fn op_name(&self) -> &'static str {
        "masked conv1x1 weight gradient"
    }

    fn run<T: Real>(
        &self,
        g: &[T],
        sg: &Shape,
        x: &[T],
        sx: &Shape,
        mask: &[T],
    ) -> Result<(Vec<T>, Shape)> {
        let (n, cout, v) = ncv(sg);
        let c = sx.dims()[1];
        if sx.dims()[0] != n || mask.len() != n * c || x.len() != n * c * v {
            bail!("{}: bad shapes {sg:?} {sx:?}", self.op_name());
        }
        let partials: Vec<Vec<f64>> = (0..tasks(n, v))
            .into_par_iter()
            .map(|t| {
                let (s, range) = task(t, v);
                let (v0, v1) = (range.start, range.end);
                let mut sums = vec![0.0; cout * c];
                for o in 0..cout {
                    let gs = &g[(s * cout + o) * v + v0..(s * cout + o) * v + v1];
                    for ci in 0..c {
                        let m = mask[s * c + ci];
                        let xs = &x[(s * c + ci) * v + v0..(s * c + ci) * v + v1];
                        let mut lanes = [T::default(); LANES];
                        let (gc, xc) = (gs.chunks_exact(LANES), xs.chunks_exact(LANES));
                        let (gr, xr) = (gc.remainder(), xc.remainder());
                        for (ga, xa) in gc.zip(xc) {
                            for l in 0..LANES {
                                lanes[l] += ga[l] * (xa[l] * m);
                            }
                        }
                        let mut sum: f64 = lanes.iter().map(|a| a.to_f64()).sum();
                        for (&gv, &xv) in gr.iter().zip(xr) {
                            sum += (gv * (xv * m)).to_f64();
                        }
                        sums[o * c + ci] = sum;
                    }
                }
                sums
            })
            .collect();
        let mut dw = vec![0.0f64; cout * c];
        for p in &partials {
            dw.iter_mut().zip(p).for_each(|(a, b)| *a += b);
        }
        Ok((
            dw.into_iter().map(T::from_f64).collect(),
            Shape::from((cout, c, 1, 1, 1)),
        ))
    }
}

forward_op3!(InputGrad, "dtml-masked-conv1x1-input-grad");
forward_op3!(WeightGrad, "dtml-masked-conv1x1-weight-grad");
