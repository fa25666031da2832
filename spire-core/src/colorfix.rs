//! Colour correction of the restored image against its input, as StableSR and DiffBIR do it
//! (`wavelet_color_fix`, `adain_color_fix` in StableSR's `colorfix.py`).
//!
//! - `Wavelet`: five levels of a dilated 3×3 binomial blur (radius 1, 2, 4, 8, 16, replicate
//!   padding) split each image into high and low frequencies; the result is the output's high
//!   frequencies plus the input's low frequencies.
//! - `Adain`: each channel of the output is normalised to the input's mean and standard
//!   deviation (unbiased variance + 1e-5).
//!
//! Both work on planar RGB in [0, 1] and clip the result to [0, 1].

/// Which colour correction to apply after decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ColorFix {
    /// Keep the decoder's colours.
    None,
    /// Low frequencies from the input, high frequencies from the output (default).
    #[default]
    Wavelet,
    /// Per-channel mean and standard deviation from the input.
    Adain,
}

impl ColorFix {
    /// Parses `"none"`, `"wavelet"`, `"adain"`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "none" => ColorFix::None,
            "wavelet" => ColorFix::Wavelet,
            "adain" => ColorFix::Adain,
            _ => return None,
        })
    }

    /// The name (`"none"`, `"wavelet"`, `"adain"`).
    pub fn as_str(self) -> &'static str {
        match self {
            ColorFix::None => "none",
            ColorFix::Wavelet => "wavelet",
            ColorFix::Adain => "adain",
        }
    }
}

/// One 3×3 binomial blur with dilation `r`, replicate padding, on an `h × w` plane.
fn wavelet_blur(src: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    const K: [f32; 3] = [0.25, 0.5, 0.25];
    let clampi = |i: isize, n: usize| i.clamp(0, n as isize - 1) as usize;
    // Separable: the 2-D kernel is the outer product of [1/4, 1/2, 1/4].
    let mut tmp = vec![0f32; w * h];
    for y in 0..h {
        for x in 0..w {
            let mut s = 0f32;
            for (k, &kv) in K.iter().enumerate() {
                let xx = clampi(x as isize + (k as isize - 1) * r as isize, w);
                s += kv * src[y * w + xx];
            }
            tmp[y * w + x] = s;
        }
    }
    let mut out = vec![0f32; w * h];
    for y in 0..h {
        for x in 0..w {
            let mut s = 0f32;
            for (k, &kv) in K.iter().enumerate() {
                let yy = clampi(y as isize + (k as isize - 1) * r as isize, h);
                s += kv * tmp[yy * w + x];
            }
            out[y * w + x] = s;
        }
    }
    out
}

/// (high, low) frequencies of a plane after five levels.
fn decompose(plane: &[f32], w: usize, h: usize) -> (Vec<f32>, Vec<f32>) {
    let mut high = vec![0f32; w * h];
    let mut img = plane.to_vec();
    for i in 0..5 {
        let low = wavelet_blur(&img, w, h, 1 << i);
        for ((hv, &a), &b) in high.iter_mut().zip(&img).zip(&low) {
            *hv += a - b;
        }
        img = low;
    }
    (high, img)
}

/// Applies `fix` to `output` (planar RGB `3 × h × w`) with `reference` (same shape).
pub fn apply(fix: ColorFix, output: &mut [f32], reference: &[f32], w: usize, h: usize) {
    let n = w * h;
    match fix {
        ColorFix::None => {}
        ColorFix::Wavelet => {
            for c in 0..3 {
                let (oh, _) = decompose(&output[c * n..(c + 1) * n], w, h);
                let (_, rl) = decompose(&reference[c * n..(c + 1) * n], w, h);
                for (i, o) in output[c * n..(c + 1) * n].iter_mut().enumerate() {
                    *o = (oh[i] + rl[i]).clamp(0.0, 1.0);
                }
            }
        }
        ColorFix::Adain => {
            let stats = |p: &[f32]| {
                let m = p.iter().map(|&v| v as f64).sum::<f64>() / p.len() as f64;
                let var =
                    p.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / (p.len() as f64 - 1.0).max(1.0);
                (m, (var + 1e-5).sqrt())
            };
            for c in 0..3 {
                let (om, os) = stats(&output[c * n..(c + 1) * n]);
                let (rm, rs) = stats(&reference[c * n..(c + 1) * n]);
                for o in &mut output[c * n..(c + 1) * n] {
                    *o = (((*o as f64 - om) / os * rs + rm) as f32).clamp(0.0, 1.0);
                }
            }
        }
    }
}
