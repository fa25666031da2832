//! The autoencoder of a model: diffusers' `AutoencoderKL`, or a parameter-free pixel-shuffle
//! autoencoder (the "latent" is the image rearranged into `3·f²` channels at `1/f` of the size,
//! `torch.nn.functional.pixel_unshuffle`), which small models use: it reconstructs exactly, so
//! restoration fidelity is not capped by an autoencoder.
//!
//! A pixel-shuffle `vae/config.json`: `{"_class_name": "PixelShuffleAutoencoder", "factor": 4,
//! "scaling_factor": 2.0, "shift_factor": 0.0}` and no weight file.

use std::path::Path;

use candle_core::{Result, Tensor};

use super::config::{Json, VaeConfig};
use super::load::LoadOptions;
use super::vae::AutoencoderKL;
use super::vae_tiled::{VaePass, VaeTiling};

/// The parameter-free autoencoder.
#[derive(Debug, Clone, PartialEq)]
pub struct PixelShuffle {
    /// Pixels per latent pixel along each axis.
    pub factor: usize,
    /// Latents are multiplied by this after encoding.
    pub scaling_factor: f64,
    /// … after subtracting this.
    pub shift_factor: f64,
}

impl PixelShuffle {
    /// `[b, c, h, w]` → `[b, c·f², h/f, w/f]`.
    pub fn unshuffle(&self, x: &Tensor) -> Result<Tensor> {
        let f = self.factor;
        let (b, c, h, w) = x.dims4()?;
        if h % f != 0 || w % f != 0 {
            candle_core::bail!("pixel unshuffle: {h}×{w} is not a multiple of {f}");
        }
        x.reshape((b, c, h / f, f, w / f, f))?
            .permute((0, 1, 3, 5, 2, 4))?
            .reshape((b, c * f * f, h / f, w / f))
    }

    /// `[b, c·f², h, w]` → `[b, c, h·f, w·f]`.
    pub fn shuffle(&self, z: &Tensor) -> Result<Tensor> {
        let f = self.factor;
        let (b, cf, h, w) = z.dims4()?;
        let c = cf / (f * f);
        z.reshape((b, c, f, f, h, w))?
            .permute((0, 1, 4, 2, 5, 3))?
            .reshape((b, c, h * f, w * f))
    }
}

/// Runs `f` on `x` cast to the autoencoder's own dtype (float32 for a `force_upcast` model
/// loaded in float16) and casts the result back to `x`'s dtype.
fn in_own_dtype(v: &AutoencoderKL, x: &Tensor, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    f(&x.to_dtype(v.dtype())?)?.to_dtype(x.dtype())
}

/// Either autoencoder, behind one interface. Its methods take and return tensors of any float
/// dtype: an `AutoencoderKL` computes in its own (see [`AutoencoderKL::from_dir`]).
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per loaded model; boxing buys nothing
pub enum Autoencoder {
    /// diffusers `AutoencoderKL`.
    Kl(AutoencoderKL),
    /// Parameter-free pixel (un)shuffle.
    PixelShuffle(PixelShuffle),
}

impl From<AutoencoderKL> for Autoencoder {
    fn from(v: AutoencoderKL) -> Self {
        Autoencoder::Kl(v)
    }
}

impl Autoencoder {
    /// Loads `vae/`: a pixel-shuffle config, or an `AutoencoderKL` folder.
    ///
    /// # Errors
    /// As [`AutoencoderKL::from_dir`].
    pub fn from_dir(dir: &Path, opts: &LoadOptions) -> crate::Result<Self> {
        let cfg_path = dir.join("config.json");
        if cfg_path.is_file() {
            let j = Json::read(&cfg_path)?;
            if j.str_or("_class_name", "")? == "PixelShuffleAutoencoder" {
                let factor = j.usize_or("factor", 4)?;
                if factor == 0 {
                    return Err(j.err("factor", "must be at least 1"));
                }
                return Ok(Autoencoder::PixelShuffle(PixelShuffle {
                    factor,
                    scaling_factor: j.scaling_factor_or(1.0)?,
                    shift_factor: j.f64_in("shift_factor", 0.0, "|x| ≤ 1e6", |x| x.abs() <= 1e6)?,
                }));
            }
        }
        Ok(Autoencoder::Kl(AutoencoderKL::from_dir(dir, opts)?))
    }

    /// Latent channels.
    pub fn latent_channels(&self) -> usize {
        match self {
            Autoencoder::Kl(v) => v.config().latent_channels,
            Autoencoder::PixelShuffle(p) => 3 * p.factor * p.factor,
        }
    }

    /// Pixels per latent pixel.
    pub fn downscale_factor(&self) -> usize {
        match self {
            Autoencoder::Kl(v) => v.config().downscale_factor(),
            Autoencoder::PixelShuffle(p) => p.factor,
        }
    }

    /// The latent distribution's mean of images in [-1, 1] (unscaled).
    pub fn encode_mean(&self, x: &Tensor) -> Result<Tensor> {
        self.encode_mean_tiled(x, None)
    }

    /// [`Autoencoder::encode_mean`], with an `AutoencoderKL`'s high-resolution layers in
    /// tiles when `tiling` is given (the result equals the untiled one up to float error).
    pub fn encode_mean_tiled(&self, x: &Tensor, tiling: Option<VaeTiling>) -> Result<Tensor> {
        match (self, tiling) {
            (Autoencoder::Kl(v), None) => in_own_dtype(v, x, |x| Ok(v.encode(x)?.mean)),
            (Autoencoder::Kl(v), Some(t)) => in_own_dtype(v, x, |x| Ok(v.encode_tiled(x, t)?.mean)),
            (Autoencoder::PixelShuffle(p), _) => p.unshuffle(x),
        }
    }

    /// A latent sample of images in [-1, 1] (unscaled), with standard normal `noise` of the
    /// latent's shape (unused by the deterministic pixel shuffle).
    pub fn encode_sample(&self, x: &Tensor, noise: &Tensor) -> Result<Tensor> {
        self.encode_sample_tiled(x, noise, None)
    }

    /// [`Autoencoder::encode_sample`], tiled as [`Autoencoder::encode_mean_tiled`].
    pub fn encode_sample_tiled(
        &self,
        x: &Tensor,
        noise: &Tensor,
        tiling: Option<VaeTiling>,
    ) -> Result<Tensor> {
        match (self, tiling) {
            (Autoencoder::Kl(v), None) => {
                in_own_dtype(v, x, |x| v.encode(x)?.sample_with(&noise.to_dtype(v.dtype())?))
            }
            (Autoencoder::Kl(v), Some(t)) => in_own_dtype(v, x, |x| {
                v.encode_tiled(x, t)?.sample_with(&noise.to_dtype(v.dtype())?)
            }),
            (Autoencoder::PixelShuffle(p), _) => p.unshuffle(x),
        }
    }

    /// Images in (about) [-1, 1] from unscaled latents.
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        self.decode_tiled(z, None)
    }

    /// [`Autoencoder::decode`], tiled as [`Autoencoder::encode_mean_tiled`].
    pub fn decode_tiled(&self, z: &Tensor, tiling: Option<VaeTiling>) -> Result<Tensor> {
        match (self, tiling) {
            (Autoencoder::Kl(v), None) => in_own_dtype(v, z, |z| v.decode(z)),
            (Autoencoder::Kl(v), Some(t)) => in_own_dtype(v, z, |z| v.decode_tiled(z, t)),
            (Autoencoder::PixelShuffle(p), _) => p.shuffle(z),
        }
    }

    /// Working memory of `pass` over `n` inputs of `h × w` (image pixels when encoding,
    /// latent pixels when decoding), bytes.
    pub fn working_bytes(
        &self,
        pass: VaePass,
        n: usize,
        h: usize,
        w: usize,
        tiling: Option<VaeTiling>,
    ) -> u64 {
        match self {
            Autoencoder::Kl(v) => v.working_bytes(pass, n, h, w, tiling),
            // Input and output of the rearrangement, f32.
            Autoencoder::PixelShuffle(p) => {
                let px = match pass {
                    VaePass::Encode => h * w,
                    VaePass::Decode => h * w * p.factor * p.factor,
                };
                (2 * n * 3 * px * 4) as u64
            }
        }
    }

    /// The tiling that keeps `pass` under `budget` bytes, `None` if it fits whole (always for
    /// the pixel shuffle).
    pub fn plan_tiling(&self, pass: VaePass, n: usize, h: usize, w: usize, budget: u64) -> Option<VaeTiling> {
        match self {
            Autoencoder::Kl(v) => v.plan_tiling(pass, n, h, w, budget),
            Autoencoder::PixelShuffle(_) => None,
        }
    }

    fn factors(&self) -> (f64, f64) {
        match self {
            Autoencoder::Kl(v) => (v.config().scaling_factor, v.config().shift_factor),
            Autoencoder::PixelShuffle(p) => (p.scaling_factor, p.shift_factor),
        }
    }

    /// Unscaled latent → diffusion latent: `(z − shift) · scale`.
    pub fn scale_latents(&self, z: &Tensor) -> Result<Tensor> {
        let (s, sh) = self.factors();
        (z - sh)? * s
    }

    /// Diffusion latent → unscaled latent.
    pub fn unscale_latents(&self, z: &Tensor) -> Result<Tensor> {
        let (s, sh) = self.factors();
        (z / s)? + sh
    }

    /// For a linear autoencoder (pixel shuffle), the factor from pixel intensities in
    /// [−1, 1] to diffusion latents; `None` for a learned one.
    pub fn linear_latent_scale(&self) -> Option<f64> {
        match self {
            Autoencoder::PixelShuffle(p) => Some(p.scaling_factor),
            Autoencoder::Kl(_) => None,
        }
    }

    /// The `AutoencoderKL` config, if this is one.
    pub fn kl_config(&self) -> Option<&VaeConfig> {
        match self {
            Autoencoder::Kl(v) => Some(v.config()),
            Autoencoder::PixelShuffle(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn shuffle_inverts_unshuffle_in_torch_channel_order() {
        let p = PixelShuffle {
            factor: 2,
            scaling_factor: 1.0,
            shift_factor: 0.0,
        };
        let x = Tensor::arange(0f32, 32.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 2, 4, 4))
            .unwrap();
        let z = p.unshuffle(&x).unwrap();
        assert_eq!(z.dims(), &[1, 8, 2, 2]);
        // torch.nn.functional.pixel_unshuffle: channel c·f² + i·f + j holds x[c, i::f, j::f].
        let z0: Vec<f32> = z
            .get(0)
            .unwrap()
            .get(1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(z0, vec![1.0, 3.0, 9.0, 11.0]);
        let back = p.shuffle(&z).unwrap();
        assert_eq!(
            back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            x.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
}
