//! `dtml.train`: `dtml train` on a prepared cache from Python, with the
//! settings as keyword arguments (the TOML keys of a run's configuration,
//! one definition in [`dtml_train::TrainConfig`]), a progress callback,
//! and Ctrl-C or an exception in the callback stopping the run after the
//! iteration in progress with a checkpoint there, so `resume=True` goes on
//! exactly.

use crate::errors::volume_error;
use dtml_train::{Event, TrainConfig, TrainError, TrainRequest};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

fn train_error(e: TrainError) -> PyErr {
    match e {
        TrainError::Volume(v) => volume_error(v),
        TrainError::Infer(i) => crate::errors::infer_error(i),
        TrainError::Candle(c) => PyRuntimeError::new_err(c.to_string()),
        other => PyValueError::new_err(other.to_string()),
    }
}

/// The run's configuration: the checkpoint's when resuming one (the
/// settings a resume may change aside, what it was trained with), else
/// dtml's defaults, with the keyword arguments set on top.
fn configuration(
    py: Python<'_>,
    out: &Path,
    resume: bool,
    settings: Option<&Bound<'_, PyDict>>,
) -> PyResult<TrainConfig> {
    let saved = if resume {
        dtml_train::checkpoint::state_of_run(out)
            .map_err(train_error)?
            .map(|s| s.config)
    } else {
        None
    };
    let base = saved.unwrap_or_default();
    let serde_json::Value::Object(mut keys) =
        serde_json::to_value(&base).map_err(|e| PyRuntimeError::new_err(e.to_string()))?
    else {
        return Err(PyRuntimeError::new_err(
            "the configuration is not a JSON object (a bug in dtml: please report it)",
        ));
    };
    if let Some(settings) = settings {
        let json = py.import("json")?;
        for (key, value) in settings.iter() {
            let key: String = key.extract()?;
            if !keys.contains_key(&key) {
                let mut known: Vec<&String> = keys.keys().collect();
                known.sort();
                return Err(PyTypeError::new_err(format!(
                    "train() got an unexpected keyword argument {key:?}; the settings are {}",
                    known
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            let text: String = json.call_method1("dumps", (value,))?.extract()?;
            let value = serde_json::from_str(&text)
                .map_err(|e| PyValueError::new_err(format!("{key}: {e}")))?;
            keys.insert(key.clone(), value);
            // Read after each key, so an error names the key it is about.
            serde_json::from_value::<TrainConfig>(serde_json::Value::Object(keys.clone()))
                .map_err(|e| PyValueError::new_err(format!("{key}={text}: {e}")))?;
        }
    }
    let config: TrainConfig = serde_json::from_value(serde_json::Value::Object(keys))
        .map_err(|e| PyValueError::new_err(format!("invalid setting: {e}")))?;
    config.validate().map_err(train_error)?;
    Ok(config)
}

/// A training event as the dict the callback receives.
fn event_dict<'py>(py: Python<'py>, event: &Event) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    match event {
        Event::Started { first, iterations } => {
            d.set_item("event", "started")?;
            d.set_item("first", first)?;
            d.set_item("iterations", iterations)?;
        }
        Event::Iteration(log) => {
            d.set_item("event", "iteration")?;
            d.set_item("iteration", log.iteration)?;
            d.set_item("loss", log.loss)?;
            let parts = PyDict::new(py);
            for (k, v) in &log.parts {
                parts.set_item(k, v)?;
            }
            d.set_item("parts", parts)?;
            d.set_item("lambda", log.lambda)?;
            d.set_item("lr", log.lr)?;
            d.set_item("seconds", log.seconds)?;
        }
        Event::Validated {
            iteration,
            dice,
            best,
        } => {
            d.set_item("event", "validated")?;
            d.set_item("iteration", iteration)?;
            d.set_item("dice", dice)?;
            d.set_item("best", best)?;
        }
        Event::Checkpoint { iteration } => {
            d.set_item("event", "checkpoint")?;
            d.set_item("iteration", iteration)?;
        }
    }
    Ok(d)
}

/// Trains students on a prepared cache (from `dtml prepare`) into the run
/// folder `out`, as `dtml train --data DATA --out OUT` does; the result
/// is the same run (`dtml.Model(out)` loads it).
///
/// Settings are keyword arguments named as the run's TOML keys
/// (`method="mean-teacher"`, `iterations=600`, `patch=(48, 48, 32)`,
/// `width=8`, `seed=2`, `threads=2`, ...); the others keep dtml's defaults
/// (the paper's recipe), or the run's own when resuming. `callback`, when
/// given, is called with a dict per event: `started` (`first`,
/// `iterations`), `iteration` (`iteration`, `loss`, `parts`, `lambda`,
/// `lr`, `seconds`), `validated` (`iteration`, `dice`, `best`),
/// `checkpoint` (`iteration`).
///
/// Ctrl-C (or an exception raised by the callback) stops the run after the
/// iteration in progress, saves a checkpoint there and raises; call again
/// with `resume=True` to go on exactly. Returns a dict: `run` (the folder),
/// `iterations` done, last `loss`, `best_iteration` and `best_dice` (when
/// the cache has validation cases), and `students` (the weight files).
#[pyfunction]
#[pyo3(signature = (data, out, *, resume=false, callback=None, **settings))]
fn train<'py>(
    py: Python<'py>,
    data: PathBuf,
    out: PathBuf,
    resume: bool,
    callback: Option<Py<PyAny>>,
    settings: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    let config = configuration(py, &out, resume, settings)?;
    let threads = config.threads;
    let dataset = py
        .detach(|| dtml_volume::PreparedDataset::open(&data))
        .map_err(volume_error)?;
    let stop = AtomicBool::new(false);
    let mut failure: Option<PyErr> = None;
    let outcome = py.detach(|| {
        let run = || {
            let request = TrainRequest {
                data: &dataset,
                run_dir: &out,
                config,
                device: candle_core::Device::Cpu,
                resume,
                stop: Some(&stop),
            };
            dtml_train::train(request, &mut |event| {
                if failure.is_some() {
                    return;
                }
                let result = Python::attach(|py| -> PyResult<()> {
                    py.check_signals()?;
                    if let Some(callback) = &callback {
                        callback.call1(py, (event_dict(py, &event)?,))?;
                    }
                    Ok(())
                });
                if let Err(e) = result {
                    failure = Some(e);
                    stop.store(true, Ordering::SeqCst);
                }
            })
        };
        match threads {
            Some(n) => rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .map_err(|e| TrainError::Other(format!("threads={n}: {e}")))
                .and_then(|pool| pool.install(run)),
            None => run(),
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    let outcome = outcome.map_err(train_error)?;
    let d = PyDict::new(py);
    d.set_item("run", &out)?;
    d.set_item("iterations", outcome.last.as_ref().map(|l| l.iteration))?;
    d.set_item("loss", outcome.last.as_ref().map(|l| l.loss))?;
    d.set_item("best_iteration", outcome.best.map(|b| b.0))?;
    d.set_item("best_dice", outcome.best.map(|b| b.1))?;
    let students: Vec<PathBuf> = outcome
        .run
        .student_paths(&out)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    d.set_item("students", students)?;
    Ok(d)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(train, m)?)?;
    Ok(())
}
