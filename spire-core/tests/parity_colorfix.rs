//! Colour fixes equal StableSR's `wavelet_color_fix` and `adain_color_fix` (fixtures from
//! `scripts/make_fixtures.py`, a transcription of StableSR's functions in torch).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::reference;
use spire_core::colorfix::{apply, ColorFix};

#[test]
fn wavelet_and_adain_equal_stablesr() {
    let r = reference("colorfix");
    let (_, h, w) = r["content"].dims3().unwrap();
    let content: Vec<f32> = r["content"].flatten_all().unwrap().to_vec1().unwrap();
    let style: Vec<f32> = r["style"].flatten_all().unwrap().to_vec1().unwrap();
    for (fix, key) in [(ColorFix::Wavelet, "wavelet"), (ColorFix::Adain, "adain")] {
        let mut out = content.clone();
        apply(fix, &mut out, &style, w, h);
        let want: Vec<f32> = r[key].flatten_all().unwrap().to_vec1().unwrap();
        let d = out
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!("{key}: max abs diff {d:e}");
        assert!(d < 1e-5, "{key}: max abs diff {d}");
    }
    let mut out = content.clone();
    apply(ColorFix::None, &mut out, &style, w, h);
    assert_eq!(out, content);
}
