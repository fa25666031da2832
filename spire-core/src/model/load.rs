//! Loading model components from diffusers / transformers folders (`config.json` +
//! safetensors weights, memory-mapped; f32, f16 or bf16 on disk).
//!
//! Every failure is an [`Error`]: a missing folder or file is [`Error::Io`] (kind `NotFound`)
//! naming the path; a corrupt or truncated safetensors file, a missing tensor, a tensor of the
//! wrong shape (key, expected and actual shape) or an unsupported config value is
//! [`Error::ModelLoad`].

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::adaptor::{Adaptor, AdaptorConfig};
use super::clip::ClipTextModel;
use super::config::{ClipTextConfig, Json, UNetConfig, VaeConfig};
use super::ldm;
use super::tokenizer::ClipTokenizer;
use super::unet::UNet2DConditionModel;
use super::vae::AutoencoderKL;
use crate::error::{Error, Result};
use crate::weights::{component_files, var_builder, TensorStore};

builders!(LoadOptions {
    with_device => device: Device,
    with_dtype => dtype: DType,
    with_variant => variant: Option<String>,
    with_adaptor => adaptor: Option<std::path::PathBuf>,
    with_config => config: Option<std::path::PathBuf>,
    with_prediction_type => prediction_type: Option<crate::scheduler::PredictionType>,
    with_fused_kernels => fused_kernels: bool,
    with_weight_dtype => weight_dtype: Option<DType>,
});

/// Where and how to load weights: [`LoadOptions::default`] (the CPU, f32) with the `with_*`
/// builders or field assignment; `#[non_exhaustive]`, so new fields are not breaking.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LoadOptions {
    /// The compute device (CPU by default; CUDA / Metal with the `cuda` / `metal` features).
    pub device: Device,
    /// The dtype the weights are converted to (f32 by default; f16/bf16 make sense on GPUs).
    pub dtype: DType,
    /// A weight-file variant such as `"fp16"` (`diffusion_pytorch_model.fp16.safetensors`).
    pub variant: Option<String>,
    /// The adaptor, when it is not the model's `adaptor/` (or `controlnet/`) subfolder: an
    /// adaptor or diffusers `ControlNetModel` folder, or a single-file ControlNet
    /// (`.safetensors` with the original `control_model.*` names or diffusers names), e.g.
    /// `control_v11f1e_sd15_tile` next to a Stable Diffusion checkpoint.
    pub adaptor: Option<std::path::PathBuf>,
    /// For single-file checkpoints ([`crate::Restorer::from_single_file`]): a folder holding
    /// what the file lacks, laid out as a diffusers model folder — `tokenizer/` (required),
    /// optionally `scheduler/scheduler_config.json`, `spire.json`, and `unet/`, `vae/`,
    /// `text_encoder/` `config.json` files that replace the configs inferred from the tensors
    /// (diffusers' `config=`). A diffusers folder of the same model works as is.
    pub config: Option<std::path::PathBuf>,
    /// What the backbone predicts, overriding the scheduler config (diffusers'
    /// `prediction_type`). Single files cannot say: SD 1.x defaults to ε, SD 2.x to v (the
    /// 768-pixel SD 2.x models); SD 2.x *base* (512) models need `Epsilon`.
    pub prediction_type: Option<crate::scheduler::PredictionType>,
    /// Whether the layers may use the fused f32 CPU kernels (on by default, unless the
    /// environment sets `SPIRE_FUSED_KERNELS=0`). Off, every layer runs candle's operations —
    /// the path a GPU takes — which compute the same function; the parity tests run both ways.
    /// No effect off the CPU or outside f32.
    pub fused_kernels: bool,
    /// The dtype convolution and linear weights are *kept* in, when it differs from
    /// [`LoadOptions::dtype`] (`None`: kept in `dtype`). `F16` or `BF16` with `dtype` f32 halves
    /// the model's memory on the CPU while the arithmetic stays f32: the fused kernels widen
    /// each layer's weights when it runs (F16C on x86), into one reused buffer; candle's path
    /// widens them per call. Norms, biases and embeddings stay in `dtype`.
    pub weight_dtype: Option<DType>,
}

impl LoadOptions {
    /// [`Error::InvalidArgument`] unless `weight_dtype` is a float dtype weights can be kept in.
    pub(crate) fn check_weight_dtype(&self) -> Result<()> {
        match self.weight_dtype {
            None | Some(DType::F32 | DType::F16 | DType::BF16) => Ok(()),
            Some(other) => Err(Error::invalid_arg(
                "weight_dtype",
                format!("weights can be kept in f32, f16 or bf16, not {other:?}"),
            )),
        }
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            dtype: DType::F32,
            variant: None,
            adaptor: None,
            config: None,
            prediction_type: None,
            fused_kernels: super::kernels::fused_default(),
            weight_dtype: None,
        }
    }
}

/// The config and weights of one component folder.
pub(crate) struct Component<'a> {
    pub(crate) json: Json<'a>,
    pub(crate) store: Arc<TensorStore>,
}

pub(crate) fn open_component<'a>(
    dir: &Path,
    config_path: &'a Path,
    stems: &[&str],
    opts: &LoadOptions,
) -> Result<Component<'a>> {
    if !config_path.is_file() {
        return Err(Error::io(
            config_path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "config.json not found"),
        ));
    }
    let json = Json::read(config_path)?;
    let files = component_files(dir, stems, opts.variant.as_deref())?;
    let store = Arc::new(TensorStore::open(&files)?);
    Ok(Component { json, store })
}

/// Builds a model from a `VarBuilder` over a store, turning weight errors into
/// [`Error::ModelLoad`] for `dir`.
pub(crate) fn build<T>(
    dir: &Path,
    store: Arc<TensorStore>,
    opts: &LoadOptions,
    f: impl FnOnce(VarBuilder<'static>) -> candle_core::Result<T>,
) -> Result<T> {
    opts.check_weight_dtype()?;
    let vb = var_builder(store, opts.dtype, &opts.device);
    super::kernels::building_with(opts.fused_kernels, || {
        super::kernels::keep_weights_in(opts.weight_dtype, || f(vb))
    })
    .map_err(|e| Error::model_load(dir, e.to_string()))
}

impl UNet2DConditionModel {
    /// Loads a diffusers `unet/` folder.
    ///
    /// # Errors
    /// [`Error::Io`] for a missing folder or file; [`Error::ModelLoad`] for a bad config or
    /// weights; [`Error::Device`] if the device fails.
    pub fn from_dir(dir: &Path, opts: &LoadOptions) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let c = open_component(dir, &cfg_path, &["diffusion_pytorch_model"], opts)?;
        let cfg = UNetConfig::from_json(&c.json, false)?;
        build(dir, c.store, opts, |vb| Self::new(&cfg, vb))
    }
}

impl AutoencoderKL {
    /// Loads a diffusers `vae/` folder.
    ///
    /// # Errors
    /// As [`UNet2DConditionModel::from_dir`].
    ///
    /// A float16 load of a config with `force_upcast` (the default) builds the autoencoder in
    /// float32, as diffusers' pipelines upcast it: SD's VAE overflows in float16. Its methods
    /// take and return tensors of any float dtype ([`crate::model::Autoencoder`]).
    pub fn from_dir(dir: &Path, opts: &LoadOptions) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let c = open_component(dir, &cfg_path, &["diffusion_pytorch_model"], opts)?;
        let cfg = VaeConfig::from_json(&c.json)?;
        let upcast;
        let opts = if opts.dtype == DType::F16 && cfg.force_upcast {
            upcast = LoadOptions {
                dtype: DType::F32,
                ..opts.clone()
            };
            &upcast
        } else {
            opts
        };
        build(dir, c.store, opts, |vb| Self::new(&cfg, vb))
    }
}

impl ClipTextModel {
    /// Loads a transformers `text_encoder/` folder (`CLIPTextModel` or
    /// `CLIPTextModelWithProjection`).
    ///
    /// # Errors
    /// As [`UNet2DConditionModel::from_dir`].
    pub fn from_dir(dir: &Path, opts: &LoadOptions) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let c = open_component(dir, &cfg_path, &["model", "pytorch_model"], opts)?;
        let cfg = ClipTextConfig::from_json(&c.json)?;
        build(dir, c.store, opts, |vb| Self::new(&cfg, vb))
    }
}

impl Adaptor {
    /// Loads an `adaptor/` folder or a diffusers `ControlNetModel` folder.
    ///
    /// # Errors
    /// As [`UNet2DConditionModel::from_dir`].
    pub fn from_dir(dir: &Path, opts: &LoadOptions) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let c = open_component(dir, &cfg_path, &["diffusion_pytorch_model", "model"], opts)?;
        let cfg = AdaptorConfig::from_json(&c.json)?;
        build(dir, c.store, opts, |vb| Self::new(&cfg, vb))
    }
}

impl Adaptor {
    /// Loads an adaptor from a folder ([`Adaptor::from_dir`]) or a single-file ControlNet for
    /// the backbone `unet` (its body copies the backbone: `ldm::controlnet_config`).
    ///
    /// # Errors
    /// As [`UNet2DConditionModel::from_dir`]; a file that is not a ControlNet names what it is.
    pub fn from_path(path: &Path, unet: &UNetConfig, opts: &LoadOptions) -> Result<Self> {
        if path.is_dir() {
            return Self::from_dir(path, opts);
        }
        let store = TensorStore::open(&[path.to_path_buf()])?;
        let err = |m: String| Error::model_load(path, m);
        let (cfg, store) = match ldm::controlnet_prefix(&store).map_err(err)? {
            Some(prefix) => {
                let cfg = ldm::controlnet_config(&store, prefix, unet).map_err(err)?;
                let map = ldm::unet_map(&store, prefix, cfg.body.layers_per_block[0]).map_err(err)?;
                (cfg, store.remap(map).map_err(err)?)
            }
            None => {
                let (conditioning_channels, widths) = infer_diffusers_hint(&store).map_err(err)?;
                let mut cfg = AdaptorConfig::from_unet(
                    unet,
                    super::adaptor::HintMode::Pixel,
                    super::adaptor::Fusion::Additive,
                    unet.in_channels,
                );
                cfg.conditioning_channels = conditioning_channels;
                cfg.conditioning_embedding_out_channels = widths;
                (cfg, store)
            }
        };
        build(path, Arc::new(store), opts, |vb| Self::new(&cfg, vb))
    }
}

/// The hint widths of a diffusers-named ControlNet file.
fn infer_diffusers_hint(store: &TensorStore) -> std::result::Result<(usize, Vec<usize>), String> {
    let conv_in = store
        .shape("controlnet_cond_embedding.conv_in.weight")
        .filter(|s| s.len() == 4)
        .ok_or("`controlnet_cond_embedding.conv_in.weight` is not a conv kernel")?;
    let mut widths = vec![conv_in[0]];
    let mut i = 1;
    while let Some(s) = store.shape(&format!("controlnet_cond_embedding.blocks.{i}.weight")) {
        widths.push(s[0]);
        i += 2;
    }
    Ok((conv_in[1], widths))
}

/// The components of a single-file Stable Diffusion checkpoint ([`SingleFile::load`]).
#[derive(Debug)]
pub struct SingleFile {
    /// SD 1.x or 2.x, as detected from the tensors.
    pub generation: ldm::Generation,
    /// The backbone.
    pub unet: UNet2DConditionModel,
    /// The autoencoder.
    pub vae: AutoencoderKL,
    /// The tokenizer (from [`LoadOptions::config`]).
    pub tokenizer: ClipTokenizer,
    /// The text encoder.
    pub text_encoder: ClipTextModel,
}

/// A config file of the config folder, if the folder has it.
fn config_file(opts: &LoadOptions, rel: &str) -> Option<std::path::PathBuf> {
    let p = opts.config.as_ref()?.join(rel);
    p.is_file().then_some(p)
}

impl SingleFile {
    /// Loads the UNet, autoencoder and text encoder of a single-file SD 1.x / 2.x checkpoint
    /// (module [`ldm`]); [`crate::Restorer::from_single_file`] adds the adaptor.
    ///
    /// # Errors
    /// [`Error::ModelLoad`] naming the file: pickles, unknown layouts (with their first keys),
    /// missing components or tokenizer, tensors of the wrong shape.
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Self> {
        load_single_file(path, opts)
    }
}

/// The scheduler of a single file: the config folder's `scheduler/scheduler_config.json`, or
/// SD's schedule with the generation's prediction (SD 1.x ε, SD 2.x v, as diffusers' default
/// configs); [`LoadOptions::prediction_type`] overrides either.
pub(crate) fn single_file_scheduler(
    g: ldm::Generation,
    opts: &LoadOptions,
) -> Result<crate::scheduler::SchedulerConfig> {
    use crate::scheduler::{PredictionType, SchedulerConfig};
    let mut s = match config_file(opts, "scheduler/scheduler_config.json") {
        Some(p) => SchedulerConfig::from_file(&p)?,
        None => SchedulerConfig {
            prediction_type: match g {
                ldm::Generation::Sd1 => PredictionType::Epsilon,
                ldm::Generation::Sd2 => PredictionType::VPrediction,
            },
            ..SchedulerConfig::default()
        },
    };
    if let Some(p) = opts.prediction_type {
        s.prediction_type = p;
    }
    Ok(s)
}

/// The UNet's config and its tensors under diffusers names (f32 on `opts.device`), to
/// initialise an adaptor from a single-file backbone.
pub(crate) fn single_file_unet_tensors(
    path: &Path,
    opts: &LoadOptions,
) -> Result<std::collections::HashMap<String, candle_core::Tensor>> {
    let store = TensorStore::open(&[path.to_path_buf()])?;
    let err = |m: String| Error::model_load(path, m);
    let g = ldm::detect(&store).map_err(err)?.generation;
    let cfg = unet_config(&store, g, opts).map_err(|e| match e {
        Ok(e) => e,
        Err(m) => err(m),
    })?;
    let map = ldm::unet_map(&store, ldm::UNET, cfg.layers_per_block[0]).map_err(err)?;
    store
        .remap(map)
        .and_then(|s| s.load_all(DType::F32, &opts.device))
        .map_err(err)
}

/// The UNet config: the config folder's `unet/config.json`, or inferred from the tensors.
fn unet_config(
    store: &TensorStore,
    g: ldm::Generation,
    opts: &LoadOptions,
) -> std::result::Result<UNetConfig, std::result::Result<Error, String>> {
    match config_file(opts, "unet/config.json") {
        Some(p) => Json::read(&p)
            .and_then(|j| UNetConfig::from_json(&j, false))
            .map_err(Ok),
        None => ldm::infer_unet(store, ldm::UNET, g, false).map_err(Err),
    }
}

fn load_single_file(path: &Path, opts: &LoadOptions) -> Result<SingleFile> {
    let store = TensorStore::open(&[path.to_path_buf()])?;
    let err = |m: String| Error::model_load(path, m);
    let det = ldm::detect(&store).map_err(err)?;
    let g = det.generation;
    let tok_dir = match &opts.config {
        Some(c) => c.join("tokenizer"),
        None => {
            return Err(Error::model_load(
                path,
                format!(
                    "a single-file checkpoint holds no tokenizer: pass a config folder with \
                     `tokenizer/` (vocab.json + merges.txt), e.g. the diffusers folder of {} \
                     (`--config DIR`, `LoadOptions::config`)",
                    g.name()
                ),
            ))
        }
    };
    let tokenizer = ClipTokenizer::from_dir(&tok_dir)?;

    let unet_cfg = unet_config(&store, g, opts).map_err(|e| match e {
        Ok(e) => e,
        Err(m) => err(m),
    })?;
    let map = ldm::unet_map(&store, ldm::UNET, unet_cfg.layers_per_block[0]).map_err(err)?;
    let unet_store = Arc::new(store.remap(map).map_err(err)?);
    let unet = build(path, unet_store, opts, |vb| {
        UNet2DConditionModel::new(&unet_cfg, vb)
    })?;

    let vae_cfg = match config_file(opts, "vae/config.json") {
        Some(p) => VaeConfig::from_json(&Json::read(&p)?)?,
        None => ldm::infer_vae(&store).map_err(err)?,
    };
    let map = ldm::vae_map(&store, vae_cfg.block_out_channels.len()).map_err(err)?;
    let vae_store = Arc::new(store.remap(map).map_err(err)?);
    let upcast;
    let vae_opts = if opts.dtype == DType::F16 && vae_cfg.force_upcast {
        upcast = LoadOptions {
            dtype: DType::F32,
            ..opts.clone()
        };
        &upcast
    } else {
        opts
    };
    let vae = build(path, vae_store, vae_opts, |vb| AutoencoderKL::new(&vae_cfg, vb))?;

    let text_cfg = match config_file(opts, "text_encoder/config.json") {
        Some(p) => ClipTextConfig::from_json(&Json::read(&p)?)?,
        None => ldm::infer_text(&store, g, tokenizer.eos_id()).map_err(err)?,
    };
    let map = ldm::text_map(&store, g, text_cfg.num_hidden_layers, text_cfg.hidden_size).map_err(err)?;
    let text_store = Arc::new(store.remap(map).map_err(err)?);
    let text_encoder = build(path, text_store, opts, |vb| ClipTextModel::new(&text_cfg, vb))?;
    Ok(SingleFile {
        generation: g,
        unet,
        vae,
        tokenizer,
        text_encoder,
    })
}
