//! CLIP-I (cosine similarity of the CLIP image embeddings of the output and the reference) and
//! CLIP-T (cosine similarity of the output's image embedding and the semantic prompt's text
//! embedding), from a transformers `CLIPModel` folder (`config.json`, `model.safetensors`,
//! `vocab.json` + `merges.txt` or `tokenizer.json`, optional `preprocessor_config.json`),
//! e.g. `openai/clip-vit-large-patch14`.
//!
//! Images are prepared as transformers' PIL image processor (`CLIPImageProcessorPil`, the
//! same steps as OpenAI's `clip.load` preprocessing) does: 8-bit RGB, bicubic resize of the
//! shortest edge, centre crop, scale to [0, 1], normalise by the processor's mean and std.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, D};

use crate::error::{Error, Result};
use crate::image::ImageView;
use crate::model::config::{ClipTextConfig, ClipVisionConfig, Json};
use crate::model::{ClipTextModel, ClipTokenizer, ClipVisionModel};
use crate::weights::{component_files, var_builder, TensorStore};

/// The image processor settings (`preprocessor_config.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClipPreprocess {
    /// Target of the shortest edge.
    pub shortest_edge: usize,
    /// Centre crop `(height, width)`.
    pub crop: (usize, usize),
    /// Per-channel mean.
    pub mean: [f32; 3],
    /// Per-channel standard deviation.
    pub std: [f32; 3],
}

impl Default for ClipPreprocess {
    /// OpenAI CLIP's.
    fn default() -> Self {
        Self {
            shortest_edge: 224,
            crop: (224, 224),
            mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
            std: [0.268_629_54, 0.261_302_6, 0.275_777_1],
        }
    }
}

impl ClipPreprocess {
    fn from_file(path: &Path) -> Result<Self> {
        let mut p = Self::default();
        let text = crate::io::read_text(path)?;
        let v: serde_json::Value = crate::io::parse_json(&text)
            .map_err(|e| Error::model_load(path, format!("invalid JSON: {e}")))?;
        let bad = |field: &str| Error::model_load(path, format!("`{field}` is not supported here"));
        if let Some(r) = v.get("resample").and_then(|r| r.as_u64()) {
            if r != 3 {
                return Err(Error::model_load(
                    path,
                    format!("`resample` {r}: only bicubic (3) is supported"),
                ));
            }
        }
        match v.get("size") {
            Some(serde_json::Value::Object(m)) => {
                p.shortest_edge = m
                    .get("shortest_edge")
                    .and_then(|x| x.as_u64())
                    .ok_or_else(|| bad("size"))? as usize;
            }
            Some(serde_json::Value::Number(n)) => {
                p.shortest_edge = n.as_u64().ok_or_else(|| bad("size"))? as usize
            }
            None => {}
            Some(_) => return Err(bad("size")),
        }
        match v.get("crop_size") {
            Some(serde_json::Value::Object(m)) => {
                let g = |k: &str| m.get(k).and_then(|x| x.as_u64()).map(|x| x as usize);
                p.crop = (
                    g("height").ok_or_else(|| bad("crop_size"))?,
                    g("width").ok_or_else(|| bad("crop_size"))?,
                );
            }
            Some(serde_json::Value::Number(n)) => {
                let c = n.as_u64().ok_or_else(|| bad("crop_size"))? as usize;
                p.crop = (c, c);
            }
            None => {}
            Some(_) => return Err(bad("crop_size")),
        }
        let triple = |k: &str| -> Result<Option<[f32; 3]>> {
            match v.get(k) {
                None => Ok(None),
                Some(a) => {
                    let xs: Vec<f32> = a
                        .as_array()
                        .ok_or_else(|| bad(k))?
                        .iter()
                        .map(|x| x.as_f64().map(|f| f as f32).ok_or_else(|| bad(k)))
                        .collect::<Result<_>>()?;
                    Ok(Some(xs.try_into().map_err(|_| bad(k))?))
                }
            }
        };
        if let Some(m) = triple("image_mean")? {
            p.mean = m;
        }
        if let Some(s) = triple("image_std")? {
            p.std = s;
        }
        if p.shortest_edge == 0
            || p.crop.0 == 0
            || p.crop.1 == 0
            || p.crop.0 > p.shortest_edge
            || p.crop.1 > p.shortest_edge
        {
            return Err(Error::model_load(
                path,
                "crop_size must be positive and fit inside size",
            ));
        }
        Ok(p)
    }

    /// `[1, 3, crop_h, crop_w]` pixel values of an image.
    ///
    /// # Errors
    /// [`Error::InvalidImage`] for non-finite samples.
    pub fn apply(&self, img: &ImageView<'_>) -> Result<Tensor> {
        let p = img.to_planar()?;
        let (w, h) = (p.width, p.height);
        // 8-bit RGB, as PIL sees it.
        let rgb: Vec<u8> = p.rgb.iter().map(|v| (v * 255.0).round() as u8).collect();
        let s = self.shortest_edge;
        let (nw, nh) = if w <= h {
            (s, (s as f64 * h as f64 / w as f64) as usize)
        } else {
            ((s as f64 * w as f64 / h as f64) as usize, s)
        };
        let resized = crate::imageops::resize_bicubic_u8(&rgb, 3, w, h, nw, nh);
        let (ch, cw) = self.crop;
        if ch > nh || cw > nw {
            return Err(Error::InvalidImage(format!(
                "a {w}×{h} image resized to {nw}×{nh} is smaller than the {cw}×{ch} crop"
            )));
        }
        let (top, left) = ((nh - ch) / 2, (nw - cw) / 2);
        let mut out = Vec::with_capacity(3 * ch * cw);
        for c in 0..3 {
            for y in top..top + ch {
                for x in left..left + cw {
                    out.push((resized[(c * nh + y) * nw + x] as f32 / 255.0 - self.mean[c]) / self.std[c]);
                }
            }
        }
        Ok(Tensor::from_vec(out, (1, 3, ch, cw), &Device::Cpu)?)
    }
}

/// A loaded CLIP model for CLIP-I and CLIP-T. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Clip {
    inner: Arc<Inner>,
}

struct Inner {
    vision: ClipVisionModel,
    text: ClipTextModel,
    tokenizer: ClipTokenizer,
    preprocess: ClipPreprocess,
    device: Device,
}

impl std::fmt::Debug for Clip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clip")
            .field("vision", self.inner.vision.config())
            .field("preprocess", &self.inner.preprocess)
            .finish()
    }
}

fn unit(t: &Tensor) -> candle_core::Result<Tensor> {
    t.broadcast_div(&t.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?)
}

impl Clip {
    /// Loads a transformers `CLIPModel` folder.
    ///
    /// # Errors
    /// [`Error::Io`] for missing files, [`Error::ModelLoad`] naming the file, key or field for
    /// bad weights or configs.
    pub fn from_dir(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let cfg_path = dir.join("config.json");
        let json = Json::read(&cfg_path)?;
        let vcfg = ClipVisionConfig::from_json(&json)?;
        let mut tcfg = ClipTextConfig::from_json(&json)?;
        if tcfg.projection_dim.is_none() {
            tcfg.projection_dim = Some(vcfg.projection_dim);
        }
        let files = component_files(dir, &["model"], None)?;
        let store = Arc::new(TensorStore::open(&files)?);
        let vb = var_builder(store, DType::F32, device);
        let vision =
            ClipVisionModel::new(&vcfg, vb.clone()).map_err(|e| Error::model_load(dir, e.to_string()))?;
        let text = ClipTextModel::new(&tcfg, vb).map_err(|e| Error::model_load(dir, e.to_string()))?;
        if text
            .project(&Tensor::zeros((1, tcfg.hidden_size), DType::F32, device)?)?
            .is_none()
        {
            return Err(Error::model_load(dir, "missing tensor `text_projection.weight`"));
        }
        let tokenizer = ClipTokenizer::from_dir(dir)?;
        let pp = dir.join("preprocessor_config.json");
        let preprocess = if pp.is_file() {
            ClipPreprocess::from_file(&pp)?
        } else {
            ClipPreprocess::default()
        };
        if preprocess.crop != (vcfg.image_size, vcfg.image_size) {
            return Err(Error::model_load(
                &pp,
                format!(
                    "crop_size {:?} does not match the vision model's image_size {}",
                    preprocess.crop, vcfg.image_size
                ),
            ));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                vision,
                text,
                tokenizer,
                preprocess,
                device: device.clone(),
            }),
        })
    }

    /// The image preprocessing.
    pub fn preprocess(&self) -> &ClipPreprocess {
        &self.inner.preprocess
    }

    /// Unit-length image embeddings of preprocessed `[n, 3, s, s]` pixel values, `[n, d]`.
    ///
    /// # Errors
    /// [`Error::InvalidImage`] for a wrong shape.
    pub fn embed_pixels(&self, pixels: &Tensor) -> Result<Tensor> {
        let s = self.inner.vision.config().image_size;
        if pixels.rank() != 4 || pixels.dims()[1..] != [3, s, s] {
            return Err(Error::InvalidImage(format!(
                "CLIP takes [n, 3, {s}, {s}] pixel values, got {:?}",
                pixels.dims()
            )));
        }
        Ok(unit(
            &self.inner.vision.embed(&pixels.to_device(&self.inner.device)?)?,
        )?)
    }

    /// Unit-length image embeddings, `[n, d]`.
    ///
    /// # Errors
    /// [`Error::InvalidImage`] for non-finite samples or images too small for the crop.
    pub fn embed_images(&self, images: &[ImageView<'_>]) -> Result<Tensor> {
        let px = images
            .iter()
            .map(|i| self.inner.preprocess.apply(i))
            .collect::<Result<Vec<_>>>()?;
        self.embed_pixels(&Tensor::cat(&px, 0)?)
    }

    /// Unit-length text embeddings (prompts longer than the context are truncated), `[n, d]`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if a prompt cannot be tokenized.
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Tensor> {
        let ids = texts
            .iter()
            .map(|t| self.inner.tokenizer.encode(t))
            .collect::<Result<Vec<_>>>()?;
        let n = ids.len();
        let len = self.inner.tokenizer.max_len();
        let ids = Tensor::from_vec(ids.concat(), (n, len), &self.inner.device)?;
        let out = self.inner.text.forward(&ids)?;
        let proj = self
            .inner
            .text
            .project(&out.pooled)?
            .ok_or_else(|| Error::Internal("CLIP text projection missing".into()))?;
        Ok(unit(&proj)?)
    }

    /// CLIP-I: cosine similarity of the image embeddings of `output` and `reference`.
    ///
    /// # Errors
    /// As [`Clip::embed_images`].
    pub fn clip_i(&self, output: &ImageView<'_>, reference: &ImageView<'_>) -> Result<f64> {
        let e = self.embed_images(&[*output, *reference])?;
        let v: Vec<Vec<f32>> = e.to_vec2()?;
        Ok(v[0]
            .iter()
            .zip(&v[1])
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum())
    }

    /// CLIP-T: cosine similarity of the image embedding of `output` and the text embedding of
    /// `prompt`.
    ///
    /// # Errors
    /// As [`Clip::embed_images`] and [`Clip::embed_texts`].
    pub fn clip_t(&self, output: &ImageView<'_>, prompt: &str) -> Result<f64> {
        let i: Vec<f32> = self
            .embed_images(std::slice::from_ref(output))?
            .flatten_all()?
            .to_vec1()?;
        let t: Vec<f32> = self.embed_texts(&[prompt])?.flatten_all()?.to_vec1()?;
        Ok(i.iter().zip(&t).map(|(a, b)| (*a as f64) * (*b as f64)).sum())
    }
}
