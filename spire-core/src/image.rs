//! Images in and out of the library: borrowed views with a row stride ([`ImageView`]), owned
//! results ([`Image`]), 8-bit, 16-bit or f32 samples, gray / RGB / RGBA. A restore returns the
//! input's layout and sample type: 16-bit in, 16-bit out, without 8-bit rounding.
//!
//! Float samples are expected in [0, 1]; values outside are clipped, NaN or infinity is an
//! [`Error::InvalidImage`]. Images must be at least 2×2.

use crate::error::{Error, Result};

/// Channel layout of interleaved pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColorType {
    /// One channel.
    Gray,
    /// Red, green, blue.
    Rgb,
    /// Red, green, blue, alpha (alpha is passed through, resized with the image).
    Rgba,
}

impl ColorType {
    /// Samples per pixel.
    pub fn channels(self) -> usize {
        match self {
            ColorType::Gray => 1,
            ColorType::Rgb => 3,
            ColorType::Rgba => 4,
        }
    }
}

/// Borrowed samples.
#[derive(Debug, Clone, Copy)]
pub enum Samples<'a> {
    /// 8-bit samples, 0–255.
    U8(&'a [u8]),
    /// 16-bit samples, 0–65535.
    U16(&'a [u16]),
    /// Float samples in [0, 1].
    F32(&'a [f32]),
}

/// The sample type of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SampleType {
    /// 8-bit, 0–255.
    U8,
    /// 16-bit, 0–65535.
    U16,
    /// f32 in [0, 1].
    F32,
}

impl SampleType {
    /// Bytes per sample.
    pub fn size(self) -> usize {
        match self {
            SampleType::U8 => 1,
            SampleType::U16 => 2,
            SampleType::F32 => 4,
        }
    }
}

/// A borrowed image: `height` rows of `width` pixels, rows `stride` samples apart.
#[derive(Debug, Clone, Copy)]
pub struct ImageView<'a> {
    width: usize,
    height: usize,
    stride: usize,
    color: ColorType,
    samples: Samples<'a>,
}

/// The smallest accepted width and height.
pub const MIN_SIZE: usize = 2;

/// The one size rule of every surface: not empty, at least [`MIN_SIZE`] on each side.
pub(crate) fn check_size(width: usize, height: usize) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(Error::InvalidImage(format!(
            "the image is empty ({width}×{height})"
        )));
    }
    if width < MIN_SIZE || height < MIN_SIZE {
        return Err(Error::InvalidImage(format!(
            "the image is {width}×{height}; at least {MIN_SIZE}×{MIN_SIZE} pixels are needed"
        )));
    }
    Ok(())
}

impl<'a> ImageView<'a> {
    /// A view over tightly packed rows.
    ///
    /// # Errors
    /// [`Error::InvalidImage`] if the buffer is too short or the image smaller than 2×2.
    pub fn new(width: usize, height: usize, color: ColorType, samples: Samples<'a>) -> Result<Self> {
        Self::with_stride(width, height, width * color.channels(), color, samples)
    }

    /// A view whose rows are `stride` samples apart (`stride ≥ width × channels`).
    ///
    /// # Errors
    /// [`Error::InvalidImage`] naming the problem.
    pub fn with_stride(
        width: usize,
        height: usize,
        stride: usize,
        color: ColorType,
        samples: Samples<'a>,
    ) -> Result<Self> {
        check_size(width, height)?;
        let row = width
            .checked_mul(color.channels())
            .ok_or_else(|| Error::InvalidImage("image dimensions overflow".into()))?;
        if stride < row {
            return Err(Error::InvalidImage(format!(
                "stride {stride} is smaller than a row ({width} pixels × {} channels = {row} samples)",
                color.channels()
            )));
        }
        let need = stride
            .checked_mul(height - 1)
            .and_then(|x| x.checked_add(row))
            .ok_or_else(|| Error::InvalidImage("image dimensions overflow".into()))?;
        let have = match samples {
            Samples::U8(s) => s.len(),
            Samples::U16(s) => s.len(),
            Samples::F32(s) => s.len(),
        };
        if have < need {
            return Err(Error::InvalidImage(format!(
                "buffer has {have} samples, a {width}×{height} {color:?} image with stride {stride} needs {need}"
            )));
        }
        Ok(Self {
            width,
            height,
            stride,
            color,
            samples,
        })
    }

    /// Tightly packed 8-bit RGB.
    ///
    /// # Errors
    /// As [`ImageView::new`].
    pub fn rgb8(width: usize, height: usize, data: &'a [u8]) -> Result<Self> {
        Self::new(width, height, ColorType::Rgb, Samples::U8(data))
    }

    /// Tightly packed float RGB in [0, 1].
    ///
    /// # Errors
    /// As [`ImageView::new`].
    pub fn rgb_f32(width: usize, height: usize, data: &'a [f32]) -> Result<Self> {
        Self::new(width, height, ColorType::Rgb, Samples::F32(data))
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Channel layout.
    pub fn color(&self) -> ColorType {
        self.color
    }

    /// Bytes of the pixels the view covers (`width × height × channels × sample size`).
    pub fn byte_len(&self) -> usize {
        self.width * self.height * self.color.channels() * self.sample_type().size()
    }

    /// Whether samples are f32.
    pub fn is_float(&self) -> bool {
        matches!(self.samples, Samples::F32(_))
    }

    /// The samples' type.
    pub fn sample_type(&self) -> SampleType {
        match self.samples {
            Samples::U8(_) => SampleType::U8,
            Samples::U16(_) => SampleType::U16,
            Samples::F32(_) => SampleType::F32,
        }
    }

    /// The borrowed samples (rows `stride` samples apart).
    pub fn samples(&self) -> Samples<'a> {
        self.samples
    }

    /// Samples from one row start to the next.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// A tightly packed owned copy (same layout and sample type).
    pub fn to_image(&self) -> Image {
        let c = self.color.channels();
        let row = self.width * c;
        let data = match self.samples {
            Samples::U8(s) => ImageData::U8(
                (0..self.height)
                    .flat_map(|y| s[y * self.stride..y * self.stride + row].iter().copied())
                    .collect(),
            ),
            Samples::U16(s) => ImageData::U16(
                (0..self.height)
                    .flat_map(|y| s[y * self.stride..y * self.stride + row].iter().copied())
                    .collect(),
            ),
            Samples::F32(s) => ImageData::F32(
                (0..self.height)
                    .flat_map(|y| s[y * self.stride..y * self.stride + row].iter().copied())
                    .collect(),
            ),
        };
        Image {
            width: self.width,
            height: self.height,
            color: self.color,
            data,
        }
    }

    /// Sample `c` of pixel (x, y) as f32 in [0, 1] (unchecked for NaN).
    fn sample(&self, x: usize, y: usize, c: usize) -> f32 {
        let i = y * self.stride + x * self.color.channels() + c;
        match self.samples {
            Samples::U8(s) => s[i] as f32 / 255.0,
            Samples::U16(s) => s[i] as f32 / 65535.0,
            Samples::F32(s) => s[i],
        }
    }

    /// The image as planar RGB in [0, 1] (`3 × height × width`; gray replicated, alpha
    /// dropped), the layout of [`crate::degrade::Rgb`].
    ///
    /// # Errors
    /// [`Error::InvalidImage`] for non-finite float samples.
    pub fn to_planar_rgb(&self) -> Result<Vec<f32>> {
        Ok(self.to_planar()?.rgb)
    }

    /// Planar RGB in [0, 1] (gray replicated) and the alpha plane, checking float samples and
    /// the size (every path into the pipeline passes here, views made by [`Image::view`] too,
    /// so the CLI, Python and C share one minimum).
    #[allow(clippy::wrong_self_convention)] // a view is a borrowed handle; callers keep it
    pub(crate) fn to_planar(&self) -> Result<Planar> {
        let (w, h) = (self.width, self.height);
        check_size(w, h)?;
        let mut rgb = vec![0f32; 3 * w * h];
        let mut alpha = (self.color == ColorType::Rgba).then(|| vec![0f32; w * h]);
        for y in 0..h {
            for x in 0..w {
                let p = y * w + x;
                let get = |c: usize| -> Result<f32> {
                    let v = self.sample(x, y, c);
                    if !v.is_finite() {
                        return Err(Error::InvalidImage(format!(
                            "sample at x={x}, y={y}, channel {c} is {v}"
                        )));
                    }
                    Ok(v.clamp(0.0, 1.0))
                };
                match self.color {
                    ColorType::Gray => {
                        let v = get(0)?;
                        rgb[p] = v;
                        rgb[w * h + p] = v;
                        rgb[2 * w * h + p] = v;
                    }
                    ColorType::Rgb | ColorType::Rgba => {
                        for c in 0..3 {
                            rgb[c * w * h + p] = get(c)?;
                        }
                        if let Some(a) = alpha.as_mut() {
                            a[p] = get(3)?;
                        }
                    }
                }
            }
        }
        Ok(Planar {
            width: w,
            height: h,
            rgb,
            alpha,
        })
    }
}

/// Owned samples.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageData {
    /// 8-bit samples.
    U8(Vec<u8>),
    /// 16-bit samples.
    U16(Vec<u16>),
    /// Float samples in [0, 1].
    F32(Vec<f32>),
}

/// An owned, tightly packed image (the output of a restoration).
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Channel layout.
    pub color: ColorType,
    /// `width × height × channels` samples, row-major, interleaved.
    pub data: ImageData,
}

impl Image {
    /// A view of this image.
    pub fn view(&self) -> ImageView<'_> {
        let samples = match &self.data {
            ImageData::U8(v) => Samples::U8(v),
            ImageData::U16(v) => Samples::U16(v),
            ImageData::F32(v) => Samples::F32(v),
        };
        ImageView {
            width: self.width,
            height: self.height,
            stride: self.width * self.color.channels(),
            color: self.color,
            samples,
        }
    }

    /// The 8-bit samples, if this is an 8-bit image.
    pub fn as_u8(&self) -> Option<&[u8]> {
        match &self.data {
            ImageData::U8(v) => Some(v),
            _ => None,
        }
    }

    /// The 16-bit samples, if this is a 16-bit image.
    pub fn as_u16(&self) -> Option<&[u16]> {
        match &self.data {
            ImageData::U16(v) => Some(v),
            _ => None,
        }
    }

    /// The samples' type.
    pub fn sample_type(&self) -> SampleType {
        match &self.data {
            ImageData::U8(_) => SampleType::U8,
            ImageData::U16(_) => SampleType::U16,
            ImageData::F32(_) => SampleType::F32,
        }
    }

    /// The float samples, if this is a float image.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            ImageData::F32(v) => Some(v),
            _ => None,
        }
    }
}

/// Planar f32 RGB in [0, 1] with an optional alpha plane: the working format.
#[derive(Debug, Clone)]
pub(crate) struct Planar {
    pub(crate) width: usize,
    pub(crate) height: usize,
    /// `3 × height × width`.
    pub(crate) rgb: Vec<f32>,
    /// `height × width`.
    pub(crate) alpha: Option<Vec<f32>>,
}

impl Planar {
    /// Interleaves into the requested layout and sample type (gray by ITU-R BT.601 luma).
    pub(crate) fn to_image(&self, color: ColorType, kind: SampleType) -> Image {
        let (w, h) = (self.width, self.height);
        let n = w * h;
        // Straight into the result's sample type: no float copy of an 8-bit result.
        let pixel = |p: usize, out: &mut dyn FnMut(f32)| {
            let (r, g, b) = (self.rgb[p], self.rgb[n + p], self.rgb[2 * n + p]);
            match color {
                ColorType::Gray => out(0.299 * r + 0.587 * g + 0.114 * b),
                ColorType::Rgb => [r, g, b].into_iter().for_each(&mut *out),
                ColorType::Rgba => {
                    let a = self.alpha.as_ref().map_or(1.0, |a| a[p]);
                    [r, g, b, a].into_iter().for_each(&mut *out);
                }
            }
        };
        fn collect<T: Sample>(n: usize, c: usize, pixel: impl Fn(usize, &mut dyn FnMut(f32))) -> Vec<T> {
            let mut v = Vec::with_capacity(n * c);
            for p in 0..n {
                pixel(p, &mut |x| v.push(T::from_unit(x)));
            }
            v
        }
        let c = color.channels();
        let data = match kind {
            SampleType::F32 => ImageData::F32(collect(n, c, pixel)),
            SampleType::U16 => ImageData::U16(collect(n, c, pixel)),
            SampleType::U8 => ImageData::U8(collect(n, c, pixel)),
        };
        Image {
            width: w,
            height: h,
            color,
            data,
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for u16 {}
    impl Sealed for f32 {}
}

/// A sample type an image holds: `u8`, `u16` or `f32` (for the `ndarray` conversions).
pub trait Sample: Copy + Send + Sync + 'static + sealed::Sealed {
    /// Its [`SampleType`].
    const TYPE: SampleType;
    /// Borrowed samples of this type.
    fn samples(s: &[Self]) -> Samples<'_>;
    /// Owned samples of this type.
    fn data(v: Vec<Self>) -> ImageData;
    /// The samples, if `d` holds this type.
    fn from_data(d: ImageData) -> std::result::Result<Vec<Self>, ImageData>;
    /// A value in [0, 1] (clipped) as this type: rounded to 0–255 or 0–65535, or kept.
    fn from_unit(x: f32) -> Self;
}

macro_rules! sample {
    ($t:ty, $variant:ident, |$x:ident| $from_unit:expr) => {
        impl Sample for $t {
            const TYPE: SampleType = SampleType::$variant;
            fn samples(s: &[Self]) -> Samples<'_> {
                Samples::$variant(s)
            }
            fn data(v: Vec<Self>) -> ImageData {
                ImageData::$variant(v)
            }
            fn from_data(d: ImageData) -> std::result::Result<Vec<Self>, ImageData> {
                match d {
                    ImageData::$variant(v) => Ok(v),
                    other => Err(other),
                }
            }
            fn from_unit($x: f32) -> Self {
                let $x = $x.clamp(0.0, 1.0);
                $from_unit
            }
        }
    };
}
sample!(u8, U8, |x| (x * 255.0).round() as u8);
sample!(u16, U16, |x| (x * 65535.0).round() as u16);
sample!(f32, F32, |x| x);

impl ImageData {
    /// Samples in [0, 1] (clipped) as `kind`: rounded to 8 or 16 bits, or kept as f32.
    pub fn from_unit(kind: SampleType, v: Vec<f32>) -> Self {
        match kind {
            SampleType::F32 => ImageData::F32(v.into_iter().map(f32::from_unit).collect()),
            SampleType::U16 => ImageData::U16(v.into_iter().map(u16::from_unit).collect()),
            SampleType::U8 => ImageData::U8(v.into_iter().map(u8::from_unit).collect()),
        }
    }
}

/// The colour type of an `H×W×C` array's channel count.
fn color_of_channels(c: usize) -> Result<ColorType> {
    match c {
        1 => Ok(ColorType::Gray),
        3 => Ok(ColorType::Rgb),
        4 => Ok(ColorType::Rgba),
        c => Err(Error::InvalidImage(format!(
            "an H×W×C array needs C = 1 (gray), 3 (RGB) or 4 (RGBA), not {c}"
        ))),
    }
}

impl<'a> ImageView<'a> {
    /// An `H×W×C` array (C = 1, 3 or 4; `u8`, `u16` or `f32`) as a view of the same memory,
    /// without a copy. The array must be in standard (row-major, contiguous) layout; for any
    /// other, [`Image::from_ndarray`] copies, or call `.as_standard_layout()`.
    ///
    /// # Errors
    /// [`Error::InvalidImage`] for another channel count, a layout that is not standard, or a
    /// size the library refuses.
    pub fn from_ndarray<T: Sample>(a: ndarray::ArrayView3<'a, T>) -> Result<Self> {
        let (h, w, c) = a.dim();
        let color = color_of_channels(c)?;
        let s = a.to_slice().ok_or_else(|| {
            Error::InvalidImage(format!(
                "a {h}×{w}×{c} array with strides {:?} is not contiguous row-major: use \
                 `Image::from_ndarray` (copies) or `.as_standard_layout()`",
                a.strides()
            ))
        })?;
        Self::new(w, h, color, T::samples(s))
    }
}

impl Image {
    /// An `H×W×C` array (C = 1, 3 or 4; `u8`, `u16` or `f32`) of any layout, copied.
    ///
    /// # Errors
    /// [`Error::InvalidImage`] for another channel count.
    pub fn from_ndarray<T: Sample>(a: ndarray::ArrayView3<'_, T>) -> Result<Self> {
        let (h, w, c) = a.dim();
        let color = color_of_channels(c)?;
        Ok(Image {
            width: w,
            height: h,
            color,
            // One memcpy for a standard-layout array, element by element otherwise.
            data: T::data(
                a.as_slice()
                    .map_or_else(|| a.iter().copied().collect(), <[T]>::to_vec),
            ),
        })
    }

    /// The image as an `H×W×C` array of its own sample type, moving the samples (no copy).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `T` when the image holds another sample type (check
    /// [`Image::sample_type`] first to keep the image in that case).
    pub fn into_ndarray<T: Sample>(self) -> Result<ndarray::Array3<T>> {
        let (w, h, c) = (self.width, self.height, self.color.channels());
        let have = self.sample_type();
        let v = T::from_data(self.data).map_err(|_| {
            Error::invalid_arg(
                "T",
                format!("the image holds {have:?} samples, not {:?}", T::TYPE),
            )
        })?;
        ndarray::Array3::from_shape_vec((h, w, c), v)
            .map_err(|e| Error::Internal(format!("image of inconsistent size: {e}")))
    }
}

/// Conversions to and from the `image` crate (feature `image`).
#[cfg(feature = "image")]
mod dynamic {
    use super::{ColorType, Image, ImageData};
    use crate::error::{Error, Result};
    use image::DynamicImage as D;

    impl TryFrom<&D> for Image {
        type Error = Error;

        /// Copies a `DynamicImage`: 8-bit, 16-bit and f32 gray/RGB/RGBA keep their samples;
        /// gray + alpha becomes RGBA of its depth (the alpha kept).
        fn try_from(d: &D) -> Result<Self> {
            let (w, h) = (d.width() as usize, d.height() as usize);
            let (color, data) = match d {
                D::ImageLuma8(b) => (ColorType::Gray, ImageData::U8(b.as_raw().clone())),
                D::ImageRgb8(b) => (ColorType::Rgb, ImageData::U8(b.as_raw().clone())),
                D::ImageRgba8(b) => (ColorType::Rgba, ImageData::U8(b.as_raw().clone())),
                D::ImageLumaA8(_) => (ColorType::Rgba, ImageData::U8(d.to_rgba8().into_raw())),
                D::ImageLuma16(b) => (ColorType::Gray, ImageData::U16(b.as_raw().clone())),
                D::ImageRgb16(b) => (ColorType::Rgb, ImageData::U16(b.as_raw().clone())),
                D::ImageRgba16(b) => (ColorType::Rgba, ImageData::U16(b.as_raw().clone())),
                D::ImageLumaA16(_) => (ColorType::Rgba, ImageData::U16(d.to_rgba16().into_raw())),
                D::ImageRgb32F(b) => (ColorType::Rgb, ImageData::F32(b.as_raw().clone())),
                D::ImageRgba32F(b) => (ColorType::Rgba, ImageData::F32(b.as_raw().clone())),
                other => (ColorType::Rgba, ImageData::F32(other.to_rgba32f().into_raw())),
            };
            Ok(Image {
                width: w,
                height: h,
                color,
                data,
            })
        }
    }

    impl TryFrom<Image> for D {
        type Error = Error;

        /// Moves an image into a `DynamicImage` of the same layout and sample type (f32 gray,
        /// which `image` has no type for, becomes f32 RGB).
        fn try_from(img: Image) -> Result<Self> {
            let (w, h) = (
                u32::try_from(img.width).map_err(|_| Error::invalid_arg("image", "too wide"))?,
                u32::try_from(img.height).map_err(|_| Error::invalid_arg("image", "too tall"))?,
            );
            let bad = || Error::invalid_arg("image", "its samples do not fill its size");
            Ok(match (img.color, img.data) {
                (ColorType::Gray, ImageData::U8(v)) => {
                    D::ImageLuma8(image::ImageBuffer::from_raw(w, h, v).ok_or_else(bad)?)
                }
                (ColorType::Rgb, ImageData::U8(v)) => {
                    D::ImageRgb8(image::ImageBuffer::from_raw(w, h, v).ok_or_else(bad)?)
                }
                (ColorType::Rgba, ImageData::U8(v)) => {
                    D::ImageRgba8(image::ImageBuffer::from_raw(w, h, v).ok_or_else(bad)?)
                }
                (ColorType::Gray, ImageData::U16(v)) => {
                    D::ImageLuma16(image::ImageBuffer::from_raw(w, h, v).ok_or_else(bad)?)
                }
                (ColorType::Rgb, ImageData::U16(v)) => {
                    D::ImageRgb16(image::ImageBuffer::from_raw(w, h, v).ok_or_else(bad)?)
                }
                (ColorType::Rgba, ImageData::U16(v)) => {
                    D::ImageRgba16(image::ImageBuffer::from_raw(w, h, v).ok_or_else(bad)?)
                }
                (ColorType::Gray, ImageData::F32(v)) => D::ImageRgb32F(
                    image::ImageBuffer::from_raw(w, h, v.iter().flat_map(|&x| [x, x, x]).collect())
                        .ok_or_else(bad)?,
                ),
                (ColorType::Rgb, ImageData::F32(v)) => {
                    D::ImageRgb32F(image::ImageBuffer::from_raw(w, h, v).ok_or_else(bad)?)
                }
                (ColorType::Rgba, ImageData::F32(v)) => {
                    D::ImageRgba32F(image::ImageBuffer::from_raw(w, h, v).ok_or_else(bad)?)
                }
            })
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn dynamic_images_round_trip_every_sample_type() {
            let rgb16 = Image {
                width: 3,
                height: 2,
                color: ColorType::Rgb,
                data: ImageData::U16((0..18).map(|i| i * 3000).collect()),
            };
            let d = D::try_from(rgb16.clone()).unwrap();
            assert!(matches!(d, D::ImageRgb16(_)));
            assert_eq!(Image::try_from(&d).unwrap(), rgb16);
            let gray8 = Image {
                width: 2,
                height: 2,
                color: ColorType::Gray,
                data: ImageData::U8(vec![1, 2, 3, 4]),
            };
            assert_eq!(
                Image::try_from(&D::try_from(gray8.clone()).unwrap()).unwrap(),
                gray8
            );
            let rgba_f = Image {
                width: 1,
                height: 2,
                color: ColorType::Rgba,
                data: ImageData::F32(vec![0.1, 0.2, 0.3, 1.0, 0.5, 0.6, 0.7, 0.0]),
            };
            assert_eq!(
                Image::try_from(&D::try_from(rgba_f.clone()).unwrap()).unwrap(),
                rgba_f
            );
            let short = Image { width: 5, ..gray8 };
            assert!(D::try_from(short).is_err());
        }
    }
}
