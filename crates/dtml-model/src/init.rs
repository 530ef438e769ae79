//! PyTorch's default initialisation, seeded: candle's CPU RNG cannot be
//! seeded, so values are drawn with ChaCha and tensors built from vectors.

use candle_core::{DType, Device, Tensor};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// `U(-bound, bound)` of `shape`, as PyTorch's `kaiming_uniform_(a=sqrt(5))`
/// and bias init do for convolutions with `bound = 1 / sqrt(fan_in)`.
pub fn uniform(
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
