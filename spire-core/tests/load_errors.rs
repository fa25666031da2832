//! Bad model folders give clear errors, never panics: missing folders and files, missing
//! tensors, wrong shapes, truncated or corrupt safetensors, unsupported or malformed configs.
//! Also: legacy key names and sharded checkpoints load.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use common::{assert_close, fixtures, reference};
use spire_core::model::{AutoencoderKL, ClipTextModel, LoadOptions, UNet2DConditionModel};
use spire_core::{Error, ErrorKind};

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

/// A scratch copy of a fixture component folder.
fn scratch(component: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    copy_dir(&fixtures().join(component), &dir);
    (tmp, dir)
}

fn weights(dir: &Path) -> PathBuf {
    dir.join("diffusion_pytorch_model.safetensors")
}

fn rewrite(dir: &Path, f: impl FnOnce(&mut HashMap<String, Tensor>)) {
    let mut t = candle_core::safetensors::load(weights(dir), &Device::Cpu).unwrap();
    f(&mut t);
    candle_core::safetensors::save(&t, weights(dir)).unwrap();
}

fn load_unet(dir: &Path) -> Result<UNet2DConditionModel, Error> {
    UNet2DConditionModel::from_dir(dir, &LoadOptions::default())
}

#[test]
fn missing_folder_is_not_found_naming_it() {
    let err = load_unet(Path::new("/definitely/not/here/unet")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    let Error::Io { path, source } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    assert!(
        path.ends_with("unet/config.json") || path.ends_with("unet"),
        "{path:?}"
    );
    assert!(err.to_string().contains("/definitely/not/here/unet"), "{err}");
}

#[test]
fn missing_weight_file_names_the_expected_file() {
    let (_t, dir) = scratch("tiny-sd1/unet");
    std::fs::remove_file(weights(&dir)).unwrap();
    let err = load_unet(&dir).unwrap_err();
    let Error::Io { path, source } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    assert!(path.ends_with("diffusion_pytorch_model.safetensors"), "{path:?}");
}

#[test]
fn missing_config_is_not_found() {
    let (_t, dir) = scratch("tiny-sd1/unet");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let err = load_unet(&dir).unwrap_err();
    let Error::Io { path, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(path.ends_with("config.json"));
}

#[test]
fn missing_tensor_names_the_key() {
    let (_t, dir) = scratch("tiny-sd1/unet");
    rewrite(&dir, |t| {
        t.remove("up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight");
    });
    let err = load_unet(&dir).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ModelLoad);
    let msg = err.to_string();
    assert!(
        msg.contains("missing tensor `up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight`"),
        "{msg}"
    );
}

#[test]
fn wrong_shape_names_key_expected_and_actual() {
    let (_t, dir) = scratch("tiny-sd1/unet");
    rewrite(&dir, |t| {
        t.insert(
            "conv_in.weight".into(),
            Tensor::zeros((32, 5, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let msg = load_unet(&dir).unwrap_err().to_string();
    assert!(msg.contains("`conv_in.weight`"), "{msg}");
    assert!(
        msg.contains("[32, 5, 3, 3]") && msg.contains("[32, 4, 3, 3]"),
        "{msg}"
    );
    assert!(msg.contains("diffusion_pytorch_model.safetensors"), "{msg}");
}

#[test]
fn truncated_safetensors_is_a_load_error() {
    let (_t, dir) = scratch("tiny-sd1/unet");
    let bytes = std::fs::read(weights(&dir)).unwrap();
    std::fs::write(weights(&dir), &bytes[..bytes.len() - 1000]).unwrap();
    let err = load_unet(&dir).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ModelLoad);
    let msg = err.to_string();
    assert!(
        msg.contains("truncated or corrupt") && msg.contains("diffusion_pytorch_model.safetensors"),
        "{msg}"
    );
}

#[test]
fn corrupt_headers_are_load_errors() {
    let cases: Vec<Vec<u8>> = vec![
        vec![],                          // empty file
        vec![1, 2, 3],                   // shorter than the length prefix
        u64::MAX.to_le_bytes().to_vec(), // absurd header length
        [&20u64.to_le_bytes()[..], b"{not json at all!!!"].concat(),
        [&2u64.to_le_bytes()[..], b"[]"].concat(), // JSON but not an object
    ];
    for (i, bytes) in cases.into_iter().enumerate() {
        let (_t, dir) = scratch("tiny-sd1/unet");
        std::fs::write(weights(&dir), bytes).unwrap();
        let err = load_unet(&dir).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ModelLoad, "case {i}: {err}");
    }
}

#[test]
fn unsupported_config_values_name_the_field() {
    let cases = [
        ("act_fn", serde_json::json!("mish"), "act_fn"),
        (
            "down_block_types",
            serde_json::json!(["SimpleCrossAttnDownBlock2D", "DownBlock2D"]),
            "SimpleCrossAttnDownBlock2D",
        ),
        (
            "class_embed_type",
            serde_json::json!("timestep"),
            "class_embed_type",
        ),
        (
            "block_out_channels",
            serde_json::json!([32, 60]),
            "norm_num_groups",
        ),
        ("layers_per_block", serde_json::json!("two"), "layers_per_block"),
        (
            "attention_head_dim",
            serde_json::json!([8, 8, 8]),
            "attention_head_dim",
        ),
    ];
    for (field, value, needle) in cases {
        let (_t, dir) = scratch("tiny-sd1/unet");
        let p = dir.join("config.json");
        let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        cfg[field] = value;
        std::fs::write(&p, cfg.to_string()).unwrap();
        let err = load_unet(&dir).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ModelLoad, "{field}: {err}");
        assert!(err.to_string().contains(needle), "{field}: {err}");
    }
}

#[test]
fn malformed_config_json_is_a_load_error() {
    let (_t, dir) = scratch("tiny-sd1/unet");
    std::fs::write(dir.join("config.json"), "{\"block_out_channels\": [32, 64],").unwrap();
    let err = load_unet(&dir).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ModelLoad);
    assert!(err.to_string().contains("invalid JSON"), "{err}");
}

#[test]
fn legacy_vae_attention_key_names_load() {
    let (_t, dir) = scratch("tiny-sd1/vae");
    std::fs::remove_file(dir.join("diffusion_pytorch_model.fp16.safetensors")).unwrap();
    rewrite(&dir, |t| {
        let keys: Vec<String> = t.keys().cloned().collect();
        for k in keys {
            let new = k
                .replace(".to_q.", ".query.")
                .replace(".to_k.", ".key.")
                .replace(".to_v.", ".value.")
                .replace(".to_out.0.", ".proj_attn.");
            if new != k {
                let v = t.remove(&k).unwrap();
                // The oldest checkpoints store these projections as 1×1 convolutions.
                let v = if new.ends_with("weight") {
                    v.unsqueeze(2).unwrap().unsqueeze(3).unwrap()
                } else {
                    v
                };
                t.insert(new, v);
            }
        }
    });
    let r = reference("vae");
    let vae = AutoencoderKL::from_dir(&dir, &LoadOptions::default()).unwrap();
    assert_close(
        "vae decoded from legacy keys",
        &vae.decode(&r["z"]).unwrap(),
        &r["decoded"],
        1e-4,
    );
}

#[test]
fn sharded_checkpoint_with_index_loads() {
    let (_t, dir) = scratch("tiny-sd1/text_encoder");
    let all = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let (mut a, mut b) = (HashMap::new(), HashMap::new());
    let mut map = serde_json::Map::new();
    for (i, (k, v)) in all.into_iter().enumerate() {
        let (shard, name) = if i % 2 == 0 {
            (&mut a, "model-00001-of-00002.safetensors")
        } else {
            (&mut b, "model-00002-of-00002.safetensors")
        };
        map.insert(k.clone(), name.into());
        shard.insert(k, v);
    }
    candle_core::safetensors::save(&a, dir.join("model-00001-of-00002.safetensors")).unwrap();
    candle_core::safetensors::save(&b, dir.join("model-00002-of-00002.safetensors")).unwrap();
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let r = reference("tiny-sd1-text-encoder");
    let te = ClipTextModel::from_dir(&dir, &LoadOptions::default()).unwrap();
    let out = te
        .forward(&r["ids"].to_dtype(candle_core::DType::U32).unwrap())
        .unwrap();
    assert_close(
        "sharded text encoder",
        &out.last_hidden_state,
        &r["last_hidden_state"],
        1e-4,
    );
}
