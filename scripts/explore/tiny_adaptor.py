#!/usr/bin/env python3
"""PyTorch exploration of spire-tiny adaptor training (about 7x faster than our trainer here).

The SPIRE adaptor as our trainer builds it — diffusers ControlNetModel body copied from the
frozen backbone, latent (pixel-shuffle) hint through a 3x3 conv added after conv_in, modulation
fusion f*(1+gamma)+beta at every skip and the mid block, its own restoration-prompt CLIP encoder,
prompt dropout 0.2 — trained on pairs from an OpenCV/PIL transcription of the parameterized
degradation. Every 500 steps it prints, on 40 held-out 64x64 crops, the PSNR of the degraded
input, of one step from pure noise (t = 999) blind and with the true prompt, and of a 10-step
DDIM from pure noise, and a prompt-space walk of the network alone: 16 held-out crops blurred
(sigma 2) and noised (0.12), restored in one step with "Deblur with sigma s", s = 1..4, with the
gradient gain of each (the slope of the output's luma gradients on the clean crop's).
Used for the measurements in docs/builtin-model.md; not part of the recipe.

    python scripts/explore/tiny_adaptor.py --model BACKBONE_DIR [--steps N] [--lr LR] [--hint_init zero|default]
        [--temb 0|1|2|3]   prompt embedding into the adaptor's time embedding (diffusers class_embed_type
                           "projection"): 1 the pooled output (as spire-core), 2 the token mean, 3 the last token
        [--deg_p P]        noise that fraction of the samples from the degraded latent (degraded_start)

BACKBONE_DIR: a folder with unet/, scheduler/, text_encoder/, restoration_text_encoder/ (e.g. one
written by tiny_backbone.py). Needs torch, diffusers, transformers, opencv-python, pillow.
"""
import torch, glob, random, numpy as np, sys, time, io, json, argparse, copy
import torch.nn as nn, torch.nn.functional as F
from PIL import Image
import cv2
from diffusers import UNet2DConditionModel, DDPMScheduler, ControlNetModel
from transformers import CLIPTextModel, CLIPTextConfig, CLIPTokenizer

ap = argparse.ArgumentParser()
import os
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PHOTOS = os.environ.get('SPIRE_PHOTOS', ROOT + '/../shared/data/photos')
ap.add_argument('--model', required=True)
ap.add_argument('--pred', default=None)
ap.add_argument('--steps', type=int, default=1000)
ap.add_argument('--lr', type=float, default=5e-4)
ap.add_argument('--hint_init', default='zero')
ap.add_argument('--threads', type=int, default=1)
ap.add_argument('--seed', type=int, default=0)
ap.add_argument('--tmin', type=int, default=0)
ap.add_argument('--tmax', type=int, default=1000, help='train on timesteps in [tmin, tmax)')
ap.add_argument('--strength', type=float, default=1.0, help='evaluate from the input noised to t = strength*1000-1 (SPIRE.md 2.4)')
ap.add_argument('--steps_eval', type=int, default=10, help='DDIM steps of the multi-step evaluation')
ap.add_argument('--temb', type=int, default=0, help='add the pooled restoration embedding to the adaptor time embedding')
ap.add_argument('--deg_p', type=float, default=0.0)
ap.add_argument('--xt_from', default='clean', choices=['clean', 'degraded'],
                help='train on x_t noised from the clean image (diffusion) or from the degraded one (as restoring from the noised input does)')
a = ap.parse_args()
torch.set_num_threads(a.threads)
DEV = os.environ.get('DEVICE', 'cpu')  # e.g. cuda
torch.manual_seed(a.seed); random.seed(a.seed); np.random.seed(a.seed)
M = a.model
unet = UNet2DConditionModel.from_pretrained(M + '/unet').eval()
for p in unet.parameters(): p.requires_grad_(False)
s = DDPMScheduler.from_pretrained(M + '/scheduler')
pred = a.pred or s.config.prediction_type
SCALE = json.load(open(M + '/explore.json'))['scaling_factor'] if os.path.exists(M + '/explore.json') else 1.0
tok = CLIPTokenizer.from_pretrained(ROOT + '/recipes/spire-tiny/tokenizer')
te = CLIPTextModel.from_pretrained(M + '/text_encoder').eval()
rte = CLIPTextModel(CLIPTextConfig.from_pretrained(M + '/restoration_text_encoder'))
cn = ControlNetModel.from_unet(unet)
cn.controlnet_cond_embedding = nn.Identity()
cn.controlnet_down_blocks = nn.ModuleList([nn.Identity() for _ in cn.controlnet_down_blocks])
cn.controlnet_mid_block = nn.Identity()
# fresh cross-attn k/v (restoration encoder)
for n, m in cn.named_modules():
    if n.endswith('attn2.to_k') or n.endswith('attn2.to_v'):
        m.reset_parameters()
C0 = unet.config.block_out_channels[0]
from diffusers.models.embeddings import TimestepEmbedding
TEMB = unet.time_embedding.linear_2.out_features
if a.temb:
    ce = TimestepEmbedding(rte.config.hidden_size, TEMB)
    nn.init.zeros_(ce.linear_2.weight); nn.init.zeros_(ce.linear_2.bias)
    cn.class_embedding = ce

# Pixel-shuffle factor from the backbone's input channels (3·f²): 4 for the recipe, 2 for
# tiny_backbone.py with FACTOR=2.
FACTOR = int(round((unet.config.in_channels / 3) ** 0.5))
hint_conv = nn.Conv2d(unet.config.in_channels, C0, 3, padding=1)
if a.hint_init == 'zero':
    nn.init.zeros_(hint_conv.weight); nn.init.zeros_(hint_conv.bias)
skip_ch = [C0]
for i, b in enumerate(unet.down_blocks):
    c = unet.config.block_out_channels[i]
    skip_ch += [c] * len(b.resnets)
    if b.downsamplers: skip_ch.append(c)
mid_ch = unet.config.block_out_channels[-1]
def zc(c):
    m = nn.Conv2d(c, c, 1); nn.init.zeros_(m.weight); nn.init.zeros_(m.bias); return m
gam = nn.ModuleList([zc(c) for c in skip_ch + [mid_ch]])
bet = nn.ModuleList([zc(c) for c in skip_ch + [mid_ch]])
for m_ in (unet, te, rte, cn, hint_conv, gam, bet): m_.to(DEV)
params = list(cn.parameters()) + list(hint_conv.parameters()) + list(gam.parameters()) + list(bet.parameters()) + list(rte.parameters())
opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.01)

caps = {}
for line in open(PHOTOS + '/captions.tsv'):
    if '\t' in line:
        k, v = line.rstrip('\n').split('\t', 1); caps[k] = v
held = ['astronaut', 'chelsea', 'coffee', 'motorcycle_left']
files = [f for f in sorted(glob.glob(PHOTOS + '/*.png')) + sorted(glob.glob(PHOTOS + '/*.jpg'))]
train_files = [f for f in files if not any(h in f for h in held)]
test_files = [f for f in files if any(h in f for h in held)]
load = lambda f: np.asarray(Image.open(f).convert('RGB'), dtype=np.float32) / 255
imgs = [(load(f), caps.get(f.split('/')[-1], '')) for f in train_files]

def crop(im, rng):
    sc = rng.uniform(1.0, 2.5); r = int(round(64 * sc)); h, w, _ = im.shape
    y = rng.randint(0, h - r); x = rng.randint(0, w - r)
    c = im[y:y + r, x:x + r]
    if rng.random() < 0.5: c = c[:, ::-1]
    return cv2.resize(np.ascontiguousarray(c), (64, 64), interpolation=cv2.INTER_AREA)

def degrade(x, rng, ops=None):
    if ops is None:
        while True:
            ops = {}
            if rng.random() < .5: ops['blur'] = rng.uniform(0.3, 6.0)
            if rng.random() < .5: ops['down'] = rng.uniform(1.0, 4.0)
            if rng.random() < .5: ops['noise'] = rng.uniform(0.02, 0.3)
            if rng.random() < .5: ops['jpeg'] = rng.randint(15, 95)
            if ops: break
    y = x.copy(); H, W, _ = x.shape
    if 'blur' in ops:
        sg = ops['blur']; k = int(2 * round(3 * sg) + 1)
        y = cv2.GaussianBlur(y, (k, k), sg, borderType=cv2.BORDER_REFLECT)
    if 'down' in ops:
        f = ops['down']; y = cv2.resize(y, (max(1, round(W / f)), max(1, round(H / f))), interpolation=cv2.INTER_AREA)
    if 'noise' in ops:
        y = y + np.random.RandomState(rng.randint(0, 1 << 30)).randn(*y.shape).astype(np.float32) * ops['noise']
    y = np.clip(y, 0, 1)
    if 'jpeg' in ops:
        b = io.BytesIO(); Image.fromarray((y * 255).round().astype(np.uint8)).save(b, 'JPEG', quality=ops['jpeg'])
        y = np.asarray(Image.open(b), dtype=np.float32) / 255
    y = cv2.resize(y, (W, H), interpolation=cv2.INTER_CUBIC)
    cl = []
    if 'blur' in ops: cl.append(f"Deblur with sigma {ops['blur']:.1f}")
    if 'down' in ops: cl.append(f"Upsample with scale {ops['down']:.1f}")
    if 'noise' in ops: cl.append(f"Denoise with sigma {ops['noise']:.2f}")
    if 'jpeg' in ops: cl.append(f"Dejpeg with quality {ops['jpeg']}")
    return np.clip(y, 0, 1), '; '.join(cl)

def lat(x):  # [B,H,W,3] in [0,1] -> latent
    t = torch.from_numpy(np.stack(x)).permute(0, 3, 1, 2) * 2 - 1
    return (F.pixel_unshuffle(t, FACTOR) * SCALE).to(DEV)

def ids(texts):
    return tok(texts, padding='max_length', max_length=77, truncation=True, return_tensors='pt').input_ids.to(DEV)

def forward(xt, t, ctx_s, ctx_r, hint):
    cond = hint_conv(hint)
    ctx_r, pooled = ctx_r
    down, mid = cn(xt, t, encoder_hidden_states=ctx_r, controlnet_cond=cond, conditioning_scale=1.0, return_dict=False, class_labels={1: pooled, 2: ctx_r.mean(1), 3: ctx_r[:, -1]}.get(a.temb))
    with torch.no_grad():
        emb = unet.time_embedding(unet.time_proj(t).to(xt.dtype))
        h = unet.conv_in(xt); skips = [h]
        for b in unet.down_blocks:
            if getattr(b, 'has_cross_attention', False):
                h, res = b(hidden_states=h, temb=emb, encoder_hidden_states=ctx_s)
            else:
                h, res = b(hidden_states=h, temb=emb)
            skips += list(res)
        hm = unet.mid_block(h, emb, encoder_hidden_states=ctx_s)
    res = [f * gam[i](d) + bet[i](d) for i, (f, d) in enumerate(zip(skips, down))]
    rm = hm * gam[-1](mid) + bet[-1](mid)
    return unet(xt, t, encoder_hidden_states=ctx_s, down_block_additional_residuals=res, mid_block_additional_residual=rm).sample

def to_x0(p, xt, t):
    ac = s.alphas_cumprod[t.cpu()].view(-1, 1, 1, 1).to(DEV); al, sg = ac.sqrt(), (1 - ac).sqrt()
    if pred == 'sample': return p
    if pred == 'v_prediction': return al * xt - sg * p
    return (xt - sg * p) / al

with torch.no_grad():
    empty_s = te(ids([''])).last_hidden_state
rng = random.Random(a.seed)
# fixed eval set
erng = random.Random(123)
tests = [load(f) for f in test_files]
EV = []
for ops in [{'noise': 0.1}, {'blur': 2.0}, {'down': 2.0}, {'jpeg': 20}, {'blur': 1.5, 'noise': 0.05}]:
    for im in tests:
        for _ in range(2):
            h, w, _ = im.shape; y0 = erng.randint(0, h - 64); x0 = erng.randint(0, w - 64)
            c = im[y0:y0 + 64, x0:x0 + 64]
            d, p = degrade(c, erng, ops)
            EV.append((c, d, p, str(ops)))
psnr = lambda a_, b_: float(10 * np.log10(1 / np.mean((a_ - b_) ** 2)))

def evaluate():
    rte.eval()
    with torch.no_grad():
        X = lat([e[0] for e in EV]); Y = lat([e[1] for e in EV])
        o_ = rte(ids([e[2] for e in EV])); cr = (o_.last_hidden_state, o_.pooler_output)
        o_ = rte(ids(['Remove all degradation'] * len(EV))); cb = (o_.last_hidden_state, o_.pooler_output)
        cs = empty_s.expand(len(EV), -1, -1)
        g = torch.Generator().manual_seed(5)
        z = torch.randn(X.shape, generator=g).to(DEV)
        t0_ = int(round(a.strength * 1000)) - 1
        t = torch.full((len(EV),), t0_, device=DEV)
        if t0_ < 999:
            z = s.add_noise(Y, z, t)
        out = {}
        for name, ctx in [('true', cr), ('blind', cb)]:
            x0 = to_x0(forward(z * 1.0, t, cs, ctx, Y), z, t)
            out[name] = x0
        # 10-step DDIM from pure noise, true prompt
        NS = a.steps_eval
        ts = [int(round(t0_ - k * (t0_ + 1) / NS)) for k in range(NS)]
        zz = z.clone()
        for k, tt in enumerate(ts):
            tv = torch.full((len(EV),), tt, device=DEV)
            x0 = to_x0(forward(zz, tv, cs, cr, Y), zz, tv)
            ac = s.alphas_cumprod[tt]
            eps = (zz - ac.sqrt() * x0) / (1 - ac).sqrt().clamp(min=1e-8)
            if k + 1 < len(ts):
                an = s.alphas_cumprod[ts[k + 1]]; zz = an.sqrt() * x0 + (1 - an).sqrt() * eps
            else:
                zz = x0
        out['ddim10'] = zz
    rte.train()
    to_img = lambda L: ((F.pixel_shuffle(L / SCALE, FACTOR) + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    res = {k: to_img(v) for k, v in out.items()}
    rows = {}
    for i, e in enumerate(EV):
        r = rows.setdefault(e[3], [[], [], [], []])
        r[0].append(psnr(e[1], e[0])); r[1].append(psnr(res['blind'][i], e[0])); r[2].append(psnr(res['true'][i], e[0])); r[3].append(psnr(res['ddim10'][i], e[0]))
    for k, r in rows.items():
        print(f"  {k:32s} degraded {np.mean(r[0]):.2f} blind1 {np.mean(r[1]):.2f} true1 {np.mean(r[2]):.2f} ddim10 {np.mean(r[3]):.2f}", flush=True)

WK = []
wrng = random.Random(77)
for im in tests:
    for _ in range(4):
        h, w, _ = im.shape; y0 = wrng.randint(0, h - 64); x0 = wrng.randint(0, w - 64)
        c = im[y0:y0 + 64, x0:x0 + 64]
        d, _p = degrade(c, wrng, {'blur': 2.0, 'noise': 0.12})
        WK.append((c, d))
def gg(o, c):
    g = lambda v: np.concatenate([np.diff(v.mean(-1), axis=0).ravel(), np.diff(v.mean(-1), axis=1).ravel()])
    go, gc = g(o), g(c)
    return float((go * gc).sum() / (gc * gc).sum())
def walk():
    rte.eval()
    with torch.no_grad():
        X = lat([e[0] for e in WK]); Y = lat([e[1] for e in WK])
        cs = empty_s.expand(len(WK), -1, -1)
        g = torch.Generator().manual_seed(5)
        z = torch.randn(X.shape, generator=g).to(DEV)
        t0_ = int(round(a.strength * 1000)) - 1
        t = torch.full((len(WK),), t0_, device=DEV)
        z = s.add_noise(Y, z, t)
        line = []
        for sg_ in [1.0, 2.0, 3.0, 4.0]:
            o_ = rte(ids([f'Deblur with sigma {sg_:.1f}'] * len(WK)))
            x0 = to_x0(forward(z, t, cs, (o_.last_hidden_state, o_.pooler_output), Y), z, t)
            im_ = ((F.pixel_shuffle(x0 / SCALE, FACTOR) + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
            line.append(f"s{sg_:.0f} gg {np.mean([gg(im_[i], WK[i][0]) for i in range(len(WK))]):.4f} psnr {np.mean([psnr(im_[i], WK[i][0]) for i in range(len(WK))]):.2f}")
        print('  walk input gg', round(np.mean([gg(e[1], e[0]) for e in WK]), 4), ' | '.join(line), flush=True)
    rte.train()
t0 = time.time()
B = 8
evaluate(); walk()
for step in range(1, a.steps + 1):
    xs, ys, ps, cs_ = [], [], [], []
    for _ in range(B):
        im, cap = rng.choice(imgs)
        x = crop(im, rng); y, p = degrade(x, rng)
        if rng.random() < 0.2: p = 'Remove all degradation'
        if rng.random() < 0.2: cap = ''
        xs.append(x); ys.append(y); ps.append(p); cs_.append(cap)
    X, Y = lat(xs), lat(ys)
    with torch.no_grad():
        ctx_s = te(ids(cs_)).last_hidden_state
    o_ = rte(ids(ps)); ctx_r = (o_.last_hidden_state, o_.pooler_output)
    noise = torch.randn_like(X); t = torch.randint(a.tmin, a.tmax, (B,)).to(DEV)
    if a.xt_from == 'degraded' or (a.deg_p > 0 and rng.random() < a.deg_p):
        # x_t as at restore time; the target is whatever decodes to the clean X from this x_t.
        xt = s.add_noise(Y, noise, t)
        ac = s.alphas_cumprod[t.cpu()].view(-1, 1, 1, 1).to(DEV); al, sg = ac.sqrt(), (1 - ac).sqrt()
        eps = (xt - al * X) / sg
        tgt = {'sample': X, 'epsilon': eps}.get(pred, al * eps - sg * X)
    else:
        xt = s.add_noise(X, noise, t)
        tgt = X if pred == 'sample' else (s.get_velocity(X, noise, t) if pred == 'v_prediction' else noise)
    loss = F.mse_loss(forward(xt, t, ctx_s, ctx_r, Y), tgt)
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 100 == 0: print(step, round(loss.item(), 4), round(time.time() - t0), flush=True)
    if step % 500 == 0: evaluate(); walk()
