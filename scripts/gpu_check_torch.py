#!/usr/bin/env python3
"""The PyTorch/diffusers half of scripts/gpu_check.sh: the same two benchmarks as
`gpu_check bench` (spire-core/examples/gpu_check.rs), eager mode, on the same device and dtype,
one JSON line each.

    python scripts/gpu_check_torch.py --what unet|restore --device cuda --dtype f16 [--runs 5]
                                      [--size 512] [--steps 20]

unet: SD 2.1-base UNet forward, 1x4x64x64, context 1x77x1024.
restore: StableDiffusionControlNetPipeline (SD 2.1-base UNet, ControlNetModel.from_unet, SD VAE,
a 23-layer 1024-wide CLIP text encoder, DPMSolverMultistepScheduler), guidance 1, `size`^2,
`steps` steps, decoded to an image; the VAE in f32 when the pipeline is f16 (diffusers'
force_upcast), as spire does. Random weights on both sides.
Peak memory: on CUDA the peak of (total - free) sampled every 5 ms minus the value before the
model was built (the method spire's side uses); on the CPU the process's peak RSS.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from bench_models import SD21_UNET, SD_VAE  # noqa: E402  (the shapes spire's side uses too)


class PeakMemory:
    def __init__(self, device):
        import torch
        self.torch, self.device, self.cuda = torch, device, device.type == "cuda"

    def __enter__(self):
        if self.cuda:
            self.before = self.torch.cuda.mem_get_info(self.device)[0]
            self.low, self.done = self.before, False

            def sample():
                while not self.done:
                    self.low = min(self.low, self.torch.cuda.mem_get_info(self.device)[0])
                    time.sleep(0.005)

            self.thread = threading.Thread(target=sample, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.done = True
            self.thread.join()
            self.mib = (self.before - self.low) / 2**20
        else:
            self.mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--what", choices=["unet", "restore"], default="unet")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="f16")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    import numpy as np
    import torch
    if a.threads:
        torch.set_num_threads(a.threads)
    from diffusers import (AutoencoderKL, ControlNetModel, DPMSolverMultistepScheduler,
                           StableDiffusionControlNetPipeline, UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    dtype = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}[a.dtype]
    dev = torch.device("cuda:0" if a.device.startswith("cuda") and ":" not in a.device else a.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad(), PeakMemory(dev) as mem:
        t0 = time.perf_counter()
        if a.what == "unet":
            m = UNet2DConditionModel(**SD21_UNET).to(dev, dtype).eval()
            x = torch.randn(1, 4, 64, 64, generator=g).to(dev, dtype)
            ctx = torch.randn(1, 77, 1024, generator=g).to(dev, dtype)
            t = torch.tensor([500.0], device=dev)
            sync()
            init = time.perf_counter() - t0

            def run():
                s = time.perf_counter()
                m(x, t, encoder_hidden_states=ctx).sample.float().sum().item()
                return time.perf_counter() - s

            name, runs = "unet-sd21-base-64x64", a.runs
        else:
            tok = CLIPTokenizer.from_pretrained(ROOT / "tests/fixtures/tiny-sd2/tokenizer")
            te = CLIPTextModel(CLIPTextConfig(vocab_size=1000, hidden_size=1024, intermediate_size=4096,
                                              num_hidden_layers=23, num_attention_heads=16, hidden_act="gelu",
                                              eos_token_id=tok.eos_token_id))
            unet = UNet2DConditionModel(**SD21_UNET)
            pipe = StableDiffusionControlNetPipeline(
                vae=AutoencoderKL(**SD_VAE), text_encoder=te, tokenizer=tok, unet=unet,
                controlnet=ControlNetModel.from_unet(unet),
                scheduler=DPMSolverMultistepScheduler(beta_start=0.00085, beta_end=0.012,
                                                      beta_schedule="scaled_linear"),
                safety_checker=None, feature_extractor=None, requires_safety_checker=False)
            pipe.to(dev, dtype)
            if dtype == torch.float16:
                pipe.vae.to(torch.float32)  # force_upcast, as the pipeline does for decoding
            pipe.set_progress_bar_config(disable=True)
            sync()
            init = time.perf_counter() - t0
            image = (np.arange(a.size * a.size * 3).reshape(a.size, a.size, 3) * 31 % 251).astype(np.float32)[None] / 255.0

            def run():
                s = time.perf_counter()
                pipe(prompt="a photo of a cat", image=image, height=a.size, width=a.size,
                     num_inference_steps=a.steps, guidance_scale=1.0, output_type="np",
                     generator=torch.Generator().manual_seed(0))
                sync()
                return time.perf_counter() - s

            name, runs = f"restore-{a.size}px-{a.steps}-dpm++", max(1, min(a.runs, 3))
        run()  # warm-up
        secs = sorted(run() for _ in range(runs))
    print(json.dumps({"impl": "pytorch", "bench": name, "device": str(dev), "dtype": a.dtype,
                      "median_s": round(secs[len(secs) // 2], 4), "min_s": round(secs[0], 4), "runs": runs,
                      "init_s": round(init, 1), "peak_mem_mib": round(mem.mib), "threads": torch.get_num_threads(),
                      "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
