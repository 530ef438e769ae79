//! Candle model definitions for dtml: the 3D operations candle lacks, as
//! custom ops with their own gradients ([`ops`]), and the dual-task V-Net
//! both DTML students use ([`vnet`]), loadable from the authors' PyTorch
//! checkpoints.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use dtml_model::{Dropout, VNet, VNetConfig};
//! let net = VNet::new(VNetConfig { width: 2, ..Default::default() }, 1337, DType::F32, &Device::Cpu).unwrap();
//! let x = Tensor::zeros((1, 1, 16, 16, 16), DType::F32, &Device::Cpu).unwrap();
//! assert_eq!(net.forward(&x, false, Dropout::Off).unwrap().seg_logits.dims(), &[1, 1, 16, 16, 16]);
//! ```

pub mod discriminator;
pub mod error;
pub mod flops;
pub mod init;
pub mod ops;
pub mod peak;
pub mod profile;
pub mod runtime;
pub mod simd;
pub mod vnet;

pub use discriminator::Discriminator;
pub use error::{ModelError, Result};
pub use init::Init;
pub use ops::Upsampling;
pub use vnet::{Dropout, RELEASED_DROPOUT, VNet, VNetConfig, VNetOutput};
