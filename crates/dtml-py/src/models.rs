//! Trained students from Python: a run directory or weight files (ours or
//! the authors' PyTorch `.pth`) loaded once, then whole volumes predicted
//! with the CLI's sliding window, ensemble, threshold and largest
//! component ([`dtml_infer`]), so a mask from Python equals `dtml
//! predict`'s byte for byte.

use crate::errors::infer_error;
use crate::interrupt::interruptible;
use crate::volumes::{Volume, numpy_array, voxels_of};
use dtml_infer::students::{DeviceKind, InferenceChoices, LoadedStudents, load_models};
use dtml_infer::{Ensemble, StudentRole};
use dtml_volume::{VoxelData, Xyz};
use pyo3::exceptions::{PyFileNotFoundError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;

/// Trained students, ready to predict.
#[pyclass(frozen, module = "dtml")]
pub(crate) struct Model {
    loaded: LoadedStudents,
    /// The student chosen at loading, who predicts.
    chosen: Option<Ensemble>,
    description: String,
}

/// `"ensemble"`, `"region"` or `"boundary"` as an [`Ensemble`].
fn ensemble_of(student: Option<&str>) -> PyResult<Option<Ensemble>> {
    student
        .map(|s| {
            s.parse::<Ensemble>().map_err(|_| {
                PyValueError::new_err(format!(
                    "student={s:?}: choose \"ensemble\", \"region\" or \"boundary\""
                ))
            })
        })
        .transpose()
}

/// An axis triple from Python, in (x, y, z) = numpy's (i, j, k) order.
fn triple(v: Option<(usize, usize, usize)>) -> Option<Xyz<usize>> {
    v.map(|(x, y, z)| Xyz::new(x, y, z))
}

#[pymethods]
impl Model {
    /// Loads students: a run directory (`run.json` and its weights), or one
    /// or two weight files (`.safetensors`, or a PyTorch `.pth` of the
    /// UA-MT / DTC / DTML V-Net): two are the region then the boundary
    /// student; one is the region student unless `student="boundary"`.
    /// `student` also picks who predicts (default: the ensemble of two
    /// students, else the one there is).
    #[new]
    #[pyo3(signature = (model, student=None))]
    fn new(py: Python<'_>, model: &Bound<'_, PyAny>, student: Option<&str>) -> PyResult<Model> {
        let paths: Vec<PathBuf> = match model.extract::<PathBuf>() {
            Ok(one) => vec![one],
            Err(_) => model.extract()?,
        };
        if let Some(missing) = paths.iter().find(|p| !p.exists()) {
            return Err(PyFileNotFoundError::new_err(format!(
                "{}: no such run directory or weight file",
                missing.display()
            )));
        }
        let ensemble = ensemble_of(student)?;
        let single = match ensemble {
            Some(Ensemble::Boundary) => StudentRole::Boundary,
            _ => StudentRole::Region,
        };
        let device = dtml_infer::students::select_device(DeviceKind::Cpu).map_err(infer_error)?;
        let loaded = py
            .detach(|| load_models(&paths, single, &device))
            .map_err(infer_error)?;
        // A student choice these networks cannot serve fails here, not at
        // the first prediction.
        loaded
            .options(&InferenceChoices {
                ensemble,
                ..InferenceChoices::default()
            })
            .map_err(infer_error)?;
        let description = paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" + ");
        Ok(Model {
            loaded,
            chosen: ensemble,
            description,
        })
    }

    /// Segments one scan: `image` is a `Volume` or a 3D array indexed
    /// `[i, j, k]` (as nibabel's) of raw intensities, z-scored here exactly
    /// as `dtml prepare` and `dtml predict` do. Returns a dict: `mask`
    /// (uint8, 0 / 1), `probability` (float32, the chosen students'
    /// overlap-averaged foreground probability) and `disagreement`
    /// (float32 `|p_A - q_B|` when asked, else None), each of the image's
    /// shape. Window, stride, batch, threshold and component filter as
    /// `dtml predict`'s flags; `patch` defaults to the run's training patch.
    /// Ctrl-C stops it at the next batch of windows (`KeyboardInterrupt`).
    #[pyo3(signature = (
        image, *, patch=None, stride=None, batch=None, threshold=None,
        largest_component=true, connectivity=26, disagreement=false
    ))]
    #[allow(clippy::too_many_arguments)]
    fn predict<'py>(
        &self,
        py: Python<'py>,
        image: &Bound<'py, PyAny>,
        patch: Option<(usize, usize, usize)>,
        stride: Option<(usize, usize, usize)>,
        batch: Option<usize>,
        threshold: Option<f32>,
        largest_component: bool,
        connectivity: u32,
        disagreement: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let defaults = InferenceChoices::default();
        let connectivity = match connectivity {
            26 => dtml_edt::Connectivity::Full,
            6 => dtml_edt::Connectivity::Face,
            other => {
                return Err(PyValueError::new_err(format!(
                    "connectivity={other}: choose 26 (the authors' code) or 6 (face neighbours)"
                )));
            }
        };
        let choices = InferenceChoices {
            patch: triple(patch),
            stride: triple(stride).unwrap_or(defaults.stride),
            batch: batch.unwrap_or(defaults.batch),
            ensemble: self.chosen,
            threshold: threshold.unwrap_or(defaults.threshold),
            largest_component,
            connectivity,
            disagreement,
        };
        let opts = self.loaded.options(&choices).map_err(infer_error)?;
        let array = match image.cast::<Volume>() {
            Ok(volume) => volume.get().array.bind(py).clone(),
            Err(_) => image.clone(),
        };
        let (data, shape) = voxels_of(&array, "image")?;
        // What `dtml predict` refuses in a scan file.
        if let Some(why) = dtml_volume::volume::unsegmentable(&data, shape) {
            return Err(PyValueError::new_err(format!("image: {why}")));
        }
        let students = self.loaded.students();
        // Ctrl-C stops the windows at the next batch.
        let prediction = interruptible(py, |stop| {
            let (image, _) = dtml_infer::infer::zscored(&data);
            drop(data);
            dtml_infer::infer::predict_volume_until(&students, &image, shape, &opts, stop)
        })?
        .map_err(infer_error)?;
        let out = PyDict::new(py);
        out.set_item(
            "mask",
            numpy_array(py, VoxelData::U8(prediction.mask), shape)?,
        )?;
        out.set_item(
            "probability",
            numpy_array(py, VoxelData::F32(prediction.probability), shape)?,
        )?;
        let disagreement = prediction
            .disagreement
            .map(|d| numpy_array(py, VoxelData::F32(d), shape))
            .transpose()?;
        out.set_item("disagreement", disagreement)?;
        Ok(out)
    }

    /// The V-Net width of the students.
    #[getter]
    fn width(&self) -> Option<usize> {
        self.loaded.config().map(|c| c.width)
    }

    /// The window `predict` slides unless told otherwise (x, y, z).
    #[getter]
    fn patch(&self) -> (usize, usize, usize) {
        let p = self.loaded.default_options().patch;
        (p[0], p[1], p[2])
    }

    /// Who predicts by default: "ensemble", "region" or "boundary".
    #[getter]
    fn student(&self) -> String {
        self.chosen
            .unwrap_or(self.loaded.default_options().ensemble)
            .to_string()
    }

    fn __repr__(&self) -> String {
        format!(
            "dtml.Model({:?}, student={:?})",
            self.description,
            self.student()
        )
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    Ok(())
}
