//! Tiled sampling: one tile equals the untiled run exactly; tiles leave no seam on a flat
//! image; the memory limit picks tiles and the plan is reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::{fixtures, tiny_spire};
use spire_core::{ColorFix, ImageView, MemoryLimit, RestoreOptions, Restorer};

fn spire() -> (tempfile::TempDir, Restorer) {
    let (tmp, opts) = tiny_spire();
    (
        tmp,
        Restorer::from_pretrained(fixtures().join("tiny-sd1"), &opts).unwrap(),
    )
}

#[test]
fn one_tile_equals_untiled_exactly() {
    let (_t, r) = spire();
    let px = common::test_rgb8(48, 40);
    let img = ImageView::rgb8(48, 40, &px).unwrap();
    let base = RestoreOptions::default()
        .with_num_inference_steps(3)
        .with_memory_limit(MemoryLimit::Unlimited);
    let untiled = r.restore(&img, &base).unwrap();
    let one = r.restore(&img, &base.clone().with_tile_size(Some(1000))).unwrap();
    assert_eq!(untiled, one);
}

#[test]
fn flat_image_has_no_seams() {
    // The built-in model maps a flat colour to (nearly) flat colour, so any structure at the
    // tile borders would be a seam. Tiles of 16 latent pixels (64 px) overlapping by 8, so tile
    // edges fall every 32 px.
    let r = Restorer::builtin().expect("the built-in model (spire-core/assets/spire-tiny.safetensors)");
    let (w, h) = (256, 192);
    let px: Vec<f32> = (0..w * h).flat_map(|_| [0.55f32, 0.4, 0.3]).collect();
    let img = ImageView::rgb_f32(w, h, &px).unwrap();
    // Zero initial noise: the run starts from the flat input itself (scaled to the start t), so
    // what the model returns is not random texture, and any structure is the tiling's.
    let f = r.vae_scale_factor();
    let zeros = candle_core::Tensor::zeros(
        (1, r.latent_channels(), h / f, w / f),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let base = r
        .default_options()
        .with_color_fix(ColorFix::None)
        .with_memory_limit(MemoryLimit::Unlimited)
        .with_initial_latents(Some(zeros));
    let untiled = r.restore(&img, &base).unwrap();
    let tiled = r
        .restore(&img, &base.clone().with_tile_size(Some(16)).with_tile_overlap(8))
        .unwrap();
    let (a, b) = (untiled.as_f32().unwrap(), tiled.as_f32().unwrap());
    // Largest difference between the two pixels on either side of a tile border (every 32 px:
    // tiles of 64 px with a stride of 32), along the borders' length except within 16 px
    // (4 latent pixels) of the image's edge: the network pads its convolutions there (not at
    // tile edges, which see their neighbours' latents), and the untiled result itself varies
    // by up to 8/255 at the edge.
    let across = |v: &[f32]| {
        let mut worst = 0f32;
        let px = |x: usize, y: usize, c: usize| v[(y * w + x) * 3 + c];
        for b in (32..w).step_by(32) {
            for y in 16..h - 16 {
                for c in 0..3 {
                    worst = worst.max((px(b, y, c) - px(b - 1, y, c)).abs());
                }
            }
        }
        for b in (32..h).step_by(32) {
            for x in 16..w - 16 {
                for c in 0..3 {
                    worst = worst.max((px(x, b, c) - px(x, b - 1, c)).abs());
                }
            }
        }
        worst
    };
    // Largest neighbour difference anywhere.
    let anywhere = |v: &[f32]| {
        let mut worst = 0f32;
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    let i = (y * w + x) * 3 + c;
                    if x > 0 {
                        worst = worst.max((v[i] - v[i - 3]).abs());
                    }
                    if y > 0 {
                        worst = worst.max((v[i] - v[i - w * 3]).abs());
                    }
                }
            }
        }
        worst
    };
    let (jt, ju) = (across(b), across(a));
    let (et, eu) = (anywhere(b), anywhere(a));
    eprintln!(
        "flat image: largest difference across tile borders: tiled {:.2}/255 (untiled, same \
         places: {:.2}/255); anywhere: tiled {:.2}/255, untiled {:.2}/255",
        jt * 255.0,
        ju * 255.0,
        et * 255.0,
        eu * 255.0
    );
    // Across a border the tiled result may differ as much as the untiled one does at the same
    // places (the network's own texture on a flat input: 0.65–1.33/255 with the fifth to seventh
    // weights), plus half a level; a seam (the fourth weights: 4–5/255) fails.
    assert!(
        jt <= ju.max(1.0 / 255.0) + 0.5 / 255.0,
        "seam: pixels across a tile border differ by {:.2}/255 (untiled, same places: {:.2}/255)",
        jt * 255.0,
        ju * 255.0
    );
    // At the image's edge, tiling must add nothing to the network's own edge effect.
    assert!(
        et <= eu + 1.0 / 255.0,
        "tiled edge jumps {:.2}/255 above the untiled {:.2}/255",
        et * 255.0,
        eu * 255.0
    );
}

#[test]
fn memory_limit_picks_tiles_and_reports_the_plan() {
    let (_t, r) = spire();
    let px = common::test_rgb8(256, 192);
    let img = ImageView::rgb8(256, 192, &px).unwrap();
    let notes = Arc::new(Mutex::new(Vec::new()));
    let n2 = notes.clone();
    let o = RestoreOptions::default()
        .with_num_inference_steps(2)
        .with_memory_limit(MemoryLimit::Bytes(16 << 20))
        .with_progress(Some(Arc::new(move |p: &spire_core::Progress| {
            if let Some(m) = &p.message {
                n2.lock().unwrap().push(m.clone());
            }
            true
        })));
    let out = r.restore(&img, &o).unwrap();
    assert_eq!((out.width, out.height), (256, 192));
    let notes = notes.lock().unwrap();
    eprintln!("{notes:?}");
    assert!(
        notes.iter().any(|m| m.contains("latent 64×48 in 4 tiles")),
        "{notes:?}"
    );
    assert!(notes.iter().any(|m| m.contains("decoder tiles of")), "{notes:?}");
    let err = r
        .restore(
            &img,
            &RestoreOptions::default().with_memory_limit(MemoryLimit::Bytes(1000)),
        )
        .unwrap_err();
    assert_eq!(err.kind(), spire_core::ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("memory_limit"), "{err}");
}

fn pattern(shape: (usize, usize, usize, usize), seed: f32) -> candle_core::Tensor {
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let v: Vec<f32> = (0..n)
        .map(|i| (i as f32 * 0.37 + seed).sin() * 0.8 + (i as f32 * 0.011).cos() * 0.3)
        .collect();
    candle_core::Tensor::from_vec(v, shape, &candle_core::Device::Cpu).unwrap()
}

fn tiny_vae() -> spire_core::model::AutoencoderKL {
    spire_core::model::AutoencoderKL::from_dir(
        &fixtures().join("tiny-sd1/vae"),
        &spire_core::LoadOptions::default(),
    )
    .unwrap()
}

#[test]
fn tiled_vae_decode_equals_untiled() {
    use spire_core::model::{VaePass, VaeTiling};
    let vae = tiny_vae();
    // Odd latent sizes; 2 images so statistics stay per image.
    let z = pattern((2, 4, 21, 14), 0.3);
    let whole = vae.decode(&z).unwrap();
    assert_eq!(vae.tile_halo(VaePass::Decode), 8);
    for spill in [false, true] {
        let tiled = vae.decode_tiled(&z, VaeTiling { tile: 8, spill }).unwrap();
        let d = common::max_abs_diff(&whole, &tiled);
        eprintln!("decode, 3×2 tiles of 8 (spill {spill}): max |tiled − untiled| = {d:.2e}");
        assert!(d < 1e-3, "{d}");
    }
}

#[test]
fn tiled_vae_encode_equals_untiled() {
    use spire_core::model::{VaePass, VaeTiling};
    let vae = tiny_vae();
    let x = pattern((1, 3, 72, 100), 1.1);
    let whole = vae.encode(&x).unwrap();
    assert_eq!(vae.tile_halo(VaePass::Encode), 24);
    for spill in [false, true] {
        let tiled = vae.encode_tiled(&x, VaeTiling { tile: 32, spill }).unwrap();
        let d = common::max_abs_diff(&whole.mean, &tiled.mean)
            .max(common::max_abs_diff(&whole.logvar, &tiled.logvar));
        eprintln!("encode, 4×3 tiles of 32 (spill {spill}): max |tiled − untiled| = {d:.2e}");
        assert!(d < 1e-3, "{d}");
    }
}

#[test]
fn independent_tiles_would_not_be_equal() {
    // The check above is meaningful: decoding tiles independently (per-tile statistics, no
    // halo) differs clearly from the whole.
    let vae = tiny_vae();
    let z = pattern((1, 4, 16, 16), 0.3);
    let whole = vae.decode(&z).unwrap();
    let tl = vae
        .decode(&z.narrow(2, 0, 8).unwrap().narrow(3, 0, 8).unwrap())
        .unwrap();
    let part = whole.narrow(2, 0, 32).unwrap().narrow(3, 0, 32).unwrap();
    let d = common::max_abs_diff(&part, &tl);
    eprintln!("independent tile: max |tile − whole| = {d:.3}");
    assert!(d > 1e-2, "{d}");
}

#[test]
fn tiled_autoencoder_in_the_pipeline_equals_whole() {
    // tiny-sd1's adaptor takes a latent hint, so the run encodes and decodes.
    let (_t, r) = spire();
    let px = common::test_rgb8(72, 56);
    let img = ImageView::rgb8(72, 56, &px).unwrap();
    let base = RestoreOptions::default()
        .with_num_inference_steps(2)
        .with_strength(0.6)
        .with_memory_limit(MemoryLimit::Unlimited)
        .with_color_fix(ColorFix::None);
    let whole = r.restore(&img, &base).unwrap();
    let tiled = r
        .restore(&img, &base.clone().with_vae_tile_size(Some(24)))
        .unwrap();
    let (a, b) = (whole.as_u8().unwrap(), tiled.as_u8().unwrap());
    let worst = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
    eprintln!("RGB8 output, autoencoder in tiles of 24 px vs whole: max difference {worst}/255");
    assert!(worst <= 1, "{worst}");
}
