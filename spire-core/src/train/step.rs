//! The training losses, shared by the trainer and the parity test against PyTorch.
//!
//! Both are the standard diffusion objective: noise a clean latent to timestep `t`
//! (`x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε`), predict the scheduler's target (ε, or v), mean squared
//! error over every element.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::model::{Adaptor, UNet2DConditionModel};
use crate::scheduler::{PredictionType, SchedulerConfig};

/// The adaptor objective: the frozen backbone with the adaptor's signals predicts the target.
///
/// `x0`: scaled clean latents; `noise`: ε of the same shape; `timesteps`: one per sample;
/// `ctx_s`: the backbone's (semantic) context; `ctx_r`: the adaptor's (restoration) context
/// and `pooled_r` its pooled embedding (for an adaptor with a prompt embedding);
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
    pooled_r: Option<&Tensor>,
    hint: &Tensor,
    scale: f64,
) -> Result<Tensor> {
    adaptor_loss_from(
        unet, adaptor, sched, x0, x0, noise, timesteps, ctx_s, ctx_r, pooled_r, hint, scale,
    )
}

/// The adaptor objective from another starting latent: `start` (per sample, e.g. the degraded
/// image's latent) is noised to `t`, and the target is still the clean `x0`'s. The noise the
/// target sees is then what takes `√ᾱ_t·x₀` to `x_t`:
/// `ε' = ε + √ᾱ_t/√(1−ᾱ_t)·(start − x₀)` (for x₀-prediction the target is `x0` either way).
/// With `start` the tensor `x0` itself this is [`adaptor_loss`], computed the same way.
#[allow(clippy::too_many_arguments)]
pub fn adaptor_loss_from(
    unet: &UNet2DConditionModel,
    adaptor: &Adaptor,
    sched: &SchedulerConfig,
    x0: &Tensor,
    start: &Tensor,
    noise: &Tensor,
    timesteps: &[usize],
    ctx_s: &Tensor,
    ctx_r: &Tensor,
    pooled_r: Option<&Tensor>,
    hint: &Tensor,
    scale: f64,
) -> Result<Tensor> {
    let (x_t, target) = noised_from(sched, x0, start, noise, timesteps)?;
    let ts: Vec<f32> = timesteps.iter().map(|&t| t as f32).collect();
    // The models compute in their contexts' dtype (bf16 under mixed precision); the noising,
    // the target and the loss stay f32.
    let dt = ctx_s.dtype();
    let x_t = x_t.to_dtype(dt)?;
    let control = adaptor.forward(&x_t, &ts, ctx_r, pooled_r, &hint.to_dtype(dt)?, scale)?;
    let pred = unet.forward(&x_t, &ts, ctx_s, Some(&control))?;
    mse(&pred, &target)
}

/// `start` noised to each sample's timestep, and the target of the clean `x0` from there.
fn noised_from(
    sched: &SchedulerConfig,
    x0: &Tensor,
    start: &Tensor,
    noise: &Tensor,
    timesteps: &[usize],
) -> Result<(Tensor, Tensor)> {
    let x_t = sched.add_noise(start, noise, timesteps)?;
    if start.id() == x0.id() {
        return Ok((x_t, sched.target(x0, noise, timesteps)?));
    }
    if sched.prediction_type == PredictionType::Sample {
        return Ok((x_t, x0.clone()));
    }
    let ac = sched.alphas_cumprod();
    let mut k = Vec::with_capacity(timesteps.len());
    for &t in timesteps {
        let a = *ac.get(t).ok_or_else(|| {
            Error::invalid_arg(
                "timesteps",
                format!("{t} is past the schedule's {} steps", ac.len()),
            )
        })? as f64;
        k.push((a.sqrt() / (1.0 - a).sqrt()) as f32);
    }
    let k = Tensor::from_vec(k, (timesteps.len(), 1, 1, 1), x0.device())?;
    let eps = (noise + (start - x0)?.broadcast_mul(&k)?)?;
    let target = sched.target(x0, &eps, timesteps)?;
    Ok((x_t, target))
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
    let pred = unet.forward(&x_t.to_dtype(ctx.dtype())?, &ts, ctx, None)?;
    mse(&pred, &target)
}

/// Mean squared error in f32 (a bf16 prediction is widened first, as PyTorch's autocast does
/// for `mse_loss`).
fn mse(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    Ok((pred.to_dtype(candle_core::DType::F32)? - target)?
        .sqr()?
        .mean_all()?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use candle_core::{Device, Tensor};

    use super::*;

    fn close(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// From another start, the ε (or v) target is the noise that takes `√ᾱ·x₀` to `x_t`, and
    /// from `x0` itself it is the usual one.
    #[test]
    fn targets_from_a_degraded_start_explain_the_noised_latent() {
        let dev = Device::Cpu;
        let x0 = Tensor::arange(0f32, 24.0, &dev)
            .unwrap()
            .reshape((2, 3, 2, 2))
            .unwrap();
        let x0 = ((x0 / 12.0).unwrap() - 1.0).unwrap();
        let start = (x0.sin().unwrap() * 0.7).unwrap();
        let noise = (x0.cos().unwrap() * 1.3).unwrap();
        let ts = [0usize, 63];
        for pred in [
            PredictionType::Epsilon,
            PredictionType::VPrediction,
            PredictionType::Sample,
        ] {
            let sched = SchedulerConfig {
                prediction_type: pred,
                ..SchedulerConfig::default()
            };
            let (x_t, target) = noised_from(&sched, &x0, &x0, &noise, &ts).unwrap();
            assert!(close(&x_t, &sched.add_noise(&x0, &noise, &ts).unwrap()) < 1e-6);
            assert!(
                close(&target, &sched.target(&x0, &noise, &ts).unwrap()) < 1e-6,
                "{pred:?}"
            );
            let (x_t, target) = noised_from(&sched, &x0, &start, &noise, &ts).unwrap();
            assert!(close(&x_t, &sched.add_noise(&start, &noise, &ts).unwrap()) < 1e-6);
            let ac = sched.alphas_cumprod();
            for (i, &t) in ts.iter().enumerate() {
                let a = ac[t] as f64;
                let (xt, x0i, tg) = (x_t.get(i).unwrap(), x0.get(i).unwrap(), target.get(i).unwrap());
                // The clean latent back from x_t and the prediction, as a sampler computes it.
                let back = match pred {
                    PredictionType::Sample => tg.clone(),
                    PredictionType::Epsilon => {
                        ((&xt - (&tg * (1.0 - a).sqrt()).unwrap()).unwrap() / a.sqrt()).unwrap()
                    }
                    PredictionType::VPrediction => {
                        ((&xt * a.sqrt()).unwrap() - (&tg * (1.0 - a).sqrt()).unwrap()).unwrap()
                    }
                };
                let tol = if t == 0 { 2e-4 } else { 1e-5 };
                assert!(close(&back, &x0i) < tol, "{pred:?} t={t}: {}", close(&back, &x0i));
            }
        }
        let sched = SchedulerConfig::default();
        assert!(noised_from(&sched, &x0, &start, &noise, &[0, 5000]).is_err());
    }
}
