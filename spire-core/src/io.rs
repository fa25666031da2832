//! Reading and writing image files (PNG and JPEG), for the command line, the C ABI and tests.
//! Reads take regular files only and check the header's size before decoding; a truncated
//! JPEG is an error. Writes are atomic: a temporary file renamed into place.
//! 8-bit gray, gray+alpha (alpha dropped), RGB and RGBA PNGs; 16-bit PNGs are reduced to 8 bits;
//! palette PNGs are expanded. JPEGs decode to RGB.

use std::path::Path;

use crate::error::{Error, Result};
use crate::image::{ColorType, Image, ImageData};

fn bad(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::InvalidImage(format!("{}: {msg}", path.display()))
}

/// Fails unless `path` is a regular file (links followed): a FIFO, device or socket in place of
/// a model or image file would block or stream forever when read, and a folder is a mistake.
/// `stat` does not block, so this is checked before the file is opened.
pub(crate) fn require_regular_file(path: &Path) -> Result<()> {
    let m = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if m.is_file() {
        Ok(())
    } else {
        let what = if m.is_dir() {
            "a folder"
        } else {
            "a FIFO, device or socket"
        };
        Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("is {what}, not a regular file"),
            ),
        ))
    }
}

/// Reads a whole regular file ([`require_regular_file`] first).
///
/// # Errors
/// [`Error::Io`] naming the path.
pub fn read_file(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let path = path.as_ref();
    require_regular_file(path)?;
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Reads a whole regular UTF-8 text file ([`require_regular_file`] first).
///
/// # Errors
/// [`Error::Io`] naming the path.
pub fn read_text(path: impl AsRef<Path>) -> Result<String> {
    let path = path.as_ref();
    require_regular_file(path)?;
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// The largest image [`load_image`] decodes: 2²⁸ pixels (16384 × 16384, 768 MiB of 8-bit
/// RGB). The header's size is checked before any pixel buffer is allocated, so a small file
/// that claims a huge image is refused at once instead of exhausting memory.
pub const MAX_IMAGE_PIXELS: usize = 1 << 28;

/// Refuses a header size above [`MAX_IMAGE_PIXELS`] (or with a zero side), naming the size
/// and the memory its pixels would take.
fn check_header_size(path: &Path, w: usize, h: usize, channels: usize) -> Result<()> {
    let px = w.saturating_mul(h);
    if w == 0 || h == 0 {
        return Err(bad(path, format!("the header says {w}×{h}: an empty image")));
    }
    if px > MAX_IMAGE_PIXELS {
        let gib = px as f64 * channels as f64 / (1u64 << 30) as f64;
        return Err(bad(
            path,
            format!(
                "the header says {w}×{h} ({gib:.1} GiB of pixels): more than the {MAX_IMAGE_PIXELS}-pixel \
                 limit of load_image (16384×16384)"
            ),
        ));
    }
    Ok(())
}

/// Loads a PNG or JPEG file (by content, not extension) as an 8-bit image.
///
/// # Errors
/// [`Error::Io`] if the file cannot be read, [`Error::InvalidImage`] if it is not a PNG or JPEG
/// this function can decode.
pub fn load_image(path: impl AsRef<Path>) -> Result<Image> {
    let path = path.as_ref();
    let bytes = read_file(path)?;
    if bytes.starts_with(&[0x89, b'P', b'N', b'G']) {
        decode_png(path, &bytes)
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        let opts = zune_jpeg::zune_core::options::DecoderOptions::default()
            .jpeg_set_out_colorspace(zune_jpeg::zune_core::colorspace::ColorSpace::RGB)
            .set_max_width(1 << 16)
            .set_max_height(1 << 16)
            // A truncated or corrupt file is an error, not an image padded with grey.
            .set_strict_mode(true);
        let mut dec = zune_jpeg::JpegDecoder::new_with_options(std::io::Cursor::new(&bytes), opts);
        dec.decode_headers()
            .map_err(|e| bad(path, format!("cannot read the JPEG header: {e:?}")))?;
        let (w, h) = dec
            .dimensions()
            .ok_or_else(|| bad(path, "JPEG without dimensions"))?;
        check_header_size(path, w, h, 3)?;
        let px = dec
            .decode()
            .map_err(|e| bad(path, format!("cannot decode JPEG: {e:?}")))?;
        let (w, h) = dec
            .dimensions()
            .ok_or_else(|| bad(path, "JPEG without dimensions"))?;
        Ok(Image {
            width: w,
            height: h,
            color: ColorType::Rgb,
            data: ImageData::U8(px),
        })
    } else {
        Err(bad(path, "not a PNG or JPEG file"))
    }
}

fn decode_png(path: &Path, bytes: &[u8]) -> Result<Image> {
    let mut dec = png::Decoder::new(std::io::Cursor::new(bytes));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec
        .read_info()
        .map_err(|e| bad(path, format!("cannot read PNG: {e}")))?;
    let (w, h) = (reader.info().width as usize, reader.info().height as usize);
    check_header_size(path, w, h, 4)?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| bad(path, "PNG too large"))?;
    let mut buf = vec![0; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| bad(path, format!("cannot decode PNG: {e}")))?;
    buf.truncate(info.buffer_size());
    let (w, h) = (info.width as usize, info.height as usize);
    let (color, data) = match info.color_type {
        png::ColorType::Grayscale => (ColorType::Gray, buf),
        png::ColorType::GrayscaleAlpha => (ColorType::Gray, buf.chunks(2).map(|p| p[0]).collect()),
        png::ColorType::Rgb => (ColorType::Rgb, buf),
        png::ColorType::Rgba => (ColorType::Rgba, buf),
        png::ColorType::Indexed => return Err(bad(path, "palette PNG was not expanded")),
    };
    Ok(Image {
        width: w,
        height: h,
        color,
        data: ImageData::U8(data),
    })
}

/// The file formats [`save_image`] writes, chosen by the file name's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// `.png` (8 bits per sample, lossless).
    Png,
    /// `.jpg` or `.jpeg` (quality 95; no alpha).
    Jpeg,
}

impl ImageFormat {
    /// The format for `path`'s extension (case-insensitive).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the path when the extension is neither `.png`, `.jpg`
    /// nor `.jpeg` (a file called `out.tif` would otherwise hold PNG bytes).
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        match ext.as_str() {
            "png" => Ok(ImageFormat::Png),
            "jpg" | "jpeg" => Ok(ImageFormat::Jpeg),
            _ => Err(Error::invalid_arg(
                "path",
                format!(
                    "{}: cannot write {} (the extension picks the format: .png, .jpg or .jpeg)",
                    path.display(),
                    if ext.is_empty() {
                        "a file without an extension".to_string()
                    } else {
                        format!("`.{ext}`")
                    }
                ),
            )),
        }
    }
}

/// Writes an image as PNG (`.png`) or JPEG at quality 95 (`.jpg`/`.jpeg`), by extension.
/// Float images are converted to 8 bits.
///
/// # Errors
/// [`Error::InvalidArgument`] for another extension (see [`ImageFormat::from_path`]) or an
/// image JPEG cannot hold (alpha, larger than 65535); [`Error::Io`] if the file cannot be
/// written.
pub fn save_image(path: impl AsRef<Path>, image: &Image) -> Result<()> {
    let path = path.as_ref();
    let format = ImageFormat::from_path(path)?;
    let data: Vec<u8> = match &image.data {
        ImageData::U8(v) => v.clone(),
        ImageData::F32(v) => v
            .iter()
            .map(|x| (x.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect(),
    };
    let mut out = Vec::new();
    if format == ImageFormat::Jpeg {
        let ct = match image.color {
            ColorType::Gray => jpeg_encoder::ColorType::Luma,
            ColorType::Rgb => jpeg_encoder::ColorType::Rgb,
            ColorType::Rgba => jpeg_encoder::ColorType::Rgba,
        };
        if image.width > u16::MAX as usize || image.height > u16::MAX as usize {
            return Err(Error::invalid_arg("image", "too large for JPEG (65535 px max)"));
        }
        jpeg_encoder::Encoder::new(&mut out, 95)
            .encode(&data, image.width as u16, image.height as u16, ct)
            .map_err(|e| Error::invalid_arg("image", format!("JPEG encoding failed: {e}")))?;
    } else {
        let mut enc = png::Encoder::new(&mut out, image.width as u32, image.height as u32);
        enc.set_color(match image.color {
            ColorType::Gray => png::ColorType::Grayscale,
            ColorType::Rgb => png::ColorType::Rgb,
            ColorType::Rgba => png::ColorType::Rgba,
        });
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc
            .write_header()
            .map_err(|e| Error::Internal(format!("PNG: {e}")))?;
        w.write_image_data(&data)
            .map_err(|e| Error::Internal(format!("PNG: {e}")))?;
        w.finish().map_err(|e| Error::Internal(format!("PNG: {e}")))?;
    }
    write_atomic(path, &out)
}

/// Checks, before any work, that `path` can take an output file: its folder exists, and it is
/// not a folder or a dangling link. (A full disk or a size limit is found when writing; then
/// [`write_atomic`] keeps whatever was at `path`.)
///
/// # Errors
/// [`Error::Io`] naming the path.
pub fn check_output_path(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let fail = |msg: String| Error::io(path, std::io::Error::new(std::io::ErrorKind::InvalidInput, msg));
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if m.is_dir() {
            return Err(fail("is a folder; give a file name".into()));
        }
        if m.file_type().is_symlink() && std::fs::metadata(path).is_err() {
            return Err(fail("is a link to nothing (a dangling symlink)".into()));
        }
        if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
            return Err(fail("is a link to a folder; give a file name".into()));
        }
    }
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
            Err(fail(format!("the folder {} does not exist", dir.display())))
        }
        _ => Ok(()),
    }
}

/// Writes `bytes` to `path` whole or not at all: into a temporary file in the same folder,
/// flushed to disk, then renamed over `path`. On any failure (disk full, a file-size limit) the
/// temporary file is removed and whatever was at `path` before is untouched.
///
/// # Errors
/// [`Error::Io`] naming `path`.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let path = path.as_ref();
    check_output_path(path)?;
    let name = path.file_name().ok_or_else(|| {
        Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"),
        )
    })?;
    let tmp = path.with_file_name(format!(
        ".{}.{}-{}.spire-tmp",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_and_jpeg_round_trip() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let px: Vec<u8> = (0..30 * 20 * 3).map(|i| (i % 251) as u8).collect();
        let img = Image {
            width: 30,
            height: 20,
            color: ColorType::Rgb,
            data: ImageData::U8(px),
        };
        let p = dir.path().join("a.png");
        save_image(&p, &img).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(load_image(&p).unwrap_or_else(|e| panic!("{e}")), img);
        let j = dir.path().join("a.jpg");
        save_image(&j, &img).unwrap_or_else(|e| panic!("{e}"));
        let back = load_image(&j).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((back.width, back.height, back.color), (30, 20, ColorType::Rgb));
        std::fs::write(dir.path().join("x.png"), b"not an image").unwrap_or_else(|e| panic!("{e}"));
        assert!(load_image(dir.path().join("x.png")).is_err());
        for bad in ["a.tif", "a", "a.png.bak"] {
            let e = save_image(dir.path().join(bad), &img).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
            assert!(e.to_string().contains(bad), "{e}");
            assert!(!dir.path().join(bad).exists());
        }
        assert_eq!(
            ImageFormat::from_path("X.JPEG").unwrap_or_else(|e| panic!("{e}")),
            ImageFormat::Jpeg
        );
        assert_eq!(
            load_image(dir.path().join("missing.png")).unwrap_err().kind(),
            crate::ErrorKind::Io
        );
    }
}
