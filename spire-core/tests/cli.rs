//! The `spire` command line: help and version, a restore and a degrade with the built-in model,
//! and the errors a user sees for bad arguments (each names the file, option or clause).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use spire_core::{ColorType, Image, ImageData};

fn spire(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spire"))
        .args(args)
        .output()
        .expect("run the spire binary")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Exits non-zero with `spire: ...` on stderr containing every `needle`.
fn fails_with(args: &[&str], needles: &[&str]) {
    let o = spire(args);
    let err = text(&o.stderr);
    assert!(!o.status.success(), "{args:?} succeeded; stderr: {err}");
    assert!(err.starts_with("spire: "), "{args:?}: stderr `{err}`");
    for n in needles {
        assert!(err.contains(n), "{args:?}: stderr `{err}` does not name `{n}`");
    }
}

fn write_png(path: &Path, w: usize, h: usize) {
    let img = Image {
        width: w,
        height: h,
        color: ColorType::Rgb,
        data: ImageData::U8(common::test_rgb8(w, h)),
    };
    spire_core::io::save_image(path, &img).unwrap();
}

#[test]
fn help_and_version() {
    for args in [&["help"][..], &["--help"], &["-h"], &["restore", "--help"], &[]] {
        let o = spire(args);
        assert!(o.status.success(), "{args:?}: {}", text(&o.stderr));
        assert!(
            text(&o.stdout).contains("Usage:"),
            "{args:?}: {}",
            text(&o.stdout)
        );
    }
    // `restore --help` lists every row of the options table, with its alias and default.
    let help = text(&spire(&["restore", "--help"]).stdout);
    for row in spire_core::options::OPTIONS {
        let flag = format!("--{}", row.name.replace('_', "-"));
        assert!(help.contains(&flag), "restore --help lacks {flag}");
    }
    assert!(
        help.contains("[alias: --prompt]") && help.contains("[default: 20]"),
        "{help}"
    );
    // Shell completions name the commands and the options.
    for shell in ["bash", "zsh", "fish"] {
        let o = spire(&["completions", shell]);
        assert!(o.status.success(), "{shell}: {}", text(&o.stderr));
        let script = text(&o.stdout);
        assert!(
            script.contains("restore-dir") && script.contains("upsample-input"),
            "{shell}"
        );
    }
    fails_with(&["completions", "tcsh"], &["tcsh"]);
    let o = spire(&["--version"]);
    assert!(o.status.success());
    assert_eq!(
        text(&o.stdout).trim(),
        format!("spire {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn restores_and_degrades_a_png_with_the_builtin_model() {
    let dir = tempfile::tempdir().unwrap();
    let (input, degraded, out) = (
        dir.path().join("in.png"),
        dir.path().join("deg.png"),
        dir.path().join("out.png"),
    );
    write_png(&input, 40, 36);
    let o = spire(&[
        "degrade",
        input.to_str().unwrap(),
        degraded.to_str().unwrap(),
        "--seed",
        "3",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let d = spire_core::io::load_image(&degraded).unwrap();
    assert_eq!((d.width, d.height), (40, 36));

    let restore = |to: &Path| {
        spire(&[
            "restore",
            degraded.to_str().unwrap(),
            to.to_str().unwrap(),
            "--prompt",
            "Denoise with sigma 0.1",
            "--steps",
            "50",
            "--seed",
            "7",
        ])
    };
    let o = restore(&out);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("\"Denoise with sigma 0.10\""),
        "{}",
        text(&o.stdout)
    );
    let r = spire_core::io::load_image(&out).unwrap();
    assert_eq!((r.width, r.height, r.color), (40, 36, ColorType::Rgb));
    assert_ne!(r.data, d.data, "the restoration returned its input");

    // Same seed and options, same file.
    let again = dir.path().join("again.png");
    let o = restore(&again);
    assert!(o.status.success());
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());

    // Boolean rows as bare flags or `--flag=value`: an upsample prompt on an image already
    // enlarged keeps its size with `--upsample-input=false`, and grows by the factor with the
    // bare `--upsample-input`.
    let sized = |extra: &str| {
        let to = dir.path().join("up.png");
        let o = spire(&[
            "restore",
            degraded.to_str().unwrap(),
            to.to_str().unwrap(),
            "--prompt=Upsample with scale 2",
            "--steps=50",
            extra,
        ]);
        assert!(o.status.success(), "{extra}: {}", text(&o.stderr));
        let r = spire_core::io::load_image(&to).unwrap();
        (r.width, r.height)
    };
    assert_eq!(sized("--upsample-input=false"), (40, 36));
    assert_eq!(sized("--upsample-input"), (80, 72));
}

#[test]
fn bad_arguments_name_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    write_png(&input, 16, 16);
    let (i, o) = (input.to_str().unwrap(), dir.path().join("o.png"));
    let o = o.to_str().unwrap();
    let missing = dir.path().join("nope.png");
    fails_with(&["frobnicate"], &["frobnicate", "Usage:"]);
    fails_with(&["restore", i], &["<output>"]);
    fails_with(
        &["restore", i, o, "--colour", "x"],
        &["'--colour'", "--color-fix"],
    );
    fails_with(
        &["restore", i, o, "--steps"],
        &["a value is required", "--num-inference-steps"],
    );
    fails_with(
        &["restore", i, o, "--steps", "many"],
        &["--num-inference-steps", "`many`"],
    );
    fails_with(
        &["restore", i, o, "--steps=0"],
        &["--num-inference-steps", "got 0"],
    );
    fails_with(&["restore", i, o, "--eta", "-1"], &["--eta", "got -1"]);
    fails_with(
        &["restore", i, o, "--scheduler", "heun"],
        &["--scheduler", "`heun`"],
    );
    fails_with(
        &["restore", i, o, "--color-fix", "sepia"],
        &["--color-fix", "`sepia`"],
    );
    fails_with(
        &["restore", i, o, "--match-noise=maybe"],
        &["--match-noise", "`maybe`"],
    );
    fails_with(
        &["restore", i, o, "--prompt", "Deblur with sigma two"],
        &["Deblur with sigma two"],
    );
    fails_with(&["restore", missing.to_str().unwrap(), o], &["nope.png"]);
    fails_with(
        &[
            "restore",
            i,
            o,
            "--model",
            dir.path().join("no-model").to_str().unwrap(),
        ],
        &["no-model"],
    );
    // Not an image: the file is named.
    let junk = dir.path().join("junk.png");
    std::fs::write(&junk, b"not a picture").unwrap();
    fails_with(&["restore", junk.to_str().unwrap(), o], &["junk.png"]);
    fails_with(
        &["degrade", i, o, "--pipeline", "bokeh"],
        &["--pipeline", "`bokeh`"],
    );
    fails_with(&["train", "--config", missing.to_str().unwrap()], &["nope.png"]);
    assert!(!Path::new(o).exists(), "a failed run wrote its output");
}

#[test]
fn unpacks_the_builtin_model_into_a_folder_that_restores() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    let o = spire(&["unpack-builtin", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(dir.join("unet/diffusion_pytorch_model.safetensors").is_file());
    let (inp, out) = (tmp.path().join("in.png"), tmp.path().join("out.png"));
    write_png(&inp, 24, 16);
    let o = spire(&[
        "restore",
        inp.to_str().unwrap(),
        out.to_str().unwrap(),
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        "Denoise with sigma 0.05",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(out.is_file());
    // Bad invocations name what is wrong.
    fails_with(&["unpack-builtin"], &["<out-dir>"]);
    fails_with(&["unpack-builtin", "x", "--to", "y"], &["--to"]);
    let junk = tmp.path().join("junk.safetensors");
    std::fs::write(&junk, "junk").unwrap();
    fails_with(
        &[
            "unpack-builtin",
            tmp.path().join("j").to_str().unwrap(),
            "--from",
            junk.to_str().unwrap(),
        ],
        &["junk.safetensors"],
    );
    fails_with(
        &[
            "unpack-builtin",
            "x",
            "--from",
            tmp.path().join("missing.st").to_str().unwrap(),
        ],
        &["missing.st"],
    );
}

#[test]
fn device_dtype_and_threads_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.png");
    write_png(&input, 24, 16);
    let inp = input.to_str().unwrap();
    // Half precision and a thread count work on the CPU at this size.
    for dtype in ["f16", "bf16", "f32"] {
        let out = tmp.path().join(format!("out-{dtype}.png"));
        let o = spire(&[
            "restore",
            inp,
            out.to_str().unwrap(),
            "--device",
            "cpu",
            "--dtype",
            dtype,
            "--threads",
            "1",
        ]);
        assert!(o.status.success(), "--dtype {dtype}: {}", text(&o.stderr));
        let img = spire_core::io::load_image(&out).unwrap();
        assert_eq!((img.width, img.height), (24, 16));
    }
    let out = tmp.path().join("x.png");
    let out = out.to_str().unwrap();
    // A GPU this build was made without: the message names the device and the feature.
    fails_with(
        &["restore", inp, out, "--device", "cuda"],
        &["--device", "`cuda`", "--features cuda"],
    );
    fails_with(
        &["restore", inp, out, "--device", "metal:1"],
        &["`metal:1`", "--features metal"],
    );
    fails_with(
        &["restore", inp, out, "--device", "tpu"],
        &["--device", "unknown device `tpu`"],
    );
    fails_with(&["restore", inp, out, "--dtype", "int8"], &["--dtype", "int8"]);
    // Weights kept in f16 with f32 arithmetic: the built-in model's file stores f16, so the
    // output is the f32 one byte for byte.
    let f16w = tmp.path().join("out-f16-weights.png");
    let o = spire(&[
        "restore",
        inp,
        f16w.to_str().unwrap(),
        "--weight-dtype",
        "f16",
        "--threads",
        "1",
    ]);
    assert!(o.status.success(), "--weight-dtype f16: {}", text(&o.stderr));
    assert_eq!(
        spire_core::io::load_image(&f16w).unwrap().as_u8().unwrap(),
        spire_core::io::load_image(tmp.path().join("out-f32.png"))
            .unwrap()
            .as_u8()
            .unwrap()
    );
    fails_with(
        &["restore", inp, out, "--weight-dtype", "int8"],
        &["--weight-dtype", "int8"],
    );
    fails_with(&["restore", inp, out, "--threads", "0"], &["--threads"]);
    fails_with(
        &["eval", "--data", inp, "--device", "cuda:1"],
        &["`cuda:1`", "--features cuda"],
    );
    fails_with(
        &["train", "--config", "recipes/none.json", "--device", "cuda"],
        &["recipes/none.json"],
    );
    assert!(!Path::new(out).exists(), "nothing written on failure");
}

#[test]
fn images_smaller_than_2x2_are_refused_as_in_python_and_c() {
    let tmp = tempfile::tempdir().unwrap();
    for (w, h) in [(1, 1), (1, 64), (64, 1)] {
        let input = tmp.path().join(format!("in-{w}x{h}.png"));
        write_png(&input, w, h);
        let out = tmp.path().join("out.png");
        let size = format!("{w}×{h}");
        fails_with(
            &["restore", input.to_str().unwrap(), out.to_str().unwrap()],
            &[&size, "at least 2×2"],
        );
        fails_with(
            &["degrade", input.to_str().unwrap(), out.to_str().unwrap()],
            &["at least 2×2"],
        );
        assert!(!out.exists());
    }
}
