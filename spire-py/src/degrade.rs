//! `spire.degrade`.

use pyo3::prelude::*;

use spire_core::degrade::{self as core_degrade, Pipeline};

use crate::errors::{guard, new, to_py};
use crate::image::{from_numpy, to_numpy};
use crate::prompt::PyRestorationPrompt;

/// Degrades an image with a training pipeline; returns `(degraded, prompt)`.
#[pyfunction]
#[pyo3(signature = (image, *, pipeline=None, seed=None))]
pub(crate) fn degrade(
    py: Python<'_>,
    image: &Bound<'_, PyAny>,
    pipeline: Option<&str>,
    seed: Option<u64>,
) -> PyResult<(Py<PyAny>, PyRestorationPrompt)> {
    let img = from_numpy(image, "image")?;
    let pipeline = match pipeline {
        None => Pipeline::default(),
        Some(p) => Pipeline::parse(p).ok_or_else(|| {
            new(
                "InvalidArgumentError",
                format!("invalid argument `pipeline`: `{p}` is not \"parameterized\" or \"realesrgan\""),
            )
        })?,
    };
    let seed = seed.unwrap_or(core_degrade::DEFAULT_SEED);
    let (out, prompt) = py
        .detach(|| guard(|| core_degrade::degrade(&img.view()?, pipeline, seed)))
        .map_err(to_py)?;
    Ok((to_numpy(py, out, &img)?, PyRestorationPrompt(prompt)))
}
