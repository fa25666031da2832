//! The built-in `spire-tiny` model: it loads from the library alone, every handle shares one set
//! of weights, and it restores with exact geometry. (Its restoration quality is measured by
//! `examples/builtin_report.rs`, see docs/builtin-model.md.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use spire_core::{ImageView, RestorationPrompt, Restorer};

#[test]
fn builtin_loads_without_files_and_clones_share_it() {
    let a = Restorer::builtin().expect("spire-core/assets/spire-tiny.safetensors is embedded");
    let b = Restorer::builtin().unwrap();
    assert!(
        a.shares_weights_with(&b),
        "every builtin() handle shares one model"
    );
    assert!(a.shares_weights_with(&a.clone()));
}

#[test]
fn builtin_restores_with_exact_geometry_and_is_deterministic() {
    let r = Restorer::builtin().unwrap();
    let px: Vec<u8> = (0..37 * 29 * 3).map(|i| (i * 31 % 253) as u8).collect();
    let img = ImageView::rgb8(37, 29, &px).unwrap();
    // Its recommended options: DDIM from the input noised part-way (it was trained on t < 100).
    let d = r.default_options();
    assert!(d.strength > 0.0 && d.strength < 1.0, "{d:?}");
    assert_eq!(d.scheduler, Some(spire_core::SchedulerKind::Ddim));
    let o = d.with_restoration_prompt(
        RestorationPrompt::parse("Upsample 2x; Denoise with sigma 0.05")
            .unwrap()
            .into(),
    );
    let a = r.restore(&img, &o).unwrap();
    assert_eq!((a.width, a.height), (74, 58));
    assert_eq!(a, r.restore(&img, &o).unwrap());
}

/// Tensors (as raw bytes, by name) and text files of a built-in file.
/// The built-in file's components (name, bytes) and its metadata.
type Parts = (Vec<(String, Vec<u8>)>, std::collections::HashMap<String, String>);

fn parts(bytes: &[u8]) -> Parts {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let mut t: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, v.data().to_vec()))
        .collect();
    t.sort();
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    (t, meta.metadata().clone().unwrap())
}

#[test]
fn builtin_unpacks_to_a_folder_that_exports_back_and_restores_the_same() {
    let bytes = spire_core::builtin::builtin_bytes().expect("embedded");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spire-tiny");
    spire_core::builtin::unpack(bytes, "builtin", &dir).unwrap();
    for f in [
        "unet/diffusion_pytorch_model.safetensors",
        "adaptor/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "restoration_text_encoder/model.safetensors",
        "vae/config.json",
        "tokenizer/vocab.json",
        "spire.json",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    // Every tensor and text comes back bit for bit (f16 → f32 → f16 is exact).
    let again = spire_core::builtin::export(&dir).unwrap();
    let ((t0, m0), (t1, m1)) = (parts(bytes), parts(&again));
    assert_eq!(t0.len(), t1.len());
    assert!(t0 == t1, "tensors differ after unpack + export");
    assert_eq!(m0, m1);
    // The folder is the same model: same defaults, same restoration.
    let (b, f) = (
        Restorer::builtin().unwrap(),
        Restorer::from_pretrained(&dir, &Default::default()).unwrap(),
    );
    assert_eq!(b.defaults(), f.defaults());
    let px: Vec<u8> = (0..24 * 16 * 3).map(|i| (i * 37 % 251) as u8).collect();
    let img = ImageView::rgb8(24, 16, &px).unwrap();
    let o = b
        .default_options()
        .with_restoration_text("Deblur with sigma 1.5; Denoise with sigma 0.05")
        .unwrap();
    assert_eq!(b.restore(&img, &o).unwrap(), f.restore(&img, &o).unwrap());
}

#[test]
fn unpack_refuses_what_is_not_a_builtin_file_and_names_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let e = spire_core::builtin::unpack(b"not safetensors", "x.safetensors", tmp.path()).unwrap_err();
    assert!(e.to_string().contains("x.safetensors"), "{e}");
    // A plain safetensors file without the built-in format tag.
    let plain = safetensors::serialize(
        [(
            "w",
            candle_core::Tensor::zeros(2, candle_core::DType::F16, &candle_core::Device::Cpu).unwrap(),
        )],
        None,
    )
    .unwrap();
    let e = spire_core::builtin::unpack(&plain, "plain.safetensors", tmp.path()).unwrap_err();
    assert!(e.to_string().contains("spire-builtin/1"), "{e}");
    // Names the format does not know are refused before anything is written: a text file
    // whose path would leave the folder, and an unknown component.
    let z = || candle_core::Tensor::zeros(2, candle_core::DType::F16, &candle_core::Device::Cpu).unwrap();
    let out = tmp.path().join("out");
    for (meta_key, tensor_key, needle) in [
        ("../evil.json", "unet/w", "unknown text file `../evil.json`"),
        ("unet/config.json", "evil/w", "unknown component `evil`"),
    ] {
        let meta = std::collections::HashMap::from([
            ("format".to_string(), "spire-builtin/1".to_string()),
            (meta_key.to_string(), "{}".to_string()),
        ]);
        let bytes = safetensors::serialize([(tensor_key, z())], Some(meta)).unwrap();
        let e = spire_core::builtin::unpack(&bytes, "bad.safetensors", &out).unwrap_err();
        assert!(e.to_string().contains(needle), "{e}");
        assert!(!out.exists() && !tmp.path().join("evil.json").exists());
    }
    // An output path that is a file: the error names what could not be written.
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let bytes = spire_core::builtin::builtin_bytes().unwrap();
    let e = spire_core::builtin::unpack(bytes, "builtin", &file).unwrap_err();
    assert!(e.to_string().contains("file"), "{e}");
}
