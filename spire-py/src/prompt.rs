//! `spire.RestorationPrompt`.

use pyo3::prelude::*;

use spire_core::RestorationPrompt;

use crate::errors::to_py;

/// A restoration prompt: blind ("Remove all degradation") or some of deblur / upsample /
/// denoise / dejpeg with their strengths.
#[pyclass(frozen, eq, hash, module = "spire._spire", name = "RestorationPrompt")]
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct PyRestorationPrompt(pub(crate) RestorationPrompt);

#[pymethods]
impl PyRestorationPrompt {
    /// Builds a prompt from numbers; no argument gives the blind prompt.
    #[new]
    #[pyo3(signature = (*, deblur=None, upsample=None, denoise=None, dejpeg=None))]
    fn new(
        deblur: Option<f64>,
        upsample: Option<f64>,
        denoise: Option<f64>,
        dejpeg: Option<u32>,
    ) -> PyResult<Self> {
        let mut p = RestorationPrompt::blind();
        if let Some(v) = deblur {
            p = p.with_deblur(v).map_err(to_py)?;
        }
        if let Some(v) = upsample {
            p = p.with_upsample(v).map_err(to_py)?;
        }
        if let Some(v) = denoise {
            p = p.with_denoise(v).map_err(to_py)?;
        }
        if let Some(v) = dejpeg {
            p = p.with_dejpeg(v).map_err(to_py)?;
        }
        Ok(Self(p))
    }

    /// Parses prompt text as people type it.
    #[staticmethod]
    fn parse(text: &str) -> PyResult<Self> {
        RestorationPrompt::parse(text).map(Self).map_err(to_py)
    }

    /// The blind prompt.
    #[staticmethod]
    fn blind() -> Self {
        Self(RestorationPrompt::blind())
    }

    /// Deblur σ, or None.
    #[getter]
    fn deblur(&self) -> Option<f32> {
        self.0.deblur_sigma()
    }

    /// Upsample factor, or None.
    #[getter]
    fn upsample(&self) -> Option<f32> {
        self.0.upsample_scale()
    }

    /// Denoise σ, or None.
    #[getter]
    fn denoise(&self) -> Option<f32> {
        self.0.denoise_sigma()
    }

    /// JPEG quality, or None.
    #[getter]
    fn dejpeg(&self) -> Option<u8> {
        self.0.dejpeg_quality()
    }

    /// True for "Remove all degradation".
    #[getter]
    fn is_blind(&self) -> bool {
        self.0.is_blind()
    }

    /// How much larger the restored image is (1.0 without an upsample clause).
    #[getter]
    fn upsample_factor(&self) -> f64 {
        self.0.upsample_factor()
    }

    /// The canonical text.
    fn render(&self) -> String {
        self.0.render()
    }

    fn __str__(&self) -> String {
        self.0.render()
    }

    fn __repr__(&self) -> String {
        format!("RestorationPrompt.parse({:?})", self.0.render())
    }
}
