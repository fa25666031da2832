//! Restores one large image (default 2048×2048) in one process and reports wall time and
//! memory: the resident size after loading the model, the peak (`VmHWM`), and the working
//! memory (peak − loaded), which is what `memory_limit` bounds. One JSON line.
//!
//!     cargo run --release --example bench_large -- --model tiny|sd [--size 2048] \
//!         [--memory-limit unlimited|2GiB] [--steps 1|model] [--tile-size auto|whole|N] [--plan-only]
//!
//! The line also carries the plan's estimate of the peak beyond the weights (`estimate_mib`),
//! so a run shows whether `memory_limit` bounded the whole call: `peak_mib ≤ loaded_mib +
//! limit`. A call the plan refuses prints the refusal and the peak reached before it.
//!
//! `--steps N` runs N denoising steps from pure noise (`strength` 1); `--steps model` runs the
//! model's recommended options (the built-in model: its `spire.json` defaults).
//!
//! `tiny` is the built-in spire-tiny; `sd` is SD 2.1-base sized random weights (UNet, a
//! modulation adaptor with latent hint, the SD VAE; one-layer text encoders — prompt encoding
//! is not what is measured). Peak memory is per process, so `scripts/bench_large.sh` runs each
//! configuration in its own process.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use candle_core::{DType, Device};
use spire_core::model::{
    Adaptor, AdaptorConfig, AutoencoderKL, ClipTextConfig, ClipTextModel, ClipTokenizer, Fusion, HintMode,
    UNet2DConditionModel, UNetConfig, VaeConfig,
};
use spire_core::{ImageView, MemoryLimit, Restorer, RestorerParts, SchedulerConfig};

fn status_mib(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn sd_sized() -> Result<Restorer, Box<dyn std::error::Error>> {
    let dev = Device::Cpu;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-sd2/tokenizer");
    let tokenizer = ClipTokenizer::from_dir(&root)?;
    let unet_cfg = UNetConfig::sd21_base();
    let text_cfg = ClipTextConfig {
        // The tiny test vocabulary; the width of SD 2.1's encoder.
        vocab_size: 1000,
        num_hidden_layers: 1,
        ..ClipTextConfig::sd21(tokenizer.eos_id())
    };
    let parts = RestorerParts {
        unet: UNet2DConditionModel::new(&unet_cfg, spire_core::random_weights(1, DType::F32, &dev))?,
        vae: AutoencoderKL::new(&VaeConfig::sd(), spire_core::random_weights(2, DType::F32, &dev))?.into(),
        text_encoder: ClipTextModel::new(&text_cfg, spire_core::random_weights(3, DType::F32, &dev))?,
        tokenizer,
        restoration_text: None,
        adaptor: Adaptor::new(
            &AdaptorConfig::from_unet(&unet_cfg, HintMode::Latent, Fusion::Modulation, 4),
            spire_core::random_weights(4, DType::F32, &dev),
        )?,
        scheduler: SchedulerConfig::default(),
        device: dev,
        dtype: DType::F32,
        defaults: Default::default(),
        name: "random SD 2.1-base".into(),
    };
    Ok(Restorer::from_parts(parts)?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.into())
    };
    let model = arg("--model", "tiny");
    let size: usize = arg("--size", "2048").parse()?;
    let limit = arg("--memory-limit", "unlimited");
    let steps_arg = arg("--steps", "1");
    let tile_arg = arg("--tile-size", "auto");
    let t0 = Instant::now();
    let restorer = match model.as_str() {
        "sd" => sd_sized()?,
        _ => Restorer::builtin()?,
    };
    let load_s = t0.elapsed().as_secs_f64();
    let loaded = status_mib("VmRSS:");
    // A smooth picture with texture, so nothing is degenerate.
    let px: Vec<u8> = (0..size * size)
        .flat_map(|i| {
            let (x, y) = ((i % size) as f32, (i / size) as f32);
            let v = 0.5 + 0.25 * (x * 0.013).sin() * (y * 0.021).cos() + 0.1 * ((x + 2.0 * y) * 0.5).sin();
            [v, v * 0.9, 1.0 - v].map(|c| (c.clamp(0.0, 1.0) * 255.0) as u8)
        })
        .collect();
    let image = ImageView::rgb8(size, size, &px)?;
    let plan = Arc::new(Mutex::new(String::new()));
    let p2 = plan.clone();
    let marks = Arc::new(Mutex::new(Vec::<(String, f64, f64)>::new()));
    let t_start = Instant::now();
    let marks2 = marks.clone();
    let base = restorer.default_options();
    let (steps, strength) = match steps_arg.as_str() {
        "model" => (base.num_inference_steps, base.strength),
        n => (n.parse()?, 1.0),
    };
    let opts = base
        .with_num_inference_steps(steps)
        .with_strength(strength)
        .with_restoration_guidance(1.0)
        .with_semantic_guidance(1.0)
        .with_memory_limit(MemoryLimit::parse(&limit)?)
        .with_tile_size(match tile_arg.as_str() {
            "auto" => None,
            "whole" => Some(usize::MAX / 2),
            n => Some(n.parse()?),
        })
        .with_progress(Some(Arc::new(move |p: &spire_core::Progress| {
            if let (Some(m), Ok(mut g)) = (&p.message, p2.lock()) {
                eprintln!("{m}");
                *g = m.clone();
            }
            // The high-water mark when each stage starts: which phase set the peak.
            if p.step == 0 && p.message.is_none() {
                if let Ok(mut m) = marks2.lock() {
                    m.push((
                        format!("{:?}", p.stage),
                        status_mib("VmHWM:"),
                        t_start.elapsed().as_secs_f64(),
                    ));
                }
            }
            true
        })));
    let json_line = |fields: String| {
        println!(
            "{{\"model\":\"{model}\",\"size\":{size},\"memory_limit\":\"{limit}\",\"tile_size\":\"{tile_arg}\",{fields}}}"
        )
    };
    let estimate = match restorer.plan(size, size, spire_core::ColorType::Rgb, &opts) {
        Ok(p) => p,
        Err(e) => {
            json_line(format!(
                "\"refused\":\"{}\",\"loaded_mib\":{loaded:.0},\"peak_mib\":{:.0}",
                e.to_string().replace('"', "'"),
                status_mib("VmHWM:")
            ));
            return Ok(());
        }
    };
    if args.iter().any(|a| a == "--plan-only") {
        json_line(format!(
            "\"estimate_mib\":{},\"step_gflop\":{:.0},\"whole_step_gflop\":{:.0},\"plan\":\"{}\"",
            estimate.peak().0 >> 20,
            estimate.step_flops / 1e9,
            estimate.whole_step_flops / 1e9,
            estimate.describe()
        ));
        return Ok(());
    }
    let t1 = Instant::now();
    let out = restorer.restore(&image, &opts)?;
    let run_s = t1.elapsed().as_secs_f64();
    assert_eq!((out.width, out.height), (size, size));
    let peak = status_mib("VmHWM:");
    let plan = plan.lock().map_err(|_| "poisoned")?.replace('"', "'");
    // Peak reached before each stage began (MiB), and the seconds since the process started
    // when it began: encoding, denoising, decoding.
    let marks_v = marks.lock().map_err(|_| "poisoned")?.clone();
    let marks: Vec<String> = marks_v
        .iter()
        .map(|(s, v, _)| format!("\"{s}\":{v:.0}"))
        .collect();
    let times: Vec<String> = marks_v
        .iter()
        .map(|(s, _, t)| format!("\"{s}\":{t:.1}"))
        .collect();
    json_line(format!(
        "\"steps\":{steps},\"strength\":{strength},\"load_s\":{load_s:.1},\"run_s\":{run_s:.1},\"loaded_mib\":{loaded:.0},\"peak_mib\":{peak:.0},\"working_mib\":{:.0},\"estimate_mib\":{},\"step_gflop\":{:.0},\"hwm_before\":{{{}}},\"s_before\":{{{}}},\"plan\":\"{plan}\"",
        peak - loaded,
        estimate.peak().0 >> 20,
        estimate.step_flops / 1e9,
        marks.join(","),
        times.join(",")
    ));
    Ok(())
}
