//! Plumbing shared by the CPU custom ops: dtype dispatch from candle's
//! `CpuStorage` to our generic kernels, and a raw pointer that rayon tasks
//! writing disjoint parts of one buffer can share.

use super::kernel::Real;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result, Shape, Tensor, bail};
use std::mem::MaybeUninit;

/// A two-input CPU computation generic over the float type.
pub(crate) trait Kernel2 {
    /// Name for error messages.
    fn op_name(&self) -> &'static str;
    /// Computes the output from contiguous inputs of the given shapes.
    fn run<T: Real>(&self, a: &[T], sa: &Shape, b: &[T], sb: &Shape) -> Result<(Vec<T>, Shape)>;
}

/// The backward pass of an op linear in each of its inputs `x` and `w`:
/// each gradient is computed (by `dx`, `dw`) only when its input tracks
/// gradients.
pub(crate) fn linear_grads(
    x: &Tensor,
    w: &Tensor,
    dx: impl FnOnce() -> Result<Tensor>,
    dw: impl FnOnce() -> Result<Tensor>,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    Ok((
        x.track_op().then(dx).transpose()?,
        w.track_op().then(dw).transpose()?,
    ))
}

/// The contiguous values of `s` described by `l`, or an error if strided.
pub(crate) fn contiguous<'a, T: Real>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [T]> {
    let all = T::cpu_storage_as_slice(s)?;
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&all[start..end]),
        None => bail!("{op}: input must be contiguous"),
    }
}

/// Dispatches a [`Kernel2`] on the dtype of its inputs (f32 or f64).
pub(crate) fn apply2<K: Kernel2>(
    k: &K,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> Result<(CpuStorage, Shape)> {
    let op = k.op_name();
    crate::profile::timed(op, || match (s1, s2) {
        (CpuStorage::F32(_), CpuStorage::F32(_)) => {
            let (v, s) = k.run::<f32>(
                contiguous(s1, l1, op)?,
                l1.shape(),
                contiguous(s2, l2, op)?,
                l2.shape(),
            )?;
            Ok((CpuStorage::F32(v), s))
        }
        (CpuStorage::F64(_), CpuStorage::F64(_)) => {
            let (v, s) = k.run::<f64>(
                contiguous(s1, l1, op)?,
                l1.shape(),
                contiguous(s2, l2, op)?,
                l2.shape(),
            )?;
            Ok((CpuStorage::F64(v), s))
        }
        _ => bail!(
            "{op}: inputs must both be f32 or both f64, got {:?} and {:?}",
            s1.dtype(),
            s2.dtype()
        ),
    })
}

/// A three-input CPU computation generic over the float type (the third
/// input's shape is not needed by ours).
pub(crate) trait Kernel3 {
    /// Name for error messages.
    fn op_name(&self) -> &'static str;
    /// Computes the output from contiguous inputs.
    fn run<T: Real>(
        &self,
        a: &[T],
        sa: &Shape,
        b: &[T],
        sb: &Shape,
        c: &[T],
    ) -> Result<(Vec<T>, Shape)>;
}

/// Dispatches a [`Kernel3`] on the dtype of its inputs (f32 or f64).
pub(crate) fn apply3<K: Kernel3>(
    k: &K,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    (s3, l3): (&CpuStorage, &Layout),
) -> Result<(CpuStorage, Shape)> {
    let op = k.op_name();
    match (s1, s2, s3) {
        (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => {
            let (v, s) = k.run::<f32>(
                contiguous(s1, l1, op)?,
                l1.shape(),
                contiguous(s2, l2, op)?,
                l2.shape(),
                contiguous(s3, l3, op)?,
            )?;
            Ok((CpuStorage::F32(v), s))
        }
        (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
            let (v, s) = k.run::<f64>(
                contiguous(s1, l1, op)?,
                l1.shape(),
                contiguous(s2, l2, op)?,
                l2.shape(),
                contiguous(s3, l3, op)?,
            )?;
            Ok((CpuStorage::F64(v), s))
        }
        _ => bail!("{op}: inputs must all be f32 or all f64"),
    }
}

/// A pointer rayon tasks may share when each writes a disjoint region.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub *mut T);
// SAFETY: users only write disjoint elements from different threads.
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so closures capture the whole `SendPtr`).
    #[inline(always)]
    pub fn get(self) -> *mut T {
        self.0
    }
}

/// A vector of `len` values not yet written: for outputs every value of
/// which a kernel writes, so they cost no zero-filling pass first (a
/// whole-tensor `memset` on the calling thread while the others wait).
pub(crate) fn uninit_vec<T>(len: usize) -> Vec<MaybeUninit<T>> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: MaybeUninit values need no initialisation.
    unsafe { v.set_len(len) };
    v
}

/// The values of a vector from [`uninit_vec`] once all are written.
///
/// # Safety
/// Every element of `v` must have been written.
pub(crate) unsafe fn assume_init<T>(v: Vec<MaybeUninit<T>>) -> Vec<T> {
    let mut v = std::mem::ManuallyDrop::new(v);
    let (ptr, len, cap) = (v.as_mut_ptr(), v.len(), v.capacity());
    // SAFETY: MaybeUninit<T> has T's layout; the caller guarantees every
    // element is initialised; the allocation is moved, not duplicated.
    unsafe { Vec::from_raw_parts(ptr.cast::<T>(), len, cap) }
}

/// `len` values computed in parallel, chunk `i` of `chunk` values (the
/// last may be shorter) written by `fill(i, chunk)`, which must write
/// every value of its chunk. No zero-filling pass first.
pub(crate) fn par_filled<T: Send + Sync>(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync + Send,
) -> Vec<T> {
    use rayon::prelude::*;
    let mut v = uninit_vec(len);
    v.par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, c)| fill(i, c));
    // SAFETY: `fill` writes every value of every chunk (its contract).
    unsafe { assume_init(v) }
}

/// `a + b` element by element for two contiguous tensors of one shape, on
/// every thread (candle's own add runs on one, `runtime`'s module doc says
/// why). The same values as candle's add.
pub(crate) struct ParAdd;

/// Values per task of [`ParAdd`].
const ADD_CHUNK: usize = 1 << 16;

impl Kernel2 for ParAdd {
    fn op_name(&self) -> &'static str {
        "add"
    }

    fn run<T: Real>(&self, a: &[T], sa: &Shape, b: &[T], sb: &Shape) -> Result<(Vec<T>, Shape)> {
        if sa != sb {
            bail!("add: shapes {sa:?} and {sb:?} differ");
        }
        let sum = par_filled(a.len(), ADD_CHUNK, |i, out| {
            let start = i * ADD_CHUNK;
            for ((o, &x), &y) in out.iter_mut().zip(&a[start..]).zip(&b[start..]) {
                o.write(x + y);
            }
        });
        Ok((sum, sa.clone()))
    }
}

forward_op2!(ParAdd, "dtml-parallel-add");

/// `a + b` for tensors no graph records ([`ParAdd`] on the CPU).
pub(crate) fn add_detached(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.device().is_cpu() {
        a.contiguous()?.apply_op2_no_bwd(&b.contiguous()?, &ParAdd)
    } else {
        a + b
    }
}

/// Makes a [`Kernel2`] a candle op that is never differentiated (gradient
/// kernels, recomputations): its `cpu_fwd` is [`apply2`].
macro_rules! forward_op2 {
    ($kernel:ty, $name:literal) => {
        impl candle_core::CustomOp2 for $kernel {
            fn name(&self) -> &'static str {
                $name
            }

            fn cpu_fwd(
                &self,
                s1: &candle_core::CpuStorage,
                l1: &candle_core::Layout,
                s2: &candle_core::CpuStorage,
                l2: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                $crate::ops::cpu::apply2(self, s1, l1, s2, l2)
            }
        }
    };
}
pub(crate) use forward_op2;

/// Makes a [`Kernel3`] a candle op that is never differentiated (gradient
/// and inference kernels): its `cpu_fwd` is [`apply3`].
macro_rules! forward_op3 {
    ($kernel:ty, $name:literal) => {
        impl candle_core::CustomOp3 for $kernel {
            fn name(&self) -> &'static str {
                $name
            }

            fn cpu_fwd(
                &self,
                s1: &candle_core::CpuStorage,
                l1: &candle_core::Layout,
                s2: &candle_core::CpuStorage,
                l2: &candle_core::Layout,
                s3: &candle_core::CpuStorage,
                l3: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                $crate::ops::cpu::apply3(self, (s1, l1), (s2, l2), (s3, l3))
            }
        }
    };
}
pub(crate) use forward_op3;
