//! Measurement consistency: the restoration prompt's numbers put to work after decoding.
//!
//! A prompt such as "Deblur with sigma 2.0; Upsample with scale 2.0; Denoise with sigma 0.05"
//! names the degradation exactly as [`degrade::apply_prompt`](crate::degrade::apply_prompt)
//! applies it: `y = U(D(B(x)) + n)` with `B` the Gaussian blur, `D` the antialiased bicubic
//! shrink, `n` Gaussian noise and `U` the bicubic enlargement back to the output size (a JPEG
//! clause quantises before `U`). The adaptor reads these numbers as text; here they are used
//! as what they are, a forward model of the input. Given the model's output `m` and the
//! (enlarged) input `y`, the result is the maximum a-posteriori image under that forward
//! model with a Gaussian prior centred on the model's output,
//!
//! ```text
//!     x = argmin ‖A x − ŷ‖² / σ² + ‖x − m‖² / τ²,     A = D·B,
//! ```
//!
//! solved per channel by conjugate gradients with the exact adjoint of `A` (every part is a
//! separable sparse matrix: PIL's bicubic weights, the blur with reflect-101 borders folded
//! in). With a shrink, `ŷ` is the small image `y` was enlarged from (least squares through
//! `U`; exact when the restorer enlarged it), so the noise is white at the prompt's σ; without
//! one, `ŷ = y`. `σ` is the prompt's noise, or — when the prompt names none — Donoho's estimate
//! from `ŷ`, and at least [`FLOOR`] (the input's own rounding). `τ` —
//! [`RestoreOptions::consistency`](crate::RestoreOptions::consistency) — is how far the model's
//! output is trusted to be from the truth: a large `τ` makes the result agree with the input
//! wherever the degradation kept information, leaving the model's output only where it did not
//! (DDNM's range/null-space split); a small `τ` keeps the model's output. A noise clause alone
//! names no operator (the input is the only measurement, and the model has seen it): nothing
//! is done.
//!
//! A JPEG clause on its own (no blur, shrink or noise before it) is used as the codec's
//! constraint: in every full 8×8 block, each luma DCT coefficient is pulled towards the
//! input's by the same MAP rule, with the quantisation error's variance `Q²/12` for `σ²`,
//! and clamped to the quantisation cell the input's coefficient came from. With other clauses
//! the JPEG error is counted as extra noise instead (its mean variance over the 64
//! frequencies). The blind prompt leaves the output as is.

use rayon::prelude::*;

use crate::degrade::kernels::gaussian_1d;
use crate::degrade::ops::{axis_taps, jpeg_chroma_table, jpeg_luma_table, reflect101, Interp};
use crate::error::{Error, Result};
use crate::imageops;
use crate::prompt::RestorationPrompt;

/// The smallest input noise assumed, on [0, 1] intensities: 8-bit rounding and clipping.
pub const FLOOR: f64 = 2.0 / 255.0;

/// Conjugate-gradient iterations at most (it stops earlier, when the residual's norm is 1e-6
/// of the right-hand side's: about 45 iterations for a noise-free 2-pixel blur).
const MAX_ITERS: usize = 100;

/// A 1-D linear map as sparse rows: `out[i] = Σ_k w_k · in[start_i + k]`.
#[derive(Debug, Clone)]
pub(crate) struct Axis {
    n_in: usize,
    rows: Vec<(usize, Vec<f64>)>,
}

impl Axis {
    fn identity(n: usize) -> Self {
        Self {
            n_in: n,
            rows: (0..n).map(|i| (i, vec![1.0])).collect(),
        }
    }

    /// The Gaussian blur of [`ops::gaussian_blur`](crate::degrade::ops::gaussian_blur) along
    /// one axis, with its reflect-101 border folded into the weights.
    fn blur(n: usize, sigma: f64) -> Self {
        let k = gaussian_1d(sigma);
        let r = (k.len() / 2) as isize;
        let rows = (0..n)
            .map(|i| {
                let mut dense = vec![0f64; n];
                for (t, &w) in k.iter().enumerate() {
                    dense[reflect101(i as isize + t as isize - r, n)] += w;
                }
                sparse(dense)
            })
            .collect();
        Self { n_in: n, rows }
    }

    /// PIL's bicubic resize from `n_in` to `n_out` samples.
    fn resize(n_in: usize, n_out: usize) -> Self {
        Self {
            n_in,
            rows: imageops::coeffs(n_in, n_out),
        }
    }

    fn n_out(&self) -> usize {
        self.rows.len()
    }

    /// `self ∘ inner`.
    fn after(&self, inner: &Axis) -> Axis {
        let rows = self
            .rows
            .iter()
            .map(|(s, w)| {
                let mut dense = vec![0f64; inner.n_in];
                for (k, &wk) in w.iter().enumerate() {
                    let (s2, w2) = &inner.rows[s + k];
                    for (j, &v) in w2.iter().enumerate() {
                        dense[s2 + j] += wk * v;
                    }
                }
                sparse(dense)
            })
            .collect();
        Axis {
            n_in: inner.n_in,
            rows,
        }
    }

    fn transpose(&self) -> Axis {
        let mut cols: Vec<Vec<(usize, f64)>> = vec![Vec::new(); self.n_in];
        for (i, (s, w)) in self.rows.iter().enumerate() {
            for (k, &v) in w.iter().enumerate() {
                cols[s + k].push((i, v));
            }
        }
        let rows = cols
            .into_iter()
            .map(|c| {
                let mut dense = vec![0f64; self.n_out()];
                for (i, v) in c {
                    dense[i] += v;
                }
                sparse(dense)
            })
            .collect();
        Axis {
            n_in: self.n_out(),
            rows,
        }
    }
}

/// Trims a dense row to its nonzero span.
fn sparse(dense: Vec<f64>) -> (usize, Vec<f64>) {
    let first = dense.iter().position(|&v| v != 0.0).unwrap_or(0);
    let last = dense.iter().rposition(|&v| v != 0.0).map_or(first, |l| l + 1);
    (first, dense[first..last].to_vec())
}

/// A separable operator on `h × w` planes: `ax` along rows (x), `ay` along columns (y).
#[derive(Debug, Clone)]
pub(crate) struct Separable {
    ax: Axis,
    ay: Axis,
}

impl Separable {
    fn apply(&self, src: &[f64]) -> Vec<f64> {
        let mut tmp = Vec::new();
        let mut out = vec![0f64; self.ay.n_out() * self.ax.n_out()];
        self.apply_into(src, &mut tmp, &mut out);
        out
    }

    /// `out = self · src`, with `tmp` as scratch (resized as needed).
    fn apply_into(&self, src: &[f64], tmp: &mut Vec<f64>, out: &mut [f64]) {
        let (w, h) = (self.ax.n_in, self.ay.n_in);
        let ow = self.ax.n_out();
        tmp.resize(h * ow, 0.0);
        // Rows are independent in both passes; small images stay on one thread.
        let min_rows = (1 << 14) / ow.max(1) + 1;
        tmp.par_chunks_mut(ow)
            .zip(src.par_chunks(w))
            .with_min_len(min_rows)
            .for_each(|(trow, row)| {
                for (t, (s, k)) in trow.iter_mut().zip(&self.ax.rows) {
                    *t = k.iter().zip(&row[*s..]).map(|(a, b)| a * b).sum();
                }
            });
        let tmp = &*tmp;
        out.par_chunks_mut(ow)
            .zip(self.ay.rows.par_iter())
            .with_min_len(min_rows)
            .for_each(|(orow, (s, k))| {
                orow.fill(0.0);
                for (j, &kk) in k.iter().enumerate() {
                    let r = &tmp[(s + j) * ow..(s + j + 1) * ow];
                    for (o, &v) in orow.iter_mut().zip(r) {
                        *o += kk * v;
                    }
                }
            });
    }

    fn transpose(&self) -> Separable {
        Separable {
            ax: self.ax.transpose(),
            ay: self.ay.transpose(),
        }
    }
}

/// The linear part of a prompt's degradation on a `w × h` image, and the standard deviation
/// of the noise it leaves in the input.
#[derive(Debug, Clone)]
pub struct ForwardModel {
    /// `D·B` (or `B`): the output to what the input was before enlarging and noise.
    op: Separable,
    /// `U`, the enlargement back to the output size, when the prompt shrinks.
    enlarge: Option<Separable>,
    sigma: f64,
    /// Whether the prompt states the noise (else it is estimated from the input).
    stated_noise: bool,
    /// Luma quantisation table (natural order) when the JPEG constraint applies.
    /// Luma and chroma quantisation tables of a JPEG clause on its own.
    jpeg: Option<([u16; 64], [u16; 64])>,
}

impl ForwardModel {
    /// The forward model of `prompt` for a `w × h` output; `None` for the blind prompt.
    ///
    /// # Errors
    /// [`Error::InvalidImage`] for an empty size; [`Error::Internal`] if the JPEG codec fails.
    pub fn new(prompt: &RestorationPrompt, w: usize, h: usize) -> Result<Option<Self>> {
        if w == 0 || h == 0 {
            return Err(Error::InvalidImage(format!("{w}×{h} image")));
        }
        if prompt.is_blind() {
            return Ok(None);
        }
        let (mut ax, mut ay) = (Axis::identity(w), Axis::identity(h));
        if let Some(s) = prompt.deblur_sigma_f64() {
            ax = Axis::blur(w, s);
            ay = Axis::blur(h, s);
        }
        let mut noise_var = prompt.denoise_sigma_f64().map_or(0.0, |s| s * s);
        let mut jpeg = None;
        if let Some(q) = prompt.dejpeg_quality() {
            let table = jpeg_luma_table(q)?;
            let alone = prompt.deblur_sigma().is_none()
                && prompt.upsample_scale().is_none()
                && prompt.denoise_sigma().is_none();
            if alone {
                jpeg = Some((table, jpeg_chroma_table(q)?));
            } else {
                // Counted as noise: the mean quantisation error variance over the 64 frequencies.
                noise_var +=
                    table.iter().map(|&q| (q as f64).powi(2) / 12.0).sum::<f64>() / 64.0 / 255f64.powi(2);
            }
        }
        let mut enlarge = None;
        if let Some(f) = prompt.upsample_scale_f64() {
            let (sw, sh) = (
                ((w as f64 / f).round() as usize).max(1),
                ((h as f64 / f).round() as usize).max(1),
            );
            ax = Axis::resize(w, sw).after(&ax);
            ay = Axis::resize(h, sh).after(&ay);
            enlarge = Some(Separable {
                ax: Axis::resize(sw, w),
                ay: Axis::resize(sh, h),
            });
        }
        if prompt.deblur_sigma().is_none() && enlarge.is_none() && jpeg.is_none() {
            // Noise alone names no operator: the input is the only measurement and the model
            // has already seen it; a Gaussian prior would only blend the noise back in.
            return Ok(None);
        }
        Ok(Some(Self {
            op: Separable { ax, ay },
            enlarge,
            sigma: noise_var.sqrt().max(FLOOR),
            stated_noise: prompt.denoise_sigma().is_some(),
            jpeg,
        }))
    }

    /// Applies the linear part to one `h × w` plane.
    /// (`U·D·B`: the deterministic part of the degradation, at the output size).
    pub fn forward(&self, plane: &[f32]) -> Vec<f32> {
        let v: Vec<f64> = plane.iter().map(|&v| v as f64).collect();
        let v = self.op.apply(&v);
        let v = match &self.enlarge {
            Some(u) => u.apply(&v),
            None => v,
        };
        v.into_iter().map(|v| v as f32).collect()
    }
}

/// Pulls the model's output `output` (planar RGB, `w × h`, [0, 1]) towards agreement with the
/// input `input` (same layout) under the degradation `prompt` names, trusting the output to
/// `tau` (see the module docs). `tau = 0` or the blind prompt leaves it unchanged.
///
/// # Errors
/// [`Error::InvalidArgument`] for a negative or non-finite `tau`; [`Error::InvalidImage`] if
/// the buffers do not hold `3 × w × h` samples.
pub fn apply(
    output: &mut [f32],
    input: &[f32],
    w: usize,
    h: usize,
    prompt: &RestorationPrompt,
    tau: f64,
) -> Result<()> {
    if !tau.is_finite() || tau < 0.0 {
        return Err(Error::invalid_arg(
            "consistency",
            format!("must be a finite number ≥ 0, got {tau}"),
        ));
    }
    let n = w * h;
    if output.len() != 3 * n || input.len() != 3 * n {
        return Err(Error::InvalidImage(format!(
            "consistency needs two {w}×{h} RGB images, got {} and {} samples",
            output.len(),
            input.len()
        )));
    }
    if tau == 0.0 {
        return Ok(());
    }
    let Some(model) = ForwardModel::new(prompt, w, h)? else {
        return Ok(());
    };
    if let Some((luma_table, chroma_table)) = &model.jpeg {
        jpeg_luma(output, input, w, h, luma_table, tau);
        jpeg_chroma(output, input, w, h, chroma_table, tau);
        return Ok(());
    }
    let at = model.op.transpose();
    let enlarge = model.enlarge.as_ref().map(|u| (u, u.transpose()));
    // One channel at a time (the solver runs its rows and chunks in parallel), so about nine
    // f64 planes are held at once.
    for c in 0..3 {
        let m: Vec<f64> = output[c * n..(c + 1) * n].iter().map(|&v| v as f64).collect();
        let y: Vec<f64> = input[c * n..(c + 1) * n].iter().map(|&v| v as f64).collect();
        // With a shrink, the measurement is the small image the input was enlarged from
        // (least squares through `U`, exact when the input was enlarged by the restorer), so
        // the noise stays white at its stated σ.
        let (y, mw, mh) = match &enlarge {
            Some((u, ut)) => {
                let zero = vec![0f64; u.ax.n_in * u.ay.n_in];
                (solve(u, ut, &zero, &y, 1e-6), u.ax.n_in, u.ay.n_in)
            }
            None => (y, w, h),
        };
        // A prompt without a noise clause does not promise a clean input: the noise is then
        // estimated from the measurement itself.
        let sigma = if model.stated_noise {
            model.sigma
        } else {
            model.sigma.max(estimate_noise(&y, mw, mh))
        };
        // With stated noise, the prior's spread is also bounded by what the residual shows
        // (empirical Bayes): E‖A m − ŷ‖²/N = σ² + (the model's error seen through A), so when
        // the model's output already agrees with the input within the noise, it is kept
        // instead of being pulled towards the noisy input. (Without a noise clause the noise
        // is small and the bound would only shrink τ where `A` hides part of the error.)
        let tau = if model.stated_noise {
            let am = model.op.apply(&m);
            let r2 = am.iter().zip(&y).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / am.len() as f64;
            tau.min((r2 - sigma * sigma).max(0.0).sqrt())
        } else {
            tau
        };
        if tau < 1e-6 {
            continue;
        }
        let x = solve(&model.op, &at, &m, &y, (sigma / tau).powi(2));
        for (o, v) in output[c * n..(c + 1) * n].iter_mut().zip(x) {
            *o = (v as f32).clamp(0.0, 1.0);
        }
    }
    Ok(())
}

/// Donoho's noise estimate, one implementation with the prompt estimator's.
pub use crate::estimate::mad_noise_sigma as estimate_noise;

/// Elements per partial sum: dot products add fixed chunks in a fixed order, so results do
/// not depend on the number of threads.
const CHUNK: usize = 1 << 12;

fn dot(p: &[f64], q: &[f64]) -> f64 {
    let parts: Vec<f64> = p
        .par_chunks(CHUNK)
        .zip(q.par_chunks(CHUNK))
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>())
        .collect();
    parts.iter().sum()
}

/// Conjugate gradients on `(AᵀA + λI) x = Aᵀy + λm`, from `x = m`. Every buffer is allocated
/// once (for a 2048² plane each is 32 MB).
fn solve(a: &Separable, at: &Separable, m: &[f64], y: &[f64], lambda: f64) -> Vec<f64> {
    let n = m.len();
    let (mut t1, mut t2) = (Vec::new(), Vec::new());
    let mut mid = vec![0f64; a.ay.n_out() * a.ax.n_out()];
    // out = (AᵀA + λI) x
    let mut normal = |x: &[f64], out: &mut [f64]| {
        a.apply_into(x, &mut t1, &mut mid);
        at.apply_into(&mid, &mut t2, out);
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(o, xs)| o.iter_mut().zip(xs).for_each(|(v, xi)| *v += lambda * xi));
    };
    let mut b = vec![0f64; n];
    at.apply_into(y, &mut Vec::new(), &mut b);
    b.par_iter_mut().zip(m).for_each(|(v, mi)| *v += lambda * mi);
    let mut x = m.to_vec();
    let mut r = vec![0f64; n];
    normal(&x, &mut r);
    r.par_iter_mut().zip(&b).for_each(|(ri, bi)| *ri = bi - *ri);
    let mut p = r.clone();
    let mut ap = vec![0f64; n];
    let mut rr = dot(&r, &r);
    let stop = 1e-12 * dot(&b, &b);
    for _ in 0..MAX_ITERS {
        if rr <= stop {
            break;
        }
        normal(&p, &mut ap);
        let alpha = rr / dot(&p, &ap);
        x.par_chunks_mut(CHUNK)
            .zip(r.par_chunks_mut(CHUNK))
            .zip(p.par_chunks(CHUNK).zip(ap.par_chunks(CHUNK)))
            .for_each(|((xs, rs), (ps, aps))| {
                for i in 0..xs.len() {
                    xs[i] += alpha * ps[i];
                    rs[i] -= alpha * aps[i];
                }
            });
        let rr_new = dot(&r, &r);
        let beta = rr_new / rr;
        p.par_iter_mut()
            .zip(&r)
            .for_each(|(pi, ri)| *pi = ri + beta * *pi);
        rr = rr_new;
    }
    x
}

/// The 8×8 orthonormal DCT-II matrix.
fn dct_matrix() -> [[f64; 8]; 8] {
    let mut m = [[0f64; 8]; 8];
    for (k, row) in m.iter_mut().enumerate() {
        let s = if k == 0 {
            (1.0f64 / 8.0).sqrt()
        } else {
            (2.0f64 / 8.0).sqrt()
        };
        for (i, v) in row.iter_mut().enumerate() {
            *v = s * (std::f64::consts::PI * (2 * i + 1) as f64 * k as f64 / 16.0).cos();
        }
    }
    m
}

/// `M · B · Mᵀ` (forward) or `Mᵀ · B · M` (inverse) for an 8×8 block.
#[allow(clippy::needless_range_loop)]
fn dct8(b: &[[f64; 8]; 8], m: &[[f64; 8]; 8], inverse: bool) -> [[f64; 8]; 8] {
    let get = |i: usize, j: usize| if inverse { m[j][i] } else { m[i][j] };
    let mut t = [[0f64; 8]; 8];
    for i in 0..8 {
        for j in 0..8 {
            t[i][j] = (0..8).map(|k| get(i, k) * b[k][j]).sum();
        }
    }
    let mut o = [[0f64; 8]; 8];
    for i in 0..8 {
        for j in 0..8 {
            o[i][j] = (0..8).map(|k| t[i][k] * get(j, k)).sum();
        }
    }
    o
}

/// Luma (BT.601, as the JPEG codec converts) of pixel `p`, on the codec's 0–255 scale.
fn luma(img: &[f32], n: usize, p: usize) -> f64 {
    255.0 * (0.299 * img[p] as f64 + 0.587 * img[n + p] as f64 + 0.114 * img[2 * n + p] as f64)
}

/// Pulls every full 8×8 block of `plane` (`w × h`, the codec's 0–255 scale centred on 0)
/// towards the same block of `reference` in the DCT domain (module docs): per coefficient the
/// MAP estimate under the quantisation error's variance `Q²/12` (`table`), clamped to the cell
/// the reference's coefficient came from, widened by one level for the decoder's rounding and
/// colour conversion. Samples outside full blocks are left as they are.
fn constrain_blocks(plane: &mut [f64], reference: &[f64], w: usize, h: usize, table: &[u16; 64], t2: f64) {
    let m = dct_matrix();
    for by in 0..h / 8 {
        for bx in 0..w / 8 {
            let at = |i: usize, j: usize| (by * 8 + i) * w + bx * 8 + j;
            let mut bo = [[0f64; 8]; 8];
            let mut bi = [[0f64; 8]; 8];
            for i in 0..8 {
                for j in 0..8 {
                    bo[i][j] = plane[at(i, j)];
                    bi[i][j] = reference[at(i, j)];
                }
            }
            let (co, ci) = (dct8(&bo, &m, false), dct8(&bi, &m, false));
            let mut z = [[0f64; 8]; 8];
            for i in 0..8 {
                for j in 0..8 {
                    let q = table[i * 8 + j] as f64;
                    let s2 = q * q / 12.0;
                    let v = (ci[i][j] * t2 + co[i][j] * s2) / (t2 + s2);
                    let k = (ci[i][j] / q).round();
                    z[i][j] = v.clamp((k - 0.5) * q - 1.0, (k + 0.5) * q + 1.0);
                }
            }
            let back = dct8(&z, &m, true);
            for i in 0..8 {
                for j in 0..8 {
                    plane[at(i, j)] = back[i][j];
                }
            }
        }
    }
}

/// The JPEG constraint on the luma (module docs): the change is added to all three channels,
/// which leaves the chroma as it was.
fn jpeg_luma(output: &mut [f32], input: &[f32], w: usize, h: usize, table: &[u16; 64], tau: f64) {
    let n = w * h;
    let before: Vec<f64> = (0..n).map(|p| luma(output, n, p) - 128.0).collect();
    let reference: Vec<f64> = (0..n).map(|p| luma(input, n, p) - 128.0).collect();
    let mut after = before.clone();
    constrain_blocks(&mut after, &reference, w, h, table, (tau * 255.0).powi(2));
    for y in 0..h / 8 * 8 {
        for x in 0..w / 8 * 8 {
            let p = y * w + x;
            let d = ((after[p] - before[p]) / 255.0) as f32;
            for c in 0..3 {
                output[c * n + p] = (output[c * n + p] + d).clamp(0.0, 1.0);
            }
        }
    }
}

/// The JPEG constraint on the chroma, in the codec's 4:2:0 sampling. The codec keeps Cb and Cr
/// only as 2×2 averages, so the model's chroma is taken to that grid, constrained like the luma
/// (with the chroma table), and enlarged back bilinearly (half-pixel centres, as the
/// degradations' `Interp::Bilinear`): the codec kept no chroma detail finer than the grid, and
/// the smooth enlargement is a better guess there than the model's own (measured:
/// docs/builtin-model.md). The luma is kept; an odd last row or column keeps the model's chroma.
fn jpeg_chroma(output: &mut [f32], input: &[f32], w: usize, h: usize, table: &[u16; 64], tau: f64) {
    let (n, hw, hh) = (w * h, w / 2, h / 2);
    if hw == 0 || hh == 0 {
        return;
    }
    // BT.601 full-range chroma on the 0–255 scale, as the codec converts.
    const CB: [f64; 3] = [-0.168736, -0.331264, 0.5];
    const CR: [f64; 3] = [0.5, -0.418688, -0.081312];
    let half = |img: &[f32], k: &[f64; 3]| -> Vec<f64> {
        let at = |p: usize| 255.0 * (0..3).map(|c| k[c] * img[c * n + p] as f64).sum::<f64>();
        let mut v = vec![0f64; hw * hh];
        for y in 0..hh {
            for x in 0..hw {
                let p = 2 * y * w + 2 * x;
                v[y * hw + x] = (at(p) + at(p + 1) + at(p + w) + at(p + w + 1)) / 4.0;
            }
        }
        v
    };
    let t2 = (tau * 255.0).powi(2);
    let planes: Vec<Vec<f64>> = [CB, CR]
        .iter()
        .map(|k| {
            let mut plane = half(output, k);
            constrain_blocks(&mut plane, &half(input, k), hw, hh, table, t2);
            plane
        })
        .collect();
    let (tx, ty) = (
        axis_taps(Interp::Bilinear, hw, 2 * hw),
        axis_taps(Interp::Bilinear, hh, 2 * hh),
    );
    for (y, ry) in ty.iter().enumerate() {
        for (x, rx) in tx.iter().enumerate() {
            let at = |v: &[f64]| {
                ry.iter()
                    .map(|&(sy, wy)| wy * rx.iter().map(|&(sx, wx)| wx * v[sy * hw + sx]).sum::<f64>())
                    .sum::<f64>()
            };
            let p = y * w + x;
            let yy = luma(output, n, p);
            let (b, r) = (at(&planes[0]), at(&planes[1]));
            let rgb = [yy + 1.402 * r, yy - 0.344136 * b - 0.714136 * r, yy + 1.772 * b];
            for (c, v) in rgb.iter().enumerate() {
                output[c * n + p] = ((v / 255.0) as f32).clamp(0.0, 1.0);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pseudo(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f64 / (1u64 << 31) as f64) - 0.5
            })
            .collect()
    }

    #[test]
    fn transpose_is_the_adjoint() {
        // <A x, z> = <x, Aᵀ z> for blur + shrink + enlarge on an odd-sized image.
        let p: RestorationPrompt = "Deblur with sigma 1.7; Upsample with scale 2.5".parse().unwrap();
        let model = ForwardModel::new(&p, 37, 23).unwrap().unwrap();
        let x = pseudo(37 * 23, 1);
        let z = pseudo(37 * 23, 2);
        let full = |v: &[f64]| model.enlarge.as_ref().unwrap().apply(&model.op.apply(v));
        let full_t = |v: &[f64]| {
            model
                .op
                .transpose()
                .apply(&model.enlarge.as_ref().unwrap().transpose().apply(v))
        };
        let ax = full(&x);
        let atz = full_t(&z);
        let l: f64 = ax.iter().zip(&z).map(|(a, b)| a * b).sum();
        let r: f64 = x.iter().zip(&atz).map(|(a, b)| a * b).sum();
        assert!((l - r).abs() < 1e-9 * l.abs().max(1.0), "{l} vs {r}");
    }

    #[test]
    fn dct_round_trips() {
        let m = dct_matrix();
        let v = pseudo(64, 3);
        let mut b = [[0f64; 8]; 8];
        for i in 0..64 {
            b[i / 8][i % 8] = v[i];
        }
        let back = dct8(&dct8(&b, &m, false), &m, true);
        for i in 0..8 {
            for j in 0..8 {
                assert!((back[i][j] - b[i][j]).abs() < 1e-12);
            }
        }
    }
}
