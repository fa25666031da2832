//! diffusers `DPMSolverMultistepScheduler` with `algorithm_type="dpmsolver++"`,
//! `solver_order=2`, `solver_type="midpoint"` — "DPM++ 2M" (Lu et al., "DPM-Solver++"),
//! optionally with Karras sigmas ("DPM++ 2M Karras").

use candle_core::Tensor;

use super::{
    interp, karras_sigmas, np_arange_desc, np_linspace, np_round, sigma_to_t, BetaSchedule, PredictionType,
    Scheduler, SchedulerConfig, TimestepSpacing,
};
use crate::error::Result;

/// DPM-Solver++ (2M).
#[derive(Debug, Clone)]
pub struct DpmSolverMultistep {
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    prediction: PredictionType,
    lower_order_final: bool,
    euler_at_final: bool,
    final_zero: bool,
    outputs: [Option<Tensor>; 2],
    lower_order_nums: usize,
}

fn alpha_sigma(sigma: f64) -> (f64, f64) {
    let a = 1.0 / (sigma * sigma + 1.0).sqrt();
    (a, sigma * a)
}

fn lambda(sigma: f64) -> f64 {
    let (a, s) = alpha_sigma(sigma);
    a.ln() - s.ln()
}

impl DpmSolverMultistep {
    /// DPM++ 2M for `steps` steps.
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Self> {
        let t = cfg.num_train_timesteps;
        let last = t; // lambda_min_clipped = -inf clips nothing
        let mut ac = cfg.alphas_cumprod();
        if cfg.rescale_betas_zero_snr {
            // diffusers: keep σ finite at the last training step.
            ac[t - 1] = 2f32.powi(-24);
        }
        let all_sigmas: Vec<f32> = ac.iter().map(|&a| ((1.0 - a) / a).sqrt()).collect();
        let mut timesteps: Vec<f64> = match cfg.spacing_or(TimestepSpacing::Linspace) {
            TimestepSpacing::Linspace => {
                let v: Vec<f64> = np_linspace(0.0, (last - 1) as f64, steps + 1)
                    .into_iter()
                    .map(np_round)
                    .collect();
                v.into_iter().rev().take(steps).collect()
            }
            TimestepSpacing::Leading => {
                let ratio = last / (steps + 1);
                (0..=steps)
                    .rev()
                    .take(steps)
                    .map(|i| (i * ratio + cfg.steps_offset) as f64)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                let ratio = t as f64 / steps as f64;
                np_arange_desc(last as f64, 0.0, -ratio)
                    .into_iter()
                    .map(|x| np_round(x) - 1.0)
                    .collect()
            }
        };
        let mut sigmas: Vec<f64> = if cfg.use_karras_sigmas {
            // numpy takes these logs in float32.
            let log_sigmas: Vec<f64> = all_sigmas.iter().map(|&s| s.ln() as f64).collect();
            let s = karras_sigmas(all_sigmas[0] as f64, all_sigmas[t - 1] as f64, steps);
            timesteps = s.iter().map(|&x| sigma_to_t(x, &log_sigmas)).collect();
            if cfg.beta_schedule != BetaSchedule::SquaredCosCapV2 {
                timesteps = timesteps.into_iter().map(np_round).collect();
            }
            s
        } else {
            timesteps.iter().map(|&x| interp(x, &all_sigmas)).collect()
        };
        sigmas.push(if cfg.final_sigma_min {
            ((1.0 - ac[0]) / ac[0]).sqrt() as f64
        } else {
            0.0
        });
        Ok(Self {
            // diffusers stores these as int64.
            timesteps: timesteps.into_iter().map(|x| x.trunc()).collect(),
            sigmas: sigmas.into_iter().map(|s| s as f32).collect(),
            prediction: cfg.prediction_type,
            lower_order_final: cfg.lower_order_final,
            euler_at_final: cfg.euler_at_final,
            final_zero: !cfg.final_sigma_min,
            outputs: [None, None],
            lower_order_nums: 0,
        })
    }

    /// The noise levels σ of each step, plus the final one.
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }
}

impl Scheduler for DpmSolverMultistep {
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
        _noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let n = self.timesteps.len();
        let lower_final =
            i == n - 1 && (self.euler_at_final || (self.lower_order_final && n < 15) || self.final_zero);
        let lower_second = i + 2 == n && self.lower_order_final && n < 15;
        let _ = lower_second; // order 2: the second-order update is the highest anyway
        let sigma = self.sigmas[i] as f64;
        let (a_s, s_s) = alpha_sigma(sigma);
        let x0 = match self.prediction {
            PredictionType::Epsilon => ((sample - (model_output * s_s)?)? / a_s)?,
            PredictionType::VPrediction => ((sample * a_s)? - (model_output * s_s)?)?,
            PredictionType::Sample => model_output.clone(),
        };
        self.outputs[0] = self.outputs[1].take();
        self.outputs[1] = Some(x0.clone());
        let sigma_t = self.sigmas[i + 1] as f64;
        let (a_t, s_t) = alpha_sigma(sigma_t);
        let h = lambda(sigma_t) - lambda(sigma);
        let em1 = (-h).exp() - 1.0;
        let prev = if self.lower_order_nums < 1 || lower_final {
            ((sample * (s_t / s_s))? - (&x0 * (a_t * em1))?)?
        } else {
            let m1 = self.outputs[0]
                .as_ref()
                .ok_or_else(|| crate::Error::Internal("DPM++: no previous output".into()))?;
            let sigma_1 = self.sigmas[i - 1] as f64;
            let h0 = lambda(sigma) - lambda(sigma_1);
            let r0 = h0 / h;
            let d1 = ((&x0 - m1)? * (1.0 / r0))?;
            (((sample * (s_t / s_s))? - (&x0 * (a_t * em1))?)? - (d1 * (0.5 * a_t * em1))?)?
        };
        if self.lower_order_nums < 2 {
            self.lower_order_nums += 1;
        }
        Ok(prev)
    }

    fn add_noise(&self, x0: &Tensor, noise: &Tensor, i: usize) -> Result<Tensor> {
        let (a, s) = alpha_sigma(self.sigmas[i] as f64);
        Ok(((x0 * a)? + (noise * s)?)?)
    }
}
