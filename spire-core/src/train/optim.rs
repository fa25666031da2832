//! AdamW with PyTorch's update rule and a state we can checkpoint, a linear warm-up to a
//! constant learning rate, and an exponential moving average of the weights.

use std::collections::{BTreeMap, HashMap};

use candle_core::{Tensor, Var};

use crate::error::Result;

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    /// Learning rate after warm-up.
    pub lr: f64,
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Steps of linear warm-up from 0 to `lr`.
    pub warmup_steps: usize,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
            warmup_steps: 0,
        }
    }
}

/// AdamW over named variables (torch.optim.AdamW's update, in the same order).
#[derive(Debug)]
pub struct AdamW {
    cfg: AdamWConfig,
    vars: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: usize,
}

impl AdamW {
    /// An optimiser for `vars` (name, variable), moments at zero.
    pub fn new(vars: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        let m = vars
            .iter()
            .map(|(_, v)| v.as_tensor().zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let v = m.clone();
        Ok(Self {
            cfg,
            vars,
            m,
            v,
            step: 0,
        })
    }

    /// Steps taken.
    pub fn step_count(&self) -> usize {
        self.step
    }

    /// The learning rate of the next step (linear warm-up, then constant).
    pub fn current_lr(&self) -> f64 {
        let w = self.cfg.warmup_steps;
        if w > 0 && self.step < w {
            self.cfg.lr * (self.step + 1) as f64 / w as f64
        } else {
            self.cfg.lr
        }
    }

    /// One update with the gradients by variable name (variables without a gradient are left
    /// alone).
    pub fn step(&mut self, grads: &HashMap<String, Tensor>) -> Result<()> {
        let lr = self.current_lr();
        self.step += 1;
        let t = self.step as i32;
        let c = &self.cfg;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        for (i, (name, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(name) else { continue };
            let p = var.as_tensor();
            let p = (p * (1.0 - lr * c.weight_decay))?;
            self.m[i] = ((&self.m[i] * c.beta1)? + (g * (1.0 - c.beta1))?)?;
            self.v[i] = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let denom = ((self.v[i].sqrt()? / bc2_sqrt)? + c.eps)?;
            let upd = (self.m[i].div(&denom)? * (lr / bc1))?;
            var.set(&(p - upd)?)?;
        }
        Ok(())
    }

    /// The state to checkpoint: moments by `m.`/`v.` + variable name.
    pub fn state(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            out.insert(format!("m.{name}"), self.m[i].clone());
            out.insert(format!("v.{name}"), self.v[i].clone());
        }
        out
    }

    /// Restores a checkpointed state.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>, step: usize) -> Result<()> {
        for (i, (name, _)) in self.vars.iter().enumerate() {
            if let (Some(m), Some(v)) = (state.get(&format!("m.{name}")), state.get(&format!("v.{name}"))) {
                self.m[i] = m.clone();
                self.v[i] = v.clone();
            } else {
                return Err(crate::Error::model_load(
                    "checkpoint",
                    format!("no optimiser state for `{name}`"),
                ));
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Exponential moving average of variables, with diffusers' `EMAModel` warm-up: the `k`-th
/// update folds in the current values with decay `d_k = min(d, k / (9 + k))` for `k ≥ 2` and
/// `d_1 = 0`, i.e. `ema ← d_k·ema + (1 − d_k)·w` (so `d = 0.999` is reached after about 9000
/// updates; before that the average spans roughly the last ninth of the run).
///
/// Without the warm-up (a constant `d` from the initial values) the average keeps a share
/// `d^(n−1)` of the *initialisation* (one warm-up step away) after `n` steps: 22 % after 1500
/// steps at `d = 0.999`, which cut a backbone's x₀ PSNR at t = 10 from 29.9 to 24.8 dB
/// (docs/builtin-model.md).
#[derive(Debug)]
pub struct Ema {
    decay: f64,
    warmup: bool,
    updates: usize,
    shadow: BTreeMap<String, Tensor>,
}

impl Ema {
    /// Starts from (a copy of) the current values.
    ///
    /// # Errors
    /// Tensor errors.
    pub fn new(vars: &[(String, Var)], decay: f64) -> Result<Self> {
        Ok(Self {
            decay,
            warmup: true,
            updates: 0,
            shadow: vars
                .iter()
                // A copy (own storage, not an alias of the variable), detached: a copy of a
                // variable records its source for backprop, and every update built on it
                // would chain to the previous average, keeping all of them alive (the
                // 2026-11-27 leak: ~45 MB a backbone step).
                .map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?.detach())))
                .collect::<Result<_>>()?,
        })
    }

    /// With `false`, the first update copies the weights and every later one uses the constant
    /// decay `d` (our EMA before 2026-11-27, which keeps a share `d^(n−1)` of the weights after
    /// the first step — the initialisation, one warm-up step away): only to reproduce weights
    /// trained that way.
    pub fn with_warmup(mut self, warmup: bool) -> Self {
        self.warmup = warmup;
        self
    }

    /// The decay of the `k`-th update (1-based), as diffusers' `EMAModel.get_decay` with
    /// `update_after_step = 0`, `use_ema_warmup = False`.
    pub fn decay_at(&self, k: usize) -> f64 {
        if k <= 1 {
            return 0.0;
        }
        if !self.warmup {
            return self.decay;
        }
        let step = (k - 1) as f64;
        ((1.0 + step) / (10.0 + step)).min(self.decay)
    }

    /// Folds in the current values.
    pub fn update(&mut self, vars: &[(String, Var)]) -> Result<()> {
        self.updates += 1;
        let d = self.decay_at(self.updates);
        for (k, v) in vars {
            if let Some(s) = self.shadow.get_mut(k) {
                *s = ((&*s * d)? + (v.as_tensor().detach() * (1.0 - d))?)?.detach();
            }
        }
        Ok(())
    }

    /// The averaged values.
    pub fn tensors(&self) -> &BTreeMap<String, Tensor> {
        &self.shadow
    }

    /// Replaces the averaged values after `updates` steps (resume).
    pub fn load(&mut self, t: &HashMap<String, Tensor>, updates: usize) {
        self.updates = updates;
        for (k, s) in self.shadow.iter_mut() {
            if let Some(v) = t.get(&format!("ema.{k}")) {
                *s = v.detach();
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn scalar(v: f64) -> Vec<(String, Var)> {
        vec![(
            "w".to_string(),
            Var::new(&[v], &candle_core::Device::Cpu).unwrap(),
        )]
    }

    fn value(e: &Ema) -> f64 {
        e.tensors()["w"].to_vec1::<f64>().unwrap()[0]
    }

    #[test]
    fn ema_keeps_no_history_and_no_alias() {
        // The average must not record how it was computed (each update would keep the
        // previous average alive through the backprop graph: memory grows with every step)
        // and must not share storage with the variable (it would follow the raw weights).
        let vars = scalar(3.0);
        let mut e = Ema::new(&vars, 0.9).unwrap();
        assert!(
            !e.tensors()["w"].track_op(),
            "the initial average tracks its source"
        );
        for _ in 0..3 {
            e.update(&vars).unwrap();
            assert!(!e.tensors()["w"].track_op(), "the average records its history");
        }
        vars[0]
            .1
            .set(&Tensor::new(&[5f64], &candle_core::Device::Cpu).unwrap())
            .unwrap();
        assert_eq!(value(&e), 3.0, "the average moved with the variable");
    }

    #[test]
    fn ema_matches_diffusers_ema_model() {
        // diffusers 0.42.1: EMAModel([p], decay=0.9) on p = 100, then p = k and ema.step for
        // k = 1..20 gives shadow 18.000000099850173.
        let vars = scalar(100.0);
        let mut e = Ema::new(&vars, 0.9).unwrap();
        for k in 1..=20 {
            vars[0]
                .1
                .set(&Tensor::new(&[k as f64], &candle_core::Device::Cpu).unwrap())
                .unwrap();
            e.update(&vars).unwrap();
        }
        assert!((value(&e) - 18.000000099850173).abs() < 1e-9, "{}", value(&e));
    }

    /// The average after 1500 updates at d = 0.999 whose first sees 100 (the weights after one
    /// step, close to the initialisation) and the other 1499 see 1.
    fn after_100_then_1(warmup: bool) -> f64 {
        let vars = scalar(100.0);
        let mut e = Ema::new(&vars, 0.999).unwrap().with_warmup(warmup);
        e.update(&vars).unwrap();
        vars[0]
            .1
            .set(&Tensor::new(&[1f64], &candle_core::Device::Cpu).unwrap())
            .unwrap();
        for _ in 1..1500 {
            e.update(&vars).unwrap();
        }
        value(&e)
    }

    #[test]
    fn ema_forgets_the_initialisation() {
        // With the warm-up the 100 is forgotten (diffusers 0.42.1 gives 1.0 to 1e-9 here); a
        // constant decay would keep 0.999^1499 ≈ 22 % of it (23.0, the next test).
        let v = after_100_then_1(true);
        assert!((v - 1.0).abs() < 1e-9, "{v}");
    }

    #[test]
    fn ema_without_warmup_keeps_the_old_constant_decay() {
        let keep = 0.999f64.powi(1499);
        let v = after_100_then_1(false);
        assert!((v - (keep * 100.0 + (1.0 - keep))).abs() < 1e-9, "{v}");
    }

    #[test]
    fn ema_resumes_with_its_update_count() {
        let vars = scalar(3.0);
        let mut e = Ema::new(&vars, 0.999).unwrap();
        let saved: HashMap<String, Tensor> = [(
            "ema.w".to_string(),
            Tensor::new(&[2f64], &candle_core::Device::Cpu).unwrap(),
        )]
        .into();
        e.load(&saved, 500);
        e.update(&vars).unwrap();
        // Update 501 has decay 501/510 (the warm-up reaches 0.999 after about 9000 updates).
        let d = 501.0 / 510.0;
        assert!((value(&e) - (d * 2.0 + (1.0 - d) * 3.0)).abs() < 1e-12);
    }
}
