//! Masks from numpy: what a user passes, read in place where it can be.

use numpy::{PyArrayMethods, PyReadonlyArrayDyn};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

/// A mask as the library reads it: a bool or uint8 array in C order.
pub(crate) enum Mask<'py> {
    Bool(PyReadonlyArrayDyn<'py, bool>),
    U8(PyReadonlyArrayDyn<'py, u8>),
}

/// A mask's voxels, borrowed for a call without the GIL.
#[derive(Clone, Copy)]
pub(crate) enum Voxels<'a> {
    Bool(&'a [bool]),
    U8(&'a [u8]),
}

impl<'py> Mask<'py> {
    /// Reads `obj` as a mask (`what` names the argument in errors).
    pub(crate) fn read(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<(Mask<'py>, Vec<usize>)> {
        let py = obj.py();
        let np = py.import("numpy")?;
        let array = np.call_method1("asarray", (obj,))?;
        let shape: Vec<usize> = array.getattr("shape")?.extract()?;
        if shape.is_empty() || shape.len() > 3 {
            return Err(PyValueError::new_err(format!(
                "{what} has {} axes; dtml reads masks of 1 to 3 axes",
                shape.len()
            )));
        }
        let kind: String = array.getattr("dtype")?.getattr("kind")?.extract()?;
        let itemsize: usize = array.getattr("dtype")?.getattr("itemsize")?.extract()?;
        let c_order: bool = array
            .getattr("flags")?
            .get_item("C_CONTIGUOUS")?
            .extract()?;
        let array = match (kind.as_str(), itemsize, c_order) {
            ("b", _, true) => return Ok((Mask::Bool(array.extract()?), shape)),
            ("u", 1, true) => return Ok((Mask::U8(array.extract()?), shape)),
            ("b" | "u" | "i", _, _) => array,
            ("f", _, _) => {
                refuse_nan(&array, what, "a mask is 0 / non-zero")?;
                array
            }
            _ => {
                return Err(PyTypeError::new_err(format!(
                    "{what} has dtype {}: a mask is bool, integer or float",
                    array.getattr("dtype")?.str()?
                )));
            }
        };
        let nonzero = array.call_method1("__ne__", (0,))?;
        let contiguous = np.call_method1("ascontiguousarray", (nonzero,))?;
        Ok((Mask::Bool(contiguous.extract()?), shape))
    }

    pub(crate) fn voxels(&self) -> PyResult<Voxels<'_>> {
        let not_contiguous = |e: numpy::AsSliceError| PyValueError::new_err(e.to_string());
        Ok(match self {
            Mask::Bool(a) => Voxels::Bool(a.as_slice().map_err(not_contiguous)?),
            Mask::U8(a) => Voxels::U8(a.as_slice().map_err(not_contiguous)?),
        })
    }

    /// The mask as bool (a uint8 mask converted), for pairing with one.
    fn into_bool(self, py: Python<'py>) -> PyResult<Mask<'py>> {
        match self {
            Mask::Bool(_) => Ok(self),
            Mask::U8(a) => {
                let b = a.as_array().mapv(|v| v != 0);
                Ok(Mask::Bool(
                    numpy::PyArray::from_owned_array(py, b).readonly(),
                ))
            }
        }
    }
}

/// Runs `f` on the voxels of a mask as whichever type they are.
macro_rules! on_voxels {
    ($voxels:expr, |$m:ident| $body:expr) => {
        match $voxels {
            $crate::masks::Voxels::Bool($m) => $body,
            $crate::masks::Voxels::U8($m) => $body,
        }
    };
}
pub(crate) use on_voxels;

/// The voxels of two masks of one type ([`pair`]).
pub(crate) enum PairVoxels<'a> {
    Bool(&'a [bool], &'a [bool]),
    U8(&'a [u8], &'a [u8]),
}

pub(crate) fn both<'a>(a: &'a Mask<'_>, b: &'a Mask<'_>) -> PyResult<PairVoxels<'a>> {
    match (a.voxels()?, b.voxels()?) {
        (Voxels::Bool(p), Voxels::Bool(r)) => Ok(PairVoxels::Bool(p, r)),
        (Voxels::U8(p), Voxels::U8(r)) => Ok(PairVoxels::U8(p, r)),
        _ => Err(PyTypeError::new_err(
            "the two masks were read as different types (a bug in dtml: please report it)",
        )),
    }
}

/// Runs `f` on the voxels of two masks as whichever type they share.
macro_rules! on_pair {
    ($voxels:expr, |$p:ident, $r:ident| $body:expr) => {
        match $voxels {
            $crate::masks::PairVoxels::Bool($p, $r) => $body,
            $crate::masks::PairVoxels::U8($p, $r) => $body,
        }
    };
}
pub(crate) use on_pair;

/// `spacing`, or 1 along every axis.
pub(crate) fn spacing_of(spacing: Option<Vec<f64>>, axes: usize) -> Vec<f64> {
    spacing.unwrap_or_else(|| vec![1.0; axes])
}

/// Both masks read, of one shape and one voxel type.
pub(crate) fn pair<'py>(
    prediction: &Bound<'py, PyAny>,
    reference: &Bound<'py, PyAny>,
) -> PyResult<(Mask<'py>, Mask<'py>, Vec<usize>)> {
    let py = prediction.py();
    let (a, shape_a) = Mask::read(prediction, "prediction")?;
    let (b, shape_b) = Mask::read(reference, "reference")?;
    if shape_a != shape_b {
        return Err(PyValueError::new_err(format!(
            "prediction has shape {shape_a:?}, reference {shape_b:?}: they must be equal"
        )));
    }
    let (a, b) = match (a, b) {
        (a @ Mask::Bool(_), b @ Mask::Bool(_)) | (a @ Mask::U8(_), b @ Mask::U8(_)) => (a, b),
        (a, b) => (a.into_bool(py)?, b.into_bool(py)?),
    };
    Ok((a, b, shape_a))
}

/// Refuses a float array holding NaN, which no mask or label map can mean
/// (`why` says what the array should hold).
pub(crate) fn refuse_nan(array: &Bound<'_, PyAny>, what: &str, why: &str) -> PyResult<()> {
    let np = array.py().import("numpy")?;
    let nan: bool = np
        .call_method1("isnan", (array,))?
        .call_method0("any")?
        .extract()?;
    if nan {
        return Err(PyValueError::new_err(format!("{what} holds NaN: {why}")));
    }
    Ok(())
}
