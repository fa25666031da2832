//! The training loop: configuration (a JSON recipe), batches made on the fly, gradient
//! accumulation, AdamW with warm-up, EMA, checkpoint and resume, validation images, progress
//! events, and the export of a loadable model folder.
//!
//! Two modes:
//! - `backbone`: a small UNet and CLIP text encoder from scratch on clean crops with captions
//!   (caption dropout for classifier-free guidance), over a pixel-shuffle autoencoder;
//! - `adaptor`: the SPIRE adaptor (and optionally a dedicated restoration-prompt encoder) on a
//!   frozen backbone, with pairs from the degradation pipelines and SPIRE.md §5 prompt dropout.
//!
//! Every random draw comes from Philox streams keyed by the seed and the step, so a run is
//! deterministic for its seed and a resumed run continues exactly where the checkpoint was.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::data::Dataset;
use super::optim::{AdamW, AdamWConfig, Ema};
use super::step::{adaptor_loss_from, backbone_loss};
use crate::degrade::{self, ops, ParamConfig, RealEsrganConfig, Rgb};
use crate::error::{Error, Result};
use crate::model::adaptor::{Fusion, HintMode};
use crate::model::config::{ClipTextConfig, Json, UNetConfig};
use crate::model::vars::VarStore;
use crate::model::{
    Adaptor, AdaptorConfig, Autoencoder, ClipTextModel, ClipTokenizer, LoadOptions, PixelShuffle,
    UNet2DConditionModel,
};
use crate::prompt::RestorationPrompt;
use crate::rng::{self, Rng, TrainNoise};
use crate::scheduler::SchedulerConfig;

/// What to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainMode {
    /// A UNet + text encoder from scratch.
    Backbone,
    /// The adaptor of an existing backbone.
    Adaptor,
}

fn default_true() -> bool {
    true
}

fn default_device() -> String {
    "cpu".into()
}

/// Mixed precision, named as in 🤗 Accelerate's `mixed_precision`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MixedPrecision {
    /// Everything in f32.
    #[default]
    No,
    /// f32 master weights, optimizer state and EMA; the forward and backward passes in bf16
    /// (the models are rebuilt from bf16 casts of the weights each step, and the gradients
    /// arrive in f32). Noising, targets and the loss stay f32.
    Bf16,
}

impl MixedPrecision {
    /// The dtype the models compute in.
    pub fn compute_dtype(self) -> DType {
        match self {
            MixedPrecision::No => DType::F32,
            MixedPrecision::Bf16 => DType::BF16,
        }
    }
}

fn default_one() -> usize {
    1
}
fn default_scale() -> (f64, f64) {
    (1.0, 1.0)
}
fn default_low_noise_below() -> usize {
    100
}
fn default_caption_dropout() -> f64 {
    0.1
}
fn default_prompt_dropout() -> f64 {
    0.2
}

/// A training recipe (JSON). Relative paths are relative to the working directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// `"backbone"` or `"adaptor"`.
    pub mode: TrainMode,
    /// Folder of training photos.
    pub data: PathBuf,
    /// `captions.tsv` (file, caption).
    #[serde(default)]
    pub captions: Option<PathBuf>,
    /// Photos to leave out (held out for evaluation).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Where the model folder (and checkpoints, logs, validation images) go.
    pub output: PathBuf,
    /// Adaptor mode: the backbone model folder (default: `output`).
    #[serde(default)]
    pub model: Option<PathBuf>,
    /// Adaptor mode: a single-file Stable Diffusion checkpoint (original layout, e.g.
    /// `v2-1_512-ema-pruned.safetensors`) as the backbone, instead of `model`. The output then
    /// holds `adaptor/`, `spire.json` and the config folder's `tokenizer/` and `scheduler/`:
    /// restore with `--checkpoint FILE --controlnet OUT/adaptor --config OUT`.
    #[serde(default)]
    pub checkpoint: Option<PathBuf>,
    /// With `checkpoint`: its config folder (`tokenizer/`, optionally `scheduler/` and
    /// diffusers configs), as [`crate::LoadOptions::config`].
    #[serde(default)]
    pub checkpoint_config: Option<PathBuf>,
    /// With `checkpoint`: what the backbone predicts (`epsilon`, `v_prediction`) where the
    /// file cannot say (SD 2.x defaults to `v_prediction`; SD 2.1-*base* needs `epsilon`).
    #[serde(default)]
    pub prediction_type: Option<String>,
    /// Backbone mode: the diffusers `UNet2DConditionModel` config.
    #[serde(default)]
    pub unet: Option<serde_json::Value>,
    /// Backbone mode: the transformers `CLIPTextModel` config.
    #[serde(default)]
    pub text_encoder: Option<serde_json::Value>,
    /// Backbone mode: the `scheduler_config.json`.
    #[serde(default)]
    pub scheduler: Option<serde_json::Value>,
    /// Backbone mode: the pixel-shuffle autoencoder's factor.
    #[serde(default)]
    pub pixel_shuffle_factor: Option<usize>,
    /// Backbone mode: the pixel-shuffle autoencoder's scaling factor (shift 0). Unset: unit
    /// variance of the training latents, as SD's scaling factor is chosen.
    #[serde(default)]
    pub latent_scale: Option<f64>,
    /// Backbone mode: the tokenizer folder to copy into the model.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Adaptor mode: `"latent"` (default) or `"pixel"`.
    #[serde(default)]
    pub hint_mode: Option<String>,
    /// Adaptor mode: `"modulation"` (default) or `"additive"`.
    #[serde(default)]
    pub fusion: Option<String>,
    /// Adaptor mode: add the restoration prompt's embedding to the adaptor's time embedding
    /// (`class_embed_type` "projection", see [`crate::model::Adaptor`]); default off.
    #[serde(default)]
    pub prompt_embedding: Option<bool>,
    /// Adaptor mode: config of a dedicated restoration-prompt encoder trained with the adaptor
    /// (default: the frozen backbone encoder reads `c_r`).
    #[serde(default)]
    pub restoration_text_encoder: Option<serde_json::Value>,
    /// Optimiser steps.
    pub steps: usize,
    /// Samples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimiser step.
    #[serde(default = "default_one")]
    pub grad_accum: usize,
    /// AdamW settings.
    #[serde(default)]
    pub optimizer: AdamWConfig,
    /// EMA decay of the exported weights (none: export the raw weights).
    #[serde(default)]
    pub ema_decay: Option<f64>,
    /// diffusers' EMA warm-up (decay `min(d, (1 + k)/(10 + k))`; see [`Ema`]). `false` keeps
    /// the constant decay from the initial weights of runs before 2026-11-27 — only to
    /// reproduce weights trained then (the built-in model's recipe). Default: true.
    #[serde(default = "default_true")]
    pub ema_warmup: bool,
    /// Crop size in pixels.
    pub crop: usize,
    /// Crops cover `crop × s` pixels of the photo, s uniform in this range.
    #[serde(default = "default_scale")]
    pub scale: (f64, f64),
    /// Seed of everything random.
    #[serde(default)]
    pub seed: u64,
    /// Backbone: probability of an empty caption.
    #[serde(default = "default_caption_dropout")]
    pub caption_dropout: f64,
    /// Adaptor: probability of replacing `c_r` by "Remove all degradation".
    #[serde(default = "default_prompt_dropout")]
    pub restoration_dropout: f64,
    /// Adaptor: probability of replacing `c_s` by "".
    #[serde(default = "default_prompt_dropout")]
    pub semantic_dropout: f64,
    /// Adaptor: probability of a Real-ESRGAN pair (blind) instead of a parameterized one.
    #[serde(default)]
    pub realesrgan_prob: f64,
    /// Fraction of the samples whose timestep is drawn uniformly below `low_noise_below`
    /// instead of over the whole schedule (default 0: uniform). With x₀-prediction the loss at
    /// low noise is tiny, and a small backbone trained on uniform timesteps never learns to
    /// pass detail through (docs/builtin-model.md).
    #[serde(default)]
    pub low_noise_fraction: f64,
    /// Upper bound (exclusive) of the low-noise timesteps. Default 100.
    #[serde(default = "default_low_noise_below")]
    pub low_noise_below: usize,
    /// Train only on timesteps below this (default: the whole schedule). Such a model restores
    /// from the input noised part-way (`strength` ≤ `max_timestep / T`), never from pure noise:
    /// give both stages the same bound and put the matching strength in `defaults`.
    #[serde(default)]
    pub max_timestep: Option<usize>,
    /// Adaptor: fraction of the samples noised from the degraded image's latent instead of the
    /// clean one (default 0), the prediction target still the clean image. A model that
    /// restores from the input noised part-way (`max_timestep`) starts from exactly such a
    /// latent; trained only on noised clean latents, whose low-noise timesteps already hold the
    /// answer, the adaptor learns to pass the latent through and to ignore the degraded image
    /// and the prompt (docs/builtin-model.md).
    #[serde(default)]
    pub degraded_start: f64,
    /// Adaptor mode: the restore options the model recommends, written to its `spire.json`
    /// (keys of [`ModelDefaults`](crate::ModelDefaults), e.g. `{"strength": 0.4}`).
    #[serde(default)]
    pub defaults: Option<serde_json::Value>,
    /// Steps between checkpoints (0: only at the end).
    #[serde(default)]
    pub checkpoint_every: usize,
    /// Steps between validation images (0: never).
    #[serde(default)]
    pub validate_every: usize,
    /// Steps between progress events.
    #[serde(default = "default_one")]
    pub log_every: usize,
    /// Validation photos (names in `data`, used even when excluded from training).
    #[serde(default)]
    pub validation: Vec<String>,
    /// The device to train on: `"cpu"` (default), `"cuda"`, `"cuda:N"`, `"metal"` (the CLI's
    /// `--device` overrides it). Every tensor of the run — models, optimizer state, EMA —
    /// lives there; the seeded noise is drawn on the CPU and moved, so a run is the same
    /// random stream on every device.
    #[serde(default = "default_device")]
    pub device: String,
    /// `"no"` (default) or `"bf16"` ([`MixedPrecision`]).
    #[serde(default)]
    pub mixed_precision: MixedPrecision,
}

impl TrainConfig {
    /// The recipe's `defaults`, checked.
    fn model_defaults(&self) -> Result<crate::ModelDefaults> {
        match &self.defaults {
            None => Ok(crate::ModelDefaults::default()),
            Some(d) => crate::ModelDefaults::from_spire_json(
                &serde_json::json!({ "defaults": d }).to_string(),
                "the recipe's `defaults`",
            ),
        }
    }

    /// Reads a JSON recipe.
    ///
    /// # Errors
    /// [`Error::Io`], or [`Error::InvalidArgument`] naming the bad field.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = crate::io::read_text(path)?;
        let cfg: Self = serde_json::from_str(&text)
            .map_err(|e| Error::invalid_arg("config", format!("{}: {e}", path.display())))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Load options for a single-file backbone on `device`.
    fn single_file_options(&self, device: &Device) -> Result<crate::LoadOptions> {
        let prediction_type = match self.prediction_type.as_deref() {
            None => None,
            Some(p) => Some(crate::scheduler::PredictionType::parse(p).ok_or_else(|| {
                Error::invalid_arg(
                    "prediction_type",
                    format!("`{p}` is not epsilon, v_prediction or sample"),
                )
            })?),
        };
        Ok(crate::LoadOptions {
            device: device.clone(),
            config: self.checkpoint_config.clone(),
            prediction_type,
            ..crate::LoadOptions::default()
        })
    }

    fn validate(&self) -> Result<()> {
        if self.steps == 0 || self.batch_size == 0 || self.grad_accum == 0 {
            return Err(Error::invalid_arg(
                "steps",
                "steps, batch_size and grad_accum must be at least 1",
            ));
        }
        if !(0.0..=1.0).contains(&self.low_noise_fraction) {
            return Err(Error::invalid_arg("low_noise_fraction", "must be in [0, 1]"));
        }
        if !(0.0..=1.0).contains(&self.degraded_start) {
            return Err(Error::invalid_arg("degraded_start", "must be in [0, 1]"));
        }
        if self.degraded_start > 0.0 && self.mode != TrainMode::Adaptor {
            return Err(Error::invalid_arg(
                "degraded_start",
                "applies to adaptor training only",
            ));
        }
        if self.prompt_embedding.is_some() && self.mode != TrainMode::Adaptor {
            return Err(Error::invalid_arg(
                "prompt_embedding",
                "applies to adaptor training only",
            ));
        }
        if self.low_noise_below == 0 {
            return Err(Error::invalid_arg("low_noise_below", "must be at least 1"));
        }
        // The name only: `train` opens the device once.
        crate::device::check_device(&self.device)?;
        if self.max_timestep == Some(0) {
            return Err(Error::invalid_arg("max_timestep", "must be at least 1"));
        }
        self.model_defaults()?;
        if self.crop < 8 {
            return Err(Error::invalid_arg("crop", "must be at least 8 pixels"));
        }
        if self.checkpoint.is_some() {
            if self.mode != TrainMode::Adaptor {
                return Err(Error::invalid_arg(
                    "checkpoint",
                    "applies to adaptor training only",
                ));
            }
            if self.model.is_some() {
                return Err(Error::invalid_arg(
                    "checkpoint",
                    "give `model` (a folder) or `checkpoint` (a single file), not both",
                ));
            }
            if self.checkpoint_config.is_none() {
                return Err(Error::invalid_arg(
                    "checkpoint_config",
                    "a single-file backbone needs its config folder (with `tokenizer/`)",
                ));
            }
        } else if self.checkpoint_config.is_some() || self.prediction_type.is_some() {
            let f = if self.checkpoint_config.is_some() {
                "checkpoint_config"
            } else {
                "prediction_type"
            };
            return Err(Error::invalid_arg(f, "applies with `checkpoint` only"));
        }
        self.single_file_options(&Device::Cpu)?;
        if self.mode == TrainMode::Backbone
            && (self.unet.is_none() || self.text_encoder.is_none() || self.tokenizer.is_none())
        {
            return Err(Error::invalid_arg(
                "unet",
                "backbone mode needs `unet`, `text_encoder` and `tokenizer`",
            ));
        }
        Ok(())
    }
}

/// A progress report of the training loop.
#[derive(Debug, Clone)]
pub struct TrainEvent {
    /// Optimiser steps done.
    pub step: usize,
    /// Optimiser steps in the run.
    pub total: usize,
    /// Mean loss since the previous event.
    pub loss: f64,
    /// Current learning rate.
    pub lr: f64,
    /// Steps per second since the run (or resume) started.
    pub steps_per_sec: f64,
    /// Estimated seconds left.
    pub eta_secs: f64,
    /// A note (checkpoint written, validation image, …).
    pub message: Option<String>,
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// The model folder.
    pub output: PathBuf,
    /// Trainable parameters.
    pub params: usize,
    /// Final mean loss (last 50 steps of this invocation; NaN when it ran none, e.g. a resume
    /// of a finished run, which only exports).
    pub final_loss: f64,
    /// Wall time of this invocation, seconds.
    pub seconds: f64,
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::Internal(e.to_string()))?;
    crate::io::write_atomic(path, text.as_bytes())
}

fn copy_dir(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst).map_err(|e| Error::io(dst, e))?;
    for e in std::fs::read_dir(src).map_err(|e| Error::io(src, e))? {
        let e = e.map_err(|e| Error::io(src, e))?;
        if e.path().is_file() {
            std::fs::copy(e.path(), dst.join(e.file_name())).map_err(|err| Error::io(e.path(), err))?;
        }
    }
    Ok(())
}

/// Planar crops → `[b, 3, h, w]` in [-1, 1], on `device`.
fn to_tensor(images: &[Rgb], device: &Device) -> Result<Tensor> {
    let (w, h) = (images[0].width, images[0].height);
    let mut v = Vec::with_capacity(images.len() * 3 * w * h);
    for i in images {
        v.extend(i.data.iter().map(|x| x * 2.0 - 1.0));
    }
    Ok(Tensor::from_vec(v, (images.len(), 3, h, w), device)?)
}

/// Tensors of `store` under `prefix.` with the prefix removed, as f32 safetensors.
fn save_prefixed(tensors: &BTreeMap<String, Tensor>, prefix: &str, path: &Path) -> Result<()> {
    let p = format!("{prefix}.");
    let sel: HashMap<String, Tensor> = tensors
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(&p).map(|s| (s.to_string(), v.clone())))
        .collect();
    crate::io::save_tensors(path, &sel)
}

struct Tokens {
    tok: ClipTokenizer,
}

impl Tokens {
    fn ids(&self, texts: &[String], device: &Device) -> Result<Tensor> {
        let mut v = Vec::new();
        for t in texts {
            v.extend(self.tok.encode(t)?);
        }
        let n = self.tok.max_len();
        Ok(Tensor::from_vec(v, (texts.len(), n), device)?)
    }
}

/// Runs a training recipe. `on_event` receives progress and returns `false` to stop early (a
/// checkpoint is written first).
///
/// # Errors
/// [`Error::Io`] / [`Error::ModelLoad`] for files, [`Error::InvalidArgument`] for a bad recipe,
/// [`Error::Cancelled`] if `on_event` stopped the run.
pub fn train(cfg: &TrainConfig, on_event: &mut dyn FnMut(&TrainEvent) -> bool) -> Result<TrainSummary> {
    cfg.validate()?;
    let device = crate::device::parse_device(&cfg.device)?;
    let t0 = Instant::now();
    let data = Dataset::from_folder(&cfg.data, cfg.captions.as_deref(), &cfg.exclude)?;
    std::fs::create_dir_all(&cfg.output).map_err(|e| Error::io(&cfg.output, e))?;
    let run = match cfg.mode {
        TrainMode::Backbone => Run::backbone(cfg, &data, &device)?,
        TrainMode::Adaptor => Run::adaptor(cfg, &device)?,
    };
    let params = run.store.num_params();
    let mut opt = AdamW::new(run.store.vars(), cfg.optimizer)?;
    let tag = match cfg.mode {
        TrainMode::Backbone => "backbone",
        TrainMode::Adaptor => "adaptor",
    };
    let ckpt = cfg.output.join(format!("checkpoint-{tag}.safetensors"));
    let state_path = cfg.output.join(format!("train_state-{tag}.json"));
    let mut start = 0;
    let mut saved = None;
    if ckpt.is_file() && state_path.is_file() {
        let state: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&state_path).map_err(|e| Error::io(&state_path, e))?,
        )
        .map_err(|e| Error::model_load(&state_path, e.to_string()))?;
        start = state["step"].as_u64().unwrap_or(0) as usize;
        let t = candle_core::safetensors::load(&ckpt, &device)
            .map_err(|e| Error::model_load(&ckpt, e.to_string()))?;
        for (k, v) in run.store.vars() {
            let src = t
                .get(&format!("var.{k}"))
                .ok_or_else(|| Error::model_load(&ckpt, format!("missing `var.{k}`")))?;
            v.set(src)?;
        }
        opt.load_state(&t, start)?;
        saved = Some(t);
    }
    // The average starts from the (resumed) weights; a checkpoint written with EMA on carries
    // its average and update count, one written with EMA off starts a fresh average there.
    let mut ema = match cfg.ema_decay {
        Some(d) => Some(Ema::new(&run.store.vars(), d)?.with_warmup(cfg.ema_warmup)),
        None => None,
    };
    if let (Some(e), Some(t)) = (ema.as_mut(), saved.as_ref()) {
        if t.keys().any(|k| k.starts_with("ema.")) {
            e.load(t, start);
        }
    }
    let mut log = LossLog::open(&cfg.output.join(format!("loss-{tag}.csv")), start)?;
    let mut window = Vec::new();
    let mut recent = std::collections::VecDeque::new();
    let resumed_at = Instant::now();
    for step in start..cfg.steps {
        let mut acc: HashMap<String, Tensor> = HashMap::new();
        let mut step_loss = 0.0;
        for micro in 0..cfg.grad_accum {
            let key = (step * cfg.grad_accum + micro) as u64;
            let loss = run.loss(cfg, &data, key)?;
            step_loss += loss.to_scalar::<f32>()? as f64 / cfg.grad_accum as f64;
            let grads = (loss / cfg.grad_accum as f64)?.backward()?;
            for (name, var) in run.store.vars() {
                if let Some(g) = grads.get(var.as_tensor()) {
                    let g = g.detach();
                    let e = acc.remove(&name);
                    acc.insert(
                        name,
                        match e {
                            Some(prev) => (prev + g)?,
                            None => g,
                        },
                    );
                }
            }
        }
        if !step_loss.is_finite() {
            return Err(Error::Internal(format!(
                "loss became {step_loss} at step {step}; lower the learning rate"
            )));
        }
        let lr = opt.current_lr();
        opt.step(&acc)?;
        if let Some(e) = ema.as_mut() {
            e.update(&run.store.vars())?;
        }
        window.push(step_loss);
        recent.push_back(step_loss);
        if recent.len() > 50 {
            recent.pop_front();
        }
        log.write(step + 1, step_loss)?;
        let done = step + 1;
        let mut message = None;
        if cfg.checkpoint_every > 0 && done % cfg.checkpoint_every == 0 {
            save_checkpoint(&run.store, &opt, ema.as_ref(), &ckpt, &state_path, done)?;
            message = Some(format!("checkpoint at step {done}"));
        }
        if cfg.validate_every > 0 && done % cfg.validate_every == 0 {
            let weights = ema
                .as_ref()
                .map_or_else(|| run.store.tensors(), |e| Ok(e.tensors().clone()))?;
            let p = run.validate(cfg, &weights, done)?;
            message = Some(format!("validation image {}", p.display()));
        }
        if done % cfg.log_every.max(1) == 0 || done == cfg.steps || message.is_some() {
            let el = resumed_at.elapsed().as_secs_f64();
            let sps = (done - start) as f64 / el.max(1e-9);
            let ev = TrainEvent {
                step: done,
                total: cfg.steps,
                loss: window.iter().sum::<f64>() / window.len().max(1) as f64,
                lr,
                steps_per_sec: sps,
                eta_secs: (cfg.steps - done) as f64 / sps.max(1e-9),
                message,
            };
            window.clear();
            if !on_event(&ev) {
                save_checkpoint(&run.store, &opt, ema.as_ref(), &ckpt, &state_path, done)?;
                return Err(Error::Cancelled);
            }
        }
    }
    save_checkpoint(&run.store, &opt, ema.as_ref(), &ckpt, &state_path, cfg.steps)?;
    let weights = ema
        .as_ref()
        .map_or_else(|| run.store.tensors(), |e| Ok(e.tensors().clone()))?;
    run.export(cfg, &weights)?;
    Ok(TrainSummary {
        output: cfg.output.clone(),
        params,
        final_loss: if recent.is_empty() {
            f64::NAN
        } else {
            recent.iter().sum::<f64>() / recent.len() as f64
        },
        seconds: t0.elapsed().as_secs_f64(),
    })
}

fn save_checkpoint(
    store: &VarStore,
    opt: &AdamW,
    ema: Option<&Ema>,
    path: &Path,
    state: &Path,
    step: usize,
) -> Result<()> {
    let mut all: HashMap<String, Tensor> = HashMap::new();
    for (k, v) in store.tensors()? {
        all.insert(format!("var.{k}"), v);
    }
    for (k, v) in opt.state() {
        all.insert(k, v);
    }
    if let Some(e) = ema {
        for (k, v) in e.tensors() {
            all.insert(format!("ema.{k}"), v.clone());
        }
    }
    crate::io::save_tensors(path, &all)?;
    write_json(state, &serde_json::json!({ "step": step }))
}

struct LossLog {
    file: std::fs::File,
}

impl LossLog {
    fn open(path: &Path, start: usize) -> Result<Self> {
        // Keep the rows before `start` (a resume), drop any after.
        let mut kept = String::from("step,loss\n");
        if start > 0 {
            if let Ok(old) = std::fs::read_to_string(path) {
                for line in old.lines().skip(1) {
                    if line
                        .split(',')
                        .next()
                        .and_then(|s| s.parse::<usize>().ok())
                        .is_some_and(|s| s <= start)
                    {
                        kept.push_str(line);
                        kept.push('\n');
                    }
                }
            }
        }
        // The kept rows replace the file whole; new rows are appended after.
        crate::io::write_atomic(path, kept.as_bytes())?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(Self { file })
    }

    fn write(&mut self, step: usize, loss: f64) -> Result<()> {
        use std::io::Write;
        writeln!(self.file, "{step},{loss:.6}").map_err(|e| Error::io("loss.csv", e))
    }
}

/// The models of one run.
struct Run {
    /// Where every tensor of the run lives.
    device: Device,
    /// The dtype the models compute in ([`MixedPrecision::compute_dtype`]).
    compute: DType,
    store: VarStore,
    sched: SchedulerConfig,
    vae: Autoencoder,
    tokens: Tokens,
    kind: Kind,
}

#[allow(clippy::large_enum_variant)] // one per training run
enum Kind {
    Backbone {
        unet: UNet2DConditionModel,
        text: ClipTextModel,
    },
    Adaptor {
        unet: UNet2DConditionModel,
        text: ClipTextModel,
        adaptor: Adaptor,
        adaptor_cfg: AdaptorConfig,
        r_text: Option<(ClipTextModel, serde_json::Value)>,
        model_dir: PathBuf,
    },
}

impl Run {
    fn backbone(cfg: &TrainConfig, data: &Dataset, device: &Device) -> Result<Self> {
        let out = &cfg.output;
        let unet_cfg = cfg.unet.clone().unwrap_or_default();
        let text_cfg = cfg.text_encoder.clone().unwrap_or_default();
        let ucfg = UNetConfig::from_json(&Json::from_value(Path::new("unet"), &unet_cfg)?, false)?;
        let tcfg = ClipTextConfig::from_json(&Json::from_value(Path::new("text_encoder"), &text_cfg)?)?;
        let sched_json = cfg.scheduler.clone().unwrap_or_else(|| serde_json::json!({}));
        let sched = SchedulerConfig::from_json(&Json::from_value(Path::new("scheduler"), &sched_json)?)?;
        let tok_dir = cfg.tokenizer.clone().unwrap_or_default();
        let tokens = Tokens {
            tok: ClipTokenizer::from_dir(&tok_dir)?,
        };
        copy_dir(&tok_dir, &out.join("tokenizer"))?;
        write_json(&out.join("scheduler/scheduler_config.json"), &sched_json)?;
        // Latent scaling: unit variance of the training latents, as SD's scaling factor.
        let factor = cfg.pixel_shuffle_factor.unwrap_or(4);
        let ps = PixelShuffle {
            factor,
            scaling_factor: 1.0,
            shift_factor: 0.0,
        };
        let mut rng = Rng::new(rng::train_stream(cfg.seed, u64::MAX, TrainNoise::Probe));
        let probe: Vec<Rgb> = (0..64)
            .map(|_| data.sample(&mut rng, cfg.crop, cfg.scale).image)
            .collect();
        let z = ps.unshuffle(&to_tensor(&probe, device)?)?;
        let mean = z.mean_all()?.to_scalar::<f32>()? as f64;
        let std = ((z - mean)?.sqr()?.mean_all()?.to_scalar::<f32>()? as f64).sqrt();
        let (scaling, shift) = match cfg.latent_scale {
            Some(s) => (s, 0.0),
            None => (
                (1.0 / std.max(1e-3) * 1000.0).round() / 1000.0,
                (mean * 1000.0).round() / 1000.0,
            ),
        };
        let vae = PixelShuffle {
            factor,
            scaling_factor: scaling,
            shift_factor: shift,
        };
        write_json(
            &out.join("vae/config.json"),
            &serde_json::json!({"_class_name": "PixelShuffleAutoencoder", "factor": factor, "scaling_factor": scaling, "shift_factor": shift}),
        )?;
        write_json(&out.join("unet/config.json"), &unet_cfg)?;
        write_json(&out.join("text_encoder/config.json"), &text_cfg)?;
        let store = VarStore::new(cfg.seed, device);
        let vb = store.var_builder();
        let unet = UNet2DConditionModel::new(&ucfg, vb.pp("unet"))?;
        let text = ClipTextModel::new(&tcfg, vb.pp("text_encoder"))?;
        Ok(Self {
            device: device.clone(),
            compute: cfg.mixed_precision.compute_dtype(),
            store,
            sched,
            vae: Autoencoder::PixelShuffle(vae),
            tokens,
            kind: Kind::Backbone { unet, text },
        })
    }

    fn adaptor(cfg: &TrainConfig, device: &Device) -> Result<Self> {
        let dir = cfg.model.clone().unwrap_or_else(|| cfg.output.clone());
        let compute = cfg.mixed_precision.compute_dtype();
        // The frozen backbone computes in the run's dtype; the autoencoder stays f32 (as
        // diffusers' `force_upcast`: the latents are the targets).
        let lo = LoadOptions {
            device: device.clone(),
            ..LoadOptions::default()
        };
        let frozen = LoadOptions {
            dtype: compute,
            ..lo.clone()
        };
        let single = match &cfg.checkpoint {
            Some(path) => {
                let sfo = cfg.single_file_options(device)?;
                let sf = crate::model::SingleFile::load(
                    path,
                    &LoadOptions {
                        dtype: compute,
                        ..sfo.clone()
                    },
                )?;
                let vae = if compute == DType::F32 {
                    sf.vae
                } else {
                    crate::model::SingleFile::load(path, &sfo)?.vae
                };
                let sched = crate::model::load::single_file_scheduler(sf.generation, &sfo)?;
                let unet_w = crate::model::load::single_file_unet_tensors(path, &sfo)?;
                Some((
                    sf.unet,
                    Autoencoder::Kl(vae),
                    sf.text_encoder,
                    sf.tokenizer,
                    sched,
                    unet_w,
                ))
            }
            None => None,
        };
        let (unet, vae, text, tokens, sched, single_unet_w) = match single {
            Some((unet, vae, text, tok, sched, w)) => (unet, vae, text, Tokens { tok }, sched, Some(w)),
            None => (
                UNet2DConditionModel::from_dir(&dir.join("unet"), &frozen)?,
                Autoencoder::from_dir(&dir.join("vae"), &lo)?,
                ClipTextModel::from_dir(&dir.join("text_encoder"), &frozen)?,
                Tokens {
                    tok: ClipTokenizer::from_dir(&dir.join("tokenizer"))?,
                },
                SchedulerConfig::from_file(&dir.join("scheduler/scheduler_config.json"))?,
                None,
            ),
        };
        // A single-file backbone's tokenizer and scheduler live in its config folder.
        let dir = match &cfg.checkpoint_config {
            Some(c) if cfg.checkpoint.is_some() => c.clone(),
            _ => dir,
        };
        let hint = match cfg.hint_mode.as_deref().unwrap_or("latent") {
            "latent" => HintMode::Latent,
            "pixel" => HintMode::Pixel,
            o => {
                return Err(Error::invalid_arg(
                    "hint_mode",
                    format!("`{o}` is not latent or pixel"),
                ))
            }
        };
        let fusion = match cfg.fusion.as_deref().unwrap_or("modulation") {
            "modulation" => Fusion::Modulation,
            "additive" => Fusion::Additive,
            o => {
                return Err(Error::invalid_arg(
                    "fusion",
                    format!("`{o}` is not modulation or additive"),
                ))
            }
        };
        let mut acfg = AdaptorConfig::from_unet(unet.config(), hint, fusion, vae.latent_channels());
        acfg.prompt_embedding = cfg.prompt_embedding.unwrap_or(false);
        let r_text_cfg = cfg.restoration_text_encoder.clone();
        let r_tcfg = match &r_text_cfg {
            Some(v) => Some(ClipTextConfig::from_json(&Json::from_value(
                Path::new("restoration_text_encoder"),
                v,
            )?)?),
            None => None,
        };
        if let Some(c) = &r_tcfg {
            acfg.body.cross_attention_dim = vec![c.hidden_size; acfg.body.block_out_channels.len()];
        }
        let unet_w = match single_unet_w {
            Some(w) => w,
            None => {
                let files =
                    crate::weights::component_files(&dir.join("unet"), &["diffusion_pytorch_model"], None)?;
                let mut unet_w: HashMap<String, Tensor> = HashMap::new();
                for f in files {
                    unet_w.extend(
                        candle_core::safetensors::load(&f, device)
                            .map_err(|e| Error::model_load(&f, e.to_string()))?,
                    );
                }
                unet_w
            }
        };
        let mut unet_w = unet_w;
        if r_tcfg.is_some() {
            // The body's cross-attention reads a different context: those weights start fresh.
            unet_w.retain(|k, _| !k.contains(".attn2.to_k.") && !k.contains(".attn2.to_v."));
        }
        let store = VarStore::new(cfg.seed, device).with_source(move |k| unet_w.get(k).cloned());
        let vb = store.var_builder();
        let adaptor = Adaptor::new(&acfg, vb.clone())?;
        let r_text = match (r_tcfg, r_text_cfg) {
            (Some(c), Some(j)) => Some((ClipTextModel::new(&c, vb.pp("restoration_text_encoder"))?, j)),
            _ => None,
        };
        Ok(Self {
            device: device.clone(),
            compute,
            store,
            sched,
            vae,
            tokens,
            kind: Kind::Adaptor {
                unet,
                text,
                adaptor,
                adaptor_cfg: acfg,
                r_text,
                model_dir: dir,
            },
        })
    }

    fn latents(&self, images: &[Rgb]) -> Result<Tensor> {
        Ok(self
            .vae
            .scale_latents(&self.vae.encode_mean(&to_tensor(images, &self.device)?)?)?)
    }

    /// The trained models as they compute this step: the f32 models themselves, or (mixed
    /// precision) models rebuilt from casts of the current weights.
    fn compute_builder(&self) -> Option<VarBuilder<'static>> {
        (self.compute != DType::F32).then(|| self.store.var_builder_as(self.compute))
    }

    /// The loss of micro-batch `key`.
    fn loss(&self, cfg: &TrainConfig, data: &Dataset, key: u64) -> Result<Tensor> {
        let mut rng = Rng::new(rng::train_stream(cfg.seed, key, TrainNoise::Data));
        let b = cfg.batch_size;
        let t_max = cfg
            .max_timestep
            .unwrap_or(usize::MAX)
            .min(self.sched.num_train_timesteps) as i64
            - 1;
        let low_max = (cfg.low_noise_below as i64 - 1).min(t_max);
        let ts: Vec<usize> = (0..b)
            .map(|_| {
                let t = rng.int(0, t_max);
                // Drawn only when enabled, so recipes without it keep their random streams.
                if cfg.low_noise_fraction > 0.0 && rng.chance(cfg.low_noise_fraction) {
                    rng.int(0, low_max) as usize
                } else {
                    t as usize
                }
            })
            .collect();
        match &self.kind {
            Kind::Backbone { unet, text, .. } => {
                let mut imgs = Vec::with_capacity(b);
                let mut caps = Vec::with_capacity(b);
                for _ in 0..b {
                    let s = data.sample(&mut rng, cfg.crop, cfg.scale);
                    caps.push(if rng.chance(cfg.caption_dropout) {
                        String::new()
                    } else {
                        s.caption
                    });
                    imgs.push(s.image);
                }
                let x0 = self.latents(&imgs)?;
                let noise = rng::randn(
                    rng::train_stream(cfg.seed, key, TrainNoise::Diffusion),
                    x0.shape(),
                    &self.device,
                )?;
                let cast = match self.compute_builder() {
                    Some(vb) => Some((
                        UNet2DConditionModel::new(unet.config(), vb.pp("unet"))?,
                        ClipTextModel::new(text.config(), vb.pp("text_encoder"))?,
                    )),
                    None => None,
                };
                let (unet, text) = cast.as_ref().map_or((unet, text), |(u, t)| (u, t));
                let ctx = text
                    .forward(&self.tokens.ids(&caps, &self.device)?)?
                    .last_hidden_state;
                backbone_loss(unet, &self.sched, &x0, &noise, &ts, &ctx)
            }
            Kind::Adaptor {
                unet,
                text,
                adaptor,
                r_text,
                ..
            } => {
                let mut clean = Vec::with_capacity(b);
                let mut degraded = Vec::with_capacity(b);
                let mut caps = Vec::with_capacity(b);
                let mut prompts = Vec::with_capacity(b);
                for _ in 0..b {
                    let s = data.sample(&mut rng, cfg.crop, cfg.scale);
                    let dseed = rng.fork();
                    let (y, p) = if rng.chance(cfg.realesrgan_prob) {
                        (
                            degrade::realesrgan(&s.image, dseed, &RealEsrganConfig::default())?,
                            RestorationPrompt::blind(),
                        )
                    } else {
                        degrade::parameterized(&s.image, dseed, &ParamConfig::default())?
                    };
                    let p = if rng.chance(cfg.restoration_dropout) {
                        RestorationPrompt::blind()
                    } else {
                        p
                    };
                    prompts.push(p.render());
                    caps.push(if rng.chance(cfg.semantic_dropout) {
                        String::new()
                    } else {
                        s.caption
                    });
                    clean.push(s.image);
                    degraded.push(y);
                }
                let x0 = self.latents(&clean)?;
                let noise = rng::randn(
                    rng::train_stream(cfg.seed, key, TrainNoise::Diffusion),
                    x0.shape(),
                    &self.device,
                )?;
                // Drawn only when enabled, so recipes without it keep their random streams.
                let from_degraded: Vec<bool> = if cfg.degraded_start > 0.0 {
                    (0..b).map(|_| rng.chance(cfg.degraded_start)).collect()
                } else {
                    vec![false; b]
                };
                let any_degraded = from_degraded.contains(&true);
                let y_lat = if adaptor.hint_mode() == HintMode::Latent || any_degraded {
                    Some(self.latents(&degraded)?)
                } else {
                    None
                };
                let hint = match (adaptor.hint_mode(), &y_lat) {
                    (HintMode::Latent, Some(z)) => z.clone(),
                    (HintMode::Latent, None) => {
                        return Err(Error::Internal("degraded latents missing".into()))
                    }
                    (HintMode::Pixel, _) => ((to_tensor(&degraded, &self.device)? + 1.0)? / 2.0)?,
                };
                // Per sample, the clean latent or the degraded one; `x0` itself when none is
                // degraded (the plain objective).
                let start = match &y_lat {
                    Some(z) if any_degraded => {
                        let mask: Vec<f32> =
                            from_degraded.iter().map(|&d| if d { 1.0 } else { 0.0 }).collect();
                        let mask = Tensor::from_vec(mask, (b, 1, 1, 1), &self.device)?;
                        ((&x0 + (z - &x0)?.broadcast_mul(&mask)?)?).detach()
                    }
                    _ => x0.clone(),
                };
                let cast = match self.compute_builder() {
                    Some(vb) => Some((
                        Adaptor::new(adaptor.config(), vb.clone())?,
                        match r_text {
                            Some((enc, _)) => Some(ClipTextModel::new(
                                enc.config(),
                                vb.pp("restoration_text_encoder"),
                            )?),
                            None => None,
                        },
                    )),
                    None => None,
                };
                let (adaptor, r_enc) = match &cast {
                    Some((a, r)) => (a, r.as_ref()),
                    None => (adaptor, r_text.as_ref().map(|(enc, _)| enc)),
                };
                let ctx_s = text
                    .forward(&self.tokens.ids(&caps, &self.device)?)?
                    .last_hidden_state;
                let ids_r = self.tokens.ids(&prompts, &self.device)?;
                let out_r = match r_enc {
                    Some(enc) => enc.forward(&ids_r)?,
                    None => text.forward(&ids_r)?,
                };
                adaptor_loss_from(
                    unet,
                    adaptor,
                    &self.sched,
                    &x0,
                    &start,
                    &noise,
                    &ts,
                    &ctx_s,
                    &out_r.last_hidden_state,
                    Some(&out_r.pooled),
                    &hint,
                    1.0,
                )
            }
        }
    }

    /// Writes a validation image for `step` with `weights`; returns its path.
    fn validate(
        &self,
        cfg: &TrainConfig,
        weights: &BTreeMap<String, Tensor>,
        step: usize,
    ) -> Result<PathBuf> {
        let tag = match cfg.mode {
            TrainMode::Backbone => "backbone",
            TrainMode::Adaptor => "adaptor",
        };
        let path = cfg.output.join("val").join(format!("{tag}_{step:06}.png"));
        let full = Dataset::from_folder(&cfg.data, cfg.captions.as_deref(), &[])?;
        let crop = (cfg.crop * 2).min(256);
        let names: Vec<String> = if cfg.validation.is_empty() {
            full.names().into_iter().take(2).map(String::from).collect()
        } else {
            cfg.validation.clone()
        };
        let mut rows: Vec<Vec<Rgb>> = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let s = full.center_crop(name, crop)?;
            rows.push(self.validation_row(cfg, weights, &s.image, &s.caption, i as u64)?);
        }
        write_grid(&path, &rows)?;
        Ok(path)
    }

    fn validation_row(
        &self,
        cfg: &TrainConfig,
        weights: &BTreeMap<String, Tensor>,
        x: &Rgb,
        caption: &str,
        i: u64,
    ) -> Result<Vec<Rgb>> {
        let map: HashMap<String, Tensor> = weights.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let vb = VarBuilder::from_tensors(map, self.compute, &self.device);
        match &self.kind {
            Kind::Backbone { unet, text, .. } => {
                // Denoising check: noise the image to t = 600 (60 % of `max_timestep` when
                // that is lower, to stay in the trained range), predict x₀ in one step.
                let u = UNet2DConditionModel::new(unet.config(), vb.pp("unet"))?;
                let te = ClipTextModel::new(text.config(), vb.pp("text_encoder"))?;
                let x0 = self.latents(std::slice::from_ref(x))?;
                let noise = rng::randn(
                    rng::train_stream(7, i, TrainNoise::Preview),
                    x0.shape(),
                    &self.device,
                )?;
                let t = cfg.max_timestep.map_or(600, |m| (m * 3 / 5).clamp(1, 600));
                let x_t = self.sched.add_noise(&x0, &noise, &[t])?;
                let ctx = te
                    .forward(&self.tokens.ids(&[caption.to_string()], &self.device)?)?
                    .last_hidden_state;
                let pred = u
                    .forward(&x_t.to_dtype(self.compute)?, &[t as f32], &ctx, None)?
                    .to_dtype(DType::F32)?;
                let ac = self.sched.alphas_cumprod()[t] as f64;
                let (a, s) = (ac.sqrt(), (1.0 - ac).sqrt());
                let x0_hat = match self.sched.prediction_type {
                    crate::scheduler::PredictionType::Epsilon => ((&x_t - (&pred * s)?)? / a)?,
                    crate::scheduler::PredictionType::VPrediction => ((&x_t * a)? - (&pred * s)?)?,
                    crate::scheduler::PredictionType::Sample => pred,
                };
                Ok(vec![self.decode(&x_t)?, self.decode(&x0_hat)?, x.clone()])
            }
            Kind::Adaptor {
                unet,
                text,
                adaptor_cfg,
                r_text,
                ..
            } => {
                let adaptor = Adaptor::new(adaptor_cfg, vb.clone())?;
                let restoration_text = match r_text {
                    Some((enc, _)) => Some((
                        self.tokens.tok.clone(),
                        ClipTextModel::new(enc.config(), vb.pp("restoration_text_encoder"))?,
                    )),
                    None => None,
                };
                let restorer = crate::Restorer::from_parts(crate::RestorerParts {
                    unet: unet.clone(),
                    vae: self.vae.clone(),
                    tokenizer: self.tokens.tok.clone(),
                    text_encoder: text.clone(),
                    restoration_text,
                    adaptor,
                    scheduler: self.sched.clone(),
                    defaults: cfg.model_defaults()?,
                    device: self.device.clone(),
                    dtype: self.compute,
                    name: "validation".into(),
                })?;
                let prompt = RestorationPrompt::parse("Deblur with sigma 2.0; Denoise with sigma 0.10")?;
                let y = ops::add_gaussian_noise(&ops::gaussian_blur(x, 2.0), 0.10, false, 11 + i);
                let view_data = interleave(&y);
                let view = crate::ImageView::rgb_f32(y.width, y.height, &view_data)?;
                let opts = crate::RestoreOptions {
                    restoration_prompt: prompt.into(),
                    ..restorer.default_options()
                };
                let out = restorer.restore(&view, &opts)?;
                let out = deinterleave(out.as_f32().unwrap_or(&[]), y.width, y.height)?;
                Ok(vec![y, out, x.clone()])
            }
        }
    }

    fn decode(&self, z: &Tensor) -> Result<Rgb> {
        let x = self.vae.decode(&self.vae.unscale_latents(z)?)?;
        let x = ((x + 1.0)? / 2.0)?.clamp(0f32, 1f32)?;
        let (_, _, h, w) = x.dims4()?;
        Rgb::new(w, h, x.flatten_all()?.to_vec1()?)
    }

    /// Writes the trained weights into the model folder.
    fn export(&self, cfg: &TrainConfig, weights: &BTreeMap<String, Tensor>) -> Result<()> {
        let out = &cfg.output;
        match &self.kind {
            Kind::Backbone { .. } => {
                save_prefixed(
                    weights,
                    "unet",
                    &out.join("unet/diffusion_pytorch_model.safetensors"),
                )?;
                save_prefixed(
                    weights,
                    "text_encoder",
                    &out.join("text_encoder/model.safetensors"),
                )?;
            }
            Kind::Adaptor {
                adaptor_cfg,
                r_text,
                model_dir,
                ..
            } => {
                let sel: HashMap<String, Tensor> = weights
                    .iter()
                    .filter(|(k, _)| !k.starts_with("restoration_text_encoder."))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let ap = out.join("adaptor/diffusion_pytorch_model.safetensors");
                std::fs::create_dir_all(out.join("adaptor")).map_err(|e| Error::io(out, e))?;
                candle_core::safetensors::save(&sel, &ap)
                    .map_err(|e| Error::io(&ap, std::io::Error::other(e.to_string())))?;
                write_json(&out.join("adaptor/config.json"), &adaptor_cfg.to_json())?;
                write_json(
                    &out.join("spire.json"),
                    &serde_json::json!({ "defaults": cfg.defaults.clone().unwrap_or_else(|| serde_json::json!({})) }),
                )?;
                if let Some((_, j)) = r_text {
                    save_prefixed(
                        weights,
                        "restoration_text_encoder",
                        &out.join("restoration_text_encoder/model.safetensors"),
                    )?;
                    write_json(&out.join("restoration_text_encoder/config.json"), j)?;
                    copy_dir(&model_dir.join("tokenizer"), &out.join("restoration_tokenizer"))?;
                }
                if model_dir != out {
                    // A single-file backbone stays in its file: the output is its config
                    // folder (tokenizer, scheduler) plus the adaptor.
                    let parts: &[&str] = if cfg.checkpoint.is_some() {
                        &["tokenizer", "scheduler"]
                    } else {
                        &["unet", "vae", "text_encoder", "tokenizer", "scheduler"]
                    };
                    for c in parts {
                        if cfg.checkpoint.is_none() || model_dir.join(c).is_dir() {
                            copy_dir(&model_dir.join(c), &out.join(c))?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn interleave(img: &Rgb) -> Vec<f32> {
    let n = img.width * img.height;
    (0..n)
        .flat_map(|p| [img.data[p], img.data[n + p], img.data[2 * n + p]])
        .collect()
}

fn deinterleave(v: &[f32], w: usize, h: usize) -> Result<Rgb> {
    let n = w * h;
    if v.len() != 3 * n {
        return Err(Error::Internal("unexpected restored image size".into()));
    }
    let mut d = vec![0f32; 3 * n];
    for p in 0..n {
        for c in 0..3 {
            d[c * n + p] = v[3 * p + c];
        }
    }
    Rgb::new(w, h, d)
}

/// Writes rows of equal-size images as one PNG with 4-pixel white gaps.
pub(crate) fn write_grid(path: &Path, rows: &[Vec<Rgb>]) -> Result<()> {
    let (tw, th) = (rows[0][0].width, rows[0][0].height);
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let gap = 4;
    let (w, h) = (
        cols * tw + (cols.saturating_sub(1)) * gap,
        rows.len() * th + (rows.len().saturating_sub(1)) * gap,
    );
    let mut canvas = vec![255u8; w * h * 3];
    for (r, row) in rows.iter().enumerate() {
        for (c, img) in row.iter().enumerate() {
            let img = if (img.width, img.height) == (tw, th) {
                img.clone()
            } else {
                ops::resize_bicubic(img, tw, th)
            };
            let n = tw * th;
            for y in 0..th {
                for x in 0..tw {
                    let o = ((r * (th + gap) + y) * w + c * (tw + gap) + x) * 3;
                    for ch in 0..3 {
                        canvas[o + ch] =
                            (img.data[ch * n + y * tw + x].clamp(0.0, 1.0) * 255.0).round() as u8;
                    }
                }
            }
        }
    }
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    crate::io::save_image(
        path,
        &crate::Image {
            width: w,
            height: h,
            color: crate::ColorType::Rgb,
            data: crate::ImageData::U8(canvas),
        },
    )
}
