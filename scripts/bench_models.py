#!/usr/bin/env python3
"""The model benchmark: spire (candle) against diffusers/PyTorch on the same shapes.

    venv/bin/python scripts/bench_models.py [--runs 3] [--threads 2] [--models unet,vae]

Each measurement runs in its own process (so peak RSS is per implementation and model):
`cargo run --release --example bench_models -- <model>` for spire, and this script with
`--torch <model>` for PyTorch (torch.set_num_threads(threads), no_grad, default init).
Prints a Markdown table with seconds, peak RSS and the spire/PyTorch ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SD21_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    block_out_channels=[320, 640, 1280, 1280], layers_per_block=2, cross_attention_dim=1024,
    attention_head_dim=[5, 10, 20, 20], use_linear_projection=True, norm_num_groups=32,
)
SD_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4,
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512], layers_per_block=2, norm_num_groups=32, sample_size=512,
)


def torch_bench(model: str, runs: int, threads: int):
    import torch
    torch.set_num_threads(threads)
    from diffusers import AutoencoderKL, UNet2DConditionModel
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        if model == "unet":
            m = UNet2DConditionModel(**SD21_UNET).eval()
            x = torch.randn(1, 4, 64, 64, generator=g)
            ctx = torch.randn(1, 77, 1024, generator=g)
            t = torch.tensor([500.0])
            f = lambda: m(x, t, encoder_hidden_states=ctx).sample
            name = "unet-sd21-base-64x64"
        else:
            m = AutoencoderKL(**SD_VAE).eval()
            z = torch.randn(1, 4, 64, 64, generator=g)
            f = lambda: m.decode(z).sample
            name = "vae-decoder-512x512"
        init = time.perf_counter() - t0
        f()
        secs = []
        for _ in range(runs):
            t = time.perf_counter()
            f().sum().item()
            secs.append(time.perf_counter() - t)
    secs.sort()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"impl": "pytorch", "model": name, "runs": runs, "min_s": round(secs[0], 3),
                      "median_s": round(secs[len(secs) // 2], 3), "init_s": round(init, 2),
                      "peak_rss_mib": round(rss), "threads": threads,
                      "torch": torch.__version__}))


def run_json(cmd, env=None) -> dict:
    out = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads([l for l in out.splitlines() if l.startswith("{")][-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="unet,vae")
    ap.add_argument("--simd", default="",
                    help="SPIRE_SIMD levels to run spire at, e.g. avx512,avx2 (default: the CPU's best); "
                         "they cap the fused kernels only, the GEMMs keep their own dispatch")
    ap.add_argument("--torch", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.torch:
        torch_bench(a.torch, a.runs, a.threads)
        return
    subprocess.run(["cargo", "build", "--release", "--example", "bench_models"], cwd=ROOT, check=True)
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    rows = []
    levels = [l for l in a.simd.split(",") if l] or [""]
    for model in a.models.split(","):
        p = run_json([sys.executable, __file__, "--torch", model, "--runs", str(a.runs), "--threads", str(a.threads)])
        print(json.dumps(p))
        for level in levels:
            e = dict(env, SPIRE_SIMD=level) if level else env
            s = run_json([str(ROOT / "target/release/examples/bench_models"), model, "--runs", str(a.runs)], e)
            rows.append((s, p))
            print(json.dumps(s))
    print()
    print(f"| model | spire kernels | spire s | PyTorch s | time ratio | spire peak RSS MiB | PyTorch peak RSS MiB | RSS ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for s, p in rows:
        print(f"| {s['model']} | {s.get('simd', '?')} | {s['median_s']:.2f} | {p['median_s']:.2f} | {s['median_s'] / p['median_s']:.2f}× "
              f"| {s['peak_rss_mib']:.0f} | {p['peak_rss_mib']:.0f} | {s['peak_rss_mib'] / p['peak_rss_mib']:.2f}× |")
    print(f"\n{a.threads} threads, median of {a.runs} runs after one warm-up; torch {rows[0][1].get('torch')}")


if __name__ == "__main__":
    main()
