#!/usr/bin/env python3
"""The model benchmark: spire (candle) against diffusers/PyTorch on the same shapes.

    venv/bin/python scripts/bench_models.py [--runs 3] [--threads 2] [--models unet,vae]
        [--simd avx512,avx2] [--variants default,im2col,f16]   # PyTorch capped alike
        [--interleave] [--sdcpp BUILD/bin/sd-cli --sdcpp-model f32.safetensors,f16.safetensors --sdcpp-args ';--diffusion-fa']

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


def torch_bench(model: str, runs: int, threads: int, paced: bool = False):
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
        # --paced: each pass waits for a line on stdin and reports its time at once (see
        # `interleaved`).
        if paced:
            sys.stdin.readline()
        t = time.perf_counter()
        f()
        if paced:
            print(json.dumps({"warm_s": round(time.perf_counter() - t, 4)}), flush=True)
        secs = []
        for _ in range(runs):
            if paced:
                sys.stdin.readline()
            t = time.perf_counter()
            f().sum().item()
            secs.append(time.perf_counter() - t)
            if paced:
                print(json.dumps({"run_s": round(secs[-1], 4)}), flush=True)
    secs.sort()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"impl": "pytorch", "model": name, "runs": runs, "min_s": round(secs[0], 3),
                      "median_s": round(secs[len(secs) // 2], 3), "init_s": round(init, 2),
                      "peak_rss_mib": round(rss), "threads": threads,
                      "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                      "isa_caps": {k: v for k, v in os.environ.items() if k in TORCH_CAPS["avx2"]}}))


# How PyTorch is capped to what it runs on a CPU without AVX-512, so an `--simd avx2` row compares
# like with like on one machine: ATen's vectorised kernels (ATEN_CPU_CAPABILITY), oneDNN's
# convolutions (ONEDNN_MAX_CPU_ISA) and MKL's GEMMs under the linear layers
# (MKL_ENABLE_INSTRUCTIONS). The JSON row reports torch's own reading of its capability.
TORCH_CAPS = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "baseline": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
}


def interleaved(jobs, runs: int) -> list[dict]:
    """Runs the `--paced` commands `jobs` ([(cmd, env)]) side by side, one pass at a time in
    turn (the warm-ups first, then `runs` rounds, each round starting one job later), so a
    drift in the machine's speed — which on the 2-core development machines reaches 20 % within
    minutes — hits every job alike. Each job is its own process (its own peak RSS); returns
    each job's final JSON result, whose `median_s`/`min_s` are over its interleaved passes."""
    procs = []
    for cmd, env in jobs:
        procs.append(subprocess.Popen(cmd + ["--paced"], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, bufsize=1))

    def one_pass(p, key):
        p.stdin.write("\n")
        p.stdin.flush()
        while True:
            line = p.stdout.readline()
            if not line:
                raise SystemExit(f"benchmark process {p.args} ended early (status {p.wait()})")
            if line.startswith("{") and key in line:
                return json.loads(line)[key]

    for p in procs:
        one_pass(p, "warm_s")
    for r in range(runs):
        for i in range(len(procs)):
            one_pass(procs[(r + i) % len(procs)], "run_s")
    results = []
    for p in procs:
        # Not communicate(): it reads the pipe itself and would miss what readline() buffered.
        p.stdin.close()
        out = p.stdout.read()
        p.wait()
        if p.returncode:
            raise SystemExit(f"benchmark process {p.args} failed (status {p.returncode})")
        lines = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
        res = [l for l in lines if "profile" not in l and "run_s" not in l][-1]
        res["profile_rows"] = [l for l in lines if "profile" in l]
        res["interleaved"] = True
        results.append(res)
    return results


def run_json(cmd, env=None) -> dict:
    out = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    lines = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    result = [l for l in lines if "profile" not in l][-1]
    result["profile_rows"] = [l for l in lines if "profile" in l]
    return result


def profile_tables(rows) -> str:
    """Per model: seconds per forward pass by kernel kind (share of the pass) for every spire
    configuration, then the ten costliest shapes of the first configuration."""
    out = []
    for model in dict.fromkeys(s["model"] for s, *_ in rows):
        runs = [s for s, *_ in rows if s["model"] == model and s["profile_rows"]]
        if not runs:
            continue
        cols = [f"{s.get('simd')} {s['variant']}" for s in runs]
        kinds = list(dict.fromkeys(r["kind"] for s in runs for r in s["profile_rows"]))
        out.append(f"**{model}**, s per forward pass (share)\n")
        out.append("| kernel | " + " | ".join(cols) + " |")
        out.append("|---|" + "---:|" * len(cols))
        for k in kinds + ["other (candle ops)", "total"]:
            cells = []
            for s in runs:
                total = s["median_s"]
                covered = sum(r["secs"] for r in s["profile_rows"])
                v = {"total": total, "other (candle ops)": max(total - covered, 0.0)}.get(
                    k, sum(r["secs"] for r in s["profile_rows"] if r["kind"] == k))
                cells.append(f"{v:.3f} ({100 * v / total:.0f} %)" if v else "—")
            out.append(f"| {k} | " + " | ".join(cells) + " |")
        for s in runs:
            top = sorted(s["profile_rows"], key=lambda r: -r["secs"])[:10]
            out.append(f"\n{model}, {s.get('simd')} {s['variant']}: the ten costliest shapes\n")
            out.append("| kernel | shape | calls | s | in GEMMs | GFLOP/s |")
            out.append("|---|---|---:|---:|---:|---:|")
            for r in top:
                gf = r["gflops"] / r["secs"] if r["secs"] and r["gflops"] else 0
                out.append(f"| {r['kind']} | {r['shape']} | {r['calls']:g} | {r['secs']:.3f} "
                           f"| {100 * r['gemm_secs'] / r['secs']:.0f} % | {gf:.0f} |")
        out.append("")
    return "\n".join(out)


# spire configurations: environment and arguments of `bench_models`.
VARIANTS = {
    "default": ({}, []),                          # Winograd 3×3 convolutions (F(4×4) on large maps), f32 weights
    "wino2": ({"SPIRE_WINOGRAD": "2"}, []),       # Winograd F(2×2, 3×3) only
    "im2col": ({"SPIRE_WINOGRAD": "0"}, []),      # every convolution as im2col + GEMM (before Winograd)
    "f16": ({}, ["--weights", "f16"]),            # convolution/linear weights kept in f16
    "bf16": ({}, ["--weights", "bf16"]),
}


def sdcpp_bench(cli: str, model: str, threads: int, extra: list[str]) -> dict:
    """stable-diffusion.cpp's CLI on an SD-2.1-base-sized file: 3 Euler steps at cfg 1 (one UNet
    evaluation per step, batch 1) at 512×512, then the VAE decode. Its own timings are parsed
    from the log; peak RSS is the child's (os.wait4), for the whole process."""
    import re
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [cli, "-m", model, "-p", "a photo of a cat", "-W", "512", "-H", "512", "--steps", "3",
               "--sampling-method", "euler", "--cfg-scale", "1", "-t", str(threads), "-s", "42", "-v",
               "-o", os.path.join(tmp, "out.png"), *extra]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        log = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"sd-cli failed ({proc.returncode}):\n{log[-3000:]}")
    def taking(what):
        m = re.findall(what + r" completed, taking ([0-9.]+)s", log)
        return float(m[-1]) if m else float("nan")
    version = re.search(r"stable-diffusion\.cpp version ([^\s,]+)", log)
    return {"impl": "sdcpp", "model_file": os.path.basename(model), "args": " ".join(extra),
            "unet_eval_s": round(taking("sampling") / 3, 3), "vae_decode_s": round(taking("decode_first_stage"), 3),
            "peak_rss_mib": round(usage.ru_maxrss / 1024), "wall_s": round(wall, 1), "threads": threads,
            "version": version.group(1) if version else "unknown"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="unet,vae")
    ap.add_argument("--simd", default="",
                    help="SPIRE_SIMD levels to run spire at, e.g. avx512,avx2 (default: the CPU's best); "
                         "they cap the fused kernels and their GEMMs, and PyTorch is run capped alike (TORCH_CAPS)")
    ap.add_argument("--variants", default="default",
                    help="spire configurations, comma-separated: " + ", ".join(VARIANTS))
    ap.add_argument("--sdcpp", help="stable-diffusion.cpp's sd-cli: adds its rows (shared/tools/sdcpp-anchor builds it)")
    ap.add_argument("--sdcpp-model", default="",
                    help="comma-separated SD-2.1-base-sized files for sd-cli (make_model.py writes f32 and f16 ones)")
    ap.add_argument("--sdcpp-args", default="",
                    help="semicolon-separated extra sd-cli argument sets, one run each per file, e.g. ';--diffusion-fa'")
    ap.add_argument("--profile", action="store_true",
                    help="SPIRE_PROFILE=1 for the spire runs, and the per-layer tables (the profiled runs are a little slower)")
    ap.add_argument("--interleave", action="store_true",
                    help="run PyTorch and the spire variants of one model and SIMD level side by side, "
                         "alternating single passes, so the machine's drift hits them alike")
    ap.add_argument("--torch", help=argparse.SUPPRESS)
    ap.add_argument("--paced", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.torch:
        torch_bench(a.torch, a.runs, a.threads, a.paced)
        return
    subprocess.run(["cargo", "build", "--release", "--example", "bench_models"], cwd=ROOT, check=True)
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    if a.profile:
        env["SPIRE_PROFILE"] = "1"
    rows = []
    levels = [l for l in a.simd.split(",") if l] or [""]
    variants = [v for v in a.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            raise SystemExit(f"unknown variant {v!r} ({', '.join(VARIANTS)})")
    torch_rows = {}
    for model in a.models.split(","):
        for level in levels:
            # PyTorch at the same instruction-set cap as spire (its best code when uncapped).
            tenv = dict(os.environ, **TORCH_CAPS.get(level, {}))
            tcmd = [sys.executable, __file__, "--torch", model, "--runs", str(a.runs), "--threads", str(a.threads)]
            jobs = []
            for v in variants:
                venv, vargs = VARIANTS[v]
                e = dict(env, **venv)
                if level:
                    e["SPIRE_SIMD"] = level
                jobs.append(([str(ROOT / "target/release/examples/bench_models"), model, "--runs", str(a.runs), *vargs], e))
            if a.interleave:
                p, *spire = interleaved([(tcmd, tenv)] + jobs, a.runs)
            else:
                p = run_json(tcmd, tenv)
                spire = [run_json(cmd, e) for cmd, e in jobs]
            if level not in TORCH_CAPS:
                torch_rows.setdefault(model, p)
            print(json.dumps({k: x for k, x in p.items() if k != "profile_rows"}), flush=True)
            for v, s in zip(variants, spire):
                s["variant"] = v
                rows.append((s, p, model))
                print(json.dumps({k: x for k, x in s.items() if k != "profile_rows"}), flush=True)
    sd_rows = []
    if a.sdcpp:
        for f in [f for f in a.sdcpp_model.split(",") if f]:
            for extra in a.sdcpp_args.split(";") if a.sdcpp_args else [""]:
                r = sdcpp_bench(a.sdcpp, f, a.threads, extra.split())
                sd_rows.append(r)
                print(json.dumps(r), flush=True)
    print()
    print("| model | SIMD (spire / PyTorch) | spire variant | spire s | PyTorch s | time ratio | vs PyTorch uncapped | spire peak RSS MiB | PyTorch peak RSS MiB | RSS ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for s, p, model in rows:
        best = torch_rows.get(model)
        vs_best = f"{s['median_s'] / best['median_s']:.2f}×" if best else "—"
        print(f"| {s['model']} | {s.get('simd', '?')} / {p.get('cpu_capability', '?')} | {s['variant']} | {s['median_s']:.2f} | {p['median_s']:.2f} "
              f"| {s['median_s'] / p['median_s']:.2f}× | {vs_best} | {s['peak_rss_mib']:.0f} | {p['peak_rss_mib']:.0f} "
              f"| {s['peak_rss_mib'] / p['peak_rss_mib']:.2f}× |")
    if sd_rows:
        print()
        print("| stable-diffusion.cpp | UNet eval s | vs PyTorch UNet | VAE decode s | vs PyTorch VAE | peak RSS MiB (whole process) |")
        print("|---|---|---|---|---|---|")
        pu, pv = torch_rows.get("unet"), torch_rows.get("vae")
        for r in sd_rows:
            ru = f"{r['unet_eval_s'] / pu['median_s']:.2f}×" if pu else "—"
            rv = f"{r['vae_decode_s'] / pv['median_s']:.2f}×" if pv else "—"
            print(f"| {r['model_file']} {r['args']} | {r['unet_eval_s']:.2f} | {ru} | {r['vae_decode_s']:.2f} | {rv} | {r['peak_rss_mib']} |")
    how = "interleaved passes (--interleave)" if a.interleave else "runs"
    print(f"\n{a.threads} threads, median of {a.runs} {how} after one warm-up; torch {rows[0][1].get('torch') if rows else '?'}")
    if a.profile:
        print()
        print(profile_tables(rows))


if __name__ == "__main__":
    main()
