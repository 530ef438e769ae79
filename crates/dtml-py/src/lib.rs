//! The `dtml` Python package, built by maturin: dtml's exact Euclidean
//! distance maps and segmentation metrics ([`dtml_edt`]) on numpy arrays,
//! NIfTI / NRRD volumes read into numpy with their geometry
//! ([`dtml_volume`]), and trained students predicting numpy volumes as
//! `dtml predict` does ([`dtml_infer`]), and `dtml train` with a progress
//! callback ([`dtml_train`]).
//!
//! Masks come in as any numpy array (or array-like) of 1 to 3 axes: bool
//! and uint8 arrays in C order are read in place; anything else (other
//! integers, floats, Fortran order, strided views) is turned into a bool
//! mask `array != 0` first. Axes and spacings are in numpy's order (the
//! last axis contiguous), as scipy's `sampling`. Distances come back as
//! float32 arrays of the mask's shape. Volumes follow nibabel: arrays
//! indexed `[i, j, k]` (x fastest in memory: Fortran order) and a RAS+
//! affine. The work runs with the GIL released, on all cores (rayon);
//! errors are Python exceptions, never a panic.

mod distances;
mod errors;
mod interrupt;
mod masks;
mod metrics;
mod models;
mod training;
mod volumes;

use pyo3::prelude::*;

#[pymodule]
fn dtml(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    distances::register(m)?;
    metrics::register(m)?;
    volumes::register(m)?;
    models::register(m)?;
    training::register(m)?;
    Ok(())
}
