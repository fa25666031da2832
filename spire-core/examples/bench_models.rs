//! Times one forward pass of the SD 2.1-base UNet (1×4×64×64, context 1×77×1024) and of the SD
//! VAE decoder (64×64 latent → 512×512) with seeded random weights, and reports seconds and
//! peak RSS as one JSON line per model.
//!
//!     RAYON_NUM_THREADS=2 cargo run --release --example bench_models -- [unet|vae] [--runs N]
//!
//! `SPIRE_SIMD=avx2` caps the fused kernels at AVX2 (the GEMMs keep their own dispatch), so an
//! AVX-512 machine measures the AVX2 kernels too; the JSON line says which level ran.
//!
//! `scripts/bench_models.py` runs this and the same shapes in diffusers/PyTorch and prints the
//! ratios. Benchmarks, not tests: nothing here asserts a time.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use spire_core::model::{AutoencoderKL, UNet2DConditionModel, UNetConfig, VaeConfig};

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn time<F: FnMut() -> candle_core::Result<Tensor>>(runs: usize, mut f: F) -> candle_core::Result<Vec<f64>> {
    f()?; // warm-up
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            let out = f()?;
            let _ = out.sum_all()?.to_scalar::<f32>()?; // force completion
            Ok(t.elapsed().as_secs_f64())
        })
        .collect()
}

fn report(name: &str, secs: &[f64], load_s: f64) {
    let mut s = secs.to_vec();
    s.sort_by(f64::total_cmp);
    println!(
        "{{\"impl\":\"spire\",\"model\":\"{name}\",\"runs\":{},\"min_s\":{:.3},\"median_s\":{:.3},\"init_s\":{:.2},\"peak_rss_mib\":{:.0},\"threads\":{},\"simd\":\"{}\"}}",
        s.len(),
        s[0],
        s[s.len() / 2],
        load_s,
        peak_rss_mib(),
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into()),
        spire_core::simd::level().name()
    );
}

fn main() -> candle_core::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map(String::as_str).unwrap_or("unet");
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let dev = Device::Cpu;
    let t0 = Instant::now();
    match which {
        "unet" => {
            let unet = UNet2DConditionModel::new(
                &UNetConfig::sd21_base(),
                spire_core::random_weights(1, DType::F32, &dev),
            )?;
            let init = t0.elapsed().as_secs_f64();
            let x = spire_core::rng::randn(2, (1, 4, 64, 64), &dev)?;
            let ctx = spire_core::rng::randn(3, (1, 77, 1024), &dev)?;
            let secs = time(runs, || unet.forward(&x, &[500.0], &ctx, None))?;
            report("unet-sd21-base-64x64", &secs, init);
        }
        "vae" => {
            let vae = AutoencoderKL::new(&VaeConfig::sd(), spire_core::random_weights(4, DType::F32, &dev))?;
            let init = t0.elapsed().as_secs_f64();
            let z = spire_core::rng::randn(5, (1, 4, 64, 64), &dev)?;
            let secs = time(runs, || vae.decode(&z))?;
            report("vae-decoder-512x512", &secs, init);
        }
        other => candle_core::bail!("unknown model `{other}` (unet or vae)"),
    }
    Ok(())
}
