#!/usr/bin/env bash
# Backbone training-budget sweep for spire-tiny (PyTorch probe, one process per variant, side
# by side): constant vs cosine learning rate, batch 8 vs 32, 3000 vs 9000 steps, lr 5e-4 to
# 2e-3; x0-prediction on t < 100 as the recipe; x0 PSNR at t = 999/200/10 on 16 held-out
# 64x64 crops every 1000 steps.
#   [DEVICE=cuda] bash scripts/explore/backbone_sweep.sh OUTDIR
# (docs/builtin-model.md, "training budget": run on one H200, all eight at once, 9 minutes; the
# 9000-step variants reached step 7000.) Each variant's log is OUTDIR/NAME.log.
set -u
out=${1:?OUTDIR}; mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
export EVALCROPS=4 TMAX=100 WARMUP=100 PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
run() {
  name=$1
  python3 "$here/tiny_backbone.py" "$out/$name" sample "${STEPS:-3000}" '[48,64,80]' "${LR:-5e-4}" \
    > "$out/$name.log" 2>&1 &
}
run base
LRSCHED=cosine run cosine
BATCH=32 run b32
BATCH=32 LRSCHED=cosine run b32cos
STEPS=9000 run long
STEPS=9000 LRSCHED=cosine run longcos
LR=1e-3 LRSCHED=cosine run lr1e3cos
LR=2e-3 LRSCHED=cosine run lr2e3cos
wait
grep -H "psnr" "$out"/*.log | tail -n 64
