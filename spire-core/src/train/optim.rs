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

/// Exponential moving average of variables: `ema ← d·ema + (1 − d)·w` after each step.
#[derive(Debug)]
pub struct Ema {
    decay: f64,
    shadow: BTreeMap<String, Tensor>,
}

impl Ema {
    /// Starts from the current values.
    pub fn new(vars: &[(String, Var)], decay: f64) -> Self {
        Self {
            decay,
            shadow: vars
                .iter()
                .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
                .collect(),
        }
    }

    /// Folds in the current values.
    pub fn update(&mut self, vars: &[(String, Var)]) -> Result<()> {
        for (k, v) in vars {
            if let Some(s) = self.shadow.get_mut(k) {
                *s = ((&*s * self.decay)? + (v.as_tensor().detach() * (1.0 - self.decay))?)?;
            }
        }
        Ok(())
    }

    /// The averaged values.
    pub fn tensors(&self) -> &BTreeMap<String, Tensor> {
        &self.shadow
    }

    /// Replaces the averaged values (resume).
    pub fn load(&mut self, t: &HashMap<String, Tensor>) {
        for (k, s) in self.shadow.iter_mut() {
            if let Some(v) = t.get(&format!("ema.{k}")) {
                *s = v.clone();
            }
        }
    }
}
