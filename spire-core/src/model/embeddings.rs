//! Sinusoidal timestep features (diffusers `Timesteps` / `get_timestep_embedding`) and the
//! `TimestepEmbedding` MLP.

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::nn::{linear, zero_linear, Activation, Linear};

/// diffusers `Timesteps`: `[sin(t·f_i), cos(t·f_i)]` with `f_i = exp(-ln(10000)·i/(half − shift))`,
/// optionally flipped to `[cos, sin]`.
#[derive(Debug, Clone, Copy)]
pub struct Timesteps {
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
}

impl Timesteps {
    /// `dim` output features.
    pub fn new(dim: usize, flip_sin_to_cos: bool, freq_shift: f64) -> Self {
        Self {
            dim,
            flip_sin_to_cos,
            freq_shift,
        }
    }

    /// `timesteps`: one value per batch element. Returns `[batch, dim]` f32 on `device`.
    ///
    /// Computed on the host in f32 with the same operation order as PyTorch, so the features
    /// match diffusers' to the last bit or two even for t ≈ 1000.
    pub fn forward(&self, timesteps: &[f32], device: &Device) -> Result<Tensor> {
        let half = self.dim / 2;
        let log_max = -(10000f64.ln()) as f32;
        let denom = (half as f64 - self.freq_shift) as f32;
        let freqs: Vec<f32> = (0..half).map(|i| ((log_max * i as f32) / denom).exp()).collect();
        let mut out = Vec::with_capacity(timesteps.len() * self.dim);
        for &t in timesteps {
            let args = freqs.iter().map(|f| t * f);
            let sin: Vec<f32> = args.clone().map(f32::sin).collect();
            let cos: Vec<f32> = args.map(f32::cos).collect();
            let (a, b) = if self.flip_sin_to_cos {
                (cos, sin)
            } else {
                (sin, cos)
            };
            out.extend(a);
            out.extend(b);
            if self.dim % 2 == 1 {
                out.push(0.0);
            }
        }
        Tensor::from_vec(out, (timesteps.len(), self.dim), device)
    }
}

/// diffusers `TimestepEmbedding`: `linear_2(act(linear_1(x)))`.
#[derive(Debug, Clone)]
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
    act: Activation,
}

impl TimestepEmbedding {
    /// `d_in` sinusoidal features to a `d_out` embedding.
    pub fn new(d_in: usize, d_out: usize, act: Activation, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            linear_1: linear(d_in, d_out, true, vb.pp("linear_1"))?,
            linear_2: linear(d_out, d_out, true, vb.pp("linear_2"))?,
            act,
        })
    }

    /// As [`TimestepEmbedding::new`], with `linear_2` starting at zero when it is a fresh
    /// training variable, so the embedding adds nothing until it is trained.
    pub(crate) fn new_zero_out(d_in: usize, d_out: usize, act: Activation, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            linear_1: linear(d_in, d_out, true, vb.pp("linear_1"))?,
            linear_2: zero_linear(d_out, d_out, vb.pp("linear_2"))?,
            act,
        })
    }
}

impl Module for TimestepEmbedding {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.linear_2
            .forward(&self.act.forward(&self.linear_1.forward(xs)?)?)
    }
}
