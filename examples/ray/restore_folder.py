#!/usr/bin/env python3
"""Restore every image under a folder on a Ray cluster, one loaded model per actor.

    pip install "spire-restore[ray]"
    python examples/ray/restore_folder.py IN_DIR OUT_DIR [--prompts prompts.tsv]
        [--model MODEL_DIR | --checkpoint SD.safetensors --controlnet CN.safetensors]
        [--actors 2] [--cpus-per-actor 1] [--gpus-per-actor 0] [--address auto]
        [--format same|png|jpg|parquet]

Without --address this starts a local cluster on this machine. On a multi-machine cluster the
one change is the address (`--address auto` on a cluster node, or `ray://head:10001`); every
node needs spire installed and IN_DIR, OUT_DIR and the model at the same paths (shared
storage). Rerunning the command resumes: finished images are skipped, failed ones retried.
"""
import argparse
import sys

import ray

import spire
import spire.ray as sr


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--prompts", help="file<TAB>restoration prompt<TAB>semantic prompt")
    ap.add_argument("--model", help="model folder (default: the built-in model)")
    ap.add_argument("--checkpoint", help="single-file SD checkpoint (.safetensors)")
    ap.add_argument("--controlnet", help="adaptor/ControlNet folder or single file")
    ap.add_argument("--config", help="config folder for a single-file checkpoint")
    ap.add_argument("--device", default="cpu", help="cpu, cuda (needs the cuda build) or metal")
    ap.add_argument("--actors", type=int, default=1)
    ap.add_argument("--cpus-per-actor", type=float, default=1)
    ap.add_argument("--gpus-per-actor", type=float, default=0)
    ap.add_argument("--address", help="Ray cluster address (default: start a local one)")
    ap.add_argument("--format", default="same", choices=["same", "png", "jpg", "parquet"])
    ap.add_argument("--prompt", default=None, help="restoration prompt for images without one")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    if a.checkpoint:
        restorer = spire.Restorer.from_single_file(a.checkpoint, adaptor=a.controlnet, config=a.config, device=a.device)
    elif a.model:
        restorer = spire.Restorer.from_pretrained(a.model, adaptor=a.controlnet, device=a.device)
    else:
        restorer = spire.Restorer.builtin(device=a.device)

    ray.init(address=a.address)  # None: a local cluster on this machine
    options = {"seed": a.seed}
    if a.prompt:
        options["restoration_prompt"] = a.prompt
    if a.steps:
        options["num_inference_steps"] = a.steps
    report = sr.restore_dataset(
        a.input,
        restorer=restorer,
        out=a.output,
        format=a.format,
        prompts=a.prompts,
        concurrency=a.actors,
        num_cpus=a.cpus_per_actor,
        num_gpus=a.gpus_per_actor or None,
        **options,
    )
    print(
        f"{report['restored']} restored, {report['skipped']} skipped, {len(report['failed'])} failed "
        f"in {report['seconds']:.1f} s ({report['images_per_sec']:.2f} images/s)"
    )
    for name, message in report["failed"]:
        print(f"  {name}: {message}", file=sys.stderr)
    for name in report["unmatched_prompts"]:
        print(f"  warning: prompts row `{name}` matches no image", file=sys.stderr)
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
