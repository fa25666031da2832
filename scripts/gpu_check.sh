#!/usr/bin/env bash
# The GPU check: parity of every model and of the whole restore against the committed
# diffusers/transformers references on the device (f32, f16, bf16), then the SD 2.1-base UNet
# forward and a whole restore timed against diffusers/PyTorch eager on the same device, in one
# run. Prints a Markdown table; exits non-zero if a parity check fails.
#
#   scripts/gpu_check.sh                  # cuda: f16, 512², 20 DPM++ steps, 5 UNet runs
#   scripts/gpu_check.sh --device cpu     # the same end to end on the CPU (f32, 256², 4 steps)
#
# The spire binary: $GPU_CHECK_BIN, else target/release/examples/gpu_check, else built here
# (`--features cuda` for cuda; that needs scripts/cuda_toolchain.sh). The PyTorch side runs
# with $PYTHON (default python3) when it can import torch and diffusers; otherwise the table
# has spire's column only and says so. On a GPU machine without a package registry: build and
# strip the binary elsewhere, carry it, and point GPU_CHECK_BIN at it (docs/gpu.md).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2;;
    --device=*) DEVICE=${1#--device=}; shift;;
    *) echo "usage: $0 [--device cuda|cuda:N|cpu]" >&2; exit 2;;
  esac
done
if [ "$DEVICE" = cpu ]; then
  DTYPE=${DTYPE:-f32} SIZE=${SIZE:-256} STEPS=${STEPS:-4} RUNS=${RUNS:-2}
  THREADS=${THREADS:-$(nproc)}
  export RAYON_NUM_THREADS=$THREADS
else
  DTYPE=${DTYPE:-f16} SIZE=${SIZE:-512} STEPS=${STEPS:-20} RUNS=${RUNS:-5} THREADS=${THREADS:-0}
fi
if [ -z "${GPU_CHECK_BIN:-}" ] && [ -x target/gpu/gpu_check ] && [ "$DEVICE" != cpu ]; then
  GPU_CHECK_BIN=target/gpu/gpu_check          # carried from scripts/gpu_bundle.sh
fi
BIN=${GPU_CHECK_BIN:-target/release/examples/gpu_check}
case "$DEVICE" in
  cuda*)
    # cuBLAS, cuRAND and the CUDA runtime of PyTorch's nvidia.cu13 wheels, when the system has none.
    cu13=$(${PYTHON:-python3} -c 'import nvidia.cu13 as m; print(list(m.__path__)[0])' 2>/dev/null || true)
    [ -n "$cu13" ] && export LD_LIBRARY_PATH="$cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}";;
esac
# Carried wheels (diffusers) go on PYTHONPATH without touching the machine's environment.
if ls target/gpu/wheels/*.whl >/dev/null 2>&1; then
  site=$(mktemp -d)
  ${PYTHON:-python3} -m pip install -q --no-index --no-deps --no-compile --target "$site" target/gpu/wheels/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ ! -x "$BIN" ]; then
  features=()
  case "$DEVICE" in cuda*) features=(--features cuda);; esac
  cargo build --release -p spire-core --example gpu_check "${features[@]}"
fi
PY=${PYTHON:-python3}
OUT=${GPU_CHECK_OUT:-$(mktemp -d)}
mkdir -p "$OUT"
echo "== parity on $DEVICE (f32, f16, bf16)"
status=0
"$BIN" parity --device "$DEVICE" | tee "$OUT/parity.jsonl" || status=$?
echo "== timings on $DEVICE ($DTYPE)"
: > "$OUT/bench.jsonl"
torch_ok=0
if "$PY" -c "import torch, diffusers" 2>/dev/null; then torch_ok=1; fi
for what in unet restore; do
  "$BIN" bench --what "$what" --device "$DEVICE" --dtype "$DTYPE" --runs "$RUNS" --size "$SIZE" --steps "$STEPS" |
    grep '^{' | tee -a "$OUT/bench.jsonl"
  if [ $torch_ok = 1 ]; then
    "$PY" scripts/gpu_check_torch.py --what "$what" --device "$DEVICE" --dtype "$DTYPE" --runs "$RUNS" \
      --size "$SIZE" --steps "$STEPS" --threads "$THREADS" | grep '^{' | tee -a "$OUT/bench.jsonl"
  fi
done
echo
"${PY}" - "$OUT" "$torch_ok" <<'PYEOF' || cat "$OUT"/*.jsonl
import json, sys, platform, re
out, torch_ok = sys.argv[1], sys.argv[2] == "1"
par = [json.loads(l) for l in open(f"{out}/parity.jsonl") if l.startswith("{")]
bench = [json.loads(l) for l in open(f"{out}/bench.jsonl") if l.startswith("{")]
print("| parity check | dtype | max diff | tolerance | ok |\n|---|---|---|---|---|")
for r in par:
    print(f"| {r['check']} | {r['dtype']} | {r['max_diff']:.2e} | {r['tolerance']:.1e} | {'yes' if r['ok'] else 'NO'} |")
print()
print("| benchmark | device | dtype | spire s | PyTorch s | time ratio | spire peak MiB | PyTorch peak MiB | memory ratio |")
print("|---|---|---|---|---|---|---|---|---|")
for s in [b for b in bench if b["impl"] == "spire"]:
    p = next((b for b in bench if b["impl"] == "pytorch" and b["bench"] == s["bench"]), None)
    if p:
        print(f"| {s['bench']} | {s['device']} | {s['dtype']} | {s['median_s']:.3f} | {p['median_s']:.3f} | "
              f"{s['median_s'] / p['median_s']:.2f}x | {s['peak_mem_mib']:.0f} | {p['peak_mem_mib']:.0f} | "
              f"{s['peak_mem_mib'] / max(p['peak_mem_mib'], 1):.2f}x |")
    else:
        print(f"| {s['bench']} | {s['device']} | {s['dtype']} | {s['median_s']:.3f} | — | — | {s['peak_mem_mib']:.0f} | — | — |")
torch_v = next((b.get("torch") for b in bench if b["impl"] == "pytorch"), None)
try:
    info = open("/proc/cpuinfo").read()
    cpu = re.search(r"model name\s*:\s*(.*)", info).group(1).strip()
    cpu += " (AVX-512)" if " avx512f" in info else " (AVX2)" if " avx2" in info else ""
except (OSError, AttributeError):
    cpu = platform.machine()
dev = bench[0]["device"] if bench else "?"
gpu = ""
if dev.startswith("cuda") and torch_ok:
    import torch
    gpu = f"{torch.cuda.get_device_name(0)} (torch built for CUDA {torch.version.cuda}); "
print(f"\nmedian of runs after a warm-up; {gpu}host CPU {cpu}; "
      + (f"torch {torch_v}" if torch_ok else "PyTorch not importable here: spire's column only"))
PYEOF
exit $status
