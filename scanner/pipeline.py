"""The scan: a source's items -> an executor over the stages -> a stream of results -> sinks.

- source (:mod:`acfd.scanner.sources`): the files under the given paths, walked lazily ahead of the scan,
  and the given URLs (:mod:`acfd.scanner.urls`), each probed when the walk reaches it;
- plan (:meth:`Scanner.results`): resume (a video unchanged since a stored result with the same model
  and settings is not scanned again), unreadable paths and duplicates become results at once;
- executor (:mod:`acfd.scanner.local`): decode, faces, batched inference and aggregation
  (:mod:`acfd.scanner.stages`) in isolated worker processes and an engine thread;
- sinks (:mod:`acfd.scanner.sinks`): the store first (one transaction per video), then the caller's
  (JSONL, the CLI's summary and progress bar).

A running scan holds a lease in its ``scans`` row, renewed while it runs; a scan whose lease ran out
(killed, or its machine gone) is marked ``interrupted`` by the next scan of the same store.
"""

from __future__ import annotations

import dataclasses
import math
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from acfd.schemas.artifact import ArtifactError, ArtifactMeta, project_version
from acfd.schemas.errors import OutputClosed
from acfd.schemas.settings import error_key, verdict_key

from . import timeline
from .aggregate import DEFAULT_STRATEGY, STRATEGIES, Scale
from .config import DEFAULTS, PRECISIONS, ScanError
from .decode import Sampling
from .discover import Candidate, Idle, display_path
from .faces import DETECTOR_MODES
from .frames import FramesConfig
from .results import ScanEvent, ScanSummary, Unchanged, VideoResult
from .sources import FileList, Inputs, Lookahead, Source
from .urls import check_url, is_url, public_url, redact

# The store (SQLAlchemy), the stages and the executor are imported where a Scanner needs them, after its
# decode workers have started: importing this module (the CLI does, for ScanConfig) stays cheap.
if TYPE_CHECKING:
    from .executor import Executor
    from .sinks import ScanContext, Tally
    from .stages import Prediction
    from .store import PreviousScan

SUMMARY_NAMES = 20  # flagged videos and errors named in the summary (the store has them all)


class Backend(Protocol):
    """What ``acfd.engine.runtime.load`` returns (``acfd.engine.backends.Backend``), as the scanner uses it."""

    meta: ArtifactMeta
    name: str
    model_id: str
    max_batch: int | None

    def infer(self, crops: Any) -> Prediction: ...


# ONNX Runtime on a CPU runs Xception fastest at small batches (activations stay in cache): interleaved
# on 2 cores, batch 1/2/4/16 gave 7.4/7.1/7.1/6.6 crops/s. 4 still fills across videos at a 5% cost.
CPU_BATCH = 4

# Below this address-space limit a decode worker cannot even load its libraries (measured: it dies at
# start up to 1024 MB, and decoder threads fail to start below about 4 GB on a 2-core machine).
MIN_WORKER_MEMORY_MB = 2048


@dataclass(frozen=True)
class ScanConfig:
    """Settings of one scan, validated once."""

    paths: tuple[str, ...]  # files, folders and URLs (acfd.scanner.urls); a URL may hold user:password@
    model: str | None = None  # artifact path; None when a backend object is given to Scanner
    db: str = "acfd.sqlite"
    recursive: bool = False
    device: str = DEFAULTS.device
    fps: float | None = DEFAULTS.fps
    frames: int | None = None
    every_frame: bool = False  # take every frame (fps and frames are then not used)
    batch_size: int | None = None  # None: the backend's max_batch, else 32 (GPU) / CPU_BATCH
    workers: int | None = None  # None: cores - 1, at least 1, at most 8; 0: decode in this process
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
    files_from: str | None = None  # a file list (acfd.scanner.lists) scanned after ``paths``; "-": stdin
    null: bool = False  # the list is NUL-separated (find -print0)
    ray: str | None = None  # run on Ray (acfd.scanner.ray_exec): auto, or a cluster's HOST:PORT
    max_pending: int = 512  # crops waiting for the engine before the workers are held back
    # auto | fp32 | int8 | bf16 (acfd.engine.precision): auto picks the fastest the artifact and CPU allow
    precision: str = "auto"

    def __post_init__(self) -> None:
        if not self.paths and self.files_from is None:
            raise ScanError("give at least one path to scan, or --files-from FILE")
        if self.null and self.files_from is None:
            raise ScanError("--null describes the list of --files-from: give --files-from FILE (or -)")
        if self.files_from is not None and self.files_from != "-":
            _check_list(self.files_from)
        if self.files_from == "-" and sys.stdin is None:  # Python's stdin when fd 0 was closed (`<&-`)
            raise ScanError("--files-from -: standard input is closed; pipe the list in, or give --files-from FILE")
        if any(not os.fspath(p) for p in self.paths):
            # an unset "$DIR" in a script would otherwise scan the current folder
            raise ScanError("an empty path was given (an unset variable?); name the folder, or '.' for this one")
        urls = [p for p in self.paths if _is_url(p)]
        for u in urls:
            check_url(u)  # ftp://, file://...: one line, before anything runs
        if urls and self.decoder == "decord":
            raise ScanError("--decoder decord reads local files only; URLs are decoded by PyAV: use --decoder auto or pyav")
        if self.strategy not in STRATEGIES:
            raise ScanError(f"unknown strategy {self.strategy!r}: choose one of {', '.join(STRATEGIES)}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ScanError(f"unknown device {self.device!r}: choose auto, cpu or cuda")
        if self.ray is not None:
            from .ray_exec import check_config

            check_config(self.ray)
        _check_precision(self.precision)
        if self.batch_size is not None and self.batch_size < 1:
            raise ScanError("batch size must be at least 1")
        if self.workers is not None and self.workers < 0:
            raise ScanError("workers must be 0 (decode in the scanning process) or more")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ScanError(f"--timeout must be a positive number of seconds, not {self.timeout_s}")
        if self.worker_memory_mb is not None and self.worker_memory_mb < MIN_WORKER_MEMORY_MB:
            raise ScanError(
                f"--worker-memory {self.worker_memory_mb} MB is too small: a decode worker needs at least "
                f"{MIN_WORKER_MEMORY_MB} MB of address space (its libraries alone map about 1 GB)"
            )
        if self.workers == 0 and self.worker_memory_mb is not None:
            raise ScanError("--worker-memory limits worker processes: it cannot be used with --workers 0")
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
        """Decode worker processes (0: the frames stage runs in the scanning process)."""
        if self.workers is not None:
            return self.workers
        try:
            cores = len(os.sched_getaffinity(0))  # what this process may use (containers, taskset)
        except AttributeError:
            cores = os.cpu_count() or 2
        return max(1, min(8, cores - 1))

    def as_args(self) -> dict[str, Any]:
        from dataclasses import asdict

        d = asdict(self)
        # what is stored: absolute paths, and URLs (the database's too) without any user:password@
        from acfd.schemas.db import safe_url

        d["db"] = safe_url(self.db)
        d["paths"] = [public_url(p) if _is_url(p) else display_path(os.path.abspath(os.fsdecode(p))) for p in self.paths]
        if self.files_from not in (None, "-"):
            d["files_from"] = display_path(os.path.abspath(os.fsdecode(self.files_from)))
        return d

    def source(self) -> Source:
        """Where this scan's items come from: the paths and URLs given, then the list's entries."""
        if self.files_from is not None:
            return FileList(self.files_from, self.null, tuple(self.paths), self.recursive, self.sniff, self.timeout_s)
        return Inputs(tuple(self.paths), self.recursive, self.sniff, self.timeout_s)


def _check_list(path: str) -> None:
    """A --files-from list that cannot be read stops the scan before it starts, in one line."""
    shown = display_path(path)
    if os.path.isdir(path):
        raise ScanError(f"--files-from {shown} is a folder: give a file that lists paths or URLs, one per line")
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = 0  # open() below says why
    if stat.S_ISBLK(mode) or (stat.S_ISCHR(mode) and not _is_terminal(path)):
        # /dev/zero with --null would be an endless list of empty entries: refuse devices (a pipe, a
        # terminal, /dev/stdin and - are fine)
        raise ScanError(f"--files-from {shown} is a device, not a list: give a file, a pipe or - (standard input)")
    if stat.S_ISFIFO(mode):
        # a named pipe is opened once, by the scan: a test open here would wait for its writer, and
        # closing it would end the writer's stream (SIGPIPE); whether it can be read is os.access's answer
        if not os.access(path, os.R_OK):
            raise ScanError(f"cannot read --files-from {shown}: Permission denied")
        return
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise ScanError(f"cannot read --files-from {shown}: {e.strerror or e}") from e


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ScanError(f"unknown precision {precision!r}: choose {', '.join(PRECISIONS)}")


def _is_terminal(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return os.isatty(fd)
    finally:
        os.close(fd)


def _is_url(p: object) -> bool:
    return isinstance(p, str) and is_url(p)


ProgressFn = Callable[[VideoResult | None, dict[str, float]], None]
SinkFactory = Callable[["ScanContext"], Any]  # returns an object with write(ScanEvent)


class Scanner:
    """Runs one scan. ``backend`` may be given (tests, benchmarks); else ``cfg.model`` is loaded.
    ``executor`` replaces the local executor (tests: its pool; later, a cluster executor)."""

    def __init__(self, cfg: ScanConfig, backend: Backend | None = None, worker_target: Any = None,
                 progress: bool = True, executor: Executor | None = None) -> None:
        """``progress``: show a download bar on stderr when ``cfg.model`` is a URL not yet cached."""
        # Whether the model is the packaged starter because none was given (never a model named by
        # --model or $ACFD_MODEL, even a copy of it): the scan then says what the starter is.
        self.starter = False
        # The decode workers start first: a worker's start (a process, MediaPipe, the face detector: about a
        # second of one core) then overlaps the model's load and the store's opening instead of following
        # them; they get the model's crop settings when the executor takes them (DecodePool.configure).
        started = _start_workers(cfg, worker_target) if executor is None and cfg.ray is None else None
        try:
            from acfd.schemas import db

            from .executor import ExecutorSettings
            from .stages import VerdictPolicy
            from .store import Store

            if backend is None:
                loaded = load_model(cfg.model, cfg.device, progress, precision=cfg.precision)
                backend, self.starter = loaded.backend, loaded.starter
                cfg = dataclasses.replace(cfg, model=loaded.spec)
                timeline.mark("model_loaded")
            self.cfg = cfg
            self.backend = backend
            meta = backend.meta
            self.meta = meta
            self.batch_size = batch_size_for(cfg.batch_size, backend, cfg.device)
            self.settings = ExecutorSettings(
                frames=frames_config(cfg, meta),
                policy=VerdictPolicy(cfg.strategy, Scale(meta.r_minus, meta.r_plus, meta.threshold), cfg.min_support),
                keep=cfg.store_crops, batch_size=self.batch_size, n_workers=cfg.n_workers, timeout_s=cfg.timeout_s,
                max_pending=cfg.max_pending, memory_limit_mb=cfg.worker_memory_mb,
            )
            if executor is None and cfg.ray is not None:  # the same stages on a Ray cluster
                from .ray_exec import RayExecutor

                executor = RayExecutor(backend, self.settings, cfg.ray, workers=cfg.workers,
                                       device=cfg.device, batch_size=cfg.batch_size)
            if executor is None:
                from .local import LocalExecutor

                executor = LocalExecutor(backend, self.settings, worker_target=worker_target, started=started)
            self.executor = executor
            self.source: Source = cfg.source()
            self.engine = db.open_store(cfg.db)
            self.store = Store(self.engine)
            timeline.mark("store_opened")
        except BaseException:
            if started is not None:
                started.close()
            raise
        self.stats = {"videos": 0.0, "frames": 0.0, "faces": 0.0}
        self._walk: Lookahead | None = None
        # Resume compares these with each stored row's key: other settings, other verdicts (or failures).
        args = cfg.as_args()
        self.verdict_key = verdict_key(args)
        self.error_key = error_key(args)

    def _settings_key(self, status: str) -> str:
        from acfd.schemas.db import STATUS_ERROR

        return self.error_key if status == STATUS_ERROR else self.verdict_key

    # -- the result stream ---------------------------------------------------------------------------
    def results(self) -> Iterator[ScanEvent]:
        """The scan's results in order, every candidate once: known ones (unchanged, unreadable,
        duplicate) as they are met, decoded ones as they finish. Nothing is stored here."""
        previous = {} if self.cfg.rescan else self.store.previous(self.backend.model_id)
        # IDLE after 50 ms without a candidate: a pipe-fed list's results are not held back by the next path
        walk = self._walk = Lookahead(self.source.items(), idle_s=0.05)
        try:
            with closing(self.executor.run(self._plan(walk, previous))) as stream:
                for ev in stream:
                    url = ev.candidate.url
                    if isinstance(ev, VideoResult) and ev.error and url is not None:
                        ev.error = redact(ev.error, url)  # whatever said it, never a URL's password
                    yield ev
        finally:
            walk.close()

    def _plan(self, items: Iterator[Candidate | Idle] | Lookahead,
              previous: dict[bytes, PreviousScan]) -> Iterator[Candidate | ScanEvent | Idle]:
        from acfd.schemas.db import STATUS_ERROR, STATUS_SKIPPED

        from .stages import ready_result

        for c in items:
            if isinstance(c, Idle):
                yield c
                continue
            p = previous.get(c.key)
            if (
                p is not None and c.unchanged_since(p.size, p.mtime_ns, p.etag)
                and p.settings_key == self._settings_key(p.status)
                and not (self.cfg.retry_errors and p.status == STATUS_ERROR)
            ):
                yield Unchanged(c, p.status, p.flagged, p.score)
            elif c.error is not None:
                yield ready_result(c, STATUS_ERROR, c.error)
            elif c.duplicate_of is not None:
                yield ready_result(c, STATUS_SKIPPED, f"same file as {display_path(c.duplicate_of)}")
            else:
                yield c

    # -- the scan --------------------------------------------------------------------------------------
    def run(self, progress: ProgressFn | None = None, on_result: Callable[[VideoResult], None] | None = None,
            sinks: Sequence[SinkFactory] = ()) -> ScanSummary:
        """Scan every candidate into the store, then into ``sinks`` (each made with the scan's context)
        and ``on_result``; returns the summary (also stored in the ``scans`` row)."""
        try:
            return self._run(progress, on_result, sinks)
        finally:
            close = getattr(self.executor, "close", None)
            if callable(close):
                close()  # workers started ahead and never used (a scan that stopped before its first video)

    def _run(self, progress: ProgressFn | None, on_result: Callable[[VideoResult], None] | None,
             sinks: Sequence[SinkFactory]) -> ScanSummary:
        from acfd.schemas import db

        from .sinks import ScanContext, StoreSink, Tally

        cfg = self.cfg
        t_start = time.perf_counter()
        self.store.mark_dead_scans()
        self.store.register_model(self.backend.model_id, cfg.model or "", self.backend.name, self.meta)
        self.scan_id = self.store.start_scan(
            self.backend.model_id, cfg.strategy, self.meta.threshold, self.backend.name,
            str(getattr(self.backend, "device", cfg.device)), cfg.as_args(), project_version(),
            device_name=device_name(self.backend),
        )
        ctx = ScanContext(self.scan_id, self.backend.model_id, self.meta.threshold, cfg.strategy, self.meta.validation)
        store = StoreSink(self.store, ctx, self.verdict_key, self.error_key)
        tally = Tally(names=SUMMARY_NAMES)
        consumers = [store, tally, *(make(ctx) for make in sinks)]
        status = db.SCAN_FAILED
        try:
            with self.store.hold_lease(self.scan_id), closing(self.results()) as stream:
                for ev in stream:
                    for sink in consumers:
                        sink.write(ev)
                    timeline.mark("committed", once=False)
                    self._count(tally)
                    if isinstance(ev, VideoResult):
                        if on_result:
                            on_result(ev)
                        if progress:
                            progress(ev, self.stats)
                    elif progress:
                        progress(None, self.stats)
            store.flush()
            status = db.SCAN_DONE
        except (KeyboardInterrupt, OutputClosed):
            status = db.SCAN_INTERRUPTED
            raise
        finally:
            walk = self._walk
            try:
                store.flush()
                if walk is not None:
                    self.store.set_found(self.scan_id, walk.found)
            finally:
                summary = self.store.finish_scan(self.scan_id, status, time.perf_counter() - t_start)
            summary.timings = tally.timings
            summary.infer_busy_s = self.executor.infer_busy_s
            summary.unchanged_flagged = tally.unchanged_flagged
            summary.unchanged_flagged_videos = list(tally.unchanged_flagged_videos)
            summary.unchanged_errors = tally.unchanged_errors
            self.summary = summary
        return summary

    def _count(self, tally: Tally) -> None:
        """The progress bar's figures; the total once the walk has ended (stored then too)."""
        self.stats.update(videos=float(tally.videos), frames=float(tally.frames), faces=float(tally.faces))
        walk = self._walk
        if walk is not None and walk.total is not None and "total" not in self.stats:
            self.stats["total"] = float(walk.total)
            self.store.set_found(self.scan_id, walk.total)


def frames_config(cfg: ScanConfig, meta: ArtifactMeta) -> FramesConfig:
    """How a scan's frames stage samples, decodes, detects and crops for a model of ``meta``."""
    return FramesConfig(
        sampling=cfg.sampling, crop_size=meta.input_size, crop_margin=meta.crop_margin, decoder=cfg.decoder,
        gpu_decode=_cuda(cfg.device), detector_model=cfg.detector_model, min_face_score=cfg.min_face_score,
        detect_max_side=cfg.detect_max_side, timeout_s=cfg.timeout_s,
    )


def _start_workers(cfg: ScanConfig, target: Any) -> Any:
    """A scan's decode workers, started before its model is known (with the default crop settings; the
    executor gives them the model's), or None for ``--workers 0``. As many as the scan may use, at most
    one per entry of the paths given (a glance at their folders, not the walk)."""
    n = cfg.n_workers
    if n == 0:
        return None
    if cfg.files_from is None:
        n = max(1, min(n, _entries(cfg.paths, n, cfg.recursive)))
    from .worker import DecodePool, WorkerConfig

    return DecodePool(WorkerConfig(frames_config(cfg, ArtifactMeta()), cfg.worker_memory_mb), n, cfg.timeout_s,
                      target=target)


def _entries(paths: Sequence[str], limit: int, recursive: bool) -> int:
    """How many files ``paths`` name, counting a folder's entries (a subfolder of a recursive walk as
    ``limit``), up to ``limit``: an upper bound of the videos, cheap to get."""
    n = 0
    for p in paths:
        if not os.path.isdir(p):
            n += 1
        else:
            try:
                with os.scandir(p) as entries:
                    for e in entries:
                        n += limit if recursive and e.is_dir() else 1
                        if n >= limit:
                            break
            except OSError:
                n += 1  # unreadable: the walk says so, as one result
        if n >= limit:
            return limit
    return n


def device_name(backend: Backend) -> str | None:
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


@dataclass(frozen=True)
class LoadedModel:
    """A model loaded for a scan or a watch: the backend, the spec as stored (the path or URL as given,
    minus any password), and whether it is the packaged starter because no model was given."""

    backend: Backend
    spec: str
    starter: bool


def load_model(spec: str | None, device: str, progress: bool = True, precision: str = "auto") -> LoadedModel:
    """``spec`` (a path or URL; None or empty: the packaged starter) loaded on ``device`` at ``precision``
    (``acfd.engine.precision``: what ran is at the end of the backend's ``device_name()``)."""
    from acfd.engine.fetch import public_spec

    starter = not spec
    if not spec:
        spec = default_model()
    try:
        backend = load_backend(spec, device, progress=progress, precision=precision)
    except ArtifactError as e:
        from acfd.engine.precision import PrecisionError

        if not starter or isinstance(e, PrecisionError):  # a refused --precision is not a damaged file
            raise
        # e.g. a Git LFS pointer where the file should be: say what to do, not only what broke
        raise ScanError(f"the packaged starter model is damaged ({e}); reinstall acfd, or give "
                        "--model (or $ACFD_MODEL)") from e
    return LoadedModel(backend, public_spec(spec), starter)


def batch_size_for(requested: int | None, backend: Backend, device: str) -> int:
    """Crops per model call: as asked, else the engine's own batch, else 32 on a GPU and CPU_BATCH on a CPU."""
    return requested or backend.max_batch or (32 if _cuda(device) else CPU_BATCH)


def load_backend(
    model: str | os.PathLike[str], device: str = "auto", progress: bool = True, precision: str = "auto"
) -> Backend:
    """The runtime backend for a model artifact (``acfd.engine.runtime.load``): a path, or an
    ``https://...#sha256=`` / ``hf://`` URL downloaded once into the cache (``acfd.engine.fetch``)."""
    from acfd.engine import runtime
    from acfd.engine.fetch import resolve_model

    return runtime.load(resolve_model(os.fspath(model), progress=progress), device=device, precision=precision)


def scan(cfg: ScanConfig, backend: Backend | None = None, progress: ProgressFn | None = None) -> ScanSummary:
    """Run one scan with ``cfg``; see :class:`Scanner`."""
    return Scanner(cfg, backend).run(progress)


__all__: Sequence[str] = ("ScanConfig", "Scanner", "ScanError", "scan", "load_backend", "Unchanged")
