//! The 2x2x2 stride-2 convolution pair and the 1x1x1 convolution on the
//! CPU, as space-to-depth / depth-to-space copies around one GEMM (the
//! `gemm` crate candle itself uses).
//!
//! With `A x B x 2 x 2 x 2` weights viewed as the matrix `M (A, 8B)`:
//!
//! - `Down(x_full, M)  = M . s2d(x_full)` per sample: the stride-2 conv
//!   with `A = Cout`, `B = Cin`;
//! - `Up(x_small, M)   = d2s(M^T . x_small)`: the transposed conv in
//!   PyTorch's layout with `A = Cin`, `B = Cout`;
//! - `PairWGrad(small, full) = sum_n small . s2d(full)^T`.
//!
//! `Down` and `Up` with the same `M` are adjoint, so each is the other's
//! input gradient, and `PairWGrad` is both weight gradients.

use super::cpu::{Kernel2, SendPtr, apply2, assume_init, forward_op2, linear_grads, uninit_vec};
use super::kernel::Real;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

/// `dst (m x n, row stride given) [+]= lhs (m x k) . rhs (k x n)`, where
/// each operand is given by its pointer, row stride and column stride;
/// `parallel` lets gemm use rayon (off inside our own parallel loops).
///
/// # Safety
/// The pointers must address matrices of those sizes and strides.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul<T: Real>(
    (m, n, k): (usize, usize, usize),
    dst: (*mut T, usize),
    accumulate: bool,
    lhs: (*const T, usize, usize),
    rhs: (*const T, usize, usize),
    parallel: bool,
) {
    let threads = rayon::current_num_threads();
    let par = if parallel && threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    let one = T::from_f64(1.0);
    // SAFETY: forwarded contract; gemm supports f32 and f64.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.0,
            1,
            dst.1 as isize,
            accumulate,
            lhs.0,
            lhs.2 as isize,
            lhs.1 as isize,
            rhs.0,
            rhs.2 as isize,
            rhs.1 as isize,
            one,
            one,
            false,
            false,
            false,
            par,
        )
    }
}

/// Work units of the stride-2 pair: `(sample, first, end)` runs of
/// low-resolution z planes of about `TARGET` voxels, so each unit's
/// space-to-depth block (`8 B x voxels`) stays in cache and no
/// full-size temporary (and its page faults) is needed.
fn units(n: usize, d: usize, hw: usize) -> Vec<(usize, usize, usize)> {
    const TARGET: usize = 2048;
    let per = (TARGET / hw.max(1)).max(1);
    let mut u = Vec::new();
    for s in 0..n {
        for z0 in (0..d).step_by(per) {
            u.push((s, z0, (z0 + per).min(d)));
        }
    }
    u
}

/// Space-to-depth of low-resolution planes `z0..z1` of one sample: `full`
/// is that sample's `(b, 2d, 2h, 2w)` block, `cols` gets `(8b, nv)` with row
/// `ci*8 + a*4 + e*2 + f` holding offset `(a, e, f)` of each 2x2x2 cell.
fn to_cols<T: Real>(
    full: &[T],
    cols: &mut [T],
    b: usize,
    (d, h, w): (usize, usize, usize),
    (z0, z1): (usize, usize),
) {
    let nv = (z1 - z0) * h * w;
    for ci in 0..b {
        let f = &full[ci * 8 * d * h * w..][..8 * d * h * w];
        for z in z0..z1 {
            for a in 0..2 {
                for y in 0..h {
                    for e in 0..2 {
                        let row = &f[((2 * z + a) * 2 * h + 2 * y + e) * 2 * w..][..2 * w];
                        let o0 = (ci * 8 + a * 4 + e * 2) * nv + ((z - z0) * h + y) * w;
                        let (c0, c1) = cols[o0..].split_at_mut(nv);
                        for x in 0..w {
                            c0[x] = row[2 * x];
                            c1[x] = row[2 * x + 1];
                        }
                    }
                }
            }
        }
    }
}

/// Depth-to-space, the inverse of [`to_cols`], writing through a pointer
/// to one sample's full block (units write disjoint planes).
///
/// # Safety
/// `full` must address `b * 8 * d * h * w` values; no other thread may
/// touch planes `2 z0 .. 2 z1` concurrently.
unsafe fn from_cols<T: Real>(
    cols: &[T],
    full: *mut T,
    b: usize,
    (d, h, w): (usize, usize, usize),
    (z0, z1): (usize, usize),
) {
    let nv = (z1 - z0) * h * w;
    for ci in 0..b {
        for z in z0..z1 {
            for a in 0..2 {
                for y in 0..h {
                    for e in 0..2 {
                        let off = ci * 8 * d * h * w + ((2 * z + a) * 2 * h + 2 * y + e) * 2 * w;
                        let o0 = (ci * 8 + a * 4 + e * 2) * nv + ((z - z0) * h + y) * w;
                        let (c0, c1) = (&cols[o0..][..w], &cols[o0 + nv..][..w]);
                        for x in 0..w {
                            // SAFETY: in bounds and exclusive by the contract;
                            // written through the pointer (the destination
                            // may not be initialised yet).
                            unsafe {
                                full.add(off + 2 * x).write(c0[x]);
                                full.add(off + 2 * x + 1).write(c1[x]);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Stride-2 conv: `(x_full (N, B, 2D, 2H, 2W), w (A, B, 2, 2, 2))` to
/// `(N, A, D, H, W)`.
pub(crate) struct Down;

impl Kernel2 for Down {
    fn op_name(&self) -> &'static str {
        "down_conv2"
    }

    fn run<T: Real>(&self, x: &[T], sx: &Shape, w: &[T], sw: &Shape) -> Result<(Vec<T>, Shape)> {
        let (n, b, fd, fh, fw) = sx.dims5()?;
        let (a, wb, _, _, _) = sw.dims5()?;
        if wb != b || fd % 2 + fh % 2 + fw % 2 != 0 {
            bail!("down_conv2: bad shapes {sx:?} {sw:?}");
        }
        let (d, h, wd) = (fd / 2, fh / 2, fw / 2);
        let v = d * h * wd;
        // Every value is written by one unit's product (no accumulation).
        let mut out = uninit_vec::<T>(n * a * v);
        let optr = SendPtr(out.as_mut_ptr().cast::<T>());
        units(n, d, h * wd).into_par_iter().for_each(|(s, z0, z1)| {
            let nv = (z1 - z0) * h * wd;
            let mut cols = vec![T::default(); 8 * b * nv];
            to_cols(&x[s * b * 8 * v..], &mut cols, b, (d, h, wd), (z0, z1));
            // SAFETY: out[s][:, z0..z1] is a x nv with row stride v, only
            // this unit's; w is a x 8b; cols 8b x nv.
            unsafe {
                matmul(
                    (a, nv, 8 * b),
                    (optr.get().add(s * a * v + z0 * h * wd), v),
                    false,
                    (w.as_ptr(), 8 * b, 1),
                    (cols.as_ptr(), nv, 1),
                    false,
                )
            };
        });
        // SAFETY: every value was written (above).
        Ok((unsafe { assume_init(out) }, Shape::from((n, a, d, h, wd))))
    }
}

impl CustomOp2 for Down {
    fn name(&self) -> &'static str {
        "dtml-down-conv2"
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
        w: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        linear_grads(
            x,
            w,
            || g.apply_op2_no_bwd(w, &Up),
            || g.apply_op2_no_bwd(x, &PairWGrad),
        )
    }
}

/// Transposed stride-2 conv: `(x_small (N, A, D, H, W), w (A, B, 2, 2, 2))`
/// to `(N, B, 2D, 2H, 2W)`.
pub(crate) struct Up;

impl Kernel2 for Up {
    fn op_name(&self) -> &'static str {
        "up_conv2"
    }

    fn run<T: Real>(&self, x: &[T], sx: &Shape, w: &[T], sw: &Shape) -> Result<(Vec<T>, Shape)> {
        let (n, a, d, h, wd) = sx.dims5()?;
        let (wa, b, _, _, _) = sw.dims5()?;
        if wa != a {
            bail!("up_conv2: bad shapes {sx:?} {sw:?}");
        }
        let v = d * h * wd;
        // Every value is written by one unit's `from_cols`.
        let mut out = uninit_vec::<T>(n * b * 8 * v);
        let optr = SendPtr(out.as_mut_ptr().cast::<T>());
        units(n, d, h * wd).into_par_iter().for_each(|(s, z0, z1)| {
            let nv = (z1 - z0) * h * wd;
            let mut cols = vec![T::default(); 8 * b * nv];
            // SAFETY: cols is 8b x nv; w^T is 8b x a (row stride 1, column
            // stride 8b); x[s][:, z0..z1] is a x nv with row stride v.
            unsafe {
                matmul(
                    (8 * b, nv, a),
                    (cols.as_mut_ptr(), nv),
                    false,
                    (w.as_ptr(), 1, 8 * b),
                    (x.as_ptr().add(s * a * v + z0 * h * wd), v, 1),
                    false,
                );
                from_cols(
                    &cols,
                    optr.get().add(s * b * 8 * v),
                    b,
                    (d, h, wd),
                    (z0, z1),
                );
            }
        });
        // SAFETY: every value was written (above).
        Ok((
            unsafe { assume_init(out) },
            Shape::from((n, b, 2 * d, 2 * h, 2 * wd)),
        ))
    }
}

impl CustomOp2 for Up {
    fn name(&self) -> &'static str {
        "dtml-up-conv2"
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
        w: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        linear_grads(
            x,
            w,
            || g.apply_op2_no_bwd(w, &Down),
            || x.apply_op2_no_bwd(&g, &PairWGrad),
        )
    }
}

/// Weight gradient of the pair: `(small (N, A, D, H, W), full (N, B, 2D,
/// 2H, 2W))` to `(A, B, 2, 2, 2)`.
pub(crate) struct PairWGrad;

impl Kernel2 for PairWGrad {
    fn op_name(&self) -> &'static str {
        "stride-2 weight gradient"
    }

    fn run<T: Real>(
        &self,
        sm: &[T],
        ss: &Shape,
        full: &[T],
        sf: &Shape,
    ) -> Result<(Vec<T>, Shape)> {
        let (n, a, d, h, wd) = ss.dims5()?;
        let (fnn, b, fd, fh, fw) = sf.dims5()?;
        if fnn != n || (fd, fh, fw) != (2 * d, 2 * h, 2 * wd) {
            bail!("stride-2 weight gradient: bad shapes {ss:?} {sf:?}");
        }
        let v = d * h * wd;
        let us = units(n, d, h * wd);
        // Fixed partition of the units (reproducible summation order).
        let parts = us.len().min(8);
        let partials: Vec<Vec<T>> = (0..parts)
            .into_par_iter()
            .map(|p| {
                let mut dw = vec![T::default(); a * 8 * b];
                let mut cols = Vec::new();
                for (i, &(s, z0, z1)) in us[p * us.len() / parts..(p + 1) * us.len() / parts]
                    .iter()
                    .enumerate()
                {
                    let nv = (z1 - z0) * h * wd;
                    cols.resize(8 * b * nv, T::default());
                    to_cols(&full[s * b * 8 * v..], &mut cols, b, (d, h, wd), (z0, z1));
                    // SAFETY: dw is a x 8b; small[s][:, z0..z1] is a x nv
                    // (row stride v); cols^T is nv x 8b (row stride 1,
                    // column stride nv).
                    unsafe {
                        matmul(
                            (a, 8 * b, nv),
                            (dw.as_mut_ptr(), 8 * b),
                            i > 0,
                            (sm.as_ptr().add(s * a * v + z0 * h * wd), v, 1),
                            (cols.as_ptr(), 1, nv),
                            false,
                        )
                    };
                }
                dw
            })
            .collect();
        let mut dw = partials[0].clone();
        for part in &partials[1..] {
            for (o, &q) in dw.iter_mut().zip(part) {
                *o += q;
            }
        }
        Ok((dw, Shape::from((a, b, 2, 2, 2))))
    }
}

forward_op2!(PairWGrad, "dtml-stride2-weight-grad");

/// 1x1x1 conv: `(x (N, Cin, ...), w (Cout, Cin, 1, 1, 1))`; with
/// `transpose` the weight is used as `(Cin, Cout)^T`, i.e. `w` is `(Cin,
/// Cout, 1, 1, 1)` and `x` has `Cin` channels (the input gradient).
pub(crate) struct Conv1x1 {
    pub transpose: bool,
}

impl Kernel2 for Conv1x1 {
    fn op_name(&self) -> &'static str {
        "conv1x1"
    }

    fn run<T: Real>(&self, x: &[T], sx: &Shape, w: &[T], sw: &Shape) -> Result<(Vec<T>, Shape)> {
        let (n, c, d, h, wd) = sx.dims5()?;
        let (w0, w1, _, _, _) = sw.dims5()?;
        let (cout, cin, lhs) = if self.transpose {
            (w1, w0, (w.as_ptr(), 1, w1))
        } else {
            (w0, w1, (w.as_ptr(), w1, 1))
        };
        if cin != c {
            bail!("conv1x1: bad shapes {sx:?} {sw:?}");
        }
        let v = d * h * wd;
        let mut out = vec![T::default(); n * cout * v];
        for s in 0..n {
            // SAFETY: out[s] is cout x v; the weight cout x cin; x[s] cin x v.
            unsafe {
                matmul(
                    (cout, v, cin),
                    (out.as_mut_ptr().add(s * cout * v), v),
                    false,
                    lhs,
                    (x.as_ptr().add(s * cin * v), v, 1),
                    true,
                )
            };
        }
        Ok((out, Shape::from((n, cout, d, h, wd))))
    }
}

impl CustomOp2 for Conv1x1 {
    fn name(&self) -> &'static str {
        "dtml-conv1x1"
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
        w: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        if self.transpose {
            bail!("conv1x1: the transposed form is only used inside backward");
        }
        let g = g.contiguous()?;
        linear_grads(
            x,
            w,
            || g.apply_op2_no_bwd(w, &Conv1x1 { transpose: true }),
            || g.apply_op2_no_bwd(x, &Conv1x1WGrad),
        )
    }
}

/// Weight gradient of the 1x1x1 conv: `(dy (N, Cout, ...), x (N, Cin, ...))`
/// to `(Cout, Cin, 1, 1, 1) = sum_n dy[n] . x[n]^T`.
pub(crate) struct Conv1x1WGrad;

impl Kernel2 for Conv1x1WGrad {
    fn op_name(&self) -> &'static str {
        "conv1x1 weight gradient"
    }

    fn run<T: Real>(&self, g: &[T], sg: &Shape, x: &[T], sx: &Shape) -> Result<(Vec<T>, Shape)> {
        let (n, cout, d, h, wd) = sg.dims5()?;
        let (xn, cin, xd, xh, xw) = sx.dims5()?;
        if xn != n || (xd, xh, xw) != (d, h, wd) {
            bail!("conv1x1 weight gradient: bad shapes {sg:?} {sx:?}");
        }
        let v = d * h * wd;
        let mut dw = vec![T::default(); cout * cin];
        for s in 0..n {
            // SAFETY: dw cout x cin; g[s] cout x v; x[s]^T v x cin.
            unsafe {
                matmul(
                    (cout, cin, v),
                    (dw.as_mut_ptr(), cin),
                    s > 0,
                    (g.as_ptr().add(s * cout * v), v, 1),
                    (x.as_ptr().add(s * cin * v), 1, v),
                    true,
                )
            };
        }
        Ok((dw, Shape::from((cout, cin, 1, 1, 1))))
    }
}

forward_op2!(Conv1x1WGrad, "dtml-conv1x1-weight-grad");
