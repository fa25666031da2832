//! Small layer constructors shared by the model files, with the PyTorch default layouts.
//!
//! Each takes a `VarBuilder` already pushed to the layer's checkpoint prefix. Initialisation hints
//! matter only when the builder creates fresh variables (training); for loaded checkpoints they
//! are ignored.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{Conv2d, Conv2dConfig, GroupNorm, Init, Linear, VarBuilder};

/// Activation functions by their diffusers / transformers names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(x)` (`"silu"`, `"swish"`).
    Silu,
    /// Exact, erf-based GELU (`"gelu"`).
    Gelu,
    /// `x * sigmoid(1.702 x)` (`"quick_gelu"`, OpenAI CLIP).
    QuickGelu,
}

impl Activation {
    /// Parses a diffusers/transformers activation name.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "silu" | "swish" => Activation::Silu,
            "gelu" => Activation::Gelu,
            "quick_gelu" => Activation::QuickGelu,
            _ => return None,
        })
    }
}

impl Module for Activation {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Silu => xs.silu(),
            Activation::Gelu => xs.gelu_erf(),
            Activation::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
        }
    }
}

/// `nn.Conv2d(c_in, c_out, k, stride, padding)` with bias, PyTorch's default initialisation.
pub(crate) fn conv2d(
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding,
        stride,
        ..Default::default()
    };
    candle_nn::conv2d(c_in, c_out, k, cfg, vb)
}

/// A convolution whose weight and bias start at zero (ControlNet's `zero_module`).
pub(crate) fn zero_conv2d(
    c_in: usize,
    c_out: usize,
    k: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let w = vb.get_with_hints((c_out, c_in, k, k), "weight", Init::Const(0.))?;
    let b = vb.get_with_hints(c_out, "bias", Init::Const(0.))?;
    let cfg = Conv2dConfig {
        padding,
        ..Default::default()
    };
    Ok(Conv2d::new(w, Some(b), cfg))
}

/// `nn.Linear(d_in, d_out, bias)`.
pub(crate) fn linear(d_in: usize, d_out: usize, bias: bool, vb: VarBuilder) -> Result<Linear> {
    if bias {
        candle_nn::linear(d_in, d_out, vb)
    } else {
        candle_nn::linear_no_bias(d_in, d_out, vb)
    }
}

/// `nn.GroupNorm(groups, channels, eps, affine=True)`.
pub(crate) fn group_norm(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<GroupNorm> {
    candle_nn::group_norm(groups, channels, eps, vb)
}

/// `nn.LayerNorm(dim, eps)` with weight and bias.
///
/// candle's fused kernel has no backward pass (it would silently cut gradients), so it is used
/// only when nothing needs a gradient; otherwise the same computation runs on differentiable ops.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    inner: candle_nn::LayerNorm,
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl Module for LayerNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if !(xs.track_op() || self.weight.track_op() || self.bias.track_op()) {
            return self.inner.forward(xs);
        }
        let n = xs.dim(D::Minus1)? as f64;
        let mean = (xs.sum_keepdim(D::Minus1)? / n)?;
        let xc = xs.broadcast_sub(&mean)?;
        let var = (xc.sqr()?.sum_keepdim(D::Minus1)? / n)?;
        xc.broadcast_div(&(var + self.eps)?.sqrt()?)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

pub(crate) fn layer_norm(dim: usize, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
    let weight = vb.get_with_hints(dim, "weight", Init::Const(1.))?;
    let bias = vb.get_with_hints(dim, "bias", Init::Const(0.))?;
    Ok(LayerNorm {
        inner: candle_nn::LayerNorm::new(weight.clone(), bias.clone(), eps),
        weight,
        bias,
        eps,
    })
}

/// Softmax over the last dimension: candle's fused kernel for inference, differentiable ops
/// when the input is part of a gradient graph (the fused kernel has no backward pass).
pub(crate) fn softmax_last_dim(xs: &Tensor) -> Result<Tensor> {
    if xs.track_op() {
        candle_nn::ops::softmax(xs, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(xs)
    }
}

/// Nearest-neighbour resize of an NCHW tensor to `(h, w)`, as `F.interpolate(mode="nearest")`.
///
/// Integer factors use a broadcast (differentiable, and what the UNet and VAE use); other sizes
/// fall back to candle's kernel, which uses PyTorch's `floor(dst * in / out)` source index.
pub(crate) fn upsample_nearest(xs: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (b, c, ih, iw) = xs.dims4()?;
    if h % ih == 0 && w % iw == 0 {
        let (fh, fw) = (h / ih, w / iw);
        xs.reshape((b, c, ih, 1, iw, 1))?
            .broadcast_as((b, c, ih, fh, iw, fw))?
            .reshape((b, c, h, w))
    } else {
        xs.upsample_nearest2d(h, w)
    }
}
