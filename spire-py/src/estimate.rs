//! `spire.estimate`: the restoration prompt read from a photo.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use spire_core::estimate::{JpegSource, SourceInfo};
use spire_core::RestorationPrompt;

use crate::errors::{guard, to_py};
use crate::image::from_numpy;
use crate::prompt::PyRestorationPrompt;

/// Estimates the restoration prompt of a photo: an image array, or a PNG/JPEG file path (a
/// JPEG file's quality is then exact, read from its tables). ``output_size=(width, height)``
/// adds the scale and gives the blur in output pixels. Returns a dict: ``prompt`` (a
/// ``RestorationPrompt``: what ``restoration_prompt="auto"`` restores with), and ``noise``,
/// ``blur``, ``jpeg``, ``scale`` as ``(value, confidence)`` (``jpeg`` adds its source:
/// ``"file"``, ``"file-nearest"`` or ``"pixels"``; ``None`` when absent).
#[pyfunction]
#[pyo3(signature = (image, *, output_size = None))]
pub(crate) fn estimate<'py>(
    py: Python<'py>,
    image: &Bound<'py, PyAny>,
    output_size: Option<(usize, usize)>,
) -> PyResult<Bound<'py, PyDict>> {
    let est = if let Ok(path) = image.extract::<PathBuf>() {
        py.detach(|| {
            guard(|| {
                let name = path.display().to_string();
                let bytes = spire_core::io::read_file(&path)?;
                let img = spire_core::io::decode_image(&bytes, &name)?;
                let src = SourceInfo::from_bytes(&bytes, &name)?;
                RestorationPrompt::estimate_for_size(&img.view(), Some(&src), output_size)
            })
        })
    } else {
        let img = from_numpy(image, "image")?;
        py.detach(|| guard(|| RestorationPrompt::estimate_for_size(&img.view()?, None, output_size)))
    }
    .map_err(to_py)?;
    let d = PyDict::new(py);
    d.set_item("prompt", PyRestorationPrompt(est.prompt))?;
    d.set_item("noise", (est.noise.value, est.noise.confidence))?;
    d.set_item("blur", (est.blur.value, est.blur.confidence))?;
    match est.jpeg {
        None => d.set_item("jpeg", py.None())?,
        Some((q, src)) => d.set_item(
            "jpeg",
            (
                q.value,
                q.confidence,
                match src {
                    JpegSource::FileExact => "file",
                    JpegSource::FileNearest => "file-nearest",
                    JpegSource::Pixels => "pixels",
                },
            ),
        )?,
    }
    match est.scale {
        None => d.set_item("scale", py.None())?,
        Some(s) => d.set_item("scale", (s.value, s.confidence))?,
    }
    Ok(d)
}
