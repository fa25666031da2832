//! Hostile files and options (issue #25's crash, hang and silent-NaN cases): each gives a typed
//! error naming the file, key or option, within a bounded time, and nothing is allocated
//! from an unchecked size.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use common::fixtures;
use spire_core::model::{AutoencoderKL, ClipTextModel, ClipTokenizer, UNet2DConditionModel};
use spire_core::{ErrorKind, LoadOptions, RestoreOptions, SchedulerConfig};

/// Runs `f` on another thread and fails the test if it takes longer than 30 s (a hang), instead
/// of hanging the suite.
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{what}: no answer within 30 s (hang)"))
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

/// A scratch copy of `component` with `field` of its config set to `value`.
fn with_config(
    component: &str,
    file: &str,
    field: &str,
    value: serde_json::Value,
) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    copy_dir(&fixtures().join(component), &dir);
    let p = dir.join(file);
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    cfg[field] = value;
    std::fs::write(&p, cfg.to_string()).unwrap();
    (tmp, dir)
}

fn load_error(component: &str, field: &str, value: serde_json::Value) -> String {
    let what = format!("{component} {field} = {value}");
    let (tmp, dir) = with_config(component, "config.json", field, value);
    let kind = component.rsplit('/').next().unwrap().to_string();
    let err = bounded(&what, move || {
        let o = LoadOptions::default();
        let r = match kind.as_str() {
            "unet" => UNet2DConditionModel::from_dir(&dir, &o).map(|_| ()),
            "vae" => AutoencoderKL::from_dir(&dir, &o).map(|_| ()),
            _ => ClipTextModel::from_dir(&dir, &o).map(|_| ()),
        };
        drop(tmp);
        r.unwrap_err()
    });
    assert_eq!(err.kind(), ErrorKind::ModelLoad, "{what}: {err}");
    let msg = err.to_string();
    assert!(
        msg.contains("config.json") && msg.contains(field),
        "{what}: {msg}"
    );
    msg
}

#[test]
fn configs_out_of_range_are_refused_by_file_key_and_range() {
    // Were: a division by zero (panic), capacity overflows (panic) and 1e12 allocations (abort).
    for component in ["tiny-sd1/unet", "tiny-sd1/vae"] {
        let m = load_error(component, "norm_num_groups", 0.into());
        assert!(m.contains("at least 1"), "{m}");
        for v in [1e12 as u64, 1 << 62] {
            let m = load_error(component, "layers_per_block", v.into());
            assert!(m.contains("out of range"), "{m}");
        }
    }
    // Silent black images before: a negative epsilon, a zero or huge scaling factor, a huge shift.
    let m = load_error("tiny-sd1/text_encoder", "layer_norm_eps", (-1e-5).into());
    assert!(m.contains("> 0"), "{m}");
    load_error("tiny-sd1/unet", "norm_eps", 0.0.into());
    for v in [0.0, 1e308] {
        let m = load_error("tiny-sd1/vae", "scaling_factor", v.into());
        assert!(m.contains("non-zero"), "{m}");
    }
    load_error("tiny-sd1/vae", "shift_factor", 1e30.into());
    load_error("tiny-sd1/text_encoder", "vocab_size", (1u64 << 40).into());
}

#[test]
fn scheduler_configs_out_of_range_are_refused() {
    let bad = |field: &str, value: serde_json::Value| {
        let mut cfg: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join("tiny-sd1/scheduler/scheduler_config.json")).unwrap(),
        )
        .unwrap();
        cfg[field] = value;
        let text = cfg.to_string();
        let err = bounded(field, move || SchedulerConfig::from_json_str(&text).unwrap_err());
        assert_eq!(err.kind(), ErrorKind::ModelLoad, "{field}: {err}");
        assert!(err.to_string().contains(field), "{err}");
        err.to_string()
    };
    // Was an abort (a 1e12-element allocation) and a capacity-overflow panic.
    for v in [1e12 as u64, 1 << 62] {
        assert!(bad("num_train_timesteps", v.into()).contains("out of range"));
    }
    assert!(bad("beta_start", (-0.001).into()).contains("(0, 1)"));
    assert!(bad("beta_end", 1.5.into()).contains("(0, 1)"));
    let mut betas = vec![serde_json::json!(0.01); 1000];
    betas[3] = serde_json::json!(1.5);
    let m = bad("trained_betas", serde_json::Value::Array(betas));
    assert!(m.contains("value 3 is 1.5"), "{m}");
}

#[test]
fn step_counts_and_strengths_out_of_range_are_refused_at_once() {
    // Were: an endless loop (strength below ~5e-20) and aborts / overflow panics (huge counts).
    for strength in [1e-30, 5e-20, 1e-19, 1e-9] {
        let o = RestoreOptions::default().with_strength(strength);
        let err = bounded("strength", move || o.validate().unwrap_err());
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("strength"), "{err}");
    }
    for steps in [10_001, u32::MAX as usize, usize::MAX] {
        let o = RestoreOptions::default().with_num_inference_steps(steps);
        let err = o.validate().unwrap_err();
        assert!(
            err.to_string().contains("num_inference_steps") && err.to_string().contains("10000"),
            "{err}"
        );
    }
    // The largest step count is accepted, and the hint names the smallest count that runs.
    let o = RestoreOptions::default().with_num_inference_steps(10_000);
    o.validate().unwrap();
    let o = RestoreOptions::default()
        .with_strength(0.001)
        .with_num_inference_steps(20);
    let m = o.validate().unwrap_err().to_string();
    assert!(m.contains("at least 1000 steps"), "{m}");
}

fn mkfifo(path: &Path) {
    let st = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo");
    assert!(st.success());
}

#[test]
fn a_fifo_in_place_of_a_model_file_is_an_error_not_a_hang() {
    // Tokenizer side files.
    for name in ["special_tokens_map.json", "tokenizer_config.json"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tokenizer");
        copy_dir(&fixtures().join("tiny-sd1/tokenizer"), &dir);
        let _ = std::fs::remove_file(dir.join(name));
        mkfifo(&dir.join(name));
        let d = dir.clone();
        let err = bounded(name, move || ClipTokenizer::from_dir(&d).unwrap_err());
        assert_eq!(err.kind(), ErrorKind::Io, "{err}");
        let m = err.to_string();
        assert!(m.contains(name) && m.contains("not a regular file"), "{m}");
    }
    // The weights file and a config.
    for name in ["diffusion_pytorch_model.safetensors", "config.json"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("unet");
        copy_dir(&fixtures().join("tiny-sd1/unet"), &dir);
        std::fs::remove_file(dir.join(name)).unwrap();
        mkfifo(&dir.join(name));
        let d = dir.clone();
        let err = bounded(name, move || {
            UNet2DConditionModel::from_dir(&d, &LoadOptions::default()).unwrap_err()
        });
        assert!(err.to_string().contains(name), "{err}");
    }
    // The target of a sharded index.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("unet");
    copy_dir(&fixtures().join("tiny-sd1/unet"), &dir);
    std::fs::remove_file(dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    std::fs::write(
        dir.join("diffusion_pytorch_model.safetensors.index.json"),
        r#"{"weight_map": {"conv_in.weight": "shard-1.safetensors"}}"#,
    )
    .unwrap();
    mkfifo(&dir.join("shard-1.safetensors"));
    let err = bounded("index target", move || {
        UNet2DConditionModel::from_dir(&dir, &LoadOptions::default()).unwrap_err()
    });
    assert!(err.to_string().contains("shard-1.safetensors"), "{err}");
    // An image.
    let p = tmp.path().join("in.png");
    mkfifo(&p);
    let err = bounded("image", move || spire_core::io::load_image(&p).unwrap_err());
    assert!(
        err.to_string().contains("in.png") && err.to_string().contains("not a regular file"),
        "{err}"
    );
}

/// CRC-32 (PNG's), for hand-made chunks.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend(data);
    out.extend(&body);
    out.extend(crc32(&body).to_be_bytes());
}

#[test]
fn image_headers_claiming_huge_sizes_are_refused_before_decoding() {
    let tmp = tempfile::tempdir().unwrap();
    // A 57-byte PNG whose header claims 100000×100000 RGB (was: a 30 GB allocation, abort).
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    let mut ihdr = Vec::new();
    ihdr.extend(100_000u32.to_be_bytes());
    ihdr.extend(100_000u32.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &[]);
    chunk(&mut png, b"IEND", &[]);
    let p = tmp.path().join("huge.png");
    std::fs::write(&p, &png).unwrap();
    let err = bounded("png", move || spire_core::io::load_image(&p).unwrap_err());
    assert_eq!(err.kind(), ErrorKind::InvalidImage);
    let m = err.to_string();
    assert!(m.contains("huge.png") && m.contains("100000×100000"), "{m}");
    // A small JPEG whose frame header is patched to 20000×20000.
    let p = tmp.path().join("small.jpg");
    let img = spire_core::Image {
        width: 16,
        height: 16,
        color: spire_core::ColorType::Rgb,
        data: spire_core::ImageData::U8(common::test_rgb8(16, 16)),
    };
    spire_core::io::save_image(&p, &img).unwrap();
    let mut jpg = std::fs::read(&p).unwrap();
    let sof = jpg
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("a baseline frame header");
    jpg[sof + 5..sof + 7].copy_from_slice(&20_000u16.to_be_bytes());
    jpg[sof + 7..sof + 9].copy_from_slice(&20_000u16.to_be_bytes());
    let p = tmp.path().join("huge.jpg");
    std::fs::write(&p, &jpg).unwrap();
    let err = bounded("jpeg", move || spire_core::io::load_image(&p).unwrap_err());
    assert_eq!(err.kind(), ErrorKind::InvalidImage);
    assert!(err.to_string().contains("20000×20000"), "{err}");
}

#[test]
fn silent_wrong_answers_are_now_errors() {
    use spire_core::RestorationPrompt;
    // Numbers with spaces inside were joined ("5 0" read as 50).
    for bad in [
        "Dejpeg with quality 5 0",
        "Denoise with sigma 0 .1",
        "Deblur with sigma 2 .0",
    ] {
        let err = RestorationPrompt::parse(bad).unwrap_err();
        assert!(err.to_string().contains("not one number"), "{bad}: {err}");
    }
    for ok in [
        "Upsample with scale 4",
        "Upsample x4",
        "Upsample 4x",
        "Upsample x 4",
        "Denoise with sigma 0.1",
    ] {
        RestorationPrompt::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    // Non-finite initial latents and an eta past DDIM's range.
    let dev = candle_core::Device::Cpu;
    for v in [f32::NAN, f32::INFINITY] {
        let mut data = vec![0.1f32; 4 * 4 * 4];
        data[5] = v;
        let o = RestoreOptions::default().with_initial_latents(Some(
            candle_core::Tensor::from_vec(data, (1, 4, 4, 4), &dev).unwrap(),
        ));
        let err = o.validate().unwrap_err();
        assert!(err.to_string().contains("initial_latents"), "{err}");
    }
    let o = RestoreOptions::default()
        .with_eta(1e30)
        .with_scheduler(Some(spire_core::SchedulerKind::Ddim));
    assert!(o.validate().unwrap_err().to_string().contains("[0, 1]"));
}

#[test]
fn integer_weights_and_index_paths_outside_the_folder_are_refused() {
    // An integer tensor where a weight belongs (was: converted and used).
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("unet");
    copy_dir(&fixtures().join("tiny-sd1/unet"), &dir);
    let file = dir.join("diffusion_pytorch_model.safetensors");
    let mut w = candle_core::safetensors::load(&file, &candle_core::Device::Cpu).unwrap();
    let k = "conv_in.weight";
    let int = w[k].to_dtype(candle_core::DType::I64).unwrap();
    w.insert(k.into(), int);
    candle_core::safetensors::save(&w, &file).unwrap();
    let err = UNet2DConditionModel::from_dir(&dir, &LoadOptions::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ModelLoad);
    assert!(
        err.to_string().contains(k) && err.to_string().contains("integer"),
        "{err}"
    );
    // A sharded index naming files outside its folder (was: followed).
    for target in ["../secret.safetensors", "/etc/passwd", "a/../../b.safetensors"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("unet");
        copy_dir(&fixtures().join("tiny-sd1/unet"), &dir);
        std::fs::remove_file(dir.join("diffusion_pytorch_model.safetensors")).unwrap();
        std::fs::write(
            dir.join("diffusion_pytorch_model.safetensors.index.json"),
            serde_json::json!({"weight_map": {"conv_in.weight": target}}).to_string(),
        )
        .unwrap();
        let err = UNet2DConditionModel::from_dir(&dir, &LoadOptions::default()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ModelLoad);
        assert!(
            err.to_string().contains("outside the folder") && err.to_string().contains(target),
            "{err}"
        );
    }
}

#[test]
fn nan_weights_give_a_numerical_error_not_a_black_image() {
    let tmp = tempfile::tempdir().unwrap();
    for sub in ["unet", "vae", "text_encoder", "tokenizer", "scheduler"] {
        copy_dir(&fixtures().join("tiny-sd1").join(sub), &tmp.path().join(sub));
    }
    let file = tmp.path().join("unet/diffusion_pytorch_model.safetensors");
    let mut w = candle_core::safetensors::load(&file, &candle_core::Device::Cpu).unwrap();
    let k = "conv_out.bias";
    let nan = (w[k].clone() * f64::NAN).unwrap();
    w.insert(k.into(), nan);
    candle_core::safetensors::save(&w, &file).unwrap();
    let lo = LoadOptions::default().with_adaptor(Some(fixtures().join("tiny-controlnet")));
    let r = spire_core::Restorer::from_pretrained(tmp.path(), &lo).unwrap();
    let px = common::test_rgb8(16, 16);
    let o = RestoreOptions::default().with_num_inference_steps(3);
    let err = r
        .restore(&spire_core::ImageView::rgb8(16, 16, &px).unwrap(), &o)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Numerical, "{err}");
    assert!(err.to_string().contains("step 1 of 3"), "{err}");
}

#[test]
fn a_truncated_jpeg_is_an_error_not_a_grey_padded_image() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("whole.jpg");
    let img = spire_core::Image {
        width: 64,
        height: 48,
        color: spire_core::ColorType::Rgb,
        data: spire_core::ImageData::U8(common::test_rgb8(64, 48)),
    };
    spire_core::io::save_image(&p, &img).unwrap();
    spire_core::io::load_image(&p).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let cut = tmp.path().join("cut.jpg");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let err = spire_core::io::load_image(&cut).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidImage, "{err}");
    assert!(err.to_string().contains("cut.jpg"), "{err}");
}

#[test]
fn outputs_are_checked_first_and_written_whole_or_not_at_all() {
    let tmp = tempfile::tempdir().unwrap();
    let img = spire_core::Image {
        width: 128,
        height: 128,
        color: spire_core::ColorType::Rgb,
        data: spire_core::ImageData::U8(common::test_rgb8(128, 128)),
    };
    // A folder, a dangling link, a missing folder: refused before any work, by name.
    let dir = tmp.path().join("out.png");
    std::fs::create_dir(&dir).unwrap();
    let dangling = tmp.path().join("dangling.png");
    std::os::unix::fs::symlink(tmp.path().join("nowhere/x.png"), &dangling).unwrap();
    for (p, says) in [
        (dir.clone(), "is a folder"),
        (dangling.clone(), "dangling"),
        (tmp.path().join("no/such/x.png"), "does not exist"),
    ] {
        let err = spire_core::io::check_output_path(&p).unwrap_err();
        assert!(err.to_string().contains(says), "{}: {err}", p.display());
        assert!(spire_core::io::save_image(&p, &img).is_err());
    }
    // A write that fails midway (a 4 KiB file-size limit, in a child process of the CLI): the
    // existing file at the destination survives whole, and no partial file is left beside it.
    let src = tmp.path().join("in.png");
    spire_core::io::save_image(&src, &img).unwrap();
    let dst = tmp.path().join("keep.png");
    std::fs::write(&dst, b"the previous result").unwrap();
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -f 4; exec {} degrade {} {}",
            env!("CARGO_BIN_EXE_spire"),
            src.display(),
            dst.display()
        ))
        .status()
        .unwrap();
    assert!(!status.success(), "the write was meant to exceed the limit");
    assert_eq!(std::fs::read(&dst).unwrap(), b"the previous result");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("keep.png") && n != "keep.png")
        .collect();
    // The CLI ignores SIGXFSZ, so the write fails with EFBIG and the temporary file is removed.
    assert!(left.is_empty(), "left behind: {left:?}");
    // Without the limit the same command replaces it whole.
    let ok = std::process::Command::new(env!("CARGO_BIN_EXE_spire"))
        .args(["degrade", src.to_str().unwrap(), dst.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(ok.success());
    assert_eq!(spire_core::io::load_image(&dst).unwrap().width, 128);
}

/// A PNG of a few bytes whose header claims `w × h` RGB (no pixel data).
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &[]);
    chunk(&mut png, b"IEND", &[]);
    png
}

#[test]
fn the_memory_limit_refuses_a_large_image_before_anything_is_sized_from_it() {
    let r = spire_core::Restorer::builtin().unwrap();
    let small = r
        .default_options()
        .with_memory_limit(spire_core::MemoryLimit::parse("64MiB").unwrap());
    // The library: the plan refuses from the sizes, before the 4096² input is converted (its
    // planar float copy alone would be 256 MiB), naming the option and what would be needed.
    let px = common::test_rgb8(4096, 4096);
    let view = spire_core::ImageView::rgb8(4096, 4096, &px).unwrap();
    let t = std::time::Instant::now();
    let err = r.restore(&view, &small).unwrap_err();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "refused after {:?}",
        t.elapsed()
    );
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let m = err.to_string();
    assert!(
        m.contains("memory_limit") && m.contains("4096×4096") && m.contains("needs about"),
        "{m}"
    );
    let need: u64 = m
        .split("at least ")
        .nth(1)
        .and_then(|s| s.split(" MiB").next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no amount in: {m}"));
    // The amount it names is enough: with that limit the plan is made.
    let enough = r
        .default_options()
        .with_memory_limit(spire_core::MemoryLimit::parse(&format!("{need}MiB")).unwrap());
    let plan = r.plan(4096, 4096, spire_core::ColorType::Rgb, &enough).unwrap();
    // Sizes without pixels behind them cannot overflow the arithmetic.
    for (w, h) in [(usize::MAX, 2), (1 << 32, 1 << 32)] {
        let e = r.plan(w, h, spire_core::ColorType::Rgb, &enough).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidImage, "{e}");
    }
    assert!(
        plan.peak().0 <= need << 20,
        "{} > {need} MiB",
        plan.peak().0 >> 20
    );
    assert!(
        need > 300,
        "{need} MiB is too little for a 4096² image's own buffers"
    );

    // The CLI plans from the header before decoding: a 60-byte PNG claiming 16000×16000 (its
    // decoding buffer alone would be 768 MB) is refused under a 700 MB address-space limit,
    // where decoding first would abort on the allocation.
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("claims-16000.png");
    std::fs::write(&p, png_claiming(16_000, 16_000)).unwrap();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -v 700000; exec {} restore {} {} --memory-limit 1GiB",
            env!("CARGO_BIN_EXE_spire"),
            p.display(),
            tmp.path().join("out.png").display()
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("memory_limit") && stderr.contains("16000×16000") && stderr.contains("needs about"),
        "{stderr}"
    );
    assert!(!tmp.path().join("out.png").exists());
}

#[test]
fn the_plan_tiles_large_latents_for_speed_and_keeps_small_ones_whole() {
    use spire_core::TileReason;
    let r = spire_core::Restorer::builtin().unwrap();
    let opts = r
        .default_options()
        .with_memory_limit(spire_core::MemoryLimit::Unlimited);
    // 256²: one piece (nothing to gain).
    let p = r.plan(256, 256, spire_core::ColorType::Rgb, &opts).unwrap();
    assert_eq!(p.reason, TileReason::Whole);
    assert!(p.tiles.is_single());
    // 2048²: self-attention on a 512² latent is quadratic, so tiles do several times less work
    // (measured: 21 s against 104 s for one step, docs/large-images.md).
    let p = r.plan(2048, 2048, spire_core::ColorType::Rgb, &opts).unwrap();
    assert_eq!(p.reason, TileReason::Speed, "{}", p.describe());
    assert!(p.whole_step_flops > 4.0 * p.step_flops, "{}", p.describe());
    assert!(p.tiles.tile.0 >= spire_core::plan::SPEED_MIN_TILE);
    // Asked for one piece, it is one piece.
    let whole = opts.clone().with_tile_size(Some(usize::MAX / 2));
    let p = r.plan(2048, 2048, spire_core::ColorType::Rgb, &whole).unwrap();
    assert!(p.tiles.is_single() && p.reason == TileReason::Asked);
    // A limit too small for one piece: tiles for memory.
    let tight = opts
        .with_memory_limit(spire_core::MemoryLimit::parse("700MiB").unwrap())
        .with_tile_size(None);
    let p = r.plan(2048, 2048, spire_core::ColorType::Rgb, &tight).unwrap();
    assert!(!p.tiles.is_single());
    assert!(p.peak().0 <= 700 << 20, "{}", p.describe());
}

#[test]
fn model_files_are_written_whole_or_not_at_all() {
    let tmp = tempfile::tempdir().unwrap();
    let spire = env!("CARGO_BIN_EXE_spire");
    let model = tmp.path().join("model");
    let ok = std::process::Command::new(spire)
        .args(["unpack-builtin", model.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(ok.success());
    // Exporting the model (7.5 MB) under a 64 KiB file-size limit fails; the file that was
    // at the destination survives and no temporary file is left.
    let dst = tmp.path().join("keep.safetensors");
    std::fs::write(&dst, b"the previous export").unwrap();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -f 64; exec {spire} export-builtin {} {}",
            model.display(),
            dst.display()
        ))
        .output()
        .unwrap();
    assert!(!out.status.success(), "the export was meant to exceed the limit");
    assert!(String::from_utf8_lossy(&out.stderr).contains("keep.safetensors"));
    assert_eq!(std::fs::read(&dst).unwrap(), b"the previous export");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("spire-tmp"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // The library's tensor writer (checkpoints, adaptor exports) does the same when its
    // writer fails midway.
    let t = std::collections::HashMap::from([(
        "w".to_string(),
        candle_core::Tensor::zeros((4, 4), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap(),
    )]);
    let ck = tmp.path().join("step.safetensors");
    spire_core::io::save_tensors(&ck, &t).unwrap();
    let before = std::fs::read(&ck).unwrap();
    let err = spire_core::io::write_atomic_with(&ck, |tmp| {
        std::fs::write(tmp, b"half a file")?;
        Err(std::io::Error::other("disk full"))
    })
    .unwrap_err();
    assert!(err.to_string().contains("step.safetensors") && err.to_string().contains("disk full"));
    assert_eq!(std::fs::read(&ck).unwrap(), before);
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        3,
        "model/, keep, step, and nothing else"
    );
}

#[test]
fn a_schedule_that_repeats_timesteps_is_refused_not_run_into_nan() {
    // DPM++ with `leading` spacing and steps_offset 1 over 1000 training timesteps: 1000
    // steps are all timestep 1 (diffusers builds the same), which used to end in a numerical
    // error at the second step.
    let cfg =
        SchedulerConfig::from_file(&fixtures().join("tiny-sd1/scheduler/scheduler_config.json")).unwrap();
    let err = match cfg.build(spire_core::SchedulerKind::DpmSolverPlusPlus2M, 1000) {
        Err(e) => e,
        Ok(_) => panic!("a degenerate schedule was built"),
    };
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let m = err.to_string();
    assert!(m.contains("num_inference_steps") && m.contains("at most"), "{m}");
    let most: usize = m
        .split("at most ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(cfg
        .build(spire_core::SchedulerKind::DpmSolverPlusPlus2M, most)
        .is_ok());
    assert!(cfg
        .build(spire_core::SchedulerKind::DpmSolverPlusPlus2M, 50)
        .is_ok());
}
