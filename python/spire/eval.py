"""The paper's evaluation from Python: ``python -m spire.eval --data photos/``.

Builds the parameterized (with synthesized restoration prompts) and Real-ESRGAN (blind) test
sets from a folder of clean photos at fixed seeds, restores them, scores FID, LPIPS, PSNR,
SSIM, CLIP-I and CLIP-T, and writes ``eval.md`` (the paper's table) and ``eval.csv``. The
work happens in ``spire-core`` (the same code as ``spire eval``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional

from . import Restorer, evaluate


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spire.eval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="folder of clean photos")
    ap.add_argument("--captions", type=Path, help="captions.tsv (default: DATA/captions.tsv if present)")
    ap.add_argument("--only", help="comma-separated file names to use")
    ap.add_argument("--model", type=Path, help="model folder (default: the built-in spire-tiny)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--rows", choices=["paper", "plain"], default="paper")
    ap.add_argument("--lpips", type=Path, help="LPIPS weights (scripts/convert_metric_weights.py lpips)")
    ap.add_argument("--clip", type=Path, help="transformers CLIPModel folder")
    ap.add_argument("--inception", type=Path, help="FID Inception weights")
    ap.add_argument("--out", type=Path, default=Path("eval-out"))
    ap.add_argument("--save-images", action="store_true")
    a = ap.parse_args(argv)

    restorer = Restorer.from_pretrained(str(a.model)) if a.model else Restorer.builtin()
    start = time.monotonic()

    def progress(done: int, total: int, what: str) -> None:
        filled = 30 * done // max(total, 1)
        eta = (time.monotonic() - start) / max(done, 1) * (total - done)
        print(f"\r[{'#' * filled}{'-' * (30 - filled)}] {done}/{total} ETA {eta:5.0f}s {what[:50]:<50}",
              end="", file=sys.stderr, flush=True)

    report = evaluate(
        restorer, a.data, captions=a.captions,
        only=[n for n in a.only.split(",") if n] if a.only else None,
        size=a.size, seed=a.seed, steps=a.steps, rows=a.rows, lpips=a.lpips, clip=a.clip,
        inception=a.inception, save_images=(a.out / "images") if a.save_images else None, progress=progress,
    )
    print(file=sys.stderr)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "eval.md").write_text(report["markdown"])
    (a.out / "eval.csv").write_text(report["csv"])
    print(report["markdown"])
    print(f"wrote {a.out / 'eval.md'} and {a.out / 'eval.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
