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

#[test]
fn lpips_equals_the_lpips_package() {
    let dir = tempfile::tempdir().unwrap();
    let r = common::reference("lpips");
    for net in ["alex", "vgg"] {
        let m = metrics::Lpips::load(common::lpips_file(net, dir.path()), &candle_core::Device::Cpu).unwrap();
        assert_eq!(m.net().as_str(), net);
        for pair in ["photo", "rand"] {
            let (a, b) = (&r[&format!("{pair}_a")], &r[&format!("{pair}_b")]);
            let stages = m.stage_distances(a, b).unwrap();
            let want = &r[&format!("{net}.{pair}.stages")];
            let rel = common::max_abs_diff(&stages, want)
                / want
                    .abs()
                    .unwrap()
                    .max_keepdim(1)
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
            let total = m.distances(a, b).unwrap();
            eprintln!(
                "LPIPS {net} {pair}: {:?} vs lpips {:?} (stages max rel. diff {rel:.1e})",
                total.to_vec1::<f32>().unwrap(),
                r[&format!("{net}.{pair}.total")].to_vec1::<f32>().unwrap()
            );
            assert!(rel < 1e-4, "{net} {pair}: {rel}");
            common::assert_close(
                &format!("{net} {pair} total"),
                &total,
                &r[&format!("{net}.{pair}.total")],
                1e-6,
            );
        }
    }
    // The image-view entry point on the photo pair.
    let m = metrics::Lpips::load(common::lpips_file("alex", dir.path()), &candle_core::Device::Cpu).unwrap();
    let (w, h, a) = photo("chelsea_crop256.png");
    let (_, _, b) = photo("chelsea_crop256_distorted.png");
    let crop = |p: &[u8]| -> Vec<u8> {
        (40..104)
            .flat_map(|y| p[(y * w + 60) * 3..(y * w + 140) * 3].to_vec())
            .collect()
    };
    let _ = h;
    let (ca, cb) = (crop(&a), crop(&b));
    let d = m
        .distance(
            &ImageView::rgb8(80, 64, &ca).unwrap(),
            &ImageView::rgb8(80, 64, &cb).unwrap(),
        )
        .unwrap();
    let want = r["alex.photo.total"].to_vec1::<f32>().unwrap()[0] as f64;
    assert!((d - want).abs() < 1e-6, "{d} vs {want}");
}

#[test]
fn lpips_rejects_bad_files_and_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let missing =
        metrics::Lpips::load(dir.path().join("nope.safetensors"), &candle_core::Device::Cpu).unwrap_err();
    assert!(missing.to_string().contains("nope.safetensors"), "{missing}");
    // A file without the heads names the missing tensor.
    let p = common::lpips_file("alex", dir.path());
    let mut t = candle_core::safetensors::load(&p, &candle_core::Device::Cpu).unwrap();
    t.remove("lin3.weight");
    let q = dir.path().join("no-heads.safetensors");
    candle_core::safetensors::save(&t, &q).unwrap();
    let e = metrics::Lpips::load(&q, &candle_core::Device::Cpu).unwrap_err();
    assert!(
        e.to_string().contains("lin3.weight") && e.to_string().contains("no-heads"),
        "{e}"
    );
    let unet = fixtures().join("tiny-sd1/unet/diffusion_pytorch_model.safetensors");
    let e = metrics::Lpips::load(&unet, &candle_core::Device::Cpu).unwrap_err();
    assert!(e.to_string().contains("not an LPIPS weights file"), "{e}");
    let m = metrics::Lpips::load(&p, &candle_core::Device::Cpu).unwrap();
    let small = vec![0u8; 20 * 20 * 3];
    let e = m
        .distance(
            &ImageView::rgb8(20, 20, &small).unwrap(),
            &ImageView::rgb8(20, 20, &small).unwrap(),
        )
        .unwrap_err();
    assert!(e.to_string().contains("at least 31×31"), "{e}");
    let big = vec![0u8; 40 * 40 * 3];
    let e = m
        .distance(
            &ImageView::rgb8(40, 40, &big).unwrap(),
            &ImageView::rgb8(20, 20, &small).unwrap(),
        )
        .unwrap_err();
    assert!(e.to_string().contains("differ in size"), "{e}");
}

#[test]
fn clip_equals_transformers() {
    let r = common::reference("clip");
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("ref/clip.json")).unwrap()).unwrap();
    let clip = metrics::Clip::from_dir(fixtures().join("tiny-clip"), &candle_core::Device::Cpu).unwrap();
    // The towers on the reference pixel values.
    let img = clip.embed_pixels(&r["pixel_values"]).unwrap();
    common::assert_close("image embeddings", &img, &r["image_embeds"], 1e-5);
    let prompts: Vec<&str> = j["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let txt = clip.embed_texts(&prompts).unwrap();
    common::assert_close("text embeddings", &txt, &r["text_embeds"], 1e-5);
    // Preprocessing equals the PIL image processor (8-bit fixed-point bicubic, crop,
    // normalise). Pillow 13 runs the vertical pass first for some sizes (the 100×256 crop
    // here), which moves a few pixels by one 8-bit level; the others are exact.
    let (w, _, a) = photo("chelsea_crop256.png");
    let (_, _, b) = photo("chelsea_crop256_distorted.png");
    let crop = |p: &[u8], c: &serde_json::Value| -> (usize, usize, Vec<u8>) {
        let c: Vec<usize> = c
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let px = (c[0]..c[1])
            .flat_map(|y| p[(y * w + c[2]) * 3..(y * w + c[3]) * 3].to_vec())
            .collect();
        (c[3] - c[2], c[1] - c[0], px)
    };
    let crops = j["crops"].as_array().unwrap();
    let imgs = [crop(&a, &crops[0]), crop(&b, &crops[1]), crop(&a, &crops[2])];
    let views: Vec<ImageView> = imgs
        .iter()
        .map(|(w, h, p)| ImageView::rgb8(*w, *h, p).unwrap())
        .collect();
    for (i, v) in views.iter().enumerate() {
        let px = clip.preprocess().apply(v).unwrap();
        let want = r["pixel_values"].narrow(0, i, 1).unwrap();
        let d = common::max_abs_diff(&px, &want);
        eprintln!("image {i}: max |pixel values − PIL processor| = {d:.2e}");
        let tol = if i == 2 { 1.0 / 255.0 / 0.26 + 1e-5 } else { 1e-5 };
        assert!(d < tol, "image {i}: {d}");
    }
    let ci = clip.clip_i(&views[0], &views[1]).unwrap();
    let ct = clip.clip_t(&views[0], prompts[0]).unwrap();
    let (want_i, want_t) = (
        r["clip_i"].to_vec1::<f32>().unwrap()[0] as f64,
        r["clip_t"].to_vec1::<f32>().unwrap()[0] as f64,
    );
    eprintln!("CLIP-I {ci:.6} vs {want_i:.6}; CLIP-T {ct:.6} vs {want_t:.6}");
    assert!((ci - want_i).abs() < 1e-5 && (ct - want_t).abs() < 1e-5);
}

#[test]
fn clip_reports_bad_folders() {
    let dir = tempfile::tempdir().unwrap();
    let e = metrics::Clip::from_dir(dir.path(), &candle_core::Device::Cpu).unwrap_err();
    assert!(e.to_string().contains("config.json"), "{e}");
    // A text-only checkpoint is not a CLIPModel.
    for f in ["config.json", "vocab.json", "merges.txt"] {
        std::fs::copy(fixtures().join("tiny-clip").join(f), dir.path().join(f)).unwrap();
    }
    std::fs::copy(
        fixtures().join("tiny-sd1/text_encoder/model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let e = metrics::Clip::from_dir(dir.path(), &candle_core::Device::Cpu).unwrap_err();
    assert!(e.to_string().contains("vision_model"), "{e}");
}

#[test]
fn fid_inception_and_frechet_distance_equal_pytorch_fid() {
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("ref/fid.json")).unwrap()).unwrap();
    let r = common::reference("fid");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("inception.safetensors");
    candle_core::safetensors::save(
        &common::hashed_tensors(&j["tensors"], j["seed"].as_u64().unwrap()),
        &p,
    )
    .unwrap();
    let net = metrics::FidInception::load(&p, &candle_core::Device::Cpu).unwrap();
    for name in ["photo", "rand"] {
        let x = &r[name];
        let (_, _, h, w) = x.dims4().unwrap();
        let planar: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let interleaved: Vec<f32> = (0..h * w)
            .flat_map(|i| [planar[i], planar[h * w + i], planar[2 * h * w + i]])
            .collect();
        let f = net
            .features(&ImageView::rgb_f32(w, h, &interleaved).unwrap())
            .unwrap();
        let got = candle_core::Tensor::from_vec(f, (1, 2048), &candle_core::Device::Cpu).unwrap();
        common::assert_close(
            &format!("pool features ({name})"),
            &got,
            &r[&format!("features_{name}")],
            1e-4,
        );
    }
    for set in ["full", "deficient"] {
        let rows = |k: &str| -> Vec<Vec<f32>> { r[&format!("{set}_{k}")].to_vec2().unwrap() };
        let (m1, s1) = metrics::feature_statistics(&rows("x1")).unwrap();
        let (m2, s2) = metrics::feature_statistics(&rows("x2")).unwrap();
        let got = metrics::frechet_distance(&m1, &s1, &m2, &s2).unwrap();
        let want = j["frechet"][format!("{set}_f32")].as_f64().unwrap();
        eprintln!("Fréchet distance ({set}): {got:.9} vs pytorch-fid {want:.9}");
        // With fewer samples than dimensions Σ₁Σ₂ is singular and scipy's sqrtm loses digits
        // (pytorch-fid's own warning); the symmetric eigenvalue route stays exact.
        let tol = if set == "full" { 1e-9 } else { 1e-6 };
        assert!((got - want).abs() / want < tol, "{set}: {got} vs {want}");
    }
    let e = metrics::feature_statistics(&[vec![0.0; 4]]).unwrap_err();
    assert!(e.to_string().contains("at least 2"), "{e}");
}
