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
    /// Width in pixels, as [`load_image`] returns it (after the EXIF orientation).
    pub width: usize,
    /// Height in pixels, as [`load_image`] returns it.
    pub height: usize,
    /// The colour type [`load_image`] returns for it.
    pub color: ColorType,
}

/// The image file formats [`load_image`] reads, by content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Png,
    Jpeg,
    Tiff,
    WebP,
}

fn sniff(bytes: &[u8]) -> Option<FileKind> {
    if bytes.starts_with(&[0x89, b'P', b'N', b'G']) {
        Some(FileKind::Png)
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        Some(FileKind::Jpeg)
    } else if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        Some(FileKind::Tiff)
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(FileKind::WebP)
    } else {
        None
    }
}

const NOT_AN_IMAGE: &str = "not a PNG, JPEG, TIFF or WebP file";

/// Reads an image file's header: its size (after the EXIF orientation) and colour type,
/// without decoding (and so without allocating) its pixels. The CLI plans a restore from it
/// before loading the image.
///
/// # Errors
/// As [`load_image`]: [`Error::Io`] if the file cannot be read, [`Error::InvalidImage`] for a
/// header that is not a PNG, JPEG, TIFF or WebP header or claims more than
/// [`MAX_IMAGE_PIXELS`].
pub fn image_info(path: impl AsRef<Path>) -> Result<ImageInfo> {
    let path = path.as_ref();
    let bytes = read_file(path)?;
    let (w, h, color, orientation) = match sniff(&bytes) {
        Some(FileKind::Png) => {
            let reader = png_reader(path, &bytes)?;
            let info = reader.info();
            let (w, h) = (info.width as usize, info.height as usize);
            let color = match reader.output_color_type().0 {
                png::ColorType::Grayscale | png::ColorType::GrayscaleAlpha => ColorType::Gray,
                png::ColorType::Rgba => ColorType::Rgba,
                // A palette with transparency expands to RGBA, without to RGB.
                png::ColorType::Indexed if info.trns.is_some() => ColorType::Rgba,
                png::ColorType::Rgb | png::ColorType::Indexed => ColorType::Rgb,
            };
            (
                w,
                h,
                color,
                info.exif_metadata.as_deref().and_then(exif_orientation),
            )
        }
        Some(FileKind::Jpeg) => {
            let (dec, w, h) = jpeg_header(path, &bytes)?;
            (w, h, ColorType::Rgb, dec.exif().and_then(|e| exif_orientation(e)))
        }
        Some(FileKind::Tiff) => {
            let mut dec = tiff_decoder(path, &bytes)?;
            let (w, h, c, _, _) = tiff_layout(path, &mut dec)?;
            (w, h, c, tiff_orientation(&mut dec))
        }
        Some(FileKind::WebP) => {
            let mut dec = webp_decoder(path, &bytes)?;
            let (w, h) = dec.dimensions();
            let color = if dec.has_alpha() {
                ColorType::Rgba
            } else {
                ColorType::Rgb
            };
            let o = dec.exif_metadata().ok().flatten();
            (
                w as usize,
                h as usize,
                color,
                o.as_deref().and_then(exif_orientation),
            )
        }
        None => return Err(bad(path, NOT_AN_IMAGE)),
    };
    let (width, height) = if orientation.is_some_and(|o| o >= 5) {
        (h, w)
    } else {
        (w, h)
    };
    Ok(ImageInfo { width, height, color })
}

/// Loads a PNG, JPEG, TIFF or WebP file (by content, not extension), turned upright by its
/// EXIF orientation: 8-bit files as 8-bit images, 16-bit PNG and TIFF as 16-bit images, float
/// TIFF as float images. Gray + alpha loads as gray.
///
/// # Errors
/// [`Error::Io`] if the file cannot be read, [`Error::InvalidImage`] naming the file if it is
/// not an image this function can decode.
pub fn load_image(path: impl AsRef<Path>) -> Result<Image> {
    let path = path.as_ref();
    decode(path, &read_file(path)?)
}

/// Decodes an image file held in memory, as [`load_image`] does (the same header limit, strict
/// decoding, the EXIF orientation); `name` names it in messages.
///
/// # Errors
/// [`Error::InvalidImage`] naming `name` if the bytes are not an image this function can
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

/// A PNG reader past the header (palettes and low bit depths expanded; 16 bits kept), with the
/// header's size checked.
fn png_reader<'a>(path: &Path, bytes: &'a [u8]) -> Result<png::Reader<std::io::Cursor<&'a [u8]>>> {
    let mut dec = png::Decoder::new(std::io::Cursor::new(bytes));
    dec.set_transformations(png::Transformations::EXPAND);
    let reader = dec
        .read_info()
        .map_err(|e| bad(path, format!("cannot read PNG: {e}")))?;
    check_header_size(
        path,
        reader.info().width as usize,
        reader.info().height as usize,
        8,
    )?;
    Ok(reader)
}

fn tiff_decoder<'a>(
    path: &Path,
    bytes: &'a [u8],
) -> Result<tiff::decoder::Decoder<std::io::Cursor<&'a [u8]>>> {
    tiff::decoder::Decoder::new(std::io::Cursor::new(bytes))
        .map_err(|e| bad(path, format!("cannot read the TIFF header: {e}")))
}

/// A TIFF's size, the colour type it loads as, and its bits per sample; checks the size and
/// sets the decoder's buffer limit to exactly what the image needs.
fn tiff_layout(
    path: &Path,
    dec: &mut tiff::decoder::Decoder<std::io::Cursor<&[u8]>>,
) -> Result<(usize, usize, ColorType, u8, usize)> {
    let (w, h) = dec
        .dimensions()
        .map_err(|e| bad(path, format!("cannot read the TIFF size: {e}")))?;
    let (w, h) = (w as usize, h as usize);
    check_header_size(path, w, h, 16)?;
    let ct = dec
        .colortype()
        .map_err(|e| bad(path, format!("cannot read the TIFF colour type: {e}")))?;
    let (color, bits, channels) = match ct {
        tiff::ColorType::Gray(b) => (ColorType::Gray, b, 1),
        tiff::ColorType::GrayA(b) => (ColorType::Gray, b, 2),
        tiff::ColorType::RGB(b) => (ColorType::Rgb, b, 3),
        tiff::ColorType::RGBA(b) => (ColorType::Rgba, b, 4),
        other => {
            return Err(bad(
                path,
                format!("TIFF colour type {other:?} is not supported (gray, gray + alpha, RGB or RGBA)"),
            ))
        }
    };
    if !matches!(bits, 8 | 16 | 32) {
        return Err(bad(
            path,
            format!("TIFF with {bits} bits per sample is not supported (8, 16 or 32)"),
        ));
    }
    Ok((w, h, color, bits, channels))
}

fn webp_decoder<'a>(
    path: &Path,
    bytes: &'a [u8],
) -> Result<image_webp::WebPDecoder<std::io::Cursor<&'a [u8]>>> {
    // The RIFF header's length: a file cut short is an error even where the decoder would
    // accept what is left (a trailing pad byte).
    let riff = bytes
        .get(4..8)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    if riff.saturating_add(8) > bytes.len() {
        return Err(bad(
            path,
            format!(
                "the WebP file is cut short ({} of {} bytes)",
                bytes.len(),
                riff.saturating_add(8)
            ),
        ));
    }
    let dec = image_webp::WebPDecoder::new(std::io::Cursor::new(bytes))
        .map_err(|e| bad(path, format!("cannot read the WebP header: {e}")))?;
    let (w, h) = dec.dimensions();
    check_header_size(path, w as usize, h as usize, 4)?;
    Ok(dec)
}

fn tiff_orientation(dec: &mut tiff::decoder::Decoder<std::io::Cursor<&[u8]>>) -> Option<u16> {
    dec.find_tag_unsigned::<u16>(tiff::tags::Tag::Orientation)
        .ok()
        .flatten()
        .filter(|o| (1..=8).contains(o))
}

fn decode(path: &Path, bytes: &[u8]) -> Result<Image> {
    let (img, orientation) = match sniff(bytes) {
        Some(FileKind::Png) => decode_png(path, bytes)?,
        Some(FileKind::Jpeg) => {
            let (mut dec, _, _) = jpeg_header(path, bytes)?;
            let px = dec
                .decode()
                .map_err(|e| bad(path, format!("cannot decode JPEG: {e:?}")))?;
            let (w, h) = dec
                .dimensions()
                .ok_or_else(|| bad(path, "JPEG without dimensions"))?;
            let o = dec.exif().and_then(|e| exif_orientation(e));
            (
                Image {
                    width: w,
                    height: h,
                    color: ColorType::Rgb,
                    data: ImageData::U8(px),
                },
                o,
            )
        }
        Some(FileKind::Tiff) => decode_tiff(path, bytes)?,
        Some(FileKind::WebP) => decode_webp(path, bytes)?,
        None => return Err(bad(path, NOT_AN_IMAGE)),
    };
    Ok(match orientation {
        Some(o) if o > 1 => orient(img, o),
        _ => img,
    })
}

/// The first `take` of every `of` interleaved samples (gray + alpha → gray); `v` itself when
/// every channel is kept.
fn first_channels<T: Copy>(v: Vec<T>, take: usize, of: usize) -> Vec<T> {
    if take == of {
        return v;
    }
    v.chunks_exact(of)
        .flat_map(|p| p[..take].iter().copied())
        .collect()
}

fn decode_png(path: &Path, bytes: &[u8]) -> Result<(Image, Option<u16>)> {
    let mut reader = png_reader(path, bytes)?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| bad(path, "PNG too large"))?;
    let mut buf = vec![0; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| bad(path, format!("cannot decode PNG: {e}")))?;
    buf.truncate(info.buffer_size());
    let orientation = reader.info().exif_metadata.as_deref().and_then(exif_orientation);
    let (w, h) = (info.width as usize, info.height as usize);
    let (color, keep) = match info.color_type {
        png::ColorType::Grayscale => (ColorType::Gray, (1, 1)),
        png::ColorType::GrayscaleAlpha => (ColorType::Gray, (1, 2)),
        png::ColorType::Rgb => (ColorType::Rgb, (3, 3)),
        png::ColorType::Rgba => (ColorType::Rgba, (4, 4)),
        png::ColorType::Indexed => return Err(bad(path, "palette PNG was not expanded")),
    };
    // Gray + alpha keeps the gray channel: the first sample of every pair.
    let (take, of) = keep;
    let data = if info.bit_depth == png::BitDepth::Sixteen {
        let v: Vec<u16> = buf
            .chunks_exact(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .collect();
        ImageData::U16(first_channels(v, take, of))
    } else {
        ImageData::U8(first_channels(buf, take, of))
    };
    Ok((
        Image {
            width: w,
            height: h,
            color,
            data,
        },
        orientation,
    ))
}

fn decode_tiff(path: &Path, bytes: &[u8]) -> Result<(Image, Option<u16>)> {
    let mut dec = tiff_decoder(path, bytes)?;
    let (w, h, color, bits, channels) = tiff_layout(path, &mut dec)?;
    let orientation = tiff_orientation(&mut dec);
    // The decoder's buffer limit: exactly what this image needs (its default caps at 256 MiB).
    let need = (w * h * channels * (bits as usize / 8)).max(1 << 20);
    let mut limits = tiff::decoder::Limits::default();
    limits.decoding_buffer_size = need;
    limits.intermediate_buffer_size = need;
    let px = dec
        .with_limits(limits)
        .read_image()
        .map_err(|e| bad(path, format!("cannot decode TIFF: {e}")))?;
    let take = color.channels();
    let n = w * h * channels;
    let short = || bad(path, "TIFF ended before its pixels");
    let data = match px {
        tiff::decoder::DecodingResult::U8(mut v) if v.len() >= n => {
            v.truncate(n);
            ImageData::U8(first_channels(v, take, channels))
        }
        tiff::decoder::DecodingResult::U16(mut v) if v.len() >= n => {
            v.truncate(n);
            ImageData::U16(first_channels(v, take, channels))
        }
        tiff::decoder::DecodingResult::F32(mut v) if v.len() >= n => {
            v.truncate(n);
            let v = first_channels(v, take, channels);
            if let Some(x) = v.iter().find(|x| !x.is_finite()) {
                return Err(bad(path, format!("float TIFF with a non-finite sample ({x})")));
            }
            ImageData::F32(v)
        }
        tiff::decoder::DecodingResult::U8(_)
        | tiff::decoder::DecodingResult::U16(_)
        | tiff::decoder::DecodingResult::F32(_) => return Err(short()),
        _ => {
            return Err(bad(
                path,
                format!("TIFF with {bits}-bit samples of this kind is not supported (8- or 16-bit unsigned, 32-bit float)"),
            ))
        }
    };
    Ok((
        Image {
            width: w,
            height: h,
            color,
            data,
        },
        orientation,
    ))
}

fn decode_webp(path: &Path, bytes: &[u8]) -> Result<(Image, Option<u16>)> {
    let mut dec = webp_decoder(path, bytes)?;
    let (w, h) = dec.dimensions();
    let color = if dec.has_alpha() {
        ColorType::Rgba
    } else {
        ColorType::Rgb
    };
    let size = dec
        .output_buffer_size()
        .ok_or_else(|| bad(path, "WebP too large"))?;
    let mut buf = vec![0u8; size];
    dec.read_image(&mut buf)
        .map_err(|e| bad(path, format!("cannot decode WebP: {e}")))?;
    let orientation = dec
        .exif_metadata()
        .ok()
        .flatten()
        .as_deref()
        .and_then(exif_orientation);
    Ok((
        Image {
            width: w as usize,
            height: h as usize,
            color,
            data: ImageData::U8(buf),
        },
        orientation,
    ))
}

/// The EXIF orientation (1–8) in an EXIF block: a TIFF structure, optionally after the
/// `Exif\0\0` marker of a JPEG's APP1 segment. `None` when absent, malformed or out of range;
/// every offset is bounds-checked.
pub fn exif_orientation(exif: &[u8]) -> Option<u16> {
    let t = exif.strip_prefix(b"Exif\0\0").unwrap_or(exif);
    let le = match t.get(..4)? {
        [b'I', b'I', 42, 0] => true,
        [b'M', b'M', 0, 42] => false,
        _ => return None,
    };
    let u16_at = |i: usize| -> Option<u16> {
        let b = t.get(i..i.checked_add(2)?)?;
        Some(if le {
            u16::from_le_bytes([b[0], b[1]])
        } else {
            u16::from_be_bytes([b[0], b[1]])
        })
    };
    let u32_at = |i: usize| -> Option<u32> {
        let b = t.get(i..i.checked_add(4)?)?;
        let a = [b[0], b[1], b[2], b[3]];
        Some(if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        })
    };
    let ifd = u32_at(4)? as usize;
    let count = u16_at(ifd)? as usize;
    for k in 0..count {
        let e = ifd.checked_add(2)?.checked_add(k.checked_mul(12)?)?;
        // Tag 0x0112 (Orientation), type 3 (SHORT), count 1: the value is in the entry.
        if u16_at(e)? == 0x0112 && u16_at(e + 2)? == 3 {
            return u16_at(e + 8).filter(|o| (1..=8).contains(o));
        }
    }
    None
}

/// Turns an image upright by its EXIF orientation (2–8: mirrored, rotated 180°, mirrored
/// vertically, transposed, rotated 90° clockwise, transversed, rotated 90° counter-clockwise).
pub fn orient(img: Image, orientation: u16) -> Image {
    let (w, h, c) = (img.width, img.height, img.color.channels());
    let swap = orientation >= 5;
    let (ow, oh) = if swap { (h, w) } else { (w, h) };
    // The source pixel of output pixel (x, y).
    let src = move |x: usize, y: usize| -> (usize, usize) {
        match orientation {
            2 => (w - 1 - x, y),
            3 => (w - 1 - x, h - 1 - y),
            4 => (x, h - 1 - y),
            5 => (y, x),
            6 => (y, h - 1 - x),
            7 => (w - 1 - y, h - 1 - x),
            8 => (w - 1 - y, x),
            _ => (x, y),
        }
    };
    fn remap<T: Copy>(
        v: &[T],
        w: usize,
        c: usize,
        ow: usize,
        oh: usize,
        src: impl Fn(usize, usize) -> (usize, usize),
    ) -> Vec<T> {
        let mut out = Vec::with_capacity(v.len());
        for y in 0..oh {
            for x in 0..ow {
                let (sx, sy) = src(x, y);
                let i = (sy * w + sx) * c;
                out.extend_from_slice(&v[i..i + c]);
            }
        }
        out
    }
    let data = match &img.data {
        ImageData::U8(v) => ImageData::U8(remap(v, w, c, ow, oh, src)),
        ImageData::U16(v) => ImageData::U16(remap(v, w, c, ow, oh, src)),
        ImageData::F32(v) => ImageData::F32(remap(v, w, c, ow, oh, src)),
    };
    Image {
        width: ow,
        height: oh,
        color: img.color,
        data,
    }
}

/// The file formats [`save_image`] writes, chosen by the file name's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// `.png` (lossless; 8 bits per sample, 16 for 16-bit images).
    Png,
    /// `.jpg` or `.jpeg` (quality 95; no alpha).
    Jpeg,
    /// `.tif` or `.tiff` (lossless, deflate; 8-bit, 16-bit or float samples as the image has).
    Tiff,
    /// `.webp` (lossless; 8 bits per sample).
    WebP,
}

impl ImageFormat {
    /// The format named by a file extension or a name (case-insensitive), if any.
    fn from_ext(ext: &str) -> Option<Self> {
        Some(match ext.to_ascii_lowercase().as_str() {
            "png" => ImageFormat::Png,
            "jpg" | "jpeg" => ImageFormat::Jpeg,
            "tif" | "tiff" => ImageFormat::Tiff,
            "webp" => ImageFormat::WebP,
            _ => return None,
        })
    }
}

impl ImageFormat {
    /// The format called `name`: `png`, `jpg`/`jpeg`, `tif`/`tiff` or `webp` (case-insensitive).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`format`) for another name.
    pub fn from_name(name: &str) -> Result<Self> {
        Self::from_ext(name).ok_or_else(|| {
            Error::invalid_arg(
                "format",
                format!("`{name}`: expected png, jpg, jpeg, tif, tiff or webp"),
            )
        })
    }

    /// The format for `path`'s extension (case-insensitive).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the path when the extension is not one of `.png`,
    /// `.jpg`, `.jpeg`, `.tif`, `.tiff`, `.webp` (a file called `out.bmp` would otherwise hold
    /// PNG bytes).
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        match Self::from_ext(&ext) {
            Some(f) => Ok(f),
            None => Err(Error::invalid_arg(
                "path",
                format!(
                    "{}: cannot write {} (the extension picks the format: .png, .jpg, .jpeg, .tif, .tiff or .webp)",
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

/// Writes an image as PNG (`.png`), JPEG at quality 95 (`.jpg`/`.jpeg`), TIFF (`.tif`/`.tiff`,
/// deflate) or lossless WebP (`.webp`), by extension. TIFF keeps every sample type; PNG keeps
/// 16-bit images 16-bit; the rest is written in 8 bits.
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

/// Encodes an image in memory in `format`: the bytes [`save_image`] writes. TIFF keeps every
/// sample type; PNG keeps 16-bit images 16-bit; the rest is written in 8 bits.
///
/// # Errors
/// [`Error::InvalidArgument`] for an image JPEG cannot hold (larger than 65535 px).
pub fn encode_image(image: &Image, format: ImageFormat) -> Result<Vec<u8>> {
    let expected = image
        .width
        .checked_mul(image.height)
        .and_then(|p| p.checked_mul(image.color.channels()));
    let len = match &image.data {
        ImageData::U8(v) => v.len(),
        ImageData::U16(v) => v.len(),
        ImageData::F32(v) => v.len(),
    };
    if expected != Some(len) {
        return Err(Error::invalid_arg(
            "image",
            format!(
                "holds {len} samples, a {}×{} {:?} image has {}",
                image.width,
                image.height,
                image.color,
                expected.map_or("more than can be counted".into(), |e| e.to_string())
            ),
        ));
    }
    if format == ImageFormat::Tiff {
        return encode_tiff(image);
    }
    // PNG keeps 16-bit images 16-bit (big-endian samples); everything else is written in 8 bits.
    let sixteen = format == ImageFormat::Png && matches!(image.data, ImageData::U16(_));
    let data: Vec<u8> = match &image.data {
        ImageData::U8(v) => v.clone(),
        ImageData::U16(v) if sixteen => v.iter().flat_map(|x| x.to_be_bytes()).collect(),
        ImageData::U16(v) => v
            .iter()
            .map(|&x| ((x as u32 * 255 + 32767) / 65535) as u8)
            .collect(),
        ImageData::F32(v) => v
            .iter()
            .map(|x| (x.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect(),
    };
    let mut out = Vec::new();
    if format == ImageFormat::WebP {
        let ct = match image.color {
            ColorType::Gray => image_webp::ColorType::L8,
            ColorType::Rgb => image_webp::ColorType::Rgb8,
            ColorType::Rgba => image_webp::ColorType::Rgba8,
        };
        if image.width > 16384 || image.height > 16384 {
            return Err(Error::invalid_arg("image", "too large for WebP (16384 px max)"));
        }
        image_webp::WebPEncoder::new(&mut out)
            .encode(&data, image.width as u32, image.height as u32, ct)
            .map_err(|e| Error::invalid_arg("image", format!("WebP encoding failed: {e}")))?;
        return Ok(out);
    }
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
        enc.set_depth(if sixteen {
            png::BitDepth::Sixteen
        } else {
            png::BitDepth::Eight
        });
        let mut w = enc
            .write_header()
            .map_err(|e| Error::Internal(format!("PNG: {e}")))?;
        w.write_image_data(&data)
            .map_err(|e| Error::Internal(format!("PNG: {e}")))?;
        w.finish().map_err(|e| Error::Internal(format!("PNG: {e}")))?;
    }
    Ok(out)
}

/// A TIFF (deflate) with the image's own sample type: 8-bit, 16-bit or float.
fn encode_tiff(image: &Image) -> Result<Vec<u8>> {
    use tiff::encoder::{colortype, compression::DeflateLevel, Compression, TiffEncoder};
    let mut out = std::io::Cursor::new(Vec::new());
    let fail = |e: tiff::TiffError| Error::invalid_arg("image", format!("TIFF encoding failed: {e}"));
    let mut enc = TiffEncoder::new(&mut out)
        .map_err(fail)?
        .with_compression(Compression::Deflate(DeflateLevel::Balanced));
    let (w, h) = (
        u32::try_from(image.width).map_err(|_| Error::invalid_arg("image", "too wide for TIFF"))?,
        u32::try_from(image.height).map_err(|_| Error::invalid_arg("image", "too tall for TIFF"))?,
    );
    match (&image.data, image.color) {
        (ImageData::U8(v), ColorType::Gray) => enc.write_image::<colortype::Gray8>(w, h, v),
        (ImageData::U8(v), ColorType::Rgb) => enc.write_image::<colortype::RGB8>(w, h, v),
        (ImageData::U8(v), ColorType::Rgba) => enc.write_image::<colortype::RGBA8>(w, h, v),
        (ImageData::U16(v), ColorType::Gray) => enc.write_image::<colortype::Gray16>(w, h, v),
        (ImageData::U16(v), ColorType::Rgb) => enc.write_image::<colortype::RGB16>(w, h, v),
        (ImageData::U16(v), ColorType::Rgba) => enc.write_image::<colortype::RGBA16>(w, h, v),
        (ImageData::F32(v), ColorType::Gray) => enc.write_image::<colortype::Gray32Float>(w, h, v),
        (ImageData::F32(v), ColorType::Rgb) => enc.write_image::<colortype::RGB32Float>(w, h, v),
        (ImageData::F32(v), ColorType::Rgba) => enc.write_image::<colortype::RGBA32Float>(w, h, v),
    }
    .map_err(fail)?;
    Ok(out.into_inner())
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
        for bad in ["a.bmp", "a", "a.png.bak"] {
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
