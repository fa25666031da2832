#!/usr/bin/env python3
"""Builds the evidence of docs/builtin-model.md from `cargo run --release --example builtin_report`.

    cargo run --release -p spire-core --example builtin_report > target/builtin-report/results.jsonl
    venv/bin/python scripts/builtin_report.py target/builtin-report

Adds classical baselines computed with scikit-image on the same degraded images (bicubic for
upsampling — the degraded input itself; NL-means for noise and JPEG; Richardson–Lucy with the
true Gaussian PSF for blur), prints the Markdown table, and draws docs/img/builtin-walk.png
(prompt-space walk: images and measured curves), docs/img/builtin-table.png (one photo per row)
and docs/img/builtin-loss-{backbone,adaptor}.png (training loss, from target/spire-tiny/loss-*.csv
or the committed recipes/spire-tiny/logs/).
Needs numpy, scikit-image, PyWavelets (for the noise estimate), pillow, matplotlib.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.restoration import denoise_nl_means, estimate_sigma, richardson_lucy

ROOT = Path(__file__).resolve().parent.parent
IMG = ROOT / "docs" / "img"


def load(p: Path) -> np.ndarray:
    return np.asarray(Image.open(p).convert("RGB")).astype(np.float64) / 255


def gaussian_psf(sigma: float) -> np.ndarray:
    r = int(np.ceil(3 * sigma))
    x = np.arange(-r, r + 1)
    g = np.exp(-x ** 2 / (2 * sigma ** 2))
    k = np.outer(g, g)
    return k / k.sum()


def nlm(y: np.ndarray, sigma: float | None = None) -> np.ndarray:
    s = sigma if sigma is not None else float(np.mean(estimate_sigma(y, channel_axis=-1)))
    return denoise_nl_means(y, h=0.8 * s, sigma=s, fast_mode=True, patch_size=5, patch_distance=6, channel_axis=-1)


def rl(y: np.ndarray, sigma: float) -> np.ndarray:
    psf = gaussian_psf(sigma)
    return np.stack([richardson_lucy(y[..., c], psf, num_iter=30, clip=True) for c in range(3)], -1)


CLASSICAL = {
    0: ("NL-means (σ known)", lambda y: nlm(y, 0.10)),
    1: ("Richardson–Lucy, true PSF", lambda y: rl(y, 2.0)),
    2: ("bicubic", lambda y: y),
    3: ("NL-means (σ estimated)", lambda y: nlm(y)),
    4: ("NL-means, then Richardson–Lucy", lambda y: rl(np.clip(nlm(y, 0.05), 0, 1), 1.5)),
}


def score(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    a8 = np.clip(np.round(a * 255), 0, 255).astype(np.uint8)
    b8 = np.clip(np.round(b * 255), 0, 255).astype(np.uint8)
    return (peak_signal_noise_ratio(b8, a8, data_range=255),
            structural_similarity(b8, a8, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                  channel_axis=-1, data_range=255))


def main(out: Path):
    rows = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines() if l.startswith("{")]
    table = [r for r in rows if r["kind"] == "table"]
    by_row: dict[int, list] = {}
    for r in table:
        y = load(out / f"row{r['row']}" / f"degraded_{r['image']}")
        clean = load(out / "clean" / r["image"])
        name, f = CLASSICAL[r["row"]]
        r["classical"] = score(np.clip(f(y), 0, 1), clean)
        r["classical_name"] = name
        by_row.setdefault(r["row"], []).append(r)

    lines = ["| degradation (true prompt) | degraded | classical baseline | spire-tiny blind | spire-tiny, true prompt |",
             "|---|---|---|---|---|"]
    ok = True
    for k in sorted(by_row):
        rs = by_row[k]
        m = lambda key: (np.mean([r[key][0] for r in rs]), np.mean([r[key][1] for r in rs]))
        d, c, b, p = m("degraded"), m("classical"), m("blind"), m("prompt_result")
        ok &= p[0] > d[0] and p[0] > b[0]
        lines.append(f"| {rs[0]['label']} (`{rs[0]['prompt']}`) | {d[0]:.2f} / {d[1]:.3f} | "
                     f"{c[0]:.2f} / {c[1]:.3f} ({rs[0]['classical_name']}) | {b[0]:.2f} / {b[1]:.3f} | "
                     f"**{p[0]:.2f} / {p[1]:.3f}** |")
    print("\n".join(lines))
    print(f"\ntrue prompt beats degraded and blind on PSNR in every row: {ok}")
    secs = [r["restore_s"] for r in table]
    print(f"restore time per 256×256 image: median {np.median(secs):.2f} s")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    IMG.mkdir(parents=True, exist_ok=True)
    # One photo per row: degraded, blind, prompted, clean.
    fig, axes = plt.subplots(len(by_row), 4, figsize=(8, 2.1 * len(by_row)))
    for k in sorted(by_row):
        r = by_row[k][1]
        ims = [out / f"row{k}" / f"degraded_{r['image']}", out / f"row{k}" / f"blind_{r['image']}",
               out / f"row{k}" / f"prompt_{r['image']}", out / "clean" / r["image"]]
        for j, (p, t) in enumerate(zip(ims, ["degraded", "blind", "true prompt", "clean"])):
            axes[k, j].imshow(Image.open(p))
            axes[k, j].set_xticks([]), axes[k, j].set_yticks([])
            if k == 0:
                axes[k, j].set_title(t, fontsize=9)
        axes[k, 0].set_ylabel(r["label"], fontsize=8)
    fig.tight_layout()
    fig.savefig(IMG / "builtin-table.png", dpi=80)

    # Prompt-space walk.
    walk = [r for r in rows if r["kind"] == "walk"]
    base = next(r for r in rows if r["kind"] == "walk_input")
    fig = plt.figure(figsize=(11, 6.2))
    for i, kind in enumerate(["denoise", "deblur"]):
        w = [r for r in walk if r["walk"] == kind]
        for j, r in enumerate(w):
            ax = fig.add_subplot(4, 7, i * 7 + j + 1)
            ax.imshow(Image.open(out / "walk" / f"{kind}_{r['s']:.2f}.png").crop((64, 64, 192, 192)))
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{kind} {r['s']:g}", fontsize=8)
        ax = fig.add_subplot(2, 2, 3 + i)
        s = [r["s"] for r in w]
        ax.plot(s, [r["noise"] for r in w], "o-", label="residual noise σ (MAD)")
        ax.plot(s, [r["sharpness"] for r in w], "s-", label="sharpness (mean |∇|)")
        ax.axhline(base["clean_noise"], color="C0", ls=":", lw=1, label="clean: noise")
        ax.axhline(base["clean_sharpness"], color="C1", ls=":", lw=1, label="clean: sharpness")
        ax.set_xlabel(f"\"{kind.capitalize()} with sigma s\": s")
        ax.legend(fontsize=7, loc="upper left")
        # Residual blur on its own axis: the σ of the clean photo's Gaussian blur closest to
        # the result (noise does not count as sharpness there).
        ax2 = ax.twinx()
        ax2.plot(s, [r["residual_blur"] for r in w], "^-", color="C2", label="residual blur σ (right)")
        ax2.axhline(base["residual_blur"], color="C2", ls="--", lw=1, label="input: residual blur")
        ax2.set_ylim(0, max(base["residual_blur"], max(r["residual_blur"] for r in w)) * 1.15)
        ax2.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(IMG / "builtin-walk.png", dpi=80)
    for kind in ["denoise", "deblur"]:
        w = [r for r in walk if r["walk"] == kind]
        print(kind, "(s, noise, sharpness, residual blur, gradient gain, PSNR)", [(r["s"], round(r["noise"], 4), round(r["sharpness"], 4), r["residual_blur"], round(r.get("gradient_gain", float("nan")), 3), round(r["psnr"], 2)) for r in w])
    print("input: noise", base["noise"], "sharpness", base["sharpness"], "residual blur", base["residual_blur"], "clean:", base["clean_noise"], base["clean_sharpness"])
    # The walk's acceptance: residual noise falls as the denoise σ grows (not rising anywhere)
    # while the residual blur does not rise above the input's; the residual blur falls as the
    # deblur σ grows (sharpness rises).
    def monotone(v, falling):
        d = [b - a for a, b in zip(v, v[1:])]
        return all(x <= 0 for x in d) if falling else all(x >= 0 for x in d)
    dn = [r for r in walk if r["walk"] == "denoise"]
    db = [r for r in walk if r["walk"] == "deblur"]
    print("walk: denoise noise non-increasing:", monotone([r["noise"] for r in dn], True),
          "| denoise no blurrier than the input (residual blur at most 0.2 above its):",
          all(r["residual_blur"] - base["residual_blur"] <= 0.2 for r in dn),
          "| deblur residual blur non-increasing:", monotone([r["residual_blur"] for r in db], True),
          "strictly falling:", all(b < a for a, b in zip([r["residual_blur"] for r in db], [r["residual_blur"] for r in db][1:])),
          "| deblur gradient gain non-decreasing:",
          monotone([r["gradient_gain"] for r in db], False) if all("gradient_gain" in r for r in db) else "n/a")

    # Loss curves.
    sched = ROOT / "target" / "spire-tiny" / "scheduler" / "scheduler_config.json"
    target = {"epsilon": "ε", "v_prediction": "v", "sample": "x₀"}.get(
        json.loads(sched.read_text()).get("prediction_type", "epsilon") if sched.exists() else "?", "?")
    # One figure per stage, from the run's log in target/spire-tiny or the committed copy in
    # recipes/spire-tiny/logs/; a stage without a log keeps its committed figure.
    for tag in ["backbone", "adaptor"]:
        p = next((q for q in [ROOT / "target" / "spire-tiny" / f"loss-{tag}.csv",
                              ROOT / "recipes" / "spire-tiny" / "logs" / f"loss-{tag}.csv"] if q.exists()), None)
        if p is None:
            print(f"no loss-{tag}.csv: docs/img/builtin-loss-{tag}.png kept")
            continue
        rows_ = list(csv.DictReader(p.open()))
        step = np.array([float(r["step"]) for r in rows_])
        loss = np.array([float(r["loss"]) for r in rows_])
        k = max(1, len(loss) // 100)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(step, loss, color="0.8", lw=0.5)
        ax.plot(step[k - 1:], smooth, color="C0")
        ax.set_title(f"{tag} ({target}-prediction MSE)")
        ax.set_xlabel("step")
        ax.set_ylim(0, np.percentile(loss, 99.5))
        fig.tight_layout()
        fig.savefig(IMG / f"builtin-loss-{tag}.png", dpi=80)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "target/builtin-report"))
