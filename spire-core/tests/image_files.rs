//! Image files in: PNG (8- and 16-bit), JPEG, TIFF (8-bit raw/LZW/deflate, 16-bit, float) and
//! WebP (lossless, with alpha, lossy), each turned upright by its EXIF orientation as PIL's
//! `ImageOps.exif_transpose` does; 16-bit out as 16-bit PNG. Fixtures:
//! `scripts/make_fixtures.py image_files` (tests/fixtures/image-files).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use spire_core::io::{decode_image, encode_image, image_info, load_image, ImageFormat};
use spire_core::{ColorType, ImageData};

fn file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/image-files")
        .join(name)
}

fn u8s(name: &str) -> (usize, usize, Vec<u8>) {
    let img = load_image(file(name)).unwrap();
    assert_eq!(img.color, ColorType::Rgb, "{name}");
    (
        img.width,
        img.height,
        img.as_u8()
            .unwrap_or_else(|| panic!("{name}: not 8-bit"))
            .to_vec(),
    )
}

/// The 16-bit fixtures' samples: (x·2731 + y·977 + c·12345) mod 65536 on 24×16 RGB.
fn formula16() -> Vec<u16> {
    let mut v = Vec::new();
    for y in 0..16u32 {
        for x in 0..24u32 {
            for c in 0..3u32 {
                v.push(((x * 2731 + y * 977 + c * 12345) % 65536) as u16);
            }
        }
    }
    v
}

#[test]
fn sixteen_bit_png_and_tiff_stay_sixteen_bit_and_round_trip() {
    for name in ["rgb16.png", "rgb16.tif"] {
        let img = load_image(file(name)).unwrap();
        assert_eq!(
            (img.width, img.height, img.color),
            (24, 16, ColorType::Rgb),
            "{name}"
        );
        assert_eq!(img.as_u16().unwrap(), &formula16()[..], "{name}");
    }
    // 16-bit PNG out: the same samples back.
    let img = load_image(file("rgb16.png")).unwrap();
    let bytes = encode_image(&img, ImageFormat::Png).unwrap();
    let back = decode_image(&bytes, "round-trip.png").unwrap();
    assert_eq!(back, img);
    // JPEG cannot hold 16 bits: written in 8, rounded.
    let jpg = decode_image(&encode_image(&img, ImageFormat::Jpeg).unwrap(), "x.jpg").unwrap();
    assert!(jpg.as_u8().is_some());
}

#[test]
fn tiff_and_webp_read_as_pil_reads_them() {
    let base = u8s("base.png");
    for name in ["rgb8.tif", "rgb8-lzw.tif", "rgb8-deflate.tif", "lossless.webp"] {
        assert_eq!(u8s(name), base, "{name}");
    }
    // Lossy WebP: libwebp (PIL) and image-webp may round differently by a step.
    let (w, h, lossy) = u8s("lossy.webp");
    let (_, _, pil) = u8s("lossy-pil.png");
    assert_eq!((w, h), (24, 16));
    let worst = lossy.iter().zip(&pil).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
    assert!(worst <= 3, "lossy WebP differs from libwebp by {worst}");
    // Alpha kept.
    let rgba = load_image(file("rgba-lossless.webp")).unwrap();
    assert_eq!(rgba.color, ColorType::Rgba);
    let px = rgba.as_u8().unwrap();
    let alpha: Vec<u8> = px.chunks(4).map(|p| p[3]).collect();
    assert_eq!(alpha, (0..24 * 16).map(|i| (i % 256) as u8).collect::<Vec<_>>());
    // Float gray TIFF: (x + 24y) / 400.
    let f = load_image(file("gray-f32.tif")).unwrap();
    assert_eq!(f.color, ColorType::Gray);
    let ImageData::F32(v) = &f.data else {
        panic!("not float")
    };
    for (i, x) in v.iter().enumerate() {
        assert!((x - (i as f32) / 400.0).abs() < 1e-6, "sample {i}: {x}");
    }
}

#[test]
fn exif_orientation_is_applied_on_load_and_in_the_header_size() {
    for o in 1..=8 {
        let name = format!("orient{o}.png");
        let got = u8s(&name);
        let want = u8s(&format!("orient{o}-upright.png"));
        assert_eq!(got, want, "{name}");
        let info = image_info(file(&name)).unwrap();
        assert_eq!((info.width, info.height), (got.0, got.1), "{name}: header size");
        if o >= 5 {
            assert_eq!((got.0, got.1), (16, 24), "{name}: sides swapped");
        }
    }
    for (name, upright) in [
        ("orient3.webp", "orient3-webp-upright.png"),
        ("orient8.tif", "orient8-tif-upright.png"),
    ] {
        assert_eq!(u8s(name), u8s(upright), "{name}");
    }
    // JPEG (decoders differ by rounding): the size exactly, the pixels within a few steps.
    let (w, h, got) = u8s("orient6.jpg");
    let (uw, uh, want) = u8s("orient6-jpg-upright.png");
    assert_eq!((w, h), (uw, uh));
    assert_eq!((w, h), (16, 24));
    let info = image_info(file("orient6.jpg")).unwrap();
    assert_eq!((info.width, info.height), (16, 24));
    let mean = got
        .iter()
        .zip(&want)
        .map(|(a, b)| f64::from(a.abs_diff(*b)))
        .sum::<f64>()
        / got.len() as f64;
    assert!(mean < 1.5, "mean difference {mean} from PIL's upright JPEG");
}

#[test]
fn malformed_exif_and_truncated_files_are_errors_or_ignored_never_panics() {
    use spire_core::io::exif_orientation;
    assert_eq!(exif_orientation(b""), None);
    assert_eq!(exif_orientation(b"Exif\0\0MM\0*\xff\xff\xff\xff"), None);
    assert_eq!(exif_orientation(b"II*\0\x08\0\0\0\xff\xff"), None);
    // One entry, orientation 6, little-endian.
    let ok = b"II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x06\0\0\0";
    assert_eq!(exif_orientation(ok), Some(6));
    // Out of range.
    let bad = b"II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x09\0\0\0";
    assert_eq!(exif_orientation(bad), None);
    for name in ["rgb16.tif", "lossless.webp", "rgb16.png", "orient6.jpg"] {
        let bytes = std::fs::read(file(name)).unwrap();
        // A PNG missing only its end chunk's checksum, or a JPEG its end marker, has all its
        // pixels: those may load.
        let last = if name.ends_with(".png") || name.ends_with(".jpg") {
            bytes.len() / 2
        } else {
            bytes.len() - 1
        };
        for cut in [8, bytes.len() / 2, last] {
            let e = decode_image(&bytes[..cut], name);
            assert!(e.is_err(), "{name} cut at {cut} decoded");
            assert!(e.unwrap_err().to_string().contains(name));
        }
    }
}

#[test]
fn tiff_keeps_every_sample_type_and_webp_is_lossless() {
    let dir = tempfile::tempdir().unwrap();
    let images = [
        load_image(file("base.png")).unwrap(),
        load_image(file("rgb16.png")).unwrap(),
        load_image(file("gray-f32.tif")).unwrap(),
        load_image(file("rgba-lossless.webp")).unwrap(),
    ];
    for (i, img) in images.iter().enumerate() {
        let path = dir.path().join(format!("{i}.tiff"));
        spire_core::io::save_image(&path, img).unwrap();
        assert_eq!(&load_image(&path).unwrap(), img, "TIFF round trip {i}");
    }
    for i in [0, 3] {
        let path = dir.path().join(format!("{i}.webp"));
        spire_core::io::save_image(&path, &images[i]).unwrap();
        assert_eq!(load_image(&path).unwrap(), images[i], "WebP round trip {i}");
    }
    // An image whose samples do not fill its size is refused, not a panic in an encoder.
    let mut bad = images[0].clone();
    bad.width += 1;
    for f in [
        ImageFormat::Png,
        ImageFormat::Jpeg,
        ImageFormat::Tiff,
        ImageFormat::WebP,
    ] {
        let e = encode_image(&bad, f).unwrap_err().to_string();
        assert!(e.contains("samples"), "{f:?}: {e}");
    }
}

#[test]
fn a_tiff_header_claiming_a_huge_size_is_refused_before_decoding() {
    // A 100000×100000 gray TIFF header with one 1-byte strip.
    let mut t: Vec<u8> = b"II*\0\x08\0\0\0".to_vec();
    let entries: [(u16, u16, u32); 8] = [
        (256, 4, 100_000), // ImageWidth, LONG
        (257, 4, 100_000), // ImageLength
        (258, 3, 8),       // BitsPerSample
        (259, 3, 1),       // Compression: none
        (262, 3, 1),       // Photometric: black is zero
        (273, 4, 200),     // StripOffsets
        (278, 4, 100_000), // RowsPerStrip
        (279, 4, 1),       // StripByteCounts
    ];
    t.extend((entries.len() as u16).to_le_bytes());
    for (tag, kind, value) in entries {
        t.extend(tag.to_le_bytes());
        t.extend(kind.to_le_bytes());
        t.extend(1u32.to_le_bytes());
        t.extend(value.to_le_bytes());
    }
    t.extend(0u32.to_le_bytes());
    t.resize(201, 0);
    let e = decode_image(&t, "huge.tif").unwrap_err().to_string();
    assert!(e.contains("huge.tif") && e.contains("100000×100000"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("huge.tif"), &t).unwrap();
    assert!(image_info(dir.path().join("huge.tif")).is_err());
}

#[test]
fn ndarray_views_borrow_and_arrays_round_trip() {
    use spire_core::ndarray::{s, Array3};
    use spire_core::{Image, ImageView};
    let a = Array3::from_shape_fn((5, 7, 3), |(y, x, c)| (y * 100 + x * 10 + c) as u16);
    let v = ImageView::from_ndarray(a.view()).unwrap();
    assert_eq!((v.width(), v.height(), v.color()), (7, 5, ColorType::Rgb));
    let spire_core::Samples::U16(borrowed) = v.samples() else {
        panic!("not u16")
    };
    assert_eq!(borrowed.as_ptr(), a.as_ptr(), "the view copies");
    // Not contiguous: refused as a view, copied as an image.
    let cut = a.slice(s![.., 1..6, ..]);
    assert!(ImageView::from_ndarray(cut)
        .unwrap_err()
        .to_string()
        .contains("as_standard_layout"));
    let img = Image::from_ndarray(cut).unwrap();
    assert_eq!((img.width, img.height), (5, 5));
    assert_eq!(img.clone().into_ndarray::<u16>().unwrap(), cut.to_owned());
    assert!(img.into_ndarray::<u8>().is_err());
    let two = Array3::<f32>::zeros((4, 4, 2));
    assert!(ImageView::from_ndarray(two.view())
        .unwrap_err()
        .to_string()
        .contains("C = 1"));
}
