//! Degradation operations on planar RGB images in [0, 1] ([`Rgb`]). Each is a small function
//! of the image and its parameters; random ones take a seed and draw from counter-based
//! Philox streams, so results do not depend on the number of threads.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::imageops;
use crate::rng;

/// A planar RGB image, samples in [0, 1] (`3 × height × width`).
#[derive(Debug, Clone, PartialEq)]
pub struct Rgb {
    /// Width.
    pub width: usize,
    /// Height.
    pub height: usize,
    /// Red plane, green plane, blue plane.
    pub data: Vec<f32>,
}

impl Rgb {
    /// An image from planar data.
    ///
    /// # Errors
    /// [`Error::InvalidImage`] if the length is not `3 × width × height` or a size is 0.
    pub fn new(width: usize, height: usize, data: Vec<f32>) -> Result<Self> {
        if width == 0 || height == 0 || data.len() != 3 * width * height {
            return Err(Error::InvalidImage(format!(
                "{} samples for a {width}×{height} RGB image",
                data.len()
            )));
        }
        Ok(Self { width, height, data })
    }

    /// The image of a view, as planar RGB in [0, 1] (gray replicated, alpha dropped).
    ///
    /// # Errors
    /// As [`crate::ImageView::to_planar_rgb`].
    pub fn from_view(view: &crate::ImageView) -> Result<Self> {
        Self::new(view.width(), view.height(), view.to_planar_rgb()?)
    }

    /// The image as interleaved RGB8 (samples clipped to [0, 1] and rounded).
    pub fn to_rgb8(&self) -> crate::Image {
        let n = self.width * self.height;
        crate::Image {
            width: self.width,
            height: self.height,
            color: crate::ColorType::Rgb,
            data: crate::ImageData::U8(
                (0..n)
                    .flat_map(|i| [self.data[i], self.data[n + i], self.data[2 * n + i]])
                    .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
                    .collect(),
            ),
        }
    }

    fn plane(&self, c: usize) -> &[f32] {
        let n = self.width * self.height;
        &self.data[c * n..(c + 1) * n]
    }

    /// Clips every sample to [0, 1].
    pub fn clip(mut self) -> Self {
        for v in &mut self.data {
            *v = v.clamp(0.0, 1.0);
        }
        self
    }
}

/// Mirror index without repeating the edge (OpenCV `BORDER_REFLECT_101`, torch `reflect`).
pub(crate) fn reflect101(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let p = 2 * (n as isize - 1);
    let m = i.rem_euclid(p);
    (if m < n as isize { m } else { p - m }) as usize
}

/// Pads one `h × w` plane by `r` on every side with reflect-101.
fn pad_plane(src: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    let (pw, ph) = (w + 2 * r, h + 2 * r);
    let mut out = vec![0f32; pw * ph];
    let left: Vec<usize> = (0..r).map(|x| reflect101(x as isize - r as isize, w)).collect();
    let right: Vec<usize> = (0..r).map(|x| reflect101((w + x) as isize, w)).collect();
    for y in 0..ph {
        let sy = reflect101(y as isize - r as isize, h);
        let srow = &src[sy * w..(sy + 1) * w];
        let orow = &mut out[y * pw..(y + 1) * pw];
        orow[r..r + w].copy_from_slice(srow);
        for (o, &i) in orow[..r].iter_mut().zip(&left) {
            *o = srow[i];
        }
        for (o, &i) in orow[r + w..].iter_mut().zip(&right) {
            *o = srow[i];
        }
    }
    out
}

simd! {
fn correlate_row(out: &mut [f32], padded: &[f32], pw: usize, y: usize, taps: &[(usize, usize, f32)]) {
    // out[x] = Σ k · padded[y + ky][x + kx]
    let w = out.len();
    for &(ky, kx, kv) in taps {
        let src = &padded[(y + ky) * pw + kx..(y + ky) * pw + kx + w];
        for (o, &v) in out.iter_mut().zip(src) {
            *o = kv.mul_add(v, *o);
        }
    }
}
}

/// Correlates each channel with a `k × k` kernel (`k` odd), reflect-101 borders — what
/// OpenCV's `filter2D` and basicsr's `filter2D` do. Zero taps (kernels padded to 21 × 21) are
/// skipped; the image is padded once and each tap is one vectorised pass over a row.
pub fn filter2d(img: &Rgb, kernel: &[f64], k: usize) -> Rgb {
    let (w, h) = (img.width, img.height);
    let r = k / 2;
    let taps: Vec<(usize, usize, f32)> = (0..k * k)
        .filter(|&i| kernel[i] != 0.0)
        .map(|i| (i / k, i % k, kernel[i] as f32))
        .collect();
    let pw = w + 2 * r;
    let mut out = vec![0f32; img.data.len()];
    out.par_chunks_mut(w * h).enumerate().for_each(|(c, oplane)| {
        let padded = pad_plane(img.plane(c), w, h, r);
        oplane
            .par_chunks_mut(w)
            .enumerate()
            .for_each(|(y, orow)| correlate_row(orow, &padded, pw, y, &taps));
    });
    Rgb {
        width: w,
        height: h,
        data: out,
    }
}

/// Separable correlation with a 1-D kernel along x then y, reflect-101 borders.
pub fn filter_separable(img: &Rgb, k1: &[f64]) -> Rgb {
    let k = k1.len();
    // Row pass as a 1 × k kernel, column pass as k × 1, through the same row correlator.
    let (w, h) = (img.width, img.height);
    let r = k / 2;
    let row_taps: Vec<(usize, usize, f32)> = (0..k).map(|i| (r, i, k1[i] as f32)).collect();
    let col_taps: Vec<(usize, usize, f32)> = (0..k).map(|i| (i, r, k1[i] as f32)).collect();
    let pw = w + 2 * r;
    let mut out = vec![0f32; img.data.len()];
    out.par_chunks_mut(w * h).enumerate().for_each(|(c, oplane)| {
        let padded = pad_plane(img.plane(c), w, h, r);
        let mut tmp = vec![0f32; w * h];
        tmp.chunks_mut(w)
            .enumerate()
            .for_each(|(y, row)| correlate_row(row, &padded, pw, y, &row_taps));
        let padded = pad_plane(&tmp, w, h, r);
        oplane
            .chunks_mut(w)
            .enumerate()
            .for_each(|(y, row)| correlate_row(row, &padded, pw, y, &col_taps));
    });
    Rgb {
        width: w,
        height: h,
        data: out,
    }
}

/// Isotropic Gaussian blur with standard deviation `sigma` pixels, kernel ±⌈3σ⌉ (odd size),
/// reflect-101 borders.
pub fn gaussian_blur(img: &Rgb, sigma: f64) -> Rgb {
    filter_separable(img, &super::kernels::gaussian_1d(sigma))
}

/// Resizes with PIL's bicubic filter (antialiased when shrinking).
pub fn resize_bicubic(img: &Rgb, width: usize, height: usize) -> Rgb {
    Rgb {
        width,
        height,
        data: imageops::resize_bicubic(&img.data, 3, img.width, img.height, width, height),
    }
}

/// Interpolation modes of torch's `F.interpolate` used by the Real-ESRGAN pipeline
/// (`align_corners=False`, no antialiasing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interp {
    /// Box average over the covered source pixels (`adaptive_avg_pool2d`).
    Area,
    /// Bilinear.
    Bilinear,
    /// Bicubic with a = −0.75 and clamped borders.
    Bicubic,
}

fn cubic_weights(t: f64) -> [f64; 4] {
    const A: f64 = -0.75;
    let c1 = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let c2 = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [c2(t + 1.0), c1(t), c1(1.0 - t), c2(2.0 - t)]
}

/// One axis of an interpolation: for each output index, (source indices, weights).
pub(crate) fn axis_taps(mode: Interp, n_in: usize, n_out: usize) -> Vec<Vec<(usize, f64)>> {
    let scale = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|i| match mode {
            Interp::Area => {
                let start = (i * n_in) / n_out;
                let end = ((i + 1) * n_in).div_ceil(n_out);
                let n = (end - start) as f64;
                (start..end).map(|s| (s, 1.0 / n)).collect()
            }
            Interp::Bilinear => {
                let src = ((i as f64 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (src.floor() as usize).min(n_in - 1);
                let i1 = (i0 + 1).min(n_in - 1);
                let l = src - i0 as f64;
                vec![(i0, 1.0 - l), (i1, l)]
            }
            Interp::Bicubic => {
                let src = (i as f64 + 0.5) * scale - 0.5;
                let f = src.floor();
                let w = cubic_weights(src - f);
                (0..4)
                    .map(|k| {
                        let idx = (f as isize - 1 + k as isize).clamp(0, n_in as isize - 1) as usize;
                        (idx, w[k])
                    })
                    .collect()
            }
        })
        .collect()
}

/// Resizes like torch's `F.interpolate(size=…, mode=…, align_corners=False)`.
pub fn resize_torch(img: &Rgb, width: usize, height: usize, mode: Interp) -> Rgb {
    let (w, h) = (img.width, img.height);
    let tx = axis_taps(mode, w, width);
    let ty = axis_taps(mode, h, height);
    let mut tmp = vec![0f32; 3 * h * width];
    tmp.par_chunks_mut(width)
        .zip(img.data.par_chunks(w))
        .for_each(|(o, src)| {
            for (ov, taps) in o.iter_mut().zip(&tx) {
                *ov = taps.iter().map(|&(i, wt)| src[i] as f64 * wt).sum::<f64>() as f32;
            }
        });
    let mut out = vec![0f32; 3 * height * width];
    out.par_chunks_mut(width).enumerate().for_each(|(row, o)| {
        let c = row / height;
        let plane = &tmp[c * h * width..(c + 1) * h * width];
        for (x, ov) in o.iter_mut().enumerate() {
            *ov = ty[row % height]
                .iter()
                .map(|&(i, wt)| plane[i * width + x] as f64 * wt)
                .sum::<f64>() as f32;
        }
    });
    Rgb {
        width,
        height,
        data: out,
    }
}

/// Adds Gaussian noise of standard deviation `sigma` (on [0, 1] intensities), independent per
/// channel, or the same for all three channels when `gray`; clips to [0, 1].
pub fn add_gaussian_noise(img: &Rgb, sigma: f64, gray: bool, seed: u64) -> Rgb {
    let n = img.width * img.height;
    let noise = rng::normals(seed, if gray { n } else { 3 * n });
    let data = img
        .data
        .par_iter()
        .enumerate()
        .map(|(i, &v)| {
            let z = if gray { noise[i % n] } else { noise[i] };
            (v as f64 + sigma * z as f64).clamp(0.0, 1.0) as f32
        })
        .collect();
    Rgb {
        width: img.width,
        height: img.height,
        data,
    }
}

/// A Poisson sample with mean `lam` from element stream `(seed, index)`: inversion for
/// λ < 10, Hörmann's PTRS transformed rejection otherwise.
fn poisson(lam: f64, seed: u64, index: u64) -> f64 {
    if lam <= 0.0 {
        return 0.0;
    }
    let mut j = 0u64;
    let mut u = || {
        let v = rng::element_uniform(seed, index, j);
        j += 1;
        v
    };
    if lam < 10.0 {
        let mut k = 0.0;
        let mut p = (-lam).exp();
        let mut s = p;
        let x = u();
        while x > s && k < 1000.0 {
            k += 1.0;
            p *= lam / k;
            s += p;
        }
        return k;
    }
    // Hörmann (1993), "The transformed rejection method for generating Poisson random variables".
    let slam = lam.sqrt();
    let loglam = lam.ln();
    let b = 0.931 + 2.53 * slam;
    let a = -0.059 + 0.02483 * b;
    let inv_alpha = 1.1239 + 1.1328 / (b - 3.4);
    let vr = 0.9277 - 3.6224 / (b - 2.0);
    loop {
        let uu = u() - 0.5;
        let v = u();
        let us = 0.5 - uu.abs();
        let k = ((2.0 * a / us + b) * uu + lam + 0.43).floor();
        if us >= 0.07 && v <= vr {
            return k;
        }
        if k < 0.0 || (us < 0.013 && v > us) {
            continue;
        }
        let lhs = (v * inv_alpha / (a / (us * us) + b)).ln();
        let rhs = -lam + k * loglam - ln_gamma(k + 1.0);
        if lhs <= rhs {
            return k;
        }
    }
}

/// ln Γ(x) for x ≥ 1 (Stirling series with a shift, error below 1e-12).
fn ln_gamma(x: f64) -> f64 {
    let mut x = x;
    let mut acc = 0.0;
    while x < 8.0 {
        acc -= x.ln();
        x += 1.0;
    }
    let x2 = 1.0 / (x * x);
    acc + (x - 0.5) * x.ln() - x
        + 0.5 * (2.0 * std::f64::consts::PI).ln()
        + (1.0 / 12.0 - x2 * (1.0 / 360.0 - x2 * (1.0 / 1260.0 - x2 / 1680.0))) / x
}

/// basicsr's Poisson noise: the image quantised to 8 bits, `vals = 2^⌈log2(#distinct values)⌉`,
/// `noise = Poisson(img·vals)/vals − img`, scaled by `scale` (gray: computed on BT.601 luma and
/// added to all channels); clips to [0, 1].
pub fn add_poisson_noise(img: &Rgb, scale: f64, gray: bool, seed: u64) -> Rgb {
    let n = img.width * img.height;
    let q = |v: f32| ((v as f64 * 255.0).round().clamp(0.0, 255.0)) / 255.0;
    let base: Vec<f64> = if gray {
        (0..n)
            .map(|p| q(0.299 * img.data[p] + 0.587 * img.data[n + p] + 0.114 * img.data[2 * n + p]))
            .collect()
    } else {
        img.data.iter().map(|&v| q(v)).collect()
    };
    let mut distinct = [false; 256];
    for &v in &base {
        distinct[(v * 255.0).round() as usize] = true;
    }
    let count = distinct.iter().filter(|&&d| d).count().max(1);
    let vals = 2f64.powf((count as f64).log2().ceil());
    let noise: Vec<f64> = base
        .par_iter()
        .enumerate()
        .map(|(i, &v)| (poisson(v * vals, seed, i as u64) / vals - v) * scale)
        .collect();
    let data = img
        .data
        .iter()
        .enumerate()
        .map(|(i, &v)| (v as f64 + if gray { noise[i % n] } else { noise[i] }).clamp(0.0, 1.0) as f32)
        .collect();
    Rgb {
        width: img.width,
        height: img.height,
        data,
    }
}

/// JPEG round trip at `quality` (1–100) through a real codec: 8-bit quantisation, baseline
/// JPEG with 4:2:0 chroma subsampling and the IJG quality-scaled tables (jpeg-encoder), decoded
/// with zune-jpeg.
///
/// # Errors
/// [`Error::InvalidArgument`] for a quality outside 1–100 or an image too large for JPEG.
pub fn jpeg(img: &Rgb, quality: u8) -> Result<Rgb> {
    if !(1..=100).contains(&quality) {
        return Err(Error::invalid_arg(
            "quality",
            format!("JPEG quality must be 1–100, got {quality}"),
        ));
    }
    let (w, h) = (img.width, img.height);
    if w > u16::MAX as usize || h > u16::MAX as usize {
        return Err(Error::invalid_arg(
            "image",
            format!("{w}×{h} is too large for JPEG (65535 max)"),
        ));
    }
    let n = w * h;
    let mut rgb = Vec::with_capacity(3 * n);
    for p in 0..n {
        for c in 0..3 {
            rgb.push((img.data[c * n + p].clamp(0.0, 1.0) * 255.0).round() as u8);
        }
    }
    let mut buf = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut buf, quality);
    enc.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_0);
    enc.encode(&rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| Error::Internal(format!("JPEG encoding failed: {e}")))?;
    let opts = zune_jpeg::zune_core::options::DecoderOptions::default()
        .jpeg_set_out_colorspace(zune_jpeg::zune_core::colorspace::ColorSpace::RGB);
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(std::io::Cursor::new(&buf), opts);
    let px = dec
        .decode()
        .map_err(|e| Error::Internal(format!("JPEG decoding failed: {e:?}")))?;
    if px.len() != 3 * n {
        return Err(Error::Internal(format!(
            "JPEG decoder returned {} samples for {w}×{h}",
            px.len()
        )));
    }
    let mut data = vec![0f32; 3 * n];
    for p in 0..n {
        for c in 0..3 {
            data[c * n + p] = px[3 * p + c] as f32 / 255.0;
        }
    }
    Ok(Rgb {
        width: w,
        height: h,
        data,
    })
}

/// The luma quantisation table [`jpeg`] encodes with at `quality`, in natural (row-major)
/// order — read back from the codec's own output (its DQT segment), so it is the table used,
/// whatever the encoder's scaling rule.
///
/// # Errors
/// [`Error::InvalidArgument`] for a quality outside 1–100; [`Error::Internal`] if the codec's
/// output has no 8-bit luma table.
pub fn jpeg_luma_table(quality: u8) -> Result<[u16; 64]> {
    jpeg_table(quality, 0)
}

/// The chroma (Cb and Cr) quantisation table [`jpeg`] encodes with at `quality`, natural order,
/// read back from the codec's output like [`jpeg_luma_table`].
///
/// # Errors
/// As [`jpeg_luma_table`].
pub fn jpeg_chroma_table(quality: u8) -> Result<[u16; 64]> {
    jpeg_table(quality, 1)
}

/// Quantisation table `tq` (0 luma, 1 chroma) of the codec's output at `quality`.
fn jpeg_table(quality: u8, tq_wanted: u8) -> Result<[u16; 64]> {
    if !(1..=100).contains(&quality) {
        return Err(Error::invalid_arg(
            "quality",
            format!("JPEG quality must be 1–100, got {quality}"),
        ));
    }
    let mut buf = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut buf, quality);
    enc.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_0);
    enc.encode(&[128u8; 3 * 64], 8, 8, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| Error::Internal(format!("JPEG encoding failed: {e}")))?;
    // The tables as the file carries them (the reader the prompt estimator uses).
    let tables = crate::estimate::SourceInfo::from_bytes(&buf, "the JPEG encoder's output")?
        .jpeg_tables
        .ok_or_else(|| Error::Internal("the JPEG encoder wrote no luma quantisation table".into()))?;
    match tq_wanted {
        0 => Ok(tables.luma),
        _ => tables
            .chroma
            .ok_or_else(|| Error::Internal("the JPEG encoder wrote no chroma quantisation table".into())),
    }
}

/// Unsharp masking as basicsr's `USMSharp` (radius 51 → Gaussian σ 8, weight 0.5, threshold
/// 10/255 with a blurred soft mask), applied to the clean image by the Real-ESRGAN pipeline.
pub fn usm_sharpen(img: &Rgb) -> Rgb {
    // OpenCV's sigma for ksize 51 and sigma 0: 0.3·((51 − 1)·0.5 − 1) + 0.8 = 8.0; 51 taps.
    let g: Vec<f64> = {
        let v: Vec<f64> = (-25..=25).map(|x: i32| (-(x * x) as f64 / 128.0).exp()).collect();
        let s: f64 = v.iter().sum();
        v.into_iter().map(|x| x / s).collect()
    };
    let blur = filter_separable(img, &g);
    let mask: Vec<f32> = img
        .data
        .iter()
        .zip(&blur.data)
        .map(|(a, b)| if ((a - b).abs() * 255.0) > 10.0 { 1.0 } else { 0.0 })
        .collect();
    let soft = filter_separable(
        &Rgb {
            width: img.width,
            height: img.height,
            data: mask,
        },
        &g,
    );
    let data = img
        .data
        .iter()
        .zip(&blur.data)
        .zip(&soft.data)
        .map(|((&a, &b), &m)| {
            let sharp = (a + 0.5 * (a - b)).clamp(0.0, 1.0);
            m * sharp + (1.0 - m) * a
        })
        .collect();
    Rgb {
        width: img.width,
        height: img.height,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_sampler_moments() {
        for lam in [0.4, 3.0, 9.5, 12.0, 100.0, 250.0] {
            let n = 200_000u64;
            let xs: Vec<f64> = (0..n).map(|i| poisson(lam, 3, i)).collect();
            let m = xs.iter().sum::<f64>() / n as f64;
            let v = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n as f64;
            assert!((m / lam - 1.0).abs() < 0.01, "λ={lam}: mean {m}");
            assert!((v / lam - 1.0).abs() < 0.03, "λ={lam}: variance {v}");
        }
    }
}
