//! Which instruction-set tier the CPU kernels run: AVX-512, AVX2 + FMA,
//! NEON or portable loops, detected once per process, or forced with
//! `DTML_CPU=avx512|avx2|neon|portable` (refused when the CPU lacks it).
//!
//! The kernels (`ops::kernel`) are written once, generic over [`Lanes`], a
//! vector of f32 of one instruction set with the five operations a tile
//! needs, and instantiated per tier inside `#[target_feature]` functions
//! with that tier's own tile shape (32 zmm registers hold 24 accumulators;
//! 16 ymm hold 8). We use this small trait instead of a SIMD crate
//! because the tiles are register-blocked with per-tier const shapes: the
//! generic body is plain array code that LLVM keeps in registers once the
//! shapes are constants, and the AVX-512 instance compiles to the same
//! loop as the hand-written intrinsics it replaced (conv benches unchanged).
//!
//! ```
//! let tier = dtml_model::simd::active();
//! assert!(tier.is_supported());
//! println!("kernels: {} (CPU has {:?})", tier.name(), dtml_model::simd::cpu_features());
//! ```

use crate::error::{ModelError, Result};
use std::sync::OnceLock;

/// An instruction-set tier of the CPU kernels, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// x86-64 AVX-512F: 16 f32 lanes, 32 vector registers.
    Avx512,
    /// x86-64 AVX2 + FMA: 8 lanes, 16 registers.
    Avx2,
    /// aarch64 NEON: 4 lanes, 32 registers.
    Neon,
    /// Plain loops the compiler vectorises for the build's baseline.
    Portable,
}

/// The environment variable that forces a tier.
pub const TIER_VAR: &str = "DTML_CPU";

impl Tier {
    /// Every tier, best first.
    pub const ALL: [Tier; 4] = [Tier::Avx512, Tier::Avx2, Tier::Neon, Tier::Portable];

    /// The name `DTML_CPU` takes.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Avx512 => "avx512",
            Tier::Avx2 => "avx2",
            Tier::Neon => "neon",
            Tier::Portable => "portable",
        }
    }

    /// Parses a name as [`Tier::name`] writes it.
    pub fn parse(name: &str) -> Option<Tier> {
        Tier::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name.trim()))
    }

    /// Whether this CPU can run the tier.
    pub fn is_supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Tier::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Tier::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "aarch64")]
            Tier::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            Tier::Portable => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The tiers this CPU supports, best first.
    pub fn supported() -> Vec<Tier> {
        Tier::ALL.into_iter().filter(|t| t.is_supported()).collect()
    }

    /// The best tier this CPU supports.
    pub fn best() -> Tier {
        Tier::ALL
            .into_iter()
            .find(|t| t.is_supported())
            .unwrap_or(Tier::Portable)
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The CPU's model name as the OS reports it (`/proc/cpuinfo`), else the
/// architecture, for reports.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The SIMD features of this CPU that the tiers use, for reports.
pub fn cpu_features() -> Vec<&'static str> {
    let mut out = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        for (name, has) in [
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
        ] {
            if has {
                out.push(name);
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("neon") {
        out.push("neon");
    }
    out
}

/// The tier `DTML_CPU` asks for, or the best one when it is unset: an
/// error names an unknown tier or one this CPU lacks.
pub fn requested() -> Result<Tier> {
    let Some(value) = std::env::var_os(TIER_VAR) else {
        return Ok(Tier::best());
    };
    let value = value.to_string_lossy();
    if value.trim().is_empty() {
        return Ok(Tier::best());
    }
    let names: Vec<&str> = Tier::ALL.iter().map(|t| t.name()).collect();
    let tier = Tier::parse(&value).ok_or_else(|| {
        ModelError::Config(format!(
            "{TIER_VAR}={value}: unknown kernel tier; choose one of {}",
            names.join(", ")
        ))
    })?;
    if !tier.is_supported() {
        let have: Vec<&str> = Tier::supported().iter().map(|t| t.name()).collect();
        return Err(ModelError::Config(format!(
            "{TIER_VAR}={value}: this CPU cannot run the {tier} kernels (it supports {})",
            have.join(", ")
        )));
    }
    Ok(tier)
}

static ACTIVE: OnceLock<Tier> = OnceLock::new();

/// Fixes the process's tier from `DTML_CPU` (or detection) and returns it;
/// binaries call it first so a bad `DTML_CPU` is an error, not a warning.
pub fn init() -> Result<Tier> {
    let tier = requested()?;
    Ok(*ACTIVE.get_or_init(|| tier))
}

/// The tier the kernels run in this process. Without [`init`], a bad
/// `DTML_CPU` is logged once and the best supported tier is used.
#[inline]
pub fn active() -> Tier {
    *ACTIVE.get_or_init(|| {
        requested().unwrap_or_else(|e| {
            let best = Tier::best();
            tracing::error!("{e}; using the {best} kernels");
            best
        })
    })
}

/// A vector of f32 lanes of one instruction set: what the register tiles
/// of `ops::kernel` need. Every method must be inlined into a function
/// compiled with the tier's target features.
pub(crate) trait Lanes: Copy {
    /// Lanes per vector.
    const N: usize;
    /// # Safety
    /// The tier's features must be enabled in the caller.
    unsafe fn zero() -> Self;
    /// # Safety
    /// As [`Lanes::zero`].
    unsafe fn splat(v: f32) -> Self;
    /// # Safety
    /// As [`Lanes::zero`]; `p` must address `N` readable values.
    unsafe fn load(p: *const f32) -> Self;
    /// # Safety
    /// As [`Lanes::zero`]; `p` must address `N` writable values.
    unsafe fn store(self, p: *mut f32);
    /// `a * b + c`, fused where the tier has it.
    ///
    /// # Safety
    /// As [`Lanes::zero`].
    unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self;
    /// # Safety
    /// As [`Lanes::zero`].
    unsafe fn add(a: Self, b: Self) -> Self;
}

/// Four f32 lanes as a plain array: the portable tier's vector, which LLVM
/// maps onto the baseline's 128-bit registers (SSE2 on x86-64).
#[derive(Clone, Copy)]
pub(crate) struct Quad([f32; 4]);

impl Lanes for Quad {
    const N: usize = 4;
    #[inline(always)]
    unsafe fn zero() -> Self {
        Quad([0.0; 4])
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Quad([v; 4])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: forwarded contract (4 readable values).
        Quad(unsafe { p.cast::<[f32; 4]>().read_unaligned() })
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: forwarded contract (4 writable values).
        unsafe { p.cast::<[f32; 4]>().write_unaligned(self.0) }
    }
    #[inline(always)]
    unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self {
        // Unfused: the baseline has no FMA, and `f32::mul_add` would call
        // the C library's fmaf per lane.
        Quad(std::array::from_fn(|i| a.0[i] * b.0[i] + c.0[i]))
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        Quad(std::array::from_fn(|i| a.0[i] + b.0[i]))
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use super::Lanes;
    use std::arch::x86_64::*;

    /// 16 lanes of AVX-512F.
    #[derive(Clone, Copy)]
    pub(crate) struct Zmm(__m512);

    impl Lanes for Zmm {
        const N: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY: the caller enables the features.
            Zmm(unsafe { _mm512_setzero_ps() })
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            // SAFETY: the caller enables the features.
            Zmm(unsafe { _mm512_set1_ps(v) })
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: forwarded contract.
            Zmm(unsafe { _mm512_loadu_ps(p) })
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            // SAFETY: forwarded contract.
            unsafe { _mm512_storeu_ps(p, self.0) }
        }
        #[inline(always)]
        unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self {
            // SAFETY: the caller enables the features.
            Zmm(unsafe { _mm512_fmadd_ps(a.0, b.0, c.0) })
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            // SAFETY: the caller enables the features.
            Zmm(unsafe { _mm512_add_ps(a.0, b.0) })
        }
    }

    /// 8 lanes of AVX2 with FMA.
    #[derive(Clone, Copy)]
    pub(crate) struct Ymm(__m256);

    impl Lanes for Ymm {
        const N: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY: the caller enables the features.
            Ymm(unsafe { _mm256_setzero_ps() })
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            // SAFETY: the caller enables the features.
            Ymm(unsafe { _mm256_set1_ps(v) })
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: forwarded contract.
            Ymm(unsafe { _mm256_loadu_ps(p) })
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            // SAFETY: forwarded contract.
            unsafe { _mm256_storeu_ps(p, self.0) }
        }
        #[inline(always)]
        unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self {
            // SAFETY: the caller enables the features.
            Ymm(unsafe { _mm256_fmadd_ps(a.0, b.0, c.0) })
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            // SAFETY: the caller enables the features.
            Ymm(unsafe { _mm256_add_ps(a.0, b.0) })
        }
    }
}

#[cfg(target_arch = "aarch64")]
pub(crate) mod arm {
    use super::Lanes;
    use std::arch::aarch64::*;

    /// 4 lanes of NEON.
    #[derive(Clone, Copy)]
    pub(crate) struct Q(float32x4_t);

    impl Lanes for Q {
        const N: usize = 4;
        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY: the caller enables the features.
            Q(unsafe { vdupq_n_f32(0.0) })
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            // SAFETY: the caller enables the features.
            Q(unsafe { vdupq_n_f32(v) })
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: forwarded contract.
            Q(unsafe { vld1q_f32(p) })
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            // SAFETY: forwarded contract.
            unsafe { vst1q_f32(p, self.0) }
        }
        #[inline(always)]
        unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self {
            // SAFETY: the caller enables the features.
            Q(unsafe { vfmaq_f32(c.0, a.0, b.0) })
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            // SAFETY: the caller enables the features.
            Q(unsafe { vaddq_f32(a.0, b.0) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_portable_is_always_there() {
        for t in Tier::ALL {
            assert_eq!(Tier::parse(t.name()), Some(t));
        }
        assert_eq!(Tier::parse(" AVX2 "), Some(Tier::Avx2));
        assert_eq!(Tier::parse("sse"), None);
        assert!(Tier::Portable.is_supported());
        assert!(Tier::supported().contains(&Tier::best()));
        assert!(active().is_supported());
    }
}
