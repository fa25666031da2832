//! Single-file checkpoints in the original Stable Diffusion layout (issue #21): tiny SD 1.x
//! and SD 2.x files and a single-file ControlNet, written by `scripts/make_fixtures.py
//! single_file` and checked there with diffusers' own `from_single_file`, whose outputs are the
//! references. Each file loads two ways — with a config folder holding diffusers' configs, and
//! with one holding only `tokenizer/` and `scheduler/` (the architecture inferred from the
//! tensors) — and both must match. Pickles and unknown layouts are refused with clear errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::{assert_close, fixtures, reference};
use spire_core::model::{Adaptor, Generation, Injection, SingleFile};
use spire_core::{ColorType, ErrorKind, ImageView, LoadOptions, Restorer};

const TOL: f32 = 1e-4;

fn sf(name: &str) -> PathBuf {
    fixtures().join("single-file").join(name)
}

/// A config folder with only what a single file lacks: the tokenizer and the scheduler.
fn minimal_config(flavour: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for sub in ["tokenizer", "scheduler"] {
        let src = sf(&format!("{flavour}-config")).join(sub);
        std::fs::create_dir_all(tmp.path().join(sub)).unwrap();
        for e in std::fs::read_dir(&src).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), tmp.path().join(sub).join(e.file_name())).unwrap();
        }
    }
    tmp
}

fn opts(config: &Path) -> LoadOptions {
    LoadOptions::default().with_config(Some(config.to_path_buf()))
}

fn ts(t: &Tensor) -> Vec<f32> {
    t.to_vec1().unwrap()
}

fn check_components(flavour: &str, m: &SingleFile, r: &HashMap<String, Tensor>, how: &str) {
    let key = |k: &str| format!("{flavour}.{k}");
    let ids = r[&key("ids")].to_dtype(DType::U32).unwrap();
    let text = m.text_encoder.forward(&ids).unwrap();
    assert_close(
        &format!("{flavour} {how} text"),
        &text.last_hidden_state,
        &r[&key("text")],
        TOL,
    );
    assert_close(
        &format!("{flavour} {how} pooled"),
        &text.pooled,
        &r[&key("pooled")],
        TOL,
    );
    let out = m
        .unet
        .forward(
            &r[&key("sample")],
            &ts(&r[&key("timesteps")]),
            &r[&key("text")],
            None,
        )
        .unwrap();
    assert_close(&format!("{flavour} {how} unet"), &out, &r[&key("unet")], TOL);
    let mean = m.vae.encode(&r[&key("x")]).unwrap().mean;
    assert_close(&format!("{flavour} {how} vae mean"), &mean, &r[&key("mean")], TOL);
    let dec = m.vae.decode(&r[&key("z")]).unwrap();
    assert_close(
        &format!("{flavour} {how} vae decoded"),
        &dec,
        &r[&key("decoded")],
        TOL,
    );
}

#[test]
fn sd1_file_matches_diffusers_from_single_file_with_and_without_configs() {
    let r = reference("single-file");
    let full = SingleFile::load(&sf("tiny-sd1.safetensors"), &opts(&sf("sd1-config"))).unwrap();
    assert_eq!(full.generation, Generation::Sd1);
    check_components("sd1", &full, &r, "configs");
    let min = minimal_config("sd1");
    let inferred = SingleFile::load(&sf("tiny-sd1.safetensors"), &opts(min.path())).unwrap();
    // The inferred architecture is the one diffusers' config states.
    assert_eq!(inferred.unet.config(), full.unet.config());
    assert_eq!(inferred.vae.config(), full.vae.config());
    check_components("sd1", &inferred, &r, "inferred");
}

#[test]
fn sd2_file_with_openclip_in_proj_and_penultimate_layer_matches_diffusers() {
    let r = reference("single-file");
    let full = SingleFile::load(&sf("tiny-sd2.safetensors"), &opts(&sf("sd2-config"))).unwrap();
    assert_eq!(full.generation, Generation::Sd2);
    check_components("sd2", &full, &r, "configs");
    let min = minimal_config("sd2");
    let inferred = SingleFile::load(&sf("tiny-sd2.safetensors"), &opts(min.path())).unwrap();
    let (a, b) = (inferred.unet.config(), full.unet.config());
    assert!(a.use_linear_projection && b.use_linear_projection);
    assert_eq!(a.num_attention_heads, b.num_attention_heads);
    assert_eq!(a.block_out_channels, b.block_out_channels);
    // The file has 3 OpenCLIP layers; SD 2.x reads the penultimate one, so 2 are built.
    assert_eq!(inferred.text_encoder.config().num_hidden_layers, 2);
    check_components("sd2", &inferred, &r, "inferred");
}

#[test]
fn single_file_controlnet_matches_diffusers() {
    let r = reference("single-file");
    let min = minimal_config("sd1");
    let sd = SingleFile::load(&sf("tiny-sd1.safetensors"), &opts(min.path())).unwrap();
    let cn = Adaptor::from_path(
        &sf("tiny-controlnet.safetensors"),
        sd.unet.config(),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(cn.config().conditioning_embedding_out_channels, vec![4, 8, 8, 16]);
    let control = cn
        .forward(
            &r["sd1.sample"],
            &ts(&r["sd1.timesteps"]),
            &r["sd1.text"],
            None,
            &r["cn.cond"],
            0.7,
        )
        .unwrap();
    for (i, inj) in control.down.iter().enumerate() {
        let Injection::Add(t) = inj else {
            panic!("additive expected")
        };
        assert_close(
            &format!("controlnet down {i}"),
            t,
            &r[&format!("cn.down.{i}")],
            TOL,
        );
    }
    let Some(Injection::Add(mid)) = &control.mid else {
        panic!("mid")
    };
    assert_close("controlnet mid", mid, &r["cn.mid"], TOL);
}

#[test]
fn restorer_from_single_files_equals_diffusers_controlnet_pipeline_from_single_file() {
    let r = reference("single-file-pipeline");
    let min = minimal_config("sd1");
    let o = opts(min.path()).with_adaptor(Some(sf("tiny-controlnet.safetensors")));
    let restorer = Restorer::from_single_file(sf("tiny-sd1.safetensors"), &o).unwrap();
    let image: Vec<f32> = r["image"].flatten_all().unwrap().to_vec1().unwrap();
    let out = restorer
        .restore(
            &ImageView::rgb_f32(48, 64, &image).unwrap(),
            &common::pipeline_options(&r),
        )
        .unwrap();
    assert_eq!((out.width, out.height, out.color), (48, 64, ColorType::Rgb));
    let got = out.as_f32().unwrap();
    let want: Vec<f32> = r["out"].flatten_all().unwrap().to_vec1().unwrap();
    let d = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let spread = want.iter().fold(0f32, |m, &v| m.max((v - 0.5).abs()));
    assert!(spread > 0.05, "reference output is flat");
    assert!(d < 2e-3, "max abs diff {d}");
    eprintln!("single-file pipeline: max abs diff {d:e}");
}

#[test]
fn a_single_file_controlnet_also_loads_next_to_a_diffusers_folder() {
    // The folder path takes the same adaptor files: tiny-sd1's UNet has other widths than the
    // tiny ControlNet's backbone, so the shapes are checked and the error names the tensor.
    let o = LoadOptions::default().with_adaptor(Some(sf("tiny-controlnet.safetensors")));
    let e = Restorer::from_pretrained(fixtures().join("tiny-sd1"), &o).unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.kind(), ErrorKind::ModelLoad, "{msg}");
    assert!(
        msg.contains("tiny-controlnet.safetensors") && msg.contains("shape"),
        "{msg}"
    );
}

#[test]
fn sd2_defaults_to_v_prediction_and_the_option_overrides_it() {
    let min = tempfile::tempdir().unwrap();
    // Only the tokenizer: no scheduler config, so the generation's default applies.
    let tok = sf("sd2-config").join("tokenizer");
    std::fs::create_dir_all(min.path().join("tokenizer")).unwrap();
    for e in std::fs::read_dir(&tok).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), min.path().join("tokenizer").join(e.file_name())).unwrap();
    }
    // An SD2-shaped adaptor for the tiny SD2 backbone: a SPIRE adaptor trained on it would
    // be a folder; here a ControlNet built from the file's own UNet is enough to assemble.
    let sd = SingleFile::load(&sf("tiny-sd2.safetensors"), &opts(min.path())).unwrap();
    let cfg = spire_core::model::AdaptorConfig::from_unet(
        sd.unet.config(),
        spire_core::model::HintMode::Latent,
        spire_core::model::Fusion::Modulation,
        4,
    );
    let dir = tempfile::tempdir().unwrap();
    let adaptor_dir = dir.path().join("adaptor");
    std::fs::create_dir_all(&adaptor_dir).unwrap();
    std::fs::write(adaptor_dir.join("config.json"), cfg.to_json().to_string()).unwrap();
    let (_, vars) = Adaptor::from_unet(&cfg, |_| None, 3, &Device::Cpu).unwrap();
    vars.save(&adaptor_dir.join("diffusion_pytorch_model.safetensors"), false)
        .unwrap();
    let base = opts(min.path()).with_adaptor(Some(adaptor_dir));
    let r = Restorer::from_single_file(sf("tiny-sd2.safetensors"), &base).unwrap();
    assert_eq!(
        r.scheduler_config().prediction_type,
        spire_core::scheduler::PredictionType::VPrediction
    );
    let eps = Restorer::from_single_file(
        sf("tiny-sd2.safetensors"),
        &base.with_prediction_type(Some(spire_core::scheduler::PredictionType::Epsilon)),
    )
    .unwrap();
    assert_eq!(
        eps.scheduler_config().prediction_type,
        spire_core::scheduler::PredictionType::Epsilon
    );
}

fn load_err(path: &Path, o: &LoadOptions) -> String {
    let e = Restorer::from_single_file(path, o).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ModelLoad, "{e}");
    e.to_string()
}

#[test]
fn pickle_checkpoints_are_refused_with_the_conversion_command() {
    let tmp = tempfile::tempdir().unwrap();
    let o = opts(&sf("sd1-config")).with_adaptor(Some(sf("tiny-controlnet.safetensors")));
    for (name, bytes) in [
        ("v1-5-pruned.ckpt", b"PK\x03\x04archive/data.pkl....".to_vec()),
        ("model.bin", vec![0x80, 0x02, b'c', b'o', b's']),
        ("renamed.safetensors", b"PK\x03\x04....".to_vec()),
    ] {
        let p = tmp.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let msg = load_err(&p, &o);
        assert!(msg.contains(name), "{msg}");
        assert!(msg.contains("pickle") && msg.contains("safetensors"), "{msg}");
        assert!(
            msg.contains("st.save_file") && msg.contains("weights_only=True"),
            "{msg}"
        );
    }
    // Also as the adaptor.
    let p = tmp.path().join("control_v11f1e_sd15_tile.pth");
    std::fs::write(&p, b"PK\x03\x04....").unwrap();
    let o2 = opts(&sf("sd1-config")).with_adaptor(Some(p));
    let msg = load_err(&sf("tiny-sd1.safetensors"), &o2);
    assert!(
        msg.contains("control_v11f1e_sd15_tile.pth") && msg.contains("pickle"),
        "{msg}"
    );
}

fn write_st(path: &Path, tensors: &[(&str, Tensor)]) {
    let map: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, t)| ((*k).to_string(), t.clone()))
        .collect();
    candle_core::safetensors::save(&map, path).unwrap();
}

#[test]
fn unknown_layouts_and_swapped_files_say_what_they_are() {
    let tmp = tempfile::tempdir().unwrap();
    let o = opts(&sf("sd1-config")).with_adaptor(Some(sf("tiny-controlnet.safetensors")));
    let z = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
    let p = tmp.path().join("odd.safetensors");
    write_st(
        &p,
        &[
            ("encoder.layer.0.weight", z.clone()),
            ("lm_head.weight", z.clone()),
        ],
    );
    let msg = load_err(&p, &o);
    assert!(
        msg.contains("no known checkpoint layout") && msg.contains("`encoder.layer.0.weight`"),
        "{msg}"
    );

    let p = tmp.path().join("sdxl.safetensors");
    write_st(&p, &[("conditioner.embedders.0.transformer.x", z.clone())]);
    assert!(load_err(&p, &o).contains("SDXL"));

    // The ControlNet given as the checkpoint, and the checkpoint given as the ControlNet.
    let msg = load_err(&sf("tiny-controlnet.safetensors"), &o);
    assert!(msg.contains("this is a ControlNet"), "{msg}");
    let o2 = opts(&sf("sd1-config")).with_adaptor(Some(sf("tiny-sd1.safetensors")));
    let msg = load_err(&sf("tiny-sd1.safetensors"), &o2);
    assert!(msg.contains("not a ControlNet"), "{msg}");

    // A UNet block of an architecture this loader does not know.
    let mut t = candle_core::safetensors::load(sf("tiny-sd1.safetensors"), &Device::Cpu).unwrap();
    t.insert("model.diffusion_model.label_emb.0.0.weight".into(), z.clone());
    let p = tmp.path().join("extra.safetensors");
    candle_core::safetensors::save(&t, &p).unwrap();
    let msg = load_err(&p, &o);
    assert!(
        msg.contains("`model.diffusion_model.label_emb.0.0.weight`"),
        "{msg}"
    );

    // No tokenizer, no adaptor.
    let msg = load_err(
        &sf("tiny-sd1.safetensors"),
        &LoadOptions::default().with_adaptor(Some(sf("tiny-controlnet.safetensors"))),
    );
    assert!(msg.contains("tokenizer"), "{msg}");
    let msg = load_err(&sf("tiny-sd1.safetensors"), &opts(&sf("sd1-config")));
    assert!(msg.contains("adaptor"), "{msg}");
}

#[test]
fn a_fused_projection_of_the_wrong_size_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut t = candle_core::safetensors::load(sf("tiny-sd2.safetensors"), &Device::Cpu).unwrap();
    let key = "cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight";
    // 2 of the 3 projections: the v rows do not exist.
    let short = t[key].narrow(0, 0, 128).unwrap();
    t.insert(key.into(), short);
    let p = tmp.path().join("short.safetensors");
    candle_core::safetensors::save(&t, &p).unwrap();
    let e = SingleFile::load(&p, &opts(&sf("sd2-config"))).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(key) && msg.contains("short.safetensors"), "{msg}");

    // A UNet tensor of the wrong shape names the diffusers key and both shapes.
    let mut t = candle_core::safetensors::load(sf("tiny-sd1.safetensors"), &Device::Cpu).unwrap();
    t.insert(
        "model.diffusion_model.input_blocks.1.0.in_layers.2.weight".into(),
        Tensor::zeros((32, 32, 1, 1), DType::F16, &Device::Cpu).unwrap(),
    );
    let p = tmp.path().join("bad-conv.safetensors");
    candle_core::safetensors::save(&t, &p).unwrap();
    let msg = SingleFile::load(&p, &opts(&sf("sd1-config")))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("down_blocks.0.resnets.0.conv1.weight") && msg.contains("[32, 32, 1, 1]"),
        "{msg}"
    );
}

fn spire(args: &[&std::ffi::OsStr]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_spire"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_cli_restores_with_checkpoint_and_controlnet_files() {
    let tmp = tempfile::tempdir().unwrap();
    let min = minimal_config("sd1");
    let px = common::test_rgb8(40, 32);
    let src = tmp.path().join("in.png");
    spire_core::io::save_image(
        &src,
        &spire_core::Image {
            width: 40,
            height: 32,
            color: ColorType::Rgb,
            data: spire_core::ImageData::U8(px),
        },
    )
    .unwrap();
    let dst = tmp.path().join("out.png");
    let ckpt = sf("tiny-sd1.safetensors");
    let cn = sf("tiny-controlnet.safetensors");
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    let out = spire(&[
        os("restore"),
        src.as_os_str(),
        dst.as_os_str(),
        os("--checkpoint"),
        ckpt.as_os_str(),
        os("--controlnet"),
        cn.as_os_str(),
        os("--config"),
        min.path().as_os_str(),
        os("--steps"),
        os("2"),
        os("--caption"),
        os("a red motorcycle"),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let img = spire_core::io::load_image(&dst).unwrap();
    assert_eq!((img.width, img.height), (40, 32));

    // A pickle through the CLI: exit 1, the file named, nothing written.
    let pk = tmp.path().join("v1-5-pruned-emaonly.ckpt");
    std::fs::write(&pk, b"PK\x03\x04 not really").unwrap();
    let dst2 = tmp.path().join("never.png");
    let out = spire(&[
        os("restore"),
        src.as_os_str(),
        dst2.as_os_str(),
        os("--checkpoint"),
        pk.as_os_str(),
        os("--controlnet"),
        cn.as_os_str(),
        os("--config"),
        min.path().as_os_str(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("v1-5-pruned-emaonly.ckpt") && err.contains("pickle"),
        "{err}"
    );
    assert!(!dst2.exists());
    // --model and --checkpoint together, and --controlnet alone, are usage errors.
    let out = spire(&[
        os("restore"),
        src.as_os_str(),
        dst2.as_os_str(),
        os("--checkpoint"),
        ckpt.as_os_str(),
        os("--model"),
        min.path().as_os_str(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("give one"));
    let out = spire(&[
        os("restore"),
        src.as_os_str(),
        dst2.as_os_str(),
        os("--controlnet"),
        cn.as_os_str(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--controlnet needs"));
}
