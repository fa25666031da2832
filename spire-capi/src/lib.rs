//! The C ABI of SPIRE (`libspire`).
//!
//! A thin layer: it converts C structs into `spire-core` types and core errors into status
//! codes; behaviour lives in `spire-core`. `include/spire.h` is generated from this file by
//! cbindgen (the doc comments become the header's documentation) and checked for drift by the
//! tests.
//!
//! Conventions: functions return a [`spire_status`] (`SPIRE_OK` = 0); outputs come last, as
//! pointers the caller provides; objects the library allocates are freed with their `*_free`
//! function, which accepts NULL. On failure, [`spire_last_error_message`] describes the error
//! on the calling thread. Every function body runs inside a panic guard: a bug inside the
//! library returns `SPIRE_ERROR_PANIC` instead of aborting the host.
//!
//! Example:
//!
//! ```c
//! spire_restorer *r = NULL;
//! if (spire_restorer_new("models/my-spire", NULL, &r) != SPIRE_OK) {
//!     fprintf(stderr, "%s\n", spire_last_error_message());
//!     return 1;
//! }
//! spire_restore_params p;
//! spire_restore_params_init(&p);
//! p.restoration_prompt = "Denoise with sigma 0.1";
//! spire_image_view in = { width, height, width * 3, SPIRE_PIXEL_RGB8, pixels };
//! spire_image *out = NULL;
//! spire_status s = spire_restorer_restore(r, &in, &p, NULL, NULL, &out);
//! /* … use out->data, out->width, out->height, out->stride … */
//! spire_image_free(out);
//! spire_restorer_free(r);
//! ```
#![allow(non_camel_case_types)]

mod log;
pub use log::*;

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;

use spire_core::{
    ColorFix, ColorType, Error, ErrorKind, Image, ImageData, ImageView, LoadOptions, MemoryLimit, Progress,
    RestorationPrompt, RestoreOptions, Restorer, SampleType, Samples, SchedulerKind, Stage,
};

/// The major version of this ABI; bumped only for incompatible changes.
pub const SPIRE_ABI_VERSION: u32 = 1;

/// Result of every fallible function. Values are explicit and append-only.
pub type spire_status = i32;
/// Success.
pub const SPIRE_OK: spire_status = 0;
/// An argument or option has a value the library does not accept (also a malformed prompt).
pub const SPIRE_ERROR_INVALID_ARGUMENT: spire_status = 1;
/// An image cannot be used (empty, smaller than 2×2, bad stride or format).
pub const SPIRE_ERROR_INVALID_IMAGE: spire_status = 2;
/// A file or folder could not be read or written.
pub const SPIRE_ERROR_IO: spire_status = 3;
/// A model file exists but cannot be used (corrupt, missing tensor, wrong shape, bad config).
pub const SPIRE_ERROR_MODEL_LOAD: spire_status = 4;
/// The model or option asks for something this version does not implement.
pub const SPIRE_ERROR_UNSUPPORTED: spire_status = 5;
/// The compute device failed.
pub const SPIRE_ERROR_DEVICE: spire_status = 6;
/// The progress callback asked to stop.
pub const SPIRE_ERROR_CANCELLED: spire_status = 7;
/// A bug in the library.
pub const SPIRE_ERROR_INTERNAL: spire_status = 8;
/// A required pointer argument was NULL.
pub const SPIRE_ERROR_NULL_POINTER: spire_status = 9;
/// The caller's output buffer is too small; the needed size was reported.
pub const SPIRE_ERROR_BUFFER_TOO_SMALL: spire_status = 10;
/// A panic inside the library was caught (a bug; the library stays usable).
pub const SPIRE_ERROR_PANIC: spire_status = 11;
/// A string argument is not valid UTF-8.
pub const SPIRE_ERROR_INVALID_UTF8: spire_status = 12;
/// A computation produced NaN or infinity (the message names the stage), instead of an image.
pub const SPIRE_ERROR_NUMERICAL: spire_status = 13;

/// Pixel layout of an image buffer. Values are explicit and append-only.
pub type spire_pixel_format = u32;
/// 8-bit red, green, blue.
pub const SPIRE_PIXEL_RGB8: spire_pixel_format = 1;
/// 8-bit red, green, blue, alpha (alpha passed through).
pub const SPIRE_PIXEL_RGBA8: spire_pixel_format = 2;
/// 8-bit gray.
pub const SPIRE_PIXEL_GRAY8: spire_pixel_format = 3;
/// 8-bit blue, green, red (OpenCV's `CV_8UC3` order).
pub const SPIRE_PIXEL_BGR8: spire_pixel_format = 4;
/// 8-bit blue, green, red, alpha (Windows DIBs, Qt's ARGB32 on little-endian machines).
pub const SPIRE_PIXEL_BGRA8: spire_pixel_format = 5;
/// 16-bit red, green, blue (`uint16_t`, native byte order, 0–65535).
pub const SPIRE_PIXEL_RGB16: spire_pixel_format = 6;
/// 16-bit red, green, blue, alpha.
pub const SPIRE_PIXEL_RGBA16: spire_pixel_format = 7;
/// 16-bit gray.
pub const SPIRE_PIXEL_GRAY16: spire_pixel_format = 8;
/// 32-bit float red, green, blue in [0, 1] (values outside are clipped; NaN is refused).
pub const SPIRE_PIXEL_RGB_F32: spire_pixel_format = 9;
/// 32-bit float red, green, blue, alpha in [0, 1].
pub const SPIRE_PIXEL_RGBA_F32: spire_pixel_format = 10;
/// 32-bit float gray in [0, 1].
pub const SPIRE_PIXEL_GRAY_F32: spire_pixel_format = 11;

/// Sampler choice in [`spire_restore_params`].
pub type spire_scheduler = i32;
/// The class named in the model's `scheduler_config.json`.
pub const SPIRE_SCHEDULER_MODEL: spire_scheduler = -1;
/// DDIM.
pub const SPIRE_SCHEDULER_DDIM: spire_scheduler = 0;
/// DPM-Solver++ 2M.
pub const SPIRE_SCHEDULER_DPMPP_2M: spire_scheduler = 1;
/// Euler.
pub const SPIRE_SCHEDULER_EULER: spire_scheduler = 2;

/// Colour correction choice in [`spire_restore_params`].
pub type spire_color_fix = i32;
/// None.
pub const SPIRE_COLOR_FIX_NONE: spire_color_fix = 0;
/// Wavelet (low frequencies of the input).
pub const SPIRE_COLOR_FIX_WAVELET: spire_color_fix = 1;
/// AdaIN (channel mean and std of the input).
pub const SPIRE_COLOR_FIX_ADAIN: spire_color_fix = 2;

/// `memory_limit` in [`spire_restore_params`]: three quarters of the memory the system reports
/// available.
pub const SPIRE_MEMORY_AUTO: u64 = 0;
/// `memory_limit` in [`spire_restore_params`]: no limit (tiles only where asked for, or where
/// they do less work than one piece).
pub const SPIRE_MEMORY_UNLIMITED: u64 = u64::MAX;

/// Degradation pipeline choice for [`spire_degrade`].
pub type spire_pipeline = i32;
/// Blur / downsample / noise / JPEG with a restoration prompt.
pub const SPIRE_PIPELINE_PARAMETERIZED: spire_pipeline = 0;
/// Real-ESRGAN second-order degradation (blind prompt).
pub const SPIRE_PIPELINE_REALESRGAN: spire_pipeline = 1;

/// A loaded model (opaque). Thread-safe: one handle may be used from many threads at once.
pub struct spire_restorer {
    inner: Restorer,
}

/// How to load a model. Initialise with [`spire_load_options_init`]; fields may be appended in
/// later versions (`struct_size` tells the library which are present).
#[repr(C)]
pub struct spire_load_options {
    /// `sizeof(spire_load_options)`, set by [`spire_load_options_init`].
    pub struct_size: u32,
    /// `"cpu"` (default when NULL), `"cuda"`, `"cuda:N"`, `"metal"`.
    pub device: *const c_char,
    /// `"float32"` (default when NULL), `"float16"`, `"bfloat16"`.
    pub dtype: *const c_char,
    /// Weight-file variant such as `"fp16"`, or NULL.
    pub variant: *const c_char,
    /// The adaptor when it is not the model's `adaptor/`, or NULL: an adaptor or ControlNet
    /// folder, or a single-file ControlNet (`.safetensors`). Required by
    /// [`spire_restorer_load_single_file`].
    pub adaptor: *const c_char,
    /// For [`spire_restorer_load_single_file`]: a folder with `tokenizer/` and optionally
    /// `scheduler/` and diffusers configs (e.g. the model's diffusers folder), or NULL.
    /// (Appended in 0.2; a smaller `struct_size` reads it as NULL.)
    pub config: *const c_char,
    /// What the backbone predicts, overriding the scheduler config: `"epsilon"`,
    /// `"v_prediction"`, `"sample"`, or NULL. Single files cannot say; SD 2.x ones default to
    /// `"v_prediction"`, SD 2.x *base* models need `"epsilon"`. (Appended in 0.2.)
    pub prediction_type: *const c_char,
    /// The dtype convolution and linear weights are kept in, or NULL (as `dtype`):
    /// `"float16"` or `"bfloat16"` with `dtype` float32 halves the model's memory on the CPU
    /// while the arithmetic stays f32 (each layer widens its weights when it runs).
    /// (Appended in 0.3; a smaller `struct_size` reads it as NULL.)
    pub weight_dtype: *const c_char,
}

/// The size of `spire_load_options` before `config` was appended: callers built against the
/// older header pass it, and the appended fields read as NULL.
const LOAD_OPTIONS_V1_SIZE: usize = std::mem::offset_of!(spire_load_options, config);
/// `sizeof(spire_load_options)` in 0.2 (before `weight_dtype`).
const LOAD_OPTIONS_V2_SIZE: usize = std::mem::offset_of!(spire_load_options, weight_dtype);

/// Options of one restoration. Initialise with [`spire_restore_params_init`], which takes the
/// library's defaults; fields may be appended in later versions. String fields: NULL means the
/// default; they are read during the call only.
#[repr(C)]
pub struct spire_restore_params {
    /// `sizeof(spire_restore_params)`, set by [`spire_restore_params_init`].
    pub struct_size: u32,
    /// Restoration prompt in SPIRE's language (NULL: blind, "Remove all degradation").
    pub restoration_prompt: *const c_char,
    /// Caption of the picture (NULL: empty).
    pub semantic_prompt: *const c_char,
    /// Semantic null prompt (NULL: empty).
    pub negative_prompt: *const c_char,
    /// Restoration null prompt (NULL: "Remove all degradation").
    pub restoration_null_prompt: *const c_char,
    /// Denoising steps.
    pub num_inference_steps: u32,
    /// One of `SPIRE_SCHEDULER_*`.
    pub scheduler: spire_scheduler,
    /// DDIM η (DDIM only).
    pub eta: f64,
    /// Restoration guidance w_r.
    pub restoration_guidance: f64,
    /// Semantic guidance w_s.
    pub semantic_guidance: f64,
    /// Adaptor conditioning scale.
    pub conditioning_scale: f64,
    /// In (0, 1]; below 1 starts from the noised input.
    pub strength: f64,
    /// Noise seed.
    pub seed: u64,
    /// One of `SPIRE_COLOR_FIX_*`.
    pub color_fix: spire_color_fix,
    /// Latent tile side for sampling, in latent pixels (0: chosen by the plan, for
    /// `memory_limit` and for speed; a value at least the latent's side: one piece).
    pub tile_size: u32,
    /// Overlap of neighbouring latent tiles, in latent pixels.
    pub tile_overlap: u32,
    /// Autoencoder tile side in image pixels (0: chosen from `memory_limit`; whole if it fits).
    pub vae_tile_size: u32,
    /// Peak memory of the call beyond the loaded weights, bytes, or `SPIRE_MEMORY_AUTO` /
    /// `SPIRE_MEMORY_UNLIMITED`; a call that cannot fit it is refused before it starts.
    pub memory_limit: u64,
    /// Measurement consistency: trust in the model's output (σ on [0, 1] intensities) when
    /// pulling it towards agreement with the input under the prompt's degradation; 0 = off.
    pub consistency: f64,
    /// Noise-matched start (1, default) or not (0): a prompt naming the input's noise σ starts
    /// sampling from the input scaled to the timestep of that noise level.
    pub match_noise: i32,
    /// Free text sent to the adaptor as is instead of `restoration_prompt`, for adaptors
    /// trained on another prompt language (NULL or empty: not used). (Appended in 0.2.)
    pub verbatim_restoration_prompt: *const c_char,
    /// Enlarge the input by the prompt's upsample factor (1, default), or take it as already
    /// enlarged to the output size (0: a degraded image resized back). (Appended in 0.2.)
    pub upsample_input: i32,
    /// Any restore option by name, as text: `"name=value"` pairs separated by `;` or newlines
    /// (`"eta=0.3; scheduler=ddim"`), applied after the fields above. Every option of the
    /// library's options table (docs/restoring.md) is reachable this way, including ones newer
    /// than this struct (NULL: none). (Appended in 0.2.)
    pub options: *const c_char,
}

/// A borrowed image: `height` rows of `width` pixels, rows `stride` bytes apart.
#[repr(C)]
pub struct spire_image_view {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes from one row to the next (≥ width × bytes per pixel).
    pub stride: usize,
    /// One of `SPIRE_PIXEL_*`.
    pub format: spire_pixel_format,
    /// First byte of the first row.
    pub data: *const u8,
}

/// An image allocated by the library; free with [`spire_image_free`].
#[repr(C)]
pub struct spire_image {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes per row (rows are tightly packed).
    pub stride: usize,
    /// One of `SPIRE_PIXEL_*`.
    pub format: spire_pixel_format,
    /// `height × stride` bytes.
    pub data: *mut u8,
}

/// A restoration prompt as numbers; a field of 0 means "absent" (all 0: blind).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct spire_prompt {
    /// `sizeof(spire_prompt)`.
    pub struct_size: u32,
    /// Deblur σ (0.1–10), or 0.
    pub deblur_sigma: f32,
    /// Upsample factor (1–8), or 0.
    pub upsample_scale: f32,
    /// Denoise σ (0.01–1), or 0.
    pub denoise_sigma: f32,
    /// JPEG quality (1–100), or 0.
    pub dejpeg_quality: u32,
}

/// Progress callback: called before the first and after every denoising step with the steps
/// done and the total; a non-zero return cancels the run (`SPIRE_ERROR_CANCELLED`). It runs on
/// the calling thread. (Declared `C-unwind` so a panicking Rust callback is caught, not an abort.)
pub type spire_progress_fn =
    Option<unsafe extern "C-unwind" fn(step: u32, total: u32, user_data: *mut c_void) -> i32>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

fn status_of(e: &Error) -> spire_status {
    match e.kind() {
        ErrorKind::InvalidArgument => SPIRE_ERROR_INVALID_ARGUMENT,
        ErrorKind::InvalidImage => SPIRE_ERROR_INVALID_IMAGE,
        ErrorKind::Io => SPIRE_ERROR_IO,
        ErrorKind::ModelLoad => SPIRE_ERROR_MODEL_LOAD,
        ErrorKind::Unsupported => SPIRE_ERROR_UNSUPPORTED,
        ErrorKind::Device => SPIRE_ERROR_DEVICE,
        ErrorKind::Numerical => SPIRE_ERROR_NUMERICAL,
        ErrorKind::Cancelled => SPIRE_ERROR_CANCELLED,
        _ => SPIRE_ERROR_INTERNAL,
    }
}

/// A failure of the C layer itself.
struct Fail(spire_status, String);

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail(status_of(&e), e.to_string())
    }
}

fn null(name: &str) -> Fail {
    Fail(SPIRE_ERROR_NULL_POINTER, format!("`{name}` is NULL"))
}

/// Runs `f` inside the panic guard and records the error message.
fn guard(f: impl FnOnce() -> Result<(), Fail>) -> spire_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => {
            set_error("");
            SPIRE_OK
        }
        Ok(Err(Fail(s, m))) => {
            set_error(&m);
            s
        }
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_error(&format!("panic inside libspire: {what}"));
            SPIRE_ERROR_PANIC
        }
    }
}

/// A C string argument (NULL → `None`).
///
/// # Safety
/// `p` is NULL or a valid NUL-terminated string.
unsafe fn opt_str(p: *const c_char, name: &str) -> Result<Option<String>, Fail> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller passes a valid NUL-terminated string.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map(|s| Some(s.to_string()))
        .map_err(|_| Fail(SPIRE_ERROR_INVALID_UTF8, format!("`{name}` is not valid UTF-8")))
}

/// What a pixel format holds: channels, sample type, and whether red and blue are swapped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct PixelLayout {
    color: ColorType,
    sample: SampleType,
    bgr: bool,
}

/// Every pixel format with its layout (the one table both directions read).
const PIXEL_FORMATS: [(spire_pixel_format, PixelLayout); 11] = {
    const fn l(color: ColorType, sample: SampleType, bgr: bool) -> PixelLayout {
        PixelLayout { color, sample, bgr }
    }
    [
        (SPIRE_PIXEL_RGB8, l(ColorType::Rgb, SampleType::U8, false)),
        (SPIRE_PIXEL_RGBA8, l(ColorType::Rgba, SampleType::U8, false)),
        (SPIRE_PIXEL_GRAY8, l(ColorType::Gray, SampleType::U8, false)),
        (SPIRE_PIXEL_BGR8, l(ColorType::Rgb, SampleType::U8, true)),
        (SPIRE_PIXEL_BGRA8, l(ColorType::Rgba, SampleType::U8, true)),
        (SPIRE_PIXEL_RGB16, l(ColorType::Rgb, SampleType::U16, false)),
        (SPIRE_PIXEL_RGBA16, l(ColorType::Rgba, SampleType::U16, false)),
        (SPIRE_PIXEL_GRAY16, l(ColorType::Gray, SampleType::U16, false)),
        (SPIRE_PIXEL_RGB_F32, l(ColorType::Rgb, SampleType::F32, false)),
        (SPIRE_PIXEL_RGBA_F32, l(ColorType::Rgba, SampleType::F32, false)),
        (SPIRE_PIXEL_GRAY_F32, l(ColorType::Gray, SampleType::F32, false)),
    ]
};

fn layout_of(format: spire_pixel_format) -> Result<PixelLayout, Fail> {
    PIXEL_FORMATS
        .iter()
        .find(|(f, _)| *f == format)
        .map(|(_, l)| *l)
        .ok_or_else(|| {
            Fail(
                SPIRE_ERROR_INVALID_IMAGE,
                format!("unknown pixel format {format} (SPIRE_PIXEL_RGB8 … SPIRE_PIXEL_GRAY_F32: 1–11)"),
            )
        })
}

fn format_of(l: PixelLayout) -> spire_pixel_format {
    PIXEL_FORMATS
        .iter()
        .find(|(_, x)| *x == l)
        .map_or(SPIRE_PIXEL_RGB8, |(f, _)| *f)
}

/// Bytes per pixel of a layout.
fn pixel_bytes(l: PixelLayout) -> usize {
    l.color.channels() * l.sample.size()
}

/// A C image as the core sees it: borrowed when its samples can be used in place (RGB order,
/// samples aligned for their type), otherwise copied once (BGR order swapped, unaligned 16-bit
/// or float samples).
enum InImage<'a> {
    View(ImageView<'a>),
    Owned(Image),
}

impl InImage<'_> {
    fn view(&self) -> ImageView<'_> {
        match self {
            InImage::View(v) => *v,
            InImage::Owned(i) => i.view(),
        }
    }
}

/// Packs rows of `c`-sample pixels (`row` bytes each, `stride` apart) into samples of `T`
/// read by `read` from native-order bytes, swapping the first and third channel when `bgr`.
fn pack<T: Copy>(
    bytes: &[u8],
    (w, h, c, stride): (usize, usize, usize, usize),
    size: usize,
    bgr: bool,
    read: impl Fn(&[u8]) -> T,
) -> Vec<T> {
    let mut out = Vec::with_capacity(w * h * c);
    for y in 0..h {
        let row = &bytes[y * stride..y * stride + w * c * size];
        for px in row.chunks_exact(c * size) {
            let at = |k: usize| read(&px[k * size..(k + 1) * size]);
            for k in 0..c {
                let k = if bgr && c >= 3 && (k == 0 || k == 2) {
                    2 - k
                } else {
                    k
                };
                out.push(at(k));
            }
        }
    }
    out
}

/// A core view of a C image view.
///
/// # Safety
/// `v.data` covers `stride × (height − 1) + width × bytes per pixel` bytes.
unsafe fn view<'a>(v: &'a spire_image_view, name: &str) -> Result<InImage<'a>, Fail> {
    if v.data.is_null() {
        return Err(null(&format!("{name}->data")));
    }
    let l = layout_of(v.format)?;
    let (w, h) = (v.width as usize, v.height as usize);
    let (c, size) = (l.color.channels(), l.sample.size());
    let row = w * c * size;
    if h > 0 && v.stride < row {
        return Err(Fail(
            SPIRE_ERROR_INVALID_IMAGE,
            format!(
                "{name}: stride {} is less than a row ({w} pixels × {} bytes = {row} bytes)",
                v.stride,
                c * size
            ),
        ));
    }
    let len = if h == 0 || w == 0 {
        0
    } else {
        v.stride.saturating_mul(h - 1).saturating_add(row)
    };
    // SAFETY: the caller guarantees the buffer covers the rows it describes.
    let bytes = unsafe { std::slice::from_raw_parts(v.data, len) };
    #[allow(clippy::manual_is_multiple_of)] // MSRV 1.85: `is_multiple_of` is 1.87
    let aligned = (v.data as usize) % size == 0 && v.stride % size == 0;
    if !l.bgr && aligned {
        let s = match l.sample {
            SampleType::U8 => Samples::U8(bytes),
            // SAFETY: aligned for the type, `len` a multiple of its size (row and stride are).
            SampleType::U16 => {
                Samples::U16(unsafe { std::slice::from_raw_parts(v.data.cast::<u16>(), len / 2) })
            }
            // SAFETY: as above.
            SampleType::F32 => {
                Samples::F32(unsafe { std::slice::from_raw_parts(v.data.cast::<f32>(), len / 4) })
            }
        };
        return Ok(InImage::View(ImageView::with_stride(
            w,
            h,
            v.stride / size,
            l.color,
            s,
        )?));
    }
    let dims = (w, h, c, v.stride);
    let data = match l.sample {
        SampleType::U8 => ImageData::U8(pack(bytes, dims, 1, l.bgr, |b| b[0])),
        SampleType::U16 => ImageData::U16(pack(bytes, dims, 2, l.bgr, |b| u16::from_ne_bytes([b[0], b[1]]))),
        SampleType::F32 => ImageData::F32(pack(bytes, dims, 4, l.bgr, |b| {
            f32::from_ne_bytes([b[0], b[1], b[2], b[3]])
        })),
    };
    let img = Image {
        width: w,
        height: h,
        color: l.color,
        data,
    };
    // The core's checks on the copy too.
    ImageView::new(w, h, l.color, img.view().samples())?;
    Ok(InImage::Owned(img))
}

/// Writes `img` tightly packed in the pixel format `l` (native byte order) into `dst`, which
/// must hold exactly `width × height × bytes per pixel` bytes (checked: never a write past it).
fn write_c_pixels(img: &Image, l: PixelLayout, dst: &mut [u8]) -> Result<(), Fail> {
    let c = img.color.channels();
    let size = l.sample.size();
    let samples = img.width * img.height * c;
    if img.sample_type() != l.sample || dst.len() != samples * size {
        return Err(Fail(
            SPIRE_ERROR_INTERNAL,
            format!(
                "a {}×{} {:?} image does not fill {} bytes of pixel format {}",
                img.width,
                img.height,
                img.sample_type(),
                dst.len(),
                format_of(l)
            ),
        ));
    }
    // The sample that lands at index `i`: red and blue swapped for BGR layouts.
    let src = |i: usize| -> usize {
        match i % c {
            0 if l.bgr && c >= 3 => i + 2,
            2 if l.bgr && c >= 3 => i - 2,
            _ => i,
        }
    };
    let out = dst.chunks_exact_mut(size);
    match &img.data {
        ImageData::U8(v) => out.enumerate().for_each(|(i, d)| d[0] = v[src(i)]),
        ImageData::U16(v) => out
            .enumerate()
            .for_each(|(i, d)| d.copy_from_slice(&v[src(i)].to_ne_bytes())),
        ImageData::F32(v) => out
            .enumerate()
            .for_each(|(i, d)| d.copy_from_slice(&v[src(i)].to_ne_bytes())),
    }
    Ok(())
}

/// Alignment of every pixel buffer the library allocates (any sample type reads in place).
const IMAGE_ALIGN: usize = 16;

/// An image allocated for C in the pixel format `l` (by default the image's own: RGB order),
/// its buffer aligned to [`IMAGE_ALIGN`].
fn into_c_image(img: Image, bgr: bool) -> Result<*mut spire_image, Fail> {
    let l = PixelLayout {
        color: img.color,
        sample: img.sample_type(),
        bgr,
    };
    let (width, height, stride) = (img.width, img.height, img.width * pixel_bytes(l));
    let len = stride * height;
    let layout = std::alloc::Layout::from_size_align(len.max(1), IMAGE_ALIGN)
        .map_err(|e| Fail(SPIRE_ERROR_INTERNAL, format!("image layout: {e}")))?;
    // SAFETY: non-zero size.
    let ptr = unsafe { std::alloc::alloc(layout) };
    if ptr.is_null() {
        return Err(Fail(
            SPIRE_ERROR_INTERNAL,
            format!("out of memory: cannot allocate {len} bytes"),
        ));
    }
    // SAFETY: `ptr` holds `len` freshly allocated bytes, written (every one) before C reads them.
    let dst = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
    if let Err(e) = write_c_pixels(&img, l, dst) {
        // SAFETY: allocated above with this layout.
        unsafe { std::alloc::dealloc(ptr, layout) };
        return Err(e);
    }
    drop(img);
    Ok(Box::into_raw(Box::new(spire_image {
        width: width as u32,
        height: height as u32,
        stride,
        format: format_of(l),
        data: ptr,
    })))
}

/// Size of the first version of `spire_restore_params` (before the tiling fields).
const PARAMS_V1_SIZE: usize = std::mem::offset_of!(spire_restore_params, tile_size);

/// Core options from C params (NULL → `base`, the model's defaults) and a progress callback.
///
/// # Safety
/// `p` is NULL or points to an initialised `spire_restore_params`.
unsafe fn options(
    base: RestoreOptions,
    p: *const spire_restore_params,
    progress: spire_progress_fn,
    user_data: *mut c_void,
) -> Result<RestoreOptions, Fail> {
    let mut o = base;
    if !p.is_null() {
        // SAFETY: checked non-NULL; `struct_size` is the first field of every version.
        let size = unsafe { std::ptr::addr_of!((*p).struct_size).read_unaligned() } as usize;
        if size < PARAMS_V1_SIZE {
            return Err(Fail(
                SPIRE_ERROR_INVALID_ARGUMENT,
                format!("params.struct_size is {size}; call spire_restore_params_init first"),
            ));
        }
        // Params from a caller built against an older header are shorter: start from the
        // defaults and copy only the bytes the caller's struct has.
        let mut full = std::mem::MaybeUninit::<spire_restore_params>::uninit();
        // SAFETY: `full` is writable; write_params writes every field; the copy reads `size`
        // bytes (capped at our struct's size) that the caller's struct covers.
        let p = unsafe {
            write_params(full.as_mut_ptr(), &o);
            let n = size.min(std::mem::size_of::<spire_restore_params>());
            std::ptr::copy_nonoverlapping(p.cast::<u8>(), full.as_mut_ptr().cast::<u8>(), n);
            full.assume_init()
        };
        let p = &p;
        // SAFETY: string fields are NULL or valid C strings (caller contract).
        unsafe {
            if let Some(s) = opt_str(p.restoration_prompt, "restoration_prompt")? {
                o = o.with_restoration_text(&s)?;
            }
            if let Some(s) = opt_str(p.semantic_prompt, "semantic_prompt")? {
                o.semantic_prompt = s;
            }
            if let Some(s) = opt_str(p.negative_prompt, "negative_prompt")? {
                o.negative_prompt = s;
            }
            if let Some(s) = opt_str(p.restoration_null_prompt, "restoration_null_prompt")? {
                o.restoration_null_prompt = s;
            }
        }
        o.num_inference_steps = p.num_inference_steps as usize;
        o.scheduler = match p.scheduler {
            SPIRE_SCHEDULER_MODEL => None,
            SPIRE_SCHEDULER_DDIM => Some(SchedulerKind::Ddim),
            SPIRE_SCHEDULER_DPMPP_2M => Some(SchedulerKind::DpmSolverPlusPlus2M),
            SPIRE_SCHEDULER_EULER => Some(SchedulerKind::Euler),
            s => {
                return Err(Fail(
                    SPIRE_ERROR_INVALID_ARGUMENT,
                    format!("invalid argument `scheduler`: unknown value {s}"),
                ))
            }
        };
        o.eta = p.eta;
        o.restoration_guidance = p.restoration_guidance;
        o.semantic_guidance = p.semantic_guidance;
        o.conditioning_scale = p.conditioning_scale;
        o.strength = p.strength;
        o.seed = p.seed;
        o.color_fix = match p.color_fix {
            SPIRE_COLOR_FIX_NONE => ColorFix::None,
            SPIRE_COLOR_FIX_WAVELET => ColorFix::Wavelet,
            SPIRE_COLOR_FIX_ADAIN => ColorFix::Adain,
            c => {
                return Err(Fail(
                    SPIRE_ERROR_INVALID_ARGUMENT,
                    format!("invalid argument `color_fix`: unknown value {c}"),
                ))
            }
        };
        o.tile_size = (p.tile_size != 0).then_some(p.tile_size as usize);
        o.tile_overlap = p.tile_overlap as usize;
        o.vae_tile_size = (p.vae_tile_size != 0).then_some(p.vae_tile_size as usize);
        o.memory_limit = match p.memory_limit {
            SPIRE_MEMORY_AUTO => MemoryLimit::Auto,
            SPIRE_MEMORY_UNLIMITED => MemoryLimit::Unlimited,
            b => MemoryLimit::Bytes(b),
        };
        o.consistency = p.consistency;
        let flag = |v: i32, name: &str| match v {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(Fail(
                SPIRE_ERROR_INVALID_ARGUMENT,
                format!("invalid argument `{name}`: {v} is not 0 or 1"),
            )),
        };
        o.match_noise = flag(p.match_noise, "match_noise")?;
        o.upsample_input = flag(p.upsample_input, "upsample_input")?;
        // SAFETY: NULL or a valid C string (caller contract).
        if let Some(v) = unsafe { opt_str(p.verbatim_restoration_prompt, "verbatim_restoration_prompt")? } {
            if !v.trim().is_empty() {
                if !p.restoration_prompt.is_null() {
                    return Err(Fail(
                        SPIRE_ERROR_INVALID_ARGUMENT,
                        "invalid argument `verbatim_restoration_prompt`: give it or restoration_prompt, not both".into(),
                    ));
                }
                o.set("verbatim_restoration_prompt", v)?;
            }
        }
        // SAFETY: NULL or a valid C string (caller contract).
        if let Some(text) = unsafe { opt_str(p.options, "options")? } {
            apply_option_text(&mut o, &text)?;
        }
    }
    if let Some(cb) = progress {
        let ud = user_data as usize;
        o.progress = Some(Arc::new(move |p: &Progress| {
            if p.stage != Stage::Denoising {
                return true;
            }
            // SAFETY: the caller's callback with the caller's user data, on the calling thread.
            unsafe { cb(p.step as u32, p.total as u32, ud as *mut c_void) == 0 }
        }));
    }
    Ok(o)
}

/// Sends the library's log messages at `max_level` and more severe (`SPIRE_LOG_ERROR` …
/// `SPIRE_LOG_TRACE`; `SPIRE_LOG_INFO` tells what it loads and plans) to `callback`, with
/// `user_data`; `callback` NULL stops them. The callback runs on the thread that logs (it must be
/// thread-safe and must not throw). Process-wide; thread-safe.
///
/// Returns `SPIRE_ERROR_INVALID_ARGUMENT` for a level outside 1–5, `SPIRE_ERROR_UNSUPPORTED`
/// when the process already has another Rust `tracing` subscriber.
///
/// # Safety
/// `callback` is NULL or a function that may be called with `user_data` from any thread
/// until it is replaced.
#[no_mangle]
pub unsafe extern "C" fn spire_set_log_callback(
    callback: spire_log_fn,
    max_level: spire_log_level,
    user_data: *mut c_void,
) -> spire_status {
    guard(|| {
        if !(SPIRE_LOG_ERROR..=SPIRE_LOG_TRACE).contains(&max_level) {
            return Err(Fail(
                SPIRE_ERROR_INVALID_ARGUMENT,
                format!("invalid argument `max_level`: {max_level} is not a SPIRE_LOG_* level (1–5)"),
            ));
        }
        if !log::set(callback.map(|f| (f, user_data as usize, max_level))) {
            return Err(Fail(
                SPIRE_ERROR_UNSUPPORTED,
                "another tracing subscriber owns this process's log messages".into(),
            ));
        }
        Ok(())
    })
}

/// Sets how many CPU threads the library computes with, for the whole process (default: every
/// core). Call it before the first load or restore: the threads start then and keep their
/// count; setting the count they have is a no-op. Thread-safe.
///
/// Returns `SPIRE_ERROR_INVALID_ARGUMENT` naming `threads` for 0 or when the threads already
/// run with another count.
#[no_mangle]
pub extern "C" fn spire_set_num_threads(threads: u32) -> spire_status {
    guard(|| Ok(spire_core::device::set_num_threads(threads as usize)?))
}

/// How many CPU threads the library computes with. Thread-safe.
#[no_mangle]
pub extern "C" fn spire_num_threads() -> u32 {
    spire_core::device::num_threads() as u32
}

/// The library version, e.g. `"0.1.0"`. Static string: do not free. Thread-safe.
#[no_mangle]
pub extern "C" fn spire_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The ABI version this library implements (`SPIRE_ABI_VERSION`). Thread-safe.
#[no_mangle]
pub extern "C" fn spire_abi_version() -> u32 {
    SPIRE_ABI_VERSION
}

/// A short static description of a status value (`"ok"`, `"invalid argument"`, …; unknown
/// values give `"unknown status"`). Do not free. Thread-safe.
#[no_mangle]
pub extern "C" fn spire_status_str(status: spire_status) -> *const c_char {
    let s: &'static str = match status {
        SPIRE_OK => "ok\0",
        SPIRE_ERROR_INVALID_ARGUMENT => "invalid argument\0",
        SPIRE_ERROR_INVALID_IMAGE => "invalid image\0",
        SPIRE_ERROR_IO => "I/O error\0",
        SPIRE_ERROR_MODEL_LOAD => "cannot load model\0",
        SPIRE_ERROR_UNSUPPORTED => "unsupported\0",
        SPIRE_ERROR_DEVICE => "device error\0",
        SPIRE_ERROR_CANCELLED => "cancelled\0",
        SPIRE_ERROR_INTERNAL => "internal error\0",
        SPIRE_ERROR_NULL_POINTER => "NULL pointer\0",
        SPIRE_ERROR_BUFFER_TOO_SMALL => "buffer too small\0",
        SPIRE_ERROR_PANIC => "panic inside libspire\0",
        SPIRE_ERROR_INVALID_UTF8 => "invalid UTF-8\0",
        SPIRE_ERROR_NUMERICAL => "numerical error (NaN or infinity)\0",
        _ => "unknown status\0",
    };
    s.as_ptr().cast()
}

/// The message of the last failed call on this thread (empty after a success). The pointer is
/// owned by the library and valid until the next libspire call on the same thread. Never NULL.
#[no_mangle]
pub extern "C" fn spire_last_error_message() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Fills `options` with the defaults (CPU, float32) and sets `struct_size`. NULL is a no-op.
///
/// # Safety
/// `options` is NULL or points to writable memory for a `spire_load_options`.
#[no_mangle]
pub unsafe extern "C" fn spire_load_options_init(options: *mut spire_load_options) {
    if options.is_null() {
        return;
    }
    // SAFETY: checked non-NULL; writable per the contract.
    unsafe {
        options.write(spire_load_options {
            struct_size: std::mem::size_of::<spire_load_options>() as u32,
            device: std::ptr::null(),
            dtype: std::ptr::null(),
            variant: std::ptr::null(),
            adaptor: std::ptr::null(),
            config: std::ptr::null(),
            prediction_type: std::ptr::null(),
            weight_dtype: std::ptr::null(),
        });
    }
}

/// Applies `"name=value; name=value"` (or one pair per line) to `o`, each through its row of
/// the options table.
fn apply_option_text(o: &mut RestoreOptions, text: &str) -> Result<(), Fail> {
    for pair in text.split([';', '\n']).map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').ok_or_else(|| {
            Fail(
                SPIRE_ERROR_INVALID_ARGUMENT,
                format!("invalid argument `options`: `{pair}` is not name=value"),
            )
        })?;
        o.set(name.trim(), value.trim())?;
    }
    Ok(())
}

/// Fills `params` with the library's defaults (Rust's `RestoreOptions::default()`) and sets
/// `struct_size`. NULL is a no-op. Thread-safe. A model may recommend other sampling options
/// (the built-in one does): [`spire_restorer_default_params`] fills in those.
///
/// # Safety
/// `params` is NULL or points to writable memory for a `spire_restore_params`.
#[no_mangle]
pub unsafe extern "C" fn spire_restore_params_init(params: *mut spire_restore_params) {
    if params.is_null() {
        return;
    }
    // SAFETY: checked non-NULL; writable per the contract.
    unsafe { write_params(params, &RestoreOptions::default()) }
}

/// Fills `params` with the options this model recommends (the library's defaults with the
/// model's `spire.json` applied: what a NULL `params` means) and sets `struct_size`. Start
/// from these, then set the prompts. Thread-safe.
///
/// # Safety
/// `restorer` is NULL or a live handle; `params` is NULL or points to writable memory for a
/// `spire_restore_params`.
#[no_mangle]
pub unsafe extern "C" fn spire_restorer_default_params(
    restorer: *const spire_restorer,
    params: *mut spire_restore_params,
) -> spire_status {
    guard(|| {
        if restorer.is_null() {
            return Err(null("restorer"));
        }
        if params.is_null() {
            return Err(null("params"));
        }
        // SAFETY: checked non-NULL; live / writable per the contract.
        unsafe { write_params(params, &(*restorer).inner.default_options()) };
        Ok(())
    })
}

/// Writes every field of `params` from `d`.
///
/// # Safety
/// `params` points to writable memory for a `spire_restore_params`.
unsafe fn write_params(params: *mut spire_restore_params, d: &RestoreOptions) {
    let scheduler = match d.scheduler {
        None => SPIRE_SCHEDULER_MODEL,
        Some(SchedulerKind::Ddim) => SPIRE_SCHEDULER_DDIM,
        Some(SchedulerKind::Euler) => SPIRE_SCHEDULER_EULER,
        Some(_) => SPIRE_SCHEDULER_DPMPP_2M,
    };
    let color_fix = match d.color_fix {
        ColorFix::None => SPIRE_COLOR_FIX_NONE,
        ColorFix::Wavelet => SPIRE_COLOR_FIX_WAVELET,
        ColorFix::Adain => SPIRE_COLOR_FIX_ADAIN,
    };
    // SAFETY: writable per the contract.
    unsafe {
        params.write(spire_restore_params {
            struct_size: std::mem::size_of::<spire_restore_params>() as u32,
            restoration_prompt: std::ptr::null(),
            semantic_prompt: std::ptr::null(),
            negative_prompt: std::ptr::null(),
            restoration_null_prompt: std::ptr::null(),
            num_inference_steps: d.num_inference_steps as u32,
            scheduler,
            eta: d.eta,
            restoration_guidance: d.restoration_guidance,
            semantic_guidance: d.semantic_guidance,
            conditioning_scale: d.conditioning_scale,
            strength: d.strength,
            seed: d.seed,
            color_fix,
            tile_size: d.tile_size.unwrap_or(0) as u32,
            tile_overlap: d.tile_overlap as u32,
            vae_tile_size: d.vae_tile_size.unwrap_or(0) as u32,
            memory_limit: match d.memory_limit {
                MemoryLimit::Auto => SPIRE_MEMORY_AUTO,
                MemoryLimit::Unlimited => SPIRE_MEMORY_UNLIMITED,
                MemoryLimit::Bytes(b) => b,
            },
            consistency: d.consistency,
            match_noise: d.match_noise as i32,
            verbatim_restoration_prompt: std::ptr::null(),
            upsample_input: d.upsample_input as i32,
            options: std::ptr::null(),
        });
    }
}

/// The built-in spire-tiny model, embedded in the library (no files needed; loaded once per
/// process, every handle shares it). On success `*out` is a new handle the caller frees with
/// [`spire_restorer_free`]; on failure `*out` is NULL. Errors: `SPIRE_ERROR_NULL_POINTER`,
/// `SPIRE_ERROR_UNSUPPORTED` (a library built without the model file). Thread-safe.
///
/// # Safety
/// `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn spire_restorer_new_builtin(out: *mut *mut spire_restorer) -> spire_status {
    guard(|| {
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: checked non-NULL.
        unsafe { *out = std::ptr::null_mut() };
        let r = Restorer::builtin()?;
        // SAFETY: checked non-NULL.
        unsafe { *out = Box::into_raw(Box::new(spire_restorer { inner: r })) };
        Ok(())
    })
}

/// Loads a model folder. `options` may be NULL (defaults). On success `*out` is a new handle
/// the caller frees with [`spire_restorer_free`]; on failure `*out` is set to NULL.
/// Errors: `SPIRE_ERROR_NULL_POINTER` (model_dir or out NULL), `SPIRE_ERROR_IO` (missing
/// folder or file), `SPIRE_ERROR_MODEL_LOAD`, `SPIRE_ERROR_INVALID_ARGUMENT`, `SPIRE_ERROR_DEVICE`.
/// Thread-safe.
///
/// # Safety
/// `model_dir` is a NUL-terminated string; `options` is NULL or initialised by
/// [`spire_load_options_init`]; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn spire_restorer_new(
    model_dir: *const c_char,
    options: *const spire_load_options,
    out: *mut *mut spire_restorer,
) -> spire_status {
    guard(|| {
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: checked non-NULL.
        unsafe { *out = std::ptr::null_mut() };
        // SAFETY: caller contract on strings.
        let dir = unsafe { opt_str(model_dir, "model_dir")? }.ok_or_else(|| null("model_dir"))?;
        // SAFETY: caller contract on `options`.
        let lo = unsafe { load_options(options)? };
        let r = Restorer::from_pretrained(&dir, &lo)?;
        // SAFETY: checked non-NULL.
        unsafe { *out = Box::into_raw(Box::new(spire_restorer { inner: r })) };
        Ok(())
    })
}

/// Reads `spire_load_options` (NULL: defaults), honouring `struct_size`.
///
/// # Safety
/// `options` is NULL or initialised by [`spire_load_options_init`], its strings NUL-terminated.
unsafe fn load_options(options: *const spire_load_options) -> Result<LoadOptions, Fail> {
    let mut lo = LoadOptions::default();
    if options.is_null() {
        return Ok(lo);
    }
    // SAFETY: checked non-NULL, initialised per the contract.
    let o = unsafe { &*options };
    let size = o.struct_size as usize;
    if size < LOAD_OPTIONS_V1_SIZE {
        return Err(Fail(
            SPIRE_ERROR_INVALID_ARGUMENT,
            "options.struct_size is too small; call spire_load_options_init".into(),
        ));
    }
    // SAFETY: caller contract on strings; appended fields are read only when present.
    unsafe {
        if let Some(d) = opt_str(o.device, "device")? {
            lo.device = spire_core::device::parse_device(&d)?;
        }
        if let Some(d) = opt_str(o.dtype, "dtype")? {
            lo.dtype = spire_core::device::parse_dtype(&d)?;
        }
        lo.variant = opt_str(o.variant, "variant")?;
        lo.adaptor = opt_str(o.adaptor, "adaptor")?.map(PathBuf::from);
        if size >= std::mem::size_of::<spire_load_options>() {
            if let Some(d) = opt_str(o.weight_dtype, "weight_dtype")? {
                lo.weight_dtype = Some(spire_core::device::parse_weight_dtype(&d)?);
            }
        }
        if size >= LOAD_OPTIONS_V2_SIZE {
            lo.config = opt_str(o.config, "config")?.map(PathBuf::from);
            if let Some(p) = opt_str(o.prediction_type, "prediction_type")? {
                lo.prediction_type =
                    Some(spire_core::scheduler::PredictionType::parse(&p).ok_or_else(|| {
                        Fail(
                            SPIRE_ERROR_INVALID_ARGUMENT,
                            format!("prediction_type: unknown `{p}` (epsilon, v_prediction or sample)"),
                        )
                    })?);
            }
        }
    }
    Ok(lo)
}

/// Loads a single-file Stable Diffusion 1.x / 2.x checkpoint (original layout, `.safetensors`)
/// with the adaptor `options->adaptor` (required: a single-file ControlNet such as
/// `control_v11f1e_sd15_tile`, or a ControlNet / SPIRE adaptor folder) and the config folder
/// `options->config` (required: `tokenizer/`, optionally `scheduler/`). Pickle files (`.ckpt`,
/// `.pt`, `.bin`) are refused with the command that converts them. On success `*out` is a new
/// handle the caller frees with [`spire_restorer_free`]; on failure `*out` is set to NULL.
/// Errors: `SPIRE_ERROR_NULL_POINTER` (checkpoint, options or out NULL),
/// `SPIRE_ERROR_IO`, `SPIRE_ERROR_MODEL_LOAD` (pickles, unknown layouts, missing tokenizer or
/// adaptor; the message names the file and keys), `SPIRE_ERROR_INVALID_ARGUMENT`,
/// `SPIRE_ERROR_DEVICE`. Thread-safe.
///
/// # Safety
/// `checkpoint` is a NUL-terminated string; `options` is initialised by
/// [`spire_load_options_init`]; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn spire_restorer_load_single_file(
    checkpoint: *const c_char,
    options: *const spire_load_options,
    out: *mut *mut spire_restorer,
) -> spire_status {
    guard(|| {
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: checked non-NULL.
        unsafe { *out = std::ptr::null_mut() };
        // SAFETY: caller contract on strings.
        let file = unsafe { opt_str(checkpoint, "checkpoint")? }.ok_or_else(|| null("checkpoint"))?;
        if options.is_null() {
            return Err(null("options"));
        }
        // SAFETY: caller contract on `options`.
        let lo = unsafe { load_options(options)? };
        let r = Restorer::from_single_file(&file, &lo)?;
        // SAFETY: checked non-NULL.
        unsafe { *out = Box::into_raw(Box::new(spire_restorer { inner: r })) };
        Ok(())
    })
}

/// A new handle sharing the same loaded model (no reload, no copy of the weights). Free it
/// with [`spire_restorer_free`]. Thread-safe.
///
/// # Safety
/// `restorer` is a live handle; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn spire_restorer_clone(
    restorer: *const spire_restorer,
    out: *mut *mut spire_restorer,
) -> spire_status {
    guard(|| {
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: checked non-NULL.
        unsafe { *out = std::ptr::null_mut() };
        if restorer.is_null() {
            return Err(null("restorer"));
        }
        // SAFETY: checked non-NULL, live per the contract.
        let r = unsafe { &*restorer }.inner.clone();
        // SAFETY: checked non-NULL.
        unsafe { *out = Box::into_raw(Box::new(spire_restorer { inner: r })) };
        Ok(())
    })
}

/// Frees a handle; the model is freed with its last handle. NULL is a no-op. Do not free a
/// handle another thread is using.
///
/// # Safety
/// `restorer` is NULL or a handle from this library not yet freed.
#[no_mangle]
pub unsafe extern "C" fn spire_restorer_free(restorer: *mut spire_restorer) {
    if restorer.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: allocated by Box::into_raw in this library, freed once (caller contract).
        drop(unsafe { Box::from_raw(restorer) });
    }));
}

/// Whether two handles share one loaded model (1) or not (0). NULL gives 0.
///
/// # Safety
/// Both are NULL or live handles.
#[no_mangle]
pub unsafe extern "C" fn spire_restorer_shares_model(
    a: *const spire_restorer,
    b: *const spire_restorer,
) -> i32 {
    if a.is_null() || b.is_null() {
        return 0;
    }
    // SAFETY: checked non-NULL, live per the contract.
    i32::from(unsafe { (*a).inner.shares_weights_with(&(*b).inner) })
}

/// The size of the image [`spire_restorer_restore`] would return for this input and params:
/// width and height (the input times the prompt's upsample factor) and the bytes of a tightly
/// packed buffer in the input's format. Any output pointer may be NULL. Thread-safe.
///
/// # Safety
/// `input` points to a valid view; `params` is NULL or initialised.
#[no_mangle]
pub unsafe extern "C" fn spire_restorer_output_size(
    restorer: *const spire_restorer,
    input: *const spire_image_view,
    params: *const spire_restore_params,
    out_width: *mut u32,
    out_height: *mut u32,
    out_bytes: *mut usize,
) -> spire_status {
    guard(|| {
        if restorer.is_null() {
            return Err(null("restorer"));
        }
        // SAFETY: contract on input and params.
        let (w, h, b) = unsafe { output_size(input, params)? };
        // SAFETY: each output is NULL or writable.
        unsafe {
            if !out_width.is_null() {
                *out_width = w;
            }
            if !out_height.is_null() {
                *out_height = h;
            }
            if !out_bytes.is_null() {
                *out_bytes = b;
            }
        }
        Ok(())
    })
}

/// # Safety
/// As [`spire_restorer_output_size`].
unsafe fn output_size(
    input: *const spire_image_view,
    params: *const spire_restore_params,
) -> Result<(u32, u32, usize), Fail> {
    if input.is_null() {
        return Err(null("input"));
    }
    // SAFETY: checked non-NULL.
    let v = unsafe { &*input };
    // SAFETY: contract.
    let img = unsafe { view(v, "input")? };
    let img = img.view();
    let px_bytes = pixel_bytes(layout_of(v.format)?);
    // SAFETY: contract.
    let o = unsafe { options(RestoreOptions::default(), params, None, std::ptr::null_mut())? };
    // The core's own formula (what `restore` will produce), not a copy of it.
    let (w, h) = o.output_size(img.width(), img.height());
    let (w32, h32) = (
        u32::try_from(w).map_err(|_| {
            Fail(
                SPIRE_ERROR_INVALID_ARGUMENT,
                format!("output width {w} is too large"),
            )
        })?,
        u32::try_from(h).map_err(|_| {
            Fail(
                SPIRE_ERROR_INVALID_ARGUMENT,
                format!("output height {h} is too large"),
            )
        })?,
    );
    let need = w
        .checked_mul(h)
        .and_then(|p| p.checked_mul(px_bytes))
        .ok_or_else(|| {
            Fail(
                SPIRE_ERROR_INVALID_ARGUMENT,
                format!("a {w}×{h} output is too large"),
            )
        })?;
    Ok((w32, h32, need))
}

/// Restores an image. `params` may be NULL (the model's defaults, as
/// [`spire_restorer_default_params`] fills them); `progress` may be NULL. On success
/// `*out` is a new image in the input's pixel format, exactly the input size times the
/// restoration prompt's upsample factor, owned by the caller and freed with
/// [`spire_image_free`]; on failure `*out` is NULL. Thread-safe: any number of threads may
/// restore with one handle or with clones at the same time.
///
/// # Safety
/// `restorer` is a live handle; `input` describes readable memory; `params` is NULL or
/// initialised; `out` is writable; `progress` (if any) is callable with `user_data`.
#[no_mangle]
pub unsafe extern "C" fn spire_restorer_restore(
    restorer: *const spire_restorer,
    input: *const spire_image_view,
    params: *const spire_restore_params,
    progress: spire_progress_fn,
    user_data: *mut c_void,
    out: *mut *mut spire_image,
) -> spire_status {
    guard(|| {
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: checked non-NULL.
        unsafe { *out = std::ptr::null_mut() };
        if restorer.is_null() {
            return Err(null("restorer"));
        }
        if input.is_null() {
            return Err(null("input"));
        }
        // SAFETY: contracts above.
        let (r, img, o) = unsafe {
            (
                &(*restorer).inner,
                view(&*input, "input")?,
                options((*restorer).inner.default_options(), params, progress, user_data)?,
            )
        };
        // SAFETY: checked non-NULL.
        let bgr = layout_of(unsafe { (*input).format })?.bgr;
        let result = r.restore(&img.view(), &o)?;
        let c = into_c_image(result, bgr)?;
        // SAFETY: checked non-NULL.
        unsafe { *out = c };
        Ok(())
    })
}

/// Restores into a caller buffer: the result is written tightly packed (`width × channels`
/// bytes per row, the input's format) into `out_data`. `*out_needed` (if not NULL) receives
/// the bytes needed, and `*out_width`/`*out_height` the size; if `out_capacity` is smaller, no
/// work is done and `SPIRE_ERROR_BUFFER_TOO_SMALL` is returned (call with NULL/0 to query).
/// Thread-safe.
///
/// # Safety
/// As [`spire_restorer_restore`]; `out_data` has `out_capacity` writable bytes (or is NULL
/// with capacity 0).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn spire_restorer_restore_into(
    restorer: *const spire_restorer,
    input: *const spire_image_view,
    params: *const spire_restore_params,
    progress: spire_progress_fn,
    user_data: *mut c_void,
    out_data: *mut u8,
    out_capacity: usize,
    out_needed: *mut usize,
    out_width: *mut u32,
    out_height: *mut u32,
) -> spire_status {
    guard(|| {
        if restorer.is_null() {
            return Err(null("restorer"));
        }
        // SAFETY: contracts.
        let (w, h, need) = unsafe { output_size(input, params)? };
        // SAFETY: each output is NULL or writable.
        unsafe {
            if !out_needed.is_null() {
                *out_needed = need;
            }
            if !out_width.is_null() {
                *out_width = w;
            }
            if !out_height.is_null() {
                *out_height = h;
            }
        }
        if out_capacity < need {
            return Err(Fail(
                SPIRE_ERROR_BUFFER_TOO_SMALL,
                format!("output needs {need} bytes, the buffer has {out_capacity}"),
            ));
        }
        if out_data.is_null() {
            return Err(null("out_data"));
        }
        // SAFETY: contracts.
        let (r, img, o) = unsafe {
            (
                &(*restorer).inner,
                view(&*input, "input")?,
                options((*restorer).inner.default_options(), params, progress, user_data)?,
            )
        };
        // SAFETY: checked non-NULL by output_size.
        let layout = layout_of(unsafe { (*input).format })?;
        let result = r.restore(&img.view(), &o)?;
        // The size came from the same core function; `write_c_pixels` checks it again, so a
        // disagreement is an error, never a write past the caller's buffer.
        // SAFETY: out_data has out_capacity ≥ need writable bytes.
        let dst = unsafe { std::slice::from_raw_parts_mut(out_data, need) };
        write_c_pixels(&result, layout, dst)?;
        Ok(())
    })
}

/// Frees an image returned by the library. NULL is a no-op.
///
/// # Safety
/// `image` is NULL or an image from this library not yet freed.
#[no_mangle]
pub unsafe extern "C" fn spire_image_free(image: *mut spire_image) {
    if image.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: allocated by into_c_image: a boxed struct and `stride × height` bytes
        // aligned to IMAGE_ALIGN.
        unsafe {
            let img = Box::from_raw(image);
            let len = (img.stride * img.height as usize).max(1);
            if !img.data.is_null() {
                if let Ok(layout) = std::alloc::Layout::from_size_align(len, IMAGE_ALIGN) {
                    std::alloc::dealloc(img.data, layout);
                }
            }
        }
    }));
}

/// Loads a PNG, JPEG, TIFF or WebP file (by content), upright by its EXIF orientation, as
/// gray, RGB or RGBA with the file's depth: 8-bit (`SPIRE_PIXEL_RGB8` …), 16-bit PNG and TIFF
/// (`SPIRE_PIXEL_RGB16` …) or float TIFF (`SPIRE_PIXEL_RGB_F32` …); `format` says which. The
/// buffer is 16-byte aligned. Free with [`spire_image_free`]. Thread-safe.
///
/// # Safety
/// `path` is a NUL-terminated string; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn spire_image_load(path: *const c_char, out: *mut *mut spire_image) -> spire_status {
    guard(|| {
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: checked non-NULL.
        unsafe { *out = std::ptr::null_mut() };
        // SAFETY: contract.
        let p = unsafe { opt_str(path, "path")? }.ok_or_else(|| null("path"))?;
        let img = spire_core::io::load_image(&p)?;
        let c = into_c_image(img, false)?;
        // SAFETY: checked non-NULL.
        unsafe { *out = c };
        Ok(())
    })
}

/// Writes an image as PNG (`.png`) or JPEG (`.jpg`/`.jpeg`); another extension is
/// `SPIRE_ERROR_INVALID_ARGUMENT` naming the path. Thread-safe.
///
/// # Safety
/// `path` is a NUL-terminated string; `image` describes readable memory.
#[no_mangle]
pub unsafe extern "C" fn spire_image_save(
    path: *const c_char,
    image: *const spire_image_view,
) -> spire_status {
    guard(|| {
        // SAFETY: contract.
        let p = unsafe { opt_str(path, "path")? }.ok_or_else(|| null("path"))?;
        if image.is_null() {
            return Err(null("image"));
        }
        // SAFETY: contract.
        let v = unsafe { view(&*image, "image")? };
        spire_core::io::save_image(&p, &v.view().to_image())?;
        Ok(())
    })
}

/// Estimates the restoration prompt of a photo (what `restoration_prompt = "auto"` restores
/// with): from the image file at `path` (a JPEG's quality is then exact, from its tables), or,
/// when `path` is NULL, from the pixels of `image`. The numbers go to `out` (all 0: the blind
/// prompt); render them with `spire_prompt_render`. Thread-safe.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `image` is NULL or a valid view (one of the two
/// is given); `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn spire_prompt_estimate(
    path: *const c_char,
    image: *const spire_image_view,
    out: *mut spire_prompt,
) -> spire_status {
    guard(|| {
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: contract.
        let est = match unsafe { opt_str(path, "path")? } {
            Some(p) => {
                let bytes = spire_core::io::read_file(&p)?;
                let img = spire_core::io::decode_image(&bytes, &p)?;
                let src = spire_core::estimate::SourceInfo::from_bytes(&bytes, &p)?;
                RestorationPrompt::estimate(&img.view(), Some(&src))?
            }
            None => {
                if image.is_null() {
                    return Err(null("image"));
                }
                // SAFETY: contract.
                let v = unsafe { view(&*image, "image")? };
                RestorationPrompt::estimate(&v.view(), None)?
            }
        };
        // SAFETY: checked non-NULL.
        unsafe { *out = c_prompt(&est.prompt) };
        Ok(())
    })
}

/// Parses a restoration prompt into numbers (all fields 0 for the blind prompt). On a
/// malformed prompt returns `SPIRE_ERROR_INVALID_ARGUMENT`, and the last error message quotes
/// the clause. Thread-safe.
///
/// # Safety
/// `text` is a NUL-terminated string; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn spire_prompt_parse(text: *const c_char, out: *mut spire_prompt) -> spire_status {
    guard(|| {
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: contract.
        let t = unsafe { opt_str(text, "text")? }.ok_or_else(|| null("text"))?;
        let p = RestorationPrompt::parse(&t)?;
        // SAFETY: checked non-NULL.
        unsafe { *out = c_prompt(&p) };
        Ok(())
    })
}

fn c_prompt(p: &RestorationPrompt) -> spire_prompt {
    spire_prompt {
        struct_size: std::mem::size_of::<spire_prompt>() as u32,
        deblur_sigma: p.deblur_sigma().unwrap_or(0.0),
        upsample_scale: p.upsample_scale().unwrap_or(0.0),
        denoise_sigma: p.denoise_sigma().unwrap_or(0.0),
        dejpeg_quality: p.dejpeg_quality().map_or(0, u32::from),
    }
}

/// Renders a prompt's canonical text into `buf` (NUL-terminated). `*needed` (if not NULL)
/// receives the bytes needed including the NUL; if `buf_size` is smaller, returns
/// `SPIRE_ERROR_BUFFER_TOO_SMALL` (query with NULL/0). Out-of-range numbers give
/// `SPIRE_ERROR_INVALID_ARGUMENT`. Thread-safe.
///
/// # Safety
/// `prompt` points to a `spire_prompt`; `buf` has `buf_size` writable bytes or is NULL.
#[no_mangle]
pub unsafe extern "C" fn spire_prompt_render(
    prompt: *const spire_prompt,
    buf: *mut c_char,
    buf_size: usize,
    needed: *mut usize,
) -> spire_status {
    guard(|| {
        if prompt.is_null() {
            return Err(null("prompt"));
        }
        // SAFETY: checked non-NULL.
        let c = unsafe { *prompt };
        let mut p = RestorationPrompt::blind();
        if c.deblur_sigma != 0.0 {
            p = p.with_deblur(c.deblur_sigma as f64)?;
        }
        if c.upsample_scale != 0.0 {
            p = p.with_upsample(c.upsample_scale as f64)?;
        }
        if c.denoise_sigma != 0.0 {
            p = p.with_denoise(c.denoise_sigma as f64)?;
        }
        if c.dejpeg_quality != 0 {
            p = p.with_dejpeg(c.dejpeg_quality)?;
        }
        let text = p.render();
        let n = text.len() + 1;
        if !needed.is_null() {
            // SAFETY: checked non-NULL.
            unsafe { *needed = n };
        }
        if buf_size < n {
            return Err(Fail(
                SPIRE_ERROR_BUFFER_TOO_SMALL,
                format!("the prompt needs {n} bytes, the buffer has {buf_size}"),
            ));
        }
        if buf.is_null() {
            return Err(null("buf"));
        }
        // SAFETY: buf has buf_size ≥ n writable bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
            *buf.add(text.len()) = 0;
        }
        Ok(())
    })
}

/// Degrades an image with a training pipeline (`SPIRE_PIPELINE_*`) and seed; `*out` is a new
/// RGB8 image of the input's size (free with [`spire_image_free`]) and `*prompt_out` (if not
/// NULL) the restoration prompt that describes it. Thread-safe.
///
/// # Safety
/// `input` describes readable memory; `out` is writable; `prompt_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn spire_degrade(
    input: *const spire_image_view,
    pipeline: spire_pipeline,
    seed: u64,
    out: *mut *mut spire_image,
    prompt_out: *mut spire_prompt,
) -> spire_status {
    guard(|| {
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: checked non-NULL.
        unsafe { *out = std::ptr::null_mut() };
        if input.is_null() {
            return Err(null("input"));
        }
        let pl = match pipeline {
            SPIRE_PIPELINE_PARAMETERIZED => spire_core::degrade::Pipeline::Parameterized,
            SPIRE_PIPELINE_REALESRGAN => spire_core::degrade::Pipeline::RealEsrgan,
            p => {
                return Err(Fail(
                    SPIRE_ERROR_INVALID_ARGUMENT,
                    format!("invalid argument `pipeline`: unknown value {p}"),
                ))
            }
        };
        // SAFETY: contract.
        let v = unsafe { view(&*input, "input")? };
        // SAFETY: checked non-NULL.
        let bgr = layout_of(unsafe { (*input).format })?.bgr;
        let (img, prompt) = spire_core::degrade::degrade(&v.view(), pl, seed)?;
        let c = into_c_image(img, bgr)?;
        // SAFETY: checked non-NULL / NULL-or-writable.
        unsafe {
            *out = c;
            if !prompt_out.is_null() {
                *prompt_out = c_prompt(&prompt);
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use spire_core::options::OPTIONS;

    /// Every row of the core's options table reaches the library from C by name (the
    /// `options` text) and from C++ (`RestoreParams::option`), its default read back; every
    /// row that is also a field of `spire_restore_params` in the committed header (a typed
    /// field: all of them up to ABI 0.2; a newer option may come by name only until the next
    /// ABI) has a setter of that name in `spire.hpp`, and `spire_restore_params_init` writes
    /// its default.
    #[test]
    fn every_restore_option_is_in_the_header_and_the_wrapper_with_its_default() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let h = std::fs::read_to_string(root.join("include/spire.h")).unwrap();
        let start = h
            .find("typedef struct spire_restore_params {")
            .expect("struct in spire.h");
        let end = start + h[start..].find("} spire_restore_params;").unwrap();
        let fields = &h[start..end];
        let hpp = std::fs::read_to_string(root.join("include/spire.hpp")).unwrap();
        let mut p = std::mem::MaybeUninit::<spire_restore_params>::uninit();
        // SAFETY: writable; init writes every field.
        let p = unsafe {
            spire_restore_params_init(p.as_mut_ptr());
            p.assume_init()
        };
        // SAFETY: initialised params, no callback.
        let o = unsafe { options(RestoreOptions::default(), &p, None, std::ptr::null_mut()) }
            .map_err(|f| f.1)
            .unwrap();
        let mut typed = 0;
        for spec in OPTIONS {
            let declared = [" ", "*"]
                .iter()
                .any(|p| fields.contains(&format!("{p}{};", spec.name)));
            // And by name through `options`: the default, then the value read back.
            let mut q = std::mem::MaybeUninit::<spire_restore_params>::uninit();
            // SAFETY: writable; init writes every field.
            let mut q = unsafe {
                spire_restore_params_init(q.as_mut_ptr());
                q.assume_init()
            };
            let text = CString::new(format!("{}={}", spec.name, spec.default)).unwrap();
            q.options = text.as_ptr();
            // SAFETY: initialised params whose `options` outlives the call.
            let by_name = unsafe { options(RestoreOptions::default(), &q, None, std::ptr::null_mut()) }
                .map_err(|f| f.1)
                .unwrap();
            assert_eq!(
                spec.get(&by_name),
                spec.default_value(),
                "`options` text for `{}`",
                spec.name
            );
            if declared {
                assert!(
                    hpp.contains(&format!("RestoreParams &{}(", spec.name)),
                    "spire.hpp: RestoreParams has no `{}(…)`",
                    spec.name
                );
                assert_eq!(spec.get(&o), spec.default_value(), "default of `{}`", spec.name);
                typed += 1;
            }
        }
        // The ABI 0.2 fields are all there (a newer option may come by name only).
        assert!(typed >= 21, "{typed} typed fields");
        assert!(hpp.contains("RestoreParams &option(const std::string &name, const std::string &value)"));
    }
}
