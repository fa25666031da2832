#!/usr/bin/env python3
"""Throughput of folder runs (a benchmark, not a test): images/s restoring N degraded 256²
crops with the built-in model, per-image prompts from a prompts.tsv, in the same sitting:

  cli     `spire restore-dir IN OUT --prompts prompts.tsv` (one process, all threads)
  python  a loop of `Restorer.restore` + `spire.write_image` in this process
  ray-1   `spire.ray.restore_dataset(..., concurrency=1, num_cpus=T)` on a local Ray cluster
  ray-2   the same with 2 actors of T/2 CPUs each

Each wall time includes what a user waits for: process start and model load for the CLI,
actor start and model load for Ray (`ray.init` is timed separately: a cluster runs many jobs).
The outputs of every route are compared with the CLI's, pixel for pixel.

    python scripts/bench_batch.py [--images 48] [--size 256] [--threads 2] [--photos DIR]

Needs the spire wheel and `ray[data]` in the interpreter running it, and a release build of the
CLI (`cargo build --release -p spire-core --bin spire`).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    model = next((l.split(":", 1)[1].strip() for l in text.splitlines() if l.startswith("model name")), "?")
    flags = next((l.split(":", 1)[1].split() for l in text.splitlines() if l.startswith("flags")), [])
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{model} ({isa})"


def make_inputs(spire, src: Path, n: int, size: int, photos: Path) -> None:
    """N crops of the photos, each degraded by the training pipeline with its own seed; the
    true prompt (minus the upsampling clause: the crop keeps its size) goes to prompts.tsv."""
    files = sorted(p for p in photos.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    rng = np.random.default_rng(0)
    rows = ["file\tprompt\tcaption"]
    for i in range(n):
        img = spire.read_image(files[i % len(files)])[..., :3]
        h, w = img.shape[:2]
        if h < size or w < size:
            continue
        y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        crop = np.ascontiguousarray(img[y : y + size, x : x + size])
        if i // len(files) % 2:
            crop = np.ascontiguousarray(crop[:, ::-1])
        degraded, prompt = spire.degrade(crop, seed=i)
        clauses = [c for c in str(prompt).split("; ") if not c.startswith("Upsample")]
        name = f"{i // 16:02d}/img{i:04d}.png"
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        spire.write_image(src / name, degraded)
        rows.append(f"{name}\t{'; '.join(clauses) or 'Remove all degradation'}\t")
    (src.parent / "prompts.tsv").write_text("\n".join(rows) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--photos", type=Path, default=ROOT / "tests/fixtures/photos")
    ap.add_argument("--cli", type=Path, default=ROOT / "target/release/spire")
    ap.add_argument("--json", type=Path, help="also write the results here")
    a = ap.parse_args()
    os.environ["RAYON_NUM_THREADS"] = str(a.threads)

    import spire

    work = Path(tempfile.mkdtemp(prefix="spire-bench-batch-"))
    src = work / "in"
    src.mkdir()
    make_inputs(spire, src, a.images, a.size, a.photos)
    names = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.png"))
    n = len(names)
    table = work / "prompts.tsv"
    results = {}

    def record(route: str, seconds: float, out: Path, note: str = "") -> None:
        results[route] = {"seconds": round(seconds, 2), "images_per_sec": round(n / seconds, 3), "note": note}
        print(f"{route:8s} {seconds:7.2f} s  {n / seconds:6.3f} images/s  {note}", flush=True)

    # CLI folder run (the baseline).
    t = time.perf_counter()
    subprocess.run([str(a.cli), "restore-dir", str(src), str(work / "cli"), "--prompts", str(table)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    record("cli", time.perf_counter() - t, work / "cli", f"{a.threads} threads, one process")

    # Python loop in this process.
    from spire.ray import read_prompts

    prompts = read_prompts(table)
    t = time.perf_counter()
    r = spire.Restorer.builtin()
    for name in names:
        out = work / "python" / name
        out.parent.mkdir(parents=True, exist_ok=True)
        rp, _ = prompts[name]
        spire.write_image(out, r.restore(spire.read_image(src / name), restoration_prompt=rp))
    record("python", time.perf_counter() - t, work / "python", "Restorer.restore loop")

    import ray

    import spire.ray as sr

    t = time.perf_counter()
    ray.init(num_cpus=a.threads, include_dashboard=False, log_to_driver=False, configure_logging=False)
    init_s = time.perf_counter() - t
    print(f"ray.init {init_s:.2f} s", flush=True)
    routes = [("ray-1", 1, a.threads)]
    if a.threads >= 2:
        routes.append(("ray-2", 2, a.threads // 2))
    for route, actors, cpus in routes:
        t = time.perf_counter()
        rep = sr.restore_dataset(src, restorer=spire.Restorer.builtin(), out=work / route, prompts=table,
                                 concurrency=actors, num_cpus=cpus)
        assert rep["restored"] == n and not rep["failed"], rep
        record(route, time.perf_counter() - t, work / route, f"{actors} actor(s) × {cpus} CPU(s)")
    ray.shutdown()

    # Every route restored the same pixels as the CLI.
    for route in results:
        if route == "cli":
            continue
        same = all(np.array_equal(spire.read_image(work / route / m), spire.read_image(work / "cli" / m)) for m in names)
        results[route]["equal_to_cli"] = same
        if not same:
            print(f"warning: {route} outputs differ from the CLI's", file=sys.stderr)
    base = results["cli"]["seconds"]
    for route, v in results.items():
        v["time_vs_cli"] = round(v["seconds"] / base, 3)
    meta = {"cpu": cpu_flags(), "threads": a.threads, "images": n, "size": a.size, "ray_init_s": round(init_s, 2),
            "ray": ray.__version__, "spire": spire.__version__, "python": platform.python_version()}
    print()
    print(f"{n} images of {a.size}², built-in model, {a.threads} threads, {meta['cpu']}")
    print("| route | wall (s) | images/s | time vs CLI | outputs equal CLI's |")
    print("|---|---:|---:|---:|---|")
    for route, v in results.items():
        eq = "—" if route == "cli" else ("yes" if v.get("equal_to_cli") else "NO")
        print(f"| {route} ({v['note']}) | {v['seconds']:.2f} | {v['images_per_sec']:.3f} | {v['time_vs_cli']:.2f}× | {eq} |")
    if a.json:
        a.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
