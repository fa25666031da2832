#!/usr/bin/env python3
"""Metric time per 512×512 image pair: spire-core vs the Python references, same machine, same
thread count, each in its own process, random weights of the real sizes.

    venv/bin/python scripts/bench_metrics.py --runs 5 --threads 2

References: scikit-image (PSNR, SSIM with Gaussian weights), the lpips package (AlexNet, VGG),
transformers CLIPVisionModelWithProjection ViT-L/14 with CLIPImageProcessorPil, pytorch-fid's
InceptionV3 (with its 299×299 resize). Needs torch, transformers, lpips, pytorch-fid,
scikit-image, pillow.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(runs, f):
    f()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def python_side(runs: int, threads: int):
    import numpy as np
    import torch
    torch.set_num_threads(threads)
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    n = 512
    a = (np.arange(n * n * 3) * 37 % 251).astype(np.uint8).reshape(n, n, 3)
    b = (a.astype(np.int64) + np.arange(n * n * 3).reshape(n, n, 3) % 7).astype(np.uint8)
    out = {}
    out["psnr"] = timed(runs, lambda: peak_signal_noise_ratio(a, b, data_range=255))
    out["ssim"] = timed(runs, lambda: structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                                                            use_sample_covariance=False, channel_axis=-1,
                                                            data_range=255))
    import lpips
    ta = torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255
    tb = torch.from_numpy(b).permute(2, 0, 1)[None].float() / 255
    for net in ["alex", "vgg"]:
        m = lpips.LPIPS(net=net, pnet_rand=True, verbose=False).eval()
        with torch.no_grad():
            out[f"lpips_{net}"] = timed(runs, lambda: m(ta, tb, normalize=True))
    import torchvision
    import pytorch_fid.inception as pi
    orig_load, orig_url = torchvision.models.Inception3.load_state_dict, pi.load_state_dict_from_url
    torchvision.models.Inception3.load_state_dict = lambda self, sd, *x, **k: None if sd == "r" else orig_load(self, sd, *x, **k)
    pi.load_state_dict_from_url = lambda *x, **k: "r"
    inc = pi.InceptionV3([3]).eval()
    torchvision.models.Inception3.load_state_dict, pi.load_state_dict_from_url = orig_load, orig_url
    with torch.no_grad():
        out["fid_features"] = timed(runs, lambda: inc(ta))
    from PIL import Image
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    cfg = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                           image_size=224, patch_size=14, projection_dim=768)
    clip = CLIPVisionModelWithProjection(cfg).eval()
    proc = CLIPImageProcessorPil()
    img = Image.fromarray(a)

    def clip_embed():
        px = proc(images=[img], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            clip(pixel_values=px)

    out["clip_image_embedding"] = timed(runs, clip_embed)
    for k, v in out.items():
        print(json.dumps({"impl": "python", "metric": k, "seconds": round(v, 4)}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--python-only", action="store_true")
    a = ap.parse_args()
    if a.python_only:
        python_side(a.runs, a.threads)
        return
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads), OMP_NUM_THREADS=str(a.threads))
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "spire-core", "--example", "bench_metrics"],
                   cwd=ROOT, check=True)
    rust = subprocess.run([str(ROOT / "target/release/examples/bench_metrics"), "--runs", str(a.runs)],
                          cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    py = subprocess.run([sys.executable, __file__, "--python-only", "--runs", str(a.runs), "--threads",
                         str(a.threads)], env=env, check=True, capture_output=True, text=True).stdout
    rows = {}
    for line in (rust + py).splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            rows.setdefault(r["metric"], {})[r["impl"]] = r["seconds"]
    print("| metric (512×512 pair) | spire s | Python reference s | time ratio |")
    print("|---|---|---|---|")
    for k, v in rows.items():
        s, p = v.get("spire"), v.get("python")
        print(f"| {k} | {s:.4f} | {p:.4f} | {s / p:.2f}× |")


if __name__ == "__main__":
    main()
