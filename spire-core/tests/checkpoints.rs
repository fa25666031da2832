//! Checkpoints as people hold them (issue #21): diffusers folders with the JSON diffusers
//! writes (Python's `-Infinity`), loaded through the library and the CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::fixtures;
use spire_core::{Restorer, SchedulerConfig, SchedulerKind};

fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// The tiny SPIRE model as a folder whose scheduler is the config diffusers saved after
/// swapping in DPM++ (`"lambda_min_clipped": -Infinity`).
fn dpm_model() -> (tempfile::TempDir, std::path::PathBuf) {
    let (tmp, opts) = common::tiny_spire();
    let model = tmp.path().join("model");
    copy_tree(&fixtures().join("tiny-sd1"), &model);
    copy_tree(opts.adaptor.as_ref().unwrap(), &model.join("adaptor"));
    std::fs::copy(
        fixtures().join("diffusers-dpm/scheduler_config.json"),
        model.join("scheduler/scheduler_config.json"),
    )
    .unwrap();
    (tmp, model)
}

#[test]
fn a_scheduler_config_with_python_infinity_loads() {
    let path = fixtures().join("diffusers-dpm/scheduler_config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("-Infinity"), "the fixture is what diffusers writes");
    let cfg = SchedulerConfig::from_file(&path).unwrap();
    assert_eq!(cfg.kind, SchedulerKind::DpmSolverPlusPlus2M);
    // A finite clipping value is a different sampler: refused by name, not ignored.
    let clipped = text.replace("-Infinity", "-5.1");
    let err = SchedulerConfig::from_json_str(&clipped).unwrap_err();
    assert!(err.to_string().contains("lambda_min_clipped"), "{err}");
    // Where a finite number is needed, Python's constants are refused by key.
    let bad = text.replace("\"beta_start\": 0.00085", "\"beta_start\": NaN");
    assert_ne!(bad, text);
    let err = SchedulerConfig::from_json_str(&bad).unwrap_err();
    assert!(
        err.to_string().contains("beta_start") && err.to_string().contains("NaN"),
        "{err}"
    );
}

#[test]
fn a_model_folder_saved_by_diffusers_with_dpm_loads_and_restores() {
    let (_tmp, model) = dpm_model();
    let r = Restorer::from_pretrained(&model, &Default::default()).unwrap();
    assert_eq!(r.scheduler_config().kind, SchedulerKind::DpmSolverPlusPlus2M);
    let px = common::test_rgb8(64, 64);
    let img = spire_core::ImageView::rgb8(64, 64, &px).unwrap();
    let out = r
        .restore(&img, &r.default_options().with_num_inference_steps(2))
        .unwrap();
    assert_eq!((out.width, out.height), (64, 64));
    // The CLI.
    let src = model.parent().unwrap().join("in.png");
    spire_core::io::save_image(
        &src,
        &spire_core::Image {
            width: 64,
            height: 64,
            color: spire_core::ColorType::Rgb,
            data: spire_core::ImageData::U8(px),
        },
    )
    .unwrap();
    let dst = model.parent().unwrap().join("out.png");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spire"))
        .args([
            "restore",
            src.to_str().unwrap(),
            dst.to_str().unwrap(),
            "--steps",
            "2",
            "--model",
        ])
        .arg(&model)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(spire_core::io::load_image(&dst).unwrap().width, 64);
}
