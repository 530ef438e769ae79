//! The machine's own arithmetic limit: single-precision FMA throughput per
//! kernel tier, measured with a register-only loop (independent fused
//! multiply-adds on enough accumulators to hide their latency, no memory
//! traffic), on one thread per worker at once. Step times divided into
//! FLOP counts ([`crate::flops`]) become a share of this peak.
//!
//! Written on the [`crate::simd`] lane trait rather than a SIMD crate for
//! the same reason as the kernels: the measured loop must be exactly the
//! tier's FMA instruction on its own registers.

use crate::simd::{Lanes, Quad, Tier};
use std::time::{Duration, Instant};

/// One measurement of the FMA peak.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Peak {
    /// The tier whose FMA instruction ran.
    pub tier: &'static str,
    /// Threads that ran it at once.
    pub threads: usize,
    /// Single-precision GFLOP/s over all threads (an FMA counts 2 per lane).
    pub gflops: f64,
}

/// Accumulators per thread: 4-cycle latency times 2 FMA ports is 8 in
/// flight; more leaves room and stays within 16 registers.
const ACCUMULATORS: usize = 12;

/// `rounds` rounds of `ACCUMULATORS` independent FMAs; returns a value that
/// depends on all of them so none is optimised away.
#[inline(always)]
unsafe fn spin<L: Lanes>(rounds: u64) -> f32 {
    // SAFETY (every call below): the caller compiled this body with the
    // tier's features, as `Lanes` requires.
    let mut acc = [unsafe { L::splat(1.0) }; ACCUMULATORS];
    let b = unsafe { L::splat(std::hint::black_box(0.999_999)) };
    let c = unsafe { L::splat(std::hint::black_box(1e-7)) };
    for _ in 0..rounds {
        for a in acc.iter_mut() {
            *a = unsafe { L::mul_add(*a, b, c) };
        }
    }
    let mut sum = unsafe { L::zero() };
    for a in acc {
        sum = unsafe { L::add(sum, a) };
    }
    let mut out = [0f32; 16];
    // SAFETY: 16 values hold any tier's lanes.
    unsafe { sum.store(out.as_mut_ptr()) };
    out.iter().sum()
}

/// Runs `rounds` rounds on `tier`; returns its lanes per FMA.
fn run(tier: Tier, rounds: u64) -> Option<(usize, f32)> {
    match tier {
        #[cfg(target_arch = "x86_64")]
        Tier::Avx512 if tier.is_supported() => {
            #[target_feature(enable = "avx512f")]
            unsafe fn go(rounds: u64) -> f32 {
                // SAFETY: the features are enabled here.
                unsafe { spin::<crate::simd::x86::Zmm>(rounds) }
            }
            // SAFETY: the CPU supports the tier (checked above).
            Some((16, unsafe { go(rounds) }))
        }
        #[cfg(target_arch = "x86_64")]
        Tier::Avx2 if tier.is_supported() => {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn go(rounds: u64) -> f32 {
                // SAFETY: the features are enabled here.
                unsafe { spin::<crate::simd::x86::Ymm>(rounds) }
            }
            // SAFETY: the CPU supports the tier (checked above).
            Some((8, unsafe { go(rounds) }))
        }
        Tier::Portable => {
            // SAFETY: plain arrays need no features.
            Some((4, unsafe { spin::<Quad>(rounds) }))
        }
        _ => None,
    }
}

/// Measures `tier`'s single-precision FMA peak on `threads` threads at
/// once, for about `duration` (best of three rounds of it); `None` when
/// this CPU cannot run the tier. (The portable tier's "FMA" is a multiply
/// and an add, counted as 2 FLOPs per lane.)
pub fn fma_peak(tier: Tier, threads: usize, duration: Duration) -> Option<Peak> {
    let threads = threads.max(1);
    run(tier, 1)?;
    // Calibrate the rounds to the duration on one thread.
    let mut rounds = 1u64 << 16;
    let seconds = loop {
        let start = Instant::now();
        std::hint::black_box(run(tier, rounds));
        let s = start.elapsed().as_secs_f64();
        if s >= duration.as_secs_f64() / 8.0 || rounds >= 1 << 40 {
            break s;
        }
        rounds *= 2;
    };
    let rounds =
        ((rounds as f64) * duration.as_secs_f64() / 3.0 / seconds.max(1e-9)).max(1.0) as u64;
    let mut best = 0f64;
    for _ in 0..3 {
        let start = Instant::now();
        let lanes = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| s.spawn(move || run(tier, rounds)))
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .ok()
                        .flatten()
                        .map(|(lanes, v)| (lanes, std::hint::black_box(v)))
                })
                .collect::<Option<Vec<_>>>()
        })?;
        let elapsed = start.elapsed().as_secs_f64();
        let flops = (threads * ACCUMULATORS * 2 * lanes[0].0) as f64 * rounds as f64;
        best = best.max(flops / elapsed / 1e9);
    }
    Some(Peak {
        tier: tier.name(),
        threads,
        gflops: best,
    })
}

/// Physical cores behind this machine's logical CPUs, from
/// `/proc/cpuinfo` (distinct physical id and core id pairs), when it says.
pub fn physical_cores() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mut cores = std::collections::BTreeSet::new();
    let mut package = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "physical id" => package = value.trim().parse::<u64>().ok(),
            "core id" => {
                cores.insert((package, value.trim().parse::<u64>().ok()?));
            }
            _ => {}
        }
    }
    (!cores.is_empty()).then_some(cores.len())
}
