//! Segmentation metrics of mask pairs: overlap and surface distances.

use crate::errors::value_error;
use crate::interrupt::interruptible;
use crate::masks::{Mask, PairVoxels, both, on_pair, pair, refuse_nan, spacing_of};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use rayon::prelude::*;
use std::sync::atomic::Ordering;

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
    py.detach(|| score(&voxels, &shape, &spacing, None))
        .map_err(value_error)
}

/// Every metric of one pair of read masks, the surface Dice when a
/// tolerance is given.
fn score(
    voxels: &PairVoxels<'_>,
    shape: &[usize],
    spacing: &[f64],
    tolerance: Option<f64>,
) -> Result<dtml_edt::SegmentationMetrics, dtml_edt::EdtError> {
    on_pair!(*voxels, |p, r| {
        let mut m = dtml_edt::surface_metrics(p, r, shape, spacing, dtml_edt::Units::Millimetres)?;
        if let Some(t) = tolerance {
            m.surface_dice = dtml_edt::surface_dice(p, r, shape, spacing, t)?;
        }
        Ok(m)
    })
}

/// The metrics of one pair as the dict `surface_metrics` documents.
fn metrics_dict<'py>(
    py: Python<'py>,
    m: &dtml_edt::SegmentationMetrics,
    tolerance: Option<f64>,
) -> PyResult<Bound<'py, PyDict>> {
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
    if tolerance.is_some() {
        d.set_item("surface_dice", m.surface_dice)?;
    }
    Ok(d)
}

/// A label map as an array, refused when it holds NaN (a NaN voxel would
/// silently count as no label).
fn label_map<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Bound<'py, PyAny>> {
    let np = obj.py().import("numpy")?;
    let array = np.call_method1("asarray", (obj,))?;
    let kind: String = array.getattr("dtype")?.getattr("kind")?.extract()?;
    if kind == "f" {
        refuse_nan(&array, what, "a label map holds label values")?;
    }
    Ok(array)
}

/// The error `e` with `case N: ` before its message, of the same type.
fn in_case(py: Python<'_>, case: usize, e: PyErr) -> PyErr {
    PyErr::from_type(e.get_type(py), format!("case {case}: {}", e.value(py)))
}

/// One scoring job: a mask pair of one case (and label), read.
struct Job<'py> {
    case: usize,
    label: Option<i64>,
    prediction: Mask<'py>,
    reference: Mask<'py>,
    shape: Vec<usize>,
    spacing: Vec<f64>,
}

/// The jobs of one case: the pair itself, or one pair per label.
fn jobs_of<'py>(
    case: usize,
    prediction: &Bound<'py, PyAny>,
    reference: &Bound<'py, PyAny>,
    spacing: Option<Vec<f64>>,
    labels: Option<&[i64]>,
    out: &mut Vec<Job<'py>>,
) -> PyResult<()> {
    let mut push = |label, p: &Bound<'py, PyAny>, r: &Bound<'py, PyAny>| -> PyResult<()> {
        let (a, b, shape) = pair(p, r)?;
        let spacing = spacing_of(spacing.clone(), shape.len());
        out.push(Job {
            case,
            label,
            prediction: a,
            reference: b,
            shape,
            spacing,
        });
        Ok(())
    };
    match labels {
        None => push(None, prediction, reference),
        Some(labels) => {
            let (p, r) = (
                label_map(prediction, "prediction")?,
                label_map(reference, "reference")?,
            );
            for &label in labels {
                let pm = p.call_method1("__eq__", (label,))?;
                let rm = r.call_method1("__eq__", (label,))?;
                push(Some(label), &pm, &rm)?;
            }
            Ok(())
        }
    }
}

/// Scores every job in parallel without the GIL; the results as one dict
/// per case, or per case a dict of label to dict.
fn run_jobs<'py>(
    py: Python<'py>,
    jobs: Vec<Job<'py>>,
    cases: usize,
    tolerance: Option<f64>,
) -> PyResult<Vec<Bound<'py, PyDict>>> {
    let work: Vec<(PairVoxels<'_>, &[usize], &[f64])> = jobs
        .iter()
        .map(|j| {
            Ok((
                both(&j.prediction, &j.reference)?,
                &j.shape[..],
                &j.spacing[..],
            ))
        })
        .collect::<PyResult<_>>()?;
    // Ctrl-C skips the jobs not started yet.
    let results: Vec<_> = interruptible(py, |stop| {
        work.par_iter()
            .map(|(v, shape, spacing)| {
                (!stop.load(Ordering::Relaxed)).then(|| score(v, shape, spacing, tolerance))
            })
            .collect::<Vec<_>>()
    })?;
    let out: Vec<Bound<'py, PyDict>> = (0..cases).map(|_| PyDict::new(py)).collect();
    for (job, result) in jobs.iter().zip(results) {
        let m = result
            .ok_or_else(|| PyValueError::new_err("stopped"))?
            .map_err(|e| in_case(py, job.case, value_error(e)))?;
        let d = metrics_dict(py, &m, tolerance)?;
        match job.label {
            None => out[job.case].update(d.as_mapping())?,
            Some(label) => out[job.case].set_item(label, d)?,
        }
    }
    Ok(out)
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
/// With `tolerance`, also `surface_dice` at it (3D masks). With `labels`,
/// the two arrays are label maps and the result is a dict from each label
/// to the metrics of the masks `map == label`.
#[pyfunction]
#[pyo3(signature = (prediction, reference, spacing=None, *, labels=None, tolerance=None))]
fn surface_metrics<'py>(
    py: Python<'py>,
    prediction: &Bound<'py, PyAny>,
    reference: &Bound<'py, PyAny>,
    spacing: Option<Vec<f64>>,
    labels: Option<Vec<i64>>,
    tolerance: Option<f64>,
) -> PyResult<Bound<'py, PyDict>> {
    let mut jobs = Vec::new();
    jobs_of(
        0,
        prediction,
        reference,
        spacing,
        labels.as_deref(),
        &mut jobs,
    )?;
    let mut out = run_jobs(py, jobs, 1, tolerance)?;
    Ok(out.remove(0))
}

/// `surface_metrics` of many pairs at once, scored in parallel: the
/// `predictions` and `references` are sequences of equal length (a list
/// of arrays, or an array whose first axis is the case); `spacing` is one
/// spacing for all cases or one per case. Returns a list with one result
/// per case, as `surface_metrics` gives it; an error names the case.
#[pyfunction]
#[pyo3(signature = (predictions, references, spacing=None, *, labels=None, tolerance=None))]
fn surface_metrics_batch<'py>(
    py: Python<'py>,
    predictions: &Bound<'py, PyAny>,
    references: &Bound<'py, PyAny>,
    spacing: Option<&Bound<'py, PyAny>>,
    labels: Option<Vec<i64>>,
    tolerance: Option<f64>,
) -> PyResult<Vec<Bound<'py, PyDict>>> {
    let predictions: Vec<Bound<'py, PyAny>> = predictions.try_iter()?.collect::<PyResult<_>>()?;
    let references: Vec<Bound<'py, PyAny>> = references.try_iter()?.collect::<PyResult<_>>()?;
    if predictions.len() != references.len() {
        return Err(PyValueError::new_err(format!(
            "{} predictions but {} references: give one of each per case",
            predictions.len(),
            references.len()
        )));
    }
    let cases = predictions.len();
    let spacings: Vec<Option<Vec<f64>>> = match spacing {
        None => vec![None; cases],
        Some(s) => match s.extract::<Vec<f64>>() {
            Ok(one) => vec![Some(one); cases],
            Err(_) => {
                let each: Vec<Vec<f64>> = s.extract().map_err(|_| {
                    PyTypeError::new_err(
                        "spacing is one sequence of numbers, or one such sequence per case",
                    )
                })?;
                if each.len() != cases {
                    return Err(PyValueError::new_err(format!(
                        "{} spacings for {cases} cases",
                        each.len()
                    )));
                }
                each.into_iter().map(Some).collect()
            }
        },
    };
    let mut jobs = Vec::new();
    for (case, ((p, r), s)) in predictions
        .iter()
        .zip(&references)
        .zip(spacings)
        .enumerate()
    {
        jobs_of(case, p, r, s, labels.as_deref(), &mut jobs).map_err(|e| in_case(py, case, e))?;
    }
    run_jobs(py, jobs, cases, tolerance)
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
    m.add_function(wrap_pyfunction!(surface_metrics_batch, m)?)?;
    m.add_function(wrap_pyfunction!(dice, m)?)?;
    m.add_function(wrap_pyfunction!(jaccard, m)?)?;
    m.add_function(wrap_pyfunction!(hd95, m)?)?;
    m.add_function(wrap_pyfunction!(hd, m)?)?;
    m.add_function(wrap_pyfunction!(asd, m)?)?;
    m.add_function(wrap_pyfunction!(assd, m)?)?;
    m.add_function(wrap_pyfunction!(surface_dice, m)?)?;
    Ok(())
}
