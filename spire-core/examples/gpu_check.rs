//! The GPU check (run by `scripts/gpu_check.sh`): parity of the models and the whole restore
//! against the committed diffusers/transformers references on a device, in f32, f16 and bf16,
//! and timings of an SD 2.1-base-sized UNet forward and a whole restore on that device. One
//! JSON line per result; the script prints the table.
//!
//!     gpu_check parity --device cuda [--fixtures tests/fixtures]
//!     gpu_check bench  --device cuda --dtype f16 [--what unet|restore] [--runs 5] [--size 512] [--steps 20]
//!
//! Runs on the CPU as well (`--device cpu`), so every part of it is proven on any machine.
//! Benchmarks, not tests: the bench mode asserts nothing; the parity mode exits non-zero when a
//! difference exceeds its tolerance (the tolerances measured on the CPU, tests/precision.rs).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use spire_core::model::{
    Adaptor, AdaptorConfig, AutoencoderKL, ClipTextConfig, ClipTextModel, ClipTokenizer, Fusion, HintMode,
    Injection, LoadOptions, UNet2DConditionModel, UNetConfig, VaeConfig,
};
use spire_core::{
    ColorFix, ImageView, RestorationInput, RestoreOptions, Restorer, RestorerParts, SchedulerConfig,
    SchedulerKind,
};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.into())
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let device = spire_core::device::parse_device(&arg(&args, "--device", "cpu"))?;
    match args.get(1).map(String::as_str) {
        Some("parity") => parity(&device, Path::new(&arg(&args, "--fixtures", "tests/fixtures"))),
        Some("bench") => bench(
            &device,
            spire_core::device::parse_dtype(&arg(&args, "--dtype", "f16"))?,
            arg(&args, "--runs", "5").parse()?,
            arg(&args, "--size", "512").parse()?,
            arg(&args, "--steps", "20").parse()?,
            Path::new(&arg(&args, "--fixtures", "tests/fixtures")),
            &arg(&args, "--what", "unet"),
        ),
        _ => Err("usage: gpu_check parity|bench --device D [...]".into()),
    }
}

// ------------------------------------------------------------------------------------------
// Parity
// ------------------------------------------------------------------------------------------

/// Largest absolute difference, on the host, in f32, divided by the reference's largest
/// magnitude when that exceeds 1 (tolerances are absolute for outputs of unit scale and
/// relative for larger ones).
fn diff(a: &Tensor, reference: &Tensor) -> Res<f32> {
    let a = a.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
    let b = reference.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
    let scale = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?.max(1.0);
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()? / scale)
}

struct Parity<'a> {
    fixtures: &'a Path,
    device: &'a Device,
    failed: usize,
}

impl Parity<'_> {
    fn reference(&self, name: &str) -> Res<HashMap<String, Tensor>> {
        let p = self.fixtures.join("ref").join(format!("{name}.safetensors"));
        Ok(candle_core::safetensors::load(&p, self.device)?)
    }

    fn report(&mut self, what: &str, dtype: DType, d: f32, tol: f32) {
        let ok = d.is_finite() && d <= tol;
        if !ok {
            self.failed += 1;
        }
        println!(
            "{{\"check\":\"{what}\",\"dtype\":\"{}\",\"max_diff\":{d:e},\"tolerance\":{tol:e},\"ok\":{ok}}}",
            dtype.as_str()
        );
    }

    fn models(&mut self, dtype: DType, tol: f32) -> Res<()> {
        let lo = LoadOptions::default()
            .with_device(self.device.clone())
            .with_dtype(dtype);
        let cast = |t: &Tensor| t.to_dtype(dtype);
        let ts = |t: &Tensor| -> Res<Vec<f32>> { Ok(t.to_device(&Device::Cpu)?.to_vec1::<f32>()?) };
        for flavour in ["tiny-sd1", "tiny-sd2"] {
            let r = self.reference(&format!("{flavour}-unet"))?;
            let unet = UNet2DConditionModel::from_dir(&self.fixtures.join(flavour).join("unet"), &lo)?;
            let out = unet.forward(
                &cast(&r["sample"])?,
                &ts(&r["timesteps"])?,
                &cast(&r["context"])?,
                None,
            )?;
            let d = diff(&out, &r["out"])?;
            self.report(&format!("{flavour} unet"), dtype, d, tol);
            let r = self.reference(&format!("{flavour}-text-encoder"))?;
            let te = ClipTextModel::from_dir(&self.fixtures.join(flavour).join("text_encoder"), &lo)?;
            let out = te.forward(&r["ids"].to_dtype(DType::U32)?)?;
            let d = diff(&out.last_hidden_state, &r["last_hidden_state"])?;
            self.report(&format!("{flavour} text encoder"), dtype, d, tol);
        }
        let r = self.reference("vae")?;
        let vae = AutoencoderKL::from_dir(&self.fixtures.join("tiny-sd1/vae"), &lo)?;
        let x = r["x"].to_dtype(vae.dtype())?;
        let d = diff(&vae.encode(&x)?.mean, &r["mean"])?;
        self.report("vae encoder mean", dtype, d, tol);
        let d = diff(&vae.decode(&r["z"].to_dtype(vae.dtype())?)?, &r["decoded"])?;
        self.report("vae decoder", dtype, d, tol);
        let r = self.reference("controlnet")?;
        let cn = Adaptor::from_dir(&self.fixtures.join("tiny-controlnet"), &lo)?;
        let t = ts(&r["timesteps"])?;
        let control = cn.forward(
            &cast(&r["sample"])?,
            &t,
            &cast(&r["context"])?,
            None,
            &cast(&r["cond"])?,
            0.7,
        )?;
        let mut worst = 0f32;
        for (i, inj) in control.down.iter().enumerate() {
            if let Injection::Add(x) = inj {
                worst = worst.max(diff(x, &r[&format!("down.{i}")])?);
            }
        }
        self.report("controlnet residuals", dtype, worst, tol);
        let unet = UNet2DConditionModel::from_dir(&self.fixtures.join("tiny-sd1/unet"), &lo)?;
        let out = unet.forward(&cast(&r["sample"])?, &t, &cast(&r["context"])?, Some(&control))?;
        let d = diff(&out, &r["unet_out"])?;
        self.report("unet with controlnet", dtype, d, tol);
        Ok(())
    }

    /// diffusers' `StableDiffusionControlNetPipeline` fixture: 5 DDIM steps, dual guidance.
    fn pipeline(&mut self, dtype: DType, tol: f32) -> Res<()> {
        let r = candle_core::safetensors::load(self.fixtures.join("ref/pipeline.safetensors"), &Device::Cpu)?;
        let lo = LoadOptions::default()
            .with_device(self.device.clone())
            .with_dtype(dtype)
            .with_adaptor(Some(self.fixtures.join("tiny-controlnet")));
        let restorer = Restorer::from_pretrained(self.fixtures.join("tiny-sd1"), &lo)?;
        let image: Vec<f32> = r["image"].flatten_all()?.to_vec1()?;
        let prompt = "a red motorcycle in a workshop";
        let o = RestoreOptions::default()
            .with_restoration_prompt(RestorationInput::Verbatim(prompt.into()))
            .with_semantic_prompt(prompt.into())
            .with_negative_prompt(String::new())
            .with_restoration_null_prompt(String::new())
            .with_restoration_guidance(3.0)
            .with_semantic_guidance(3.0)
            .with_num_inference_steps(5)
            .with_scheduler(Some(SchedulerKind::Ddim))
            .with_initial_latents(Some(r["latents"].clone()))
            .with_color_fix(ColorFix::None);
        let out = restorer.restore(&ImageView::rgb_f32(48, 64, &image)?, &o)?;
        let got = Tensor::from_slice(
            out.as_f32().ok_or("f32 output expected")?,
            r["out"].shape(),
            &Device::Cpu,
        )?;
        let d = diff(&got, &r["out"])?;
        self.report("restore = diffusers ControlNet pipeline", dtype, d, tol);
        Ok(())
    }
}

fn parity(device: &Device, fixtures: &Path) -> Res<()> {
    let mut p = Parity {
        fixtures,
        device,
        failed: 0,
    };
    // Tolerances (max difference over max(1, reference magnitude)): f32 as the CPU parity
    // tests; f16/bf16 from the CPU measurements (worst component on the CPU: f16 2.0e-3, the
    // SD2 UNet; bf16 3.0e-2, the VAE decoder; pipeline 1.0e-3 / 1.3e-2, tests/precision.rs),
    // with headroom for other kernels.
    for (dtype, models, pipeline) in [
        (DType::F32, 1e-4f32, 2e-3f32),
        (DType::F16, 1.5e-2, 5e-3),
        (DType::BF16, 8e-2, 5e-2),
    ] {
        p.models(dtype, models)?;
        p.pipeline(dtype, pipeline)?;
    }
    if p.failed > 0 {
        return Err(format!("{} parity checks out of tolerance", p.failed).into());
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Benchmark
// ------------------------------------------------------------------------------------------

/// Peak memory of the device during `f`, above what was in use before it, in MiB: a 5 ms
/// sampling of `total − free` on CUDA (the same method the PyTorch side uses), the process's
/// peak RSS on the CPU.
fn with_peak_memory<T>(device: &Device, f: impl FnOnce() -> Res<T>) -> Res<(T, f64)> {
    if device.is_cpu() {
        let out = f()?;
        let rss = std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0);
        return Ok((out, rss));
    }
    let free = || spire_core::device::available_memory(device).unwrap_or(0);
    let before = free();
    let min_free = Arc::new(Mutex::new(before));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (min_free, done, device) = (min_free.clone(), done.clone(), device.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let f = spire_core::device::available_memory(&device).unwrap_or(u64::MAX);
                if let Ok(mut m) = min_free.lock() {
                    *m = (*m).min(f);
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };
    let out = f();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let low = *min_free.lock().map_err(|_| "poisoned")?;
    Ok((out?, before.saturating_sub(low) as f64 / (1 << 20) as f64))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One benchmark per process (`what`), so the CPU's peak RSS belongs to it alone.
fn bench(
    device: &Device,
    dtype: DType,
    runs: usize,
    size: usize,
    steps: usize,
    fixtures: &Path,
    what: &str,
) -> Res<()> {
    let dev_name = spire_core::device::device_name(device);
    let threads = candle_core::utils::get_num_threads();
    if what == "unet" {
        return bench_unet(device, dtype, runs);
    }
    if what != "restore" {
        return Err(format!("--what: `{what}` is not unet or restore").into());
    }
    // A whole restore: SD 2.1-base UNet + an SD-sized ControlNet-style adaptor (pixel hint,
    // additive), the SD VAE and an SD 2-sized text encoder (23 layers, 1024 wide), random
    // weights; DPM++ 2M, one guidance pass — the computation of diffusers' ControlNet pipeline
    // at guidance 1.
    let ((secs, init), mem) = with_peak_memory(device, || {
        let t0 = Instant::now();
        let tokenizer = ClipTokenizer::from_dir(&fixtures.join("tiny-sd2/tokenizer"))?;
        let unet_cfg = UNetConfig::sd21_base();
        let text_cfg = ClipTextConfig {
            // The tiny test vocabulary; the width of SD 2.1's encoder.
            vocab_size: 1000,
            ..ClipTextConfig::sd21(tokenizer.eos_id())
        };
        let restorer = Restorer::from_parts(RestorerParts {
            unet: UNet2DConditionModel::new(&unet_cfg, spire_core::random_weights(1, dtype, device))?,
            // The SD VAE stays f32 in f16 (diffusers' force_upcast), in both implementations.
            vae: AutoencoderKL::new(
                &VaeConfig::sd(),
                spire_core::random_weights(2, if dtype == DType::F16 { DType::F32 } else { dtype }, device),
            )?
            .into(),
            text_encoder: ClipTextModel::new(&text_cfg, spire_core::random_weights(3, dtype, device))?,
            tokenizer,
            restoration_text: None,
            adaptor: Adaptor::new(
                &AdaptorConfig::from_unet(&unet_cfg, HintMode::Pixel, Fusion::Additive, 4),
                spire_core::random_weights(4, dtype, device),
            )?,
            scheduler: SchedulerConfig::default(),
            device: device.clone(),
            dtype,
            defaults: Default::default(),
            name: "random SD 2.1-base + ControlNet".into(),
        })?;
        let init = t0.elapsed().as_secs_f64();
        let px: Vec<u8> = (0..size * size * 3).map(|i| (i * 31 % 251) as u8).collect();
        let image = ImageView::rgb8(size, size, &px)?;
        let o = RestoreOptions::default()
            .with_num_inference_steps(steps)
            .with_scheduler(Some(SchedulerKind::DpmSolverPlusPlus2M))
            .with_restoration_prompt(RestorationInput::Verbatim("Remove all degradation".into()))
            .with_semantic_prompt("a photo of a cat".into())
            .with_restoration_guidance(1.0)
            .with_semantic_guidance(1.0)
            .with_color_fix(ColorFix::None)
            .with_consistency(0.0);
        let run = || -> Res<f64> {
            let t = Instant::now();
            restorer.restore(&image, &o)?;
            Ok(t.elapsed().as_secs_f64())
        };
        run()?;
        let secs = (0..runs.clamp(1, 3)).map(|_| run()).collect::<Res<Vec<f64>>>()?;
        Ok((secs, init))
    })?;
    println!(
        "{{\"impl\":\"spire\",\"bench\":\"restore-{size}px-{steps}-dpm++\",\"device\":\"{dev_name}\",\"dtype\":\"{}\",\"median_s\":{:.3},\"min_s\":{:.3},\"runs\":{},\"init_s\":{init:.1},\"peak_mem_mib\":{mem:.0},\"threads\":{threads}}}",
        dtype.as_str(),
        median(secs.clone()),
        secs.iter().copied().fold(f64::INFINITY, f64::min),
        secs.len()
    );
    Ok(())
}

/// UNet forward, SD 2.1-base, 1×4×64×64 (context 1×77×1024).
fn bench_unet(device: &Device, dtype: DType, runs: usize) -> Res<()> {
    let dev_name = spire_core::device::device_name(device);
    let threads = candle_core::utils::get_num_threads();
    let ((secs, init), mem) = with_peak_memory(device, || {
        let t0 = Instant::now();
        let unet = UNet2DConditionModel::new(
            &UNetConfig::sd21_base(),
            spire_core::random_weights(1, dtype, device),
        )?;
        let init = t0.elapsed().as_secs_f64();
        let x = spire_core::rng::randn(2, (1, 4, 64, 64), device)?.to_dtype(dtype)?;
        let ctx = spire_core::rng::randn(3, (1, 77, 1024), device)?.to_dtype(dtype)?;
        let run = || -> Res<f64> {
            let t = Instant::now();
            let out = unet.forward(&x, &[500.0], &ctx, None)?;
            // Reading a value back waits for the device to finish.
            out.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
            Ok(t.elapsed().as_secs_f64())
        };
        run()?; // warm-up (kernel loading, cuBLAS handles)
        let secs = (0..runs).map(|_| run()).collect::<Res<Vec<f64>>>()?;
        Ok((secs, init))
    })?;
    println!(
        "{{\"impl\":\"spire\",\"bench\":\"unet-sd21-base-64x64\",\"device\":\"{dev_name}\",\"dtype\":\"{}\",\"median_s\":{:.4},\"min_s\":{:.4},\"runs\":{runs},\"init_s\":{init:.1},\"peak_mem_mib\":{mem:.0},\"threads\":{threads}}}",
        dtype.as_str(),
        median(secs.clone()),
        secs.iter().copied().fold(f64::INFINITY, f64::min),
    );
    Ok(())
}
