//! The `k x k x k` convolution on NVIDIA GPUs through cuDNN's N-d
//! convolution: forward, data gradient and filter gradient of 5-D tensors
//! `(N, C, Z, Y, X)` (cuDNN's NCDHW) with kernels `(Cout, Cin, kz, ky, kx)`
//! (cuDNN's KCTRS), stride 1, cross-correlation, symmetric zero padding.
//!
//! Each thread keeps, per candle CUDA device, one cuDNN handle bound to the
//! device's stream (so cuDNN runs in order with candle's own kernels and
//! cuBLAS calls), a cache of the algorithm chosen for every convolution
//! geometry, and one workspace buffer grown to the largest size asked.
//! Handles are per thread because cuDNN handles must not be shared between
//! threads without synchronisation (candle does the same for its conv2d).
//!
//! Algorithm choice: cuDNN's heuristics by default (`cudnnGet*Algorithm_v7`,
//! like PyTorch with `cudnn.benchmark = False`), or timed trials of every
//! algorithm once per geometry (`cudnnFind*Algorithm`, like
//! `cudnn.benchmark = True`) after [`set_benchmark`]`(true)`. The first
//! candidate that succeeds and fits [`workspace_limit`] is taken.
//!
//! Precision: f32 runs with `CUDNN_FMA_MATH` (true f32, no TF32 tensor
//! cores) unless [`set_allow_tf32`]`(true)`, which also lets candle's f32
//! matmuls use TF32 — PyTorch's `allow_tf32` switches. f64 is supported
//! (cuDNN's double configuration, which has fewer and slower algorithms).
//!
//! The per-thread state and the three passes live here; the descriptors
//! and the algorithm choice in their own modules.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cudnn::{CudnnDataType, result, sys};
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaStream, CudaView, DevicePtr, DevicePtrMut, DeviceRepr,
};
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorageSlice, DeviceId};
use candle_core::{CudaStorage, DType, Error, Layout, Result, Shape, WithDType};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

mod algorithms;
mod descriptors;
use algorithms::*;
use descriptors::*;

static ALLOW_TF32: AtomicBool = AtomicBool::new(false);
static BENCHMARK: AtomicBool = AtomicBool::new(false);
static WORKSPACE_LIMIT: AtomicUsize = AtomicUsize::new(1 << 30);

/// Lets f32 convolutions (cuDNN) and f32 matmuls (candle's cuBLAS calls)
/// use TF32 tensor cores: faster, about 10 bits of mantissa. Off by
/// default. Affects geometries chosen after the call.
pub fn set_allow_tf32(allow: bool) {
    ALLOW_TF32.store(allow, Ordering::Relaxed);
    candle_core::cuda_backend::set_gemm_reduced_precision_f32(allow);
}

/// Whether TF32 is allowed (see [`set_allow_tf32`]).
pub fn allow_tf32() -> bool {
    ALLOW_TF32.load(Ordering::Relaxed)
}

/// Chooses algorithms by timing every candidate once per geometry (true)
/// instead of cuDNN's heuristics (false, the default).
pub fn set_benchmark(on: bool) {
    BENCHMARK.store(on, Ordering::Relaxed);
}

/// Whether algorithms are chosen by timed trials (see [`set_benchmark`]).
pub fn benchmark() -> bool {
    BENCHMARK.load(Ordering::Relaxed)
}

/// Largest workspace, in bytes, an algorithm may ask for (default 1 GiB).
/// When no candidate fits, the one needing the least is taken.
pub fn set_workspace_limit(bytes: usize) {
    WORKSPACE_LIMIT.store(bytes, Ordering::Relaxed);
}

/// The workspace limit in bytes (see [`set_workspace_limit`]).
pub fn workspace_limit() -> usize {
    WORKSPACE_LIMIT.load(Ordering::Relaxed)
}

/// The version of the cuDNN library loaded (e.g. 91300 for 9.13.0).
pub fn version() -> usize {
    result::get_version()
}

fn err(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Cuda(format!("conv3d (cuDNN): {what}: {e:?}").into())
}

/// Which of the three convolution computations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Pass {
    Forward,
    Data,
    Filter,
}

/// Geometry of one convolution: input `(n, cin, d, h, w)`, kernel
/// `(cout, cin, k, k, k)`, padding `pad` on every side, stride 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Geom5 {
    n: usize,
    cin: usize,
    cout: usize,
    d: usize,
    h: usize,
    w: usize,
    k: usize,
    pad: usize,
}

impl Geom5 {
    /// Output dims `(do, ho, wo)`.
    fn out(&self) -> (usize, usize, usize) {
        let o = |a: usize| a + 2 * self.pad + 1 - self.k;
        (o(self.d), o(self.h), o(self.w))
    }
}

/// An algorithm of one of the three passes.
#[derive(Clone, Copy, Debug)]
enum Algo {
    Forward(sys::cudnnConvolutionFwdAlgo_t),
    Data(sys::cudnnConvolutionBwdDataAlgo_t),
    Filter(sys::cudnnConvolutionBwdFilterAlgo_t),
}

/// Cache key: pass, dtype, geometry, math mode and choice method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    pass: Pass,
    f64: bool,
    geom: Geom5,
    tf32: bool,
    benchmark: bool,
}

/// A chosen algorithm (as its raw enum value) and its workspace size.
#[derive(Clone, Copy, Debug)]
struct Choice {
    algo: Algo,
    workspace: usize,
    math: sys::cudnnMathType_t,
}

/// One device's cuDNN state on one thread.
struct State {
    handle: sys::cudnnHandle_t,
    stream: Arc<CudaStream>,
    choices: HashMap<Key, Choice>,
    workspace: Option<CudaSlice<u8>>,
}

impl Drop for State {
    fn drop(&mut self) {
        self.workspace = None;
        // SAFETY: the handle was created by `cudnnCreate` and is dropped once.
        unsafe {
            let _ = result::destroy_handle(self.handle);
        }
    }
}

thread_local! {
    static STATES: RefCell<HashMap<DeviceId, State>> = RefCell::new(HashMap::new());
}

/// Runs `f` with this thread's cuDNN state for `dev`, creating it first.
fn with_state<R>(dev: &CudaDevice, f: impl FnOnce(&mut State) -> Result<R>) -> Result<R> {
    STATES.with(|states| {
        let mut states = states.borrow_mut();
        let state = match states.entry(dev.id()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let stream = dev.cuda_stream();
                stream
                    .context()
                    .bind_to_thread()
                    .map_err(|e| err("binding the CUDA context", e))?;
                let handle = result::create_handle().map_err(|e| {
                    err(
                        "cudnnCreate failed (is libcudnn.so.9 on LD_LIBRARY_PATH?)",
                        e,
                    )
                })?;
                // SAFETY: a fresh handle and the device's live stream.
                unsafe { result::set_stream(handle, stream.cu_stream() as *mut _) }.map_err(
                    |e| {
                        // SAFETY: created just above, not stored anywhere.
                        unsafe {
                            let _ = result::destroy_handle(handle);
                        }
                        err("cudnnSetStream", e)
                    },
                )?;
                e.insert(State {
                    handle,
                    stream,
                    choices: HashMap::new(),
                    workspace: None,
                })
            }
        };
        f(state)
    })
}

/// The contiguous typed view of a storage, honouring the layout's offset.
fn view<'a, T: CudaDType>(s: &'a CudaStorage, l: &Layout, what: &str) -> Result<CudaView<'a, T>> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(s.as_cuda_slice::<T>()?.slice(a..b)),
        None => Err(err(&format!("{what} must be contiguous"), l.stride())),
    }
}

/// Runs one pass in type `T`: `a` and `b` are the op's two inputs
/// (forward: x, w; data: dy, w; filter: x, dy), `out_len` the output size.
#[allow(clippy::too_many_arguments)]
fn run<T>(
    pass: Pass,
    geom: Geom5,
    a: &CudaStorage,
    la: &Layout,
    b: &CudaStorage,
    lb: &Layout,
    out_len: usize,
) -> Result<CudaSlice<T>>
where
    T: CudaDType + CudnnDataType<Scalar = T> + DeviceRepr + WithDType,
{
    let dev = &a.device;
    let is_f64 = T::DTYPE == DType::F64;
    let tf32 = allow_tf32() && !is_f64;
    let key = Key {
        pass,
        f64: is_f64,
        geom,
        tf32,
        benchmark: benchmark(),
    };
    let default_math = if is_f64 || tf32 {
        sys::cudnnMathType_t::CUDNN_DEFAULT_MATH
    } else {
        sys::cudnnMathType_t::CUDNN_FMA_MATH
    };
    let va = view::<T>(a, la, "first input")?;
    let vb = view::<T>(b, lb, "second input")?;
    with_state(dev, |state| {
        let ds = Descs::new(T::DATA_TYPE, &geom)?;
        let choice = choose(state, key, &ds, default_math)?;
        workspace(state, choice.workspace)?;
        let stream = state.stream.clone();
        // SAFETY: cuDNN writes every output element (beta = 0).
        let mut out = unsafe { stream.alloc::<T>(out_len) }
            .map_err(|e| err(&format!("allocating {out_len} outputs"), e))?;
        let alpha = T::from_f64(1.0);
        let beta = T::from_f64(0.0);
        let alpha_p = &alpha as *const T as *const c_void;
        let beta_p = &beta as *const T as *const c_void;
        let (ws_ptr, _ws_guard) = match state.workspace.as_mut() {
            Some(w) if choice.workspace > 0 => {
                let (p, g) = w.device_ptr_mut(&stream);
                (p as *mut c_void, Some(g))
            }
            _ => (std::ptr::null_mut(), None),
        };
        let (pa, _ga) = va.device_ptr(&stream);
        let (pb, _gb) = vb.device_ptr(&stream);
        let (po, _go) = out.device_ptr_mut(&stream);
        let (pa, pb, po) = (pa as *const c_void, pb as *const c_void, po as *mut c_void);
        let h = state.handle;
        // SAFETY: live handle and descriptors matching the buffers' types
        // and shapes (checked by the callers), and a workspace of at least
        // `choice.workspace` bytes.
        let status = unsafe {
            match choice.algo {
                Algo::Forward(algo) => sys::cudnnConvolutionForward(
                    h,
                    alpha_p,
                    ds.x.0,
                    pa,
                    ds.w.0,
                    pb,
                    ds.conv.0,
                    algo,
                    ws_ptr,
                    choice.workspace,
                    beta_p,
                    ds.y.0,
                    po,
                ),
                Algo::Data(algo) => sys::cudnnConvolutionBackwardData(
                    h,
                    alpha_p,
                    ds.w.0,
                    pb,
                    ds.y.0,
                    pa,
                    ds.conv.0,
                    algo,
                    ws_ptr,
                    choice.workspace,
                    beta_p,
                    ds.x.0,
                    po,
                ),
                Algo::Filter(algo) => sys::cudnnConvolutionBackwardFilter(
                    h,
                    alpha_p,
                    ds.x.0,
                    pa,
                    ds.y.0,
                    pb,
                    ds.conv.0,
                    algo,
                    ws_ptr,
                    choice.workspace,
                    beta_p,
                    ds.w.0,
                    po,
                ),
            }
        };
        status
            .result()
            .map_err(|e| err(&format!("{pass:?} pass, {:?}", choice.algo), e))?;
        drop((_ga, _gb, _go, _ws_guard));
        Ok(out)
    })
}

/// Dispatches one pass on the dtype of its inputs; the output has `shape`.
fn dispatch(
    pass: Pass,
    geom: Geom5,
    a: &CudaStorage,
    la: &Layout,
    b: &CudaStorage,
    lb: &Layout,
    shape: Shape,
) -> Result<(CudaStorage, Shape)> {
    let dev = a.device.clone();
    let len = shape.elem_count();
    let out = match (&a.slice, &b.slice) {
        (CudaStorageSlice::F32(_), CudaStorageSlice::F32(_)) => {
            CudaStorage::wrap_cuda_slice(run::<f32>(pass, geom, a, la, b, lb, len)?, dev)
        }
        (CudaStorageSlice::F64(_), CudaStorageSlice::F64(_)) => {
            CudaStorage::wrap_cuda_slice(run::<f64>(pass, geom, a, la, b, lb, len)?, dev)
        }
        _ => {
            return Err(err(
                "inputs must both be f32 or both f64",
                (a.dtype(), b.dtype()),
            ));
        }
    };
    Ok((out, shape))
}

fn dims5(l: &Layout) -> Result<[usize; 5]> {
    let (a, b, c, d, e) = l.shape().dims5()?;
    Ok([a, b, c, d, e])
}

/// Forward: `x (N, Cin, D, H, W)`, `w (Cout, Cin, k, k, k)`.
pub(crate) fn forward(
    x: &CudaStorage,
    lx: &Layout,
    w: &CudaStorage,
    lw: &Layout,
    pad: usize,
) -> Result<(CudaStorage, Shape)> {
    let [n, cin, d, h, wd] = dims5(lx)?;
    let [cout, wcin, k, _, _] = dims5(lw)?;
    if wcin != cin {
        return Err(err("channel mismatch", (lx.dims(), lw.dims())));
    }
    let g = Geom5 {
        n,
        cin,
        cout,
        d,
        h,
        w: wd,
        k,
        pad,
    };
    let (do_, ho, wo) = g.out();
    dispatch(
        Pass::Forward,
        g,
        x,
        lx,
        w,
        lw,
        Shape::from((n, cout, do_, ho, wo)),
    )
}

/// Data gradient: `dy (N, Cout, Do, Ho, Wo)`, `w (Cout, Cin, k, k, k)`.
pub(crate) fn input_grad(
    dy: &CudaStorage,
    ly: &Layout,
    w: &CudaStorage,
    lw: &Layout,
    pad: usize,
) -> Result<(CudaStorage, Shape)> {
    let [n, gc, do_, ho, wo] = dims5(ly)?;
    let [cout, cin, k, _, _] = dims5(lw)?;
    if gc != cout || do_ + k < 2 * pad + 2 || ho + k < 2 * pad + 2 || wo + k < 2 * pad + 2 {
        return Err(err("bad shapes", (ly.dims(), lw.dims(), pad)));
    }
    let back = |o: usize| o + k - 1 - 2 * pad;
    let g = Geom5 {
        n,
        cin,
        cout,
        d: back(do_),
        h: back(ho),
        w: back(wo),
        k,
        pad,
    };
    dispatch(
        Pass::Data,
        g,
        dy,
        ly,
        w,
        lw,
        Shape::from((n, cin, g.d, g.h, g.w)),
    )
}

/// Filter gradient: `x (N, Cin, D, H, W)`, `dy (N, Cout, Do, Ho, Wo)`.
pub(crate) fn weight_grad(
    x: &CudaStorage,
    lx: &Layout,
    dy: &CudaStorage,
    ly: &Layout,
    k: usize,
    pad: usize,
) -> Result<(CudaStorage, Shape)> {
    let [n, cin, d, h, wd] = dims5(lx)?;
    let [gn, cout, _, _, _] = dims5(ly)?;
    let g = Geom5 {
        n,
        cin,
        cout,
        d,
        h,
        w: wd,
        k,
        pad,
    };
    let (do_, ho, wo) = g.out();
    if gn != n || [gn, cout, do_, ho, wo] != dims5(ly)? {
        return Err(err("bad shapes", (lx.dims(), ly.dims(), k, pad)));
    }
    dispatch(
        Pass::Filter,
        g,
        x,
        lx,
        dy,
        ly,
        Shape::from((cout, cin, k, k, k)),
    )
}
