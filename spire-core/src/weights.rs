//! Safetensors weight storage behind candle's `VarBuilder`.
//!
//! Files are memory-mapped and their headers validated when opened (a truncated or corrupt file
//! is an error right away, naming the file). Tensors are read on request, converted to the
//! requested dtype (f16/bf16 checkpoints load into an f32 model and the other way round), and
//! checked against the shape the model expects; every failure names the file, the key and both
//! shapes. A few legacy key spellings of old diffusers VAE checkpoints are accepted as aliases.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use safetensors::tensor::{Dtype as StDtype, SafeTensors, TensorInfo};

use crate::error::{Error, Result};

struct File {
    /// Shown in error messages.
    name: PathBuf,
    bytes: memmap2::Mmap,
    /// Offset of the data section (8 + header length).
    data_start: usize,
}

/// A set of safetensors files seen as one name → tensor map. Views made by
/// [`TensorStore::remap`] share the mapped files.
pub(crate) struct TensorStore {
    files: Arc<Vec<File>>,
    index: HashMap<String, (usize, TensorInfo)>,
}

/// Where a remapped tensor comes from: a key of the source store, whole or the rows
/// `start..start + len` of its first axis (a fused q/k/v projection split in three).
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub(crate) key: String,
    pub(crate) rows: Option<(usize, usize)>,
}

fn st_dtype(d: StDtype) -> Option<DType> {
    Some(match d {
        StDtype::F32 => DType::F32,
        StDtype::F16 => DType::F16,
        StDtype::BF16 => DType::BF16,
        StDtype::F64 => DType::F64,
        StDtype::U8 => DType::U8,
        StDtype::U32 => DType::U32,
        StDtype::I64 => DType::I64,
        _ => return None,
    })
}

/// Legacy diffusers VAE attention names (before diffusers 0.14) and the current ones.
const KEY_ALIASES: &[(&str, &str)] = &[
    (".to_q.", ".query."),
    (".to_k.", ".key."),
    (".to_v.", ".value."),
    (".to_out.0.", ".proj_attn."),
];

impl TensorStore {
    /// Opens and validates safetensors files. `label` names the store in messages.
    pub(crate) fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut index = HashMap::new();
        for path in paths {
            crate::io::require_regular_file(path)?;
            let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            // SAFETY: the map is read-only; a file changed by another process while mapped is
            // the same hazard every mmap-based loader (safetensors, candle) accepts.
            let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
            Self::add(&mut files, &mut index, path.clone(), mmap)?;
        }
        Ok(TensorStore {
            files: Arc::new(files),
            index,
        })
    }

    fn add(
        files: &mut Vec<File>,
        index: &mut HashMap<String, (usize, TensorInfo)>,
        name: PathBuf,
        bytes: memmap2::Mmap,
    ) -> Result<()> {
        if let Some(kind) = crate::io::pickle_kind(&bytes) {
            return Err(Error::model_load(&name, crate::io::pickle_refusal(kind)));
        }
        let (n, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| {
            Error::model_load(
                &name,
                format!("not a valid safetensors file (truncated or corrupt?): {e}"),
            )
        })?;
        let file_idx = files.len();
        for (key, info) in meta.tensors() {
            if let Some((other, _)) = index.get(&key) {
                return Err(Error::model_load(
                    &name,
                    format!("tensor `{key}` is also in {}", files[*other].name.display()),
                ));
            }
            index.insert(key, (file_idx, info.clone()));
        }
        files.push(File {
            name,
            bytes,
            data_start: 8 + n,
        });
        Ok(())
    }

    /// The stored keys (unordered).
    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// The stored shape of `key`, if it is there.
    pub(crate) fn shape(&self, key: &str) -> Option<&[usize]> {
        self.index.get(key).map(|(_, i)| i.shape.as_slice())
    }

    /// Every tensor, converted to `dtype` on `device`.
    pub(crate) fn load_all(&self, dtype: DType, device: &Device) -> Result<HashMap<String, Tensor>, String> {
        self.index
            .keys()
            .map(|k| Ok((k.clone(), self.load(k, dtype, device)?)))
            .collect()
    }

    /// A view of the same files under other names: `map` gives each new name its source. A
    /// row range is a contiguous byte range of a row-major tensor, so it is cut from the
    /// header (no copy). Every source must exist and every range fit, or the error names it.
    pub(crate) fn remap(
        &self,
        map: impl IntoIterator<Item = (String, Source)>,
    ) -> Result<TensorStore, String> {
        let mut index = HashMap::new();
        for (name, src) in map {
            let (file, info) = self
                .index
                .get(&src.key)
                .ok_or_else(|| format!("missing tensor `{}`", src.key))?;
            let mut info = info.clone();
            if let Some((start, len)) = src.rows {
                let rows = info.shape.first().copied().unwrap_or(0);
                if start.checked_add(len).is_none_or(|end| end > rows) {
                    return Err(format!(
                        "tensor `{}` has shape {:?}: rows {start}..{} do not exist",
                        src.key,
                        info.shape,
                        start.saturating_add(len)
                    ));
                }
                let total = info.data_offsets.1 - info.data_offsets.0;
                let row_bytes = total.checked_div(rows).unwrap_or(0);
                let s = info.data_offsets.0 + start * row_bytes;
                info.data_offsets = (s, s + len * row_bytes);
                info.shape[0] = len;
            }
            index.insert(name, (*file, info));
        }
        Ok(TensorStore {
            files: Arc::clone(&self.files),
            index,
        })
    }

    fn resolve(&self, name: &str) -> Option<(&str, &(usize, TensorInfo))> {
        if let Some((k, v)) = self.index.get_key_value(name) {
            return Some((k.as_str(), v));
        }
        for (new, old) in KEY_ALIASES {
            if name.contains(new) {
                let alt = name.replacen(new, old, 1);
                if let Some((k, v)) = self.index.get_key_value(&alt) {
                    return Some((k.as_str(), v));
                }
            }
        }
        None
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.resolve(name).is_some()
    }

    /// Loads a tensor as stored (its own shape), converted to `dtype` on `device`.
    pub(crate) fn load(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor, String> {
        let (key, (file_idx, info)) = self
            .resolve(name)
            .ok_or_else(|| format!("missing tensor `{name}`"))?;
        let file = &self.files[*file_idx];
        let st = st_dtype(info.dtype).ok_or_else(|| {
            format!(
                "{}: tensor `{key}` has unsupported dtype {:?}",
                file.name.display(),
                info.dtype
            )
        })?;
        if !st.is_float() {
            return Err(format!(
                "{}: tensor `{key}` is {st:?}, an integer tensor where a weight must be floating point",
                file.name.display()
            ));
        }
        let (s, e) = info.data_offsets;
        let data = &file.bytes[file.data_start + s..file.data_start + e];
        let t = Tensor::from_raw_buffer(data, st, &info.shape, &Device::Cpu)
            .and_then(|t| t.to_dtype(dtype))
            .and_then(|t| t.to_device(device))
            .map_err(|e| format!("{}: tensor `{key}`: {e}", file.name.display()))?;
        Ok(t)
    }

    fn load_checked(
        &self,
        shape: &Shape,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor, String> {
        let t = self.load(name, dtype, device)?;
        if t.shape() == shape {
            return Ok(t);
        }
        // Old checkpoints store 1x1 conv weights where a linear layer is expected (and back).
        let squeeze = |d: &[usize]| d.iter().copied().filter(|&x| x != 1).collect::<Vec<_>>();
        if t.elem_count() == shape.elem_count()
            && squeeze(t.dims()) == squeeze(shape.dims())
            && t.rank() != shape.rank()
        {
            return t.reshape(shape).map_err(|e| e.to_string());
        }
        let (file_idx, _) = self.resolve(name).map(|(_, v)| v).ok_or("unreachable")?;
        Err(format!(
            "{}: tensor `{name}` has shape {:?}, the model expects {:?}",
            self.files[*file_idx]
                .name
                .file_name()
                .unwrap_or_default()
                .to_string_lossy(),
            t.dims(),
            shape.dims()
        ))
    }
}

/// The `VarBuilder` backend over a [`TensorStore`].
struct StoreBackend(Arc<TensorStore>);

impl SimpleBackend for StoreBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0
            .load_checked(&s, name, dtype, dev)
            .map_err(candle_core::Error::Msg)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.load(name, dtype, dev).map_err(candle_core::Error::Msg)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains(name)
    }
}

/// A `VarBuilder` reading from `store`.
pub(crate) fn var_builder(store: Arc<TensorStore>, dtype: DType, device: &Device) -> VarBuilder<'static> {
    VarBuilder::from_backend(Box::new(StoreBackend(store)), dtype, device.clone())
}

/// Finds the weight files of one diffusers component folder: a sharded index
/// (`<stem>.safetensors.index.json`), `<stem>.safetensors`, a `variant` file
/// (`<stem>.<variant>.safetensors`), or the only `*.safetensors` file there.
pub(crate) fn component_files(dir: &Path, stems: &[&str], variant: Option<&str>) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "model component folder not found"),
        ));
    }
    for stem in stems {
        let name = match variant {
            Some(v) => format!("{stem}.{v}.safetensors"),
            None => format!("{stem}.safetensors"),
        };
        let index = dir.join(format!("{name}.index.json"));
        if index.is_file() {
            let text = crate::io::read_text(&index)?;
            let v: serde_json::Value = crate::io::parse_json(&text)
                .map_err(|e| Error::model_load(&index, format!("invalid JSON: {e}")))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| Error::model_load(&index, "no `weight_map` object"))?;
            let mut files = Vec::with_capacity(map.len().min(1024));
            for f in map.values() {
                let f = f.as_str().ok_or_else(|| {
                    Error::model_load(&index, format!("`weight_map` value {f} is not a file name"))
                })?;
                // Only files inside the component folder: no absolute paths, no `..`.
                let inside = !f.is_empty()
                    && Path::new(f)
                        .components()
                        .all(|c| matches!(c, std::path::Component::Normal(_)));
                if !inside {
                    return Err(Error::model_load(
                        &index,
                        format!("`weight_map` names `{f}`, outside the folder (only file names inside it are allowed)"),
                    ));
                }
                files.push(dir.join(f));
            }
            files.sort();
            files.dedup();
            return Ok(files);
        }
        let single = dir.join(&name);
        if single.is_file() {
            return Ok(vec![single]);
        }
    }
    if variant.is_none() {
        let mut all: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        all.sort();
        if all.len() == 1 {
            return Ok(all);
        }
        if all.len() > 1 {
            return Err(Error::model_load(
                dir,
                format!(
                    "several weight files and none named {}.safetensors: {:?}; pick one with `LoadOptions::variant`",
                    stems[0],
                    all.iter().filter_map(|p| p.file_name()).collect::<Vec<_>>()
                ),
            ));
        }
    }
    let expected = dir.join(format!(
        "{}{}.safetensors",
        stems[0],
        variant.map(|v| format!(".{v}")).unwrap_or_default()
    ));
    Err(Error::io(
        expected,
        std::io::Error::new(std::io::ErrorKind::NotFound, "weight file not found"),
    ))
}

/// A `VarBuilder` backend that invents weights: seeded normals with std `1/sqrt(fan_in)` for
/// matrices and kernels, ones for norm weights, zeros for biases. For benchmarks at real model
/// sizes without checkpoints; never for restoration.
struct RandomBackend {
    seed: u64,
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl SimpleBackend for RandomBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let dims = s.dims();
        let t = if name.ends_with("bias") {
            Tensor::zeros(&s, DType::F32, &Device::Cpu)?
        } else if dims.len() == 1 {
            Tensor::ones(&s, DType::F32, &Device::Cpu)?
        } else {
            let fan_in: usize = dims[1..].iter().product();
            let std = 1.0 / (fan_in.max(1) as f64).sqrt();
            (crate::rng::randn(self.seed ^ fnv1a(name), &s, &Device::Cpu)? * std)?
        };
        t.to_dtype(dtype)?.to_device(dev)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights need a shape for `{name}`")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

/// A `VarBuilder` of seeded random weights (each tensor drawn from its name and `seed`), for benchmarks.
pub fn random_weights(seed: u64, dtype: DType, device: &Device) -> VarBuilder<'static> {
    VarBuilder::from_backend(Box::new(RandomBackend { seed }), dtype, device.clone())
}
