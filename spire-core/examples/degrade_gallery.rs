//! Writes `docs/img/degradations.png`: one photo under each degradation op at three strengths,
//! and three draws of the Real-ESRGAN pipeline.
//!
//!     cargo run --release --example degrade_gallery -- [photo.png] [out.png]

use spire_core::degrade::{ops, realesrgan, RealEsrganConfig, Rgb};

fn load_png(path: &str) -> Result<Rgb, Box<dyn std::error::Error>> {
    let mut dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path)?)).read_info()?;
    let mut buf = vec![0; dec.output_buffer_size().ok_or("png too large")?];
    let info = dec.next_frame(&mut buf)?;
    let (w, h) = (info.width as usize, info.height as usize);
    let ch = info.color_type.samples();
    let n = w * h;
    let mut data = vec![0f32; 3 * n];
    for p in 0..n {
        for c in 0..3 {
            data[c * n + p] = buf[p * ch + c.min(ch - 1)] as f32 / 255.0;
        }
    }
    Ok(Rgb::new(w, h, data)?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let src = args
        .get(1)
        .cloned()
        .unwrap_or(format!("{root}/tests/fixtures/photos/chelsea_crop256.png"));
    let out = args
        .get(2)
        .cloned()
        .unwrap_or(format!("{root}/docs/img/degradations.png"));
    let x = load_png(&src)?;
    let t = 192;
    let x = ops::resize_bicubic(&x, t, t);
    let down = |f: f64| {
        let s = ((t as f64 / f).round() as usize).max(1);
        ops::resize_bicubic(&ops::resize_bicubic(&x, s, s), t, t)
    };
    let rows: Vec<Vec<Rgb>> = vec![
        vec![
            x.clone(),
            ops::gaussian_blur(&x, 1.0),
            ops::gaussian_blur(&x, 2.5),
            ops::gaussian_blur(&x, 5.0),
        ],
        vec![x.clone(), down(1.5), down(2.5), down(4.0)],
        vec![
            x.clone(),
            ops::add_gaussian_noise(&x, 0.04, false, 1),
            ops::add_gaussian_noise(&x, 0.12, false, 2),
            ops::add_gaussian_noise(&x, 0.25, false, 3),
        ],
        vec![
            x.clone(),
            ops::jpeg(&x, 70)?,
            ops::jpeg(&x, 35)?,
            ops::jpeg(&x, 15)?,
        ],
        vec![
            x.clone(),
            realesrgan(&x, 1, &RealEsrganConfig::default())?,
            realesrgan(&x, 2, &RealEsrganConfig::default())?,
            realesrgan(&x, 3, &RealEsrganConfig::default())?,
        ],
    ];
    let gap = 4;
    let (cols, nrows) = (4, rows.len());
    let (w, h) = (cols * t + (cols - 1) * gap, nrows * t + (nrows - 1) * gap);
    let mut canvas = vec![255u8; w * h * 3];
    for (r, row) in rows.iter().enumerate() {
        for (c, img) in row.iter().enumerate() {
            let n = t * t;
            for y in 0..t {
                for xx in 0..t {
                    let o = ((r * (t + gap) + y) * w + c * (t + gap) + xx) * 3;
                    for ch in 0..3 {
                        canvas[o + ch] =
                            (img.data[ch * n + y * t + xx].clamp(0.0, 1.0) * 255.0).round() as u8;
                    }
                }
            }
        }
    }
    if let Some(dir) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut enc = png::Encoder::new(
        std::io::BufWriter::new(std::fs::File::create(&out)?),
        w as u32,
        h as u32,
    );
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()?.write_image_data(&canvas)?;
    println!("wrote {out} ({w}×{h})");
    Ok(())
}
