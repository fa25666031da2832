//! transformers `CLIPTextModel`: token and position embeddings, pre-LayerNorm encoder layers
//! with causal self-attention, and the final LayerNorm; and `CLIPVisionModel` with its
//! `visual_projection` (patch embedding, class token, the same encoder layers without a mask),
//! for the CLIP-I / CLIP-T metrics.

use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};

use super::config::{ClipTextConfig, ClipVisionConfig};
use super::nn::{layer_norm, linear, softmax_last_dim, Activation, LayerNorm, Linear};

#[derive(Debug, Clone)]
struct ClipAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
    scale: f64,
}

/// The shape of one encoder layer, shared by the text and vision towers.
#[derive(Debug, Clone, Copy)]
struct LayerShape {
    hidden: usize,
    heads: usize,
    intermediate: usize,
    act: Activation,
    eps: f64,
}

impl From<&ClipTextConfig> for LayerShape {
    fn from(c: &ClipTextConfig) -> Self {
        Self {
            hidden: c.hidden_size,
            heads: c.num_attention_heads,
            intermediate: c.intermediate_size,
            act: c.hidden_act,
            eps: c.layer_norm_eps,
        }
    }
}

impl From<&ClipVisionConfig> for LayerShape {
    fn from(c: &ClipVisionConfig) -> Self {
        Self {
            hidden: c.hidden_size,
            heads: c.num_attention_heads,
            intermediate: c.intermediate_size,
            act: c.hidden_act,
            eps: c.layer_norm_eps,
        }
    }
}

impl ClipAttention {
    fn new(cfg: LayerShape, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden;
        Ok(Self {
            q_proj: linear(d, d, true, vb.pp("q_proj"))?,
            k_proj: linear(d, d, true, vb.pp("k_proj"))?,
            v_proj: linear(d, d, true, vb.pp("v_proj"))?,
            out_proj: linear(d, d, true, vb.pp("out_proj"))?,
            heads: cfg.heads,
            scale: ((d / cfg.heads) as f64).powf(-0.5),
        })
    }

    fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, n, d) = xs.dims3()?;
        let hd = d / self.heads;
        let split = |t: Tensor| -> Result<Tensor> {
            t.reshape((b, n, self.heads, hd))?
                .transpose(1, 2)?
                .reshape((b * self.heads, n, hd))
        };
        let q = split(self.q_proj.forward(xs)?)?;
        let k = split(self.k_proj.forward(xs)?)?;
        let v = split(self.v_proj.forward(xs)?)?;
        let s = (q.to_dtype(DType::F32)?.matmul(&k.to_dtype(DType::F32)?.t()?)? * self.scale)?;
        let s = match mask {
            Some(m) => s.broadcast_add(m)?,
            None => s,
        };
        let p = softmax_last_dim(&s)?.to_dtype(v.dtype())?;
        let out = p.matmul(&v)?;
        let out = out
            .reshape((b, self.heads, n, hd))?
            .transpose(1, 2)?
            .reshape((b, n, d))?;
        self.out_proj.forward(&out)
    }
}

#[derive(Debug, Clone)]
struct ClipLayer {
    layer_norm1: LayerNorm,
    self_attn: ClipAttention,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl ClipLayer {
    fn new(cfg: LayerShape, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden;
        Ok(Self {
            layer_norm1: layer_norm(d, cfg.eps, vb.pp("layer_norm1"))?,
            self_attn: ClipAttention::new(cfg, vb.pp("self_attn"))?,
            layer_norm2: layer_norm(d, cfg.eps, vb.pp("layer_norm2"))?,
            fc1: linear(d, cfg.intermediate, true, vb.pp("mlp").pp("fc1"))?,
            fc2: linear(cfg.intermediate, d, true, vb.pp("mlp").pp("fc2"))?,
            act: cfg.act,
        })
    }

    fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let xs = (self.self_attn.forward(&self.layer_norm1.forward(xs)?, mask)? + xs)?;
        let h = self.fc2.forward(
            &self
                .act
                .forward(&self.fc1.forward(&self.layer_norm2.forward(&xs)?)?)?,
        )?;
        h + xs
    }
}

/// transformers `CLIPTextModel` (optionally with the `text_projection` of
/// `CLIPTextModelWithProjection`, used by the CLIP-T metric).
#[derive(Debug, Clone)]
pub struct ClipTextModel {
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<ClipLayer>,
    final_layer_norm: LayerNorm,
    text_projection: Option<Linear>,
    config: ClipTextConfig,
}

/// Outputs of [`ClipTextModel::forward`].
#[derive(Debug, Clone)]
pub struct ClipTextOutput {
    /// `[batch, tokens, hidden]` after the final LayerNorm: what Stable Diffusion conditions on.
    pub last_hidden_state: Tensor,
    /// `[batch, hidden]`: the hidden state at each sequence's end-of-text token.
    pub pooled: Tensor,
}

fn causal_mask(n: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..n)
        .flat_map(|i| (0..n).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (n, n), device)
}

impl ClipTextModel {
    /// Under `vb` = the checkpoint root (keys start with `text_model.`).
    pub fn new(cfg: &ClipTextConfig, vb: VarBuilder) -> Result<Self> {
        let text_projection = match cfg.projection_dim {
            Some(p) if vb.contains_tensor("text_projection.weight") => {
                Some(linear(cfg.hidden_size, p, false, vb.pp("text_projection"))?)
            }
            _ => None,
        };
        // transformers < 5 saves `text_model.`-prefixed keys (every published SD checkpoint);
        // transformers 5 saves them from the root.
        let vb = if vb.contains_tensor("text_model.embeddings.token_embedding.weight") {
            vb.pp("text_model")
        } else {
            vb
        };
        let d = cfg.hidden_size;
        let emb = vb.pp("embeddings");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| ClipLayer::new(cfg.into(), vb.pp("encoder").pp("layers").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            token_embedding: candle_nn::embedding(cfg.vocab_size, d, emb.pp("token_embedding"))?,
            position_embedding: candle_nn::embedding(
                cfg.max_position_embeddings,
                d,
                emb.pp("position_embedding"),
            )?,
            layers,
            final_layer_norm: layer_norm(d, cfg.layer_norm_eps, vb.pp("final_layer_norm"))?,
            text_projection,
            config: cfg.clone(),
        })
    }

    /// The architecture.
    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// Encodes `ids` (`[batch, tokens]`, u32).
    pub fn forward(&self, ids: &Tensor) -> Result<ClipTextOutput> {
        let (_, n) = ids.dims2()?;
        if n > self.config.max_position_embeddings {
            candle_core::bail!(
                "{n} tokens, the text encoder takes at most {}",
                self.config.max_position_embeddings
            );
        }
        let pos = Tensor::arange(0u32, n as u32, ids.device())?;
        let xs = self
            .token_embedding
            .forward(ids)?
            .broadcast_add(&self.position_embedding.forward(&pos)?)?;
        let mask = causal_mask(n, ids.device())?;
        let mut xs = xs;
        for layer in &self.layers {
            xs = layer.forward(&xs, Some(&mask))?;
        }
        let last = self.final_layer_norm.forward(&xs)?;
        // transformers: the first end-of-text token (or, for configs with eos id 2, the argmax).
        let ids_host: Vec<Vec<u32>> = ids.to_vec2()?;
        let eos = self.config.eos_token_id;
        let rows = ids_host
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let pos = if eos == 2 {
                    row.iter()
                        .enumerate()
                        .max_by_key(|(k, &v)| (v, std::cmp::Reverse(*k)))
                        .map(|(k, _)| k)
                        .unwrap_or(0)
                } else {
                    row.iter().position(|&v| v == eos).unwrap_or(n - 1)
                };
                last.i((i, pos))
            })
            .collect::<Result<Vec<_>>>()?;
        let pooled = Tensor::stack(&rows, 0)?;
        Ok(ClipTextOutput {
            last_hidden_state: last,
            pooled,
        })
    }

    /// `pooled · text_projectionᵀ`, when the checkpoint has a projection.
    pub fn project(&self, pooled: &Tensor) -> Result<Option<Tensor>> {
        self.text_projection
            .as_ref()
            .map(|p| p.forward(pooled))
            .transpose()
    }
}

/// transformers `CLIPVisionModel` with the `visual_projection` of `CLIPModel`.
#[derive(Debug, Clone)]
pub struct ClipVisionModel {
    /// `[hidden, 3·patch²]`: the patch convolution (no bias) as a matrix.
    patch_embedding: Tensor,
    class_embedding: Tensor,
    position_embedding: Tensor,
    pre_layrnorm: LayerNorm,
    layers: Vec<ClipLayer>,
    post_layernorm: LayerNorm,
    visual_projection: Linear,
    config: ClipVisionConfig,
}

impl ClipVisionModel {
    /// Under `vb` = the `CLIPModel` checkpoint root (`vision_model.…`, `visual_projection.…`).
    pub fn new(cfg: &ClipVisionConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        let p = cfg.patch_size;
        let grid = cfg.image_size / p;
        let v = vb.pp("vision_model");
        let emb = v.pp("embeddings");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| ClipLayer::new(cfg.into(), v.pp("encoder").pp("layers").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            patch_embedding: emb
                .get((d, 3, p, p), "patch_embedding.weight")?
                .reshape((d, 3 * p * p))?,
            class_embedding: emb.get(d, "class_embedding")?,
            position_embedding: emb.get((grid * grid + 1, d), "position_embedding.weight")?,
            // (sic) transformers' name.
            pre_layrnorm: layer_norm(d, cfg.layer_norm_eps, v.pp("pre_layrnorm"))?,
            layers,
            post_layernorm: layer_norm(d, cfg.layer_norm_eps, v.pp("post_layernorm"))?,
            visual_projection: linear(d, cfg.projection_dim, false, vb.pp("visual_projection"))?,
            config: cfg.clone(),
        })
    }

    /// The architecture.
    pub fn config(&self) -> &ClipVisionConfig {
        &self.config
    }

    /// The pooled output (post-LayerNorm class token), `[batch, hidden]`, of preprocessed
    /// `[batch, 3, image_size, image_size]` pixel values.
    pub fn pooled(&self, pixels: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = pixels.dims4()?;
        let s = self.config.image_size;
        if (c, h, w) != (3, s, s) {
            candle_core::bail!(
                "CLIP vision takes [batch, 3, {s}, {s}] pixel values, got {:?}",
                pixels.dims()
            );
        }
        let p = self.config.patch_size;
        let g = s / p;
        let d = self.config.hidden_size;
        let patches = pixels
            .reshape((b, 3, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((b * g * g, 3 * p * p))?
            .contiguous()?;
        let x = patches
            .matmul(&self.patch_embedding.t()?)?
            .reshape((b, g * g, d))?;
        let cls = self.class_embedding.reshape((1, 1, d))?.broadcast_as((b, 1, d))?;
        let x = Tensor::cat(&[&cls.contiguous()?, &x], 1)?
            .broadcast_add(&self.position_embedding.unsqueeze(0)?)?;
        let mut x = self.pre_layrnorm.forward(&x)?;
        for layer in &self.layers {
            x = layer.forward(&x, None)?;
        }
        self.post_layernorm.forward(&x.i((.., 0))?.contiguous()?)
    }

    /// Image embeddings (`visual_projection` of the pooled output), `[batch, projection_dim]`.
    pub fn embed(&self, pixels: &Tensor) -> Result<Tensor> {
        self.visual_projection.forward(&self.pooled(pixels)?)
    }
}
