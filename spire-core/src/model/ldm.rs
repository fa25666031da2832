//! Single-file checkpoints in the original Stable Diffusion layout (CompVis `ldm` names):
//! `v1-5-pruned-emaonly.safetensors`, `v2-1_512-ema-pruned.safetensors`, community
//! fine-tunes, and single-file ControlNets (`control_model.*`, or the same names at the root).
//!
//! Nothing is converted or copied: each component gets a view of the memory-mapped file under
//! diffusers / transformers names (a renaming view of the tensor store), and the models build from it exactly
//! as from a diffusers folder. OpenCLIP's fused `in_proj` attention weights (SD 2.x) are split
//! into q/k/v by cutting row ranges out of the file's header.
//!
//! The renaming is the inverse of what diffusers' `convert_ldm_unet_checkpoint`,
//! `convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint`, `convert_open_clip_checkpoint`
//! and `convert_controlnet_checkpoint` do, and the fixtures are checked against them.
//!
//! What a file cannot state is inferred by the rules of the published models, as diffusers'
//! default configs do: SD 1.x attention has 8 heads per layer, SD 2.x attention and every text
//! encoder has 64-wide heads, GroupNorm has 32 groups, SD 2.x reads the text encoder's
//! penultimate layer. A config folder ([`super::LoadOptions::config`]) overrides the inferred
//! configs with its `unet/`, `vae/` and `text_encoder/` `config.json` where present.

use std::collections::BTreeSet;

use super::adaptor::{AdaptorConfig, Fusion, HintMode};
use super::config::{ClipTextConfig, UNetConfig, VaeConfig};
use super::nn::Activation;
use crate::weights::{Source, TensorStore};

/// The UNet's prefix in an SD file.
pub(crate) const UNET: &str = "model.diffusion_model.";
/// The autoencoder's prefix.
pub(crate) const VAE: &str = "first_stage_model.";
/// SD 1.x's text encoder (transformers' CLIPTextModel under a prefix).
pub(crate) const CLIP: &str = "cond_stage_model.transformer.";
/// SD 2.x's text encoder (OpenCLIP ViT-H/14's text tower).
pub(crate) const OPEN_CLIP: &str = "cond_stage_model.model.";
/// A ControlNet's prefix in the original ControlNet files.
pub(crate) const CONTROL: &str = "control_model.";

/// Which Stable Diffusion generation a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// SD 1.x: OpenAI CLIP ViT-L/14 text encoder, 8 attention heads, conv projections.
    Sd1,
    /// SD 2.x: OpenCLIP ViT-H/14 text encoder (penultimate layer), 64-wide heads, linear
    /// projections.
    Sd2,
}

impl Generation {
    /// A name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Generation::Sd1 => "Stable Diffusion 1.x",
            Generation::Sd2 => "Stable Diffusion 2.x",
        }
    }
}

type Map = Vec<(String, Source)>;

fn whole(key: String) -> Source {
    Source { key, rows: None }
}

/// The keys under `prefix`, without it, sorted.
fn under(store: &TensorStore, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = store
        .keys()
        .filter_map(|k| k.strip_prefix(prefix).map(str::to_owned))
        .collect();
    v.sort();
    v
}

fn shape<'a>(store: &'a TensorStore, key: &str) -> Result<&'a [usize], String> {
    store.shape(key).ok_or_else(|| format!("missing tensor `{key}`"))
}

fn dim(store: &TensorStore, key: &str, axis: usize) -> Result<usize, String> {
    let s = shape(store, key)?;
    s.get(axis).copied().ok_or_else(|| {
        format!(
            "tensor `{key}` has shape {s:?}, expected at least {} axes",
            axis + 1
        )
    })
}

/// The distinct values of the numeric path segment right after `prefix` (e.g. the block
/// indices of `input_blocks.`).
fn indices(keys: &[String], prefix: &str) -> BTreeSet<usize> {
    keys.iter()
        .filter_map(|k| k.strip_prefix(prefix))
        .filter_map(|r| r.split('.').next()?.parse().ok())
        .collect()
}

/// `first few keys` for messages.
fn first_keys<'a>(keys: impl Iterator<Item = &'a str>, n: usize) -> String {
    let mut v: Vec<&str> = keys.collect();
    v.sort_unstable();
    let more = v.len().saturating_sub(n);
    let mut s = v
        .iter()
        .take(n)
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if more > 0 {
        s.push_str(&format!(" (and {more} more)"));
    }
    s
}

/// What an SD file holds, detected from its keys.
#[derive(Debug)]
pub(crate) struct Detected {
    pub(crate) generation: Generation,
}

/// Detects an SD 1.x / 2.x file, or says what the file is instead.
pub(crate) fn detect(store: &TensorStore) -> Result<Detected, String> {
    let has = |p: &str| store.keys().any(|k| k.starts_with(p));
    if !has(UNET) {
        let hint = if has(CONTROL) || store.shape("input_hint_block.0.weight").is_some() {
            "this is a ControlNet: load it as the adaptor (`--controlnet FILE`, \
             `LoadOptions::adaptor`) next to a Stable Diffusion checkpoint"
                .to_string()
        } else if has("conditioner.embedders.") {
            "this is an SDXL checkpoint (`conditioner.embedders.*`), which is not supported \
             (SD 1.x and 2.x are)"
                .to_string()
        } else if store.shape("conv_in.weight").is_some() || has("down_blocks.") {
            "this has diffusers names: it is one component of a diffusers folder; load the \
             whole folder with `from_pretrained` (`--model DIR`)"
                .to_string()
        } else {
            format!(
                "no known checkpoint layout (Stable Diffusion 1.x/2.x files have \
                 `{UNET}*`, `{VAE}*` and `cond_stage_model.*`); its first keys are {}",
                first_keys(store.keys(), 6)
            )
        };
        return Err(hint);
    }
    let generation = if has(OPEN_CLIP) {
        Generation::Sd2
    } else if has(CLIP) {
        Generation::Sd1
    } else {
        return Err(format!(
            "the file has a UNet (`{UNET}*`) but no text encoder (`{CLIP}*` for SD 1.x, \
             `{OPEN_CLIP}*` for SD 2.x)"
        ));
    };
    if !has(VAE) {
        return Err(format!("the file has a UNet but no autoencoder (`{VAE}*`)"));
    }
    Ok(Detected { generation })
}

// ------------------------------------------------------------------------------------------
// UNet and ControlNet body
// ------------------------------------------------------------------------------------------

fn resnet(rest: &str) -> Option<String> {
    const R: [(&str, &str); 6] = [
        ("in_layers.0.", "norm1."),
        ("in_layers.2.", "conv1."),
        ("out_layers.0.", "norm2."),
        ("out_layers.3.", "conv2."),
        ("emb_layers.1.", "time_emb_proj."),
        ("skip_connection.", "conv_shortcut."),
    ];
    R.iter()
        .find_map(|(old, new)| rest.strip_prefix(old).map(|tail| format!("{new}{tail}")))
}

/// `a.b.rest` → (a, b, rest) with numeric a and b.
fn two_indices(s: &str) -> Option<(usize, usize, &str)> {
    let (a, r) = s.split_once('.')?;
    let (b, rest) = r.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?, rest))
}

/// Infers the architecture of an ldm UNet (or a ControlNet body, `controlnet`) under
/// `prefix`. Heads follow `generation`'s rule.
pub(crate) fn infer_unet(
    store: &TensorStore,
    prefix: &str,
    generation: Generation,
    controlnet: bool,
) -> Result<UNetConfig, String> {
    let keys = under(store, prefix);
    let p = |k: &str| format!("{prefix}{k}");
    let conv_in = shape(store, &p("input_blocks.0.0.weight"))?;
    if conv_in.len() != 4 {
        return Err(format!(
            "`{}` has shape {conv_in:?}, expected a conv kernel",
            p("input_blocks.0.0.weight")
        ));
    }
    let (c0, in_channels) = (conv_in[0], conv_in[1]);
    let n_in = indices(&keys, "input_blocks.").last().map_or(0, |m| m + 1);
    let downs: Vec<usize> = (1..n_in)
        .filter(|i| {
            store
                .shape(&p(&format!("input_blocks.{i}.0.op.weight")))
                .is_some()
        })
        .collect();
    let layers = downs.first().map_or(n_in - 1, |d| d - 1);
    if layers == 0 || n_in % (layers + 1) != 0 {
        return Err(format!(
            "`{prefix}input_blocks` has {n_in} blocks and down-sampling at {downs:?}: not a UNet with the same number of resnets per level"
        ));
    }
    let levels = n_in / (layers + 1);
    let mut block_out_channels = Vec::with_capacity(levels);
    let mut down_cross_attention = Vec::with_capacity(levels);
    let mut transformer_layers = Vec::with_capacity(levels);
    for l in 0..levels {
        let i = 1 + l * (layers + 1);
        block_out_channels.push(dim(
            store,
            &p(&format!("input_blocks.{i}.0.out_layers.3.weight")),
            0,
        )?);
        let attn = store
            .shape(&p(&format!("input_blocks.{i}.1.proj_in.weight")))
            .is_some();
        down_cross_attention.push(attn);
        let n = indices(&keys, &format!("input_blocks.{i}.1.transformer_blocks.")).len();
        transformer_layers.push(if attn { n.max(1) } else { 1 });
    }
    if block_out_channels[0] != c0 {
        return Err(format!(
            "`{prefix}input_blocks.1` has {} channels, `conv_in` gives {c0}",
            block_out_channels[0]
        ));
    }
    // The first attention layer tells the projection kind and the context width.
    let attn_key = keys
        .iter()
        .find(|k| k.ends_with("transformer_blocks.0.attn2.to_k.weight"))
        .ok_or_else(|| format!("`{prefix}*` has no cross-attention layer"))?;
    let cross = dim(store, &p(attn_key), 1)?;
    let proj_key = keys
        .iter()
        .find(|k| k.ends_with(".proj_in.weight"))
        .ok_or_else(|| format!("`{prefix}*` has no `proj_in`"))?;
    let use_linear_projection = shape(store, &p(proj_key))?.len() == 2;
    let num_attention_heads = block_out_channels
        .iter()
        .map(|&c| match generation {
            Generation::Sd1 => 8,
            Generation::Sd2 => (c / 64).max(1),
        })
        .collect();
    let mid_block = store.shape(&p("middle_block.1.proj_in.weight")).is_some();
    let (out_channels, up_cross_attention) = if controlnet {
        (in_channels, Vec::new())
    } else {
        let out = dim(store, &p("out.2.weight"), 0)?;
        let up: Vec<bool> = (0..levels)
            .map(|b| {
                store
                    .shape(&p(&format!(
                        "output_blocks.{}.1.proj_in.weight",
                        b * (layers + 1)
                    )))
                    .is_some()
            })
            .collect();
        (out, up)
    };
    let mut cfg = UNetConfig::sd21_base();
    cfg.in_channels = in_channels;
    cfg.out_channels = out_channels;
    cfg.layers_per_block = vec![layers; levels];
    cfg.transformer_layers_per_block = transformer_layers;
    cfg.num_attention_heads = num_attention_heads;
    cfg.cross_attention_dim = vec![cross; levels];
    cfg.down_cross_attention = down_cross_attention;
    cfg.up_cross_attention = up_cross_attention;
    cfg.mid_block = mid_block;
    cfg.use_linear_projection = use_linear_projection;
    cfg.upcast_attention = generation == Generation::Sd2;
    cfg.block_out_channels = block_out_channels;
    Ok(cfg)
}

/// The diffusers name of one ldm UNet / ControlNet key (without the prefix); `layers` is the
/// resnets per down level, `hint_last` the index of the last `input_hint_block` conv.
fn unet_name(k: &str, layers: usize, hint_last: usize) -> Option<String> {
    let tail = |s: &str, new: &str| k.strip_prefix(s).map(|t| format!("{new}{t}"));
    if let Some(n) = tail("time_embed.0.", "time_embedding.linear_1.")
        .or_else(|| tail("time_embed.2.", "time_embedding.linear_2."))
        .or_else(|| tail("input_blocks.0.0.", "conv_in."))
        .or_else(|| tail("out.0.", "conv_norm_out."))
        .or_else(|| tail("out.2.", "conv_out."))
        .or_else(|| tail("middle_block_out.0.", "controlnet_mid_block."))
    {
        return Some(n);
    }
    if let Some(r) = k.strip_prefix("input_blocks.") {
        let (i, j, rest) = two_indices(r)?;
        let i = i.checked_sub(1)?;
        let (b, l) = (i / (layers + 1), i % (layers + 1));
        return match j {
            0 => match rest.strip_prefix("op.") {
                Some(t) => Some(format!("down_blocks.{b}.downsamplers.0.conv.{t}")),
                None => Some(format!("down_blocks.{b}.resnets.{l}.{}", resnet(rest)?)),
            },
            1 => Some(format!("down_blocks.{b}.attentions.{l}.{rest}")),
            _ => None,
        };
    }
    if let Some(r) = k.strip_prefix("middle_block.") {
        let (j, rest) = r.split_once('.')?;
        return match j {
            "0" => Some(format!("mid_block.resnets.0.{}", resnet(rest)?)),
            "1" => Some(format!("mid_block.attentions.0.{rest}")),
            "2" => Some(format!("mid_block.resnets.1.{}", resnet(rest)?)),
            _ => None,
        };
    }
    if let Some(r) = k.strip_prefix("output_blocks.") {
        let (i, j, rest) = two_indices(r)?;
        let (b, l) = (i / (layers + 1), i % (layers + 1));
        return match (j, rest.strip_prefix("conv.")) {
            (0, _) => Some(format!("up_blocks.{b}.resnets.{l}.{}", resnet(rest)?)),
            (1 | 2, Some(t)) => Some(format!("up_blocks.{b}.upsamplers.0.conv.{t}")),
            (1, None) => Some(format!("up_blocks.{b}.attentions.{l}.{rest}")),
            _ => None,
        };
    }
    if let Some(r) = k.strip_prefix("zero_convs.") {
        let (i, j, rest) = two_indices(r)?;
        return (j == 0).then(|| format!("controlnet_down_blocks.{i}.{rest}"));
    }
    if let Some(r) = k.strip_prefix("input_hint_block.") {
        let (i, rest) = r.split_once('.')?;
        let i: usize = i.parse().ok()?;
        return Some(match i {
            0 => format!("controlnet_cond_embedding.conv_in.{rest}"),
            i if i == hint_last => format!("controlnet_cond_embedding.conv_out.{rest}"),
            i if i % 2 == 0 => format!("controlnet_cond_embedding.blocks.{}.{rest}", i / 2 - 1),
            _ => return None,
        });
    }
    None
}

/// The diffusers view of an ldm UNet / ControlNet under `prefix`. Every key under the prefix
/// must map (an unknown one means an architecture this loader does not know).
pub(crate) fn unet_map(store: &TensorStore, prefix: &str, layers: usize) -> Result<Map, String> {
    let keys = under(store, prefix);
    let hint_last = indices(&keys, "input_hint_block.").last().copied().unwrap_or(0);
    let mut map = Map::with_capacity(keys.len());
    let mut unknown = Vec::new();
    for k in &keys {
        match unet_name(k, layers, hint_last) {
            Some(n) => map.push((n, whole(format!("{prefix}{k}")))),
            None => unknown.push(format!("{prefix}{k}")),
        }
    }
    if !unknown.is_empty() {
        return Err(format!(
            "tensors of an unknown UNet layout: {}",
            first_keys(unknown.iter().map(String::as_str), 5)
        ));
    }
    Ok(map)
}

/// The ControlNet's `input_hint_block` widths: (`conditioning_channels`,
/// `conditioning_embedding_out_channels`).
pub(crate) fn infer_hint(store: &TensorStore, prefix: &str) -> Result<(usize, Vec<usize>), String> {
    let keys = under(store, prefix);
    let idx: Vec<usize> = indices(&keys, "input_hint_block.").into_iter().collect();
    let w = |i: usize| shape(store, &format!("{prefix}input_hint_block.{i}.weight")).map(<[usize]>::to_vec);
    let bad = || {
        format!("`{prefix}input_hint_block` has convs {idx:?}: not a ControlNet conditioning embedding (0, 2, 4, … with an even number of inner convs)")
    };
    if idx.len() < 2 || idx[0] != 0 || idx.iter().enumerate().any(|(n, &i)| i != 2 * n) {
        return Err(bad());
    }
    let blocks = &idx[1..idx.len() - 1];
    if blocks.len() % 2 != 0 {
        return Err(bad());
    }
    let first = w(0)?;
    if first.len() != 4 {
        return Err(bad());
    }
    let mut ch = vec![first[0]];
    for pair in blocks.chunks(2) {
        ch.push(w(pair[1])?[0]);
    }
    Ok((first[1], ch))
}

/// A ControlNet's adaptor config: the backbone's body (heads, groups and widths come from the
/// UNet it was trained against, as `ControlNetModel.from_unet` makes them), its hint widths
/// from the file, pixel hint, additive fusion.
pub(crate) fn controlnet_config(
    store: &TensorStore,
    prefix: &str,
    unet: &UNetConfig,
) -> Result<AdaptorConfig, String> {
    let (conditioning_channels, widths) = infer_hint(store, prefix)?;
    let mut cfg = AdaptorConfig::from_unet(unet, HintMode::Pixel, Fusion::Additive, unet.in_channels);
    cfg.conditioning_channels = conditioning_channels;
    cfg.conditioning_embedding_out_channels = widths;
    Ok(cfg)
}

// ------------------------------------------------------------------------------------------
// Autoencoder
// ------------------------------------------------------------------------------------------

/// Infers an ldm autoencoder's architecture (SD's rules: 32 groups, SD's scaling factor).
pub(crate) fn infer_vae(store: &TensorStore) -> Result<VaeConfig, String> {
    let keys = under(store, VAE);
    let p = |k: String| format!("{VAE}{k}");
    let levels = indices(&keys, "encoder.down.").len();
    if levels == 0 {
        return Err(format!("`{VAE}encoder.down.*` is missing"));
    }
    let block_out_channels = (0..levels)
        .map(|i| dim(store, &p(format!("encoder.down.{i}.block.0.conv2.weight")), 0))
        .collect::<Result<Vec<_>, _>>()?;
    let layers = indices(&keys, "encoder.down.0.block.").len();
    let mut cfg = VaeConfig::sd();
    cfg.in_channels = dim(store, &p("encoder.conv_in.weight".into()), 1)?;
    cfg.out_channels = dim(store, &p("decoder.conv_out.weight".into()), 0)?;
    cfg.latent_channels = dim(store, &p("decoder.conv_in.weight".into()), 1)?;
    cfg.layers_per_block = layers;
    cfg.block_out_channels = block_out_channels;
    cfg.mid_block_add_attention = store.shape(&p("encoder.mid.attn_1.q.weight".into())).is_some();
    cfg.use_quant_conv = store.shape(&p("quant_conv.weight".into())).is_some();
    cfg.use_post_quant_conv = store.shape(&p("post_quant_conv.weight".into())).is_some();
    Ok(cfg)
}

fn vae_name(k: &str, levels: usize) -> Option<String> {
    let res = |r: &str| r.replace("nin_shortcut", "conv_shortcut");
    let (part, rest) = k.split_once('.')?;
    if !matches!(part, "encoder" | "decoder") {
        return matches!(part, "quant_conv" | "post_quant_conv").then(|| k.to_string());
    }
    let name = if let Some(r) = rest.strip_prefix("down.") {
        let (i, r) = r.split_once('.')?;
        if let Some(t) = r.strip_prefix("block.") {
            format!("down_blocks.{i}.resnets.{}", res(t))
        } else {
            format!(
                "down_blocks.{i}.downsamplers.0.{}",
                r.strip_prefix("downsample.")?
            )
        }
    } else if let Some(r) = rest.strip_prefix("up.") {
        let (i, r) = r.split_once('.')?;
        let i = levels.checked_sub(1)?.checked_sub(i.parse().ok()?)?;
        if let Some(t) = r.strip_prefix("block.") {
            format!("up_blocks.{i}.resnets.{}", res(t))
        } else {
            format!("up_blocks.{i}.upsamplers.0.{}", r.strip_prefix("upsample.")?)
        }
    } else if let Some(r) = rest.strip_prefix("mid.block_") {
        let (i, t) = r.split_once('.')?;
        format!(
            "mid_block.resnets.{}.{}",
            i.parse::<usize>().ok()?.checked_sub(1)?,
            res(t)
        )
    } else if let Some(r) = rest.strip_prefix("mid.attn_1.") {
        let (m, t) = r.split_once('.')?;
        let m = match m {
            "norm" => "group_norm",
            "q" => "to_q",
            "k" => "to_k",
            "v" => "to_v",
            "proj_out" => "to_out.0",
            _ => return None,
        };
        format!("mid_block.attentions.0.{m}.{t}")
    } else if let Some(t) = rest.strip_prefix("norm_out.") {
        format!("conv_norm_out.{t}")
    } else if rest.starts_with("conv_in.") || rest.starts_with("conv_out.") {
        rest.to_string()
    } else {
        return None;
    };
    Some(format!("{part}.{name}"))
}

/// The diffusers view of the autoencoder (`loss.*`, the training discriminator some files
/// carry, is skipped).
pub(crate) fn vae_map(store: &TensorStore, levels: usize) -> Result<Map, String> {
    let keys = under(store, VAE);
    let mut map = Map::with_capacity(keys.len());
    let mut unknown = Vec::new();
    for k in keys.iter().filter(|k| !k.starts_with("loss.")) {
        match vae_name(k, levels) {
            Some(n) => map.push((n, whole(format!("{VAE}{k}")))),
            None => unknown.push(format!("{VAE}{k}")),
        }
    }
    if !unknown.is_empty() {
        return Err(format!(
            "tensors of an unknown autoencoder layout: {}",
            first_keys(unknown.iter().map(String::as_str), 5)
        ));
    }
    Ok(map)
}

// ------------------------------------------------------------------------------------------
// Text encoders
// ------------------------------------------------------------------------------------------

/// Infers the text encoder's architecture; `eos` is the tokenizer's end token.
pub(crate) fn infer_text(
    store: &TensorStore,
    generation: Generation,
    eos: u32,
) -> Result<ClipTextConfig, String> {
    let (tok, pos, layer_prefix, fc1, act, skip_last) = match generation {
        Generation::Sd1 => (
            format!("{CLIP}text_model.embeddings.token_embedding.weight"),
            format!("{CLIP}text_model.embeddings.position_embedding.weight"),
            "text_model.encoder.layers.",
            "mlp.fc1.weight",
            Activation::QuickGelu,
            0,
        ),
        Generation::Sd2 => (
            format!("{OPEN_CLIP}token_embedding.weight"),
            format!("{OPEN_CLIP}positional_embedding"),
            "transformer.resblocks.",
            "mlp.c_fc.weight",
            Activation::Gelu,
            1,
        ),
    };
    let prefix = if generation == Generation::Sd1 {
        CLIP
    } else {
        OPEN_CLIP
    };
    let keys = under(store, prefix);
    let n = indices(&keys, layer_prefix).len();
    let layers = n.checked_sub(skip_last).filter(|&l| l > 0).ok_or_else(|| {
        format!(
            "`{prefix}{layer_prefix}*` has {n} layers; {} needs at least {}",
            generation.name(),
            1 + skip_last
        )
    })?;
    let hidden = dim(store, &tok, 1)?;
    if hidden % 64 != 0 {
        return Err(format!(
            "`{tok}` is {hidden} wide, not a multiple of the 64-wide heads of CLIP text encoders"
        ));
    }
    Ok(ClipTextConfig {
        vocab_size: dim(store, &tok, 0)?,
        hidden_size: hidden,
        intermediate_size: dim(store, &format!("{prefix}{layer_prefix}0.{fc1}"), 0)?,
        num_hidden_layers: layers,
        num_attention_heads: hidden / 64,
        max_position_embeddings: dim(store, &pos, 0)?,
        hidden_act: act,
        layer_norm_eps: 1e-5,
        eos_token_id: eos,
        projection_dim: None,
    })
}

/// The transformers view of the text encoder, for the first `layers` layers (SD 2.x leaves out
/// OpenCLIP's last one).
pub(crate) fn text_map(
    store: &TensorStore,
    generation: Generation,
    layers: usize,
    hidden: usize,
) -> Result<Map, String> {
    match generation {
        Generation::Sd1 => Ok(under(store, CLIP)
            .into_iter()
            .filter(|k| !k.ends_with("position_ids"))
            .map(|k| (k.clone(), whole(format!("{CLIP}{k}"))))
            .collect()),
        Generation::Sd2 => {
            let mut map = Map::new();
            let t = "text_model.";
            for (new, old) in [
                ("embeddings.token_embedding.weight", "token_embedding.weight"),
                ("embeddings.position_embedding.weight", "positional_embedding"),
                ("final_layer_norm.weight", "ln_final.weight"),
                ("final_layer_norm.bias", "ln_final.bias"),
            ] {
                map.push((format!("{t}{new}"), whole(format!("{OPEN_CLIP}{old}"))));
            }
            for i in 0..layers {
                let o = format!("{OPEN_CLIP}transformer.resblocks.{i}.");
                let n = format!("{t}encoder.layers.{i}.");
                for w in ["weight", "bias"] {
                    for (j, q) in ["q", "k", "v"].iter().enumerate() {
                        map.push((
                            format!("{n}self_attn.{q}_proj.{w}"),
                            Source {
                                key: format!("{o}attn.in_proj_{w}"),
                                rows: Some((j * hidden, hidden)),
                            },
                        ));
                    }
                    for (new, old) in [
                        ("self_attn.out_proj", "attn.out_proj"),
                        ("layer_norm1", "ln_1"),
                        ("layer_norm2", "ln_2"),
                        ("mlp.fc1", "mlp.c_fc"),
                        ("mlp.fc2", "mlp.c_proj"),
                    ] {
                        map.push((format!("{n}{new}.{w}"), whole(format!("{o}{old}.{w}"))));
                    }
                }
            }
            // Every source must exist (a file with other names fails here, naming the key).
            for (_, s) in &map {
                shape(store, &s.key)?;
            }
            Ok(map)
        }
    }
}

/// A ControlNet file's prefix: `control_model.` (the original files), `""` for the same names
/// at the root (some re-saved files), or `None` with diffusers names at the root (a diffusers
/// `ControlNetModel` saved as one file), which load unchanged.
pub(crate) fn controlnet_prefix(store: &TensorStore) -> Result<Option<&'static str>, String> {
    if store
        .shape(&format!("{CONTROL}input_hint_block.0.weight"))
        .is_some()
    {
        Ok(Some(CONTROL))
    } else if store.shape("input_hint_block.0.weight").is_some() {
        Ok(Some(""))
    } else if store.shape("controlnet_cond_embedding.conv_in.weight").is_some() {
        Ok(None)
    } else if store.keys().any(|k| k.starts_with(UNET)) {
        Err(
            "this is a Stable Diffusion checkpoint, not a ControlNet: pass it as the checkpoint \
             (`--checkpoint`, `Restorer::from_single_file`)"
                .into(),
        )
    } else {
        Err(format!(
            "not a ControlNet (no `{CONTROL}input_hint_block.0.weight`, `input_hint_block.0.weight` \
             or `controlnet_cond_embedding.conv_in.weight`); its first keys are {}",
            first_keys(store.keys(), 6)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unet_names_follow_diffusers_conversion() {
        let cases = [
            ("time_embed.0.weight", "time_embedding.linear_1.weight"),
            ("input_blocks.0.0.bias", "conv_in.bias"),
            (
                "input_blocks.1.0.in_layers.0.weight",
                "down_blocks.0.resnets.0.norm1.weight",
            ),
            (
                "input_blocks.2.1.proj_in.weight",
                "down_blocks.0.attentions.1.proj_in.weight",
            ),
            (
                "input_blocks.3.0.op.weight",
                "down_blocks.0.downsamplers.0.conv.weight",
            ),
            (
                "input_blocks.4.0.skip_connection.weight",
                "down_blocks.1.resnets.0.conv_shortcut.weight",
            ),
            (
                "middle_block.2.emb_layers.1.bias",
                "mid_block.resnets.1.time_emb_proj.bias",
            ),
            (
                "middle_block.1.transformer_blocks.0.attn1.to_q.weight",
                "mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight",
            ),
            (
                "output_blocks.2.1.conv.weight",
                "up_blocks.0.upsamplers.0.conv.weight",
            ),
            (
                "output_blocks.5.2.conv.bias",
                "up_blocks.1.upsamplers.0.conv.bias",
            ),
            (
                "output_blocks.5.1.norm.weight",
                "up_blocks.1.attentions.2.norm.weight",
            ),
            (
                "output_blocks.11.0.out_layers.3.weight",
                "up_blocks.3.resnets.2.conv2.weight",
            ),
            ("out.2.weight", "conv_out.weight"),
            ("zero_convs.11.0.weight", "controlnet_down_blocks.11.weight"),
            ("middle_block_out.0.bias", "controlnet_mid_block.bias"),
            (
                "input_hint_block.0.weight",
                "controlnet_cond_embedding.conv_in.weight",
            ),
            (
                "input_hint_block.12.weight",
                "controlnet_cond_embedding.blocks.5.weight",
            ),
            (
                "input_hint_block.14.bias",
                "controlnet_cond_embedding.conv_out.bias",
            ),
        ];
        for (ldm, want) in cases {
            assert_eq!(unet_name(ldm, 2, 14).as_deref(), Some(want), "{ldm}");
        }
        assert_eq!(unet_name("label_emb.0.0.weight", 2, 14), None);
        assert_eq!(unet_name("input_hint_block.3.weight", 2, 14), None);
    }

    #[test]
    fn vae_names_follow_diffusers_conversion() {
        let cases = [
            (
                "encoder.down.1.block.0.nin_shortcut.weight",
                "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
            ),
            (
                "encoder.down.0.downsample.conv.bias",
                "encoder.down_blocks.0.downsamplers.0.conv.bias",
            ),
            (
                "decoder.up.3.block.2.conv1.weight",
                "decoder.up_blocks.0.resnets.2.conv1.weight",
            ),
            (
                "decoder.up.1.upsample.conv.weight",
                "decoder.up_blocks.2.upsamplers.0.conv.weight",
            ),
            (
                "encoder.mid.block_2.norm1.bias",
                "encoder.mid_block.resnets.1.norm1.bias",
            ),
            (
                "decoder.mid.attn_1.proj_out.weight",
                "decoder.mid_block.attentions.0.to_out.0.weight",
            ),
            (
                "decoder.mid.attn_1.norm.weight",
                "decoder.mid_block.attentions.0.group_norm.weight",
            ),
            ("encoder.norm_out.bias", "encoder.conv_norm_out.bias"),
            ("post_quant_conv.weight", "post_quant_conv.weight"),
        ];
        for (ldm, want) in cases {
            assert_eq!(vae_name(ldm, 4).as_deref(), Some(want), "{ldm}");
        }
        assert_eq!(vae_name("decoder.up.4.block.0.conv1.weight", 4), None);
        assert_eq!(vae_name("encoder.mid.block_0.conv1.weight", 4), None);
    }
}
