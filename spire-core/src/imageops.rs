//! Image resampling and padding on planar f32 images.
//!
//! [`resize_bicubic`] is PIL's `Image.resize(…, Image.BICUBIC)` algorithm (a = −0.5 cubic,
//! support scaled by the shrink factor so downsizing is antialiased, weights renormalised at
//! the borders, horizontal pass then vertical), computed in f32 storage with f64 sums as PIL
//! does for float images.

use rayon::prelude::*;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// For each output index: first input index and normalised weights (PIL `precompute_coeffs`).
pub(crate) fn coeffs(in_size: usize, out_size: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            let xmin = ((center - support + 0.5) as isize).max(0) as usize;
            let xmax = ((center + support + 0.5) as isize)
                .min(in_size as isize)
                .max(xmin as isize) as usize;
            let mut w: Vec<f64> = (xmin..xmax)
                .map(|x| bicubic((x as f64 - center + 0.5) * ss))
                .collect();
            let sum: f64 = w.iter().sum();
            if sum != 0.0 {
                for v in &mut w {
                    *v /= sum;
                }
            }
            (xmin, w)
        })
        .collect()
}

/// Resizes one `h × w` plane to `oh × ow`.
pub(crate) fn resize_plane(src: &[f32], w: usize, h: usize, ow: usize, oh: usize) -> Vec<f32> {
    // Horizontal pass (skipped when the width is unchanged), then vertical.
    let tmp: Vec<f32> = if ow == w {
        src.to_vec()
    } else {
        let cx = coeffs(w, ow);
        let mut tmp = vec![0f32; h * ow];
        tmp.par_chunks_mut(ow)
            .zip(src.par_chunks(w))
            .for_each(|(out, row)| {
                for (o, (x0, k)) in out.iter_mut().zip(&cx) {
                    let s: f64 = k.iter().enumerate().map(|(i, &kk)| row[x0 + i] as f64 * kk).sum();
                    *o = s as f32;
                }
            });
        tmp
    };
    if oh == h {
        return tmp;
    }
    let cy = coeffs(h, oh);
    let mut out = vec![0f32; oh * ow];
    out.par_chunks_mut(ow)
        .zip(cy.par_iter())
        .for_each(|(orow, (y0, k))| {
            let mut acc = vec![0f64; ow];
            for (i, &kk) in k.iter().enumerate() {
                let row = &tmp[(y0 + i) * ow..(y0 + i + 1) * ow];
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a += v as f64 * kk;
                }
            }
            for (o, a) in orow.iter_mut().zip(acc) {
                *o = a as f32;
            }
        });
    out
}

/// Resizes `c` planes (`c × h × w`) to `c × oh × ow` with PIL's bicubic filter.
pub fn resize_bicubic(src: &[f32], c: usize, w: usize, h: usize, ow: usize, oh: usize) -> Vec<f32> {
    if ow == w && oh == h {
        return src.to_vec();
    }
    let mut out = Vec::with_capacity(c * ow * oh);
    for p in src.chunks(w * h).take(c) {
        out.extend(resize_plane(p, w, h, ow, oh));
    }
    out
}

/// PIL's 8-bit fixed-point weights: 22 fractional bits, rounded half away from zero.
const PRECISION_BITS: u32 = 32 - 8 - 2;

fn fixed(k: &[f64]) -> Vec<i32> {
    let one = (1u32 << PRECISION_BITS) as f64;
    k.iter()
        .map(|&v| {
            if v < 0.0 {
                (-0.5 + v * one) as i32
            } else {
                (0.5 + v * one) as i32
            }
        })
        .collect()
}

fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes `c` 8-bit planes (`c × h × w`) to `c × oh × ow` exactly as PIL resizes 8-bit
/// images with `Image.BICUBIC`: fixed-point weights, and the horizontal pass rounded and
/// clipped to 8 bits before the vertical pass.
pub fn resize_bicubic_u8(src: &[u8], c: usize, w: usize, h: usize, ow: usize, oh: usize) -> Vec<u8> {
    let cx: Vec<(usize, Vec<i32>)> = coeffs(w, ow).into_iter().map(|(x0, k)| (x0, fixed(&k))).collect();
    let cy: Vec<(usize, Vec<i32>)> = coeffs(h, oh).into_iter().map(|(y0, k)| (y0, fixed(&k))).collect();
    let half = 1i32 << (PRECISION_BITS - 1);
    let mut out = Vec::with_capacity(c * ow * oh);
    for plane in src.chunks(w * h).take(c) {
        let tmp: Vec<u8> = if ow == w {
            plane.to_vec()
        } else {
            plane
                .chunks(w)
                .flat_map(|row| {
                    cx.iter().map(move |(x0, k)| {
                        clip8(
                            k.iter()
                                .enumerate()
                                .fold(half, |a, (i, &kk)| a + row[x0 + i] as i32 * kk),
                        )
                    })
                })
                .collect()
        };
        if oh == h {
            out.extend(tmp);
            continue;
        }
        for (y0, k) in &cy {
            for x in 0..ow {
                let acc = k
                    .iter()
                    .enumerate()
                    .fold(half, |a, (i, &kk)| a + tmp[(y0 + i) * ow + x] as i32 * kk);
                out.push(clip8(acc));
            }
        }
    }
    out
}

/// Mirror index (numpy `reflect`: the edge sample is not repeated), any distance from the edge.
fn reflect(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let p = 2 * (n as isize - 1);
    let m = i.rem_euclid(p);
    (if m < n as isize { m } else { p - m }) as usize
}

/// Pads `c` planes on the right and bottom to `ow × oh` by mirror reflection.
pub(crate) fn pad_reflect(src: &[f32], c: usize, w: usize, h: usize, ow: usize, oh: usize) -> Vec<f32> {
    if ow == w && oh == h {
        return src.to_vec();
    }
    let mut out = vec![0f32; c * ow * oh];
    for ch in 0..c {
        let s = &src[ch * w * h..(ch + 1) * w * h];
        let o = &mut out[ch * ow * oh..(ch + 1) * ow * oh];
        for y in 0..oh {
            let sy = reflect(y as isize, h);
            for x in 0..ow {
                o[y * ow + x] = s[sy * w + reflect(x as isize, w)];
            }
        }
    }
    out
}

/// Crops `c` planes of `w × h` to their top-left `ow × oh`.
pub(crate) fn crop(src: &[f32], c: usize, w: usize, h: usize, ow: usize, oh: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(c * ow * oh);
    for ch in 0..c {
        for y in 0..oh {
            let r = ch * w * h + y * w;
            out.extend_from_slice(&src[r..r + ow]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_indices() {
        let v: Vec<usize> = (-3..8).map(|i| reflect(i, 4)).collect();
        assert_eq!(v, vec![3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1]);
        assert_eq!(reflect(5, 1), 0);
    }

    #[test]
    fn resize_keeps_constants_and_identity() {
        let src = vec![0.25f32; 7 * 5];
        for (ow, oh) in [(14, 10), (3, 2), (7, 9), (1, 1)] {
            let out = resize_plane(&src, 7, 5, ow, oh);
            assert!(out.iter().all(|&v| (v - 0.25).abs() < 1e-6));
        }
        let ramp: Vec<f32> = (0..35).map(|i| i as f32).collect();
        assert_eq!(resize_bicubic(&ramp, 1, 7, 5, 7, 5), ramp);
    }
}
