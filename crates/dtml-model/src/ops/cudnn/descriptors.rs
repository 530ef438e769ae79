//! Owned cuDNN descriptors (tensor, filter, convolution) and the set of
//! them one convolution geometry needs.

use super::*;

/// An owned tensor descriptor.
pub(super) struct TensorDesc(pub(super) sys::cudnnTensorDescriptor_t);
impl TensorDesc {
    pub(super) fn new(dtype: sys::cudnnDataType_t, dims: [usize; 5]) -> Result<Self> {
        let d = to_c(dims)?;
        let s = [
            d[1] * d[2] * d[3] * d[4],
            d[2] * d[3] * d[4],
            d[3] * d[4],
            d[4],
            1,
        ];
        let desc = TensorDesc(result::create_tensor_descriptor().map_err(|e| err("tensor", e))?);
        // SAFETY: a live descriptor, 5 dims and strides.
        unsafe { result::set_tensornd_descriptor(desc.0, dtype, 5, d.as_ptr(), s.as_ptr()) }
            .map_err(|e| err(&format!("tensor descriptor {dims:?}"), e))?;
        Ok(desc)
    }
}
impl Drop for TensorDesc {
    fn drop(&mut self) {
        // SAFETY: created by us, destroyed once.
        unsafe {
            let _ = result::destroy_tensor_descriptor(self.0);
        }
    }
}

/// An owned filter descriptor (NCHW-style layout: KCTRS).
pub(super) struct FilterDesc(pub(super) sys::cudnnFilterDescriptor_t);
impl FilterDesc {
    pub(super) fn new(dtype: sys::cudnnDataType_t, dims: [usize; 5]) -> Result<Self> {
        let d = to_c(dims)?;
        let desc = FilterDesc(result::create_filter_descriptor().map_err(|e| err("filter", e))?);
        // SAFETY: a live descriptor and 5 dims.
        unsafe {
            result::set_filternd_descriptor(
                desc.0,
                dtype,
                sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                5,
                d.as_ptr(),
            )
        }
        .map_err(|e| err(&format!("filter descriptor {dims:?}"), e))?;
        Ok(desc)
    }
}
impl Drop for FilterDesc {
    fn drop(&mut self) {
        // SAFETY: created by us, destroyed once.
        unsafe {
            let _ = result::destroy_filter_descriptor(self.0);
        }
    }
}

/// An owned 3-D convolution descriptor: padding `pad` on every side,
/// stride 1, dilation 1, cross-correlation.
pub(super) struct ConvDesc(pub(super) sys::cudnnConvolutionDescriptor_t);
impl ConvDesc {
    pub(super) fn new(dtype: sys::cudnnDataType_t, pad: usize) -> Result<Self> {
        let p = c_int::try_from(pad).map_err(|e| err("padding", e))?;
        let desc =
            ConvDesc(result::create_convolution_descriptor().map_err(|e| err("convolution", e))?);
        // SAFETY: a live descriptor and three-element arrays.
        unsafe {
            result::set_convolutionnd_descriptor(
                desc.0,
                3,
                [p; 3].as_ptr(),
                [1; 3].as_ptr(),
                [1; 3].as_ptr(),
                sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                dtype,
            )
        }
        .map_err(|e| err("convolution descriptor", e))?;
        Ok(desc)
    }

    pub(super) fn set_math(&self, math: sys::cudnnMathType_t) -> Result<()> {
        // SAFETY: a live descriptor.
        unsafe { result::set_convolution_math_type(self.0, math) }
            .map_err(|e| err("cudnnSetConvolutionMathType", e))
    }
}
impl Drop for ConvDesc {
    fn drop(&mut self) {
        // SAFETY: created by us, destroyed once.
        unsafe {
            let _ = result::destroy_convolution_descriptor(self.0);
        }
    }
}

pub(super) fn to_c(dims: [usize; 5]) -> Result<[c_int; 5]> {
    let mut out = [0; 5];
    for (o, d) in out.iter_mut().zip(dims) {
        *o = c_int::try_from(d).map_err(|e| err(&format!("dimension {d} too large"), e))?;
    }
    Ok(out)
}

/// The descriptors of one convolution geometry.
pub(super) struct Descs {
    pub(super) x: TensorDesc,
    pub(super) w: FilterDesc,
    pub(super) y: TensorDesc,
    pub(super) conv: ConvDesc,
}

impl Descs {
    pub(super) fn new(dtype: sys::cudnnDataType_t, g: &Geom5) -> Result<Self> {
        let (do_, ho, wo) = g.out();
        Ok(Descs {
            x: TensorDesc::new(dtype, [g.n, g.cin, g.d, g.h, g.w])?,
            w: FilterDesc::new(dtype, [g.cout, g.cin, g.k, g.k, g.k])?,
            y: TensorDesc::new(dtype, [g.n, g.cout, do_, ho, wo])?,
            conv: ConvDesc::new(dtype, g.pad)?,
        })
    }
}
