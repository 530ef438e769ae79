//! Where dtml's layers meet: semi-supervised training of the two students
//! (DTML and the objectives it is compared with) and sliding-window
//! inference that turns trained students into masks.

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod evaluate;
pub mod infer;
pub mod method;
pub mod optim;
pub mod plot;
pub mod run;
pub mod runtime;
pub mod students;
pub mod trainer;

pub use config::TrainConfig;
pub use error::{Result, TrainError};
pub use evaluate::{CaseEvaluation, CaseResult, evaluate_prepared};
pub use infer::{Ensemble, InferenceOptions, Prediction, Students, predict_volume, zscore};
pub use method::Method;
pub use run::{RunInfo, StudentFile, StudentRole};
pub use trainer::{Event, IterationLog, TrainOutcome, TrainRequest, train};

/// Writes `bytes` to `path` atomically (temporary file, then rename).
pub fn atomic_write(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    Ok(dtml_volume::atomic::write_bytes_atomic(path, bytes)?)
}
