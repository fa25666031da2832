//! diffusers / transformers `config.json` files, read into the runtime configs of the models.
//!
//! Fields are read by their upstream names with the upstream defaults. A field that changes
//! the architecture in a way this crate does not implement (a class embedding, a different
//! time embedding, an unknown block type, …) is an [`Error::ModelLoad`](crate::Error::ModelLoad) naming the field and
//! its value, never silently ignored. Fields that do not matter for inference
//! (`_class_name`, `sample_size`, `dropout`, …) are ignored.

use std::path::Path;

use serde_json::Value;

use crate::error::Result;
use crate::model::nn::Activation;

pub(crate) use crate::json::Json;
pub use crate::json::MAX_CONFIG_COUNT;

impl Json<'_> {
    /// An activation function by its upstream name.
    pub(crate) fn activation(&self, field: &str, default: &str) -> Result<Activation> {
        let name = self.str_or(field, default)?;
        Activation::from_name(name).ok_or_else(|| self.err(field, format!("unknown activation `{name}`")))
    }
}

/// The architecture of a `UNet2DConditionModel` (and of the body a `ControlNetModel` copies).
#[derive(Debug, Clone, PartialEq)]
pub struct UNetConfig {
    /// Latent channels in.
    pub in_channels: usize,
    /// Channels out (predicted noise / velocity).
    pub out_channels: usize,
    /// Width of each resolution level.
    pub block_out_channels: Vec<usize>,
    /// Whether each down block has cross-attention (`CrossAttnDownBlock2D`).
    pub down_cross_attention: Vec<bool>,
    /// Whether each up block has cross-attention (`CrossAttnUpBlock2D`).
    pub up_cross_attention: Vec<bool>,
    /// Whether there is a `UNetMidBlock2DCrossAttn` (false: no mid block).
    pub mid_block: bool,
    /// Resnets per down block.
    pub layers_per_block: Vec<usize>,
    /// Transformer blocks per attention layer, per down block.
    pub transformer_layers_per_block: Vec<usize>,
    /// Attention heads per block (diffusers' `attention_head_dim`, which counts heads).
    pub num_attention_heads: Vec<usize>,
    /// Width of the text context, per block.
    pub cross_attention_dim: Vec<usize>,
    /// GroupNorm groups.
    pub norm_num_groups: usize,
    /// GroupNorm epsilon of resnets.
    pub norm_eps: f64,
    /// Timestep features order.
    pub flip_sin_to_cos: bool,
    /// Timestep frequency shift.
    pub freq_shift: f64,
    /// Linear instead of 1×1-conv projections in the transformers (SD 2.x).
    pub use_linear_projection: bool,
    /// Attention scores in f32 (SD 2.1); always the case here.
    pub upcast_attention: bool,
    /// Padding of the down-sampling convs.
    pub downsample_padding: usize,
    /// Output scale of mid-block resnets.
    pub mid_block_scale_factor: f64,
    /// Resnet non-linearity.
    pub act_fn: Activation,
    /// `2·x − 1` on the input (off for SD).
    pub center_input_sample: bool,
}

const CROSS_DOWN: &str = "CrossAttnDownBlock2D";
const PLAIN_DOWN: &str = "DownBlock2D";
const CROSS_UP: &str = "CrossAttnUpBlock2D";
const PLAIN_UP: &str = "UpBlock2D";

impl UNetConfig {
    /// Parses the text of a diffusers `UNet2DConditionModel` `config.json` held in memory (a
    /// folder's file is read by the model's loader).
    ///
    /// # Errors
    /// [`Error::ModelLoad`](crate::Error::ModelLoad) naming a bad field, its value and the allowed range.
    pub fn from_json_str(text: &str) -> Result<Self> {
        Self::from_json(&Json::parse(Path::new("unet/config.json"), text)?, false)
    }

    /// Reads a diffusers `UNet2DConditionModel` or `ControlNetModel` config (for the latter
    /// `up_block_types` is absent and `out_channels` unused).
    pub(crate) fn from_json(j: &Json, controlnet: bool) -> Result<Self> {
        use serde_json::json;
        for (field, default) in [
            ("class_embed_type", Value::Null),
            ("addition_embed_type", Value::Null),
            ("num_class_embeds", Value::Null),
            ("encoder_hid_dim", Value::Null),
            ("encoder_hid_dim_type", Value::Null),
            ("time_cond_proj_dim", Value::Null),
            ("time_embedding_dim", Value::Null),
            ("time_embedding_act_fn", Value::Null),
            ("timestep_post_act", Value::Null),
            ("num_attention_heads", Value::Null),
            ("dual_cross_attention", json!(false)),
            ("only_cross_attention", json!(false)),
            ("resnet_time_scale_shift", json!("default")),
            ("resnet_skip_time_act", json!(false)),
            ("resnet_out_scale_factor", json!(1.0)),
            ("time_embedding_type", json!("positional")),
            ("conv_in_kernel", json!(3)),
            ("conv_out_kernel", json!(3)),
            ("attention_type", json!("default")),
            ("class_embeddings_concat", json!(false)),
            ("cross_attention_norm", Value::Null),
            ("reverse_transformer_layers_per_block", Value::Null),
            ("mid_block_only_cross_attention", Value::Null),
            ("global_pool_conditions", json!(false)),
        ] {
            j.require_default(field, default)?;
        }
        let block_out_channels = j.usizes("block_out_channels")?;
        let n = block_out_channels.len();
        if n == 0 {
            return Err(j.err("block_out_channels", "is empty"));
        }
        let down_types = j.strings("down_block_types")?;
        if down_types.len() != n {
            return Err(j.err(
                "down_block_types",
                format!("has {} entries, block_out_channels has {n}", down_types.len()),
            ));
        }
        let down_cross_attention = down_types
            .iter()
            .map(|t| match t.as_str() {
                CROSS_DOWN => Ok(true),
                PLAIN_DOWN => Ok(false),
                other => Err(j.err(
                    "down_block_types",
                    format!("block type `{other}` is not supported"),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        let up_cross_attention = if controlnet {
            Vec::new()
        } else {
            let up_types = j.strings("up_block_types")?;
            if up_types.len() != n {
                return Err(j.err(
                    "up_block_types",
                    format!("has {} entries, block_out_channels has {n}", up_types.len()),
                ));
            }
            up_types
                .iter()
                .map(|t| match t.as_str() {
                    CROSS_UP => Ok(true),
                    PLAIN_UP => Ok(false),
                    other => Err(j.err("up_block_types", format!("block type `{other}` is not supported"))),
                })
                .collect::<Result<Vec<_>>>()?
        };
        let mid_block = match j.get("mid_block_type") {
            None if controlnet => true,
            None => j.map.get("mid_block_type").is_none(),
            Some(Value::String(s)) if s == "UNetMidBlock2DCrossAttn" => true,
            Some(v) => return Err(j.err("mid_block_type", format!("{v} is not supported"))),
        };
        let norm_num_groups = j.groups_dividing(&block_out_channels)?;
        let num_attention_heads = j.per_block("attention_head_dim", 8, n)?;
        for (i, (&h, &c)) in num_attention_heads.iter().zip(&block_out_channels).enumerate() {
            if h == 0 || c % h != 0 {
                return Err(j.err(
                    "attention_head_dim",
                    format!("block {i}: {h} heads do not divide {c} channels"),
                ));
            }
        }
        let cfg = Self {
            in_channels: j.usize_or("in_channels", 4)?,
            out_channels: j.usize_or("out_channels", 4)?,
            down_cross_attention,
            up_cross_attention,
            mid_block,
            layers_per_block: j.per_block("layers_per_block", 2, n)?,
            transformer_layers_per_block: j.per_block("transformer_layers_per_block", 1, n)?,
            num_attention_heads,
            cross_attention_dim: j.per_block("cross_attention_dim", 1280, n)?,
            norm_num_groups,
            norm_eps: j.eps_or("norm_eps", 1e-5)?,
            flip_sin_to_cos: j.bool_or("flip_sin_to_cos", true)?,
            freq_shift: j.f64_or("freq_shift", 0.0)?,
            use_linear_projection: j.bool_or("use_linear_projection", false)?,
            upcast_attention: j.bool_or("upcast_attention", false)?,
            downsample_padding: j.usize_or("downsample_padding", 1)?,
            mid_block_scale_factor: j.f64_or("mid_block_scale_factor", 1.0)?,
            act_fn: j.activation("act_fn", "silu")?,
            center_input_sample: j.bool_or("center_input_sample", false)?,
            block_out_channels,
        };
        Ok(cfg)
    }

    /// Width of the time embedding (`4 × block_out_channels[0]`).
    pub fn time_embed_dim(&self) -> usize {
        self.block_out_channels[0] * 4
    }

    /// The spatial down-sampling factor between the input and the deepest level.
    pub fn downscale_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }

    /// The UNet of Stable Diffusion 2.1-base (`stabilityai/stable-diffusion-2-1-base`).
    pub fn sd21_base() -> Self {
        Self {
            in_channels: 4,
            out_channels: 4,
            block_out_channels: vec![320, 640, 1280, 1280],
            down_cross_attention: vec![true, true, true, false],
            up_cross_attention: vec![false, true, true, true],
            mid_block: true,
            layers_per_block: vec![2; 4],
            transformer_layers_per_block: vec![1; 4],
            num_attention_heads: vec![5, 10, 20, 20],
            cross_attention_dim: vec![1024; 4],
            norm_num_groups: 32,
            norm_eps: 1e-5,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            use_linear_projection: true,
            upcast_attention: false,
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            act_fn: Activation::Silu,
            center_input_sample: false,
        }
    }

    /// A tiny SD-1.x-shaped config for tests (conv projection, one head count for all blocks).
    pub fn tiny_sd1() -> Self {
        Self {
            in_channels: 4,
            out_channels: 4,
            block_out_channels: vec![32, 64],
            down_cross_attention: vec![true, false],
            up_cross_attention: vec![false, true],
            mid_block: true,
            layers_per_block: vec![2, 2],
            transformer_layers_per_block: vec![1, 1],
            num_attention_heads: vec![2, 2],
            cross_attention_dim: vec![32, 32],
            norm_num_groups: 8,
            norm_eps: 1e-5,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            use_linear_projection: false,
            upcast_attention: false,
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            act_fn: Activation::Silu,
            center_input_sample: false,
        }
    }
}

/// The architecture of an `AutoencoderKL`.
#[derive(Debug, Clone, PartialEq)]
pub struct VaeConfig {
    /// Image channels.
    pub in_channels: usize,
    /// Image channels out.
    pub out_channels: usize,
    /// Latent channels.
    pub latent_channels: usize,
    /// Width of each level.
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder block (the decoder has one more).
    pub layers_per_block: usize,
    /// GroupNorm groups.
    pub norm_num_groups: usize,
    /// Non-linearity.
    pub act_fn: Activation,
    /// Latents are multiplied by this after encoding.
    pub scaling_factor: f64,
    /// Latents are shifted by this before scaling (None for SD).
    pub shift_factor: f64,
    /// Whether the mid blocks have their attention layer.
    pub mid_block_add_attention: bool,
    /// `quant_conv` present.
    pub use_quant_conv: bool,
    /// `post_quant_conv` present.
    pub use_post_quant_conv: bool,
    /// diffusers' `force_upcast` (default true): the autoencoder overflows in float16, so a
    /// model loaded in float16 keeps this component in float32 (bfloat16 has f32's range and
    /// is kept as asked, as in diffusers).
    pub force_upcast: bool,
}

impl VaeConfig {
    /// Parses the text of a diffusers `AutoencoderKL` `config.json` held in memory (a
    /// folder's file is read by the model's loader).
    ///
    /// # Errors
    /// [`Error::ModelLoad`](crate::Error::ModelLoad) naming a bad field, its value and the allowed range.
    pub fn from_json_str(text: &str) -> Result<Self> {
        Self::from_json(&Json::parse(Path::new("vae/config.json"), text)?)
    }

    pub(crate) fn from_json(j: &Json) -> Result<Self> {
        let block_out_channels = j.usizes("block_out_channels")?;
        let n = block_out_channels.len();
        if n == 0 {
            return Err(j.err("block_out_channels", "is empty"));
        }
        for field in ["down_block_types", "up_block_types"] {
            if let Ok(types) = j.strings(field) {
                let want = if field == "down_block_types" {
                    "DownEncoderBlock2D"
                } else {
                    "UpDecoderBlock2D"
                };
                if types.len() != n || types.iter().any(|t| t != want) {
                    return Err(j.err(
                        field,
                        format!("only {n} × `{want}` is supported, found {types:?}"),
                    ));
                }
            }
        }
        j.require_default("norm_type", Value::String("group".into()))?;
        let norm_num_groups = j.groups_dividing(&block_out_channels)?;
        Ok(Self {
            in_channels: j.usize_or("in_channels", 3)?,
            out_channels: j.usize_or("out_channels", 3)?,
            latent_channels: j.usize_or("latent_channels", 4)?,
            layers_per_block: j.usize_or("layers_per_block", 1)?,
            norm_num_groups,
            act_fn: j.activation("act_fn", "silu")?,
            scaling_factor: j.scaling_factor_or(0.18215)?,
            shift_factor: j.f64_in("shift_factor", 0.0, "|x| ≤ 1e6", |x| x.abs() <= 1e6)?,
            mid_block_add_attention: j.bool_or("mid_block_add_attention", true)?,
            use_quant_conv: j.bool_or("use_quant_conv", true)?,
            use_post_quant_conv: j.bool_or("use_post_quant_conv", true)?,
            force_upcast: j.bool_or("force_upcast", true)?,
            block_out_channels,
        })
    }

    /// The VAE of Stable Diffusion 1.x / 2.x.
    pub fn sd() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            latent_channels: 4,
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            norm_num_groups: 32,
            act_fn: Activation::Silu,
            scaling_factor: 0.18215,
            shift_factor: 0.0,
            mid_block_add_attention: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
            force_upcast: true,
        }
    }

    /// Pixels per latent pixel (8 for SD).
    pub fn downscale_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

/// The architecture of a transformers `CLIPTextModel`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipTextConfig {
    /// Token vocabulary size.
    pub vocab_size: usize,
    /// Width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Sequence length (77).
    pub max_position_embeddings: usize,
    /// MLP activation.
    pub hidden_act: Activation,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Token id whose position gives the pooled output.
    pub eos_token_id: u32,
    /// Output width of `text_projection` if the checkpoint has one (`CLIPTextModelWithProjection`).
    pub projection_dim: Option<usize>,
}

impl ClipTextConfig {
    /// Parses the text of a transformers `CLIPTextModel` `config.json` held in memory (a
    /// folder's file is read by the model's loader).
    ///
    /// # Errors
    /// [`Error::ModelLoad`](crate::Error::ModelLoad) naming a bad field, its value and the allowed range.
    pub fn from_json_str(text: &str) -> Result<Self> {
        Self::from_json(&Json::parse(Path::new("text_encoder/config.json"), text)?)
    }

    /// The text encoder of Stable Diffusion 2.x (OpenCLIP ViT-H/14's text tower as
    /// transformers holds it: 23 layers of width 1024, GELU), with the tokenizer's end token.
    pub fn sd21(eos_token_id: u32) -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 1024,
            intermediate_size: 4096,
            num_hidden_layers: 23,
            num_attention_heads: 16,
            max_position_embeddings: 77,
            hidden_act: Activation::Gelu,
            layer_norm_eps: 1e-5,
            eos_token_id,
            projection_dim: None,
        }
    }

    pub(crate) fn from_json(j: &Json) -> Result<Self> {
        // A full CLIPModel config nests the text part.
        let text;
        let j = match j.map.get("text_config") {
            Some(Value::Object(m)) => {
                text = Json {
                    path: j.path,
                    map: m.clone(),
                };
                &text
            }
            _ => j,
        };
        let hidden_size = j.usize_or("hidden_size", 512)?;
        let num_attention_heads = j.usize_or("num_attention_heads", 8)?;
        if num_attention_heads == 0 || hidden_size % num_attention_heads != 0 {
            return Err(j.err(
                "num_attention_heads",
                format!("{num_attention_heads} does not divide hidden_size {hidden_size}"),
            ));
        }
        Ok(Self {
            vocab_size: j.usize_or("vocab_size", 49408)?,
            hidden_size,
            intermediate_size: j.usize_or("intermediate_size", 2048)?,
            num_hidden_layers: j.usize_or("num_hidden_layers", 12)?,
            num_attention_heads,
            max_position_embeddings: j.usize_or("max_position_embeddings", 77)?,
            hidden_act: j.activation("hidden_act", "quick_gelu")?,
            layer_norm_eps: j.eps_or("layer_norm_eps", 1e-5)?,
            eos_token_id: j.usize_or("eos_token_id", 2)? as u32,
            projection_dim: j
                .get("projection_dim")
                .and_then(Value::as_u64)
                .map(|x| x as usize),
        })
    }
}

/// transformers `CLIPVisionConfig` (the `vision_config` of a `CLIPModel`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClipVisionConfig {
    /// Width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Input side in pixels.
    pub image_size: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// MLP activation.
    pub hidden_act: Activation,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Output width of `visual_projection`.
    pub projection_dim: usize,
}

impl ClipVisionConfig {
    pub(crate) fn from_json(j: &Json) -> Result<Self> {
        let top_projection = j.usize_or("projection_dim", 512)?;
        let vision;
        let j = match j.map.get("vision_config") {
            Some(Value::Object(m)) => {
                vision = Json {
                    path: j.path,
                    map: m.clone(),
                };
                &vision
            }
            _ => j,
        };
        let hidden_size = j.usize_or("hidden_size", 768)?;
        let num_attention_heads = j.usize_or("num_attention_heads", 12)?;
        if num_attention_heads == 0 || hidden_size % num_attention_heads != 0 {
            return Err(j.err(
                "num_attention_heads",
                format!("{num_attention_heads} does not divide hidden_size {hidden_size}"),
            ));
        }
        let image_size = j.usize_or("image_size", 224)?;
        let patch_size = j.usize_or("patch_size", 32)?;
        if patch_size == 0 || image_size % patch_size != 0 {
            return Err(j.err(
                "patch_size",
                format!("{patch_size} does not divide image_size {image_size}"),
            ));
        }
        Ok(Self {
            hidden_size,
            intermediate_size: j.usize_or("intermediate_size", 3072)?,
            num_hidden_layers: j.usize_or("num_hidden_layers", 12)?,
            num_attention_heads,
            image_size,
            patch_size,
            hidden_act: j.activation("hidden_act", "quick_gelu")?,
            layer_norm_eps: j.eps_or("layer_norm_eps", 1e-5)?,
            projection_dim: j.usize_or("projection_dim", top_projection)?,
        })
    }
}
