//! Tiled sampling: one tile equals the untiled run exactly; tiles leave no seam on a flat
//! image; the memory limit picks tiles and the plan is reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::{fixtures, tiny_spire};
use spire_core::{ColorFix, ImageView, MemoryLimit, RestoreOptions, Restorer};

fn spire() -> (tempfile::TempDir, Restorer) {
    let (tmp, opts) = tiny_spire();
    (tmp, Restorer::from_pretrained(fixtures().join("tiny-sd1"), &opts).unwrap())
}

#[test]
fn one_tile_equals_untiled_exactly() {
    let (_t, r) = spire();
    let px = common::test_rgb8(48, 40);
    let img = ImageView::rgb8(48, 40, &px).unwrap();
    let base = RestoreOptions { num_inference_steps: 3, memory_limit: MemoryLimit::Unlimited, ..Default::default() };
    let untiled = r.restore(&img, &base).unwrap();
    let one = r.restore(&img, &RestoreOptions { tile_size: Some(1000), ..base.clone() }).unwrap();
    assert_eq!(untiled, one);
}

#[test]
fn flat_image_has_no_seams() {
    let (_t, r) = spire();
    let (w, h) = (96, 64);
    let px: Vec<f32> = (0..w * h).flat_map(|_| [0.55f32, 0.4, 0.3]).collect();
    let img = ImageView::rgb_f32(w, h, &px).unwrap();
    let latents = candle_core::Tensor::zeros((1, 4, h / 4, w / 4), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    let base = RestoreOptions {
        num_inference_steps: 3,
        initial_latents: Some(latents),
        color_fix: ColorFix::None,
        memory_limit: MemoryLimit::Unlimited,
        ..Default::default()
    };
    let untiled = r.restore(&img, &base).unwrap();
    let tiled = r.restore(&img, &RestoreOptions { tile_size: Some(16), tile_overlap: 8, ..base.clone() }).unwrap();
    let (a, b) = (untiled.as_f32().unwrap(), tiled.as_f32().unwrap());
    // Seams: jumps between neighbouring columns/rows of the tiled result beyond those of the
    // untiled one.
    let mut worst = 0f32;
    for y in 1..h {
        for x in 1..w {
            for c in 0..3 {
                let i = (y * w + x) * 3 + c;
                let (l, u) = (i - 3, i - w * 3);
                let jt = (b[i] - b[l]).abs().max((b[i] - b[u]).abs());
                let ju = (a[i] - a[l]).abs().max((a[i] - a[u]).abs());
                worst = worst.max(jt - ju);
            }
        }
    }
    let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    eprintln!("flat image: worst extra jump {:.5} ({:.2}/255), max |tiled − untiled| {:.5}", worst, worst * 255.0, diff);
    assert!(worst < 1.0 / 255.0, "seam: extra jump {worst}");
}

#[test]
fn memory_limit_picks_tiles_and_reports_the_plan() {
    let (_t, r) = spire();
    let px = common::test_rgb8(128, 96);
    let img = ImageView::rgb8(128, 96, &px).unwrap();
    let notes = Arc::new(Mutex::new(Vec::new()));
    let n2 = notes.clone();
    let o = RestoreOptions {
        num_inference_steps: 2,
        memory_limit: MemoryLimit::Bytes(6 << 20),
        progress: Some(Arc::new(move |p: &spire_core::Progress| {
            if let Some(m) = &p.message {
                n2.lock().unwrap().push(m.clone());
            }
            true
        })),
        ..Default::default()
    };
    let out = r.restore(&img, &o).unwrap();
    assert_eq!((out.width, out.height), (128, 96));
    let notes = notes.lock().unwrap();
    assert!(notes.iter().any(|m| m.contains("tiles of")), "{notes:?}");
    let err = r.restore(&img, &RestoreOptions { memory_limit: MemoryLimit::Bytes(1000), ..Default::default() }).unwrap_err();
    assert_eq!(err.kind(), spire_core::ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("memory_limit"), "{err}");
}
