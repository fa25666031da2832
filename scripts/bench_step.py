#!/usr/bin/env python3
"""One denoising step at 512×512 with SD 2.1-base sized random weights: spire's Restorer
(adaptor + backbone, 1/2/3 guidance passes) against diffusers' StableDiffusionControlNetPipeline
(guidance 1: one UNet + one ControlNet pass; guidance 4: classifier-free guidance, both run on a
batch of 2). Each implementation in its own process; per-step time is the median interval
between step callbacks after the first step.

    venv/bin/python scripts/bench_step.py [--threads 2] [--steps 3]
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
sys.path.insert(0, str(ROOT / "scripts"))
from bench_models import SD21_UNET, SD_VAE  # noqa: E402


def torch_bench(threads: int, steps: int):
    import numpy as np
    import torch
    torch.set_num_threads(threads)
    from diffusers import (AutoencoderKL, ControlNetModel, DPMSolverMultistepScheduler,
                           StableDiffusionControlNetPipeline, UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    t0 = time.perf_counter()
    tok = CLIPTokenizer.from_pretrained(ROOT / "tests/fixtures/tiny-sd2/tokenizer")
    te = CLIPTextModel(CLIPTextConfig(vocab_size=1000, hidden_size=1024, intermediate_size=4096, num_hidden_layers=1,
                                      num_attention_heads=16, hidden_act="gelu", eos_token_id=tok.eos_token_id))
    unet = UNet2DConditionModel(**SD21_UNET)
    pipe = StableDiffusionControlNetPipeline(
        vae=AutoencoderKL(**SD_VAE), text_encoder=te, tokenizer=tok, unet=unet,
        controlnet=ControlNetModel.from_unet(unet),
        scheduler=DPMSolverMultistepScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    init = time.perf_counter() - t0
    image = (np.arange(512 * 512 * 3).reshape(512, 512, 3) * 31 % 251).astype(np.float32)[None] / 255.0
    for guidance, label in [(1.0, "no CFG (1 UNet + 1 ControlNet)"), (4.0, "CFG (batch 2)")]:
        stamps = []

        def cb(p, i, t, kw):
            stamps.append(time.perf_counter())
            return kw

        with torch.no_grad():
            pipe(prompt="a photo of a cat", negative_prompt="", image=image, height=512, width=512,
                 num_inference_steps=steps, guidance_scale=guidance, callback_on_step_end=cb,
                 output_type="latent", generator=torch.Generator().manual_seed(0))
        d = sorted(b - a for a, b in zip(stamps, stamps[1:]))
        print(json.dumps({"impl": "diffusers", "mode": label, "guidance": guidance, "step_s": round(d[len(d) // 2], 3),
                          "steps_timed": len(d), "init_s": round(init, 1),
                          "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                          "torch": torch.__version__}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--torch", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.torch:
        torch_bench(a.threads, a.steps)
        return
    subprocess.run(["cargo", "build", "--release", "--example", "bench_step"], cwd=ROOT, check=True)
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    spire = subprocess.run([str(ROOT / "target/release/examples/bench_step"), "--steps", str(a.steps)], cwd=ROOT,
                           env=env, check=True, capture_output=True, text=True).stdout
    torch_out = subprocess.run([sys.executable, __file__, "--torch", "--threads", str(a.threads), "--steps", str(a.steps)],
                               cwd=ROOT, check=True, capture_output=True, text=True).stdout
    s = [json.loads(l) for l in spire.splitlines() if l.startswith("{")]
    t = [json.loads(l) for l in torch_out.splitlines() if l.startswith("{")]
    for r in s + t:
        print(json.dumps(r))
    base1, base_cfg = t[0]["step_s"], t[1]["step_s"]
    print("\n| spire passes | adaptor runs × batch | UNet batch | spire s/step | vs diffusers no-CFG step | vs diffusers CFG step |")
    print("|---|---|---|---|---|---|")
    desc = {1: ("1 × 1", 1), 2: ("1 × 1", 2), 3: ("2 × 1", 3)}
    for r in s:
        a_, u = desc[r["passes"]]
        print(f"| {r['passes']} | {a_} | {u} | {r['step_s']:.2f} | {r['step_s'] / base1:.2f}× | {r['step_s'] / base_cfg:.2f}× |")
    print(f"\ndiffusers: {base1:.2f} s/step without CFG, {base_cfg:.2f} s/step with CFG; "
          f"peak RSS spire {s[-1]['peak_rss_mib']:.0f} MiB, diffusers {t[-1]['peak_rss_mib']} MiB; {a.threads} threads")


if __name__ == "__main__":
    main()
