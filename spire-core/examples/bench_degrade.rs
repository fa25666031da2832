//! Times the degradation pipelines on a 512×512 image: the parameterized pipeline with all
//! four ops forced on (blur σ≈3, ×2.5 down, noise, JPEG) and the Real-ESRGAN pipeline, median
//! over seeds; one JSON line each.
//!
//!     RAYON_NUM_THREADS=2 cargo run --release --example bench_degrade -- [runs]

use std::time::Instant;

use spire_core::degrade::{parameterized, realesrgan, ParamConfig, RealEsrganConfig, Rgb};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let n = 512 * 512;
    let data: Vec<f32> = (0..3 * n)
        .map(|i| (i * 7919 % 1000) as f32 / 1000.0 * 0.5 + (i % 512) as f32 / 1024.0)
        .collect();
    let x = Rgb::new(512, 512, data)?;
    let all = ParamConfig {
        prob: 1.0,
        ..Default::default()
    };
    let report = |name: &str,
                  f: &mut dyn FnMut(u64) -> Result<(), Box<dyn std::error::Error>>|
     -> Result<(), Box<dyn std::error::Error>> {
        f(0)?;
        let mut t: Vec<f64> = Vec::new();
        for s in 1..=runs as u64 {
            let t0 = Instant::now();
            f(s)?;
            t.push(t0.elapsed().as_secs_f64());
        }
        t.sort_by(f64::total_cmp);
        println!(
            "{{\"impl\":\"spire\",\"pipeline\":\"{name}\",\"median_s\":{:.4},\"runs\":{runs}}}",
            t[t.len() / 2]
        );
        Ok(())
    };
    report("parameterized", &mut |s| {
        parameterized(&x, s, &all)?;
        Ok(())
    })?;
    report("realesrgan", &mut |s| {
        realesrgan(&x, s, &RealEsrganConfig::default())?;
        Ok(())
    })?;
    Ok(())
}
