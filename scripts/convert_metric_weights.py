#!/usr/bin/env python3
"""Converts published metric-network weights you already have into the safetensors files
spire-core's metrics load. Nothing is downloaded.

    # LPIPS: torchvision's ImageNet backbone + the lpips package's linear heads
    python scripts/convert_metric_weights.py lpips --net alex \
        --backbone ~/.cache/torch/hub/checkpoints/alexnet-owt-7be5be79.pth \
        [--heads .../site-packages/lpips/weights/v0.1/alex.pth] --out lpips-alex.safetensors
    python scripts/convert_metric_weights.py lpips --net vgg \
        --backbone ~/.cache/torch/hub/checkpoints/vgg16-397923af.pth --out lpips-vgg.safetensors

    # FID: pytorch-fid's Inception-v3 (the TF FID weights ported to PyTorch)
    python scripts/convert_metric_weights.py inception \
        --weights ~/.cache/torch/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth \
        --out inception-fid.safetensors

    # CLIP-I / CLIP-T: a transformers CLIPModel folder (e.g. openai/clip-vit-large-patch14)
    # whose weights are only in pytorch_model.bin gets a model.safetensors beside them.
    python scripts/convert_metric_weights.py clip --model path/to/clip-vit-large-patch14

Needs torch and safetensors (and the lpips package when --heads is not given).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

# The features.* indices each LPIPS stage ends with (torchvision layer numbering).
LPIPS_CONVS = {
    "alex": [0, 3, 6, 8, 10],
    "vgg": [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28],
}
LPIPS_CHANNELS = {"alex": [64, 192, 384, 256, 256], "vgg": [64, 128, 256, 512, 512]}


def lpips_tensors(backbone: dict, heads: dict, net: str) -> dict:
    """spire's LPIPS tensors from a torchvision state dict (`features.N.*`) or an lpips
    `LPIPS` state dict (`net.sliceK.N.*`), and the heads (`linK.model.1.weight`)."""
    out = {}
    for k, v in backbone.items():
        parts = k.split(".")
        if parts[0] == "features" and len(parts) == 3:
            out[k] = v
        elif parts[0] == "net" and parts[1].startswith("slice") and len(parts) == 4:
            out[f"features.{parts[2]}.{parts[3]}"] = v
    for i in LPIPS_CONVS[net]:
        for kind in ("weight", "bias"):
            if f"features.{i}.{kind}" not in out:
                raise SystemExit(f"backbone has no features.{i}.{kind}: is it a torchvision {net} checkpoint?")
    for k, c in enumerate(LPIPS_CHANNELS[net]):
        w = heads.get(f"lin{k}.model.1.weight", heads.get(f"lins.{k}.model.1.weight"))
        if w is None:
            raise SystemExit(f"heads have no lin{k}.model.1.weight: is it an lpips v0.1 {net}.pth?")
        if tuple(w.shape) != (1, c, 1, 1):
            raise SystemExit(f"lin{k} has shape {tuple(w.shape)}, expected (1, {c}, 1, 1)")
        out[f"lin{k}.weight"] = w
    return {k: v.detach().float().contiguous() for k, v in out.items()}


def inception_tensors(state: dict) -> dict:
    """spire's FID Inception tensors: pytorch-fid's `FIDInceptionA/C/E` network, stored under
    torchvision's Inception3 names (what `pt_inception-2015-12-05-*.pth` holds), minus the
    classifier and the auxiliary head."""
    out = {}
    for k, v in state.items():
        if k.startswith("AuxLogits") or k.startswith("fc.") or k.endswith("num_batches_tracked"):
            continue
        out[k] = v.detach().float().contiguous()
    for needed in ("Conv2d_1a_3x3.conv.weight", "Mixed_7c.branch_pool.bn.running_var"):
        if needed not in out:
            raise SystemExit(f"no {needed}: is this pytorch-fid's pt_inception weights file?")
    return out


def main(argv=None):
    import torch
    from safetensors.torch import save_file

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    lp = sub.add_parser("lpips")
    lp.add_argument("--net", choices=["alex", "vgg"], required=True)
    lp.add_argument("--backbone", type=Path, required=True)
    lp.add_argument("--heads", type=Path)
    lp.add_argument("--out", type=Path, required=True)
    inc = sub.add_parser("inception")
    inc.add_argument("--weights", type=Path, required=True)
    inc.add_argument("--out", type=Path, required=True)
    cl = sub.add_parser("clip")
    cl.add_argument("--model", type=Path, required=True)
    a = ap.parse_args(argv)

    load = lambda p: torch.load(p, map_location="cpu", weights_only=True)
    if a.what == "lpips":
        heads_path = a.heads
        if heads_path is None:
            import lpips
            heads_path = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{a.net}.pth"
        t = lpips_tensors(load(a.backbone), load(heads_path), a.net)
        save_file(t, a.out, metadata={"format": "spire-lpips/1", "net": a.net})
    elif a.what == "inception":
        save_file(inception_tensors(load(a.weights)), a.out, metadata={"format": "spire-fid-inception/1"})
    else:
        src = a.model / "pytorch_model.bin"
        if (a.model / "model.safetensors").exists():
            print(f"{a.model / 'model.safetensors'} already exists")
            return
        state = load(src)
        save_file({k: v.contiguous() for k, v in state.items()}, a.model / "model.safetensors", metadata={"format": "pt"})
        a.out = a.model / "model.safetensors"
    print(f"wrote {a.out}")


if __name__ == "__main__":
    sys.exit(main())
