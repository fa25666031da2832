//! `spire._spire`: the native module behind the `spire` Python package.
//!
//! Thin by design: it converts numpy arrays and Python values into `spire-core` types and core
//! errors into Python exceptions; all behaviour lives in `spire-core`. Heavy work runs with the
//! GIL released.

use pyo3::prelude::*;

mod batch;
mod degrade;
mod errors;
mod estimate;
mod eval;
mod image;
mod prompt;
mod restorer;

/// The native module.
#[pymodule]
fn _spire(py: Python<'_>, m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(py, m)?;
    m.add_class::<restorer::PyRestorer>()?;
    m.add_class::<prompt::PyRestorationPrompt>()?;
    m.add_function(wrap_pyfunction!(restorer::restore_options, m)?)?;
    m.add_function(wrap_pyfunction!(degrade::degrade, m)?)?;
    m.add_function(wrap_pyfunction!(eval::evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(estimate::estimate, m)?)?;
    m.add_function(wrap_pyfunction!(image::decode_image, m)?)?;
    m.add_function(wrap_pyfunction!(image::read_image, m)?)?;
    m.add_function(wrap_pyfunction!(image::write_image, m)?)?;
    m.add_function(wrap_pyfunction!(image::encode_image, m)?)?;
    m.add_function(wrap_pyfunction!(batch::plan_folder, m)?)?;
    m.add_function(wrap_pyfunction!(batch::read_prompt_table, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(num_threads, m)?)?;
    Ok(())
}

/// Sets how many CPU threads the library computes with, for the whole process (default: every
/// core). Call it before the first load or restore; setting the current count is a no-op.
/// Raises ``InvalidArgumentError`` naming ``threads`` for 0 or once the threads run with
/// another count.
#[pyfunction]
fn set_num_threads(threads: usize) -> PyResult<()> {
    spire_core::device::set_num_threads(threads).map_err(errors::to_py)
}

/// How many CPU threads the library computes with.
#[pyfunction]
fn num_threads() -> usize {
    spire_core::device::num_threads()
}
