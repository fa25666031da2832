//! Folder runs (issue #22): `spire restore-dir` and `spire_core::batch` restore every image
//! under a folder with one model, with per-image prompts, resume after an interruption, keep
//! going past a bad image (listed in `failures.tsv`, exit status 1) and stop between images
//! on request (Ctrl-C in the CLI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};

use common::fixtures;
use spire_core::batch::{self, OutputFormat, PromptTable};
use spire_core::{ImageView, Restorer};

/// A folder with 4 photos (one in a subfolder, one JPEG) and a file that is not an image.
fn folder(root: &Path) -> std::path::PathBuf {
    let d = root.join("in");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    let photos = fixtures().join("photos");
    std::fs::copy(photos.join("chelsea_crop256.png"), d.join("a.png")).unwrap();
    std::fs::copy(photos.join("chelsea_crop256_distorted.png"), d.join("sub/b.png")).unwrap();
    let img = spire_core::io::load_image(photos.join("chelsea_crop256.png")).unwrap();
    spire_core::io::save_image(d.join("c.jpg"), &img).unwrap();
    std::fs::copy(photos.join("chelsea_crop256.png"), d.join("d.png")).unwrap();
    std::fs::write(d.join("bad.png"), b"not an image").unwrap();
    std::fs::write(d.join(".hidden.png"), b"skipped").unwrap();
    std::fs::write(d.join("notes.txt"), b"skipped").unwrap();
    d
}

fn quick() -> Vec<&'static str> {
    vec!["--steps", "3", "--strength", "0.5"]
}

fn spire(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_spire"))
        .args(args)
        .output()
        .unwrap()
}

fn pixels(p: &Path) -> Vec<u8> {
    match spire_core::io::load_image(p).unwrap().data {
        spire_core::ImageData::U8(v) => v,
        _ => unreachable!(),
    }
}

#[test]
fn the_cli_restores_a_folder_with_prompts_resumes_and_reports_failures() {
    let tmp = tempfile::tempdir().unwrap();
    let input = folder(tmp.path());
    let out = tmp.path().join("out");
    let prompts = tmp.path().join("prompts.csv");
    std::fs::write(
        &prompts,
        "file,restoration prompt,semantic prompt\nsub/b.png,\"Denoise with sigma 0.05\",\"a cat, asleep\"\nmissing.png,,\n",
    )
    .unwrap();
    let (i, o, p) = (
        input.to_str().unwrap(),
        out.to_str().unwrap(),
        prompts.to_str().unwrap(),
    );
    let mut args = vec!["restore-dir", i, o, "--prompts", p];
    args.extend(quick());
    let r = spire(&args);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(err.contains("`missing.png`"), "{err}");
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(
        stdout.contains("4 restored, 0 skipped (already done), 1 failed, of 5"),
        "{stdout}"
    );
    for f in ["a.png", "sub/b.png", "c.jpg", "d.png"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let failures = std::fs::read_to_string(out.join("failures.tsv")).unwrap();
    assert!(
        failures.starts_with("file\terror\nbad.png\t") && failures.contains("not a PNG, JPEG, TIFF or WebP"),
        "{failures}"
    );

    // Each output equals `spire restore` of that file alone with its prompts.
    let single = tmp.path().join("b-single.png");
    let b = input.join("sub/b.png");
    let mut args = vec![
        "restore",
        b.to_str().unwrap(),
        single.to_str().unwrap(),
        "--prompt",
        "Denoise with sigma 0.05",
        "--caption",
        "a cat, asleep",
    ];
    args.extend(quick());
    assert!(spire(&args).status.success());
    assert_eq!(pixels(&single), pixels(&out.join("sub/b.png")));
    // …and the per-image prompt was used: the run's blind prompt gives another image.
    let blind = tmp.path().join("b-blind.png");
    let mut args = vec!["restore", b.to_str().unwrap(), blind.to_str().unwrap()];
    args.extend(quick());
    assert!(spire(&args).status.success());
    assert_ne!(pixels(&blind), pixels(&out.join("sub/b.png")));

    // A second run skips what is done (an interrupted run leaves only complete files, so any
    // existing output is skipped) and restores what is missing.
    let before = std::fs::metadata(out.join("a.png")).unwrap().modified().unwrap();
    std::fs::remove_file(out.join("d.png")).unwrap();
    std::fs::remove_file(input.join("bad.png")).unwrap();
    let mut args = vec!["restore-dir", i, o, "--prompts", p];
    args.extend(quick());
    let r = spire(&args);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(
        stdout.contains("1 restored, 3 skipped (already done), 0 failed, of 4"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::metadata(out.join("a.png")).unwrap().modified().unwrap(),
        before
    );
    assert!(
        !out.join("failures.tsv").exists(),
        "a clean run removes the old list"
    );
    assert!(
        std::fs::read_dir(&out).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("spire-tmp")),
        "no temporary files left"
    );
}

#[test]
fn ctrl_c_stops_the_cli_after_the_current_image_and_a_rerun_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let input = folder(tmp.path());
    std::fs::remove_file(input.join("bad.png")).unwrap();
    // 12 images: the signal arrives long before the end, whatever the machine's speed.
    for k in 0..8 {
        std::fs::copy(input.join("a.png"), input.join(format!("more-{k}.png"))).unwrap();
    }
    let out = tmp.path().join("out");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    let mut args = vec!["restore-dir", i, o];
    args.extend(quick());
    let mut child = Command::new(env!("CARGO_BIN_EXE_spire"))
        .args(&args)
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    // After the first image, interrupt.
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("[1/12]"), "{first}");
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert_eq!(status.code(), Some(1), "{rest:?}");
    assert!(stdout.contains("stopped by Ctrl-C"), "{stdout}");
    let (jobs, _) = batch::plan_dir(&input, &out, OutputFormat::Same, None).unwrap();
    let done = jobs.iter().filter(|j| j.output.is_file()).count();
    assert!(
        (1..12).contains(&done),
        "{done} done: the run stops between images"
    );
    let r = spire(&args);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(
        stdout.contains(&format!("{} restored, {done} skipped", 12 - done)),
        "{stdout}"
    );
}

#[test]
fn the_library_run_stops_on_request_and_formats_and_prompt_tables_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let input = folder(tmp.path());
    let out = tmp.path().join("out");
    let r = Restorer::builtin().unwrap();
    let (jobs, _) = batch::plan_dir(&input, &out, OutputFormat::Png, None).unwrap();
    let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["a.png", "bad.png", "c.jpg", "d.png", "sub/b.png"]);
    assert!(jobs[2].output.ends_with("c.png"));
    let o = r.default_options().with_num_inference_steps(3).with_strength(0.5);
    let mut seen = 0;
    let rep = batch::restore_dir(&r, &jobs, &out, &o, &mut |_| {
        seen += 1;
        false
    })
    .unwrap();
    assert!(rep.stopped && rep.restored == 1 && seen == 1);
    // The output folder inside the input folder is not read back as input.
    let (jobs2, _) = batch::plan_dir(&input, &input.join("restored"), OutputFormat::Same, None).unwrap();
    let rep = batch::restore_dir(&r, &jobs2[..1], &input.join("restored"), &o, &mut |_| true).unwrap();
    assert_eq!(rep.restored, 1);
    assert_eq!(
        batch::plan_dir(&input, &input.join("restored"), OutputFormat::Same, None)
            .unwrap()
            .0
            .len(),
        5
    );
    // Same as a single restore of the image.
    let img = spire_core::io::load_image(input.join("a.png")).unwrap();
    let single = r.restore(&img.view(), &o).unwrap();
    let written = spire_core::io::load_image(input.join("restored/a.png")).unwrap();
    assert_eq!(single, written);
    let _ = ImageView::rgb8(1, 1, &[0, 0, 0]);

    // Prompt tables: errors name the file and line (and the clause of a bad prompt).
    let t = tmp.path().join("p.tsv");
    std::fs::write(&t, "a.png\tDenoise with sigma lots\n").unwrap();
    let e = PromptTable::read(&t).unwrap_err().to_string();
    assert!(e.contains("p.tsv line 1") && e.contains("lots"), "{e}");
    std::fs::write(&t, "a.png\t\tx\na.png\t\ty\n").unwrap();
    assert!(PromptTable::read(&t).unwrap_err().to_string().contains("line 2"));
    std::fs::write(&t, "a.png\tx\ty\tz\n").unwrap();
    assert!(PromptTable::read(&t)
        .unwrap_err()
        .to_string()
        .contains("4 columns"));
    std::fs::write(&t, "file\tprompt\n\nsub\\b.png\tUpsample with scale 2\n").unwrap();
    let table = PromptTable::read(&t).unwrap();
    assert_eq!(table.len(), 1);
    assert_eq!(
        table
            .get("sub/b.png")
            .unwrap()
            .restoration
            .as_ref()
            .unwrap()
            .to_string(),
        "Upsample with scale 2.0"
    );
}
