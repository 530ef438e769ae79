//! The `dtml` Python package: dtml's exact Euclidean distance maps and
//! segmentation metrics ([`dtml_edt`]) on numpy arrays, built by maturin.
//!
//! Masks come in as any numpy array (or array-like) of 1 to 3 axes: bool
//! and uint8 arrays in C order are read in place; anything else (other
//! integers, floats, Fortran order, strided views) is turned into a bool
//! mask `array != 0` first. Axes and spacings are in numpy's order (the
//! last axis contiguous), as scipy's `sampling`. Distances come back as
//! float32 arrays of the mask's shape. The work runs with the GIL released,
//! on all cores (rayon); errors are Python exceptions, never a panic.

use numpy::{PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// A mask as the library reads it: a bool or uint8 array in C order.
enum Mask<'py> {
    Bool(PyReadonlyArrayDyn<'py, bool>),
    U8(PyReadonlyArrayDyn<'py, u8>),
}

/// A mask's voxels, borrowed for a call without the GIL.
#[derive(Clone, Copy)]
enum Voxels<'a> {
    Bool(&'a [bool]),
    U8(&'a [u8]),
}

impl<'py> Mask<'py> {
    /// Reads `obj` as a mask (`what` names the argument in errors).
    fn read(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<(Mask<'py>, Vec<usize>)> {
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
                let nan: bool = np
                    .call_method1("isnan", (&array,))?
                    .call_method0("any")?
                    .extract()?;
                if nan {
                    return Err(PyValueError::new_err(format!(
                        "{what} holds NaN: a mask is 0 / non-zero"
                    )));
                }
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

    fn voxels(&self) -> PyResult<Voxels<'_>> {
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
            Voxels::Bool($m) => $body,
            Voxels::U8($m) => $body,
        }
    };
}

/// The voxels of two masks of one type ([`pair`]).
enum PairVoxels<'a> {
    Bool(&'a [bool], &'a [bool]),
    U8(&'a [u8], &'a [u8]),
}

fn both<'a>(a: &'a Mask<'_>, b: &'a Mask<'_>) -> PyResult<PairVoxels<'a>> {
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
            PairVoxels::Bool($p, $r) => $body,
            PairVoxels::U8($p, $r) => $body,
        }
    };
}

fn value_error(e: dtml_edt::EdtError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// `spacing`, or 1 along every axis.
fn spacing_of(spacing: Option<Vec<f64>>, axes: usize) -> Vec<f64> {
    spacing.unwrap_or_else(|| vec![1.0; axes])
}

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
    let (mask, shape) = Mask::read(mask, "mask")?;
    let spacing = spacing_of(spacing, shape.len());
    let voxels = mask.voxels()?;
    let out = py
        .detach(|| on_voxels!(voxels, |m| dtml_edt::edt(m, &shape, &spacing)))
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
    let (mask, shape) = Mask::read(mask, "mask")?;
    let spacing = spacing_of(spacing, shape.len());
    let voxels = mask.voxels()?;
    let out = py
        .detach(|| on_voxels!(voxels, |m| dtml_edt::signed_distance(m, &shape, &spacing)))
        .map_err(value_error)?;
    array(py, out, &shape)
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
    let (mask, shape) = Mask::read(mask, "mask")?;
    let voxels = mask.voxels()?;
    let out = py
        .detach(|| on_voxels!(voxels, |m| dtml_edt::normalized_sdm(m, &shape)))
        .map_err(value_error)?;
    array(py, out, &shape)
}

/// Both masks read, of one shape and one voxel type.
fn pair<'py>(
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

/// Dice, Jaccard and surface distances of one pair.
fn metrics_of(
    py: Python<'_>,
    prediction: &Bound<'_, PyAny>,
    reference: &Bound<'_, PyAny>,
    spacing: Option<Vec<f64>>,
) -> PyResult<dtml_edt::SegmentationMetrics> {
    let (a, b, shape) = pair(prediction, reference)?;
    let spacing = spacing_of(spacing, shape.len());
    let voxels = both(&a, &b)?;
    py.detach(|| {
        on_pair!(voxels, |p, r| dtml_edt::surface_metrics(
            p,
            r,
            &shape,
            &spacing,
            dtml_edt::Units::Millimetres
        ))
    })
    .map_err(value_error)
}

/// Every metric of one pair as a dict: `dice`, `jaccard` (None when both
/// masks are empty), the voxel counts, and when both masks have
/// foreground `hd95` (medpy's: the 95th percentile of both directed
/// surface-distance sets pooled), `hd95_max_directed` (the larger of the
/// two directed 95th percentiles: MONAI's and seg-metrics'), `hausdorff`,
/// `asd` (prediction to reference, medpy `asd`), `asd_reference_to_prediction`,
/// `assd` (medpy 0.5: mean over both sets pooled) and `assd_mean_of_means`;
/// else `empty` says which mask is empty (`prediction`, `reference`,
/// `both`) and those keys are None. Distances in the units of `spacing`.
#[pyfunction]
#[pyo3(signature = (prediction, reference, spacing=None))]
fn surface_metrics<'py>(
    py: Python<'py>,
    prediction: &Bound<'py, PyAny>,
    reference: &Bound<'py, PyAny>,
    spacing: Option<Vec<f64>>,
) -> PyResult<Bound<'py, PyDict>> {
    let m = metrics_of(py, prediction, reference, spacing)?;
    let d = PyDict::new(py);
    d.set_item("dice", m.dice)?;
    d.set_item("jaccard", m.jaccard)?;
    d.set_item("prediction_voxels", m.prediction_voxels)?;
    d.set_item("reference_voxels", m.reference_voxels)?;
    let computed = m.distances.computed();
    let empty = match m.distances {
        dtml_edt::SurfaceDistances::Computed(_) => None,
        dtml_edt::SurfaceDistances::EmptyPrediction => Some("prediction"),
        dtml_edt::SurfaceDistances::EmptyReference => Some("reference"),
        dtml_edt::SurfaceDistances::BothEmpty => Some("both"),
    };
    d.set_item("empty", empty)?;
    let field = |f: fn(&dtml_edt::DistanceMetrics) -> f64| computed.map(f);
    d.set_item("hd95", field(|c| c.hd95))?;
    d.set_item("hd95_max_directed", field(|c| c.hd95_max_directed))?;
    d.set_item("hausdorff", field(|c| c.hausdorff))?;
    d.set_item("asd", field(|c| c.asd))?;
    d.set_item(
        "asd_reference_to_prediction",
        field(|c| c.asd_reference_to_prediction),
    )?;
    d.set_item("assd", field(|c| c.assd))?;
    d.set_item("assd_mean_of_means", field(|c| c.assd_mean_of_means))?;
    Ok(d)
}

/// Dice `2|P & R| / (|P| + |R|)`; None when both masks are empty.
#[pyfunction]
fn dice(prediction: &Bound<'_, PyAny>, reference: &Bound<'_, PyAny>) -> PyResult<Option<f64>> {
    let (a, b, _) = pair(prediction, reference)?;
    let voxels = both(&a, &b)?;
    on_pair!(voxels, |p, r| dtml_edt::dice(p, r)).map_err(value_error)
}

/// Jaccard `|P & R| / |P | R|`; None when both masks are empty.
#[pyfunction]
fn jaccard(prediction: &Bound<'_, PyAny>, reference: &Bound<'_, PyAny>) -> PyResult<Option<f64>> {
    let (a, b, _) = pair(prediction, reference)?;
    let voxels = both(&a, &b)?;
    on_pair!(voxels, |p, r| dtml_edt::jaccard(p, r)).map_err(value_error)
}

/// The 95 % Hausdorff distance; None when either mask is empty (medpy
/// raises there). `definition="pooled"` (default, medpy's `hd95`): the 95th
/// percentile of both directed surface-distance sets together;
/// `"max_directed"`: the larger of the two directed 95th percentiles
/// (MONAI, seg-metrics). They differ when the surfaces differ in size.
#[pyfunction]
#[pyo3(signature = (prediction, reference, spacing=None, definition="pooled"))]
fn hd95(
    py: Python<'_>,
    prediction: &Bound<'_, PyAny>,
    reference: &Bound<'_, PyAny>,
    spacing: Option<Vec<f64>>,
    definition: &str,
) -> PyResult<Option<f64>> {
    let pick: fn(&dtml_edt::DistanceMetrics) -> f64 = match definition {
        "pooled" => |c| c.hd95,
        "max_directed" => |c| c.hd95_max_directed,
        other => {
            return Err(PyValueError::new_err(format!(
                "definition={other:?}: choose \"pooled\" (medpy) or \"max_directed\" (MONAI)"
            )));
        }
    };
    let m = metrics_of(py, prediction, reference, spacing)?;
    Ok(m.distances.computed().map(pick))
}

/// A function of one surface-distance metric of a pair: None when either
/// mask is empty (medpy raises there).
macro_rules! distance_metric {
    ($(#[doc = $doc:literal])* $name:ident, $field:ident) => {
        $(#[doc = $doc])*
        #[pyfunction]
        #[pyo3(signature = (prediction, reference, spacing=None))]
        fn $name(
            py: Python<'_>,
            prediction: &Bound<'_, PyAny>,
            reference: &Bound<'_, PyAny>,
            spacing: Option<Vec<f64>>,
        ) -> PyResult<Option<f64>> {
            let m = metrics_of(py, prediction, reference, spacing)?;
            Ok(m.distances.computed().map(|c| c.$field))
        }
    };
}

distance_metric!(
    /// The Hausdorff distance (medpy `hd`); None when either mask is empty.
    hd,
    hausdorff
);
distance_metric!(
    /// Mean distance from the prediction's surface to the reference's
    /// (medpy `asd(prediction, reference)`); None when either mask is empty.
    asd,
    asd
);
distance_metric!(
    /// Average symmetric surface distance as medpy 0.5 computes `assd` (the
    /// mean over both directed sets pooled); None when either mask is empty.
    assd,
    assd
);

#[pymodule]
fn dtml(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(edt, m)?)?;
    m.add_function(wrap_pyfunction!(signed_distance, m)?)?;
    m.add_function(wrap_pyfunction!(normalized_sdm, m)?)?;
    m.add_function(wrap_pyfunction!(surface_metrics, m)?)?;
    m.add_function(wrap_pyfunction!(dice, m)?)?;
    m.add_function(wrap_pyfunction!(jaccard, m)?)?;
    m.add_function(wrap_pyfunction!(hd95, m)?)?;
    m.add_function(wrap_pyfunction!(hd, m)?)?;
    m.add_function(wrap_pyfunction!(asd, m)?)?;
    m.add_function(wrap_pyfunction!(assd, m)?)?;
    Ok(())
}
