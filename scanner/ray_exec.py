"""The Ray executor (``acfd-scan ... --ray``): the scanner's stages on a Ray cluster, through Ray Data.

Only the scheduling differs from :class:`~acfd.scanner.local.LocalExecutor`: the stages
(:mod:`acfd.scanner.stages`), the isolated decode worker (:class:`~acfd.scanner.worker.DecodePool`), the
per-video bookkeeping (:class:`~acfd.scanner.stages.VideoWork`, :func:`~acfd.scanner.stages.finish_video`)
and everything after the result stream (store, JSONL, summary, exit status, resume) are the same code.

The driver (the scanning process) walks the inputs and filters what is already stored, as for a local
scan; known results pass on at once. The candidates left are taken in chunks of up to :data:`CHUNK`
(a huge archive is walked as it is scanned, never listed whole), and each chunk is one dataset::

    from_items(video descriptors)     one block per video: (id, what to open, whether a local path)
      .flat_map(_Frames)              actors, 1 CPU each: each hosts ONE isolated decode worker (MediaPipe
                                      loads once per actor; a decoder crash or hang is the video's Failed
                                      event, as in a local scan). Emits one row per face (its crop and
                                      JPEG thumbnail) and one control row per video (its events, crops left
                                      out), all rows one schema (:data:`COLUMNS`).
      .map_batches(_Score)            actors holding the engine backend (1 GPU each on GPU nodes, else ONNX
                                      Runtime on a CPU): batches of ``batch_size`` rows filled across videos;
                                      each face row gets its score, attention and share of the batch's time.
                                      Control rows pass through.
      .iter_batches()                 on the driver: per video, its control row's events, then its scores,
                                      into a VideoWork; finish_video once complete; the store commits it.

Scores may arrive before their video's control row: they wait, keyed by (video, face), so a row delivered
twice after a retry counts once. Ray Data restarts an actor that dies and retries its task; a video whose
results never come back anyway becomes an error row, never a silent gap.

The model reaches the actors through Ray's object store: the driver puts the bytes of the file it runs
(the file its precision choice picked), each scoring actor writes them to its own temporary folder, loads
them the same way and checks the model id. Inputs must be visible to every node at the same path (shared
storage); a node that cannot see a local path reports it as that video's error row. Ray is imported only
here, and only when a scan asks for it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .config import ScanError
from .discover import Candidate, Idle, display_path
from .executor import Executor, ExecutorSettings
from .results import ScanEvent, VideoResult
from .stages import Decoded, Failed, FrameFaces, VideoWork, finish_video

CHUNK = 1000  # candidates per dataset: actors start once per chunk (a few seconds), the walk goes on between
MISSING = "--ray needs Ray: pip install 'acfd[ray]'"
# How long a dataset waits for its actors to be placed before the scan stops: an autoscaling cluster may
# take minutes to add nodes, a cluster without the resources asked for never places them.
ACTORS_WAIT_S = 600
# Every row has these columns (one schema for face rows and control rows).
COLUMNS = ("video", "face", "crop", "thumb", "events", "fatal", "score", "attention", "infer_s")


# -- rows ------------------------------------------------------------------------------------------------

def _row(video: int, face: int = -1, crop: bytes = b"", thumb: bytes = b"", events: bytes = b"",
         fatal: str = "") -> dict[str, Any]:
    """A row as the frames stage emits it: a face (``face`` >= 0, its crop's bytes) or a video's control
    row (``face`` -1, its events pickled), or a failure that stops the scan (``fatal``)."""
    return {"video": video, "face": face, "crop": crop, "thumb": thumb, "events": events, "fatal": fatal,
            "score": float("nan"), "attention": b"", "infer_s": 0.0}


def _strip(ev: FrameFaces) -> FrameFaces:
    """A frame's event without its pixels (the crops travel as face rows): one empty crop per face, so
    the driver's VideoWork counts and places the faces as it does for a local scan."""
    if ev.crops is None:
        return ev
    return dataclasses.replace(ev, crops=np.empty((len(ev.crops), 0, 0, 3), np.uint8))


def not_visible(host: str, target: str) -> Failed:
    """The error row of a local path this node cannot see."""
    return Failed(f"not visible on node {host}: {display_path(target)} (every Ray node must see the inputs "
                  "at the same path: shared storage)")


# -- stage 1 on the cluster: frames with faces -----------------------------------------------------------

class _Frames:
    """Ray Data actor (``flat_map``): the frames stage of one video per call, in ONE isolated decode
    worker hosted by this actor, started once (MediaPipe and the face detector load once per actor)."""

    def __init__(self, wcfg: Any, timeout_s: float, keep: int, version: str) -> None:
        from acfd.schemas.artifact import project_version

        self.wcfg, self.timeout_s, self.keep = wcfg, timeout_s, keep
        self.host = socket.gethostname()
        self.pool: Any = None
        self.fatal = ""
        mine = project_version()
        if mine != version:
            self.fatal = (f"node {self.host} has acfd {mine or '(not installed)'} but the scanning process "
                          f"runs acfd {version or '(not installed)'}: install the same version on every node")
        else:
            self.pool = self._start()

    def _start(self) -> Any:
        from .worker import DecodePool

        return DecodePool(self.wcfg, 1, self.timeout_s)

    def __call__(self, row: dict[str, Any]) -> Iterator[dict[str, Any]]:
        from .worker import WorkerError

        vid = int(row["video"])
        if self.fatal:
            yield _row(vid, fatal=self.fatal)
            return
        target = os.fsdecode(row["target"])
        if row["local"] and not os.path.exists(target):
            yield _row(vid, events=pickle.dumps([not_visible(self.host, target)]))
            return
        events: list[Any] = []
        face = 0
        try:
            for ev in self._events(vid, target):
                if isinstance(ev, FrameFaces) and ev.crops is not None:
                    for crop in ev.crops:
                        yield _row(vid, face, crop=crop.tobytes(), thumb=self._thumb(crop))
                        face += 1
                    ev = _strip(ev)
                events.append(ev)
        except WorkerError as e:  # the worker cannot start, or face recognition broke: not the file's fault
            self.fatal = f"{e} (on node {self.host})"
            yield _row(vid, fatal=self.fatal)
            return
        yield _row(vid, events=pickle.dumps(events))

    def _thumb(self, crop: np.ndarray) -> bytes:
        """The crop's JPEG thumbnail, made here: the driver then receives 5 kB per face instead of the crop
        (270 kB at 299 px), and keeps it if the face is among its identity's highest scores."""
        from .stages import thumbnail

        return thumbnail(crop) if self.keep else b""

    def _events(self, vid: int, target: str) -> Iterator[Any]:
        """The video's events from the decode worker, a crash or hang as its last (Failed) event."""
        pool = self.pool
        pool.submit(0, vid, target)
        done = False
        try:
            while not done:
                msgs = pool.poll(0.05)
                for msg in msgs:
                    if msg.video == vid:
                        done = done or isinstance(msg.event, (Decoded, Failed))
                        yield msg.event
                if msgs:
                    pool.pause_clock()  # time spent handing rows to Ray Data is not the worker's
        finally:
            if not done:  # abandoned mid-video (the task was cancelled): the next video gets a fresh worker
                pool.close()
                self.pool = self._start()


# -- stage 2 on the cluster: score batches ---------------------------------------------------------------

class _Score:
    """Ray Data actor (``map_batches``): the engine backend, loaded from the bytes the driver put in the
    object store; scores the face rows of each batch (:func:`~acfd.scanner.stages.score_batch`)."""

    def __init__(self, model_box: list[Any], name: str, model_id: str, device: str, precision: str | None,
                 size: int) -> None:
        self.host = socket.gethostname()
        self.size = size
        self.fatal = ""
        self.model: Any = None
        try:
            self.model = _load_shipped(model_box[0], name, device, precision)
        except Exception as e:
            self.fatal = f"the model cannot be loaded on node {self.host}: {_one_line(e)}"
            return
        if self.model.model_id != model_id:
            self.fatal = (f"the model loaded on node {self.host} is {self.model.model_id[:12]}, not the "
                          f"scan's {model_id[:12]}")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from acfd.schemas.errors import AcfdError

        from .stages import score_batch

        faces = np.flatnonzero(batch["face"] >= 0)
        if self.fatal:
            batch["fatal"] = np.array([self.fatal] * len(batch["face"]), dtype=object)
            return batch
        if faces.size == 0:
            return batch
        s = self.size
        crops = np.stack([np.frombuffer(batch["crop"][i], np.uint8).reshape(s, s, 3) for i in faces])
        t0 = time.perf_counter()
        try:
            scores = score_batch(self.model, crops)
        except Exception as e:  # the model failed: the scan stops, as a local scan's engine would stop it
            why = str(e) if isinstance(e, AcfdError) else \
                f"the model failed: {e.__class__.__name__}: {_one_line(e)}"
            batch["fatal"] = np.array([f"{why} (on node {self.host})"] * len(batch["face"]), dtype=object)
            return batch
        share = (time.perf_counter() - t0) / len(faces)
        score = np.array(batch["score"], dtype=np.float64, copy=True)
        infer = np.array(batch["infer_s"], dtype=np.float64, copy=True)
        attention = np.array(batch["attention"], dtype=object, copy=True)
        crop_col = np.array(batch["crop"], dtype=object, copy=True)
        for j, i in enumerate(faces):
            score[i] = float(scores.score[j])
            infer[i] = share
            if scores.attention is not None:
                attention[i] = pickle.dumps(np.ascontiguousarray(scores.attention[j]))
            crop_col[i] = b""  # scored: the crop goes no further (the thumbnail is in its row)
        batch.update(score=score, infer_s=infer, attention=attention, crop=crop_col)
        return batch


def _load_shipped(ref: Any, name: str, device: str, precision: str | None) -> Any:
    """The backend for the model files the driver put in the object store, written to a temporary folder
    of this process (removed once loaded: every backend reads its file whole when it loads)."""
    import shutil
    import tempfile

    import ray
    from acfd.engine import runtime

    files: dict[str, bytes] = ray.get(ref)
    tmp = tempfile.mkdtemp(prefix="acfd-model-")
    try:
        for rel, data in files.items():
            p = Path(tmp, rel)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        kw = {} if precision is None else {"precision": precision}
        return runtime.load(Path(tmp, name), device=device, **kw)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def model_files(backend: Any) -> tuple[str, dict[str, bytes], str | None]:
    """What the workers load: (name, {relative path: bytes}, precision to ask for). The file the driver's
    backend really runs (its precision choice may have picked an int8 sibling or a float source), asked
    for at the precision it runs at here, so every node computes what this process would; a training run
    directory is its top-level files (config, weights, card: not its checkpoint folder)."""
    choice = getattr(backend, "choice", None)
    path = Path(choice.path if choice is not None else backend.path)
    precision = None
    if choice is not None:
        from acfd.engine.precision import ARTIFACT, PRECISIONS

        precision = choice.precision if choice.precision in PRECISIONS else ARTIFACT
    if path.is_dir():
        files = {f"{path.name}/{f.name}": f.read_bytes() for f in sorted(path.iterdir()) if f.is_file()}
        return path.name, files, precision
    return path.name, {path.name: path.read_bytes()}, precision


@contextlib.contextmanager
def _stderr_to_devnull() -> Iterator[None]:
    """File descriptor 2 to /dev/null for a while (native code writes there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def _quiet_init(defer_signals: bool = False) -> Iterator[None]:
    """Around ``ray.init``: its stderr to /dev/null; the caller's SIGTERM handler kept (Ray installs handlers
    that exit at once, through one function of its own, made a no-op meanwhile), so that SIGTERM stops a Ray
    scan as it stops a local one (committed stays, the scan row says ``interrupted``, exit 143);
    ``defer_signals``: SIGINT and SIGTERM are held until the block ends, then delivered."""
    import signal
    import threading

    import ray._private.utils as ray_utils

    main = threading.current_thread() is threading.main_thread()
    held: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
    setter = getattr(ray_utils, "set_sigterm_handler", None)
    if setter is not None:
        ray_utils.set_sigterm_handler = lambda handler: None
    if defer_signals:
        for sig in previous:
            signal.signal(sig, lambda signum, frame: held.append(signum))
    try:
        with _stderr_to_devnull():
            yield
    finally:
        if setter is not None:
            ray_utils.set_sigterm_handler = setter
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)
        if held:
            signal.raise_signal(held[0])


def reachable(address: str, timeout_s: float = 10.0) -> None:
    """A cluster's GCS port answers (a TCP connection), else one line: connecting to a dead address, Ray
    itself retries for many minutes."""
    hostport = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
        raise ScanError(f"cannot connect to the Ray cluster at {address}: {why.lower()}") from e


def _one_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0][:300] if lines else type(e).__name__


def ray_failure(e: BaseException) -> str:
    """One line for a failure Ray reports (its text holds the remote traceback): the remote exception's
    own last line when there is one."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    kinds = ("Error", "Exception", "Exit")
    raised = [ln for ln in lines if ln.split(":", 1)[0].rsplit(".", 1)[-1].endswith(kinds)]
    what = raised[-1] if raised else (lines[0] if lines else type(e).__name__)
    hint = "; acfd must be installed on every Ray node" if "No module named 'acfd" in what else ""
    return f"the Ray scan failed: {what[:300]}{hint}"


# -- the driver -----------------------------------------------------------------------------------------

class _Assembly:
    """One dataset's rows back into videos: events first, then scores (buffered until the events came);
    each face's score counted once, each video finished once."""

    def __init__(self, works: dict[int, VideoWork], settings: ExecutorSettings) -> None:
        self.works = works
        self.settings = settings
        self.controlled: set[int] = set()
        self.waiting: dict[int, dict[int, tuple[bytes, float, Any, float]]] = {}
        self.scored: dict[int, set[int]] = {}  # faces of the unfinished videos whose score came
        self.busy_s = 0.0

    def take(self, batch: dict[str, np.ndarray]) -> list[VideoResult]:
        out: list[VideoResult] = []
        for i in range(len(batch["video"])):
            fatal = batch["fatal"][i]
            if fatal:
                raise ScanError(str(fatal))
            vid, face = int(batch["video"][i]), int(batch["face"][i])
            if face >= 0:
                seen = self.scored.setdefault(vid, set())
                if face in seen:
                    continue  # delivered again after a retry
                seen.add(face)
                dt = float(batch["infer_s"][i])
                self.busy_s += dt  # the model's time, whatever became of the video
            work = self.works.get(vid)
            if work is None:
                continue  # finished already (a failed video's late score, a control row delivered again)
            if face < 0:
                if vid in self.controlled:
                    continue
                self.controlled.add(vid)
                for ev in pickle.loads(batch["events"][i]):
                    work.on_event(ev)
                for f, (thumb, score, att, dt) in sorted(self.waiting.pop(vid, {}).items()):
                    work.on_score(f, thumb, score, att, dt)
            else:
                a = batch["attention"][i]
                att = pickle.loads(a) if a else None
                thumb = bytes(batch["thumb"][i])
                if vid in self.controlled:
                    work.on_score(face, thumb, float(batch["score"][i]), att, dt)
                else:
                    self.waiting.setdefault(vid, {})[face] = (thumb, float(batch["score"][i]), att, dt)
            if vid in self.controlled and work.complete:
                del self.works[vid]
                self.scored.pop(vid, None)
                out.append(finish_video(work, self.settings.policy))
        return out

    def lost(self) -> list[VideoResult]:
        """Videos the dataset ended without (it should not happen): error rows, never silent gaps."""
        out = []
        for vid, work in list(self.works.items()):
            del self.works[vid]
            work.on_event(Failed("the Ray dataset ended without this video's results (its worker was lost); "
                                 "rerun with --retry-errors"))
            out.append(finish_video(work, self.settings.policy))
        return out


class RayExecutor(Executor):
    """The stages on a Ray cluster (see the module docstring).

    ``address``: ``auto`` (``$RAY_ADDRESS`` if set, else a cluster running on this machine, else a local
    Ray instance started for this scan with this machine's CPUs) or a cluster's address (``HOST:PORT``,
    ``ray://HOST:PORT``). ``workers``: frames actors (None: the cluster's CPUs less those scoring takes);
    ``device``: ``auto`` scores on GPUs when the cluster has any; ``batch_size`` None: the engine's,
    else 32 on GPUs and the CPU default on CPUs. ``notice`` prints the one line saying a local instance
    was started. Connecting waits for the first candidate: a scan with nothing to decode never connects.
    """

    def __init__(self, backend: Any, settings: ExecutorSettings, address: str = "auto", *,
                 workers: int | None = None, device: str = "auto", batch_size: int | None = None,
                 chunk: int = CHUNK, notice: Callable[[str], None] | None = None) -> None:
        try:
            import ray  # noqa: F401
            import ray.data  # noqa: F401
        except ImportError as e:
            raise ScanError(MISSING) from e
        if chunk < 1:
            raise ScanError("a Ray chunk must hold at least one video")
        self.backend = backend
        self.settings = settings
        self.address = address
        self.workers = workers
        self.device = device
        self.requested_batch = batch_size
        self.chunk = chunk
        self.notice = notice or (lambda line: print(line, file=sys.stderr, flush=True))
        self.infer_busy_s = 0.0
        self.connect_s = 0.0  # seconds ray.init took (or starting a local instance)
        self.started_local = False
        self.plan: dict[str, Any] = {}  # actors, devices and batch size, once connected
        self._owned = False  # we called ray.init: we call ray.shutdown
        self._model_ref: Any = None
        self._next_id = 0
        self.datasets = 0  # datasets run (one per chunk)

    # -- connecting --------------------------------------------------------------------------------
    def _connect(self) -> Any:
        import ray

        if ray.is_initialized():  # the caller connected (a benchmark, a notebook): theirs to end
            self._configure(ray)
            return ray
        t0 = time.perf_counter()
        env = os.environ.get("RAY_ADDRESS")
        kw: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
        # Ray's C++ core writes notes of its own to the driver's stderr (e.g. that Ray Data's actors have
        # constructor arguments in the object store), over the progress bar: the scan's stderr is its bar
        # and one-line errors (the session's log files keep Ray's; set the variable to see them here).
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        # What ray.init prints goes nowhere (a failure is raised, then said in one line), and the scan keeps
        # its own SIGTERM handling (_quiet_init).
        if self.address == "auto" and not env:
            try:
                with _quiet_init():
                    ray.init(address="auto", **kw)
            except ConnectionError:
                n = os.cpu_count() or 1
                try:
                    # Ctrl-C or SIGTERM while the instance starts would leave some of its processes behind:
                    # they wait until it has started (seconds), then stop the scan, and the instance with it.
                    with _quiet_init(defer_signals=True):
                        self._owned = True
                        ray.init(address="local", num_cpus=n, include_dashboard=False, **kw)
                except Exception as e:
                    raise ScanError(f"cannot start a local Ray instance: {_one_line(e)}") from e
                self.started_local = True
        else:
            target = env if self.address == "auto" else self.address
            reachable(target)  # ray.init would retry a dead address for many minutes
            try:
                with _quiet_init():
                    ray.init(address=target, **kw)
            except Exception as e:
                raise ScanError(f"cannot connect to the Ray cluster at {target}: {_one_line(e)}") from e
        if self.started_local:
            self.notice(f"--ray auto: no Ray cluster is running here; started a local Ray instance with "
                        f"{os.cpu_count() or 1} CPUs for this scan")
        self._owned = True
        self.connect_s = time.perf_counter() - t0
        self._configure(ray)
        return ray

    def _configure(self, ray: Any) -> None:
        """Ray Data quiet (no progress bars or execution logs over the scan's own), and the plan: how many
        actors of each kind, on which devices, with which batch size."""
        from ray.data import DataContext

        ctx = DataContext.get_current()
        for name, value in (("enable_progress_bars", False), ("enable_operator_progress_bars", False),
                            ("print_on_execution_start", False), ("verbose_stats_logs", False),
                            ("wait_for_min_actors_s", ACTORS_WAIT_S)):
            if hasattr(ctx, name):
                setattr(ctx, name, value)
        for h in logging.getLogger("ray.data").handlers:  # its file log stays (session logs/ray-data)
            if h.get_name() == "console":
                h.setLevel(logging.CRITICAL + 1)
        if self.plan:
            return
        from .pipeline import batch_size_for

        res = ray.cluster_resources()
        cpus, gpus = int(res.get("CPU", 0)), int(res.get("GPU", 0))
        if self.device == "cuda" and gpus == 0:
            raise ScanError("--device cuda: the Ray cluster has no GPU")
        on_gpu = self.device != "cpu" and gpus > 0
        scorers = gpus if on_gpu else 1
        frames = max(1, self.workers) if self.workers is not None else max(1, cpus - scorers)
        batch = batch_size_for(self.requested_batch, self.backend, "cuda" if on_gpu else "cpu")
        self.plan = {"cpus": cpus, "gpus": gpus, "frames_actors": frames, "score_actors": scorers,
                     "score_device": "cuda" if on_gpu else "cpu", "batch_size": batch}

    def _shutdown(self) -> None:
        self._model_ref = None  # the object store's copy goes with the connection
        if self._owned:
            import ray

            self._owned = False
            ray.shutdown()

    # -- the run -----------------------------------------------------------------------------------
    def run(self, items: Iterable[Candidate | ScanEvent | Idle]) -> Iterator[ScanEvent]:
        source = iter(items)
        try:
            exhausted = False
            while not exhausted:
                chunk: list[Candidate] = []
                while len(chunk) < self.chunk:
                    x = next(source, None)
                    if x is None:
                        exhausted = True
                        break
                    if isinstance(x, Idle):
                        continue  # a chunk is one dataset: it fills up (or the list ends) before it runs
                    if isinstance(x, Candidate):
                        chunk.append(x)
                    else:
                        yield x  # known already (unchanged, unreadable, a duplicate): passed on at once
                if chunk:
                    yield from self._run_chunk(chunk)
        finally:
            self._shutdown()

    def _run_chunk(self, chunk: list[Candidate]) -> Iterator[ScanEvent]:
        ray = self._connect()
        s = self.settings
        works: dict[int, VideoWork] = {}
        descriptors = []
        for c in chunk:
            vid, self._next_id = self._next_id, self._next_id + 1
            works[vid] = VideoWork(vid, c, keep=s.keep)
            # bytes: a path need not be UTF-8 (Arrow strings must be)
            descriptors.append({"video": vid, "target": os.fsencode(c.target), "local": c.url is None})
        asm = _Assembly(works, s)
        self.datasets += 1
        batches = iter(self._dataset(ray, descriptors).iter_batches(batch_size=None, batch_format="numpy"))
        try:
            while True:
                try:
                    batch = next(batches, None)
                except ScanError:
                    raise
                except Exception as e:  # Ray's own failures (a node lost for good, an actor cannot start)
                    raise ScanError(ray_failure(e)) from e
                if batch is None:
                    break
                finished = asm.take(batch)
                yield from finished
        finally:
            self.infer_busy_s += asm.busy_s
            close = getattr(batches, "close", None)
            if callable(close):
                close()
        yield from asm.lost()

    def _dataset(self, ray: Any, descriptors: list[dict[str, Any]]) -> Any:
        from acfd.schemas.artifact import project_version
        from ray.data import ActorPoolStrategy

        from .worker import WorkerConfig

        s, p = self.settings, self.plan
        if self._model_ref is None:
            name, files, precision = model_files(self.backend)
            self._model_ref = (ray.put(files), name, precision)
        ref, name, precision = self._model_ref
        wcfg = WorkerConfig(s.frames, s.memory_limit_mb)
        ds = ray.data.from_items(descriptors, override_num_blocks=len(descriptors))
        # one video per task: a video is seconds of decoding, so no task waits behind another on a busy actor
        ds = ds.flat_map(_Frames, fn_constructor_args=(wcfg, s.timeout_s, s.keep, project_version()),
                         compute=ActorPoolStrategy(size=p["frames_actors"], max_tasks_in_flight_per_actor=1),
                         num_cpus=1)
        gpu = p["score_device"] == "cuda"
        return ds.map_batches(
            _Score, fn_constructor_args=([ref], name, self.backend.model_id, p["score_device"], precision,
                                         s.frames.crop_size),
            batch_size=p["batch_size"], batch_format="numpy",
            compute=ActorPoolStrategy(size=p["score_actors"]), num_cpus=1, num_gpus=1 if gpu else None,
        )

    def close(self) -> None:
        """Disconnect (or stop the local instance started) if a run left it connected."""
        self._shutdown()


def check_config(address: str) -> None:
    """Refuse, before anything runs, a scan that cannot use Ray: Ray missing, or a value that cannot be an
    address (``--ray`` takes an optional value, so ``acfd-scan --ray /archive`` would take the folder)."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise ScanError(MISSING)
    if address == "auto":
        return
    if not address.strip() or os.path.exists(address) or ":" not in address:
        raise ScanError(f"--ray {address!r} is not a Ray address (auto, HOST:PORT or ray://HOST:PORT); to "
                        "scan it, put the path before --ray, or write --ray auto")
