//! The training loop on tiny configurations: both modes run, a run is deterministic for its
//! seed, and a run interrupted and resumed from its checkpoint ends with the same weights as an
//! uninterrupted one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::fixtures;
use spire_core::train::{train, TrainConfig, TrainMode};

fn photos(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(fixtures().join("photos/chelsea_crop256.png"), dir.join("a.png")).unwrap();
    std::fs::write(dir.join("captions.tsv"), "file\tcaption\na.png\ta cat\n").unwrap();
}

fn backbone(data: &Path, out: &Path, steps: usize) -> TrainConfig {
    let j = serde_json::json!({
        "mode": "backbone",
        "data": data, "captions": data.join("captions.tsv"), "output": out,
        "tokenizer": fixtures().join("tiny-sd1/tokenizer"),
        "pixel_shuffle_factor": 2,
        "unet": {"in_channels": 12, "out_channels": 12, "block_out_channels": [16, 32],
                 "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
                 "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
                 "layers_per_block": 1, "attention_head_dim": 2, "cross_attention_dim": 16,
                 "norm_num_groups": 8, "use_linear_projection": true},
        "text_encoder": {"vocab_size": 914, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                         "num_attention_heads": 2, "hidden_act": "gelu", "eos_token_id": 913},
        "scheduler": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                      "prediction_type": "v_prediction"},
        "steps": steps, "batch_size": 2, "crop": 16, "scale": [1.0, 3.0],
        "optimizer": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01, "warmup_steps": 2},
        "ema_decay": 0.9, "seed": 5, "checkpoint_every": 2, "validate_every": 3, "validation": ["a.png"]
    });
    serde_json::from_value(j).unwrap()
}

fn adaptor(data: &Path, out: &Path, model: &Path, steps: usize) -> TrainConfig {
    let j = serde_json::json!({
        "mode": "adaptor",
        "data": data, "captions": data.join("captions.tsv"), "output": out, "model": model,
        "restoration_text_encoder": {"vocab_size": 914, "hidden_size": 16, "intermediate_size": 32,
                                     "num_hidden_layers": 1, "num_attention_heads": 2, "hidden_act": "gelu",
                                     "eos_token_id": 913},
        "steps": steps, "batch_size": 2, "grad_accum": 2, "crop": 16,
        "optimizer": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01, "warmup_steps": 0},
        "seed": 6, "realesrgan_prob": 0.5, "checkpoint_every": 2, "validate_every": 0
    });
    serde_json::from_value(j).unwrap()
}

/// The error reading `recipe` with `field` set to `value` gives (it must be refused).
fn refusal(dir: &Path, recipe: &TrainConfig, field: &str, value: serde_json::Value) -> String {
    let mut j = serde_json::to_value(recipe).unwrap();
    j[field] = value;
    let path = dir.join(format!("{field}.json"));
    std::fs::write(&path, j.to_string()).unwrap();
    TrainConfig::from_file(&path).unwrap_err().to_string()
}

/// Restores the 20×12 test image with `r` and checks the result's size.
fn restore_small(r: &spire_core::Restorer, o: &spire_core::RestoreOptions) -> spire_core::Image {
    let px = common::test_rgb8(20, 12);
    let img = r
        .restore(&spire_core::ImageView::rgb8(20, 12, &px).unwrap(), o)
        .unwrap();
    assert_eq!((img.width, img.height), (20, 12));
    img
}

fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let mut t: Vec<_> = candle_core::safetensors::load(path, &candle_core::Device::Cpu)
        .unwrap()
        .into_iter()
        .collect();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t.into_iter()
        .map(|(k, v)| (k, v.flatten_all().unwrap().to_vec1().unwrap()))
        .collect()
}

#[test]
fn backbone_then_adaptor_train_and_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("photos");
    photos(&data);
    let out = tmp.path().join("model");
    let mut events = 0;
    let s = train(&backbone(&data, &out, 4), &mut |e| {
        events += 1;
        assert!(e.loss.is_finite() && e.step <= e.total);
        true
    })
    .unwrap();
    assert!(events >= 4 && s.final_loss.is_finite() && s.params > 0);
    assert!(out.join("val/backbone_000003.png").is_file(), "validation image");
    assert!(out.join("loss-backbone.csv").is_file());
    let mut a = adaptor(&data, &out, &out, 3);
    a.defaults = Some(serde_json::json!({"strength": 0.5, "num_inference_steps": 4}));
    assert_eq!(a.mode, TrainMode::Adaptor);
    train(&a, &mut |_| true).unwrap();
    // The result is a loadable model folder that restores, with the recipe's defaults.
    let r = spire_core::Restorer::from_pretrained(&out, &Default::default()).unwrap();
    assert_eq!(r.default_options().strength, 0.5);
    assert_eq!(r.default_options().num_inference_steps, 4);
    let o = spire_core::RestoreOptions::default()
        .with_num_inference_steps(2)
        .with_restoration_text("Denoise with sigma 0.1")
        .unwrap();
    let img = restore_small(&r, &o);
    // The built-in format round-trips it.
    let bytes = spire_core::builtin::export(&out).unwrap();
    let b = spire_core::builtin::load(&bytes, "test").unwrap();
    assert_eq!(
        b.defaults(),
        r.defaults(),
        "spire.json travels in the built-in file"
    );
    // A recipe without defaults writes a model that recommends nothing.
    let plain = tmp.path().join("plain");
    train(&adaptor(&data, &plain, &out, 1), &mut |_| true).unwrap();
    let p = spire_core::Restorer::from_pretrained(&plain, &Default::default()).unwrap();
    assert!(p.defaults().is_empty());
    let img2 = restore_small(&b, &o);
    let d = img
        .as_u8()
        .unwrap()
        .iter()
        .zip(img2.as_u8().unwrap())
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(d <= 12, "f16 built-in differs from the f32 folder by {d}/255");
}

#[test]
fn deterministic_and_resumable() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("photos");
    photos(&data);
    let run = |name: &str, steps: &[usize]| {
        let out = tmp.path().join(name);
        for &n in steps {
            train(&backbone(&data, &out, n), &mut |_| true).unwrap();
        }
        weights(&out.join("unet/diffusion_pytorch_model.safetensors"))
    };
    let straight = run("a", &[4]);
    assert_eq!(run("b", &[4]), straight, "same seed, same weights");
    assert_eq!(run("c", &[2, 4]), straight, "resumed from the step-2 checkpoint");
    // A callback returning false stops the run with a checkpoint.
    let out = tmp.path().join("d");
    let err = train(&backbone(&data, &out, 4), &mut |e| e.step < 1).unwrap_err();
    assert_eq!(err.kind(), spire_core::ErrorKind::Cancelled);
    assert!(out.join("checkpoint-backbone.safetensors").is_file());
}

#[test]
fn low_noise_timesteps_are_validated_and_change_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("photos");
    photos(&data);
    // Bad values are refused by name when the recipe is read.
    for (field, value) in [
        ("low_noise_fraction", serde_json::json!(1.5)),
        ("low_noise_below", serde_json::json!(0)),
    ] {
        let err = refusal(
            tmp.path(),
            &backbone(&data, &tmp.path().join("x"), 2),
            field,
            value,
        );
        assert!(err.contains(field), "{err}");
    }
    // Every timestep below 10: a different run from the uniform one, and still deterministic.
    let run = |name: &str, fraction: f64| {
        let out = tmp.path().join(name);
        let mut cfg = backbone(&data, &out, 3);
        cfg.low_noise_fraction = fraction;
        cfg.low_noise_below = 10;
        cfg.validate_every = 0;
        train(&cfg, &mut |_| true).unwrap();
        weights(&out.join("unet/diffusion_pytorch_model.safetensors"))
    };
    let (uniform, low, low_again) = (run("u", 0.0), run("l", 1.0), run("l2", 1.0));
    assert_ne!(uniform, low, "low_noise_fraction must change the timesteps");
    assert_eq!(low, low_again, "same seed, same weights");
}

#[test]
fn max_timestep_bounds_the_timesteps_and_recipe_defaults_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("photos");
    photos(&data);
    for (field, value, needle) in [
        ("max_timestep", serde_json::json!(0), "max_timestep"),
        ("defaults", serde_json::json!({"strength": 2.0}), "strength"),
        ("defaults", serde_json::json!({"stepz": 2}), "defaults.stepz"),
    ] {
        let err = refusal(
            tmp.path(),
            &backbone(&data, &tmp.path().join("x"), 2),
            field,
            value,
        );
        assert!(err.contains(needle), "{err}");
    }
    let run = |name: &str, max: Option<usize>| {
        let out = tmp.path().join(name);
        let mut cfg = backbone(&data, &out, 3);
        cfg.max_timestep = max;
        cfg.validate_every = 0;
        train(&cfg, &mut |_| true).unwrap();
        weights(&out.join("unet/diffusion_pytorch_model.safetensors"))
    };
    let uniform = run("u", None);
    // A bound at the schedule's length binds nothing: the same draws, the same weights.
    assert_eq!(uniform, run("t", Some(1000)));
    let low = run("l", Some(10));
    assert_ne!(uniform, low, "max_timestep must change the timesteps");
    assert_eq!(low, run("l2", Some(10)), "same seed, same weights");
}

#[test]
fn degraded_start_is_validated_and_changes_the_adaptor_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("photos");
    photos(&data);
    let model = tmp.path().join("model");
    train(&backbone(&data, &model, 2), &mut |_| true).unwrap();
    // Out of range, or on the backbone (which has no degraded image), refused by name.
    for (cfg, value) in [
        (adaptor(&data, &tmp.path().join("x"), &model, 1), 1.5),
        (backbone(&data, &tmp.path().join("x"), 1), 0.5),
    ] {
        let err = refusal(tmp.path(), &cfg, "degraded_start", serde_json::json!(value));
        assert!(err.contains("degraded_start"), "{err}");
    }
    let run = |name: &str, fraction: f64| {
        let out = tmp.path().join(name);
        let mut cfg = adaptor(&data, &out, &model, 2);
        cfg.degraded_start = fraction;
        train(&cfg, &mut |_| true).unwrap();
        weights(&out.join("adaptor/diffusion_pytorch_model.safetensors"))
    };
    let (clean, degraded, again) = (run("c", 0.0), run("d", 1.0), run("d2", 1.0));
    assert_ne!(
        clean, degraded,
        "degraded_start must change what the adaptor learns from"
    );
    assert_eq!(degraded, again, "same seed, same weights");
}

#[test]
fn prompt_embedding_trains_from_zero_and_the_model_restores() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("photos");
    photos(&data);
    let model = tmp.path().join("model");
    train(&backbone(&data, &model, 2), &mut |_| true).unwrap();
    // Only the adaptor has a prompt embedding.
    let recipe = backbone(&data, &tmp.path().join("x"), 1);
    let err = refusal(tmp.path(), &recipe, "prompt_embedding", serde_json::json!(true));
    assert!(err.contains("prompt_embedding"), "{err}");

    let out = tmp.path().join("pe");
    let mut cfg = adaptor(&data, &out, &model, 2);
    cfg.prompt_embedding = Some(true);
    train(&cfg, &mut |_| true).unwrap();
    let text = std::fs::read_to_string(out.join("adaptor/config.json")).unwrap();
    let c: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(c["class_embed_type"], "projection");
    assert_eq!(c["projection_class_embeddings_input_dim"], 16);
    let w = weights(&out.join("adaptor/diffusion_pytorch_model.safetensors"));
    let get = |k: &str| &w.iter().find(|(n, _)| n == k).unwrap_or_else(|| panic!("{k}")).1;
    // linear_2 starts at zero (the embedding adds nothing at first) and training moves it.
    assert!(get("class_embedding.linear_2.weight").iter().any(|v| *v != 0.0));
    assert_eq!(get("class_embedding.linear_1.weight").len(), 16 * 64);

    // The folder and its built-in export load and restore.
    let r = spire_core::Restorer::from_pretrained(&out, &Default::default()).unwrap();
    let b = spire_core::builtin::load(&spire_core::builtin::export(&out).unwrap(), "test").unwrap();
    let o = spire_core::RestoreOptions::default()
        .with_num_inference_steps(2)
        .with_strength(0.5)
        .with_consistency(0.0)
        .with_restoration_text("Deblur with sigma 1.0")
        .unwrap();
    for restorer in [&r, &b] {
        restore_small(restorer, &o);
    }
}

#[test]
fn an_adaptor_trains_on_the_unpacked_builtin_backbone() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("photos");
    photos(&data);
    let base = tmp.path().join("spire-tiny");
    spire_core::builtin::unpack(spire_core::builtin::builtin_bytes().unwrap(), "builtin", &base).unwrap();
    let out = tmp.path().join("mine");
    train(&adaptor(&data, &out, &base, 1), &mut |_| true).unwrap();
    // The new folder has the built-in backbone and the new adaptor, and restores.
    assert_eq!(
        weights(&out.join("unet/diffusion_pytorch_model.safetensors")),
        weights(&base.join("unet/diffusion_pytorch_model.safetensors"))
    );
    let r = spire_core::Restorer::from_pretrained(&out, &Default::default()).unwrap();
    let o = spire_core::RestoreOptions::default()
        .with_num_inference_steps(2)
        .with_strength(0.5)
        .with_restoration_text("Denoise with sigma 0.1")
        .unwrap();
    restore_small(&r, &o);
}

/// Loss rows of a run's `loss-<mode>.csv`.
fn losses(out: &Path, mode: &str) -> Vec<f64> {
    std::fs::read_to_string(out.join(format!("loss-{mode}.csv")))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect()
}

#[test]
fn bf16_mixed_precision_trains_like_f32() {
    use spire_core::train::MixedPrecision;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("photos");
    photos(&data);
    let run = |name: &str, mp: MixedPrecision| {
        let out = tmp.path().join(name);
        let mut cfg = backbone(&data, &out, 16);
        cfg.mixed_precision = mp;
        cfg.validate_every = 8;
        train(&cfg, &mut |_| true).unwrap();
        (out.clone(), losses(&out, "backbone"))
    };
    let (_, full) = run("f32", MixedPrecision::No);
    let (out, mixed) = run("bf16", MixedPrecision::Bf16);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (first, last) = (mean(&mixed[..4]), mean(&mixed[12..]));
    eprintln!(
        "bf16 loss {first:.4} → {last:.4}; f32 {:.4} → {:.4}",
        mean(&full[..4]),
        mean(&full[12..])
    );
    assert!(last < 0.8 * first, "bf16 loss did not fall: {mixed:?}");
    // It really computed in bf16: the same stream of batches, other rounding.
    assert_ne!(mixed, full, "the bf16 run is bit-identical to the f32 one");
    assert!(
        (last - mean(&full[12..])).abs() < 0.1 * mean(&full[12..]),
        "bf16 {mixed:?} vs f32 {full:?}"
    );
    // Master weights stay f32: the exported model is f32 and restores.
    let w = candle_core::safetensors::load(
        out.join("unet/diffusion_pytorch_model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert!(w.values().all(|t| t.dtype() == candle_core::DType::F32));
    assert!(
        out.join("val/backbone_000008.png").is_file(),
        "bf16 validation image"
    );
    // An adaptor trains in bf16 on the frozen backbone (loaded in bf16, autoencoder f32).
    let mut a = adaptor(&data, &tmp.path().join("bf16-adaptor"), &out, 2);
    a.mixed_precision = MixedPrecision::Bf16;
    let s = train(&a, &mut |_| true).unwrap();
    assert!(s.final_loss.is_finite());
    // A device the build does not have is refused by name before any work.
    let bad = refusal(tmp.path(), &a, "device", "cuda:0".into());
    assert!(bad.contains("cuda:0") && bad.contains("--features cuda"), "{bad}");
    let bad = refusal(tmp.path(), &a, "mixed_precision", "fp8".into());
    assert!(bad.contains("mixed_precision") || bad.contains("fp8"), "{bad}");
}

/// The child half of the test below: trains the adaptor recipe named by the environment.
fn child_adaptor_run() -> bool {
    let Ok(out) = std::env::var("SPIRE_TEST_CHILD_OUT") else {
        return false;
    };
    let data = std::path::PathBuf::from(std::env::var("SPIRE_TEST_CHILD_DATA").unwrap());
    let model = std::path::PathBuf::from(std::env::var("SPIRE_TEST_CHILD_MODEL").unwrap());
    assert!(
        !spire_core::model::fused_default(),
        "the child runs with the kernels off"
    );
    train(&adaptor(&data, Path::new(&out), &model, 3), &mut |_| true).unwrap();
    true
}

#[test]
fn a_run_with_the_fused_kernels_off_equals_one_with_them_on() {
    if child_adaptor_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("photos");
    photos(&data);
    let model = tmp.path().join("model");
    train(&backbone(&data, &model, 2), &mut |_| true).unwrap();
    let on = tmp.path().join("on");
    train(&adaptor(&data, &on, &model, 3), &mut |_| true).unwrap();
    // The same run in a process whose layers are all built with the kernels off.
    let off = tmp.path().join("off");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_run_with_the_fused_kernels_off_equals_one_with_them_on",
            "--nocapture",
        ])
        .env("SPIRE_FUSED_KERNELS", "0")
        .env("SPIRE_TEST_CHILD_OUT", &off)
        .env("SPIRE_TEST_CHILD_DATA", &data)
        .env("SPIRE_TEST_CHILD_MODEL", &model)
        .status()
        .unwrap();
    assert!(status.success());
    let file = "adaptor/diffusion_pytorch_model.safetensors";
    let (a, b) = (weights(&on.join(file)), weights(&off.join(file)));
    assert_eq!(a.len(), b.len());
    let mut worst = 0f32;
    for ((ka, va), (kb, vb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        for (x, y) in va.iter().zip(vb) {
            worst = worst.max((x - y).abs());
        }
    }
    eprintln!("adaptor weights after 3 steps, kernels on vs off: max abs diff {worst:e}");
    assert!(worst < 1e-4, "{worst}");
    assert_eq!(losses(&on, "adaptor").len(), 3);
}

/// The SD 2.1-base recipe of docs/public-weights.md on the tiny SD 2.x single file: an adaptor
/// trained on a single-file backbone, restored with `--checkpoint --controlnet --config`.
#[test]
fn an_adaptor_trains_on_a_single_file_backbone_and_restores_from_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("photos");
    photos(&data);
    let cfg_dir = tmp.path().join("sd2-config");
    for sub in ["tokenizer", "scheduler"] {
        let src = fixtures().join("single-file/sd2-config").join(sub);
        std::fs::create_dir_all(cfg_dir.join(sub)).unwrap();
        for e in std::fs::read_dir(src).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), cfg_dir.join(sub).join(e.file_name())).unwrap();
        }
    }
    let ckpt = fixtures().join("single-file/tiny-sd2.safetensors");
    let out = tmp.path().join("mine");
    let mut j = serde_json::to_value(adaptor(&data, &out, Path::new("unused"), 1)).unwrap();
    let m = j.as_object_mut().unwrap();
    m.remove("model");
    m.remove("restoration_text_encoder");
    m.insert("checkpoint".into(), serde_json::json!(ckpt));
    m.insert("checkpoint_config".into(), serde_json::json!(cfg_dir));
    m.insert("prediction_type".into(), serde_json::json!("epsilon"));
    let recipe: TrainConfig = serde_json::from_value(j.clone()).unwrap();
    train(&recipe, &mut |_| true).unwrap();
    // Only the adaptor and the config folder: the backbone stays in its file.
    assert!(out.join("adaptor/diffusion_pytorch_model.safetensors").is_file());
    assert!(
        out.join("tokenizer/vocab.json").is_file() && out.join("scheduler/scheduler_config.json").is_file()
    );
    assert!(!out.join("unet").exists());
    let o = spire_core::LoadOptions::default()
        .with_adaptor(Some(out.join("adaptor")))
        .with_config(Some(out.clone()))
        .with_prediction_type(Some(spire_core::scheduler::PredictionType::Epsilon));
    let r = spire_core::Restorer::from_single_file(&ckpt, &o).unwrap();
    let opts = r
        .default_options()
        .with_num_inference_steps(2)
        .with_restoration_text("Denoise with sigma 0.1")
        .unwrap();
    restore_small(&r, &opts);

    // Refusals name the field.
    let msg = refusal(tmp.path(), &recipe, "model", serde_json::json!("x"));
    assert!(msg.contains("checkpoint") && msg.contains("not both"), "{msg}");
    let msg = refusal(tmp.path(), &recipe, "checkpoint_config", serde_json::Value::Null);
    assert!(msg.contains("checkpoint_config"), "{msg}");
    let msg = refusal(tmp.path(), &recipe, "prediction_type", serde_json::json!("x0"));
    assert!(msg.contains("prediction_type"), "{msg}");
}
