//! Core errors → Python exceptions. The classes are created at import with their Python bases
//! (`InvalidArgumentError(SpireError, ValueError)`, …) and looked up by name when raising.

use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyPermissionError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple, PyType};

use spire_core::{Error, ErrorKind};

/// (name, Python bases besides the root, docstring)
const CLASSES: &[(&str, &[&str], &str)] = &[
    ("InvalidArgumentError", &["ValueError"], "An option or argument has a value spire does not accept (also a ValueError)."),
    ("InvalidImageError", &["ValueError"], "An image cannot be used: wrong dtype or shape, empty, too small, NaN (also a ValueError)."),
    ("ModelLoadError", &[], "A model file exists but cannot be used: corrupt, truncated, missing tensor, wrong shape, bad config."),
    ("UnsupportedError", &[], "The model or option asks for something this version does not implement."),
    ("DeviceError", &["RuntimeError"], "The compute device failed (out of memory, driver error, not compiled in)."),
    ("NumericalError", &["ArithmeticError"], "A computation produced NaN or infinity; the message names the stage (also an ArithmeticError)."),
    ("CancelledError", &[], "The progress callback asked to stop."),
    ("InternalError", &["RuntimeError"], "A bug in spire: please report it."),
];

/// Creates `SpireError` and its subclasses in module `m`.
pub(crate) fn register<'py>(py: Python<'py>, m: &Bound<'py, PyModule>) -> PyResult<()> {
    let builtins = py.import("builtins")?;
    let type_ = builtins.getattr("type")?;
    let make = |name: &str, bases: Bound<'py, PyTuple>, doc: &str| -> PyResult<Bound<'py, PyAny>> {
        let ns = PyDict::new(py);
        ns.set_item("__doc__", doc)?;
        ns.set_item("__module__", "spire")?;
        let cls = type_.call1((name, bases, ns))?;
        m.add(name, &cls)?;
        Ok(cls)
    };
    let root = make(
        "SpireError",
        PyTuple::new(py, [builtins.getattr("Exception")?])?,
        "Base class of every error spire raises (besides OSError subclasses for missing files).",
    )?;
    for (name, extra, doc) in CLASSES {
        let mut bases = vec![root.clone()];
        for b in *extra {
            bases.push(builtins.getattr(*b)?);
        }
        make(name, PyTuple::new(py, bases)?, doc)?;
    }
    Ok(())
}

fn class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyType>> {
    Ok(py.import("spire._spire")?.getattr(name)?.cast_into::<PyType>()?)
}

/// The Python exception for a core error.
pub(crate) fn to_py(err: Error) -> PyErr {
    Python::attach(|py| {
        let msg = err.to_string();
        if let Error::Io { path, source } = &err {
            let args = (
                source.raw_os_error().unwrap_or(0),
                msg.clone(),
                path.display().to_string(),
            );
            return match source.kind() {
                std::io::ErrorKind::NotFound => {
                    PyFileNotFoundError::new_err((2, msg, path.display().to_string()))
                }
                std::io::ErrorKind::PermissionDenied => {
                    PyPermissionError::new_err((13, msg, path.display().to_string()))
                }
                _ => PyOSError::new_err(args),
            };
        }
        let name = match err.kind() {
            ErrorKind::InvalidArgument => "InvalidArgumentError",
            ErrorKind::InvalidImage => "InvalidImageError",
            ErrorKind::ModelLoad => "ModelLoadError",
            ErrorKind::Unsupported => "UnsupportedError",
            ErrorKind::Device => "DeviceError",
            ErrorKind::Numerical => "NumericalError",
            ErrorKind::Cancelled => "CancelledError",
            _ => "InternalError",
        };
        match class(py, name) {
            Ok(cls) => {
                let e = PyErr::from_type(cls, msg);
                if let Error::InvalidPrompt { clause, .. } = &err {
                    let _ = e.value(py).setattr("clause", clause.clone());
                }
                e
            }
            Err(e) => e,
        }
    })
}

/// Raises the named spire exception with a message.
pub(crate) fn new(name: &str, msg: impl Into<String>) -> PyErr {
    let msg = msg.into();
    Python::attach(|py| match class(py, name) {
        Ok(cls) => PyErr::from_type(cls, msg),
        Err(e) => e,
    })
}

/// Runs `f`, turning a panic into `InternalError` (bad input must never surface as a
/// `PanicException`; a panic here is a bug).
pub(crate) fn guard<T>(f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(Error::Internal(format!("panic: {what}")))
    })
}
