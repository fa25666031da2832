//! `spire._spire`: the native module behind the `spire` Python package.
//!
//! Thin by design: it converts numpy arrays and Python values into `spire-core` types and core
//! errors into Python exceptions; all behaviour lives in `spire-core`.

use pyo3::prelude::*;

/// The native module.
#[pymodule]
fn _spire(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
