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

/// What kind of Python pickle a weight file is, from its first bytes: PyTorch's zip archive
/// (`torch.save` since 1.6; `.ckpt`, `.pt`, `.pth`, `.bin`) or a bare pickle stream (older
/// `torch.save`, `pickle.dump`). `None` for anything else.
pub(crate) fn pickle_kind(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(b"PK\x03\x04") {
        Some("a PyTorch checkpoint (a zip archive of pickles)")
    } else if head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]) {
        Some("a Python pickle")
    } else {
        None
    }
}

/// The refusal for a pickle weight file: spire never unpickles (a pickle can run arbitrary
/// code when loaded); the message shows the one-time conversion to safetensors.
pub(crate) fn pickle_refusal(kind: &str) -> String {
    format!(
        "this is {kind}, not safetensors; spire does not load pickles, since unpickling can run \
         arbitrary code. Convert it once to safetensors with PyTorch: \
         python -c \"import sys, torch, safetensors.torch as st; \
         sd = torch.load(sys.argv[1], map_location='cpu', weights_only=True); sd = sd.get('state_dict', sd); \
         st.save_file({{k: v.contiguous() for k, v in sd.items() if isinstance(v, torch.Tensor)}}, sys.argv[2])\" \
         model.ckpt model.safetensors"
    )
}

/// Reads a whole regular file (`require_regular_file` first: no devices, FIFOs or directories).
///
/// # Errors
/// [`Error::Io`] naming the path.
pub fn read_file(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let path = path.as_ref();
    require_regular_file(path)?;
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Reads a whole regular UTF-8 text file (`require_regular_file` first: no devices, FIFOs or directories).
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

/// Parses JSON as Python's `json` module writes it: besides standard JSON, the bare tokens
/// `NaN`, `Infinity` and `-Infinity` (diffusers writes `"lambda_min_clipped": -Infinity`
/// into `DPMSolverMultistepScheduler` configs). Those become the strings `"NaN"`,
/// `"Infinity"` and `"-Infinity"`, which the config readers compare against their defaults or
/// read as the non-finite numbers they are ([`json_f64`]) — so a reader that needs a finite
/// number refuses them by name instead of the whole file failing to parse.
///
/// # Errors
/// serde_json's error for text that is not JSON even with those tokens.
pub fn parse_json(text: &str) -> serde_json::Result<serde_json::Value> {
    match serde_json::from_str(text) {
        Ok(v) => Ok(v),
        Err(e) => {
            let quoted = quote_python_constants(text);
            if quoted.len() == text.len() {
                Err(e)
            } else {
                serde_json::from_str(&quoted)
            }
        }
    }
}

/// A JSON number, or one of the strings [`parse_json`] makes of Python's non-finite constants.
pub fn json_f64(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => v.as_f64(),
    }
}

/// Quotes the bare `NaN`, `Infinity` and `-Infinity` tokens outside strings.
fn quote_python_constants(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if let Some(token) = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t))
        {
            out.push('"');
            out.push_str(token);
            out.push('"');
            rest = &rest[token.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// What an image file's header says, read without decoding the pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// The colour type [`load_image`] returns for it.
    pub color: ColorType,
}

/// Reads a PNG or JPEG file's header: its size and colour type, without decoding (and so
/// without allocating) its pixels. The CLI plans a restore from it before loading the image.
///
/// # Errors
/// As [`load_image`]: [`Error::Io`] if the file cannot be read, [`Error::InvalidImage`] for a
/// header that is not a PNG or JPEG header or claims more than [`MAX_IMAGE_PIXELS`].
pub fn image_info(path: impl AsRef<Path>) -> Result<ImageInfo> {
    let path = path.as_ref();
    let bytes = read_file(path)?;
    if bytes.starts_with(&[0x89, b'P', b'N', b'G']) {
        let mut dec = png::Decoder::new(std::io::Cursor::new(&bytes));
        dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let reader = dec
            .read_info()
            .map_err(|e| bad(path, format!("cannot read PNG: {e}")))?;
        let (w, h) = (reader.info().width as usize, reader.info().height as usize);
        check_header_size(path, w, h, 4)?;
        let color = match reader.output_color_type().0 {
            png::ColorType::Grayscale | png::ColorType::GrayscaleAlpha => ColorType::Gray,
            png::ColorType::Rgba => ColorType::Rgba,
            // A palette with transparency expands to RGBA, without to RGB.
            png::ColorType::Indexed if reader.info().trns.is_some() => ColorType::Rgba,
            png::ColorType::Rgb | png::ColorType::Indexed => ColorType::Rgb,
        };
        Ok(ImageInfo {
            width: w,
            height: h,
            color,
        })
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        let (_, w, h) = jpeg_header(path, &bytes)?;
        Ok(ImageInfo {
            width: w,
            height: h,
            color: ColorType::Rgb,
        })
    } else {
        Err(bad(path, "not a PNG or JPEG file"))
    }
}

/// Loads a PNG or JPEG file (by content, not extension) as an 8-bit image.
///
/// # Errors
/// [`Error::Io`] if the file cannot be read, [`Error::InvalidImage`] if it is not a PNG or JPEG
/// this function can decode.
pub fn load_image(path: impl AsRef<Path>) -> Result<Image> {
    let path = path.as_ref();
    decode(path, &read_file(path)?)
}

/// Decodes a PNG or JPEG file held in memory, as [`load_image`] does (the same header limit,
/// strict JPEG decoding); `name` names it in messages.
///
/// # Errors
/// [`Error::InvalidImage`] naming `name` if the bytes are not a PNG or JPEG this function can
/// decode.
pub fn decode_image(bytes: &[u8], name: &str) -> Result<Image> {
    decode(Path::new(name), bytes)
}

/// A JPEG decoder past the header (RGB out, sides ≤ 65536, strict: a truncated or corrupt file
/// is an error, not an image padded with grey), with the header's size checked.
type JpegDecoder<'a> = zune_jpeg::JpegDecoder<std::io::Cursor<&'a [u8]>>;

fn jpeg_header<'a>(path: &Path, bytes: &'a [u8]) -> Result<(JpegDecoder<'a>, usize, usize)> {
    let opts = zune_jpeg::zune_core::options::DecoderOptions::default()
        .jpeg_set_out_colorspace(zune_jpeg::zune_core::colorspace::ColorSpace::RGB)
        .set_max_width(1 << 16)
        .set_max_height(1 << 16)
        .set_strict_mode(true);
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(std::io::Cursor::new(bytes), opts);
    dec.decode_headers()
        .map_err(|e| bad(path, format!("cannot read the JPEG header: {e:?}")))?;
    let (w, h) = dec
        .dimensions()
        .ok_or_else(|| bad(path, "JPEG without dimensions"))?;
    check_header_size(path, w, h, 3)?;
    Ok((dec, w, h))
}

fn decode(path: &Path, bytes: &[u8]) -> Result<Image> {
    if bytes.starts_with(&[0x89, b'P', b'N', b'G']) {
        decode_png(path, bytes)
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        let (mut dec, _, _) = jpeg_header(path, bytes)?;
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
    /// The format called `name`: `png`, `jpg` or `jpeg` (case-insensitive).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`format`) for another name.
    pub fn from_name(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "png" => Ok(ImageFormat::Png),
            "jpg" | "jpeg" => Ok(ImageFormat::Jpeg),
            _ => Err(Error::invalid_arg(
                "format",
                format!("`{name}`: expected png, jpg or jpeg"),
            )),
        }
    }

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
    write_atomic(path, &encode_image(image, format)?)
}

/// Encodes an image as PNG or as JPEG at quality 95, in memory: the bytes [`save_image`]
/// writes. Float images are converted to 8 bits.
///
/// # Errors
/// [`Error::InvalidArgument`] for an image JPEG cannot hold (larger than 65535 px).
pub fn encode_image(image: &Image, format: ImageFormat) -> Result<Vec<u8>> {
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
    Ok(out)
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
    write_atomic_with(path, |tmp| {
        use std::io::Write;
        std::fs::File::create(tmp)?.write_all(bytes)
    })
}

/// [`write_atomic`] for writers that take a path (safetensors, large files written in
/// pieces): `write` fills the temporary file it is given; the file is then flushed to disk
/// and renamed over `path`. On failure the temporary file is removed and `path` is untouched.
///
/// # Errors
/// [`Error::Io`] naming `path`, with the writer's error.
pub fn write_atomic_with(
    path: impl AsRef<Path>,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<()> {
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
        write(&tmp)?;
        std::fs::OpenOptions::new().write(true).open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Saves tensors as a safetensors file with [`write_atomic_with`].
///
/// # Errors
/// [`Error::Io`] naming `path`.
pub fn save_tensors<K: AsRef<str> + Ord + std::fmt::Display>(
    path: impl AsRef<Path>,
    tensors: &std::collections::HashMap<K, candle_core::Tensor>,
) -> Result<()> {
    let path = path.as_ref();
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    write_atomic_with(path, |tmp| {
        candle_core::safetensors::save(tensors, tmp).map_err(|e| std::io::Error::other(e.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_as_python_writes_it() {
        let v = parse_json(r#"{"a": -Infinity, "b": [NaN, Infinity], "s": "NaN and -Infinity stay text", "e": "a\"NaN", "n": 1.5}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(json_f64(&v["a"]), Some(f64::NEG_INFINITY));
        assert!(json_f64(&v["b"][0]).is_some_and(f64::is_nan));
        assert_eq!(json_f64(&v["b"][1]), Some(f64::INFINITY));
        assert_eq!(v["s"], "NaN and -Infinity stay text");
        assert_eq!(v["e"], "a\"NaN");
        assert_eq!(json_f64(&v["n"]), Some(1.5));
        assert!(parse_json("{\"a\": Inf}").is_err());
        assert!(parse_json("{\"a\": -NaNx}").is_err());
    }

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
