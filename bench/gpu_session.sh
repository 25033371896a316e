#!/usr/bin/env bash
# The one script a lent GPU machine runs (its device time is short: 15 minutes a session).
# The default model's recipe on OpenKBP, several variants side by side on the one GPU, equal wall
# time each, every one evaluated on the 6 val patients (3D Dice, HD95 mm):
#   supervised         the baseline
#   cgs                the reference objective (lambda_max 0.1, no confidence gate)
#   cgs-gate95         + gate_tau 0.95 on the IHED and consensus masks
#   cgs-gate95-l1      + gate_tau 0.95, lambda_max 1.0
#   cgs-gate80-l1      + gate_tau 0.80, lambda_max 1.0
# The GPU image has torch/h5py/scipy but not SimpleITK: training and evaluation from the store
# never need it. WORK must hold openkbp.h5 (made here by scripts/train_default_model.py).
set -u
OUT=${OUT:-/tmp/gpu-out}
WORK=${WORK:-.gpuwork}
MINUTES=${MINUTES:-5}
THREADS=${THREADS:-3}
PY=${PY:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$OUT"
nvidia-smi -L 2>/dev/null | tee "$OUT/device.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/device.txt"
DEVICE=$($PY -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
common=(--minutes "$MINUTES" --set device=\"$DEVICE\" val_every=250 threads=$THREADS)

declare -A VARIANTS=(
    [cgs]=""
    [cgs-gate95]="gate_tau=0.95"
    [cgs-gate95-l1]="gate_tau=0.95 lambda_max=1.0"
    [cgs-gate80-l1]="gate_tau=0.8 lambda_max=1.0"
)
for name in "${!VARIANTS[@]}"; do
    mkdir -p "$WORK/$name"
    ln -sf "$(realpath "$WORK/openkbp.h5")" "$WORK/$name/openkbp.h5"
    # shellcheck disable=SC2086
    $PY scripts/train_default_model.py --work "$WORK/$name" --methods cgs "${common[@]}" ${VARIANTS[$name]} \
        >"$OUT/$name.log" 2>&1 &
done
$PY scripts/train_default_model.py --work "$WORK" --methods supervised "${common[@]}" >"$OUT/supervised.log" 2>&1
wait
cp "$WORK/run-supervised/best.pt" "$OUT/supervised-best.pt"
for name in "${!VARIANTS[@]}"; do
    echo "== $name (${VARIANTS[$name]:-reference})"
    cp "$WORK/result-supervised.json" "$WORK/$name/"
    $PY scripts/train_default_model.py --work "$WORK/$name" --methods "${common[@]}" 2>&1 | tail -10
    cp "$WORK/$name/run-cgs/best.pt" "$OUT/$name-best.pt"
done
tar czf "$OUT/results.tgz" "$OUT"/*.log "$OUT/device.txt" "$WORK"/result-*.json "$WORK"/*/summary.json \
    "$WORK"/*/result-cgs.json "$WORK"/run-*/log.jsonl "$WORK"/*/run-cgs/log.jsonl "$WORK"/*/run-cgs/config.json \
    2>/dev/null
rm -f "$OUT"/*.log "$OUT/device.txt"
ls -la "$OUT"
