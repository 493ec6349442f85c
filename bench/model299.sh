#!/usr/bin/env bash
# A 299 px paper-preset model trained on CPU for the int8 fidelity check of bench/engine.py (issue 15):
# random weights do not show a trained network's activation ranges, and the starter model is 96 px.
# Self-blends of ../shared/data/faces (acfd-train synth), paired c23/c40 crops at 299 px, 300 steps of
# batch 6 from random weights (no ImageNet download), then an FP32 ONNX export. About 26 minutes on 2 cores
# (2 to make and prepare the data, 23 to train: measured 2026-12-03 on a 2-core AMD EPYC).
# Batch 6 makes an epoch 309 steps, so the run validates once, at step 300, and the weights it keeps (the
# best validated) are the 300-step ones; at batch 8 an epoch ends at step 232, whose weights were kept.
#
#   bash bench/model299.sh [WORK_DIR] [FACES_DIR]      # then: bench/engine.py --only precision --trained WORK_DIR/model299.onnx
#
# Every step is skipped when its output exists, so an interrupted run goes on where it stopped.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
WORK="${1:-$HERE/results/model299}"
FACES="${2:-$HERE/../../shared/data/faces}"
STEPS="${STEPS:-300}"
BATCH="${BATCH:-6}"
BIN="$HERE/../.venv/bin"
mkdir -p "$WORK"
if [ ! -f "$WORK/synth/synth.json" ]; then
  rm -rf "$WORK/synth"
  "$BIN/acfd-train" synth "$WORK/synth" --source "$FACES" --videos 160 --frames 16 --size 384 --seed 0
fi
if [ ! -f "$WORK/cache/summary.json" ]; then
  "$BIN/acfd-train" prepare --ffpp "$WORK/synth" --out "$WORK/cache" --frames 8 --size 299 --workers 2 --quiet
fi
if [ ! -f "$WORK/run/done" ]; then
  if [ -f "$WORK/run/checkpoint/state.json" ]; then
    "$BIN/acfd-train" fit --data "$WORK/cache" --out "$WORK/run" --max-steps "$STEPS" --quiet --resume
  else
    "$BIN/acfd-train" fit --data "$WORK/cache" --out "$WORK/run" --max-steps "$STEPS" --quiet --preset paper \
      --image-size 299 --batch-size "$BATCH" --seed 0 --pretrained none
  fi
  touch "$WORK/run/done"
fi
if [ ! -f "$WORK/model299.onnx" ]; then
  "$BIN/acfd-train" export --run "$WORK/run" --out "$WORK/model299.onnx" \
    --note "bench/model299.sh: paper preset, 299 px, $STEPS steps of batch $BATCH on self-blends of $FACES"
fi
echo "model: $WORK/model299.onnx"
