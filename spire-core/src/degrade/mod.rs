//! Degradation synthesis (SPIRE.md §4): training pairs `(y, c_r)` made from clean images.
//!
//! - [`parameterized`]: blur → downsample → noise → JPEG, each with probability ½ (at least
//!   one), parameters drawn uniformly and rounded to the prompt's precision, then bicubic back
//!   to the input size; returns the degraded image and the [`RestorationPrompt`] that
//!   describes it exactly.
//! - [`realesrgan`]: the second-order Real-ESRGAN model with the official
//!   `train_realesrnet_x4plus` settings ([`RealEsrganConfig::default`]); returns the degraded
//!   image at the input size (bicubic from the ×4-smaller result) and the blind prompt.
//!
//! Both are deterministic for a seed and independent of the thread count; [`degrade_batch`]
//! degrades many images in parallel.

pub mod kernels;
pub mod ops;

use rayon::prelude::*;

pub use ops::Rgb;

use crate::error::Result;
use crate::image::{ColorType, Image, ImageData, ImageView};
use crate::prompt::RestorationPrompt;
use crate::rng::Rng;
use kernels::{KernelKind, KernelRanges};
use ops::Interp;

/// The seed [`degrade`] uses when the caller gives none (the bindings' default).
pub const DEFAULT_SEED: u64 = 0;

/// Which synthesis pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Pipeline {
    /// Blur / downsample / noise / JPEG with a restoration prompt (the default).
    #[default]
    Parameterized,
    /// Real-ESRGAN second-order degradation, blind prompt.
    RealEsrgan,
}

impl Pipeline {
    /// Parses `"parameterized"` or `"realesrgan"`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "parameterized" | "parametrized" | "param" => Some(Pipeline::Parameterized),
            "realesrgan" => Some(Pipeline::RealEsrgan),
            _ => None,
        }
    }
}

/// Distributions of the parameterized pipeline (SPIRE.md §4).
#[derive(Debug, Clone, PartialEq)]
pub struct ParamConfig {
    /// Probability of each op (blur, downsample, noise, JPEG).
    pub prob: f64,
    /// Blur σ range (pixels).
    pub blur_sigma: (f64, f64),
    /// Downsample factor range.
    pub down_factor: (f64, f64),
    /// Noise σ range (on [0, 1]).
    pub noise_sigma: (f64, f64),
    /// JPEG quality range (inclusive).
    pub jpeg_quality: (u8, u8),
}

impl Default for ParamConfig {
    fn default() -> Self {
        Self {
            prob: 0.5,
            blur_sigma: (0.3, 6.0),
            down_factor: (1.0, 4.0),
            noise_sigma: (0.02, 0.30),
            jpeg_quality: (15, 95),
        }
    }
}

fn round_to(v: f64, per: f64) -> f64 {
    (v * per).round() / per
}

/// The parameterized pipeline: returns `(y, c_r)` with `y` the size of `x`.
///
/// # Errors
/// [`Error::InvalidImage`](crate::Error::InvalidImage) for an empty image.
pub fn parameterized(x: &Rgb, seed: u64, cfg: &ParamConfig) -> Result<(Rgb, RestorationPrompt)> {
    let mut rng = Rng::new(seed);
    let ops = loop {
        let f = [
            rng.chance(cfg.prob),
            rng.chance(cfg.prob),
            rng.chance(cfg.prob),
            rng.chance(cfg.prob),
        ];
        if f.iter().any(|&b| b) {
            break f;
        }
    };
    let (w, h) = (x.width, x.height);
    let mut y = x.clone();
    let mut prompt = RestorationPrompt::blind();
    if ops[0] {
        let s = round_to(rng.range(cfg.blur_sigma.0, cfg.blur_sigma.1), 10.0).max(0.1);
        prompt = prompt.with_deblur(s)?;
        y = ops::gaussian_blur(&y, s);
    }
    if ops[1] {
        let f = round_to(rng.range(cfg.down_factor.0, cfg.down_factor.1), 10.0).max(1.0);
        prompt = prompt.with_upsample(f)?;
        let (sw, sh) = (
            ((w as f64 / f).round() as usize).max(1),
            ((h as f64 / f).round() as usize).max(1),
        );
        y = ops::resize_bicubic(&y, sw, sh);
    }
    if ops[2] {
        let s = round_to(rng.range(cfg.noise_sigma.0, cfg.noise_sigma.1), 100.0).max(0.01);
        prompt = prompt.with_denoise(s)?;
        y = ops::add_gaussian_noise(&y, s, false, rng.fork());
    }
    if ops[3] {
        let q = rng.int(cfg.jpeg_quality.0 as i64, cfg.jpeg_quality.1 as i64) as u8;
        prompt = prompt.with_dejpeg(q as u32)?;
        y = ops::jpeg(&y, q)?;
    }
    if (y.width, y.height) != (w, h) {
        y = ops::resize_bicubic(&y, w, h);
    }
    Ok((y.clip(), prompt))
}

/// Applies exactly the degradation a restoration prompt describes, in the parameterized
/// pipeline's order (blur σ → bicubic downsample by the factor → Gaussian noise σ → JPEG
/// quality → bicubic back to the input size, clipped): the test images for a known prompt.
/// The noise is drawn from `seed`. The blind prompt returns the image unchanged.
///
/// # Errors
/// [`Error::InvalidImage`](crate::Error::InvalidImage)(crate::Error::InvalidImage) for an empty image.
pub fn apply_prompt(x: &Rgb, prompt: &RestorationPrompt, seed: u64) -> Result<Rgb> {
    let (w, h) = (x.width, x.height);
    let mut y = Rgb::new(w, h, x.data.clone())?;
    if let Some(s) = prompt.deblur_sigma_f64() {
        y = ops::gaussian_blur(&y, s);
    }
    if let Some(f) = prompt.upsample_scale_f64() {
        let (sw, sh) = (
            ((w as f64 / f).round() as usize).max(1),
            ((h as f64 / f).round() as usize).max(1),
        );
        y = ops::resize_bicubic(&y, sw, sh);
    }
    if let Some(s) = prompt.denoise_sigma_f64() {
        y = ops::add_gaussian_noise(&y, s, false, seed);
    }
    if let Some(q) = prompt.dejpeg_quality() {
        y = ops::jpeg(&y, q)?;
    }
    if (y.width, y.height) != (w, h) {
        y = ops::resize_bicubic(&y, w, h);
    }
    Ok(y.clip())
}

/// The settings of Real-ESRGAN's `train_realesrnet_x4plus.yml` (first and second order).
#[derive(Debug, Clone, PartialEq)]
pub struct RealEsrganConfig {
    /// Overall down-scaling (4).
    pub scale: usize,
    /// Sharpen the clean image first (`gt_usm: true`).
    pub usm: bool,
    /// First-order blur kernels.
    pub kernel1: KernelRanges,
    /// Probability of a sinc kernel instead (first order).
    pub sinc_prob1: f64,
    /// Second-order blur kernels.
    pub kernel2: KernelRanges,
    /// Probability of a sinc kernel instead (second order).
    pub sinc_prob2: f64,
    /// Probability of the second blur.
    pub second_blur_prob: f64,
    /// Probability of the final sinc filter.
    pub final_sinc_prob: f64,
    /// (up, down, keep) probabilities and scale range, first order.
    pub resize1: ([f64; 3], (f64, f64)),
    /// Second order.
    pub resize2: ([f64; 3], (f64, f64)),
    /// Gaussian (vs Poisson) noise probability, σ range (0–255 scale), Poisson scale range,
    /// gray-noise probability — first order.
    pub noise1: (f64, (f64, f64), (f64, f64), f64),
    /// Second order.
    pub noise2: (f64, (f64, f64), (f64, f64), f64),
    /// JPEG quality range, first order.
    pub jpeg1: (f64, f64),
    /// Second order.
    pub jpeg2: (f64, f64),
}

impl Default for RealEsrganConfig {
    fn default() -> Self {
        let kinds = vec![
            (KernelKind::Iso, 0.45),
            (KernelKind::Aniso, 0.25),
            (KernelKind::GeneralizedIso, 0.12),
            (KernelKind::GeneralizedAniso, 0.03),
            (KernelKind::PlateauIso, 0.12),
            (KernelKind::PlateauAniso, 0.03),
        ];
        Self {
            scale: 4,
            usm: true,
            kernel1: KernelRanges {
                kinds: kinds.clone(),
                sigma: (0.2, 3.0),
                betag: (0.5, 4.0),
                betap: (1.0, 2.0),
            },
            sinc_prob1: 0.1,
            kernel2: KernelRanges {
                kinds,
                sigma: (0.2, 1.5),
                betag: (0.5, 4.0),
                betap: (1.0, 2.0),
            },
            sinc_prob2: 0.1,
            second_blur_prob: 0.8,
            final_sinc_prob: 0.8,
            resize1: ([0.2, 0.7, 0.1], (0.15, 1.5)),
            resize2: ([0.3, 0.4, 0.3], (0.3, 1.2)),
            noise1: (0.5, (1.0, 30.0), (0.05, 3.0), 0.4),
            noise2: (0.5, (1.0, 25.0), (0.05, 2.5), 0.4),
            jpeg1: (30.0, 95.0),
            jpeg2: (30.0, 95.0),
        }
    }
}

const KERNEL_PAD: usize = 21;

/// A blur kernel of the Real-ESRGAN dataset: size 7–21 (odd), sinc with probability
/// `sinc_prob` (cut-off π/3–π below size 13, π/5–π otherwise), else a mixed kernel; padded to
/// 21 × 21.
fn random_kernel(rng: &mut Rng, ranges: &KernelRanges, sinc_prob: f64) -> Vec<f64> {
    let k = 2 * rng.int(3, 10) as usize + 1;
    let kern = if rng.chance(sinc_prob) {
        let lo = if k < 13 {
            std::f64::consts::PI / 3.0
        } else {
            std::f64::consts::PI / 5.0
        };
        kernels::circular_lowpass(rng.range(lo, std::f64::consts::PI), k, 0)
    } else {
        kernels::random_mixed(rng, ranges, k)
    };
    kernels::pad(&kern, k, KERNEL_PAD)
}

fn random_interp(rng: &mut Rng) -> Interp {
    [Interp::Area, Interp::Bilinear, Interp::Bicubic][rng.int(0, 2) as usize]
}

fn random_noise(rng: &mut Rng, y: &Rgb, p: (f64, (f64, f64), (f64, f64), f64)) -> Rgb {
    let (gauss_p, sigma, pscale, gray_p) = p;
    let gauss = rng.chance(gauss_p);
    let amount = if gauss {
        rng.range(sigma.0, sigma.1)
    } else {
        rng.range(pscale.0, pscale.1)
    };
    let gray = rng.chance(gray_p);
    let seed = rng.fork();
    if gauss {
        ops::add_gaussian_noise(y, amount / 255.0, gray, seed)
    } else {
        ops::add_poisson_noise(y, amount, gray, seed)
    }
}

/// The Real-ESRGAN second-order pipeline; returns `y` at the size of `x`.
///
/// # Errors
/// [`Error::InvalidImage`](crate::Error::InvalidImage) for an empty image.
pub fn realesrgan(x: &Rgb, seed: u64, cfg: &RealEsrganConfig) -> Result<Rgb> {
    let mut rng = Rng::new(seed);
    let (w, h) = (x.width, x.height);
    let s = cfg.scale.max(1) as f64;
    let k1 = random_kernel(&mut rng, &cfg.kernel1, cfg.sinc_prob1);
    let k2 = random_kernel(&mut rng, &cfg.kernel2, cfg.sinc_prob2);
    let final_sinc = if rng.chance(cfg.final_sinc_prob) {
        let k = 2 * rng.int(3, 10) as usize + 1;
        Some(kernels::circular_lowpass(
            rng.range(std::f64::consts::PI / 3.0, std::f64::consts::PI),
            k,
            KERNEL_PAD,
        ))
    } else {
        None
    };
    let base = if cfg.usm { ops::usm_sharpen(x) } else { x.clone() };
    // First order.
    let mut y = ops::filter2d(&base, &k1, KERNEL_PAD);
    let scale = match rng.choose(&cfg.resize1.0) {
        0 => rng.range(1.0, cfg.resize1.1 .1),
        1 => rng.range(cfg.resize1.1 .0, 1.0),
        _ => 1.0,
    };
    let mode = random_interp(&mut rng);
    let size = |v: usize, f: f64| ((v as f64 * f) as usize).max(1);
    y = ops::resize_torch(&y, size(w, scale), size(h, scale), mode);
    y = random_noise(&mut rng, &y, cfg.noise1);
    let q = rng.range(cfg.jpeg1.0, cfg.jpeg1.1).round() as u8;
    y = ops::jpeg(&y.clip(), q)?;
    // Second order.
    if rng.chance(cfg.second_blur_prob) {
        y = ops::filter2d(&y, &k2, KERNEL_PAD);
    }
    let scale2 = match rng.choose(&cfg.resize2.0) {
        0 => rng.range(1.0, cfg.resize2.1 .1),
        1 => rng.range(cfg.resize2.1 .0, 1.0),
        _ => 1.0,
    };
    let mode = random_interp(&mut rng);
    y = ops::resize_torch(&y, size(w, scale2 / s), size(h, scale2 / s), mode);
    y = random_noise(&mut rng, &y, cfg.noise2);
    let (lw, lh) = (((w as f64 / s) as usize).max(1), ((h as f64 / s) as usize).max(1));
    let sinc_then_jpeg = rng.chance(0.5);
    let mode = random_interp(&mut rng);
    let q2 = rng.range(cfg.jpeg2.0, cfg.jpeg2.1).round() as u8;
    let resize_sinc = |y: &Rgb| {
        let r = ops::resize_torch(y, lw, lh, mode);
        match &final_sinc {
            Some(k) => ops::filter2d(&r, k, KERNEL_PAD),
            None => r,
        }
    };
    if sinc_then_jpeg {
        y = ops::jpeg(&resize_sinc(&y).clip(), q2)?;
    } else {
        y = resize_sinc(&ops::jpeg(&y.clip(), q2)?);
    }
    // Quantise as the official pipeline does, then back to the input size.
    for v in &mut y.data {
        *v = ((*v * 255.0).round().clamp(0.0, 255.0)) / 255.0;
    }
    Ok(ops::resize_bicubic(&y, w, h).clip())
}

/// Degrades an image with `pipeline`; returns the degraded image (same layout and sample type
/// as the input; alpha and gray are dropped to RGB) and its restoration prompt.
///
/// # Errors
/// [`Error::InvalidImage`](crate::Error::InvalidImage) for a bad image.
pub fn degrade(image: &ImageView, pipeline: Pipeline, seed: u64) -> Result<(Image, RestorationPrompt)> {
    let p = image.to_planar()?;
    let x = Rgb::new(p.width, p.height, p.rgb)?;
    let (y, prompt) = match pipeline {
        Pipeline::Parameterized => parameterized(&x, seed, &ParamConfig::default())?,
        Pipeline::RealEsrgan => (
            realesrgan(&x, seed, &RealEsrganConfig::default())?,
            RestorationPrompt::blind(),
        ),
    };
    let n = y.width * y.height;
    let mut inter = Vec::with_capacity(3 * n);
    for i in 0..n {
        inter.extend([y.data[i], y.data[n + i], y.data[2 * n + i]]);
    }
    let data = ImageData::from_unit(image.sample_type(), inter);
    Ok((
        Image {
            width: y.width,
            height: y.height,
            color: ColorType::Rgb,
            data,
        },
        prompt,
    ))
}

/// Degrades many images in parallel; image `i` uses seed `seed + i`.
///
/// # Errors
/// The first error of any image.
pub fn degrade_batch(
    images: &[ImageView],
    pipeline: Pipeline,
    seed: u64,
) -> Result<Vec<(Image, RestorationPrompt)>> {
    images
        .par_iter()
        .enumerate()
        .map(|(i, img)| degrade(img, pipeline, seed.wrapping_add(i as u64)))
        .collect()
}
