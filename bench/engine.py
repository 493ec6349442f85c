"""Crops/s of the inference backends at the model's real input size, plus ONNX Runtime experiments.

    .venv/bin/python bench/engine.py [--run RUN] [--seconds 3] [--batches 1 8 32] [--quick]
                                     [--only all|backends|precision]

Measures, on this machine's CPU:
* crops/s per backend and batch size: the raw ONNX Runtime session (``InferenceSession.run``), our
  ORT backend (``acfd.engine.runtime.load(...).infer``), torch eager (our torch backend);
* a fair ratio of our ORT backend to the raw session: both in one process, interleaved rounds;
* experiments at one batch size: ORT graph optimisation levels, intra-op thread counts, int8 dynamic
  quantisation (onnxruntime.quantization.quantize_dynamic) and the FP16 graph on the CPU, each with
  its score drift against FP32 on real face crops (verdict flips at the model's threshold);
* precisions (issue 15; ``--only precision`` runs just this part, ``--only backends`` leaves it out;
  torch's OpenMP threads wait passively, like the ORT sessions): the CPU's features; FP32 vs int8
  (``acfd.engine.quantize.export_int8``: static QDQ, per-channel int8 weights, uint8 activations,
  calibrated on real face photos) crops/s at 299 px, batch 8, interleaved rounds in one process;
  the fidelity of int8 vs FP32 with the trained starter model (its FP32 conversion; calibrated on
  ../shared/data/faces/images, measured on face crops of ../shared/data/faces/videos): score rank
  correlation, verdict flips at its threshold, attention maps, next to the model's own noise floor
  (FP32 on the same crops +-1 grey level) and the FP16 graph; the starter's FP16 graph vs its FP32
  conversion on the CPU (what ``--precision auto`` runs); bf16 (torch with oneDNN) vs FP32 with the
  same checks where the CPU has AVX-512 BF16 or AMX-BF16, else skipped with the reason.

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
FACE_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces" / "videos"
STARTER = Path(__file__).resolve().parents[1] / "scanner" / "models" / "starter.onnx"


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

# -- precisions (issue 15) -------------------------------------------------------------------------
def torch_call(scorer: Callable[..., object], crops: np.ndarray) -> Callable[[], object]:
    """One timed call of a torch scorer on ``crops`` (inference mode), for :func:`interleaved`."""
    import torch

    xt = torch.from_numpy(crops)

    def call() -> object:
        with torch.inference_mode():
            return scorer(xt)

    return call


def interleaved(fns: dict[str, Callable[[], object]], n: int, rounds: int, seconds: float) -> dict[str, list[float]]:
    """crops/s of each fn (one call = n crops) in interleaved rounds: the load of a shared machine
    changes by the minute, so ratios are taken round by round."""
    per: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(rounds):
        for name, fn in fns.items():
            per[name].append(rate(fn, n, seconds, 1, warmup=r == 0)["crops_per_s"])
    return per


def ratio(per: dict[str, list[float]], a: str, b: str) -> float:
    """Median over rounds of rate(a) / rate(b)."""
    return statistics.median(x / y for x, y in zip(per[a], per[b], strict=True))


def with_precision(model: object, precision: str, note: str) -> object:
    """``model`` (an onnx ModelProto) with its acfd metadata saying ``precision``."""
    from dataclasses import replace

    import onnx
    from acfd.engine.backends import meta_from_props
    from acfd.schemas.artifact import META_KEY

    meta = meta_from_props({p.key: p.value for p in model.metadata_props}, Path("model"))
    meta = replace(meta, precision=precision, extra={**meta.extra, "converted": note})
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {META_KEY: meta.to_json()})
    return model


def starter_as_torch(model32: object, meta: object) -> object:
    """The starter's LQ branch as a torch module, rebuilt from its (BN-folded) ONNX weights: the export
    names each convolution's weight after its module (``branch.<path>.weight``) and folds the following
    batch norm into ``<...>.weight_bias``; that batch norm becomes an identity plus that bias here."""
    import torch
    from acfd.train.config import resolve_config
    from acfd.train.model import build_model
    from onnx import numpy_helper
    from torch import nn

    init = {t.name: numpy_helper.to_array(t) for t in model32.graph.initializer}  # type: ignore[attr-defined]
    cfg = resolve_config(meta.preset, image_size=meta.input_size)  # type: ignore[attr-defined]
    branch = build_model(cfg).lq_branch().eval()
    mods = dict(branch.named_modules())
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda *_, name=name: order.append(name)) for name, m in mods.items()
             if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]  # fmt: skip
    with torch.no_grad():
        branch(torch.zeros(1, 3, meta.input_size, meta.input_size))  # type: ignore[attr-defined]
    for h in hooks:
        h.remove()
    with torch.no_grad():
        for m in mods.values():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
                m.running_mean.zero_()
                m.running_var.fill_(1.0 - m.eps)  # sqrt(var + eps) = 1: the identity
        for i, name in enumerate(order):
            m = mods[name]
            if not isinstance(m, nn.Conv2d):
                continue
            m.weight.copy_(torch.from_numpy(init[f"branch.{name}.weight"]))
            if m.bias is not None:
                m.bias.copy_(torch.from_numpy(init[f"branch.{name}.bias"]))
            folded = init.get(f"branch.{name}.weight_bias")
            if folded is not None:
                bn = mods[order[i + 1]]
                assert isinstance(bn, nn.BatchNorm2d), f"{name}: folded bias but no batch norm after it"
                bn.bias.copy_(torch.from_numpy(folded))
    return branch


def video_face_crops(folder: Path, size: int, margin: float, frames: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """(real face crops, their self-blended forgeries, where from) from the videos in ``folder``: every face
    of ``frames`` frames per video cut the scanner's way, and the same face self-blended (acfd-train
    synth's forgery: the face region recoloured, warped and blended back) and cut with the same box. The
    starter model scores nearly every real face at about 0.08 and self-blends far higher, so the blends
    put crops on both sides of its threshold: verdict flips then mean something."""
    from acfd.scanner.faces import FaceDetector, crop, crop_box
    from acfd.train.people import sample_frames
    from acfd.train.synth import sample_blend, self_blend

    rng = np.random.default_rng(seed)
    real, fake, videos = [], [], 0
    with FaceDetector() as det:
        for f in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".mp4", ".mkv", ".mov", ".avi", ".webm")):
            videos += 1
            p = sample_blend(rng)  # one forgery recipe per video, as synth makes them
            for frame in sample_frames(f, frames):
                for face in det.detect(frame):
                    box = crop_box(face, margin)
                    real.append(crop(frame, box, size))
                    fake.append(crop(self_blend(frame, face, p)[0], box, size))
    return np.stack(real), np.stack(fake), f"{len(real)} face crops of {frames} frames of each of {videos} videos in {folder.name}"


def precision_section(args: argparse.Namespace, work: Path) -> dict:
    """int8 and bf16 against FP32: speed at 299 px and fidelity with the trained starter model."""
    import copy

    import torch
    from acfd.engine import runtime
    from acfd.engine.cpu import detect
    from acfd.engine.export import CropScorer, export_onnx
    from acfd.engine.quantize import export_int8

    cpu = detect()
    t_threads = args.precision_threads
    torch.set_num_threads(t_threads)
    out: dict = {"cpu": cpu.to_dict(), "threads": t_threads, "batch": args.exp_batch}
    print(f"\nCPU {cpu.describe()}", flush=True)
    n = args.exp_batch

    # 1. speed, 299 px (random-init paper preset: speed does not depend on the weights)
    if args.fidelity_only:
        return fidelity_part(args, work, out, t_threads, n, "" if cpu.fast_bf16 else f"skipped: this CPU has {cpu.bf16_reason()}")
    faces, source = face_crops(299, args.int8_crops, args.faces)
    branch, meta = paper_branch(faces[:8])
    p32 = export_onnx(branch, meta, work / "paper299.onnx")
    q = export_int8(p32, work / "paper299.int8.onnx", faces, source=f"{len(faces)} crops of {source}")
    print(f"  {q.summary()}", flush=True)
    all8 = work / "all" / "paper299.int8.onnx"
    qa = export_int8(p32, all8, faces, source=f"{len(faces)} crops of {source}", float_head=0, float_tail=0)
    b32 = runtime.load(p32, device="cpu", precision="fp32", threads=t_threads)
    b8 = runtime.load(p32, device="cpu", precision="int8", threads=t_threads)
    ba = runtime.load(all8, device="cpu", precision="int8", threads=t_threads)
    x = np.ascontiguousarray(faces[np.arange(n) % len(faces)])
    fns: dict[str, Callable[[], object]] = {"ort fp32": lambda: b32.infer(x), "ort int8": lambda: b8.infer(x),
                                            "ort int8, every conv": lambda: ba.infer(x)}  # fmt: skip
    scorer32 = CropScorer(branch, meta).eval()
    skip_bf16 = "" if cpu.fast_bf16 else f"skipped: this CPU has {cpu.bf16_reason()}"
    if not skip_bf16:
        scorer16 = CropScorer(copy.deepcopy(branch), meta, torch.bfloat16).eval().to(memory_format=torch.channels_last)
        fns["torch fp32"] = torch_call(scorer32, x)
        fns["torch bf16 (oneDNN)"] = torch_call(scorer16, x)
    per = interleaved(fns, n, args.rounds, args.seconds / 2)
    speed = {"input_size": 299, "rounds": per, "crops_per_s": {k: statistics.median(v) for k, v in per.items()},
             "int8_over_fp32": ratio(per, "ort int8", "ort fp32"), "int8_check_random_weights": q.check.to_dict(),
             "int8_every_conv_over_fp32": ratio(per, "ort int8, every conv", "ort fp32"),
             "int8_every_conv_check_random_weights": qa.check.to_dict()}  # fmt: skip
    if not skip_bf16:
        speed["bf16_over_torch_fp32"] = ratio(per, "torch bf16 (oneDNN)", "torch fp32")
        speed["bf16_over_ort_fp32"] = ratio(per, "torch bf16 (oneDNN)", "ort fp32")
    out["speed_299"] = speed
    for k, v in speed["crops_per_s"].items():
        print(f"  {k:<22} {v:7.2f} crops/s", flush=True)
    print(f"  int8 / fp32 (ORT, interleaved, batch {n}, {args.rounds} rounds): {speed['int8_over_fp32']:.2f}x", flush=True)

    return fidelity_part(args, work, out, t_threads, n, skip_bf16)


def fidelity_part(args: argparse.Namespace, work: Path, out: dict, t_threads: int, n: int, skip_bf16: str) -> dict:
    """Fidelity with trained models: the starter (its FP32 conversion) and --trained (e.g. bench/model299.sh),
    int8 vs FP32, calibrated on photos, measured on video frames (other media, the scanner's usual input)."""
    if not FACE_VIDEOS.is_dir() or not FACE_DIRS[0].is_dir():
        out["starter"] = {"skipped": "../shared/data/faces missing"}
        return out
    models = {"starter": STARTER} if STARTER.is_file() and not args.no_starter else {}
    if args.trained:
        models["trained"] = args.trained
    for label, path in models.items():
        out[label] = trained_fidelity(label, path, args, work, t_threads, n, skip_bf16)
    return out


class _Scores:
    def __init__(self, score: np.ndarray, attention: np.ndarray) -> None:
        self.score, self.attention = score, attention


def chunked(infer: Callable[[np.ndarray], object], crops: np.ndarray, k: int = 32) -> _Scores:
    """``infer`` over ``crops`` ``k`` at a time (384 crops of 299 px in one call need several GB), joined."""
    parts = [infer(crops[i : i + k]) for i in range(0, len(crops), k)]
    return _Scores(np.concatenate([p.score for p in parts]), np.concatenate([p.attention for p in parts]))  # type: ignore[attr-defined]


def trained_fidelity(label: str, path: Path, args: argparse.Namespace, work: Path, t_threads: int, n: int,
                     skip_bf16: str) -> dict:
    """int8 (and bf16) against FP32 for one trained ONNX artifact (FP16 ones through their FP32 conversion,
    the FP16 graph measured beside them): fidelity on real video face crops and their self-blends, next to
    the model's own noise floor (FP32 with every pixel moved by at most one grey level), and crops/s."""
    import copy

    import onnx
    import torch
    from acfd.engine import runtime
    from acfd.engine.backends import read_onnx_meta
    from acfd.engine.export import CropScorer
    from acfd.engine.quantize import export_int8, fidelity, float32_model
    from acfd.train.calibrate import calibration_crops

    smeta = read_onnx_meta(path)
    s32 = work / f"{label}32.onnx"
    fp16 = smeta.precision == "fp16"
    if fp16:
        onnx.save(with_precision(float32_model(onnx.load(str(path))), "fp32", f"{path.name} FP16 -> FP32"), str(s32))
    else:
        s32.write_bytes(path.read_bytes())  # a copy: its int8 sibling is written beside it, in the work folder
    cal = calibration_crops(FACE_DIRS[0], smeta.input_size, smeta.crop_margin, limit=256)
    real, blends, held = video_face_crops(FACE_VIDEOS, smeta.input_size, smeta.crop_margin)
    sq = export_int8(s32, work / f"{label}32.int8.onnx", cal.crops, source=cal.describe())
    print(f"  {label}: {sq.summary()}", flush=True)
    crops = np.concatenate([real, blends])
    sets = {"real": slice(0, len(real)), "self-blends": slice(len(real), len(crops)), "both": slice(0, len(crops))}
    fid: dict = {}
    with (runtime.load(s32, device="cpu", precision="fp32", threads=t_threads) as f32,
          runtime.load(s32, device="cpu", precision="int8", threads=t_threads) as i8):  # fmt: skip
        r32, r8 = chunked(f32.infer, crops), chunked(i8.infer, crops)
        noisy = np.clip(crops.astype(np.int16) + np.random.default_rng(0).integers(-1, 2, crops.shape), 0, 255)
        rn = chunked(f32.infer, noisy.astype(np.uint8))
        xs = np.ascontiguousarray(crops[:n])
        sfns: dict[str, Callable[[], object]] = {
            "ort fp32" + (" (converted)" if fp16 else ""): lambda: f32.infer(xs), "ort int8": lambda: i8.infer(xs),
        }  # fmt: skip
        thr = smeta.threshold

        def compare(name: str, a: object, b: object) -> None:
            for k, sl in sets.items():
                fid[f"{name}, {k}"] = fidelity(a.score[sl], b.score[sl], thr, a.attention[sl], b.attention[sl])  # type: ignore[attr-defined]

        compare("int8 vs fp32", r8, r32)
        compare("fp32 +-1 grey level", rn, r32)
        f16 = runtime.load(path, device="cpu", precision="artifact", threads=t_threads) if fp16 else None
        if f16 is not None:
            compare("fp16 vs fp32", chunked(f16.infer, crops), r32)
            sfns["ort fp16 graph"] = lambda: f16.infer(xs)  # type: ignore[union-attr]
        bf16_note = skip_bf16
        tb = None
        if not skip_bf16:
            if label == "trained" and args.trained_run:
                from acfd.train.model import load_run

                tb = load_run(args.trained_run)[0].lq_branch().eval()
            else:
                try:
                    tb = starter_as_torch(onnx.load(str(s32)), smeta)
                except KeyError as e:  # a TorchScript export names its weights otherwise
                    bf16_note = f"skipped: cannot rebuild the torch model from {path.name}'s weights ({e}); give --trained-run"
        if tb is not None:
            t32 = CropScorer(tb, smeta).eval()
            t16 = CropScorer(copy.deepcopy(tb), smeta, torch.bfloat16).eval().to(memory_format=torch.channels_last)
            def run_torch(scorer: object) -> Callable[[np.ndarray], object]:
                def call(x: np.ndarray) -> object:
                    with torch.inference_mode():
                        s, a = (t.float().numpy() for t in scorer(torch.from_numpy(x)))  # type: ignore[operator]
                    return Out([s, a])

                return call

            class Out:
                def __init__(self, o: list[np.ndarray]) -> None:
                    self.score, self.attention = o[0], o[1]

            c32, c16 = chunked(run_torch(t32), crops), chunked(run_torch(t16), crops)
            o32, o16 = [c32.score, c32.attention], [c16.score, c16.attention]
            rebuilt = float(np.max(np.abs(o32[0] - r32.score) / np.abs(r32.score)))
            how = "the training run" if label == "trained" and args.trained_run else "the ONNX weights"
            bf16_note = f"torch model from {how}: max rel diff vs ORT FP32 {rebuilt:.1e}"
            compare("bf16 vs fp32 (torch)", Out(o16), Out(o32))
            sfns["torch fp32"] = torch_call(t32, xs)
            sfns["torch bf16 (oneDNN)"] = torch_call(t16, xs)
        sper = interleaved(sfns, n, args.rounds, args.seconds / 2)
        if f16 is not None:
            f16.close()
    k32 = next(k for k in sfns if k.startswith("ort fp32"))
    res = {
        "model": str(path), "input_size": smeta.input_size, "threshold": thr,
        "calibration": cal.describe(), "held_out": held, "export_check": sq.check.to_dict(),
        "fidelity": {k: v.to_dict() for k, v in fid.items()}, "bf16": bf16_note or "measured",
        "fp32_scores": {k: {"p5": float(np.percentile(r32.score[sl], 5)), "median": float(np.median(r32.score[sl])),
                            "p95": float(np.percentile(r32.score[sl], 95)), "above_threshold": int(np.sum(r32.score[sl] > thr)),
                            "n": int(r32.score[sl].shape[0])} for k, sl in sets.items()},
        "speed_rounds": sper, "crops_per_s": {k: statistics.median(v) for k, v in sper.items()},
        "int8_over_fp32": ratio(sper, "ort int8", k32),
    }  # fmt: skip
    if f16 is not None:
        res["fp32_over_fp16_graph"] = ratio(sper, k32, "ort fp16 graph")
    for k, v in fid.items():
        print(f"  {label} {k}: {v.line()}", flush=True)
    if skip_bf16:
        print(f"  bf16 {skip_bf16}", flush=True)
    return res


def paper_branch(crops: np.ndarray) -> tuple[object, object]:
    """A random-init paper-preset LQ branch with its last batch norm scaled to trained-like norms (~12)."""
    import torch
    from acfd.engine.export import torch_reference
    from acfd.train.config import resolve_config
    from acfd.train.model import artifact_meta, build_model

    torch.manual_seed(0)
    cfg = resolve_config("paper")
    branch = build_model(cfg).lq_branch().eval()
    meta = artifact_meta(cfg)
    score, _ = torch_reference(branch, meta, crops)
    k = 12.0 / float(np.median(score))
    with torch.no_grad():
        branch.tail.bn4.weight.mul_(k)
        branch.tail.bn4.bias.mul_(k)
    return branch, meta


def print_precision(p: dict) -> None:
    sp = p.get("speed_299")
    if sp is None:
        print(f"\nprecisions on {p['cpu']['model']}: fidelity only ({p['threads']} threads)")
    else:
        print(f"\nprecisions on {p['cpu']['model']} ({' '.join(p['cpu']['flags']) or 'no listed flags'}; "
              f"{p['threads']} threads, batch {p['batch']}, interleaved rounds)")  # fmt: skip
        print(f"{'299 px, random-init paper preset':<40}{'crops/s':>9}")
        for k, v in sp["crops_per_s"].items():
            print(f"{k:<40}{v:>9.2f}")
        print(f"int8 / fp32 (ORT): {sp['int8_over_fp32']:.2f}x (every conv int8: {sp['int8_every_conv_over_fp32']:.2f}x)" + (
            f"; bf16 / torch fp32: {sp['bf16_over_torch_fp32']:.2f}x; bf16 / ORT fp32: {sp['bf16_over_ort_fp32']:.2f}x"
            if "bf16_over_torch_fp32" in sp else ""))  # fmt: skip
    if "skipped" in p.get("starter", {}):
        print(f"starter fidelity: {p['starter']['skipped']}")
        return
    for label in ("starter", "trained"):
        st = p.get(label)
        if not st:
            continue
        print(f"\n{label} model {Path(st['model']).name} ({st['input_size']} px, threshold {st['threshold']:.3f}): "
              f"calibrated on {st['calibration']}; measured on {st['held_out']} and their self-blends")  # fmt: skip
        for k, v in st["fp32_scores"].items():
            print(f"  FP32 scores, {k}: p5 {v['p5']:.3f}, median {v['median']:.3f}, p95 {v['p95']:.3f}; "
                  f"{v['above_threshold']}/{v['n']} above the threshold")  # fmt: skip
        print(f"{'':<36}{'rank corr':>10}{'flips':>9}{'med err':>9}{'att mad':>9}{'att corr':>9}  tolerance")
        for k, f in st["fidelity"].items():
            print(f"{k:<36}{f['spearman']:>10.4f}{f['flips']:>5}/{f['n']:<3}{100 * f['score_median_rel']:>8.2f}%"
                  f"{f['attention_mad']:>9.4f}{f['attention_corr']:>9.4f}  {'within' if f['within_tolerance'] else 'OUTSIDE'}")  # fmt: skip
        print(f"{label + ', ' + str(st['input_size']) + ' px':<40}{'crops/s':>9}")
        for k, v in st["crops_per_s"].items():
            print(f"{k:<40}{v:>9.2f}")
        extra = f"fp32 (converted) / fp16 graph: {st['fp32_over_fp16_graph']:.2f}x; " if "fp32_over_fp16_graph" in st else ""
        print(f"{extra}int8 / fp32: {st['int8_over_fp32']:.2f}x; bf16: {st['bf16']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="a training run (default: random-init paper preset)")
    ap.add_argument("--faces", type=Path, help="folder of photos with faces")
    ap.add_argument("--seconds", type=float, default=3.0, help="minimum timed seconds per measurement")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--exp-batch", type=int, default=8, help="batch size of the experiments")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the raw-vs-ours comparison")
    ap.add_argument("--quick", action="store_true", help="short run: batches 1 8, 1.5 s, 3 rounds")
    ap.add_argument("--only", choices=["all", "backends", "precision"], default="all",
                    help="backends: the backends and ORT experiments; precision: int8/bf16 vs FP32 (issue 15)")
    ap.add_argument("--precision-threads", type=int, default=2, help="threads of the precision part (issue 15: 2)")
    ap.add_argument("--fidelity-only", action="store_true", help="precision: skip the 299 px speed part")
    ap.add_argument("--no-starter", action="store_true", help="precision: leave the starter model out")
    ap.add_argument("--trained", type=Path, help="a trained FP32 .onnx (e.g. from bench/model299.sh) measured like the starter")
    ap.add_argument("--trained-run", type=Path, help="the training run of --trained (its torch model for bf16)")
    ap.add_argument("--int8-crops", type=int, default=48, help="face crops calibrating the 299 px int8 model")
    args = ap.parse_args()
    if args.quick:
        args.batches, args.seconds, args.rounds = [1, 8], 1.5, 3
    # torch's OpenMP threads spin-wait by default; on a shared machine that collapses its rate (as ORT's
    # spinning did, docs/engines.md "Speed"): wait passively, like the ORT sessions here
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if args.only == "precision":
        return precision_main(args)

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
    }
    if args.only == "all":
        result["precision"] = precision_section(args, work)
    result["seconds_total"] = time.time() - t0
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
    if "precision" in result:
        print_precision(result["precision"])
    print(f"\nwrote {out}")
    return 0


def precision_main(args: argparse.Namespace) -> int:
    import onnxruntime as ort
    import torch

    t0, load_avg = time.time(), os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="acfd-bench-"))
    p = precision_section(args, work)
    result = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "onnxruntime": ort.__version__,
                    "torch": torch.__version__, "load_avg_at_start": load_avg, "load_avg_at_end": os.getloadavg()},
        "precision": p, "seconds_total": time.time() - t0,
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"engine-precision-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2))
    print_precision(p)
    print(f"\nload average {load_avg[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
