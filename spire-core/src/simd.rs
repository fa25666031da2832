//! Run-time SIMD dispatch: `simd! { fn f(…) { … } }` compiles the body three times
//! (AVX-512, AVX2+FMA, baseline x86-64) and picks the best for the running CPU once per call,
//! so element loops vectorise to the widest registers without building for a specific CPU.
//!
//! `SPIRE_SIMD=avx2` (or `baseline`) in the environment caps the level, so one AVX-512 machine
//! can measure the AVX2 path too ([`level`]). It caps our element kernels and the GEMMs under
//! our convolutions, linear layers and attention (the `gemm` crate's own AVX2 or scalar
//! micro-kernels, instantiated directly — what it runs on a CPU without AVX-512); candle's own
//! matmuls, outside the fused kernels, keep the `gemm` crate's dispatch.

/// An instruction-set level of the fused kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// x86-64 baseline (SSE2), or a non-x86 CPU.
    Baseline,
    /// AVX2 + FMA.
    Avx2,
    /// AVX-512 (F, BW, DQ, VL).
    Avx512,
}

impl Level {
    /// Its name, as `SPIRE_SIMD` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Level::Baseline => "baseline",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }
}

/// The level the fused kernels run at: the best the CPU has, capped by `SPIRE_SIMD`
/// (`avx512`, `avx2`, `baseline`; another value is ignored with a warning). Read once.
pub fn level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        let best = if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            Level::Avx512
        } else if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            Level::Avx2
        } else {
            Level::Baseline
        };
        #[cfg(not(target_arch = "x86_64"))]
        let best = Level::Baseline;
        let cap = match std::env::var("SPIRE_SIMD").ok().as_deref() {
            None | Some("") => best,
            Some("avx512") => Level::Avx512,
            Some("avx2") => Level::Avx2,
            Some("baseline") => Level::Baseline,
            Some(other) => {
                tracing::warn!("SPIRE_SIMD={other} is not avx512, avx2 or baseline: ignored");
                best
            }
        };
        best.min(cap)
    })
}

macro_rules! simd {
    (fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? $body:block) => {
        #[allow(clippy::too_many_arguments)]
        fn $name($($a: $t),*) $(-> $r)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn imp($($a: $t),*) $(-> $r)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v4($($a: $t),*) $(-> $r)? { imp($($a),*) }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v3($($a: $t),*) $(-> $r)? { imp($($a),*) }
                match $crate::simd::level() {
                    // SAFETY: `level` only returns a level whose features the CPU has.
                    $crate::simd::Level::Avx512 => return unsafe { v4($($a),*) },
                    // SAFETY: as above, for `v3`.
                    $crate::simd::Level::Avx2 => return unsafe { v3($($a),*) },
                    $crate::simd::Level::Baseline => {}
                }
            }
            imp($($a),*)
        }
    };
}
