#!/usr/bin/env bash
# Training throughput of the paper preset on a lent GPU: a few hundred steps at 299 px with AMP on
# synthetic paired crops made on the spot (no dataset, no TensorRT, no decord needed).
# Prints steps/s, crops/s, peak GPU memory and the loss curve; writes bench/results/gpu_train.json.
#
#   bash bench/gpu_train.sh                      # 300 steps, batch 32, bf16, preset paper
#   STEPS=100 BATCH=64 AMP=fp16 PRESET=code bash bench/gpu_train.sh
#   DEVICE=cpu SIZE=32 STEPS=3 BATCH=4 bash bench/gpu_train.sh   # smoke test without a GPU
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
mkdir -p bench/results

STEPS=${STEPS:-300} BATCH=${BATCH:-32} SIZE=${SIZE:-299} AMP=${AMP:-bf16} PRESET=${PRESET:-paper} \
DEVICE=${DEVICE:-cuda} WARMUP=${WARMUP:-10} OUT=${OUT:-bench/results/gpu_train.json} "$PY" - <<'EOF'
import json, os, platform, tempfile, time
from pathlib import Path

import torch
from acfd.train.config import resolve_config
from acfd.train.fit import FitOptions, Trainer

steps, bs, size = int(os.environ["STEPS"]), int(os.environ["BATCH"]), int(os.environ["SIZE"])
warmup = min(int(os.environ["WARMUP"]), max(steps - 1, 0))
device = os.environ["DEVICE"]
if device.startswith("cuda") and not torch.cuda.is_available():
    raise SystemExit("no CUDA device: run on a GPU machine or set DEVICE=cpu for a smoke test")
cfg = resolve_config(os.environ["PRESET"], image_size=size, batch_size=bs, amp=os.environ["AMP"], seed=0)
tr = Trainer(cfg, FitOptions(out=Path(tempfile.mkdtemp()), device=device, progress=False))
dev = tr.device
g = torch.Generator(device=dev).manual_seed(0)


def batch():
    """Half fakes with a high-frequency square where the mask is 1; LQ = quantised + blurred HQ."""
    n = bs
    img = torch.normal(128.0, 20.0, (n, 3, size, size), generator=g, device=dev)
    mask = torch.zeros(n, size, size, device=dev)
    label = torch.arange(n, device=dev) % 2
    s = size // 2
    for i in range(1, n, 2):
        y0, x0 = torch.randint(0, size - s, (2,), generator=g, device=dev).tolist()
        patch = torch.where(torch.rand((3, s, s), generator=g, device=dev) > 0.5, 225.0, 30.0)
        img[i, :, y0:y0 + s, x0:x0 + s] = patch
        mask[i, y0:y0 + s, x0:x0 + s] = 1
    lq = torch.round(img / 32) * 32
    lq = (lq + lq.roll(1, dims=3)) / 2
    return {"hq": img.clamp(0, 255).to(torch.uint8), "lq": lq.clamp(0, 255).to(torch.uint8),
            "mask": mask, "label": label, "mask_valid": torch.ones(n, dtype=torch.bool, device=dev)}


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


curve = []
data = [batch() for _ in range(8)]  # re-used round robin: data synthesis stays out of the timing
if dev.type == "cuda":
    torch.cuda.reset_peak_memory_stats(dev)
t_start = time.perf_counter()
for i in range(steps):
    if i == warmup:
        sync()
        t0 = time.perf_counter()
    logs = tr.train_step(data[i % len(data)])
    curve.append({"step": i + 1, **{k: round(v, 4) for k, v in logs.items()}})
sync()
t1 = time.perf_counter()
timed = steps - warmup
sps = timed / (t1 - t0) if timed > 0 else float("nan")
peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
res = {
    "preset": cfg.preset, "image_size": size, "batch_size": bs, "amp": str(tr.amp), "steps": steps,
    "warmup_steps": warmup, "steps_per_s": sps, "crops_per_s": sps * bs * (2 if cfg.two_branch else 1),
    "pairs_per_s": sps * bs, "peak_memory_gib": peak, "total_s": t1 - t_start,
    "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
    "torch": torch.__version__, "loss_curve": curve,
}
print(f"{'device':<14}{res['device']}")
print(f"{'preset':<14}{cfg.preset} @ {size}px, batch {bs}, autocast {tr.amp}, n_critic {cfg.loss.n_critic}")
print(f"{'steps/s':<14}{sps:.3f}  ({timed} timed steps after {warmup} warm-up)")
print(f"{'pairs/s':<14}{sps * bs:.1f}   (crops/s through the backbone: {res['crops_per_s']:.1f})")
print(f"{'peak memory':<14}{peak:.2f} GiB" if peak is not None else f"{'peak memory':<14}n/a (cpu)")
print("\nloss curve (every ~10%):")
keys = [k for k in ("loss", "metric_hq", "metric_lq", "pair", "at_hq", "at_lq", "transfer", "gan", "gp") if k in curve[0]]
print("  step " + " ".join(f"{k:>10}" for k in keys))
rows = curve[:: max(1, steps // 10)]
rows += [] if rows[-1] is curve[-1] else [curve[-1]]
for row in rows:
    print(f"  {row['step']:>4} " + " ".join(f"{row[k]:>10.4g}" for k in keys))
Path(os.environ["OUT"]).write_text(json.dumps(res, indent=1))
print(f"\nwrote {os.environ['OUT']}")
EOF
