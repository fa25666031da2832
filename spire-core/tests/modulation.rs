//! Modulation fusion (SPIRE.md §2.2): a freshly initialised adaptor leaves the backbone exactly
//! unchanged, γ and β receive gradients through the backbone, and once γ/β are non-zero the
//! backbone output follows `f ⊙ (1 + s·γ) + s·β`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use common::{fixtures, reference, timesteps};
use spire_core::model::{
    Adaptor, AdaptorConfig, Fusion, HintMode, Injection, LoadOptions, UNet2DConditionModel,
};
use spire_core::train::VarStore;

fn unet_and_weights() -> (UNet2DConditionModel, HashMap<String, Tensor>) {
    let dir = fixtures().join("tiny-sd1/unet");
    let unet = UNet2DConditionModel::from_dir(&dir, &LoadOptions::default()).unwrap();
    let w = candle_core::safetensors::load(dir.join("diffusion_pytorch_model.safetensors"), &Device::Cpu)
        .unwrap();
    (unet, w)
}

fn fresh_adaptor(
    unet: &UNet2DConditionModel,
    w: &HashMap<String, Tensor>,
    hint: HintMode,
) -> (Adaptor, VarStore) {
    let cfg = AdaptorConfig::from_unet(unet.config(), hint, Fusion::Modulation, 4);
    let w = w.clone();
    Adaptor::from_unet(&cfg, move |k| w.get(k).cloned(), 0, &Device::Cpu).unwrap()
}

fn hint_for(mode: HintMode, b: usize, h: usize, w: usize) -> Tensor {
    let (c, s) = match mode {
        HintMode::Latent => (4, 1),
        HintMode::Pixel => (3, 8),
    };
    Tensor::rand(0f32, 1f32, (b, c, h * s, w * s), &Device::Cpu).unwrap()
}

#[test]
fn fresh_modulation_adaptor_leaves_backbone_bit_identical() {
    let r = reference("tiny-sd1-unet");
    let (unet, w) = unet_and_weights();
    let ts = timesteps(&r["timesteps"]);
    let plain = unet.forward(&r["sample"], &ts, &r["context"], None).unwrap();
    for mode in [HintMode::Latent, HintMode::Pixel] {
        let (adaptor, _vars) = fresh_adaptor(&unet, &w, mode);
        let hint = hint_for(mode, 3, 16, 16);
        let control = adaptor
            .forward(&r["sample"], &ts, &r["context"], None, &hint, 1.0)
            .unwrap();
        assert_eq!(control.down.len(), unet.num_skips());
        // The adaptor's weights are training variables here, which switches LayerNorm and
        // softmax to their differentiable (not bitwise equal) kernels; inference sees plain
        // tensors, as after detaching.
        let detach = |i: &Injection| match i {
            Injection::Modulate { gamma, beta } => Injection::Modulate {
                gamma: gamma.detach(),
                beta: beta.detach(),
            },
            Injection::Add(r) => Injection::Add(r.detach()),
        };
        let control = spire_core::model::Control {
            down: control.down.iter().map(detach).collect(),
            mid: control.mid.as_ref().map(detach),
        };
        let out = unet
            .forward(&r["sample"], &ts, &r["context"], Some(&control))
            .unwrap();
        let a: Vec<f32> = plain.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
        assert!(a.iter().zip(&b).all(|(x, y)| x == y), "{mode:?}: output changed");
    }
}

#[test]
fn from_unet_copies_the_backbone_and_zeroes_the_new_convs() {
    let (unet, w) = unet_and_weights();
    let (_adaptor, vars) = fresh_adaptor(&unet, &w, HintMode::Latent);
    let mut copied = 0;
    for (k, v) in vars.vars() {
        let t = v.as_tensor();
        let maxabs = t
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        if k.starts_with("modulation_") || k.starts_with("latent_hint_conv") {
            assert_eq!(maxabs, 0.0, "{k} must start at zero");
        } else {
            let src = w.get(&k).unwrap_or_else(|| panic!("{k} not in the UNet"));
            assert_eq!(common::max_abs_diff(t, src), 0.0, "{k} not copied");
            copied += 1;
        }
    }
    assert!(copied > 50, "only {copied} tensors copied");
}

#[test]
fn gamma_and_beta_receive_gradients_through_the_backbone() {
    let r = reference("tiny-sd1-unet");
    let (unet, w) = unet_and_weights();
    let (adaptor, vars) = fresh_adaptor(&unet, &w, HintMode::Latent);
    let ts = timesteps(&r["timesteps"]);
    let hint = hint_for(HintMode::Latent, 3, 16, 16);
    let control = adaptor
        .forward(&r["sample"], &ts, &r["context"], None, &hint, 1.0)
        .unwrap();
    let out = unet
        .forward(&r["sample"], &ts, &r["context"], Some(&control))
        .unwrap();
    let target = Tensor::zeros_like(&out).unwrap();
    let loss = (out - target).unwrap().sqr().unwrap().mean_all().unwrap();
    let grads = loss.backward().unwrap();
    let n_skips = unet.num_skips();
    let mut names: Vec<String> = (0..n_skips)
        .flat_map(|i| ["gamma", "beta"].map(|p| format!("modulation_down_blocks.{i}.{p}.weight")))
        .collect();
    names.extend([
        "modulation_mid_block.gamma.weight".into(),
        "modulation_mid_block.beta.weight".into(),
    ]);
    for name in names {
        let var = vars.get(&name).unwrap_or_else(|| panic!("no variable {name}"));
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let norm = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .sqrt()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(norm > 0.0 && norm.is_finite(), "{name}: gradient norm {norm}");
    }
}

#[test]
fn modulation_applies_f_times_one_plus_gamma_plus_beta() {
    let f = Tensor::new(&[[1.0f32, -2.0], [0.5, 4.0]], &Device::Cpu).unwrap();
    let gamma = Tensor::new(&[[0.5f32, 0.5], [-1.0, 0.0]], &Device::Cpu).unwrap();
    let beta = Tensor::new(&[[1.0f32, 0.0], [0.0, -4.0]], &Device::Cpu).unwrap();
    let out = Injection::Modulate { gamma, beta }.apply(&f).unwrap();
    assert_eq!(
        out.to_vec2::<f32>().unwrap(),
        vec![vec![2.5, -3.0], vec![0.0, 0.0]]
    );
}

#[test]
fn conditioning_scale_scales_gamma_and_beta() {
    let r = reference("tiny-sd1-unet");
    let (unet, w) = unet_and_weights();
    let (adaptor, vars) = fresh_adaptor(&unet, &w, HintMode::Latent);
    // Give the fusion heads and the hint conv non-zero weights.
    for (k, v) in vars.vars() {
        if k.starts_with("modulation_") || k.starts_with("latent_hint") {
            v.set(&(spire_core::rng::randn(3, v.shape(), &Device::Cpu).unwrap() * 0.02).unwrap())
                .unwrap();
        }
    }
    let ts = timesteps(&r["timesteps"]);
    let hint = hint_for(HintMode::Latent, 3, 16, 16);
    let c1 = adaptor
        .forward(&r["sample"], &ts, &r["context"], None, &hint, 1.0)
        .unwrap();
    let c05 = adaptor
        .forward(&r["sample"], &ts, &r["context"], None, &hint, 0.5)
        .unwrap();
    for (a, b) in c1.down.iter().zip(&c05.down) {
        let (Injection::Modulate { gamma: g1, beta: b1 }, Injection::Modulate { gamma: g2, beta: b2 }) =
            (a, b)
        else {
            panic!("modulation expected")
        };
        assert!(common::max_abs_diff(&(g1 * 0.5).unwrap(), g2) < 1e-7);
        assert!(common::max_abs_diff(&(b1 * 0.5).unwrap(), b2) < 1e-7);
    }
    let plain = unet.forward(&r["sample"], &ts, &r["context"], None).unwrap();
    let out = unet.forward(&r["sample"], &ts, &r["context"], Some(&c1)).unwrap();
    assert!(
        common::max_abs_diff(&plain, &out) > 1e-4,
        "non-zero γ/β must change the output"
    );
}
