#!/usr/bin/env bash
# The one script a lent GPU machine runs (its device time is short: 15 minutes a session).
#   1. `cgs train` under torchrun with the nccl backend (issue: DDP);
#   2. the default model's recipe: CGS (reference lambda_max 0.1), CGS with lambda_max 1.0 and the
#      supervised baseline side by side on the one GPU, equal wall time each, evaluated on val.
# The GPU image has torch/h5py/scipy but not SimpleITK: training and evaluation from the store
# never need it. WORK must hold openkbp.h5 (made here by scripts/train_default_model.py).
set -u
OUT=${OUT:-/tmp/gpu-out}
WORK=${WORK:-.gpuwork}
MINUTES=${MINUTES:-5}
PY=${PY:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$OUT"
nvidia-smi -L 2>/dev/null | tee "$OUT/device.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/device.txt"
DEVICE=$($PY -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")

if [ -z "${SKIP_DDP:-}" ]; then
echo "== torchrun (nccl on GPU, gloo on CPU)"
start=$(date +%s)
timeout 180 $PY -m torch.distributed.run --standalone --nproc-per-node 1 -m cgs_engine train "$WORK/openkbp.h5" \
    -o /tmp/cgs-ddp --iterations "${DDP_ITERS:-40}" --size 128 --device "$DEVICE" >"$OUT/ddp.log" 2>&1
echo "torchrun rc $? in $(( $(date +%s) - start )) s"; grep -i -E "nccl|gloo|rank|step|error" "$OUT/ddp.log" | tail -5
fi

echo "== default model: three runs side by side, $MINUTES min each"
mkdir -p "$WORK/lambda1"
ln -sf ../openkbp.h5 "$WORK/lambda1/openkbp.h5"
common=(--minutes "$MINUTES" --set device=\"$DEVICE\" val_every=250)
$PY scripts/train_default_model.py --work "$WORK" --methods cgs "${common[@]}" >"$OUT/cgs.log" 2>&1 &
$PY scripts/train_default_model.py --work "$WORK/lambda1" --methods cgs "${common[@]}" lambda_max=1.0 \
    >"$OUT/cgs-lambda1.log" 2>&1 &
$PY scripts/train_default_model.py --work "$WORK" --methods supervised "${common[@]}" >"$OUT/supervised.log" 2>&1
wait
cp "$WORK/result-supervised.json" "$WORK/lambda1/" 2>/dev/null
for w in "$WORK" "$WORK/lambda1"; do
    $PY scripts/train_default_model.py --work "$w" --methods "${common[@]}" 2>&1 | tail -12
done
cp "$WORK/run-cgs/best.pt" "$OUT/cgs-best.pt"
cp "$WORK/run-supervised/best.pt" "$OUT/supervised-best.pt"
cp "$WORK/lambda1/run-cgs/best.pt" "$OUT/cgs-lambda1-best.pt"
tar czf "$OUT/results.tgz" "$OUT"/*.log "$OUT/device.txt" "$WORK"/result-*.json "$WORK"/summary.json \
    "$WORK"/run-*/log.jsonl "$WORK"/run-*/config.json "$WORK"/lambda1/*.json "$WORK"/lambda1/run-cgs/*.json* 2>/dev/null
rm -f "$OUT"/*.log "$OUT/device.txt"
ls -la "$OUT"
