"""Benchmark of `acfd-scan --ray`: the same folder scanned by the local pipeline and on a local Ray instance.

In one run, on this machine:

1. the local pipeline (isolated decode workers + engine thread, `LocalExecutor`) scans the folder;
2. a local Ray instance is started with `--cpus` CPUs (default 2, `tests/ray_helpers.LocalRay`: its own temp
   dir and ports, stopped by killing only its processes);
3. Ray's start-up cost, measured on its own: `ray.init` (connecting), then the executor's two actors
   (`_Frames` with its decode worker ready, `_Score` with the model loaded from the object store) started as
   plain actors until both answer; they are then killed;
4. the same folder scanned with `--ray ADDRESS` (`RayExecutor`, a fresh store): its wall time includes
   starting its own actors (Ray Data starts them per dataset).

Reported: wall time, videos/s and video-s/s of each, the throughput ratio Ray / local (with and without
the start-up cost), the stage costs per video-second (decode and detect in the workers, the model's busy
time), and the driver's cost per video (`finish_video` + the store's transaction: `timings.store`) beside
the model's time per video. The model is bench/scan.py's: the paper preset at 299 px with random weights
(speed does not depend on the weights) unless --model. Prints a table and writes bench/results/ray_scan.json.

    .venv/bin/python bench/ray_scan.py [--data DIR] [--model FILE.onnx] [--fps 1] [--copies N]
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import click

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.ray_helpers (a checkout's, like bench/scan.py's imports)
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "videos"


def folder(data: Path, copies: int, tmp: Path) -> Path:
    """``data`` itself, or ``copies`` copies of its videos in one folder (distinct files, each scanned)."""
    if copies <= 1:
        return data
    out = tmp / "videos"
    out.mkdir()
    for k in range(copies):
        for f in sorted(data.iterdir()):
            if f.is_file():
                shutil.copy(f, out / f"{k}_{f.name}")
    return out


def scan(data: Path, backend, db: str, fps: float, ray: str | None) -> dict:  # noqa: ANN001
    from acfd.scanner.pipeline import ScanConfig, Scanner

    cfg = ScanConfig(paths=(str(data),), db=db, fps=fps, store_crops=3, ray=ray)
    t0 = time.perf_counter()
    sc = Scanner(cfg, backend)
    first: list[float] = []
    s = sc.run(progress=lambda r, st: first.append(time.perf_counter() - t0) if r and not first else None)
    wall = time.perf_counter() - t0
    t = s.timings
    videos = s.n_ok + s.n_no_face + s.n_error
    out = {"wall_s": wall, "first_video_s": first[0] if first else None, "videos": videos,
           "errors": s.n_error, "video_s": s.video_seconds, "frames": s.n_frames, "faces": s.n_faces,
           "decode_s": t.decode, "detect_s": t.detect, "infer_s": s.infer_busy_s, "store_s": t.store}
    plan = getattr(sc.executor, "plan", None)
    out["workers"] = plan["frames_actors"] if plan else cfg.n_workers
    out["batch"] = plan["batch_size"] if plan else sc.batch_size
    return out


def startup(backend) -> dict:  # noqa: ANN001
    """Ray's start-up, on its own: connecting, then the executor's two actors until both are ready."""
    import ray
    from acfd.scanner.decode import Sampling
    from acfd.scanner.frames import FramesConfig
    from acfd.scanner.ray_exec import _Frames, _Score, model_files
    from acfd.scanner.worker import WorkerConfig
    from acfd.schemas.artifact import project_version

    class Frames(_Frames):
        def ready(self) -> str:
            while not all(w.ready for w in self.pool._workers):  # the decode worker loaded MediaPipe
                self.pool.poll(0.05)
            return self.fatal

    class Score(_Score):
        def ready(self) -> str:
            return self.fatal

    t0 = time.perf_counter()
    name, files, precision = model_files(backend)
    ref = ray.put(files)
    t_put = time.perf_counter() - t0
    meta = backend.meta
    wcfg = WorkerConfig(FramesConfig(Sampling(1.0, None), meta.input_size, meta.crop_margin))
    t0 = time.perf_counter()
    f = ray.remote(num_cpus=1)(Frames).remote(wcfg, 300.0, 3, project_version())
    sc = ray.remote(num_cpus=1)(Score).remote([ref], name, backend.model_id, "cpu", precision,
                                              meta.input_size)
    got = ray.get([f.ready.remote(), sc.ready.remote()])
    t_actors = time.perf_counter() - t0
    if any(got):
        raise RuntimeError(f"an actor could not start: {got}")
    for a in (f, sc):
        ray.kill(a)
    mb = sum(len(b) for b in files.values()) / 1e6
    return {"model_put_s": t_put, "model_mb": mb, "actors_ready_s": t_actors}


def _median(rows: list[dict], key: str) -> float:
    v = sorted(r[key] for r in rows)
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


def _derive(r: dict) -> dict:
    vs, n = max(r["video_s"], 1e-9), max(r["videos"], 1)
    r["videos_per_s"], r["video_s_per_s"] = r["videos"] / r["wall_s"], r["video_s"] / r["wall_s"]
    r["decode_per_video_s"], r["detect_per_video_s"] = r["decode_s"] / vs, r["detect_s"] / vs
    r["infer_per_video_s"] = r["infer_s"] / vs
    r["infer_per_video"], r["commit_per_video"] = r["infer_s"] / n, r["store_s"] / n
    return r


@click.command()
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=DEFAULT_DATA)
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A .onnx; default: bench/scan.py's paper preset at 299 px with random weights.")
@click.option("--fps", type=float, default=1.0, show_default=True)
@click.option("--copies", type=int, default=1, show_default=True,
              help="Scan N copies of the folder's videos (a longer run: the start-up weighs less).")
@click.option("--repeat", type=int, default=3, show_default=True,
              help="Local and Ray scans, alternated; the ratio is of the median walls (a shared machine's "
                   "load moves single runs by 2x).")
@click.option("--cpus", type=int, default=2, show_default=True, help="CPUs of the local Ray instance.")
@click.option("--worker-niceness", type=int, default=None,
              help="Niceness of Ray's workers (RAY_worker_niceness); default: Ray's own, 15. The local "
                   "pipeline runs its engine at 0 and its decode workers at 10: 0 compares like with "
                   "like on a busy machine.")
@click.option("--out", type=click.Path(path_type=Path), default=HERE / "results" / "ray_scan.json",
              show_default=True)
def main(data: Path, model: Path | None, fps: float, copies: int, repeat: int, cpus: int,
         worker_niceness: int | None, out: Path) -> None:
    import ray
    from acfd.engine.runtime import load

    from tests.ray_helpers import ENV, LocalRay

    sys.path.insert(0, str(HERE))
    import store_equivalence as eq  # bench/store_equivalence.py

    out.parent.mkdir(parents=True, exist_ok=True)
    if model is None:
        from scan import random_model  # bench/scan.py

        model = random_model(HERE / "results" / "paper299_random.onnx")
    backend = load(model, device="cpu")
    os.environ.update(ENV)
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # as the executor does (Ray's C++ notes)
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        src = folder(data, copies, tmp)
        t0 = time.perf_counter()
        extra = {} if worker_niceness is None else {"RAY_worker_niceness": str(worker_niceness)}
        cluster = LocalRay(tmp, cpus=cpus, env=extra)
        try:
            cluster.wait_started()
            t_start = time.perf_counter() - t0
            t0 = time.perf_counter()
            ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
            t_init = time.perf_counter() - t0
            boot = {"instance_start_s": t_start, "init_s": t_init, **startup(backend)}
            print(f"done: Ray start-up (init {t_init:.2f} s, actors {boot['actors_ready_s']:.2f} s)",
                  flush=True)
            for k in range(repeat):
                for kind, address in (("local", None), ("ray", cluster.address)):
                    r = scan(src, backend, str(tmp / f"{kind}{k}.sqlite"), fps, address)
                    runs.append(_derive({"run": kind, "round": k, **r}))
                    print(f"done: {kind} {k + 1}/{repeat} in {r['wall_s']:.1f} s", flush=True)
            rows, worst = eq.compare(eq.load(tmp / "local0.sqlite"), eq.load(tmp / "ray0.sqlite"), 1e-5)
            same = all(not r["diffs"] for r in rows)
        finally:
            if ray.is_initialized():
                ray.shutdown()
            cluster.stop()
    cost = boot["init_s"] + boot["actors_ready_s"]
    what = src if copies <= 1 else f"{copies} copies of {data}"
    print(f"{len(rows)} videos ({what}), {fps:g} frame/s, model {backend.meta.input_size} px {backend.name}; "
          f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}); Ray workers at niceness "
          f"{15 if worker_niceness is None else worker_niceness}; stores "
          f"{'the same' if same else 'DIFFERENT'} (largest score difference {worst:.2g})")
    print(f"{'run':6} {'videos':>6} {'video-s':>7} {'faces':>5} {'wall s':>7} {'first':>6} {'videos/s':>8} "
          f"{'vid-s/s':>7} {'decode/vs':>9} {'detect/vs':>9} {'infer/vs':>8} {'infer/vid':>9} "
          f"{'commit/vid':>10} {'workers':>7} {'batch':>5}")
    for r in runs:
        print(f"{r['run']:6} {r['videos']:6d} {r['video_s']:7.1f} {r['faces']:5d} {r['wall_s']:7.1f} "
              f"{r['first_video_s'] or float('nan'):6.1f} {r['videos_per_s']:8.3f} {r['video_s_per_s']:7.2f} "
              f"{r['decode_per_video_s']:9.3f} {r['detect_per_video_s']:9.3f} {r['infer_per_video_s']:8.3f} "
              f"{r['infer_per_video']:9.3f} {r['commit_per_video']:10.4f} {r['workers']:7d} {r['batch']:5d}")
    keys = ("wall_s", "decode_per_video_s", "detect_per_video_s", "infer_per_video_s", "infer_per_video",
            "commit_per_video")
    med = {kind: {k: _median([r for r in runs if r["run"] == kind], k) for k in keys}
           for kind in ("local", "ray")}
    for kind, m in med.items():
        print(f"median {kind:5}: wall {m['wall_s']:.1f} s; per video-second: decode "
              f"{m['decode_per_video_s']:.3f} s, detect {m['detect_per_video_s']:.3f} s, infer "
              f"{m['infer_per_video_s']:.3f} s; per video: model {m['infer_per_video']:.3f} s, commit "
              f"{m['commit_per_video']:.4f} s")
    ratio = med["local"]["wall_s"] / med["ray"]["wall_s"]
    steady = med["local"]["wall_s"] / max(med["ray"]["wall_s"] - cost, 1e-9)
    print(f"Ray start-up: instance {boot['instance_start_s']:.2f} s (ray start, not counted), "
          f"ray.init {boot['init_s']:.2f} s, model into the object store {boot['model_put_s']:.2f} s "
          f"({boot['model_mb']:.0f} MB), actors ready {boot['actors_ready_s']:.2f} s (decode worker with "
          "MediaPipe; model loaded)")
    print(f"throughput Ray / local (median walls): {ratio:.2f}x with Ray's start-up (init + actors: "
          f"{cost:.1f} s), {steady:.2f}x without it (aim >= 0.8x)")
    result = {"data": str(data), "copies": copies, "fps": fps, "repeat": repeat, "model": str(model),
              "backend": backend.name, "input_size": backend.meta.input_size, "cpu_count": os.cpu_count(),
              "ray_cpus": cpus, "ray_version": ray.__version__,
              "ray_worker_niceness": 15 if worker_niceness is None else worker_niceness, "runs": runs,
              "medians": med, "startup": boot, "ratio_with_startup": ratio, "ratio_without_startup": steady,
              "stores_same": same, "max_score_diff": worst,
              "note": "stage seconds overlap (workers and model run at once); commit = finish_video + the "
                      "store's transaction per video, on the driver; Ray's wall includes its actors' "
                      "start per scan"}
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
