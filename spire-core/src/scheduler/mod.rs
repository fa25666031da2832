//! Noise schedulers, numerically equal to diffusers' for the same config: DDIM (with η),
//! DPM-Solver++ (2M, optionally with Karras sigmas), Euler (discrete), and the DDPM forward
//! process for training (noise adding, ε and v targets).
//!
//! A [`SchedulerConfig`] (read from a diffusers `scheduler_config.json`, shareable) builds a
//! fresh [`Scheduler`] per sampling run with [`SchedulerConfig::build`]. Method names follow
//! diffusers (`timesteps`, `init_noise_sigma`, `scale_model_input`, `step`, `add_noise`), but
//! steps are addressed by their index in [`Scheduler::timesteps`] instead of a timestep value.
//!
//! Schedule arithmetic mirrors PyTorch's f32 computation (`torch.linspace`'s two-sided
//! evaluation, `cumprod`'s double accumulator), so schedules match diffusers to the last bit or
//! two (torch's vectorised linspace rounds differently per CPU); per-step coefficients are
//! computed in f64 from those f32 values.

mod ddim;
mod dpmsolver;
mod euler;

use std::path::Path;

use candle_core::Tensor;

pub use ddim::Ddim;
pub use dpmsolver::DpmSolverMultistep;
pub use euler::EulerDiscrete;

use crate::error::{Error, Result};
use crate::json::Json;

/// Which sampler to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SchedulerKind {
    /// diffusers `DDIMScheduler` (deterministic with η = 0).
    Ddim,
    /// diffusers `DPMSolverMultistepScheduler`, `dpmsolver++`, second order ("DPM++ 2M").
    DpmSolverPlusPlus2M,
    /// diffusers `EulerDiscreteScheduler`.
    Euler,
}

impl SchedulerKind {
    /// Parses `"ddim"`, `"dpm++2m"` (also `"dpmsolver++"`, `"dpm"`), `"euler"`, or a diffusers
    /// class name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(
            match s.to_ascii_lowercase().replace(['-', '_', ' '], "").as_str() {
                "ddim" | "ddimscheduler" => SchedulerKind::Ddim,
                "dpm++2m"
                | "dpmpp2m"
                | "dpmsolver++"
                | "dpm"
                | "dpmsolvermultistep"
                | "dpmsolvermultistepscheduler" => SchedulerKind::DpmSolverPlusPlus2M,
                "euler" | "eulerdiscrete" | "eulerdiscretescheduler" => SchedulerKind::Euler,
                _ => return None,
            },
        )
    }

    /// The short name (`"ddim"`, `"dpm++2m"`, `"euler"`).
    pub fn as_str(self) -> &'static str {
        match self {
            SchedulerKind::Ddim => "ddim",
            SchedulerKind::DpmSolverPlusPlus2M => "dpm++2m",
            SchedulerKind::Euler => "euler",
        }
    }
}

impl std::fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionType {
    /// The added noise ε (SD 1.x, SD 2.1-base).
    Epsilon,
    /// The velocity `v = √ᾱ·ε − √(1−ᾱ)·x₀` (SD 2.x 768).
    VPrediction,
    /// The clean sample x₀.
    Sample,
}

impl PredictionType {
    /// Parses diffusers' spelling (`epsilon`, `v_prediction`, `sample`); `v` is accepted for
    /// `v_prediction`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "epsilon" | "eps" => PredictionType::Epsilon,
            "v_prediction" | "v" => PredictionType::VPrediction,
            "sample" => PredictionType::Sample,
            _ => return None,
        })
    }

    /// diffusers' spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PredictionType::Epsilon => "epsilon",
            PredictionType::VPrediction => "v_prediction",
            PredictionType::Sample => "sample",
        }
    }
}

/// How inference timesteps are spread over the training timesteps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestepSpacing {
    /// `round(linspace(0, T−1, n))`, descending.
    Linspace,
    /// `arange(n)·(T//n) + steps_offset`, descending.
    Leading,
    /// `round(arange(T, 0, −T/n)) − 1`.
    Trailing,
}

/// How β grows over the training timesteps.
#[derive(Debug, Clone, PartialEq)]
pub enum BetaSchedule {
    /// `linspace(β_start, β_end, T)`.
    Linear,
    /// `linspace(√β_start, √β_end, T)²` (Stable Diffusion).
    ScaledLinear,
    /// The cosine schedule (`squaredcos_cap_v2`).
    SquaredCosCapV2,
    /// Explicit betas.
    Trained(Vec<f32>),
}

/// A scheduler configuration: the diffusers `scheduler_config.json` fields that matter.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// The scheduler class named in the file (used when a run does not pick one).
    pub kind: SchedulerKind,
    /// `num_train_timesteps` (1000).
    pub num_train_timesteps: usize,
    /// `beta_start`.
    pub beta_start: f64,
    /// `beta_end`.
    pub beta_end: f64,
    /// `beta_schedule` / `trained_betas`.
    pub beta_schedule: BetaSchedule,
    /// `prediction_type`.
    pub prediction_type: PredictionType,
    /// `timestep_spacing`; `None` means each scheduler's diffusers default (DDIM: leading;
    /// DPM-Solver, Euler: linspace).
    pub timestep_spacing: Option<TimestepSpacing>,
    /// `steps_offset`.
    pub steps_offset: usize,
    /// `rescale_betas_zero_snr`.
    pub rescale_betas_zero_snr: bool,
    /// DDIM `clip_sample` (`None`: the DDIM default, true).
    pub clip_sample: Option<bool>,
    /// DDIM `clip_sample_range`.
    pub clip_sample_range: f64,
    /// DDIM `set_alpha_to_one` (`None`: the DDIM default, true).
    pub set_alpha_to_one: Option<bool>,
    /// DPM-Solver / Euler `use_karras_sigmas`.
    pub use_karras_sigmas: bool,
    /// DPM-Solver / Euler `final_sigmas_type` is `"sigma_min"` (default `"zero"`).
    pub final_sigma_min: bool,
    /// DPM-Solver `lower_order_final`.
    pub lower_order_final: bool,
    /// DPM-Solver `euler_at_final`.
    pub euler_at_final: bool,
}

impl Default for SchedulerConfig {
    /// Stable Diffusion's schedule (scaled linear 0.00085 → 0.012 over 1000 steps, ε).
    fn default() -> Self {
        Self {
            kind: SchedulerKind::DpmSolverPlusPlus2M,
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: None,
            steps_offset: 0,
            rescale_betas_zero_snr: false,
            clip_sample: None,
            clip_sample_range: 1.0,
            set_alpha_to_one: None,
            use_karras_sigmas: false,
            final_sigma_min: false,
            lower_order_final: true,
            euler_at_final: false,
        }
    }
}

impl SchedulerConfig {
    /// Reads a diffusers `scheduler_config.json`. Unknown classes (PNDM, LMS, …) keep their
    /// schedule and run with the default sampler; unsupported options are errors naming them.
    pub fn from_file(path: &Path) -> Result<Self> {
        let j = Json::read(path)?;
        Self::from_json(&j)
    }

    /// Parses the text of a `scheduler_config.json`.
    pub fn from_json_str(text: &str) -> Result<Self> {
        Self::from_json(&Json::parse(Path::new("scheduler_config.json"), text)?)
    }

    pub(crate) fn from_json(j: &Json) -> Result<Self> {
        use serde_json::json;
        /// diffusers' schedules have 1000 training timesteps; far more is not a real model.
        const MAX_TRAIN_TIMESTEPS: usize = 100_000;
        let kind = SchedulerKind::parse(j.str_or("_class_name", "DPMSolverMultistepScheduler")?)
            .unwrap_or(SchedulerKind::DpmSolverPlusPlus2M);
        let beta_schedule = match j.map.get("trained_betas").filter(|v| !v.is_null()) {
            Some(v) => BetaSchedule::Trained(
                serde_json::from_value::<Vec<f32>>(v.clone())
                    .map_err(|e| j.err("trained_betas", format!("expected a list of numbers: {e}")))?,
            ),
            None => match j.str_or("beta_schedule", "linear")? {
                "linear" => BetaSchedule::Linear,
                "scaled_linear" => BetaSchedule::ScaledLinear,
                "squaredcos_cap_v2" => BetaSchedule::SquaredCosCapV2,
                other => return Err(j.err("beta_schedule", format!("`{other}` is not supported"))),
            },
        };
        let prediction_type = match j.str_or("prediction_type", "epsilon")? {
            "epsilon" => PredictionType::Epsilon,
            "v_prediction" => PredictionType::VPrediction,
            "sample" => PredictionType::Sample,
            other => return Err(j.err("prediction_type", format!("`{other}` is not supported"))),
        };
        let timestep_spacing = match j.map.get("timestep_spacing").and_then(|v| v.as_str()) {
            None => None,
            Some("linspace") => Some(TimestepSpacing::Linspace),
            Some("leading") => Some(TimestepSpacing::Leading),
            Some("trailing") => Some(TimestepSpacing::Trailing),
            Some(other) => return Err(j.err("timestep_spacing", format!("`{other}` is not supported"))),
        };
        for (field, default) in [
            ("thresholding", json!(false)),
            ("use_exponential_sigmas", json!(false)),
            ("use_beta_sigmas", json!(false)),
            ("use_lu_lambdas", json!(false)),
            ("use_flow_sigmas", json!(false)),
            ("use_dynamic_shifting", json!(false)),
            ("variance_type", serde_json::Value::Null),
            ("interpolation_type", json!("linear")),
            ("timestep_type", json!("discrete")),
        ] {
            j.require_default(field, default)?;
        }
        if kind == SchedulerKind::DpmSolverPlusPlus2M {
            j.require_default("algorithm_type", json!("dpmsolver++"))?;
            j.require_default("solver_order", json!(2))?;
            j.require_default("solver_type", json!("midpoint"))?;
            // diffusers' default (no clipping), written by Python as `-Infinity`.
            j.require_default("lambda_min_clipped", json!("-Infinity"))?;
        }
        let final_sigma_min = match j.str_or("final_sigmas_type", "zero")? {
            "zero" => false,
            "sigma_min" => true,
            other => return Err(j.err("final_sigmas_type", format!("`{other}` is not supported"))),
        };
        let cfg = Self {
            kind,
            num_train_timesteps: j.usize_or("num_train_timesteps", 1000)?,
            beta_start: j.f64_in("beta_start", 0.0001, "must be in (0, 1)", |b| b > 0.0 && b < 1.0)?,
            beta_end: j.f64_in("beta_end", 0.02, "must be in (0, 1)", |b| b > 0.0 && b < 1.0)?,
            beta_schedule,
            prediction_type,
            timestep_spacing,
            steps_offset: j.usize_or("steps_offset", 0)?,
            rescale_betas_zero_snr: j.bool_or("rescale_betas_zero_snr", false)?,
            clip_sample: j.map.get("clip_sample").and_then(|v| v.as_bool()),
            clip_sample_range: j.f64_or("clip_sample_range", 1.0)?,
            set_alpha_to_one: j.map.get("set_alpha_to_one").and_then(|v| v.as_bool()),
            use_karras_sigmas: j.bool_or("use_karras_sigmas", false)?,
            final_sigma_min,
            lower_order_final: j.bool_or("lower_order_final", true)?,
            euler_at_final: j.bool_or("euler_at_final", false)?,
        };
        if !(2..=MAX_TRAIN_TIMESTEPS).contains(&cfg.num_train_timesteps) {
            return Err(j.err(
                "num_train_timesteps",
                format!(
                    "{} is out of range (2 to {MAX_TRAIN_TIMESTEPS})",
                    cfg.num_train_timesteps
                ),
            ));
        }
        if let BetaSchedule::Trained(b) = &cfg.beta_schedule {
            if let Some((i, x)) = b.iter().enumerate().find(|(_, &x)| !(x > 0.0 && x < 1.0)) {
                return Err(j.err("trained_betas", format!("value {i} is {x}, outside (0, 1)")));
            }
            if b.len() != cfg.num_train_timesteps {
                return Err(j.err(
                    "trained_betas",
                    format!("has {} values for {} timesteps", b.len(), cfg.num_train_timesteps),
                ));
            }
        }
        Ok(cfg)
    }

    /// β for each training timestep, in f32 exactly as diffusers computes them.
    pub fn betas(&self) -> Vec<f32> {
        let n = self.num_train_timesteps;
        let betas = match &self.beta_schedule {
            BetaSchedule::Linear => torch_linspace_f32(self.beta_start as f32, self.beta_end as f32, n),
            BetaSchedule::ScaledLinear => {
                torch_linspace_f32(self.beta_start.sqrt() as f32, self.beta_end.sqrt() as f32, n)
                    .into_iter()
                    .map(|b| b * b)
                    .collect()
            }
            BetaSchedule::SquaredCosCapV2 => {
                let f = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
                (0..n)
                    .map(|i| {
                        let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                        (1.0 - f(t2) / f(t1)).min(0.999) as f32
                    })
                    .collect()
            }
            BetaSchedule::Trained(b) => b.clone(),
        };
        if self.rescale_betas_zero_snr {
            rescale_zero_terminal_snr(&betas)
        } else {
            betas
        }
    }

    /// ᾱ (`alphas_cumprod`) for each training timestep, f32 values of a double-accumulated
    /// product as `torch.cumprod` gives.
    pub fn alphas_cumprod(&self) -> Vec<f32> {
        let mut acc = 1f64;
        self.betas()
            .iter()
            .map(|&b| {
                acc *= (1.0f32 - b) as f64;
                acc as f32
            })
            .collect()
    }

    /// A fresh scheduler of `kind` set up for `steps` inference steps.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `steps` is 0 or larger than `num_train_timesteps`.
    pub fn build(&self, kind: SchedulerKind, steps: usize) -> Result<Box<dyn Scheduler>> {
        if steps == 0 || steps > self.num_train_timesteps {
            return Err(Error::invalid_arg(
                "num_inference_steps",
                format!("must be between 1 and {}, got {steps}", self.num_train_timesteps),
            ));
        }
        let make = |steps: usize| -> Result<Box<dyn Scheduler>> {
            Ok(match kind {
                SchedulerKind::Ddim => Box::new(Ddim::new(self, steps)?),
                SchedulerKind::DpmSolverPlusPlus2M => Box::new(DpmSolverMultistep::new(self, steps)?),
                SchedulerKind::Euler => Box::new(EulerDiscrete::new(self, steps)?),
            })
        };
        let distinct = |s: &dyn Scheduler| s.timesteps().windows(2).all(|w| w[1] < w[0]);
        let sched = make(steps)?;
        if distinct(sched.as_ref()) {
            return Ok(sched);
        }
        // Near the number of training timesteps some spacings repeat a timestep (DPM++ with
        // `leading` spacing: 1000 steps over 1000 timesteps are all timestep 1), and a repeated
        // timestep is a step of size zero: NaN, not an image. diffusers builds the same
        // schedule; here it is refused with the most steps that work.
        let most = (1..steps)
            .rev()
            .find(|&k| make(k).is_ok_and(|s| distinct(s.as_ref())))
            .unwrap_or(1);
        Err(Error::invalid_arg(
            "num_inference_steps",
            format!(
                "{steps} steps of {kind:?} over {} training timesteps ({}) repeat a timestep; \
                 at most {most} steps work with this schedule",
                self.num_train_timesteps,
                match self.timestep_spacing {
                    Some(sp) => format!("{sp:?} spacing"),
                    None => "the sampler's default spacing".into(),
                }
            ),
        ))
    }

    /// The DDPM forward process `√ᾱ_t·x₀ + √(1−ᾱ_t)·ε`, one timestep per batch element
    /// (diffusers `DDPMScheduler.add_noise`).
    pub fn add_noise(&self, x0: &Tensor, noise: &Tensor, timesteps: &[usize]) -> Result<Tensor> {
        let ac = self.alphas_cumprod();
        let (a, b) = self.per_sample(&ac, timesteps, x0, |a| (a.sqrt(), (1.0 - a).sqrt()))?;
        Ok((x0.broadcast_mul(&a)? + noise.broadcast_mul(&b)?)?)
    }

    /// The v-prediction target `√ᾱ_t·ε − √(1−ᾱ_t)·x₀` (diffusers `get_velocity`).
    pub fn velocity(&self, x0: &Tensor, noise: &Tensor, timesteps: &[usize]) -> Result<Tensor> {
        let ac = self.alphas_cumprod();
        let (a, b) = self.per_sample(&ac, timesteps, x0, |a| (a.sqrt(), (1.0 - a).sqrt()))?;
        Ok((noise.broadcast_mul(&a)? - x0.broadcast_mul(&b)?)?)
    }

    /// The training target for the configured prediction type.
    pub fn target(&self, x0: &Tensor, noise: &Tensor, timesteps: &[usize]) -> Result<Tensor> {
        match self.prediction_type {
            PredictionType::Epsilon => Ok(noise.clone()),
            PredictionType::VPrediction => self.velocity(x0, noise, timesteps),
            PredictionType::Sample => Ok(x0.clone()),
        }
    }

    fn per_sample(
        &self,
        ac: &[f32],
        timesteps: &[usize],
        like: &Tensor,
        f: impl Fn(f32) -> (f32, f32),
    ) -> Result<(Tensor, Tensor)> {
        let b = like.dim(0)?;
        if timesteps.len() != b {
            return Err(Error::invalid_arg(
                "timesteps",
                format!("{} timesteps for a batch of {b}", timesteps.len()),
            ));
        }
        let mut va = Vec::with_capacity(b);
        let mut vb = Vec::with_capacity(b);
        for &t in timesteps {
            let a = *ac.get(t).ok_or_else(|| {
                Error::invalid_arg("timesteps", format!("{t} ≥ num_train_timesteps {}", ac.len()))
            })?;
            let (x, y) = f(a);
            va.push(x);
            vb.push(y);
        }
        let mut shape = vec![b];
        shape.extend(std::iter::repeat_n(1, like.rank() - 1));
        let dev = like.device();
        Ok((
            Tensor::from_vec(va, shape.clone(), dev)?.to_dtype(like.dtype())?,
            Tensor::from_vec(vb, shape, dev)?.to_dtype(like.dtype())?,
        ))
    }

    pub(crate) fn spacing_or(&self, default: TimestepSpacing) -> TimestepSpacing {
        self.timestep_spacing.unwrap_or(default)
    }
}

/// A sampler for one run: call [`scale_model_input`](Scheduler::scale_model_input) and
/// [`step`](Scheduler::step) for indices `begin, begin+1, …` in order.
pub trait Scheduler: Send {
    /// The model timesteps, in sampling order.
    fn timesteps(&self) -> &[f64];
    /// What pure noise is multiplied by to start sampling.
    fn init_noise_sigma(&self) -> f64;
    /// The model input for step `i` (identity except for Euler).
    fn scale_model_input(&self, sample: &Tensor, i: usize) -> Result<Tensor>;
    /// One step from `sample` at step `i` to the sample of step `i + 1`. `noise` (standard
    /// normal, the sample's shape) is used by stochastic steps (DDIM with η > 0).
    fn step(
        &mut self,
        model_output: &Tensor,
        i: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor>;
    /// Noises a clean latent to the noise level of step `i` (to start sampling there).
    fn add_noise(&self, x0: &Tensor, noise: &Tensor, i: usize) -> Result<Tensor>;
    /// Whether [`step`](Scheduler::step) uses its `noise` argument.
    fn needs_noise(&self) -> bool {
        false
    }
}

/// `torch.linspace(start, end, n, dtype=float32)` as its scalar path computes it: the step in
/// f32, the second half evaluated from the end.
pub(crate) fn torch_linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                start + step * i as f32
            } else {
                end - step * (n - i - 1) as f32
            }
        })
        .collect()
}

/// `np.linspace(start, end, n)` in f64 (numpy's formula: `start + i·step`, last value exact).
pub(crate) fn np_linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f64;
    (0..n)
        .map(|i| if i == n - 1 { end } else { start + i as f64 * step })
        .collect()
}

/// numpy's `round` (half to even).
pub(crate) fn np_round(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        2.0 * (x / 2.0).round()
    } else {
        r
    }
}

/// `np.arange(start, stop, step)` for a negative step.
pub(crate) fn np_arange_desc(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let n = ((stop - start) / step).ceil().max(0.0) as usize;
    (0..n).map(|i| start + i as f64 * step).collect()
}

/// diffusers `rescale_zero_terminal_snr` (Lin et al. 2023, Algorithm 1), in f32.
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let mut acc = 1f64;
    let mut sqrt_ab: Vec<f32> = betas
        .iter()
        .map(|&b| {
            acc *= (1.0f32 - b) as f64;
            (acc as f32).sqrt()
        })
        .collect();
    let (a0, at) = (sqrt_ab[0], sqrt_ab[sqrt_ab.len() - 1]);
    for v in &mut sqrt_ab {
        *v -= at;
        *v *= a0 / (a0 - at);
    }
    let ab: Vec<f32> = sqrt_ab.iter().map(|v| v * v).collect();
    let mut out = Vec::with_capacity(ab.len());
    out.push(1.0 - ab[0]);
    for i in 1..ab.len() {
        out.push(1.0 - ab[i] / ab[i - 1]);
    }
    out
}

/// `np.interp(x, arange(len(ys)), ys)`.
pub(crate) fn interp(x: f64, ys: &[f32]) -> f64 {
    if x <= 0.0 {
        return ys[0] as f64;
    }
    let last = ys.len() - 1;
    if x >= last as f64 {
        return ys[last] as f64;
    }
    let i = x.floor() as usize;
    let f = x - i as f64;
    let (a, b) = (ys[i] as f64, ys[i + 1] as f64);
    // numpy: slope·(x − xp[i]) + fp[i]
    (b - a) * f + a
}

/// Karras et al. (2022) sigmas between the schedule's extremes (diffusers `_convert_to_karras`).
pub(crate) fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0;
    let (lo, hi) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
    np_linspace(0.0, 1.0, n)
        .into_iter()
        .map(|r| (hi + r * (lo - hi)).powf(rho))
        .collect()
}

/// The (fractional) timestep of a sigma by log-sigma interpolation (diffusers `_sigma_to_t`).
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let n = log_sigmas.len();
    // index of the last log_sigma <= log_sigma (log_sigmas ascending), clipped to n − 2.
    let cnt = log_sigmas.iter().filter(|&&ls| log_sigma - ls >= 0.0).count();
    let low = cnt.saturating_sub(1).min(n - 2);
    let high = low + 1;
    let (l, h) = (log_sigmas[low], log_sigmas[high]);
    let w = ((l - log_sigma) / (l - h)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * high as f64
}

/// The prediction → (x₀, ε) conversion shared by the samplers, with ᾱ of the current step.
pub(crate) fn x0_and_eps(
    prediction: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    alpha_prod: f64,
) -> Result<(Tensor, Tensor)> {
    let (a, b) = (alpha_prod.sqrt(), (1.0 - alpha_prod).sqrt());
    Ok(match prediction {
        PredictionType::Epsilon => (((sample - (model_output * b)?)? / a)?, model_output.clone()),
        PredictionType::Sample => (model_output.clone(), ((sample - (model_output * a)?)? / b)?),
        PredictionType::VPrediction => (
            ((sample * a)? - (model_output * b)?)?,
            ((model_output * a)? + (sample * b)?)?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_round_is_half_to_even() {
        assert_eq!(np_round(0.5), 0.0);
        assert_eq!(np_round(1.5), 2.0);
        assert_eq!(np_round(2.5), 2.0);
        assert_eq!(np_round(-0.5), -0.0);
        assert_eq!(np_round(2.4), 2.0);
    }

    #[test]
    fn arange_desc_counts_like_numpy() {
        assert_eq!(np_arange_desc(1000.0, 0.0, -100.0).len(), 10);
        assert_eq!(np_arange_desc(1000.0, 0.0, -1000.0 / 3.0).len(), 3);
    }
}
