//! Times one forward pass of the SD 2.1-base UNet (1×4×64×64, context 1×77×1024) and of the SD
//! VAE decoder (64×64 latent → 512×512) with seeded random weights, and reports seconds and
//! peak RSS as one JSON line per model.
//!
//!     RAYON_NUM_THREADS=2 cargo run --release --example bench_models -- [unet|vae] [--runs N]
//!         [--weights f16|bf16] [--paced]
//!
//! `SPIRE_SIMD=avx2` caps the fused kernels and their GEMMs at AVX2 (candle's own matmuls keep
//! their dispatch), so an AVX-512 machine measures the AVX2 path too; the JSON line says which
//! level ran. `SPIRE_PROFILE=1` adds the per-layer profile of the timed runs ([`spire_core::profile`]).
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

/// With `--paced`, each pass (the warm-up too) waits for a line on stdin and reports its time
/// as a JSON line at once, so `scripts/bench_models.py --interleave` can alternate the passes
/// of several processes (spire and PyTorch) and the machine's drift hits them all alike.
fn wait_turn(paced: bool) -> candle_core::Result<()> {
    if paced {
        std::io::stdin().read_line(&mut String::new())?;
    }
    Ok(())
}

fn report_pass(paced: bool, key: &str, secs: f64) {
    if paced {
        println!("{{\"{key}\":{secs:.4}}}");
    }
}

fn time<F: FnMut() -> candle_core::Result<Tensor>>(
    runs: usize,
    paced: bool,
    mut f: F,
) -> candle_core::Result<Vec<f64>> {
    wait_turn(paced)?;
    let t = Instant::now();
    f()?; // warm-up
    report_pass(paced, "warm_s", t.elapsed().as_secs_f64());
    let _ = spire_core::profile::take(); // the profile covers the timed runs only
    (0..runs)
        .map(|_| {
            wait_turn(paced)?;
            let t = Instant::now();
            let out = f()?;
            let _ = out.sum_all()?.to_scalar::<f32>()?; // force completion
            let secs = t.elapsed().as_secs_f64();
            report_pass(paced, "run_s", secs);
            Ok(secs)
        })
        .collect()
}

/// With `SPIRE_PROFILE=1`: the per-layer profile of the timed runs, per forward pass, as one
/// JSON line per row (`"profile":…`) and a table on stderr, grouped by kind and shape.
fn report_profile(name: &str, secs: &[f64]) {
    if !spire_core::profile::enabled() {
        return;
    }
    let runs = secs.len() as f64;
    let total: f64 = secs.iter().sum::<f64>() / runs;
    let rows = spire_core::profile::take();
    let covered: f64 = rows.iter().map(|e| e.secs).sum::<f64>() / runs;
    eprintln!(
        "\n{name}: {total:.3} s per forward, fused kernels {covered:.3} s ({:.0} %)",
        100.0 * covered / total
    );
    eprintln!(
        "{:<16} {:<34} {:>6} {:>9} {:>6} {:>7} {:>8}",
        "kind", "shape", "calls", "s/fwd", "share", "gemm %", "GFLOP/s"
    );
    let mut by_kind: std::collections::BTreeMap<&str, (f64, f64)> = Default::default();
    for e in &rows {
        let s = e.secs / runs;
        let k = by_kind.entry(e.kind).or_default();
        k.0 += s;
        k.1 += e.gemm_secs / runs;
        println!(
            "{{\"profile\":\"{name}\",\"kind\":\"{}\",\"shape\":\"{}\",\"calls\":{},\"secs\":{:.4},\"gemm_secs\":{:.4},\"gflops\":{:.3},\"simd\":\"{}\"}}",
            e.kind,
            e.shape,
            e.calls as f64 / runs,
            s,
            e.gemm_secs / runs,
            e.flops / runs / 1e9,
            spire_core::simd::level().name()
        );
        eprintln!(
            "{:<16} {:<34} {:>6} {:>9.3} {:>5.1}% {:>6.0}% {:>8.1}",
            e.kind,
            e.shape,
            e.calls as f64 / runs,
            s,
            100.0 * s / total,
            if e.secs > 0.0 {
                100.0 * e.gemm_secs / e.secs
            } else {
                0.0
            },
            if e.flops > 0.0 {
                e.flops / e.secs / 1e9
            } else {
                0.0
            }
        );
    }
    eprintln!("-- by kind");
    for (k, (s, g)) in &by_kind {
        eprintln!(
            "{k:<16} {s:>9.3} s {:>5.1}%  gemm {:>5.1}%",
            100.0 * s / total,
            100.0 * g / s.max(1e-12)
        );
    }
    eprintln!(
        "{:<16} {:>9.3} s {:>5.1}%",
        "other (candle)",
        total - covered,
        100.0 * (total - covered) / total
    );
}

fn report(name: &str, secs: &[f64], load_s: f64, weights: &str) {
    report_profile(name, secs);
    let mut s = secs.to_vec();
    s.sort_by(f64::total_cmp);
    println!(
        "{{\"impl\":\"spire\",\"model\":\"{name}\",\"runs\":{},\"min_s\":{:.3},\"median_s\":{:.3},\"init_s\":{:.2},\"peak_rss_mib\":{:.0},\"threads\":{},\"simd\":\"{}\",\"winograd\":{},\"winograd4\":{},\"weights\":\"{}\"}}",
        s.len(),
        s[0],
        s[s.len() / 2],
        load_s,
        peak_rss_mib(),
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into()),
        spire_core::simd::level().name(),
        spire_core::model::winograd_default(),
        spire_core::model::winograd4_default(),
        weights
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
    // `--weights f16|bf16`: convolution and linear weights kept in half size, widened per layer.
    let weights = match args
        .iter()
        .position(|a| a == "--weights")
        .and_then(|i| args.get(i + 1))
    {
        Some(d) => Some(spire_core::device::parse_dtype(d).map_err(candle_core::Error::wrap)?),
        None => None,
    };
    let weights = weights.filter(|d| *d != DType::F32);
    let wname = weights.map_or("f32", |d| d.as_str());
    let paced = args.iter().any(|a| a == "--paced");
    let dev = Device::Cpu;
    let t0 = Instant::now();
    match which {
        "unet" => {
            let unet = spire_core::model::keep_weights_in(weights, || {
                UNet2DConditionModel::new(
                    &UNetConfig::sd21_base(),
                    spire_core::random_weights(1, DType::F32, &dev),
                )
            })?;
            let init = t0.elapsed().as_secs_f64();
            let x = spire_core::rng::randn(2, (1, 4, 64, 64), &dev)?;
            let ctx = spire_core::rng::randn(3, (1, 77, 1024), &dev)?;
            let secs = time(runs, paced, || unet.forward(&x, &[500.0], &ctx, None))?;
            report("unet-sd21-base-64x64", &secs, init, wname);
        }
        "vae" => {
            let vae = spire_core::model::keep_weights_in(weights, || {
                AutoencoderKL::new(&VaeConfig::sd(), spire_core::random_weights(4, DType::F32, &dev))
            })?;
            let init = t0.elapsed().as_secs_f64();
            let z = spire_core::rng::randn(5, (1, 4, 64, 64), &dev)?;
            let secs = time(runs, paced, || vae.decode(&z))?;
            report("vae-decoder-512x512", &secs, init, wname);
        }
        other => candle_core::bail!("unknown model `{other}` (unet or vae)"),
    }
    Ok(())
}
