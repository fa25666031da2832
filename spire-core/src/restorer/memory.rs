//! Memory planning (before stage 1): from the sizes alone, the output size, the latent tiles
//! (for the memory limit, or for speed where tiles do less work than one piece), the
//! autoencoder's tiles and every phase's memory. See [`crate::plan`].

use super::guidance::passes_for;
use super::Inner;
use crate::error::{Error, Result};
use crate::model::adaptor::HintMode;
use crate::options::{RestorationInput, RestoreOptions};

impl Inner {
    /// Estimated working memory of one denoising step on a `th × tw` latent tile with
    /// `n_unet` backbone and `n_ad` adaptor batch items: the skip features both networks keep,
    /// the adaptor's signals, a few full-resolution temporaries, the attention scratch.
    pub(super) fn step_bytes(&self, th: usize, tw: usize, n_unet: usize, n_ad: usize) -> u64 {
        let u = self.unet.config();
        let levels = u.block_out_channels.len();
        let mut skip = u.block_out_channels[0] as f64;
        for l in 0..levels {
            let c = u.block_out_channels[l] as f64;
            let scale = 4f64.powi(l as i32);
            skip += u.layers_per_block[l] as f64 * c / scale;
            if l + 1 < levels {
                skip += c / (scale * 4.0);
            }
        }
        let signals = match self.adaptor.config().fusion {
            crate::model::adaptor::Fusion::Modulation => 2.0,
            crate::model::adaptor::Fusion::Additive => 1.0,
        };
        let c0 = u.block_out_channels[0] as f64;
        let widest_attn = u
            .down_cross_attention
            .iter()
            .position(|&a| a)
            .map(|l| 4f64.powi(l as i32))
            .unwrap_or(f64::INFINITY);
        // GEGLU's hidden layer (8× the width) at the first attention level.
        let ff = (0..levels)
            .filter(|&l| u.down_cross_attention[l])
            .map(|l| 8.0 * u.block_out_channels[l] as f64 / 4f64.powi(l as i32))
            .fold(0.0, f64::max);
        let px = (th * tw) as f64;
        let per_item = px * (2.0 * skip + 8.0 * c0 + ff);
        let adaptor_item = px * (skip * (1.0 + signals) + 8.0 * c0 + ff);
        let threads = candle_core::utils::get_num_threads() as f64;
        let attn = threads * 64.0 * (px / widest_attn) * 2.0;
        // Activations in the model's dtype; attention scores are always f32.
        let b = self.dtype.size_in_bytes() as f64;
        (b * (n_unet as f64 * per_item + n_ad as f64 * adaptor_item) + 4.0 * attn) as u64
    }

    /// Plans a call for `n` images of `w × h` pixels (the caller holding `input_bytes` of
    /// them): the output size, the latent tiles (for the memory limit, or for speed where
    /// tiles do less work than one piece), the autoencoder's tiles, and every phase's memory.
    /// See [`crate::plan`].
    pub(super) fn plan_call(
        &self,
        w: usize,
        h: usize,
        n: usize,
        input_bytes: u64,
        alpha: bool,
        opts: &RestoreOptions,
    ) -> Result<crate::plan::RunPlan> {
        use crate::model::{VaePass, VaeTiling};
        use crate::options::MemoryLimit;
        use crate::plan::{planes, PhaseBytes, RunPlan, TileReason, SPEED_MARGIN, SPEED_MIN_TILE};
        crate::image::check_size(w, h)?;
        let (ow, oh) = opts.output_size(w, h);
        crate::image::check_size(ow, oh)?;
        // Sizes handed to `plan` need not come with pixels: keep every product below overflow.
        const MAX_PIXELS: u128 = 1 << 40;
        if (w as u128) * (h as u128) > MAX_PIXELS || (ow as u128) * (oh as u128) > MAX_PIXELS {
            return Err(Error::InvalidImage(format!(
                "a {w}×{h} image (restored at {ow}×{oh}) is beyond any memory (over 2⁴⁰ pixels)"
            )));
        }
        let mult = self.vae.downscale_factor() * self.unet.config().downscale_factor();
        let (pw, ph) = (ow.div_ceil(mult) * mult, oh.div_ceil(mult) * mult);
        let f = self.vae.downscale_factor();
        let (lw, lh) = (pw / f, ph / f);
        let m = self.unet.config().downscale_factor();
        let passes = passes_for(opts);
        let (n_unet, n_ad) = (n * passes.passes.len(), n * passes.r_used.len());
        let (p_in, p, p_pad) = (w * h, ow * oh, pw * ph);
        let a = usize::from(alpha);
        let dt = self.dtype.size_in_bytes() as u64;

        // The buffers sized by the image, phase by phase (see `run`).
        let planar = planes(n, p, 3 + a);
        let padded = planes(n, p_pad, 3);
        let convert = planar + planes(1, p_in, 3 + a);
        // One full latent (for models with many latent channels, such as the built-in one,
        // as large as the image): three are alive while encoding (the input's latent, the
        // hint, the start), seven while denoising (latents, model input, prediction, noise,
        // the tiles' blend and its weights, the scheduler's step), two while decoding.
        let latent = planes(n, lh * lw, self.vae.latent_channels());
        let pixel_hint = self.adaptor.hint_mode() == HintMode::Pixel;
        let needs_encode = !pixel_hint || opts.strength < 1.0 || opts.match_noise;
        // Encoding: the input and its `2y − 1`.
        let encode_fixed = planar + padded * 2 + 3 * latent;
        let denoise_fixed = planar
            + if pixel_hint {
                padded / 4 * dt * passes.r_used.len() as u64
            } else {
                0
            }
            + 7 * latent;
        let decode_fixed = planar + padded * 2 + 2 * latent;
        let one_image = if opts.consistency > 0.0
            && matches!(&opts.restoration_prompt, RestorationInput::Prompt(q) if !q.is_blind())
        {
            // Measurement consistency: about nine f64 planes of one channel.
            9 * 8 * p as u64
        } else {
            match opts.color_fix {
                crate::ColorFix::Wavelet => 8 * 4 * p as u64,
                _ => 0,
            }
        };
        let out_bytes = (input_bytes as f64 * p as f64 / p_in as f64) as u64;
        let finish = planar + (padded + planes(n, p, 3)).max(planes(n, p, 3) + one_image + out_bytes);
        let with_input = |b: u64| b.saturating_add(input_bytes);

        let budget = match opts.memory_limit {
            MemoryLimit::Unlimited => None,
            MemoryLimit::Bytes(b) => Some(b),
            MemoryLimit::Auto => crate::device::available_memory(&self.device).map(|a| a / 4 * 3),
        };
        let cap = budget.unwrap_or(u64::MAX);
        let fits = |b: u64| with_input(b) <= cap;

        // The autoencoder: whole when it fits, else the tiles the budget leaves room for.
        let vae = &self.vae;
        let vae_plan = |pass: VaePass, fixed: u64, h: usize, w: usize, scale: usize| -> Option<VaeTiling> {
            match opts.vae_tile_size {
                Some(px) => Some(VaeTiling {
                    tile: (px / scale).max(1),
                    spill: false,
                }),
                None => vae.plan_tiling(pass, n, h, w, cap.saturating_sub(with_input(fixed))),
            }
        };
        let encode = if needs_encode {
            vae_plan(VaePass::Encode, encode_fixed, ph, pw, 1)
        } else {
            None
        };
        let decode = vae_plan(VaePass::Decode, decode_fixed, lh, lw, f);
        let encode_bytes = if needs_encode {
            encode_fixed + vae.working_bytes(VaePass::Encode, n, ph, pw, encode)
        } else {
            0
        };
        let decode_bytes = decode_fixed + vae.working_bytes(VaePass::Decode, n, lh, lw, decode);

        // The latent tiles: every candidate size with its memory and work per step.
        let work = |th: usize, tw: usize| -> f64 {
            let ctx = 77;
            let (ul, uq) = crate::plan::unet_flops(self.unet.config(), th, tw, ctx, false);
            let (al, aq) = crate::plan::unet_flops(&self.adaptor.config().body, th, tw, ctx, true);
            n_unet as f64 * (ul + uq) + n_ad as f64 * (al + aq)
        };
        let overlap = |t: usize| opts.tile_overlap.min(t / 2);
        let candidate = |t: usize| -> Result<(crate::tiling::TilePlan, u64, f64)> {
            let mut tp = crate::tiling::TilePlan::new(lh, lw, t, overlap(t), m)?;
            let bytes = denoise_fixed + self.step_bytes(tp.tile.0, tp.tile.1, n_unet, n_ad);
            tp.estimated_bytes = with_input(bytes);
            let flops = tp.len() as f64 * work(tp.tile.0, tp.tile.1);
            Ok((tp, bytes, flops))
        };
        let full = lh.max(lw);
        let whole = candidate(full)?;
        let smallest = candidate((4 * m).min(full))?;
        let too_small = || {
            let least = PhaseBytes {
                convert,
                encode: if needs_encode {
                    encode_fixed
                        + vae.working_bytes(
                            VaePass::Encode,
                            n,
                            ph,
                            pw,
                            vae_plan(VaePass::Encode, u64::MAX, ph, pw, 1),
                        )
                } else {
                    0
                },
                denoise: smallest.1,
                decode: decode_fixed
                    + vae.working_bytes(
                        VaePass::Decode,
                        n,
                        lh,
                        lw,
                        vae_plan(VaePass::Decode, u64::MAX, lh, lw, f),
                    ),
                finish,
            };
            let (need, phase) = least.peak();
            let need = with_input(need);
            let limit = match opts.memory_limit {
                MemoryLimit::Auto => format!(
                    "`auto` ({} MiB, three quarters of the memory available)",
                    cap >> 20
                ),
                _ => format!("{} MiB", cap >> 20),
            };
            Error::invalid_arg(
                "memory_limit",
                format!(
                    "a {w}×{h} image{} needs about {} MiB beyond the weights even with the smallest \
                     tiles (peak while {phase}); the limit is {limit}. Raise memory_limit to at \
                     least {} MiB (CLI --memory-limit, Python memory_limit=, C \
                     spire_restore_params.memory_limit), or \"unlimited\", or restore a smaller image",
                    if (ow, oh) != (w, h) {
                        format!(" (restored at {ow}×{oh})")
                    } else {
                        String::new()
                    },
                    need.div_ceil(1 << 20),
                    need.div_ceil(1 << 20),
                ),
            )
        };
        let (tiles, reason, step_bytes, step_flops) = match opts.tile_size {
            Some(t) => {
                let c = candidate(t)?;
                (c.0, TileReason::Asked, c.1, c.2)
            }
            None => {
                // Tiles of at least SPEED_MIN_TILE: the one with the least work that fits.
                let mut best: Option<(crate::tiling::TilePlan, u64, f64)> = None;
                let mut t = SPEED_MIN_TILE.div_ceil(m) * m;
                while t < full {
                    let c = candidate(t)?;
                    if fits(c.1) && best.as_ref().is_none_or(|b| c.2 < b.2) {
                        best = Some(c);
                    }
                    t += m;
                }
                let whole_fits = fits(whole.1);
                match best {
                    _ if whole_fits && best.as_ref().is_none_or(|b| b.2 * SPEED_MARGIN >= whole.2) => {
                        (whole.0.clone(), TileReason::Whole, whole.1, whole.2)
                    }
                    Some(b) if whole_fits => (b.0, TileReason::Speed, b.1, b.2),
                    Some(b) => (b.0, TileReason::Memory, b.1, b.2),
                    None => {
                        // Only smaller tiles fit: the largest of them (the fewest seams).
                        let mut t = (SPEED_MIN_TILE.min(full) / m) * m;
                        let mut found = None;
                        while t >= (4 * m).min(full).max(m) {
                            let c = candidate(t)?;
                            if fits(c.1) {
                                found = Some(c);
                                break;
                            }
                            t -= m;
                        }
                        match found {
                            Some(c) => (c.0, TileReason::Memory, c.1, c.2),
                            None => return Err(too_small()),
                        }
                    }
                }
            }
        };
        let phases = PhaseBytes {
            convert: with_input(convert),
            encode: if needs_encode { with_input(encode_bytes) } else { 0 },
            denoise: with_input(step_bytes),
            decode: with_input(decode_bytes),
            finish: with_input(finish),
        };
        if opts.tile_size.is_none() && opts.vae_tile_size.is_none() && phases.peak().0 > cap {
            return Err(too_small());
        }
        Ok(RunPlan {
            input: (w, h),
            output: (ow, oh),
            batch: n,
            latent: (lh, lw),
            tiles,
            reason,
            encode,
            decode,
            vae_factor: f,
            phases,
            input_bytes,
            budget,
            step_flops,
            whole_step_flops: whole.2,
        })
    }
}
