//! Guidance (stage 2 and the prediction of stage 4): which passes of the adaptor and the
//! backbone a step runs, the prompts they need encoded, and how their predictions combine
//! (SPIRE.md §2.4):
//!
//! ```text
//! ε̂ = ε(∅_r, ∅_s) + w_r·[ε(c_r, ∅_s) − ε(∅_r, ∅_s)] + w_s·[ε(c_r, c_s) − ε(c_r, ∅_s)]
//!   = (1 − w_r)·ε(∅_r, ∅_s) + (w_r − w_s)·ε(c_r, ∅_s) + w_s·ε(c_r, c_s)
//! ```
//!
//! Passes whose coefficient vanishes are skipped and passes whose prompts are equal merged, so
//! a blind prompt without a caption runs one pass whatever the weights.

use candle_core::{DType, Tensor};

use super::Inner;
use crate::error::{Error, Result};
use crate::model::{Control, Injection};
use crate::options::RestoreOptions;

/// The model pieces one restoration pass needs, by reference.
pub(super) struct Passes {
    /// Distinct restoration contexts the adaptor runs with (index into `r_ctx`).
    pub(super) r_used: Vec<usize>,
    /// (restoration context, semantic context, coefficient) of each backbone pass.
    pub(super) passes: Vec<(usize, usize, f64)>,
}

/// The guidance passes: coefficients of ε(∅_r,∅_s), ε(c_r,∅_s), ε(c_r,c_s), with equal prompts
/// merged and vanishing terms dropped.
pub(super) fn plan_passes(w_r: f64, w_s: f64, r_same: bool, s_same: bool) -> Passes {
    let mut acc: Vec<((usize, usize), f64)> = Vec::new();
    for ((r, s), c) in [((0, 0), 1.0 - w_r), ((1, 0), w_r - w_s), ((1, 1), w_s)] {
        let key = (if r_same { 0 } else { r }, if s_same { 0 } else { s });
        match acc.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v += c,
            None => acc.push((key, c)),
        }
    }
    let passes: Vec<(usize, usize, f64)> = acc
        .into_iter()
        .filter(|(_, c)| c.abs() > 1e-12)
        .map(|((r, s), c)| (r, s, c))
        .collect();
    let mut r_used: Vec<usize> = passes.iter().map(|p| p.0).collect();
    r_used.dedup();
    r_used.sort_unstable();
    r_used.dedup();
    Passes { r_used, passes }
}

/// The passes of a call with `opts`.
pub(super) fn passes_for(opts: &RestoreOptions) -> Passes {
    plan_passes(
        opts.restoration_guidance,
        opts.semantic_guidance,
        opts.restoration_prompt.text() == opts.restoration_null_prompt,
        opts.semantic_prompt == opts.negative_prompt,
    )
}

/// Stage 2's output: the passes and the encoded prompts, batched as the networks take them.
pub(super) struct Prompts {
    /// The guidance passes.
    pub(super) plan: Passes,
    /// The adaptor's context and pooled embedding: one block of `n` per distinct restoration
    /// context.
    pub(super) adaptor_ctx: (Tensor, Tensor),
    /// The backbone's context: one block of `n` per pass.
    pub(super) unet_ctx: Tensor,
}

impl Inner {
    /// `text` through the adaptor's text encoder (the backbone's unless the model has a
    /// dedicated restoration-prompt encoder): the `[1, 77, hidden]` embedding and the pooled one.
    pub(super) fn encode_restoration_pooled(&self, text: &str) -> Result<(Tensor, Tensor)> {
        let stack = self.restoration_text.as_ref().unwrap_or(&self.text);
        stack.encode_pooled(text, &self.device, self.dtype)
    }

    /// Stage 2: encodes the prompts the passes need — `c_r` and `∅_r` with the adaptor's text
    /// encoder, `c_s` and `∅_s` with the backbone's — each once, repeated for `n` images.
    pub(super) fn encode_prompts(&self, opts: &RestoreOptions, n: usize) -> Result<Prompts> {
        let plan = passes_for(opts);
        let c_r = opts.restoration_prompt.text();
        // Index 0 is the null prompt, 1 the prompt.
        let mut r_ctx: Vec<Option<Tensor>> = vec![None, None];
        let mut r_pooled: Vec<Option<Tensor>> = vec![None, None];
        let mut s_ctx: Vec<Option<Tensor>> = vec![None, None];
        for &(r, s, _) in &plan.passes {
            if r_ctx[r].is_none() {
                let text = if r == 0 {
                    &opts.restoration_null_prompt
                } else {
                    &c_r
                };
                let (hidden, pooled) = self.encode_restoration_pooled(text)?;
                r_ctx[r] = Some(hidden);
                r_pooled[r] = Some(pooled);
            }
            if s_ctx[s].is_none() {
                let text = if s == 0 {
                    &opts.negative_prompt
                } else {
                    &opts.semantic_prompt
                };
                s_ctx[s] = Some(self.text.encode(text, &self.device, self.dtype)?);
            }
        }
        let ctx = |v: &[Option<Tensor>], i: usize| -> Result<Tensor> {
            let t = v[i]
                .as_ref()
                .ok_or_else(|| Error::Internal("context not encoded".into()))?;
            Ok(Tensor::cat(&vec![t; n], 0)?)
        };
        // Adaptor batch: one block of n per distinct restoration context (and its pooled
        // embedding, for an adaptor with a prompt embedding).
        let per_r = |v: &[Option<Tensor>]| -> Result<Tensor> {
            Ok(Tensor::cat(
                &plan
                    .r_used
                    .iter()
                    .map(|&r| ctx(v, r))
                    .collect::<Result<Vec<_>>>()?,
                0,
            )?)
        };
        let adaptor_ctx = (per_r(&r_ctx)?, per_r(&r_pooled)?);
        let unet_ctx = Tensor::cat(
            &plan
                .passes
                .iter()
                .map(|&(_, s, _)| ctx(&s_ctx, s))
                .collect::<Result<Vec<_>>>()?,
            0,
        )?;
        Ok(Prompts {
            plan,
            adaptor_ctx,
            unet_ctx,
        })
    }

    /// One guided prediction for latents `x_in` (`[n, c, h, w]`, the model's dtype) at
    /// timestep `t`: the adaptor once per distinct restoration context, the backbone once per
    /// pass, in one batch each, combined with the plan's coefficients. Returns f32.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn predict(
        &self,
        x_in: &Tensor,
        t: f32,
        hint: &Tensor,
        adaptor_ctx: &(Tensor, Tensor),
        unet_ctx: &Tensor,
        plan: &Passes,
        n: usize,
        scale: f64,
    ) -> Result<Tensor> {
        let n_r = plan.r_used.len();
        let x_adaptor = if n_r > 1 {
            Tensor::cat(&vec![x_in; n_r], 0)?
        } else {
            x_in.clone()
        };
        let control = self.adaptor.forward(
            &x_adaptor,
            &[t],
            &adaptor_ctx.0,
            Some(&adaptor_ctx.1),
            hint,
            scale,
        )?;
        let control = expand_control(&control, plan, n)?;
        let x_unet = if plan.passes.len() > 1 {
            Tensor::cat(&vec![x_in; plan.passes.len()], 0)?
        } else {
            x_in.clone()
        };
        let out = self
            .unet
            .forward(&x_unet, &[t], unet_ctx, Some(&control))?
            .to_dtype(DType::F32)?;
        let mut eps: Option<Tensor> = None;
        for (p, &(_, _, c)) in plan.passes.iter().enumerate() {
            let term = (out.narrow(0, p * n, n)? * c)?;
            eps = Some(match eps {
                Some(e) => (e + term)?,
                None => term,
            });
        }
        eps.ok_or_else(|| Error::Internal("no guidance pass".into()))
    }
}

/// The adaptor ran once per distinct restoration context (`n` images each); the backbone runs
/// once per pass. Repeats each pass's block of the adaptor output in pass order.
fn expand_control(control: &Control, plan: &Passes, n: usize) -> Result<Control> {
    if plan.passes.len() == 1 && plan.r_used.len() == 1 {
        return Ok(control.clone());
    }
    let pick = |t: &Tensor| -> Result<Tensor> {
        let parts: Vec<Tensor> = plan
            .passes
            .iter()
            .map(|&(r, _, _)| {
                let k = plan.r_used.iter().position(|&x| x == r).unwrap_or(0);
                t.narrow(0, k * n, n)
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Tensor::cat(&parts, 0)?)
    };
    let map = |inj: &Injection| -> Result<Injection> {
        Ok(match inj {
            Injection::Add(r) => Injection::Add(pick(r)?),
            Injection::Modulate { gamma, beta } => Injection::Modulate {
                gamma: pick(gamma)?,
                beta: pick(beta)?,
            },
        })
    };
    Ok(Control {
        down: control.down.iter().map(map).collect::<Result<_>>()?,
        mid: control.mid.as_ref().map(map).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coefs(p: &Passes) -> Vec<(usize, usize, f64)> {
        p.passes.clone()
    }

    #[test]
    fn guidance_plans() {
        // No guidance: one pass with both prompts.
        assert_eq!(coefs(&plan_passes(1.0, 1.0, false, false)), vec![(1, 1, 1.0)]);
        // Only semantic guidance: two passes sharing the adaptor context.
        let p = plan_passes(1.0, 3.0, false, false);
        assert_eq!(coefs(&p), vec![(1, 0, -2.0), (1, 1, 3.0)]);
        assert_eq!(p.r_used, vec![1]);
        // Both: three passes, two adaptor contexts.
        let p = plan_passes(2.0, 3.0, false, false);
        assert_eq!(coefs(&p), vec![(0, 0, -1.0), (1, 0, -1.0), (1, 1, 3.0)]);
        assert_eq!(p.r_used, vec![0, 1]);
        // Blind prompt equal to the null prompt and no caption: one pass whatever the weights.
        assert_eq!(coefs(&plan_passes(4.0, 7.0, true, true)), vec![(0, 0, 1.0)]);
        // Classifier-free guidance as diffusers (c_r = c_s, both null prompts equal).
        assert_eq!(
            coefs(&plan_passes(5.0, 5.0, false, false)),
            vec![(0, 0, -4.0), (1, 1, 5.0)]
        );
    }
}
