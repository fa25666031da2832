#!/usr/bin/env bash
# Does `memory_limit` bound the whole call? Restores 1024² … 8192² images with the built-in
# model (1 step) under several limits, one process per run, and prints each run's peak
# resident memory (VmHWM) beside the loaded size, the limit and the plan's estimate. A call
# the plan refuses prints the refusal and the peak reached before it. docs/large-images.md has
# the table.
#
#     bash scripts/bench_memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p spire-core --example bench_large
run() { RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-2} target/release/examples/bench_large --model tiny --steps 1 "$@" 2>/dev/null; }
for cfg in "1024 256MiB" "1024 1GiB" "2048 512MiB" "2048 1GiB" "4096 1GiB" "4096 2GiB" "4096 4GiB" \
           "8192 1GiB" "8192 4GiB" "8192 8GiB"; do
  set -- $cfg
  run --size "$1" --memory-limit "$2"
done
