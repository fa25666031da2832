//! numpy arrays ↔ core images, through the core's `ndarray` views
//! (`spire_core::Image::from_ndarray`). Arrays are copied (one memcpy when C-contiguous) before
//! the GIL is released, so Python code mutating them concurrently cannot race the restoration.

use numpy::{PyArray1, PyArrayDyn, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use spire_core::{ColorType, Image, ImageData, ImageView, Samples};

use crate::errors;

/// An owned copy of an input image.
pub(crate) struct Owned {
    pub(crate) width: usize,
    pub(crate) height: usize,
    pub(crate) color: ColorType,
    pub(crate) data: Data,
    /// Whether the array had a channel axis (`H×W×C`, also `H×W×1`): the output keeps the
    /// input's layout, so gray `H×W×1` in gives `H×W×1` out.
    pub(crate) channel_axis: bool,
    /// What the caller handed over, so the result comes back as the same kind.
    pub(crate) kind: InKind,
}

/// The kind of image a caller passed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum InKind {
    /// A uint8 array.
    U8,
    /// A uint16 array: restored and returned as uint16 (the core's 16-bit images), so 16-bit
    /// precision is kept.
    U16,
    /// A float32 array.
    F32,
    /// A PIL image (its array is one of the above); the result is a PIL image.
    Pil,
}

pub(crate) enum Data {
    U8(Vec<u8>),
    U16(Vec<u16>),
    F32(Vec<f32>),
}

impl Owned {
    /// A core view of this image (validated by the core).
    pub(crate) fn view(&self) -> spire_core::Result<ImageView<'_>> {
        let s = match &self.data {
            Data::U8(v) => Samples::U8(v),
            Data::U16(v) => Samples::U16(v),
            Data::F32(v) => Samples::F32(v),
        };
        ImageView::new(self.width, self.height, self.color, s)
    }

    /// The core image, moving the samples.
    pub(crate) fn into_image(self) -> Image {
        Image {
            width: self.width,
            height: self.height,
            color: self.color,
            data: match self.data {
                Data::U8(v) => ImageData::U8(v),
                Data::U16(v) => ImageData::U16(v),
                Data::F32(v) => ImageData::F32(v),
            },
        }
    }
}

/// Whether `obj` is a PIL image.
fn is_pil(obj: &Bound<'_, PyAny>) -> bool {
    obj.get_type()
        .module()
        .is_ok_and(|m| m.to_string().starts_with("PIL."))
        && obj.hasattr("mode").unwrap_or(false)
}

/// Reads an `H×W`, `H×W×1`, `H×W×3` or `H×W×4` uint8 / uint16 / float32 array, or a PIL image
/// (modes L, RGB, RGBA and I;16 as they are; others converted to RGB, or RGBA when they carry
/// transparency).
pub(crate) fn from_numpy(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Owned> {
    if is_pil(obj) {
        let mode: String = obj.getattr("mode")?.extract()?;
        let img = match mode.as_str() {
            "L" | "RGB" | "RGBA" | "I;16" => obj.clone(),
            m => {
                let alpha = m.contains('A') || obj.getattr("info")?.contains("transparency")?;
                obj.call_method1("convert", (if alpha { "RGBA" } else { "RGB" },))?
            }
        };
        let arr = obj.py().import("numpy")?.call_method1("asarray", (img,))?;
        let mut owned = from_numpy(&arr, what)?;
        owned.kind = InKind::Pil;
        return Ok(owned);
    }
    let arr = obj.cast::<PyUntypedArray>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{what} must be a numpy array, got {}",
            obj.get_type().name().map(|n| n.to_string()).unwrap_or_default()
        ))
    })?;
    let shape = arr.shape().to_vec();
    let (h, w, color) = match shape.as_slice() {
        [h, w] => (*h, *w, ColorType::Gray),
        [h, w, 1] => (*h, *w, ColorType::Gray),
        [h, w, 3] => (*h, *w, ColorType::Rgb),
        [h, w, 4] => (*h, *w, ColorType::Rgba),
        s => {
            return Err(errors::new(
                "InvalidImageError",
                format!("{what} must have shape H×W, H×W×1, H×W×3 or H×W×4, got {s:?}"),
            ))
        }
    };
    let dims = (h, w, color.channels());
    let (data, kind) = if let Ok(a) = obj.cast::<PyArrayDyn<u8>>() {
        (Data::U8(copy(a, dims, what)?), InKind::U8)
    } else if let Ok(a) = obj.cast::<PyArrayDyn<f32>>() {
        (Data::F32(copy(a, dims, what)?), InKind::F32)
    } else if let Ok(a) = obj.cast::<PyArrayDyn<u16>>() {
        (Data::U16(copy(a, dims, what)?), InKind::U16)
    } else {
        let dt = arr.dtype().to_string();
        return Err(errors::new(
            "InvalidImageError",
            format!("{what} has dtype {dt}; use uint8 (0–255), uint16 (0–65535) or float32 (0–1)"),
        ));
    };
    Ok(Owned {
        width: w,
        height: h,
        color,
        data,
        channel_axis: shape.len() == 3,
        kind,
    })
}

/// The samples of a numpy array seen as the core's `H×W×C` `ndarray` view
/// (`spire_core::Image::from_ndarray`): one memcpy when the array is C-contiguous, a strided
/// copy otherwise. Copied, not borrowed, because the GIL is released while the core works and
/// Python code may write to the array meanwhile.
fn copy<T: spire_core::Sample + numpy::Element>(
    a: &Bound<'_, PyArrayDyn<T>>,
    (h, w, c): (usize, usize, usize),
    what: &str,
) -> PyResult<Vec<T>> {
    let ro = a.readonly();
    let view = ro
        .as_array()
        .into_shape_with_order(ndarray::IxDyn(&[h, w, c]))
        .ok()
        .and_then(|v| v.into_dimensionality::<ndarray::Ix3>().ok());
    let img = match view {
        Some(v) => spire_core::Image::from_ndarray(v),
        // A strided 2-D gray array cannot be reshaped in place: add the channel axis by a copy.
        None => spire_core::Image::from_ndarray(
            ro.as_array()
                .to_owned()
                .into_shape_with_order((h, w, c))
                .map_err(|e| errors::new("InvalidImageError", format!("{what}: {e}")))?
                .view(),
        ),
    }
    .map_err(errors::to_py)?;
    T::from_data(img.data).map_err(|_| errors::new("InternalError", "sample type changed".to_string()))
}

/// A core image as a new numpy array in the layout of the input `like`: `H×W×C`, and gray as
/// `H×W` or `H×W×1` as it came in.
pub(crate) fn to_numpy(py: Python<'_>, img: Image, like: &Owned) -> PyResult<Py<PyAny>> {
    let (h, w, c) = (img.height, img.width, img.color.channels());
    let shape: Vec<usize> = if img.color == ColorType::Gray && !like.channel_axis {
        vec![h, w]
    } else {
        vec![h, w, c]
    };
    // The core returns the input's sample type; a PIL image came from an array of its own
    // kind: that kind, then the PIL image.
    let arr = match img.data {
        ImageData::U8(v) => PyArray1::from_vec(py, v).reshape(shape)?.into_any(),
        ImageData::U16(v) => PyArray1::from_vec(py, v).reshape(shape)?.into_any(),
        ImageData::F32(v) => PyArray1::from_vec(py, v).reshape(shape)?.into_any(),
    };
    if like.kind == InKind::Pil {
        return Ok(py
            .import("PIL.Image")?
            .call_method1("fromarray", (arr,))?
            .unbind());
    }
    Ok(arr.unbind())
}

/// A decoded file as an `H×W×C` array (a channel axis even for gray).
fn file_to_numpy(py: Python<'_>, img: Image) -> PyResult<Py<PyAny>> {
    let like = Owned {
        width: img.width,
        height: img.height,
        color: img.color,
        data: Data::U8(Vec::new()),
        channel_axis: true,
        kind: InKind::U8,
    };
    to_numpy(py, img, &like)
}

/// Decodes a PNG, JPEG, TIFF or WebP held in memory (as the CLI reads files: the header's size
/// is checked before decoding; upright by its EXIF orientation) into an `H×W×C` array
/// (C = 1, 3 or 4): uint8, uint16 for 16-bit PNG/TIFF, float32 for float TIFF. `name` appears
/// in errors.
#[pyfunction]
#[pyo3(signature = (data, name = "<bytes>"))]
pub(crate) fn decode_image(py: Python<'_>, data: &[u8], name: &str) -> PyResult<Py<PyAny>> {
    let img = py
        .detach(|| errors::guard(|| spire_core::io::decode_image(data, name)))
        .map_err(errors::to_py)?;
    file_to_numpy(py, img)
}

/// Reads a PNG, JPEG, TIFF or WebP file into an `H×W×C` array (as `decode_image`).
#[pyfunction]
pub(crate) fn read_image(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Py<PyAny>> {
    let img = py
        .detach(|| errors::guard(|| spire_core::io::load_image(&path)))
        .map_err(errors::to_py)?;
    file_to_numpy(py, img)
}

/// Encodes an image array (uint8, uint16 or float32 in [0, 1]) as PNG (``format="png"``; 16
/// bits for uint16), JPEG at quality 95 (``"jpg"``/``"jpeg"``), TIFF (``"tif"``/``"tiff"``;
/// every sample type kept) or lossless WebP (``"webp"``), returning the bytes ``write_image``
/// would write.
#[pyfunction]
#[pyo3(signature = (image, format = "png"))]
pub(crate) fn encode_image<'py>(
    py: Python<'py>,
    image: &Bound<'py, PyAny>,
    format: &str,
) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
    let fmt = spire_core::io::ImageFormat::from_name(format).map_err(errors::to_py)?;
    let owned = from_numpy(image, "image")?.into_image();
    let bytes = py
        .detach(|| errors::guard(|| spire_core::io::encode_image(&owned, fmt)))
        .map_err(errors::to_py)?;
    Ok(pyo3::types::PyBytes::new(py, &bytes))
}

/// Writes an image array (uint8, uint16 or float32 in [0, 1]) as PNG, JPEG (quality 95), TIFF
/// or WebP by the extension (as ``encode_image``), atomically: to a temporary file renamed into place, so a file that exists is
/// complete.
#[pyfunction]
pub(crate) fn write_image(
    py: Python<'_>,
    path: std::path::PathBuf,
    image: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let owned = from_numpy(image, "image")?.into_image();
    py.detach(|| errors::guard(|| spire_core::io::save_image(&path, &owned)))
        .map_err(errors::to_py)
}
