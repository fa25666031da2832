//! The evaluation command's core: both test sets, every metric, the table and the CSV.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{fixtures, tiny_spire};
use spire_core::eval::{self, EvalConfig, EvalSetting, MetricWeights};
use spire_core::{metrics, RestoreOptions, Restorer};

fn photos(dir: &std::path::Path) {
    let (w, h, px) = common::photo("chelsea_crop256.png");
    let (_, _, px2) = common::photo("chelsea_crop256_distorted.png");
    for (name, p) in [("cat.png", &px), ("noisy-cat.png", &px2)] {
        let img = spire_core::ImageView::rgb8(w, h, p).unwrap().to_image();
        spire_core::io::save_image(dir.join(name), &img).unwrap();
    }
    std::fs::write(
        dir.join("captions.tsv"),
        "file\tcaption\ncat.png\ta cat on a sofa\n",
    )
    .unwrap();
}

#[test]
fn evaluation_scores_both_sets_with_every_metric() {
    let (_t, opts) = tiny_spire();
    let r = Restorer::from_pretrained(fixtures().join("tiny-sd1"), &opts).unwrap();
    let data = tempfile::tempdir().unwrap();
    photos(data.path());
    let images = eval::load_images(data.path(), Some(&data.path().join("captions.tsv")), &[], 48).unwrap();
    assert_eq!(images.len(), 2);
    assert_eq!(images[0].caption, "a cat on a sofa");
    assert_eq!(images[1].caption, "");
    let w = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let cfg = EvalConfig {
        size: 48,
        seed: 5,
        settings: vec![EvalSetting::new("SPIRE", true, true)],
        include_input: true,
        options: RestoreOptions::default().with_num_inference_steps(1),
        weights: MetricWeights {
            lpips: Some(common::lpips_file("alex", w.path())),
            clip: Some(fixtures().join("tiny-clip")),
            inception: Some(common::inception_file(w.path())),
        },
        save_images: Some(out.path().to_path_buf()),
    };
    let mut calls = Vec::new();
    let report = eval::evaluate(&r, &images, &cfg, &mut |d, t, _| calls.push((d, t))).unwrap();
    assert_eq!(calls.last(), Some(&(4, 4)));
    assert_eq!(report.rows.len(), 2);
    for row in &report.rows {
        for s in &row.scores {
            assert_eq!(s.images, 2);
            for v in [s.fid, s.lpips, Some(s.psnr), Some(s.ssim), s.clip_i, s.clip_t] {
                assert!(v.unwrap().is_finite(), "{row:?}");
            }
        }
    }
    // The degraded-input row equals scoring the saved degraded images directly.
    let mut psnr = 0.0;
    for img in &images {
        let y =
            spire_core::io::load_image(out.path().join("parameterized/degraded").join(&img.name)).unwrap();
        psnr += metrics::psnr(&y.view(), &img.image.view()).unwrap() / 2.0;
    }
    assert!((report.rows[0].scores[0].psnr - psnr).abs() < 1e-9);
    assert!(out.path().join("realesrgan/spire/cat.png").is_file());
    let md = report.markdown();
    assert!(
        md.contains("| Method | Sem | Res | FID↓") && md.contains("| SPIRE | ✓ | ✓ |"),
        "{md}"
    );
    let csv = report.csv();
    assert_eq!(csv.lines().count(), 1 + 2 * 2, "{csv}");
    assert!(
        csv.lines()
            .nth(1)
            .unwrap()
            .starts_with("parameterized,\"Degraded input\",,,2,"),
        "{csv}"
    );
    // The same seeds give the same report.
    let again = eval::evaluate(
        &r,
        &images,
        &EvalConfig {
            save_images: None,
            ..cfg.clone()
        },
        &mut |_, _, _| {},
    )
    .unwrap();
    assert_eq!(again.rows, report.rows);
}

#[test]
fn missing_weights_are_reported_not_invented() {
    let (_t, opts) = tiny_spire();
    let r = Restorer::from_pretrained(fixtures().join("tiny-sd1"), &opts).unwrap();
    let data = tempfile::tempdir().unwrap();
    photos(data.path());
    let images = eval::load_images(data.path(), None, &["cat.png".to_string()], 40).unwrap();
    let cfg = EvalConfig {
        size: 40,
        settings: vec![EvalSetting::new("SPIRE w/o text", false, false)],
        options: RestoreOptions::default().with_num_inference_steps(1),
        ..Default::default()
    };
    let report = eval::evaluate(&r, &images, &cfg, &mut |_, _, _| {}).unwrap();
    let s = &report.rows[1].scores[0];
    assert!(s.fid.is_none() && s.lpips.is_none() && s.clip_i.is_none() && s.clip_t.is_none());
    let md = report.markdown();
    assert!(
        md.contains("n/a") && md.contains("LPIPS: no weights given") && md.contains("FID: no Inception"),
        "{md}"
    );
    let bad = eval::load_images(data.path(), None, &["nope.png".to_string()], 40).unwrap_err();
    assert!(bad.to_string().contains("nope.png"), "{bad}");
}
