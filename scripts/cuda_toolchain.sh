#!/usr/bin/env bash
# Installs the real CUDA 13.0 toolchain from the Python registry into .cuda-venv (no GPU, no
# system toolkit needed; ~650 MB download) and prepares it for linking: unversioned `.so`
# names and a stub `libcuda.so.1` (the driver; every entry point returns
# CUDA_ERROR_STUB_LIBRARY), which candle's cudarc links at build time.
#
#   source scripts/cuda_toolchain.sh      # sets CUDA_HOME, PATH, CUDA_COMPUTE_CAP
#   cargo build --release -p spire-core --features cuda
#
# Pinned to CUDA 13.0: the GPU machines' driver (580) is CUDA 13.0 and cannot JIT PTX from a
# newer nvcc. CUDA_COMPUTE_CAP=90 builds sm_90a code (H100/H200 only); set it for other GPUs.
# Run it before the first `cargo build --features cuda`: cudarc's build script adds only the
# library directories that exist when it runs.
set -euo pipefail
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_venv="${SPIRE_CUDA_VENV:-$_root/.cuda-venv}"
if [ ! -x "$_venv/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$_venv"
fi
"$_venv/bin/python" -m pip install -q \
  "nvidia-cuda-nvcc==13.0.88" "nvidia-cuda-crt==13.0.88" "nvidia-nvvm==13.0.88" \
  "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cccl==13.0.85" \
  "nvidia-cuda-nvrtc==13.0.88" "nvidia-cublas==13.0.2.14" "nvidia-curand==10.4.0.35"
CUDA_HOME="$("$_venv/bin/python" -c 'import nvidia.cu13 as m; print(list(m.__path__)[0])')"
(
  cd "$CUDA_HOME/lib"
  for l in cudart.so.13 nvrtc.so.13 cublas.so.13 cublasLt.so.13 curand.so.10; do
    ln -sf "lib$l" "lib${l%.*}"
  done
  mkdir -p stubs
  if [ ! -f stubs/libcuda.so ]; then
    gcc -E -P -D__CUDA_API_VERSION_INTERNAL "$CUDA_HOME/include/cuda.h" |
      grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | tr -d ' (' | sort -u |
      sed 's/.*/int &(void) { return 34; }/' > stubs/libcuda_stub.c
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o stubs/libcuda.so stubs/libcuda_stub.c
    ln -sf libcuda.so stubs/libcuda.so.1
  fi
)
export CUDA_HOME
export PATH="$CUDA_HOME/bin:$PATH"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
echo "CUDA 13.0 toolchain ready: CUDA_HOME=$CUDA_HOME, CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"
echo "binaries built with it need libcuda.so.1 at load time: the driver on a GPU machine, or"
echo "  LD_LIBRARY_PATH=$CUDA_HOME/lib:$CUDA_HOME/lib/stubs  to run CPU tests without one"
