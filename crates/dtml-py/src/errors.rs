//! dtml's errors as the Python exceptions a user expects: a missing file is
//! `FileNotFoundError`, bad content `ValueError`; the message names the
//! file and the reason.

use pyo3::PyErr;
use pyo3::exceptions::{
    PyFileNotFoundError, PyOSError, PyPermissionError, PyRuntimeError, PyValueError,
};

pub(crate) fn value_error(e: dtml_edt::EdtError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

pub(crate) fn volume_error(e: dtml_volume::VolumeError) -> PyErr {
    let message = e.to_string();
    match e {
        dtml_volume::VolumeError::Io { error, .. } => match error.kind() {
            std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(message),
            std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(message),
            _ => PyOSError::new_err(message),
        },
        _ => PyValueError::new_err(message),
    }
}

pub(crate) fn infer_error(e: dtml_infer::InferError) -> PyErr {
    match e {
        dtml_infer::InferError::Volume(v) => volume_error(v),
        // The networks' own failures are not the user's input.
        dtml_infer::InferError::Candle(c) => PyRuntimeError::new_err(c.to_string()),
        other => PyValueError::new_err(other.to_string()),
    }
}
