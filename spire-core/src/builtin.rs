//! The built-in model (`spire-tiny`) and its single-file format.
//!
//! A built-in file is one safetensors file: every tensor of the model folder stored as f16
//! under `<component>/<name>` (`unet/conv_in.weight`, `adaptor/…`), and every config and
//! tokenizer file as a metadata string under its path (`unet/config.json`,
//! `tokenizer/vocab.json`, …). [`export`] packs a model folder; [`Restorer::builtin`] reads
//! the file compiled into the library (`assets/spire-tiny.safetensors`), so it needs no files
//! at run time. [`unpack`] writes a built-in file back out as a model folder (f32 weights), so
//! the built-in model can be trained further, e.g. a new adaptor on its backbone.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use crate::model::adaptor::AdaptorConfig;
use crate::model::config::{ClipTextConfig, Json, UNetConfig};
use crate::model::{Adaptor, Autoencoder, ClipTextModel, ClipTokenizer, LoadOptions, UNet2DConditionModel};
use crate::restorer::{Restorer, RestorerParts};
use crate::scheduler::SchedulerConfig;

const FORMAT: &str = "spire-builtin/1";

/// Components whose weights go into the file, with their weight-file stems.
const WEIGHTS: &[(&str, &[&str])] = &[
    ("unet", &["diffusion_pytorch_model"]),
    ("text_encoder", &["model"]),
    ("adaptor", &["diffusion_pytorch_model", "model"]),
    ("restoration_text_encoder", &["model"]),
];

/// Text files copied into the metadata when present.
const TEXT: &[&str] = &[
    "unet/config.json",
    "vae/config.json",
    "text_encoder/config.json",
    "adaptor/config.json",
    "scheduler/scheduler_config.json",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/tokenizer_config.json",
    "tokenizer/special_tokens_map.json",
    "restoration_text_encoder/config.json",
    "restoration_tokenizer/vocab.json",
    "restoration_tokenizer/merges.txt",
    "restoration_tokenizer/tokenizer_config.json",
    "restoration_tokenizer/special_tokens_map.json",
    "spire.json",
];

/// Packs a model folder (with a pixel-shuffle autoencoder) into the built-in format.
///
/// # Errors
/// [`Error::Io`] / [`Error::ModelLoad`] for missing or bad files; [`Error::Unsupported`] for
/// an `AutoencoderKL` (its weights are not packed).
pub fn export(dir: &Path) -> Result<Vec<u8>> {
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), FORMAT.to_string());
    for f in TEXT {
        let p = dir.join(f);
        if p.is_file() {
            meta.insert((*f).to_string(), crate::io::read_text(&p)?);
        }
    }
    if !meta
        .get("vae/config.json")
        .is_some_and(|v| v.contains("PixelShuffleAutoencoder"))
    {
        return Err(Error::Unsupported(
            "the built-in format holds models with a pixel-shuffle autoencoder".into(),
        ));
    }
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (comp, stems) in WEIGHTS {
        let cdir = dir.join(comp);
        if !cdir.is_dir() {
            continue;
        }
        for f in crate::weights::component_files(&cdir, stems, None)? {
            let t = candle_core::safetensors::load(&f, &Device::Cpu)
                .map_err(|e| Error::model_load(&f, e.to_string()))?;
            for (k, v) in t {
                tensors.push((format!("{comp}/{k}"), v.to_dtype(DType::F16)?));
            }
        }
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    safetensors::serialize(tensors, Some(meta)).map_err(|e| Error::Internal(format!("serialize: {e}")))
}

/// A built-in file's text files by path, and its f16 tensors by component and key.
type Parts = (HashMap<String, String>, HashMap<String, HashMap<String, Tensor>>);

/// Reads the tensors and text files of a built-in file, checking its format; tensors keep
/// their f16 values, grouped by component.
fn read(bytes: &[u8], name: &str) -> Result<Parts> {
    let bad = |m: String| Error::model_load(name, m);
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let text = meta.metadata().clone().unwrap_or_default();
    if text.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(bad(format!("not a {FORMAT} file")));
    }
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    let mut by_comp: HashMap<String, HashMap<String, Tensor>> = HashMap::new();
    for (k, view) in st.tensors() {
        let (comp, key) = k
            .split_once('/')
            .ok_or_else(|| bad(format!("tensor `{k}` has no component")))?;
        if view.dtype() != safetensors::Dtype::F16 {
            return Err(bad(format!("tensor `{k}` is not f16")));
        }
        let t = Tensor::from_raw_buffer(view.data(), DType::F16, view.shape(), &Device::Cpu)
            .map_err(|e| bad(format!("tensor `{k}`: {e}")))?;
        by_comp
            .entry(comp.to_string())
            .or_default()
            .insert(key.to_string(), t);
    }
    Ok((text, by_comp))
}

/// Writes a built-in file (`bytes`, named `name` in errors) out as a model folder at `dir`:
/// every text file under its path and every component's weights as f32
/// `<component>/<stem>.safetensors` (the first stem [`export`] reads), so that [`export`] of
/// the folder gives the same tensors and texts back, and the folder loads with
/// [`Restorer::from_pretrained`] and trains with `spire train`. Existing files are overwritten;
/// nothing is written unless every text file and component is one the format knows (so no
/// name in the file can point outside `dir`).
///
/// # Errors
/// [`Error::ModelLoad`] if the bytes are not a valid built-in file; [`Error::Io`] naming the
/// file that could not be written.
pub fn unpack(bytes: &[u8], name: &str, dir: &Path) -> Result<()> {
    let (text, by_comp) = read(bytes, name)?;
    if let Some(rel) = text
        .keys()
        .find(|r| *r != "format" && !TEXT.contains(&r.as_str()))
    {
        return Err(Error::model_load(name, format!("unknown text file `{rel}`")));
    }
    // Each component with the weight-file stem `export` reads first.
    let mut comps = Vec::with_capacity(by_comp.len());
    for (comp, tensors) in by_comp {
        let Some((_, stems)) = WEIGHTS.iter().find(|(c, _)| *c == comp) else {
            return Err(Error::model_load(name, format!("unknown component `{comp}`")));
        };
        comps.push((comp, stems[0], tensors));
    }
    let write = |rel: &str, data: &[u8]| -> Result<()> {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        crate::io::write_atomic(&p, data)
    };
    for (rel, body) in text.iter().filter(|(r, _)| *r != "format") {
        write(rel, body.as_bytes())?;
    }
    for (comp, stem, tensors) in comps {
        let mut f32s: Vec<(String, Tensor)> = tensors
            .into_iter()
            .map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?)))
            .collect::<Result<_>>()?;
        f32s.sort_by(|a, b| a.0.cmp(&b.0));
        let data = safetensors::serialize(f32s, None)
            .map_err(|e| Error::Internal(format!("serialize {comp}: {e}")))?;
        write(&format!("{comp}/{stem}.safetensors"), &data)?;
    }
    Ok(())
}

/// The built-in file compiled into this build of the library, if it has one.
pub fn builtin_bytes() -> Option<&'static [u8]> {
    #[cfg(spire_builtin)]
    return Some(BYTES);
    #[cfg(not(spire_builtin))]
    None
}

/// Builds a restorer from bytes in the built-in format.
///
/// # Errors
/// [`Error::ModelLoad`] if the bytes are not a valid built-in file.
pub fn load(bytes: &[u8], name: &str) -> Result<Restorer> {
    load_with(bytes, name, &LoadOptions::default())
}

/// [`load`] onto `opts.device` in `opts.dtype`, with `opts.fused_kernels` (the variant and
/// adaptor paths do not apply to a built-in file).
///
/// # Errors
/// As [`load`]; [`Error::Device`] if the weights cannot be moved to the device.
pub fn load_with(bytes: &[u8], name: &str, opts: &LoadOptions) -> Result<Restorer> {
    opts.check_weight_dtype()?;
    crate::model::kernels::building_with(opts.fused_kernels, || {
        crate::model::kernels::keep_weights_in(opts.weight_dtype, || load_inner(bytes, name, opts))
    })
}

fn load_inner(bytes: &[u8], name: &str, opts: &LoadOptions) -> Result<Restorer> {
    let bad = |m: String| Error::model_load(name, m);
    let (text, by_comp) = read(bytes, name)?;
    let get = |f: &str| text.get(f).ok_or_else(|| bad(format!("no `{f}`")));
    let json = |f: &str| -> Result<serde_json::Value> {
        crate::io::parse_json(get(f)?).map_err(|e| bad(format!("{f}: {e}")))
    };
    let vb = |comp: &str| -> Result<VarBuilder<'static>> {
        let m = by_comp
            .get(comp)
            .ok_or_else(|| bad(format!("no `{comp}` weights")))?
            .iter()
            .map(|(k, t)| {
                let t = t.to_dtype(opts.dtype)?.to_device(&opts.device);
                Ok((k.clone(), t.map_err(|e| Error::Device(format!("{name}: {e}")))?))
            })
            .collect::<Result<HashMap<_, _>>>()?;
        Ok(VarBuilder::from_tensors(m, opts.dtype, &opts.device))
    };
    let p = Path::new(name);
    let build = |e: candle_core::Error| bad(e.to_string());
    let ucfg = UNetConfig::from_json(&Json::from_value(p, &json("unet/config.json")?)?, false)?;
    let tcfg = ClipTextConfig::from_json(&Json::from_value(p, &json("text_encoder/config.json")?)?)?;
    let acfg = AdaptorConfig::from_json(&Json::from_value(p, &json("adaptor/config.json")?)?)?;
    let sched = SchedulerConfig::from_json(&Json::from_value(p, &json("scheduler/scheduler_config.json")?)?)?;
    let vae = match json("vae/config.json")? {
        v if v["_class_name"] == "PixelShuffleAutoencoder" => {
            Autoencoder::PixelShuffle(crate::model::PixelShuffle {
                factor: v["factor"].as_u64().unwrap_or(4) as usize,
                scaling_factor: v["scaling_factor"].as_f64().unwrap_or(1.0),
                shift_factor: v["shift_factor"].as_f64().unwrap_or(0.0),
            })
        }
        _ => return Err(bad("only a pixel-shuffle autoencoder can be built in".into())),
    };
    let tokenizer = |prefix: &str| -> Result<ClipTokenizer> {
        let cfg: serde_json::Value = json(&format!("{prefix}/tokenizer_config.json")).unwrap_or_default();
        let pad = match &cfg["pad_token"] {
            serde_json::Value::String(s) => s.clone(),
            v => v["content"].as_str().unwrap_or("<|endoftext|>").to_string(),
        };
        let max_len = cfg["model_max_length"]
            .as_u64()
            .filter(|&n| n <= 4096)
            .unwrap_or(77) as usize;
        ClipTokenizer::from_vocab_merges(
            get(&format!("{prefix}/vocab.json"))?,
            get(&format!("{prefix}/merges.txt"))?,
            &pad,
            max_len,
        )
        .map_err(bad)
    };
    let defaults = match text.get("spire.json") {
        Some(t) => crate::options::ModelDefaults::from_spire_json(t, &format!("{name}: spire.json"))?,
        None => crate::options::ModelDefaults::default(),
    };
    let restoration_text = if text.contains_key("restoration_text_encoder/config.json") {
        let rc = ClipTextConfig::from_json(&Json::from_value(
            p,
            &json("restoration_text_encoder/config.json")?,
        )?)?;
        let tok = if text.contains_key("restoration_tokenizer/vocab.json") {
            tokenizer("restoration_tokenizer")?
        } else {
            tokenizer("tokenizer")?
        };
        Some((
            tok,
            ClipTextModel::new(&rc, vb("restoration_text_encoder")?).map_err(build)?,
        ))
    } else {
        None
    };
    Restorer::from_parts(RestorerParts {
        unet: UNet2DConditionModel::new(&ucfg, vb("unet")?).map_err(build)?,
        vae,
        tokenizer: tokenizer("tokenizer")?,
        text_encoder: ClipTextModel::new(&tcfg, vb("text_encoder")?).map_err(build)?,
        restoration_text,
        adaptor: Adaptor::new(&acfg, vb("adaptor")?).map_err(build)?,
        scheduler: sched,
        defaults,
        device: opts.device.clone(),
        dtype: opts.dtype,
        name: name.to_string(),
    })
}

#[cfg(spire_builtin)]
static BYTES: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/spire-tiny.safetensors"
));

impl Restorer {
    /// The built-in model, `spire-tiny`, compiled into the library: a small SPIRE model
    /// (pixel-shuffle autoencoder, UNet, CLIP text encoder, modulation adaptor with its own
    /// restoration-prompt encoder) trained by this project's recipe (`recipes/spire-tiny/`,
    /// `docs/builtin-model.md`). Loaded once per process; every call returns a handle to the
    /// same weights.
    ///
    /// # Errors
    /// [`Error::Unsupported`] if this build was made without the model file.
    pub fn builtin() -> Result<Restorer> {
        Self::builtin_with(&LoadOptions::default())
    }

    /// [`Restorer::builtin`] on another device, dtype or kernel setting
    /// ([`LoadOptions::device`], [`LoadOptions::dtype`], [`LoadOptions::fused_kernels`]). The
    /// default options return the shared process-wide handle; others load a new copy (the
    /// model is small: a 7.9 MB file).
    ///
    /// # Errors
    /// As [`Restorer::builtin`]; [`Error::Device`] if the device fails.
    pub fn builtin_with(opts: &LoadOptions) -> Result<Restorer> {
        let d = LoadOptions::default();
        if !(opts.device.same_device(&d.device)
            && opts.dtype == d.dtype
            && opts.fused_kernels == d.fused_kernels
            && opts.weight_dtype.is_none())
        {
            #[cfg(spire_builtin)]
            return load_with(BYTES, "builtin:spire-tiny", opts);
        }
        static CELL: OnceLock<std::result::Result<Restorer, String>> = OnceLock::new();
        #[cfg(spire_builtin)]
        let r = CELL.get_or_init(|| load(BYTES, "builtin:spire-tiny").map_err(|e| e.to_string()));
        #[cfg(not(spire_builtin))]
        let r = CELL.get_or_init(|| {
            Err(
                "this build of spire-core has no built-in model (assets/spire-tiny.safetensors was missing)"
                    .into(),
            )
        });
        r.clone().map_err(|m| {
            if m.contains("no built-in model") {
                Error::Unsupported(m)
            } else {
                Error::Internal(m)
            }
        })
    }
}
