#!/usr/bin/env bash
# Large-image benchmark: restores a 2048×2048 image with the built-in model and with SD 2.1-base
# sized random weights, untiled and with a 2 GiB memory limit, each in its own process (peak
# memory is per process). Prints one JSON line per run; docs/performance.md has the numbers.
#
#     bash scripts/bench_large.sh [size] [limit]
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-2048}
limit=${2:-2GiB}
cargo build --release -q -p spire-core --example bench_large
for model in tiny sd; do
  for l in unlimited "$limit"; do
    RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-2} target/release/examples/bench_large \
      --model "$model" --size "$size" --memory-limit "$l" --steps 1
  done
done
