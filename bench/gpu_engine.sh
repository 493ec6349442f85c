#!/usr/bin/env bash
# GPU throughput of the LQ branch at 299x299, for a machine with an NVIDIA GPU.
#
#   bash bench/gpu_engine.sh            # PYTHON=... to pick the interpreter (default .venv/bin/python)
#
# Measures crops/s at batch 32 and 128 with the input already on the GPU (as after NVDEC decoding):
#   torch CUDA fp32 eager, fp16 channels_last eager, fp16 channels_last + CUDA graph;
#   ONNX Runtime CUDA provider (when onnxruntime-gpu is installed);
#   TensorRT FP16 (strongly typed, from the FP16 ONNX) through acfd's runtime, when tensorrt imports.
# and the FP16-vs-FP32 score drift (relative, and verdict flips at the 9.05 threshold) per path.
# Random-init paper-preset weights with the embedding scaled to ~12 (speed does not depend on the
# weights; the scaling makes drift and flips meaningful). Prints a table; writes JSON to
# bench/results/ (and to $OUT when that is set).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
"$PY" - "$@" <<'EOF'
import json, os, statistics, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

if not torch.cuda.is_available():
    sys.exit("no CUDA GPU visible to torch: this benchmark needs one")
from acfd.engine.export import CropScorer, agreement, export_onnx, torch_reference
from acfd.train.config import resolve_config
from acfd.train.model import artifact_meta, build_model

torch.backends.cudnn.benchmark = True
dev = torch.device("cuda")
gpu = torch.cuda.get_device_name()
BATCHES = (32, 128)
SECONDS = float(os.environ.get("SECONDS_PER_POINT", "3"))

torch.manual_seed(0)
cfg = resolve_config("paper")
meta = artifact_meta(cfg)
S = meta.input_size
branch = build_model(cfg).lq_branch().eval()
rng = np.random.default_rng(0)
crops = rng.integers(0, 256, (128, S, S, 3), dtype=np.uint8)
ref, _ = torch_reference(branch, meta, crops[:8])
k = 12.0 / float(np.median(ref))
with torch.no_grad():
    branch.tail.bn4.weight.mul_(k); branch.tail.bn4.bias.mul_(k)
check = crops[:64]
ref32, _ = torch_reference(branch, meta, check)  # CPU fp32: the reference for every drift figure


def timed(fn, n):
    fn(); torch.cuda.synchronize()
    times, end = [], time.perf_counter() + SECONDS
    while len(times) < 3 or time.perf_counter() < end:
        t = time.perf_counter(); fn(); torch.cuda.synchronize(); times.append(time.perf_counter() - t)
    return n / statistics.median(times)


rows, drifts = [], {}


def scorer(dtype, channels_last):
    import copy
    s = CropScorer(copy.deepcopy(branch), meta, compute_dtype=dtype).eval().to(dev)
    return s.to(memory_format=torch.channels_last) if channels_last else s


def score_of(s, x):
    with torch.no_grad():
        return s(torch.from_numpy(x).to(dev))[0].float().cpu().numpy()


for label, dtype, cl in (("torch fp32 eager", torch.float32, False), ("torch fp16 channels_last", torch.float16, True)):
    s = scorer(dtype, cl)
    drifts[label] = agreement(score_of(s, check), ref32, meta.threshold).to_dict()
    for b in BATCHES:
        x = torch.from_numpy(crops[:b]).to(dev)
        def run(s=s, x=x):
            with torch.no_grad():
                s(x)
        rows.append((label, b, timed(run, b)))
    # the same fp16 network, replayed as a CUDA graph (no per-kernel launch cost)
    if dtype == torch.float16:
        for b in BATCHES:
            static = torch.from_numpy(crops[:b]).to(dev)
            side = torch.cuda.Stream(); side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), torch.no_grad():
                for _ in range(3):
                    s(static)
            torch.cuda.current_stream().wait_stream(side)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g), torch.no_grad():
                out = s(static)
            g.replay(); torch.cuda.synchronize()
            if b >= len(check):
                drifts["torch fp16 channels_last + CUDA graph"] = agreement(
                    out[0][: len(check)].float().cpu().numpy(), ref32, meta.threshold).to_dict()
            rows.append(("torch fp16 channels_last + CUDA graph", b, timed(g.replay, b)))
    del s
    torch.cuda.empty_cache()

work = Path(tempfile.mkdtemp(prefix="acfd-gpu-"))
p32 = export_onnx(branch, meta, work / "model.onnx")
p16 = export_onnx(branch, meta, work / "model.fp16.onnx", fp16=True)

import onnxruntime as ort
if "CUDAExecutionProvider" in ort.get_available_providers():
    from acfd.engine.runtime import load
    for label, p in (("onnxruntime CUDA fp32", p32), ("onnxruntime CUDA fp16", p16)):
        with load(p, device="cuda") as b_:
            drifts[label] = agreement(b_.infer(check).score, ref32, meta.threshold).to_dict()
            for b in BATCHES:
                rows.append((label, b, timed(lambda x=crops[:b]: b_.infer(x), b)))  # host input: includes H2D
else:
    print("onnxruntime has no CUDA provider here (pip install onnxruntime-gpu): skipped")

try:
    from acfd.engine.runtime import load
    from acfd.engine.tensorrt import build_engine, import_tensorrt
    trt = import_tensorrt()  # TensorRTUnavailable (one line) when missing, too old, or its CUDA libraries are
    t = time.time()
    plan = build_engine(p16, work / "model.plan", 1, 32, 128, timing_cache=work / "timing.cache", precision="fp16")
    build_s = time.time() - t
    with load(plan) as eng:
        drifts["TensorRT fp16"] = agreement(eng.infer(check).score, ref32, meta.threshold).to_dict()
        for b in BATCHES:
            rows.append(("TensorRT fp16 (host uint8 in)", b, timed(lambda x=crops[:b]: eng.infer(x), b)))
            on_gpu = torch.from_numpy(crops[:b]).to(dev)
            rows.append(("TensorRT fp16", b, timed(lambda x=on_gpu: eng.infer_cuda(x), b)))
    print(f"TensorRT {trt.__version__}: FP16 engine built in {build_s:.0f} s")
except Exception as e:  # the TensorRT path has never run on a real TensorRT: keep the other figures
    print(f"TensorRT path skipped ({type(e).__name__}: {e})")

print(f"\n{gpu}, torch {torch.__version__}, input {S}x{S}, crops already on the GPU unless noted")
print(f"{'path':<40}" + "".join(f"{'batch ' + str(b):>12}" for b in BATCHES))
for label in dict.fromkeys(r[0] for r in rows):
    cells = {b: v for l_, b, v in rows if l_ == label}
    print(f"{label:<40}" + "".join(f"{cells.get(b, float('nan')):>12.0f}" for b in BATCHES))
print(f"\nscore drift vs torch fp32 (CPU) on {len(check)} crops, threshold {meta.threshold}:")
for label, d in drifts.items():
    print(f"  {label:<40} max rel {d['score_max_rel']:.1e}  flips {d['verdict_flips']}/{d['n']}  finite {d['finite']}")
result = {"gpu": gpu, "torch": torch.__version__, "input_size": S, "rows": rows, "drift": drifts,
          "when": datetime.now(timezone.utc).isoformat(timespec="seconds")}
for d in filter(None, ["bench/results", os.environ.get("OUT")]):
    Path(d).mkdir(parents=True, exist_ok=True)
    (Path(d) / f"gpu-engine-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json").write_text(json.dumps(result, indent=2))
EOF
