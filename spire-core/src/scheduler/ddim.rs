//! diffusers `DDIMScheduler` (Song et al., "Denoising Diffusion Implicit Models").

use candle_core::Tensor;

use super::{np_linspace, np_round, x0_and_eps, Scheduler, SchedulerConfig, TimestepSpacing};
use crate::error::{Error, Result};

/// DDIM with η (0: deterministic).
#[derive(Debug, Clone)]
pub struct Ddim {
    timesteps: Vec<f64>,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f64,
    step_ratio: usize,
    cfg: SchedulerConfig,
    eta: f64,
    /// Steps go to the next listed timestep (after the last: to the end) instead of
    /// `t − step_ratio`.
    listed: bool,
}

impl Ddim {
    /// DDIM for `steps` steps.
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Self> {
        let t = cfg.num_train_timesteps;
        let timesteps: Vec<f64> = match cfg.spacing_or(TimestepSpacing::Leading) {
            TimestepSpacing::Linspace => np_linspace(0.0, (t - 1) as f64, steps)
                .into_iter()
                .map(np_round)
                .rev()
                .collect(),
            TimestepSpacing::Leading => {
                let ratio = t / steps;
                (0..steps)
                    .rev()
                    .map(|i| (i * ratio + cfg.steps_offset) as f64)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                let ratio = t as f64 / steps as f64;
                super::np_arange_desc(t as f64, 0.0, -ratio)
                    .into_iter()
                    .map(|x| np_round(x) - 1.0)
                    .collect()
            }
        };
        let alphas_cumprod = cfg.alphas_cumprod();
        if let Some(&bad) = timesteps.iter().find(|&&x| x < 0.0 || x as usize >= t) {
            return Err(Error::invalid_arg(
                "num_inference_steps",
                format!("gives timestep {bad} outside 0..{t}"),
            ));
        }
        let final_alpha_cumprod = if cfg.set_alpha_to_one.unwrap_or(true) {
            1.0
        } else {
            alphas_cumprod[0] as f64
        };
        Ok(Self {
            timesteps,
            alphas_cumprod,
            final_alpha_cumprod,
            step_ratio: t / steps,
            cfg: cfg.clone(),
            eta: 0.0,
            listed: false,
        })
    }

    /// DDIM over explicit timesteps (strictly decreasing, each below `num_train_timesteps`):
    /// each step goes from one listed timestep to the next, the last one to the clean end.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `timesteps` for an empty, unsorted or out-of-range list.
    pub fn with_timesteps(cfg: &SchedulerConfig, timesteps: Vec<f64>) -> Result<Self> {
        let t = cfg.num_train_timesteps;
        if timesteps.is_empty()
            || timesteps.windows(2).any(|w| w[1] >= w[0])
            || timesteps
                .iter()
                .any(|&x| x < 0.0 || x as usize >= t || x.fract() != 0.0)
        {
            return Err(Error::invalid_arg(
                "timesteps",
                format!("must be whole numbers in 0..{t}, strictly decreasing, got {timesteps:?}"),
            ));
        }
        let mut d = Self::new(cfg, 1)?;
        d.timesteps = timesteps;
        d.listed = true;
        Ok(d)
    }

    /// Sets η (0 = deterministic DDIM, 1 = DDPM-like).
    pub fn with_eta(mut self, eta: f64) -> Self {
        self.eta = eta;
        self
    }

    fn alpha(&self, t: f64) -> f64 {
        if t < 0.0 {
            self.final_alpha_cumprod
        } else {
            self.alphas_cumprod[t as usize] as f64
        }
    }
}

impl Scheduler for Ddim {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn scale_model_input(&self, sample: &Tensor, _i: usize) -> Result<Tensor> {
        Ok(sample.clone())
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        i: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let t = self.timesteps[i];
        let prev_t = if self.listed {
            self.timesteps.get(i + 1).copied().unwrap_or(-1.0)
        } else {
            t - self.step_ratio as f64
        };
        let (a_t, a_prev) = (self.alpha(t), self.alpha(prev_t));
        let (mut x0, eps) = x0_and_eps(self.cfg.prediction_type, model_output, sample, a_t)?;
        if self.cfg.clip_sample.unwrap_or(true) {
            let r = self.cfg.clip_sample_range;
            x0 = x0.clamp(-r, r)?;
        }
        let variance = ((1.0 - a_prev) / (1.0 - a_t)) * (1.0 - a_t / a_prev);
        let std = self.eta * variance.sqrt();
        let dir = (1.0 - a_prev - std * std).max(0.0).sqrt();
        let mut prev = ((x0 * a_prev.sqrt())? + (eps * dir)?)?;
        if self.eta > 0.0 {
            let noise = noise.ok_or_else(|| Error::Internal("DDIM with eta > 0 needs noise".into()))?;
            prev = (prev + (noise * std)?)?;
        }
        Ok(prev)
    }

    fn add_noise(&self, x0: &Tensor, noise: &Tensor, i: usize) -> Result<Tensor> {
        let a = self.alpha(self.timesteps[i]);
        Ok(((x0 * a.sqrt())? + (noise * (1.0 - a).sqrt())?)?)
    }

    fn needs_noise(&self) -> bool {
        self.eta > 0.0
    }
}
