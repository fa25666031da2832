//! Large images: latent tiles for sampling and the memory plan that sizes them.
//!
//! When the latent is larger than a tile, every denoising step runs the adaptor and the
//! backbone on overlapping tiles (each tile's hint cut from the same place) and blends their
//! predictions with Gaussian weights, so tiles leave no seams; the scheduler then steps the
//! whole latent. The plan is a pure function of the image size, the model and the options,
//! so the same seed and tiling give the same result; a single tile covering the latent is
//! exactly the untiled computation.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// How the latent is cut into tiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TilePlan {
    /// Tile height and width in latent pixels.
    pub tile: (usize, usize),
    /// Top rows of the tiles.
    pub ys: Vec<usize>,
    /// Left columns of the tiles.
    pub xs: Vec<usize>,
    /// The working-memory estimate of one step, bytes.
    pub estimated_bytes: u64,
}

impl TilePlan {
    /// A plan with `tile × tile` tiles (clipped to the latent) overlapping by `overlap`, every
    /// offset a multiple of `multiple`.
    pub fn new(h: usize, w: usize, tile: usize, overlap: usize, multiple: usize) -> Result<Self> {
        let m = multiple.max(1);
        let t = (tile / m).max(1) * m;
        let positions = |n: usize| -> Result<(usize, Vec<usize>)> {
            if t >= n {
                return Ok((n, vec![0]));
            }
            let ov = (overlap.min(t - m) / m) * m;
            let stride = (t - ov).max(m);
            let mut v = Vec::new();
            let mut p = 0;
            loop {
                if p + t >= n {
                    v.push(n - t);
                    break;
                }
                v.push(p);
                p += stride;
            }
            v.dedup();
            Ok((t, v))
        };
        let (th, ys) = positions(h)?;
        let (tw, xs) = positions(w)?;
        if th % m != 0 || tw % m != 0 {
            return Err(Error::Internal(format!(
                "tile {th}×{tw} is not a multiple of {m}"
            )));
        }
        Ok(Self {
            tile: (th, tw),
            ys,
            xs,
            estimated_bytes: 0,
        })
    }

    /// Whether one tile covers the latent.
    pub fn is_single(&self) -> bool {
        self.ys.len() == 1 && self.xs.len() == 1
    }

    /// Number of tiles.
    pub fn len(&self) -> usize {
        self.ys.len() * self.xs.len()
    }

    /// Whether the plan has no tiles (never: a plan has at least one).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A one-line description for progress reports.
    pub fn describe(&self, h: usize, w: usize) -> String {
        if self.is_single() {
            format!(
                "latent {w}×{h} in one piece (~{} MiB per step)",
                self.estimated_bytes >> 20
            )
        } else {
            format!(
                "latent {w}×{h} in {} tiles of {}×{} (~{} MiB per step)",
                self.len(),
                self.tile.1,
                self.tile.0,
                self.estimated_bytes >> 20
            )
        }
    }

    /// Runs `f` on every tile (a `[n, c, th, tw]` crop of `x`, plus the tile's top-left corner)
    /// and blends the results with Gaussian weights (σ = a sixth of the tile, so a tile edge
    /// counts 1 % of its centre) into a tensor
    /// of `x`'s shape. A single tile is returned unblended.
    pub fn blend(
        &self,
        x: &Tensor,
        f: &mut dyn FnMut(&Tensor, usize, usize) -> Result<Tensor>,
    ) -> Result<Tensor> {
        if self.is_single() {
            return f(x, 0, 0);
        }
        let (n, c, h, w) = x.dims4()?;
        let (th, tw) = self.tile;
        let g = |len: usize| -> Vec<f32> {
            let mid = (len as f32 - 1.0) / 2.0;
            let s = len as f32 / 6.0;
            (0..len)
                .map(|i| (-((i as f32 - mid).powi(2)) / (2.0 * s * s)).exp())
                .collect()
        };
        let (gy, gx) = (g(th), g(tw));
        // The weights are geometry, made once on the host; the data stays on `x`'s device (a
        // GPU's latents are cut, blended and stitched there), accumulated in f32.
        let dev = x.device();
        let gw: Vec<f32> = gy.iter().flat_map(|&a| gx.iter().map(move |&b| a * b)).collect();
        let mut wsum = vec![0f32; h * w];
        for &y0 in &self.ys {
            for &x0 in &self.xs {
                for (yy, row) in gw.chunks(tw).enumerate() {
                    let dst = &mut wsum[(y0 + yy) * w + x0..(y0 + yy) * w + x0 + tw];
                    dst.iter_mut().zip(row).for_each(|(d, &v)| *d += v);
                }
            }
        }
        let gw = Tensor::from_vec(gw, (1, 1, th, tw), dev)?;
        let mut acc = Tensor::zeros((n, c, h, w), DType::F32, dev)?;
        for &y0 in &self.ys {
            for &x0 in &self.xs {
                let crop = x.narrow(2, y0, th)?.narrow(3, x0, tw)?.contiguous()?;
                let out = f(&crop, y0, x0)?.to_dtype(DType::F32)?.broadcast_mul(&gw)?;
                let placed = out
                    .pad_with_zeros(2, y0, h - y0 - th)?
                    .pad_with_zeros(3, x0, w - x0 - tw)?;
                acc = (acc + placed)?;
            }
        }
        Ok(acc.broadcast_div(&Tensor::from_vec(wsum, (1, 1, h, w), dev)?)?)
    }
}

/// Bytes of memory the system reports available (Linux `MemAvailable`), if known.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn plans_cover_the_latent_with_aligned_tiles() {
        let p = TilePlan::new(100, 36, 32, 8, 4).unwrap();
        assert_eq!(p.tile, (32, 32));
        assert_eq!(*p.ys.last().unwrap() + 32, 100);
        assert_eq!(p.xs, vec![0, 4]);
        assert!(p.ys.iter().chain(&p.xs).all(|v| v % 4 == 0));
        let single = TilePlan::new(16, 24, 64, 8, 4).unwrap();
        assert!(single.is_single() && single.tile == (16, 24));
    }

    #[test]
    fn blending_a_constant_gives_the_constant() {
        let x = Tensor::ones((1, 2, 40, 52), candle_core::DType::F32, &Device::Cpu).unwrap();
        let p = TilePlan::new(40, 52, 16, 4, 4).unwrap();
        let out = p.blend(&x, &mut |t, _, _| Ok((t * 3.0)?)).unwrap();
        let v: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|&a| (a - 3.0).abs() < 1e-5));
    }
}
