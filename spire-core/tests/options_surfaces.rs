//! The surfaces generated from the options table (`spire_core::options::OPTIONS`): the table
//! of `docs/restoring.md`, the Python docstring of `Restorer.restore`
//! (`spire-py/src/restore_doc.txt`) and the keyword block of the stubs
//! (`python/spire/_spire.pyi`). Each test fails when the committed text differs from what the
//! table generates now; `SPIRE_BLESS=1 cargo test --release -p spire-core --test
//! options_surfaces` rewrites them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use spire_core::options::{markdown_table, OptionKind, OPTIONS};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Replaces the text between the `begin` and `end` lines of `path` with `body` under
/// `SPIRE_BLESS`, otherwise asserts it is there already.
fn check_block(path: &Path, begin: &str, end: &str, body: &str, occurrences: usize) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = String::new();
    let mut rest = text.as_str();
    let mut found = 0;
    while let Some(b) = rest.find(begin) {
        let after = b + rest[b..].find('\n').unwrap() + 1;
        let e = after
            + rest[after..]
                .find(end)
                .unwrap_or_else(|| panic!("{}: no `{end}`", path.display()));
        // `end` starts its line: keep its indentation.
        let line_start = rest[..e].rfind('\n').map_or(0, |i| i + 1);
        out += &rest[..after];
        out += body;
        rest = &rest[line_start..];
        found += 1;
    }
    out += rest;
    assert_eq!(found, occurrences, "{}: `{begin}` blocks", path.display());
    if std::env::var_os("SPIRE_BLESS").is_some() {
        std::fs::write(path, &out).unwrap();
        return;
    }
    assert!(
        out == text,
        "{} is stale: run `SPIRE_BLESS=1 cargo test --release -p spire-core --test options_surfaces` and commit it",
        path.display()
    );
}

fn check_file(path: &Path, body: &str) {
    if std::env::var_os("SPIRE_BLESS").is_some() {
        std::fs::write(path, body).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == body,
        "{} is stale: run `SPIRE_BLESS=1 cargo test --release -p spire-core --test options_surfaces` and commit it",
        path.display()
    );
}

#[test]
fn docs_options_table_is_generated() {
    check_block(
        &root().join("docs/restoring.md"),
        "<!-- options: generated",
        "<!-- /options -->",
        &markdown_table(),
        1,
    );
}

/// The Python type of an option's keyword.
fn python_type(kind: &OptionKind) -> &'static str {
    match kind {
        OptionKind::Text | OptionKind::Prompt | OptionKind::Choice(_) => "str",
        OptionKind::Int { .. } => "int",
        OptionKind::IntOrAuto { .. } | OptionKind::Memory => "Union[int, str]",
        OptionKind::Float { .. } => "float",
        OptionKind::Bool => "bool",
    }
}

fn wrap(text: &str, indent: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent.len() + line.len() + 1 + word.chars().count() > width {
            out += &format!("{indent}{line}\n");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line += word;
    }
    if !line.is_empty() {
        out += &format!("{indent}{line}\n");
    }
    out
}

#[test]
fn python_restore_docstring_is_generated() {
    let mut doc = String::from(
        "Restores one image and returns one like it: a numpy array H×W×C (uint8, uint16 or\n\
         float32; the same kind comes back, 16-bit precision kept) or a PIL image.\n\n\
         Every keyword left out (or None) keeps the model's recommendation (`Restorer.defaults`),\n\
         else the library default shown. Generated from the core's options table\n\
         (spire_core::options::OPTIONS); `spire.restore_options()` lists it.\n\n\
         Args:\n    image: the degraded image.\n",
    );
    let args = [
        (
            "restoration_prompt",
            "str | RestorationPrompt",
            OPTIONS[0].default,
            OPTIONS[0].doc,
        ),
        (
            "initial_latents",
            "numpy float32 [batch, channels, h/8, w/8]",
            "",
            "Explicit initial noise (diffusers' `latents=`) instead of seeded noise.",
        ),
        (
            "progress",
            "callable(step, total) | bool",
            "",
            "Called after every denoising step; a falsy return other than None cancels (CancelledError); an exception it raises is re-raised. None (default): a progress bar in terminals and notebooks when tqdm is installed; True: a bar whenever tqdm is installed; False: silent.",
        ),
    ];
    let rows = OPTIONS
        .iter()
        .filter(|o| o.name != "restoration_prompt")
        .map(|o| (o.name, python_type(&o.kind), o.default, o.doc));
    for (name, ty, default, text) in args.into_iter().chain(rows) {
        let shown = match default {
            "true" => "True".to_string(),
            "false" => "False".to_string(),
            d if d.parse::<f64>().is_ok() => d.to_string(),
            d => format!("{d:?}"),
        };
        let head = if default.is_empty() && ty != "str" {
            format!("    {name} ({ty}):")
        } else {
            format!("    {name} ({ty}, default {shown}):")
        };
        doc += &head;
        doc += "\n";
        doc += &wrap(text, "        ", 96);
    }
    check_file(&root().join("spire-py/src/restore_doc.txt"), &doc);
}

#[test]
fn python_stub_keywords_are_generated() {
    for (skip, count) in [
        (&["restoration_prompt"][..], 1),
        (&["restoration_prompt", "semantic_prompt"][..], 1),
    ] {
        let mut body = String::new();
        for o in OPTIONS.iter().filter(|o| !skip.contains(&o.name)) {
            body += &format!("        {}: Optional[{}] = None,\n", o.name, python_type(&o.kind));
        }
        let marker = if skip.len() == 1 {
            "# <options: restore>"
        } else {
            "# <options: restore_batch>"
        };
        check_block(
            &root().join("python/spire/_spire.pyi"),
            marker,
            "# </options>",
            &body,
            count,
        );
    }
}

#[test]
fn architecture_stage_diagram_is_generated() {
    check_block(
        &root().join("docs/architecture.md"),
        "<!-- stages: generated",
        "<!-- /stages -->",
        &spire_core::options::stage_diagram(),
        1,
    );
}

/// The layering docs/architecture.md states: the models know nothing of training, the
/// scheduler nothing of the models, and neither of the pipeline above them.
#[test]
fn layering_holds() {
    let src = root().join("spire-core/src");
    let rules: &[(&str, &[&str])] = &[
        (
            "model",
            &[
                "crate::train",
                "crate::restorer",
                "crate::options",
                "crate::batch",
                "crate::eval",
            ],
        ),
        (
            "scheduler",
            &[
                "crate::model",
                "crate::train",
                "crate::restorer",
                "crate::options",
            ],
        ),
        ("json.rs", &["crate::model", "crate::train", "crate::scheduler"]),
        ("rng.rs", &["crate::model", "crate::train", "crate::restorer"]),
    ];
    let mut broken = Vec::new();
    for (dir, banned) in rules {
        let path = src.join(dir);
        let files: Vec<PathBuf> = if path.is_dir() {
            std::fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "rs"))
                .collect()
        } else {
            vec![path]
        };
        assert!(!files.is_empty(), "{dir}: no sources");
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for b in *banned {
                if let Some(line) = text
                    .lines()
                    .find(|l| !l.trim_start().starts_with("//") && l.contains(b))
                {
                    broken.push(format!("{}: `{}` ({b})", f.display(), line.trim()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
}
