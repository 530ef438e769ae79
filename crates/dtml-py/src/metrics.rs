//! Segmentation metrics of mask pairs: overlap and surface distances.

use crate::errors::value_error;
use crate::masks::{both, on_pair, pair, spacing_of};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

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

/// Surface Dice at `tolerance` (normalised surface Dice; DeepMind's
/// `surface_distance.compute_surface_dice_at_tolerance`): the share of both
/// surfaces, by area of their marching-cubes elements, within `tolerance`
/// (units of `spacing`) of the other surface. 3D masks; None when both are
/// empty, 0 when one is. A distance equal to the tolerance counts as
/// within it (the package decides such ties by float rounding).
#[pyfunction]
#[pyo3(signature = (prediction, reference, spacing=None, *, tolerance))]
fn surface_dice(
    py: Python<'_>,
    prediction: &Bound<'_, PyAny>,
    reference: &Bound<'_, PyAny>,
    spacing: Option<Vec<f64>>,
    tolerance: f64,
) -> PyResult<Option<f64>> {
    let (a, b, shape) = pair(prediction, reference)?;
    let spacing = spacing_of(spacing, shape.len());
    let voxels = both(&a, &b)?;
    py.detach(|| {
        on_pair!(voxels, |p, r| dtml_edt::surface_dice(
            p, r, &shape, &spacing, tolerance
        ))
    })
    .map_err(value_error)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(surface_metrics, m)?)?;
    m.add_function(wrap_pyfunction!(dice, m)?)?;
    m.add_function(wrap_pyfunction!(jaccard, m)?)?;
    m.add_function(wrap_pyfunction!(hd95, m)?)?;
    m.add_function(wrap_pyfunction!(hd, m)?)?;
    m.add_function(wrap_pyfunction!(asd, m)?)?;
    m.add_function(wrap_pyfunction!(assd, m)?)?;
    m.add_function(wrap_pyfunction!(surface_dice, m)?)?;
    Ok(())
}
