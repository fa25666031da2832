//! Fused f32 CPU kernels for the inference hot path: 2-D convolution (3×3 as Winograd F(4×4, 3×3)
//! or F(2×2, 3×3), others as im2col + one GEMM per output tile, bias fused), GroupNorm (one pass for statistics, optional fused SiLU), linear
//! layers (bias fused into the GEMM), GEGLU, and attention (query blocks: GEMM, softmax in
//! place, GEMM, with bounded scratch memory).
//!
//! They run only when every input is an f32 CPU tensor that is not part of a gradient graph,
//! and the layer's switch is on ([`crate::LoadOptions::fused_kernels`], `SPIRE_FUSED_KERNELS`);
//! otherwise the callers in [`super::nn`] use candle's differentiable operations, which compute
//! the same function. Element loops are compiled three times (AVX-512, AVX2+FMA, baseline) and
//! picked at run time, so one binary is fast on every x86-64 machine.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Whether the fused kernels are on when nothing else says: yes, unless the environment
/// variable `SPIRE_FUSED_KERNELS` is `0`, `off`, `false` or `no` (read once per process). The
/// test script runs the parity tests both ways with it, so the candle path that GPUs take is
/// proven on the CPU.
pub fn fused_default() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        !matches!(
            std::env::var("SPIRE_FUSED_KERNELS")
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
                .as_str(),
            "0" | "off" | "false" | "no"
        )
    })
}

thread_local! {
    static BUILDING: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` (a model constructor) with the layers it creates set to use the fused kernels or
/// not; outside such a scope new layers follow [`fused_default`]. Scopes nest.
pub(crate) fn building_with<T>(fused: bool, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<bool>);
    impl Drop for Restore {
        fn drop(&mut self) {
            BUILDING.with(|b| b.set(self.0));
        }
    }
    let _restore = Restore(BUILDING.with(|b| b.replace(Some(fused))));
    f()
}

/// Whether a layer created now may use the fused kernels (see [`building_with`]).
pub(crate) fn fused_for_new_layer() -> bool {
    BUILDING.with(|b| b.get()).unwrap_or_else(fused_default)
}

thread_local! {
    static WEIGHT_DTYPE: std::cell::Cell<Option<DType>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` (a model constructor, e.g. `UNet2DConditionModel::new` on a `VarBuilder`) with
/// the convolution and linear weights it creates kept in `dtype` (what
/// [`crate::LoadOptions::weight_dtype`] does for loaded models); `None` keeps them as built.
/// Scopes nest.
pub fn keep_weights_in<T>(dtype: Option<DType>, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<DType>);
    impl Drop for Restore {
        fn drop(&mut self) {
            WEIGHT_DTYPE.with(|b| b.set(self.0));
        }
    }
    let _restore = Restore(WEIGHT_DTYPE.with(|b| b.replace(dtype)));
    f()
}

/// A convolution or linear weight as a layer created now stores it: converted to the storage
/// dtype of the enclosing [`keep_weights_in`] scope, if any.
pub(crate) fn stored_weight(w: Tensor) -> Result<Tensor> {
    match WEIGHT_DTYPE.with(|b| b.get()) {
        Some(dt) if dt != w.dtype() => w.to_dtype(dt),
        _ => Ok(w),
    }
}

/// Whether the fused kernels run for the activation tensors `ts` and a convolution or linear
/// `weight`, which may be stored in f16 or bf16 (widened inside the kernel).
pub(crate) fn fast_path_weighted(enabled: bool, weight: &Tensor, ts: &[&Tensor]) -> bool {
    let w_ok = weight.device().is_cpu()
        && matches!(weight.dtype(), DType::F32 | DType::F16 | DType::BF16)
        && !weight.track_op();
    w_ok && fast_path(enabled, ts)
}

thread_local! {
    static DISPATCHED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many layer calls on this thread have taken a fused kernel so far: lets a test prove
/// which path a model took (the dispatch is decided on the calling thread).
#[doc(hidden)]
pub fn fused_dispatches_on_this_thread() -> u64 {
    DISPATCHED.with(|d| d.get())
}

/// Whether the fused kernels run for these tensors in a layer whose switch is `enabled`.
pub(crate) fn fast_path(enabled: bool, ts: &[&Tensor]) -> bool {
    let fused = enabled
        && ts
            .iter()
            .all(|t| t.device().is_cpu() && t.dtype() == DType::F32 && !t.track_op());
    if fused {
        DISPATCHED.with(|d| d.set(d.get() + 1));
    }
    fused
}

fn data<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let d = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&d[a..b]),
        None => candle_core::bail!("fused kernel input must be contiguous"),
    }
}

/// Reused per-thread f32 buffers, so large short-lived work buffers (widened weights,
/// Winograd transforms) do not page-fault on every call.
#[derive(Clone, Copy)]
enum Slot {
    Widened = 0,
    WinoWeights = 1,
    WinoInput = 2,
    WinoOutput = 3,
}

thread_local! {
    static SCRATCH: [std::cell::Cell<Vec<f32>>; 4] = const {
        [
            std::cell::Cell::new(Vec::new()),
            std::cell::Cell::new(Vec::new()),
            std::cell::Cell::new(Vec::new()),
            std::cell::Cell::new(Vec::new()),
        ]
    };
}

/// This thread's buffer `slot`, at least `n` long (contents unspecified); given back on drop.
struct Scratch {
    slot: Slot,
    buf: Vec<f32>,
    n: usize,
}

impl Scratch {
    fn take(slot: Slot, n: usize) -> Scratch {
        let mut buf = SCRATCH.with(|s| s[slot as usize].take());
        if buf.len() < n {
            buf.resize(n, 0.0);
        }
        Scratch { slot, buf, n }
    }
}

impl std::ops::Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf[..self.n]
    }
}

impl std::ops::DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf[..self.n]
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.buf);
        SCRATCH.with(|s| {
            let old = s[self.slot as usize].take();
            s[self.slot as usize].set(if old.capacity() > v.capacity() { old } else { v });
        });
    }
}

/// A layer's weights as f32: borrowed when stored in f32, widened into this thread's reused
/// buffer when stored in f16 or bf16 (returned to it on drop).
enum Weights<'a> {
    Borrowed(&'a [f32]),
    Widened(Scratch),
}

impl std::ops::Deref for Weights<'_> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            Weights::Borrowed(w) => w,
            Weights::Widened(v) => v,
        }
    }
}

fn weights<'a>(s: &'a CpuStorage, l: &Layout) -> Result<Weights<'a>> {
    let (a, b) = match l.contiguous_offsets() {
        Some(r) => r,
        None => candle_core::bail!("fused kernel weights must be contiguous"),
    };
    let n = b - a;
    let take = || Scratch::take(Slot::Widened, n);
    let span = || crate::profile::Span::start("widen weights", || format!("{:?}", s.dtype()), 0.0);
    match s {
        CpuStorage::F32(d) => Ok(Weights::Borrowed(&d[a..b])),
        CpuStorage::F16(d) => {
            let _span = span();
            let mut v = take();
            v.par_chunks_mut(1 << 15)
                .zip(d[a..b].par_chunks(1 << 15))
                .for_each(|(o, i)| widen_f16(i, o));
            Ok(Weights::Widened(v))
        }
        CpuStorage::BF16(d) => {
            let _span = span();
            let mut v = take();
            v.par_chunks_mut(1 << 15)
                .zip(d[a..b].par_chunks(1 << 15))
                .for_each(|(o, i)| widen_bf16(i, o));
            Ok(Weights::Widened(v))
        }
        other => candle_core::bail!(
            "fused kernel weights must be f32, f16 or bf16, not {:?}",
            other.dtype()
        ),
    }
}

/// f16 → f32, with F16C (8 at a time) when the CPU has it and the level allows AVX2.
fn widen_f16(src: &[half::f16], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::level() >= crate::simd::Level::Avx2 && std::arch::is_x86_feature_detected!("f16c") {
        // SAFETY: the CPU has AVX and F16C (checked above).
        unsafe { widen_f16_f16c(src, dst) };
        return;
    }
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.to_f32();
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn widen_f16_f16c(src: &[half::f16], dst: &mut [f32]) {
    use std::arch::x86_64::{__m128i, _mm256_cvtph_ps, _mm256_storeu_ps, _mm_loadu_si128};
    let n = src.len().min(dst.len());
    let n8 = n / 8 * 8;
    let mut i = 0;
    while i < n8 {
        // SAFETY: i + 8 ≤ n for both slices; unaligned loads and stores.
        unsafe {
            let h = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        }
        i += 8;
    }
    for j in n8..n {
        dst[j] = src[j].to_f32();
    }
}

simd! {
fn widen_bf16(src: &[half::bf16], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f32::from_bits((s.to_bits() as u32) << 16);
    }
}
}

fn threads() -> usize {
    candle_core::utils::get_num_threads().max(1)
}

/// `exp(x)` to about 2 ulp (Cephes polynomial), branch-free so loops vectorise. Above 88.37 it
/// returns +inf (f32 itself overflows at 88.72); below -87.3 the smallest normal float's order.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.7);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = n.mul_add(-0.693_359_4, x);
    let r = n.mul_add(2.121_944_4e-4, r);
    let mut p = 1.987_569_1e-4f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 0.166_666_65);
    p = p.mul_add(r, 0.5);
    let e = (p * r).mul_add(r, r) + 1.0;
    // 2^n from the bits of n + 127 + 2^23 (exact: n + 127 is an integer in 1..=255), not an
    // `as i32` conversion: that saturates, and LLVM turns it into one scalar conversion per
    // lane, which stopped every loop around `exp` from vectorising (softmax ran 3.7× slower).
    e * f32::from_bits((n + (127.0 + 8_388_608.0)).to_bits() << 23)
}

/// `erf(x)`, Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let s = if x < 0.0 { -1.0 } else { 1.0 };
    let a = x.abs();
    let t = 1.0 / 0.327_591_1f32.mul_add(a, 1.0);
    let mut p = 1.061_405_4f32;
    p = p.mul_add(t, -1.453_152_1);
    p = p.mul_add(t, 1.421_413_7);
    p = p.mul_add(t, -0.284_496_74);
    p = p.mul_add(t, 0.254_829_6);
    s * (1.0 - p * t * exp(-a * a))
}

#[inline(always)]
fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

// ------------------------------------------------------------------------------------------
// GEMM
// ------------------------------------------------------------------------------------------

/// `dst[m×n] (row stride dst_rs) = (read_dst ? dst : 0) + scale · lhs[m×k] · rhs[k×n]` with
/// arbitrary element strides.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    read_dst: bool,
    lhs: *const f32,
    (lhs_rs, lhs_cs): (isize, isize),
    rhs: *const f32,
    (rhs_rs, rhs_cs): (isize, isize),
    scale: f32,
    threads: usize,
) {
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    crate::profile::gemm_timed(|| {
        // SAFETY: forwarded from the caller.
        unsafe {
            gemm_at_level(
                m,
                n,
                k,
                dst,
                dst_rs,
                read_dst,
                lhs,
                (lhs_rs, lhs_cs),
                rhs,
                (rhs_rs, rhs_cs),
                scale,
                par,
            )
        }
    })
}

/// [`gemm`] at the level [`crate::simd::level`] allows.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_at_level(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    read_dst: bool,
    lhs: *const f32,
    (lhs_rs, lhs_cs): (isize, isize),
    rhs: *const f32,
    (rhs_rs, rhs_cs): (isize, isize),
    scale: f32,
    par: gemm::Parallelism,
) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::level() < crate::simd::Level::Avx512 {
        // `SPIRE_SIMD` capped the level: run the `gemm` crate's own AVX2 (or scalar) kernels,
        // which its dispatch would pick on such a CPU, instead of the best this CPU has.
        // SAFETY: as below; `level` never exceeds the CPU's features.
        unsafe {
            gemm_capped(
                crate::simd::level(),
                m,
                n,
                k,
                dst,
                dst_rs,
                read_dst,
                lhs,
                (lhs_rs, lhs_cs),
                rhs,
                (rhs_rs, rhs_cs),
                scale,
                par,
            )
        };
        return;
    }
    // SAFETY: the caller guarantees the pointers cover the strided ranges.
    unsafe {
        gemm::gemm(
            m, n, k, dst, 1, dst_rs, read_dst, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs, 1.0, scale, false,
            false, false, par,
        )
    }
}

/// [`gemm`] at a capped instruction-set level: `gemm::gemm`'s argument normalisation (the
/// destination made column-major by swapping the operands) followed by the generic driver
/// instantiated with the `gemm-f32` micro-kernels of that level — the same code `gemm` runs on a
/// CPU without AVX-512. Strides must be non-negative (all of ours are). `level` must be one the
/// CPU has; AVX-512 runs the AVX2 kernels here.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_capped(
    level: crate::simd::Level,
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    read_dst: bool,
    lhs: *const f32,
    (lhs_rs, lhs_cs): (isize, isize),
    rhs: *const f32,
    (rhs_rs, rhs_cs): (isize, isize),
    scale: f32,
    par: gemm::Parallelism,
) {
    use gemm_common::gemm::gemm_basic_generic;
    debug_assert!(dst_rs >= 0 && lhs_rs >= 0 && lhs_cs >= 0 && rhs_rs >= 0 && rhs_cs >= 0);
    if m == 0 || n == 0 {
        return;
    }
    // dst[m×n] row-major = lhs·rhs  ⇔  dstᵀ[n×m] column-major = rhsᵀ·lhsᵀ.
    let (mm, nn, d_cs, d_rs, a, a_cs, a_rs, b, b_cs, b_rs) = if 1 < dst_rs.abs() {
        (n, m, dst_rs, 1, rhs, rhs_rs, rhs_cs, lhs, lhs_rs, lhs_cs)
    } else {
        (m, n, 1, dst_rs, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs)
    };
    // The driver `gemm` instantiates for each level, with that level's micro-kernels.
    macro_rules! run {
        ($simd:expr, $uk:path, $n:expr) => {{
            use $uk as uk;
            const N: usize = $n;
            gemm_basic_generic::<
                _,
                f32,
                N,
                { uk::MR_DIV_N * N },
                { uk::NR },
                { uk::MR_DIV_N },
                { uk::H_M },
                { uk::H_N },
            >(
                $simd,
                mm,
                nn,
                k,
                dst,
                d_cs,
                d_rs,
                read_dst,
                a,
                a_cs,
                a_rs,
                b,
                b_cs,
                b_rs,
                1.0,
                scale,
                false,
                false,
                false,
                |a: f32, b: f32, c: f32| a * b + c,
                &uk::UKR,
                &uk::H_UKR,
                false,
                par,
            )
        }};
    }
    let v3 = if level >= crate::simd::Level::Avx2 {
        gemm_common::simd::V3::try_new()
    } else {
        None
    };
    match v3 {
        // SAFETY: `try_new` checked that the CPU has AVX2 + FMA; the pointers are the caller's.
        Some(v3) => unsafe { run!(v3, gemm_f32::microkernel::fma::f32, 8) },
        // SAFETY: the scalar kernels need no CPU feature; the pointers are the caller's.
        None => unsafe { run!(gemm_common::simd::Scalar, gemm_f32::microkernel::scalar::f32, 1) },
    }
}

// ------------------------------------------------------------------------------------------
// Convolution
// ------------------------------------------------------------------------------------------

struct Conv2dOp {
    stride: usize,
    padding: usize,
    /// Whether a 3×3 stride-1 padding-1 convolution of a large enough image may use Winograd.
    winograd: bool,
    /// Whether it may use F(4×4, 3×3) where that pays (else only F(2×2, 3×3)).
    winograd4: bool,
}

simd! {
fn im2col_rows(
    x: &[f32], h: usize, w: usize, kh: usize, kw: usize, stride: usize, padding: usize,
    ow: usize, oy0: usize, rows: usize, r: usize, out: &mut [f32],
) {
    // Row `r` of the column matrix: input channel r / (kh·kw), kernel offset r % (kh·kw).
    let kk = kh * kw;
    let (ci, ki, kj) = (r / kk, (r % kk) / kw, r % kw);
    let xc = &x[ci * h * w..(ci + 1) * h * w];
    for (t, oy) in (oy0..oy0 + rows).enumerate() {
        let dst = &mut out[t * ow..(t + 1) * ow];
        let iy = (oy * stride + ki) as isize - padding as isize;
        if iy < 0 || iy >= h as isize {
            dst.fill(0.0);
            continue;
        }
        let src = &xc[iy as usize * w..(iy as usize + 1) * w];
        if stride == 1 {
            // ix = ox + kj - padding; valid for ox in [lo, hi).
            let off = kj as isize - padding as isize;
            let lo = (-off).clamp(0, ow as isize) as usize;
            let hi = ((w as isize - off).clamp(0, ow as isize)) as usize;
            dst[..lo].fill(0.0);
            if hi > lo {
                dst[lo..hi].copy_from_slice(&src[(lo as isize + off) as usize..(hi as isize + off) as usize]);
            }
            dst[hi.max(lo)..].fill(0.0);
        } else {
            for (ox, d) in dst.iter_mut().enumerate() {
                let ix = (ox * stride + kj) as isize - padding as isize;
                *d = if ix >= 0 && ix < w as isize { src[ix as usize] } else { 0.0 };
            }
        }
    }
}
}

impl Conv2dOp {
    /// The Winograd variant for a convolution of this geometry `(kh, kw, stride, padding)`,
    /// channels and output size, if any: F(4×4) for large outputs whose transformed kernels fit
    /// one work buffer (so they are transformed once per call), F(2×2) for the other outputs of
    /// 16×16 pixels or more, none for smaller ones and other geometries.
    fn winograd_tile(
        &self,
        geometry: (usize, usize, usize, usize),
        (ci, co): (usize, usize),
        oh: usize,
        ow: usize,
    ) -> Option<Wino> {
        if !self.winograd || geometry != (3, 3, 1, 1) {
            None
        } else if self.winograd4
            && oh.div_ceil(4) * ow.div_ceil(4) >= WINOGRAD4_MIN_TILES
            && Wino::F4.positions() * ci * co <= WINOGRAD_BUDGET
        {
            Some(Wino::F4)
        } else {
            (oh.div_ceil(2) * ow.div_ceil(2) >= WINOGRAD_MIN_TILES).then_some(Wino::F2)
        }
    }
}

impl CustomOp3 for Conv2dOp {
    fn name(&self) -> &'static str {
        "spire-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, bias) = (data(xs, xl)?, data(bs, bl)?);
        let w = weights(ws, wl)?;
        let (b, ci, h, wd) = xl.shape().dims4()?;
        let (co, ci2, kh, kw) = wl.shape().dims4()?;
        if ci != ci2 || bias.len() != co {
            candle_core::bail!(
                "conv2d: input {:?}, weight {:?}, bias {}",
                xl.dims(),
                wl.dims(),
                bias.len()
            );
        }
        let (s, p) = (self.stride, self.padding);
        if h + 2 * p < kh || wd + 2 * p < kw {
            candle_core::bail!("conv2d: input {h}x{wd} smaller than kernel {kh}x{kw}");
        }
        let oh = (h + 2 * p - kh) / s + 1;
        let ow = (wd + 2 * p - kw) / s + 1;
        let (n, k) = (oh * ow, ci * kh * kw);
        let winograd = self.winograd_tile((kh, kw, s, p), (ci, co), oh, ow);
        let kind = match (kh, kw, s) {
            (3, 3, 1) if winograd == Some(Wino::F4) => "conv3x3 winograd4",
            (3, 3, 1) if winograd.is_some() => "conv3x3 winograd",
            (3, 3, 1) => "conv3x3",
            (1, 1, 1) => "conv1x1",
            _ => "conv",
        };
        let _span = crate::profile::Span::start(
            kind,
            || format!("{ci}→{co} {h}×{wd} k{kh} s{s} b{b}"),
            2.0 * (b * co * n * k) as f64,
        );
        let mut out = vec![0f32; b * co * n];
        if let Some(tile) = winograd {
            conv_winograd(tile, x, &w, bias, b, ci, co, h, wd, &mut out);
            return Ok((CpuStorage::F32(out), Shape::from((b, co, oh, ow))));
        }
        let direct = kh == 1 && kw == 1 && s == 1 && p == 0;
        // Output rows per tile, so the column buffer stays under ~32 MiB.
        let rows = if direct {
            oh
        } else {
            ((8 << 20) / (k * ow).max(1)).clamp(1, oh)
        };
        let mut col = if direct {
            Vec::new()
        } else {
            vec![0f32; k * rows * ow]
        };
        let nt = threads();
        for bi in 0..b {
            let xb = &x[bi * ci * h * wd..(bi + 1) * ci * h * wd];
            let ob = &mut out[bi * co * n..(bi + 1) * co * n];
            ob.par_chunks_mut(n)
                .enumerate()
                .for_each(|(c, row)| row.fill(bias[c]));
            let mut oy0 = 0;
            while oy0 < oh {
                let r = rows.min(oh - oy0);
                let tile = r * ow;
                let rhs: *const f32 = if direct {
                    xb.as_ptr()
                } else {
                    let col = &mut col[..k * tile];
                    col.par_chunks_mut(tile).enumerate().for_each(|(ri, c)| {
                        im2col_rows(xb, h, wd, kh, kw, s, p, ow, oy0, r, ri, c);
                    });
                    col.as_ptr()
                };
                // SAFETY: `ob` is co×n, the tile starts at column oy0·ow and spans `tile`
                // columns; `w` is co×k; `rhs` is k×tile (row stride `tile`, or n when direct).
                unsafe {
                    gemm(
                        co,
                        tile,
                        k,
                        ob.as_mut_ptr().add(oy0 * ow),
                        n as isize,
                        true,
                        w.as_ptr(),
                        (k as isize, 1),
                        rhs,
                        (if direct { n } else { tile } as isize, 1),
                        1.0,
                        nt,
                    );
                }
                oy0 += r;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((b, co, oh, ow))))
    }
}

// ------------------------------------------------------------------------------------------
// Winograd F(2×2, 3×3) and F(4×4, 3×3)
// ------------------------------------------------------------------------------------------
//
// A 3×3, stride-1, padding-1 convolution computed on 2×2 output tiles (Lavin & Gray 2016):
// Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A for each 4×4 input patch d and kernel g. The products become
// 16 GEMMs (one per position ξ of the 4×4 transform) of [c_out × c_in]·[c_in × tiles]:
// 2.25× fewer multiply-adds than the direct or im2col convolution, and no 9× column copy of
// the input (the transformed input is 4× it). Exact in real arithmetic; in f32 it differs
// from im2col by rounding only (the transforms add and halve, no large constants). Used for
// images of at least `WINOGRAD_MIN_TILES` tiles, where the 16 GEMMs are wide enough.

/// Winograd is used when the output has at least this many 2×2 tiles (16×16 pixels). Measured
/// on the SD UNet's 1280-channel layers (AVX-512, 2 threads): 16×16 runs 1.5× faster than
/// im2col, 8×8 (16 tiles) 1.4× slower — the kernel transform no longer pays off.
const WINOGRAD_MIN_TILES: usize = 64;

/// F(4×4, 3×3) is used when the output has at least this many 4×4 tiles (64×64 pixels) and its
/// transformed kernels (36 per kernel, 2.25× F(2×2)'s, made on every call) fit one work buffer;
/// other images take F(2×2, 3×3). Measured (AVX-512, 2 threads): the SD UNet's 320-channel
/// 64×64 layers ran 25 % faster than with F(2×2) and its 640-channel 32×32 ones no faster; in
/// the VAE decoder the 128- and 256-channel layers 20–35 % faster, the 512-channel ones (whose
/// kernels took two blocks, transformed again for every pass of tile rows) 20–55 % slower.
/// See docs/performance.md.
const WINOGRAD4_MIN_TILES: usize = 256;

/// Each Winograd work buffer's bound, in floats (32 MiB).
const WINOGRAD_BUDGET: usize = 8 << 20;

/// `SPIRE_WINOGRAD`, read once: `0`/`off`/`false`/`no` turns Winograd off, `2` keeps it to
/// F(2×2, 3×3); anything else (or unset) allows both (the benchmarks and tests time all three).
fn winograd_setting() -> &'static str {
    static SETTING: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SETTING.get_or_init(|| {
        match std::env::var("SPIRE_WINOGRAD")
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "0" | "off" | "false" | "no" => "off",
            "2" => "f2",
            _ => "on",
        }
        .to_string()
    })
}

/// Whether 3×3 stride-1 padding-1 convolutions may use Winograd: yes unless `SPIRE_WINOGRAD` is
/// `0`, `off`, `false` or `no`.
pub fn winograd_default() -> bool {
    winograd_setting() != "off"
}

/// Whether large images may use Winograd F(4×4, 3×3) (else F(2×2, 3×3) only): yes unless
/// `SPIRE_WINOGRAD` is `2` or turns Winograd off.
pub fn winograd4_default() -> bool {
    winograd_setting() == "on"
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only to hand disjoint regions of one buffer to rayon tasks.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

/// `G·(a, b, d)` for F(2×2, 3×3).
#[inline(always)]
fn wino2_g(a: f32, b: f32, d: f32) -> [f32; 4] {
    [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d]
}

/// `U = G g Gᵀ` for every input channel of one output channel, `A` = 4 (F(2×2)) or 6
/// (F(4×4)) with `gf` = G applied to one column: `g` is `ci × 9`, `u` is `A² × ci`
/// (position-major, so each position's matrix is a strided GEMM operand). One channel at a
/// time: the A² stores per channel go to A² streams that each advance by one float, which the
/// write-combining buffers absorb (a 16-channel vectorised version with a transposed copy of
/// `g` took about twice as long in a timing).
#[inline(always)]
fn wino_weights_with<const A: usize>(
    g: &[f32],
    ci: usize,
    u: &mut [f32],
    gf: impl Fn(f32, f32, f32) -> [f32; A],
) {
    for (c, k) in g.chunks_exact(9).take(ci).enumerate() {
        // Columns of G g (A × 3), then each row of it times Gᵀ.
        let cols = [gf(k[0], k[3], k[6]), gf(k[1], k[4], k[7]), gf(k[2], k[5], k[8])];
        for i in 0..A {
            for (j, v) in gf(cols[0][i], cols[1][i], cols[2][i]).into_iter().enumerate() {
                u[(A * i + j) * ci + c] = v;
            }
        }
    }
}

/// `U = G g Gᵀ` for one output channel's kernels `g` (`ci × 9`), into `u` (`np × ci`).
fn wino_weights(tile: Wino, g: &[f32], ci: usize, u: &mut [f32]) {
    match tile {
        Wino::F2 => wino2_weights(g, ci, u),
        Wino::F4 => wino_weights_with(g, ci, u, wino4_g),
    }
}

/// [`wino_weights`] for F(2×2, 3×3), written out as before F(4×4) came (in one timing the generic
/// form was no faster: 7.9 / 2.6 / 0.5 ms vs 6.6 / 1.2 / 0.3 ms on 1280/640/320 channels).
fn wino2_weights(g: &[f32], ci: usize, u: &mut [f32]) {
    for c in 0..ci {
        let k = &g[c * 9..c * 9 + 9];
        // Rows of G g (4 × 3).
        let mut gg = [[0f32; 3]; 4];
        for j in 0..3 {
            gg[0][j] = k[j];
            gg[1][j] = 0.5 * (k[j] + k[3 + j] + k[6 + j]);
            gg[2][j] = 0.5 * (k[j] - k[3 + j] + k[6 + j]);
            gg[3][j] = k[6 + j];
        }
        for (i, r) in gg.iter().enumerate() {
            for (j, v) in wino2_g(r[0], r[1], r[2]).into_iter().enumerate() {
                u[(4 * i + j) * ci + c] = v;
            }
        }
    }
}

/// Rows `y0 − 1, y0, …` of the `h × w` plane `xc`, zero-padded by one pixel, into the rows of
/// `d` (each `pw ≥ w + 2` wide; padded column j is input x = j − 1): a Winograd tile row's input.
#[inline(always)]
fn padded_rows(xc: &[f32], h: usize, w: usize, y0: usize, d: &mut [f32], pw: usize) {
    for (i, row) in d.chunks_exact_mut(pw).enumerate() {
        let iy = (y0 + i) as isize - 1;
        if iy < 0 || iy >= h as isize {
            row.fill(0.0);
        } else {
            row[0] = 0.0;
            row[1..=w].copy_from_slice(&xc[iy as usize * w..(iy as usize + 1) * w]);
            row[w + 1..].fill(0.0);
        }
    }
}

// `V = Bᵀ d B` for the tiles of tile rows `ty0..ty0 + rows` of one input channel `xc`
// (`h × w`): `v` is `16 × tc` (tc = rows · tw), written position-major.
simd! {
fn wino_input(xc: &[f32], h: usize, w: usize, tw: usize, ty0: usize, rows: usize, v: &mut [f32], pad: &mut [f32]) {
    let tc = rows * tw;
    let pw = 2 * tw + 2;
    let (d, c) = pad.split_at_mut(4 * pw);
    for ty in ty0..ty0 + rows {
        // The four input rows of this tile row, zero-padded.
        padded_rows(xc, h, w, 2 * ty, &mut d[..4 * pw], pw);
        // Bᵀ d along the rows.
        {
            let (d0, rest) = d.split_at(pw);
            let (d1, rest) = rest.split_at(pw);
            let (d2, d3) = rest.split_at(pw);
            let (c0, rest) = c.split_at_mut(pw);
            let (c1, rest) = rest.split_at_mut(pw);
            let (c2, c3) = rest.split_at_mut(pw);
            for x in 0..pw {
                c0[x] = d0[x] - d2[x];
                c1[x] = d1[x] + d2[x];
                c2[x] = d2[x] - d1[x];
                c3[x] = d1[x] - d3[x];
            }
        }
        // (Bᵀ d) B along the columns, tile by tile.
        let t0 = (ty - ty0) * tw;
        for i in 0..4 {
            let ci = &c[i * pw..(i + 1) * pw];
            let (v0, rest) = v[(4 * i) * tc..].split_at_mut(tc);
            let (v1, rest) = rest.split_at_mut(tc);
            let (v2, rest) = rest.split_at_mut(tc);
            let v3 = &mut rest[..tc];
            for tx in 0..tw {
                let x0 = 2 * tx;
                let (a, b, e, f) = (ci[x0], ci[x0 + 1], ci[x0 + 2], ci[x0 + 3]);
                v0[t0 + tx] = a - e;
                v1[t0 + tx] = b + e;
                v2[t0 + tx] = e - b;
                v3[t0 + tx] = b - f;
            }
        }
    }
}
}

// `Y = Aᵀ M A` plus the bias for the tiles of tile rows `ty0..ty0 + rows` of one output
// channel: `m` is `16 × tc` position-major, `out` the channel's `h × w` plane.
simd! {
fn wino_output(m: &[f32], bias: f32, h: usize, w: usize, tw: usize, ty0: usize, rows: usize, out: &mut [f32]) {
    let tc = rows * tw;
    for ty in ty0..ty0 + rows {
        let t0 = (ty - ty0) * tw;
        let p = |xi: usize| &m[xi * tc + t0..xi * tc + t0 + tw];
        let oy = 2 * ty;
        let two_rows = oy + 1 < h;
        let (top, bottom) = out[oy * w..].split_at_mut(w);
        let (m0, m1, m2, m3) = (p(0), p(1), p(2), p(3));
        let (m4, m5, m6, m7) = (p(4), p(5), p(6), p(7));
        let (m8, m9, m10, m11) = (p(8), p(9), p(10), p(11));
        let (m12, m13, m14, m15) = (p(12), p(13), p(14), p(15));
        for tx in 0..tw {
            // Aᵀ M: row sums over rows 0..3, then across columns.
            let a0 = [m0[tx] + m4[tx] + m8[tx], m1[tx] + m5[tx] + m9[tx], m2[tx] + m6[tx] + m10[tx], m3[tx] + m7[tx] + m11[tx]];
            let a1 = [m4[tx] - m8[tx] - m12[tx], m5[tx] - m9[tx] - m13[tx], m6[tx] - m10[tx] - m14[tx], m7[tx] - m11[tx] - m15[tx]];
            let ox = 2 * tx;
            top[ox] = a0[0] + a0[1] + a0[2] + bias;
            if ox + 1 < w {
                top[ox + 1] = a0[1] - a0[2] - a0[3] + bias;
            }
            if two_rows {
                bottom[ox] = a1[0] + a1[1] + a1[2] + bias;
                if ox + 1 < w {
                    bottom[ox + 1] = a1[1] - a1[2] - a1[3] + bias;
                }
            }
        }
    }
}
}

// Winograd F(4×4, 3×3): the same scheme on 4×4 output tiles from 6×6 input patches, 36
// positions ξ — 4× fewer multiply-adds than im2col (F(2×2, 3×3): 2.25×) and a transformed input
// 2.25× the input's size instead of 4×. Its transforms use the points 0, ±1, ±2, ∞, so the
// constants reach 8 (output) and 5 (input) and the rounding error grows with them; measured
// against im2col in `winograd_equals_im2col_and_candle` and through diffusers' models in the
// parity tests.
//   Bᵀ = [4 0 −5 0 1 0; 0 −4 −4 1 1 0; 0 4 −4 −1 1 0; 0 −2 −1 2 1 0; 0 2 −1 −2 1 0; 0 4 0 −5 0 1]
//   G  = [¼ 0 0; −⅙ −⅙ −⅙; −⅙ ⅙ −⅙; 1/24 1/12 ⅙; 1/24 −1/12 ⅙; 0 0 1]
//   Aᵀ = [1 1 1 1 1 0; 0 1 −1 2 −2 0; 0 1 1 4 4 0; 0 1 −1 8 −8 1]

/// `G·(a, b, d)` for F(4×4, 3×3).
#[inline(always)]
fn wino4_g(a: f32, b: f32, d: f32) -> [f32; 6] {
    const S6: f32 = 1.0 / 6.0;
    const S12: f32 = 1.0 / 12.0;
    const S24: f32 = 1.0 / 24.0;
    [
        0.25 * a,
        -S6 * (a + b + d),
        -S6 * (a - b + d),
        S24 * a + S12 * b + S6 * d,
        S24 * a - S12 * b + S6 * d,
        d,
    ]
}

/// `Bᵀ·(d0 … d5)` for F(4×4, 3×3).
#[inline(always)]
fn wino4_b(d: [f32; 6]) -> [f32; 6] {
    [
        4.0 * d[0] - 5.0 * d[2] + d[4],
        -4.0 * (d[1] + d[2]) + d[3] + d[4],
        4.0 * (d[1] - d[2]) - d[3] + d[4],
        2.0 * (d[3] - d[1]) - d[2] + d[4],
        2.0 * (d[1] - d[3]) - d[2] + d[4],
        4.0 * d[1] - 5.0 * d[3] + d[5],
    ]
}

/// `Aᵀ·(m0 … m5)` for F(4×4, 3×3).
#[inline(always)]
fn wino4_a(m: [f32; 6]) -> [f32; 4] {
    let (s12, d12, s34, d34) = (m[1] + m[2], m[1] - m[2], m[3] + m[4], m[3] - m[4]);
    [
        m[0] + s12 + s34,
        d12 + 2.0 * d34,
        s12 + 4.0 * s34,
        d12 + 8.0 * d34 + m[5],
    ]
}

// `V = Bᵀ d B` (F(4×4, 3×3)) for the tiles of tile rows `ty0..ty0 + rows` of one input channel
// `xc` (`h × w`): `v` is `36 × tc` (tc = rows · tw), written position-major; `pad` holds
// 12 rows of `4·tw + 2`.
simd! {
fn wino4_input(xc: &[f32], h: usize, w: usize, tw: usize, ty0: usize, rows: usize, v: &mut [f32], pad: &mut [f32]) {
    let tc = rows * tw;
    let pw = 4 * tw + 2;
    let (d, c) = pad.split_at_mut(6 * pw);
    for ty in ty0..ty0 + rows {
        // The six input rows of this tile row, zero-padded.
        padded_rows(xc, h, w, 4 * ty, d, pw);
        // Bᵀ d along the rows.
        {
            let dr: [&[f32]; 6] = std::array::from_fn(|i| &d[i * pw..(i + 1) * pw]);
            let mut it = c.chunks_exact_mut(pw);
            let mut cr: [&mut [f32]; 6] = std::array::from_fn(|_| it.next().unwrap_or_default());
            for x in 0..pw {
                let t = wino4_b([dr[0][x], dr[1][x], dr[2][x], dr[3][x], dr[4][x], dr[5][x]]);
                for (row, tv) in cr.iter_mut().zip(t) {
                    row[x] = tv;
                }
            }
        }
        // (Bᵀ d) B along the columns, tile by tile.
        let t0 = (ty - ty0) * tw;
        for (i, ci) in c.chunks_exact(pw).enumerate() {
            let mut it = v[6 * i * tc..(6 * i + 6) * tc].chunks_exact_mut(tc);
            let mut vr: [&mut [f32]; 6] = std::array::from_fn(|_| it.next().unwrap_or_default());
            for tx in 0..tw {
                let e = &ci[4 * tx..4 * tx + 6];
                let t = wino4_b([e[0], e[1], e[2], e[3], e[4], e[5]]);
                for (row, tv) in vr.iter_mut().zip(t) {
                    row[t0 + tx] = tv;
                }
            }
        }
    }
}
}

// `Y = Aᵀ M A` (F(4×4, 3×3)) plus the bias for the tiles of tile rows `ty0..ty0 + rows` of one
// output channel: `m` is `36 × tc` position-major, `out` the channel's `h × w` plane.
simd! {
fn wino4_output(m: &[f32], bias: f32, h: usize, w: usize, tw: usize, ty0: usize, rows: usize, out: &mut [f32]) {
    let tc = rows * tw;
    for ty in ty0..ty0 + rows {
        let t0 = (ty - ty0) * tw;
        let p: [&[f32]; 36] = std::array::from_fn(|xi| &m[xi * tc + t0..xi * tc + t0 + tw]);
        let oy = 4 * ty;
        let nr = (h - oy).min(4);
        #[allow(clippy::needless_range_loop)] // `tx` indexes all 36 position slices
        for tx in 0..tw {
            // Aᵀ M (4 × 6), then each row times A.
            let mut am = [[0f32; 6]; 4];
            for j in 0..6 {
                let col = wino4_a([p[j][tx], p[6 + j][tx], p[12 + j][tx], p[18 + j][tx], p[24 + j][tx], p[30 + j][tx]]);
                for (r, cv) in col.into_iter().enumerate() {
                    am[r][j] = cv;
                }
            }
            let ox = 4 * tx;
            let nc = (w - ox).min(4);
            for (r, row) in am.iter().take(nr).enumerate() {
                let y = wino4_a(*row).map(|y| y + bias);
                out[(oy + r) * w + ox..(oy + r) * w + ox + nc].copy_from_slice(&y[..nc]);
            }
        }
    }
}
}

/// A Winograd variant: output tiles of 2×2 or 4×4 pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wino {
    /// F(2×2, 3×3): 16 positions.
    F2,
    /// F(4×4, 3×3): 36 positions.
    F4,
}

impl Wino {
    /// Output pixels per tile side.
    fn m(self) -> usize {
        match self {
            Wino::F2 => 2,
            Wino::F4 => 4,
        }
    }

    /// Transform positions ξ: (m + 2)².
    fn positions(self) -> usize {
        (self.m() + 2) * (self.m() + 2)
    }
}

/// A batch's 3×3 stride-1 padding-1 convolution by Winograd F(2×2, 3×3) or F(4×4, 3×3): `x` is
/// `b × ci × h × w`, `wt` the kernels (`co × ci × 9`), `out` the `b × co × h × w` output
/// (overwritten).
///
/// Work buffers are bounded whatever the layer: the transformed kernels are made for blocks of
/// output channels of at most 32 MiB (once per call, for every image of the batch, when one block
/// holds them all), and each image is done in passes of tile rows whose transformed input and output fit another 32 MiB.
#[allow(clippy::too_many_arguments)]
fn conv_winograd(
    tile: Wino,
    x: &[f32],
    wt: &[f32],
    bias: &[f32],
    b: usize,
    ci: usize,
    co: usize,
    h: usize,
    w: usize,
    out: &mut [f32],
) {
    conv_winograd_within(WINOGRAD_BUDGET, tile, x, wt, bias, b, ci, co, h, w, out)
}

/// [`conv_winograd`] with each work buffer bounded by `budget` floats.
#[allow(clippy::too_many_arguments)]
fn conv_winograd_within(
    budget: usize,
    tile: Wino,
    x: &[f32],
    wt: &[f32],
    bias: &[f32],
    b: usize,
    ci: usize,
    co: usize,
    h: usize,
    w: usize,
    out: &mut [f32],
) {
    let (mt, np) = (tile.m(), tile.positions());
    let (th, tw) = (h.div_ceil(mt), w.div_ceil(mt));
    let cob = (budget / (np * ci).max(1)).clamp(1, co);
    let rows = (budget / (np * (ci + cob) * tw).max(1)).clamp(1, th);
    let mut u = Scratch::take(Slot::WinoWeights, np * ci * cob);
    let mut v = Scratch::take(Slot::WinoInput, np * ci * rows * tw);
    let mut m = Scratch::take(Slot::WinoOutput, np * cob * rows * tw);
    let transform = |u: &mut [f32], o0: usize, n: usize| {
        u[..np * ci * n]
            .par_chunks_mut(np * ci)
            .enumerate()
            .for_each(|(o, uo)| wino_weights(tile, &wt[(o0 + o) * ci * 9..(o0 + o + 1) * ci * 9], ci, uo));
    };
    if cob == co {
        transform(&mut u, 0, co);
    }
    let pw = mt * tw + 2;
    for (xb, ob) in x.chunks(ci * h * w).zip(out.chunks_mut(co * h * w)).take(b) {
        let mut ty0 = 0;
        while ty0 < th {
            let r = rows.min(th - ty0);
            let tc = r * tw;
            v[..np * ci * tc]
                .par_chunks_mut(np * tc)
                .enumerate()
                .for_each_init(
                    || vec![0f32; 2 * (mt + 2) * pw],
                    |pad, (c, vc)| {
                        let xc = &xb[c * h * w..(c + 1) * h * w];
                        match tile {
                            Wino::F2 => wino_input(xc, h, w, tw, ty0, r, vc, pad),
                            Wino::F4 => wino4_input(xc, h, w, tw, ty0, r, vc, pad),
                        }
                    },
                );
            for o0 in (0..co).step_by(cob) {
                let n = cob.min(co - o0);
                if cob < co {
                    transform(&mut u, o0, n);
                }
                let (mp, vp) = (SendPtr(m.as_mut_ptr()), SendPtr(v.as_ptr() as *mut f32));
                let up = SendPtr(u.as_ptr() as *mut f32);
                crate::profile::gemm_timed(|| {
                    (0..np).into_par_iter().for_each(|xi| {
                        let (mp, vp, up) = (mp, vp, up);
                        // SAFETY: position ξ's matrices: U rows n (stride np·ci) × ci; V rows ci
                        // (stride np·tc) × tc; M rows n (stride np·tc) × tc, disjoint across ξ.
                        unsafe {
                            gemm_at_level(
                                n,
                                tc,
                                ci,
                                mp.0.add(xi * tc),
                                (np * tc) as isize,
                                false,
                                up.0.add(xi * ci),
                                ((np * ci) as isize, 1),
                                vp.0.add(xi * tc),
                                ((np * tc) as isize, 1),
                                1.0,
                                gemm::Parallelism::None,
                            )
                        }
                    })
                });
                let m = &m[..np * n * tc];
                ob[o0 * h * w..(o0 + n) * h * w]
                    .par_chunks_mut(h * w)
                    .enumerate()
                    .for_each(|(o, oc)| {
                        let mo = &m[o * np * tc..(o + 1) * np * tc];
                        match tile {
                            Wino::F2 => wino_output(mo, bias[o0 + o], h, w, tw, ty0, r, oc),
                            Wino::F4 => wino4_output(mo, bias[o0 + o], h, w, tw, ty0, r, oc),
                        }
                    });
            }
            ty0 += r;
        }
    }
}

/// Convolution with bias, NCHW.
pub(crate) fn conv2d(x: &Tensor, w: &Tensor, bias: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    x.contiguous()?.apply_op3_no_bwd(
        &w.contiguous()?,
        &bias.contiguous()?,
        &Conv2dOp {
            stride,
            padding,
            winograd: winograd_default(),
            winograd4: winograd4_default(),
        },
    )
}

// ------------------------------------------------------------------------------------------
// Linear
// ------------------------------------------------------------------------------------------

struct LinearOp;

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "spire-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, bias) = (data(xs, xl)?, data(bs, bl)?);
        let w = weights(ws, wl)?;
        let (nout, k) = wl.shape().dims2()?;
        let dims = xl.dims();
        let kin = *dims.last().unwrap_or(&0);
        if kin != k || (!bias.is_empty() && bias.len() != nout) {
            candle_core::bail!("linear: input {:?}, weight {:?}", dims, wl.dims());
        }
        let m = x.len() / k.max(1);
        let _span = crate::profile::Span::start(
            "linear",
            || format!("{m}×{k}→{nout}"),
            2.0 * (m * k * nout) as f64,
        );
        let mut out = vec![0f32; m * nout];
        if !bias.is_empty() {
            // On all threads: this first touch of a fresh output also takes its page faults
            // (single-threaded it was a third of the 4096×320→2560 projection's time).
            out.par_chunks_mut(nout * 16).for_each(|rows| {
                for row in rows.chunks_mut(nout) {
                    row.copy_from_slice(bias);
                }
            });
        }
        // SAFETY: x is m×k, w is nout×k read as its transpose k×nout, out is m×nout.
        unsafe {
            gemm(
                m,
                nout,
                k,
                out.as_mut_ptr(),
                nout as isize,
                !bias.is_empty(),
                x.as_ptr(),
                (k as isize, 1),
                w.as_ptr(),
                (1, k as isize),
                1.0,
                threads(),
            );
        }
        let mut shape = dims.to_vec();
        if let Some(last) = shape.last_mut() {
            *last = nout;
        }
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }
}

/// `x · wᵀ + bias` over the last dimension (`bias` may be an empty tensor).
pub(crate) fn linear(x: &Tensor, w: &Tensor, bias: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3_no_bwd(&w.contiguous()?, &bias.contiguous()?, &LinearOp)
}

// ------------------------------------------------------------------------------------------
// GroupNorm
// ------------------------------------------------------------------------------------------

struct GroupNormOp {
    groups: usize,
    eps: f64,
    silu: bool,
    /// Precomputed `(mean, 1/std)` per (batch item, group), e.g. over a whole image that is
    /// processed in tiles; `None` computes them from the input.
    stats: Option<Vec<(f64, f64)>>,
}

simd! {
fn sum_and_sq(x: &[f32], mean: f32) -> (f64, f64) {
    // 16 lanes of f32 partial sums per 1024-element block, folded into f64.
    let (mut s, mut q) = (0f64, 0f64);
    for block in x.chunks(1024) {
        let mut ls = [0f32; 16];
        let mut lq = [0f32; 16];
        let mut it = block.chunks_exact(16);
        for c in &mut it {
            for i in 0..16 {
                let d = c[i] - mean;
                ls[i] += d;
                lq[i] = d.mul_add(d, lq[i]);
            }
        }
        for &v in it.remainder() {
            let d = v - mean;
            ls[0] += d;
            lq[0] = d.mul_add(d, lq[0]);
        }
        s += ls.iter().map(|&v| v as f64).sum::<f64>();
        q += lq.iter().map(|&v| v as f64).sum::<f64>();
    }
    (s, q)
}
}

simd! {
fn affine(x: &[f32], out: &mut [f32], scale: f32, shift: f32, act: bool) {
    if act {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = silu(v.mul_add(scale, shift));
        }
    } else {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = v.mul_add(scale, shift);
        }
    }
}
}

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        "spire-group-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, bias) = (data(xs, xl)?, data(ws, wl)?, data(bs, bl)?);
        let dims = xl.dims();
        let c = dims[1];
        let hw: usize = dims[2..].iter().product();
        let _span = crate::profile::Span::start(
            if self.silu {
                "group_norm+silu"
            } else {
                "group_norm"
            },
            || format!("{c} ch {hw} px b{}", dims[0]),
            0.0,
        );
        let g = self.groups;
        if c % g != 0 || w.len() != c || bias.len() != c {
            candle_core::bail!("group norm: {c} channels, {g} groups");
        }
        if let Some(st) = &self.stats {
            if st.len() != g * dims[0] {
                candle_core::bail!("group norm: {} statistics for {} × {g} groups", st.len(), dims[0]);
            }
        }
        let cpg = c / g;
        let len = cpg * hw;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(len)
            .zip(x.par_chunks(len))
            .enumerate()
            .for_each(|(i, (o, xg))| {
                let gi = i % g;
                let (mean, rstd) = match &self.stats {
                    Some(st) => st[i],
                    None => {
                        // Shifted sums (by the first value) keep the variance accurate for
                        // large means.
                        let shift0 = xg.first().copied().unwrap_or(0.0);
                        let (s, q) = sum_and_sq(xg, shift0);
                        let n = xg.len() as f64;
                        let m = s / n;
                        let var = (q / n - m * m).max(0.0);
                        (m + shift0 as f64, 1.0 / (var + self.eps).sqrt())
                    }
                };
                for ch in 0..cpg {
                    let cc = gi * cpg + ch;
                    let scale = (rstd * w[cc] as f64) as f32;
                    let sh = (bias[cc] as f64 - mean * rstd * w[cc] as f64) as f32;
                    let r = ch * hw..(ch + 1) * hw;
                    affine(&xg[r.clone()], &mut o[r], scale, sh, self.silu);
                }
            });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

/// GroupNorm over `[batch, channels, …]`, optionally followed by SiLU.
pub(crate) fn group_norm(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    x.contiguous()?.apply_op3_no_bwd(
        w,
        b,
        &GroupNormOp {
            groups,
            eps,
            silu,
            stats: None,
        },
    )
}

/// GroupNorm with given `(mean, 1/std)` per (batch item, group), optionally followed by SiLU.
pub(crate) fn group_norm_with_stats(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    groups: usize,
    stats: Vec<(f64, f64)>,
    silu: bool,
) -> Result<Tensor> {
    x.contiguous()?.apply_op3_no_bwd(
        w,
        b,
        &GroupNormOp {
            groups,
            eps: 0.0,
            silu,
            stats: Some(stats),
        },
    )
}

// ------------------------------------------------------------------------------------------
// GEGLU
// ------------------------------------------------------------------------------------------

struct GegluOp;

simd! {
fn geglu_row(h: &[f32], out: &mut [f32]) {
    let n = out.len();
    let (a, g) = h.split_at(n);
    for i in 0..n {
        let x = g[i];
        out[i] = a[i] * 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
    }
}
}

impl CustomOp1 for GegluOp {
    fn name(&self) -> &'static str {
        "spire-geglu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let h = data(s, l)?;
        let d2 = *l.dims().last().unwrap_or(&0);
        let d = d2 / 2;
        let _span = crate::profile::Span::start("geglu", || format!("{}×{d2}", h.len() / d2.max(1)), 0.0);
        let mut out = vec![0f32; h.len() / 2];
        out.par_chunks_mut(d.max(1) * 64)
            .zip(h.par_chunks(d2.max(1) * 64))
            .for_each(|(o, hh)| {
                for (orow, hrow) in o.chunks_mut(d).zip(hh.chunks(d2)) {
                    geglu_row(hrow, orow);
                }
            });
        let mut shape = l.dims().to_vec();
        if let Some(last) = shape.last_mut() {
            *last = d;
        }
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }
}

/// `h[..., :d] · gelu(h[..., d:])` (exact, erf-based GELU).
pub(crate) fn geglu(h: &Tensor) -> Result<Tensor> {
    h.contiguous()?.apply_op1_no_bwd(&GegluOp)
}

// ------------------------------------------------------------------------------------------
// Attention
// ------------------------------------------------------------------------------------------

struct AttentionOp {
    scale: f32,
}

simd! {
fn softmax_rows(s: &mut [f32], n: usize) {
    // 16 independent lanes for the max and the sum, so the loops vectorise (a single running
    // float accumulator would serialise them).
    const L: usize = 16;
    for row in s.chunks_mut(n) {
        let mut mx = [f32::NEG_INFINITY; L];
        let mut it = row.chunks_exact(L);
        for c in &mut it {
            for i in 0..L {
                mx[i] = if c[i] > mx[i] { c[i] } else { mx[i] };
            }
        }
        let mut m = f32::NEG_INFINITY;
        for &v in it.remainder().iter().chain(mx.iter()) {
            if v > m {
                m = v;
            }
        }
        let mut acc = [0f32; L];
        let mut it = row.chunks_exact_mut(L);
        for c in &mut it {
            for i in 0..L {
                let e = exp(c[i] - m);
                c[i] = e;
                acc[i] += e;
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for v in it.into_remainder() {
            *v = exp(*v - m);
            sum += *v;
        }
        let inv = 1.0 / sum;
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}
}

impl CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "spire-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (q, k, v) = (data(qs, ql)?, data(ks, kl)?, data(vs, vl)?);
        let (bh, nq, d) = ql.shape().dims3()?;
        let (bh2, nk, d2) = kl.shape().dims3()?;
        if bh != bh2 || d != d2 || vl.dims() != kl.dims() {
            candle_core::bail!(
                "attention: q {:?}, k {:?}, v {:?}",
                ql.dims(),
                kl.dims(),
                vl.dims()
            );
        }
        let _span = crate::profile::Span::start(
            "attention",
            || format!("b·h {bh}, {nq}×{nk}, d {d}"),
            4.0 * (bh * nq * nk * d) as f64,
        );
        let mut out = vec![0f32; bh * nq * d];
        // Query blocks: scores of one block are at most 64 rows × nk.
        let qb = 64.min(nq.max(1));
        let scale = self.scale;
        out.par_chunks_mut(nq * d).enumerate().for_each(|(hi, oh)| {
            let kh = &k[hi * nk * d..(hi + 1) * nk * d];
            let vh = &v[hi * nk * d..(hi + 1) * nk * d];
            let qh = &q[hi * nq * d..(hi + 1) * nq * d];
            oh.par_chunks_mut(qb * d).enumerate().for_each_init(
                || vec![0f32; qb * nk],
                |scores, (bi, o)| {
                    let rows = o.len() / d;
                    let qblk = &qh[bi * qb * d..];
                    let s = &mut scores[..rows * nk];
                    // SAFETY: q block rows×d, k read transposed d×nk, scores rows×nk; then
                    // scores rows×nk times v nk×d into o rows×d.
                    unsafe {
                        gemm(
                            rows,
                            nk,
                            d,
                            s.as_mut_ptr(),
                            nk as isize,
                            false,
                            qblk.as_ptr(),
                            (d as isize, 1),
                            kh.as_ptr(),
                            (1, d as isize),
                            scale,
                            1,
                        );
                    }
                    softmax_rows(s, nk);
                    unsafe {
                        gemm(
                            rows,
                            d,
                            nk,
                            o.as_mut_ptr(),
                            d as isize,
                            false,
                            s.as_ptr(),
                            (nk as isize, 1),
                            vh.as_ptr(),
                            (d as isize, 1),
                            1.0,
                            1,
                        );
                    }
                },
            );
        });
        Ok((CpuStorage::F32(out), Shape::from((bh, nq, d))))
    }
}

/// `softmax(scale · q·kᵀ)·v` over `[batch·heads, tokens, dim]` tensors.
pub(crate) fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    q.contiguous()?.apply_op3_no_bwd(
        &k.contiguous()?,
        &v.contiguous()?,
        &AttentionOp { scale: scale as f32 },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_erf_are_accurate() {
        // The whole range where exp(x) is a normal float: every power of two 2^n, n = -126..127,
        // that the exponent-bit construction can produce.
        for i in -8730..=8837 {
            let x = i as f32 * 0.01;
            let (a, b) = (exp(x), x.exp());
            assert!(((a - b) / b).abs() < 4e-7, "exp({x}) = {a} vs {b}");
        }
        assert!(exp(f32::NAN).is_nan() && exp(88.4) == f32::INFINITY);
        assert!(exp(-1e4) < 1.3e-38 && exp(-1e4) >= 0.0);
        for i in -300..300 {
            let x = i as f32 * 0.01;
            let want = libm_erf(x as f64);
            // A&S bound 1.5e-7 plus f32 rounding.
            assert!(
                (erf(x) as f64 - want).abs() < 5e-7,
                "erf({x}) = {} vs {want}",
                erf(x)
            );
        }
        for x in [3.5f32, 4.0, 6.0, 20.0] {
            assert!((erf(x) - 1.0).abs() < 1e-6 && (erf(-x) + 1.0).abs() < 1e-6);
        }
    }

    /// The capped GEMMs (AVX2 and scalar instantiations) against a naive f64 product, with the
    /// operand layouts our kernels pass: row-major and transposed operands, accumulation into
    /// the destination, a scale, odd sizes that leave partial micro-tiles, and threads.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn capped_gemms_match_a_naive_product() {
        use crate::simd::Level;
        let mut levels = vec![Level::Baseline];
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            levels.push(Level::Avx2);
        }
        let mut seed = 1u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        for &(m, n, k) in &[(1, 1, 1), (7, 13, 5), (33, 65, 17), (64, 300, 129), (130, 9, 70)] {
            let a: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let b: Vec<f32> = (0..k * n).map(|_| next()).collect();
            let init: Vec<f32> = (0..m * n).map(|_| next()).collect();
            for &a_t in &[false, true] {
                for &b_t in &[false, true] {
                    for &read in &[false, true] {
                        // a is m×k stored row-major, or its transpose stored row-major (k×m).
                        let a_store: Vec<f32> = if a_t {
                            (0..k * m).map(|i| a[(i % m) * k + i / m]).collect()
                        } else {
                            a.clone()
                        };
                        let a_strides = if a_t { (1, m as isize) } else { (k as isize, 1) };
                        let b_store: Vec<f32> = if b_t {
                            (0..n * k).map(|i| b[(i % k) * n + i / k]).collect()
                        } else {
                            b.clone()
                        };
                        let b_strides = if b_t { (1, k as isize) } else { (n as isize, 1) };
                        for &level in &levels {
                            for threads in [1, 2] {
                                let par = if threads > 1 {
                                    gemm::Parallelism::Rayon(threads)
                                } else {
                                    gemm::Parallelism::None
                                };
                                let mut dst = init.clone();
                                // SAFETY: the buffers hold exactly the strided ranges.
                                unsafe {
                                    gemm_capped(
                                        level,
                                        m,
                                        n,
                                        k,
                                        dst.as_mut_ptr(),
                                        n as isize,
                                        read,
                                        a_store.as_ptr(),
                                        a_strides,
                                        b_store.as_ptr(),
                                        b_strides,
                                        0.75,
                                        par,
                                    )
                                };
                                for i in 0..m {
                                    for j in 0..n {
                                        let dot: f64 =
                                            (0..k).map(|t| a[i * k + t] as f64 * b[t * n + j] as f64).sum();
                                        let want =
                                            if read { init[i * n + j] as f64 } else { 0.0 } + 0.75 * dot;
                                        let got = dst[i * n + j] as f64;
                                        assert!(
                                            (got - want).abs() < 1e-5 * (1.0 + k as f64).sqrt(),
                                            "{level:?} {m}×{n}×{k} a_t={a_t} b_t={b_t} read={read}: [{i},{j}] {got} vs {want}"
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    use candle_core::{Device, D};

    fn randn(seed: u64, shape: &[usize]) -> Tensor {
        crate::rng::randn(seed, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    #[test]
    fn conv2d_equals_candle() {
        for (i, &(b, ci, co, h, w, k, s, p)) in [
            (2, 3, 8, 9, 7, 3, 1, 1),
            (1, 8, 4, 5, 5, 3, 2, 1),
            (2, 6, 6, 6, 5, 3, 2, 0),
            (1, 4, 8, 7, 9, 1, 1, 0),
            (2, 5, 3, 10, 10, 3, 1, 0),
            (1, 16, 16, 33, 31, 3, 1, 1),
        ]
        .iter()
        .enumerate()
        {
            let x = randn(i as u64, &[b, ci, h, w]);
            let wt = randn(100 + i as u64, &[co, ci, k, k]);
            let bias = randn(200 + i as u64, &[co]);
            let want = x
                .conv2d(&wt, p, s, 1, 1)
                .unwrap()
                .broadcast_add(&bias.reshape((1, co, 1, 1)).unwrap())
                .unwrap();
            let got = conv2d(&x, &wt, &bias, s, p).unwrap();
            // As in `winograd_equals_im2col_and_candle`: F(4×4)'s bound for large 3×3 layers.
            let tol = (2e-6 * (9.0 * ci as f32).sqrt() * 8.0 * 4.0).max(1e-4);
            assert!(max_diff(&got, &want) < tol, "case {i}: {}", max_diff(&got, &want));
        }
    }

    /// Winograd F(2×2, 3×3) against the im2col path and candle's convolution: odd sizes (partial
    /// tiles on the right and bottom), batches, and an image large enough to be done in several
    /// passes of tile rows (the 32 MiB bound) with a partial last pass.
    #[test]
    fn winograd_equals_im2col_and_candle() {
        for (i, &(b, ci, co, h, w)) in [
            (2usize, 3usize, 5usize, 64usize, 64usize),
            (1, 7, 4, 65, 63),
            (2, 16, 9, 67, 64),
            (1, 32, 32, 201, 199),
        ]
        .iter()
        .enumerate()
        {
            let op = |winograd, winograd4| Conv2dOp {
                stride: 1,
                padding: 1,
                winograd,
                winograd4,
            };
            assert_eq!(
                op(true, false).winograd_tile((3, 3, 1, 1), (ci, co), h, w),
                Some(Wino::F2)
            );
            assert_eq!(
                op(true, true).winograd_tile((3, 3, 1, 1), (ci, co), h, w),
                Some(Wino::F4)
            );
            let x = randn(300 + i as u64, &[b, ci, h, w]);
            let wt = randn(400 + i as u64, &[co, ci, 3, 3]);
            let bias = randn(500 + i as u64, &[co]);
            let run = |winograd, winograd4| x.apply_op3_no_bwd(&wt, &bias, &op(winograd, winograd4)).unwrap();
            let im2col = run(false, false);
            let want = x
                .conv2d(&wt, 1, 1, 1, 1)
                .unwrap()
                .broadcast_add(&bias.reshape((1, co, 1, 1)).unwrap())
                .unwrap();
            // Sums of 9·ci products of unit normals: rounding grows like √(9·ci); F(4×4)'s
            // transforms carry constants up to 8 (and ¼, ⅙, 1/24 on the kernels), so its
            // bound is 4× F(2×2)'s.
            for (tile, winograd4, scale) in [("F(2×2)", false, 1.0), ("F(4×4)", true, 4.0)] {
                let wino = run(true, winograd4);
                let tol = 2e-6 * (9.0 * ci as f32).sqrt() * 8.0 * scale;
                let (d_im2col, d_candle) = (max_diff(&wino, &im2col), max_diff(&wino, &want));
                eprintln!("case {i} {tile}: vs im2col {d_im2col}, vs candle {d_candle} (tol {tol})");
                assert!(
                    d_im2col < tol && d_candle < tol,
                    "case {i} {tile}: vs im2col {d_im2col}, vs candle {d_candle} (tol {tol})"
                );
            }
        }
        // Which variant a geometry and size takes.
        let op = Conv2dOp {
            stride: 1,
            padding: 1,
            winograd: true,
            winograd4: true,
        };
        let k3 = (3, 3, 1, 1);
        assert_eq!(op.winograd_tile(k3, (320, 320), 64, 64), Some(Wino::F4));
        assert_eq!(op.winograd_tile(k3, (320, 320), 61, 64), Some(Wino::F4));
        assert_eq!(op.winograd_tile(k3, (320, 320), 60, 64), Some(Wino::F2));
        assert_eq!(op.winograd_tile(k3, (512, 512), 128, 128), Some(Wino::F2));
        assert_eq!(op.winograd_tile(k3, (320, 320), 32, 32), Some(Wino::F2));
        assert_eq!(op.winograd_tile(k3, (1280, 1280), 16, 16), Some(Wino::F2));
        assert_eq!(op.winograd_tile(k3, (1280, 1280), 14, 16), None);
        assert_eq!(op.winograd_tile((3, 3, 2, 1), (4, 4), 64, 64), None);
        assert_eq!(op.winograd_tile((3, 3, 1, 0), (4, 4), 64, 64), None);
        // A batch of two with small work-buffer budgets: blocks of output channels (the last one
        // partial) and single-tile-row passes give the same result as one block and one pass.
        let (ci, co, h, w) = (6, 11, 13, 18);
        let x: Vec<f32> = randn(20, &[2, ci, h, w])
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let wt: Vec<f32> = randn(21, &[co, ci, 3, 3])
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let bias: Vec<f32> = randn(22, &[co]).to_vec1().unwrap();
        let mut whole = vec![0f32; 2 * co * h * w];
        conv_winograd_within(1 << 20, Wino::F2, &x, &wt, &bias, 2, ci, co, h, w, &mut whole);
        for tile in [Wino::F2, Wino::F4] {
            let np = tile.positions();
            let mut one = vec![0f32; 2 * co * h * w];
            conv_winograd_within(1 << 20, tile, &x, &wt, &bias, 2, ci, co, h, w, &mut one);
            for budget in [np * ci * 4, np * ci * 3 + 5, 1] {
                let mut parts = vec![0f32; 2 * co * h * w];
                conv_winograd_within(budget, tile, &x, &wt, &bias, 2, ci, co, h, w, &mut parts);
                assert_eq!(parts, one, "{tile:?} budget {budget}");
            }
            let d = one
                .iter()
                .zip(&whole)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(d < 1e-4, "{tile:?} vs F2: {d}");
        }
        let want: Vec<f32> = Tensor::from_vec(x, (2, ci, h, w), &Device::Cpu)
            .unwrap()
            .conv2d(
                &Tensor::from_vec(wt, (co, ci, 3, 3), &Device::Cpu).unwrap(),
                1,
                1,
                1,
                1,
            )
            .unwrap()
            .broadcast_add(&Tensor::from_vec(bias, (1, co, 1, 1), &Device::Cpu).unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let d = whole
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-4, "{d}");
        // A 3×3 convolution with another padding or stride never takes Winograd (same results).
        let x = randn(7, &[1, 4, 40, 40]);
        let wt = randn(8, &[6, 4, 3, 3]);
        let bias = randn(9, &[6]);
        for (s, p) in [(1, 0), (2, 1)] {
            let a = x
                .apply_op3_no_bwd(
                    &wt,
                    &bias,
                    &Conv2dOp {
                        stride: s,
                        padding: p,
                        winograd: true,
                        winograd4: true,
                    },
                )
                .unwrap();
            let c = x
                .apply_op3_no_bwd(
                    &wt,
                    &bias,
                    &Conv2dOp {
                        stride: s,
                        padding: p,
                        winograd: false,
                        winograd4: false,
                    },
                )
                .unwrap();
            assert_eq!(max_diff(&a, &c), 0.0);
        }
    }

    /// Weights stored in f16 or bf16 are widened exactly inside the convolution and linear
    /// kernels: the result equals the f32 kernels on the rounded weights.
    #[test]
    fn half_weights_are_widened_exactly() {
        for dt in [DType::F16, DType::BF16] {
            let x = randn(11, &[2, 5, 34, 33]);
            let wt = randn(12, &[7, 5, 3, 3]);
            let bias = randn(13, &[7]);
            let rounded = wt.to_dtype(dt).unwrap().to_dtype(DType::F32).unwrap();
            for (winograd, winograd4) in [(true, true), (true, false), (false, false)] {
                let op = || Conv2dOp {
                    stride: 1,
                    padding: 1,
                    winograd,
                    winograd4,
                };
                let half = x
                    .apply_op3_no_bwd(&wt.to_dtype(dt).unwrap(), &bias, &op())
                    .unwrap();
                let full = x.apply_op3_no_bwd(&rounded, &bias, &op()).unwrap();
                assert_eq!(
                    max_diff(&half, &full),
                    0.0,
                    "{dt:?} conv, winograd {winograd} {winograd4}"
                );
            }
            let xl = randn(14, &[3, 37, 50]);
            let wl = randn(15, &[21, 50]);
            let bl = randn(16, &[21]);
            let rounded = wl.to_dtype(dt).unwrap().to_dtype(DType::F32).unwrap();
            let half = linear(&xl, &wl.to_dtype(dt).unwrap(), &bl).unwrap();
            assert_eq!(
                max_diff(&half, &linear(&xl, &rounded, &bl).unwrap()),
                0.0,
                "{dt:?} linear"
            );
        }
        // The widening itself, odd lengths (the F16C loop's tail) included.
        let v: Vec<half::f16> = (0..37)
            .map(|i| half::f16::from_f32(i as f32 * 0.37 - 5.0))
            .collect();
        let mut out = vec![0f32; 37];
        widen_f16(&v, &mut out);
        assert!(v.iter().zip(&out).all(|(a, b)| a.to_f32() == *b));
    }

    #[test]
    fn linear_equals_candle() {
        let x = randn(1, &[2, 7, 12]);
        let w = randn(2, &[5, 12]);
        let b = randn(3, &[5]);
        let want = x
            .broadcast_matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap();
        assert!(max_diff(&linear(&x, &w, &b).unwrap(), &want) < 1e-5);
        let empty = Tensor::zeros(0, DType::F32, &Device::Cpu).unwrap();
        let want = x.broadcast_matmul(&w.t().unwrap()).unwrap();
        assert!(max_diff(&linear(&x, &w, &empty).unwrap(), &want) < 1e-5);
        // A strided (transposed) input.
        let xt = randn(4, &[2, 12, 7]).transpose(1, 2).unwrap();
        let want = xt
            .contiguous()
            .unwrap()
            .broadcast_matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap();
        assert!(max_diff(&linear(&xt, &w, &b).unwrap(), &want) < 1e-5);
    }

    #[test]
    fn group_norm_equals_candle() {
        let x = (randn(5, &[2, 12, 5, 3]) * 3.0)
            .unwrap()
            .affine(1.0, 10.0)
            .unwrap();
        let w = randn(6, &[12]);
        let b = randn(7, &[12]);
        let gn = candle_nn::GroupNorm::new(w.clone(), b.clone(), 12, 4, 1e-6).unwrap();
        let want = candle_core::Module::forward(&gn, &x).unwrap();
        assert!(max_diff(&group_norm(&x, &w, &b, 4, 1e-6, false).unwrap(), &want) < 1e-4);
        assert!(
            max_diff(
                &group_norm(&x, &w, &b, 4, 1e-6, true).unwrap(),
                &want.silu().unwrap()
            ) < 1e-4
        );
    }

    #[test]
    fn geglu_equals_candle() {
        let h = (randn(8, &[3, 5, 16]) * 2.0).unwrap();
        let a = h.narrow(D::Minus1, 0, 8).unwrap();
        let g = h.narrow(D::Minus1, 8, 8).unwrap();
        let want = (a * g.gelu_erf().unwrap()).unwrap();
        assert!(max_diff(&geglu(&h).unwrap(), &want) < 1e-5);
    }

    #[test]
    fn attention_equals_composed_softmax() {
        for (i, &(bh, nq, nk, d)) in [(3, 70, 77, 8), (2, 130, 130, 16), (1, 5, 3, 4)]
            .iter()
            .enumerate()
        {
            let q = randn(10 + i as u64, &[bh, nq, d]);
            let k = randn(20 + i as u64, &[bh, nk, d]);
            let v = randn(30 + i as u64, &[bh, nk, d]);
            let scale = 1.0 / (d as f64).sqrt();
            let s = (q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap();
            let want = candle_nn::ops::softmax(&s, D::Minus1)
                .unwrap()
                .matmul(&v)
                .unwrap();
            assert!(
                max_diff(&attention(&q, &k, &v, scale).unwrap(), &want) < 1e-5,
                "case {i}"
            );
        }
    }

    // erf in f64 by its Taylor series (accurate in f64 for |x| <= 3).
    fn libm_erf(x: f64) -> f64 {
        let mut sum = 0.0f64;
        let mut term = x;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs().max(1e-300) || n < 5.0 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x * x / n;
            if n > 200.0 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }
}
