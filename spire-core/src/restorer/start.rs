//! The start (stage 3): the schedule and where on it sampling starts (`strength`, the
//! noise-matched start), the hint the adaptor sees, and the start latents.

use candle_core::{DType, Tensor};

use super::{Geometry, Inner};
use crate::error::{Error, Result};
use crate::model::adaptor::HintMode;
use crate::options::{RestorationInput, RestoreOptions};
use crate::plan::RunPlan;
use crate::rng::{self, RestoreNoise};
use crate::scheduler::{Ddim, Scheduler, SchedulerKind};

/// The schedule one call samples along.
pub(super) struct Schedule {
    /// The scheduler, with its timesteps.
    pub(super) sched: Box<dyn Scheduler>,
    /// The index of the first timestep run.
    pub(super) start: usize,
    /// The noise-matched start's timestep and ᾱ, when it applies.
    pub(super) matched: Option<(usize, f64)>,
}

impl Schedule {
    /// The number of timesteps in the schedule (the last index run is `steps() − 1`).
    pub(super) fn steps(&self) -> usize {
        self.sched.timesteps().len()
    }
}

/// Stage 3's output: what denoising starts from.
pub(super) struct Start {
    /// The hint: the input's latent mean (latent mode) or the padded input (pixel mode),
    /// repeated once per distinct restoration context.
    pub(super) hint: Tensor,
    /// The start latents, f32.
    pub(super) latents: Tensor,
}

impl Inner {
    /// The scheduler `opts` asks for (the model's by default) with `num_inference_steps`, and
    /// where sampling starts: `strength` of the schedule from its end, or — when it applies —
    /// the timestep whose noise matches the prompt's σ, followed by the scheduled timesteps
    /// below it (the input already is a noised image there, so it is scaled, not noised).
    pub(super) fn schedule(&self, opts: &RestoreOptions) -> Result<Schedule> {
        let kind = opts.scheduler.unwrap_or(self.scheduler.kind);
        let sched: Box<dyn Scheduler> = if kind == SchedulerKind::Ddim {
            Box::new(Ddim::new(&self.scheduler, opts.num_inference_steps)?.with_eta(opts.eta))
        } else {
            if opts.eta > 0.0 {
                return Err(Error::invalid_arg("eta", "only the DDIM scheduler takes eta"));
            }
            self.scheduler.build(kind, opts.num_inference_steps)?
        };
        let scheduled = sched.timesteps().len();
        let start = scheduled - ((scheduled as f64 * opts.strength) as usize).min(scheduled);
        let matched = self.matched_timestep(opts, kind, start > 0);
        Ok(match matched {
            Some((t_star, _)) => {
                let mut list = vec![t_star as f64];
                list.extend(sched.timesteps().iter().copied().filter(|&t| t < t_star as f64));
                Schedule {
                    sched: Box::new(Ddim::with_timesteps(&self.scheduler, list)?.with_eta(opts.eta)),
                    start: 0,
                    matched,
                }
            }
            None => Schedule {
                sched,
                start,
                matched: None,
            },
        })
    }

    /// The timestep whose noise matches the restoration prompt's noise σ, and its ᾱ, for a run
    /// that restores from the input (`from_input`: `strength` < 1; `None` when the match does
    /// not apply: the option is off, the run starts from pure noise or explicit initial latents,
    /// the scheduler is not DDIM, the prompt names no noise or also a shrink — whose
    /// enlargement leaves the noise no longer white — or the autoencoder is not linear, so
    /// pixel noise is not latent noise). Anywhere on the schedule, also above the strength's
    /// timestep: the stated noise says where the input is, and a larger σ asks for a stronger restoration
    /// (capping it at the strength's timestep made every σ above it restore alike).
    fn matched_timestep(
        &self,
        opts: &RestoreOptions,
        kind: SchedulerKind,
        from_input: bool,
    ) -> Option<(usize, f64)> {
        if !opts.match_noise || kind != SchedulerKind::Ddim || opts.initial_latents.is_some() || !from_input {
            return None;
        }
        let RestorationInput::Prompt(p) = &opts.restoration_prompt else {
            return None;
        };
        if p.upsample_scale().is_some() {
            return None;
        }
        let sigma = p.denoise_sigma_f64()?;
        let scale = self.vae.linear_latent_scale()?;
        // Latents are (2x − 1)·scale per pixel: noise σ on [0, 1] is 2σ·scale in the latent.
        let target = 2.0 * sigma * scale;
        let ac = self.scheduler.alphas_cumprod();
        let miss = |t: usize| (((1.0 - ac[t] as f64) / ac[t] as f64).sqrt() - target).abs();
        let t = (0..ac.len()).min_by(|&a, &b| miss(a).total_cmp(&miss(b)))?;
        Some((t, ac[t] as f64))
    }

    /// Stage 3: the hint and the start latents for the padded input `y` (`[n, 3, ph, pw]` in
    /// [0, 1], the model's dtype; consumed, as only the pixel hint keeps it). The input's
    /// latent mean is encoded once, for the latent hint and the matched start; a `strength`
    /// < 1 start encodes a posterior sample (stream [`RestoreNoise::VaeSample`]) and noises it
    /// to the start timestep ([`RestoreNoise::Start`]); a full-strength start is seeded noise
    /// (or `initial_latents`) times the scheduler's initial σ.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start(
        &self,
        y: Tensor,
        g: &Geometry,
        seeds: &[u64],
        opts: &RestoreOptions,
        schedule: &Schedule,
        contexts: usize,
        mem: &RunPlan,
    ) -> Result<Start> {
        let (n, lc, lh, lw) = (g.n, g.lc, g.lh, g.lw);
        let dev = &self.device;
        let dt = self.dtype;
        let y_latent = if self.adaptor.hint_mode() == HintMode::Latent || schedule.matched.is_some() {
            let mean = self.vae.encode_mean_tiled(&y.affine(2.0, -1.0)?, mem.encode)?;
            Some(self.vae.scale_latents(&mean)?)
        } else {
            None
        };
        let hint = match (self.adaptor.hint_mode(), &y_latent) {
            (HintMode::Latent, Some(z)) => z.clone(),
            (HintMode::Latent, None) => return Err(Error::Internal("latent hint not encoded".into())),
            (HintMode::Pixel, _) => y.clone(),
        };
        let hint = if contexts > 1 {
            Tensor::cat(&vec![&hint; contexts], 0)?
        } else {
            hint
        };

        let noise = || -> Result<Tensor> {
            match &opts.initial_latents {
                Some(l) => {
                    if l.dims() != [n, lc, lh, lw] {
                        return Err(Error::invalid_arg(
                            "initial_latents",
                            format!("has shape {:?}, this image needs {:?}", l.dims(), [n, lc, lh, lw]),
                        ));
                    }
                    Ok(l.to_device(dev)?.to_dtype(DType::F32)?)
                }
                None => {
                    let per: Vec<Tensor> = seeds
                        .iter()
                        .map(|&s| {
                            rng::randn(rng::restore_stream(s, RestoreNoise::Start), (1, lc, lh, lw), dev)
                        })
                        .collect::<candle_core::Result<_>>()?;
                    Ok(Tensor::cat(&per, 0)?)
                }
            }
        };
        let sched = &schedule.sched;
        let latents = match (schedule.matched, &y_latent) {
            (Some((_, alpha_bar)), Some(z)) => (z.to_dtype(DType::F32)? * alpha_bar.sqrt())?,
            (Some(_), None) => return Err(Error::Internal("input latent not encoded".into())),
            (None, _) if schedule.start == 0 => (noise()? * sched.init_noise_sigma())?,
            (None, _) => {
                let per: Vec<Tensor> = seeds
                    .iter()
                    .map(|&s| {
                        rng::randn(
                            rng::restore_stream(s, RestoreNoise::VaeSample),
                            (1, lc, lh, lw),
                            dev,
                        )
                    })
                    .collect::<candle_core::Result<_>>()?;
                let z = self.vae.encode_sample_tiled(
                    &y.affine(2.0, -1.0)?,
                    &Tensor::cat(&per, 0)?.to_dtype(dt)?,
                    mem.encode,
                )?;
                let x0 = self.vae.scale_latents(&z)?.to_dtype(DType::F32)?;
                sched.add_noise(&x0, &noise()?, schedule.start)?
            }
        };
        // The padded input lives on only as the pixel hint (a shared handle); the input's
        // latent only as the latent hint or the start.
        drop(y);
        drop(y_latent);
        Ok(Start { hint, latents })
    }
}
