//! Helpers shared by the integration tests.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};

/// SplitMix64: a seeded source of test inputs without extra dependencies.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    pub fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.range(lo, hi)).collect()
    }
}

pub fn t64(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape, &Device::Cpu).unwrap()
}

pub fn to_vec(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

pub fn scalar(t: &Tensor) -> f64 {
    assert_eq!(t.rank(), 0, "expected a 0-d tensor, got {:?}", t.dims());
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

/// Asserts `max |a - b| <= rtol * max |b|` (relative to the reference's
/// scale, so entries that cancel to near 0 are judged against the whole
/// tensor), and that shapes and finiteness agree.
pub fn assert_close(what: &str, a: &Tensor, b: &Tensor, rtol: f64) {
    assert_eq!(a.dims(), b.dims(), "{what}: shape");
    let (av, bv) = (to_vec(a), to_vec(b));
    let scale = bv.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let mut worst = (0.0f64, 0usize);
    for (i, (x, y)) in av.iter().zip(&bv).enumerate() {
        assert!(x.is_finite() && y.is_finite(), "{what}[{i}]: {x} vs {y}");
        let e = (x - y).abs();
        if e > worst.0 {
            worst = (e, i);
        }
    }
    let (e, i) = worst;
    assert!(
        e <= rtol * scale,
        "{what}: max error {e:e} at {i} ({} vs {}), scale {scale:e}, rtol {rtol:e}",
        av[i],
        bv[i]
    );
}
