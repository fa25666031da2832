#!/usr/bin/env bash
# Does the plan pick the faster of one piece and tiles? Restores one image per process (1
# denoising step from pure noise) with the plan's choice (`auto`), forced into one piece
# (`whole`) and forced into 64-latent-pixel tiles, for the built-in model and SD 2.1-base sized
# weights. One JSON line per run; docs/large-images.md has the numbers.
#
#     bash scripts/bench_plan.sh [tiny-sizes] [sd-sizes]
set -euo pipefail
cd "$(dirname "$0")/.."
tiny=${1:-"1024 2048"}
sd=${2:-"1024"}
cargo build --release -q -p spire-core --example bench_large
run() { RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-2} target/release/examples/bench_large --steps 1 "$@" 2>/dev/null; }
for s in $tiny; do for t in auto whole 64; do run --model tiny --size "$s" --tile-size "$t"; done; done
for s in $sd; do for t in auto whole 64; do run --model sd --size "$s" --tile-size "$t"; done; done
