//! The generator's random streams: one per case, seeded from the dataset
//! seed and the index, and the draws the shapes use.

use super::*;

/// The generator of case `index`: its seed holds the dataset seed, the
/// index and a version tag, so streams never overlap.
pub(super) fn case_rng(seed: u64, index: usize) -> ChaCha8Rng {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s[8..16].copy_from_slice(&(index as u64).to_le_bytes());
    s[16..].copy_from_slice(b"dtml-synthetic-1");
    ChaCha8Rng::from_seed(s)
}

/// The stream of case `index`'s difficulty effects, apart from
/// [`case_rng`] so that difficulty 0 changes none of its draws.
pub(super) fn hard_rng(seed: u64, index: usize) -> ChaCha8Rng {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s[8..16].copy_from_slice(&(index as u64).to_le_bytes());
    s[16..].copy_from_slice(b"dtml-synth-hard1");
    ChaCha8Rng::from_seed(s)
}

pub(super) fn uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// Two independent standard normal samples (Box-Muller).
pub(super) fn gaussian_pair(rng: &mut ChaCha8Rng) -> (f64, f64) {
    let u1 = 1.0 - rng.random::<f64>(); // (0, 1]: ln is finite
    let u2 = rng.random::<f64>();
    let r = (-2.0 * u1.ln()).sqrt();
    let (s, c) = (2.0 * PI * u2).sin_cos();
    (r * c, r * s)
}

pub(super) fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    gaussian_pair(rng).0
}

pub(super) fn unit_vector(rng: &mut ChaCha8Rng) -> Vec3 {
    let (a, b) = gaussian_pair(rng);
    normalize([a, b, gaussian(rng)])
}

/// A uniformly random rotation (rows are the body's axes in grid space).
pub(super) fn random_rotation(rng: &mut ChaCha8Rng) -> [Vec3; 3] {
    let (a, b) = gaussian_pair(rng);
    let (c, d) = gaussian_pair(rng);
    let n = (a * a + b * b + c * c + d * d).sqrt().max(1e-12);
    let (w, x, y, z) = (a / n, b / n, c / n, d / n);
    [
        [
            1.0 - 2.0 * (y * y + z * z),
            2.0 * (x * y - w * z),
            2.0 * (x * z + w * y),
        ],
        [
            2.0 * (x * y + w * z),
            1.0 - 2.0 * (x * x + z * z),
            2.0 * (y * z - w * x),
        ],
        [
            2.0 * (x * z - w * y),
            2.0 * (y * z + w * x),
            1.0 - 2.0 * (x * x + y * y),
        ],
    ]
}
