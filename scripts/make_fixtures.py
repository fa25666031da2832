#!/usr/bin/env python3
"""Builds the parity fixtures under tests/fixtures/ with the reference implementations.

Tiny random models are built with diffusers / transformers, every parameter is given a
non-trivial value (zero-initialised layers included, so nothing passes by multiplying by zero),
and they are saved as real diffusers/transformers folders together with inputs and reference
outputs in safetensors files. The Rust tests load the folders with spire-core and compare.

    python -m venv venv && venv/bin/pip install -U "setuptools>=77" \
        && venv/bin/pip install torch diffusers transformers safetensors scikit-image
    venv/bin/python scripts/make_fixtures.py

Library versions are recorded in tests/fixtures/VERSIONS.json. Everything is seeded; running
the script twice gives the same files.
"""
from __future__ import annotations

import collections
import copy
import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
SHARED_CAPTIONS = ROOT.parent / "shared" / "data" / "photos" / "captions.tsv"

torch.set_num_threads(2)
torch.use_deterministic_algorithms(True)


# --------------------------------------------------------------------------------------------
# Tokenizer: a small CLIP-format byte-level BPE vocabulary learned on captions and prompts.
# --------------------------------------------------------------------------------------------

def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


SPLIT = re.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+""", re.IGNORECASE)

RESTORATION_WORDS = [
    "Remove all degradation", "Deblur with sigma 2.3", "Upsample with scale 4.0",
    "Denoise with sigma 0.08", "Dejpeg with quality 40", "Deblur with sigma 0.4; Denoise with sigma 0.12",
]


def corpus() -> list[str]:
    lines = list(RESTORATION_WORDS) * 20
    if SHARED_CAPTIONS.exists():
        for row in SHARED_CAPTIONS.read_text().splitlines()[1:]:
            if "\t" in row:
                lines.append(row.split("\t", 1)[1])
    lines += [
        "a photo of a cat", "a red motorcycle in a workshop", "a lone zebra grazing in a field",
        "a portrait of a woman", "a city street at night", "a bowl of fruit on a table",
        "a mountain landscape with snow", "a dog running on the beach", "an old building",
    ]
    return lines


def learn_bpe(lines: list[str], num_merges: int):
    b2u = bytes_to_unicode()
    words = collections.Counter()
    for line in lines:
        for tok in SPLIT.findall(re.sub(r"\s+", " ", line).strip().lower()):
            enc = "".join(b2u[b] for b in tok.encode("utf-8"))
            words[tuple(enc[:-1]) + (enc[-1] + "</w>",)] += 1
    merges = []
    for _ in range(num_merges):
        pairs = collections.Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        new = collections.Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] += c
        words = new
    base = list(b2u.values())
    vocab = base + [v + "</w>" for v in base]
    for a, b in merges:
        vocab.append(a + b)
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(vocab)}, merges


def write_tokenizer(dir: Path, vocab, merges, pad_token: str):
    dir.mkdir(parents=True, exist_ok=True)
    (dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": pad_token}
    (dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    cfg = dict(special, model_max_length=77, tokenizer_class="CLIPTokenizer", do_lower_case=True)
    (dir / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))


TOKENIZER_PROMPTS = [
    "a red motorcycle in a workshop",
    "Denoise with sigma 0.08",
    "Deblur with sigma 2.3; Upsample with scale 4.0; Denoise with sigma 0.12; Dejpeg with quality 40",
    "Remove all degradation",
    "",
    "  MIXED   Case,   punctuation!!! and numbers 1234.5678 ",
    "unseen wordsxyz quixotic zephyr, café naïve — “quotes” 日本語",
    "a photo of a cat " * 20,
    "it's the dog's toy, isn't it? I'll see; you'd've",
]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def randomize(model: torch.nn.Module, seed: int):
    """Gives every parameter a non-trivial value: norms near 1, zero-initialised layers small
    random values, the rest keeps its (seeded) default initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif "norm" in name and name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif torch.count_nonzero(p) == 0 or name.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model


def rand(seed: int, *shape, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale


def save_ref(name: str, tensors: dict):
    from safetensors.torch import save_file
    (FIX / "ref").mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().float() for k, v in tensors.items()}, FIX / "ref" / f"{name}.safetensors")


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------

VAE_CFG = dict(
    in_channels=3, out_channels=3, latent_channels=4,
    down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
    block_out_channels=[16, 32, 32], layers_per_block=1, norm_num_groups=8, sample_size=32,
    scaling_factor=0.18215,
)

UNET_SD1 = dict(
    sample_size=8, in_channels=4, out_channels=4,
    down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
    block_out_channels=[32, 64], layers_per_block=2, cross_attention_dim=32,
    attention_head_dim=8, norm_num_groups=8, use_linear_projection=False,
)

UNET_SD2 = dict(
    sample_size=8, in_channels=4, out_channels=4,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    block_out_channels=[32, 48, 64], layers_per_block=1, cross_attention_dim=48,
    attention_head_dim=[2, 4, 8], norm_num_groups=8, use_linear_projection=True,
    upcast_attention=True, flip_sin_to_cos=True, freq_shift=0,
)


def clip_config(vocab_size, act, eos_id, bos_id, pad_id, hidden=32, proj=None):
    from transformers import CLIPTextConfig
    return CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, hidden_act=act,
        eos_token_id=eos_id, bos_token_id=bos_id, pad_token_id=pad_id,
        projection_dim=proj or hidden,
    )


SCHEDULER_CASES = [
    # name, class, config, steps, eta, img2img start index
    ("ddim-sd-leading-eps", "DDIMScheduler", dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading"), 10, 0.0, 4),
    ("ddim-linear-trailing-v-eta", "DDIMScheduler", dict(beta_schedule="linear", prediction_type="v_prediction",
        timestep_spacing="trailing", clip_sample=True), 8, 0.7, 3),
    ("ddim-cosine-linspace-zsnr", "DDIMScheduler", dict(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
        timestep_spacing="linspace", rescale_betas_zero_snr=True, clip_sample=False), 7, 0.0, 2),
    ("dpm-sd-linspace-eps-20", "DPMSolverMultistepScheduler", dict(beta_start=0.00085, beta_end=0.012,
        beta_schedule="scaled_linear"), 20, 0.0, 6),
    ("dpm-sd-leading-v-8", "DPMSolverMultistepScheduler", dict(beta_start=0.00085, beta_end=0.012,
        beta_schedule="scaled_linear", prediction_type="v_prediction", timestep_spacing="leading", steps_offset=1), 8, 0.0, 3),
    ("dpm-karras-trailing-eps-12", "DPMSolverMultistepScheduler", dict(beta_start=0.00085, beta_end=0.012,
        beta_schedule="scaled_linear", use_karras_sigmas=True, timestep_spacing="trailing"), 12, 0.0, 5),
    ("dpm-sigma-min-16", "DPMSolverMultistepScheduler", dict(beta_schedule="linear", final_sigmas_type="sigma_min",
        lower_order_final=True), 16, 0.0, 0),
    ("euler-sd-linspace-eps", "EulerDiscreteScheduler", dict(beta_start=0.00085, beta_end=0.012,
        beta_schedule="scaled_linear"), 10, 0.0, 4),
    ("euler-sd-leading-v", "EulerDiscreteScheduler", dict(beta_start=0.00085, beta_end=0.012,
        beta_schedule="scaled_linear", prediction_type="v_prediction", timestep_spacing="leading", steps_offset=1), 6, 0.0, 2),
    ("euler-karras-trailing", "EulerDiscreteScheduler", dict(beta_start=0.00085, beta_end=0.012,
        beta_schedule="scaled_linear", use_karras_sigmas=True, timestep_spacing="trailing"), 9, 0.0, 3),
]


def make_schedulers():
    """Whole trajectories: timesteps, every step's model output (a fixed function of the scaled
    input) and result, plus the noising used to start at an intermediate step."""
    import diffusers
    out, meta = {}, []
    for ci, (name, cls, cfg, steps, eta, start) in enumerate(SCHEDULER_CASES):
        sched = getattr(diffusers, cls)(**cfg)
        sched.set_timesteps(steps)
        g = torch.Generator().manual_seed(1000 + ci)
        sample = torch.randn(2, 4, 6, 5, generator=g) * sched.init_noise_sigma
        out[f"{name}.timesteps"] = sched.timesteps.double()
        out[f"{name}.sample0"] = sample.clone()
        for i, t in enumerate(sched.timesteps):
            x_in = sched.scale_model_input(sample, t)
            model_out = torch.tanh(0.5 * x_in + 0.001 * float(t)) + 0.1 * torch.randn(x_in.shape, generator=g)
            kw = {}
            if cls == "DDIMScheduler":
                kw["eta"] = eta
                if eta > 0:
                    noise = torch.randn(x_in.shape, generator=g)
                    kw["variance_noise"] = noise
                    out[f"{name}.noise.{i}"] = noise
            prev = sched.step(model_out, t, sample, return_dict=False, **kw)[0]
            out[f"{name}.scaled.{i}"] = x_in
            out[f"{name}.model_out.{i}"] = model_out
            out[f"{name}.prev.{i}"] = prev
            sample = prev
        # img2img start: add_noise at timesteps[start]
        fresh = getattr(diffusers, cls)(**cfg)
        fresh.set_timesteps(steps)
        x0 = torch.randn(2, 4, 6, 5, generator=g)
        noise = torch.randn(2, 4, 6, 5, generator=g)
        if hasattr(fresh, "set_begin_index"):
            fresh.set_begin_index(start)
        noisy = fresh.add_noise(x0, noise, fresh.timesteps[start:start + 1])
        out[f"{name}.x0"], out[f"{name}.noise"], out[f"{name}.noisy"] = x0, noise, noisy
        meta.append({"name": name, "config": dict(cfg, _class_name=cls), "steps": steps, "eta": eta, "start": start,
                     "init_noise_sigma": float(sched.init_noise_sigma)})
    # DDPM forward process and v target, one timestep per batch element
    ddpm = diffusers.DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    g = torch.Generator().manual_seed(77)
    x0 = torch.randn(4, 4, 5, 5, generator=g)
    noise = torch.randn(4, 4, 5, 5, generator=g)
    t = torch.tensor([0, 17, 500, 999])
    out.update({"ddpm.x0": x0, "ddpm.noise": noise, "ddpm.t": t.double(),
                "ddpm.noisy": ddpm.add_noise(x0, noise, t), "ddpm.velocity": ddpm.get_velocity(x0, noise, t),
                "ddpm.alphas_cumprod": ddpm.alphas_cumprod.double()})
    from safetensors.torch import save_file
    save_file({k: v.detach().clone().contiguous() for k, v in out.items()}, FIX / "ref" / "schedulers.safetensors")
    (FIX / "ref" / "schedulers.json").write_text(json.dumps(meta, indent=1))


def make_spire_adaptor(unet):
    """A SPIRE adaptor for the tiny SD1 UNet (latent hint, modulation fusion), in our format:
    the ControlNet body copied from the UNet (diffusers key names), `latent_hint_conv` and the
    `modulation_*` γ/β convs with small random values (trained adaptors are not zero)."""
    from diffusers import ControlNetModel
    from safetensors.torch import save_file
    body = ControlNetModel.from_unet(unet).state_dict()
    keep = {k: v.clone() for k, v in body.items()
            if k.split(".")[0] in ("conv_in", "time_embedding", "down_blocks", "mid_block")}
    g = torch.Generator().manual_seed(700)
    c0 = unet.config.block_out_channels[0]
    keep["latent_hint_conv.weight"] = 0.05 * torch.randn(c0, 4, 3, 3, generator=g)
    keep["latent_hint_conv.bias"] = 0.05 * torch.randn(c0, generator=g)
    skip = [c0]
    for i, c in enumerate(unet.config.block_out_channels):
        skip += [c] * unet.config.layers_per_block
        if i + 1 < len(unet.config.block_out_channels):
            skip.append(c)
    for i, c in enumerate(skip + [unet.config.block_out_channels[-1]]):
        prefix = f"modulation_down_blocks.{i}" if i < len(skip) else "modulation_mid_block"
        for part in ("gamma", "beta"):
            keep[f"{prefix}.{part}.weight"] = 0.05 * torch.randn(c, c, 1, 1, generator=g)
            keep[f"{prefix}.{part}.bias"] = 0.05 * torch.randn(c, generator=g)
    out = FIX / "tiny-spire-adaptor"
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in keep.items()}, out / "diffusion_pytorch_model.safetensors")
    cfg = {k: v for k, v in dict(unet.config).items() if not k.startswith("_") and k not in ("up_block_types", "out_channels", "sample_size")}
    cfg.update({"_class_name": "ControlNetModel", "hint_mode": "latent", "fusion": "modulation", "hint_channels": 4})
    (out / "config.json").write_text(json.dumps(cfg, indent=2, default=list))


def make_controlnet_prompt_embedding():
    """A tiny ControlNet with diffusers' `class_embed_type="projection"` (SPIRE's prompt
    embedding): the restoration prompt's pooled embedding, `class_labels = pooled`, through
    `class_embedding` into the time embedding."""
    from diffusers import ControlNetModel, UNet2DConditionModel
    unet = UNet2DConditionModel.from_pretrained(FIX / "tiny-sd1" / "unet").eval()
    base = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16, 16))
    cfg = {k: v for k, v in dict(base.config).items() if not k.startswith("_")}
    cfg.update(class_embed_type="projection", projection_class_embeddings_input_dim=32)
    torch.manual_seed(55)
    cn = randomize(ControlNetModel(**cfg), 550).eval()
    cn.save_pretrained(FIX / "tiny-controlnet-pe", safe_serialization=True)
    sample = rand(56, 2, 4, 16, 16)
    ctx = rand(57, 2, 77, 32)
    cond = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(58))
    pooled = rand(59, 2, 32)
    t = torch.tensor([40.0, 900.0])
    with torch.no_grad():
        down, mid = cn(sample, t, encoder_hidden_states=ctx, controlnet_cond=cond, conditioning_scale=0.7,
                       class_labels=pooled, return_dict=False)
    ref = {"sample": sample, "timesteps": t, "context": ctx, "pooled": pooled, "cond": cond, "mid": mid}
    ref.update({f"down.{i}": d for i, d in enumerate(down)})
    save_ref("controlnet-pe", ref)


PIPELINE_PROMPT = "a red motorcycle in a workshop"


def make_pipeline():
    """diffusers' StableDiffusionControlNetPipeline on the tiny SD1 folder + tiny ControlNet:
    prompt P, negative "", guidance 3, DDIM, explicit latents, float image, output_type np."""
    from diffusers import (AutoencoderKL, ControlNetModel, DDIMScheduler, StableDiffusionControlNetPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextModel, CLIPTokenizer
    sd = FIX / "tiny-sd1"
    pipe = StableDiffusionControlNetPipeline(
        vae=AutoencoderKL.from_pretrained(sd / "vae"),
        text_encoder=CLIPTextModel.from_pretrained(sd / "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(sd / "tokenizer"),
        unet=UNet2DConditionModel.from_pretrained(sd / "unet"),
        controlnet=ControlNetModel.from_pretrained(FIX / "tiny-controlnet"),
        scheduler=DDIMScheduler.from_pretrained(sd / "scheduler"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(60)
    image = torch.rand(64, 48, 3, generator=g).numpy().astype(np.float32)
    latents = torch.randn(1, 4, 16, 12, generator=g)
    out = pipe(prompt=PIPELINE_PROMPT, negative_prompt="", image=image[None], height=64, width=48,
               num_inference_steps=5, guidance_scale=3.0, latents=latents.clone(), output_type="np",
               controlnet_conditioning_scale=1.0).images[0]
    save_ref("pipeline", {"image": torch.from_numpy(image), "latents": latents, "out": torch.from_numpy(out)})


def _load_basicsr(relpath: str):
    """Loads one basicsr source file by path. basicsr 1.4.2's package __init__ imports
    torchvision (and a module newer torchvision removed); the functions we compare against need
    neither, so the files are loaded on their own with a stub for that import."""
    import importlib.util
    import types
    for name in ["torchvision", "torchvision.transforms", "torchvision.transforms.functional_tensor"]:
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["torchvision.transforms.functional_tensor"].rgb_to_grayscale = None
    path = Path(importlib.util.find_spec("basicsr").submodule_search_locations[0]) / relpath
    spec = importlib.util.spec_from_file_location("basicsr_" + path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_degradations():
    """Kernels vs basicsr, resizes vs PIL and torch, blur/filter vs OpenCV, USM vs basicsr, JPEG
    PSNR vs PIL, on a 256×256 crop of a public-domain photo (scikit-image's chelsea)."""
    import cv2
    import torch.nn.functional as F
    from PIL import Image
    deg = _load_basicsr("data/degradations.py")
    usm_sharp = _load_basicsr("utils/img_process_util.py").usm_sharp
    from importlib.metadata import version as pkg_version

    photo = ROOT.parent / "shared" / "data" / "photos" / "chelsea.png"
    (FIX / "photos").mkdir(parents=True, exist_ok=True)
    crop_path = FIX / "photos" / "chelsea_crop256.png"
    if photo.exists():
        Image.open(photo).convert("RGB").crop((100, 20, 356, 276)).save(crop_path)
    full = np.asarray(Image.open(crop_path).convert("RGB"))
    # Exact-function comparisons on a 96×80 window keep the fixture small; JPEG PSNR uses all.
    crop = np.ascontiguousarray(full[60:140, 80:176])
    img = crop.astype(np.float32) / 255.0  # H×W×3
    out = {}
    pi = np.pi
    cases = {
        "iso": deg.bivariate_Gaussian(21, 2.0, 2.0, 0.0, isotropic=True),
        "aniso": deg.bivariate_Gaussian(15, 2.5, 0.8, 0.7, isotropic=False),
        "gen_iso": deg.bivariate_generalized_Gaussian(21, 1.5, 1.5, 0.0, 0.7, isotropic=True),
        "gen_aniso": deg.bivariate_generalized_Gaussian(17, 2.0, 1.0, -1.2, 3.0, isotropic=False),
        "plateau_iso": deg.bivariate_plateau(21, 1.2, 1.2, 0.0, 1.5, isotropic=True),
        "plateau_aniso": deg.bivariate_plateau(19, 2.2, 0.9, 2.5, 1.2, isotropic=False),
        "sinc13": deg.circular_lowpass_kernel(1.3, 13, pad_to=21),
        "sinc7": deg.circular_lowpass_kernel(pi / 3, 7, pad_to=0),
        "sinc21": deg.circular_lowpass_kernel(pi / 5 + 0.1, 21, pad_to=0),
    }
    for k, v in cases.items():
        out[f"kernel.{k}"] = torch.from_numpy(np.ascontiguousarray(v)).double()
    planar = torch.from_numpy(img.transpose(2, 0, 1).copy())
    out["image"] = planar
    # PIL bicubic on float planes ("F" mode) and on RGB8, shrink and enlarge.
    for tag, size in [("shrink", (37, 29)), ("enlarge", (157, 119))]:
        planes = [np.asarray(Image.fromarray(img[:, :, c], mode="F").resize(size, Image.BICUBIC)) for c in range(3)]
        out[f"pil.{tag}.f32"] = torch.from_numpy(np.stack(planes).copy())
        rgb8 = np.asarray(Image.fromarray(crop).resize(size, Image.BICUBIC))
        out[f"pil.{tag}.rgb8"] = torch.from_numpy(rgb8.transpose(2, 0, 1).astype(np.float32) / 255.0)
    # torch F.interpolate modes of the Real-ESRGAN pipeline.
    t = planar[None].double()
    for mode in ["area", "bilinear", "bicubic"]:
        for tag, size in [("down", (31, 43)), ("up", (117, 139))]:
            kw = {} if mode == "area" else {"align_corners": False}
            out[f"torch.{mode}.{tag}"] = F.interpolate(t, size=size, mode=mode, **kw)[0].float()
    # OpenCV Gaussian blur and filter2D (reflect-101), basicsr USM sharpening.
    for sigma in [0.8, 2.0, 4.5]:
        k = 2 * int(np.ceil(3 * sigma)) + 1
        b = cv2.GaussianBlur(img, (k, k), sigma, borderType=cv2.BORDER_REFLECT_101)
        out[f"cv2.blur.{sigma}"] = torch.from_numpy(b.transpose(2, 0, 1).copy())
    f2 = cv2.filter2D(img, -1, cases["aniso"].astype(np.float32), borderType=cv2.BORDER_REFLECT_101)
    out["cv2.filter2d.aniso"] = torch.from_numpy(f2.transpose(2, 0, 1).copy())
    out["basicsr.usm"] = torch.from_numpy(usm_sharp(img.copy()).astype(np.float32).transpose(2, 0, 1).copy())
    # JPEG round trips through PIL (libjpeg, 4:2:0), PSNR on 8-bit values.
    import io
    psnr = {}
    for q in [10, 30, 50, 90]:
        buf = io.BytesIO()
        Image.fromarray(full).save(buf, format="JPEG", quality=q)
        dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).astype(np.float64)
        mse = np.mean((dec - full.astype(np.float64)) ** 2)
        psnr[str(q)] = 10 * np.log10(255.0 ** 2 / mse)
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in out.items()}, FIX / "ref" / "degradations.safetensors")
    import PIL
    (FIX / "ref" / "degradations.json").write_text(json.dumps({
        "jpeg_psnr_pil": psnr, "pillow": PIL.__version__, "opencv": cv2.__version__, "basicsr": pkg_version("basicsr"),
    }, indent=1))


TRAIN_GRADS = [
    "modulation_down_blocks.0.gamma.weight",
    "modulation_down_blocks.4.beta.bias",
    "modulation_mid_block.beta.weight",
    "latent_hint_conv.weight",
    "down_blocks.1.resnets.0.conv1.weight",
    "time_embedding.linear_1.weight",
]


def make_train_step_prompt_embedding():
    """`make_train_step` with the adaptor's prompt embedding (`class_embed_type="projection"`,
    `class_labels` = a pooled restoration embedding): its own adaptor folder and reference."""
    make_train_step(prompt_embedding=True)


def make_train_step(prompt_embedding=False):
    """One adaptor training step in PyTorch: the SPIRE adaptor (ControlNet body, latent hint,
    modulation) on the frozen tiny SD1 UNet, ε-prediction MSE, gradients, one AdamW step.

    Modulation `f ⊙ (1 + γ) + β` is applied through diffusers' additional residuals
    `f ⊙ γ + β`, with `f` the UNet's own (unmodulated) skip features, which the down path
    computes before any modulation is applied."""
    import torch.nn as nn
    from diffusers import ControlNetModel, DDPMScheduler, UNet2DConditionModel
    from safetensors.torch import load_file

    sd = FIX / "tiny-sd1"
    unet = UNet2DConditionModel.from_pretrained(sd / "unet").eval()
    for p in unet.parameters():
        p.requires_grad_(False)
    sched = DDPMScheduler.from_pretrained(sd / "scheduler")
    w = load_file(FIX / "tiny-spire-adaptor" / "diffusion_pytorch_model.safetensors")
    cn = ControlNetModel.from_unet(unet)
    parts = ("conv_in", "time_embedding", "down_blocks", "mid_block")
    if prompt_embedding:
        from diffusers.models.embeddings import TimestepEmbedding
        from safetensors.torch import save_file
        temb = unet.time_embedding.linear_2.out_features
        ge = torch.Generator().manual_seed(910)
        w["class_embedding.linear_1.weight"] = 0.1 * torch.randn(temb, 32, generator=ge)
        w["class_embedding.linear_1.bias"] = 0.1 * torch.randn(temb, generator=ge)
        w["class_embedding.linear_2.weight"] = 0.05 * torch.randn(temb, temb, generator=ge)
        w["class_embedding.linear_2.bias"] = 0.05 * torch.randn(temb, generator=ge)
        out_dir = FIX / "tiny-spire-adaptor-pe"
        out_dir.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in w.items()}, out_dir / "diffusion_pytorch_model.safetensors")
        cfg = json.loads((FIX / "tiny-spire-adaptor" / "config.json").read_text())
        cfg.update(class_embed_type="projection", projection_class_embeddings_input_dim=32)
        (out_dir / "config.json").write_text(json.dumps(cfg, indent=2))
        cn.class_embedding = TimestepEmbedding(32, temb)
        parts = parts + ("class_embedding",)
    body = {k: v for k, v in w.items() if k.split(".")[0] in parts}
    cn.load_state_dict(body, strict=False)
    cn.controlnet_cond_embedding = nn.Identity()
    n_skips = len(cn.controlnet_down_blocks)
    cn.controlnet_down_blocks = nn.ModuleList([nn.Identity() for _ in range(n_skips)])
    cn.controlnet_mid_block = nn.Identity()
    extra = {k: nn.Parameter(v.clone()) for k, v in w.items() if k not in body}
    params = {**{k: p for k, p in cn.named_parameters() if k in body}, **extra}
    for p in params.values():
        p.requires_grad_(True)

    g = torch.Generator().manual_seed(900)
    x0 = torch.randn(2, 4, 16, 16, generator=g)
    noise = torch.randn(2, 4, 16, 16, generator=g)
    t = torch.tensor([100, 700])
    ctx_s = torch.randn(2, 77, 32, generator=g)
    ctx_r = torch.randn(2, 77, 32, generator=g)
    hint = torch.randn(2, 4, 16, 16, generator=g)
    pooled_r = torch.randn(2, 32, generator=g) if prompt_embedding else None
    scale = 0.8
    x_t = sched.add_noise(x0, noise, t)

    def conv(x, name, padding):
        return torch.nn.functional.conv2d(x, extra[f"{name}.weight"], extra[f"{name}.bias"], padding=padding)

    cond = conv(hint, "latent_hint_conv", 1)
    down, mid = cn(x_t, t, encoder_hidden_states=ctx_r, controlnet_cond=cond, conditioning_scale=1.0,
                   class_labels=pooled_r, return_dict=False)

    with torch.no_grad():
        emb = unet.time_embedding(unet.time_proj(t).to(x_t.dtype))
        h = unet.conv_in(x_t)
        skips = [h]
        for b in unet.down_blocks:
            if getattr(b, "has_cross_attention", False):
                h, res = b(hidden_states=h, temb=emb, encoder_hidden_states=ctx_s)
            else:
                h, res = b(hidden_states=h, temb=emb)
            skips += list(res)
        h_mid = unet.mid_block(h, emb, encoder_hidden_states=ctx_s)
    res = [f * (scale * conv(s, f"modulation_down_blocks.{i}.gamma", 0)) + scale * conv(s, f"modulation_down_blocks.{i}.beta", 0)
           for i, (f, s) in enumerate(zip(skips, down))]
    res_mid = h_mid * (scale * conv(mid, "modulation_mid_block.gamma", 0)) + scale * conv(mid, "modulation_mid_block.beta", 0)
    pred = unet(x_t, t, encoder_hidden_states=ctx_s, down_block_additional_residuals=res,
                mid_block_additional_residual=res_mid).sample
    loss = torch.nn.functional.mse_loss(pred, noise)
    loss.backward()
    out = {"x0": x0, "noise": noise, "t": t.float(), "ctx_s": ctx_s, "ctx_r": ctx_r, "hint": hint,
           "loss": loss.detach().reshape(1)}
    names = TRAIN_GRADS
    if prompt_embedding:
        out["pooled_r"] = pooled_r
        names = TRAIN_GRADS + ["class_embedding.linear_1.weight", "class_embedding.linear_2.bias"]
    for k in names:
        out[f"grad.{k}"] = params[k].grad.detach().clone()
    opt = torch.optim.AdamW(list(params.values()), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    opt.step()
    for k in names:
        out[f"after.{k}"] = params[k].detach().clone()
    save_ref("train-step-pe" if prompt_embedding else "train-step", out)


def make_colorfix():
    """StableSR's colour fixes (scripts/wavelet_color_fix.py: `wavelet_reconstruction` and
    `adaptive_instance_normalization`, then clamp to [0, 1]), transcribed in torch."""
    import torch.nn.functional as F

    def wavelet_blur(image, radius):
        k = torch.tensor([[0.0625, 0.125, 0.0625], [0.125, 0.25, 0.125], [0.0625, 0.125, 0.0625]])
        k = k[None, None].repeat(3, 1, 1, 1)
        image = F.pad(image, (radius, radius, radius, radius), mode="replicate")
        return F.conv2d(image, k, groups=3, dilation=radius)

    def wavelet_decomposition(image, levels=5):
        high = torch.zeros_like(image)
        for i in range(levels):
            low = wavelet_blur(image, 2 ** i)
            high += image - low
            image = low
        return high, low

    def wavelet_reconstruction(content, style):
        ch, _ = wavelet_decomposition(content)
        _, sl = wavelet_decomposition(style)
        return ch + sl

    def calc_mean_std(feat, eps=1e-5):
        b, c = feat.shape[:2]
        var = feat.reshape(b, c, -1).var(dim=2) + eps
        return feat.reshape(b, c, -1).mean(dim=2).reshape(b, c, 1, 1), var.sqrt().reshape(b, c, 1, 1)

    def adain(content, style):
        size = content.size()
        sm, ss = calc_mean_std(style)
        cm, cs = calc_mean_std(content)
        return (content - cm.expand(size)) / cs.expand(size) * ss.expand(size) + sm.expand(size)

    g = torch.Generator().manual_seed(1100)
    content = torch.rand(1, 3, 45, 61, generator=g)
    style = (torch.rand(1, 3, 45, 61, generator=g) * 0.6 + 0.3)
    save_ref("colorfix", {
        "content": content[0], "style": style[0],
        "wavelet": wavelet_reconstruction(content, style).clamp(0, 1)[0],
        "adain": adain(content, style).clamp(0, 1)[0],
    })


def make_consistency():
    """Measurement consistency (spire_core::consistency) against a dense NumPy solve whose
    operators are built by running the reference implementations on unit images: PIL's
    float bicubic resize and OpenCV's reflect-101 Gaussian blur; the JPEG constraint on luma and
    4:2:0 chroma (SciPy's DCT, PIL's bilinear enlargement). Also the JPEG luma and chroma
    quantisation tables libjpeg (through PIL) writes at several qualities."""
    import io
    import cv2
    import torch
    from PIL import Image
    from scipy.fft import dctn, idctn

    W, H = 20, 16

    def op_matrix(fn, w, h):
        cols = []
        for i in range(w * h):
            e = np.zeros((h, w), np.float32)
            e.flat[i] = 1.0
            cols.append(np.asarray(fn(e), np.float64).ravel())
        return np.stack(cols, 1)

    def resize(w2, h2):
        return lambda e: np.asarray(Image.fromarray(e, "F").resize((w2, h2), Image.BICUBIC))

    def blur(sigma):
        k = 2 * int(np.ceil(3 * sigma)) + 1
        return lambda e: cv2.GaussianBlur(e.astype(np.float64), (k, k), sigma, borderType=cv2.BORDER_REFLECT_101)

    def donoho(p):
        h, w = p.shape
        q = p[: h - h % 2, : w - w % 2]
        d = np.abs(q[0::2, 0::2] - q[0::2, 1::2] - q[1::2, 0::2] + q[1::2, 1::2]) / 2
        return float(np.median(d) / 0.6745)

    def solve(m, y, A, U, sigma_stated, tau, lr_size):
        out = np.empty_like(m)
        for c in range(3):
            yc = y[c].ravel().astype(np.float64)
            if U is not None:
                yc = np.linalg.lstsq(U, yc, rcond=None)[0]
            sigma = sigma_stated if sigma_stated is not None else max(2 / 255, donoho(yc.reshape(lr_size[::-1])))
            t = tau
            if sigma_stated is not None:
                # empirical-Bayes bound on the prior's spread from the residual
                r2 = np.mean((A @ m[c].ravel() - yc) ** 2)
                t = min(tau, np.sqrt(max(r2 - sigma ** 2, 0.0)))
            lam = (sigma / t) ** 2
            lhs = A.T @ A + lam * np.eye(A.shape[1])
            rhs = A.T @ yc + lam * m[c].ravel()
            out[c] = np.linalg.solve(lhs, rhs).reshape(H, W)
        return np.clip(out, 0, 1)

    g = torch.Generator().manual_seed(1300)
    out, cases = {}, []
    I = np.eye(W * H)
    # (prompt, tau, blur sigma, shrunk size, stated noise)
    specs = [
        ("Deblur with sigma 1.2; Upsample with scale 2.0; Denoise with sigma 0.05", 0.1, 1.2, (10, 8), 0.05),
        ("Deblur with sigma 1.5", 0.5, 1.5, None, None),
        ("Upsample with scale 2.5", 0.2, None, (8, 6), None),
        ("Deblur with sigma 0.8; Denoise with sigma 0.10", 0.3, 0.8, None, 0.10),
    ]
    for i, (prompt, tau, sb, small, noise) in enumerate(specs):
        m = (torch.rand(3, H, W, generator=g) * 0.6 + 0.2).double().numpy()
        y = (torch.rand(3, H, W, generator=g) * 0.6 + 0.2).double().numpy()
        if i == 3:
            # The input is the degraded model output plus the stated noise, so the
            # residual bound on the prior's spread binds (τ 0.3 -> about 0.04).
            Bm = op_matrix(blur(sb), W, H)
            y = np.stack([(Bm @ m[c].ravel()).reshape(H, W) for c in range(3)])
            y = y + 0.1 * torch.randn(3, H, W, generator=g).double().numpy() + 0.04 * torch.randn(3, H, W, generator=g).double().numpy()
        A = op_matrix(blur(sb), W, H) if sb else I
        U = None
        if small:
            A = op_matrix(resize(*small), W, H) @ A
            U = op_matrix(resize(W, H), *small)
        x = solve(m, y, A, U, noise, tau, small or (W, H))
        out[f"case{i}.output"] = torch.from_numpy(m).float()
        out[f"case{i}.input"] = torch.from_numpy(y).float()
        out[f"case{i}.expected"] = torch.from_numpy(x).float()
        cases.append({"prompt": prompt, "tau": tau, "width": W, "height": H})

    # JPEG quality 20 on a 24x16 image: luma DCT pulled towards the input's and clamped to its
    # cell, then the chroma likewise at half resolution.
    tables, chroma_tables = {}, {}
    for q in [1, 10, 20, 50, 75, 90, 100]:
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (128, 128, 128)).save(buf, format="JPEG", quality=q)
        qt = Image.open(io.BytesIO(buf.getvalue())).quantization
        tables[str(q)] = list(qt[0])
        chroma_tables[str(q)] = list(qt[1])
    std = [16, 11, 10, 16, 24, 40, 51, 61]
    assert tables["50"][:8] == std, "PIL's tables are expected in natural order"
    JW, JH, tau = 24, 16, 0.05
    Q = np.array(tables["20"], np.float64).reshape(8, 8)
    m = (torch.rand(3, JH, JW, generator=g) * 0.6 + 0.2).double().numpy()
    y = (torch.rand(3, JH, JW, generator=g) * 0.6 + 0.2).double().numpy()
    luma = lambda im: 255 * (0.299 * im[0] + 0.587 * im[1] + 0.114 * im[2]) - 128
    lm, ly = luma(m), luma(y)
    new = lm.copy()
    t2, s2 = (tau * 255) ** 2, Q ** 2 / 12
    for by in range(0, JH, 8):
        for bx in range(0, JW, 8):
            co = dctn(lm[by:by + 8, bx:bx + 8], norm="ortho")
            ci = dctn(ly[by:by + 8, bx:bx + 8], norm="ortho")
            v = (ci * t2 + co * s2) / (t2 + s2)
            k = np.round(ci / Q)
            new[by:by + 8, bx:bx + 8] = idctn(np.clip(v, (k - 0.5) * Q - 1, (k + 0.5) * Q + 1), norm="ortho")
    x = np.clip(m + ((new - lm) / 255)[None], 0, 1)
    # Then the chroma in the codec's 4:2:0 grid: 2x2 averages of Cb and Cr, every full 8x8
    # block pulled and clamped with the chroma table, enlarged back by PIL's bilinear resize,
    # and recombined with the (luma-constrained) luma.
    Qc = np.array(chroma_tables["20"], np.float64).reshape(8, 8)
    s2c = Qc ** 2 / 12
    def ycc(im):
        r, gg, b = 255 * im[0], 255 * im[1], 255 * im[2]
        return (0.299 * r + 0.587 * gg + 0.114 * b,
                -0.168736 * r - 0.331264 * gg + 0.5 * b,
                0.5 * r - 0.418688 * gg - 0.081312 * b)
    yx, cbx, crx = ycc(x)
    _, cby, cry = ycc(y)
    half = lambda p: p.reshape(JH // 2, 2, JW // 2, 2).mean((1, 3))
    planes = []
    for po, pi in [(cbx, cby), (crx, cry)]:
        ho, hi = half(po), half(pi)
        for by in range(0, JH // 2 - 7, 8):
            for bx in range(0, JW // 2 - 7, 8):
                co = dctn(ho[by:by + 8, bx:bx + 8], norm="ortho")
                ci = dctn(hi[by:by + 8, bx:bx + 8], norm="ortho")
                v = (ci * t2 + co * s2c) / (t2 + s2c)
                k = np.round(ci / Qc)
                ho[by:by + 8, bx:bx + 8] = idctn(np.clip(v, (k - 0.5) * Qc - 1, (k + 0.5) * Qc + 1), norm="ortho")
        planes.append(np.asarray(Image.fromarray(ho.astype(np.float32), "F").resize((JW, JH), Image.BILINEAR), np.float64))
    cb, cr = planes
    x = np.clip(np.stack([yx + 1.402 * cr, yx - 0.344136 * cb - 0.714136 * cr, yx + 1.772 * cb]) / 255, 0, 1)
    out["jpeg.output"] = torch.from_numpy(m).float()
    out["jpeg.input"] = torch.from_numpy(y).float()
    out["jpeg.expected"] = torch.from_numpy(x).float()
    cases.append({"prompt": "Dejpeg with quality 20", "tau": tau, "width": JW, "height": JH, "key": "jpeg"})
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in out.items()}, FIX / "ref" / "consistency.safetensors")
    import PIL
    (FIX / "ref" / "consistency.json").write_text(json.dumps({
        "cases": cases, "jpeg_luma_tables": tables, "jpeg_chroma_tables": chroma_tables, "pillow": PIL.__version__, "opencv": cv2.__version__,
        "numpy": np.__version__,
    }, indent=1))


def make_metrics():
    """PSNR/SSIM with scikit-image on real photo crops (8-bit and float), plus the distorted
    image they compare against (saved as PNG)."""
    from PIL import Image
    import skimage
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    a = np.asarray(Image.open(FIX / "photos" / "chelsea_crop256.png").convert("RGB"))
    rng = np.random.default_rng(1200)
    blurred = np.asarray(Image.fromarray(a).resize((128, 128), Image.BICUBIC).resize((256, 256), Image.BICUBIC))
    b = np.clip(blurred.astype(np.float64) + rng.normal(0, 12, a.shape), 0, 255).round().astype(np.uint8)
    Image.fromarray(b).save(FIX / "photos" / "chelsea_crop256_distorted.png")
    af, bf = a.astype(np.float32) / 255, b.astype(np.float32) / 255
    ssim = lambda x, y, r: structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                                 channel_axis=-1, data_range=r)
    out = {
        "skimage": skimage.__version__,
        "psnr_u8": peak_signal_noise_ratio(a, b, data_range=255),
        "ssim_u8": ssim(a, b, 255),
        "psnr_f32": peak_signal_noise_ratio(af, bf, data_range=1.0),
        "ssim_f32": ssim(af, bf, 1.0),
        "psnr_u8_crop": peak_signal_noise_ratio(a[10:77, 5:100], b[10:77, 5:100], data_range=255),
        "ssim_u8_crop": ssim(a[10:77, 5:100], b[10:77, 5:100], 255),
    }
    out = {k: (v if isinstance(v, str) else float(v)) for k, v in out.items()}
    (FIX / "ref" / "metrics.json").write_text(json.dumps(out, indent=1))


# --------------------------------------------------------------------------------------------
# Learned metrics. Their backbones are large (AlexNet 2.5 M, VGG16 15 M, Inception 22 M
# parameters), so their random weights are not stored: every tensor is generated from its name
# by a counter-based hash (splitmix64) that the Rust tests reproduce exactly, and only the
# shapes, scales, real LPIPS heads, inputs and outputs are committed.
# --------------------------------------------------------------------------------------------

def fnv1a64(name: str) -> int:
    h = 0xCBF29CE484222325
    for b in name.encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def hashed_uniform(name: str, n: int, seed: int) -> np.ndarray:
    """n values in [-1, 1): splitmix64 of (fnv1a64(name) ^ seed) + k·golden, k = 1..n, top 53
    bits as a fraction."""
    u = np.uint64
    i = np.arange(1, n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = u(fnv1a64(name) ^ seed) + i * u(0x9E3779B97F4A7C15)
        z = (z ^ (z >> u(30))) * u(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> u(27))) * u(0x94D049BB133111EB)
        z = z ^ (z >> u(31))
    return (z >> u(11)).astype(np.float64) / 2.0 ** 53 * 2.0 - 1.0


def hashed_tensor(name: str, shape, scale: float, offset: float, seed: int) -> torch.Tensor:
    n = int(np.prod(shape)) if len(shape) else 1
    v = hashed_uniform(name, n, seed) * scale + offset
    return torch.from_numpy(v.astype(np.float32)).reshape(tuple(shape))


def hashed_state(named: dict, seed: int):
    """Fills tensors by the rule the Rust tests reproduce; returns {name: [shape, scale, offset]}.
    Conv/linear weights U(±sqrt(6/fan_in)); biases and BatchNorm shifts U(±0.1); BatchNorm
    scales and running variances 1 + U(±0.2); running means U(±0.1)."""
    spec = {}
    with torch.no_grad():
        for name, t in named.items():
            shape = list(t.shape)
            if name.endswith("running_var") or (name.endswith("weight") and len(shape) == 1):
                scale, offset = 0.2, 1.0
            elif name.endswith("weight"):
                scale, offset = float(np.sqrt(6.0 / np.prod(shape[1:]))), 0.0
            else:
                scale, offset = 0.1, 0.0
            t.copy_(hashed_tensor(name, shape, scale, offset, seed))
            spec[name] = [shape, scale, offset]
    return spec


def make_lpips():
    """LPIPS (alex, vgg) of the lpips package with its real v0.1 heads on hashed backbones:
    per-stage distances on a real photo pair and a random batch."""
    import lpips
    from PIL import Image
    sys.path.insert(0, str(ROOT / "scripts"))
    from convert_metric_weights import lpips_tensors
    a = np.asarray(Image.open(FIX / "photos" / "chelsea_crop256.png").convert("RGB"))[40:104, 60:140]
    b = np.asarray(Image.open(FIX / "photos" / "chelsea_crop256_distorted.png").convert("RGB"))[40:104, 60:140]
    photo = lambda x: torch.from_numpy(x.astype(np.float32) / 255).permute(2, 0, 1)[None]
    ra = torch.rand(2, 3, 48, 56, generator=torch.Generator().manual_seed(700))
    rb = (ra + 0.2 * torch.randn(2, 3, 48, 56, generator=torch.Generator().manual_seed(701))).clamp(0, 1)
    ref = {"photo_a": photo(a), "photo_b": photo(b), "rand_a": ra, "rand_b": rb}
    spec = {}
    for i, net in enumerate(["alex", "vgg"]):
        m = lpips.LPIPS(net=net, pnet_rand=True, verbose=False).eval()
        converted = lpips_tensors(m.state_dict(), m.state_dict(), net)
        backbone = {k: v for k, v in m.net.named_parameters()}
        named = {}
        for k, v in backbone.items():
            _, idx, kind = k.split(".")
            named[f"features.{idx}.{kind}"] = v
        spec[net] = hashed_state(named, 7000 + i)
        for k in range(5):
            ref[f"{net}.lin{k}"] = converted[f"lin{k}.weight"]
        with torch.no_grad():
            for pair in ["photo", "rand"]:
                x, y = ref[f"{pair}_a"], ref[f"{pair}_b"]
                total, per = m(x, y, retPerLayer=True, normalize=True)
                ref[f"{net}.{pair}.stages"] = torch.cat([p.reshape(-1, 1) for p in per], 1)
                ref[f"{net}.{pair}.total"] = total.reshape(-1)
    save_ref("lpips", ref)
    (FIX / "ref" / "lpips.json").write_text(json.dumps({"seeds": {"alex": 7000, "vgg": 7001}, "tensors": spec}))


def make_clip():
    """A tiny random transformers CLIPModel folder (tiny-clip) with the fixture tokenizer and a
    32-pixel image processor; references: the PIL image processor's pixel values, the image and
    text embeddings, CLIP-I and CLIP-T."""
    from PIL import Image
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    out = FIX / "tiny-clip"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for f in ["vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"]:
        shutil.copy(FIX / "tiny-sd1" / "tokenizer" / f, out / f)
    vocab = json.loads((out / "vocab.json").read_text())
    eos, bos = vocab["<|endoftext|>"], vocab["<|startoftext|>"]
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu",
                         eos_token_id=eos, bos_token_id=bos, pad_token_id=eos, projection_dim=16),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, hidden_act="quick_gelu", projection_dim=16),
        projection_dim=16,
    )
    torch.manual_seed(80)
    model = randomize(CLIPModel(cfg), 800).eval()
    model.save_pretrained(out, safe_serialization=True)
    proc = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    proc.save_pretrained(out)
    a = np.asarray(Image.open(FIX / "photos" / "chelsea_crop256.png").convert("RGB"))
    b = np.asarray(Image.open(FIX / "photos" / "chelsea_crop256_distorted.png").convert("RGB"))
    images = [a[40:104, 60:140], b[40:104, 60:140], a[:, :100]]  # 80×64, 80×64, 100×256
    pixels = proc(images=images, return_tensors="pt")["pixel_values"]
    tok = CLIPTokenizer.from_pretrained(out)
    prompts = ["a cat on a sofa", "a red motorcycle in a workshop", "a photo of a cat " * 20]
    ids = tok(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        img = model.get_image_features(pixel_values=pixels).pooler_output
        txt = model.get_text_features(input_ids=ids).pooler_output
    img_n, txt_n = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
    save_ref("clip", {"pixel_values": pixels, "image_embeds": img_n, "text_embeds": txt_n,
                      "clip_i": (img_n[0] * img_n[1]).sum().reshape(1),
                      "clip_t": (img_n[0] * txt_n[0]).sum().reshape(1)})
    (FIX / "ref" / "clip.json").write_text(json.dumps({"prompts": prompts, "crops": [[40, 104, 60, 140], [40, 104, 60, 140], [0, 256, 0, 100]]}))


def make_fid():
    """pytorch-fid's InceptionV3 (FID blocks, pool features) on hashed weights, and its Fréchet
    distance on random feature sets (full rank, and fewer samples than dimensions)."""
    import torchvision
    from PIL import Image
    import pytorch_fid.inception as pi
    from pytorch_fid.fid_score import calculate_frechet_distance
    captured = {}
    orig_load = torchvision.models.Inception3.load_state_dict
    orig_url = pi.load_state_dict_from_url

    def fake_load(self, sd, *a, **k):
        if isinstance(sd, str) and sd == "hashed":
            captured["net"] = self
            return None
        return orig_load(self, sd, *a, **k)

    torchvision.models.Inception3.load_state_dict = fake_load
    pi.load_state_dict_from_url = lambda *a, **k: "hashed"
    try:
        model = pi.InceptionV3([3]).eval()
    finally:
        torchvision.models.Inception3.load_state_dict = orig_load
        pi.load_state_dict_from_url = orig_url
    sys.path.insert(0, str(ROOT / "scripts"))
    from convert_metric_weights import inception_tensors
    net = captured["net"]
    named = {k: v for k, v in net.state_dict(keep_vars=True).items() if k in inception_tensors(net.state_dict())}
    named = {k: v for k, v in named.items() if v.dtype.is_floating_point}
    spec = hashed_state(named, 9000)
    a = np.asarray(Image.open(FIX / "photos" / "chelsea_crop256.png").convert("RGB"))[40:104, 60:140]
    photo = torch.from_numpy(a.astype(np.float32) / 255).permute(2, 0, 1)[None]
    rnd = torch.rand(1, 3, 50, 40, generator=torch.Generator().manual_seed(900))
    with torch.no_grad():
        f_photo = model(photo)[0].reshape(1, -1)
        f_rnd = model(rnd)[0].reshape(1, -1)
    ref = {"photo": photo, "rand": rnd, "features_photo": f_photo, "features_rand": f_rnd}
    g = np.random.default_rng(901)
    sets = {}
    for name, (n1, n2, d) in {"full": (300, 260, 64), "deficient": (40, 30, 96)}.items():
        x1 = g.normal(0, 1, (n1, d)) @ g.normal(0, 0.5, (d, d)) + 0.3
        x2 = g.normal(0, 1.2, (n2, d)) @ g.normal(0, 0.5, (d, d))
        m1, s1 = x1.mean(0), np.cov(x1, rowvar=False)
        m2, s2 = x2.mean(0), np.cov(x2, rowvar=False)
        sets[name] = float(calculate_frechet_distance(m1, s1, m2, s2))
        ref[f"{name}_x1"] = torch.from_numpy(x1.astype(np.float32))
        ref[f"{name}_x2"] = torch.from_numpy(x2.astype(np.float32))
        # Statistics of the float32 rows the Rust side sees.
        x1f, x2f = x1.astype(np.float32).astype(np.float64), x2.astype(np.float32).astype(np.float64)
        sets[name + "_f32"] = float(calculate_frechet_distance(x1f.mean(0), np.cov(x1f, rowvar=False),
                                                               x2f.mean(0), np.cov(x2f, rowvar=False)))
    save_ref("fid", ref)
    (FIX / "ref" / "fid.json").write_text(json.dumps({"seed": 9000, "tensors": spec, "frechet": sets}))


def versions() -> dict:
    import importlib.metadata as md
    out = {"python": sys.version.split()[0], "numpy": np.__version__}
    for pkg in ["torch", "diffusers", "transformers", "safetensors", "scikit-image", "lpips", "torchvision",
                "pytorch-fid", "pillow", "opencv-python-headless", "scipy"]:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def main():
    import diffusers
    import transformers
    import safetensors
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    if FIX.exists():
        for sub in ["tiny-sd1", "tiny-sd2", "tiny-controlnet", "tiny-controlnet-pe", "tiny-spire-adaptor", "tiny-spire-adaptor-pe", "tiny-clip", "ref", "tokenizer"]:
            shutil.rmtree(FIX / sub, ignore_errors=True)
    FIX.mkdir(parents=True, exist_ok=True)

    # ---- tokenizers
    vocab, merges = learn_bpe(corpus(), 400)
    write_tokenizer(FIX / "tiny-sd1" / "tokenizer", vocab, merges, "<|endoftext|>")
    write_tokenizer(FIX / "tiny-sd2" / "tokenizer", vocab, merges, "!")
    tok_ref = {}
    for flavour in ["tiny-sd1", "tiny-sd2"]:
        tok = CLIPTokenizer.from_pretrained(FIX / flavour / "tokenizer")
        ids = tok(TOKENIZER_PROMPTS, padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
        tok_ref[flavour] = ids
    (FIX / "ref").mkdir(parents=True, exist_ok=True)
    (FIX / "ref" / "tokenizer.json").write_text(json.dumps({"prompts": TOKENIZER_PROMPTS, "ids": tok_ref}, ensure_ascii=False))
    eos, bos = vocab["<|endoftext|>"], vocab["<|startoftext|>"]

    # ---- text encoders (SD1: quick_gelu, pad = eos; SD2: gelu, pad = "!")
    for i, (flavour, act, pad) in enumerate([("tiny-sd1", "quick_gelu", eos), ("tiny-sd2", "gelu", vocab["!"])]):
        torch.manual_seed(10 + i)
        hidden = 32 if flavour == "tiny-sd1" else 48
        te = randomize(CLIPTextModel(clip_config(len(vocab), act, eos, bos, pad, hidden=hidden)), 100 + i).eval()
        te.save_pretrained(FIX / flavour / "text_encoder", safe_serialization=True)
        ids = torch.tensor(tok_ref[flavour][:4])
        with torch.no_grad():
            out = te(ids)
        save_ref(f"{flavour}-text-encoder", {"ids": ids.float(), "last_hidden_state": out.last_hidden_state, "pooled": out.pooler_output})

    # ---- VAE (shared by both tiny pipelines through tiny-sd1)
    torch.manual_seed(20)
    vae = randomize(AutoencoderKL(**VAE_CFG), 200).eval()
    vae.save_pretrained(FIX / "tiny-sd1" / "vae", safe_serialization=True)
    copy.deepcopy(vae).half().save_pretrained(FIX / "tiny-sd1" / "vae", safe_serialization=True, variant="fp16")
    x = rand(21, 2, 3, 36, 28).clamp(-1, 1)
    z = rand(22, 1, 4, 9, 7)
    with torch.no_grad():
        dist = vae.encode(x).latent_dist
        dec = vae.decode(z).sample
    save_ref("vae", {"x": x, "mean": dist.mean, "logvar": dist.logvar, "z": z, "decoded": dec})

    # ---- UNets
    for flavour, cfg, seed, shape, ts, ctx_dim in [
        ("tiny-sd1", UNET_SD1, 30, (3, 4, 16, 16), [10.0, 500.0, 999.0], 32),
        ("tiny-sd2", UNET_SD2, 40, (3, 4, 12, 10), [1.0, 333.0, 980.0], 48),
    ]:
        torch.manual_seed(seed)
        unet = randomize(UNet2DConditionModel(**cfg), seed * 10).eval()
        unet.save_pretrained(FIX / flavour / "unet", safe_serialization=True)
        sample = rand(seed + 1, *shape)
        ctx = rand(seed + 2, shape[0], 77, ctx_dim)
        t = torch.tensor(ts)
        with torch.no_grad():
            out = unet(sample, t, encoder_hidden_states=ctx).sample
        save_ref(f"{flavour}-unet", {"sample": sample, "timesteps": t, "context": ctx, "out": out})

    # ---- ControlNet (pixel hint, additive) on the SD1 UNet, and the UNet with its residuals
    torch.manual_seed(50)
    unet = UNet2DConditionModel.from_pretrained(FIX / "tiny-sd1" / "unet").eval()
    cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16, 16))
    cn = randomize(cn, 500).eval()
    cn.save_pretrained(FIX / "tiny-controlnet", safe_serialization=True)
    sample = rand(51, 2, 4, 16, 16)
    ctx = rand(52, 2, 77, 32)
    cond = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(53))
    t = torch.tensor([250.0, 750.0])
    with torch.no_grad():
        down, mid = cn(sample, t, encoder_hidden_states=ctx, controlnet_cond=cond, conditioning_scale=0.7, return_dict=False)
        out = unet(sample, t, encoder_hidden_states=ctx, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
    ref = {"sample": sample, "timesteps": t, "context": ctx, "cond": cond, "mid": mid, "unet_out": out}
    ref.update({f"down.{i}": d for i, d in enumerate(down)})
    save_ref("controlnet", ref)
    make_spire_adaptor(unet)
    make_controlnet_prompt_embedding()

    # ---- model_index / scheduler for the tiny pipelines
    for flavour, pred in [("tiny-sd1", "epsilon"), ("tiny-sd2", "v_prediction")]:
        sched = {
            "_class_name": "DDIMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "clip_sample": False,
            "set_alpha_to_one": False, "steps_offset": 1, "prediction_type": pred,
            "timestep_spacing": "leading",
        }
        (FIX / flavour / "scheduler").mkdir(parents=True, exist_ok=True)
        (FIX / flavour / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched, indent=2))

    make_schedulers()
    make_pipeline()
    make_degradations()
    make_train_step()
    make_train_step_prompt_embedding()
    make_colorfix()
    make_consistency()
    make_metrics()
    make_lpips()
    make_clip()
    make_fid()
    make_dpm_config()
    make_single_file()
    make_layouts()
    write_versions()


def make_dpm_config():
    """A scheduler config as diffusers saves it after swapping in DPM++ (2M): Python's json
    writes `"lambda_min_clipped": -Infinity`, which strict JSON readers refuse."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    ddim = DDIMScheduler.from_pretrained(FIX / "tiny-sd1" / "scheduler")
    dpm = DPMSolverMultistepScheduler.from_config(ddim.config)
    out = FIX / "diffusers-dpm"
    dpm.save_config(out)
    text = (out / "scheduler_config.json").read_text()
    assert "-Infinity" in text, text



# --------------------------------------------------------------------------------------------
# Single-file checkpoints in the original (CompVis/ldm) layout, checked with diffusers' own
# `from_single_file`.
# --------------------------------------------------------------------------------------------

# Tiny models whose hyper-parameters follow the rules a single file cannot state (SD 1.x: 8
# heads per attention layer; SD 2.x and every CLIP: 64-wide heads; GroupNorm of 32 groups), so
# that our loader can infer their configs from the tensors alone, as it does for real files.
SF_UNET_SD1 = dict(
    sample_size=8, in_channels=4, out_channels=4,
    down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
    block_out_channels=[32, 64], layers_per_block=1, cross_attention_dim=64, attention_head_dim=8,
    norm_num_groups=32, use_linear_projection=False,
)
SF_UNET_SD2 = dict(
    sample_size=8, in_channels=4, out_channels=4,
    down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
    block_out_channels=[64, 64], layers_per_block=1, cross_attention_dim=64, attention_head_dim=[1, 1],
    norm_num_groups=32, use_linear_projection=True, upcast_attention=True,
)
SF_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4,
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[32, 32, 64, 64], layers_per_block=1, norm_num_groups=32, sample_size=32,
    scaling_factor=0.18215,
)
RESNET_LDM = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
              ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]


def _resnet_ldm(rest: str) -> str:
    for a, b in RESNET_LDM:
        if rest.startswith(a + "."):
            return b + rest[len(a):]
    raise KeyError(rest)


def unet_to_ldm(sd: dict, cfg: dict, prefix: str, controlnet=False) -> dict:
    """diffusers UNet2DConditionModel / ControlNetModel names -> ldm `UNetModel` / `ControlNet`
    names (the inverse of diffusers' convert_ldm_unet_checkpoint / convert_controlnet_checkpoint)."""
    L = cfg["layers_per_block"]
    n_up = len(cfg["block_out_channels"])
    up_attn = [t.startswith("CrossAttn") for t in cfg.get("up_block_types", [])]
    out = {}
    for k, v in sd.items():
        m = None
        if k.startswith("time_embedding.linear_1."):
            m = "time_embed.0." + k.split(".")[-1]
        elif k.startswith("time_embedding.linear_2."):
            m = "time_embed.2." + k.split(".")[-1]
        elif k.startswith("conv_in."):
            m = "input_blocks.0.0." + k.split(".")[-1]
        elif k.startswith("conv_norm_out."):
            m = "out.0." + k.split(".")[-1]
        elif k.startswith("conv_out."):
            m = "out.2." + k.split(".")[-1]
        elif (r := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", k)):
            b, l, rest = int(r[1]), int(r[2]), r[3]
            m = f"input_blocks.{1 + b * (L + 1) + l}.0.{_resnet_ldm(rest)}"
        elif (r := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", k)):
            b, l, rest = int(r[1]), int(r[2]), r[3]
            m = f"input_blocks.{1 + b * (L + 1) + l}.1.{rest}"
        elif (r := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", k)):
            b = int(r[1])
            m = f"input_blocks.{1 + b * (L + 1) + L}.0.op.{r[2]}"
        elif (r := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", k)):
            m = f"middle_block.{2 * int(r[1])}.{_resnet_ldm(r[2])}"
        elif (r := re.match(r"mid_block\.attentions\.0\.(.*)", k)):
            m = f"middle_block.1.{r[1]}"
        elif (r := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", k)):
            b, l, rest = int(r[1]), int(r[2]), r[3]
            m = f"output_blocks.{b * (L + 1) + l}.0.{_resnet_ldm(rest)}"
        elif (r := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", k)):
            b, l, rest = int(r[1]), int(r[2]), r[3]
            m = f"output_blocks.{b * (L + 1) + l}.1.{rest}"
        elif (r := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", k)):
            b = int(r[1])
            m = f"output_blocks.{b * (L + 1) + L}.{2 if up_attn[b] else 1}.conv.{r[2]}"
        elif controlnet and (r := re.match(r"controlnet_down_blocks\.(\d+)\.(.*)", k)):
            m = f"zero_convs.{r[1]}.0.{r[2]}"
        elif controlnet and k.startswith("controlnet_mid_block."):
            m = "middle_block_out.0." + k.split(".")[-1]
        elif controlnet and k.startswith("controlnet_cond_embedding.conv_in."):
            m = "input_hint_block.0." + k.split(".")[-1]
        elif controlnet and (r := re.match(r"controlnet_cond_embedding\.blocks\.(\d+)\.(.*)", k)):
            m = f"input_hint_block.{2 * (int(r[1]) + 1)}.{r[2]}"
        elif controlnet and k.startswith("controlnet_cond_embedding.conv_out."):
            n_blocks = len({x.split(".")[2] for x in sd if x.startswith("controlnet_cond_embedding.blocks.")})
            m = f"input_hint_block.{2 * (n_blocks + 1)}." + k.split(".")[-1]
        if m is None:
            raise KeyError(f"no ldm name for {k}")
        out[prefix + m] = v
    return out


def vae_to_ldm(sd: dict, cfg: dict) -> dict:
    n = len(cfg["block_out_channels"])
    out = {}
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    for k, v in sd.items():
        m = k
        m = re.sub(r"^encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", m)
        m = re.sub(r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", m)
        m = re.sub(r"^decoder\.up_blocks\.(\d+)\.resnets\.", lambda r: f"decoder.up.{n - 1 - int(r[1])}.block.", m)
        m = re.sub(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.", lambda r: f"decoder.up.{n - 1 - int(r[1])}.upsample.", m)
        m = re.sub(r"\.mid_block\.resnets\.(\d+)\.", lambda r: f".mid.block_{int(r[1]) + 1}.", m)
        if ".mid_block.attentions.0." in m:
            m = m.replace(".mid_block.attentions.0.", ".mid.attn_1.")
            for a, b in attn.items():
                m = m.replace(f".attn_1.{a}.", f".attn_1.{b}.")
            if v.dim() == 2:  # ldm keeps 1x1 convs here
                v = v[:, :, None, None]
        m = m.replace(".conv_norm_out.", ".norm_out.").replace("conv_shortcut", "nin_shortcut")
        out["first_stage_model." + m] = v
    return out


def openclip_to_ldm(sd: dict, n_layers: int, g: torch.Generator) -> dict:
    """transformers CLIPTextModel names -> OpenCLIP (`cond_stage_model.model.`) names: fused
    in_proj, `resblocks`, `ln_*`, `c_fc`/`c_proj`; plus one extra final resblock, which SD 2.x
    skips (it reads the penultimate layer), a text projection and a logit scale."""
    P = "cond_stage_model.model."
    sd = {k.removeprefix("text_model."): v for k, v in sd.items()}
    out = {
        P + "token_embedding.weight": sd["embeddings.token_embedding.weight"],
        P + "positional_embedding": sd["embeddings.position_embedding.weight"],
        P + "ln_final.weight": sd["final_layer_norm.weight"],
        P + "ln_final.bias": sd["final_layer_norm.bias"],
    }
    d = sd["embeddings.token_embedding.weight"].shape[1]
    for i in range(n_layers):
        s = f"encoder.layers.{i}."
        o = f"{P}transformer.resblocks.{i}."
        for w in ["weight", "bias"]:
            out[o + f"attn.in_proj_{w}"] = torch.cat([sd[s + f"self_attn.{q}_proj.{w}"] for q in "qkv"])
            out[o + f"attn.out_proj.{w}"] = sd[s + f"self_attn.out_proj.{w}"]
            out[o + f"ln_1.{w}"] = sd[s + f"layer_norm1.{w}"]
            out[o + f"ln_2.{w}"] = sd[s + f"layer_norm2.{w}"]
            out[o + f"mlp.c_fc.{w}"] = sd[s + f"mlp.fc1.{w}"]
            out[o + f"mlp.c_proj.{w}"] = sd[s + f"mlp.fc2.{w}"]
    # The last resblock: real weights in SD 2.x files, never used for the conditioning.
    last = f"{P}transformer.resblocks.{n_layers}."
    for k in [k for k in out if k.startswith(f"{P}transformer.resblocks.0.")]:
        out[last + k[len(f"{P}transformer.resblocks.0."):]] = torch.randn(out[k].shape, generator=g) * 0.1
    out[P + "text_projection"] = torch.randn(d, d, generator=g) * 0.1
    out[P + "logit_scale"] = torch.tensor(4.6052)
    return out


def ldm_extras(g: torch.Generator) -> dict:
    """What real SD files also hold and a loader must skip: the DDPM schedule buffers."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    ac = torch.cumprod(1 - betas, 0)
    return {"betas": betas.float(), "alphas_cumprod": ac.float(), "alphas_cumprod_prev": torch.cat([torch.ones(1), ac[:-1].float()])}


def make_single_file():
    """Tiny SD1 (CLIP) and SD2 (OpenCLIP, fused in_proj, penultimate layer) single files in ldm
    layout, fp16 like most published files, plus a single-file ControlNet (`control_model.*`,
    f32) for the SD1 one. Each loads with diffusers' `from_single_file` (offline,
    `config=` a local folder) and gives exactly the outputs of the same model saved as a
    diffusers folder; those outputs are the references. The config folders hold what a single
    file lacks (tokenizer, scheduler) plus the configs diffusers requires; our loader reads only
    the tokenizer and scheduler from them (it infers the architecture from the tensors)."""
    import tempfile
    from diffusers import (AutoencoderKL, ControlNetModel, DDIMScheduler, StableDiffusionControlNetPipeline,
                           UNet2DConditionModel)
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm, load_single_file_checkpoint
    from safetensors.torch import save_file
    from transformers import CLIPTextModel, CLIPTokenizer

    sfdir = FIX / "single-file"
    shutil.rmtree(sfdir, ignore_errors=True)
    sfdir.mkdir(parents=True)
    tok = CLIPTokenizer.from_pretrained(FIX / "tiny-sd1" / "tokenizer")
    vocab_n = len(tok)
    eos, bos = tok.eos_token_id, tok.bos_token_id
    ref = {}
    g = torch.Generator().manual_seed(700)
    for flavour, unet_cfg, act, pad_tok, pred, dtype, seed in [
        ("sd1", SF_UNET_SD1, "quick_gelu", "<|endoftext|>", "epsilon", torch.float16, 700),
        ("sd2", SF_UNET_SD2, "gelu", "!", "v_prediction", torch.float16, 800),
    ]:
        torch.manual_seed(seed)
        unet = randomize(UNet2DConditionModel(**unet_cfg), seed + 1).eval()
        vae = randomize(AutoencoderKL(**SF_VAE), seed + 2).eval()
        te = randomize(CLIPTextModel(clip_config(vocab_n, act, eos, bos, tok.convert_tokens_to_ids(pad_tok), hidden=64)), seed + 3).eval()
        te.config.num_attention_heads = 1
        te = randomize(CLIPTextModel(te.config), seed + 3).eval()
        # The weights as the file stores them (fp16 rounding included), back in float32.
        for m in (unet, vae, te):
            m.to(dtype).float()
        cfg_dir = sfdir / f"{flavour}-config"
        unet.save_pretrained(cfg_dir / "unet")
        vae.save_pretrained(cfg_dir / "vae")
        te.save_pretrained(cfg_dir / "text_encoder")
        for f in cfg_dir.rglob("*.safetensors"):
            f.unlink()  # configs only: the weights are in the single file
        write_tokenizer(cfg_dir / "tokenizer", tok.get_vocab(), [tuple(l.split()) for l in
                        (FIX / "tiny-sd1" / "tokenizer" / "merges.txt").read_text().splitlines()[1:] if l], pad_tok)
        sched = json.loads((FIX / ("tiny-sd1" if flavour == "sd1" else "tiny-sd2") / "scheduler" / "scheduler_config.json").read_text())
        sched["_class_name"] = "DDIMScheduler"
        (cfg_dir / "scheduler").mkdir()
        (cfg_dir / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched, indent=2))

        ldm = {}
        ldm.update(unet_to_ldm(unet.state_dict(), unet_cfg, "model.diffusion_model."))
        ldm.update(vae_to_ldm(vae.state_dict(), SF_VAE))
        if flavour == "sd1":
            ldm.update({"cond_stage_model.transformer.text_model." + k.removeprefix("text_model."): v for k, v in te.state_dict().items()})
        else:
            ldm.update(openclip_to_ldm(te.state_dict(), te.config.num_hidden_layers, g))
        ldm.update(ldm_extras(g))
        ldm = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in ldm.items()}
        if flavour == "sd1":
            ldm["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
        path = sfdir / f"tiny-{flavour}.safetensors"
        save_file(ldm, path)

        # diffusers' own single-file loaders, offline, with the local config folder.
        unet_sf = UNet2DConditionModel.from_single_file(str(path), config=str(cfg_dir), subfolder="unet", local_files_only=True).eval()
        vae_sf = AutoencoderKL.from_single_file(str(path), config=str(cfg_dir), subfolder="vae", local_files_only=True).eval()
        ckpt = load_single_file_checkpoint(str(path), local_files_only=True)
        te_sf = create_diffusers_clip_model_from_ldm(CLIPTextModel, ckpt, subfolder="text_encoder", config=str(cfg_dir), local_files_only=True)
        # They equal the models the file was written from, bit for bit.
        for a, b, what in [(unet, unet_sf, "unet"), (vae, vae_sf, "vae"), (te, te_sf, "text_encoder")]:
            sa, sb = a.state_dict(), b.state_dict()
            assert sa.keys() == sb.keys(), (what, set(sa) ^ set(sb))
            for k in sa:
                assert torch.equal(sa[k], sb[k].to(sa[k].dtype)), (flavour, what, k)

        sample = rand(seed + 10, 2, 4, 12, 10)
        t = torch.tensor([20.0, 700.0])
        ids = torch.tensor(tok(TOKENIZER_PROMPTS[:2], padding="max_length", max_length=77, truncation=True).input_ids)
        x = rand(seed + 11, 1, 3, 40, 32).clamp(-1, 1)
        z = rand(seed + 12, 1, 4, 5, 4)
        with torch.no_grad():
            text = te_sf(ids)
            ctx = text.last_hidden_state
            ref[f"{flavour}.ids"] = ids.float()
            ref[f"{flavour}.text"] = ctx
            ref[f"{flavour}.pooled"] = text.pooler_output
            ref[f"{flavour}.sample"] = sample
            ref[f"{flavour}.timesteps"] = t
            ref[f"{flavour}.unet"] = unet_sf(sample, t, encoder_hidden_states=ctx).sample
            ref[f"{flavour}.x"] = x
            ref[f"{flavour}.mean"] = vae_sf.encode(x).latent_dist.mean
            ref[f"{flavour}.z"] = z
            ref[f"{flavour}.decoded"] = vae_sf.decode(z).sample
            # The folder path gives the same (the file is a faithful copy).
            assert torch.equal(unet(sample, t, encoder_hidden_states=te(ids).last_hidden_state).sample, ref[f"{flavour}.unet"])

        if flavour == "sd1":
            # A ControlNet for it, with the conditioning embedding of the public ones (4 widths,
            # `input_hint_block.0 … .14`), stored as `control_model.*` in f32.
            torch.manual_seed(seed + 20)
            cn = randomize(ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8, 8, 16)), seed + 21).eval()
            cn_cfg = sfdir / "controlnet-config"
            cn.save_pretrained(cn_cfg)
            for f in cn_cfg.rglob("*.safetensors"):
                f.unlink()
            cn_ldm = unet_to_ldm(cn.state_dict(), json.loads((cn_cfg / "config.json").read_text()), "control_model.", controlnet=True)
            cn_path = sfdir / "tiny-controlnet.safetensors"
            save_file({k: v.contiguous() for k, v in cn_ldm.items()}, cn_path)
            cn_sf = ControlNetModel.from_single_file(str(cn_path), config=str(cn_cfg), local_files_only=True).eval()
            for k, v in cn.state_dict().items():
                assert torch.equal(v, cn_sf.state_dict()[k]), k
            cond = torch.rand(2, 3, 96, 80, generator=torch.Generator().manual_seed(seed + 22))
            with torch.no_grad():
                down, mid = cn_sf(sample, t, encoder_hidden_states=ctx, controlnet_cond=cond, conditioning_scale=0.7, return_dict=False)
            ref["cn.cond"] = cond
            ref["cn.mid"] = mid
            ref.update({f"cn.down.{i}": d for i, d in enumerate(down)})

            # The whole pipeline from the single files, as make_pipeline runs it.
            pipe = StableDiffusionControlNetPipeline(
                vae=vae_sf, text_encoder=te_sf, tokenizer=CLIPTokenizer.from_pretrained(cfg_dir / "tokenizer"),
                unet=unet_sf, controlnet=cn_sf, scheduler=DDIMScheduler.from_pretrained(cfg_dir / "scheduler"),
                safety_checker=None, feature_extractor=None, requires_safety_checker=False,
            )
            pipe.set_progress_bar_config(disable=True)
            gp = torch.Generator().manual_seed(60)
            image = torch.rand(64, 48, 3, generator=gp).numpy().astype(np.float32)
            latents = torch.randn(1, 4, 8, 6, generator=gp)
            out = pipe(prompt=PIPELINE_PROMPT, negative_prompt="", image=image[None], height=64, width=48,
                       num_inference_steps=5, guidance_scale=3.0, latents=latents.clone(), output_type="np",
                       controlnet_conditioning_scale=1.0).images[0]
            save_ref("single-file-pipeline", {"image": torch.from_numpy(image), "latents": latents, "out": torch.from_numpy(out)})
    save_ref("single-file", ref)
    # The configs diffusers needs stay as files; our loader must not need them, so the tests
    # also load with a folder holding only tokenizer/ and scheduler/.
    for p in sorted(sfdir.rglob("*")):
        if p.is_file():
            print(p.relative_to(FIX), p.stat().st_size)


def make_layouts():
    """The tensor names and shapes of the public single files the docs' recipes use, at full
    size, with no weights: `v1-5-pruned-emaonly.safetensors` (SD 1.5), `v2-1_512-ema-pruned
    .safetensors` (SD 2.1-base) and `control_v11f1e_sd15_tile` (its ControlNet config is SD 1.5's
    ControlNetModel.from_unet with the default conditioning embedding). Built from diffusers'
    model classes with the published configs on the meta device and renamed to the ldm layout by
    the functions make_single_file checks against diffusers' from_single_file. The Rust test
    writes sparse files with these headers and loads them (tests/fixtures/layouts.json)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    sd15_unet = dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
    sd21_unet = dict(sample_size=64, cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20],
                     use_linear_projection=True, upcast_attention=False)
    vae_cfg = dict(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
                   up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4, layers_per_block=2, sample_size=512)
    clip_l = CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                            num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu")
    open_clip_h = CLIPTextConfig(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                 num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu")
    shapes = lambda sd: {k: list(v.shape) for k, v in sd.items()}
    out = {}
    with init_empty_weights():
        for name, ucfg, clip in [("sd15", sd15_unet, clip_l), ("sd21-base", sd21_unet, open_clip_h)]:
            unet = UNet2DConditionModel(**ucfg)
            full_cfg = dict(unet.config)
            vae = AutoencoderKL(**vae_cfg)
            te = CLIPTextModel(clip)
            ldm = {}
            ldm.update(unet_to_ldm(unet.state_dict(), full_cfg, "model.diffusion_model."))
            ldm.update(vae_to_ldm(vae.state_dict(), vae_cfg))
            if name == "sd15":
                ldm.update({"cond_stage_model.transformer.text_model." + k.removeprefix("text_model."): v
                            for k, v in te.state_dict().items()})
            else:
                # All 24 OpenCLIP layers are in the file (the pipeline reads the 23rd).
                P = "cond_stage_model.model."
                g = {P + "token_embedding.weight": [49408, 1024], P + "positional_embedding": [77, 1024],
                     P + "ln_final.weight": [1024], P + "ln_final.bias": [1024], P + "text_projection": [1024, 1024],
                     P + "logit_scale": []}
                for i in range(24):
                    o = f"{P}transformer.resblocks.{i}."
                    g.update({o + "attn.in_proj_weight": [3072, 1024], o + "attn.in_proj_bias": [3072],
                              o + "attn.out_proj.weight": [1024, 1024], o + "attn.out_proj.bias": [1024],
                              o + "ln_1.weight": [1024], o + "ln_1.bias": [1024], o + "ln_2.weight": [1024],
                              o + "ln_2.bias": [1024], o + "mlp.c_fc.weight": [4096, 1024], o + "mlp.c_fc.bias": [4096],
                              o + "mlp.c_proj.weight": [1024, 4096], o + "mlp.c_proj.bias": [1024]})
                g = {k: torch.empty(v, device="meta") for k, v in g.items()}
                # diffusers' converter maps these onto SD 2.x's 23-layer text encoder: every
                # name and shape it expects is there (the 24th layer is left over).
                from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
                te23 = CLIPTextModel(CLIPTextConfig(**{**open_clip_h.to_dict(), "num_hidden_layers": 23}))
                conv = convert_open_clip_checkpoint(te23, g)
                conv = {k.removeprefix("text_model."): list(v.shape) for k, v in conv.items() if ".layers.23." not in k}
                want = {k.removeprefix("text_model."): list(v.shape) for k, v in te23.state_dict().items()}
                conv.pop("text_projection.weight", None)
                assert conv == want, set(conv.items()) ^ set(want.items())
                ldm.update(g)
            ldm.update({k: torch.empty(1000, device="meta") for k in ["betas", "alphas_cumprod", "alphas_cumprod_prev"]})
            out[name] = shapes(ldm)
            if name == "sd15":
                cn = ControlNetModel.from_unet(unet)
                cn_cfg = dict(cn.config)
                out["control_v11f1e_sd15_tile"] = shapes(unet_to_ldm(cn.state_dict(), cn_cfg, "control_model.", controlnet=True))
    for k, v in out.items():
        print(k, len(v), "tensors,", sum(int(np.prod(s)) if s else 1 for s in v.values()) / 1e6, "M values")
    (FIX / "layouts.json").write_text(json.dumps(out, separators=(",", ":"), sort_keys=True) + "\n")


def make_jpeg_quality():
    """JPEG files written by PIL (libjpeg) for the prompt estimator's exact-quality test: a 64×48
    crop of the test photo at several qualities (4:2:0), one at 4:4:4, one with custom tables
    (not IJG's: the estimator must say so), and a PNG of the same crop."""
    from PIL import Image
    d = FIX / "jpeg"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    img = Image.open(FIX / "photos" / "chelsea_crop256.png").convert("RGB").crop((96, 64, 160, 112))
    for q in [5, 10, 25, 50, 75, 90, 95, 100]:
        img.save(d / f"q{q}.jpg", quality=q)
    img.save(d / "q60-444.jpg", quality=60, subsampling=0)
    flat = [[8] * 64, [12] * 64]
    img.save(d / "custom-tables.jpg", qtables=flat)
    img.save(d / "clean.png")


def make_image_files():
    """Image files for the loader's tests (tests/fixtures/image-files): a 24×16 crop of the test
    photo as PNG; 16-bit RGB PNG and TIFF whose samples follow a formula the test recomputes
    (v = (x·2731 + y·977 + c·12345) mod 65536); 8-bit TIFFs (raw, LZW, deflate), a float gray
    TIFF ((x + 24·y) / 400); lossless and lossy WebP (with PIL's decode of the lossy one); and
    the crop with every EXIF orientation as PNG (eXIf chunk), one JPEG (orientation 6), one
    WebP (3) and one TIFF (8), each with PIL's `ImageOps.exif_transpose` result beside it."""
    import struct
    import zlib
    import tifffile
    from PIL import Image, ImageOps
    d = FIX / "image-files"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    img = Image.open(FIX / "photos" / "chelsea_crop256.png").convert("RGB").crop((100, 80, 124, 96))
    img.save(d / "base.png")
    w, h = img.size
    yy, xx, cc = np.meshgrid(np.arange(h), np.arange(w), np.arange(3), indexing="ij")
    v16 = ((xx * 2731 + yy * 977 + cc * 12345) % 65536).astype(np.uint16)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\0" + v16[y].astype(">u2").tobytes() for y in range(h))
    png16 = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
             + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    (d / "rgb16.png").write_bytes(png16)
    tifffile.imwrite(d / "rgb16.tif", v16, photometric="rgb")
    f32 = ((xx[..., 0] + 24 * yy[..., 0]) / 400.0).astype(np.float32)
    tifffile.imwrite(d / "gray-f32.tif", f32, photometric="minisblack")
    img.save(d / "rgb8.tif")
    img.save(d / "rgb8-lzw.tif", compression="tiff_lzw")
    img.save(d / "rgb8-deflate.tif", compression="tiff_adobe_deflate")
    img.save(d / "lossless.webp", lossless=True)
    rgba = img.convert("RGBA")
    rgba.putalpha(Image.fromarray((np.arange(w * h).reshape(h, w) % 256).astype(np.uint8)))
    rgba.save(d / "rgba-lossless.webp", lossless=True)
    img.save(d / "lossy.webp", quality=80)
    Image.open(d / "lossy.webp").convert("RGB").save(d / "lossy-pil.png")

    def exif(o):
        e = Image.Exif()
        e[0x0112] = o
        return e.tobytes()

    for o in range(1, 9):
        img.save(d / f"orient{o}.png", exif=exif(o))
        ImageOps.exif_transpose(Image.open(d / f"orient{o}.png")).convert("RGB").save(d / f"orient{o}-upright.png")
    img.save(d / "orient6.jpg", quality=95, exif=exif(6))
    ImageOps.exif_transpose(Image.open(d / "orient6.jpg")).save(d / "orient6-jpg-upright.png")
    img.save(d / "orient3.webp", lossless=True, exif=exif(3))
    ImageOps.exif_transpose(Image.open(d / "orient3.webp")).convert("RGB").save(d / "orient3-webp-upright.png")
    img.save(d / "orient8.tif", tiffinfo={0x0112: 8})
    ImageOps.exif_transpose(Image.open(d / "orient8.tif")).convert("RGB").save(d / "orient8-tif-upright.png")


def write_versions():
    v = versions()
    (FIX / "VERSIONS.json").write_text(json.dumps(v, indent=2) + "\n")
    print(json.dumps(v))


if __name__ == "__main__":
    # `make_fixtures.py lpips clip …` rebuilds only those parts (each is deterministic on its own).
    if len(sys.argv) > 1:
        for part in sys.argv[1:]:
            globals()[f"make_{part}"]()
        # The full run's versions stay; each rebuilt part records the ones that made it.
        rec = json.loads((FIX / "VERSIONS.json").read_text())
        for part in sys.argv[1:]:
            rec.setdefault("parts", {})[part] = versions()
        (FIX / "VERSIONS.json").write_text(json.dumps(rec, indent=2) + "\n")
    else:
        main()
