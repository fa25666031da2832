#!/usr/bin/env python3
"""PyTorch exploration of the spire-tiny backbone (about 7x faster than our trainer on this CPU).

Trains the UNet of recipes/spire-tiny/backbone.json (diffusers UNet2DConditionModel) from scratch
on the training photos with an empty caption, and every 1000 steps prints the x0 PSNR on four
held-out 64x64 crops at t = 999 / 200 / 10 (fixed noise). A backbone whose x0 PSNR at t = 10 is
below the noisy input's (25.9 dB) cannot pass detail through, whatever the adaptor learns.
Used for the measurements in docs/builtin-model.md; not part of the recipe.

    python scripts/explore/tiny_backbone.py OUT PRED STEPS [BLOCK_OUT_CHANNELS] [LR]
    # e.g. /tmp/bb sample 3001 '[48,64,80]' 5e-4

Variants (environment): FACTOR pixel-shuffle factor (default 4); NGROUPS GroupNorm groups;
TMAX train only on timesteps below it (default 1000); SCALE latent scaling factor (default 1); LOWFRAC draw that fraction of the samples
below LOWT (default 100) instead; BATCH batch size (default 8); LRSCHED `const` (default) or
`cosine` (diffusers' cosine decay to 0 after WARMUP steps, default 0); EVALCROPS crops per
held-out photo in the x0 probe (default 1: the 4 crops of the documented numbers; 4 adds three
more places per photo). OUT gets unet/, scheduler/, text_encoder/ and the
restoration_text_encoder/ config of adaptor.json: a backbone folder for tiny_adaptor.py.
Needs torch, diffusers, transformers, opencv-python, pillow.
"""
import glob
import json
import os
import random
import sys
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = ROOT + "/recipes/spire-tiny"
PHOTOS = os.environ.get("SPIRE_PHOTOS", ROOT + "/../shared/data/photos")
HELD_OUT = ["astronaut", "chelsea", "coffee", "motorcycle_left"]

out, pred, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
lr = float(sys.argv[5]) if len(sys.argv) > 5 else 5e-4
factor = int(os.environ.get("FACTOR", "4"))
tmax = int(os.environ.get("TMAX", "1000"))
scale = float(os.environ.get("SCALE", "1"))
torch.set_num_threads(1)
DEV = os.environ.get("DEVICE", "cpu")  # e.g. cuda
torch.manual_seed(0)
random.seed(0)

recipe = json.load(open(RECIPE + "/backbone.json"))
cfg = dict(recipe["unet"])
if len(sys.argv) > 4:
    cfg["block_out_channels"] = json.loads(sys.argv[4])
cfg["in_channels"] = cfg["out_channels"] = 3 * factor * factor
if "NGROUPS" in os.environ:
    cfg["norm_num_groups"] = int(os.environ["NGROUPS"])
unet = UNet2DConditionModel.from_config(cfg)
print("variant: factor", factor, "groups", unet.config.norm_num_groups, "channels", cfg["block_out_channels"],
      "params", sum(p.numel() for p in unet.parameters()))
sched = DDPMScheduler.from_config({**recipe["scheduler"], "prediction_type": pred})
text = CLIPTextModel(CLIPTextConfig(**recipe["text_encoder"])).eval().to(DEV)
unet.to(DEV)
tok = CLIPTokenizer.from_pretrained(RECIPE + "/tokenizer")
with torch.no_grad():
    ctx = text(tok([""], padding="max_length", max_length=77, return_tensors="pt").input_ids.to(DEV)).last_hidden_state

load = lambda f: np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255
files = sorted(glob.glob(PHOTOS + "/*.png")) + sorted(glob.glob(PHOTOS + "/*.jpg"))
train = [load(f) for f in files if not any(h in f for h in HELD_OUT)]
held = [load(f) for f in files if any(h in f for h in HELD_OUT)]


def crop():
    """A 64x64 crop covering 64-160 px of a training photo, in [-1, 1]."""
    r = int(round(64 * random.uniform(1.0, 2.5)))
    im = random.choice(train)
    y, x = random.randint(0, im.shape[0] - r), random.randint(0, im.shape[1] - r)
    return cv2.resize(np.ascontiguousarray(im[y:y + r, x:x + r]), (64, 64), interpolation=cv2.INTER_AREA) * 2 - 1


def to_x0(p, xt, t):
    ac = sched.alphas_cumprod[t]
    if pred == "sample":
        return p
    if pred == "epsilon":
        return (xt - (1 - ac).sqrt() * p) / ac.sqrt()
    return ac.sqrt() * xt - (1 - ac).sqrt() * p


places = [(100, 100), (40, 200), (200, 40), (160, 160)][: int(os.environ.get("EVALCROPS", "1"))]
xv = F.pixel_unshuffle(torch.stack([torch.from_numpy(im[y:y + 64, x:x + 64] * 2 - 1).permute(2, 0, 1)
                                    for (y, x) in places for im in held]), factor).to(DEV) * scale
nv = torch.randn(xv.shape, generator=torch.Generator().manual_seed(0)).to(DEV)
opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.01)
B = int(os.environ.get("BATCH", "8"))
warm = int(os.environ.get("WARMUP", "0"))
if os.environ.get("LRSCHED", "const") == "cosine":
    from diffusers.optimization import get_cosine_schedule_with_warmup
    lrs = get_cosine_schedule_with_warmup(opt, warm, steps)
else:
    lrs = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / warm) if warm else 1.0)
start = time.time()
for step in range(steps):
    x0 = F.pixel_unshuffle(torch.from_numpy(np.stack([crop() for _ in range(B)])).permute(0, 3, 1, 2), factor).to(DEV) * scale
    noise = torch.randn_like(x0)
    t = torch.randint(0, tmax, (B,))
    if "LOWFRAC" in os.environ:
        low = torch.rand(B) < float(os.environ["LOWFRAC"])
        t = torch.where(low, torch.randint(0, int(os.environ.get("LOWT", "100")), (B,)), t)
    t = t.to(DEV)
    xt = sched.add_noise(x0, noise, t)
    target = {"sample": x0, "epsilon": noise}.get(pred)
    if target is None:
        target = sched.get_velocity(x0, noise, t)
    loss = ((unet(xt, t, encoder_hidden_states=ctx.expand(B, -1, -1)).sample - target) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    lrs.step()
    if step % 1000 == 0 or step == steps - 1:
        unet.eval()
        res = []
        with torch.no_grad():
            for tt in [999, 200, 10]:
                t = torch.full((len(xv),), tt, device=DEV)
                xt = sched.add_noise(xv, nv, t)
                x0 = to_x0(unet(xt, t, encoder_hidden_states=ctx.expand(len(xv), -1, -1)).sample, xt, tt)
                res.append(round(float(10 * np.log10(4 * scale**2 / ((x0 - xv) ** 2).mean().item())), 2))
        unet.train()
        print(step, round(loss.item(), 4), round(time.time() - start), "psnr t999/200/10", res, flush=True)

unet.save_pretrained(out + "/unet")
sched.save_pretrained(out + "/scheduler")
text.save_pretrained(out + "/text_encoder")
CLIPTextConfig(**json.load(open(RECIPE + "/adaptor.json"))["restoration_text_encoder"]).save_pretrained(
    out + "/restoration_text_encoder")
json.dump({"scaling_factor": scale, "tmax": tmax}, open(out + "/explore.json", "w"))
