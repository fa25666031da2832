//! diffusers `AutoencoderKL`: encoder to a diagonal Gaussian over latents, decoder back to
//! pixels, and the latent scaling factor.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::blocks::{DownBlock, DownBlockConfig, MidBlock, ResnetConfig, UpBlock, UpBlockConfig};
use super::config::VaeConfig;
use super::nn::{conv2d, group_norm, Conv2d, GroupNorm};

fn resnet_cfg(cfg: &VaeConfig) -> ResnetConfig {
    ResnetConfig {
        temb_channels: None,
        groups: cfg.norm_num_groups,
        eps: 1e-6,
        act: cfg.act_fn,
        output_scale_factor: 1.0,
    }
}

/// diffusers `Encoder` (`double_z=True`).
#[derive(Debug, Clone)]
pub struct Encoder {
    pub(crate) conv_in: Conv2d,
    pub(crate) down_blocks: Vec<DownBlock>,
    pub(crate) mid_block: MidBlock,
    pub(crate) conv_norm_out: GroupNorm,
    pub(crate) conv_out: Conv2d,
    pub(crate) cfg: VaeConfig,
}

impl Encoder {
    /// Under `vb` = `encoder`.
    pub fn new(cfg: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        let boc = &cfg.block_out_channels;
        let n = boc.len();
        let mut out = boc[0];
        let mut down_blocks = Vec::with_capacity(n);
        for (i, &c) in boc.iter().enumerate() {
            let c_in = out;
            out = c;
            down_blocks.push(DownBlock::new(
                DownBlockConfig {
                    c_in,
                    c_out: out,
                    layers: cfg.layers_per_block,
                    attention: None,
                    downsample: i + 1 != n,
                    downsample_padding: 0,
                    resnet: resnet_cfg(cfg),
                },
                vb.pp("down_blocks").pp(i),
            )?);
        }
        let last = boc[n - 1];
        Ok(Self {
            conv_in: conv2d(cfg.in_channels, boc[0], 3, 1, 1, vb.pp("conv_in"))?,
            down_blocks,
            mid_block: MidBlock::spatial(
                last,
                cfg.mid_block_add_attention,
                resnet_cfg(cfg),
                vb.pp("mid_block"),
            )?,
            conv_norm_out: group_norm(cfg.norm_num_groups, last, 1e-6, vb.pp("conv_norm_out"))?,
            conv_out: conv2d(last, 2 * cfg.latent_channels, 3, 1, 1, vb.pp("conv_out"))?,
            cfg: cfg.clone(),
        })
    }
}

impl Module for Encoder {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(xs)?;
        let mut unused = Vec::new();
        for block in &self.down_blocks {
            h = block.forward(&h, None, None, &mut unused)?;
            unused.clear();
        }
        let h = self.mid_block.forward(&h, None, None)?;
        let h = self.conv_norm_out.forward_act(&h, self.cfg.act_fn)?;
        self.conv_out.forward(&h)
    }
}

/// diffusers `Decoder`.
#[derive(Debug, Clone)]
pub struct Decoder {
    pub(crate) conv_in: Conv2d,
    pub(crate) mid_block: MidBlock,
    pub(crate) up_blocks: Vec<UpBlock>,
    pub(crate) conv_norm_out: GroupNorm,
    pub(crate) conv_out: Conv2d,
    pub(crate) cfg: VaeConfig,
}

impl Decoder {
    /// Under `vb` = `decoder`.
    pub fn new(cfg: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        let boc = &cfg.block_out_channels;
        let n = boc.len();
        let rev: Vec<usize> = boc.iter().rev().copied().collect();
        let mut out = rev[0];
        let mut up_blocks = Vec::with_capacity(n);
        for (i, &c) in rev.iter().enumerate() {
            let prev = out;
            out = c;
            up_blocks.push(UpBlock::new(
                UpBlockConfig {
                    c_in: prev,
                    c_out: out,
                    c_prev: prev,
                    layers: cfg.layers_per_block + 1,
                    skips: false,
                    attention: None,
                    upsample: i + 1 != n,
                    resnet: resnet_cfg(cfg),
                },
                vb.pp("up_blocks").pp(i),
            )?);
        }
        Ok(Self {
            conv_in: conv2d(cfg.latent_channels, rev[0], 3, 1, 1, vb.pp("conv_in"))?,
            mid_block: MidBlock::spatial(
                rev[0],
                cfg.mid_block_add_attention,
                resnet_cfg(cfg),
                vb.pp("mid_block"),
            )?,
            up_blocks,
            conv_norm_out: group_norm(cfg.norm_num_groups, boc[0], 1e-6, vb.pp("conv_norm_out"))?,
            conv_out: conv2d(boc[0], cfg.out_channels, 3, 1, 1, vb.pp("conv_out"))?,
            cfg: cfg.clone(),
        })
    }
}

impl Module for Decoder {
    fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let h = self.conv_in.forward(z)?;
        let mut h = self.mid_block.forward(&h, None, None)?;
        let mut unused = Vec::new();
        for block in &self.up_blocks {
            h = block.forward(&h, None, None, &mut unused, false, None)?;
        }
        let h = self.conv_norm_out.forward_act(&h, self.cfg.act_fn)?;
        self.conv_out.forward(&h)
    }
}

/// The diagonal Gaussian the encoder predicts for each latent pixel.
#[derive(Debug, Clone)]
pub struct LatentDistribution {
    /// Mean, `[batch, latent_channels, h/8, w/8]`.
    pub mean: Tensor,
    /// Log-variance, clamped to [-30, 20] as diffusers does.
    pub logvar: Tensor,
}

impl LatentDistribution {
    /// Standard deviation.
    pub fn std(&self) -> Result<Tensor> {
        (&self.logvar * 0.5)?.exp()
    }

    /// `mean + std ⊙ noise` with caller-supplied standard normal noise of the same shape
    /// (from the crate's seeded generator, so samples are reproducible on every device).
    pub fn sample_with(&self, noise: &Tensor) -> Result<Tensor> {
        &self.mean + (self.std()? * noise)?
    }
}

/// diffusers `AutoencoderKL`.
#[derive(Debug, Clone)]
pub struct AutoencoderKL {
    pub(crate) encoder: Encoder,
    pub(crate) decoder: Decoder,
    pub(crate) quant_conv: Option<Conv2d>,
    pub(crate) post_quant_conv: Option<Conv2d>,
    config: VaeConfig,
    dtype: candle_core::DType,
}

impl AutoencoderKL {
    /// Builds the model from its config, reading weights under their diffusers names.
    pub fn new(cfg: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        let l = cfg.latent_channels;
        Ok(Self {
            encoder: Encoder::new(cfg, vb.pp("encoder"))?,
            decoder: Decoder::new(cfg, vb.pp("decoder"))?,
            quant_conv: if cfg.use_quant_conv {
                Some(conv2d(2 * l, 2 * l, 1, 1, 0, vb.pp("quant_conv"))?)
            } else {
                None
            },
            post_quant_conv: if cfg.use_post_quant_conv {
                Some(conv2d(l, l, 1, 1, 0, vb.pp("post_quant_conv"))?)
            } else {
                None
            },
            config: cfg.clone(),
            dtype: vb.dtype(),
        })
    }

    /// The architecture.
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// The dtype of the weights (what it computes in).
    pub fn dtype(&self) -> candle_core::DType {
        self.dtype
    }

    /// Encodes images in [-1, 1] (`[batch, 3, h, w]`) to the latent distribution (unscaled).
    pub fn encode(&self, xs: &Tensor) -> Result<LatentDistribution> {
        self.moments(self.encoder.forward(xs)?)
    }

    /// The encoder output → mean and clamped log-variance.
    pub(crate) fn moments(&self, h: Tensor) -> Result<LatentDistribution> {
        let moments = match &self.quant_conv {
            Some(q) => q.forward(&h)?,
            None => h,
        };
        let l = self.config.latent_channels;
        let mean = moments.narrow(1, 0, l)?;
        let logvar = moments.narrow(1, l, l)?.clamp(-30f32, 20f32)?;
        Ok(LatentDistribution { mean, logvar })
    }

    /// Decodes unscaled latents to images in (about) [-1, 1].
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let z = match &self.post_quant_conv {
            Some(p) => p.forward(z)?,
            None => z.clone(),
        };
        self.decoder.forward(&z)
    }

    /// Unscaled latent → the diffusion model's latent space: `(z − shift) · scaling_factor`.
    pub fn scale_latents(&self, z: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        (z - c.shift_factor)? * c.scaling_factor
    }

    /// The diffusion model's latent space → unscaled latent: `z / scaling_factor + shift`.
    pub fn unscale_latents(&self, z: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        (z / c.scaling_factor)? + c.shift_factor
    }
}
