//! The restoration prompt read from the photo: estimates of the numbers a user does not know.
//!
//! | parameter | method | source |
//! |---|---|---|
//! | noise σ | Donoho's robust MAD of the finest diagonal Haar band, per colour channel, median of the channels | pixels |
//! | JPEG quality | **exact** from the file's own quantisation tables (the inverse of the IJG scaling of the standard tables); the nearest IJG quality when the tables are not standard | JPEG file header |
//! | JPEG quality | the quantisation step of each low-frequency DCT coefficient of the 8×8 luma blocks (the largest step the coefficients are multiples of), matched against the IJG tables | pixels |
//! | blur σ | the gradient ratio of two re-blurred copies at the image's edges (σ₁ = 1, σ₂ = 2: at an edge of width σ, \|∇(I∗g₁)\| / \|∇(I∗g₂)\| = √((σ² + σ₂²)/(σ² + σ₁²))), median over edge pixels, less the sharpness a clean photo already has | pixels |
//! | scale | requested output size ÷ input size | sizes |
//!
//! Each value comes with a confidence in [0, 1]; [`RestorationPrompt::estimate`] leaves out the
//! clauses below [`MIN_CONFIDENCE`] or below the size that matters, so a clean photo yields
//! "Remove all degradation". Measured accuracy: `docs/estimate.md`.

use crate::degrade::ops::{gaussian_blur, Rgb};
use crate::error::{Error, Result};
use crate::image::ImageView;
use crate::prompt::RestorationPrompt;

/// Clauses whose estimate has a lower confidence are left out of the prompt.
pub const MIN_CONFIDENCE: f64 = 0.5;
/// Noise below this σ (on [0, 1]) is left out: a clean photo's texture reads as about 0.005,
/// a photo shrunk 4× as up to 0.02.
pub const MIN_NOISE_SIGMA: f64 = 0.025;
/// Blur below this σ (pixels) is left out: the prompt language's training range starts at 0.3,
/// and a clean photo's own softness varies by about this much.
pub const MIN_BLUR_SIGMA: f64 = 0.6;
/// JPEG above this quality is left out (quantisation steps of 1–3: nothing to undo).
pub const MAX_JPEG_QUALITY: u8 = 90;
/// Estimation looks at most at a centred square of this side (pixels), so it stays fast on
/// large photos.
pub const MAX_SIDE: usize = 1024;

/// An estimated value and how sure the estimator is of it, in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// The value, in the prompt's units.
    pub value: f64,
    /// 1: exact (a JPEG file's tables, sizes); 0: no evidence.
    pub confidence: f64,
}

/// Where a JPEG quality came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JpegSource {
    /// The file's tables are the IJG tables at this quality, exactly.
    FileExact,
    /// The file's tables are not the IJG ones; the nearest IJG quality.
    FileNearest,
    /// The decoded pixels' DCT coefficients.
    Pixels,
}

/// What a source file says beyond its pixels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceInfo {
    /// The quantisation tables of a JPEG file: luma (table 0) and chroma (table 1), natural
    /// (row-major) order. `None` for other formats.
    pub jpeg_tables: Option<JpegTables>,
}

/// A JPEG file's quantisation tables, natural order.
#[derive(Debug, Clone, PartialEq)]
pub struct JpegTables {
    /// Table 0 (luma).
    pub luma: [u16; 64],
    /// Table 1 (chroma), if the file has one.
    pub chroma: Option<[u16; 64]>,
}

impl SourceInfo {
    /// Reads what the file's bytes say: a JPEG's quantisation tables (the header only; nothing
    /// is decoded). Other formats give an empty `SourceInfo`.
    ///
    /// # Errors
    /// [`Error::InvalidImage`] for a JPEG whose header is malformed (a table that runs past
    /// the end of its segment or of the file), naming `name`.
    pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Self> {
        if bytes.len() < 2 || bytes[0] != 0xFF || bytes[1] != 0xD8 {
            return Ok(Self::default());
        }
        Ok(Self {
            jpeg_tables: read_jpeg_tables(bytes, name)?,
        })
    }
}

/// Zig-zag position → natural index (ITU T.81 figure A.6).
const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7,
    14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39,
    46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// The JPEG standard's example tables (ITU T.81 Annex K.1), natural order: luma, chroma.
const STD_LUMA: [u16; 64] = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56, 14, 17,
    22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78,
    87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
];
const STD_CHROMA: [u16; 64] = [
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99, 47, 66,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
];

/// The IJG (libjpeg, PIL) table at `quality` (1–100): the standard table scaled by
/// `5000/q` % below 50 and `200 − 2q` % from 50, rounded, clamped to 1–255 (baseline).
pub fn ijg_table(chroma: bool, quality: u8) -> [u16; 64] {
    let q = quality.clamp(1, 100) as u32;
    let scale = if q < 50 { 5000 / q } else { 200 - 2 * q };
    let base = if chroma { &STD_CHROMA } else { &STD_LUMA };
    let mut t = [0u16; 64];
    for (o, &b) in t.iter_mut().zip(base) {
        *o = ((b as u32 * scale + 50) / 100).clamp(1, 255) as u16;
    }
    t
}

/// The quantisation tables 0 and 1 of a JPEG file (8- or 16-bit entries), read from its DQT
/// segments before the first scan. `Ok(None)` when the file has no table 0.
fn read_jpeg_tables(b: &[u8], name: &str) -> Result<Option<JpegTables>> {
    let bad = |m: &str| Error::InvalidImage(format!("{name}: JPEG header: {m}"));
    let mut tables: [Option<[u16; 64]>; 4] = [None; 4];
    let mut i = 2;
    while i + 4 <= b.len() {
        if b[i] != 0xFF {
            return Err(bad(&format!("expected a marker at byte {i}")));
        }
        let marker = b[i + 1];
        if marker == 0xFF {
            i += 1; // fill byte
            continue;
        }
        if marker == 0xD9 || marker == 0xDA {
            break; // end of image / start of scan: the tables come before
        }
        if (0xD0..=0xD7).contains(&marker) || marker == 0x01 {
            i += 2;
            continue;
        }
        let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        if len < 2 || i + 2 + len > b.len() {
            return Err(bad(&format!(
                "segment 0xFF{marker:02X} at byte {i} claims {len} bytes past the end"
            )));
        }
        if marker == 0xDB {
            let end = i + 2 + len;
            let mut j = i + 4;
            while j < end {
                let (pq, tq) = ((b[j] >> 4) as usize, (b[j] & 15) as usize);
                if pq > 1 || tq > 3 {
                    return Err(bad(&format!(
                        "quantisation table with precision {pq} and id {tq}"
                    )));
                }
                let size = 64 * (pq + 1);
                if j + 1 + size > end {
                    return Err(bad("a quantisation table runs past its segment"));
                }
                let mut t = [0u16; 64];
                for (z, &nat) in ZIGZAG.iter().enumerate() {
                    t[nat] = if pq == 0 {
                        b[j + 1 + z] as u16
                    } else {
                        u16::from_be_bytes([b[j + 1 + 2 * z], b[j + 2 + 2 * z]])
                    };
                }
                tables[tq] = Some(t);
                j += 1 + size;
            }
        }
        i += 2 + len;
    }
    Ok(tables[0].map(|luma| JpegTables {
        luma,
        chroma: tables[1],
    }))
}

/// The IJG quality of a file's tables: exact when they equal the IJG tables at some quality
/// (luma, and chroma when present), else the quality whose luma table is nearest in mean
/// log-ratio, with a confidence that falls with the distance.
pub fn jpeg_quality_from_tables(t: &JpegTables) -> (Estimate, JpegSource) {
    for q in (1..=100u8).rev() {
        if ijg_table(false, q) == t.luma && t.chroma.is_none_or(|c| c == ijg_table(true, q)) {
            return (
                Estimate {
                    value: q as f64,
                    confidence: 1.0,
                },
                JpegSource::FileExact,
            );
        }
    }
    let mut best = (50u8, f64::INFINITY);
    for q in 1..=100u8 {
        let r = ijg_table(false, q);
        let d = r
            .iter()
            .zip(&t.luma)
            .map(|(&a, &b)| ((a.max(1) as f64).ln() - (b.max(1) as f64).ln()).abs())
            .sum::<f64>()
            / 64.0;
        if d < best.1 {
            best = (q, d);
        }
    }
    (
        Estimate {
            value: best.0 as f64,
            // A mean step ratio off by 10 % gives 0.6; by 30 %, 0.2.
            confidence: (0.8 - 2.0 * best.1).clamp(0.0, 0.9),
        },
        JpegSource::FileNearest,
    )
}

/// Donoho's estimate of white Gaussian noise in an `h × w` plane: the median absolute
/// finest-scale diagonal Haar coefficient over 0.6745 (the median of an even count is the
/// mean of the middle two, as NumPy's). Used by measurement consistency too.
pub fn mad_noise_sigma(plane: &[f64], w: usize, h: usize) -> f64 {
    let mut d: Vec<f64> = Vec::with_capacity((w / 2) * (h / 2));
    for y in (0..h - h % 2).step_by(2) {
        for x in (0..w - w % 2).step_by(2) {
            let (a, b) = (plane[y * w + x], plane[y * w + x + 1]);
            let (c, e) = (plane[(y + 1) * w + x], plane[(y + 1) * w + x + 1]);
            d.push(((a - b - c + e) / 2.0).abs());
        }
    }
    if d.is_empty() {
        return 0.0;
    }
    d.sort_unstable_by(|a, b| a.total_cmp(b));
    let k = d.len() / 2;
    let median = if d.len() % 2 == 1 {
        d[k]
    } else {
        (d[k - 1] + d[k]) / 2.0
    };
    median / 0.6745
}

/// The noise σ (on [0, 1]): [`mad_noise_sigma`] of each colour channel, the median of the
/// three. Confidence grows with the number of Haar coefficients (full at 64×64 and larger).
pub fn noise_sigma(img: &Rgb) -> Estimate {
    let (w, h) = (img.width, img.height);
    let n = w * h;
    let mut s: Vec<f64> = (0..3)
        .map(|c| {
            let plane: Vec<f64> = img.data[c * n..(c + 1) * n].iter().map(|&v| v as f64).collect();
            mad_noise_sigma(&plane, w, h)
        })
        .collect();
    s.sort_unstable_by(|a, b| a.total_cmp(b));
    let coeffs = (w / 2) * (h / 2);
    Estimate {
        value: s[1],
        confidence: (coeffs as f64 / 1024.0).min(1.0),
    }
}

fn luma(img: &Rgb) -> Vec<f64> {
    let n = img.width * img.height;
    (0..n)
        .map(|i| {
            0.299 * img.data[i] as f64 + 0.587 * img.data[n + i] as f64 + 0.114 * img.data[2 * n + i] as f64
        })
        .collect()
}

/// From the median edge width [`edge_sigma`] reads to the blur σ, as `(width, σ)` points joined
/// linearly (beyond the last: slope 1; below the first: no blur). Photos' edges are not ideal
/// steps — their own softness (bokeh, shading) widens them and fine texture narrows them — so
/// each point is the 60th percentile of the widths read on the 28 training photos
/// (`docs/estimate.md`; all but the four held-out ones) blurred by that σ: a photo's reading
/// is mapped to a σ that most photos giving that reading exceed. Erring low is deliberate:
/// the restoration loses little for a σ read too small and much for one read too large
/// (σ 1.0 read as 1.3 restores no better than the blind prompt). Regenerate with
/// `cargo run --release -p spire-core --example estimate_report -- --calibrate`.
pub const BLUR_CALIBRATION: [(f64, f64); 14] = [
    (0.650, 0.0),
    (0.701, 0.4),
    (0.838, 0.6),
    (0.992, 0.8),
    (1.161, 1.0),
    (1.336, 1.2),
    (1.521, 1.4),
    (1.779, 1.7),
    (2.037, 2.0),
    (2.512, 2.5),
    (2.982, 3.0),
    (3.434, 3.5),
    (3.874, 4.0),
    (4.968, 5.0),
];

/// The blur σ that a median edge width stands for: [`BLUR_CALIBRATION`] interpolated.
pub fn calibrated_blur(width: f64) -> f64 {
    let t = &BLUR_CALIBRATION;
    if width.is_nan() || width <= t[0].0 {
        return 0.0;
    }
    for w in t.windows(2) {
        if width <= w[1].0 {
            let f = (width - w[0].0) / (w[1].0 - w[0].0);
            return w[0].1 + f * (w[1].1 - w[0].1);
        }
    }
    let (w_last, s_last) = t[t.len() - 1];
    s_last + (width - w_last)
}

/// The σ (pixels) of a Gaussian blur of the whole image: [`edge_sigma`] through
/// [`calibrated_blur`]. Confidence grows with the number of edge pixels and falls with the
/// spread of their estimates.
pub fn blur_sigma(img: &Rgb, noise: f64) -> Estimate {
    match edge_sigma(img, noise) {
        None => Estimate {
            value: 0.0,
            confidence: 0.0,
        },
        Some((med, spread, count)) => Estimate {
            value: calibrated_blur(med),
            confidence: ((count as f64 / 200.0).min(1.0) * (1.2 - spread)).clamp(0.0, 1.0),
        },
    }
}

/// The width σ (pixels) of the image's edges: at isolated edge pixels (non-maximum-suppressed
/// gradient maxima of the σ₁ copy, the strongest 10 %, well above `noise`, whose gradient falls
/// below a quarter of the peak within 6 pixels on both sides), the σ that the ratio of the two
/// re-blurred copies' gradients gives (signed: a negative σ² — a profile steeper than any
/// blur, as fine texture gives — counts as −√|σ²|). Returns the median, the spread
/// (interquartile range over the median) and the number of edge pixels; `None` with fewer
/// than 20.
pub fn edge_sigma(img: &Rgb, noise: f64) -> Option<(f64, f64, usize)> {
    let est = edge_sigmas(img, noise);
    if est.len() < 20 {
        return None;
    }
    let med = est[est.len() / 2];
    let (q1, q3) = (est[est.len() / 4], est[(est.len() * 3) / 4]);
    Some((med, (q3 - q1) / med.max(0.5), est.len()))
}

/// The per-edge-pixel widths (signed) behind [`edge_sigma`], sorted ascending.
pub fn edge_sigmas(img: &Rgb, noise: f64) -> Vec<f64> {
    const S1: f64 = 1.0;
    const S2: f64 = 2.0;
    let (w, h) = (img.width, img.height);
    if w < 32 || h < 32 {
        return Vec::new();
    }
    let g1 = luma(&gaussian_blur(img, S1));
    let g2 = luma(&gaussian_blur(img, S2));
    let grad = |g: &[f64], x: usize, y: usize| -> (f64, f64) {
        let i = y * w + x;
        ((g[i + 1] - g[i - 1]) / 2.0, (g[i + w] - g[i - w]) / 2.0)
    };
    let margin = 8;
    let mut mags = Vec::new();
    for y in margin..h - margin {
        for x in margin..w - margin {
            let (gx, gy) = grad(&g1, x, y);
            mags.push((gx * gx + gy * gy).sqrt());
        }
    }
    if mags.is_empty() {
        return Vec::new();
    }
    let mut sorted = mags.clone();
    sorted.sort_unstable_by(|a, b| a.total_cmp(b));
    let top = sorted[(sorted.len() * 9) / 10];
    // White noise of σ blurred by a Gaussian of σ_b has variance σ²/(4πσ_b²) and correlation
    // exp(−d²/4σ_b²) at distance d, so a central-difference gradient picks up an energy of
    // σ²(1 − e^(−1/σ_b²))/(4πσ_b²): 0.0503σ² in the σ₁ copy, 0.0044σ² in the σ₂ one. Edges
    // must stand well above it (5× its root), and it is taken out of both magnitudes.
    let (n1, n2) = (0.0503 * noise * noise, 0.0044 * noise * noise);
    let threshold = top.max(5.0 * n1.sqrt()).max(0.01);
    let iw = w - 2 * margin;
    let mut est = Vec::new();
    for y in margin + 1..h - margin - 1 {
        for x in margin + 1..w - margin - 1 {
            let m = mags[(y - margin) * iw + (x - margin)];
            if m < threshold {
                continue;
            }
            // Non-maximum suppression along the gradient (4 directions).
            let (gx, gy) = grad(&g1, x, y);
            let (dx, dy): (isize, isize) = {
                let a = gy.atan2(gx).to_degrees().rem_euclid(180.0);
                if !(22.5..157.5).contains(&a) {
                    (1, 0)
                } else if a < 67.5 {
                    (1, 1)
                } else if a < 112.5 {
                    (0, 1)
                } else {
                    (-1, 1)
                }
            };
            let at = |ox: isize, oy: isize| {
                let (xx, yy) = ((x as isize + ox) as usize, (y as isize + oy) as usize);
                mags[(yy - margin) * iw + (xx - margin)]
            };
            if m < at(dx, dy) || m < at(-dx, -dy) {
                continue;
            }
            let (hx, hy) = grad(&g2, x, y);
            let m2 = hx * hx + hy * hy - n2;
            if m2 <= 0.0 {
                continue;
            }
            let r2 = (m * m - n1) / m2;
            if r2 <= 1.0 + 1e-9 {
                continue;
            }
            let s2 = (S2 * S2 - r2 * S1 * S1) / (r2 - 1.0);
            let sigma = s2.max(0.0).sqrt().min(20.0);
            let signed = s2.signum() * s2.abs().sqrt().min(20.0);
            // An isolated edge: its gradient profile (width √(σ² + σ₁²) in the σ₁ copy) falls
            // below 0.3 of the peak on both sides within 1.6 widths, as a lone edge's does;
            // a neighbouring edge inside that window would bias the ratio.
            let reach = (1.6 * (sigma * sigma + S1 * S1).sqrt()).ceil() as isize + 1;
            let isolated = [1isize, -1].iter().all(|&sgn| {
                (1..=reach).any(|k| {
                    let (ox, oy) = (sgn * k * dx, sgn * k * dy);
                    let (xx, yy) = (x as isize + ox, y as isize + oy);
                    xx < margin as isize
                        || yy < margin as isize
                        || xx >= (w - margin) as isize
                        || yy >= (h - margin) as isize
                        || at(ox, oy) < 0.3 * m
                })
            });
            if isolated {
                est.push(signed);
            }
        }
    }
    est.sort_unstable_by(|a, b| a.total_cmp(b));
    est
}

/// JPEG's luma of `img` on 0–255, level-shifted by 128 as the encoder does before its DCT.
fn jpeg_luma(img: &Rgb) -> Vec<f64> {
    let n = img.width * img.height;
    (0..n)
        .map(|i| {
            let px = |c: usize| (img.data[c * n + i] as f64 * 255.0).round();
            0.299 * px(0) + 0.587 * px(1) + 0.114 * px(2) - 128.0
        })
        .collect()
}

/// The orthonormal 8×8 DCT-II (JPEG's) of every whole block of the `w × h` plane `y` on the
/// grid from the top-left corner, row by row; coefficients in natural (row-major) order.
fn block_dcts(y: &[f64], w: usize, h: usize) -> Vec<[f64; 64]> {
    let cos: Vec<f64> = (0..64)
        .map(|k| {
            let (u, x) = (k / 8, k % 8);
            let c = if u == 0 { (0.125f64).sqrt() } else { 0.5 };
            c * ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / 16.0).cos()
        })
        .collect();
    let mut out = Vec::with_capacity((w / 8) * (h / 8));
    for by in 0..h / 8 {
        for bx in 0..w / 8 {
            // Separable: rows[v][x] = Σ_y c(v, y) Y[y][x], then along x.
            let mut rows = [[0f64; 8]; 8];
            for (v, row) in rows.iter_mut().enumerate() {
                for (x, r) in row.iter_mut().enumerate() {
                    *r = (0..8)
                        .map(|yy| cos[v * 8 + yy] * y[(by * 8 + yy) * w + bx * 8 + x])
                        .sum();
                }
            }
            let mut c = [0f64; 64];
            for (k, ck) in c.iter_mut().enumerate() {
                let (v, u) = (k / 8, k % 8);
                *ck = (0..8).map(|x| cos[u * 8 + x] * rows[v][x]).sum();
            }
            out.push(c);
        }
    }
    out
}

/// The JPEG quality from decoded pixels: for the first 14 AC coefficients (zig-zag order) of
/// the 8×8 luma blocks on the grid from the top-left corner, the largest quantisation step
/// their values are multiples of; then the IJG quality whose luma table has those steps.
/// `None` when no coefficient shows a step above 1 (not a JPEG, a resized or shifted one, or
/// one of quality ≳ 95).
pub fn jpeg_quality_from_pixels(img: &Rgb) -> Option<Estimate> {
    let (w, h) = (img.width, img.height);
    if (w / 8) * (h / 8) < 16 {
        return None;
    }
    let blocks = block_dcts(&jpeg_luma(img), w, h);
    let positions: Vec<usize> = ZIGZAG[1..15].to_vec();
    let coefs: Vec<Vec<f64>> = positions
        .iter()
        .map(|&nat| blocks.iter().map(|b| b[nat]).collect())
        .collect();
    // For each IJG quality, how much more often than by chance the coefficients that its
    // table quantises to nonzero values lie within rounding of a multiple of its step: for
    // the true table most of them do; a table of divisors of the true steps matches as often
    // but its chance rate is higher; other tables match by chance.
    let excess = |q: u8| -> Option<f64> {
        let t = ijg_table(false, q);
        let (mut sum, mut used) = (0.0, 0usize);
        for (p, d) in coefs.iter().enumerate() {
            let qf = t[positions[p]] as f64;
            let (mut cnt, mut near) = (0usize, 0usize);
            for &v in d {
                if v.abs() >= qf / 2.0 {
                    cnt += 1;
                    if (v - qf * (v / qf).round()).abs() <= 0.6 {
                        near += 1;
                    }
                }
            }
            if cnt >= 12 {
                sum += near as f64 / cnt as f64 - (1.2 / qf).min(1.0);
                used += 1;
            }
        }
        (used >= 3).then(|| sum / used as f64)
    };
    let scores: Vec<(u8, f64)> = (1..=100u8).filter_map(|q| excess(q).map(|e| (q, e))).collect();
    let best = scores.iter().map(|s| s.1).fold(f64::NEG_INFINITY, f64::max);
    // A photo that was never JPEG-compressed scores about 0 for every table.
    if best.is_nan() || best <= 0.15 {
        return None;
    }
    // Qualities whose tables are equal on the measured positions tie: take their middle.
    let tied: Vec<u8> = scores
        .iter()
        .filter(|s| s.1 >= best - 1e-9)
        .map(|s| s.0)
        .collect();
    Some(Estimate {
        value: tied[tied.len() / 2] as f64,
        confidence: ((best - 0.15) / 0.3).clamp(0.0, 1.0),
    })
}

/// The standard deviation in JPEG's luma of white noise of σ 1 drawn independently per colour
/// channel: ‖(0.299, 0.587, 0.114)‖.
pub const LUMA_NOISE_GAIN: f64 = 0.668_555;

/// Under JPEG compression a noise estimate of at least this (σ on [0, 1], per colour channel) is
/// needed for the clause: at qualities 30–75, 4–7 % of the clean training photos read this much
/// or more, and 82–86 % of those with noise σ 0.05 (`estimate_report --calibrate-jpeg-noise`,
/// docs/estimate.md).
pub const MIN_NOISE_SIGMA_UNDER_JPEG: f64 = 0.045;

/// Below this JPEG quality the noise under it is not read: the steps are so coarse that clean
/// photos read as much as noisy ones (at quality 15: σ 0.039 clean vs 0.053 with σ 0.05, medians
/// of the training photos).
pub const MIN_QUALITY_FOR_NOISE_UNDER_JPEG: u8 = 25;

/// `erfc(x)` for x ≥ 0 (Abramowitz & Stegun 7.1.26, absolute error below 1.5e-7).
fn erfc(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let p = t
        * (0.254_829_592
            + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    p * (-x * x).exp()
}

/// Noise σ (on [0, 1], per colour channel) of an image that went through JPEG compression with
/// the luma quantisation table `table` (natural order), where the finest wavelet band that
/// [`noise_sigma`] reads has been quantised away.
///
/// In the 5 % of the 8×8 luma blocks with the least low-frequency energy (the first two AC
/// coefficients), the picture contributes little to the coefficients of zig-zag positions
/// 3–27 and the noise most of what survives: white noise of σ_Y in luma leaves a coefficient
/// of step Q nonzero with probability erfc(Q / (2√2 σ_Y)). σ_Y is fitted to the observed
/// nonzero rates by maximum likelihood, and divided by [`LUMA_NOISE_GAIN`]. On a clean photo
/// with fine texture everywhere the flattest blocks are not flat, so a few clean photos read
/// above [`MIN_NOISE_SIGMA_UNDER_JPEG`] (up to 0.1 among the training photos). `None` below
/// 320 blocks (smaller than about 144×144).
pub fn noise_sigma_under_jpeg(img: &Rgb, table: &[u16; 64]) -> Option<Estimate> {
    let (w, h) = (img.width, img.height);
    let blocks = block_dcts(&jpeg_luma(img), w, h);
    if blocks.len() < 320 {
        return None;
    }
    let mut order: Vec<(f64, usize)> = blocks
        .iter()
        .enumerate()
        .map(|(i, b)| (b[ZIGZAG[1]].abs() + b[ZIGZAG[2]].abs(), i))
        .collect();
    order.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let flat = &order[..blocks.len() / 20];
    let n = flat.len() as f64;
    // (step, count of nonzero quantised values) per position.
    let rates: Vec<(f64, f64)> = ZIGZAG[3..28]
        .iter()
        .map(|&nat| {
            let q = table[nat].max(1) as f64;
            let nz = flat
                .iter()
                .filter(|&&(_, i)| blocks[i][nat].abs() >= q / 2.0)
                .count();
            (q, nz as f64)
        })
        .collect();
    let loglik = |sy: f64| -> f64 {
        rates
            .iter()
            .map(|&(q, k)| {
                let p = erfc(q / (2.0 * std::f64::consts::SQRT_2 * sy)).clamp(1e-9, 1.0 - 1e-9);
                k * p.ln() + (n - k) * (1.0 - p).ln()
            })
            .sum()
    };
    // σ_Y on 0–255 over a geometric grid from 0.1 to 80.
    let (mut best, mut best_ll) = (0.1, f64::NEG_INFINITY);
    for i in 0..=600 {
        let sy = 0.1 * 800f64.powf(i as f64 / 600.0);
        let ll = loglik(sy);
        if ll > best_ll {
            (best, best_ll) = (sy, ll);
        }
    }
    Some(Estimate {
        value: best / 255.0 / LUMA_NOISE_GAIN,
        confidence: (n / 64.0).min(1.0),
    })
}

/// Everything [`RestorationPrompt::estimate`] measured, and the prompt it made.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptEstimate {
    /// The prompt: the clauses whose estimates are confident and large enough.
    pub prompt: RestorationPrompt,
    /// Noise σ on [0, 1].
    pub noise: Estimate,
    /// Gaussian blur σ in the input's pixels (the prompt's σ is in output pixels: × scale).
    pub blur: Estimate,
    /// JPEG quality and where it came from; `None`: no sign of JPEG.
    pub jpeg: Option<(Estimate, JpegSource)>,
    /// The upsampling factor, when an output size was requested.
    pub scale: Option<Estimate>,
}

fn centre_crop(img: &Rgb, side: usize) -> Rgb {
    let (w, h) = (img.width, img.height);
    if w <= side && h <= side {
        return img.clone();
    }
    // Crop on the 8-pixel grid so JPEG blocks stay aligned.
    let (cw, ch) = (w.min(side), h.min(side));
    let x0 = ((w - cw) / 2) / 8 * 8;
    let y0 = ((h - ch) / 2) / 8 * 8;
    let mut data = Vec::with_capacity(3 * cw * ch);
    for c in 0..3 {
        for y in y0..y0 + ch {
            let row = c * w * h + y * w;
            data.extend_from_slice(&img.data[row + x0..row + x0 + cw]);
        }
    }
    Rgb {
        width: cw,
        height: ch,
        data,
    }
}

impl RestorationPrompt {
    /// Estimates the restoration prompt of `image`: its noise σ, blur σ and JPEG quality
    /// (exact from `source`'s tables when it is a JPEG file), each kept when its confidence is
    /// at least [`MIN_CONFIDENCE`] and it is large enough to matter ([`MIN_NOISE_SIGMA`],
    /// [`MIN_BLUR_SIGMA`], [`MAX_JPEG_QUALITY`]). A clean photo gives the blind prompt.
    ///
    /// # Errors
    /// [`Error::InvalidImage`] for an image the estimators cannot read (as
    /// [`ImageView::to_planar_rgb`]).
    pub fn estimate(image: &ImageView, source: Option<&SourceInfo>) -> Result<PromptEstimate> {
        Self::estimate_for_size(image, source, None)
    }

    /// [`RestorationPrompt::estimate`] for an output of `target` (width, height): the scale is
    /// the ratio of the sizes (the mean of the two axes; kept from ×1.1), and the blur σ is
    /// given in output pixels, as the prompt language defines it.
    ///
    /// # Errors
    /// As [`RestorationPrompt::estimate`]; [`Error::InvalidArgument`] (`output size`) for a
    /// target smaller than the image or beyond the prompt language's ×8.
    pub fn estimate_for_size(
        image: &ImageView,
        source: Option<&SourceInfo>,
        target: Option<(usize, usize)>,
    ) -> Result<PromptEstimate> {
        let (w, h) = (image.width(), image.height());
        let rgb = centre_crop(&Rgb::from_view(image)?, MAX_SIDE);
        let noise = noise_sigma(&rgb);
        let blur = blur_sigma(&rgb, noise.value);
        let jpeg = match source.and_then(|s| s.jpeg_tables.as_ref()) {
            Some(t) => Some(jpeg_quality_from_tables(t)),
            None => jpeg_quality_from_pixels(&rgb).map(|e| (e, JpegSource::Pixels)),
        };
        // Under JPEG the finest band the MAD reads is quantised away: read the noise from the
        // flattest blocks' DCT instead (the file's own luma table when there is one), and keep
        // it when it exceeds what clean photos read there.
        let mut noise = noise;
        if let Some((q, _)) = jpeg.filter(|(e, _)| {
            e.confidence >= MIN_CONFIDENCE && e.value >= MIN_QUALITY_FOR_NOISE_UNDER_JPEG as f64
        }) {
            let table = match source.and_then(|s| s.jpeg_tables.as_ref()) {
                Some(t) => t.luma,
                None => ijg_table(false, q.value.round().clamp(1.0, 100.0) as u8),
            };
            if let Some(e) = noise_sigma_under_jpeg(&rgb, &table) {
                if e.value >= MIN_NOISE_SIGMA_UNDER_JPEG && e.value > noise.value {
                    noise = e;
                }
            }
        }
        let scale = match target {
            None => None,
            Some((tw, th)) => {
                let f = (tw as f64 / w as f64 + th as f64 / h as f64) / 2.0;
                let (lo, hi) = crate::prompt::ranges::UPSAMPLE_SCALE;
                if !(lo..=hi + 0.05).contains(&f) {
                    return Err(Error::invalid_arg(
                        "output size",
                        format!(
                            "{tw}×{th} from a {w}×{h} image is a scale of {f:.2}; the prompt language takes {lo}–{hi}"
                        ),
                    ));
                }
                Some(Estimate {
                    value: f,
                    confidence: 1.0,
                })
            }
        };
        let factor = scale.map_or(1.0, |s| s.value);
        let mut prompt = RestorationPrompt::blind();
        let keep = |e: &Estimate| e.confidence >= MIN_CONFIDENCE;
        let (dlo, dhi) = crate::prompt::ranges::DEBLUR_SIGMA;
        if keep(&blur) && blur.value >= MIN_BLUR_SIGMA {
            prompt = prompt.with_deblur((blur.value * factor).clamp(dlo, dhi))?;
        }
        if let Some(s) = scale {
            if s.value >= 1.1 {
                prompt = prompt.with_upsample(s.value.min(8.0))?;
            }
        }
        if keep(&noise) && noise.value >= MIN_NOISE_SIGMA {
            prompt = prompt.with_denoise(noise.value.min(1.0))?;
        }
        if let Some((e, _)) = jpeg {
            if keep(&e) && e.value <= MAX_JPEG_QUALITY as f64 {
                prompt = prompt.with_dejpeg(e.value as u32)?;
            }
        }
        Ok(PromptEstimate {
            prompt,
            noise,
            blur,
            jpeg,
            scale,
        })
    }
}

/// The prompt `"auto"` restores with: the estimate of `image` with the `given` clauses kept
/// (they win). A given upsample scale with `upsample_input` (the input is the small image)
/// asks for an output that much larger, so the blur σ is measured in output pixels; without
/// `upsample_input` the input already has the output size.
///
/// # Errors
/// As [`RestorationPrompt::estimate_for_size`].
pub fn auto_prompt(
    image: &ImageView,
    source: Option<&SourceInfo>,
    given: &RestorationPrompt,
    upsample_input: bool,
) -> Result<PromptEstimate> {
    let target = match given.upsample_scale_f64() {
        Some(f) if upsample_input => Some((
            ((image.width() as f64 * f).round() as usize).max(1),
            ((image.height() as f64 * f).round() as usize).max(1),
        )),
        _ => None,
    };
    let mut est = RestorationPrompt::estimate_for_size(image, source, target)?;
    let mut p = est.prompt;
    if let Some(s) = given.deblur_sigma_f64() {
        p = p.with_deblur(s)?;
    }
    if let Some(f) = given.upsample_scale_f64() {
        p = p.with_upsample(f)?;
    }
    if let Some(s) = given.denoise_sigma_f64() {
        p = p.with_denoise(s)?;
    }
    if let Some(q) = given.dejpeg_quality() {
        p = p.with_dejpeg(q as u32)?;
    }
    est.prompt = p;
    Ok(est)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ijg_tables_equal_the_encoders_at_every_quality() {
        for q in 1..=100u8 {
            assert_eq!(
                ijg_table(false, q),
                crate::degrade::ops::jpeg_luma_table(q).unwrap(),
                "q {q}"
            );
            assert_eq!(
                ijg_table(true, q),
                crate::degrade::ops::jpeg_chroma_table(q).unwrap(),
                "q {q}"
            );
        }
    }

    #[test]
    fn the_blur_calibration_is_increasing_continuous_and_hits_its_points() {
        let t = &BLUR_CALIBRATION;
        for w in t.windows(2) {
            assert!(w[1].0 > w[0].0 && w[1].1 > w[0].1, "{w:?}");
        }
        for &(width, sigma) in t {
            assert!((calibrated_blur(width) - sigma).abs() < 1e-12, "{width}");
            // No jump at a point: just below and just above agree.
            assert!((calibrated_blur(width + 1e-9) - calibrated_blur(width - 1e-9)).abs() < 1e-6);
        }
        assert_eq!(calibrated_blur(f64::NAN), 0.0);
        assert_eq!(calibrated_blur(-3.0), 0.0);
        assert!((calibrated_blur(t[t.len() - 1].0 + 2.0) - (t[t.len() - 1].1 + 2.0)).abs() < 1e-12);
        let mut prev = 0.0;
        for i in 0..=800 {
            let s = calibrated_blur(i as f64 / 100.0);
            assert!(s >= prev, "not monotone at {}", i as f64 / 100.0);
            prev = s;
        }
    }

    #[test]
    fn malformed_jpeg_headers_are_named_errors_not_panics() {
        assert!(SourceInfo::from_bytes(b"", "x").unwrap().jpeg_tables.is_none());
        assert!(SourceInfo::from_bytes(b"\x89PNG", "x")
            .unwrap()
            .jpeg_tables
            .is_none());
        // A DQT segment that claims more bytes than the file has.
        let e = SourceInfo::from_bytes(&[0xFF, 0xD8, 0xFF, 0xDB, 0x10, 0x00, 0x00], "bad.jpg").unwrap_err();
        assert!(e.to_string().contains("bad.jpg"), "{e}");
        // A table that runs past its segment.
        let mut b = vec![0xFF, 0xD8, 0xFF, 0xDB, 0x00, 0x10, 0x00];
        b.extend([1u8; 14]);
        b.extend([0xFF, 0xD9]);
        assert!(SourceInfo::from_bytes(&b, "t.jpg").is_err());
        // Precision 2 does not exist.
        let mut b = vec![0xFF, 0xD8, 0xFF, 0xDB, 0x00, 0x43, 0x20];
        b.extend([1u8; 64]);
        assert!(SourceInfo::from_bytes(&b, "t.jpg").is_err());
    }
}
