//! Restores one large image (default 2048×2048) in one process and reports wall time and
//! memory: the resident size after loading the model, the peak (`VmHWM`), and the working
//! memory (peak − loaded), which is what `memory_limit` bounds. One JSON line.
//!
//!     cargo run --release --example bench_large -- --model tiny|sd [--size 2048] \
//!         [--memory-limit unlimited|2GiB] [--steps 1|model]
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
use spire_core::{ImageView, MemoryLimit, RestoreOptions, Restorer, RestorerParts, SchedulerConfig};

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
        vocab_size: 1000,
        hidden_size: 1024,
        intermediate_size: 4096,
        num_hidden_layers: 1,
        num_attention_heads: 16,
        max_position_embeddings: 77,
        hidden_act: spire_core::model::nn::Activation::Gelu,
        layer_norm_eps: 1e-5,
        eos_token_id: tokenizer.eos_id(),
        projection_dim: None,
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
    let base = restorer.default_options();
    let (steps, strength) = match steps_arg.as_str() {
        "model" => (base.num_inference_steps, base.strength),
        n => (n.parse()?, 1.0),
    };
    let opts = RestoreOptions {
        num_inference_steps: steps,
        strength,
        restoration_guidance: 1.0,
        semantic_guidance: 1.0,
        memory_limit: MemoryLimit::parse(&limit)?,
        progress: Some(Arc::new(move |p: &spire_core::Progress| {
            if let (Some(m), Ok(mut g)) = (&p.message, p2.lock()) {
                eprintln!("{m}");
                *g = m.clone();
            }
            true
        })),
        ..base
    };
    let t1 = Instant::now();
    let out = restorer.restore(&image, &opts)?;
    let run_s = t1.elapsed().as_secs_f64();
    assert_eq!((out.width, out.height), (size, size));
    let peak = status_mib("VmHWM:");
    let plan = plan.lock().map_err(|_| "poisoned")?.replace('"', "'");
    println!(
        "{{\"model\":\"{model}\",\"size\":{size},\"memory_limit\":\"{limit}\",\"steps\":{steps},\"strength\":{strength},\"load_s\":{load_s:.1},\"run_s\":{run_s:.1},\"loaded_mib\":{loaded:.0},\"peak_mib\":{peak:.0},\"working_mib\":{:.0},\"plan\":\"{plan}\"}}",
        peak - loaded
    );
    Ok(())
}
