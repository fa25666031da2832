//! The paper's evaluation (SPIRE.md, `seed-table.md`): two test sets built from clean photos
//! at fixed seeds — the parameterized degradation with its synthesized restoration prompt,
//! and the Real-ESRGAN degradation (blind) — restored under chosen settings (semantic prompt
//! on/off, restoration prompt on/off), scored with FID, LPIPS, PSNR, SSIM, CLIP-I and CLIP-T,
//! and written as the paper's table (Markdown) and a CSV.
//!
//! A learned metric whose weights are not given is reported as unavailable, never estimated.
//! FID needs at least two images and is only comparable between runs on the same set: on a
//! handful of photos it says little (the paper uses thousands).

use std::path::{Path, PathBuf};

use crate::degrade::{self, RealEsrganConfig, Rgb};
use crate::error::{Error, Result};
use crate::image::Image;
use crate::metrics::{self, Clip, FidInception, Lpips};
use crate::options::RestoreOptions;
use crate::prompt::RestorationPrompt;
use crate::restorer::Restorer;
use crate::train::data::Dataset;

/// One row of the table: which prompts the restorer gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalSetting {
    /// Row label.
    pub name: String,
    /// Give the photo's caption as the semantic prompt.
    pub semantic: bool,
    /// Give the synthesized restoration prompt (parameterized set only; the Real-ESRGAN set
    /// is blind by construction).
    pub restoration: bool,
}

impl EvalSetting {
    /// A row.
    pub fn new(name: &str, semantic: bool, restoration: bool) -> Self {
        Self {
            name: name.into(),
            semantic,
            restoration,
        }
    }

    /// The paper's two SPIRE rows ("w/o text" and with both prompts) and the two ablations.
    pub fn paper() -> Vec<Self> {
        vec![
            Self::new("SPIRE w/o text", false, false),
            Self::new("SPIRE, semantic only", true, false),
            Self::new("SPIRE, restoration only", false, true),
            Self::new("SPIRE", true, true),
        ]
    }
}

/// Where the learned metrics' weights are (see `scripts/convert_metric_weights.py`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricWeights {
    /// LPIPS weights file.
    pub lpips: Option<PathBuf>,
    /// transformers `CLIPModel` folder.
    pub clip: Option<PathBuf>,
    /// FID Inception weights file.
    pub inception: Option<PathBuf>,
}

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// Side of the test images (each photo's largest centred square, resized).
    pub size: usize,
    /// Degradation seed of the first image (image `i` uses `seed + i`).
    pub seed: u64,
    /// Rows.
    pub settings: Vec<EvalSetting>,
    /// Add a row scoring the degraded inputs themselves.
    pub include_input: bool,
    /// Restoration options of every row (prompts are set per row; image `i` uses
    /// `options.seed + i`). Start from the model's [`Restorer::default_options`] (the CLI
    /// does); the default is [`RestoreOptions::default`].
    pub options: RestoreOptions,
    /// Learned metrics.
    pub weights: MetricWeights,
    /// Write clean, degraded and restored PNGs under this folder.
    pub save_images: Option<PathBuf>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            size: 256,
            seed: 0,
            settings: EvalSetting::paper(),
            include_input: true,
            options: RestoreOptions::default(),
            weights: MetricWeights::default(),
            save_images: None,
        }
    }
}

/// A clean test image and its caption.
#[derive(Debug, Clone)]
pub struct EvalImage {
    /// File name.
    pub name: String,
    /// The clean image (RGB8).
    pub image: Image,
    /// Caption (may be empty).
    pub caption: String,
}

/// Loads the photos of `dir` (all, or only `only`) with captions, as `size × size` squares.
///
/// # Errors
/// [`Error::Io`] for unreadable files, [`Error::InvalidArgument`] for a name not in the folder.
pub fn load_images(
    dir: &Path,
    captions: Option<&Path>,
    only: &[String],
    size: usize,
) -> Result<Vec<EvalImage>> {
    let data = Dataset::from_folder(dir, captions, &[])?;
    let names: Vec<String> = if only.is_empty() {
        data.names().iter().map(|s| s.to_string()).collect()
    } else {
        only.to_vec()
    };
    names
        .iter()
        .map(|n| {
            let s = data.square(n, size)?;
            Ok(EvalImage {
                name: n.clone(),
                image: s.image.to_rgb8(),
                caption: s.caption,
            })
        })
        .collect()
}

fn image_to_rgb(img: &Image) -> Result<Rgb> {
    let p = img.view().to_planar()?;
    Rgb::new(p.width, p.height, p.rgb)
}

/// The two test sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestSet {
    /// Parameterized degradation with its synthesized restoration prompt.
    Parameterized,
    /// Real-ESRGAN degradation, blind.
    RealEsrgan,
}

impl TestSet {
    /// Short name.
    pub fn as_str(self) -> &'static str {
        match self {
            TestSet::Parameterized => "parameterized",
            TestSet::RealEsrgan => "realesrgan",
        }
    }
}

/// Mean scores of one row on one set (`None`: the metric's weights were not given, or FID
/// with fewer than two images, or CLIP-T without captions).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scores {
    /// Fréchet Inception distance to the clean set.
    pub fid: Option<f64>,
    /// LPIPS to the clean image.
    pub lpips: Option<f64>,
    /// PSNR to the clean image, dB.
    pub psnr: f64,
    /// SSIM to the clean image.
    pub ssim: f64,
    /// CLIP image-embedding similarity to the clean image.
    pub clip_i: Option<f64>,
    /// CLIP similarity to the caption.
    pub clip_t: Option<f64>,
    /// Images scored.
    pub images: usize,
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalRow {
    /// Label.
    pub name: String,
    /// Semantic prompt given (`None` for the degraded-input row).
    pub semantic: Option<bool>,
    /// Restoration prompt given.
    pub restoration: Option<bool>,
    /// Scores on the parameterized set and on the Real-ESRGAN set.
    pub scores: [Scores; 2],
}

/// The evaluation result.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalReport {
    /// Rows in order.
    pub rows: Vec<EvalRow>,
    /// Test images.
    pub images: usize,
    /// Side of the test images.
    pub size: usize,
    /// What was unavailable and other caveats.
    pub notes: Vec<String>,
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "n/a".into(), |x| format!("{x:.digits$}"))
}

impl EvalReport {
    /// The paper's table: left the parameterized set, right the Real-ESRGAN set.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "{} test images of {}×{} px. Left: parameterized degradation with the synthesized restoration \
             prompt; right: Real-ESRGAN degradation (blind).\n\n",
            self.images, self.size, self.size
        );
        s.push_str("| Method | Sem | Res | FID↓ | LPIPS↓ | PSNR↑ | SSIM↑ | CLIP-I↑ | CLIP-T↑ | FID↓ | LPIPS↓ | PSNR↑ | SSIM↑ | CLIP-I↑ | CLIP-T↑ |\n");
        s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        let mark = |b: Option<bool>| match b {
            Some(true) => "✓",
            Some(false) => "✗",
            None => "–",
        };
        for r in &self.rows {
            s.push_str(&format!(
                "| {} | {} | {} |",
                r.name,
                mark(r.semantic),
                mark(r.restoration)
            ));
            for sc in &r.scores {
                s.push_str(&format!(
                    " {} | {} | {:.2} | {:.3} | {} | {} |",
                    fmt(sc.fid, 2),
                    fmt(sc.lpips, 3),
                    sc.psnr,
                    sc.ssim,
                    fmt(sc.clip_i, 3),
                    fmt(sc.clip_t, 3)
                ));
            }
            s.push('\n');
        }
        if !self.notes.is_empty() {
            s.push('\n');
            for n in &self.notes {
                s.push_str(&format!("- {n}\n"));
            }
        }
        s
    }

    /// One line per (set, row): `set,method,semantic,restoration,images,fid,lpips,psnr,ssim,clip_i,clip_t`
    /// (unavailable metrics empty).
    pub fn csv(&self) -> String {
        let mut s =
            String::from("set,method,semantic,restoration,images,fid,lpips,psnr,ssim,clip_i,clip_t\n");
        let opt = |v: Option<f64>| v.map_or_else(String::new, |x| format!("{x:.6}"));
        let b = |v: Option<bool>| v.map_or_else(String::new, |x| x.to_string());
        for r in &self.rows {
            for (set, sc) in [TestSet::Parameterized, TestSet::RealEsrgan]
                .iter()
                .zip(&r.scores)
            {
                s.push_str(&format!(
                    "{},\"{}\",{},{},{},{},{},{:.6},{:.6},{},{}\n",
                    set.as_str(),
                    r.name.replace('"', "'"),
                    b(r.semantic),
                    b(r.restoration),
                    sc.images,
                    opt(sc.fid),
                    opt(sc.lpips),
                    sc.psnr,
                    sc.ssim,
                    opt(sc.clip_i),
                    opt(sc.clip_t)
                ));
            }
        }
        s
    }
}

struct Scorer {
    lpips: Option<Lpips>,
    clip: Option<Clip>,
    inception: Option<FidInception>,
}

impl Scorer {
    /// The metric networks, on `dev` (the restorer's device).
    fn load(w: &MetricWeights, dev: &candle_core::Device, notes: &mut Vec<String>) -> Result<Self> {
        let lpips = w.lpips.as_ref().map(|p| Lpips::load(p, dev)).transpose()?;
        let clip = w.clip.as_ref().map(|p| Clip::from_dir(p, dev)).transpose()?;
        let inception = w
            .inception
            .as_ref()
            .map(|p| FidInception::load(p, dev))
            .transpose()?;
        if lpips.is_none() {
            notes.push(
                "LPIPS: no weights given (convert them with scripts/convert_metric_weights.py lpips).".into(),
            );
        }
        if clip.is_none() {
            notes.push("CLIP-I / CLIP-T: no CLIP model given (a transformers CLIPModel folder).".into());
        }
        if inception.is_none() {
            notes.push(
                "FID: no Inception weights given (scripts/convert_metric_weights.py inception).".into(),
            );
        }
        Ok(Self {
            lpips,
            clip,
            inception,
        })
    }

    /// Scores `outputs` against `clean` (same order) with `captions`.
    fn score(
        &self,
        outputs: &[Image],
        clean: &[EvalImage],
        clean_features: Option<&[Vec<f32>]>,
    ) -> Result<Scores> {
        let n = outputs.len();
        let mut s = Scores {
            images: n,
            ..Default::default()
        };
        let (mut lp, mut ci, mut ct, mut ct_n) = (0.0, 0.0, 0.0, 0usize);
        let mut feats = Vec::new();
        for (o, c) in outputs.iter().zip(clean) {
            let (ov, cv) = (o.view(), c.image.view());
            s.psnr += metrics::psnr(&ov, &cv)? / n as f64;
            s.ssim += metrics::ssim(&ov, &cv)? / n as f64;
            if let Some(l) = &self.lpips {
                lp += l.distance(&ov, &cv)? / n as f64;
            }
            if let Some(cl) = &self.clip {
                ci += cl.clip_i(&ov, &cv)? / n as f64;
                if !c.caption.is_empty() {
                    ct += cl.clip_t(&ov, &c.caption)?;
                    ct_n += 1;
                }
            }
            if let Some(inc) = &self.inception {
                feats.push(inc.features(&ov)?);
            }
        }
        s.lpips = self.lpips.as_ref().map(|_| lp);
        s.clip_i = self.clip.as_ref().map(|_| ci);
        s.clip_t = (self.clip.is_some() && ct_n > 0).then(|| ct / ct_n as f64);
        if let (Some(cf), true) = (clean_features, n >= 2) {
            let (m1, s1) = metrics::feature_statistics(&feats)?;
            let (m2, s2) = metrics::feature_statistics(cf)?;
            s.fid = Some(metrics::frechet_distance(&m1, &s1, &m2, &s2)?);
        }
        Ok(s)
    }
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// Runs the evaluation. `progress(done, total, what)` is called after each restoration.
///
/// # Errors
/// Errors of loading the metric networks, degrading, restoring or scoring; the option named.
pub fn evaluate(
    restorer: &Restorer,
    images: &[EvalImage],
    cfg: &EvalConfig,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<EvalReport> {
    if images.is_empty() {
        return Err(Error::invalid_arg("images", "no test images"));
    }
    let mut notes = Vec::new();
    let scorer = Scorer::load(&cfg.weights, restorer.device(), &mut notes)?;
    if images.iter().all(|i| i.caption.is_empty()) {
        notes.push("No captions: semantic prompts are empty and CLIP-T is unavailable.".into());
    }
    if scorer.inception.is_some() && images.len() < 64 {
        notes.push(format!(
            "FID over {} images is dominated by the small sample (the paper uses thousands): compare rows, not with the paper.",
            images.len()
        ));
    }
    let clean_features = match &scorer.inception {
        Some(inc) => Some(
            images
                .iter()
                .map(|i| inc.features(&i.image.view()))
                .collect::<Result<Vec<_>>>()?,
        ),
        None => None,
    };
    // The two degraded sets.
    let mut sets: Vec<Vec<(Image, RestorationPrompt)>> = Vec::new();
    for set in [TestSet::Parameterized, TestSet::RealEsrgan] {
        let mut v = Vec::with_capacity(images.len());
        for (i, img) in images.iter().enumerate() {
            let x = image_to_rgb(&img.image)?;
            let seed = cfg.seed + i as u64;
            let (y, p) = match set {
                TestSet::Parameterized => degrade::parameterized(&x, seed, &Default::default())?,
                TestSet::RealEsrgan => (
                    degrade::realesrgan(&x, seed, &RealEsrganConfig::default())?,
                    RestorationPrompt::blind(),
                ),
            };
            v.push((y.to_rgb8(), p));
        }
        sets.push(v);
    }
    if let Some(dir) = &cfg.save_images {
        for (set, v) in [TestSet::Parameterized, TestSet::RealEsrgan].iter().zip(&sets) {
            let d = dir.join(set.as_str());
            std::fs::create_dir_all(d.join("degraded")).map_err(|e| Error::io(&d, e))?;
            std::fs::create_dir_all(d.join("clean")).map_err(|e| Error::io(&d, e))?;
            for ((y, _), img) in v.iter().zip(images) {
                crate::io::save_image(d.join("degraded").join(&img.name), y)?;
                crate::io::save_image(d.join("clean").join(&img.name), &img.image)?;
            }
        }
    }
    let mut rows = Vec::new();
    if cfg.include_input {
        let mut scores: [Scores; 2] = Default::default();
        for (k, v) in sets.iter().enumerate() {
            let ys: Vec<Image> = v.iter().map(|(y, _)| y.clone()).collect();
            scores[k] = scorer.score(&ys, images, clean_features.as_deref())?;
        }
        rows.push(EvalRow {
            name: "Degraded input".into(),
            semantic: None,
            restoration: None,
            scores,
        });
    }
    let total = cfg.settings.len() * 2 * images.len();
    let mut done = 0;
    for setting in &cfg.settings {
        let mut scores: [Scores; 2] = Default::default();
        for (k, (set, v)) in [TestSet::Parameterized, TestSet::RealEsrgan]
            .iter()
            .zip(&sets)
            .enumerate()
        {
            let mut outs = Vec::with_capacity(v.len());
            for (i, ((y, prompt), img)) in v.iter().zip(images).enumerate() {
                let mut o = cfg.options.clone();
                o.seed = cfg.options.seed + i as u64;
                o.upsample_input = false;
                o.semantic_prompt = if setting.semantic {
                    img.caption.clone()
                } else {
                    String::new()
                };
                o.restoration_prompt = if setting.restoration && *set == TestSet::Parameterized {
                    (*prompt).into()
                } else {
                    RestorationPrompt::blind().into()
                };
                let out = restorer.restore(&y.view(), &o)?;
                if let Some(dir) = &cfg.save_images {
                    let d = dir.join(set.as_str()).join(slug(&setting.name));
                    std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
                    crate::io::save_image(d.join(&img.name), &out)?;
                }
                outs.push(out);
                done += 1;
                progress(
                    done,
                    total,
                    &format!("{} · {} · {}", setting.name, set.as_str(), img.name),
                );
            }
            scores[k] = scorer.score(&outs, images, clean_features.as_deref())?;
        }
        rows.push(EvalRow {
            name: setting.name.clone(),
            semantic: Some(setting.semantic),
            restoration: Some(setting.restoration),
            scores,
        });
    }
    Ok(EvalReport {
        rows,
        images: images.len(),
        size: cfg.size,
        notes,
    })
}
