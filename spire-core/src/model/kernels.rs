//! Fused f32 CPU kernels for the inference hot path: 2-D convolution (im2col + one GEMM per
//! output tile, bias fused), GroupNorm (one pass for statistics, optional fused SiLU), linear
//! layers (bias fused into the GEMM), GEGLU, and attention (query blocks: GEMM, softmax in
//! place, GEMM, with bounded scratch memory).
//!
//! They run only when every input is an f32 CPU tensor that is not part of a gradient graph,
//! and the layer's switch is on ([`crate::LoadOptions::fused_kernels`], `SPIRE_FUSED_KERNELS`);
//! otherwise the callers in [`super::nn`] use candle's differentiable operations, which compute
//! the same function. Element loops are compiled three times (AVX-512, AVX2+FMA, baseline) and
//! picked at run time, so one binary is fast on every x86-64 machine.

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

fn threads() -> usize {
    candle_core::utils::get_num_threads().max(1)
}

/// `exp(x)` to about 2 ulp (Cephes polynomial), branch-free so loops vectorise.
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
    e * f32::from_bits(((n as i32 + 127) << 23) as u32)
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
    // SAFETY: the caller guarantees the pointers cover the strided ranges.
    unsafe {
        gemm::gemm(
            m, n, k, dst, 1, dst_rs, read_dst, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs, 1.0, scale, false,
            false, false, par,
        )
    }
}

// ------------------------------------------------------------------------------------------
// Convolution
// ------------------------------------------------------------------------------------------

struct Conv2dOp {
    stride: usize,
    padding: usize,
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
        let (x, w, bias) = (data(xs, xl)?, data(ws, wl)?, data(bs, bl)?);
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
        let mut out = vec![0f32; b * co * n];
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
            for (c, row) in ob.chunks_mut(n).enumerate() {
                row.fill(bias[c]);
            }
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

/// Convolution with bias, NCHW.
pub(crate) fn conv2d(x: &Tensor, w: &Tensor, bias: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    x.contiguous()?.apply_op3_no_bwd(
        &w.contiguous()?,
        &bias.contiguous()?,
        &Conv2dOp { stride, padding },
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
        let (x, w, bias) = (data(xs, xl)?, data(ws, wl)?, data(bs, bl)?);
        let (nout, k) = wl.shape().dims2()?;
        let dims = xl.dims();
        let kin = *dims.last().unwrap_or(&0);
        if kin != k || (!bias.is_empty() && bias.len() != nout) {
            candle_core::bail!("linear: input {:?}, weight {:?}", dims, wl.dims());
        }
        let m = x.len() / k.max(1);
        let mut out = vec![0f32; m * nout];
        if !bias.is_empty() {
            for row in out.chunks_mut(nout) {
                row.copy_from_slice(bias);
            }
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
        for i in -2000..2000 {
            let x = i as f32 * 0.04;
            let (a, b) = (exp(x), x.exp());
            assert!(((a - b) / b).abs() < 4e-7, "exp({x}) = {a} vs {b}");
        }
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
            assert!(
                max_diff(&got, &want) < 1e-4,
                "case {i}: {}",
                max_diff(&got, &want)
            );
        }
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
