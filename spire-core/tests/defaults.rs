//! A model's recommended restore options (`spire.json` `defaults`, SPIRE.md §6): they are the
//! starting options of `Restorer::default_options`, and a bad file is a clear error naming the
//! file and the key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{fixtures, test_rgb8, tiny_spire};
use spire_core::options::{OptionKind, OptionSpec, OptionValue, OPTIONS};
use spire_core::{ColorFix, ErrorKind, ImageView, ModelDefaults, RestoreOptions, Restorer, SchedulerKind};

/// A row's library default as a JSON value.
fn json_default(spec: &OptionSpec) -> String {
    match spec.kind {
        OptionKind::Int { .. } | OptionKind::Float { .. } | OptionKind::Bool => spec.default.to_string(),
        _ => format!("\"{}\"", spec.default),
    }
}

fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
}

/// The tiny SD model with the tiny adaptor and this `spire.json`.
fn model_with(
    spire_json: &str,
) -> (
    tempfile::TempDir,
    tempfile::TempDir,
    Result<Restorer, spire_core::Error>,
) {
    let (adaptor_tmp, opts) = tiny_spire();
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&fixtures().join("tiny-sd1"), tmp.path());
    std::fs::write(tmp.path().join("spire.json"), spire_json).unwrap();
    let r = Restorer::from_pretrained(tmp.path(), &opts);
    (tmp, adaptor_tmp, r)
}

#[test]
fn spire_json_defaults_are_the_starting_options() {
    let (_a, _b, r) = model_with(
        r#"{"defaults": {"strength": 0.5, "num_inference_steps": 4, "scheduler": "ddim", "color_fix": "none", "restoration_guidance": 1.5}}"#,
    );
    let r = r.unwrap();
    let d = r.default_options();
    assert_eq!(d.strength, 0.5);
    assert_eq!(d.num_inference_steps, 4);
    assert_eq!(d.scheduler, Some(SchedulerKind::Ddim));
    assert_eq!(d.color_fix, ColorFix::None);
    assert_eq!(d.restoration_guidance, 1.5);
    // Everything it does not name keeps the library default.
    let lib = RestoreOptions::default();
    assert_eq!(d.semantic_guidance, lib.semantic_guidance);
    assert_eq!(d.seed, lib.seed);
    assert_eq!(d.restoration_null_prompt, lib.restoration_null_prompt);

    // Restoring with them is restoring with the same options spelled out.
    let px = test_rgb8(32, 24);
    let view = ImageView::rgb8(32, 24, &px).unwrap();
    let a = r.restore(&view, &d).unwrap();
    let explicit = RestoreOptions::default()
        .with_strength(0.5)
        .with_num_inference_steps(4)
        .with_scheduler(Some(SchedulerKind::Ddim))
        .with_color_fix(ColorFix::None)
        .with_restoration_guidance(1.5);
    let b = r.restore(&view, &explicit).unwrap();
    assert_eq!(a.as_u8().unwrap(), b.as_u8().unwrap());
    let c = r.restore(&view, &RestoreOptions::default()).unwrap();
    assert_ne!(
        a.as_u8().unwrap(),
        c.as_u8().unwrap(),
        "the defaults changed nothing"
    );
}

#[test]
fn no_spire_json_or_no_defaults_means_the_library_defaults() {
    let (_tmp, opts) = tiny_spire();
    let r = Restorer::from_pretrained(fixtures().join("tiny-sd1"), &opts).unwrap();
    assert!(r.defaults().is_empty());
    assert_eq!(
        format!("{:?}", r.default_options()),
        format!("{:?}", RestoreOptions::default())
    );
    let (_a, _b, r) = model_with(r#"{"prediction_type": "sample"}"#);
    assert!(r.unwrap().defaults().is_empty());
}

#[test]
fn every_key_is_read() {
    let text = r#"{"defaults": {"strength": 0.4, "num_inference_steps": 25, "scheduler": "dpm++2m", "eta": 0.0, "restoration_guidance": 1.5, "semantic_guidance": 2.0, "conditioning_scale": 0.8, "color_fix": "adain", "consistency": 0.3, "match_noise": false}}"#;
    let d = ModelDefaults::from_spire_json(text, "x").unwrap();
    let mut o = RestoreOptions::default();
    d.apply(&mut o);
    assert_eq!(o.strength, 0.4);
    assert_eq!(o.num_inference_steps, 25);
    assert_eq!(o.scheduler, Some(SchedulerKind::DpmSolverPlusPlus2M));
    assert_eq!(o.eta, 0.0);
    assert_eq!(o.restoration_guidance, 1.5);
    assert_eq!(o.semantic_guidance, 2.0);
    assert_eq!(o.conditioning_scale, 0.8);
    assert_eq!(o.color_fix, ColorFix::Adain);
    assert_eq!(o.consistency, 0.3);
    assert!(!o.match_noise);
    assert_eq!(d.get("strength"), Some(&OptionValue::Float(0.4)));
    assert_eq!(d.get("scheduler"), Some(&OptionValue::Text("dpm++2m".into())));
    assert_eq!(d.iter().count(), 10);
    // Every recommendable row of the options table is a key, and only those.
    for spec in OPTIONS {
        let one = format!("{{\"defaults\": {{\"{}\": {}}}}}", spec.name, json_default(spec));
        assert_eq!(
            ModelDefaults::from_spire_json(&one, "x").is_ok(),
            spec.recommendable,
            "{one}"
        );
    }
    assert!(!d.is_empty());
}

#[test]
fn bad_spire_json_names_the_file_and_the_key() {
    for (text, needle) in [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (r#"{"defaults": 3}"#, "`defaults` must be an object"),
        (
            r#"{"defaults": {"strenght": 0.4}}"#,
            "unknown key `defaults.strenght`",
        ),
        (
            r#"{"defaults": {"strength": "high"}}"#,
            "`defaults.strength` must be a number",
        ),
        (
            r#"{"defaults": {"num_inference_steps": 2.5}}"#,
            "`defaults.num_inference_steps` must be a whole number",
        ),
        (
            r#"{"defaults": {"scheduler": "lms"}}"#,
            "`defaults.scheduler`: unknown `lms`",
        ),
        (
            r#"{"defaults": {"color_fix": 1}}"#,
            "`defaults.color_fix` must be a string",
        ),
        (r#"{"defaults": {"strength": 1.5}}"#, "strength"),
        (
            r#"{"defaults": {"num_inference_steps": 0}}"#,
            "num_inference_steps",
        ),
    ] {
        let (_a, _b, r) = model_with(text);
        let err = r.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ModelLoad, "{text}: {err}");
        let msg = err.to_string();
        assert!(msg.contains("spire.json"), "{text}: {msg}");
        assert!(msg.contains(needle), "{text}: {msg}");
    }
}
