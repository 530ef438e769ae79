//! SASSNet's discriminator (`FC3DDiscriminator` of the released code): it
//! tells a predicted signed distance map of a labelled patch from one of
//! an unlabelled patch, given the map and the image. The map and the image
//! each pass a 4x4x4 stride-2 convolution to `ndf` channels and are
//! summed; three more such convolutions double the channels each time
//! (LeakyReLU 0.2 after every stage, channel dropout 0.5 after the first
//! three in training); a mean over the remaining voxels (the released
//! `AvgPool3d((7, 7, 5))`, which is that mean at the paper's 112x112x80
//! patch) and a linear layer give two class logits.
//!
//! Weights are named and shaped as PyTorch's (`conv0.weight`, ...,
//! `classifier.bias`); like the V-Net's, the convolution kernels' spatial
//! axes are stored in the reference's (x, y, z) order.

use crate::error::{ModelError, Result};
use crate::init::uniform;
use crate::ops;
use crate::vnet::Dropout;
use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Channel-dropout probability of the discriminator's first three stages.
pub const DISCRIMINATOR_DROPOUT: f64 = 0.5;
/// Slope of its LeakyReLU below zero.
const LEAKY_SLOPE: f64 = 0.2;

/// The discriminator.
pub struct Discriminator {
    ndf: usize,
    dtype: DType,
    device: Device,
    /// By PyTorch name; kernels in (N, C, z, y, x) order.
    vars: BTreeMap<String, Var>,
}

/// (name, input channels, output channels) of the five convolutions.
fn convolutions(ndf: usize) -> [(&'static str, usize, usize); 5] {
    [
        ("conv0", 1, ndf),
        ("conv1", 1, ndf),
        ("conv2", ndf, 2 * ndf),
        ("conv3", 2 * ndf, 4 * ndf),
        ("conv4", 4 * ndf, 8 * ndf),
    ]
}

impl Discriminator {
    /// A discriminator of base width `ndf` (64 in the released code) with
    /// PyTorch's default initialisation drawn from `seed`.
    pub fn new(ndf: usize, seed: u64, dtype: DType, device: &Device) -> Result<Discriminator> {
        if ndf == 0 {
            return Err(ModelError::Config(
                "discriminator width must be positive".into(),
            ));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut vars = BTreeMap::new();
        let mut add = |name: String, shape: &[usize], fan_in: usize, rng: &mut ChaCha8Rng| {
            let bound = 1.0 / (fan_in as f64).sqrt();
            let t = uniform(rng, shape, bound, dtype, device)?;
            vars.insert(name, Var::from_tensor(&t)?);
            Ok::<_, candle_core::Error>(())
        };
        for (name, cin, cout) in convolutions(ndf) {
            add(
                format!("{name}.weight"),
                &[cout, cin, 4, 4, 4],
                cin * 64,
                &mut rng,
            )?;
            add(format!("{name}.bias"), &[cout], cin * 64, &mut rng)?;
        }
        add("classifier.weight".into(), &[2, 8 * ndf], 8 * ndf, &mut rng)?;
        add("classifier.bias".into(), &[2], 8 * ndf, &mut rng)?;
        Ok(Discriminator {
            ndf,
            dtype,
            device: device.clone(),
            vars,
        })
    }

    fn var(&self, name: &str) -> Tensor {
        self.vars[name].as_tensor().clone()
    }

    /// Convolution `name` and its bias.
    fn conv(&self, name: &str, x: &Tensor) -> Result<Tensor> {
        let y = ops::conv3d_k4_s2(x, &self.var(&format!("{name}.weight")))?;
        let b = self.var(&format!("{name}.bias"));
        Ok(y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1, 1))?)?)
    }

    /// Class logits `(N, 2)` (class 1: "labelled") of signed distance maps
    /// `map` and images `image`, both `(N, 1, Z, Y, X)` with every spatial
    /// size a multiple of 16. `dropout` drives the three channel-dropout
    /// layers (given masks are `(N, ndf)`, `(N, 2 ndf)`, `(N, 4 ndf)`);
    /// `Dropout::Off` is PyTorch's evaluation mode.
    pub fn forward(&self, map: &Tensor, image: &Tensor, dropout: Dropout) -> Result<Tensor> {
        if map.dims() != image.dims() || map.rank() != 5 || map.dim(1)? != 1 {
            return Err(ModelError::Input {
                shape: map.dims().to_vec(),
                reason: format!(
                    "the discriminator takes a map and an image of one shape (N, 1, Z, Y, X), got {:?} and {:?}",
                    map.dims(),
                    image.dims()
                ),
            });
        }
        crate::vnet::check_spatial_size(&map.dims()[2..]).map_err(|reason| ModelError::Input {
            shape: map.dims().to_vec(),
            reason,
        })?;
        let mut dropout = dropout;
        let mut h = (self.conv("conv0", map)? + self.conv("conv1", image)?)?;
        for (stage, next) in ["conv2", "conv3", "conv4"].into_iter().enumerate() {
            h = dropout.apply(&leaky_relu(&h)?, stage, DISCRIMINATOR_DROPOUT)?;
            h = self.conv(next, &h)?;
        }
        let h = leaky_relu(&h)?.flatten_from(2)?.mean(2)?;
        let w = self.var("classifier.weight");
        Ok(h.matmul(&w.t()?)?
            .broadcast_add(&self.var("classifier.bias"))?)
    }

    /// Its parameters by name (all are trained).
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        self.vars
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Base width.
    pub fn ndf(&self) -> usize {
        self.ndf
    }

    /// The weights by PyTorch name, in PyTorch's layout, on the CPU.
    pub fn state_dict(&self) -> Result<HashMap<String, Tensor>> {
        self.vars
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    reference_layout(v.as_tensor())?
                        .to_device(&Device::Cpu)?
                        .copy()?,
                ))
            })
            .collect()
    }

    /// Sets every weight from a state dict in PyTorch's layout; each must
    /// be there with its shape and finite.
    pub fn load_state_dict(&self, tensors: &HashMap<String, Tensor>, source: &Path) -> Result<()> {
        let err = |reason: String| ModelError::Weights {
            path: source.to_path_buf(),
            reason,
        };
        if let Some(k) = tensors.keys().find(|k| !self.vars.contains_key(*k)) {
            return Err(err(format!(
                "unexpected tensor {k}: not a discriminator of width {}",
                self.ndf
            )));
        }
        for (k, var) in &self.vars {
            let t = tensors
                .get(k)
                .ok_or_else(|| err(format!("discriminator tensor {k} is missing")))?;
            let t = reference_layout(t)?;
            if t.dims() != var.dims() {
                return Err(err(format!(
                    "{k} has shape {:?}, expected {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
            let t64 = t.to_dtype(DType::F64)?;
            if !t64.sum_all()?.to_scalar::<f64>()?.is_finite() {
                return Err(err(format!("{k} holds NaN or infinite values")));
            }
            var.set(&t.to_dtype(self.dtype)?.to_device(&self.device)?)?;
        }
        Ok(())
    }
}

/// PyTorch's LeakyReLU: slope 1 above zero, [`LEAKY_SLOPE`] at and below
/// (its gradient at 0 is the slope, as PyTorch's).
fn leaky_relu(x: &Tensor) -> Result<Tensor> {
    let above = x.gt(0.0)?.to_dtype(x.dtype())?;
    let factor = ((above * (1.0 - LEAKY_SLOPE))? + LEAKY_SLOPE)?;
    Ok((x * factor)?)
}

/// A convolution kernel's spatial axes reversed (the reference's (x, y, z)
/// order and ours are each other's reverse); other tensors unchanged.
fn reference_layout(t: &Tensor) -> candle_core::Result<Tensor> {
    if t.rank() == 5 {
        t.permute((0, 1, 4, 3, 2))?.contiguous()
    } else {
        Ok(t.clone())
    }
}
