//! The public checkpoints of the docs' recipes, at full size: `v1-5-pruned-emaonly.safetensors`
//! with `control_v11f1e_sd15_tile` (the "ControlNet-SR" blind restorer) and
//! `v2-1_512-ema-pruned.safetensors` (SD 2.1-base). No weights can be downloaded here, so the
//! files are written as *sparse* safetensors with exactly the published tensor names and shapes
//! (`tests/fixtures/layouts.json`, made by `scripts/make_fixtures.py layouts` from diffusers'
//! model classes and the published configs) and zero data: the loader must find every tensor,
//! infer the published architecture, and run the pipeline end to end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use candle_core::DType;
use common::fixtures;
use spire_core::model::{Generation, SingleFile};
use spire_core::{ImageView, LoadOptions, Restorer};

/// Writes a safetensors file of f16 zeros with these names and shapes; the data section is a
/// hole (no disk space, no memory until read).
fn sparse_safetensors(path: &Path, tensors: &BTreeMap<String, Vec<usize>>) {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape) in tensors {
        let bytes = 2 * shape.iter().product::<usize>();
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut text = serde_json::Value::Object(header).to_string();
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(&(text.len() as u64).to_le_bytes()).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.set_len((8 + text.len() + offset) as u64).unwrap();
}

fn layouts() -> BTreeMap<String, BTreeMap<String, Vec<usize>>> {
    let text = std::fs::read_to_string(fixtures().join("layouts.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Only the tokenizer: what a user with a single file has to add.
fn tokenizer_only(dir: &Path) {
    let src = fixtures().join("single-file/sd1-config/tokenizer");
    std::fs::create_dir_all(dir.join("tokenizer")).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join("tokenizer").join(e.file_name())).unwrap();
    }
}

#[test]
fn the_public_sd15_tile_and_sd21_base_layouts_load_and_run() {
    let l = layouts();
    let tmp = tempfile::tempdir().unwrap();
    tokenizer_only(tmp.path());
    let sd15 = tmp.path().join("v1-5-pruned-emaonly.safetensors");
    let tile = tmp.path().join("control_v11f1e_sd15_tile.safetensors");
    let sd21 = tmp.path().join("v2-1_512-ema-pruned.safetensors");
    sparse_safetensors(&sd15, &l["sd15"]);
    sparse_safetensors(&tile, &l["control_v11f1e_sd15_tile"]);
    sparse_safetensors(&sd21, &l["sd21-base"]);

    // SD 2.1-base: the architecture is inferred as published (f16, so it fits beside the rest).
    let o = LoadOptions::default()
        .with_config(Some(tmp.path().to_path_buf()))
        .with_dtype(DType::F16);
    let m = SingleFile::load(&sd21, &o).unwrap();
    assert_eq!(m.generation, Generation::Sd2);
    assert_eq!(
        m.unet.config(),
        &spire_core::model::UNetConfig {
            // The published config says upcast_attention false for 2.1-base; attention scores are
            // computed in f32 here either way.
            upcast_attention: true,
            ..spire_core::model::UNetConfig::sd21_base()
        }
    );
    assert_eq!(m.vae.config(), &spire_core::model::VaeConfig::sd());
    let t = m.text_encoder.config();
    assert_eq!(
        (
            t.hidden_size,
            t.num_hidden_layers,
            t.num_attention_heads,
            t.intermediate_size
        ),
        (1024, 23, 16, 4096)
    );
    drop(m);

    // SD 1.5 + the tile ControlNet: the blind restorer of the docs, one step end to end.
    let o = LoadOptions::default()
        .with_config(Some(tmp.path().to_path_buf()))
        .with_adaptor(Some(tile.clone()));
    let t0 = std::time::Instant::now();
    let r = Restorer::from_single_file(&sd15, &o).unwrap();
    eprintln!(
        "SD 1.5 + tile ControlNet loaded (f32, sparse f16 file) in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let px = common::test_rgb8(64, 64);
    let out = r
        .restore(
            &ImageView::rgb8(64, 64, &px).unwrap(),
            &r.default_options().with_num_inference_steps(1),
        )
        .unwrap();
    assert_eq!((out.width, out.height), (64, 64));
    eprintln!(
        "restored 64×64 in one step; total {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
