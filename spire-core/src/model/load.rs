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
use super::unet::UNet2DConditionModel;
use super::vae::AutoencoderKL;
use crate::error::{Error, Result};
use crate::weights::{component_files, var_builder, TensorStore};

/// Where and how to load weights.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The compute device (CPU by default; CUDA / Metal with the `cuda` / `metal` features).
    pub device: Device,
    /// The dtype the weights are converted to (f32 by default; f16/bf16 make sense on GPUs).
    pub dtype: DType,
    /// A weight-file variant such as `"fp16"` (`diffusion_pytorch_model.fp16.safetensors`).
    pub variant: Option<String>,
    /// The adaptor folder, when it is not the model's `adaptor/` (or `controlnet/`) subfolder;
    /// e.g. a diffusers `ControlNetModel` folder used with a plain Stable Diffusion folder.
    pub adaptor: Option<std::path::PathBuf>,
    /// Whether the layers may use the fused f32 CPU kernels (on by default, unless the
    /// environment sets `SPIRE_FUSED_KERNELS=0`). Off, every layer runs candle's operations —
    /// the path a GPU takes — which compute the same function; the parity tests run both ways.
    /// No effect off the CPU or outside f32.
    pub fused_kernels: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            dtype: DType::F32,
            variant: None,
            adaptor: None,
            fused_kernels: super::kernels::fused_default(),
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
    let vb = var_builder(store, opts.dtype, &opts.device);
    super::kernels::building_with(opts.fused_kernels, || f(vb))
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
