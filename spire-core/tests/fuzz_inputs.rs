//! Seeded property tests over the untrusted inputs (the stable-Rust counterpart of the
//! `fuzz/` targets, run by `cargo test` in CI): mutated safetensors files, configs with values
//! of any type and size, and mutated PNG/JPEG files must load or fail with a typed error —
//! never panic or abort. Fixed seeds, so every CI run checks the same cases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::fixtures;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use spire_core::model::{AutoencoderKL, ClipTextModel, LoadOptions, UNet2DConditionModel};
use spire_core::{ErrorKind, SchedulerConfig};

fn config(cases: u32, seed: u64) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    }
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

/// A mutation: byte flips at positions (fractions of the length) and an optional truncation.
fn mutation() -> impl Strategy<Value = (Vec<(f64, u8)>, Option<f64>)> {
    (
        proptest::collection::vec((0.0f64..1.0, any::<u8>()), 1..8),
        proptest::option::of(0.0f64..1.0),
    )
}

fn mutate(bytes: &[u8], flips: &[(f64, u8)], cut: Option<f64>, header_bias: bool) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for &(at, v) in flips {
        // Half the flips land in the first 256 bytes, where the headers are.
        let span = if header_bias && v % 2 == 0 {
            b.len().min(256)
        } else {
            b.len()
        };
        let i = ((at * span as f64) as usize).min(b.len() - 1);
        b[i] = v;
    }
    if let Some(c) = cut {
        b.truncate((c * b.len() as f64) as usize);
    }
    b
}

/// The error kinds a bad file may give.
fn typed(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ModelLoad | ErrorKind::Io | ErrorKind::InvalidImage | ErrorKind::InvalidArgument
    )
}

proptest! {
    #![proptest_config(config(600, 0x5eed_0001))]
    #[test]
    fn mutated_weight_files_load_or_fail_cleanly((flips, cut) in mutation()) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("unet");
        copy_dir(&fixtures().join("tiny-sd1/unet"), &dir);
        let f = dir.join("diffusion_pytorch_model.safetensors");
        let bytes = std::fs::read(&f).unwrap();
        std::fs::write(&f, mutate(&bytes, &flips, cut, true)).unwrap();
        if let Err(e) = UNet2DConditionModel::from_dir(&dir, &LoadOptions::default()) {
            prop_assert!(typed(e.kind()), "{e}");
        }
    }
}

/// Any JSON value: numbers of every size and sign, strings, lists, objects, null.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    prop_oneof![
        Just(json!(null)),
        any::<bool>().prop_map(|b| json!(b)),
        (0u64..4).prop_map(|n| json!(n)),
        prop_oneof![Just(1_000_000_000_000u64), Just(1 << 62), Just(u64::MAX)].prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
        prop_oneof![Just(0.0), Just(-1.0), Just(1e308), Just(-1e-300), any::<f64>()]
            .prop_filter("JSON numbers are finite", |x: &f64| x.is_finite())
            .prop_map(|x| json!(x)),
        "[a-z_]{0,12}".prop_map(|s| json!(s)),
        proptest::collection::vec(0u64..1 << 40, 0..6).prop_map(|v| json!(v)),
        Just(json!({"nested": 1})),
    ]
}

const UNET_FIELDS: &[&str] = &[
    "in_channels",
    "out_channels",
    "block_out_channels",
    "layers_per_block",
    "norm_num_groups",
    "attention_head_dim",
    "cross_attention_dim",
    "norm_eps",
    "down_block_types",
    "up_block_types",
    "transformer_layers_per_block",
    "use_linear_projection",
    "freq_shift",
    "act_fn",
];
const VAE_FIELDS: &[&str] = &[
    "block_out_channels",
    "layers_per_block",
    "norm_num_groups",
    "latent_channels",
    "scaling_factor",
    "shift_factor",
    "force_upcast",
    "down_block_types",
    "act_fn",
];
const CLIP_FIELDS: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "max_position_embeddings",
    "layer_norm_eps",
    "hidden_act",
    "eos_token_id",
    "projection_dim",
];
const SCHEDULER_FIELDS: &[&str] = &[
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "prediction_type",
    "timestep_spacing",
    "steps_offset",
    "clip_sample_range",
    "_class_name",
];

fn set_fields(path: &Path, fields: &[(usize, serde_json::Value)], names: &[&str]) -> String {
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for (i, v) in fields {
        cfg[names[i % names.len()]] = v.clone();
    }
    cfg.to_string()
}

proptest! {
    #![proptest_config(config(1000, 0x5eed_0002))]
    #[test]
    fn configs_with_any_values_load_or_fail_cleanly(
        which in 0usize..4,
        fields in proptest::collection::vec((any::<usize>(), json_value()), 1..4),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let (component, names) = match which {
            0 => ("unet", UNET_FIELDS),
            1 => ("vae", VAE_FIELDS),
            2 => ("text_encoder", CLIP_FIELDS),
            _ => ("scheduler", SCHEDULER_FIELDS),
        };
        let dir = tmp.path().join(component);
        copy_dir(&fixtures().join("tiny-sd1").join(component), &dir);
        let o = LoadOptions::default();
        let r = if component == "scheduler" {
            let text = set_fields(&dir.join("scheduler_config.json"), &fields, names);
            SchedulerConfig::from_json_str(&text).map(|_| ())
        } else {
            let p = dir.join("config.json");
            let text = set_fields(&p, &fields, names);
            std::fs::write(&p, text).unwrap();
            match component {
                "unet" => UNet2DConditionModel::from_dir(&dir, &o).map(|_| ()),
                "vae" => AutoencoderKL::from_dir(&dir, &o).map(|_| ()),
                _ => ClipTextModel::from_dir(&dir, &o).map(|_| ()),
            }
        };
        if let Err(e) = r {
            prop_assert!(typed(e.kind()), "{e}");
        }
    }
}

fn sample_images(dir: &Path) -> Vec<Vec<u8>> {
    let img = spire_core::Image {
        width: 40,
        height: 24,
        color: spire_core::ColorType::Rgb,
        data: spire_core::ImageData::U8(common::test_rgb8(40, 24)),
    };
    ["a.png", "a.jpg"]
        .iter()
        .map(|n| {
            let p = dir.join(n);
            spire_core::io::save_image(&p, &img).unwrap();
            std::fs::read(&p).unwrap()
        })
        .collect()
}

proptest! {
    #![proptest_config(config(1200, 0x5eed_0003))]
    #[test]
    fn mutated_images_decode_or_fail_cleanly(jpeg in any::<bool>(), (flips, cut) in mutation()) {
        let tmp = tempfile::tempdir().unwrap();
        let originals = sample_images(tmp.path());
        let bytes = mutate(&originals[usize::from(jpeg)], &flips, cut, true);
        let p = tmp.path().join("m.bin");
        std::fs::write(&p, bytes).unwrap();
        match spire_core::io::load_image(&p) {
            Ok(img) => {
                // Whatever decodes is a consistent image.
                let n = img.width * img.height * img.color.channels();
                prop_assert_eq!(img.as_u8().map(<[u8]>::len), Some(n));
            }
            Err(e) => prop_assert!(typed(e.kind()), "{e}"),
        }
    }
}

proptest! {
    #![proptest_config(config(1500, 0x5eed_0004))]
    /// The prompt estimator's JPEG header reader (the CLI's `--prompt auto` and `spire
    /// estimate` run it on any file): mutated JPEGs give tables or a named error, never a panic,
    /// and whatever decodes can be estimated.
    #[test]
    fn mutated_jpeg_headers_give_tables_or_a_named_error((flips, cut) in mutation()) {
        let tmp = tempfile::tempdir().unwrap();
        let originals = sample_images(tmp.path());
        let bytes = mutate(&originals[1], &flips, cut, true);
        match spire_core::estimate::SourceInfo::from_bytes(&bytes, "m.jpg") {
            Ok(src) => {
                if let Ok(img) = spire_core::io::decode_image(&bytes, "m.jpg") {
                    let e = spire_core::RestorationPrompt::estimate(&img.view(), Some(&src));
                    prop_assert!(e.is_ok() || typed(e.unwrap_err().kind()));
                }
            }
            Err(e) => {
                prop_assert!(typed(e.kind()), "{e}");
                prop_assert!(e.to_string().contains("m.jpg"), "{e}");
            }
        }
    }
}
