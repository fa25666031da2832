//! Tile borders, measured and pictured for docs/large-images.md: a 512×512 photo restored
//! untiled, with hard-cut tiles (no overlap: each tile predicted on its own, the naive way)
//! and with overlapping blended tiles (the default), all with the same seed.
//!
//! Prints, per run, the seam score — the mean jump between neighbouring pixel columns/rows
//! across tile borders divided by the mean jump elsewhere (1.0 = borders look like any other
//! place) — and the largest difference from the untiled result; writes
//! docs/img/tile-border.png (a border crossing, enlarged: hard-cut | blended | untiled).
//!
//!     cargo run --release --example tile_seams -- [--model DIR] [--photo PATH]

use spire_core::image::{ColorType, Image, ImageData};
use spire_core::{MemoryLimit, Restorer};

fn rgb(img: &Image) -> &[u8] {
    match &img.data {
        ImageData::U8(d) => d,
        _ => unreachable!("RGB8 in, RGB8 out"),
    }
}

/// Mean |Δ| across the borders at multiples of `period` px over the mean |Δ| elsewhere.
fn seam_score(img: &Image, period: usize, offset: usize) -> f64 {
    let (w, h, d) = (img.width, img.height, rgb(img));
    let px = |x: usize, y: usize, c: usize| d[(y * w + x) * 3 + c] as f64;
    let (mut border, mut nb, mut other, mut no) = (0.0, 0usize, 0.0, 0usize);
    for y in 0..h {
        for x in 1..w {
            let jump: f64 = (0..3).map(|c| (px(x, y, c) - px(x - 1, y, c)).abs()).sum();
            if x >= offset && (x - offset) % period == 0 {
                border += jump;
                nb += 1;
            } else {
                other += jump;
                no += 1;
            }
        }
    }
    for y in 1..h {
        for x in 0..w {
            let jump: f64 = (0..3).map(|c| (px(x, y, c) - px(x, y - 1, c)).abs()).sum();
            if y >= offset && (y - offset) % period == 0 {
                border += jump;
                nb += 1;
            } else {
                other += jump;
                no += 1;
            }
        }
    }
    (border / nb as f64) / (other / no as f64)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let restorer = match arg("--model") {
        Some(m) => Restorer::from_pretrained(m, &Default::default())?,
        None => Restorer::builtin()?,
    };
    let photos = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/photos");
    let photo = arg("--photo").map_or_else(|| photos.join("astronaut.png"), Into::into);
    let img = spire_core::io::load_image(&photo)?;
    let f = restorer.vae_scale_factor();
    let tile = 64 / f; // 64-pixel tiles
    let base = restorer
        .default_options()
        .with_memory_limit(MemoryLimit::Unlimited)
        .with_restoration_prompt(
            "Denoise with sigma 0.05"
                .parse::<spire_core::RestorationPrompt>()?
                .into(),
        );
    let untiled = restorer.restore(&img.view(), &base)?;
    let hard = restorer.restore(
        &img.view(),
        &base.clone().with_tile_size(Some(tile)).with_tile_overlap(0),
    )?;
    let blended = restorer.restore(
        &img.view(),
        &base
            .clone()
            .with_tile_size(Some(tile))
            .with_tile_overlap(tile / 2),
    )?;
    let diff = |a: &Image| {
        rgb(a)
            .iter()
            .zip(rgb(&untiled))
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap_or(0)
    };
    let px = tile * f;
    // Hard cuts sit at multiples of the tile; blended tiles (stride = tile − overlap) have
    // their edges at multiples of the stride too, offset by the overlap.
    let stride = (tile - tile / 2) * f;
    for (name, im, period, offset) in [
        ("untiled (borders of the hard-cut grid)", &untiled, px, px),
        ("hard-cut tiles, no overlap", &hard, px, px),
        ("blended tiles, overlap ½ tile", &blended, stride, px),
    ] {
        println!(
            "{{\"run\":\"{name}\",\"seam_score\":{:.3},\"max_diff_from_untiled\":{}}}",
            seam_score(im, period, offset),
            diff(im)
        );
    }
    // A crossing of tile borders, 96×96 px around (2·64, 2·64), enlarged 3× (nearest).
    let (cx, cy, r, z) = (2 * px, 2 * px, 48usize, 3usize);
    let panels = [&hard, &blended, &untiled];
    let (pw, gap) = (2 * r * z, 6);
    let (w, h) = (panels.len() * pw + (panels.len() - 1) * gap, 2 * r * z);
    let mut out = vec![255u8; w * h * 3];
    for (k, p) in panels.iter().enumerate() {
        let d = rgb(p);
        for y in 0..h {
            for x in 0..pw {
                let (sx, sy) = (cx - r + x / z, cy - r + y / z);
                let src = (sy * p.width + sx) * 3;
                let dst = (y * w + k * (pw + gap) + x) * 3;
                out[dst..dst + 3].copy_from_slice(&d[src..src + 3]);
            }
        }
    }
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/img");
    std::fs::create_dir_all(&dir)?;
    spire_core::io::save_image(
        dir.join("tile-border.png"),
        &Image {
            width: w,
            height: h,
            color: ColorType::Rgb,
            data: ImageData::U8(out),
        },
    )?;
    println!("wrote docs/img/tile-border.png (hard-cut | blended | untiled)");
    Ok(())
}
