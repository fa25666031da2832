//! Measurement consistency (`spire_core::consistency`) and the noise-matched start.
//!
//! Parity: the MAP solve equals a dense NumPy solve whose operators were built by running
//! PIL's bicubic resize and OpenCV's Gaussian blur on unit images, the JPEG constraint equals a
//! NumPy/SciPy one (luma, then 4:2:0 chroma enlarged by PIL's bilinear resize), and the JPEG
//! luma and chroma tables equal the ones libjpeg writes (fixtures from
//! `scripts/make_fixtures.py consistency`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::{fixtures, reference};
use spire_core::consistency::{apply, ForwardModel};
use spire_core::degrade::{apply_prompt, ops, Rgb};
use spire_core::{ErrorKind, ImageView, Progress, RestorationPrompt, RestoreOptions, Restorer, Stage};

fn vec(t: &candle_core::Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
}

fn psnr(a: &[f32], b: &[f32]) -> f64 {
    let mse = a
        .iter()
        .zip(b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    10.0 * (1.0 / mse).log10()
}

/// A smooth test picture with edges, in [0.15, 0.85].
fn picture(w: usize, h: usize) -> Rgb {
    let mut d = vec![0f32; 3 * w * h];
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
                let edge = if (u - 0.5).abs() + (v - 0.4).abs() < 0.3 {
                    0.25
                } else {
                    -0.1
                };
                let wave = 0.12 * ((u * 9.0 + c as f32).sin() * (v * 7.0).cos());
                d[(c * h + y) * w + x] = (0.5 + edge + wave).clamp(0.15, 0.85);
            }
        }
    }
    Rgb::new(w, h, d).unwrap()
}

#[test]
fn map_solve_equals_a_dense_numpy_solve() {
    let r = reference("consistency");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("ref/consistency.json")).unwrap())
            .unwrap();
    for (i, case) in meta["cases"].as_array().unwrap().iter().enumerate() {
        let key = case
            .get("key")
            .and_then(|k| k.as_str())
            .map_or(format!("case{i}"), str::to_string);
        let prompt: RestorationPrompt = case["prompt"].as_str().unwrap().parse().unwrap();
        let (w, h) = (
            case["width"].as_u64().unwrap() as usize,
            case["height"].as_u64().unwrap() as usize,
        );
        let mut out = vec(&r[&format!("{key}.output")]);
        let input = vec(&r[&format!("{key}.input")]);
        apply(&mut out, &input, w, h, &prompt, case["tau"].as_f64().unwrap()).unwrap();
        let want = vec(&r[&format!("{key}.expected")]);
        let d = max_diff(&out, &want);
        eprintln!("{}: max abs diff {d:e}", case["prompt"]);
        assert!(d < 1e-5, "{}: max abs diff {d}", case["prompt"]);
        // And it did something: the fixture's answer is not the model output.
        assert!(max_diff(&want, &vec(&r[&format!("{key}.output")])) > 1e-2);
    }
}

#[test]
fn jpeg_tables_equal_libjpeg() {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("ref/consistency.json")).unwrap())
            .unwrap();
    type Table = fn(u8) -> spire_core::Result<[u16; 64]>;
    for (key, table_of) in [
        ("jpeg_luma_tables", ops::jpeg_luma_table as Table),
        ("jpeg_chroma_tables", ops::jpeg_chroma_table as Table),
    ] {
        for (q, table) in meta[key].as_object().unwrap() {
            let want: Vec<u16> = table
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u16)
                .collect();
            let got = table_of(q.parse().unwrap()).unwrap();
            assert_eq!(got.to_vec(), want, "{key}, quality {q}");
        }
    }
    assert_eq!(
        ops::jpeg_luma_table(0).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    // The chroma table at quality 20 and 50, natural order, as Pillow 13.0.0 (libjpeg) writes
    // it (`Image.open(buf).quantization[1]` after `save(buf, "JPEG", quality=q)`): its top-left
    // 4×4 corner, the rest at the table's maximum.
    let corner = |rows: [[u16; 4]; 4], rest: u16| {
        let mut t = [rest; 64];
        for (i, row) in rows.iter().enumerate() {
            t[i * 8..i * 8 + 4].copy_from_slice(row);
        }
        t
    };
    let q20 = corner(
        [
            [43, 45, 60, 118],
            [45, 53, 65, 165],
            [60, 65, 140, 248],
            [118, 165, 248, 248],
        ],
        248,
    );
    assert_eq!(ops::jpeg_chroma_table(20).unwrap(), q20);
    let q50 = corner(
        [
            [17, 18, 24, 47],
            [18, 21, 26, 66],
            [24, 26, 56, 99],
            [47, 66, 99, 99],
        ],
        99,
    );
    assert_eq!(ops::jpeg_chroma_table(50).unwrap(), q50);
    assert_eq!(
        ops::jpeg_chroma_table(101).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn forward_model_is_the_degradation() {
    // The operator the solve inverts is the degradation pipeline's own blur → shrink →
    // enlarge, on an odd size (noise and JPEG excluded: they are not linear).
    let (w, h) = (45, 31);
    let x = picture(w, h);
    for text in [
        "Deblur with sigma 2.0",
        "Upsample with scale 2.0",
        "Deblur with sigma 1.3; Upsample with scale 2.5",
        "Deblur with sigma 4.0; Upsample with scale 3.0",
    ] {
        let p: RestorationPrompt = text.parse().unwrap();
        let y = apply_prompt(&x, &p, 0).unwrap();
        let model = ForwardModel::new(&p, w, h).unwrap().unwrap();
        let n = w * h;
        let mut got = Vec::with_capacity(3 * n);
        for c in 0..3 {
            got.extend(model.forward(&x.data[c * n..(c + 1) * n]));
        }
        let d = max_diff(&got, &y.data);
        assert!(d < 1e-5, "{text}: forward model differs from apply_prompt by {d}");
    }
}

#[test]
fn consistency_recovers_what_the_degradation_kept() {
    // A deliberately wrong "model output" (the clean picture blurred much more) is pulled
    // back: closer to the truth and far closer to agreeing with the input.
    let (w, h) = (64, 48);
    let c = picture(w, h);
    let n = w * h;
    for text in [
        "Deblur with sigma 2.0",
        "Upsample with scale 2.0",
        "Deblur with sigma 1.5; Upsample with scale 2.0",
    ] {
        let p: RestorationPrompt = text.parse().unwrap();
        let y = apply_prompt(&c, &p, 0).unwrap();
        let m = ops::gaussian_blur(&c, 4.0);
        let mut x = m.data.clone();
        apply(&mut x, &y.data, w, h, &p, 0.1).unwrap();
        let model = ForwardModel::new(&p, w, h).unwrap().unwrap();
        let residual = |img: &[f32]| -> f64 {
            (0..3)
                .map(|ch| {
                    let a = model.forward(&img[ch * n..(ch + 1) * n]);
                    a.iter()
                        .zip(&y.data[ch * n..(ch + 1) * n])
                        .map(|(u, v)| ((u - v) as f64).powi(2))
                        .sum::<f64>()
                })
                .sum::<f64>()
                .sqrt()
        };
        let (before, after) = (psnr(&m.data, &c.data), psnr(&x, &c.data));
        eprintln!(
            "{text}: PSNR {before:.2} -> {after:.2} dB, residual {:.4} -> {:.4}",
            residual(&m.data),
            residual(&x)
        );
        assert!(after > before + 3.0, "{text}: {before:.2} -> {after:.2} dB");
        assert!(residual(&x) < 0.1 * residual(&m.data), "{text}");
    }
}

#[test]
fn jpeg_constraint_moves_luma_and_chroma_into_the_input_cells() {
    let (w, h) = (64, 48);
    let c = picture(w, h);
    let p: RestorationPrompt = "Dejpeg with quality 20".parse().unwrap();
    let y = apply_prompt(&c, &p, 0).unwrap();
    // A flat grey "model output": the constraint alone must restore the blocks' luma and
    // (half-resolution) chroma structure.
    let m = vec![0.5f32; 3 * w * h];
    let mut x = m.clone();
    apply(&mut x, &y.data, w, h, &p, 1.0).unwrap();
    let (before, after) = (psnr(&m, &c.data), psnr(&x, &c.data));
    eprintln!(
        "JPEG q20 from flat grey: PSNR {before:.2} -> {after:.2} dB (input {:.2})",
        psnr(&y.data, &c.data)
    );
    assert!(after > before + 8.0, "{before:.2} -> {after:.2} dB");
}

#[test]
fn jpeg_constraint_drops_chroma_detail_finer_than_the_codec_kept() {
    // 4:2:0 keeps Cb and Cr as 2×2 averages: a model output with a pixel checkerboard in its
    // chroma only (luma untouched) is detail the codec cannot have seen, and the constraint
    // must remove it, leaving the luma alone up to the luma step's own small pull.
    let (w, h) = (64, 48);
    let c = picture(w, h);
    let p: RestorationPrompt = "Dejpeg with quality 20".parse().unwrap();
    let y = apply_prompt(&c, &p, 0).unwrap();
    let n = w * h;
    let mut m = c.data.clone();
    let g = -(0.299 + 0.114) / 0.587; // keeps the luma: 0.299·1 + 0.587·g + 0.114·1 = 0
    for yy in 0..h {
        for x in 0..w {
            let s = if (x + yy) % 2 == 0 { 0.05 } else { -0.05 };
            let i = yy * w + x;
            m[i] += s;
            m[n + i] += s * g;
            m[2 * n + i] += s;
        }
    }
    let luma = |v: &[f32], i: usize| 0.299 * v[i] + 0.587 * v[n + i] + 0.114 * v[2 * n + i];
    let mut x = m.clone();
    apply(&mut x, &y.data, w, h, &p, 0.3).unwrap();
    // The same output without the checkerboard: same luma, so the luma step does the same.
    let mut xc = c.data.clone();
    apply(&mut xc, &y.data, w, h, &p, 0.3).unwrap();
    let (before, after, input) = (psnr(&m, &c.data), psnr(&x, &c.data), psnr(&y.data, &c.data));
    eprintln!("chroma checkerboard: PSNR {before:.2} -> {after:.2} dB (JPEG input {input:.2})");
    assert!(after > before + 3.0, "{before:.2} -> {after:.2} dB");
    assert!(
        after > input,
        "{after:.2} dB, not above the JPEG input's {input:.2}"
    );
    let dl = (0..n)
        .map(|i| (luma(&x, i) - luma(&xc, i)).abs())
        .fold(0f32, f32::max);
    assert!(dl < 1e-3, "the chroma step moved the luma by {dl}");
}

#[test]
fn blind_noise_only_and_zero_leave_the_output_alone() {
    let (w, h) = (24, 16);
    let m = picture(w, h).data;
    let y = ops::gaussian_blur(&picture(w, h), 2.0).data;
    for (text, tau) in [
        ("Remove all degradation", 0.1),
        ("Denoise with sigma 0.10", 0.1),
        ("Deblur with sigma 2.0", 0.0),
    ] {
        let mut x = m.clone();
        apply(&mut x, &y, w, h, &text.parse().unwrap(), tau).unwrap();
        assert_eq!(x, m, "{text} τ={tau}");
    }
}

#[test]
fn bad_arguments_are_named() {
    let (w, h) = (8, 8);
    let mut x = vec![0.5f32; 3 * w * h];
    let y = x.clone();
    let p: RestorationPrompt = "Deblur with sigma 1.0".parse().unwrap();
    for tau in [-0.1, f64::NAN, f64::INFINITY] {
        let e = apply(&mut x, &y, w, h, &p, tau).unwrap_err();
        assert!(e.to_string().contains("consistency"), "{e}");
    }
    let e = apply(&mut x[..10], &y, w, h, &p, 0.1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidImage);
    let r = Restorer::builtin().unwrap();
    let img = ImageView::rgb_f32(w, h, &y).unwrap();
    let e = r
        .restore(&img, &r.default_options().with_consistency(-1.0))
        .unwrap_err();
    assert!(e.to_string().contains("consistency"), "{e}");
}

/// Denoising steps a restore runs, from the progress events.
fn steps_run(r: &Restorer, img: &ImageView, opts: RestoreOptions) -> (usize, Vec<f32>) {
    let total = Arc::new(Mutex::new(0));
    let t = total.clone();
    let opts = opts.with_progress(Some(Arc::new(move |p: &Progress| {
        if p.stage == Stage::Denoising {
            *t.lock().unwrap() = p.total;
        }
        true
    })));
    let out = r.restore(img, &opts).unwrap();
    let n = *total.lock().unwrap();
    (n, out.as_f32().unwrap().to_vec())
}

#[test]
fn noise_matched_start_follows_the_prompt() {
    // With 2 DDIM steps from t = 49 (strength 0.05 of 40; set here, whatever the model
    // recommends), a prompt naming σ = 0.04 starts at the timestep of that noise (t ≈ 4: one
    // step, below the schedule's 24), σ = 0.10 at t ≈ 38 (two steps), and σ = 0.24 above the
    // strength's t = 49: the stated noise decides where the input is on the schedule.
    let r = Restorer::builtin().unwrap();
    let (w, h) = (64, 48);
    let clean = picture(w, h);
    let p: RestorationPrompt = "Denoise with sigma 0.10".parse().unwrap();
    let y = apply_prompt(&clean, &p, 3).unwrap();
    let interleaved: Vec<f32> = (0..w * h)
        .flat_map(|i| (0..3).map(move |c| (c, i)))
        .map(|(c, i)| y.data[c * w * h + i])
        .collect();
    let img = ImageView::rgb_f32(w, h, &interleaved).unwrap();
    let base = r
        .default_options()
        .with_consistency(0.0)
        .with_strength(0.05)
        .with_num_inference_steps(40);
    let with = |text: &str, on: bool| {
        base.clone()
            .with_restoration_text(text)
            .unwrap()
            .with_match_noise(on)
    };
    assert_eq!(steps_run(&r, &img, with("Denoise with sigma 0.04", true)).0, 1);
    let (n_on, out_on) = steps_run(&r, &img, with("Denoise with sigma 0.10", true));
    let (n_off, out_off) = steps_run(&r, &img, with("Denoise with sigma 0.10", false));
    assert_eq!((n_on, n_off), (2, 2));
    assert_ne!(out_on, out_off);
    let (n_cap, out_cap) = steps_run(&r, &img, with("Denoise with sigma 0.24", true));
    eprintln!("σ 0.24: {n_cap} steps");
    assert!(
        n_cap > 2,
        "σ 0.24 ran {n_cap} steps, as from the strength's t = 49"
    );
    // The start is deterministic (no noise is drawn): other seeds give the same image.
    let (_, again) = steps_run(&r, &img, with("Denoise with sigma 0.24", true).with_seed(99));
    assert_eq!(out_cap, again);
    // A shrink makes the noise non-white: the strength path is kept.
    let (_, a) = steps_run(
        &r,
        &img,
        with("Upsample with scale 1.0; Denoise with sigma 0.10", true),
    );
    let (_, b) = steps_run(
        &r,
        &img,
        with("Upsample with scale 1.0; Denoise with sigma 0.10", false),
    );
    assert_eq!(a, b);
}

#[test]
fn listed_ddim_equals_ddim_on_the_same_timesteps() {
    // The noise-matched start runs DDIM over an explicit list; on the list `Ddim::new` makes
    // (parity-tested against diffusers) it must step identically, and it rejects bad lists.
    use spire_core::scheduler::{Ddim, Scheduler};
    let cfg = spire_core::SchedulerConfig::from_json_str(
        r#"{"_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085,
            "beta_end": 0.012, "beta_schedule": "scaled_linear", "prediction_type": "sample",
            "rescale_betas_zero_snr": true, "timestep_spacing": "trailing", "clip_sample": false,
            "set_alpha_to_one": false}"#,
    )
    .unwrap();
    let mut a = Ddim::new(&cfg, 40).unwrap();
    let mut b = Ddim::with_timesteps(&cfg, a.timesteps().to_vec()).unwrap();
    let dev = candle_core::Device::Cpu;
    let x = candle_core::Tensor::arange(0f32, 24.0, &dev)
        .unwrap()
        .reshape((1, 2, 3, 4))
        .unwrap();
    let x = ((x / 24.0).unwrap() - 0.5).unwrap();
    let pred = (x.clone() * 0.9).unwrap();
    for i in 0..a.timesteps().len() {
        let (pa, pb) = (
            a.step(&pred, i, &x, None).unwrap(),
            b.step(&pred, i, &x, None).unwrap(),
        );
        assert_eq!(vec(&pa), vec(&pb), "step {i}");
    }
    for bad in [vec![], vec![10.0, 20.0], vec![1000.0], vec![5.5]] {
        let e = Ddim::with_timesteps(&cfg, bad).unwrap_err();
        assert!(e.to_string().contains("timesteps"), "{e}");
    }
}

#[test]
fn restoring_a_small_input_agrees_with_it_after_shrinking() {
    // The real use of an upsample clause: the input is the small image, the restorer enlarges
    // it. With consistency the output, shrunk the way the prompt says, gives the input back
    // far more closely than without.
    let r = Restorer::builtin().unwrap();
    let (w, h) = (48, 40);
    let small = picture(w, h);
    let n = w * h;
    let sd = &small.data;
    let interleaved: Vec<f32> = (0..n).flat_map(|p| (0..3).map(move |c| sd[c * n + p])).collect();
    let img = ImageView::rgb_f32(w, h, &interleaved).unwrap();
    let opts = |tau: f64| {
        r.default_options()
            .with_restoration_text("Upsample with scale 2.0")
            .unwrap()
            .with_consistency(tau)
    };
    let shrink_error = |tau: f64| -> f64 {
        let out = r.restore(&img, &opts(tau)).unwrap();
        assert_eq!((out.width, out.height), (2 * w, 2 * h));
        let planar = out.view().to_planar_rgb().unwrap();
        let big = Rgb::new(2 * w, 2 * h, planar).unwrap();
        let back = ops::resize_bicubic(&big, w, h);
        (back
            .data
            .iter()
            .zip(&small.data)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            / (3 * n) as f64)
            .sqrt()
    };
    let (off, on) = (shrink_error(0.0), shrink_error(0.08));
    eprintln!("RMS of shrink(output) − input: {off:.4} without consistency, {on:.4} with");
    assert!(on < 0.3 * off, "{off} -> {on}");
}

#[test]
fn odd_sizes_and_every_clause_run_without_panics() {
    // Tiny and odd sizes (the shrink rounds to 1 pixel, blocks smaller than 8×8, blurs wider
    // than the image) with every kind of clause: finite results in [0, 1], never a panic.
    for (w, h) in [(1, 1), (2, 1), (7, 3), (9, 17), (16, 8)] {
        let y: Vec<f32> = (0..3 * w * h).map(|i| (i % 13) as f32 / 13.0).collect();
        for text in [
            "Deblur with sigma 10.0",
            "Upsample with scale 8.0",
            "Deblur with sigma 3.0; Upsample with scale 3.5; Denoise with sigma 0.30; Dejpeg with quality 5",
            "Dejpeg with quality 1",
            "Dejpeg with quality 100",
        ] {
            let mut x: Vec<f32> = y.iter().map(|v| 1.0 - v).collect();
            apply(&mut x, &y, w, h, &text.parse().unwrap(), 0.5).unwrap();
            assert!(
                x.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)),
                "{w}×{h} {text}"
            );
        }
    }
}
