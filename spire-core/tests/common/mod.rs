//! Helpers shared by the integration tests: fixture paths, reference tensors, comparisons.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};

/// `tests/fixtures` at the workspace root.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("tests")
        .join("fixtures")
}

/// The reference tensors of `tests/fixtures/ref/<name>.safetensors`.
pub fn reference(name: &str) -> HashMap<String, Tensor> {
    let p = fixtures().join("ref").join(format!("{name}.safetensors"));
    candle_core::safetensors::load(&p, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Asserts `a` and `b` agree within `tol` and that the reference is not trivially zero.
pub fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f32) {
    let d = max_abs_diff(a, b);
    let scale = b
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        scale > 1e-3,
        "{what}: reference is (nearly) all zeros; the test would prove nothing"
    );
    assert!(
        d <= tol,
        "{what}: max abs diff {d:e} > {tol:e} (reference max {scale})"
    );
    eprintln!("{what}: max abs diff {d:e} (reference max {scale:.3})");
}

/// Timesteps stored as a float tensor.
pub fn timesteps(t: &Tensor) -> Vec<f32> {
    t.to_vec1::<f32>().unwrap()
}

/// A tiny SPIRE model: the tiny SD1 folder plus a latent-hint, modulation-fusion adaptor made
/// with `from_unet` whose fusion heads and hint conv get small random weights. Returns the
/// temp dir (keep it alive) and the load options pointing at the adaptor.
pub fn tiny_spire() -> (tempfile::TempDir, spire_core::LoadOptions) {
    use spire_core::model::{Adaptor, AdaptorConfig, Fusion, HintMode, UNet2DConditionModel};
    let tmp = tempfile::tempdir().unwrap();
    let unet_dir = fixtures().join("tiny-sd1/unet");
    let unet = UNet2DConditionModel::from_dir(&unet_dir, &Default::default()).unwrap();
    let w =
        candle_core::safetensors::load(unet_dir.join("diffusion_pytorch_model.safetensors"), &Device::Cpu)
            .unwrap();
    let cfg = AdaptorConfig::from_unet(unet.config(), HintMode::Latent, Fusion::Modulation, 4);
    let (_, vars) = Adaptor::from_unet(&cfg, move |k| w.get(k).cloned(), 0, &Device::Cpu).unwrap();
    for (i, (k, v)) in vars.vars().into_iter().enumerate() {
        if k.starts_with("modulation_") || k.starts_with("latent_hint") {
            let r = spire_core::rng::randn(500 + i as u64, v.shape(), &Device::Cpu).unwrap();
            v.set(&(r * 0.05).unwrap()).unwrap();
        }
    }
    let dir = tmp.path().join("adaptor");
    std::fs::create_dir_all(&dir).unwrap();
    vars.save(&dir.join("diffusion_pytorch_model.safetensors"), false)
        .unwrap();
    std::fs::write(dir.join("config.json"), cfg.to_json().to_string()).unwrap();
    let opts = spire_core::LoadOptions::default().with_adaptor(Some(dir));
    (tmp, opts)
}

/// A deterministic test picture (smooth colours plus a few edges), RGB8.
pub fn test_rgb8(w: usize, h: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let edge = if (x / 7 + y / 5) % 2 == 0 { 40.0 } else { 0.0 };
            v.push((x as f32 / w as f32 * 200.0 + edge) as u8);
            v.push((y as f32 / h as f32 * 200.0 + edge) as u8);
            v.push(((x + y) % 50 * 4) as u8);
        }
    }
    v
}

/// Decodes an 8-bit RGB PNG from `tests/fixtures/photos`.
pub fn photo(name: &str) -> (usize, usize, Vec<u8>) {
    let f = std::fs::File::open(fixtures().join("photos").join(name)).unwrap();
    let mut dec = png::Decoder::new(std::io::BufReader::new(f)).read_info().unwrap();
    let mut buf = vec![0; dec.output_buffer_size().unwrap()];
    let info = dec.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    (info.width as usize, info.height as usize, buf)
}

/// Interleaved RGB8 to planar f32 in [0, 1].
pub fn planar(w: usize, h: usize, rgb: &[u8]) -> Vec<f32> {
    let n = w * h;
    let mut out = vec![0f32; 3 * n];
    for p in 0..n {
        for c in 0..3 {
            out[c * n + p] = rgb[3 * p + c] as f32 / 255.0;
        }
    }
    out
}

/// The fixture script's counter-based weights (`hashed_uniform` in make_fixtures.py):
/// splitmix64 of `fnv1a64(name) ^ seed` plus k·golden for k = 1..n, top 53 bits → [-1, 1).
pub fn hashed_uniform(name: &str, n: usize, seed: u64) -> Vec<f64> {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01B3);
    }
    let base = h ^ seed;
    (1..=n as u64)
        .map(|i| {
            let mut z = base.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect()
}

/// Tensors described in a fixture JSON (`{name: [shape, scale, offset]}`), generated by
/// [`hashed_uniform`].
pub fn hashed_tensors(spec: &serde_json::Value, seed: u64) -> HashMap<String, Tensor> {
    let mut out = HashMap::new();
    for (name, v) in spec.as_object().expect("spec object") {
        let shape: Vec<usize> = v[0]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let (scale, offset) = (v[1].as_f64().unwrap(), v[2].as_f64().unwrap());
        let n = shape.iter().product::<usize>().max(1);
        let vals: Vec<f32> = hashed_uniform(name, n, seed)
            .iter()
            .map(|u| (u * scale + offset) as f32)
            .collect();
        out.insert(name.clone(), Tensor::from_vec(vals, shape, &Device::Cpu).unwrap());
    }
    out
}

/// Writes an LPIPS weights file: the fixture's hashed backbone and the real lpips heads.
pub fn lpips_file(net: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("ref/lpips.json")).unwrap()).unwrap();
    let seed = spec["seeds"][net].as_u64().unwrap();
    let mut t = hashed_tensors(&spec["tensors"][net], seed);
    let r = reference("lpips");
    for k in 0..5 {
        t.insert(format!("lin{k}.weight"), r[&format!("{net}.lin{k}")].clone());
    }
    let p = dir.join(format!("lpips-{net}.safetensors"));
    candle_core::safetensors::save(&t, &p).unwrap();
    p
}

/// Writes the FID Inception weights of the fixture (hashed).
pub fn inception_file(dir: &std::path::Path) -> std::path::PathBuf {
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("ref/fid.json")).unwrap()).unwrap();
    let p = dir.join("inception.safetensors");
    candle_core::safetensors::save(&hashed_tensors(&j["tensors"], j["seed"].as_u64().unwrap()), &p).unwrap();
    p
}

/// The options of the diffusers `StableDiffusionControlNetPipeline` fixture (`ref/pipeline`):
/// the verbatim prompt for both encoders, empty null prompts, guidance 3 and 3, 5 DDIM steps
/// from the reference's initial latents, no colour fix.
pub fn pipeline_options(r: &HashMap<String, Tensor>) -> spire_core::RestoreOptions {
    let prompt = "a red motorcycle in a workshop";
    spire_core::RestoreOptions::default()
        .with_restoration_prompt(spire_core::RestorationInput::Verbatim(prompt.into()))
        .with_semantic_prompt(prompt.into())
        .with_negative_prompt(String::new())
        .with_restoration_null_prompt(String::new())
        .with_restoration_guidance(3.0)
        .with_semantic_guidance(3.0)
        .with_num_inference_steps(5)
        .with_scheduler(Some(spire_core::SchedulerKind::Ddim))
        .with_initial_latents(Some(r["latents"].clone()))
        .with_color_fix(spire_core::ColorFix::None)
}
