//! Trainable variables with seeded initialisation.
//!
//! candle's `VarMap` initialises with candle's unseeded CPU `randn`; training must be
//! deterministic for a seed, so [`VarStore`] is our own `VarBuilder` backend: each variable is
//! created once, from a tensor supplied by an optional source (e.g. the backbone's weights for
//! `from_unet`), else from its initialisation hint drawn from a Philox stream keyed by the seed
//! and the variable's name.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use crate::error::{Error, Result};

type Source = Arc<dyn Fn(&str) -> Option<Tensor> + Send + Sync>;

/// Named trainable variables.
#[derive(Clone)]
pub struct VarStore {
    vars: Arc<Mutex<BTreeMap<String, Var>>>,
    seed: u64,
    source: Option<Source>,
    device: Device,
}

impl std::fmt::Debug for VarStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VarStore")
            .field("vars", &self.len())
            .field("seed", &self.seed)
            .finish()
    }
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl VarStore {
    /// An empty store whose new variables are initialised from `seed`.
    pub fn new(seed: u64, device: &Device) -> Self {
        Self {
            vars: Arc::default(),
            seed,
            source: None,
            device: device.clone(),
        }
    }

    /// New variables whose name `source` knows start from that tensor (`from_unet`).
    pub fn with_source(mut self, source: impl Fn(&str) -> Option<Tensor> + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// A `VarBuilder` creating (or reusing) variables in this store.
    pub fn var_builder(&self) -> VarBuilder<'static> {
        self.var_builder_as(DType::F32)
    }

    /// A `VarBuilder` whose tensors are the variables cast to `dtype` (the variables stay f32):
    /// a model built from it computes in `dtype` and its gradients reach the f32 variables.
    /// The casts are taken when the model is built, so a mixed-precision model is rebuilt
    /// after each optimizer step.
    pub fn var_builder_as(&self, dtype: DType) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, self.device.clone())
    }

    /// Number of variables.
    pub fn len(&self) -> usize {
        lock(&self.vars).len()
    }

    /// Whether there are no variables.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total number of scalar parameters.
    pub fn num_params(&self) -> usize {
        lock(&self.vars).values().map(|v| v.elem_count()).sum()
    }

    /// The variables, sorted by name.
    pub fn vars(&self) -> Vec<(String, Var)> {
        lock(&self.vars)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// One variable.
    pub fn get(&self, name: &str) -> Option<Var> {
        lock(&self.vars).get(name).cloned()
    }

    /// Detached copies of the current values (for inference models and export).
    pub fn tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        Ok(lock(&self.vars)
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
            .collect())
    }

    /// Saves the values as safetensors (f32, or f16 with `half`).
    pub fn save(&self, path: &Path, half: bool) -> Result<()> {
        let t = self.tensors()?;
        let dt = if half { DType::F16 } else { DType::F32 };
        let conv: std::collections::HashMap<String, Tensor> = t
            .into_iter()
            .map(|(k, v)| Ok((k, v.to_dtype(dt)?)))
            .collect::<Result<_>>()?;
        crate::io::save_tensors(path, &conv)
    }

    /// Overwrites variables from a safetensors file (every variable must be present with its
    /// shape).
    pub fn load(&self, path: &Path) -> Result<()> {
        let t = candle_core::safetensors::load(path, &self.device)
            .map_err(|e| Error::model_load(path, format!("cannot read checkpoint: {e}")))?;
        for (k, v) in lock(&self.vars).iter() {
            let src = t
                .get(k)
                .ok_or_else(|| Error::model_load(path, format!("missing tensor `{k}`")))?;
            if src.dims() != v.dims() {
                return Err(Error::model_load(
                    path,
                    format!("tensor `{k}` has shape {:?}, expected {:?}", src.dims(), v.dims()),
                ));
            }
            v.set(&src.to_dtype(DType::F32)?)?;
        }
        Ok(())
    }

    fn init(&self, shape: &Shape, name: &str, hint: Init) -> candle_core::Result<Tensor> {
        let dims = shape.dims();
        let fan_in: usize = if dims.len() > 1 {
            dims[1..].iter().product()
        } else {
            dims.first().copied().unwrap_or(1)
        };
        let seed = self.seed ^ fnv1a(name);
        // Drawn on the CPU (our seeded generator), then moved: the same values on every device.
        let cpu = Device::Cpu;
        let t = match hint {
            Init::Const(v) => (Tensor::ones(shape, DType::F32, &cpu)? * v)?,
            Init::Randn { mean, stdev } => ((crate::rng::randn(seed, shape, &cpu)? * stdev)? + mean)?,
            Init::Uniform { lo, up } => {
                let n = shape.elem_count();
                let mut rng = crate::rng::Rng::new(seed);
                let v: Vec<f32> = (0..n).map(|_| rng.range(lo, up) as f32).collect();
                Tensor::from_vec(v, shape, &cpu)?
            }
            Init::Kaiming { .. } => {
                let std = (2.0 / fan_in.max(1) as f64).sqrt();
                (crate::rng::randn(seed, shape, &cpu)? * std)?
            }
        };
        t.to_device(&self.device)
    }
}

impl SimpleBackend for VarStore {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let mut vars = lock(&self.vars);
        if let Some(v) = vars.get(name) {
            if v.shape() != &s {
                candle_core::bail!(
                    "variable `{name}` exists with shape {:?}, requested {:?}",
                    v.dims(),
                    s.dims()
                );
            }
            // A differentiable cast: a builder of another dtype (bf16 mixed precision) reads
            // the current f32 master weights, and gradients flow back to them.
            return v.as_tensor().to_dtype(dtype)?.to_device(dev);
        }
        let from_source = self.source.as_ref().and_then(|f| f(name));
        let t = match from_source {
            Some(t) if t.shape() == &s => t.to_dtype(DType::F32)?.to_device(&self.device)?,
            _ => self.init(&s, name, h)?,
        };
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().to_dtype(dtype)?.to_device(dev)?;
        vars.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> candle_core::Result<Tensor> {
        lock(&self.vars)
            .get(name)
            .map(|v| v.as_tensor().clone())
            .ok_or_else(|| candle_core::Error::Msg(format!("no variable `{name}`")))
    }

    fn contains_tensor(&self, name: &str) -> bool {
        lock(&self.vars).contains_key(name) || self.source.as_ref().is_some_and(|f| f(name).is_some())
    }
}
