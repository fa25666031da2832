//! Restoring a whole folder with one loaded model: the jobs (every PNG/JPEG under a folder,
//! relative paths kept), per-image prompts from a `prompts.tsv`/`.csv`, and a run that resumes
//! (finished outputs are skipped: every output is written to a temporary name and renamed, so
//! an existing output is complete), keeps going past a bad image (reported, and written to
//! `failures.tsv`) and stops between images when asked.
//!
//! The CLI's `spire restore-dir` is this module plus a progress bar; Python's Ray Data pipeline
//! (`spire.ray`) restores the same jobs on many processes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::options::{RestorationInput, RestoreOptions};
use crate::prompt::RestorationPrompt;
use crate::Restorer;

/// Per-image prompts: `file`, restoration prompt, semantic prompt (caption).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImagePrompts {
    /// The restoration prompt (parsed when the table is read); `None`: the run's.
    pub restoration: Option<RestorationPrompt>,
    /// The caption; `None`: the run's.
    pub semantic: Option<String>,
}

/// A prompt table keyed by the image's path relative to the input folder (`/`-separated).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromptTable {
    rows: BTreeMap<String, ImagePrompts>,
}

/// Splits one CSV record (RFC 4180 quotes: `"a, b"`, `""` for a quote). Records spanning lines
/// are not supported (prompts are one line).
fn csv_fields(line: &str) -> std::result::Result<Vec<String>, &'static str> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (false, '"') if at_start => {
                quoted = true;
                at_start = false;
            }
            (true, '"') => {
                if chars.peek() == Some(&'"') {
                    cur.push('"');
                    chars.next();
                } else {
                    quoted = false;
                    if !matches!(chars.peek(), None | Some(',')) {
                        return Err("text after a closing quote");
                    }
                }
            }
            (false, ',') => {
                out.push(std::mem::take(&mut cur));
                at_start = true;
            }
            (_, c) => {
                cur.push(c);
                at_start = false;
            }
        }
    }
    if quoted {
        return Err("a quote is not closed");
    }
    out.push(cur);
    Ok(out)
}

impl PromptTable {
    /// Reads `file<TAB>restoration prompt<TAB>semantic prompt` (`.tsv`) or the same as CSV
    /// (`.csv`, quotes allowed). A first row whose first cell is `file` is a header. Empty
    /// cells (and missing trailing ones) keep the run's prompt. Every restoration prompt is
    /// parsed here, so a bad one fails before any image is restored.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the file, the line and the problem (a bad prompt
    /// quotes its clause; a file listed twice; more than three columns).
    pub fn read(path: &Path) -> Result<Self> {
        let text = crate::io::read_text(path)?;
        let csv = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        let mut rows = BTreeMap::new();
        let bad = |line: usize, msg: String| {
            Error::invalid_arg("prompts", format!("{} line {line}: {msg}", path.display()))
        };
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            if raw.trim().is_empty() {
                continue;
            }
            let cells: Vec<String> = if csv {
                csv_fields(raw).map_err(|m| bad(line, m.into()))?
            } else {
                raw.split('\t').map(str::to_owned).collect()
            };
            if cells.len() > 3 {
                return Err(bad(
                    line,
                    format!(
                        "{} columns; expected file, restoration prompt, semantic prompt",
                        cells.len()
                    ),
                ));
            }
            let file = cells[0].trim().replace('\\', "/");
            if line == 1 && file.eq_ignore_ascii_case("file") {
                continue;
            }
            if file.is_empty() {
                return Err(bad(line, "no file name in the first column".into()));
            }
            let cell = |j: usize| cells.get(j).map(|s| s.trim()).filter(|s| !s.is_empty());
            let restoration = match cell(1) {
                Some(p) => {
                    Some(RestorationPrompt::parse(p).map_err(|e| bad(line, format!("`{file}`: {e}")))?)
                }
                None => None,
            };
            let semantic = cell(2).map(str::to_owned);
            if rows
                .insert(
                    file.clone(),
                    ImagePrompts {
                        restoration,
                        semantic,
                    },
                )
                .is_some()
            {
                return Err(bad(line, format!("`{file}` is listed twice")));
            }
        }
        Ok(Self { rows })
    }

    /// The prompts of one image (by its relative path).
    pub fn get(&self, name: &str) -> Option<&ImagePrompts> {
        self.rows.get(name)
    }

    /// Names in the table, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.rows.keys().map(String::as_str)
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// The output file type of a folder run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// The input's (PNG stays PNG, JPEG stays JPEG).
    #[default]
    Same,
    /// PNG for every image (lossless).
    Png,
    /// JPEG (quality 95) for every image.
    Jpeg,
    /// TIFF (deflate; 16-bit and float inputs keep their depth) for every image.
    Tiff,
    /// Lossless WebP for every image.
    WebP,
}

impl OutputFormat {
    /// `same`, `png`, `jpg`/`jpeg`, `tif`/`tiff`, `webp`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "same" => OutputFormat::Same,
            "png" => OutputFormat::Png,
            "jpg" | "jpeg" => OutputFormat::Jpeg,
            "tif" | "tiff" => OutputFormat::Tiff,
            "webp" => OutputFormat::WebP,
            _ => return None,
        })
    }

    /// [`OutputFormat::parse`], with the error that names the argument.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`format`) for another name.
    pub fn from_name(s: &str) -> Result<Self> {
        Self::parse(s).ok_or_else(|| {
            Error::invalid_arg("format", format!("`{s}`: expected same, png, jpg, tiff or webp"))
        })
    }
}

/// One image of a folder run.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Its path relative to the input folder, `/`-separated (the key of the prompt table).
    pub name: String,
    /// The input file.
    pub input: PathBuf,
    /// The output file.
    pub output: PathBuf,
    /// Its prompts from the table, if any.
    pub prompts: ImagePrompts,
}

fn is_image(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        matches!(
            e.to_ascii_lowercase().as_str(),
            "png" | "jpg" | "jpeg" | "tif" | "tiff" | "webp"
        )
    })
}

/// Every PNG/JPEG file under `dir` (recursively; hidden files and folders, symbolic links to
/// folders and the folder `skip` are left out), as sorted `/`-separated relative paths.
///
/// # Errors
/// [`Error::Io`] naming an unreadable folder.
pub fn list_images(dir: &Path, skip: Option<&Path>) -> Result<Vec<String>> {
    let skip = skip.and_then(|s| s.canonicalize().ok());
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        if skip
            .as_ref()
            .is_some_and(|s| d.canonicalize().ok().as_ref() == Some(s))
        {
            continue;
        }
        for e in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let e = e.map_err(|e| Error::io(&d, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let ft = e.file_type().map_err(|err| Error::io(e.path(), err))?;
            let r = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if ft.is_dir() {
                stack.push((e.path(), r));
            } else if is_image(&e.path()) && !ft.is_dir() {
                out.push(r);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The jobs of a folder run: every image under `input` (except under `output`, when it is
/// inside), its output at the same relative path under `output` (extension by `format`), and
/// its prompts from `prompts`. Returns the jobs and the table's names that match no image.
///
/// # Errors
/// [`Error::Io`] for an input folder that is not one or cannot be read.
pub fn plan_dir(
    input: &Path,
    output: &Path,
    format: OutputFormat,
    prompts: Option<&PromptTable>,
) -> Result<(Vec<Job>, Vec<String>)> {
    if !input.is_dir() {
        return Err(Error::io(
            input,
            std::io::Error::new(std::io::ErrorKind::NotFound, "input folder not found"),
        ));
    }
    let names = list_images(input, Some(output))?;
    let jobs: Vec<Job> = names
        .iter()
        .map(|n| {
            let mut out = output.join(n);
            match format {
                OutputFormat::Same => {}
                OutputFormat::Png => {
                    out.set_extension("png");
                }
                OutputFormat::Jpeg => {
                    out.set_extension("jpg");
                }
                OutputFormat::Tiff => {
                    out.set_extension("tif");
                }
                OutputFormat::WebP => {
                    out.set_extension("webp");
                }
            }
            Job {
                name: n.clone(),
                input: input.join(n),
                output: out,
                prompts: prompts.and_then(|t| t.get(n)).cloned().unwrap_or_default(),
            }
        })
        .collect();
    let unmatched = prompts
        .map(|t| {
            t.names()
                .filter(|n| names.binary_search_by(|x| x.as_str().cmp(n)).is_err())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Ok((jobs, unmatched))
}

/// The options of one job: `base` with the job's prompts.
pub fn job_options(base: &RestoreOptions, job: &Job) -> RestoreOptions {
    let mut o = base.clone();
    if let Some(p) = &job.prompts.restoration {
        o.restoration_prompt = RestorationInput::Prompt(*p);
    }
    if let Some(s) = &job.prompts.semantic {
        o.semantic_prompt = s.clone();
    }
    o
}

/// Restores `images` with per-image prompts (`prompts[i]` for image `i`; `None` fields keep
/// `base`'s), image `i` with seed `base.seed + i` as [`Restorer::restore_batch`] does. Images
/// that share their prompts and size run as one batch when every prompt is the same;
/// otherwise one at a time, with the same results as one-image calls.
///
/// # Errors
/// [`Error::InvalidArgument`] when the counts differ; as [`Restorer::restore_batch`].
pub fn restore_each(
    restorer: &Restorer,
    images: &[crate::ImageView],
    base: &RestoreOptions,
    prompts: &[ImagePrompts],
) -> Result<Vec<crate::Image>> {
    if prompts.len() != images.len() {
        return Err(Error::invalid_arg(
            "prompts",
            format!(
                "{} prompts for {} images (one per image)",
                prompts.len(),
                images.len()
            ),
        ));
    }
    let apply = |p: &ImagePrompts| {
        let mut o = base.clone();
        if let Some(r) = &p.restoration {
            o.restoration_prompt = RestorationInput::Prompt(*r);
        }
        if let Some(s) = &p.semantic {
            o.semantic_prompt = s.clone();
        }
        o
    };
    if prompts.windows(2).all(|w| w[0] == w[1]) {
        return match prompts.first() {
            Some(p) => restorer.restore_batch(images, &apply(p)),
            None => Ok(Vec::new()),
        };
    }
    images
        .iter()
        .zip(prompts)
        .enumerate()
        .map(|(i, (img, p))| {
            let mut o = apply(p);
            o.seed = base.seed.wrapping_add(i as u64);
            restorer.restore(img, &o)
        })
        .collect()
}

/// Where a folder run stands, after each image.
#[derive(Debug, Clone)]
pub struct DirProgress<'a> {
    /// Images handled (restored, skipped or failed).
    pub done: usize,
    /// Images in the run.
    pub total: usize,
    /// Restored so far.
    pub restored: usize,
    /// Skipped (their output existed).
    pub skipped: usize,
    /// Failed so far.
    pub failed: usize,
    /// The image just handled.
    pub name: &'a str,
    /// Restored images per second of this run.
    pub images_per_sec: f64,
    /// Estimated seconds left (at the rate of this run's restores).
    pub eta_secs: f64,
}

/// What a folder run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DirReport {
    /// Images restored.
    pub restored: usize,
    /// Images skipped because their output existed.
    pub skipped: usize,
    /// Images that failed: (relative path, error message).
    pub failed: Vec<(String, String)>,
    /// Whether the run stopped early (the callback asked).
    pub stopped: bool,
    /// Wall time.
    pub seconds: f64,
}

/// The file the failures of a run are listed in, in the output folder.
pub const FAILURES_FILE: &str = "failures.tsv";

/// Restores one job: plan from the header (refusing an image the memory limit cannot hold
/// before decoding it), decode, restore, write atomically.
/// `opts` with an `auto` restoration prompt replaced by the one estimated from `image` and
/// the header of the file it was read from (a JPEG's quality is then exact); other options
/// are returned as they are.
///
/// # Errors
/// [`Error::Io`] if the file cannot be read again; as [`Restorer::resolve_prompt`].
pub fn resolve_for_file(
    restorer: &Restorer,
    image: &crate::Image,
    path: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreOptions> {
    if !matches!(opts.restoration_prompt, RestorationInput::Auto(_)) {
        return Ok(opts.clone());
    }
    let bytes = crate::io::read_file(path)?;
    let source = crate::estimate::SourceInfo::from_bytes(&bytes, &path.display().to_string())?;
    let p = restorer.resolve_prompt(&image.view(), opts, Some(&source))?;
    let mut o = opts.clone();
    o.restoration_prompt = RestorationInput::Prompt(p);
    Ok(o)
}

fn restore_job(restorer: &Restorer, job: &Job, opts: &RestoreOptions) -> Result<()> {
    let info = crate::io::image_info(&job.input)?;
    restorer.plan(info.width, info.height, info.color, opts)?;
    let img = crate::io::load_image(&job.input)?;
    let opts = resolve_for_file(restorer, &img, &job.input, opts)?;
    let out = restorer.restore(&img.view(), &opts)?;
    if let Some(parent) = job.output.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    crate::io::save_image(&job.output, &out)
}

/// Restores `jobs` with `base` options (each job's prompts applied), skipping jobs whose
/// output exists, recording failures and going on. `on_progress` runs after each image;
/// returning `false` stops the run there. When any image failed, `failures.tsv` (relative
/// path, message) is written to `output` atomically; a run that leaves none failing removes
/// a previous run's list.
///
/// # Errors
/// Only for the run as a whole: invalid `base` options (checked before the first image) or a
/// failure list that cannot be written. Each image's own errors are in the report.
pub fn restore_dir(
    restorer: &Restorer,
    jobs: &[Job],
    output: &Path,
    base: &RestoreOptions,
    on_progress: &mut dyn FnMut(&DirProgress) -> bool,
) -> Result<DirReport> {
    base.validate()?;
    let t0 = Instant::now();
    let mut rep = DirReport::default();
    let mut restore_secs = 0.0;
    for (i, job) in jobs.iter().enumerate() {
        if job.output.is_file() {
            rep.skipped += 1;
        } else {
            let t = Instant::now();
            match restore_job(restorer, job, &job_options(base, job)) {
                Ok(()) => {
                    rep.restored += 1;
                    restore_secs += t.elapsed().as_secs_f64();
                }
                Err(e) => rep.failed.push((job.name.clone(), e.to_string())),
            }
        }
        let per = if rep.restored > 0 {
            restore_secs / rep.restored as f64
        } else {
            0.0
        };
        let p = DirProgress {
            done: i + 1,
            total: jobs.len(),
            restored: rep.restored,
            skipped: rep.skipped,
            failed: rep.failed.len(),
            name: &job.name,
            images_per_sec: if per > 0.0 { 1.0 / per } else { 0.0 },
            eta_secs: per * (jobs.len() - i - 1) as f64,
        };
        if !on_progress(&p) && i + 1 < jobs.len() {
            rep.stopped = true;
            break;
        }
    }
    rep.seconds = t0.elapsed().as_secs_f64();
    let list = output.join(FAILURES_FILE);
    if !rep.failed.is_empty() {
        std::fs::create_dir_all(output).map_err(|e| Error::io(output, e))?;
        let mut text = String::from("file\terror\n");
        for (n, m) in &rep.failed {
            text.push_str(&format!("{n}\t{}\n", m.replace(['\t', '\n', '\r'], " ")));
        }
        crate::io::write_atomic(&list, text.as_bytes())?;
    } else if !rep.stopped && list.is_file() {
        std::fs::remove_file(&list).map_err(|e| Error::io(&list, e))?;
    }
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_follow_rfc4180_quotes() {
        assert_eq!(csv_fields("a,b,c").unwrap(), ["a", "b", "c"]);
        assert_eq!(
            csv_fields(r#"a.png,"Denoise with sigma 0.1","a cat, asleep""#).unwrap(),
            ["a.png", "Denoise with sigma 0.1", "a cat, asleep"]
        );
        assert_eq!(
            csv_fields(r#"a,"say ""hi""",x"#).unwrap(),
            ["a", r#"say "hi""#, "x"]
        );
        assert_eq!(csv_fields("a,,").unwrap(), ["a", "", ""]);
        assert!(csv_fields(r#"a,"open"#).is_err());
        assert!(csv_fields(r#"a,"x"y"#).is_err());
    }
}
