//! The convolutional building blocks shared by the UNet, the adaptor and the VAE:
//! diffusers `ResnetBlock2D`, `Downsample2D`, `Upsample2D`, and the down/mid/up blocks
//! (`CrossAttnDownBlock2D`, `DownBlock2D`, `DownEncoderBlock2D`, `UNetMidBlock2DCrossAttn`,
//! `UNetMidBlock2D`, `CrossAttnUpBlock2D`, `UpBlock2D`, `UpDecoderBlock2D`).

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::attention::{SpatialAttention, Transformer2D, Transformer2DConfig};
use super::nn::{conv2d, group_norm, linear, upsample_nearest, Activation, Conv2d, GroupNorm, Linear};

/// diffusers `ResnetBlock2D` (pre-norm, `time_embedding_norm="default"`).
#[derive(Debug, Clone)]
pub struct ResnetBlock2D {
    pub(crate) norm1: GroupNorm,
    pub(crate) conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    pub(crate) norm2: GroupNorm,
    pub(crate) conv2: Conv2d,
    pub(crate) conv_shortcut: Option<Conv2d>,
    pub(crate) act: Activation,
    pub(crate) output_scale_factor: f64,
}

/// Shape parameters shared by all resnets of one block.
#[derive(Debug, Clone, Copy)]
pub struct ResnetConfig {
    /// Width of the time embedding, `None` in the VAE.
    pub temb_channels: Option<usize>,
    /// GroupNorm groups.
    pub groups: usize,
    /// GroupNorm epsilon.
    pub eps: f64,
    /// Non-linearity.
    pub act: Activation,
    /// The output is divided by this.
    pub output_scale_factor: f64,
}

impl ResnetBlock2D {
    /// `c_in` → `c_out` channels; a 1×1 `conv_shortcut` when they differ.
    pub fn new(c_in: usize, c_out: usize, cfg: ResnetConfig, vb: VarBuilder) -> Result<Self> {
        let time_emb_proj = match cfg.temb_channels {
            Some(t) => Some(linear(t, c_out, true, vb.pp("time_emb_proj"))?),
            None => None,
        };
        let conv_shortcut = if c_in != c_out {
            Some(conv2d(c_in, c_out, 1, 1, 0, vb.pp("conv_shortcut"))?)
        } else {
            None
        };
        Ok(Self {
            norm1: group_norm(cfg.groups, c_in, cfg.eps, vb.pp("norm1"))?,
            conv1: conv2d(c_in, c_out, 3, 1, 1, vb.pp("conv1"))?,
            time_emb_proj,
            norm2: group_norm(cfg.groups, c_out, cfg.eps, vb.pp("norm2"))?,
            conv2: conv2d(c_out, c_out, 3, 1, 1, vb.pp("conv2"))?,
            conv_shortcut,
            act: cfg.act,
            output_scale_factor: cfg.output_scale_factor,
        })
    }

    /// `temb` is the time embedding before the block's own activation (`[batch, temb]`).
    pub fn forward(&self, xs: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let h = self.norm1.forward_act(xs, self.act)?;
        let mut h = self.conv1.forward(&h)?;
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            let t = proj
                .forward(&self.act.forward(temb)?)?
                .unsqueeze(2)?
                .unsqueeze(3)?;
            h = h.broadcast_add(&t)?;
        }
        let h = self.norm2.forward_act(&h, self.act)?;
        let h = self.conv2.forward(&h)?;
        let shortcut = match &self.conv_shortcut {
            Some(c) => c.forward(xs)?,
            None => xs.clone(),
        };
        let out = (shortcut + h)?;
        if self.output_scale_factor == 1.0 {
            Ok(out)
        } else {
            out / self.output_scale_factor
        }
    }
}

/// diffusers `Downsample2D` with `use_conv=True`: a stride-2 3×3 conv. With `padding == 0`
/// (the VAE) the input is first padded by one pixel on the right and bottom.
#[derive(Debug, Clone)]
pub struct Downsample {
    pub(crate) conv: Conv2d,
    pub(crate) asymmetric: bool,
}

impl Downsample {
    /// Under `vb` = `…downsamplers.0`.
    pub fn new(channels: usize, padding: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: conv2d(channels, channels, 3, 2, padding, vb.pp("conv"))?,
            asymmetric: padding == 0,
        })
    }
}

impl Module for Downsample {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if self.asymmetric {
            let xs = xs.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?;
            self.conv.forward(&xs)
        } else {
            self.conv.forward(xs)
        }
    }
}

/// diffusers `Upsample2D` with `use_conv=True`: nearest ×2 (or to an explicit size), 3×3 conv.
#[derive(Debug, Clone)]
pub struct Upsample {
    pub(crate) conv: Conv2d,
}

impl Upsample {
    /// Under `vb` = `…upsamplers.0`.
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: conv2d(channels, channels, 3, 1, 1, vb.pp("conv"))?,
        })
    }

    /// Upsamples to `size` if given, else by 2.
    pub fn forward(&self, xs: &Tensor, size: Option<(usize, usize)>) -> Result<Tensor> {
        let (_, _, h, w) = xs.dims4()?;
        let (th, tw) = size.unwrap_or((2 * h, 2 * w));
        self.conv.forward(&upsample_nearest(xs, th, tw)?)
    }
}

/// A UNet/ControlNet down block (`CrossAttnDownBlock2D` or `DownBlock2D`) or a VAE
/// `DownEncoderBlock2D` (no attention, no time embedding).
#[derive(Debug, Clone)]
pub struct DownBlock {
    pub(crate) resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2D>,
    pub(crate) downsampler: Option<Downsample>,
}

/// What one down block is built from.
#[derive(Debug, Clone, Copy)]
pub struct DownBlockConfig {
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Number of resnets (and attention layers).
    pub layers: usize,
    /// The cross-attention layers' shape, `None` for a block without attention.
    pub attention: Option<Transformer2DConfig>,
    /// Whether the block ends with a stride-2 downsampler.
    pub downsample: bool,
    /// The downsampler's padding (1 in the UNet, 0 in the VAE).
    pub downsample_padding: usize,
    /// Resnet settings.
    pub resnet: ResnetConfig,
}

impl DownBlock {
    /// Under `vb` = `down_blocks.{i}`.
    pub fn new(cfg: DownBlockConfig, vb: VarBuilder) -> Result<Self> {
        let mut resnets = Vec::with_capacity(cfg.layers);
        let mut attentions = Vec::new();
        for j in 0..cfg.layers {
            let c_in = if j == 0 { cfg.c_in } else { cfg.c_out };
            resnets.push(ResnetBlock2D::new(
                c_in,
                cfg.c_out,
                cfg.resnet,
                vb.pp("resnets").pp(j),
            )?);
            if let Some(a) = cfg.attention {
                let a = Transformer2DConfig {
                    channels: cfg.c_out,
                    ..a
                };
                attentions.push(Transformer2D::new(a, vb.pp("attentions").pp(j))?);
            }
        }
        let downsampler = if cfg.downsample {
            Some(Downsample::new(
                cfg.c_out,
                cfg.downsample_padding,
                vb.pp("downsamplers").pp(0),
            )?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions,
            downsampler,
        })
    }

    /// Returns the block output and pushes every intermediate (skip) feature onto `skips`.
    pub fn forward(
        &self,
        xs: &Tensor,
        temb: Option<&Tensor>,
        context: Option<&Tensor>,
        skips: &mut Vec<Tensor>,
    ) -> Result<Tensor> {
        let mut h = xs.clone();
        for (j, resnet) in self.resnets.iter().enumerate() {
            h = resnet.forward(&h, temb)?;
            if let Some(attn) = self.attentions.get(j) {
                let ctx = context
                    .ok_or_else(|| candle_core::Error::Msg("cross-attention block needs a context".into()))?;
                h = attn.forward(&h, ctx)?;
            }
            skips.push(h.clone());
        }
        if let Some(d) = &self.downsampler {
            h = d.forward(&h)?;
            skips.push(h.clone());
        }
        Ok(h)
    }

    /// Number of skip features this block produces.
    pub fn num_skips(&self) -> usize {
        self.resnets.len() + usize::from(self.downsampler.is_some())
    }
}

/// The attention of a mid block: cross-attention transformer (UNet) or spatial (VAE).
#[derive(Debug, Clone)]
pub(crate) enum MidAttention {
    Transformer(Transformer2D),
    Spatial(SpatialAttention),
}

/// `UNetMidBlock2DCrossAttn` (UNet, adaptor) or `UNetMidBlock2D` (VAE): resnet, then
/// (attention, resnet) pairs.
#[derive(Debug, Clone)]
pub struct MidBlock {
    pub(crate) resnets: Vec<ResnetBlock2D>,
    pub(crate) attentions: Vec<MidAttention>,
}

impl MidBlock {
    /// The UNet mid block with `layers` cross-attention transformers.
    pub fn cross_attn(
        channels: usize,
        attention: Transformer2DConfig,
        resnet: ResnetConfig,
        vb: VarBuilder,
    ) -> Result<Self> {
        let mut resnets = vec![ResnetBlock2D::new(
            channels,
            channels,
            resnet,
            vb.pp("resnets").pp(0),
        )?];
        let attn = Transformer2DConfig {
            channels,
            ..attention
        };
        let attentions = vec![MidAttention::Transformer(Transformer2D::new(
            attn,
            vb.pp("attentions").pp(0),
        )?)];
        resnets.push(ResnetBlock2D::new(
            channels,
            channels,
            resnet,
            vb.pp("resnets").pp(1),
        )?);
        Ok(Self { resnets, attentions })
    }

    /// The VAE mid block, with its single-head spatial attention unless `attention` is false.
    pub fn spatial(channels: usize, attention: bool, resnet: ResnetConfig, vb: VarBuilder) -> Result<Self> {
        let mut resnets = vec![ResnetBlock2D::new(
            channels,
            channels,
            resnet,
            vb.pp("resnets").pp(0),
        )?];
        let mut attentions = Vec::new();
        if attention {
            attentions.push(MidAttention::Spatial(SpatialAttention::new(
                channels,
                resnet.groups,
                resnet.eps,
                vb.pp("attentions").pp(0),
            )?));
        }
        resnets.push(ResnetBlock2D::new(
            channels,
            channels,
            resnet,
            vb.pp("resnets").pp(1),
        )?);
        Ok(Self { resnets, attentions })
    }

    /// Runs the block.
    pub fn forward(&self, xs: &Tensor, temb: Option<&Tensor>, context: Option<&Tensor>) -> Result<Tensor> {
        let mut h = self.resnets[0].forward(xs, temb)?;
        for (i, resnet) in self.resnets.iter().skip(1).enumerate() {
            if let Some(attn) = self.attentions.get(i) {
                h = match attn {
                    MidAttention::Transformer(t) => {
                        let ctx = context.ok_or_else(|| {
                            candle_core::Error::Msg("cross-attention block needs a context".into())
                        })?;
                        t.forward(&h, ctx)?
                    }
                    MidAttention::Spatial(s) => s.forward(&h)?,
                };
            }
            h = resnet.forward(&h, temb)?;
        }
        Ok(h)
    }
}

/// A UNet up block (`CrossAttnUpBlock2D` / `UpBlock2D`, concatenating skip features) or a VAE
/// `UpDecoderBlock2D` (no skips).
#[derive(Debug, Clone)]
pub struct UpBlock {
    pub(crate) resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2D>,
    pub(crate) upsampler: Option<Upsample>,
}

/// What one up block is built from.
#[derive(Debug, Clone, Copy)]
pub struct UpBlockConfig {
    /// Channels of the skip feature the last resnet consumes (UNet only).
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Channels coming from the previous (deeper) block.
    pub c_prev: usize,
    /// Number of resnets.
    pub layers: usize,
    /// Whether resnets concatenate skip features (UNet) or not (VAE decoder).
    pub skips: bool,
    /// Cross-attention shape, `None` without attention.
    pub attention: Option<Transformer2DConfig>,
    /// Whether the block ends with an upsampler.
    pub upsample: bool,
    /// Resnet settings.
    pub resnet: ResnetConfig,
}

impl UpBlock {
    /// Under `vb` = `up_blocks.{i}`.
    pub fn new(cfg: UpBlockConfig, vb: VarBuilder) -> Result<Self> {
        let mut resnets = Vec::with_capacity(cfg.layers);
        let mut attentions = Vec::new();
        for j in 0..cfg.layers {
            let c_in = if cfg.skips {
                let skip = if j == cfg.layers - 1 { cfg.c_in } else { cfg.c_out };
                let res_in = if j == 0 { cfg.c_prev } else { cfg.c_out };
                skip + res_in
            } else if j == 0 {
                cfg.c_prev
            } else {
                cfg.c_out
            };
            resnets.push(ResnetBlock2D::new(
                c_in,
                cfg.c_out,
                cfg.resnet,
                vb.pp("resnets").pp(j),
            )?);
            if let Some(a) = cfg.attention {
                let a = Transformer2DConfig {
                    channels: cfg.c_out,
                    ..a
                };
                attentions.push(Transformer2D::new(a, vb.pp("attentions").pp(j))?);
            }
        }
        let upsampler = if cfg.upsample {
            Some(Upsample::new(cfg.c_out, vb.pp("upsamplers").pp(0))?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions,
            upsampler,
        })
    }

    /// Consumes skip features from the end of `skips` (UNet) and upsamples to `upsample_size`
    /// when given.
    pub fn forward(
        &self,
        xs: &Tensor,
        temb: Option<&Tensor>,
        context: Option<&Tensor>,
        skips: &mut Vec<Tensor>,
        use_skips: bool,
        upsample_size: Option<(usize, usize)>,
    ) -> Result<Tensor> {
        let mut h = xs.clone();
        for (j, resnet) in self.resnets.iter().enumerate() {
            if use_skips {
                let skip = skips
                    .pop()
                    .ok_or_else(|| candle_core::Error::Msg("UNet ran out of skip features".into()))?;
                h = Tensor::cat(&[&h, &skip], 1)?;
            }
            h = resnet.forward(&h, temb)?;
            if let Some(attn) = self.attentions.get(j) {
                let ctx = context
                    .ok_or_else(|| candle_core::Error::Msg("cross-attention block needs a context".into()))?;
                h = attn.forward(&h, ctx)?;
            }
        }
        if let Some(u) = &self.upsampler {
            h = u.forward(&h, upsample_size)?;
        }
        Ok(h)
    }
}
