//! The SPIRE adaptor (SPIRE.md §2.2): a ControlNet body — a copy of the backbone's `conv_in`,
//! time embedding, down blocks and mid block — that reads the noisy latent, the degraded image
//! (the *hint*) and the restoration-prompt context, and hands the backbone one signal per skip
//! feature plus one for the mid block.
//!
//! Hint modes: `latent` (the VAE mean of `y`, scaled, through a zero-initialised 3×3
//! `latent_hint_conv` added after `conv_in`) and `pixel` (diffusers'
//! `ControlNetConditioningEmbedding` on `y` in [0, 1]).
//! Fusion modes: `additive` (diffusers `controlnet_down_blocks` / `controlnet_mid_block`
//! zero convs; residuals added) and `modulation` (zero-initialised 1×1 convs
//! `modulation_down_blocks.{i}.gamma|beta` and `modulation_mid_block.gamma|beta`, applied as
//! `f ⊙ (1 + s·γ) + s·β`). With `pixel` + `additive` any diffusers `ControlNetModel` checkpoint
//! loads unchanged.
//!
//! Prompt embedding (optional, `"class_embed_type": "projection"`): the restoration prompt's
//! pooled embedding (the text encoder's `pooler_output`: its end-of-text token) goes through a
//! `class_embedding` (diffusers `TimestepEmbedding`, its `linear_2` starting at zero) and is
//! added to the time embedding, so the prompt reaches every resnet of the body — also the
//! first, full-resolution block, which has no cross-attention. It is diffusers'
//! `ControlNetModel` with `class_embed_type="projection"` and `class_labels = pooled`.

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::blocks::{DownBlock, MidBlock};
use super::config::{Json, UNetConfig};
use super::embeddings::TimestepEmbedding;
use super::nn::{conv2d, zero_conv2d, Activation, Conv2d};
use super::unet::{down_blocks, mid_block, Control, Injection, TimeEmbed};
use super::vars::VarStore;

/// How the degraded image enters the adaptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HintMode {
    /// `E(y)`: the scaled VAE mean, through `latent_hint_conv` (SPIRE default).
    Latent,
    /// `y` in [0, 1] through `controlnet_cond_embedding` (diffusers ControlNet).
    Pixel,
}

/// How adaptor features act on the backbone's skip features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fusion {
    /// `f ⊙ (1 + s·γ) + s·β` (SPIRE).
    Modulation,
    /// `f + s·r` (ControlNet).
    Additive,
}

impl HintMode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            HintMode::Latent => "latent",
            HintMode::Pixel => "pixel",
        }
    }
}

impl Fusion {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Fusion::Modulation => "modulation",
            Fusion::Additive => "additive",
        }
    }
}

/// The architecture of an adaptor.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptorConfig {
    /// The ControlNet body (equal to the backbone's down path).
    pub body: UNetConfig,
    /// Hint input.
    pub hint_mode: HintMode,
    /// Fusion into the backbone.
    pub fusion: Fusion,
    /// Channels of the latent hint (the VAE's latent channels).
    pub hint_channels: usize,
    /// Widths of `controlnet_cond_embedding` (pixel mode).
    pub conditioning_embedding_out_channels: Vec<usize>,
    /// Image channels of the pixel hint.
    pub conditioning_channels: usize,
    /// The restoration prompt's pooled embedding added to the time embedding (module docs).
    pub prompt_embedding: bool,
}

impl AdaptorConfig {
    /// Reads `adaptor/config.json` (a diffusers `ControlNetModel` config, plus our optional
    /// `hint_mode` and `fusion` keys; without them it is a plain ControlNet: pixel, additive).
    pub(crate) fn from_json(j: &Json) -> crate::Result<Self> {
        let prompt_embedding = match j.str_or("class_embed_type", "")? {
            "" => false,
            "projection" => true,
            other => {
                return Err(j.err(
                    "class_embed_type",
                    format!("`{other}` is not supported (only \"projection\", for the prompt embedding)"),
                ))
            }
        };
        // The body is a plain UNet down path; the class embedding is read here.
        let mut plain = j.map.clone();
        plain.remove("class_embed_type");
        let projection_dim = plain.remove("projection_class_embeddings_input_dim");
        let body = UNetConfig::from_json(
            &Json {
                path: j.path,
                map: plain,
            },
            true,
        )?;
        if prompt_embedding {
            let ctx = body.cross_attention_dim[0];
            match projection_dim.as_ref().and_then(|v| v.as_u64()) {
                Some(d) if d as usize == ctx => {}
                _ => {
                    return Err(j.err(
                        "projection_class_embeddings_input_dim",
                        format!(
                            "must equal the restoration context's width {ctx} (cross_attention_dim), got {}",
                            projection_dim.map_or("nothing".to_string(), |v| v.to_string())
                        ),
                    ))
                }
            }
        }
        let hint_mode = match j.str_or("hint_mode", "pixel")? {
            "latent" => HintMode::Latent,
            "pixel" => HintMode::Pixel,
            other => return Err(j.err("hint_mode", format!("`{other}` is not `latent` or `pixel`"))),
        };
        let fusion = match j.str_or("fusion", "additive")? {
            "modulation" => Fusion::Modulation,
            "additive" => Fusion::Additive,
            other => return Err(j.err("fusion", format!("`{other}` is not `modulation` or `additive`"))),
        };
        let order = j.str_or("controlnet_conditioning_channel_order", "rgb")?;
        if order != "rgb" {
            return Err(j.err(
                "controlnet_conditioning_channel_order",
                format!("`{order}` is not supported (only rgb)"),
            ));
        }
        let cond = match j.usizes("conditioning_embedding_out_channels") {
            Ok(v) => v,
            Err(_) => vec![16, 32, 96, 256],
        };
        if cond.is_empty() {
            return Err(j.err("conditioning_embedding_out_channels", "is empty"));
        }
        Ok(Self {
            hint_channels: j.usize_or("hint_channels", body.in_channels)?,
            conditioning_channels: j.usize_or("conditioning_channels", 3)?,
            conditioning_embedding_out_channels: cond,
            body,
            hint_mode,
            fusion,
            prompt_embedding,
        })
    }

    /// Parses the text of an adaptor `config.json`.
    ///
    /// # Errors
    /// [`crate::Error::ModelLoad`] naming a bad field.
    pub fn from_json_str(text: &str) -> crate::Result<Self> {
        Self::from_json(&Json::parse(std::path::Path::new("adaptor/config.json"), text)?)
    }

    /// An adaptor config mirroring a backbone UNet.
    pub fn from_unet(unet: &UNetConfig, hint_mode: HintMode, fusion: Fusion, hint_channels: usize) -> Self {
        Self {
            body: unet.clone(),
            hint_mode,
            fusion,
            hint_channels,
            conditioning_embedding_out_channels: vec![16, 32, 96, 256],
            conditioning_channels: 3,
            prompt_embedding: false,
        }
    }

    /// The `config.json` that `AdaptorConfig::from_json` reads back.
    pub fn to_json(&self) -> serde_json::Value {
        let b = &self.body;
        let down: Vec<&str> = b
            .down_cross_attention
            .iter()
            .map(|&c| if c { "CrossAttnDownBlock2D" } else { "DownBlock2D" })
            .collect();
        let mut j = serde_json::json!({
            "_class_name": "ControlNetModel",
            "in_channels": b.in_channels,
            "block_out_channels": b.block_out_channels,
            "down_block_types": down,
            "layers_per_block": b.layers_per_block,
            "transformer_layers_per_block": b.transformer_layers_per_block,
            "attention_head_dim": b.num_attention_heads,
            "cross_attention_dim": b.cross_attention_dim,
            "norm_num_groups": b.norm_num_groups,
            "norm_eps": b.norm_eps,
            "flip_sin_to_cos": b.flip_sin_to_cos,
            "freq_shift": b.freq_shift,
            "use_linear_projection": b.use_linear_projection,
            "upcast_attention": b.upcast_attention,
            "downsample_padding": b.downsample_padding,
            "mid_block_scale_factor": b.mid_block_scale_factor,
            "mid_block_type": if b.mid_block { serde_json::Value::from("UNetMidBlock2DCrossAttn") } else { serde_json::Value::Null },
            "act_fn": match b.act_fn { super::nn::Activation::Silu => "silu", super::nn::Activation::Gelu => "gelu", super::nn::Activation::QuickGelu => "quick_gelu" },
            "conditioning_embedding_out_channels": self.conditioning_embedding_out_channels,
            "conditioning_channels": self.conditioning_channels,
            "hint_mode": self.hint_mode.as_str(),
            "fusion": self.fusion.as_str(),
            "hint_channels": self.hint_channels,
        });
        if self.prompt_embedding {
            j["class_embed_type"] = "projection".into();
            j["projection_class_embeddings_input_dim"] = b.cross_attention_dim[0].into();
        }
        j
    }

    /// Channels of every skip feature, in order, then the mid block's.
    pub fn skip_channels(&self) -> (Vec<usize>, usize) {
        let b = &self.body;
        let n = b.block_out_channels.len();
        let mut v = vec![b.block_out_channels[0]];
        for i in 0..n {
            let c = b.block_out_channels[i];
            v.extend(std::iter::repeat_n(c, b.layers_per_block[i]));
            if i + 1 != n {
                v.push(c);
            }
        }
        (v, b.block_out_channels[n - 1])
    }
}

/// diffusers `ControlNetConditioningEmbedding`.
#[derive(Debug, Clone)]
struct ConditioningEmbedding {
    conv_in: Conv2d,
    blocks: Vec<Conv2d>,
    conv_out: Conv2d,
}

impl ConditioningEmbedding {
    fn new(cfg: &AdaptorConfig, vb: VarBuilder) -> Result<Self> {
        let ch = &cfg.conditioning_embedding_out_channels;
        let mut blocks = Vec::new();
        for i in 0..ch.len() - 1 {
            blocks.push(conv2d(ch[i], ch[i], 3, 1, 1, vb.pp("blocks").pp(2 * i))?);
            blocks.push(conv2d(ch[i], ch[i + 1], 3, 2, 1, vb.pp("blocks").pp(2 * i + 1))?);
        }
        Ok(Self {
            conv_in: conv2d(cfg.conditioning_channels, ch[0], 3, 1, 1, vb.pp("conv_in"))?,
            blocks,
            conv_out: zero_conv2d(
                ch[ch.len() - 1],
                cfg.body.block_out_channels[0],
                3,
                1,
                vb.pp("conv_out"),
            )?,
        })
    }
}

impl Module for ConditioningEmbedding {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(xs)?.silu()?;
        for b in &self.blocks {
            h = b.forward(&h)?.silu()?;
        }
        self.conv_out.forward(&h)
    }
}

#[derive(Debug, Clone)]
enum Hint {
    Latent(Conv2d),
    Pixel(ConditioningEmbedding),
}

#[derive(Debug, Clone)]
enum Heads {
    Additive {
        down: Vec<Conv2d>,
        mid: Option<Conv2d>,
    },
    Modulation {
        down: Vec<(Conv2d, Conv2d)>,
        mid: Option<(Conv2d, Conv2d)>,
    },
}

/// The SPIRE adaptor / diffusers `ControlNetModel`.
#[derive(Debug, Clone)]
pub struct Adaptor {
    conv_in: Conv2d,
    time: TimeEmbed,
    class_embedding: Option<TimestepEmbedding>,
    hint: Hint,
    down_blocks: Vec<DownBlock>,
    mid_block: Option<MidBlock>,
    heads: Heads,
    config: AdaptorConfig,
}

impl Adaptor {
    /// Builds the adaptor, reading weights under their diffusers `ControlNetModel` names (and
    /// the SPIRE names of the module docs).
    pub fn new(cfg: &AdaptorConfig, vb: VarBuilder) -> Result<Self> {
        let body = &cfg.body;
        let c0 = body.block_out_channels[0];
        let hint = match cfg.hint_mode {
            HintMode::Latent => Hint::Latent(zero_conv2d(
                cfg.hint_channels,
                c0,
                3,
                1,
                vb.pp("latent_hint_conv"),
            )?),
            HintMode::Pixel => Hint::Pixel(ConditioningEmbedding::new(
                cfg,
                vb.pp("controlnet_cond_embedding"),
            )?),
        };
        let (skip_ch, mid_ch) = cfg.skip_channels();
        let heads = match cfg.fusion {
            Fusion::Additive => Heads::Additive {
                down: skip_ch
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| zero_conv2d(c, c, 1, 0, vb.pp("controlnet_down_blocks").pp(i)))
                    .collect::<Result<_>>()?,
                mid: if body.mid_block {
                    Some(zero_conv2d(mid_ch, mid_ch, 1, 0, vb.pp("controlnet_mid_block"))?)
                } else {
                    None
                },
            },
            Fusion::Modulation => {
                let pair = |c: usize, vb: VarBuilder| -> Result<(Conv2d, Conv2d)> {
                    Ok((
                        zero_conv2d(c, c, 1, 0, vb.pp("gamma"))?,
                        zero_conv2d(c, c, 1, 0, vb.pp("beta"))?,
                    ))
                };
                Heads::Modulation {
                    down: skip_ch
                        .iter()
                        .enumerate()
                        .map(|(i, &c)| pair(c, vb.pp("modulation_down_blocks").pp(i)))
                        .collect::<Result<_>>()?,
                    mid: if body.mid_block {
                        Some(pair(mid_ch, vb.pp("modulation_mid_block"))?)
                    } else {
                        None
                    },
                }
            }
        };
        Ok(Self {
            conv_in: conv2d(body.in_channels, c0, 3, 1, 1, vb.pp("conv_in"))?,
            time: TimeEmbed::new(body, &vb)?,
            class_embedding: if cfg.prompt_embedding {
                Some(TimestepEmbedding::new_zero_out(
                    body.cross_attention_dim[0],
                    body.time_embed_dim(),
                    Activation::Silu,
                    vb.pp("class_embedding"),
                )?)
            } else {
                None
            },
            hint,
            down_blocks: down_blocks(body, &vb)?,
            mid_block: mid_block(body, &vb)?,
            heads,
            config: cfg.clone(),
        })
    }

    /// A trainable adaptor initialised from a backbone (diffusers `ControlNetModel.from_unet`):
    /// `conv_in`, the time embedding, the down blocks and the mid block copy the UNet's weights
    /// (read through `unet_tensor(name)`); the hint conv and the fusion heads start at zero; the
    /// pixel conditioning embedding's other layers start from seeded random values. Returns the
    /// model and the store of its trainable variables.
    pub fn from_unet(
        cfg: &AdaptorConfig,
        unet_tensor: impl Fn(&str) -> Option<Tensor> + Send + Sync + 'static,
        seed: u64,
        device: &Device,
    ) -> Result<(Self, VarStore)> {
        let store = VarStore::new(seed, device).with_source(unet_tensor);
        let model = Self::new(cfg, store.var_builder())?;
        Ok((model, store))
    }

    /// The architecture.
    pub fn config(&self) -> &AdaptorConfig {
        &self.config
    }

    /// The hint the adaptor expects for a given latent size: `[hint_channels, h, w]` (latent)
    /// or `[3, 8h, 8w]` (pixel).
    pub fn hint_mode(&self) -> HintMode {
        self.config.hint_mode
    }

    /// Runs the adaptor on the noisy latent `sample` at `timesteps` with the restoration-prompt
    /// `context` (`[b, tokens, d]`) and `pooled` embedding (`[b, d]`; needed only when the
    /// adaptor has a prompt embedding, ignored otherwise) and the `hint` (batch 1 is
    /// broadcast), scaling its signals by `scale`.
    pub fn forward(
        &self,
        sample: &Tensor,
        timesteps: &[f32],
        context: &Tensor,
        pooled: Option<&Tensor>,
        hint: &Tensor,
        scale: f64,
    ) -> Result<Control> {
        let (b, _, _, _) = sample.dims4()?;
        let mut temb = self.time.forward(timesteps, b, sample)?;
        if let Some(ce) = &self.class_embedding {
            let Some(pooled) = pooled else {
                candle_core::bail!(
                    "this adaptor has a prompt embedding (class_embed_type \"projection\") and needs the pooled restoration-prompt embedding"
                );
            };
            temb = temb.broadcast_add(&ce.forward(&pooled.to_dtype(temb.dtype())?)?)?;
        }
        let h = self.conv_in.forward(sample)?;
        let cond = match &self.hint {
            Hint::Latent(conv) => conv.forward(hint)?,
            Hint::Pixel(emb) => emb.forward(hint)?,
        };
        if cond.dims()[1..] != h.dims()[1..] {
            candle_core::bail!(
                "hint gives features of shape {:?}, the latent gives {:?} (pixel hints are 8× the latent size)",
                cond.dims(),
                h.dims()
            );
        }
        let mut h = h.broadcast_add(&cond)?;
        let mut skips = vec![h.clone()];
        for block in &self.down_blocks {
            h = block.forward(&h, Some(&temb), Some(context), &mut skips)?;
        }
        let mid = match &self.mid_block {
            Some(m) => Some(m.forward(&h, Some(&temb), Some(context))?),
            None => None,
        };
        let control = match &self.heads {
            Heads::Additive { down, mid: mid_conv } => Control {
                down: skips
                    .iter()
                    .zip(down)
                    .map(|(s, c)| Ok(Injection::Add((c.forward(s)? * scale)?)))
                    .collect::<Result<_>>()?,
                mid: match (mid, mid_conv) {
                    (Some(m), Some(c)) => Some(Injection::Add((c.forward(&m)? * scale)?)),
                    _ => None,
                },
            },
            Heads::Modulation { down, mid: mid_convs } => {
                let modulate = |f: &Tensor, (g, bt): &(Conv2d, Conv2d)| -> Result<Injection> {
                    Ok(Injection::Modulate {
                        gamma: (g.forward(f)? * scale)?,
                        beta: (bt.forward(f)? * scale)?,
                    })
                };
                Control {
                    down: skips
                        .iter()
                        .zip(down)
                        .map(|(s, p)| modulate(s, p))
                        .collect::<Result<_>>()?,
                    mid: match (mid, mid_convs) {
                        (Some(m), Some(p)) => Some(modulate(&m, p)?),
                        _ => None,
                    },
                }
            }
        };
        Ok(control)
    }
}
