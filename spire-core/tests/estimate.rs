//! The restoration prompt read from the photo (`spire_core::estimate`): exact JPEG quality from
//! files PIL wrote, noise and blur σ within stated tolerances on synthesized degradations, and
//! `auto` on a clean photo equal to the blind prompt.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use spire_core::degrade::ops;
use spire_core::degrade::Rgb;
use spire_core::estimate::{self, JpegSource, SourceInfo};
use spire_core::{RestorationInput, RestorationPrompt, Restorer};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn photo() -> Rgb {
    let img = spire_core::io::load_image(fixtures().join("photos/chelsea_crop256.png")).unwrap();
    Rgb::from_view(&img.view()).unwrap()
}

fn estimate_file(name: &str) -> estimate::PromptEstimate {
    let path = fixtures().join("jpeg").join(name);
    let bytes = std::fs::read(&path).unwrap();
    let img = spire_core::io::decode_image(&bytes, name).unwrap();
    let src = SourceInfo::from_bytes(&bytes, name).unwrap();
    RestorationPrompt::estimate(&img.view(), Some(&src)).unwrap()
}

#[test]
fn jpeg_quality_is_exact_from_the_tables_of_files_pil_wrote() {
    for q in [5u8, 10, 25, 50, 75, 90, 95, 100] {
        let e = estimate_file(&format!("q{q}.jpg"));
        let (j, src) = e.jpeg.expect("a JPEG file");
        assert_eq!(
            (j.value, j.confidence, src),
            (q as f64, 1.0, JpegSource::FileExact),
            "q{q}"
        );
        // Kept in the prompt up to quality 90; above it there is nothing to undo.
        let expect = (q <= estimate::MAX_JPEG_QUALITY).then_some(q);
        assert_eq!(e.prompt.dejpeg_quality(), expect, "q{q}");
    }
    let e = estimate_file("q60-444.jpg");
    assert_eq!(e.jpeg.unwrap().0.value, 60.0);
    // Tables that are not IJG's: the nearest quality, not confident enough for the prompt.
    let e = estimate_file("custom-tables.jpg");
    let (j, src) = e.jpeg.unwrap();
    assert_eq!(src, JpegSource::FileNearest);
    assert!(j.confidence < estimate::MIN_CONFIDENCE, "{j:?}");
    assert_eq!(e.prompt.dejpeg_quality(), None);
    // A PNG of the same crop: no sign of JPEG, a clean photo.
    let e = estimate_file("clean.png");
    assert!(e.jpeg.is_none());
    assert!(e.prompt.is_blind(), "{}", e.prompt);
}

#[test]
fn jpeg_quality_from_pixels_matches_the_encoders_quality() {
    let x = photo();
    for q in [15u8, 30, 50, 75] {
        let y = ops::jpeg(&x, q).unwrap();
        let e = estimate::jpeg_quality_from_pixels(&y).expect("JPEG seen");
        // Measured on this photo: exact at every quality tried.
        assert!((e.value - q as f64).abs() <= 2.0, "q{q}: {e:?}");
        assert!(e.confidence >= estimate::MIN_CONFIDENCE, "q{q}: {e:?}");
    }
    assert!(estimate::jpeg_quality_from_pixels(&x).is_none_or(|e| e.confidence < 0.5));
}

#[test]
fn noise_sigma_is_within_a_hundredth_on_synthetic_noise() {
    let x = photo();
    let clean = estimate::noise_sigma(&x).value;
    assert!(clean < estimate::MIN_NOISE_SIGMA, "clean photo reads {clean}");
    for (s, seed) in [(0.03, 1u64), (0.05, 2), (0.10, 3), (0.15, 4)] {
        let y = ops::add_gaussian_noise(&x, s, false, seed).clip();
        let e = estimate::noise_sigma(&y);
        // Clipping to [0, 1] lowers large σ a little.
        assert!((e.value - s).abs() <= 0.01, "σ {s}: {e:?}");
        assert!(e.confidence >= estimate::MIN_CONFIDENCE);
    }
}

/// A 256×256 picture of smooth shading and a few edges (flat regions like a sky or a wall).
fn smooth_picture() -> Rgb {
    let (w, h) = (256usize, 256usize);
    let mut d = vec![0f32; 3 * w * h];
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
                let mut v = 0.3 + 0.25 * fx + 0.15 * (3.0 * fy + c as f32).sin();
                if x > 150 && y > 60 && y < 200 {
                    v += 0.2;
                }
                d[c * w * h + y * w + x] = v;
            }
        }
    }
    Rgb::new(w, h, d).unwrap()
}

#[test]
fn noise_under_jpeg_is_read_from_the_flattest_blocks() {
    let x = smooth_picture();
    for q in [30u8, 50, 75] {
        let table = estimate::ijg_table(false, q);
        let clean = ops::jpeg(&x, q).unwrap().clip();
        let e = estimate::noise_sigma_under_jpeg(&clean, &table).unwrap();
        assert!(
            e.value < estimate::MIN_NOISE_SIGMA_UNDER_JPEG,
            "q{q} clean: {e:?}"
        );
        for (s, seed) in [(0.05, 11u64), (0.10, 12)] {
            let y = ops::jpeg(&ops::add_gaussian_noise(&x, s, false, seed).clip(), q)
                .unwrap()
                .clip();
            // The finest band is quantised away: the MAD reads too little (measured 0.003–0.07) …
            let mad = estimate::noise_sigma(&y).value;
            // … and the flattest blocks' DCT reads σ within a hundredth (measured: 0.0005–0.008;
            // the clean picture 0.0006).
            let e = estimate::noise_sigma_under_jpeg(&y, &table).unwrap();
            assert!((e.value - s).abs() <= 0.01, "q{q} σ {s}: {e:?} (MAD {mad})");
            assert!(e.confidence >= estimate::MIN_CONFIDENCE);
            // The prompt takes it, with the quality read from the pixels.
            let p = RestorationPrompt::estimate(&y.to_rgb8().view(), None)
                .unwrap()
                .prompt;
            assert!(
                (p.denoise_sigma_f64().unwrap() - s).abs() <= 0.015,
                "q{q} σ {s}: {p}"
            );
            assert_eq!(p.dejpeg_quality(), Some(q), "{p}");
        }
    }
    // Too small to read (fewer than 320 blocks), and not read below quality 25.
    let small = ops::resize_bicubic(&x, 128, 128);
    assert!(estimate::noise_sigma_under_jpeg(&small, &estimate::ijg_table(false, 50)).is_none());
    let y = ops::jpeg(&ops::add_gaussian_noise(&x, 0.1, false, 13).clip(), 15)
        .unwrap()
        .clip();
    let p = RestorationPrompt::estimate(&y.to_rgb8().view(), None)
        .unwrap()
        .prompt;
    assert!(
        p.denoise_sigma().is_none() || estimate::noise_sigma(&y).value >= estimate::MIN_NOISE_SIGMA,
        "{p}"
    );
}

#[test]
fn blur_sigma_is_within_a_third_of_a_pixel_on_synthetic_blur() {
    let x = photo();
    for s in [1.0, 2.0, 3.0] {
        let y = ops::gaussian_blur(&x, s);
        let e = estimate::blur_sigma(&y, 0.0);
        assert!((e.value - s).abs() <= 0.33, "σ {s}: {e:?}");
        assert!(e.confidence >= estimate::MIN_CONFIDENCE, "σ {s}: {e:?}");
    }
    // An ideal step edge reads its σ within 0.15 (before the calibration table).
    let (w, h) = (96usize, 96usize);
    let mut d = vec![0.2f32; 3 * w * h];
    for c in 0..3 {
        for y in 0..h {
            for xx in 48..w {
                d[c * w * h + y * w + xx] = 0.8;
            }
        }
    }
    let step = Rgb::new(w, h, d).unwrap();
    let (m, _, _) = estimate::edge_sigma(&ops::gaussian_blur(&step, 2.5), 0.0).unwrap();
    assert!((m - 2.5).abs() < 0.15, "{m}");
}

#[test]
fn a_degraded_photo_gets_its_prompt_and_a_clean_one_the_blind_prompt() {
    let x = photo();
    let view = Rgb::to_rgb8;
    let clean = view(&x);
    assert!(RestorationPrompt::estimate(&clean.view(), None)
        .unwrap()
        .prompt
        .is_blind());
    let y = view(&ops::add_gaussian_noise(&ops::gaussian_blur(&x, 2.0), 0.05, false, 9).clip());
    let p = RestorationPrompt::estimate(&y.view(), None).unwrap().prompt;
    assert!((p.denoise_sigma_f64().unwrap() - 0.05).abs() <= 0.01, "{p}");
    assert!((p.deblur_sigma_f64().unwrap() - 2.0).abs() <= 0.6, "{p}");
    // The scale comes from the requested size; the blur σ is then in output pixels.
    let small = view(&ops::resize_bicubic(&ops::gaussian_blur(&x, 2.0), 128, 128));
    let e = RestorationPrompt::estimate_for_size(&small.view(), None, Some((256, 256))).unwrap();
    assert_eq!(e.prompt.upsample_scale_f64(), Some(2.0));
    let err = RestorationPrompt::estimate_for_size(&small.view(), None, Some((64, 64))).unwrap_err();
    assert!(err.to_string().contains("output size"), "{err}");

    // `auto` parses, keeps given clauses, and on a clean photo restores exactly as blind.
    let r = Restorer::builtin().unwrap();
    let auto = RestorationInput::parse("auto").unwrap();
    assert_eq!(auto, RestorationInput::Auto(RestorationPrompt::blind()));
    let given = RestorationInput::parse("Auto; Upsample with scale 2").unwrap();
    let base = r.default_options().with_restoration_prompt(given);
    let p = r.resolve_prompt(&y.view(), &base, None).unwrap();
    assert_eq!(p.upsample_scale_f64(), Some(2.0));
    assert!(p.denoise_sigma().is_some(), "{p}");
    assert!(RestorationInput::parse("autos").is_err());
    let opts = |input: RestorationInput| {
        r.default_options()
            .with_restoration_prompt(input)
            .with_num_inference_steps(4)
            .with_strength(0.5)
    };
    let a = r.restore(&clean.view(), &opts(auto)).unwrap();
    let b = r
        .restore(&clean.view(), &opts(RestorationPrompt::blind().into()))
        .unwrap();
    assert_eq!(a.data, b.data);
    // On the degraded photo `auto` restores with the estimated prompt, in a batch too.
    let est = RestorationPrompt::estimate(&y.view(), None).unwrap().prompt;
    let a = r
        .restore_batch(
            &[clean.view(), y.view()],
            &opts(RestorationInput::parse("auto").unwrap()),
        )
        .unwrap();
    let mut o = opts(est.into());
    o.seed += 1;
    assert_eq!(a[1].data, r.restore(&y.view(), &o).unwrap().data);
}

#[test]
fn the_cli_estimates_and_restores_with_auto() {
    let bin = env!("CARGO_BIN_EXE_spire");
    let q50 = fixtures().join("jpeg/q50.jpg");
    let out = std::process::Command::new(bin)
        .arg("estimate")
        .arg(&q50)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Dejpeg with quality 50"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("exact, from the file's tables"));
    let dir = tempfile::tempdir().unwrap();
    let o = dir.path().join("out.png");
    let out = std::process::Command::new(bin)
        .args(["restore"])
        .arg(&q50)
        .arg(&o)
        .args(["--prompt", "auto", "--steps", "4", "--strength", "0.5"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("estimated restoration prompt: Dejpeg with quality 50")
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("with \"Dejpeg with quality 50\""));
    let bad = std::process::Command::new(bin)
        .args(["estimate"])
        .arg(&q50)
        .args(["--output-size", "big"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--output-size"));
}
