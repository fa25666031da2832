//! Every restore option once: its name, type, default, range and documentation, and whether a
//! model's `spire.json` may recommend it. The command line's flags, the Python keywords and
//! their stubs, the C header's checks, `spire.json`'s `defaults` and the options table in
//! `docs/restoring.md` all come from [`OPTIONS`]; [`RestoreOptions::set`] / [`get`] reach a
//! field by name with the core's own error messages, and [`RestoreOptions::validate`] checks
//! every field against its row.
//!
//! Two arguments of a restore are not values and are not rows: `initial_latents` (a tensor)
//! and `progress` (a callback). Each binding takes them in its own way.
//!
//! [`get`]: RestoreOptions::get

use std::fmt;

use crate::colorfix::ColorFix;
use crate::error::{Error, Result};
use crate::prompt::BLIND;
use crate::scheduler::SchedulerKind;

use super::{MemoryLimit, RestorationInput, RestoreOptions, MAX_INFERENCE_STEPS};

/// An option's value, as the surfaces hand it over (a CLI string, a Python object, a JSON
/// value, a C field).
#[derive(Debug, Clone, PartialEq)]
pub enum OptionValue {
    /// Chosen by the library (`"auto"` in text): a tile size left to the plan, the memory
    /// limit from the available memory.
    Auto,
    /// A switch.
    Bool(bool),
    /// A whole number.
    Int(u64),
    /// A number.
    Float(f64),
    /// Text: a prompt, a name.
    Text(String),
}

impl fmt::Display for OptionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionValue::Auto => f.write_str("auto"),
            OptionValue::Bool(b) => write!(f, "{b}"),
            OptionValue::Int(i) => write!(f, "{i}"),
            OptionValue::Float(x) => write!(f, "{x}"),
            OptionValue::Text(s) => f.write_str(s),
        }
    }
}

impl From<bool> for OptionValue {
    fn from(v: bool) -> Self {
        OptionValue::Bool(v)
    }
}
impl From<u64> for OptionValue {
    fn from(v: u64) -> Self {
        OptionValue::Int(v)
    }
}
impl From<usize> for OptionValue {
    fn from(v: usize) -> Self {
        OptionValue::Int(v as u64)
    }
}
impl From<u32> for OptionValue {
    fn from(v: u32) -> Self {
        OptionValue::Int(v as u64)
    }
}
impl From<f64> for OptionValue {
    fn from(v: f64) -> Self {
        OptionValue::Float(v)
    }
}
impl From<&str> for OptionValue {
    fn from(v: &str) -> Self {
        OptionValue::Text(v.to_string())
    }
}
impl From<String> for OptionValue {
    fn from(v: String) -> Self {
        OptionValue::Text(v)
    }
}

/// What an option holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptionKind {
    /// Any text.
    Text,
    /// A restoration prompt in SPIRE's language, or `auto` (optionally with clauses).
    Prompt,
    /// A whole number in `min..=max`.
    Int {
        /// Smallest value.
        min: u64,
        /// Largest value.
        max: u64,
    },
    /// A whole number in `min..=max`, or `auto`.
    IntOrAuto {
        /// Smallest value.
        min: u64,
        /// Largest value.
        max: u64,
    },
    /// A finite number from `min` (excluded when `open_min`) to `max` (infinite: unbounded).
    Float {
        /// Lower bound.
        min: f64,
        /// Whether `min` itself is excluded.
        open_min: bool,
        /// Upper bound (included), or infinity.
        max: f64,
    },
    /// `true` / `false`.
    Bool,
    /// One of these names (aliases may be accepted too).
    Choice(&'static [&'static str]),
    /// `auto`, `unlimited`, bytes or a size such as `2GiB` ([`MemoryLimit::parse`]).
    Memory,
}

impl OptionKind {
    /// The type as the docs and `--help` show it.
    pub fn describe(&self) -> String {
        match self {
            OptionKind::Text => "text".into(),
            OptionKind::Prompt => "prompt".into(),
            OptionKind::Int { min, max } if *max == u64::MAX => format!("integer ≥ {min}"),
            OptionKind::Int { min, max } => format!("integer in {min}…{max}"),
            OptionKind::IntOrAuto { min, .. } => format!("integer ≥ {min} or auto"),
            OptionKind::Float { min, open_min, max } => {
                let lo = if *open_min { "(" } else { "[" };
                if max.is_infinite() {
                    if *open_min {
                        format!("number > {min}")
                    } else {
                        format!("number ≥ {min}")
                    }
                } else {
                    format!("number in {lo}{min}, {max}]")
                }
            }
            OptionKind::Bool => "bool".into(),
            OptionKind::Choice(names) => names.join(" | "),
            OptionKind::Memory => "auto | unlimited | size".into(),
        }
    }
}

/// One restore option.
pub struct OptionSpec {
    /// The name on every surface (`--num-inference-steps` on the command line).
    pub name: &'static str,
    /// What it holds.
    pub kind: OptionKind,
    /// The library default, as text `set_text` accepts (a model may recommend another).
    pub default: &'static str,
    /// One line of documentation.
    pub doc: &'static str,
    /// Whether a model's `spire.json` may recommend it (`defaults`).
    pub recommendable: bool,
    /// The pipeline stages that read it (docs/architecture.md draws them).
    pub stages: &'static [PipelineStage],
    get: fn(&RestoreOptions) -> OptionValue,
    set: fn(&mut RestoreOptions, OptionValue) -> Result<()>,
}

impl fmt::Debug for OptionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OptionSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("default", &self.default)
            .field("recommendable", &self.recommendable)
            .field("stages", &self.stages)
            .finish()
    }
}

fn bad(name: &str, msg: String) -> Error {
    Error::invalid_arg(name, msg)
}

/// "an integer …", "a number …".
fn a(kind: &OptionKind) -> String {
    let d = kind.describe();
    let article = if d.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {d}")
}

impl OptionSpec {
    /// Converts `v` to this option's kind and checks its range: text is parsed, an integer
    /// is taken where a number is asked for.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the option, its range and the value.
    pub fn check(&self, v: OptionValue) -> Result<OptionValue> {
        let name = self.name;
        let wrong = |v: &OptionValue| bad(name, format!("must be {}, got `{v}`", a(&self.kind)));
        match self.kind {
            OptionKind::Text | OptionKind::Prompt | OptionKind::Choice(_) | OptionKind::Memory => match v {
                OptionValue::Text(_) => Ok(v),
                OptionValue::Auto if matches!(self.kind, OptionKind::Memory) => Ok(v),
                OptionValue::Int(0) if matches!(self.kind, OptionKind::Memory) => {
                    Err(bad(name, "must be more than 0 bytes".into()))
                }
                OptionValue::Int(_) if matches!(self.kind, OptionKind::Memory) => Ok(v),
                _ => Err(wrong(&v)),
            },
            OptionKind::Bool => match v {
                OptionValue::Bool(_) => Ok(v),
                OptionValue::Text(ref t) => match t.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "on" => Ok(OptionValue::Bool(true)),
                    "false" | "0" | "no" | "off" => Ok(OptionValue::Bool(false)),
                    _ => Err(wrong(&v)),
                },
                _ => Err(wrong(&v)),
            },
            OptionKind::Int { min, max } | OptionKind::IntOrAuto { min, max } => {
                let auto_ok = matches!(self.kind, OptionKind::IntOrAuto { .. });
                let n = match v {
                    OptionValue::Auto if auto_ok => return Ok(OptionValue::Auto),
                    OptionValue::Int(n) => n,
                    OptionValue::Float(x) if x.fract() == 0.0 && x >= 0.0 && x <= u64::MAX as f64 => x as u64,
                    OptionValue::Text(ref t) if auto_ok && t.trim().eq_ignore_ascii_case("auto") => {
                        return Ok(OptionValue::Auto)
                    }
                    OptionValue::Text(ref t) => t.trim().parse::<u64>().map_err(|_| wrong(&v))?,
                    _ => return Err(wrong(&v)),
                };
                if n < min || n > max {
                    return Err(bad(name, format!("must be {}, got {n}", a(&self.kind))));
                }
                Ok(OptionValue::Int(n))
            }
            OptionKind::Float { min, open_min, max } => {
                let x = match v {
                    OptionValue::Float(x) => x,
                    OptionValue::Int(n) => n as f64,
                    OptionValue::Text(ref t) => t.trim().parse::<f64>().map_err(|_| wrong(&v))?,
                    _ => return Err(wrong(&v)),
                };
                let below = if open_min { x <= min } else { x < min };
                if !x.is_finite() || below || x > max {
                    return Err(bad(name, format!("must be {}, got {x}", a(&self.kind))));
                }
                Ok(OptionValue::Float(x))
            }
        }
    }

    /// This option's value in `o`.
    pub fn get(&self, o: &RestoreOptions) -> OptionValue {
        (self.get)(o)
    }

    /// Sets this option in `o` from `v` (converted and checked by [`OptionSpec::check`]).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the option; [`Error::InvalidPrompt`] for a bad
    /// restoration prompt.
    pub fn set(&self, o: &mut RestoreOptions, v: OptionValue) -> Result<()> {
        let v = self.check(v)?;
        (self.set)(o, v)
    }

    /// The default as a value (what [`RestoreOptions::default`] holds).
    pub fn default_value(&self) -> OptionValue {
        let mut o = RestoreOptions::default();
        // The defaults are checked against the struct by a test; text defaults always parse.
        match self.set(&mut o, OptionValue::Text(self.default.to_string())) {
            Ok(()) => self.get(&o),
            Err(_) => OptionValue::Text(self.default.to_string()),
        }
    }
}

fn text(v: OptionValue) -> String {
    match v {
        OptionValue::Text(s) => s,
        other => other.to_string(),
    }
}

fn float(v: OptionValue) -> f64 {
    match v {
        OptionValue::Float(x) => x,
        OptionValue::Int(n) => n as f64,
        _ => f64::NAN,
    }
}

fn int(v: OptionValue) -> u64 {
    match v {
        OptionValue::Int(n) => n,
        _ => 0,
    }
}

fn int_or_auto(v: OptionValue) -> Option<usize> {
    match v {
        OptionValue::Int(n) => Some(n as usize),
        _ => None,
    }
}

fn optional(v: Option<usize>) -> OptionValue {
    v.map_or(OptionValue::Auto, OptionValue::from)
}

const UNBOUNDED: f64 = f64::INFINITY;
const NONNEG: OptionKind = OptionKind::Float {
    min: 0.0,
    open_min: false,
    max: UNBOUNDED,
};

/// The scheduler names (`model`: the class of the model's `scheduler_config.json`).
pub const SCHEDULER_NAMES: &[&str] = &["dpm++2m", "ddim", "euler", "model"];
/// The colour-fix names.
pub const COLOR_FIX_NAMES: &[&str] = &["wavelet", "adain", "none"];

/// The stages of one restore call, in order (`restorer` runs them as functions of those
/// names; docs/architecture.md draws them with the options each one reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum PipelineStage {
    /// Planning memory and tiles from the sizes alone, before any pixel is converted.
    Plan,
    /// Converting the input to planar RGB, enlarging it to the output size, padding it.
    Prepare,
    /// Encoding the prompts the guidance passes need.
    Prompts,
    /// Choosing the schedule and the start: strength, noise-matched start, hint, start latents.
    Start,
    /// Denoising: guided predictions of the adaptor and the backbone over the latent tiles.
    Denoise,
    /// Decoding the latents to pixels.
    Decode,
    /// Measurement consistency with the input under the prompt's degradation.
    Consistency,
    /// The colour fix.
    ColorFix,
}

impl PipelineStage {
    /// Every stage, in the order a call runs them.
    pub const ALL: [PipelineStage; 8] = [
        Self::Plan,
        Self::Prepare,
        Self::Prompts,
        Self::Start,
        Self::Denoise,
        Self::Decode,
        Self::Consistency,
        Self::ColorFix,
    ];

    /// The stage's name in the docs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plan => "plan",
            Self::Prepare => "prepare geometry",
            Self::Prompts => "encode prompts",
            Self::Start => "choose the start",
            Self::Denoise => "denoise",
            Self::Decode => "decode",
            Self::Consistency => "measurement consistency",
            Self::ColorFix => "colour fix",
        }
    }

    /// The function that runs it (under `spire_core::restorer`).
    pub fn function(self) -> &'static str {
        match self {
            Self::Plan => "memory::plan_call",
            Self::Prepare => "restore_batch, prepare_geometry",
            Self::Prompts => "guidance::encode_prompts",
            Self::Start => "start::schedule, start::start",
            Self::Denoise => "denoise, guidance::predict",
            Self::Decode => "decode",
            Self::Consistency | Self::ColorFix => "finish",
        }
    }
}

/// The pipeline as text for docs/architecture.md: each stage, the function that runs it and
/// the options it reads (from the table's `stages`).
pub fn stage_diagram() -> String {
    let mut s = String::from("```text\n");
    for (i, st) in PipelineStage::ALL.iter().enumerate() {
        let opts: Vec<&str> = OPTIONS
            .iter()
            .filter(|o| o.stages.contains(st))
            .map(|o| o.name)
            .collect();
        s += &format!("{}. {:<24} {}\n", i, st.name(), st.function());
        let mut line = String::from("      reads:");
        for o in opts {
            if line.len() + o.len() + 1 > 96 {
                s += &line;
                s += "\n";
                line = String::from("            ");
            }
            line += " ";
            line += o;
        }
        s += &line;
        s += "\n";
        if i + 1 < PipelineStage::ALL.len() {
            s += "   │\n";
        }
    }
    s += "```\n";
    s
}

/// Every restore option, in the order the docs and `--help` list them.
pub static OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "restoration_prompt",
        kind: OptionKind::Prompt,
        default: BLIND,
        doc: "What to undo and how strongly, in SPIRE's prompt language (\"Deblur with sigma 2.0; Denoise with sigma 0.08\"), or `auto` to read it from each image (given clauses win: \"auto; Upsample with scale 2\"). Its upsample factor sets the output size.",
        recommendable: false,
        stages: &[PipelineStage::Plan, PipelineStage::Prepare, PipelineStage::Prompts, PipelineStage::Start, PipelineStage::Consistency],
        get: |o| match &o.restoration_prompt {
            RestorationInput::Verbatim(_) => OptionValue::Text(BLIND.into()),
            p => OptionValue::Text(p.text()),
        },
        set: |o, v| {
            o.restoration_prompt = RestorationInput::parse(&text(v))?;
            Ok(())
        },
    },
    OptionSpec {
        name: "verbatim_restoration_prompt",
        kind: OptionKind::Text,
        default: "",
        doc: "Free text sent to the adaptor as is, instead of `restoration_prompt`, for adaptors trained on another prompt language (it carries no upsample factor). Empty: not used.",
        recommendable: false,
        stages: &[PipelineStage::Prompts],
        get: |o| match &o.restoration_prompt {
            RestorationInput::Verbatim(s) => OptionValue::Text(s.clone()),
            _ => OptionValue::Text(String::new()),
        },
        set: |o, v| {
            let t = text(v);
            if !t.trim().is_empty() {
                o.restoration_prompt = RestorationInput::Verbatim(t);
            } else if matches!(o.restoration_prompt, RestorationInput::Verbatim(_)) {
                o.restoration_prompt = RestorationInput::default();
            }
            Ok(())
        },
    },
    OptionSpec {
        name: "semantic_prompt",
        kind: OptionKind::Text,
        default: "",
        doc: "A caption of the picture; only the backbone sees it.",
        recommendable: false,
        stages: &[PipelineStage::Prompts],
        get: |o| OptionValue::Text(o.semantic_prompt.clone()),
        set: |o, v| {
            o.semantic_prompt = text(v);
            Ok(())
        },
    },
    OptionSpec {
        name: "negative_prompt",
        kind: OptionKind::Text,
        default: "",
        doc: "The semantic null prompt ∅_s.",
        recommendable: false,
        stages: &[PipelineStage::Prompts],
        get: |o| OptionValue::Text(o.negative_prompt.clone()),
        set: |o, v| {
            o.negative_prompt = text(v);
            Ok(())
        },
    },
    OptionSpec {
        name: "restoration_null_prompt",
        kind: OptionKind::Text,
        default: BLIND,
        doc: "The restoration null prompt ∅_r.",
        recommendable: false,
        stages: &[PipelineStage::Prompts],
        get: |o| OptionValue::Text(o.restoration_null_prompt.clone()),
        set: |o, v| {
            o.restoration_null_prompt = text(v);
            Ok(())
        },
    },
    OptionSpec {
        name: "num_inference_steps",
        kind: OptionKind::Int {
            min: 1,
            max: MAX_INFERENCE_STEPS as u64,
        },
        default: "20",
        doc: "Denoising steps.",
        recommendable: true,
        stages: &[PipelineStage::Start, PipelineStage::Denoise],
        get: |o| OptionValue::from(o.num_inference_steps),
        set: |o, v| {
            o.num_inference_steps = int(v) as usize;
            Ok(())
        },
    },
    OptionSpec {
        name: "scheduler",
        kind: OptionKind::Choice(SCHEDULER_NAMES),
        default: "dpm++2m",
        doc: "The sampler; `model` uses the class of the model's `scheduler_config.json`. The schedule (betas, prediction type, spacing, Karras sigmas) always comes from that file.",
        recommendable: true,
        stages: &[PipelineStage::Start, PipelineStage::Denoise],
        get: |o| OptionValue::Text(o.scheduler.map_or("model", |s| s.as_str()).into()),
        set: |o, v| {
            let s = text(v);
            o.scheduler = if s.trim().eq_ignore_ascii_case("model") {
                None
            } else {
                Some(SchedulerKind::parse(s.trim()).ok_or_else(|| {
                    bad(
                        "scheduler",
                        format!("unknown `{s}` (one of {})", SCHEDULER_NAMES.join(", ")),
                    )
                })?)
            };
            Ok(())
        },
    },
    OptionSpec {
        name: "eta",
        kind: OptionKind::Float {
            min: 0.0,
            open_min: false,
            max: 1.0,
        },
        default: "0",
        doc: "DDIM's η (0: deterministic, 1: DDPM-like; seeded). Only with DDIM.",
        recommendable: true,
        stages: &[PipelineStage::Start, PipelineStage::Denoise],
        get: |o| OptionValue::Float(o.eta),
        set: |o, v| {
            o.eta = float(v);
            Ok(())
        },
    },
    OptionSpec {
        name: "restoration_guidance",
        kind: NONNEG,
        default: "1",
        doc: "Strength w_r of restoration-prompt guidance (1 = none).",
        recommendable: true,
        stages: &[PipelineStage::Prompts, PipelineStage::Denoise],
        get: |o| OptionValue::Float(o.restoration_guidance),
        set: |o, v| {
            o.restoration_guidance = float(v);
            Ok(())
        },
    },
    OptionSpec {
        name: "semantic_guidance",
        kind: NONNEG,
        default: "1",
        doc: "Strength w_s of semantic-prompt guidance (1 = none).",
        recommendable: true,
        stages: &[PipelineStage::Prompts, PipelineStage::Denoise],
        get: |o| OptionValue::Float(o.semantic_guidance),
        set: |o, v| {
            o.semantic_guidance = float(v);
            Ok(())
        },
    },
    OptionSpec {
        name: "conditioning_scale",
        kind: NONNEG,
        default: "1",
        doc: "Scale s of the adaptor's signals (`f ⊙ (1 + s·γ) + s·β`, or `f + s·r` for ControlNets); 0 turns the adaptor off.",
        recommendable: true,
        stages: &[PipelineStage::Denoise],
        get: |o| OptionValue::Float(o.conditioning_scale),
        set: |o, v| {
            o.conditioning_scale = float(v);
            Ok(())
        },
    },
    OptionSpec {
        name: "strength",
        kind: OptionKind::Float {
            min: 0.0,
            open_min: true,
            max: 1.0,
        },
        default: "1",
        doc: "Fraction of the schedule to run: 1 starts from pure noise; below 1 from the noised encoding of the input at t = strength·T, running ⌊steps·strength⌋ steps.",
        recommendable: true,
        stages: &[PipelineStage::Start],
        get: |o| OptionValue::Float(o.strength),
        set: |o, v| {
            o.strength = float(v);
            Ok(())
        },
    },
    OptionSpec {
        name: "seed",
        kind: OptionKind::Int { min: 0, max: u64::MAX },
        default: "0",
        doc: "Seed of all noise; the same seed gives the same image on every device and thread count.",
        recommendable: false,
        stages: &[PipelineStage::Start, PipelineStage::Denoise],
        get: |o| OptionValue::Int(o.seed),
        set: |o, v| {
            o.seed = int(v);
            Ok(())
        },
    },
    OptionSpec {
        name: "color_fix",
        kind: OptionKind::Choice(COLOR_FIX_NAMES),
        default: "wavelet",
        doc: "Colour correction after decoding: low frequencies from the input (`wavelet`), per-channel mean and deviation (`adain`), or none.",
        recommendable: true,
        stages: &[PipelineStage::ColorFix],
        get: |o| OptionValue::Text(o.color_fix.as_str().into()),
        set: |o, v| {
            let s = text(v);
            o.color_fix = ColorFix::parse(s.trim()).ok_or_else(|| {
                bad(
                    "color_fix",
                    format!("unknown `{s}` (one of {})", COLOR_FIX_NAMES.join(", ")),
                )
            })?;
            Ok(())
        },
    },
    OptionSpec {
        name: "consistency",
        kind: NONNEG,
        default: "0",
        doc: "Measurement consistency: after decoding, pull the output towards agreement with the input under the degradation the prompt names, trusting the model's output to this σ on [0, 1] intensities; 0 turns it off.",
        recommendable: true,
        stages: &[PipelineStage::Consistency],
        get: |o| OptionValue::Float(o.consistency),
        set: |o, v| {
            o.consistency = float(v);
            Ok(())
        },
    },
    OptionSpec {
        name: "match_noise",
        kind: OptionKind::Bool,
        default: "true",
        doc: "Noise-matched start: with a stated noise σ, DDIM, a linear autoencoder and strength < 1, start from the input at the timestep whose noise level matches σ.",
        recommendable: true,
        stages: &[PipelineStage::Start],
        get: |o| OptionValue::Bool(o.match_noise),
        set: |o, v| {
            o.match_noise = v == OptionValue::Bool(true);
            Ok(())
        },
    },
    OptionSpec {
        name: "upsample_input",
        kind: OptionKind::Bool,
        default: "true",
        doc: "Enlarge the input by the prompt's upsample factor; false takes it as already enlarged to the output size (a degraded image resized back, as the degradation pipelines return it).",
        recommendable: false,
        stages: &[PipelineStage::Plan, PipelineStage::Prepare],
        get: |o| OptionValue::Bool(o.upsample_input),
        set: |o, v| {
            o.upsample_input = v == OptionValue::Bool(true);
            Ok(())
        },
    },
    OptionSpec {
        name: "tile_size",
        kind: OptionKind::IntOrAuto {
            min: 1,
            max: u64::MAX,
        },
        default: "auto",
        doc: "Latent tile side for sampling, in latent pixels; auto lets the plan choose (one piece unless it would not fit memory_limit or tiles do less work).",
        recommendable: false,
        stages: &[PipelineStage::Plan, PipelineStage::Denoise],
        get: |o| optional(o.tile_size),
        set: |o, v| {
            o.tile_size = int_or_auto(v);
            Ok(())
        },
    },
    OptionSpec {
        name: "tile_overlap",
        kind: OptionKind::Int {
            min: 0,
            max: u64::MAX,
        },
        default: "16",
        doc: "Overlap of neighbouring latent tiles, in latent pixels.",
        recommendable: false,
        stages: &[PipelineStage::Plan, PipelineStage::Denoise],
        get: |o| OptionValue::from(o.tile_overlap),
        set: |o, v| {
            o.tile_overlap = int(v) as usize;
            Ok(())
        },
    },
    OptionSpec {
        name: "vae_tile_size",
        kind: OptionKind::IntOrAuto {
            min: 1,
            max: u64::MAX,
        },
        default: "auto",
        doc: "Autoencoder tile side in image pixels; auto picks it from memory_limit (whole when it fits). Tiles equal the whole-image computation.",
        recommendable: false,
        stages: &[PipelineStage::Plan, PipelineStage::Start, PipelineStage::Decode],
        get: |o| optional(o.vae_tile_size),
        set: |o, v| {
            o.vae_tile_size = int_or_auto(v);
            Ok(())
        },
    },
    OptionSpec {
        name: "memory_limit",
        kind: OptionKind::Memory,
        default: "auto",
        doc: "Peak memory of the call beyond the loaded weights: `auto` (¾ of available memory), `unlimited`, bytes or a size such as `2GiB`; a call that cannot fit is refused before it starts.",
        recommendable: false,
        stages: &[PipelineStage::Plan],
        get: |o| match o.memory_limit {
            MemoryLimit::Auto => OptionValue::Auto,
            MemoryLimit::Unlimited => OptionValue::Text("unlimited".into()),
            MemoryLimit::Bytes(b) => OptionValue::Int(b),
        },
        set: |o, v| {
            o.memory_limit = match v {
                OptionValue::Auto => MemoryLimit::Auto,
                OptionValue::Int(b) => MemoryLimit::Bytes(b),
                other => MemoryLimit::parse(&text(other))?,
            };
            Ok(())
        },
    },
];

/// The row of `name`.
///
/// # Errors
/// [`Error::InvalidArgument`] for an unknown name, listing the closest known ones.
pub fn option(name: &str) -> Result<&'static OptionSpec> {
    let key = name.trim().replace('-', "_").to_ascii_lowercase();
    OPTIONS.iter().find(|s| s.name == key).ok_or_else(|| {
        let mut near: Vec<_> = OPTIONS
            .iter()
            .map(|s| (edit_distance(&key, s.name), s.name))
            .collect();
        near.sort();
        let hint: Vec<_> = near.iter().take(3).map(|(_, n)| *n).collect();
        bad(
            name,
            format!("no such restore option (closest: {})", hint.join(", ")),
        )
    })
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

impl RestoreOptions {
    /// Sets the option `name` (a row of [`OPTIONS`]; `-` and `_` alike) from a value, converted
    /// and range-checked as the row says: `opts.set("strength", 0.4)`,
    /// `opts.set("scheduler", "ddim")`, `opts.set("tile_size", "auto")`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the option (unknown, wrong type, out of range);
    /// [`Error::InvalidPrompt`] for a bad restoration prompt.
    pub fn set(&mut self, name: &str, value: impl Into<OptionValue>) -> Result<()> {
        option(name)?.set(self, value.into())
    }

    /// The value of option `name`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown name.
    pub fn get(&self, name: &str) -> Result<OptionValue> {
        Ok(option(name)?.get(self))
    }

    /// Checks every field against its row of [`OPTIONS`] (types and ranges), naming the first
    /// bad one.
    pub(crate) fn check_rows(&self) -> Result<()> {
        for spec in OPTIONS {
            spec.check(spec.get(self))?;
        }
        Ok(())
    }
}

/// The options table of `docs/restoring.md` (Markdown), generated from [`OPTIONS`].
pub fn markdown_table() -> String {
    let mut s =
        String::from("| option | type | default | recommendable | what it does |\n|---|---|---|:---:|---|\n");
    for o in OPTIONS {
        let default = if o.default.is_empty() {
            "\"\"".to_string()
        } else {
            format!("`{}`", o.default)
        };
        s += &format!(
            "| `{}` | {} | {} | {} | {} |\n",
            o.name,
            o.kind.describe().replace('|', "\\|"),
            default,
            if o.recommendable { "✓" } else { "" },
            o.doc.replace('|', "\\|")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_is_what_the_struct_holds() {
        let o = RestoreOptions::default();
        for spec in OPTIONS {
            let mut p = RestoreOptions::default();
            spec.set(&mut p, OptionValue::Text(spec.default.into()))
                .unwrap_or_else(|e| panic!("{}: default `{}` does not parse: {e}", spec.name, spec.default));
            assert_eq!(spec.get(&p), spec.get(&o), "{}", spec.name);
            assert_eq!(spec.default_value(), spec.get(&o), "{}", spec.name);
        }
        o.check_rows().unwrap();
    }

    #[test]
    fn names_are_unique_and_snake_case() {
        for (i, a) in OPTIONS.iter().enumerate() {
            assert!(
                a.name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{}",
                a.name
            );
            assert!(!a.doc.is_empty(), "{}", a.name);
            for b in &OPTIONS[i + 1..] {
                assert_ne!(a.name, b.name);
            }
        }
    }

    #[test]
    fn set_converts_checks_and_names_the_option() {
        let mut o = RestoreOptions::default();
        o.set("strength", 0.4).unwrap();
        o.set("num-inference-steps", "25").unwrap();
        o.set("scheduler", "DDIM").unwrap();
        o.set("eta", 1u64).unwrap();
        o.set("tile_size", "auto").unwrap();
        o.set("vae_tile_size", 512usize).unwrap();
        o.set("memory_limit", "2GiB").unwrap();
        o.set("upsample_input", "false").unwrap();
        o.set("restoration_prompt", "auto; Upsample with scale 2")
            .unwrap();
        assert_eq!(o.strength, 0.4);
        assert_eq!(o.num_inference_steps, 25);
        assert_eq!(o.scheduler, Some(SchedulerKind::Ddim));
        assert_eq!(o.eta, 1.0);
        assert_eq!(o.tile_size, None);
        assert_eq!(o.vae_tile_size, Some(512));
        assert_eq!(o.memory_limit, MemoryLimit::Bytes(2 << 30));
        assert!(!o.upsample_input);
        assert_eq!(
            o.get("restoration_prompt").unwrap(),
            OptionValue::Text("auto; Upsample with scale 2.0".into())
        );
        o.validate().unwrap();
        for (name, v, want) in [
            ("strength", OptionValue::Float(0.0), "strength"),
            ("strength", OptionValue::Float(f64::NAN), "strength"),
            ("eta", OptionValue::Float(1.5), "eta"),
            ("num_inference_steps", OptionValue::Int(0), "num_inference_steps"),
            (
                "num_inference_steps",
                OptionValue::Text("many".into()),
                "num_inference_steps",
            ),
            ("scheduler", OptionValue::Text("plms".into()), "dpm++2m"),
            ("color_fix", OptionValue::Text("sepia".into()), "wavelet"),
            ("match_noise", OptionValue::Text("maybe".into()), "match_noise"),
            ("memory_limit", OptionValue::Int(0), "memory_limit"),
            ("tile_size", OptionValue::Int(0), "tile_size"),
            ("semantic_prompt", OptionValue::Int(3), "semantic_prompt"),
            ("stenght", OptionValue::Float(0.5), "strength"),
        ] {
            let e = o.clone().set(name, v.clone()).unwrap_err().to_string();
            assert!(e.contains(want), "{name} = {v:?}: {e}");
        }
        assert!(matches!(
            o.clone().set("restoration_prompt", "Deblur with sigma -1"),
            Err(Error::InvalidPrompt { .. })
        ));
    }

    #[test]
    fn verbatim_prompt_round_trips() {
        let mut o = RestoreOptions::default();
        o.set("verbatim_restoration_prompt", "a sharp photo").unwrap();
        assert_eq!(
            o.restoration_prompt,
            RestorationInput::Verbatim("a sharp photo".into())
        );
        assert_eq!(
            o.get("restoration_prompt").unwrap(),
            OptionValue::Text(BLIND.into())
        );
        o.set("verbatim_restoration_prompt", "").unwrap();
        assert_eq!(o.restoration_prompt, RestorationInput::default());
    }

    #[test]
    fn validate_checks_every_row() {
        for (field, o) in [
            (
                "strength",
                RestoreOptions {
                    strength: 1.5,
                    ..Default::default()
                },
            ),
            (
                "eta",
                RestoreOptions {
                    eta: -0.1,
                    ..Default::default()
                },
            ),
            (
                "consistency",
                RestoreOptions {
                    consistency: f64::INFINITY,
                    ..Default::default()
                },
            ),
            (
                "tile_size",
                RestoreOptions {
                    tile_size: Some(0),
                    ..Default::default()
                },
            ),
        ] {
            let e = o.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
    }
}
