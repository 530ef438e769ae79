//! Semi-supervised training of the two students: DTML and the objectives
//! it is compared with (`dtml-released`, DTC, supervised), batches and
//! augmentation, SGD, checkpoints that resume exactly, the training log and
//! plots. Validation and the exported run directory use `dtml-infer`.
//!
//! ```no_run
//! use dtml_train::{Method, TrainConfig, TrainRequest};
//! use dtml_volume::PreparedDataset;
//!
//! // A cache from `dtml prepare` (or `dtml_volume::prepare`).
//! let data = PreparedDataset::open("prepared".as_ref())?;
//! let config = TrainConfig { method: Method::Dtml, iterations: 100, ..Default::default() };
//! let request = TrainRequest {
//!     data: &data,
//!     run_dir: "run".as_ref(),
//!     config,
//!     device: candle_core::Device::Cpu,
//!     resume: false,
//!     stop: None,
//! };
//! let outcome = dtml_train::train(request, &mut |_event| {})?;
//! println!("students in run/: {:?}", outcome.run.students);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `examples/train_tiny.rs` runs the whole path (generate, prepare, train)
//! at toy size.

pub mod batch;
pub mod cases;
pub mod checkpoint;
pub mod collective;
pub mod config;
pub mod demo;
pub mod error;
pub mod log;
pub mod methods;
pub mod optim;
pub mod plot;
pub mod streams;
pub mod trainer;

pub use config::TrainConfig;
pub use dtml_infer::method::{self, Method};
pub use error::{Result, TrainError};
pub use log::IterationLog;
pub use trainer::{Event, TrainOutcome, TrainRequest, train};

/// Writes `bytes` to `path` atomically (temporary file, then rename).
pub fn atomic_write(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    Ok(dtml_volume::atomic::write_bytes_atomic(path, bytes)?)
}
