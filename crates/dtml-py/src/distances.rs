//! Exact distance maps: `edt`, `signed_distance`, `normalized_sdm`.

use crate::errors::value_error;
use crate::masks::{Mask, Voxels, on_voxels, spacing_of};
use numpy::{PyArrayDyn, PyArrayMethods};
use pyo3::prelude::*;

/// A float32 array of `shape` from its values.
fn array<'py>(
    py: Python<'py>,
    values: Vec<f32>,
    shape: &[usize],
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    numpy::PyArray1::from_vec(py, values).reshape(shape.to_vec())
}

/// Exact Euclidean distance transform, as
/// `scipy.ndimage.distance_transform_edt(mask, sampling=spacing)`: each
/// foreground (non-zero) voxel gets its distance to the nearest background
/// voxel, background voxels 0; a mask without background gives inf.
///
/// `spacing` has one entry per axis in numpy's axis order (for a nibabel
/// array `(x, y, z)`, its zooms); default 1. Returns float32.
#[pyfunction]
#[pyo3(signature = (mask, spacing=None))]
fn edt<'py>(
    py: Python<'py>,
    mask: &Bound<'py, PyAny>,
    spacing: Option<Vec<f64>>,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    map_of(py, mask, spacing, |v, shape, spacing| {
        on_voxels!(v, |m| dtml_edt::edt(m, shape, spacing))
    })
}

/// A distance map of a mask's voxels, its shape and spacing.
type MapFn = fn(Voxels<'_>, &[usize], &[f64]) -> Result<Vec<f32>, dtml_edt::EdtError>;

/// The float32 map `f` makes of a mask read from `mask`, without the GIL.
fn map_of<'py>(
    py: Python<'py>,
    mask: &Bound<'py, PyAny>,
    spacing: Option<Vec<f64>>,
    f: MapFn,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let (mask, shape) = Mask::read(mask, "mask")?;
    let spacing = spacing_of(spacing, shape.len());
    let voxels = mask.voxels()?;
    let out = py
        .detach(|| f(voxels, &shape, &spacing))
        .map_err(value_error)?;
    array(py, out, &shape)
}

/// Signed distance map `edt(~mask) - edt(mask)`: negative inside, positive
/// outside, never 0 (-inf everywhere for a mask without background, +inf
/// for one without foreground). `spacing` as for `edt`. Returns float32.
#[pyfunction]
#[pyo3(signature = (mask, spacing=None))]
fn signed_distance<'py>(
    py: Python<'py>,
    mask: &Bound<'py, PyAny>,
    spacing: Option<Vec<f64>>,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    map_of(py, mask, spacing, |v, shape, spacing| {
        on_voxels!(v, |m| dtml_edt::signed_distance(m, shape, spacing))
    })
}

/// The normalised signed distance map the DTC / DTML code trains on
/// (`compute_sdf`): outside distances scaled to [0, 1], inside to [-1, 0],
/// 0 on the mask's inner boundary; all zeros for an empty mask. In voxel
/// units. Returns float32.
#[pyfunction]
fn normalized_sdm<'py>(
    py: Python<'py>,
    mask: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    // In voxel units: no spacing.
    map_of(py, mask, None, |v, shape, _| {
        on_voxels!(v, |m| dtml_edt::normalized_sdm(m, shape))
    })
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(edt, m)?)?;
    m.add_function(wrap_pyfunction!(signed_distance, m)?)?;
    m.add_function(wrap_pyfunction!(normalized_sdm, m)?)?;
    Ok(())
}
