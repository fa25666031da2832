//! The [`Restorer`]: a loaded SPIRE model and the restoration pipeline (SPIRE.md §2.4–§2.5).
//!
//! One `restore` call is planned from the sizes alone, then runs in named stages, each a
//! function with its inputs and outputs (docs/architecture.md draws them with the options
//! each one reads):
//!
//! | # | stage | function | in → out |
//! |---|-------|----------|----------|
//! | 0 | plan memory and tiles | [`memory`](self) `Inner::plan_call` | sizes, options → `RunPlan` |
//! | – | convert, enlarge | `Restorer::restore_batch` | images → planar RGB in [0, 1] at the output size |
//! | 1 | prepare geometry | `Inner::prepare_geometry` | planar batch → `Geometry`, padded tensor |
//! | 2 | encode prompts | `guidance` `Inner::encode_prompts` | options → guidance passes, contexts |
//! | 3 | choose the start | `start` `Inner::schedule`, `Inner::start` | options, padded input → schedule, hint, start latents |
//! | 4 | denoise | `Inner::denoise` (`guidance` `Inner::predict`) | start, contexts → latents |
//! | 5 | decode | `Inner::decode` | latents → cropped planar RGB |
//! | 6–7 | consistency, colour fix | `finish` | restored + input planes → output planes |
//! | – | convert back | `Planar::to_image` | planes → the input's layout and sample type |
//!
//! Each denoising step runs the adaptor once per distinct restoration context and the backbone
//! once per guidance pass, all in one batch, and combines them as [`guidance`](self) describes.
//! Every draw of noise comes from its own seeded stream ([`crate::rng::RestoreNoise`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::colorfix;
use crate::consistency;
use crate::error::{Error, Result};
use crate::image::{Image, ImageView, Planar};
use crate::imageops;
use crate::model::adaptor::HintMode;
use crate::model::{Adaptor, Autoencoder, ClipTextModel, ClipTokenizer, LoadOptions, UNet2DConditionModel};
use crate::options::{ModelDefaults, Progress, RestorationInput, RestoreOptions, Stage};
use crate::plan::RunPlan;
use crate::prompt::RestorationPrompt;
use crate::rng::{self, RestoreNoise};
use crate::scheduler::SchedulerConfig;

mod guidance;
mod memory;
mod start;

use guidance::Prompts;
use start::{Schedule, Start};

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
        let t0 = std::time::Instant::now();
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
        Self::assemble(inner, t0)
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
        let t0 = std::time::Instant::now();
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
        Self::assemble(inner, t0)
    }

    /// Assembles a restorer from components built in memory.
    ///
    /// # Errors
    /// [`Error::ModelLoad`] if the components do not fit together.
    pub fn from_parts(parts: RestorerParts) -> Result<Self> {
        let t0 = std::time::Instant::now();
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
        Self::assemble(inner, t0)
    }

    /// Cross-checks the components, logs the load (`tracing` info) and wraps them.
    fn assemble(inner: Inner, t0: std::time::Instant) -> Result<Self> {
        inner.check()?;
        tracing::info!(
            "loaded {} on {} ({:?}) in {:.2} s",
            inner.path.display(),
            crate::device::device_name(&inner.device),
            inner.dtype,
            t0.elapsed().as_secs_f64()
        );
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
    /// let opts = r.default_options().with_seed(7);
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
                    let prompt = self.resolve_prompt(img, opts, None)?;
                    tracing::info!("image {i}: estimated restoration prompt \"{prompt}\"");
                    o.restoration_prompt = RestorationInput::Prompt(prompt);
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
                results[j] = Some(o.to_image(images[j].color(), images[j].sample_type()));
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
        Ok(self.inner.encode_restoration_pooled(text)?.0)
    }

    /// Restores a batch of equal-size planar images (already enlarged to the output size):
    /// the seven stages in order. Returns them cropped to that size.
    fn run(
        &self,
        batch: &[&Planar],
        seeds: &[u64],
        opts: &RestoreOptions,
        mem: &RunPlan,
    ) -> Result<Vec<Planar>> {
        let m = &*self.inner;
        let report = Reporter { opts };
        report.at(Stage::Encoding, 0, 1)?;
        // 1. Geometry: the batch padded by reflection to the latent multiple.
        let (g, y) = m.prepare_geometry(batch)?;
        report.message(Stage::Encoding, mem.describe())?;
        // 2. Prompts, as many as the guidance passes need.
        let prompts = m.encode_prompts(opts, g.n)?;
        // 3. The start: the schedule, the hint, the start latents.
        let mut schedule = m.schedule(opts)?;
        let start = m.start(y, &g, seeds, opts, &schedule, prompts.plan.r_used.len(), mem)?;
        // 4. Denoising: guided predictions over the latent tiles, one scheduler step each.
        let latents = m.denoise(start, &mut schedule, &prompts, &g, seeds, opts, mem, &report)?;
        // 5. Decoding, cropped to the output size.
        report.at(Stage::Decoding, 0, 1)?;
        let crops = m.decode(latents, &g, mem)?;
        // 6–7. Measurement consistency and the colour fix, per image.
        let outs = finish(crops, batch, &g, opts)?;
        report.at(Stage::Decoding, 1, 1)?;
        Ok(outs)
    }
}

/// The sizes one batch has through the pipeline (stage 1).
struct Geometry {
    /// Images in the batch.
    n: usize,
    /// The (enlarged) input's size, which is the output's.
    w: usize,
    h: usize,
    /// Padded to the latent multiple.
    pw: usize,
    ph: usize,
    /// The latent's size and channels.
    lw: usize,
    lh: usize,
    lc: usize,
    /// Pixels per latent cell.
    f: usize,
}

/// The progress reports of one call: each asks the callback whether to go on.
struct Reporter<'a> {
    opts: &'a RestoreOptions,
}

impl Reporter<'_> {
    fn send(&self, stage: Stage, step: usize, total: usize, message: Option<String>) -> Result<()> {
        match &self.opts.progress {
            Some(cb)
                if !cb(&Progress {
                    stage,
                    step,
                    total,
                    message,
                }) =>
            {
                Err(Error::Cancelled)
            }
            _ => Ok(()),
        }
    }

    /// `step` of `total` in `stage`.
    fn at(&self, stage: Stage, step: usize, total: usize) -> Result<()> {
        self.send(stage, step, total, None)
    }

    /// A message (logged too) at the start of `stage`.
    fn message(&self, stage: Stage, msg: String) -> Result<()> {
        tracing::info!("{msg}");
        if self.opts.progress.is_some() {
            self.send(stage, 0, 1, Some(msg))?;
        }
        Ok(())
    }
}

/// Stages 6 and 7 on the CPU, per image: measurement consistency with the input under the
/// prompt's degradation (`consistency`), then the colour fix (`color_fix`); the alpha channel
/// is the input's.
fn finish(
    crops: Vec<Vec<f32>>,
    batch: &[&Planar],
    g: &Geometry,
    opts: &RestoreOptions,
) -> Result<Vec<Planar>> {
    let (w, h) = (g.w, g.h);
    let mut outs = Vec::with_capacity(crops.len());
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
    Ok(outs)
}

impl Inner {
    /// Stage 1: the batch's geometry, and the batch padded by reflection to the latent
    /// multiple as one `[n, 3, ph, pw]` tensor in [0, 1] (the model's dtype and device).
    fn prepare_geometry(&self, batch: &[&Planar]) -> Result<(Geometry, Tensor)> {
        let n = batch.len();
        let (w, h) = (batch[0].width, batch[0].height);
        let f = self.vae.downscale_factor();
        let mult = f * self.unet.config().downscale_factor();
        let (pw, ph) = (w.div_ceil(mult) * mult, h.div_ceil(mult) * mult);
        let g = Geometry {
            n,
            w,
            h,
            pw,
            ph,
            lw: pw / f,
            lh: ph / f,
            lc: self.vae.latent_channels(),
            f,
        };
        let mut padded = Vec::with_capacity(n * 3 * pw * ph);
        for p in batch {
            padded.extend(imageops::pad_reflect(&p.rgb, 3, w, h, pw, ph));
        }
        let y = Tensor::from_vec(padded, (n, 3, ph, pw), &self.device)?.to_dtype(self.dtype)?;
        Ok((g, y))
    }

    /// Stage 4: from the start, one guided prediction per timestep (over the plan's latent
    /// tiles, blended) and one scheduler step (with stream [`RestoreNoise::Step`] noise when
    /// the scheduler is stochastic); fails on non-finite latents, naming the step.
    #[allow(clippy::too_many_arguments)]
    fn denoise(
        &self,
        start: Start,
        schedule: &mut Schedule,
        prompts: &Prompts,
        g: &Geometry,
        seeds: &[u64],
        opts: &RestoreOptions,
        mem: &RunPlan,
        report: &Reporter,
    ) -> Result<Tensor> {
        let Start { hint, mut latents } = start;
        let (n, lc, lh, lw) = (g.n, g.lc, g.lh, g.lw);
        let steps = schedule.steps();
        let first = schedule.start;
        let sched = &mut schedule.sched;
        let total = steps - first;
        let tiles = &mem.tiles;
        let hint_scale = match self.adaptor.hint_mode() {
            HintMode::Latent => 1,
            HintMode::Pixel => g.f,
        };
        report.at(Stage::Denoising, 0, total)?;
        for i in first..steps {
            let t = sched.timesteps()[i] as f32;
            let x_in = sched.scale_model_input(&latents, i)?.to_dtype(self.dtype)?;
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
                    self.predict(
                        xt,
                        t,
                        &ht,
                        &prompts.adaptor_ctx,
                        &prompts.unet_ctx,
                        &prompts.plan,
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
                    .map(|&s| {
                        rng::randn(
                            rng::restore_stream(s, RestoreNoise::Step(i)),
                            (1, lc, lh, lw),
                            &self.device,
                        )
                    })
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
                    i + 1 - first
                )
            })?;
            report.at(Stage::Denoising, i + 1 - first, total)?;
        }
        Ok(latents)
    }

    /// Stage 5: the latents decoded (in the plan's autoencoder tiles) to `[0, 1]` pixels,
    /// cropped to the output size: one planar RGB buffer per image.
    fn decode(&self, latents: Tensor, g: &Geometry, mem: &RunPlan) -> Result<Vec<Vec<f32>>> {
        // f32 latents in, f32 image out: the autoencoder computes in its own dtype (f32 for a
        // `force_upcast` model loaded in f16), so its output is never narrowed to f16. Each
        // full-size copy is dropped as soon as the next exists (the plan counts two).
        let x = {
            let z = self.vae.unscale_latents(&latents)?;
            drop(latents);
            let x = self.vae.decode_tiled(&z, mem.decode)?;
            drop(z);
            check_finite(&x, || match &self.vae {
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
        let (pw, ph) = (g.pw, g.ph);
        Ok((0..g.n)
            .map(|k| imageops::crop(&flat[k * 3 * pw * ph..(k + 1) * 3 * pw * ph], 3, pw, ph, g.w, g.h))
            .collect())
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
