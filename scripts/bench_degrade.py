#!/usr/bin/env python3
"""Degrading a 512×512 image: spire's pipelines against the same steps with the usual Python
tools (OpenCV blur/filter/resize/JPEG, PIL bicubic, numpy noise, basicsr's kernel and noise
functions). Median over seeds; spire in its own process.

    venv/bin/python scripts/bench_degrade.py [--runs 10] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))


def python_pipelines(runs: int, threads: int):
    import cv2
    from PIL import Image
    cv2.setNumThreads(threads)
    from make_fixtures import _load_basicsr
    deg = _load_basicsr("data/degradations.py")
    usm_sharp = _load_basicsr("utils/img_process_util.py").usm_sharp
    i = np.arange(512 * 512 * 3)
    img = ((i * 7919 % 1000) / 1000.0 * 0.5 + (i // 3 % 512) / 1024.0).astype(np.float32).reshape(512, 512, 3)

    def pil_resize(a, w, h):
        chans = [np.asarray(Image.fromarray(a[:, :, c], mode="F").resize((w, h), Image.BICUBIC)) for c in range(3)]
        return np.stack(chans, axis=2)

    def param(seed):
        rng = np.random.default_rng(seed)
        s = 3.0
        k = 2 * math.ceil(3 * s) + 1
        y = cv2.GaussianBlur(img, (k, k), s, borderType=cv2.BORDER_REFLECT_101)
        y = pil_resize(y, 205, 205)
        y = np.clip(y + rng.standard_normal(y.shape).astype(np.float32) * 0.1, 0, 1)
        _, enc = cv2.imencode(".jpg", (y * 255).round().astype(np.uint8), [int(cv2.IMWRITE_JPEG_QUALITY), 40])
        y = cv2.imdecode(enc, 1).astype(np.float32) / 255.0
        return np.clip(pil_resize(y, 512, 512), 0, 1)

    kinds = ['iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso', 'plateau_aniso']
    probs = [0.45, 0.25, 0.12, 0.03, 0.12, 0.03]

    def kernel(sigma, sinc_p):
        ks = random.choice([2 * v + 1 for v in range(3, 11)])
        if np.random.uniform() < sinc_p:
            return deg.circular_lowpass_kernel(np.random.uniform(np.pi / 5, np.pi), ks, pad_to=21)
        kern = deg.random_mixed_kernels(kinds, probs, ks, sigma, sigma, [-math.pi, math.pi], [0.5, 4], [1, 2])
        p = (21 - ks) // 2
        return np.pad(kern, ((p, p), (p, p)))

    def noise(y, sig, ps):
        if np.random.uniform() < 0.5:
            return deg.random_add_gaussian_noise(y, sigma_range=sig, clip=True, rounds=False, gray_prob=0.4)
        return deg.random_add_poisson_noise(y, scale_range=ps, gray_prob=0.4, clip=True, rounds=False)

    modes = [cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC]

    def realesrgan(seed):
        np.random.seed(seed); random.seed(seed)
        k1, k2 = kernel([0.2, 3], 0.1), kernel([0.2, 1.5], 0.1)
        sinc = deg.circular_lowpass_kernel(np.random.uniform(np.pi / 3, np.pi), 13, pad_to=21)
        y = cv2.filter2D(usm_sharp(img.copy()), -1, k1)
        s = np.random.uniform(0.15, 1.5)
        y = cv2.resize(y, (int(512 * s), int(512 * s)), interpolation=random.choice(modes))
        y = noise(y, [1, 30], [0.05, 3])
        y = deg.add_jpg_compression(y, int(np.random.uniform(30, 95)))
        if np.random.uniform() < 0.8:
            y = cv2.filter2D(y, -1, k2)
        s = np.random.uniform(0.3, 1.2)
        y = cv2.resize(y, (int(128 * s), int(128 * s)), interpolation=random.choice(modes))
        y = noise(y, [1, 25], [0.05, 2.5])
        y = cv2.filter2D(cv2.resize(y, (128, 128), interpolation=random.choice(modes)), -1, sinc)
        y = deg.add_jpg_compression(y, int(np.random.uniform(30, 95)))
        y = np.clip((y * 255.0).round(), 0, 255) / 255.0
        return pil_resize(y.astype(np.float32), 512, 512)

    for name, f in [("parameterized", param), ("realesrgan", realesrgan)]:
        f(0)
        t = []
        for s in range(1, runs + 1):
            t0 = time.perf_counter(); f(s); t.append(time.perf_counter() - t0)
        t.sort()
        print(json.dumps({"impl": "python", "pipeline": name, "median_s": round(t[len(t) // 2], 4), "runs": runs}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--python", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.python:
        python_pipelines(a.runs, a.threads)
        return
    subprocess.run(["cargo", "build", "--release", "--example", "bench_degrade"], cwd=ROOT, check=True)
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    s = subprocess.run([str(ROOT / "target/release/examples/bench_degrade"), str(a.runs)], env=env, check=True,
                       capture_output=True, text=True).stdout
    p = subprocess.run([sys.executable, __file__, "--python", "--runs", str(a.runs), "--threads", str(a.threads)],
                       check=True, capture_output=True, text=True).stdout
    sr = {j["pipeline"]: j for j in map(json.loads, filter(None, s.splitlines()))}
    pr = {j["pipeline"]: j for j in map(json.loads, filter(None, p.splitlines()))}
    print("| pipeline (512×512) | spire s | Python (OpenCV/PIL/numpy/basicsr) s | ratio |")
    print("|---|---|---|---|")
    for k in ["parameterized", "realesrgan"]:
        print(f"| {k} | {sr[k]['median_s']:.3f} | {pr[k]['median_s']:.3f} | {sr[k]['median_s'] / pr[k]['median_s']:.2f}× |")
    print(f"\n{a.threads} threads, median of {a.runs} seeds")


if __name__ == "__main__":
    main()
