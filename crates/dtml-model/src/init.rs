//! Initialisation schemes, seeded: candle's CPU RNG cannot be seeded, so
//! values are drawn with ChaCha and tensors built from vectors.

use candle_core::{DType, Device, Tensor};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// How a V-Net's convolution weights start. Biases, transposed
/// convolutions and BatchNorm always take PyTorch's defaults: the released
/// code's re-initialisers touch only `nn.Conv3d` weights (a transposed
/// convolution is not one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Init {
    /// PyTorch's default: `kaiming_uniform_(a = sqrt(5))`, that is
    /// `U(-1 / sqrt(fan_in), 1 / sqrt(fan_in))`.
    #[default]
    PyTorch,
    /// `kaiming_normal_` with its defaults: `N(0, 2 / fan_in)`.
    KaimingNormal,
    /// `xavier_normal_` with gain 1: `N(0, 2 / (fan_in + fan_out))`.
    XavierNormal,
}

impl Init {
    /// The weight of a (non-transposed) convolution with these fans.
    pub(crate) fn conv_weight(
        self,
        rng: &mut ChaCha8Rng,
        shape: &[usize],
        fans: (usize, usize),
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let (fan_in, fan_out) = (fans.0 as f64, fans.1 as f64);
        match self {
            Init::PyTorch => uniform(rng, shape, 1.0 / fan_in.sqrt(), dtype, device),
            Init::KaimingNormal => normal(rng, shape, (2.0 / fan_in).sqrt(), dtype, device),
            Init::XavierNormal => {
                normal(rng, shape, (2.0 / (fan_in + fan_out)).sqrt(), dtype, device)
            }
        }
    }
}

/// `U(-bound, bound)` of `shape`, as PyTorch's `kaiming_uniform_(a=sqrt(5))`
/// and bias init do for convolutions with `bound = 1 / sqrt(fan_in)`.
pub(crate) fn uniform(
    rng: &mut ChaCha8Rng,
    shape: &[usize],
    bound: f64,
    dtype: DType,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let n: usize = shape.iter().product();
    let values: Vec<f64> = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
    Tensor::from_vec(values, shape, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)
}

/// `N(0, std^2)` of `shape`.
fn normal(
    rng: &mut ChaCha8Rng,
    shape: &[usize],
    std: f64,
    dtype: DType,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let n: usize = shape.iter().product();
    let values: Vec<f64> = (0..n)
        .map(|_| std * <StandardNormal as Distribution<f64>>::sample(&StandardNormal, rng))
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)
}
