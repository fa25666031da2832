//! Times measurement consistency (`spire_core::consistency::apply`, the built-in model's τ) against the
//! built-in model's whole restore of the same image in the same process (its recommended
//! options, blind, so without consistency): the ratio is what consistency adds to a restore.
//! The "model output" is the clean test image blurred (σ 3), the input its degradation by the
//! prompt. Median of `runs`; one JSON line per size and prompt.
//!
//!     cargo run --release -p spire-core --example bench_consistency -- [runs]

use std::time::Instant;

use spire_core::consistency::apply;
use spire_core::degrade::{apply_prompt, Rgb};
use spire_core::{ImageView, MemoryLimit, RestorationPrompt, Restorer};

fn median(
    mut f: impl FnMut() -> Result<(), Box<dyn std::error::Error>>,
    runs: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    f()?;
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        f()?;
        t.push(t0.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let r = Restorer::builtin()?;
    let tau = r.default_options().consistency;
    for size in [512usize, 2048] {
        let n = size * size;
        let data: Vec<f32> = (0..3 * n)
            .map(|i| {
                ((i * 7919 % 1000) as f32 / 1000.0 * 0.3 + (i % size) as f32 / size as f32 * 0.5 + 0.1)
                    .min(1.0)
            })
            .collect();
        let x = Rgb::new(size, size, data)?;
        let restore_s = if size <= 512 {
            let interleaved: Vec<f32> = (0..n)
                .flat_map(|p| (0..3).map(move |c| (c, p)))
                .map(|(c, p)| x.data[c * n + p])
                .collect();
            let img = ImageView::rgb_f32(size, size, &interleaved)?;
            let o = r.default_options().with_memory_limit(MemoryLimit::Unlimited);
            Some(median(|| Ok(r.restore(&img, &o).map(|_| ())?), runs)?)
        } else {
            None
        };
        for text in [
            "Deblur with sigma 2.0",
            "Upsample with scale 2.0",
            "Deblur with sigma 1.5; Upsample with scale 2.0; Denoise with sigma 0.05",
            "Dejpeg with quality 20",
        ] {
            let p: RestorationPrompt = text.parse()?;
            let y = apply_prompt(&x, &p, 1)?;
            // A "model output" that disagrees with the input, as a real one does.
            let m = spire_core::degrade::ops::gaussian_blur(&x, 3.0);
            let s = median(
                || {
                    let mut out = m.data.clone();
                    apply(&mut out, &y.data, size, size, &p, tau)?;
                    Ok(())
                },
                runs,
            )?;
            let ratio = restore_s.map_or("null".to_string(), |t| format!("{:.3}", s / t));
            println!(
                "{{\"size\":{size},\"prompt\":\"{text}\",\"consistency_s\":{s:.4},\"restore_s\":{},\"ratio\":{ratio}}}",
                restore_s.map_or("null".to_string(), |t| format!("{t:.4}"))
            );
        }
    }
    Ok(())
}
