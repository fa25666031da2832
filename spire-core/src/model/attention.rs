//! Attention layers: diffusers' `Attention`, `FeedForward` (GEGLU), `BasicTransformerBlock`,
//! `Transformer2DModel` (conv or linear projection) and the single-head spatial attention of the
//! VAE mid block.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::kernels;
use super::nn::{
    conv2d, group_norm, layer_norm, linear, softmax_last_dim, Conv2d, GroupNorm, LayerNorm, Linear,
};

/// Softmax attention over `[batch·heads, tokens, dim]` tensors.
///
/// Scores are computed in f32 whatever the storage dtype. When the score matrix of one call
/// would exceed ~256 MiB, queries are processed in slices so memory stays bounded on large
/// latents; the result is the same.
/// The fused kernel runs when `fused` (the calling layer's switch) and the inputs allow it.
pub(crate) fn scaled_dot_product(
    fused: bool,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
) -> Result<Tensor> {
    if kernels::fast_path(fused, &[q, k, v]) {
        return kernels::attention(q, k, v, scale);
    }
    let dtype = q.dtype();
    let (bh, nq, _) = q.dims3()?;
    let nk = k.dim(1)?;
    let (q, k, v) = if dtype == DType::F32 {
        (q.clone(), k.clone(), v.clone())
    } else {
        (
            q.to_dtype(DType::F32)?,
            k.to_dtype(DType::F32)?,
            v.to_dtype(DType::F32)?,
        )
    };
    let kt = k.t()?.contiguous()?;
    const BUDGET: usize = 256 << 20;
    let bytes = bh * nq * nk * 4;
    let attend = |q: &Tensor| -> Result<Tensor> {
        let s = (q.matmul(&kt)? * scale)?;
        softmax_last_dim(&s)?.matmul(&v)
    };
    let out = if bytes <= BUDGET {
        attend(&q)?
    } else {
        let rows = (BUDGET / (bh * nk * 4)).max(1);
        let mut parts = Vec::with_capacity(nq.div_ceil(rows));
        let mut start = 0;
        while start < nq {
            let len = rows.min(nq - start);
            parts.push(attend(&q.narrow(1, start, len)?)?);
            start += len;
        }
        Tensor::cat(&parts, 1)?
    };
    out.to_dtype(dtype)
}

/// diffusers `Attention` as the UNet uses it: `to_q`, `to_k`, `to_v` without bias, `to_out.0`.
#[derive(Debug, Clone)]
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    scale: f64,
}

impl Attention {
    /// `query_dim` in and out; keys and values from `context_dim` (self-attention if `None`).
    pub fn new(
        query_dim: usize,
        context_dim: Option<usize>,
        heads: usize,
        head_dim: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let inner = heads * head_dim;
        let ctx = context_dim.unwrap_or(query_dim);
        Ok(Self {
            to_q: linear(query_dim, inner, false, vb.pp("to_q"))?,
            to_k: linear(ctx, inner, false, vb.pp("to_k"))?,
            to_v: linear(ctx, inner, false, vb.pp("to_v"))?,
            to_out: linear(inner, query_dim, true, vb.pp("to_out").pp("0"))?,
            heads,
            scale: (head_dim as f64).powf(-0.5),
        })
    }

    fn split_heads(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, n, c) = xs.dims3()?;
        let d = c / self.heads;
        xs.reshape((b, n, self.heads, d))?
            .transpose(1, 2)?
            .reshape((b * self.heads, n, d))
    }

    /// `xs`: `[batch, tokens, query_dim]`; `context`: `[batch, ctx_tokens, context_dim]`.
    pub fn forward(&self, xs: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let ctx = context.unwrap_or(xs);
        let q = self.split_heads(&self.to_q.forward(xs)?)?;
        let k = self.split_heads(&self.to_k.forward(ctx)?)?;
        let v = self.split_heads(&self.to_v.forward(ctx)?)?;
        let out = scaled_dot_product(self.to_q.fused(), &q, &k, &v, self.scale)?;
        let (bh, n, d) = out.dims3()?;
        let b = bh / self.heads;
        let out = out
            .reshape((b, self.heads, n, d))?
            .transpose(1, 2)?
            .reshape((b, n, self.heads * d))?;
        self.to_out.forward(&out)
    }
}

/// diffusers `FeedForward` with a GEGLU input projection (`net.0.proj`, `net.2`).
#[derive(Debug, Clone)]
pub struct FeedForward {
    proj_in: Linear,
    proj_out: Linear,
}

impl FeedForward {
    /// Inner width is `4 * dim`, as in every SD checkpoint.
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        let inner = dim * 4;
        Ok(Self {
            proj_in: linear(dim, inner * 2, true, vb.pp("net").pp("0").pp("proj"))?,
            proj_out: linear(inner, dim, true, vb.pp("net").pp("2"))?,
        })
    }
}

impl Module for FeedForward {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let h = self.proj_in.forward(xs)?;
        if kernels::fast_path(self.proj_in.fused(), &[&h]) {
            return self.proj_out.forward(&kernels::geglu(&h)?);
        }
        let half = h.dim(D::Minus1)? / 2;
        let hidden = h.narrow(D::Minus1, 0, half)?;
        let gate = h.narrow(D::Minus1, half, half)?;
        self.proj_out.forward(&(hidden * gate.gelu_erf()?)?)
    }
}

/// diffusers `BasicTransformerBlock`: self-attention, cross-attention, GEGLU feed-forward, each
/// after a LayerNorm and with a residual connection.
#[derive(Debug, Clone)]
pub struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl BasicTransformerBlock {
    /// A block of width `dim` attending to a context of width `context_dim`.
    pub fn new(
        dim: usize,
        heads: usize,
        head_dim: usize,
        context_dim: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            norm1: layer_norm(dim, 1e-5, vb.pp("norm1"))?,
            attn1: Attention::new(dim, None, heads, head_dim, vb.pp("attn1"))?,
            norm2: layer_norm(dim, 1e-5, vb.pp("norm2"))?,
            attn2: Attention::new(dim, Some(context_dim), heads, head_dim, vb.pp("attn2"))?,
            norm3: layer_norm(dim, 1e-5, vb.pp("norm3"))?,
            ff: FeedForward::new(dim, vb.pp("ff"))?,
        })
    }

    /// `xs`: `[batch, tokens, dim]`.
    pub fn forward(&self, xs: &Tensor, context: &Tensor) -> Result<Tensor> {
        let xs = (self.attn1.forward(&self.norm1.forward(xs)?, None)? + xs)?;
        let xs = (self.attn2.forward(&self.norm2.forward(&xs)?, Some(context))? + &xs)?;
        self.ff.forward(&self.norm3.forward(&xs)?)? + xs
    }
}

#[derive(Debug, Clone)]
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

/// diffusers `Transformer2DModel` (continuous input): GroupNorm, `proj_in` (1×1 conv or linear),
/// transformer blocks, `proj_out`, residual.
#[derive(Debug, Clone)]
pub struct Transformer2D {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
}

/// Shape parameters of a [`Transformer2D`].
#[derive(Debug, Clone, Copy)]
pub struct Transformer2DConfig {
    /// Channels in and out.
    pub channels: usize,
    /// Attention heads; the head width is `channels / heads`.
    pub heads: usize,
    /// Number of `BasicTransformerBlock`s.
    pub layers: usize,
    /// Width of the cross-attention context.
    pub context_dim: usize,
    /// GroupNorm groups.
    pub groups: usize,
    /// `use_linear_projection` (SD 2.x) instead of 1×1 convolutions (SD 1.x).
    pub linear_projection: bool,
}

impl Transformer2D {
    /// Builds the layer under `vb` (e.g. `down_blocks.0.attentions.1`).
    pub fn new(cfg: Transformer2DConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg.channels;
        let head_dim = c / cfg.heads;
        let inner = cfg.heads * head_dim;
        let proj = |i: usize, o: usize, vb: VarBuilder| -> Result<Projection> {
            Ok(if cfg.linear_projection {
                Projection::Linear(linear(i, o, true, vb)?)
            } else {
                Projection::Conv(conv2d(i, o, 1, 1, 0, vb)?)
            })
        };
        let blocks = (0..cfg.layers)
            .map(|i| {
                BasicTransformerBlock::new(
                    inner,
                    cfg.heads,
                    head_dim,
                    cfg.context_dim,
                    vb.pp("transformer_blocks").pp(i),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm: group_norm(cfg.groups, c, 1e-6, vb.pp("norm"))?,
            proj_in: proj(c, inner, vb.pp("proj_in"))?,
            blocks,
            proj_out: proj(inner, c, vb.pp("proj_out"))?,
        })
    }

    /// `xs`: `[batch, channels, h, w]`; `context`: `[batch, tokens, context_dim]`.
    pub fn forward(&self, xs: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, _, h, w) = xs.dims4()?;
        let residual = xs;
        let xs = self.norm.forward(xs)?;
        let mut xs = match &self.proj_in {
            Projection::Conv(conv) => {
                let xs = conv.forward(&xs)?;
                let inner = xs.dim(1)?;
                xs.permute((0, 2, 3, 1))?.reshape((b, h * w, inner))?
            }
            Projection::Linear(lin) => {
                let c = xs.dim(1)?;
                lin.forward(&xs.permute((0, 2, 3, 1))?.reshape((b, h * w, c))?)?
            }
        };
        for block in &self.blocks {
            xs = block.forward(&xs, context)?;
        }
        let inner = xs.dim(2)?;
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(
                &xs.reshape((b, h, w, inner))?
                    .permute((0, 3, 1, 2))?
                    .contiguous()?,
            )?,
            Projection::Linear(lin) => {
                let xs = lin.forward(&xs)?;
                let c = xs.dim(2)?;
                xs.reshape((b, h, w, c))?.permute((0, 3, 1, 2))?
            }
        };
        out + residual
    }
}

/// The VAE's single-head spatial self-attention (diffusers `Attention` with `group_norm`,
/// biased projections and a residual connection).
#[derive(Debug, Clone)]
pub struct SpatialAttention {
    group_norm: GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    scale: f64,
}

impl SpatialAttention {
    /// One head as wide as `channels`.
    pub fn new(channels: usize, groups: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            group_norm: group_norm(groups, channels, eps, vb.pp("group_norm"))?,
            to_q: linear(channels, channels, true, vb.pp("to_q"))?,
            to_k: linear(channels, channels, true, vb.pp("to_k"))?,
            to_v: linear(channels, channels, true, vb.pp("to_v"))?,
            to_out: linear(channels, channels, true, vb.pp("to_out").pp("0"))?,
            scale: (channels as f64).powf(-0.5),
        })
    }

    /// The attention part after the normalisation, plus the residual.
    pub(crate) fn attend(&self, normed: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = normed.dims4()?;
        // Contiguous on purpose: candle 0.11's CPU matmul folds a transposed lhs against a
        // broadcast rhs into one GEMM and gets every batch element after the first wrong
        // (huggingface/candle#3744, fix in #3758); `Linear` on a contiguous input avoids it.
        let xs = normed.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous()?;
        let q = self.to_q.forward(&xs)?;
        let k = self.to_k.forward(&xs)?;
        let v = self.to_v.forward(&xs)?;
        let out = scaled_dot_product(self.to_q.fused(), &q, &k, &v, self.scale)?;
        let out = self.to_out.forward(&out)?;
        out.transpose(1, 2)?.reshape((b, c, h, w))? + residual
    }
}

impl Module for SpatialAttention {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let normed = self.group_norm.forward(xs)?;
        self.attend(&normed, xs)
    }
}
