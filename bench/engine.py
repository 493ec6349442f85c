"""Crops/s of the inference backends at the model's real input size, plus ONNX Runtime experiments.

    .venv/bin/python bench/engine.py [--run RUN] [--seconds 3] [--batches 1 8 32] [--quick]

Measures, on this machine's CPU:
* crops/s per backend and batch size: the raw ONNX Runtime session (``InferenceSession.run``), our
  ORT backend (``acfd.engine.runtime.load(...).infer``), torch eager (our torch backend);
* a fair ratio of our ORT backend to the raw session: both in one process, interleaved rounds;
* experiments at one batch size: ORT graph optimisation levels, intra-op thread counts, int8 dynamic
  quantisation (onnxruntime.quantization.quantize_dynamic) and the FP16 graph on the CPU, each with
  its score drift against FP32 on real face crops (verdict flips at the model's threshold).

Without ``--run`` the model is a randomly initialised paper-preset LQ branch (speed does not depend on
the weights) whose last batch norm is scaled so embeddings have trained-like norms around the 9.05
threshold, so drift and verdict flips mean something. Real face crops come from
../shared/data/faces/images beside the repository (or --faces DIR) through the scanner's detector and
crop rule; random crops if none is found. Prints a table; writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
# The shared data folder sits beside the repository (see README); --faces points elsewhere.
FACE_DIRS = [Path(__file__).resolve().parents[2] / "shared" / "data" / "faces" / "images"]


def rate(
    fn: Callable[[], object], n: int, seconds: float, min_iters: int = 2, warmup: bool = True
) -> dict[str, float]:
    """crops/s of ``fn`` (one call = n crops): one warm-up call, then calls until ``seconds`` pass."""
    if warmup:
        fn()
    times = []
    t_end = time.perf_counter() + seconds
    while len(times) < min_iters or time.perf_counter() < t_end:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return {"crops_per_s": n / med, "ms_per_batch": 1000 * med, "iters": len(times)}


def face_crops(size: int, limit: int, faces_dir: Path | None) -> tuple[np.ndarray, str]:
    dirs = [faces_dir] if faces_dir else FACE_DIRS
    folder = next((d for d in dirs if d and d.is_dir()), None)
    if folder is None:
        return np.random.default_rng(0).integers(0, 256, (limit, size, size, 3), dtype=np.uint8), "random"
    import cv2
    from acfd.scanner.faces import FaceDetector, crop, crop_box

    crops = []
    with FaceDetector() as det:
        for f in sorted(folder.iterdir()):
            if len(crops) >= limit:
                break
            bgr = cv2.imread(str(f))
            if bgr is None:
                continue
            img = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            faces = det.detect(img)
            if faces:
                crops.append(crop(img, crop_box(faces[0], 1.3), size))
    return np.stack(crops), str(folder)


def build_model(args: argparse.Namespace, work: Path, crops: np.ndarray) -> tuple[object, object, Path, Path]:
    import torch
    from acfd.engine.export import export_onnx, torch_reference
    from acfd.train.config import resolve_config
    from acfd.train.model import artifact_meta, build_model, load_run

    if args.run:
        model, _ = load_run(args.run)
        meta = artifact_meta(args.run)
        branch = model.lq_branch().eval()
    else:
        torch.manual_seed(0)
        cfg = resolve_config("paper")
        branch = build_model(cfg).lq_branch().eval()
        meta = artifact_meta(cfg)
        score, _ = torch_reference(branch, meta, crops[:8])
        k = 12.0 / float(np.median(score))
        with torch.no_grad():
            branch.tail.bn4.weight.mul_(k)
            branch.tail.bn4.bias.mul_(k)
    p32 = export_onnx(branch, meta, work / "model.onnx")
    p16 = export_onnx(branch, meta, work / "model.fp16.onnx", fp16=True)
    return branch, meta, p32, p16


def drift(score: np.ndarray, ref: np.ndarray, threshold: float) -> dict[str, float]:
    from acfd.engine.export import agreement

    a = agreement(score, ref, threshold)
    return {
        "score_max_rel": a.score_max_rel,
        "score_mean_rel": float(np.mean(np.abs(score - ref) / np.maximum(np.abs(ref), 1e-12))),
        "score_max_abs": a.score_max_abs,
        "verdict_flips": a.verdict_flips,
        "n": a.n,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="a training run (default: random-init paper preset)")
    ap.add_argument("--faces", type=Path, help="folder of photos with faces")
    ap.add_argument("--seconds", type=float, default=3.0, help="minimum timed seconds per measurement")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--exp-batch", type=int, default=8, help="batch size of the experiments")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the raw-vs-ours comparison")
    ap.add_argument("--quick", action="store_true", help="short run: batches 1 8, 1.5 s, 3 rounds")
    args = ap.parse_args()
    if args.quick:
        args.batches, args.seconds, args.rounds = [1, 8], 1.5, 3

    import onnxruntime as ort
    import torch
    from acfd.engine.backends import OrtBackend, default_threads
    from acfd.engine.export import CropScorer, torch_reference

    threads = default_threads()
    torch.set_num_threads(threads)
    t0 = time.time()
    load_avg = os.getloadavg()
    size = 299
    work = Path(tempfile.mkdtemp(prefix="acfd-bench-"))
    faces, source = face_crops(size, 24, args.faces)
    branch, meta, p32, p16 = build_model(args, work, faces)
    size = meta.input_size
    bmax = max(args.batches + [args.exp_batch])
    rng = np.random.default_rng(0)
    pool = np.concatenate([faces, rng.integers(0, 256, (max(0, bmax - len(faces)), size, size, 3), dtype=np.uint8)])

    def batch(n: int) -> np.ndarray:
        return np.ascontiguousarray(pool[np.arange(n) % len(pool)])

    def raw_session(
        path: Path, level: str = "all", n_threads: int = threads, spin: bool = False
    ) -> ort.InferenceSession:
        # defaults = our backend's settings, so "raw vs ours" measures only the wrapper
        so = ort.SessionOptions()
        if not spin:  # idle threads sleep instead of spin-waiting: matters when the cores are shared
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[level]  # fmt: skip
        so.intra_op_num_threads = n_threads
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    rows: list[dict] = []
    raw = raw_session(p32)
    ours = OrtBackend(p32, device="cpu").load()
    scorer = CropScorer(branch, meta).eval()

    def torch_eager(x: np.ndarray) -> None:
        with torch.inference_mode():
            scorer(torch.from_numpy(x))

    for n in args.batches:
        x = batch(n)
        for name, fn in (
            ("ort raw session", lambda x=x: raw.run(None, {"crops": x})),
            ("ort backend (ours)", lambda x=x: ours.infer(x)),
            ("torch eager fp32", lambda x=x: torch_eager(x)),
        ):
            r = rate(fn, n, args.seconds)
            rows.append({"group": "backends", "name": name, "batch": n, **r})
            print(f"  {name:<24} batch {n:>3}: {r['crops_per_s']:7.2f} crops/s", flush=True)

    # The key ratio, fair: both in one process, interleaved, same batch, median of rounds.
    n = args.exp_batch
    x = batch(n)
    pairs = []
    for _ in range(args.rounds):
        a = rate(lambda: raw.run(None, {"crops": x}), n, args.seconds / 2)["crops_per_s"]
        b = rate(lambda: ours.infer(x), n, args.seconds / 2)["crops_per_s"]
        pairs.append((a, b))
    ratio = statistics.median(b / a for a, b in pairs)
    key = {"batch": n, "rounds": pairs, "ours_over_raw_median": ratio}
    print(f"  ours / raw (interleaved, batch {n}, {args.rounds} rounds): {ratio:.3f}", flush=True)

    # Experiments at one batch size, with drift on the real face crops. The load on this shared
    # machine changes by the minute, so the variants are measured in interleaved rounds and each is
    # reported as the median, over rounds, of its rate relative to the default (opt=all, all threads)
    # measured in the same round (default = our backend's settings: opt=all, all threads, no spinning).
    ref32, _ = torch_reference(branch, meta, faces)
    variants: list[tuple[str, ort.InferenceSession, str]] = []
    for level in ("disable", "basic", "extended", "all"):
        variants.append((f"ort opt={level}", raw_session(p32, level), ""))
    for t in sorted({1, 2 * threads} - {threads}):
        variants.append((f"ort threads={t}", raw_session(p32, "all", t), ""))
    variants.append((f"ort threads={threads} spinning", raw_session(p32, "all", threads, spin=True), ""))
    variants.append(("ort fp16 graph (CPU)", raw_session(p16), "FP16 ONNX on the CPU provider"))
    try:
        import logging

        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.shape_inference import quant_pre_process

        logging.getLogger().setLevel(logging.ERROR)  # quantize_dynamic logs whole tensor protos
        pre, q8 = work / "model.pre.onnx", work / "model.int8.onnx"
        t = time.time()
        quant_pre_process(str(p32), str(pre))
        quantize_dynamic(str(pre), str(q8), weight_type=QuantType.QUInt8)
        variants.append(("ort int8 dynamic (uint8 w)", raw_session(q8), f"quantize_dynamic {time.time() - t:.0f} s"))
    except Exception as e:  # noqa: BLE001 - an experiment that fails is reported, not fatal
        print(f"  int8 dynamic quantisation failed: {e}", flush=True)
        variants.append(("ort int8 dynamic (uint8 w)", None, f"failed: {type(e).__name__}: {e}"))  # type: ignore[arg-type]
    base = "ort opt=all"
    per: dict[str, list[float]] = {name: [] for name, sess, _ in variants if sess is not None}
    for r in range(args.rounds):
        for name, sess, _ in variants:
            if sess is not None:
                v = rate(lambda sess=sess: sess.run(None, {"crops": x}), n, args.seconds / 2, 1, warmup=r == 0)
                per[name].append(v["crops_per_s"])
    experiments: list[dict] = []
    for name, sess, note in variants:
        if sess is None:
            experiments.append({"name": name, "error": note})
            continue
        d = drift(sess.run(None, {"crops": faces})[0], ref32, meta.threshold)
        rel = statistics.median(a / b for a, b in zip(per[name], per[base], strict=True))
        experiments.append({"name": name, "batch": n, "crops_per_s": statistics.median(per[name]),
                            "rounds": per[name], "vs_default": rel, "drift_vs_torch_fp32": d, "note": note})  # fmt: skip
        print(f"  {name:<28} {statistics.median(per[name]):7.2f} crops/s ({rel:.2f}x default)  "
              f"max rel drift {d['score_max_rel']:.1e}, flips {d['verdict_flips']}/{d['n']}", flush=True)  # fmt: skip

    result = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus_usable": threads, "python": sys.version.split()[0],
                    "onnxruntime": ort.__version__, "torch": torch.__version__,
                    "load_avg_at_start": load_avg, "load_avg_at_end": os.getloadavg()},  # fmt: skip
        "model": {"run": str(args.run) if args.run else "random-init paper preset, embedding scaled to ~12",
                  "input_size": size, "threshold": meta.threshold, "face_crops": len(faces), "faces_from": source},  # fmt: skip
        "backends": rows,
        "ours_vs_raw": key,
        "experiments": experiments,
        "seconds_total": time.time() - t0,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"engine-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2))

    print()
    print(f"crops/s at {size}x{size}, {threads} CPU threads, load average at start {load_avg[0]:.1f} "
          f"(shared machine: absolute figures are taken under load)")  # fmt: skip
    names = list(dict.fromkeys(r["name"] for r in rows))
    print(f"{'backend':<24}" + "".join(f"{'batch ' + str(b):>11}" for b in args.batches))
    for name in names:
        cells = {r["batch"]: r["crops_per_s"] for r in rows if r["name"] == name}
        print(f"{name:<24}" + "".join(f"{cells[b]:>11.2f}" for b in args.batches))
    print(f"ours / raw ORT, interleaved in one process, batch {n}: {ratio:.3f}")
    print(f"\nexperiments at batch {n}, {args.rounds} interleaved rounds; default = opt=all, {threads} threads, no spinning; "
          f"drift: score vs torch fp32 on {len(faces)} face crops")  # fmt: skip
    print(f"{'experiment':<28}{'crops/s':>9}{'vs default':>12}{'max rel drift':>15}{'flips':>7}")
    for e in experiments:
        if "error" in e:
            print(f"{e['name']:<28} failed: {e['error']}")
            continue
        d = e["drift_vs_torch_fp32"]
        print(f"{e['name']:<28}{e['crops_per_s']:>9.2f}{e['vs_default']:>11.2f}x"
              f"{d['score_max_rel']:>15.1e}{d['verdict_flips']:>4}/{d['n']}")  # fmt: skip
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
