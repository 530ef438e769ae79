//! NIfTI and NRRD volumes in numpy with nibabel's conventions: the array
//! indexed `[i, j, k]` as `nibabel.load(path).dataobj`, x fastest in memory
//! (a Fortran-order view on the voxels as read, no copy), and the RAS+
//! affine nibabel gives (sform, else qform, else the pixdim-only base
//! affine). NRRD files (LPS or RAS space) get the same RAS+ affine.

use crate::errors::volume_error;
use dtml_volume::{Geometry, VoxelData, Xyz};
use numpy::npyffi::NPY_ORDER;
use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1};
use pyo3::exceptions::{PyFileExistsError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use std::path::PathBuf;

/// A scan or label map read by [`read_volume`]: its voxels and geometry.
#[pyclass(frozen, module = "dtml")]
pub(crate) struct Volume {
    pub(crate) array: Py<PyAny>,
    shape: Xyz<usize>,
    geometry: Geometry,
}

#[pymethods]
impl Volume {
    /// The voxels, shape `(X, Y, Z)`, indexed `[i, j, k]` like nibabel's
    /// `dataobj` (Fortran order, x fastest), in the file's own type;
    /// float64 when the header scales values (`scl_slope`), as nibabel.
    #[getter]
    fn array(&self, py: Python<'_>) -> Py<PyAny> {
        self.array.clone_ref(py)
    }

    /// `(X, Y, Z)` in voxels.
    #[getter]
    fn shape(&self) -> (usize, usize, usize) {
        (self.shape[0], self.shape[1], self.shape[2])
    }

    /// The 4x4 voxel-to-world matrix (RAS+, mm), as nibabel's `img.affine`.
    #[getter]
    fn affine<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let rows: Vec<Vec<f64>> = self.geometry.affine.iter().map(|r| r.to_vec()).collect();
        Ok(PyArray2::from_vec2(py, &rows)?)
    }

    /// Voxel size in mm along i, j, k: the header's pixdim, as nibabel's
    /// `header.get_zooms()[:3]` (NRRD: the length of each space direction).
    #[getter]
    fn spacing(&self) -> (f64, f64, f64) {
        let s = self.geometry.spacing;
        (s[0], s[1], s[2])
    }

    /// World position (RAS+, mm) of voxel (0, 0, 0): `affine[:3, 3]`.
    #[getter]
    fn origin(&self) -> (f64, f64, f64) {
        let a = &self.geometry.affine;
        (a[0][3], a[1][3], a[2][3])
    }

    /// 3x3 matrix whose columns are the unit RAS+ directions of i, j and k:
    /// `affine[:3, :3]` with each column divided by its length.
    #[getter]
    fn directions<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let a = &self.geometry.affine;
        let norms: [f64; 3] =
            std::array::from_fn(|c| (0..3).map(|r| a[r][c] * a[r][c]).sum::<f64>().sqrt());
        let rows: Vec<Vec<f64>> = (0..3)
            .map(|r| (0..3).map(|c| a[r][c] / norms[c]).collect())
            .collect();
        Ok(PyArray2::from_vec2(py, &rows)?)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let dtype = self.array.bind(py).getattr("dtype")?.str()?.to_string();
        let (sx, sy, sz) = self.spacing();
        Ok(format!(
            "dtml.Volume(shape=({}, {}, {}), dtype={dtype}, spacing=({sx}, {sy}, {sz}))",
            self.shape[0], self.shape[1], self.shape[2]
        ))
    }
}

/// The voxels as a Fortran-order numpy array of `shape`, without a copy.
pub(crate) fn numpy_array(
    py: Python<'_>,
    data: VoxelData,
    shape: Xyz<usize>,
) -> PyResult<Py<PyAny>> {
    let dims = [shape[0], shape[1], shape[2]];
    macro_rules! fortran {
        ($v:expr) => {
            PyArray1::from_vec(py, $v)
                .reshape_with_order(dims, NPY_ORDER::NPY_FORTRANORDER)?
                .into_any()
                .unbind()
        };
    }
    Ok(match data {
        VoxelData::U8(v) => fortran!(v),
        VoxelData::I8(v) => fortran!(v),
        VoxelData::I16(v) => fortran!(v),
        VoxelData::U16(v) => fortran!(v),
        VoxelData::I32(v) => fortran!(v),
        VoxelData::U32(v) => fortran!(v),
        VoxelData::F32(v) => fortran!(v),
        VoxelData::F64(v) => fortran!(v),
    })
}

/// Reads a NIfTI-1 (`.nii`, `.nii.gz`, `.hdr`/`.img`) or NRRD (`.nrrd`,
/// `.nhdr`) volume. A 4D file needs `channel` (which volume to read);
/// every problem with the file raises with its path and the reason.
#[pyfunction]
#[pyo3(signature = (path, channel=None))]
fn read_volume(py: Python<'_>, path: PathBuf, channel: Option<usize>) -> PyResult<Volume> {
    let options = dtml_volume::ReadOptions { channel };
    let volume = py
        .detach(|| dtml_volume::read_volume_with(&path, options))
        .map_err(volume_error)?;
    Ok(Volume {
        array: numpy_array(py, volume.data, volume.shape)?,
        shape: volume.shape,
        geometry: volume.geometry,
    })
}

/// A 4x4 affine from a user: finite, bottom row (0, 0, 0, 1), and the 3x3
/// part invertible.
fn affine_of(obj: &Bound<'_, PyAny>) -> PyResult<dtml_volume::Affine> {
    let np = obj.py().import("numpy")?;
    let a = np.call_method1("asarray", (obj, "float64"))?;
    let shape: Vec<usize> = a.getattr("shape")?.extract()?;
    if shape != [4, 4] {
        return Err(PyValueError::new_err(format!(
            "affine has shape {shape:?}; it must be 4x4"
        )));
    }
    let rows: Vec<Vec<f64>> = a.call_method0("tolist")?.extract()?;
    let m: dtml_volume::Affine = std::array::from_fn(|r| std::array::from_fn(|c| rows[r][c]));
    if m.iter().flatten().any(|v| !v.is_finite()) {
        return Err(PyValueError::new_err("affine holds NaN or inf"));
    }
    if m[3] != [0.0, 0.0, 0.0, 1.0] {
        return Err(PyValueError::new_err(format!(
            "affine's bottom row is {:?}; it must be [0, 0, 0, 1]",
            m[3]
        )));
    }
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    if det == 0.0 {
        return Err(PyValueError::new_err(
            "affine's 3x3 part is singular: voxels would have no volume",
        ));
    }
    Ok(m)
}

/// The voxels of a 3D numpy array in file order (x fastest), in a type
/// NIfTI-1 stores: bool becomes uint8, float16 float32, and int64 / uint64
/// int32 when every value fits (else an error, never a wrapped value).
pub(crate) fn voxels_of(array: &Bound<'_, PyAny>, what: &str) -> PyResult<(VoxelData, Xyz<usize>)> {
    let np = array.py().import("numpy")?;
    let array = np.call_method1("asarray", (array,))?;
    let shape: Vec<usize> = array.getattr("shape")?.extract()?;
    let [x, y, z] = shape[..] else {
        return Err(PyValueError::new_err(format!(
            "{what} has {} axes; a volume has 3 (i, j, k)",
            shape.len()
        )));
    };
    if shape.contains(&0) {
        return Err(PyValueError::new_err(format!(
            "{what} has shape {shape:?}: a volume has at least one voxel"
        )));
    }
    let dtype = array.getattr("dtype")?;
    let kind: String = dtype.getattr("kind")?.extract()?;
    let itemsize: usize = dtype.getattr("itemsize")?.extract()?;
    let cast = |to: &str| array.call_method1("astype", (to,));
    let array = match (kind.as_str(), itemsize) {
        ("b", _) => cast("uint8")?,
        ("f", 2) => cast("float32")?,
        ("i" | "u", 8) => {
            let fits = |v: Bound<'_, PyAny>| -> PyResult<bool> {
                let v: i128 = v.call_method0("item")?.extract()?;
                Ok((i32::MIN as i128..=i32::MAX as i128).contains(&v))
            };
            if !fits(array.call_method0("min")?)? || !fits(array.call_method0("max")?)? {
                return Err(PyValueError::new_err(format!(
                    "{what} is {} with values outside int32: dtml's volumes (as NIfTI-1) hold at most 32-bit integers; cast it (to float64 for example)",
                    dtype.str()?
                )));
            }
            cast("int32")?
        }
        ("u", 1 | 2 | 4) | ("i", 1 | 2 | 4) | ("f", 4 | 8) => array,
        _ => {
            return Err(PyTypeError::new_err(format!(
                "{what} has dtype {}: volumes hold bool, 8- to 32-bit integers, float32 or float64",
                dtype.str()?
            )));
        }
    };
    let flat = array.call_method1("ravel", ("F",))?;
    let kind: String = flat.getattr("dtype")?.getattr("kind")?.extract()?;
    let itemsize: usize = flat.getattr("dtype")?.getattr("itemsize")?.extract()?;
    macro_rules! vec_of {
        ($t:ty) => {
            flat.extract::<PyReadonlyArray1<'_, $t>>()?
                .as_array()
                .to_vec()
        };
    }
    let data = match (kind.as_str(), itemsize) {
        ("u", 1) => VoxelData::U8(vec_of!(u8)),
        ("i", 1) => VoxelData::I8(vec_of!(i8)),
        ("i", 2) => VoxelData::I16(vec_of!(i16)),
        ("u", 2) => VoxelData::U16(vec_of!(u16)),
        ("i", 4) => VoxelData::I32(vec_of!(i32)),
        ("u", 4) => VoxelData::U32(vec_of!(u32)),
        ("f", 4) => VoxelData::F32(vec_of!(f32)),
        _ => VoxelData::F64(vec_of!(f64)),
    };
    Ok((data, Xyz::new(x, y, z)))
}

/// Writes a 3D array as NIfTI-1 (`.nii`, or gzipped `.nii.gz`),
/// atomically. The geometry comes from `like` (a `Volume` read with
/// `read_volume`: its header's sform, qform and codes are kept, so a mask
/// overlays its scan in any viewer), else from `affine` (RAS+, nibabel's
/// convention; stored as both sform and qform), else 1 mm voxels at the
/// origin. dtml replaces only files it wrote itself: an existing file it
/// did not write raises `FileExistsError`.
#[pyfunction]
#[pyo3(signature = (path, array, affine=None, like=None))]
fn write_nifti(
    py: Python<'_>,
    path: PathBuf,
    array: &Bound<'_, PyAny>,
    affine: Option<&Bound<'_, PyAny>>,
    like: Option<&Bound<'_, Volume>>,
) -> PyResult<()> {
    let (data, shape) = voxels_of(array, "array")?;
    let geometry = match (affine, like) {
        (Some(_), Some(_)) => {
            return Err(PyValueError::new_err(
                "give the geometry once: affine or like, not both",
            ));
        }
        (None, Some(like)) => {
            let like = like.get();
            if like.shape != shape {
                return Err(PyValueError::new_err(format!(
                    "array has shape {:?} but like has {:?}: the mask must lie on its volume's grid",
                    shape.xyz(),
                    like.shape.xyz()
                )));
            }
            like.geometry.clone()
        }
        (Some(affine), None) => Geometry::from_affine(affine_of(affine)?),
        (None, None) => Geometry::from_spacing(Xyz::splat(1.0)),
    };
    if let Ok(meta) = std::fs::metadata(&path)
        && !(meta.is_file() && dtml_volume::nii::written_by_dtml(&path))
    {
        return Err(PyFileExistsError::new_err(format!(
            "{}: exists and dtml did not write it; dtml replaces only its own files: choose a new file name",
            path.display()
        )));
    }
    let volume = dtml_volume::Volume::new(data, shape, geometry).map_err(volume_error)?;
    py.detach(|| dtml_volume::write_nifti(&path, &volume))
        .map_err(volume_error)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Volume>()?;
    m.add_function(wrap_pyfunction!(read_volume, m)?)?;
    m.add_function(wrap_pyfunction!(write_nifti, m)?)?;
    Ok(())
}
