#!/usr/bin/env python3
"""x0 PSNR of a backbone at fixed timesteps: can it pass detail through?

Loads MODEL_DIR (a diffusers-layout folder with unet/, scheduler/, text_encoder/ — what our
trainer writes, e.g. target/spire-tiny, or tiny_backbone.py's output), noises four held-out
64x64 crops (fixed noise) to t, and prints the PSNR of the predicted x0 against the clean crops,
next to the PSNR of the noisy input itself where it is defined. Used for the "why" of
docs/builtin-model.md.

    python scripts/explore/probe_backbone.py MODEL_DIR
Needs torch, diffusers, transformers, pillow.
"""
import glob
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel
from PIL import Image
from transformers import CLIPTextModel, CLIPTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HELD_OUT = ["astronaut", "chelsea", "coffee", "motorcycle_left"]
torch.set_num_threads(1)
model = sys.argv[1]
unet = UNet2DConditionModel.from_pretrained(model + "/unet").eval()
sched = DDPMScheduler.from_pretrained(model + "/scheduler")
text = CLIPTextModel.from_pretrained(model + "/text_encoder").eval()
tok = CLIPTokenizer.from_pretrained(ROOT + "/recipes/spire-tiny/tokenizer")
factor = int(round((unet.config.in_channels / 3) ** 0.5))
files = sorted(glob.glob(ROOT + "/../shared/data/photos/*"))
ims = [np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255 for f in files if any(h in f for h in HELD_OUT)]
x = F.pixel_unshuffle(torch.stack([torch.from_numpy(im[100:164, 100:164] * 2 - 1).permute(2, 0, 1) for im in ims]), factor)
noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
pred = sched.config.prediction_type
psnr = lambda mse: 10 * np.log10(4 / mse)  # images in [-1, 1]
with torch.no_grad():
    ctx = text(tok([""] * len(x), padding="max_length", max_length=77, return_tensors="pt").input_ids).last_hidden_state
    for tt in [999, 800, 600, 400, 200, 100, 50, 10]:
        t = torch.full((len(x),), tt)
        xt = sched.add_noise(x, noise, t)
        p = unet(xt, t, encoder_hidden_states=ctx).sample
        ac = sched.alphas_cumprod[tt]
        a, s = ac.sqrt(), (1 - ac).sqrt()
        x0 = p if pred == "sample" else (a * xt - s * p if pred == "v_prediction" else (xt - s * p) / a)
        noisy = f"{psnr(float(((xt / a - x) ** 2).mean())):.2f}" if a > 1e-3 else "-"
        print(f"t {tt:3d}  x0 PSNR {psnr(float(((x0 - x) ** 2).mean())):.2f} dB  noisy input {noisy} dB")
