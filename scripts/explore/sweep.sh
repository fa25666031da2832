#!/usr/bin/env bash
# Parameterization sweep for spire-tiny (PyTorch, one process per variant, run side by side):
# prediction type x latent scale x training timestep range, each a backbone then an adaptor
# trained on the same range and evaluated from the input noised to t = strength*1000 - 1.
#   [DEVICE=cuda] BB=2000 AD=1000 bash scripts/explore/sweep.sh OUTDIR
# (docs/builtin-model.md: pixel-scale rows BB=2000 AD=1000, unit-variance v rows BB=3000, read
# at adaptor step 1000;
# on 2 CPU cores JOBS=2, about 12 minutes a pair. LIMIT: seconds per variant.)
# Each variant's log is OUTDIR/NAME.log; the adaptor log ends with its held-out table.
set -u
out=${1:?OUTDIR}; mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
BB=${BB:-3000}; AD=${AD:-3000}; LIMIT=${LIMIT:-86400}; JOBS=${JOBS:-16}
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
# name pred scale tmax strength
variants="x0_s1_t400 sample 1 400 0.4
x0_s1_t200 sample 1 200 0.2
x0_s1_t100 sample 1 100 0.1
v_s2_t400 v_prediction 2 400 0.4
v_s2_t200 v_prediction 2 200 0.2
eps_s1_t100 epsilon 1 100 0.1
v_s1_t100 v_prediction 1 100 0.1"
while read -r name pred scale tmax strength; do
  while [ "$(jobs -r | wc -l)" -ge "$JOBS" ]; do sleep 5; done
  timeout "$LIMIT" bash -c '
    SCALE=$1 TMAX=$2 python3 "$3/tiny_backbone.py" "$4/$5" "$6" "$7" >"$4/$5.log" 2>&1
    python3 "$3/tiny_adaptor.py" --model "$4/$5" --steps "$8" --tmax "$2" --strength "$9" >>"$4/$5.log" 2>&1
  ' _ "$scale" "$tmax" "$here" "$out" "$name" "$pred" "$BB" "$AD" "$strength" &
done <<<"$variants"
wait
for f in "$out"/*.log; do echo "== $f"; grep -v -E "Writing|Loading|Warning|warn" "$f" | tail -14; done
