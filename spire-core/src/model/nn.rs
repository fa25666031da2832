//! Layers shared by the model files (convolution, linear, GroupNorm, LayerNorm, activations),
//! with PyTorch's layouts and default initialisations.
//!
//! Each layer runs a fused CPU kernel (`model::kernels`) when its inputs are plain f32 CPU
//! tensors, and candle's differentiable operations otherwise (GPU, other dtypes, training, or
//! the kernels switched off — the switch is read when the layer is made).
//! Constructors take a `VarBuilder` already pushed to the layer's checkpoint prefix;
//! initialisation hints matter only when the builder creates fresh variables (training).

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

use super::kernels;

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

    /// The diffusers/transformers name.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Silu => "silu",
            Activation::Gelu => "gelu",
            Activation::QuickGelu => "quick_gelu",
        }
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

/// `nn.Conv2d` (square kernel, with bias).
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
    fused: bool,
}

impl Conv2d {
    /// The kernel, `[c_out, c_in, k, k]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        conv2d_raw(
            self.fused,
            xs,
            &self.weight,
            &self.bias,
            self.stride,
            self.padding,
        )
    }
}

/// Convolution with bias of `xs` by `weight` (`[c_out, c_in, kh, kw]`), symmetric zero
/// padding: the fused kernel on f32 CPU tensors when `fused`, candle's otherwise.
pub(crate) fn conv2d_raw(
    fused: bool,
    xs: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    if kernels::fast_path_weighted(fused, weight, &[xs, bias]) {
        return kernels::conv2d(xs, weight, bias, stride, padding);
    }
    // Weights stored in another dtype than the activations (`LoadOptions::weight_dtype`) are
    // widened for candle's operations here; the fused kernels widen them themselves.
    let widened;
    let weight = if weight.dtype() != xs.dtype() {
        widened = weight.to_dtype(xs.dtype())?;
        &widened
    } else {
        weight
    };
    if xs.device().is_cpu() && xs.dtype() == DType::BF16 {
        // candle 0.11's CPU convolution has no bf16 GEMM (its matmul widens, its conv fails):
        // widen to f32, convolve, round back — bf16 storage, f32 arithmetic. GPUs run bf16.
        let y = xs
            .to_dtype(DType::F32)?
            .conv2d(&weight.to_dtype(DType::F32)?, padding, stride, 1, 1)?;
        return y
            .broadcast_add(&bias.to_dtype(DType::F32)?.reshape((1, (), 1, 1))?)?
            .to_dtype(DType::BF16);
    }
    let y = xs.conv2d(weight, padding, stride, 1, 1)?;
    y.broadcast_add(&bias.reshape((1, (), 1, 1))?)
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
    let fan_in = (c_in * k * k) as f64;
    let bound = 1.0 / fan_in.sqrt();
    // torch.nn.Conv2d's `kaiming_uniform_(a=√5)`, i.e. U(±1/√fan_in). Kaiming-normal (2.4×
    // the spread) measured much slower training: after 1500 steps the tiny backbone had not
    // learned to predict noise at all (x₀ error at t = 50 equal to the noise level).
    let weight = vb.get_with_hints(
        (c_out, c_in, k, k),
        "weight",
        Init::Uniform {
            lo: -bound,
            up: bound,
        },
    )?;
    let bias = vb.get_with_hints(
        c_out,
        "bias",
        Init::Uniform {
            lo: -bound,
            up: bound,
        },
    )?;
    Ok(Conv2d {
        weight: kernels::stored_weight(weight)?,
        bias,
        stride,
        padding,
        fused: kernels::fused_for_new_layer(),
    })
}

/// A convolution whose weight and bias start at zero (ControlNet's `zero_module`).
pub(crate) fn zero_conv2d(
    c_in: usize,
    c_out: usize,
    k: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let weight = vb.get_with_hints((c_out, c_in, k, k), "weight", Init::Const(0.))?;
    let bias = vb.get_with_hints(c_out, "bias", Init::Const(0.))?;
    Ok(Conv2d {
        weight: kernels::stored_weight(weight)?,
        bias,
        stride: 1,
        padding,
        fused: kernels::fused_for_new_layer(),
    })
}

/// `nn.Linear`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    fused: bool,
}

impl Linear {
    /// From a `[out, in]` weight and optional bias.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            weight,
            bias,
            fused: kernels::fused_for_new_layer(),
        }
    }

    /// As [`Linear::new`], the weight stored as the enclosing load asks
    /// ([`crate::LoadOptions::weight_dtype`]).
    fn stored(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        Ok(Self::new(kernels::stored_weight(weight)?, bias))
    }

    /// Whether this layer may use the fused CPU kernels (read when it was made).
    pub(crate) fn fused(&self) -> bool {
        self.fused
    }
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let fast = match &self.bias {
            Some(b) => kernels::fast_path_weighted(self.fused, &self.weight, &[xs, b]),
            None => kernels::fast_path_weighted(self.fused, &self.weight, &[xs]),
        };
        if fast {
            let empty;
            let bias = match &self.bias {
                Some(b) => b,
                None => {
                    empty = Tensor::zeros(0, DType::F32, xs.device())?;
                    &empty
                }
            };
            return kernels::linear(xs, &self.weight, bias);
        }
        // Contiguous input: candle's batched matmul mishandles some strided/broadcast
        // operand combinations (huggingface/candle#3744); `Linear` then folds batch into rows.
        // Weights stored in another dtype (`LoadOptions::weight_dtype`) are widened here.
        let weight = if self.weight.dtype() != xs.dtype() {
            self.weight.to_dtype(xs.dtype())?
        } else {
            self.weight.clone()
        };
        candle_nn::Linear::new(weight, self.bias.clone()).forward(&xs.contiguous()?)
    }
}

/// `nn.Linear(d_in, d_out)` that a fresh training variable starts at zero (a checkpoint's
/// values are read as usual).
pub(crate) fn zero_linear(d_in: usize, d_out: usize, vb: VarBuilder) -> Result<Linear> {
    Linear::stored(
        vb.get_with_hints((d_out, d_in), "weight", Init::Const(0.))?,
        Some(vb.get_with_hints(d_out, "bias", Init::Const(0.))?),
    )
}

/// `nn.Linear(d_in, d_out, bias)`.
pub(crate) fn linear(d_in: usize, d_out: usize, bias: bool, vb: VarBuilder) -> Result<Linear> {
    let bound = 1.0 / (d_in as f64).sqrt();
    let weight = vb.get_with_hints(
        (d_out, d_in),
        "weight",
        Init::Uniform {
            lo: -bound,
            up: bound,
        },
    )?;
    let bias = if bias {
        Some(vb.get_with_hints(
            d_out,
            "bias",
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?)
    } else {
        None
    };
    Linear::stored(weight, bias)
}

/// `nn.GroupNorm(groups, channels, eps, affine=True)`.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
    fused: bool,
}

impl GroupNorm {
    /// GroupNorm followed by SiLU (one fused pass on the CPU).
    pub fn forward_silu(&self, xs: &Tensor) -> Result<Tensor> {
        if kernels::fast_path(self.fused, &[xs, &self.weight, &self.bias]) {
            return kernels::group_norm(xs, &self.weight, &self.bias, self.groups, self.eps, true);
        }
        self.forward(xs)?.silu()
    }

    /// Number of groups.
    pub fn groups(&self) -> usize {
        self.groups
    }

    /// Epsilon added to the variance.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// GroupNorm with given `(mean, 1/std)` per (batch item, group) — statistics of a whole
    /// image applied to one of its tiles — followed by `act`.
    pub fn forward_act_with_stats(
        &self,
        xs: &Tensor,
        stats: &[(f64, f64)],
        act: Activation,
    ) -> Result<Tensor> {
        let silu = act == Activation::Silu;
        let fused = kernels::fast_path(self.fused, &[xs, &self.weight, &self.bias]);
        let y = if fused {
            kernels::group_norm_with_stats(xs, &self.weight, &self.bias, self.groups, stats.to_vec(), silu)?
        } else {
            let (n, c) = (xs.dim(0)?, xs.dim(1)?);
            let shape = xs.shape().clone();
            let dev = xs.device();
            let mean: Vec<f32> = stats.iter().map(|s| s.0 as f32).collect();
            let rstd: Vec<f32> = stats.iter().map(|s| s.1 as f32).collect();
            let mean = Tensor::from_vec(mean, (n, self.groups, 1), dev)?.to_dtype(xs.dtype())?;
            let rstd = Tensor::from_vec(rstd, (n, self.groups, 1), dev)?.to_dtype(xs.dtype())?;
            let g = xs
                .reshape((n, self.groups, ()))?
                .broadcast_sub(&mean)?
                .broadcast_mul(&rstd)?;
            let mut wshape = vec![1, c];
            wshape.resize(shape.rank(), 1);
            g.reshape(&shape)?
                .broadcast_mul(&self.weight.reshape(wshape.clone())?)?
                .broadcast_add(&self.bias.reshape(wshape)?)?
        };
        if fused && silu {
            Ok(y)
        } else {
            act.forward(&y)
        }
    }

    /// GroupNorm followed by `act` (fused when `act` is SiLU).
    pub fn forward_act(&self, xs: &Tensor, act: Activation) -> Result<Tensor> {
        match act {
            Activation::Silu => self.forward_silu(xs),
            other => other.forward(&self.forward(xs)?),
        }
    }
}

impl Module for GroupNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if kernels::fast_path(self.fused, &[xs, &self.weight, &self.bias]) {
            return kernels::group_norm(xs, &self.weight, &self.bias, self.groups, self.eps, false);
        }
        let c = xs.dim(1)?;
        candle_nn::GroupNorm::new(self.weight.clone(), self.bias.clone(), c, self.groups, self.eps)?
            .forward(xs)
    }
}

/// `nn.GroupNorm(groups, channels, eps, affine=True)`.
pub(crate) fn group_norm(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<GroupNorm> {
    if groups == 0 || channels % groups != 0 {
        candle_core::bail!("GroupNorm: {groups} groups do not divide {channels} channels");
    }
    let weight = vb.get_with_hints(channels, "weight", Init::Const(1.))?;
    let bias = vb.get_with_hints(channels, "bias", Init::Const(0.))?;
    Ok(GroupNorm {
        weight,
        bias,
        groups,
        eps,
        fused: kernels::fused_for_new_layer(),
    })
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
            return self.inner.forward(&xs.contiguous()?);
        }
        // Statistics in f32 whatever the dtype (as candle's fused kernel and PyTorch's
        // autocast do), so bf16 training normalises as f32 does.
        let dtype = xs.dtype();
        let x = xs.to_dtype(DType::F32)?;
        let n = x.dim(D::Minus1)? as f64;
        let mean = (x.sum_keepdim(D::Minus1)? / n)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = (xc.sqr()?.sum_keepdim(D::Minus1)? / n)?;
        xc.broadcast_div(&(var + self.eps)?.sqrt()?)?
            .to_dtype(dtype)?
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
