//! The evidence of `docs/builtin-model.md`: the built-in model on the held-out photos.
//!
//! 1. A table: for each degradation row, each held-out photo's 256×256 square is degraded with
//!    exactly that prompt's degradation (`degrade::apply_prompt`, fixed seeds), then restored
//!    blind and with the true prompt; PSNR/SSIM of degraded, blind and prompted outputs.
//!    Degraded images are written for the classical baselines (`scripts/builtin_report.py`).
//! 2. The prompt-space walk: one blurry and noisy photo restored with "Denoise with sigma s"
//!    and "Deblur with sigma s" for a range of s, with the residual noise (Donoho's MAD of the
//!    finest diagonal Haar band), the sharpness (mean gradient magnitude) and the residual blur
//!    (the σ of the Gaussian blur of the clean photo closest to the result) and the gradient
//!    gain (the slope of its gradients on the clean photo's) of each result.
//!
//! One JSON line per result on stdout; images under `--out` (default target/builtin-report).
//!
//!     cargo run --release --example builtin_report -- [--model DIR] [--out DIR] [--photos a.png,b.png]
//!         [--strength S] [--steps N] [--consistency TAU] [--match-noise on|off] [--color-fix KIND]
//!         [--walk-photo NAME]   (the walk's photo, default coffee.png; it must be among --photos)

use std::path::PathBuf;

use spire_core::degrade::{apply_prompt, Rgb};
use spire_core::eval::load_images;
use spire_core::image::{Image, ImageData};
use spire_core::{metrics, RestorationPrompt, Restorer};

const HELD_OUT: [&str; 4] = [
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "motorcycle_left.png",
];

const ROWS: [(&str, &str); 5] = [
    ("denoise σ 0.10", "Denoise with sigma 0.10"),
    ("deblur σ 2.0", "Deblur with sigma 2.0"),
    ("upsample ×2", "Upsample with scale 2.0"),
    ("JPEG q 20", "Dejpeg with quality 20"),
    (
        "blur 1.5 + ×2 + noise 0.05",
        "Deblur with sigma 1.5; Upsample with scale 2.0; Denoise with sigma 0.05",
    ),
];

fn gray(img: &Image) -> (usize, usize, Vec<f64>) {
    let ImageData::U8(d) = &img.data else {
        unreachable!("RGB8 outputs")
    };
    let g = d
        .chunks(3)
        .map(|p| (0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64) / 255.0)
        .collect();
    (img.width, img.height, g)
}

/// Donoho's noise estimate of the luma (the one measurement consistency uses).
fn noise_sigma(img: &Image) -> f64 {
    let (w, h, g) = gray(img);
    spire_core::consistency::estimate_noise(&g, w, h)
}

/// Mean gradient magnitude (central differences) of the luma.
fn sharpness(img: &Image) -> f64 {
    let (w, h, g) = gray(img);
    let mut s = 0.0;
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let gx = (g[y * w + x + 1] - g[y * w + x - 1]) / 2.0;
            let gy = (g[(y + 1) * w + x] - g[(y - 1) * w + x]) / 2.0;
            s += (gx * gx + gy * gy).sqrt();
        }
    }
    s / ((w - 2) * (h - 2)) as f64
}

/// Gradient gain: the least-squares slope of a result's luma gradients (forward differences,
/// 12-pixel margin) on the clean photo's — 1 is as sharp as the clean photo, below 1 blurrier,
/// above 1 over-sharpened. Noise independent of the clean photo adds nothing to it in
/// expectation, so unlike the mean gradient it does not count noise as sharpness.
fn gradient_gain(img: &Image, clean: &Image) -> f64 {
    let ((w, h, g), (_, _, c)) = (gray(img), gray(clean));
    let m = 12;
    let (mut num, mut den) = (0.0, 0.0);
    for y in m..h - m {
        for x in m..w - m {
            let i = y * w + x;
            let (gx, gy) = (g[i + 1] - g[i], g[i + w] - g[i]);
            let (cx, cy) = (c[i + 1] - c[i], c[i + w] - c[i]);
            num += gx * cx + gy * cy;
            den += cx * cx + cy * cy;
        }
    }
    num / den
}

/// Residual blur: the σ (0–5, to 0.001) of the Gaussian blur of the clean photo that is
/// closest to a result in mean squared error over the interior (12-pixel margin). Unlike the
/// mean gradient, noise left in the result does not read as sharpness: it is independent of
/// the clean photo and adds the same amount to every σ's error.
struct BlurFit {
    clean: Rgb,
    /// The clean photo blurred at σ = 0, 0.1, …, 5 (computed once for every result).
    coarse: Vec<Rgb>,
}

impl BlurFit {
    fn new(clean: &Rgb) -> Self {
        let coarse = (0..=50).map(|k| Self::blur(clean, k as f64 / 10.0)).collect();
        Self {
            clean: clean.clone(),
            coarse,
        }
    }

    fn blur(clean: &Rgb, s: f64) -> Rgb {
        if s <= 0.0 {
            clean.clone()
        } else {
            spire_core::degrade::ops::gaussian_blur(clean, s)
        }
    }

    /// The 0.1 grid, then 0.01 and 0.001 around the best.
    fn fit(&self, img: &Image) -> Result<f64, Box<dyn std::error::Error>> {
        let o = img.view().to_planar_rgb()?;
        let (w, h, m) = (self.clean.width, self.clean.height, 12);
        let err = |b: &Rgb| -> f64 {
            let mut e = 0.0;
            for c in 0..3 {
                for y in m..h - m {
                    for x in m..w - m {
                        let i = c * w * h + y * w + x;
                        e += (b.data[i] as f64 - o[i] as f64).powi(2);
                    }
                }
            }
            e
        };
        let mut best = (0.0, f64::INFINITY);
        for (k, b) in self.coarse.iter().enumerate() {
            let e = err(b);
            if e < best.1 {
                best = (k as f64 / 10.0, e);
            }
        }
        // Then 0.01 and 0.001 around the best so far.
        for step in [0.01, 0.001] {
            let centre = best.0;
            for k in (-9..=9).filter(|&k| k != 0) {
                let s = centre + k as f64 * step;
                if s > 0.0 {
                    let e = err(&Self::blur(&self.clean, s));
                    if e < best.1 {
                        best = (s, e);
                    }
                }
            }
        }
        Ok(best.0)
    }
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
    let out = PathBuf::from(arg("--out").unwrap_or_else(|| "target/builtin-report".into()));
    let photos = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/photos");
    // `--photos a.png,b.png`: other photos (e.g. training photos, to choose inference options
    // without looking at the held-out ones).
    let only: Vec<String> = match arg("--photos") {
        Some(list) => list.split(',').map(str::to_string).collect(),
        None => HELD_OUT.iter().map(|s| s.to_string()).collect(),
    };
    let images = load_images(&photos, Some(&photos.join("captions.tsv")), &only, 256)?;
    std::fs::create_dir_all(out.join("clean"))?;
    for img in &images {
        spire_core::io::save_image(out.join("clean").join(&img.name), &img.image)?;
    }
    let mut base = restorer.default_options().with_upsample_input(false);
    // Overrides of the model's recommended options, to choose them on training photos.
    if let Some(v) = arg("--consistency") {
        base.consistency = v.parse()?;
    }
    if let Some(v) = arg("--strength") {
        base.strength = v.parse()?;
    }
    if let Some(v) = arg("--steps") {
        base.num_inference_steps = v.parse()?;
    }
    if let Some(v) = arg("--match-noise") {
        base.match_noise = v == "on";
    }
    if let Some(v) = arg("--color-fix") {
        base.color_fix = spire_core::ColorFix::parse(&v).ok_or("--color-fix: none, wavelet or adain")?;
    }
    for (r, (label, prompt)) in ROWS.iter().enumerate() {
        let p: RestorationPrompt = prompt.parse()?;
        let dir = out.join(format!("row{r}"));
        std::fs::create_dir_all(&dir)?;
        for (i, img) in images.iter().enumerate() {
            let p0 = img.image.view().to_planar_rgb()?;
            let x = Rgb::new(img.image.width, img.image.height, p0)?;
            let y = apply_prompt(&x, &p, 1000 + (r * 10 + i) as u64)?.to_rgb8();
            spire_core::io::save_image(dir.join(format!("degraded_{}", img.name)), &y)?;
            let t = std::time::Instant::now();
            let blind = restorer.restore(&y.view(), &base)?;
            let prompted = restorer.restore(&y.view(), &base.clone().with_restoration_prompt(p.into()))?;
            let secs = t.elapsed().as_secs_f64() / 2.0;
            spire_core::io::save_image(dir.join(format!("blind_{}", img.name)), &blind)?;
            spire_core::io::save_image(dir.join(format!("prompt_{}", img.name)), &prompted)?;
            let c = img.image.view();
            let score = |o: &Image| -> spire_core::Result<(f64, f64)> {
                Ok((metrics::psnr(&o.view(), &c)?, metrics::ssim(&o.view(), &c)?))
            };
            let (d, b, q) = (score(&y)?, score(&blind)?, score(&prompted)?);
            println!(
                "{{\"kind\":\"table\",\"row\":{r},\"label\":\"{label}\",\"prompt\":\"{prompt}\",\"image\":\"{}\",\"degraded\":[{:.4},{:.4}],\"blind\":[{:.4},{:.4}],\"prompt_result\":[{:.4},{:.4}],\"restore_s\":{secs:.2}}}",
                img.name, d.0, d.1, b.0, b.1, q.0, q.1
            );
        }
    }
    // The prompt-space walk on one blurry and noisy photo.
    let walk_name = arg("--walk-photo").unwrap_or_else(|| "coffee.png".into());
    let walk_img = images.iter().find(|i| i.name == walk_name).ok_or(format!(
        "--walk-photo {walk_name}: not among the photos (see --photos)"
    ))?;
    let x = Rgb::new(256, 256, walk_img.image.view().to_planar_rgb()?)?;
    let fit = BlurFit::new(&x);
    let degradation: RestorationPrompt = "Deblur with sigma 2.0; Denoise with sigma 0.12".parse()?;
    let y = apply_prompt(&x, &degradation, 77)?.to_rgb8();
    let wdir = out.join("walk");
    std::fs::create_dir_all(&wdir)?;
    spire_core::io::save_image(wdir.join("degraded.png"), &y)?;
    println!(
        "{{\"kind\":\"walk_input\",\"noise\":{:.5},\"sharpness\":{:.5},\"residual_blur\":{:.3},\"gradient_gain\":{:.4},\"clean_noise\":{:.5},\"clean_sharpness\":{:.5}}}",
        noise_sigma(&y),
        sharpness(&y),
        fit.fit(&y)?,
        gradient_gain(&y, &walk_img.image),
        noise_sigma(&walk_img.image),
        sharpness(&walk_img.image)
    );
    let walks: [(&str, Vec<f64>); 2] = [
        ("denoise", vec![0.04, 0.08, 0.12, 0.16, 0.20, 0.24]),
        ("deblur", vec![1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]),
    ];
    for (kind, values) in walks {
        for s in values {
            let text = if kind == "denoise" {
                format!("Denoise with sigma {s:.2}")
            } else {
                format!("Deblur with sigma {s:.1}")
            };
            let o = restorer.restore(&y.view(), &base.clone().with_restoration_text(&text)?)?;
            spire_core::io::save_image(wdir.join(format!("{kind}_{s:.2}.png")), &o)?;
            println!(
                "{{\"kind\":\"walk\",\"walk\":\"{kind}\",\"s\":{s},\"noise\":{:.5},\"sharpness\":{:.5},\"residual_blur\":{:.3},\"gradient_gain\":{:.4},\"psnr\":{:.4}}}",
                noise_sigma(&o),
                sharpness(&o),
                fit.fit(&o)?,
                gradient_gain(&o, &walk_img.image),
                metrics::psnr(&o.view(), &walk_img.image.view())?
            );
        }
    }
    Ok(())
}
