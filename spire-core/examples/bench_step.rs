//! Times one full denoising step of the `Restorer` at 512×512 (latent 64×64) with SD 2.1-base
//! sized random weights (UNet + adaptor), for 1, 2 and 3 guidance passes, through the real
//! restore path: the progress callback timestamps each step, the median interval after the
//! first is reported. The text encoder is a one-layer stand-in (prompt encoding happens once,
//! outside the step). One JSON line per configuration.
//!
//!     RAYON_NUM_THREADS=2 cargo run --release --example bench_step -- [--hint latent|pixel] [--steps 3]
//!
//! `scripts/bench_step.py` runs this next to diffusers' ControlNet pipeline and prints ratios.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use candle_core::{DType, Device};
use spire_core::model::{
    Adaptor, AdaptorConfig, AutoencoderKL, ClipTextConfig, ClipTextModel, ClipTokenizer, Fusion, HintMode,
    UNet2DConditionModel, UNetConfig, VaeConfig,
};
use spire_core::{ImageView, RestoreOptions, Restorer, RestorerParts, SchedulerConfig};

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
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
    let (hint, fusion) = match arg("--hint", "latent").as_str() {
        "pixel" => (HintMode::Pixel, Fusion::Additive),
        _ => (HintMode::Latent, Fusion::Modulation),
    };
    let steps: usize = arg("--steps", "3").parse()?;
    let dev = Device::Cpu;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-sd2/tokenizer");
    let tokenizer = ClipTokenizer::from_dir(&root)?;
    let t0 = Instant::now();
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
            &AdaptorConfig::from_unet(&unet_cfg, hint, fusion, 4),
            spire_core::random_weights(4, DType::F32, &dev),
        )?,
        scheduler: SchedulerConfig::default(),
        device: dev,
        dtype: DType::F32,
        defaults: Default::default(),
        name: "random SD 2.1-base".into(),
    };
    let restorer = Restorer::from_parts(parts)?;
    let init_s = t0.elapsed().as_secs_f64();
    let px: Vec<u8> = (0..512 * 512 * 3).map(|i| (i * 31 % 251) as u8).collect();
    let image = ImageView::rgb8(512, 512, &px)?;
    for (passes, wr, ws) in [(1, 1.0, 1.0), (2, 1.0, 4.0), (3, 2.0, 4.0)] {
        let stamps = Arc::new(Mutex::new(Vec::new()));
        let s = stamps.clone();
        let opts = RestoreOptions::default()
            .with_num_inference_steps(steps)
            .with_restoration_prompt(
                "Denoise with sigma 0.1"
                    .parse::<spire_core::RestorationPrompt>()?
                    .into(),
            )
            .with_semantic_prompt("a photo of a cat".into())
            .with_restoration_guidance(wr)
            .with_semantic_guidance(ws)
            .with_progress(Some(Arc::new(move |p: &spire_core::Progress| {
                if p.stage == spire_core::Stage::Denoising {
                    if let Ok(mut v) = s.lock() {
                        v.push(Instant::now());
                    }
                }
                true
            })));
        restorer.restore(&image, &opts)?;
        let v = stamps.lock().map_err(|_| "poisoned")?.clone();
        let mut d: Vec<f64> = v
            .windows(2)
            .skip(1)
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .collect();
        if d.is_empty() {
            d = v.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
        }
        d.sort_by(f64::total_cmp);
        println!(
            "{{\"impl\":\"spire\",\"hint\":\"{}\",\"passes\":{passes},\"step_s\":{:.3},\"steps_timed\":{},\"init_s\":{init_s:.1},\"peak_rss_mib\":{:.0}}}",
            hint.as_str(),
            d[d.len() / 2],
            d.len(),
            peak_rss_mib()
        );
    }
    Ok(())
}
