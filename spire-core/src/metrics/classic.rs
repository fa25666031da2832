//! PSNR and SSIM exactly as scikit-image computes them (`peak_signal_noise_ratio`;
//! `structural_similarity` with `gaussian_weights=True`, `sigma=1.5`,
//! `use_sample_covariance=False`, `channel_axis=-1`): float64 throughout, a normalised Gaussian
//! window of radius 5 (truncate 3.5) with half-sample-symmetric ("reflect") borders, K1 = 0.01,
//! K2 = 0.03, the SSIM map averaged over each channel after cropping 5 pixels, then over
//! channels. The data range is 255 for 8-bit images and 1 for float images.

use crate::error::{Error, Result};
use crate::image::ImageView;

/// Planar f64 samples in the view's native range, and that range.
fn planes(v: &ImageView<'_>) -> (Vec<Vec<f64>>, f64) {
    let img = v.to_image();
    let c = img.color.channels();
    let n = img.width * img.height;
    let (vals, range): (Vec<f64>, f64) = match &img.data {
        crate::ImageData::U8(d) => (d.iter().map(|&x| x as f64).collect(), 255.0),
        crate::ImageData::U16(d) => (d.iter().map(|&x| x as f64).collect(), 65535.0),
        crate::ImageData::F32(d) => (d.iter().map(|&x| x as f64).collect(), 1.0),
    };
    (
        (0..c)
            .map(|ch| (0..n).map(|p| vals[p * c + ch]).collect())
            .collect(),
        range,
    )
}

fn check(a: &ImageView<'_>, b: &ImageView<'_>) -> Result<()> {
    if a.width() != b.width() || a.height() != b.height() || a.color() != b.color() {
        return Err(Error::InvalidImage(format!(
            "images differ: {}×{} {:?} vs {}×{} {:?}",
            a.width(),
            a.height(),
            a.color(),
            b.width(),
            b.height(),
            b.color()
        )));
    }
    if a.sample_type() != b.sample_type() {
        return Err(Error::InvalidImage(format!(
            "compare two images of one sample type (8-bit, 16-bit or float), not {:?} and {:?}",
            a.sample_type(),
            b.sample_type()
        )));
    }
    Ok(())
}

/// Σ (a − b)² in f64.
fn squared_error<T: Copy + Into<f64>>(a: &[T], b: &[T]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&u, &v)| {
            let d = u.into() - v.into();
            d * d
        })
        .sum()
}

/// Peak signal-to-noise ratio in dB (∞ for identical images).
///
/// # Errors
/// [`Error::InvalidImage`] if the images differ in size, layout or sample type.
pub fn psnr(a: &ImageView<'_>, b: &ImageView<'_>) -> Result<f64> {
    check(a, b)?;
    let (ia, ib) = (a.to_image(), b.to_image());
    let (s, n, r) = match (&ia.data, &ib.data) {
        (crate::ImageData::U8(x), crate::ImageData::U8(y)) => (squared_error(x, y), x.len(), 255.0),
        (crate::ImageData::U16(x), crate::ImageData::U16(y)) => (squared_error(x, y), x.len(), 65535.0),
        (crate::ImageData::F32(x), crate::ImageData::F32(y)) => (squared_error(x, y), x.len(), 1.0),
        _ => {
            return Err(Error::InvalidImage(
                "compare two images of one sample type".into(),
            ))
        }
    };
    let mse = s / n as f64;
    Ok(10.0 * (r * r / mse).log10())
}

fn gaussian_1d() -> Vec<f64> {
    let sigma = 1.5f64;
    let r = (3.5 * sigma + 0.5) as i64;
    let w: Vec<f64> = (-r..=r)
        .map(|x| (-0.5 * (x * x) as f64 / (sigma * sigma)).exp())
        .collect();
    let s: f64 = w.iter().sum();
    w.into_iter().map(|x| x / s).collect()
}

/// scipy.ndimage "reflect": half-sample symmetric (d c b a | a b c d | d c b a).
fn reflect(i: i64, n: usize) -> usize {
    let n = n as i64;
    let p = 2 * n;
    let m = i.rem_euclid(p);
    (if m < n { m } else { p - 1 - m }) as usize
}

fn filter(x: &[f64], w: usize, h: usize, k: &[f64]) -> Vec<f64> {
    use rayon::prelude::*;
    let r = (k.len() / 2) as i64;
    // Reflected source indices for every output position and tap.
    let table = |n: usize| -> Vec<usize> {
        (0..n as i64)
            .flat_map(|i| (0..k.len() as i64).map(move |t| reflect(i + t - r, n)))
            .collect()
    };
    let (tx, ty) = (table(w), table(h));
    let nk = k.len();
    let mut tmp = vec![0.0; w * h];
    tmp.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
        let src = &x[y * w..(y + 1) * w];
        for (xx, o) in row.iter_mut().enumerate() {
            let idx = &tx[xx * nk..(xx + 1) * nk];
            *o = k.iter().zip(idx).map(|(kv, &i)| kv * src[i]).sum();
        }
    });
    let mut out = vec![0.0; w * h];
    out.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
        let idx = &ty[y * nk..(y + 1) * nk];
        for (xx, o) in row.iter_mut().enumerate() {
            *o = k.iter().zip(idx).map(|(kv, &i)| kv * tmp[i * w + xx]).sum();
        }
    });
    out
}

fn ssim_plane(a: &[f64], b: &[f64], w: usize, h: usize, range: f64) -> f64 {
    let k = gaussian_1d();
    let pad = k.len() / 2;
    let prod = |p: &[f64], q: &[f64]| p.iter().zip(q).map(|(u, v)| u * v).collect::<Vec<_>>();
    let (ux, uy) = (filter(a, w, h, &k), filter(b, w, h, &k));
    let uxx = filter(&prod(a, a), w, h, &k);
    let uyy = filter(&prod(b, b), w, h, &k);
    let uxy = filter(&prod(a, b), w, h, &k);
    let (c1, c2) = ((0.01 * range).powi(2), (0.03 * range).powi(2));
    let mut sum = 0.0;
    let mut n = 0usize;
    for y in pad..h - pad {
        for x in pad..w - pad {
            let i = y * w + x;
            let vx = uxx[i] - ux[i] * ux[i];
            let vy = uyy[i] - uy[i] * uy[i];
            let vxy = uxy[i] - ux[i] * uy[i];
            let a1 = 2.0 * ux[i] * uy[i] + c1;
            let a2 = 2.0 * vxy + c2;
            let b1 = ux[i] * ux[i] + uy[i] * uy[i] + c1;
            let b2 = vx + vy + c2;
            sum += (a1 * a2) / (b1 * b2);
            n += 1;
        }
    }
    sum / n as f64
}

/// Structural similarity (mean over channels of the mean SSIM map).
///
/// # Errors
/// [`Error::InvalidImage`] if the images differ or are smaller than the 11×11 window.
pub fn ssim(a: &ImageView<'_>, b: &ImageView<'_>) -> Result<f64> {
    check(a, b)?;
    if a.width() < 11 || a.height() < 11 {
        return Err(Error::InvalidImage("SSIM needs images of at least 11×11".into()));
    }
    let (pa, r) = planes(a);
    let (pb, _) = planes(b);
    let (w, h) = (a.width(), a.height());
    let per: Vec<f64> = pa
        .iter()
        .zip(&pb)
        .map(|(x, y)| ssim_plane(x, y, w, h, r))
        .collect();
    Ok(per.iter().sum::<f64>() / per.len() as f64)
}
