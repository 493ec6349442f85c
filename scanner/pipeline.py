"""The scan pipeline: discover -> decode -> faces -> batched inference -> aggregate -> store.

Three kinds of workers run at once, joined by bounded buffers:

- decode workers (processes, :mod:`acfd.scanner.worker`): decode the sampled frames, detect and track
  faces, crop them; one video per worker at a time; crashes and hangs become error rows;
- the engine thread: takes crops from any videos, fills batches of ``batch_size``, runs the model
  (``acfd.engine.runtime`` backend; onnxruntime and torch release the GIL);
- the main thread: hands out videos, collects frames and scores, and when a video is complete,
  aggregates its verdicts and stores it in one transaction.

When the engine falls behind, the main thread stops reading from the workers (back-pressure); the
workers then block on their pipes, so memory stays bounded by ``max_pending`` crops.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from acfd.schemas import db
from acfd.schemas.artifact import ArtifactError, ArtifactMeta, project_version
from acfd.schemas.errors import AcfdError, OutputClosed
from acfd.schemas.hashing import content_hash
from acfd.schemas.settings import error_key, verdict_key

from . import worker as W
from .aggregate import DEFAULT_STRATEGY, STRATEGIES, Scale, aggregate
from .config import DEFAULTS
from .decode import Sampling
from .discover import Candidate, discover, display_path
from .faces import DETECTOR_MODES
from .results import FaceRecord, ScanSummary, StoredCrop, Timings, VideoResult
from .store import Store

THUMB_SIZE = 128
SUMMARY_NAMES = 20  # flagged videos and errors named in the summary (the store has them all)
JPEG_QUALITY = 85


class ScanError(AcfdError):
    """The scan cannot run (bad settings, model or database); not one video's fault."""


class Prediction(Protocol):
    score: np.ndarray
    attention: np.ndarray | None


class Backend(Protocol):
    """What ``acfd.engine.runtime.load`` returns (``acfd.engine.backends.Backend``), as the scanner uses it."""

    meta: ArtifactMeta
    name: str
    model_id: str
    max_batch: int | None

    def infer(self, crops: np.ndarray) -> Prediction: ...


# ONNX Runtime on a CPU runs Xception fastest at small batches (activations stay in cache): interleaved
# on 2 cores, batch 1/2/4/16 gave 7.4/7.1/7.1/6.6 crops/s. 4 still fills across videos at a 5% cost.
CPU_BATCH = 4

# Below this address-space limit a decode worker cannot even load its libraries (measured: it dies at
# start up to 1024 MB, and decoder threads fail to start below about 4 GB on a 2-core machine).
MIN_WORKER_MEMORY_MB = 2048


@dataclass(frozen=True)
class ScanConfig:
    """Settings of one scan, validated once."""

    paths: tuple[str, ...]
    model: str | None = None  # artifact path; None when a backend object is given to Scanner
    db: str = "acfd.sqlite"
    recursive: bool = False
    device: str = DEFAULTS.device
    fps: float | None = DEFAULTS.fps
    frames: int | None = None
    every_frame: bool = False  # take every frame (fps and frames are then not used)
    batch_size: int | None = None  # None: the backend's max_batch, else 32 (GPU) / CPU_BATCH
    workers: int | None = None  # None: cores - 1, at least 1, at most 8
    rescan: bool = False
    retry_errors: bool = False
    strategy: str = DEFAULT_STRATEGY
    min_support: int | None = None  # faces an identity needs to flag a video; None: max(2, 10% of face frames)
    decoder: str = DEFAULTS.decoder
    timeout_s: float = DEFAULTS.timeout_s  # a decode worker silent this long on one video is killed
    store_crops: int = DEFAULTS.store_crops  # face crops (thumbnail + attention) kept per identity, highest scores
    detector_model: str = DEFAULTS.detector  # full, short or auto; the same default as acfd-train prepare
    min_face_score: float = DEFAULTS.min_face_score
    detect_max_side: int = DEFAULTS.detect_max_side
    worker_memory_mb: int | None = None
    sniff: bool = True
    max_pending: int = 512  # crops waiting for the engine before the workers are held back

    def __post_init__(self) -> None:
        if not self.paths:
            raise ScanError("give at least one path to scan")
        if any(not os.fspath(p) for p in self.paths):
            # an unset "$DIR" in a script would otherwise scan the current folder
            raise ScanError("an empty path was given (an unset variable?); name the folder, or '.' for this one")
        if self.strategy not in STRATEGIES:
            raise ScanError(f"unknown strategy {self.strategy!r}: choose one of {', '.join(STRATEGIES)}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ScanError(f"unknown device {self.device!r}: choose auto, cpu or cuda")
        if self.batch_size is not None and self.batch_size < 1:
            raise ScanError("batch size must be at least 1")
        if self.workers is not None and self.workers < 1:
            raise ScanError("need at least one worker")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ScanError(f"--timeout must be a positive number of seconds, not {self.timeout_s}")
        if self.worker_memory_mb is not None and self.worker_memory_mb < MIN_WORKER_MEMORY_MB:
            raise ScanError(
                f"--worker-memory {self.worker_memory_mb} MB is too small: a decode worker needs at least "
                f"{MIN_WORKER_MEMORY_MB} MB of address space (its libraries alone map about 1 GB)"
            )
        if self.min_support is not None and self.min_support < 1:
            raise ScanError("min_support must be >= 1")
        if self.store_crops < 0:
            raise ScanError("store_crops must be >= 0")
        if self.detector_model not in DETECTOR_MODES:
            raise ScanError(f"unknown face detector {self.detector_model!r}: choose one of {', '.join(DETECTOR_MODES)}")
        if self.every_frame and self.frames is not None:
            raise ScanError("every frame excludes frames per video")
        _ = self.sampling  # validates

    @property
    def sampling(self) -> Sampling:
        if self.every_frame:
            return Sampling(fps=None, every=True)
        return Sampling(self.fps, self.frames)

    @property
    def n_workers(self) -> int:
        try:
            cores = len(os.sched_getaffinity(0))  # what this process may use (containers, taskset)
        except AttributeError:
            cores = os.cpu_count() or 2
        return self.workers or max(1, min(8, cores - 1))

    def as_args(self) -> dict[str, Any]:
        from dataclasses import asdict

        d = asdict(self)
        d["paths"] = [display_path(os.path.abspath(os.fsdecode(p))) for p in self.paths]
        return d


@dataclass
class _Item:
    video: int
    face: int
    crop: np.ndarray


@dataclass
class _Job:
    vid: int
    cand: Candidate
    result: VideoResult
    pending: int = 0  # faces sent to the engine, not yet scored
    decoded: bool = False  # the worker reported done
    failed: bool = False
    kept: dict[int, list[tuple[float, int, StoredCrop]]] = field(default_factory=dict)  # identity -> min-heap


class _Engine(threading.Thread):
    """Batches crops from any videos and runs the backend; results go to ``out``."""

    def __init__(self, backend: Backend, batch_size: int) -> None:
        super().__init__(name="acfd-engine", daemon=True)
        self.backend = backend
        self.batch_size = batch_size
        self.inq: queue.Queue[_Item | None] = queue.Queue()
        self.out: queue.Queue[tuple[list[_Item], np.ndarray, np.ndarray | None, float] | BaseException] = queue.Queue()
        self.busy_s = 0.0
        self.batches = 0

    def run(self) -> None:
        stop = False
        while not stop:
            item = self.inq.get()
            if item is None:
                break
            items = [item]
            # Fill the batch with whatever is waiting, and whatever arrives within 10 ms.
            deadline = time.monotonic() + 0.01
            while len(items) < self.batch_size:
                try:
                    nxt = self.inq.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                items.append(nxt)
            t0 = time.perf_counter()
            try:
                pred = self.backend.infer(np.stack([it.crop for it in items]))
                score = np.asarray(pred.score, dtype=np.float32).reshape(-1)
                att = None if pred.attention is None else np.asarray(pred.attention, dtype=np.float32)
                if score.shape[0] != len(items):
                    raise ScanError(f"model returned {score.shape[0]} scores for {len(items)} crops")
            except BaseException as e:  # a model failure stops the scan: it is not one video's fault
                self.out.put(e)
                return
            dt = time.perf_counter() - t0
            self.busy_s += dt
            self.batches += 1
            self.out.put((items, score, att, dt))


def _thumbnail(crop: np.ndarray) -> bytes:
    import cv2

    small = cv2.resize(crop, (THUMB_SIZE, THUMB_SIZE), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ScanError("JPEG encoding of a face crop failed")
    return buf.tobytes()


ProgressFn = Callable[[VideoResult | None, dict[str, float]], None]


class Scanner:
    """Runs one scan. ``backend`` may be given (tests, benchmarks); else ``cfg.model`` is loaded."""

    def __init__(self, cfg: ScanConfig, backend: Backend | None = None, worker_target: Any = None,
                 progress: bool = True) -> None:
        """``progress``: show a download bar on stderr when ``cfg.model`` is a URL not yet cached."""
        self.worker_target = worker_target
        # Whether the model is the packaged starter because none was given (never a model named by
        # --model or $ACFD_MODEL, even a copy of it): the scan then says what the starter is.
        self.starter = False
        if backend is None:
            from acfd.engine.fetch import public_spec

            spec = cfg.model
            if not spec:
                spec = default_model()
                self.starter = True
            try:
                backend = load_backend(spec, cfg.device, progress=progress)
            except ArtifactError as e:
                if not self.starter:
                    raise
                # e.g. a Git LFS pointer where the file should be: say what to do, not only what broke
                raise ScanError(f"the packaged starter model is damaged ({e}); reinstall acfd, or give "
                                "--model (or $ACFD_MODEL)") from e
            # What is stored (models.path, the scan's arguments) is the spec as given, minus any password.
            cfg = dataclasses.replace(cfg, model=public_spec(spec))
        self.cfg = cfg
        self.backend = backend
        meta = backend.meta
        self.meta = meta
        self.scale = Scale(meta.r_minus, meta.r_plus, meta.threshold)
        self.batch_size = cfg.batch_size or backend.max_batch or (32 if _cuda(cfg.device) else CPU_BATCH)
        self.engine = db.open_store(cfg.db)
        self.store = Store(self.engine)
        self.stats = {"videos": 0.0, "frames": 0.0, "faces": 0.0}
        self.unchanged_flagged = 0  # skipped as already scanned, stored verdict "fake"
        self.unchanged_errors = 0  # skipped as already scanned, stored status "error"
        # the first few of those flagged ones, (path, stored score), for the summary
        self.unchanged_flagged_videos: list[tuple[str, float | None]] = []
        # Resume compares these with each stored row's key: other settings, other verdicts (or failures).
        args = cfg.as_args()
        self.verdict_key = verdict_key(args)
        self.error_key = error_key(args)

    def _settings_key(self, status: str) -> str:
        return self.error_key if status == db.STATUS_ERROR else self.verdict_key

    # -- helpers -----------------------------------------------------------------------------------
    def _finish_job(self, job: _Job) -> VideoResult:
        r = job.result
        t0 = time.perf_counter()
        if r.status not in (db.STATUS_ERROR, db.STATUS_SKIPPED):
            # Faces are in frame order already (one worker decodes a video, in order).
            if r.faces:
                r.verdict = aggregate(
                    [f.identity for f in r.faces], [f.time_s for f in r.faces],
                    [float(f.score) for f in r.faces], self.cfg.strategy, self.scale, self.cfg.min_support,
                )
                r.status = db.STATUS_OK
            else:
                r.verdict = aggregate([], [], [], self.cfg.strategy, self.scale)
                r.status = db.STATUS_NO_FACE
            r.crops = sorted((sc for heap in job.kept.values() for _, _, sc in heap), key=lambda sc: sc.face_index)
        else:
            r.faces, r.crops, r.verdict = [], [], None
        r.content_hash = None if job.cand.error else content_hash(job.cand.path, job.cand.size)
        r.timings.store = time.perf_counter() - t0
        t1 = time.perf_counter()
        r.video_row_id = self.store.write_video(
            self.scan_id, self.backend.model_id, self.meta.threshold, self.cfg.strategy, r,
            settings_key=self._settings_key(r.status),
        )
        r.timings.store += time.perf_counter() - t1
        return r

    def _keep_crop(self, job: _Job, fi: int, crop: np.ndarray, score: float, att: np.ndarray | None) -> None:
        k = self.cfg.store_crops
        if k == 0:
            return
        ident = job.result.faces[fi].identity
        heap = job.kept.setdefault(ident, [])
        if len(heap) < k or score > heap[0][0]:
            sc = StoredCrop(fi, _thumbnail(crop), THUMB_SIZE, None if att is None else att.copy())
            entry = (score, fi, sc)
            if len(heap) < k:
                heapq.heappush(heap, entry)
            else:
                heapq.heapreplace(heap, entry)

    def _merge_identities(self, job: _Job, mapping: dict[int, int]) -> None:
        """Apply the worker's tracklet -> person map to the faces and the kept crops."""
        for f in job.result.faces:
            f.identity = mapping.get(f.identity, f.identity)
        merged: dict[int, list[tuple[float, int, StoredCrop]]] = {}
        for old, heap in job.kept.items():
            merged.setdefault(mapping.get(old, old), []).extend(heap)
        k = self.cfg.store_crops
        job.kept = {}
        for ident, entries in merged.items():
            top = heapq.nlargest(k, entries, key=lambda e: (e[0], e[1]))
            heapq.heapify(top)
            job.kept[ident] = top

    # -- the scan ----------------------------------------------------------------------------------
    def run(self, progress: ProgressFn | None = None, on_result: Callable[[VideoResult], None] | None = None) -> ScanSummary:
        """Scan every candidate; returns the summary (also stored in the ``scans`` row)."""
        cfg = self.cfg
        t_start = time.perf_counter()
        self.store.mark_dead_scans()
        self.store.register_model(self.backend.model_id, cfg.model or "", self.backend.name, self.meta)
        self.scan_id = self.store.start_scan(
            self.backend.model_id, cfg.strategy, self.meta.threshold, self.backend.name,
            str(getattr(self.backend, "device", cfg.device)), cfg.as_args(), project_version(),
            device_name=_device_name(self.backend),
        )
        status = db.SCAN_FAILED
        summary_extra = Timings()
        infer_busy = 0.0
        try:
            cands = list(discover(cfg.paths, cfg.recursive, cfg.sniff))
            self.store.set_found(self.scan_id, len(cands))
            self.stats["total"] = float(len(cands))
            previous = {} if cfg.rescan else self.store.previous(self.backend.model_id)
            todo: list[Candidate] = []
            skipped = 0
            immediate: list[VideoResult] = []
            for c in cands:
                p = previous.get(c.key)
                if (
                    p is not None and p.size == c.size and p.mtime_ns == c.mtime_ns
                    and p.settings_key == self._settings_key(p.status)
                    and not (cfg.retry_errors and p.status == db.STATUS_ERROR)
                ):
                    skipped += 1
                    # the stored result still describes this file: it counts for the exit status
                    self.unchanged_flagged += p.flagged
                    if p.flagged and len(self.unchanged_flagged_videos) < SUMMARY_NAMES:
                        self.unchanged_flagged_videos.append((c.display, p.score))
                    self.unchanged_errors += p.status == db.STATUS_ERROR
                    if progress:
                        progress(None, self.stats)
                    continue
                if c.error is not None:
                    immediate.append(VideoResult(c, db.STATUS_ERROR, error=c.error))
                elif c.duplicate_of is not None:
                    immediate.append(
                        VideoResult(c, db.STATUS_SKIPPED, error=f"same file as {display_path(c.duplicate_of)}")
                    )
                else:
                    todo.append(c)
            self.store.add_skipped(self.scan_id, skipped)
            for r in immediate:
                self._emit(self._finish_job(_Job(-1, r.candidate, r)), progress, on_result)
            if todo:
                summary_extra, infer_busy = self._run_pool(todo, progress, on_result)
            status = db.SCAN_DONE
        except (KeyboardInterrupt, OutputClosed):
            status = db.SCAN_INTERRUPTED
            raise
        finally:
            summary = self.store.finish_scan(self.scan_id, status, time.perf_counter() - t_start)
            summary.timings = summary_extra
            summary.infer_busy_s = infer_busy
            summary.unchanged_flagged = self.unchanged_flagged
            summary.unchanged_flagged_videos = list(self.unchanged_flagged_videos)
            summary.unchanged_errors = self.unchanged_errors
            self.summary = summary
        return summary

    def _emit(self, r: VideoResult, progress: ProgressFn | None, on_result: Callable[[VideoResult], None] | None) -> None:
        self.stats["videos"] += 1
        if on_result:
            on_result(r)
        if progress:
            progress(r, self.stats)

    def _run_pool(self, todo: list[Candidate], progress: ProgressFn | None, on_result: Callable[[VideoResult], None] | None) -> tuple[Timings, float]:
        cfg = self.cfg
        wcfg = W.WorkerConfig(
            sampling=cfg.sampling,
            crop_size=self.meta.input_size,
            crop_margin=self.meta.crop_margin,
            decoder=cfg.decoder,
            gpu_decode=_cuda(cfg.device),
            detector_model=cfg.detector_model,
            min_face_score=cfg.min_face_score,
            detect_max_side=cfg.detect_max_side,
            memory_limit_mb=cfg.worker_memory_mb,
        )
        totals = Timings()
        eng = _Engine(self.backend, self.batch_size)
        eng.start()
        jobs: dict[int, _Job] = {}
        next_i = 0
        n_pending = 0
        done = 0
        pool = W.DecodePool(wcfg, min(cfg.n_workers, len(todo)), cfg.timeout_s, target=self.worker_target)
        try:
            while done < len(todo):
                for wid in pool.idle():
                    if next_i >= len(todo):
                        break
                    c = todo[next_i]
                    job = _Job(next_i, c, VideoResult(c, db.STATUS_OK))
                    jobs[next_i] = job
                    pool.submit(wid, next_i, c.path)
                    next_i += 1
                # Scores first: they free memory and may complete videos.
                finished: list[_Job] = []
                wait_s = 0.0 if n_pending < cfg.max_pending else 0.2
                while True:
                    try:
                        got = eng.out.get(timeout=wait_s) if wait_s else eng.out.get_nowait()
                    except queue.Empty:
                        break
                    wait_s = 0.0
                    if isinstance(got, BaseException):
                        if isinstance(got, AcfdError):
                            raise got
                        raise ScanError(f"the model failed: {got.__class__.__name__}: {got}") from got
                    items, score, att, dt = got
                    n_pending -= len(items)
                    share = dt / len(items)
                    for j, it in enumerate(items):
                        job = jobs.get(it.video)
                        if job is None or job.failed:
                            continue
                        job.pending -= 1
                        f = job.result.faces[it.face]
                        f.score = float(score[j])
                        job.result.timings.infer += share
                        self._keep_crop(job, it.face, it.crop, f.score, None if att is None else att[j])
                        if job.decoded and job.pending == 0:
                            finished.append(job)
                if n_pending >= cfg.max_pending:
                    pool.pause_clock()  # we were not listening to the workers: not their time
                else:
                    for ev in pool.poll(0.02 if not finished else 0.0):
                        job = jobs.get(ev.video)
                        if job is None:
                            continue
                        r = job.result
                        if ev.kind == W.MSG_INFO:
                            r.info = ev.payload
                        elif ev.kind == W.MSG_FRAME:
                            fr: W.FrameResult = ev.payload
                            r.n_frames += 1
                            r.timings.decode += fr.t_decode
                            r.timings.detect += fr.t_detect
                            self.stats["frames"] += 1
                            for k, (face, ident) in enumerate(zip(fr.faces, fr.identities, strict=True)):
                                r.faces.append(FaceRecord(fr.index, fr.time_s, face, ident))
                                job.pending += 1
                                n_pending += 1
                                self.stats["faces"] += 1
                                assert fr.crops is not None
                                eng.inq.put(_Item(job.vid, len(r.faces) - 1, fr.crops[k]))
                        elif ev.kind == W.MSG_DONE:
                            _, t_dec, t_det, decoder, mapping = ev.payload
                            if mapping:
                                self._merge_identities(job, mapping)
                            r.timings.decode, r.timings.detect = t_dec, t_det
                            if r.info is not None and r.info.decoder != decoder:
                                r.info = dataclasses.replace(r.info, decoder=decoder)
                            job.decoded = True
                            if job.pending == 0:
                                finished.append(job)
                        elif ev.kind == W.MSG_ERROR:
                            job.failed = True
                            r.status, r.error = db.STATUS_ERROR, str(ev.payload)
                            finished.append(job)
                for job in finished:
                    if job.vid not in jobs:
                        continue
                    del jobs[job.vid]
                    r = self._finish_job(job)
                    totals.add(r.timings)
                    done += 1
                    self._emit(r, progress, on_result)
        finally:
            eng.inq.put(None)
            pool.close()
            eng.join(timeout=30)
        return totals, eng.busy_s


def _device_name(backend: Backend) -> str | None:
    """What really runs the model, for ``scans.device_name`` (the backend's own words, if it has them)."""
    fn = getattr(backend, "device_name", None)
    try:
        return str(fn()) if callable(fn) else None
    except Exception:  # a description must never stop a scan
        return None


def _cuda(device: str) -> bool:
    """Whether a CUDA device is to be used (cheap: no torch import just to ask)."""
    if device == "cpu":
        return False
    return device == "cuda" or os.path.exists("/dev/nvidiactl")


# The model used when none is given: packaged data of acfd.scanner (pyproject.toml, package-data), the
# LQ branch as FP16 ONNX with its card inside; its terms are in STARTER-NOTICE.md beside it.
STARTER_FILE = "starter.onnx"
STARTER_NOTICE = "STARTER-NOTICE.md"

# How to get a model, for a first run without one (also in `acfd-scan --help` and README "Getting a model").
NO_MODEL_WAYS = (
    "  train on FaceForensics++ with acfd-train (README \"Training\"), or retrain the starter with `make starter-model` "
    "on footage you have rights to; or `make demo`, a toy model that only shows the machinery;\n"
    "  or a model someone published: --model 'https://host/model.onnx#sha256=<hex>' or "
    "'hf://org/repo@<commit>/model.onnx'"
)


def no_model_message(starter: Path) -> str:
    """What a scan without a model says when this install lacks the starter model (three lines)."""
    return (
        f"no model: the starter model is missing from this install ({starter}); reinstall acfd (or restore "
        "the file), or give --model (or $ACFD_MODEL) an .onnx/.plan file, a run directory or a URL. "
        "Ways to get one:\n" + NO_MODEL_WAYS
    )


class NoModelError(ScanError):
    """No model was given and the starter model is missing: a message of a few lines of our own text."""

    multiline = True  # the CLI prints its lines as they are (each still made inert)


def starter_model_path() -> Path:
    """Where the packaged starter model lies in this install (the file may be missing: a checkout where
    it was deleted, or a build without it)."""
    from importlib import resources

    return Path(str(resources.files("acfd.scanner").joinpath("models", STARTER_FILE)))


def default_model() -> str:
    """The model spec used when none is given: the packaged starter model; without it, how to get one."""
    path = starter_model_path()
    if path.is_file():
        return str(path)
    raise NoModelError(no_model_message(path))


def load_backend(model: str | os.PathLike[str], device: str = "auto", progress: bool = True) -> Backend:
    """The runtime backend for a model artifact (``acfd.engine.runtime.load``): a path, or an
    ``https://...#sha256=`` / ``hf://`` URL downloaded once into the cache (``acfd.engine.fetch``)."""
    from acfd.engine import runtime
    from acfd.engine.fetch import resolve_model

    return runtime.load(resolve_model(os.fspath(model), progress=progress), device=device)


def scan(cfg: ScanConfig, backend: Backend | None = None, progress: ProgressFn | None = None) -> ScanSummary:
    """Run one scan with ``cfg``; see :class:`Scanner`."""
    return Scanner(cfg, backend).run(progress)


__all__: Sequence[str] = ("ScanConfig", "Scanner", "ScanError", "scan", "load_backend")
