//! Parity of the model components with diffusers / transformers on tiny random checkpoints
//! (fixtures from `scripts/make_fixtures.py`). Tolerance: 1e-4 max abs in f32.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use candle_core::{DType, Device, Tensor};
use common::{assert_close, fixtures, reference, timesteps};
use spire_core::model::{
    Adaptor, AutoencoderKL, ClipTextModel, ClipTokenizer, Control, Injection, LoadOptions,
    UNet2DConditionModel,
};

const TOL: f32 = 1e-4;

fn opts() -> LoadOptions {
    LoadOptions::default()
}

#[test]
fn tokenizer_ids_equal_transformers() {
    let text = std::fs::read_to_string(fixtures().join("ref/tokenizer.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let prompts: Vec<String> = serde_json::from_value(v["prompts"].clone()).unwrap();
    for flavour in ["tiny-sd1", "tiny-sd2"] {
        let tok = ClipTokenizer::from_dir(&fixtures().join(flavour).join("tokenizer")).unwrap();
        let want: Vec<Vec<u32>> = serde_json::from_value(v["ids"][flavour].clone()).unwrap();
        assert_eq!(want.len(), prompts.len());
        for (p, w) in prompts.iter().zip(&want) {
            let got = tok.encode(p).unwrap();
            assert_eq!(&got, w, "{flavour}: prompt {p:?}");
        }
    }
    // SD 2.x pads with "!" (id 0), SD 1.x with end-of-text.
    let sd2 = ClipTokenizer::from_dir(&fixtures().join("tiny-sd2/tokenizer")).unwrap();
    assert_eq!(sd2.pad_id(), 0);
    let sd1 = ClipTokenizer::from_dir(&fixtures().join("tiny-sd1/tokenizer")).unwrap();
    assert_eq!(sd1.pad_id(), sd1.eos_id());
}

#[test]
fn text_encoders_equal_transformers() {
    for flavour in ["tiny-sd1", "tiny-sd2"] {
        let r = reference(&format!("{flavour}-text-encoder"));
        let te = ClipTextModel::from_dir(&fixtures().join(flavour).join("text_encoder"), &opts()).unwrap();
        let ids = r["ids"].to_dtype(DType::U32).unwrap();
        let out = te.forward(&ids).unwrap();
        assert_close(
            &format!("{flavour} last_hidden_state"),
            &out.last_hidden_state,
            &r["last_hidden_state"],
            TOL,
        );
        assert_close(&format!("{flavour} pooled"), &out.pooled, &r["pooled"], TOL);
    }
}

#[test]
fn vae_encoder_and_decoder_equal_diffusers() {
    let r = reference("vae");
    let vae = AutoencoderKL::from_dir(&fixtures().join("tiny-sd1/vae"), &opts()).unwrap();
    let dist = vae.encode(&r["x"]).unwrap();
    assert_close("vae mean", &dist.mean, &r["mean"], TOL);
    assert_close("vae logvar", &dist.logvar, &r["logvar"], TOL);
    let dec = vae.decode(&r["z"]).unwrap();
    assert_close("vae decoded", &dec, &r["decoded"], TOL);
}

#[test]
fn vae_fp16_variant_loads_into_f32() {
    let r = reference("vae");
    let o = opts().with_variant(Some("fp16".into()));
    let vae = AutoencoderKL::from_dir(&fixtures().join("tiny-sd1/vae"), &o).unwrap();
    let dec = vae.decode(&r["z"]).unwrap();
    assert_eq!(dec.dtype(), DType::F32);
    // f16 weights round to ~3 significant digits.
    assert_close("vae decoded from fp16 weights", &dec, &r["decoded"], 2e-2);
}

#[test]
fn unet_sd1_equals_diffusers_with_per_sample_timesteps() {
    let r = reference("tiny-sd1-unet");
    let unet = UNet2DConditionModel::from_dir(&fixtures().join("tiny-sd1/unet"), &opts()).unwrap();
    let out = unet
        .forward(&r["sample"], &timesteps(&r["timesteps"]), &r["context"], None)
        .unwrap();
    assert_close("sd1 unet", &out, &r["out"], TOL);
}

#[test]
fn unet_sd2_equals_diffusers_odd_latent_size() {
    let r = reference("tiny-sd2-unet");
    let unet = UNet2DConditionModel::from_dir(&fixtures().join("tiny-sd2/unet"), &opts()).unwrap();
    assert!(unet.config().use_linear_projection);
    assert_eq!(unet.config().num_attention_heads, vec![2, 4, 8]);
    let out = unet
        .forward(&r["sample"], &timesteps(&r["timesteps"]), &r["context"], None)
        .unwrap();
    assert_close("sd2 unet", &out, &r["out"], TOL);
}

#[test]
fn controlnet_as_pixel_additive_adaptor_equals_diffusers() {
    let r = reference("controlnet");
    let cn = Adaptor::from_dir(&fixtures().join("tiny-controlnet"), &opts()).unwrap();
    let ts = timesteps(&r["timesteps"]);
    let control = cn
        .forward(&r["sample"], &ts, &r["context"], None, &r["cond"], 0.7)
        .unwrap();
    assert_eq!(control.down.len(), 6);
    for (i, inj) in control.down.iter().enumerate() {
        let Injection::Add(t) = inj else {
            panic!("additive expected")
        };
        assert_close(&format!("controlnet down {i}"), t, &r[&format!("down.{i}")], TOL);
    }
    let Some(Injection::Add(mid)) = &control.mid else {
        panic!("mid")
    };
    assert_close("controlnet mid", mid, &r["mid"], TOL);

    // The UNet with `down_block_additional_residuals` / `mid_block_additional_residual`.
    let unet = UNet2DConditionModel::from_dir(&fixtures().join("tiny-sd1/unet"), &opts()).unwrap();
    let out = unet
        .forward(&r["sample"], &ts, &r["context"], Some(&control))
        .unwrap();
    assert_close("unet with controlnet residuals", &out, &r["unet_out"], TOL);
    // And the residuals matter: without them the output differs.
    let plain = unet.forward(&r["sample"], &ts, &r["context"], None).unwrap();
    assert!(common::max_abs_diff(&plain, &r["unet_out"]) > 1e-3);
}

/// SPIRE's prompt embedding is diffusers' `class_embed_type="projection"` fed the pooled
/// restoration-prompt embedding.
#[test]
fn controlnet_prompt_embedding_equals_diffusers_projection_class_embedding() {
    let r = reference("controlnet-pe");
    let dir = fixtures().join("tiny-controlnet-pe");
    let cn = Adaptor::from_dir(&dir, &opts()).unwrap();
    assert!(cn.config().prompt_embedding);
    let ts = timesteps(&r["timesteps"]);
    let control = cn
        .forward(
            &r["sample"],
            &ts,
            &r["context"],
            Some(&r["pooled"]),
            &r["cond"],
            0.7,
        )
        .unwrap();
    let down = |c: &Control, i: usize| -> Tensor {
        let Injection::Add(t) = &c.down[i] else {
            panic!("additive expected")
        };
        t.clone()
    };
    for i in 0..control.down.len() {
        assert_close(
            &format!("controlnet-pe down {i}"),
            &down(&control, i),
            &r[&format!("down.{i}")],
            TOL,
        );
    }
    let Some(Injection::Add(mid)) = &control.mid else {
        panic!("mid")
    };
    assert_close("controlnet-pe mid", mid, &r["mid"], TOL);
    // The embedding reads the prompt: another pooled embedding changes even the first skip
    // signal, which sees no cross-attention; without one the adaptor says what it needs.
    let other = (&r["pooled"] * 0.5).unwrap();
    let moved = cn
        .forward(&r["sample"], &ts, &r["context"], Some(&other), &r["cond"], 0.7)
        .unwrap();
    assert!(common::max_abs_diff(&down(&moved, 1), &down(&control, 1)) > 1e-3);
    let err = cn
        .forward(&r["sample"], &ts, &r["context"], None, &r["cond"], 0.7)
        .unwrap_err()
        .to_string();
    assert!(err.contains("pooled"), "{err}");

    // The config round-trips; a wrong projection width or class embedding type is named.
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let cfg = spire_core::model::AdaptorConfig::from_json_str(&text).unwrap();
    let back = spire_core::model::AdaptorConfig::from_json_str(&cfg.to_json().to_string()).unwrap();
    assert_eq!(back, cfg);
    for (from, to, needles) in [
        (
            "\"projection_class_embeddings_input_dim\": 32",
            "\"projection_class_embeddings_input_dim\": 31",
            ["projection_class_embeddings_input_dim", "32"],
        ),
        (
            "\"class_embed_type\": \"projection\"",
            "\"class_embed_type\": \"timestep\"",
            ["class_embed_type", "timestep"],
        ),
    ] {
        assert!(text.contains(from), "{from}");
        let err = spire_core::model::AdaptorConfig::from_json_str(&text.replace(from, to))
            .unwrap_err()
            .to_string();
        assert!(needles.iter().all(|n| err.contains(n)), "{err}");
    }
}

#[test]
fn unet_rejects_control_of_wrong_shape() {
    let r = reference("controlnet");
    let unet = UNet2DConditionModel::from_dir(&fixtures().join("tiny-sd1/unet"), &opts()).unwrap();
    let bad = Control {
        down: vec![Injection::Add(Tensor::zeros((2, 32, 16, 16), DType::F32, &Device::Cpu).unwrap()); 3],
        mid: None,
    };
    let err = unet
        .forward(
            &r["sample"],
            &timesteps(&r["timesteps"]),
            &r["context"],
            Some(&bad),
        )
        .unwrap_err();
    assert!(err.to_string().contains("skip signals"), "{err}");
}
