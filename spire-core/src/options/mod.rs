//! Options of a restoration run. Every library default lives in [`RestoreOptions::default`]
//! and nowhere else; a model may recommend its own ([`ModelDefaults`], read from its
//! `spire.json`), which [`Restorer::default_options`](crate::Restorer::default_options)
//! applies on top. The CLI and the Python and C bindings start from the model's.

use std::fmt;
use std::sync::Arc;

use candle_core::Tensor;

use crate::colorfix::ColorFix;
use crate::error::{Error, Result};
use crate::prompt::{RestorationPrompt, BLIND};
use crate::scheduler::SchedulerKind;

pub mod table;
pub use table::{
    markdown_table, option, stage_diagram, OptionKind, OptionSpec, OptionValue, PipelineStage, OPTIONS,
};

/// The most denoising steps a restore may take (diffusers' schedules have 1000 training
/// timesteps; real runs take 1–100). A larger count is refused before anything is allocated.
pub const MAX_INFERENCE_STEPS: usize = 10_000;

/// The restoration prompt of a run.
#[derive(Debug, Clone, PartialEq)]
pub enum RestorationInput {
    /// A prompt of SPIRE's language (its canonical text is encoded).
    Prompt(RestorationPrompt),
    /// Free text sent to the adaptor as is, for adaptors trained on another prompt language
    /// (e.g. a ControlNet conditioned on captions). It carries no upsample factor.
    Verbatim(String),
    /// Read the prompt from each input image ([`RestorationPrompt::estimate`]); the clauses
    /// given here (blind: none) win over the estimates. `"auto"` in text, or `"auto; Upsample
    /// with scale 2"` to give the scale and estimate the rest. [`crate::Restorer::resolve_prompt`]
    /// says which prompt a restore will use.
    Auto(RestorationPrompt),
}

impl Default for RestorationInput {
    fn default() -> Self {
        RestorationInput::Prompt(RestorationPrompt::blind())
    }
}

impl From<RestorationPrompt> for RestorationInput {
    fn from(p: RestorationPrompt) -> Self {
        RestorationInput::Prompt(p)
    }
}

impl RestorationInput {
    /// The text the adaptor's text encoder sees.
    pub fn text(&self) -> String {
        match self {
            RestorationInput::Prompt(p) => p.render(),
            RestorationInput::Verbatim(s) => s.clone(),
            RestorationInput::Auto(p) if p.is_blind() => "auto".into(),
            RestorationInput::Auto(p) => format!("auto; {p}"),
        }
    }

    /// Parses SPIRE's prompt language, or `auto` optionally followed by `;` or `,` and the
    /// clauses to keep as given (any case): `"auto"`, `"Auto; Upsample with scale 2"`.
    ///
    /// # Errors
    /// [`Error::InvalidPrompt`] quoting the bad clause.
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim();
        let head = t.get(..4).map(str::to_ascii_lowercase);
        if head.as_deref() == Some("auto") {
            let rest = t[4..].trim_start();
            if rest.is_empty() {
                return Ok(RestorationInput::Auto(RestorationPrompt::blind()));
            }
            if let Some(r) = rest.strip_prefix(';').or_else(|| rest.strip_prefix(',')) {
                return Ok(RestorationInput::Auto(RestorationPrompt::parse(r)?));
            }
        }
        Ok(RestorationInput::Prompt(RestorationPrompt::parse(text)?))
    }

    /// The factor the output is larger than the input.
    pub fn upsample_factor(&self) -> f64 {
        match self {
            RestorationInput::Prompt(p) | RestorationInput::Auto(p) => p.upsample_factor(),
            RestorationInput::Verbatim(_) => 1.0,
        }
    }
}

/// How much memory a restore call may use at its peak beyond the loaded weights (the caller's
/// image included); see [`crate::plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemoryLimit {
    /// Three quarters of the memory the system reports available when the run starts.
    #[default]
    Auto,
    /// No limit: tiles only where `tile_size` asks for them or where they do less work than
    /// one piece (see [`crate::plan`]).
    Unlimited,
    /// At most this many bytes.
    Bytes(u64),
}

impl MemoryLimit {
    /// Parses `"auto"`, `"unlimited"`, a byte count, or a size with a unit: `"2GiB"`,
    /// `"1.5 GB"`, `"512MiB"`, `"800M"` (`K`/`M`/`G`/`T` alone and `…iB` are powers of 1024,
    /// `kB`/`MB`/`GB`/`TB` powers of 1000).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `memory_limit` for anything else, or zero.
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim();
        let bad = || {
            Error::invalid_arg(
                "memory_limit",
                format!("`{text}` is not \"auto\", \"unlimited\" or a size such as \"2GiB\""),
            )
        };
        match t.to_ascii_lowercase().as_str() {
            "auto" => return Ok(MemoryLimit::Auto),
            "unlimited" | "none" => return Ok(MemoryLimit::Unlimited),
            _ => {}
        }
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let v: f64 = num.parse().map_err(|_| bad())?;
        let mult: f64 = match unit.trim() {
            "" | "B" | "b" => 1.0,
            "K" | "k" | "KiB" | "kiB" => 1024.0,
            "M" | "MiB" => 1024.0 * 1024.0,
            "G" | "GiB" => 1024f64.powi(3),
            "T" | "TiB" => 1024f64.powi(4),
            "kB" | "KB" => 1e3,
            "MB" => 1e6,
            "GB" => 1e9,
            "TB" => 1e12,
            _ => return Err(bad()),
        };
        let bytes = v * mult;
        if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
            return Err(Error::invalid_arg(
                "memory_limit",
                format!("`{text}` is not a usable size"),
            ));
        }
        Ok(MemoryLimit::Bytes(bytes as u64))
    }
}

/// Where a run is, for progress reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// Encoding prompts and the degraded image.
    Encoding,
    /// Denoising; `step` of `total` steps are done.
    Denoising,
    /// Decoding latents to pixels.
    Decoding,
}

/// A progress report.
#[derive(Debug, Clone)]
pub struct Progress {
    /// The stage.
    pub stage: Stage,
    /// Steps done in this stage.
    pub step: usize,
    /// Steps in this stage.
    pub total: usize,
    /// A human-readable note (the tiling plan, …), if any.
    pub message: Option<String>,
}

/// The progress callback: return `false` to cancel the run (it then fails with
/// [`Error::Cancelled`] within one denoising step).
pub type ProgressCallback = Arc<dyn Fn(&Progress) -> bool + Send + Sync>;

builders!(RestoreOptions {
    with_restoration_prompt => restoration_prompt: RestorationInput,
    with_semantic_prompt => semantic_prompt: String,
    with_negative_prompt => negative_prompt: String,
    with_restoration_null_prompt => restoration_null_prompt: String,
    with_num_inference_steps => num_inference_steps: usize,
    with_scheduler => scheduler: Option<SchedulerKind>,
    with_eta => eta: f64,
    with_restoration_guidance => restoration_guidance: f64,
    with_semantic_guidance => semantic_guidance: f64,
    with_conditioning_scale => conditioning_scale: f64,
    with_strength => strength: f64,
    with_seed => seed: u64,
    with_initial_latents => initial_latents: Option<Tensor>,
    with_color_fix => color_fix: ColorFix,
    with_consistency => consistency: f64,
    with_match_noise => match_noise: bool,
    with_tile_size => tile_size: Option<usize>,
    with_tile_overlap => tile_overlap: usize,
    with_upsample_input => upsample_input: bool,
    with_vae_tile_size => vae_tile_size: Option<usize>,
    with_memory_limit => memory_limit: MemoryLimit,
    with_progress => progress: Option<ProgressCallback>,
});

/// Options of [`Restorer::restore`](crate::Restorer::restore).
///
/// Built from [`RestoreOptions::default`] (or `restorer.default_options()`, which applies the
/// model's recommendations) with the `with_*` builders, field assignment, or
/// [`RestoreOptions::set`] by name; `#[non_exhaustive]`, so new options are not breaking.
///
/// ```
/// use spire_core::RestoreOptions;
/// let o = RestoreOptions::default()
///     .with_restoration_text("Denoise with sigma 0.1")?
///     .with_num_inference_steps(30)
///     .with_seed(7);
/// assert_eq!(o.num_inference_steps, 30);
/// # Ok::<(), spire_core::Error>(())
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct RestoreOptions {
    /// What to undo. Default: blind ("Remove all degradation").
    pub restoration_prompt: RestorationInput,
    /// What the picture shows (a caption). Default: empty.
    pub semantic_prompt: String,
    /// The semantic null prompt ∅_s (negative prompt). Default: empty.
    pub negative_prompt: String,
    /// The restoration null prompt ∅_r. Default: "Remove all degradation".
    pub restoration_null_prompt: String,
    /// Denoising steps. Default: 20.
    pub num_inference_steps: usize,
    /// The sampler; `None` uses the model's `scheduler_config.json` class. Default: DPM++ 2M.
    pub scheduler: Option<SchedulerKind>,
    /// DDIM η (only with DDIM). Default: 0.
    pub eta: f64,
    /// Restoration guidance w_r (1 = no guidance). Default: 1.
    pub restoration_guidance: f64,
    /// Semantic guidance w_s (1 = no guidance). Default: 1.
    pub semantic_guidance: f64,
    /// Scale `s` of the adaptor's signals. Default: 1.
    pub conditioning_scale: f64,
    /// Fraction of the schedule to run, in (0, 1]: below 1, sampling starts from the noised
    /// encoding of the input at `t = strength · T`. Default: 1 (start from pure noise).
    pub strength: f64,
    /// Seed of the noise. Default: 0.
    pub seed: u64,
    /// Explicit initial noise `[batch, latent_channels, h/8, w/8]` (like diffusers' `latents=`),
    /// instead of seeded noise. Default: none.
    pub initial_latents: Option<Tensor>,
    /// Colour correction after decoding. Default: wavelet.
    pub color_fix: ColorFix,
    /// Measurement consistency ([`consistency`](crate::consistency)): after decoding, the
    /// output is pulled towards agreement with the input under the degradation the
    /// restoration prompt names (blur, shrink, noise, JPEG), trusting the model's output to
    /// this standard deviation on [0, 1] intensities — larger follows the input more where
    /// the degradation kept information. 0 turns it off; it does nothing for the blind prompt,
    /// a verbatim one or a noise clause alone. Runs before the colour fix. Default: 0.
    pub consistency: f64,
    /// Noise-matched start: when the restoration prompt names the input's noise σ (and no
    /// upsampling), the model's autoencoder is linear (pixel shuffle) and the scheduler is
    /// DDIM with `strength` < 1, the input is taken as the noised image it is — scaled to the
    /// timestep whose noise level matches σ (anywhere on the schedule, also above the one
    /// `strength` would start from), with no noise added — and sampling starts there.
    /// Default: on.
    pub match_noise: bool,
    /// Latent tile size for sampling (the adaptor and backbone run on overlapping tiles whose
    /// predictions are blended with Gaussian weights); `None` lets the plan pick it: one piece
    /// unless it would not fit `memory_limit` or tiles do at least 1.25× less work (large
    /// latents, where self-attention's cost grows with the square of the pixels; see
    /// [`crate::plan`]). A size at least the latent's side gives one piece. Default: none.
    pub tile_size: Option<usize>,
    /// Overlap of neighbouring latent tiles, in latent pixels. Default: 16.
    pub tile_overlap: usize,
    /// Enlarge the input by the restoration prompt's upsample factor (default). `false` takes
    /// the input as already enlarged to the output size — e.g. a degraded image resized back
    /// to its original size, as the degradation pipelines return it: the output keeps the
    /// input's size and the upsample clause only tells the adaptor how much detail is missing.
    pub upsample_input: bool,
    /// Tile size of the autoencoder (VAE) in image pixels; `None` picks it from
    /// `memory_limit` (whole when it fits). Tiled encoding and decoding equal the whole-image
    /// computation up to float error (halos and image-wide GroupNorm statistics).
    pub vae_tile_size: Option<usize>,
    /// The call's peak memory beyond the loaded weights: picks the tile sizes, and a call that
    /// cannot fit it is refused before it starts. Default: auto (¾ of available memory).
    pub memory_limit: MemoryLimit,
    /// Called before the first step and after every step; return `false` to cancel.
    pub progress: Option<ProgressCallback>,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        Self {
            restoration_prompt: RestorationInput::default(),
            semantic_prompt: String::new(),
            negative_prompt: String::new(),
            restoration_null_prompt: BLIND.to_string(),
            num_inference_steps: 20,
            scheduler: Some(SchedulerKind::DpmSolverPlusPlus2M),
            eta: 0.0,
            restoration_guidance: 1.0,
            semantic_guidance: 1.0,
            conditioning_scale: 1.0,
            strength: 1.0,
            seed: 0,
            initial_latents: None,
            color_fix: ColorFix::default(),
            consistency: 0.0,
            match_noise: true,
            tile_size: None,
            tile_overlap: 16,
            vae_tile_size: None,
            upsample_input: true,
            memory_limit: MemoryLimit::default(),
            progress: None,
        }
    }
}

impl fmt::Debug for RestoreOptions {
    /// Every row of the options table by name, then the two arguments that are not values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("RestoreOptions");
        for spec in OPTIONS {
            d.field(spec.name, &spec.get(self));
        }
        d.field(
            "initial_latents",
            &self.initial_latents.as_ref().map(|t| t.dims().to_vec()),
        )
        .field("progress", &self.progress.as_ref().map(|_| "<callback>"))
        .finish()
    }
}

impl RestoreOptions {
    /// How much larger than the input the output is: the restoration prompt's upsample factor
    /// when `upsample_input`, else 1.
    pub fn output_factor(&self) -> f64 {
        if self.upsample_input {
            self.restoration_prompt.upsample_factor()
        } else {
            1.0
        }
    }

    /// The output's size for a `w × h` input — the one formula the restorer, its plan and
    /// every binding use (the C ABI's buffer sizes included).
    pub fn output_size(&self, w: usize, h: usize) -> (usize, usize) {
        let f = self.output_factor();
        ((w as f64 * f).round() as usize, (h as f64 * f).round() as usize)
    }

    /// Sets the restoration prompt from text in SPIRE's prompt language, or `auto`
    /// ([`RestorationInput::parse`]).
    ///
    /// # Errors
    /// [`Error::InvalidPrompt`] quoting the bad clause.
    pub fn with_restoration_text(mut self, text: &str) -> Result<Self> {
        self.restoration_prompt = RestorationInput::parse(text)?;
        Ok(self)
    }

    /// Checks every option, naming the first bad one.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`].
    pub fn validate(&self) -> Result<()> {
        // Types and ranges: each field against its row of the options table.
        self.check_rows()?;
        if self.eta > 0.0 && self.scheduler.is_some_and(|s| s != SchedulerKind::Ddim) {
            return Err(Error::invalid_arg("eta", "only the DDIM scheduler takes eta"));
        }
        let run = (self.num_inference_steps as f64 * self.strength) as usize;
        if run == 0 {
            // The smallest step count that runs one step at this strength (the same rounding as
            // `run`: ⌈1/strength⌉ or just above it), if the step range has one, and the smallest
            // strength that does at this step count.
            let first = (1.0 / self.strength).ceil();
            let min_steps = (0..3)
                .map(|k| first + k as f64)
                .find(|&n| n <= MAX_INFERENCE_STEPS as f64 && (n * self.strength) as usize >= 1);
            let steps_hint = match min_steps {
                Some(n) => format!("use at least {n} steps at this strength"),
                None => format!("no step count up to {MAX_INFERENCE_STEPS} runs a step at this strength"),
            };
            // 1/steps, rounded up to 3 decimals so that it survives the rounding above.
            let min_strength = ((1000.0 / self.num_inference_steps as f64).ceil() / 1000.0).min(1.0);
            return Err(Error::invalid_arg(
                "strength",
                format!(
                    "{} × {} steps leaves no step to run; {steps_hint}, or a strength of at \
                     least {min_strength} with {} steps",
                    self.strength, self.num_inference_steps, self.num_inference_steps
                ),
            ));
        }
        if let Some(l) = &self.initial_latents {
            if l.rank() != 4 {
                return Err(Error::invalid_arg(
                    "initial_latents",
                    format!("must be 4-D, got shape {:?}", l.dims()),
                ));
            }
            // `t − t` is 0 for finite values and NaN otherwise: one pass.
            let finite = l
                .broadcast_sub(l)
                .and_then(|d| d.to_dtype(candle_core::DType::F32)?.sum_all()?.to_scalar::<f32>())
                .map_err(|e| Error::invalid_arg("initial_latents", e.to_string()))?
                == 0.0;
            if !finite {
                return Err(Error::invalid_arg("initial_latents", "holds NaN or infinity"));
            }
        }
        if let RestorationInput::Verbatim(s) = &self.restoration_prompt {
            if s.trim().is_empty() {
                return Err(Error::invalid_arg("restoration_prompt", "verbatim text is empty"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limits_parse() {
        assert_eq!(MemoryLimit::parse("auto").unwrap(), MemoryLimit::Auto);
        assert_eq!(MemoryLimit::parse(" Unlimited ").unwrap(), MemoryLimit::Unlimited);
        assert_eq!(MemoryLimit::parse("2GiB").unwrap(), MemoryLimit::Bytes(2 << 30));
        assert_eq!(MemoryLimit::parse("2G").unwrap(), MemoryLimit::Bytes(2 << 30));
        assert_eq!(
            MemoryLimit::parse("1.5 GB").unwrap(),
            MemoryLimit::Bytes(1_500_000_000)
        );
        assert_eq!(
            MemoryLimit::parse("512MiB").unwrap(),
            MemoryLimit::Bytes(512 << 20)
        );
        assert_eq!(MemoryLimit::parse("4096").unwrap(), MemoryLimit::Bytes(4096));
        for bad in ["", "lots", "2 XB", "-1G", "0", "1e9", "G"] {
            let e = MemoryLimit::parse(bad).unwrap_err();
            assert!(e.to_string().contains("memory_limit"), "{bad}: {e}");
        }
    }

    #[test]
    fn too_few_steps_says_what_would_run_one() {
        for (strength, steps, want_steps, want_strength) in [
            (0.02, 20, "50 steps", "0.05 with 20"),
            (0.05, 2, "20 steps", "0.5 with 2"),
            (0.3, 1, "4 steps", "1 with 1"),
            (0.02, 49, "50 steps", "0.021 with 49"),
        ] {
            let o = RestoreOptions {
                strength,
                num_inference_steps: steps,
                ..Default::default()
            };
            let e = o.validate().unwrap_err().to_string();
            assert!(
                e.contains("strength") && e.contains(want_steps) && e.contains(want_strength),
                "{e}"
            );
            // Both suggestions do run a step.
            let n: usize = want_steps.split(' ').next().unwrap().parse().unwrap();
            assert!(RestoreOptions {
                num_inference_steps: n,
                ..o.clone()
            }
            .validate()
            .is_ok());
            let s: f64 = want_strength.split(' ').next().unwrap().parse().unwrap();
            assert!(
                RestoreOptions {
                    strength: s,
                    ..o.clone()
                }
                .validate()
                .is_ok(),
                "{s} × {steps}"
            );
        }
    }
}

/// Restore options a model recommends: the `defaults` object of its `spire.json`
/// (SPIRE.md §6), e.g. `{"defaults": {"strength": 0.4, "num_inference_steps": 25}}`.
///
/// A model trained on part of the noise schedule (the built-in one is) only works with the
/// strength and steps it was trained for, so its folder says so and
/// [`Restorer::default_options`](crate::Restorer::default_options) starts from them. The
/// options a model may recommend are the rows of [`OPTIONS`] marked `recommendable`; the rest
/// keep [`RestoreOptions::default`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelDefaults {
    values: Vec<(&'static str, OptionValue)>,
}

impl ModelDefaults {
    /// Reads the `defaults` object of a `spire.json` text (absent: no recommendations).
    /// `source` names the file in errors.
    ///
    /// # Errors
    /// [`Error::ModelLoad`] naming the file and the key: not JSON, an unknown key or one a
    /// model may not recommend, a value of the wrong type or out of range, or defaults that
    /// [`RestoreOptions::validate`] rejects together.
    pub fn from_spire_json(text: &str, source: &str) -> Result<Self> {
        let bad = |m: String| Error::model_load(source, m);
        let v: serde_json::Value =
            crate::io::parse_json(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let root = v.as_object().ok_or_else(|| bad("must be a JSON object".into()))?;
        let Some(d) = root.get("defaults") else {
            return Ok(Self::default());
        };
        let d = d
            .as_object()
            .ok_or_else(|| bad("`defaults` must be an object".into()))?;
        let known = || {
            OPTIONS
                .iter()
                .filter(|s| s.recommendable)
                .map(|s| s.name)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = Self::default();
        for (k, v) in d {
            let spec = OPTIONS
                .iter()
                .find(|s| s.name == k && s.recommendable)
                .ok_or_else(|| bad(format!("unknown key `defaults.{k}` (known: {})", known())))?;
            let value = match spec.kind {
                OptionKind::Int { .. } | OptionKind::IntOrAuto { .. } => v.as_u64().map(OptionValue::Int),
                OptionKind::Float { .. } => v.as_f64().map(OptionValue::Float),
                OptionKind::Bool => v.as_bool().map(OptionValue::Bool),
                _ => v.as_str().map(OptionValue::from),
            }
            .ok_or_else(|| {
                let what = match spec.kind {
                    OptionKind::Int { .. } | OptionKind::IntOrAuto { .. } => "a whole number",
                    OptionKind::Float { .. } => "a number",
                    OptionKind::Bool => "true or false",
                    _ => "a string",
                };
                bad(format!("`defaults.{k}` must be {what}, got {v}"))
            })?;
            let mut scratch = RestoreOptions::default();
            spec.set(&mut scratch, value).map_err(|e| match e {
                Error::InvalidArgument { message, .. } => bad(format!("`defaults.{k}`: {message}")),
                other => bad(format!("`defaults.{k}`: {other}")),
            })?;
            out.values.push((spec.name, spec.get(&scratch)));
        }
        let mut o = RestoreOptions::default();
        out.apply(&mut o);
        o.validate()
            .map_err(|e| bad(format!("`defaults` are not valid options: {e}")))?;
        Ok(out)
    }

    /// Whether it recommends nothing.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The recommended value of option `name`, if any.
    pub fn get(&self, name: &str) -> Option<&OptionValue> {
        self.values.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The recommendations, in the order the file gives them.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &OptionValue)> + '_ {
        self.values.iter().map(|(n, v)| (*n, v))
    }

    /// Writes the recommended options into `o`.
    pub fn apply(&self, o: &mut RestoreOptions) {
        for (name, v) in &self.values {
            // Checked when read: setting a checked value cannot fail.
            if let Ok(spec) = option(name) {
                let _ = spec.set(o, v.clone());
            }
        }
    }
}
