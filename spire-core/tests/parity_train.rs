//! One adaptor training step equals PyTorch's (fixture from `scripts/make_fixtures.py`): the
//! loss, the gradients of several adaptor tensors (fusion heads, hint conv, body convs, time
//! embedding; with a prompt embedding also its `class_embedding`), and their values after one
//! AdamW step.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use common::{fixtures, reference};
use spire_core::model::{Adaptor, AdaptorConfig, LoadOptions, UNet2DConditionModel};
use spire_core::scheduler::SchedulerConfig;
use spire_core::train::{step::adaptor_loss, AdamW, AdamWConfig, VarStore};

const NAMES: [&str; 6] = [
    "modulation_down_blocks.0.gamma.weight",
    "modulation_down_blocks.4.beta.bias",
    "modulation_mid_block.beta.weight",
    "latent_hint_conv.weight",
    "down_blocks.1.resnets.0.conv1.weight",
    "time_embedding.linear_1.weight",
];

fn rel(a: &Tensor, b: &Tensor) -> f32 {
    let d = common::max_abs_diff(a, b);
    let s = b
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    d / s.max(1e-12)
}

#[test]
fn adaptor_step_equals_pytorch() {
    step_equals_pytorch("train-step", "tiny-spire-adaptor", false, 178, &NAMES);
}

#[test]
fn adaptor_step_with_prompt_embedding_equals_pytorch() {
    let mut names = NAMES.to_vec();
    names.extend(["class_embedding.linear_1.weight", "class_embedding.linear_2.bias"]);
    step_equals_pytorch("train-step-pe", "tiny-spire-adaptor-pe", true, 182, &names);
}

fn step_equals_pytorch(reference_name: &str, adaptor_dir: &str, pooled: bool, n_vars: usize, names: &[&str]) {
    let r = reference(reference_name);
    let unet =
        UNet2DConditionModel::from_dir(&fixtures().join("tiny-sd1/unet"), &LoadOptions::default()).unwrap();
    let sched =
        SchedulerConfig::from_file(&fixtures().join("tiny-sd1/scheduler/scheduler_config.json")).unwrap();
    let adir = fixtures().join(adaptor_dir);
    let weights: HashMap<String, Tensor> =
        candle_core::safetensors::load(adir.join("diffusion_pytorch_model.safetensors"), &Device::Cpu)
            .unwrap();
    let cfg_text = std::fs::read_to_string(adir.join("config.json")).unwrap();
    let cfg = AdaptorConfig::from_json_str(&cfg_text).unwrap();
    let store = VarStore::new(0, &Device::Cpu).with_source(move |k| weights.get(k).cloned());
    let adaptor = Adaptor::new(&cfg, store.var_builder()).unwrap();
    assert_eq!(store.len(), n_vars, "every adaptor tensor is a variable");

    let t: Vec<usize> = r["t"]
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|&x| x as usize)
        .collect();
    let loss = adaptor_loss(
        &unet,
        &adaptor,
        &sched,
        &r["x0"],
        &r["noise"],
        &t,
        &r["ctx_s"],
        &r["ctx_r"],
        pooled.then(|| &r["pooled_r"]),
        &r["hint"],
        0.8,
    )
    .unwrap();
    let l = loss.to_scalar::<f32>().unwrap();
    let want = r["loss"].to_vec1::<f32>().unwrap()[0];
    assert!(
        (l - want).abs() <= 1e-5 * want.abs().max(1.0),
        "loss {l} vs {want}"
    );

    let grads = loss.backward().unwrap();
    let mut by_name = HashMap::new();
    for (name, var) in store.vars() {
        if let Some(g) = grads.get(var.as_tensor()) {
            by_name.insert(name, g.clone());
        }
    }
    for &name in names {
        let g = by_name
            .get(name)
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let e = rel(g, &r[&format!("grad.{name}")]);
        eprintln!("grad {name}: relative max error {e:e}");
        assert!(e < 1e-3, "grad {name}: relative max error {e}");
    }
    let mut opt = AdamW::new(
        store.vars(),
        AdamWConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            warmup_steps: 0,
        },
    )
    .unwrap();
    opt.step(&by_name).unwrap();
    for &name in names {
        let v = store.get(name).unwrap();
        let d = common::max_abs_diff(v.as_tensor(), &r[&format!("after.{name}")]);
        // The first Adam step moves each weight by about lr·g/(|g| + ε): where |g| is near
        // ε (1e-8) the gradients' last-bit differences show, hence 2 % of lr.
        assert!(d < 2e-5, "{name} after AdamW: max abs diff {d}");
        eprintln!("after AdamW {name}: max abs diff {d:e}");
    }
}
