"""Benchmark of `acfd-scan`: video-seconds scanned per wall-second and where the time goes.

Runs the real pipeline (isolated decode+detect workers, batched engine, SQLite store) over a folder
of videos (default ../shared/data/videos) at 1 frame/s and at every frame, and in the same run a
naive baseline: one process, one frame at a time through decode -> detect -> model (batch of 1 crop).
Also measures the model alone on a batch (the bound a scan can reach on this machine).

The model is a 299x299 paper-preset network with random weights unless --model names a trained
artifact (the time per crop does not depend on the weights). Prints a table and writes
bench/results/scan.json.

    .venv/bin/python bench/scan.py [--data DIR] [--all-data DIR_OR_FILE] [--model FILE.onnx] [--modes fps1,all]
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

import click
import numpy as np
from acfd.scanner.pipeline import CPU_BATCH

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "videos"


def random_model(out: Path) -> Path:
    """The paper preset at 299 px, random init, exported to ONNX (cached)."""
    if out.is_file():
        return out
    from acfd.engine.export import export_onnx
    from acfd.train.config import TrainConfig
    from acfd.train.model import artifact_meta, build_model

    cfg = TrainConfig()
    model = build_model(cfg).eval()
    meta = artifact_meta(cfg)
    return export_onnx(model.lq_branch(), meta, out)


def model_bound(backend, batch: int, reps: int = 3) -> float:  # noqa: ANN001
    s = backend.meta.input_size
    x = np.random.default_rng(0).integers(0, 256, (batch, s, s, 3), dtype=np.uint8)
    backend.infer(x[:2])  # warm-up
    t0 = time.perf_counter()
    for _ in range(reps):
        backend.infer(x)
    return batch * reps / (time.perf_counter() - t0)


def run_pipeline(data: Path, backend, sampling: dict, workers: int | None, batch: int | None) -> dict:  # noqa: ANN001
    from acfd.scanner.pipeline import ScanConfig, Scanner

    with tempfile.TemporaryDirectory() as tmp:
        cfg = ScanConfig(paths=(str(data),), db=os.path.join(tmp, "b.sqlite"), workers=workers,
                         batch_size=batch, store_crops=3, **sampling)
        t0 = time.perf_counter()
        sc = Scanner(cfg, backend)
        first: list[float] = []
        s = sc.run(progress=lambda r, st: first.append(time.perf_counter() - t0) if r and not first else None)
        wall = time.perf_counter() - t0
    t = s.timings
    return {
        "wall_s": wall,
        "video_s": s.video_seconds,
        "videos": s.n_ok + s.n_no_face,
        "errors": s.n_error,
        "frames": s.n_frames,
        "faces": s.n_faces,
        "decode_s": t.decode,
        "detect_s": t.detect,
        "infer_s": s.infer_busy_s,
        "store_s": t.store,
        "first_video_s": first[0] if first else None,
        "workers": cfg.n_workers,
        "batch": sc.batch_size,
    }


def run_naive(data: Path, backend, sampling: dict) -> dict:  # noqa: ANN001
    """One frame at a time, one crop at a time, one process: the way a simple script does it."""
    from acfd.scanner.decode import Sampling, open_frames
    from acfd.scanner.discover import discover
    from acfd.scanner.faces import FaceDetector, crop, crop_box

    t0 = time.perf_counter()
    det = FaceDetector()
    size, margin = backend.meta.input_size, backend.meta.crop_margin
    td = tdet = tinf = 0.0
    frames = faces = 0
    video_s = 0.0
    for c in discover([data], recursive=True):
        if c.error:
            continue
        t = time.perf_counter()
        info, it = open_frames(c.path, Sampling(**sampling), decoder="pyav")
        td += time.perf_counter() - t
        video_s += info.duration_s or 0.0
        while True:
            t = time.perf_counter()
            f = next(it, None)
            td += time.perf_counter() - t
            if f is None:
                break
            frames += 1
            t = time.perf_counter()
            found = det.detect(f.image)
            crops = [crop(f.image, crop_box(x, margin), size) for x in found]
            tdet += time.perf_counter() - t
            t = time.perf_counter()
            for cr in crops:
                backend.infer(cr[None])
                faces += 1
            tinf += time.perf_counter() - t
    det.close()
    return {"wall_s": time.perf_counter() - t0, "video_s": video_s, "frames": frames, "faces": faces,
            "decode_s": td, "detect_s": tdet, "infer_s": tinf}


@click.command()
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=DEFAULT_DATA)
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A trained .onnx; default: the paper preset at 299 px with random weights.")
@click.option("--modes", default="fps1,all", show_default=True, help="fps1 (1 frame/s) and/or all (every frame).")
@click.option("--all-data", type=click.Path(exists=True, path_type=Path), default=None,
              help="Video(s) for the every-frame mode (default: --data); every frame of all of them is slow on a CPU.")
@click.option("--workers", type=int, default=None)
@click.option("--batch-size", type=int, default=None)
@click.option("--no-naive", is_flag=True, help="Skip the naive baseline.")
def main(data: Path, model: Path | None, modes: str, all_data: Path | None, workers: int | None,
         batch_size: int | None, no_naive: bool) -> None:
    from acfd.engine.runtime import load

    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    weights = "trained" if model else "random init"
    model = model or random_model(out_dir / "paper299_random.onnx")
    backend = load(model, device="auto")
    bound = model_bound(backend, batch_size or CPU_BATCH)
    bound1 = model_bound(backend, 1, reps=8)
    sampling = {"fps1": {"fps": 1.0}, "all": {"fps": 1000.0}}
    rows = []
    for mode in modes.split(","):
        src = (all_data or data) if mode == "all" else data
        p = run_pipeline(src, backend, sampling[mode], workers, batch_size)
        rows.append({"mode": mode, "method": "pipeline", "data": str(src), **p})
        print(f"done: {mode} pipeline in {p['wall_s']:.1f} s", flush=True)
        if not no_naive:
            n = run_naive(src, backend, sampling[mode])
            rows.append({"mode": mode, "method": "naive", "data": str(src), **n})
            print(f"done: {mode} naive in {n['wall_s']:.1f} s", flush=True)
    hdr = f"{'mode':5} {'method':8} {'videos':>6} {'video-s':>8} {'frames':>6} {'faces':>5} {'wall s':>7} " \
          f"{'vid-s/s':>7} {'crops/s':>7} {'decode':>7} {'detect':>7} {'infer':>7} {'store':>6} {'engine busy':>11}"
    print(f"model: {backend.name} {backend.meta.input_size}px ({weights}), model alone {bound:.1f} crops/s "
          f"(batch {batch_size or CPU_BATCH}), {bound1:.1f} crops/s (batch 1) "
          f"on {os.cpu_count()} cores ({platform.processor() or platform.machine()})")
    print(hdr)
    for r in rows:
        r["video_s_per_s"] = r["video_s"] / r["wall_s"]
        r["crops_per_s"] = r["faces"] / r["wall_s"]
        # share of the wall time the model was running: on a CPU the model is the bound, so this says
        # how close to it the scan ran (the model's own speed varies with the machine's load)
        r["engine_busy"] = r["infer_s"] / r["wall_s"]
        print(f"{r['mode']:5} {r['method']:8} {r.get('videos', '-'):>6} {r['video_s']:8.1f} {r['frames']:6d} "
              f"{r['faces']:5d} {r['wall_s']:7.1f} {r['video_s_per_s']:7.2f} {r['crops_per_s']:7.2f} "
              f"{r['decode_s']:7.1f} {r['detect_s']:7.1f} {r['infer_s']:7.1f} {r.get('store_s', 0.0):6.2f} "
              f"{100 * r['engine_busy']:10.0f}%")
    for mode in modes.split(","):
        pr = [r for r in rows if r["mode"] == mode]
        if len(pr) == 2:
            print(f"{mode}: pipeline / naive = {pr[1]['wall_s'] / pr[0]['wall_s']:.2f}x faster; pipeline at "
                  f"{100 * pr[0]['crops_per_s'] / bound:.0f}% of the model alone measured at the start")
    result = {"model": str(model), "weights": weights, "backend": backend.name, "model_bound_crops_s": bound, "model_batch1_crops_s": bound1,
              "cpu_count": os.cpu_count(), "data": str(data), "rows": rows,
              "note": "stage seconds of the pipeline overlap (workers and engine run at once); naive is serial"}
    (out_dir / "scan.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {out_dir / 'scan.json'}")


if __name__ == "__main__":
    main()
