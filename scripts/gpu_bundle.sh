#!/usr/bin/env bash
# Prepares what a GPU machine without a package registry needs for scripts/gpu_check.sh, in
# target/gpu/ (≤ 64 MiB, to carry): the CUDA build of the check, stripped (55.5 MB measured),
# and the diffusers wheel (the GPU image has torch, transformers, safetensors and tokenizers,
# not diffusers). Builds with the real CUDA 13.0 toolchain (scripts/cuda_toolchain.sh): ~14
# minutes cold on 2 cores, in its own target folder.
#
#   bash scripts/gpu_bundle.sh
#   # then, on the GPU machine (device tool: carry ["target/gpu"]):
#   bash scripts/gpu_check.sh --device cuda     # finds target/gpu by itself
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cuda_toolchain.sh >/dev/null
export CARGO_TARGET_DIR=${CUDA_TARGET_DIR:-$PWD/target/cuda-real} CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-2}
cargo build --release -p spire-core --features cuda --example gpu_check
mkdir -p target/gpu/wheels
strip -o target/gpu/gpu_check "$CARGO_TARGET_DIR/release/examples/gpu_check"
rm -f target/gpu/wheels/*.whl
"${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: -d target/gpu/wheels "diffusers==${DIFFUSERS_VERSION:-0.42.1}"
du -sh target/gpu target/gpu/gpu_check target/gpu/wheels/*.whl
