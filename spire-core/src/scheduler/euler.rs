//! diffusers `EulerDiscreteScheduler` (Karras et al. 2022, Algorithm 2 without churn),
//! optionally with Karras sigmas.

use candle_core::Tensor;

use super::{
    interp, karras_sigmas, np_arange_desc, np_linspace, np_round, sigma_to_t, PredictionType, Scheduler,
    SchedulerConfig, TimestepSpacing,
};
use crate::error::Result;

/// Euler (discrete).
#[derive(Debug, Clone)]
pub struct EulerDiscrete {
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    prediction: PredictionType,
    init_noise_sigma: f64,
}

impl EulerDiscrete {
    /// Euler for `steps` steps.
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Self> {
        let t = cfg.num_train_timesteps;
        let mut ac = cfg.alphas_cumprod();
        if cfg.rescale_betas_zero_snr {
            // diffusers: keep σ finite at the last training step.
            ac[t - 1] = 2f32.powi(-24);
        }
        let all_sigmas: Vec<f32> = ac.iter().map(|&a| ((1.0 - a) / a).sqrt()).collect();
        let spacing = cfg.spacing_or(TimestepSpacing::Linspace);
        // Euler keeps float32 timesteps (fractional for linspace).
        let mut timesteps: Vec<f64> = match spacing {
            TimestepSpacing::Linspace => np_linspace(0.0, (t - 1) as f64, steps)
                .into_iter()
                .rev()
                .map(|x| x as f32 as f64)
                .collect(),
            TimestepSpacing::Leading => {
                let ratio = t / steps;
                (0..steps)
                    .rev()
                    .map(|i| (i * ratio) as f64 + cfg.steps_offset as f64)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                let ratio = t as f64 / steps as f64;
                np_arange_desc(t as f64, 0.0, -ratio)
                    .into_iter()
                    .map(|x| np_round(x) as f32 as f64 - 1.0)
                    .collect()
            }
        };
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&x| interp(x, &all_sigmas)).collect();
        if cfg.use_karras_sigmas {
            // numpy takes these logs in float32.
            let log_sigmas: Vec<f64> = all_sigmas.iter().map(|&s| s.ln() as f64).collect();
            sigmas = karras_sigmas(sigmas[sigmas.len() - 1], sigmas[0], steps);
            timesteps = sigmas.iter().map(|&s| sigma_to_t(s, &log_sigmas)).collect();
        }
        sigmas.push(if cfg.final_sigma_min {
            ((1.0 - ac[0]) / ac[0]).sqrt() as f64
        } else {
            0.0
        });
        let sigmas: Vec<f32> = sigmas.into_iter().map(|s| s as f32).collect();
        let max_sigma = sigmas.iter().copied().fold(0f32, f32::max) as f64;
        let init_noise_sigma = match spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max_sigma,
            TimestepSpacing::Leading => (max_sigma * max_sigma + 1.0).sqrt(),
        };
        Ok(Self {
            timesteps: timesteps.into_iter().map(|x| x as f32 as f64).collect(),
            sigmas,
            prediction: cfg.prediction_type,
            init_noise_sigma,
        })
    }

    /// The noise levels σ of each step, plus the final one.
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }
}

impl Scheduler for EulerDiscrete {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    fn scale_model_input(&self, sample: &Tensor, i: usize) -> Result<Tensor> {
        let s = self.sigmas[i] as f64;
        Ok((sample / (s * s + 1.0).sqrt())?)
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        i: usize,
        sample: &Tensor,
        _noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let sigma = self.sigmas[i] as f64;
        let x0 = match self.prediction {
            PredictionType::Epsilon => (sample - (model_output * sigma)?)?,
            PredictionType::VPrediction => {
                ((model_output * (-sigma / (sigma * sigma + 1.0).sqrt()))?
                    + (sample / (sigma * sigma + 1.0))?)?
            }
            PredictionType::Sample => model_output.clone(),
        };
        let derivative = ((sample - x0)? / sigma)?;
        let dt = self.sigmas[i + 1] as f64 - sigma;
        Ok((sample + (derivative * dt)?)?)
    }

    fn add_noise(&self, x0: &Tensor, noise: &Tensor, i: usize) -> Result<Tensor> {
        Ok((x0 + (noise * self.sigmas[i] as f64)?)?)
    }
}
