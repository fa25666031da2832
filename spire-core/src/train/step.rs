//! The training losses, shared by the trainer and the parity test against PyTorch.
//!
//! Both are the standard diffusion objective: noise a clean latent to timestep `t`
//! (`x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε`), predict the scheduler's target (ε, or v), mean squared
//! error over every element.

use candle_core::Tensor;

use crate::error::Result;
use crate::model::{Adaptor, UNet2DConditionModel};
use crate::scheduler::SchedulerConfig;

/// The adaptor objective: the frozen backbone with the adaptor's signals predicts the target.
///
/// `x0`: scaled clean latents; `noise`: ε of the same shape; `timesteps`: one per sample;
/// `ctx_s`: the backbone's (semantic) context; `ctx_r`: the adaptor's (restoration) context;
/// `hint`: the degraded image in the adaptor's hint form.
#[allow(clippy::too_many_arguments)]
pub fn adaptor_loss(
    unet: &UNet2DConditionModel,
    adaptor: &Adaptor,
    sched: &SchedulerConfig,
    x0: &Tensor,
    noise: &Tensor,
    timesteps: &[usize],
    ctx_s: &Tensor,
    ctx_r: &Tensor,
    hint: &Tensor,
    scale: f64,
) -> Result<Tensor> {
    let x_t = sched.add_noise(x0, noise, timesteps)?;
    let target = sched.target(x0, noise, timesteps)?;
    let ts: Vec<f32> = timesteps.iter().map(|&t| t as f32).collect();
    let control = adaptor.forward(&x_t, &ts, ctx_r, hint, scale)?;
    let pred = unet.forward(&x_t, &ts, ctx_s, Some(&control))?;
    Ok((pred - target)?.sqr()?.mean_all()?)
}

/// The backbone objective: the UNet (with a text context) predicts the target.
pub fn backbone_loss(
    unet: &UNet2DConditionModel,
    sched: &SchedulerConfig,
    x0: &Tensor,
    noise: &Tensor,
    timesteps: &[usize],
    ctx: &Tensor,
) -> Result<Tensor> {
    let x_t = sched.add_noise(x0, noise, timesteps)?;
    let target = sched.target(x0, noise, timesteps)?;
    let ts: Vec<f32> = timesteps.iter().map(|&t| t as f32).collect();
    let pred = unet.forward(&x_t, &ts, ctx, None)?;
    Ok((pred - target)?.sqr()?.mean_all()?)
}
