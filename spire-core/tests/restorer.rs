//! End-to-end tests of the `Restorer` on tiny random models: equality with diffusers'
//! ControlNet pipeline, determinism, cancellation, exact geometry, batch equivalence, threads,
//! and a clear error for every bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{fixtures, reference, test_rgb8, tiny_spire};
use spire_core::{
    ColorType, ErrorKind, ImageView, LoadOptions, RestorationInput, RestorationPrompt, RestoreOptions,
    Restorer, Samples, SchedulerKind,
};

fn spire() -> (tempfile::TempDir, Restorer) {
    let (tmp, opts) = tiny_spire();
    let r = Restorer::from_pretrained(fixtures().join("tiny-sd1"), &opts).unwrap();
    (tmp, r)
}

fn quick() -> RestoreOptions {
    RestoreOptions::default().with_num_inference_steps(3)
}

#[test]
fn equals_diffusers_controlnet_pipeline() {
    let r = reference("pipeline");
    let opts = LoadOptions::default().with_adaptor(Some(fixtures().join("tiny-controlnet")));
    let restorer = Restorer::from_pretrained(fixtures().join("tiny-sd1"), &opts).unwrap();
    let image: Vec<f32> = r["image"].flatten_all().unwrap().to_vec1().unwrap();
    let o = common::pipeline_options(&r);
    let out = restorer
        .restore(&ImageView::rgb_f32(48, 64, &image).unwrap(), &o)
        .unwrap();
    assert_eq!((out.width, out.height, out.color), (48, 64, ColorType::Rgb));
    let got = out.as_f32().unwrap();
    let want: Vec<f32> = r["out"].flatten_all().unwrap().to_vec1().unwrap();
    let d = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let spread = want.iter().fold(0f32, |m, &v| m.max((v - 0.5).abs()));
    assert!(spread > 0.05, "reference output is flat");
    assert!(d < 2e-3, "max abs diff {d}");
    eprintln!("pipeline: max abs diff {d:e}");
}

#[test]
fn same_seed_same_output_other_seed_differs() {
    let (_t, r) = spire();
    let px = test_rgb8(40, 24);
    let img = ImageView::rgb8(40, 24, &px).unwrap();
    let a = r.restore(&img, &quick()).unwrap();
    let b = r.restore(&img, &quick()).unwrap();
    assert_eq!(a, b);
    let c = r.restore(&img, &quick().with_seed(7)).unwrap();
    assert_ne!(a, c);
}

#[test]
fn every_scheduler_and_guidance_mode_runs() {
    let (_t, r) = spire();
    let px = test_rgb8(16, 16);
    let img = ImageView::rgb8(16, 16, &px).unwrap();
    let prompt = RestorationPrompt::parse("Denoise with sigma 0.1").unwrap();
    let mut outs = Vec::new();
    for kind in [
        SchedulerKind::Ddim,
        SchedulerKind::DpmSolverPlusPlus2M,
        SchedulerKind::Euler,
    ] {
        for (wr, ws) in [(1.0, 1.0), (1.0, 4.0), (3.0, 1.0), (2.0, 5.0), (0.0, 0.0)] {
            let o = quick()
                .with_scheduler(Some(kind))
                .with_restoration_prompt(prompt.into())
                .with_semantic_prompt("a photo".into())
                .with_restoration_guidance(wr)
                .with_semantic_guidance(ws);
            outs.push(r.restore(&img, &o).unwrap());
        }
    }
    // Different weights give different results.
    assert_ne!(outs[0], outs[1]);
    assert_ne!(outs[0], outs[2]);
    // DDIM with eta > 0 is seeded too.
    let o = quick().with_scheduler(Some(SchedulerKind::Ddim)).with_eta(1.0);
    assert_eq!(r.restore(&img, &o).unwrap(), r.restore(&img, &o).unwrap());
}

#[test]
fn cancelling_stops_within_one_step() {
    let (_t, r) = spire();
    let px = test_rgb8(16, 16);
    let img = ImageView::rgb8(16, 16, &px).unwrap();
    let denoise_calls = Arc::new(AtomicUsize::new(0));
    let c = denoise_calls.clone();
    let o = RestoreOptions::default()
        .with_num_inference_steps(10)
        .with_progress(Some(Arc::new(move |p: &spire_core::Progress| {
            if p.stage == spire_core::Stage::Denoising {
                let k = c.fetch_add(1, Ordering::SeqCst);
                return k < 2; // continue after the report before step 1 and after step 1; stop after step 2
            }
            true
        })));
    let err = r.restore(&img, &o).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    assert_eq!(
        denoise_calls.load(Ordering::SeqCst),
        3,
        "stopped right after the step that was cancelled"
    );
}

#[test]
fn progress_reports_every_step() {
    let (_t, r) = spire();
    let px = test_rgb8(16, 16);
    let img = ImageView::rgb8(16, 16, &px).unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let o = RestoreOptions::default()
        .with_num_inference_steps(4)
        .with_progress(Some(Arc::new(move |p: &spire_core::Progress| {
            if p.stage == spire_core::Stage::Denoising {
                s.lock().unwrap().push((p.step, p.total));
            }
            true
        })));
    r.restore(&img, &o).unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    );
    // strength 0.5 runs half the steps.
    seen.lock().unwrap().clear();
    r.restore(&img, &o.with_strength(0.5)).unwrap();
    assert_eq!(seen.lock().unwrap().last(), Some(&(2, 2)));
}

#[test]
fn output_size_is_exact_for_odd_sizes_and_upsampling() {
    let (_t, r) = spire();
    for (w, h, prompt, ow, oh) in [
        (37, 29, "Remove all degradation", 37, 29),
        (2, 2, "Remove all degradation", 2, 2),
        (9, 33, "Upsample with scale 2.0", 18, 66),
        (37, 29, "Upsample with scale 2.5", 93, 73),
        (
            13,
            7,
            "Deblur with sigma 1.0; Upsample with scale 3.0; Denoise with sigma 0.1",
            39,
            21,
        ),
    ] {
        let px = test_rgb8(w, h);
        let o = quick().with_restoration_text(prompt).unwrap();
        let out = r.restore(&ImageView::rgb8(w, h, &px).unwrap(), &o).unwrap();
        assert_eq!((out.width, out.height), (ow, oh), "{w}x{h} {prompt}");
        assert_eq!(out.as_u8().unwrap().len(), ow * oh * 3);
    }
}

#[test]
fn gray_rgba_float_and_strided_inputs() {
    let (_t, r) = spire();
    let (w, h) = (21, 11);
    // Gray in, gray out.
    let gray: Vec<u8> = (0..w * h).map(|i| (i * 7 % 256) as u8).collect();
    let out = r
        .restore(
            &ImageView::new(w, h, ColorType::Gray, Samples::U8(&gray)).unwrap(),
            &quick(),
        )
        .unwrap();
    assert_eq!((out.color, out.as_u8().unwrap().len()), (ColorType::Gray, w * h));
    // RGBA: alpha passes through (constant alpha stays exactly constant, also upsampled).
    let rgb = test_rgb8(w, h);
    let rgba: Vec<u8> = rgb.chunks(3).flat_map(|p| [p[0], p[1], p[2], 77]).collect();
    let o = quick().with_restoration_text("Upsample with scale 2").unwrap();
    let out = r
        .restore(
            &ImageView::new(w, h, ColorType::Rgba, Samples::U8(&rgba)).unwrap(),
            &o,
        )
        .unwrap();
    assert_eq!(
        (out.width, out.height, out.color),
        (2 * w, 2 * h, ColorType::Rgba)
    );
    assert!(out.as_u8().unwrap().chunks(4).all(|p| p[3] == 77));
    // Float in, float out, same as the 8-bit input scaled.
    let f: Vec<f32> = rgb.iter().map(|&v| v as f32 / 255.0).collect();
    let of = r
        .restore(&ImageView::rgb_f32(w, h, &f).unwrap(), &quick())
        .unwrap();
    let o8 = r
        .restore(&ImageView::rgb8(w, h, &rgb).unwrap(), &quick())
        .unwrap();
    let d = of
        .as_f32()
        .unwrap()
        .iter()
        .zip(o8.as_u8().unwrap())
        .map(|(a, &b)| (a * 255.0 - b as f32).abs())
        .fold(0f32, f32::max);
    assert!(d <= 0.51, "float and 8-bit paths differ by {d}/255");
    // A strided view (rows padded to 100 samples) equals the packed one.
    let stride = 100;
    let mut padded = vec![0u8; stride * h];
    for y in 0..h {
        padded[y * stride..y * stride + w * 3].copy_from_slice(&rgb[y * w * 3..(y + 1) * w * 3]);
    }
    let os = r
        .restore(
            &ImageView::with_stride(w, h, stride, ColorType::Rgb, Samples::U8(&padded)).unwrap(),
            &quick(),
        )
        .unwrap();
    assert_eq!(os, o8);
}

#[test]
fn batch_equals_single_images_with_consecutive_seeds() {
    let (_t, r) = spire();
    let (a, b, c) = (
        test_rgb8(16, 16),
        test_rgb8(16, 16).iter().map(|v| 255 - v).collect::<Vec<u8>>(),
        test_rgb8(24, 8),
    );
    let views = [
        ImageView::rgb8(16, 16, &a).unwrap(),
        ImageView::rgb8(16, 16, &b).unwrap(),
        ImageView::rgb8(24, 8, &c).unwrap(),
    ];
    let o = quick()
        .with_seed(11)
        .with_semantic_prompt("a photo".into())
        .with_semantic_guidance(2.0);
    let batch = r.restore_batch(&views, &o).unwrap();
    for (i, v) in views.iter().enumerate() {
        let single = r.restore(v, &o.clone().with_seed(11 + i as u64)).unwrap();
        let d = batch[i]
            .as_u8()
            .unwrap()
            .iter()
            .zip(single.as_u8().unwrap())
            .map(|(x, y)| x.abs_diff(*y))
            .max();
        assert!(d <= Some(1), "image {i}: batch and single differ by {d:?}");
    }
}

#[test]
fn clones_share_weights_and_threads_restore_concurrently() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Restorer>();
    let (_t, r) = spire();
    let px = test_rgb8(16, 16);
    let want = r
        .restore(&ImageView::rgb8(16, 16, &px).unwrap(), &quick())
        .unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let r2 = r.clone();
            assert!(r2.shares_weights_with(&r));
            let px = px.clone();
            std::thread::spawn(move || {
                r2.restore(&ImageView::rgb8(16, 16, &px).unwrap(), &quick())
                    .unwrap()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), want);
    }
}

#[test]
fn bad_inputs_are_clear_errors() {
    let (_t, r) = spire();
    let px = test_rgb8(16, 16);
    let img = ImageView::rgb8(16, 16, &px).unwrap();
    let cases: Vec<(RestoreOptions, ErrorKind, &str)> = vec![
        (
            quick().with_num_inference_steps(0),
            ErrorKind::InvalidArgument,
            "num_inference_steps",
        ),
        (
            quick().with_num_inference_steps(5000),
            ErrorKind::InvalidArgument,
            "num_inference_steps",
        ),
        (
            quick().with_restoration_guidance(-1.0),
            ErrorKind::InvalidArgument,
            "restoration_guidance",
        ),
        (
            quick().with_semantic_guidance(f64::NAN),
            ErrorKind::InvalidArgument,
            "semantic_guidance",
        ),
        (
            quick().with_conditioning_scale(f64::INFINITY),
            ErrorKind::InvalidArgument,
            "conditioning_scale",
        ),
        (quick().with_strength(0.0), ErrorKind::InvalidArgument, "strength"),
        (quick().with_strength(1.5), ErrorKind::InvalidArgument, "strength"),
        (quick().with_strength(0.1), ErrorKind::InvalidArgument, "strength"),
        (quick().with_eta(0.5), ErrorKind::InvalidArgument, "eta"),
        (
            quick().with_initial_latents(Some(
                candle_core::Tensor::zeros((1, 4, 5, 5), candle_core::DType::F32, &candle_core::Device::Cpu)
                    .unwrap(),
            )),
            ErrorKind::InvalidArgument,
            "initial_latents",
        ),
        (
            quick().with_restoration_prompt(RestorationInput::Verbatim("  ".into())),
            ErrorKind::InvalidArgument,
            "restoration_prompt",
        ),
    ];
    for (o, kind, needle) in cases {
        let err = r.restore(&img, &o).unwrap_err();
        assert_eq!(err.kind(), kind, "{needle}: {err}");
        assert!(err.to_string().contains(needle), "{needle}: {err}");
    }
    // A malformed prompt names the clause.
    let err = quick()
        .with_restoration_text("Denoise with sigma 0.1; Sharpen with sigma 2")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("Sharpen with sigma 2"), "{err}");
    // Images.
    let empty: [u8; 0] = [];
    for (w, h, data) in [
        (0usize, 0usize, &empty[..]),
        (1, 16, &px[..48]),
        (16, 1, &px[..48]),
        (16, 16, &px[..100]),
    ] {
        let err = ImageView::rgb8(w, h, data).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidImage, "{w}x{h}: {err}");
    }
    let mut f: Vec<f32> = px.iter().map(|&v| v as f32 / 255.0).collect();
    f[100] = f32::NAN;
    let err = r
        .restore(&ImageView::rgb_f32(16, 16, &f).unwrap(), &quick())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidImage);
    assert!(err.to_string().contains("NaN"), "{err}");
    // Missing model folder.
    let err = Restorer::from_pretrained("/no/such/model", &LoadOptions::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
}
