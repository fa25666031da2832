//! diffusers `UNet2DConditionModel` as Stable Diffusion 1.x / 2.x use it, and the two ways the
//! SPIRE adaptor reaches into it: additive residuals (ControlNet) and modulation
//! (`f ⊙ (1 + s·γ) + s·β`) at every skip feature and at the mid block.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::attention::Transformer2DConfig;
use super::blocks::{DownBlock, DownBlockConfig, MidBlock, ResnetConfig, UpBlock, UpBlockConfig};
use super::config::UNetConfig;
use super::embeddings::{TimestepEmbedding, Timesteps};
use super::nn::{conv2d, group_norm, Conv2d, GroupNorm};

/// One adaptor signal for one backbone feature map.
#[derive(Debug, Clone)]
pub enum Injection {
    /// ControlNet: `f + r` (the residual already carries the conditioning scale).
    Add(Tensor),
    /// SPIRE modulation: `f ⊙ (1 + γ) + β` (γ and β already carry the conditioning scale).
    Modulate {
        /// Multiplicative part.
        gamma: Tensor,
        /// Additive part.
        beta: Tensor,
    },
}

impl Injection {
    /// Applies the signal to a backbone feature of the same shape.
    pub fn apply(&self, f: &Tensor) -> Result<Tensor> {
        match self {
            Injection::Add(r) => f + r,
            Injection::Modulate { gamma, beta } => ((f * gamma)? + f)? + beta,
        }
    }

    fn shape(&self) -> &candle_core::Shape {
        match self {
            Injection::Add(r) => r.shape(),
            Injection::Modulate { gamma, .. } => gamma.shape(),
        }
    }
}

/// Everything the adaptor hands the backbone for one forward pass: one [`Injection`] per skip
/// feature (in the order the down blocks produce them, `conv_in` output first) and one for the
/// mid-block output.
#[derive(Debug, Clone)]
pub struct Control {
    /// Per skip feature.
    pub down: Vec<Injection>,
    /// For the mid-block output.
    pub mid: Option<Injection>,
}

/// The time embedding shared by the UNet and the adaptor: sinusoidal features, then the MLP.
#[derive(Debug, Clone)]
pub(crate) struct TimeEmbed {
    proj: Timesteps,
    embedding: TimestepEmbedding,
}

impl TimeEmbed {
    pub(crate) fn new(cfg: &UNetConfig, vb: &VarBuilder) -> Result<Self> {
        let c0 = cfg.block_out_channels[0];
        Ok(Self {
            proj: Timesteps::new(c0, cfg.flip_sin_to_cos, cfg.freq_shift),
            embedding: TimestepEmbedding::new(c0, cfg.time_embed_dim(), cfg.act_fn, vb.pp("time_embedding"))?,
        })
    }

    /// `timesteps`: one per batch element, or one for the whole batch.
    pub(crate) fn forward(&self, timesteps: &[f32], batch: usize, like: &Tensor) -> Result<Tensor> {
        let ts: Vec<f32> = match timesteps.len() {
            1 => vec![timesteps[0]; batch],
            n if n == batch => timesteps.to_vec(),
            n => candle_core::bail!("{n} timesteps for a batch of {batch}"),
        };
        let t = self.proj.forward(&ts, like.device())?.to_dtype(like.dtype())?;
        self.embedding.forward(&t)
    }
}

fn resnet_cfg(cfg: &UNetConfig, scale: f64) -> ResnetConfig {
    ResnetConfig {
        temb_channels: Some(cfg.time_embed_dim()),
        groups: cfg.norm_num_groups,
        eps: cfg.norm_eps,
        act: cfg.act_fn,
        output_scale_factor: scale,
    }
}

fn attention_cfg(cfg: &UNetConfig, heads: usize, layers: usize, context_dim: usize) -> Transformer2DConfig {
    Transformer2DConfig {
        channels: 0,
        heads,
        layers,
        context_dim,
        groups: cfg.norm_num_groups,
        linear_projection: cfg.use_linear_projection,
    }
}

/// The down blocks of the UNet, which the adaptor copies.
pub(crate) fn down_blocks(cfg: &UNetConfig, vb: &VarBuilder) -> Result<Vec<DownBlock>> {
    let n = cfg.block_out_channels.len();
    let mut out = cfg.block_out_channels[0];
    (0..n)
        .map(|i| {
            let c_in = out;
            out = cfg.block_out_channels[i];
            let attention = cfg.down_cross_attention[i].then(|| {
                attention_cfg(
                    cfg,
                    cfg.num_attention_heads[i],
                    cfg.transformer_layers_per_block[i],
                    cfg.cross_attention_dim[i],
                )
            });
            DownBlock::new(
                DownBlockConfig {
                    c_in,
                    c_out: out,
                    layers: cfg.layers_per_block[i],
                    attention,
                    downsample: i + 1 != n,
                    downsample_padding: cfg.downsample_padding,
                    resnet: resnet_cfg(cfg, 1.0),
                },
                vb.pp("down_blocks").pp(i),
            )
        })
        .collect()
}

/// The mid block of the UNet, which the adaptor copies.
pub(crate) fn mid_block(cfg: &UNetConfig, vb: &VarBuilder) -> Result<Option<MidBlock>> {
    if !cfg.mid_block {
        return Ok(None);
    }
    let last = cfg.block_out_channels.len() - 1;
    let attn = attention_cfg(
        cfg,
        cfg.num_attention_heads[last],
        cfg.transformer_layers_per_block[last],
        cfg.cross_attention_dim[last],
    );
    Ok(Some(MidBlock::cross_attn(
        cfg.block_out_channels[last],
        attn,
        resnet_cfg(cfg, cfg.mid_block_scale_factor),
        vb.pp("mid_block"),
    )?))
}

/// diffusers `UNet2DConditionModel`.
#[derive(Debug, Clone)]
pub struct UNet2DConditionModel {
    conv_in: Conv2d,
    time: TimeEmbed,
    down_blocks: Vec<DownBlock>,
    mid_block: Option<MidBlock>,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    config: UNetConfig,
}

impl UNet2DConditionModel {
    /// Builds the model from its config, reading weights under their diffusers names.
    pub fn new(cfg: &UNetConfig, vb: VarBuilder) -> Result<Self> {
        let boc = &cfg.block_out_channels;
        let n = boc.len();
        let rev = |v: &[usize]| v.iter().rev().copied().collect::<Vec<_>>();
        let (r_boc, r_heads, r_layers, r_tl, r_ctx) = (
            rev(boc),
            rev(&cfg.num_attention_heads),
            rev(&cfg.layers_per_block),
            rev(&cfg.transformer_layers_per_block),
            rev(&cfg.cross_attention_dim),
        );
        let mut out = r_boc[0];
        let mut up_blocks = Vec::with_capacity(n);
        for i in 0..n {
            let prev = out;
            out = r_boc[i];
            let c_in = r_boc[(i + 1).min(n - 1)];
            let attention =
                cfg.up_cross_attention[i].then(|| attention_cfg(cfg, r_heads[i], r_tl[i], r_ctx[i]));
            up_blocks.push(UpBlock::new(
                UpBlockConfig {
                    c_in,
                    c_out: out,
                    c_prev: prev,
                    layers: r_layers[i] + 1,
                    skips: true,
                    attention,
                    upsample: i + 1 != n,
                    resnet: resnet_cfg(cfg, 1.0),
                },
                vb.pp("up_blocks").pp(i),
            )?);
        }
        Ok(Self {
            conv_in: conv2d(cfg.in_channels, boc[0], 3, 1, 1, vb.pp("conv_in"))?,
            time: TimeEmbed::new(cfg, &vb)?,
            down_blocks: down_blocks(cfg, &vb)?,
            mid_block: mid_block(cfg, &vb)?,
            up_blocks,
            conv_norm_out: group_norm(cfg.norm_num_groups, boc[0], cfg.norm_eps, vb.pp("conv_norm_out"))?,
            conv_out: conv2d(boc[0], cfg.out_channels, 3, 1, 1, vb.pp("conv_out"))?,
            config: cfg.clone(),
        })
    }

    /// The architecture.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// Number of skip features the down path produces (where an adaptor injects).
    pub fn num_skips(&self) -> usize {
        1 + self.down_blocks.iter().map(DownBlock::num_skips).sum::<usize>()
    }

    /// Predicts noise (or velocity) for `sample` (`[batch, in_channels, h, w]`) at `timesteps`
    /// (one per batch element, or one for all) given the text `context`
    /// (`[batch, tokens, cross_attention_dim]`) and an optional adaptor [`Control`].
    pub fn forward(
        &self,
        sample: &Tensor,
        timesteps: &[f32],
        context: &Tensor,
        control: Option<&Control>,
    ) -> Result<Tensor> {
        let (b, _, _, _) = sample.dims4()?;
        if let Some(c) = control {
            if c.down.len() != self.num_skips() {
                candle_core::bail!(
                    "adaptor gives {} skip signals, the UNet has {} skip features",
                    c.down.len(),
                    self.num_skips()
                );
            }
            if c.mid.is_some() != self.mid_block.is_some() {
                candle_core::bail!("adaptor and UNet disagree on the mid block");
            }
        }
        let temb = self.time.forward(timesteps, b, sample)?;
        let sample = if self.config.center_input_sample {
            ((sample * 2.0)? - 1.0)?
        } else {
            sample.clone()
        };
        let mut h = self.conv_in.forward(&sample)?;
        let mut skips = vec![h.clone()];
        for block in &self.down_blocks {
            h = block.forward(&h, Some(&temb), Some(context), &mut skips)?;
        }
        if let Some(c) = control {
            for (i, (s, inj)) in skips.iter_mut().zip(&c.down).enumerate() {
                if inj.shape() != s.shape() {
                    candle_core::bail!(
                        "adaptor skip signal {i} has shape {:?}, the UNet feature has {:?}",
                        inj.shape().dims(),
                        s.dims()
                    );
                }
                *s = inj.apply(s)?;
            }
        }
        if let Some(mid) = &self.mid_block {
            h = mid.forward(&h, Some(&temb), Some(context))?;
            if let Some(inj) = control.and_then(|c| c.mid.as_ref()) {
                h = inj.apply(&h)?;
            }
        }
        for block in &self.up_blocks {
            let remaining = skips.len().saturating_sub(block.resnets.len());
            let size = if remaining > 0 && block.upsampler.is_some() {
                let (_, _, sh, sw) = skips[remaining - 1].dims4()?;
                Some((sh, sw))
            } else {
                None
            };
            h = block.forward(&h, Some(&temb), Some(context), &mut skips, true, size)?;
        }
        let h = self.conv_norm_out.forward_act(&h, self.config.act_fn)?;
        self.conv_out.forward(&h)
    }
}
