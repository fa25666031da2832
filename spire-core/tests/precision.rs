//! The paths a GPU takes, proven on the CPU: the fused-kernel switch (candle's operations,
//! what CUDA and Metal run, against the same diffusers references), half precision (f16 and
//! bf16 weights against the f32 reference, within measured tolerances), diffusers' precision
//! rules (`force_upcast`), and a numerical failure caught instead of returned as an image.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use candle_core::DType;
use common::{assert_close, fixtures, max_abs_diff, reference, timesteps};
use spire_core::model::{fused_dispatches_on_this_thread, Autoencoder, UNet2DConditionModel};
use spire_core::{ErrorKind, ImageView, LoadOptions, Restorer};

#[test]
fn the_fused_kernel_switch_picks_the_path_and_both_equal_diffusers() {
    let r = reference("tiny-sd1-unet");
    let dir = fixtures().join("tiny-sd1/unet");
    let mut outs = Vec::new();
    for fused in [true, false] {
        let o = LoadOptions::default().with_fused_kernels(fused);
        let unet = UNet2DConditionModel::from_dir(&dir, &o).unwrap();
        let before = fused_dispatches_on_this_thread();
        let out = unet
            .forward(&r["sample"], &timesteps(&r["timesteps"]), &r["context"], None)
            .unwrap();
        let used = fused_dispatches_on_this_thread() - before;
        if fused {
            assert!(used > 10, "fused kernels on: only {used} layer calls took them");
        } else {
            assert_eq!(used, 0, "fused kernels off: {used} layer calls still took them");
        }
        assert_close(&format!("sd1 unet, fused kernels {fused}"), &out, &r["out"], 1e-4);
        outs.push(out);
    }
    // Two different computations of the same function: close, not bit-identical.
    let d = max_abs_diff(&outs[0], &outs[1]);
    eprintln!("fused vs candle ops: max abs diff {d:e}");
    assert!(d < 1e-4);
}

/// Half-precision UNet forward against diffusers' f32 output. Measured on the tiny SD1 UNet
/// (output max 1.35): f16 2.5e-3, bf16 2.0e-2 (bf16 keeps 8 bits of mantissa, f16 11).
#[test]
fn unet_in_f16_and_bf16_is_within_measured_tolerance_of_f32() {
    let r = reference("tiny-sd1-unet");
    for (dtype, tol) in [(DType::F16, 1e-2f32), (DType::BF16, 6e-2)] {
        let o = LoadOptions::default().with_dtype(dtype);
        let unet = UNet2DConditionModel::from_dir(&fixtures().join("tiny-sd1/unet"), &o).unwrap();
        let out = unet
            .forward(
                &r["sample"].to_dtype(dtype).unwrap(),
                &timesteps(&r["timesteps"]),
                &r["context"].to_dtype(dtype).unwrap(),
                None,
            )
            .unwrap();
        assert_eq!(out.dtype(), dtype);
        assert_close(
            &format!("sd1 unet in {dtype:?}"),
            &out.to_dtype(DType::F32).unwrap(),
            &r["out"],
            tol,
        );
    }
}

fn pipeline(dtype: DType) -> (Restorer, Vec<f32>) {
    let r = reference("pipeline");
    let opts = LoadOptions::default()
        .with_adaptor(Some(fixtures().join("tiny-controlnet")))
        .with_dtype(dtype);
    let restorer = Restorer::from_pretrained(fixtures().join("tiny-sd1"), &opts).unwrap();
    let image: Vec<f32> = r["image"].flatten_all().unwrap().to_vec1().unwrap();
    let out = restorer
        .restore(
            &ImageView::rgb_f32(48, 64, &image).unwrap(),
            &common::pipeline_options(&r),
        )
        .unwrap();
    (restorer, out.as_f32().unwrap().to_vec())
}

/// The whole restore (diffusers' ControlNet pipeline fixture, 5 DDIM steps, dual guidance)
/// in f16 and bf16 against diffusers' f32 output. Measured: f16 1.0e-3, bf16 1.3e-2 (pixel
/// values in [0, 1]); the f32 run is within 2e-3 (tests/restorer.rs).
#[test]
fn the_pipeline_in_f16_and_bf16_is_within_measured_tolerance_of_diffusers_f32() {
    let want: Vec<f32> = reference("pipeline")["out"]
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    for (dtype, tol, vae) in [
        // diffusers' rule: a `force_upcast` VAE stays f32 when the pipeline is f16 …
        (DType::F16, 5e-3f32, DType::F32),
        // … and bf16, which has f32's range, is kept.
        (DType::BF16, 5e-2, DType::BF16),
    ] {
        let (restorer, got) = pipeline(dtype);
        assert_eq!(restorer.dtype(), dtype);
        match restorer.autoencoder() {
            Autoencoder::Kl(v) => assert_eq!(v.dtype(), vae, "{dtype:?}"),
            Autoencoder::PixelShuffle(_) => panic!("the fixture has a KL autoencoder"),
        }
        let d = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!("pipeline in {dtype:?}: max abs diff {d:e} against diffusers f32");
        assert!(got.iter().all(|v| v.is_finite()));
        assert!(d < tol, "{dtype:?}: max abs diff {d} > {tol}");
    }
}

/// An autoencoder whose decoder output overflows f16's range (65504): the last convolution's
/// weights scaled by 1e5, `force_upcast` on or off.
fn overflowing_vae_model(force_upcast: bool) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for sub in ["unet", "text_encoder", "tokenizer", "scheduler"] {
        let src = fixtures().join("tiny-sd1").join(sub);
        let dst = tmp.path().join(sub);
        std::fs::create_dir_all(&dst).unwrap();
        for e in std::fs::read_dir(&src).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
    let vae_src = fixtures().join("tiny-sd1/vae");
    let vae = tmp.path().join("vae");
    std::fs::create_dir_all(&vae).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(vae_src.join("config.json")).unwrap()).unwrap();
    cfg["force_upcast"] = force_upcast.into();
    std::fs::write(vae.join("config.json"), cfg.to_string()).unwrap();
    let file = "diffusion_pytorch_model.safetensors";
    let mut w = candle_core::safetensors::load(vae_src.join(file), &candle_core::Device::Cpu).unwrap();
    let k = "decoder.conv_out.weight";
    let scaled = (w[k].clone() * 1e5).unwrap();
    w.insert(k.into(), scaled);
    candle_core::safetensors::save(&w, vae.join(file)).unwrap();
    tmp
}

#[test]
fn an_f16_autoencoder_without_the_upcast_is_caught_not_returned_as_nan() {
    let r = reference("pipeline");
    let image: Vec<f32> = r["image"].flatten_all().unwrap().to_vec1().unwrap();
    let view = ImageView::rgb_f32(48, 64, &image).unwrap();
    let o = common::pipeline_options(&r);
    let load = |dir: &std::path::Path| {
        let lo = LoadOptions::default()
            .with_adaptor(Some(fixtures().join("tiny-controlnet")))
            .with_dtype(DType::F16);
        Restorer::from_pretrained(dir, &lo).unwrap()
    };
    // With diffusers' default upcast the decoder runs in f32: a finite (saturated) image.
    let up = overflowing_vae_model(true);
    let out = load(up.path()).restore(&view, &o).unwrap();
    assert!(out.as_f32().unwrap().iter().all(|v| v.is_finite()));
    // Forced to f16, it overflows: a typed error naming the stage and the cure.
    let down = overflowing_vae_model(false);
    let err = load(down.path()).restore(&view, &o).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Numerical, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("decoded image") && msg.contains("F16") && msg.contains("force_upcast"),
        "{msg}"
    );
}

#[test]
fn the_builtin_model_runs_in_f16_and_bf16_on_the_cpu() {
    let px = common::test_rgb8(32, 24);
    let view = ImageView::rgb8(32, 24, &px).unwrap();
    let f32_model = Restorer::builtin().unwrap();
    let o = f32_model.default_options();
    let want = f32_model.restore(&view, &o).unwrap();
    let want = want.as_u8().unwrap();
    for dtype in [DType::F16, DType::BF16] {
        let m = Restorer::builtin_with(&LoadOptions::default().with_dtype(dtype)).unwrap();
        assert_eq!(m.dtype(), dtype);
        let got = m.restore(&view, &o).unwrap();
        let worst = got
            .as_u8()
            .unwrap()
            .iter()
            .zip(want)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        eprintln!("built-in model in {dtype:?}: worst pixel differs by {worst}/255 from f32");
        assert!(worst <= 4, "{dtype:?}: {worst}");
    }
}

/// Weights kept in half size with f32 arithmetic (`LoadOptions::weight_dtype`): the whole
/// restore of diffusers' ControlNet pipeline fixture against diffusers' f32 output, and the
/// built-in model against itself in f32. The only change is the rounding of the convolution
/// and linear weights, so the error sits between f32 and full half precision.
#[test]
fn half_size_weights_with_f32_arithmetic_stay_close_to_f32() {
    let r = reference("pipeline");
    let want: Vec<f32> = r["out"].flatten_all().unwrap().to_vec1().unwrap();
    let image: Vec<f32> = r["image"].flatten_all().unwrap().to_vec1().unwrap();
    for (wd, tol) in [(DType::F16, 5e-3f32), (DType::BF16, 5e-2)] {
        let opts = LoadOptions::default()
            .with_adaptor(Some(fixtures().join("tiny-controlnet")))
            .with_weight_dtype(Some(wd));
        let restorer = Restorer::from_pretrained(fixtures().join("tiny-sd1"), &opts).unwrap();
        assert_eq!(restorer.dtype(), DType::F32, "arithmetic stays f32");
        let before = fused_dispatches_on_this_thread();
        let got = restorer
            .restore(
                &ImageView::rgb_f32(48, 64, &image).unwrap(),
                &common::pipeline_options(&r),
            )
            .unwrap();
        // With the kernels on they widen the weights; off (SPIRE_FUSED_KERNELS=0, as the
        // test script runs this too), candle's path widens them per call.
        let fused = fused_dispatches_on_this_thread() > before;
        assert_eq!(
            fused,
            spire_core::model::fused_default(),
            "the fused kernels ran iff on"
        );
        let got = got.as_f32().unwrap();
        let d = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!("pipeline with {wd:?} weights, f32 arithmetic: max abs diff {d:e} against diffusers f32");
        assert!(d < tol && d > 0.0, "{wd:?} weights: max abs diff {d}");
    }
    // The built-in model, 8-bit output: its file stores f16, so keeping the weights in f16
    // loses nothing and the restore is the f32 one exactly.
    let px = common::test_rgb8(40, 32);
    let view = ImageView::rgb8(40, 32, &px).unwrap();
    let full = Restorer::builtin().unwrap();
    let o = full.default_options();
    let want = full.restore(&view, &o).unwrap();
    let half = Restorer::builtin_with(&LoadOptions::default().with_weight_dtype(Some(DType::F16))).unwrap();
    let got = half.restore(&view, &o).unwrap();
    let diffs: Vec<u8> = got
        .as_u8()
        .unwrap()
        .iter()
        .zip(want.as_u8().unwrap())
        .map(|(a, b)| a.abs_diff(*b))
        .collect();
    let worst = *diffs.iter().max().unwrap();
    let mean = diffs.iter().map(|&d| d as f64).sum::<f64>() / diffs.len() as f64;
    eprintln!("built-in model with f16 weights: worst pixel {worst}/255, mean {mean:.3}/255 from f32");
    assert_eq!(worst, 0, "mean {mean}");
    // Not a float dtype weights can be kept in: refused, naming the option.
    let e = Restorer::builtin_with(&LoadOptions::default().with_weight_dtype(Some(DType::U8))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("weight_dtype"), "{e}");
}
