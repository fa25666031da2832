//! `spire`: the command line of spire-core (clap; `spire --help`, `spire <command> --help`,
//! `spire completions bash|zsh|fish|powershell|elvish`).
//!
//! The restore options are the rows of `spire_core::options::OPTIONS`, each a flag
//! `--name-with-dashes VALUE` (`--num-inference-steps 25`; `--flag=value` works too; the
//! boolean rows also as bare `--upsample-input` / `--upsample-input=false`), plus `--prompt`,
//! `--restoration-text`, `--caption` and `--steps` for the four used most. Without `--model`,
//! `restore` uses the built-in model. Options not given take the model's recommendations (its
//! `spire.json` defaults), then the library's defaults.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Arg, ArgAction, ArgMatches, Command};
use spire_core::options::{OptionKind, OptionValue, OPTIONS};
use spire_core::{Error, LoadOptions, RestorationPrompt, Restorer};

const AFTER_HELP: &str = "Options not given take the model's recommended values (spire.json), then the \
library's (docs/restoring.md lists them). The output's extension picks PNG or JPEG. \
SPIRE_FUSED_KERNELS=0 in the environment turns the fused CPU kernels off (candle's ops instead).";

/// A command's arguments once clap has parsed them: the positionals in order, and every flag
/// given on the command line by its long name (a bare boolean flag as `true`).
struct Args {
    positional: Vec<String>,
    flags: HashMap<String, String>,
}

impl Args {
    fn from_matches(cmd: &Command, m: &ArgMatches) -> Self {
        let mut positional = Vec::new();
        let mut flags = HashMap::new();
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if m.value_source(id) != Some(clap::parser::ValueSource::CommandLine) {
                continue;
            }
            let value = match arg.get_action() {
                ArgAction::SetTrue => "true".to_string(),
                _ => m
                    .get_raw(id)
                    .and_then(|mut v| v.next_back())
                    .map(|v| v.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            };
            match arg.get_long() {
                Some(long) => {
                    flags.insert(long.to_string(), value);
                }
                None => positional.push(value),
            }
        }
        Args { positional, flags }
    }
}

fn num<T: std::str::FromStr>(a: &Args, name: &str) -> Result<Option<T>, String> {
    a.flags
        .get(name)
        .map(|v| {
            v.parse::<T>()
                .map_err(|_| format!("--{name}: `{v}` is not a valid number"))
        })
        .transpose()
}

fn fail(e: Error) -> String {
    e.to_string()
}

fn flag(name: &'static str, value: &'static str, help: &'static str) -> Arg {
    Arg::new(name).long(name).value_name(value).help(help)
}

fn positional(name: &'static str, help: &'static str) -> Arg {
    Arg::new(name).required(true).help(help)
}

/// The flags every model-running command takes.
fn device_args() -> [Arg; 4] {
    [
        flag("device", "cpu|cuda[:N]|metal", "Where the model runs (a GPU needs a build with the `cuda` or `metal` feature, docs/gpu.md)")
            .help_heading("Device"),
        flag("dtype", "f32|f16|bf16", "The weights' precision (f16/bf16 halve the memory; the autoencoder stays f32 where it would overflow)")
            .help_heading("Device"),
        flag("weight-dtype", "f16|bf16", "Keep convolution and linear weights in half size while computing in --dtype (halves a CPU model's memory; docs/performance.md)")
            .help_heading("Device"),
        flag("threads", "N", "CPU threads (default: all cores)").help_heading("Device"),
    ]
}

/// The flags that pick the model: a folder, or a single-file checkpoint with its ControlNet.
fn model_args() -> [Arg; 5] {
    [
        flag("model", "DIR", "A SPIRE model folder (default: the built-in spire-tiny)").help_heading("Model"),
        flag("checkpoint", "SD.safetensors", "A single-file Stable Diffusion 1.x/2.x checkpoint (original layout; docs/model-format.md), with --controlnet")
            .help_heading("Model"),
        flag("controlnet", "FILE|DIR", "The adaptor for --checkpoint: a single-file ControlNet or a ControlNet/adaptor folder")
            .help_heading("Model"),
        flag("config", "DIR", "For --checkpoint: a folder with tokenizer/ and optionally scheduler/ (e.g. the model's diffusers folder)")
            .help_heading("Model"),
        flag("prediction-type", "epsilon|v_prediction", "For --checkpoint: what the UNet predicts, when its config cannot tell")
            .help_heading("Model"),
    ]
}

/// Short names the command line keeps for four restore options.
const RESTORE_ALIASES: [(&str, &str); 4] = [
    ("prompt", "restoration_prompt"),
    ("restoration-text", "verbatim_restoration_prompt"),
    ("caption", "semantic_prompt"),
    ("steps", "num_inference_steps"),
];

/// The restore options every restoring command takes: each row of the options table as
/// `--name-with-dashes VALUE`, its help and default from the row. Values are checked by the
/// row itself (`RestoreOptions::set`), so the messages are the core's on every surface.
fn restore_args() -> Vec<Arg> {
    OPTIONS
        .iter()
        .map(|o| {
            let long: &'static str = Box::leak(o.name.replace('_', "-").into_boxed_str());
            let default = if o.default.is_empty() { "\"\"" } else { o.default };
            let help: &'static str = Box::leak(format!("{} [default: {default}]", o.doc).into_boxed_str());
            let kind: &'static str = match o.kind {
                OptionKind::Choice(_) => "NAME",
                _ => Box::leak(o.kind.describe().to_uppercase().into_boxed_str()),
            };
            let mut arg = Arg::new(o.name)
                .long(long)
                .help(help)
                .value_name(kind)
                .help_heading("Restore options (docs/restoring.md)");
            if let Some((alias, _)) = RESTORE_ALIASES.iter().find(|(_, n)| *n == o.name) {
                arg = arg.visible_alias(*alias);
            }
            if o.name == "verbatim_restoration_prompt" {
                // A parsed prompt or verbatim text, not both.
                arg = arg.conflicts_with("restoration_prompt");
            }
            match o.kind {
                OptionKind::Bool => arg
                    .num_args(0..=1)
                    .require_equals(true)
                    .default_missing_value("true")
                    .value_name("BOOL"),
                OptionKind::Int { .. } | OptionKind::IntOrAuto { .. } | OptionKind::Float { .. } => {
                    arg.allow_negative_numbers(true)
                }
                OptionKind::Choice(names) => arg.value_parser(Choices(names)),
                _ => arg,
            }
        })
        .collect()
}

/// A choice's names for `--help` and the shell completions; the value itself is checked by
/// the options table, which also takes the names' aliases (`DDIMScheduler`, `dpm`, …).
#[derive(Clone)]
struct Choices(&'static [&'static str]);

impl clap::builder::TypedValueParser for Choices {
    type Value = String;

    fn parse_ref(
        &self,
        _cmd: &Command,
        _arg: Option<&Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        Ok(value.to_string_lossy().into_owned())
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(
            self.0.iter().map(|n| clap::builder::PossibleValue::new(*n)),
        ))
    }
}

/// The whole command line.
fn cli() -> Command {
    Command::new("spire")
        .version(env!("CARGO_PKG_VERSION"))
        .about("SPIRE: semantic prompt-driven image restoration")
        .after_help(AFTER_HELP)
        .subcommand(
            Command::new("restore")
                .about("Restore one image")
                .arg(positional("input", "The image to restore (PNG or JPEG)"))
                .arg(positional("output", "Where to write it (.png or .jpg)"))
                .args(restore_args())
                .args(model_args())
                .args(device_args())
                .after_help(AFTER_HELP),
        )
        .subcommand(
            Command::new("restore-dir")
                .about("Restore every image of a folder (resumable; failures.tsv lists the failures)")
                .arg(positional("input", "The folder of images (searched recursively)"))
                .arg(positional("output", "Where the restored images go (relative paths kept)"))
                .arg(flag("prompts", "prompts.tsv|csv", "Per-image prompts: file<TAB>restoration prompt<TAB>caption"))
                .arg(flag("format", "same|png|jpg|tiff|webp", "The outputs' format (default: each input's)"))
                .args(restore_args())
                .args(model_args())
                .args(device_args()),
        )
        .subcommand(
            Command::new("estimate")
                .about("Print the restoration prompt read from a photo (its estimates on stderr)")
                .arg(positional("input", "The image (PNG or JPEG)"))
                .arg(flag("output-size", "WxH", "The size the restored image should have (adds an upsample clause)")),
        )
        .subcommand(
            Command::new("degrade")
                .about("Degrade an image as training does; prints the restoration prompt that undoes it")
                .arg(positional("input", "The clean image"))
                .arg(positional("output", "Where to write the degraded image"))
                .arg(flag("pipeline", "parameterized|realesrgan", "The degradation pipeline (default: parameterized)"))
                .arg(flag("seed", "N", "Its seed")),
        )
        .subcommand(
            Command::new("train")
                .about("Train an adaptor or a small model from a recipe (docs/training.md)")
                .arg(flag("config", "recipe.json", "The recipe").required(true))
                .args(device_args()),
        )
        .subcommand(
            Command::new("export-builtin")
                .about("Pack a model folder into a built-in model file")
                .arg(positional("model-dir", "The model folder"))
                .arg(positional("out", "The .safetensors file to write")),
        )
        .subcommand(
            Command::new("unpack-builtin")
                .about("Write the built-in model (or a packed file) as a model folder")
                .arg(positional("out-dir", "The folder to write"))
                .arg(flag("from", "FILE", "A packed model file (default: the built-in one)")),
        )
        .subcommand(
            Command::new("eval")
                .about("The paper's evaluation on a folder of clean photos (docs/evaluation.md)")
                .arg(flag("data", "DIR", "The clean photos").required(true))
                .arg(flag("captions", "captions.tsv", "Their captions (default: DIR/captions.tsv)"))
                .arg(flag("only", "a.png,b.png", "Evaluate only these images"))
                .arg(flag("size", "PX", "The crop size (default 256)"))
                .arg(flag("seed", "N", "The degradations' and restorations' seed"))
                .arg(flag("steps", "N", "Denoising steps"))
                .arg(flag("rows", "paper|plain", "The table's rows (default: paper)"))
                .arg(flag("lpips", "FILE", "LPIPS weights"))
                .arg(flag("clip", "DIR", "CLIP weights (for CLIP-I / CLIP-T)"))
                .arg(flag("inception", "FILE", "Inception weights (for FID)"))
                .arg(flag("out", "DIR", "Where eval.md and eval.csv go (default: eval-out)"))
                .arg(
                    Arg::new("save-images")
                        .long("save-images")
                        .action(ArgAction::SetTrue)
                        .help("Also save the degraded and restored images"),
                )
                .args(model_args())
                .args(device_args()),
        )
        .subcommand(
            Command::new("completions")
                .about("Print a shell completion script (e.g. `spire completions bash > /etc/bash_completion.d/spire`)")
                .arg(
                    Arg::new("shell")
                        .required(true)
                        .value_parser(clap::value_parser!(clap_complete::Shell)),
                ),
        )
}

/// `--threads N`: the CPU threads of candle's kernels and ours (rayon's pool). Set before any
/// work starts.
fn apply_threads(a: &Args) -> Result<(), String> {
    match num::<usize>(a, "threads")? {
        Some(n) => spire_core::device::set_num_threads(n).map_err(|e| format!("--threads: {e}")),
        None => Ok(()),
    }
}

/// `--device` and `--dtype` → load options.
fn load_options(a: &Args) -> Result<LoadOptions, String> {
    let mut lo = LoadOptions::default();
    if let Some(d) = a.flags.get("device") {
        lo.device = spire_core::device::parse_device(d).map_err(|e| format!("--device: {e}"))?;
    }
    if let Some(d) = a.flags.get("dtype") {
        lo.dtype = spire_core::device::parse_dtype(d).map_err(|e| format!("--dtype: {e}"))?;
    }
    if let Some(d) = a.flags.get("weight-dtype") {
        lo.weight_dtype =
            Some(spire_core::device::parse_weight_dtype(d).map_err(|e| format!("--weight-dtype: {e}"))?);
    }
    Ok(lo)
}

/// `--model DIR`, `--checkpoint FILE --controlnet FILE|DIR [--config DIR]` or the built-in
/// model, loaded with `--device` / `--dtype`.
fn load_restorer(a: &Args) -> Result<Restorer, String> {
    apply_threads(a)?;
    let mut lo = load_options(a)?;
    lo.adaptor = a.flags.get("controlnet").map(PathBuf::from);
    lo.config = a.flags.get("config").map(PathBuf::from);
    if let Some(p) = a.flags.get("prediction-type") {
        lo.prediction_type =
            Some(spire_core::scheduler::PredictionType::parse(p).ok_or_else(|| {
                format!("--prediction-type: unknown `{p}` (epsilon, v_prediction or sample)")
            })?);
    }
    match (a.flags.get("model"), a.flags.get("checkpoint")) {
        (Some(_), Some(_)) => Err("--model and --checkpoint: give one (a folder or a single file)".into()),
        (None, Some(c)) => Restorer::from_single_file(c, &lo).map_err(fail),
        (Some(m), None) => {
            if lo.config.is_some() {
                return Err("--config is for single files (--checkpoint); a model folder has its own".into());
            }
            Restorer::from_pretrained(m, &lo).map_err(fail)
        }
        (None, None) => {
            if let Some(f) = ["controlnet", "config", "prediction-type"]
                .iter()
                .find(|f| a.flags.contains_key(**f))
            {
                return Err(format!(
                    "--{f} needs --model DIR or --checkpoint FILE (the built-in model has its own)"
                ));
            }
            Restorer::builtin_with(&lo).map_err(fail)
        }
    }
}

/// The model's recommended options with the restore flags applied, each through its row of
/// the options table.
fn restore_options(a: &Args, restorer: &Restorer) -> Result<spire_core::RestoreOptions, String> {
    let mut o = restorer.default_options();
    // Flags come by their long names (clap resolves the aliases).
    for (flag, value) in &a.flags {
        let name = flag.replace('-', "_");
        let Ok(spec) = spire_core::options::option(&name) else {
            continue; // a model, device or command flag
        };
        let value = if name == "tile_size" && value == "whole" {
            // One piece, whatever the plan would pick for speed.
            u32::MAX.to_string()
        } else {
            value.clone()
        };
        spec.set(&mut o, OptionValue::Text(value))
            .map_err(|e| format!("--{flag}: {e}"))?;
    }
    Ok(o)
}

fn restore(a: &Args) -> Result<(), String> {
    let [input, output] = a.positional.as_slice() else {
        return Err("restore needs <in> and <out>".into());
    };
    let restorer = load_restorer(a)?;
    let mut o = restore_options(a, &restorer)?;
    o.progress = Some(Arc::new(|p: &spire_core::Progress| {
        if let Some(m) = &p.message {
            eprintln!("{m}");
        }
        if p.stage == spire_core::Stage::Denoising {
            eprint!("\rdenoising {}/{}", p.step, p.total);
            if p.step == p.total {
                eprintln!();
            }
        }
        true
    }));
    check_output(output)?;
    // The plan runs on the header's size, before the pixels are decoded: an image that cannot
    // fit the memory limit is refused without allocating it.
    let info = spire_core::io::image_info(input).map_err(fail)?;
    restorer
        .plan(info.width, info.height, info.color, &o)
        .map_err(fail)?;
    let img = spire_core::io::load_image(input).map_err(fail)?;
    if matches!(o.restoration_prompt, spire_core::RestorationInput::Auto(_)) {
        o = spire_core::batch::resolve_for_file(&restorer, &img, Path::new(input), &o).map_err(fail)?;
        eprintln!("estimated restoration prompt: {}", o.restoration_prompt.text());
    }
    let t = std::time::Instant::now();
    let out = restorer.restore(&img.view(), &o).map_err(fail)?;
    spire_core::io::save_image(output, &out).map_err(fail)?;
    println!(
        "{input} ({}×{}) → {output} ({}×{}) in {:.1} s with \"{}\"",
        img.width,
        img.height,
        out.width,
        out.height,
        t.elapsed().as_secs_f64(),
        o.restoration_prompt.text()
    );
    Ok(())
}

/// `spire estimate`: the restoration prompt read from a photo (stdout), with each estimate
/// and its confidence (stderr).
fn estimate_cmd(a: &Args) -> Result<(), String> {
    let [input] = a.positional.as_slice() else {
        return Err("estimate needs <in>".into());
    };
    let target = match a.flags.get("output-size") {
        None => None,
        Some(v) => {
            let (w, h) = v
                .split_once(['x', 'X', '×'])
                .and_then(|(w, h)| Some((w.trim().parse::<usize>().ok()?, h.trim().parse::<usize>().ok()?)))
                .ok_or_else(|| format!("--output-size: `{v}` is not WIDTHxHEIGHT (e.g. 1024x768)"))?;
            Some((w, h))
        }
    };
    let bytes = spire_core::io::read_file(input).map_err(fail)?;
    let img = spire_core::io::decode_image(&bytes, input).map_err(fail)?;
    let source = spire_core::estimate::SourceInfo::from_bytes(&bytes, input).map_err(fail)?;
    let e = RestorationPrompt::estimate_for_size(&img.view(), Some(&source), target).map_err(fail)?;
    let conf = |c: f64| format!("confidence {c:.2}");
    eprintln!("noise σ {:.3} ({})", e.noise.value, conf(e.noise.confidence));
    eprintln!("blur σ {:.2} px ({})", e.blur.value, conf(e.blur.confidence));
    match e.jpeg {
        None => eprintln!("JPEG: no sign of it"),
        Some((q, src)) => eprintln!(
            "JPEG quality {:.0} ({}, {})",
            q.value,
            match src {
                spire_core::estimate::JpegSource::FileExact => "exact, from the file's tables",
                spire_core::estimate::JpegSource::FileNearest =>
                    "the file's tables are not IJG's: the nearest",
                spire_core::estimate::JpegSource::Pixels => "from the pixels' DCT coefficients",
            },
            conf(q.confidence)
        ),
    }
    if let Some(s) = e.scale {
        eprintln!("scale {:.2} (from the sizes)", s.value);
    }
    println!("{}", e.prompt);
    Ok(())
}

/// Set by SIGINT during `restore-dir`: stop after the current image.
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg(unix)]
fn stop_after_this_image_on_ctrl_c() {
    extern "C" {
        fn signal(signum: i32, handler: usize) -> usize;
        fn _exit(code: i32) -> !;
    }
    const SIGINT: i32 = 2;
    extern "C" fn on_sigint(_: i32) {
        // A second Ctrl-C ends the process at once (only async-signal-safe calls here).
        if STOP.swap(true, std::sync::atomic::Ordering::SeqCst) {
            // SAFETY: `_exit` is async-signal-safe.
            unsafe { _exit(130) }
        }
    }
    // SAFETY: installs a handler that only touches an atomic (and `_exit`).
    unsafe {
        signal(SIGINT, on_sigint as extern "C" fn(i32) as usize);
    }
}

#[cfg(not(unix))]
fn stop_after_this_image_on_ctrl_c() {}

fn restore_dir_cmd(a: &Args) -> Result<(), String> {
    use spire_core::batch::{self, OutputFormat, PromptTable};
    let [input, output] = a.positional.as_slice() else {
        return Err("restore-dir needs <in-dir> and <out-dir>".into());
    };
    let format = match a.flags.get("format") {
        Some(f) => OutputFormat::parse(f)
            .ok_or_else(|| format!("--format: `{f}` is not same, png, jpg, tiff or webp"))?,
        None => OutputFormat::Same,
    };
    let table = match a.flags.get("prompts") {
        Some(p) => Some(PromptTable::read(std::path::Path::new(p)).map_err(fail)?),
        None => None,
    };
    let (input, output) = (std::path::Path::new(input), std::path::Path::new(output));
    let (jobs, unmatched) = batch::plan_dir(input, output, format, table.as_ref()).map_err(fail)?;
    if !unmatched.is_empty() {
        eprintln!(
            "warning: {} row(s) of --prompts match no image: {}",
            unmatched.len(),
            unmatched
                .iter()
                .take(5)
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if jobs.is_empty() {
        return Err(format!(
            "{}: no PNG, JPEG, TIFF or WebP images found",
            input.display()
        ));
    }
    std::fs::create_dir_all(output).map_err(|e| format!("{}: {e}", output.display()))?;
    let restorer = load_restorer(a)?;
    let o = restore_options(a, &restorer)?;
    stop_after_this_image_on_ctrl_c();
    let total = jobs.len();
    let mut last_len = 0usize;
    // A terminal gets one line redrawn; a log gets a line per image.
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let report = batch::restore_dir(&restorer, &jobs, output, &o, &mut |p| {
        let line = format!(
            "[{}/{}] {:.2} img/s, ETA {}{} — {}",
            p.done,
            p.total,
            p.images_per_sec,
            fmt_secs(p.eta_secs),
            if p.failed > 0 {
                format!(", {} failed", p.failed)
            } else {
                String::new()
            },
            p.name
        );
        if tty {
            eprint!(
                "\r{line}{}",
                " ".repeat(last_len.saturating_sub(line.chars().count()))
            );
            last_len = line.chars().count();
        } else {
            eprintln!("{line}");
        }
        let _ = std::io::stderr().flush();
        !STOP.load(std::sync::atomic::Ordering::SeqCst)
    })
    .map_err(fail)?;
    if tty {
        eprintln!();
    }
    println!(
        "{} restored, {} skipped (already done), {} failed, of {total} in {}{}",
        report.restored,
        report.skipped,
        report.failed.len(),
        fmt_secs(report.seconds),
        if report.stopped {
            " — stopped by Ctrl-C; run again to finish"
        } else {
            ""
        }
    );
    if !report.failed.is_empty() {
        for (n, m) in report.failed.iter().take(10) {
            eprintln!("failed: {n}: {m}");
        }
        return Err(format!(
            "{} image(s) failed; the list is in {}",
            report.failed.len(),
            output.join(batch::FAILURES_FILE).display()
        ));
    }
    if report.stopped {
        return Err("stopped before the end".into());
    }
    Ok(())
}

/// Fails before the work, not after it, when `output` cannot be written: an extension
/// `save_image` does not know or a folder that does not exist.
fn check_output(output: &str) -> Result<(), String> {
    spire_core::io::ImageFormat::from_path(output).map_err(fail)?;
    spire_core::io::check_output_path(output).map_err(fail)
}

fn degrade_cmd(a: &Args) -> Result<(), String> {
    let [input, output] = a.positional.as_slice() else {
        return Err("degrade needs <in> and <out>".into());
    };
    let pl = match a.flags.get("pipeline") {
        Some(p) => {
            spire_core::degrade::Pipeline::parse(p).ok_or_else(|| format!("--pipeline: unknown `{p}`"))?
        }
        None => spire_core::degrade::Pipeline::default(),
    };
    let seed = num(a, "seed")?.unwrap_or(spire_core::degrade::DEFAULT_SEED);
    check_output(output)?;
    let img = spire_core::io::load_image(input).map_err(fail)?;
    let (out, prompt) = spire_core::degrade::degrade(&img.view(), pl, seed).map_err(fail)?;
    spire_core::io::save_image(output, &out).map_err(fail)?;
    println!("{prompt}");
    Ok(())
}

fn fmt_secs(s: f64) -> String {
    let s = s.max(0.0) as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn train_cmd(a: &Args) -> Result<(), String> {
    use spire_core::train::MixedPrecision;
    apply_threads(a)?;
    let path = PathBuf::from(a.flags.get("config").ok_or("train needs --config recipe.json")?);
    let mut cfg = spire_core::train::TrainConfig::from_file(&path).map_err(fail)?;
    if let Some(d) = a.flags.get("device") {
        spire_core::device::check_device(d).map_err(|e| format!("--device: {e}"))?;
        cfg.device = d.clone();
    }
    if let Some(d) = a.flags.get("dtype") {
        let dt = spire_core::device::parse_dtype(d).map_err(|e| format!("--dtype: {e}"))?;
        cfg.mixed_precision = match dt {
            candle_core::DType::F32 => MixedPrecision::No,
            candle_core::DType::BF16 => MixedPrecision::Bf16,
            _ => {
                return Err(format!(
                    "--dtype: training takes f32 or bf16 (mixed precision), not `{d}`"
                ))
            }
        };
    }
    eprintln!(
        "training {:?} → {} ({} steps on {}, mixed precision {:?})",
        cfg.mode,
        cfg.output.display(),
        cfg.steps,
        cfg.device,
        cfg.mixed_precision
    );
    let summary = spire_core::train::train(&cfg, &mut |e: &spire_core::train::TrainEvent| {
        let width = 30;
        let filled = width * e.step / e.total.max(1);
        eprint!(
            "\r[{}{}] {}/{} loss {:.4} lr {:.2e} {:.2} steps/s ETA {}   ",
            "#".repeat(filled),
            "-".repeat(width - filled),
            e.step,
            e.total,
            e.loss,
            e.lr,
            e.steps_per_sec,
            fmt_secs(e.eta_secs)
        );
        if let Some(m) = &e.message {
            eprintln!("\n{m}");
        }
        let _ = std::io::stderr().flush();
        true
    })
    .map_err(fail)?;
    eprintln!();
    let loss = if summary.final_loss.is_nan() {
        "— (no steps left to run)".to_string()
    } else {
        format!("{:.4}", summary.final_loss)
    };
    println!(
        "done: {} parameters, final loss {loss}, {} wall time → {}",
        summary.params,
        fmt_secs(summary.seconds),
        summary.output.display()
    );
    Ok(())
}

fn eval_cmd(a: &Args) -> Result<(), String> {
    use spire_core::eval::{self, EvalConfig, EvalSetting, MetricWeights};
    let data = PathBuf::from(a.flags.get("data").ok_or("eval needs --data DIR")?);
    let captions = a.flags.get("captions").map(PathBuf::from).or_else(|| {
        let c = data.join("captions.tsv");
        c.is_file().then_some(c)
    });
    let only: Vec<String> = a
        .flags
        .get("only")
        .map(|s| {
            s.split(',')
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let restorer = load_restorer(a)?;
    let mut cfg = EvalConfig {
        options: restorer.default_options(),
        ..EvalConfig::default()
    };
    if let Some(v) = num(a, "size")? {
        cfg.size = v;
    }
    if let Some(v) = num(a, "seed")? {
        cfg.seed = v;
    }
    if let Some(v) = num(a, "steps")? {
        cfg.options.num_inference_steps = v;
    }
    cfg.settings = match a.flags.get("rows").map(String::as_str) {
        None | Some("paper") => EvalSetting::paper(),
        Some("plain") => vec![
            EvalSetting::new("SPIRE w/o text", false, false),
            EvalSetting::new("SPIRE", true, true),
        ],
        Some(o) => return Err(format!("--rows: unknown `{o}` (paper or plain)")),
    };
    cfg.weights = MetricWeights {
        lpips: a.flags.get("lpips").map(PathBuf::from),
        clip: a.flags.get("clip").map(PathBuf::from),
        inception: a.flags.get("inception").map(PathBuf::from),
    };
    let out = PathBuf::from(a.flags.get("out").map_or("eval-out", String::as_str));
    if a.flags.get("save-images").is_some_and(|v| v != "no") {
        cfg.save_images = Some(out.join("images"));
    }
    let images = eval::load_images(&data, captions.as_deref(), &only, cfg.size).map_err(fail)?;
    eprintln!(
        "evaluating {} on {} images of {} px",
        restorer.path().display(),
        images.len(),
        cfg.size
    );
    let t = std::time::Instant::now();
    let report = eval::evaluate(&restorer, &images, &cfg, &mut |done, total, what| {
        let width = 30;
        let filled = width * done / total.max(1);
        let el = t.elapsed().as_secs_f64();
        let eta = el / done.max(1) as f64 * (total - done) as f64;
        eprint!(
            "\r[{}{}] {done}/{total} ETA {} {what:<60.60}",
            "#".repeat(filled),
            "-".repeat(width - filled),
            fmt_secs(eta)
        );
        let _ = std::io::stderr().flush();
    })
    .map_err(fail)?;
    eprintln!();
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let md = report.markdown();
    spire_core::io::write_atomic(out.join("eval.md"), md.as_bytes()).map_err(fail)?;
    spire_core::io::write_atomic(out.join("eval.csv"), report.csv().as_bytes()).map_err(fail)?;
    println!("{md}");
    println!(
        "wrote {} and {} in {}",
        out.join("eval.md").display(),
        out.join("eval.csv").display(),
        fmt_secs(t.elapsed().as_secs_f64())
    );
    Ok(())
}

fn export_cmd(a: &Args) -> Result<(), String> {
    let [dir, out] = a.positional.as_slice() else {
        return Err("export-builtin needs <model-dir> <out.safetensors>".into());
    };
    let bytes = spire_core::builtin::export(std::path::Path::new(dir)).map_err(fail)?;
    spire_core::io::write_atomic(out, &bytes).map_err(fail)?;
    println!("wrote {out} ({:.2} MB)", bytes.len() as f64 / 1e6);
    Ok(())
}

fn unpack_cmd(a: &Args) -> Result<(), String> {
    let [dir] = a.positional.as_slice() else {
        return Err("unpack-builtin needs <out-dir> (and optionally --from FILE)".into());
    };
    let file;
    let (bytes, name): (&[u8], &str) = match a.flags.get("from") {
        Some(f) => {
            file = std::fs::read(f).map_err(|e| format!("{f}: {e}"))?;
            (&file, f)
        }
        None => (
            spire_core::builtin::builtin_bytes()
                .ok_or("this build has no built-in model; pass --from FILE")?,
            "builtin:spire-tiny",
        ),
    };
    spire_core::builtin::unpack(bytes, name, std::path::Path::new(dir)).map_err(fail)?;
    println!("wrote the model folder {dir} (from {name})");
    Ok(())
}

/// A file-size limit (`ulimit -f`) kills the process with SIGXFSZ by default, mid-write, leaving
/// the temporary file behind. Ignored, the write fails with EFBIG instead: the error is
/// reported, the temporary file removed, and the destination left as it was.
#[cfg(target_os = "linux")]
fn ignore_file_size_signal() {
    extern "C" {
        fn signal(signum: i32, handler: usize) -> usize;
    }
    const SIGXFSZ: i32 = 25;
    const SIG_IGN: usize = 1;
    // SAFETY: installing SIG_IGN for one signal at start-up, before any thread exists.
    unsafe {
        signal(SIGXFSZ, SIG_IGN);
    }
}

#[cfg(not(target_os = "linux"))]
fn ignore_file_size_signal() {}

fn main() -> ExitCode {
    ignore_file_size_signal();
    let mut cmd = cli();
    let matches = match cmd.try_get_matches_from_mut(std::env::args_os()) {
        Ok(m) => m,
        Err(e) => {
            use clap::error::ErrorKind;
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    print!("{}", e.render());
                    ExitCode::SUCCESS
                }
                _ => {
                    let text = e.render().to_string();
                    eprint!("spire: {}", text.strip_prefix("error: ").unwrap_or(&text));
                    ExitCode::from(2)
                }
            };
        }
    };
    let Some((name, sub_matches)) = matches.subcommand() else {
        // `spire` alone: the help.
        print!("{}", cmd.render_help());
        return ExitCode::SUCCESS;
    };
    let Some(sub) = cmd.find_subcommand(name) else {
        eprintln!("spire: unknown command `{name}`");
        return ExitCode::from(2);
    };
    let a = Args::from_matches(sub, sub_matches);
    let result = match name {
        "restore" => restore(&a),
        "restore-dir" => restore_dir_cmd(&a),
        "degrade" => degrade_cmd(&a),
        "estimate" => estimate_cmd(&a),
        "train" => train_cmd(&a),
        "export-builtin" => export_cmd(&a),
        "unpack-builtin" => unpack_cmd(&a),
        "eval" => eval_cmd(&a),
        "completions" => {
            let Some(&shell) = sub_matches.get_one::<clap_complete::Shell>("shell") else {
                eprintln!("spire: completions needs a shell");
                return ExitCode::from(2);
            };
            clap_complete::generate(shell, &mut cli(), "spire", &mut std::io::stdout());
            Ok(())
        }
        other => Err(format!("unknown command `{other}`")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spire: {e}");
            ExitCode::FAILURE
        }
    }
}
