//! Folder runs for Python (`spire.ray`): the core's listing, output naming and prompt table,
//! so a Ray run and `spire restore-dir` pick the same files, names and prompts.

use std::path::PathBuf;

use pyo3::prelude::*;
use spire_core::batch::{self, OutputFormat, PromptTable};

use crate::errors;

/// One image of a folder run: `(name, input, output, restoration prompt, semantic prompt)`.
type PyJob = (String, PathBuf, PathBuf, Option<String>, Option<String>);

/// The jobs of a folder run as `spire restore-dir` plans them: every PNG/JPEG under `input`
/// (hidden files and `output` left out), its output path under `output` (extension by
/// `format`: `same`, `png` or `jpg`), and its prompts from the `prompts.tsv`/`.csv` table.
/// Returns the jobs and the table's names that match no image.
#[pyfunction]
#[pyo3(signature = (input, output, format = "same", prompts = None))]
pub(crate) fn plan_folder(
    py: Python<'_>,
    input: PathBuf,
    output: PathBuf,
    format: &str,
    prompts: Option<PathBuf>,
) -> PyResult<(Vec<PyJob>, Vec<String>)> {
    let fmt = OutputFormat::from_name(format).map_err(errors::to_py)?;
    py.detach(|| {
        errors::guard(|| {
            let table = prompts.as_deref().map(PromptTable::read).transpose()?;
            let (jobs, unmatched) = batch::plan_dir(&input, &output, fmt, table.as_ref())?;
            let jobs = jobs
                .into_iter()
                .map(|j| {
                    (
                        j.name,
                        j.input,
                        j.output,
                        j.prompts.restoration.map(|p| p.to_string()),
                        j.prompts.semantic,
                    )
                })
                .collect();
            Ok((jobs, unmatched))
        })
    })
    .map_err(errors::to_py)
}

/// Relative path → (restoration prompt, semantic prompt).
type PromptRows = std::collections::BTreeMap<String, (Option<String>, Option<String>)>;

/// A `prompts.tsv`/`.csv` table as `spire restore-dir --prompts` reads it:
/// `{relative path: (restoration prompt, semantic prompt)}`, empty cells as `None`.
#[pyfunction]
pub(crate) fn read_prompt_table(py: Python<'_>, path: PathBuf) -> PyResult<PromptRows> {
    py.detach(|| {
        errors::guard(|| {
            let table = PromptTable::read(&path)?;
            Ok(table
                .names()
                .map(|n| {
                    let p = table.get(n).cloned().unwrap_or_default();
                    (n.to_owned(), (p.restoration.map(|r| r.to_string()), p.semantic))
                })
                .collect())
        })
    })
    .map_err(errors::to_py)
}
