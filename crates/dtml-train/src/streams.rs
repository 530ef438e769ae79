//! The run's independent random streams: every random choice of a run
//! (initial weights, case order, augmentation, dropout, input noise) is
//! drawn from a stream derived from `(run seed, stream, index)` alone, so
//! a resumed run draws exactly what an uninterrupted one would.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Independent random streams of a run.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub enum Stream {
    Init = 1,
    LabelledOrder = 2,
    UnlabelledOrder = 3,
    Augment = 4,
    Dropout = 5,
    /// Input noise (the mean teacher's).
    Noise = 6,
    /// Box positions (BCP's copy-paste box).
    Boxes = 7,
}

/// A generator for `(seed, stream, index)`, independent of every other.
pub fn rng_for(seed: u64, stream: Stream, index: u64) -> ChaCha8Rng {
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed ^ (stream as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    rng.set_stream(index);
    rng
}
