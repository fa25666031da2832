//! The [`Restorer`]: a loaded SPIRE model and the restoration pipeline (SPIRE.md §2.4–§2.5).
//!
//! One `restore` call: the input is converted to planar RGB in [0, 1], enlarged by the
//! restoration prompt's upsample factor (bicubic), padded by reflection to the latent multiple;
//! the prompts are encoded (`c_r` and `∅_r` by the adaptor's text encoder, `c_s` and `∅_s` by
//! the backbone's); the hint is the VAE mean of the image (latent mode) or the image itself
//! (pixel mode); the latents start from seeded noise (or the noised encoding of the input when
//! `strength < 1`); each step runs the adaptor once per distinct restoration context and the
//! backbone once per guidance pass, all in one batch, and combines
//!
//! ```text
//! ε̂ = ε(∅_r, ∅_s) + w_r·[ε(c_r, ∅_s) − ε(∅_r, ∅_s)] + w_s·[ε(c_r, c_s) − ε(c_r, ∅_s)]
//!   = (1 − w_r)·ε(∅_r, ∅_s) + (w_r − w_s)·ε(c_r, ∅_s) + w_s·ε(c_r, c_s)
//! ```
//!
//! skipping passes whose coefficient vanishes and merging passes whose prompts are equal. The
//! result is decoded, cropped to exactly the input size times the upsample factor, colour
//! corrected and converted back to the input's layout and sample type.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::colorfix;
use crate::consistency;
use crate::error::{Error, Result};
use crate::image::{Image, ImageView, Planar};
use crate::imageops;
use crate::model::adaptor::HintMode;
use crate::model::{
    Adaptor, Autoencoder, ClipTextModel, ClipTokenizer, Control, Injection, LoadOptions, UNet2DConditionModel,
};
use crate::options::{ModelDefaults, Progress, RestorationInput, RestoreOptions, Stage};
use crate::prompt::RestorationPrompt;
use crate::rng;
use crate::scheduler::{Ddim, Scheduler, SchedulerConfig, SchedulerKind};

/// A tokenizer and the text encoder it feeds.
#[derive(Debug)]
struct TextStack {
    tokenizer: ClipTokenizer,
    encoder: ClipTextModel,
}

impl TextStack {
    fn load(root: &Path, enc: &str, tok: &str, opts: &LoadOptions) -> Result<Self> {
        Ok(Self {
            tokenizer: ClipTokenizer::from_dir(&root.join(tok))?,
            encoder: ClipTextModel::from_dir(&root.join(enc), opts)?,
        })
    }

    /// `[1, 77, hidden]` embedding of `text`.
    fn encode(&self, text: &str, device: &Device, dtype: DType) -> Result<Tensor> {
        Ok(self.encode_pooled(text, device, dtype)?.0)
    }

    /// The `[1, 77, hidden]` embedding of `text` and its `[1, hidden]` pooled embedding.
    fn encode_pooled(&self, text: &str, device: &Device, dtype: DType) -> Result<(Tensor, Tensor)> {
        let ids = self.tokenizer.encode(text)?;
        let n = ids.len();
        let ids = Tensor::from_vec(ids, (1, n), device)?;
        let out = self.encoder.forward(&ids)?;
        Ok((
            out.last_hidden_state.to_dtype(dtype)?,
            out.pooled.to_dtype(dtype)?,
        ))
    }
}

#[derive(Debug)]
struct Inner {
    unet: UNet2DConditionModel,
    vae: Autoencoder,
    text: TextStack,
    restoration_text: Option<TextStack>,
    adaptor: Adaptor,
    scheduler: SchedulerConfig,
    defaults: ModelDefaults,
    device: Device,
    dtype: DType,
    path: PathBuf,
}

/// The components of a model, for [`Restorer::from_parts`] (models built in memory: the
/// built-in model, benchmarks, freshly trained weights).
#[derive(Debug)]
pub struct RestorerParts {
    /// The backbone.
    pub unet: UNet2DConditionModel,
    /// The autoencoder.
    pub vae: Autoencoder,
    /// The backbone's tokenizer.
    pub tokenizer: ClipTokenizer,
    /// The backbone's text encoder.
    pub text_encoder: ClipTextModel,
    /// A dedicated restoration-prompt tokenizer and encoder, if any.
    pub restoration_text: Option<(ClipTokenizer, ClipTextModel)>,
    /// The adaptor.
    pub adaptor: Adaptor,
    /// The noise schedule.
    pub scheduler: SchedulerConfig,
    /// The restore options the model recommends (its `spire.json`).
    pub defaults: ModelDefaults,
    /// Where the weights live.
    pub device: Device,
    /// Their dtype.
    pub dtype: DType,
    /// A name for messages.
    pub name: String,
}

/// A loaded SPIRE model. Cheap to clone (clones share the weights); `Send + Sync`, so one
/// model serves many threads; every `restore` call builds its own scheduler and state.
#[derive(Debug, Clone)]
pub struct Restorer {
    inner: Arc<Inner>,
}

/// The model pieces one restoration pass needs, by reference.
struct Passes {
    /// Distinct restoration contexts the adaptor runs with (index into `r_ctx`).
    r_used: Vec<usize>,
    /// (restoration context, semantic context, coefficient) of each backbone pass.
    passes: Vec<(usize, usize, f64)>,
}

/// The guidance passes: coefficients of ε(∅_r,∅_s), ε(c_r,∅_s), ε(c_r,c_s), with equal prompts
/// merged and vanishing terms dropped.
fn plan_passes(w_r: f64, w_s: f64, r_same: bool, s_same: bool) -> Passes {
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

/// Splitmix64 finaliser: derives independent noise streams from the seed.
fn stream(seed: u64, purpose: u64) -> u64 {
    let mut z = seed ^ purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// [`Error::Numerical`] with `what()` when `t` holds NaN or infinity. One pass: `t − t` is 0
/// for every finite value and NaN otherwise, so its sum is exactly 0 or NaN.
fn check_finite(t: &Tensor, what: impl FnOnce() -> String) -> Result<()> {
    let s = t
        .broadcast_sub(t)?
        .sum_all()?
        .to_dtype(DType::F32)?
        .to_scalar::<f32>()?;
    if s == 0.0 {
        Ok(())
    } else {
        Err(Error::Numerical(what()))
    }
}

const STREAM_VAE: u64 = 1;
const STREAM_STEP: u64 = 2;

impl Restorer {
    /// Loads a SPIRE model folder (SPIRE.md §6): `unet/`, `vae/`, `text_encoder/`,
    /// `tokenizer/`, `scheduler/`, and `adaptor/` (or `controlnet/`, or
    /// [`LoadOptions::adaptor`]); optionally `restoration_text_encoder/` +
    /// `restoration_tokenizer/` for a dedicated restoration-prompt encoder.
    ///
    /// # Errors
    /// [`Error::Io`] for missing folders or files, [`Error::ModelLoad`] for bad configs or
    /// weights, [`Error::Device`] if the device fails.
    pub fn from_pretrained(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Self> {
        let root = path.as_ref();
        if !root.is_dir() {
            return Err(Error::io(
                root,
                std::io::Error::new(std::io::ErrorKind::NotFound, "model folder not found"),
            ));
        }
        let adaptor_dir = match &opts.adaptor {
            Some(p) => p.clone(),
            None => ["adaptor", "controlnet"]
                .iter()
                .map(|d| root.join(d))
                .find(|p| p.is_dir())
                .ok_or_else(|| {
                    Error::io(
                        root.join("adaptor"),
                        std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "no adaptor/ or controlnet/ folder (or pass LoadOptions::adaptor)",
                        ),
                    )
                })?,
        };
        let restoration_text = if root.join("restoration_text_encoder").is_dir() {
            Some(TextStack::load(
                root,
                "restoration_text_encoder",
                "restoration_tokenizer",
                opts,
            )?)
        } else {
            None
        };
        let sched_path = root.join("scheduler").join("scheduler_config.json");
        let scheduler = if sched_path.is_file() {
            SchedulerConfig::from_file(&sched_path)?
        } else {
            SchedulerConfig::default()
        };
        let spire_json = root.join("spire.json");
        let defaults = if spire_json.is_file() {
            let text = crate::io::read_text(&spire_json)?;
            ModelDefaults::from_spire_json(&text, &spire_json.display().to_string())?
        } else {
            ModelDefaults::default()
        };
        let mut scheduler = scheduler;
        if let Some(p) = opts.prediction_type {
            scheduler.prediction_type = p;
        }
        let unet = UNet2DConditionModel::from_dir(&root.join("unet"), opts)?;
        let adaptor = Adaptor::from_path(&adaptor_dir, unet.config(), opts)?;
        let inner = Inner {
            unet,
            vae: Autoencoder::from_dir(&root.join("vae"), opts)?,
            text: TextStack::load(root, "text_encoder", "tokenizer", opts)?,
            restoration_text,
            adaptor,
            scheduler,
            defaults,
            device: opts.device.clone(),
            dtype: opts.dtype,
            path: root.to_path_buf(),
        };
        inner.check()?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Loads a single-file Stable Diffusion 1.x / 2.x checkpoint in the original layout
    /// (`v1-5-pruned-emaonly.safetensors`, `v2-1_512-ema-pruned.safetensors`, fine-tunes of
    /// them; fp32, fp16 or bf16) with the adaptor [`LoadOptions::adaptor`] — a single-file
    /// ControlNet such as `control_v11f1e_sd15_tile`, a diffusers `ControlNetModel` folder or a
    /// SPIRE adaptor folder trained on this backbone.
    ///
    /// The architecture is detected from the tensors (SD 1.x vs 2.x, widths, depths);
    /// [`LoadOptions::config`] supplies the tokenizer and optionally the scheduler and configs;
    /// [`LoadOptions::prediction_type`] says ε or v where the file cannot (SD 2.x defaults to
    /// v). Pickle files (`.ckpt`, `.pt`, `.bin`) are refused, with the command that converts
    /// them to safetensors. Details: `docs/model-format.md`.
    ///
    /// # Errors
    /// [`Error::Io`] for missing files, [`Error::ModelLoad`] naming the file and the first
    /// unknown keys for a layout that is not SD 1.x/2.x, and as [`Restorer::from_pretrained`].
    pub fn from_single_file(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Self> {
        let path = path.as_ref();
        let adaptor_path = opts.adaptor.as_ref().ok_or_else(|| {
            Error::model_load(
                path,
                "a Stable Diffusion checkpoint has no adaptor: pass one with `LoadOptions::adaptor` \
                 (`--controlnet FILE|DIR`): a single-file ControlNet such as control_v11f1e_sd15_tile, \
                 a ControlNet folder, or a SPIRE adaptor trained on this backbone",
            )
        })?;
        let sf = crate::model::SingleFile::load(path, opts)?;
        let scheduler = crate::model::load::single_file_scheduler(sf.generation, opts)?;
        let defaults = match opts.config.as_ref().map(|c| c.join("spire.json")) {
            Some(p) if p.is_file() => {
                let text = crate::io::read_text(&p)?;
                ModelDefaults::from_spire_json(&text, &p.display().to_string())?
            }
            _ => ModelDefaults::default(),
        };
        let adaptor = Adaptor::from_path(adaptor_path, sf.unet.config(), opts)?;
        let inner = Inner {
            unet: sf.unet,
            vae: Autoencoder::Kl(sf.vae),
            text: TextStack {
                tokenizer: sf.tokenizer,
                encoder: sf.text_encoder,
            },
            restoration_text: None,
            adaptor,
            scheduler,
            defaults,
            device: opts.device.clone(),
            dtype: opts.dtype,
            path: path.to_path_buf(),
        };
        inner.check()?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Assembles a restorer from components built in memory.
    ///
    /// # Errors
    /// [`Error::ModelLoad`] if the components do not fit together.
    pub fn from_parts(parts: RestorerParts) -> Result<Self> {
        let inner = Inner {
            unet: parts.unet,
            vae: parts.vae,
            text: TextStack {
                tokenizer: parts.tokenizer,
                encoder: parts.text_encoder,
            },
            restoration_text: parts
                .restoration_text
                .map(|(tokenizer, encoder)| TextStack { tokenizer, encoder }),
            adaptor: parts.adaptor,
            scheduler: parts.scheduler,
            defaults: parts.defaults,
            device: parts.device,
            dtype: parts.dtype,
            path: PathBuf::from(parts.name),
        };
        inner.check()?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The restore options the model recommends (the `defaults` of its `spire.json`).
    pub fn defaults(&self) -> &ModelDefaults {
        &self.inner.defaults
    }

    /// [`RestoreOptions::default`] with the model's recommendations applied: the options to
    /// start from with this model. The CLI and the Python and C bindings start from them;
    /// `RestoreOptions::default()` keeps the library's own defaults.
    ///
    /// ```no_run
    /// let r = spire_core::Restorer::builtin()?;
    /// let opts = spire_core::RestoreOptions {
    ///     seed: 7,
    ///     ..r.default_options()
    /// };
    /// # Ok::<(), spire_core::Error>(())
    /// ```
    pub fn default_options(&self) -> RestoreOptions {
        let mut o = RestoreOptions::default();
        self.inner.defaults.apply(&mut o);
        o
    }

    /// The folder the model was loaded from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The compute device.
    pub fn device(&self) -> &Device {
        &self.inner.device
    }

    /// The dtype the denoising networks compute in ([`LoadOptions::dtype`]).
    pub fn dtype(&self) -> DType {
        self.inner.dtype
    }

    /// The autoencoder (an `AutoencoderKL` reports its own dtype: f32 for a `force_upcast`
    /// model loaded in f16).
    pub fn autoencoder(&self) -> &Autoencoder {
        &self.inner.vae
    }

    /// The scheduler configuration of the model.
    pub fn scheduler_config(&self) -> &SchedulerConfig {
        &self.inner.scheduler
    }

    /// Pixels per latent pixel (8 for SD).
    pub fn vae_scale_factor(&self) -> usize {
        self.inner.vae.downscale_factor()
    }

    /// Channels of the latent image (4 for SD; 3·f² for a pixel-shuffle autoencoder of factor
    /// f): with [`vae_scale_factor`](Self::vae_scale_factor), the shape of
    /// [`RestoreOptions::initial_latents`] for an image, `[1, latent_channels, h / f, w / f]`.
    pub fn latent_channels(&self) -> usize {
        self.inner.vae.latent_channels()
    }

    /// Images are padded to a multiple of this many pixels (VAE × UNet down-sampling).
    pub fn size_multiple(&self) -> usize {
        self.vae_scale_factor() * self.inner.unet.config().downscale_factor()
    }

    /// Whether two handles share one loaded model.
    pub fn shares_weights_with(&self, other: &Restorer) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The restoration prompt a restore of `image` with `opts` uses: the options' own, or for
    /// [`RestorationInput::Auto`] the estimate ([`RestorationPrompt::estimate`], with `source`
    /// when the caller has the file's header: a JPEG's quality is then exact) with the given
    /// clauses kept. With a given upsample scale and [`RestoreOptions::upsample_input`] on, the
    /// output size it implies is the one the blur σ is measured for. `Verbatim` text has no
    /// prompt: blind.
    ///
    /// # Errors
    /// As [`RestorationPrompt::estimate_for_size`].
    pub fn resolve_prompt(
        &self,
        image: &ImageView,
        opts: &RestoreOptions,
        source: Option<&crate::estimate::SourceInfo>,
    ) -> Result<RestorationPrompt> {
        match &opts.restoration_prompt {
            RestorationInput::Prompt(p) => Ok(*p),
            RestorationInput::Verbatim(_) => Ok(RestorationPrompt::blind()),
            RestorationInput::Auto(given) => {
                Ok(crate::estimate::auto_prompt(image, source, given, opts.upsample_input)?.prompt)
            }
        }
    }

    /// Restores one image. The output has the input's layout and sample type and is exactly
    /// the input size times the restoration prompt's upsample factor (unless
    /// [`RestoreOptions::upsample_input`] is off).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] / [`Error::InvalidPrompt`] naming a bad option,
    /// [`Error::InvalidImage`] for a bad image, [`Error::Cancelled`] if the progress callback
    /// asked to stop, [`Error::Device`] / [`Error::Internal`] for compute failures.
    pub fn restore(&self, image: &ImageView, opts: &RestoreOptions) -> Result<Image> {
        let mut out = self.restore_batch(std::slice::from_ref(image), opts)?;
        out.pop()
            .ok_or_else(|| Error::Internal("empty batch result".into()))
    }

    /// Restores several images. Image `i` uses seed `opts.seed + i`, so the result equals
    /// restoring the images one by one with those seeds. Images of the same size run as one
    /// batch.
    ///
    /// # Errors
    /// As [`Restorer::restore`].
    pub fn restore_batch(&self, images: &[ImageView], opts: &RestoreOptions) -> Result<Vec<Image>> {
        opts.validate()?;
        if images.is_empty() {
            return Ok(Vec::new());
        }
        if let RestorationInput::Auto(_) = &opts.restoration_prompt {
            // Each image has its own estimate: one at a time, image i with seed + i.
            return images
                .iter()
                .enumerate()
                .map(|(i, img)| {
                    let mut o = opts.clone();
                    o.restoration_prompt = RestorationInput::Prompt(self.resolve_prompt(img, opts, None)?);
                    o.seed = opts.seed.wrapping_add(i as u64);
                    self.restore(img, &o)
                })
                .collect();
        }
        // Group equal sizes into batches (keeping the output order), and plan every group from
        // the sizes alone: a call that cannot fit its memory limit is refused before any
        // pixel is converted.
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for (i, img) in images.iter().enumerate() {
            let same =
                |g: &Vec<usize>| images[g[0]].width() == img.width() && images[g[0]].height() == img.height();
            match groups.iter_mut().find(|g| same(g)) {
                Some(g) => g.push(i),
                None => groups.push(vec![i]),
            }
        }
        let plans = groups
            .iter()
            .map(|g| {
                let first = &images[g[0]];
                let input_bytes: u64 = g.iter().map(|&j| images[j].byte_len() as u64).sum();
                let alpha = g
                    .iter()
                    .any(|&j| images[j].color() == crate::image::ColorType::Rgba);
                self.inner
                    .plan_call(first.width(), first.height(), g.len(), input_bytes, alpha, opts)
            })
            .collect::<Result<Vec<_>>>()?;
        let factor = opts.output_factor();
        let mut results: Vec<Option<Image>> = vec![None; images.len()];
        for (group, plan) in groups.iter().zip(&plans) {
            let (ow, oh) = plan.output;
            let mut inputs = Vec::with_capacity(group.len());
            for &j in group {
                let p = images[j].to_planar()?;
                inputs.push(if factor == 1.0 {
                    p
                } else {
                    let enlarge = |src: &[f32], c: usize| -> Vec<f32> {
                        let mut v = imageops::resize_bicubic(src, c, p.width, p.height, ow, oh);
                        v.iter_mut().for_each(|x| *x = x.clamp(0.0, 1.0));
                        v
                    };
                    Planar {
                        width: ow,
                        height: oh,
                        rgb: enlarge(&p.rgb, 3),
                        alpha: p.alpha.as_ref().map(|a| enlarge(a, 1)),
                    }
                });
            }
            let batch: Vec<&Planar> = inputs.iter().collect();
            let seeds: Vec<u64> = group.iter().map(|&j| opts.seed.wrapping_add(j as u64)).collect();
            let outs = self.run(&batch, &seeds, opts, plan)?;
            drop(batch);
            drop(inputs);
            for (&j, o) in group.iter().zip(outs) {
                results[j] = Some(o.to_image(images[j].color(), images[j].is_float()));
            }
        }
        results
            .into_iter()
            .map(|r| r.ok_or_else(|| Error::Internal("missing batch result".into())))
            .collect()
    }

    /// How a restore of one 8-bit `width × height` image of colour type `color` with `opts`
    /// would run: its tiles, its estimated peak memory beyond the weights and its work per
    /// step, from the sizes alone — [`Restorer::restore`] makes the same plan first. The CLI
    /// calls this with an image file's header ([`crate::io::image_info`]) before decoding it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `memory_limit` when the call cannot fit it even with
    /// the smallest tiles (the message says how much it needs), or naming another option that
    /// is out of range; [`Error::InvalidImage`] for a size under 2×2.
    pub fn plan(
        &self,
        width: usize,
        height: usize,
        color: crate::image::ColorType,
        opts: &RestoreOptions,
    ) -> Result<crate::plan::RunPlan> {
        opts.validate()?;
        let bytes = (width as u64)
            .saturating_mul(height as u64)
            .saturating_mul(color.channels() as u64);
        self.inner.plan_call(
            width,
            height,
            1,
            bytes,
            color == crate::image::ColorType::Rgba,
            opts,
        )
    }

    /// Encodes a prompt with the backbone's text encoder (`[1, 77, hidden]`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the text cannot be tokenized.
    pub fn encode_semantic_prompt(&self, text: &str) -> Result<Tensor> {
        self.inner.text.encode(text, &self.inner.device, self.inner.dtype)
    }

    /// Encodes a prompt with the adaptor's text encoder (the backbone's unless the model has a
    /// dedicated restoration-prompt encoder).
    ///
    /// # Errors
    /// As [`Restorer::encode_semantic_prompt`].
    pub fn encode_restoration_prompt(&self, text: &str) -> Result<Tensor> {
        Ok(self.encode_restoration_pooled(text)?.0)
    }

    /// [`Restorer::encode_restoration_prompt`] and the prompt's pooled embedding.
    fn encode_restoration_pooled(&self, text: &str) -> Result<(Tensor, Tensor)> {
        let stack = self.inner.restoration_text.as_ref().unwrap_or(&self.inner.text);
        stack.encode_pooled(text, &self.inner.device, self.inner.dtype)
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
        let scale = self.inner.vae.linear_latent_scale()?;
        // Latents are (2x − 1)·scale per pixel: noise σ on [0, 1] is 2σ·scale in the latent.
        let target = 2.0 * sigma * scale;
        let ac = self.inner.scheduler.alphas_cumprod();
        let miss = |t: usize| (((1.0 - ac[t] as f64) / ac[t] as f64).sqrt() - target).abs();
        let t = (0..ac.len()).min_by(|&a, &b| miss(a).total_cmp(&miss(b)))?;
        Some((t, ac[t] as f64))
    }

    /// Restores a batch of equal-size planar images (already enlarged); returns them cropped.
    fn run(
        &self,
        batch: &[&Planar],
        seeds: &[u64],
        opts: &RestoreOptions,
        mem: &crate::plan::RunPlan,
    ) -> Result<Vec<Planar>> {
        let m = &*self.inner;
        let report = |stage: Stage, step: usize, total: usize| -> Result<()> {
            if let Some(cb) = &opts.progress {
                if !cb(&Progress {
                    stage,
                    step,
                    total,
                    message: None,
                }) {
                    return Err(Error::Cancelled);
                }
            }
            Ok(())
        };
        let n = batch.len();
        let (w, h) = (batch[0].width, batch[0].height);
        let mult = self.size_multiple();
        let (pw, ph) = (w.div_ceil(mult) * mult, h.div_ceil(mult) * mult);
        let f = self.vae_scale_factor();
        let (lw, lh) = (pw / f, ph / f);
        let lc = m.vae.latent_channels();
        let dev = &m.device;
        let dt = m.dtype;

        report(Stage::Encoding, 0, 1)?;
        let mut padded = Vec::with_capacity(n * 3 * pw * ph);
        for p in batch {
            padded.extend(imageops::pad_reflect(&p.rgb, 3, w, h, pw, ph));
        }
        let y = Tensor::from_vec(padded, (n, 3, ph, pw), dev)?.to_dtype(dt)?;

        // Prompts: index 0 is the null prompt, 1 the prompt.
        let c_r = opts.restoration_prompt.text();
        let r_same = c_r == opts.restoration_null_prompt;
        let s_same = opts.semantic_prompt == opts.negative_prompt;
        let plan = plan_passes(opts.restoration_guidance, opts.semantic_guidance, r_same, s_same);
        if let Some(cb) = &opts.progress {
            let msg = mem.describe();
            tracing::info!("{msg}");
            if !cb(&Progress {
                stage: Stage::Encoding,
                step: 0,
                total: 1,
                message: Some(msg),
            }) {
                return Err(Error::Cancelled);
            }
        }
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
                s_ctx[s] = Some(self.encode_semantic_prompt(text)?);
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

        // The scheduler and where sampling starts.
        let kind = opts.scheduler.unwrap_or(m.scheduler.kind);
        let sched: Box<dyn Scheduler> = if kind == SchedulerKind::Ddim {
            Box::new(Ddim::new(&m.scheduler, opts.num_inference_steps)?.with_eta(opts.eta))
        } else {
            if opts.eta > 0.0 {
                return Err(Error::invalid_arg("eta", "only the DDIM scheduler takes eta"));
            }
            m.scheduler.build(kind, opts.num_inference_steps)?
        };
        let scheduled = sched.timesteps().len();
        let start = scheduled - ((scheduled as f64 * opts.strength) as usize).min(scheduled);
        // Noise-matched start: the input already is a noised image at the timestep whose noise
        // matches the prompt's σ, so it is scaled, not noised, and DDIM runs from there through
        // the scheduled timesteps below it.
        let matched = self.matched_timestep(opts, kind, start > 0);
        let (mut sched, start) = match matched {
            Some((t_star, _)) => {
                let mut list = vec![t_star as f64];
                list.extend(sched.timesteps().iter().copied().filter(|&t| t < t_star as f64));
                let d: Box<dyn Scheduler> =
                    Box::new(Ddim::with_timesteps(&m.scheduler, list)?.with_eta(opts.eta));
                (d, 0)
            }
            None => (sched, start),
        };
        let steps = sched.timesteps().len();

        // The input's latent mean, encoded once for the latent hint and the matched start.
        let y_latent = if m.adaptor.hint_mode() == HintMode::Latent || matched.is_some() {
            let mean = m.vae.encode_mean_tiled(&y.affine(2.0, -1.0)?, mem.encode)?;
            Some(m.vae.scale_latents(&mean)?)
        } else {
            None
        };
        let hint = match (m.adaptor.hint_mode(), &y_latent) {
            (HintMode::Latent, Some(z)) => z.clone(),
            (HintMode::Latent, None) => return Err(Error::Internal("latent hint not encoded".into())),
            (HintMode::Pixel, _) => y.clone(),
        };
        let hint = if plan.r_used.len() > 1 {
            Tensor::cat(&vec![&hint; plan.r_used.len()], 0)?
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
                        .map(|&s| rng::randn(s, (1, lc, lh, lw), dev))
                        .collect::<candle_core::Result<_>>()?;
                    Ok(Tensor::cat(&per, 0)?)
                }
            }
        };
        let mut latents = match (matched, &y_latent) {
            (Some((_, alpha_bar)), Some(z)) => (z.to_dtype(DType::F32)? * alpha_bar.sqrt())?,
            (Some(_), None) => return Err(Error::Internal("input latent not encoded".into())),
            (None, _) if start == 0 => (noise()? * sched.init_noise_sigma())?,
            (None, _) => {
                let per: Vec<Tensor> = seeds
                    .iter()
                    .map(|&s| rng::randn(stream(s, STREAM_VAE), (1, lc, lh, lw), dev))
                    .collect::<candle_core::Result<_>>()?;
                let z = m.vae.encode_sample_tiled(
                    &y.affine(2.0, -1.0)?,
                    &Tensor::cat(&per, 0)?.to_dtype(dt)?,
                    mem.encode,
                )?;
                let x0 = m.vae.scale_latents(&z)?.to_dtype(DType::F32)?;
                sched.add_noise(&x0, &noise()?, start)?
            }
        };

        // The padded input lives on only as the pixel hint (a shared handle); the input's
        // latent only as the latent hint or the start.
        drop(y);
        drop(y_latent);

        let total = steps - start;
        let tiles = &mem.tiles;
        let hint_scale = match m.adaptor.hint_mode() {
            HintMode::Latent => 1,
            HintMode::Pixel => f,
        };
        report(Stage::Denoising, 0, total)?;
        for i in start..steps {
            let t = sched.timesteps()[i] as f32;
            let x_in = sched.scale_model_input(&latents, i)?.to_dtype(dt)?;
            let eps = tiles
                .blend(&x_in, &mut |xt, y0, x0| {
                    let (th, tw) = (xt.dim(2)?, xt.dim(3)?);
                    let ht = if tiles.is_single() {
                        hint.clone()
                    } else {
                        hint.narrow(2, y0 * hint_scale, th * hint_scale)?.narrow(
                            3,
                            x0 * hint_scale,
                            tw * hint_scale,
                        )?
                    };
                    m.predict(
                        xt,
                        t,
                        &ht,
                        &adaptor_ctx,
                        &unet_ctx,
                        &plan,
                        n,
                        opts.conditioning_scale,
                    )
                })?
                // Weights that are training variables make candle record a gradient graph; cutting
                // it here keeps memory flat across steps whatever the weights are.
                .detach();
            let step_noise = if sched.needs_noise() {
                let per: Vec<Tensor> = seeds
                    .iter()
                    .map(|&s| rng::randn(stream(s, STREAM_STEP + ((i as u64) << 8)), (1, lc, lh, lw), dev))
                    .collect::<candle_core::Result<_>>()?;
                Some(Tensor::cat(&per, 0)?)
            } else {
                None
            };
            latents = sched.step(&eps, i, &latents, step_noise.as_ref())?;
            check_finite(&latents, || {
                format!(
                    "the latents after denoising step {} of {total} are not finite (NaN or \
                     infinity in the model's output; weights or options out of range?)",
                    i + 1 - start
                )
            })?;
            report(Stage::Denoising, i + 1 - start, total)?;
        }

        drop(hint);

        report(Stage::Decoding, 0, 1)?;
        // f32 latents in, f32 image out: the autoencoder computes in its own dtype (f32 for a
        // `force_upcast` model loaded in f16), so its output is never narrowed to f16. Each
        // full-size copy is dropped as soon as the next exists (the plan counts two).
        let x = {
            let z = m.vae.unscale_latents(&latents)?;
            drop(latents);
            let x = m.vae.decode_tiled(&z, mem.decode)?;
            drop(z);
            check_finite(&x, || match &m.vae {
                Autoencoder::Kl(v) => format!(
                    "the decoded image is not finite: the autoencoder ran in {:?} and overflowed \
                     (Stable Diffusion's VAE needs float32: keep `force_upcast` in vae/config.json, \
                     or load in float32 or bfloat16)",
                    v.dtype()
                ),
                Autoencoder::PixelShuffle(_) => "the decoded image is not finite".into(),
            })?;
            x.affine(0.5, 0.5)?.to_dtype(DType::F32)?
        };
        let mut flat: Vec<f32> = x.to_device(&Device::Cpu)?.flatten_all()?.to_vec1()?;
        drop(x);
        flat.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
        let crops: Vec<Vec<f32>> = (0..n)
            .map(|k| imageops::crop(&flat[k * 3 * pw * ph..(k + 1) * 3 * pw * ph], 3, pw, ph, w, h))
            .collect();
        drop(flat);
        let mut outs = Vec::with_capacity(n);
        for (mut rgb, p) in crops.into_iter().zip(batch) {
            if let RestorationInput::Prompt(prompt) = &opts.restoration_prompt {
                consistency::apply(&mut rgb, &p.rgb, w, h, prompt, opts.consistency)?;
            }
            colorfix::apply(opts.color_fix, &mut rgb, &p.rgb, w, h);
            outs.push(Planar {
                width: w,
                height: h,
                rgb,
                alpha: p.alpha.clone(),
            });
        }
        report(Stage::Decoding, 1, 1)?;
        Ok(outs)
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

impl Inner {
    /// One guided prediction for latents `x_in` (`[n, c, h, w]`, the model's dtype) at
    /// timestep `t`: the adaptor once per distinct restoration context, the backbone once per
    /// pass, in one batch each, combined with the plan's coefficients. Returns f32.
    #[allow(clippy::too_many_arguments)]
    fn predict(
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

    /// Estimated working memory of one denoising step on a `th × tw` latent tile with
    /// `n_unet` backbone and `n_ad` adaptor batch items: the skip features both networks keep,
    /// the adaptor's signals, a few full-resolution temporaries, the attention scratch.
    fn step_bytes(&self, th: usize, tw: usize, n_unet: usize, n_ad: usize) -> u64 {
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
    fn plan_call(
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
        let c_r = opts.restoration_prompt.text();
        let passes = plan_passes(
            opts.restoration_guidance,
            opts.semantic_guidance,
            c_r == opts.restoration_null_prompt,
            opts.semantic_prompt == opts.negative_prompt,
        );
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

    /// Cross-checks the components.
    fn check(&self) -> Result<()> {
        let lc = self.vae.latent_channels();
        let u = self.unet.config();
        if u.in_channels != lc {
            return Err(Error::model_load(
                &self.path,
                format!("unet in_channels {} ≠ vae latent_channels {lc}", u.in_channels),
            ));
        }
        let a = self.adaptor.config();
        if a.body.block_out_channels != u.block_out_channels || a.body.layers_per_block != u.layers_per_block
        {
            return Err(Error::model_load(
                &self.path,
                "the adaptor's down path does not match the UNet's",
            ));
        }
        let hidden = self.text.encoder.config().hidden_size;
        if u.cross_attention_dim.iter().any(|&d| d != hidden) {
            return Err(Error::model_load(
                &self.path,
                format!(
                    "unet cross_attention_dim {:?} ≠ text encoder hidden_size {hidden}",
                    u.cross_attention_dim
                ),
            ));
        }
        let r_hidden = self
            .restoration_text
            .as_ref()
            .map_or(hidden, |t| t.encoder.config().hidden_size);
        if a.body.cross_attention_dim.iter().any(|&d| d != r_hidden) {
            return Err(Error::model_load(
                &self.path,
                "the adaptor's cross_attention_dim does not match its text encoder",
            ));
        }
        if a.hint_mode == HintMode::Latent && a.hint_channels != lc {
            return Err(Error::model_load(
                &self.path,
                "the adaptor's hint_channels differ from the VAE's latent channels",
            ));
        }
        Ok(())
    }
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
