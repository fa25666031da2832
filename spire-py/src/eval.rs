//! `spire.evaluate`: the core's evaluation, results as plain Python values.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use spire_core::eval::{self, EvalConfig, EvalSetting, MetricWeights, Scores};

use crate::errors::{guard, new, to_py};
use crate::restorer::PyRestorer;

fn scores<'py>(py: Python<'py>, s: &Scores) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("fid", s.fid)?;
    d.set_item("lpips", s.lpips)?;
    d.set_item("psnr", s.psnr)?;
    d.set_item("ssim", s.ssim)?;
    d.set_item("clip_i", s.clip_i)?;
    d.set_item("clip_t", s.clip_t)?;
    d.set_item("images", s.images)?;
    Ok(d)
}

/// Runs the paper's evaluation on a folder of clean photos; returns a dict with `markdown`,
/// `csv`, `rows` and `notes`.
#[pyfunction]
#[pyo3(signature = (
    restorer, data, *, captions=None, only=None, size=256, seed=0, steps=None, rows="paper",
    lpips=None, clip=None, inception=None, save_images=None, progress=None
))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn evaluate(
    py: Python<'_>,
    restorer: &PyRestorer,
    data: PathBuf,
    captions: Option<PathBuf>,
    only: Option<Vec<String>>,
    size: usize,
    seed: u64,
    steps: Option<usize>,
    rows: &str,
    lpips: Option<PathBuf>,
    clip: Option<PathBuf>,
    inception: Option<PathBuf>,
    save_images: Option<PathBuf>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Py<PyAny>> {
    let mut cfg = EvalConfig {
        size,
        seed,
        weights: MetricWeights {
            lpips,
            clip,
            inception,
        },
        save_images,
        options: restorer.core().default_options(),
        ..Default::default()
    };
    if let Some(s) = steps {
        cfg.options.num_inference_steps = s;
    }
    cfg.settings = match rows {
        "paper" => EvalSetting::paper(),
        "plain" => vec![
            EvalSetting::new("SPIRE w/o text", false, false),
            EvalSetting::new("SPIRE", true, true),
        ],
        o => {
            return Err(new(
                "InvalidArgumentError",
                format!("invalid argument `rows`: `{o}` is not \"paper\" or \"plain\""),
            ))
        }
    };
    let captions = captions.or_else(|| {
        let c = data.join("captions.tsv");
        c.is_file().then_some(c)
    });
    let only = only.unwrap_or_default();
    // Ctrl-C: every restore of the evaluation checks for a pending signal at each stage and
    // denoising step, and stops; the signal is re-raised as KeyboardInterrupt.
    let signal: Arc<Mutex<Option<PyErr>>> = Arc::new(Mutex::new(None));
    let s = signal.clone();
    cfg.options.progress = Some(Arc::new(move |_: &spire_core::Progress| {
        Python::attach(|py| match py.check_signals() {
            Ok(()) => true,
            Err(e) => {
                if let Ok(mut g) = s.lock() {
                    *g = Some(e);
                }
                false
            }
        })
    }));
    let r = restorer.core().clone();
    let mut py_err: Option<PyErr> = None;
    let report = py
        .detach(|| {
            guard(|| {
                let images = eval::load_images(&data, captions.as_deref(), &only, cfg.size)?;
                eval::evaluate(&r, &images, &cfg, &mut |done, total, what| {
                    if let (Some(cb), None) = (&progress, &py_err) {
                        Python::attach(|py| {
                            if let Err(e) = cb.call1(py, (done, total, what)) {
                                py_err = Some(e);
                            }
                        });
                    }
                })
            })
        })
        .map_err(
            |e| match (e.kind(), signal.lock().ok().and_then(|mut g| g.take())) {
                (spire_core::ErrorKind::Cancelled, Some(interrupt)) => interrupt,
                _ => to_py(e),
            },
        )?;
    if let Some(e) = py_err {
        return Err(e);
    }
    let out = PyDict::new(py);
    out.set_item("markdown", report.markdown())?;
    out.set_item("csv", report.csv())?;
    out.set_item("notes", report.notes.clone())?;
    let list = PyList::empty(py);
    for row in &report.rows {
        let d = PyDict::new(py);
        d.set_item("name", &row.name)?;
        d.set_item("semantic", row.semantic)?;
        d.set_item("restoration", row.restoration)?;
        d.set_item("parameterized", scores(py, &row.scores[0])?)?;
        d.set_item("realesrgan", scores(py, &row.scores[1])?)?;
        list.append(d)?;
    }
    out.set_item("rows", list)?;
    Ok(out.into_any().unbind())
}
