//! Inference with trained students, and nothing of training: sliding-window
//! prediction of whole scans through one or both V-Nets, the two-student
//! ensemble, threshold and largest component ([`infer`]); segmenting a
//! folder of scans into masks and maps ([`predict`], [`outputs`]); run
//! directories (`run.json`) and weight files, ours or the authors' `.pth`
//! ([`run`], [`students`]); scoring predictions against label files over a
//! dataset or a prepared cache, with the report as a table, CSV and JSON
//! ([`evaluate`], [`report`]); mask files scored against references and
//! turned into distance maps ([`masks`]). A user who only predicts or
//! scores depends on this crate, not on the trainer.
//!
//! ```
//! use candle_core::{DType, Device};
//! use dtml_infer::{Ensemble, InferenceOptions, Students, predict_volume};
//! use dtml_model::{VNet, VNetConfig};
//! use dtml_volume::Xyz;
//!
//! // An untrained width-2 V-Net stands in for a trained region student
//! // (`dtml_infer::students::load_models` reads real ones).
//! let net = VNet::new(VNetConfig { width: 2, ..Default::default() }, 1, DType::F32, &Device::Cpu).unwrap();
//! let students = Students { region: Some(&net), boundary: None };
//! let opts = InferenceOptions {
//!     patch: Xyz::new(16, 16, 16),
//!     stride: Xyz::new(8, 8, 8),
//!     ensemble: Ensemble::Region,
//!     ..Default::default()
//! };
//! let shape = Xyz::new(20, 18, 16); // x fastest in memory
//! let image = vec![0.0f32; shape.voxels()]; // z-scored intensities
//! let prediction = predict_volume(&students, &image, shape, &opts).unwrap();
//! assert_eq!(prediction.mask.len(), image.len());
//! ```

pub mod error;
pub mod evaluate;
pub mod infer;
pub mod masks;
pub mod method;
pub mod outputs;
pub mod predict;
pub mod report;
pub mod run;
pub mod shard;
pub mod students;

pub use error::{InferError, Result};
pub use evaluate::{CaseEvaluation, CaseResult, evaluate_prepared};
pub use infer::{Ensemble, InferenceOptions, Prediction, Students, predict_volume, zscore};
pub use method::Method;
pub use run::{RunInfo, StudentFile, StudentRole};
