//! Metrics against their references (fixtures from `scripts/make_fixtures.py`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{fixtures, photo};
use spire_core::{metrics, ImageView};

#[test]
fn psnr_and_ssim_equal_scikit_image() {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("ref/metrics.json")).unwrap()).unwrap();
    let (w, h, a) = photo("chelsea_crop256.png");
    let (_, _, b) = photo("chelsea_crop256_distorted.png");
    let (va, vb) = (
        ImageView::rgb8(w, h, &a).unwrap(),
        ImageView::rgb8(w, h, &b).unwrap(),
    );
    let close = |got: f64, key: &str| {
        let want = v[key].as_f64().unwrap();
        eprintln!("{key}: {got:.8} vs scikit-image {want:.8}");
        assert!((got - want).abs() < 1e-4, "{key}: {got} vs {want}");
    };
    close(metrics::psnr(&va, &vb).unwrap(), "psnr_u8");
    close(metrics::ssim(&va, &vb).unwrap(), "ssim_u8");
    let (fa, fb): (Vec<f32>, Vec<f32>) = (
        a.iter().map(|&x| x as f32 / 255.0).collect(),
        b.iter().map(|&x| x as f32 / 255.0).collect(),
    );
    let (ga, gb) = (
        ImageView::rgb_f32(w, h, &fa).unwrap(),
        ImageView::rgb_f32(w, h, &fb).unwrap(),
    );
    close(metrics::psnr(&ga, &gb).unwrap(), "psnr_f32");
    close(metrics::ssim(&ga, &gb).unwrap(), "ssim_f32");
    // A strided crop [10:77, 5:100].
    let off = (10 * w + 5) * 3;
    let ca = ImageView::with_stride(
        95,
        67,
        w * 3,
        spire_core::ColorType::Rgb,
        spire_core::Samples::U8(&a[off..]),
    )
    .unwrap();
    let cb = ImageView::with_stride(
        95,
        67,
        w * 3,
        spire_core::ColorType::Rgb,
        spire_core::Samples::U8(&b[off..]),
    )
    .unwrap();
    close(metrics::psnr(&ca, &cb).unwrap(), "psnr_u8_crop");
    close(metrics::ssim(&ca, &cb).unwrap(), "ssim_u8_crop");
    assert!(metrics::psnr(&va, &ga).is_err(), "mixed sample types");
}
