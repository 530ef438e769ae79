//! Direct 3D convolution on the CPU: forward, input gradient and weight
//! gradient as candle custom ops.
//!
//! The trick that makes a direct kernel simple and fast: zero-pad the input
//! once, then index every output plane in *padded-width* coordinates
//! `q = yo * Wp + xo` (`Wp` the padded row length). In those coordinates a
//! kernel tap `(dz, dy, dx)` of input channel `ci` is the constant offset
//! `ci * Dp*Hp*Wp + dz * Hp*Wp + dy * Wp + dx`, so every (channel, tap) pair
//! reads one contiguous run of the padded input and no im2col matrix is
//! ever built. Positions with `xo >= Wo` are computed and dropped (2 of 58
//! columns at the benchmark size). Register tiles come from
//! [`super::kernel`]; threads split planes and position tiles.
//!
//! Input gradient = convolution of the output gradient, padded by
//! `k - 1 - p`, with the spatially flipped, in/out-transposed kernel: the
//! same forward kernel. Weight gradient = sum over positions of
//! `dy[co][q] * x[off(ci, tap) + q]`, with `dy` transposed position-major
//! per chunk so the reduction vectorises over output channels.

use super::cpu::{Kernel2, SendPtr, apply2};
use super::kernel::{CB, DW_ACC, Real, TILE};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

/// Positions per weight-gradient chunk (its transposed gradient block,
/// `QC x Cout`, stays in L1/L2 while every column group reuses it).
const QC: usize = 256;

/// Padded volume geometry of one (sample, channel).
#[derive(Clone, Copy, Debug)]
struct Padded {
    dp: usize,
    hp: usize,
    wp: usize,
}

impl Padded {
    fn vol(&self) -> usize {
        self.dp * self.hp * self.wp
    }
}

/// Zeros needed after the last padded volume so the last tile's vector
/// reads (up to a whole tile past the last valid position) stay in bounds.
fn slack(k: usize) -> usize {
    TILE + k + 16
}

/// Zero-pads each of the `nc` volumes `(d, h, w)` by `pad` on every side
/// and appends [`slack`] zeros.
fn pad_volumes<T: Real>(
    x: &[T],
    nc: usize,
    (d, h, w): (usize, usize, usize),
    pad: usize,
    k: usize,
) -> (Vec<T>, Padded) {
    let p = Padded {
        dp: d + 2 * pad,
        hp: h + 2 * pad,
        wp: w + 2 * pad,
    };
    let vol = p.vol();
    let mut out = vec![T::default(); nc * vol + slack(k)];
    out[..nc * vol]
        .par_chunks_mut(vol)
        .zip(x.par_chunks(d * h * w))
        .for_each(|(o, i)| {
            for z in 0..d {
                for y in 0..h {
                    let src = &i[(z * h + y) * w..][..w];
                    o[((z + pad) * p.hp + y + pad) * p.wp + pad..][..w].copy_from_slice(src);
                }
            }
        });
    (out, p)
}

/// Offsets of every (input channel, tap) run relative to the plane origin.
fn tap_offsets(cin: usize, k: usize, p: Padded) -> Vec<usize> {
    let mut offs = Vec::with_capacity(cin * k * k * k);
    for ci in 0..cin {
        for dz in 0..k {
            for dy in 0..k {
                for dx in 0..k {
                    offs.push(ci * p.vol() + dz * p.hp * p.wp + dy * p.wp + dx);
                }
            }
        }
    }
    offs
}

/// Packs weights as `[co block][j = ci * k^3 + tap][CB]`, zero beyond
/// `cout`, from `get(co, ci, tap)`.
fn pack_weights<T: Real>(
    cout: usize,
    cin: usize,
    k3: usize,
    get: impl Fn(usize, usize, usize) -> T,
) -> Vec<T> {
    let nb = cout.div_ceil(CB);
    let jn = cin * k3;
    let mut out = vec![T::default(); nb * jn * CB];
    for co in 0..cout {
        let (b, c) = (co / CB, co % CB);
        for ci in 0..cin {
            for tap in 0..k3 {
                out[(b * jn + ci * k3 + tap) * CB + c] = get(co, ci, tap);
            }
        }
    }
    out
}

/// Valid convolution of padded volumes: `xp` holds `n * cin` padded volumes
/// (plus slack), `wpk` packed weights; returns `(n, cout, dp-k+1, hp-k+1,
/// wp-k+1)`.
fn conv_padded<T: Real>(
    xp: &[T],
    n: usize,
    cin: usize,
    p: Padded,
    k: usize,
    cout: usize,
    wpk: &[T],
) -> Vec<T> {
    let (do_, ho, wo) = (p.dp + 1 - k, p.hp + 1 - k, p.wp + 1 - k);
    let offs = tap_offsets(cin, k, p);
    let jn = offs.len();
    let nb = cout.div_ceil(CB);
    let planes = n * do_;
    let qlen = ho * p.wp;
    let ntiles = qlen.div_ceil(TILE);
    // Enough tasks for load balance, each a run of tiles of one plane.
    let want = 8 * rayon::current_num_threads();
    let chunks = want.div_ceil(planes).clamp(1, ntiles);
    let tiles_per = ntiles.div_ceil(chunks);
    let mut out = vec![T::default(); n * cout * do_ * ho * wo];
    let optr = SendPtr(out.as_mut_ptr());
    assert!(xp.len() >= n * cin * p.vol() + slack(k) && wpk.len() >= nb * jn * CB);
    (0..planes * chunks).into_par_iter().for_each(|task| {
        let (plane, chunk) = (task / chunks, task % chunks);
        let (ni, zo) = (plane / do_, plane % do_);
        let base = (ni * cin * p.dp + zo) * p.hp * p.wp;
        let mut buf = [T::default(); CB * TILE];
        for t in chunk * tiles_per..((chunk + 1) * tiles_per).min(ntiles) {
            let q0 = t * TILE;
            for b in 0..nb {
                // SAFETY: reads stay below base + q0 + TILE + offs[jn-1]
                // <= n*cin*vol + TILE + k (see `slack`), asserted above.
                unsafe {
                    T::fwd_tile(
                        xp.as_ptr().add(base + q0),
                        &offs,
                        wpk.as_ptr().add(b * jn * CB),
                        &mut buf,
                    )
                };
                for c in 0..CB.min(cout - b * CB) {
                    let co = b * CB + c;
                    let obase = ((ni * cout + co) * do_ + zo) * ho * wo;
                    for (i, &v) in buf[c * TILE..(c + 1) * TILE].iter().enumerate() {
                        let q = q0 + i;
                        if q >= qlen {
                            break;
                        }
                        let (yo, xo) = (q / p.wp, q % p.wp);
                        if xo < wo {
                            // SAFETY: in bounds; (plane, q) pairs are
                            // disjoint between tasks.
                            unsafe { *optr.get().add(obase + yo * wo + xo) = v };
                        }
                    }
                }
            }
        }
    });
    out
}

/// Weight gradient: `xp` padded input (`n * cin` volumes plus slack), `dy`
/// the output gradient `(n, cout, do, ho, wo)`; returns `(cout, cin, k, k, k)`.
fn conv_wgrad<T: Real>(
    xp: &[T],
    n: usize,
    cin: usize,
    p: Padded,
    k: usize,
    dy: &[T],
    cout: usize,
) -> Vec<T> {
    let (do_, ho, wo) = (p.dp + 1 - k, p.hp + 1 - k, p.wp + 1 - k);
    let k3 = k * k * k;
    let co_w = if cout.is_multiple_of(32) { 32 } else { 16 };
    let nt = DW_ACC / co_w;
    let coutp = cout.next_multiple_of(co_w);
    let mut offs = tap_offsets(cin, k, p);
    let jn = offs.len();
    let jp = jn.next_multiple_of(nt);
    offs.resize(jp, 0);
    let planes = n * do_;
    let qlen = ho * p.wp;
    assert!(xp.len() >= n * cin * p.vol() + slack(k) && dy.len() == n * cout * do_ * ho * wo);
    // Fixed partition of the planes (independent of the thread count, so
    // the summation order and hence the result is reproducible); each part
    // has its own accumulator, capped at ~32 MB in total.
    let acc_len = jp * coutp;
    let cap = ((32usize << 20) / (acc_len * std::mem::size_of::<T>())).max(1);
    let parts = planes.min(8).min(cap).max(1);
    let partials: Vec<Vec<T>> = (0..parts)
        .into_par_iter()
        .map(|s| {
            let mut acc = vec![T::default(); acc_len];
            let mut dyt = vec![T::default(); QC * coutp];
            for plane in s * planes / parts..(s + 1) * planes / parts {
                let (ni, zo) = (plane / do_, plane % do_);
                for q0 in (0..qlen).step_by(QC) {
                    let nq = QC.min(qlen - q0);
                    for co in 0..cout {
                        let src = &dy[((ni * cout + co) * do_ + zo) * ho * wo..][..ho * wo];
                        for qq in 0..nq {
                            let q = q0 + qq;
                            let (yo, xo) = (q / p.wp, q % p.wp);
                            dyt[qq * coutp + co] = if xo < wo {
                                src[yo * wo + xo]
                            } else {
                                T::default()
                            };
                        }
                    }
                    let xbase = (ni * cin * p.dp + zo) * p.hp * p.wp + q0;
                    for g in 0..jp / nt {
                        for v in 0..coutp / co_w {
                            let dptr = dyt[v * co_w..].as_ptr();
                            let aptr = acc[g * nt * coutp + v * co_w..].as_mut_ptr();
                            // SAFETY: x reads as in the forward (q < qlen);
                            // dyt has nq rows of coutp; acc has jp rows.
                            unsafe {
                                let xptr = xp.as_ptr().add(xbase);
                                if co_w == 32 {
                                    let o: &[usize; DW_ACC / 32] =
                                        offs[g * nt..][..nt].try_into().unwrap();
                                    T::dw_tile::<2, { DW_ACC / 32 }>(
                                        dptr, coutp, nq, xptr, o, aptr, coutp,
                                    );
                                } else {
                                    let o: &[usize; DW_ACC / 16] =
                                        offs[g * nt..][..nt].try_into().unwrap();
                                    T::dw_tile::<1, { DW_ACC / 16 }>(
                                        dptr, coutp, nq, xptr, o, aptr, coutp,
                                    );
                                }
                            }
                        }
                    }
                }
            }
            acc
        })
        .collect();
    let mut dw = vec![T::default(); cout * cin * k3];
    for (co, row) in dw.chunks_mut(cin * k3).enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            let mut s = T::default();
            for part in &partials {
                s += part[j * coutp + co];
            }
            *v = s;
        }
    }
    dw
}

/// Forward: `(x, w)`, `w` is `(Cout, Cin, k, k, k)`.
pub(crate) struct Conv3d {
    pub padding: usize,
}

impl Kernel2 for Conv3d {
    fn op_name(&self) -> &'static str {
        "conv3d"
    }

    fn run<T: Real>(&self, x: &[T], sx: &Shape, w: &[T], sw: &Shape) -> Result<(Vec<T>, Shape)> {
        let (n, cin, d, h, wd) = sx.dims5()?;
        let (cout, wcin, k, _, _) = sw.dims5()?;
        if wcin != cin || self.padding >= k {
            bail!("conv3d: bad shapes {sx:?} {sw:?}");
        }
        let k3 = k * k * k;
        let (xp, p) = pad_volumes(x, n * cin, (d, h, wd), self.padding, k);
        let wpk = pack_weights(cout, cin, k3, |co, ci, tap| w[(co * cin + ci) * k3 + tap]);
        let out = conv_padded(&xp, n, cin, p, k, cout, &wpk);
        Ok((
            out,
            Shape::from((n, cout, p.dp + 1 - k, p.hp + 1 - k, p.wp + 1 - k)),
        ))
    }
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

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let dx = if x.track_op() {
            Some(g.apply_op2_no_bwd(
                w,
                &Conv3dInputGrad {
                    padding: self.padding,
                },
            )?)
        } else {
            None
        };
        let dw = if w.track_op() {
            let k = w.dim(2)?;
            Some(x.apply_op2_no_bwd(
                &g,
                &Conv3dWeightGrad {
                    padding: self.padding,
                    k,
                },
            )?)
        } else {
            None
        };
        Ok((dx, dw))
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
        let (gp, p) = pad_volumes(g, n * cout, (do_, ho, wo), pad, k);
        // Flipped taps, in/out swapped: w'[ci][co][tap] = w[co][ci][k3-1-tap].
        let wpk = pack_weights(cin, cout, k3, |ci, co, tap| {
            w[(co * cin + ci) * k3 + k3 - 1 - tap]
        });
        let out = conv_padded(&gp, n, cout, p, k, cin, &wpk);
        Ok((
            out,
            Shape::from((n, cin, p.dp + 1 - k, p.hp + 1 - k, p.wp + 1 - k)),
        ))
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
        let (xp, p) = pad_volumes(x, n * cin, (d, h, wd), self.padding, k);
        let dw = conv_wgrad(&xp, n, cin, p, k, g, cout);
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
}
