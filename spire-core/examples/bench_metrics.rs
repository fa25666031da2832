//! Times each metric on one 512×512 image pair (median of `--runs` after a warm-up), random
//! weights of the real sizes: LPIPS AlexNet and VGG16, CLIP ViT-L/14 image embedding (with
//! preprocessing), the FID Inception pool features (with the 299×299 resize), PSNR, SSIM.
//! One JSON line per metric. `scripts/bench_metrics.py` runs this beside the Python
//! references and prints the ratios.
#![allow(clippy::unwrap_used, clippy::expect_used)]
//!
//!     cargo run --release --example bench_metrics -- [--runs 5]

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use spire_core::metrics::{self, ClipPreprocess, FidInception, Lpips};
use spire_core::model::{ClipVisionConfig, ClipVisionModel};
use spire_core::ImageView;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// A weights file with the shapes of a fixture spec (`{name: [shape, scale, offset]}`) and
/// random values of the same scale.
fn weights_file(spec: &serde_json::Value, extra: &[(&str, Vec<usize>)], path: &std::path::Path) {
    let mut t = HashMap::new();
    let mut add = |name: &str, shape: Vec<usize>, scale: f64, offset: f64| {
        let r = spire_core::rng::randn(name.len() as u64, shape.as_slice(), &Device::Cpu).unwrap();
        let v = ((r * (scale * 0.5)).unwrap() + offset).unwrap();
        t.insert(name.to_string(), v);
    };
    for (name, v) in spec.as_object().unwrap() {
        let shape = v[0]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        add(name, shape, v[1].as_f64().unwrap(), v[2].as_f64().unwrap());
    }
    for (name, shape) in extra {
        add(name, shape.clone(), 0.1, 0.0);
    }
    candle_core::safetensors::save(&t, path).unwrap();
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .map_or(Ok(5), |s| s.parse())?;
    let fix = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/ref");
    let dir = std::env::temp_dir().join(format!("spire-bench-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let n = 512;
    let a: Vec<u8> = (0..n * n * 3).map(|i| ((i * 37) % 251) as u8).collect();
    let b: Vec<u8> = a
        .iter()
        .enumerate()
        .map(|(i, &v)| v.wrapping_add((i % 7) as u8))
        .collect();
    let (va, vb) = (ImageView::rgb8(n, n, &a)?, ImageView::rgb8(n, n, &b)?);
    let line =
        |name: &str, s: f64| println!("{{\"impl\":\"spire\",\"metric\":\"{name}\",\"seconds\":{s:.4}}}");

    line(
        "psnr",
        time(runs, || {
            std::hint::black_box(metrics::psnr(&va, &vb).unwrap());
        }),
    );
    line(
        "ssim",
        time(runs, || {
            std::hint::black_box(metrics::ssim(&va, &vb).unwrap());
        }),
    );

    let spec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fix.join("lpips.json"))?)?;
    for (net, chans) in [
        ("alex", [64, 192, 384, 256, 256]),
        ("vgg", [64, 128, 256, 512, 512]),
    ] {
        let p = dir.join(format!("lpips-{net}.safetensors"));
        let heads: Vec<(String, Vec<usize>)> = (0..5)
            .map(|k| (format!("lin{k}.weight"), vec![1, chans[k], 1, 1]))
            .collect();
        let heads: Vec<(&str, Vec<usize>)> = heads.iter().map(|(s, v)| (s.as_str(), v.clone())).collect();
        weights_file(&spec["tensors"][net], &heads, &p);
        let m = Lpips::load(&p, &Device::Cpu)?;
        line(
            &format!("lpips_{net}"),
            time(runs, || {
                std::hint::black_box(m.distance(&va, &vb).unwrap());
            }),
        );
    }

    let fid: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fix.join("fid.json"))?)?;
    let p = dir.join("inception.safetensors");
    weights_file(&fid["tensors"], &[], &p);
    let inc = FidInception::load(&p, &Device::Cpu)?;
    line("fid_features", time(runs, || drop(inc.features(&va).unwrap())));

    // CLIP ViT-L/14 image tower (CLIP-I embeds both images; CLIP-T one image and a prompt).
    let cfg = ClipVisionConfig {
        hidden_size: 1024,
        intermediate_size: 4096,
        num_hidden_layers: 24,
        num_attention_heads: 16,
        image_size: 224,
        patch_size: 14,
        hidden_act: spire_core::model::nn::Activation::QuickGelu,
        layer_norm_eps: 1e-5,
        projection_dim: 768,
    };
    let vision = ClipVisionModel::new(&cfg, spire_core::random_weights(5, DType::F32, &Device::Cpu))?;
    let pre = ClipPreprocess::default();
    line(
        "clip_image_embedding",
        time(runs, || {
            let px: Tensor = pre.apply(&va).unwrap();
            drop(vision.embed(&px).unwrap());
        }),
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
