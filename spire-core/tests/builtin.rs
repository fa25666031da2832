//! The built-in `spire-tiny` model: it loads from the library alone, every handle shares one set
//! of weights, and it restores with exact geometry. (Its restoration quality is measured by
//! `examples/builtin_report.rs`, see docs/builtin-model.md.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use spire_core::{ImageView, RestorationPrompt, RestoreOptions, Restorer};

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
    let o = RestoreOptions {
        restoration_prompt: RestorationPrompt::parse("Upsample 2x; Denoise with sigma 0.05")
            .unwrap()
            .into(),
        ..d
    };
    let a = r.restore(&img, &o).unwrap();
    assert_eq!((a.width, a.height), (74, 58));
    assert_eq!(a, r.restore(&img, &o).unwrap());
}
