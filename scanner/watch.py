"""Live mode (``acfd-scan watch``): decode streams continuously, judge each time window as it closes.

A watch is ``sources -> frames stage per stream -> one engine thread -> windows -> sinks``:

- each source (a file, a growing HLS playlist on disk, a URL) is decoded at ``fps`` by the frames stage
  (:func:`~acfd.scanner.stages.frames_with_faces`, in stream mode: the tracker keeps no history, so memory
  stays bounded over hours) in its own isolated worker process (a :class:`~acfd.scanner.worker.DecodePool`
  with one worker per stream), or in a thread of this process (``in_process``, for tests and debugging);
- faces are scored by one engine thread (:func:`~acfd.scanner.stages.score_batch`), in batches filled
  across streams; when the engine falls behind, the workers are not read (back-pressure);
- each stream's own clock is cut into windows of ``window_s`` seconds; a window closes when a frame at or
  past its end arrives, when the stream drops or ends, or when the watch stops; once all its faces are
  scored its verdict is :func:`~acfd.scanner.stages.window_verdict` (aggregated as a video's) and it is
  yielded (:class:`WindowResult`), then forgotten: nothing of a closed window stays in memory;
- what happens to a stream is yielded too (:class:`StreamNote`: opened, dropped, gave_up, ended).

:func:`watch` runs it with the store as the first sink (each window and event in its own transaction),
then the caller's sinks (:class:`WindowJsonlSink`: flagged windows on stdout, every window and event in a file).

Windows. The grid of a stream is anchored at its first frame: window k covers stream time
``[t0 + k*W, t0 + (k+1)*W)``; ``window_index`` counts the windows stored for the source in this watch
(0, 1, ...): a stretch of the grid without any frame (a jump in the stream's clock) stores no window. A
window cut short (drop, end, stop) ends just after its last frame (``t + 1/fps``, within the grid). After
a reconnect the grid goes on, and the next window starts where the cut one ended; a reopened live stream
whose first frame lies more than :data:`REWIND_S` before the last frame taken has restarted its clock (a
restarted encoder, a wrapped MPEG-TS clock): a new grid starts at that frame (indexes go on).

Reconnects. A stream drops when its decoder fails, stalls for ``timeout_s`` (the worker is killed), or a
live stream ends; it is opened again after 1 s, and after each further attempt that brings no frame
after 2, 4, ... up to 30 s (``backoff_s``, ``backoff_max_s``); after ``reconnect`` attempts in a row without
a frame it is given up (``gave_up``) while the other streams go on. Frames at or before the last one
taken are skipped after a reopen (a live HLS playlist is reopened a few segments before its end).

Live or finite: a source whose container reports a duration when opened (a file, an HLS playlist with
``#EXT-X-ENDLIST``) is finite: its end ends it (``ended``). One without (a live playlist, a live TS or FLV
over HTTP) is live: its end is a drop, and it is reopened; if it then reports a duration (the broadcaster
finished the playlist) and brings no new frame, it has ended.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Protocol

from acfd.schemas import db
from acfd.schemas.artifact import project_version
from acfd.schemas.errors import AcfdError, OutputClosed

from .aggregate import DEFAULT_STRATEGY, STRATEGIES, Scale, VideoVerdict
from .config import DEFAULTS, DETECTORS, DEVICES, ScanError
from .decode import Sampling, VideoInfo, _one_line
from .discover import display_path
from .results import FaceRecord
from .sinks import ScanContext, write_line
from .stages import (
    Decoded,
    FaceCrop,
    Failed,
    FrameFaces,
    FramesConfig,
    Opened,
    VerdictPolicy,
    window_verdict,
)
from .urls import check_url, is_url, public_url, redact
from .worker import DecodePool, StartFailed, WorkerConfig, WorkerError, WorkerMessage

if TYPE_CHECKING:
    from .pipeline import Backend

# A live stream that delivers nothing for this long has stalled (a scan's 300 s is for one file's decoder;
# a live feed is expected every segment). It must exceed the tracker's hold (about 3 s of stream).
WATCH_TIMEOUT_S = 30.0
DEFAULT_WINDOW_S = 10.0
DEFAULT_RECONNECT = 10  # attempts in a row without a frame before a stream is given up (about 3 min)
BACKOFF_S = 1.0
BACKOFF_MAX_S = 30.0
# A reopened live stream whose first frame lies further back than this before the last frame taken has
# restarted its clock. FFmpeg reopens a live HLS playlist 3 segments before its end (a few target
# durations, 2-10 s each), so a continued clock comes back at most about that far.
REWIND_S = 30.0
DRAIN_S = 10.0  # at a stop, how long the faces still being scored are waited for
_EPS = 1e-6

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([hms]?)", re.IGNORECASE)
_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_seconds(text: str, what: str = "duration") -> float:
    """``10s``, ``2m``, ``1h``, ``1h30m`` or plain seconds (``90``, ``2.5``) as seconds (positive, finite)."""
    s = str(text).strip()
    pos, total = 0, 0.0
    for m in _DURATION.finditer(s):
        if m.start() != pos or (pos and not m.group(2) and not _unit_before(s, pos)):
            break
        total += float(m.group(1)) * _UNIT[m.group(2).lower()]
        pos = m.end()
    if not s or pos != len(s):
        raise ScanError(f"{what} {text!r} is not a time: write e.g. 10s, 2m, 1h or a number of seconds")
    if not (math.isfinite(total) and total > 0):
        raise ScanError(f"{what} must be more than 0 seconds, not {text!r}")
    return total


def _unit_before(s: str, pos: int) -> bool:
    return pos > 0 and s[pos - 1].lower() in "hms"


def _fmt_s(s: float) -> str:
    if s >= 3600 and s % 3600 == 0:
        return f"{s / 3600:g} h"
    if s >= 60 and s % 60 == 0:
        return f"{s / 60:g} min"
    return f"{s:g} s"


# -- sources -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StreamSource:
    """One watched stream: what the decoder opens (``target``: a URL may hold a password, so it is never
    printed or stored), and what is (``public``, and its bytes ``key``: ``windows.source_key``)."""

    target: str
    public: str
    key: bytes
    url: bool = False


def stream_source(spec: str) -> StreamSource:
    """A source as given on the command line: a URL (its scheme checked by :func:`acfd.scanner.urls.check_url`;
    stored and printed as :func:`~acfd.scanner.urls.public_url`) or a local file."""
    if not spec:
        raise ScanError("an empty source was given (an unset variable?): name a file, a playlist or a URL")
    if is_url(spec):
        check_url(spec)  # UrlError (one line) for ftp://, file://, a URL without a host...
        public = public_url(spec)
        return StreamSource(spec, public, public.encode("utf-8", "surrogateescape"), url=True)
    path = os.path.abspath(spec)
    if os.path.isdir(path):
        raise ScanError(f"{display_path(path)} is a folder: watch takes a video file, a playlist or a URL")
    if not os.path.exists(path):
        raise ScanError(f"{display_path(path)}: no such file")
    return StreamSource(path, display_path(path), os.fsencode(path))


# -- settings ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WatchConfig:
    """Settings of one watch, validated once."""

    sources: tuple[str, ...]
    model: str | None = None  # artifact path or URL; None: the packaged starter (or a backend given to Watcher)
    db: str = "acfd.sqlite"
    window_s: float = DEFAULT_WINDOW_S
    duration_s: float | None = None  # stop after this much wall time; None: until every stream ended or gave up
    device: str = DEFAULTS.device
    precision: str = "auto"  # as a scan's --precision (acfd.engine.precision)
    fps: float = DEFAULTS.fps
    batch_size: int | None = None  # None: the backend's max batch, else 32 (GPU) / 4 (CPU), as a scan
    in_process: bool = False  # the frames stages in threads of this process (no isolation; tests, debugging)
    strategy: str = DEFAULT_STRATEGY
    min_support: int | None = None
    timeout_s: float = WATCH_TIMEOUT_S  # a stream that delivers nothing this long has stalled: a drop
    reconnect: int = DEFAULT_RECONNECT  # attempts in a row without a frame before a stream is given up
    backoff_s: float = BACKOFF_S  # first wait before a reopen; doubled after each attempt without a frame
    backoff_max_s: float = BACKOFF_MAX_S
    detector_model: str = DEFAULTS.detector
    min_face_score: float = DEFAULTS.min_face_score
    detect_max_side: int = DEFAULTS.detect_max_side
    worker_memory_mb: int | None = None
    max_pending: int = 512  # crops waiting for the engine before the workers are not read
    drain_s: float = DRAIN_S  # at a stop, how long faces still being scored are waited for

    def __post_init__(self) -> None:
        from .pipeline import MIN_WORKER_MEMORY_MB, _check_precision

        if not self.sources:
            raise ScanError("give at least one source to watch (a file, a playlist or a URL)")
        _check_precision(self.precision)
        streams = self.streams  # validates each source
        keys = [s.key for s in streams]
        for i, k in enumerate(keys):
            if k in keys[:i]:
                raise ScanError(f"{streams[i].public} is given twice")
        for name, v in (("--fps", self.fps), ("--window", self.window_s), ("--timeout", self.timeout_s),
                        ("backoff", self.backoff_s), ("backoff max", self.backoff_max_s)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ScanError(f"{name} must be a positive number of seconds, not {v!r}")
        if self.window_s * self.fps < 1 - _EPS:
            raise ScanError(f"--window {self.window_s:g} s holds no sampled frame at --fps {self.fps:g}: "
                            f"make it at least {1 / self.fps:g} s")
        if self.duration_s is not None and not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise ScanError(f"--duration must be a positive number of seconds, not {self.duration_s!r}")
        if self.reconnect < 1:
            raise ScanError("--reconnect must be at least 1")
        if self.strategy not in STRATEGIES:
            raise ScanError(f"unknown strategy {self.strategy!r}: choose one of {', '.join(STRATEGIES)}")
        if self.device not in DEVICES:
            raise ScanError(f"unknown device {self.device!r}: choose {', '.join(DEVICES)}")
        if self.detector_model not in DETECTORS:
            raise ScanError(f"unknown face detector {self.detector_model!r}: choose {', '.join(DETECTORS)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ScanError("batch size must be at least 1")
        if self.min_support is not None and self.min_support < 1:
            raise ScanError("--min-support must be at least 1")
        if self.worker_memory_mb is not None:
            if self.in_process:
                raise ScanError("--worker-memory limits worker processes: it cannot be used with --in-process")
            if self.worker_memory_mb < MIN_WORKER_MEMORY_MB:
                raise ScanError(f"--worker-memory {self.worker_memory_mb} MB is too small: a decode worker needs "
                                f"at least {MIN_WORKER_MEMORY_MB} MB of address space")
        if self.max_pending < 1 or self.drain_s < 0:
            raise ScanError("max pending must be >= 1 and drain time >= 0")

    @property
    def streams(self) -> tuple[StreamSource, ...]:
        return tuple(stream_source(s) for s in self.sources)

    def backoff(self, failures: int) -> float:
        """Seconds to wait before the next attempt after ``failures`` attempts in a row without a frame
        (0: the stream worked, then dropped): 1, 1, 2, 4, ... up to ``backoff_max_s``."""
        return min(self.backoff_max_s, self.backoff_s * 2 ** max(0, failures - 1))

    def as_args(self) -> dict[str, Any]:
        """The settings as stored in ``scans.args`` (sources and model without passwords)."""
        d = dataclasses.asdict(self)
        d["sources"] = [s.public for s in self.streams]
        d["db"] = db.safe_url(self.db)
        d["command"] = "watch"
        if self.model:
            d["model"] = public_url(self.model)
        return d


# -- results -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WindowResult:
    """A closed window of one stream and its verdict (``closed_by``: time, dropped, ended or stopped)."""

    source: StreamSource
    index: int
    started_at: dt.datetime  # wall clock (UTC) when its first frame arrived
    ended_at: dt.datetime  # wall clock when it closed
    start_s: float  # stream time
    end_s: float
    n_frames: int
    verdict: VideoVerdict
    closed_by: str
    n_unscored: int = 0  # faces left out: still unscored when the watch stopped

    @property
    def flagged(self) -> bool:
        return self.verdict.flagged

    def to_dict(self, ctx: ScanContext) -> dict[str, Any]:
        v = self.verdict
        return {
            "type": "window", "source": self.source.public, "window_index": self.index,
            "label": v.label, "score": v.score, "threshold": ctx.threshold,
            "started_at": _iso(self.started_at), "ended_at": _iso(self.ended_at),
            "start_s": self.start_s, "end_s": self.end_s, "n_frames": self.n_frames, "n_faces": v.n_faces,
            "n_identities": len(v.identities), "closed_by": self.closed_by,
            "identities": [{"identity": i.identity, "label": i.label, "score": i.score, "n_faces": i.n_faces,
                            "t_first": i.t_first, "t_last": i.t_last} for i in v.identities],
            "scan_id": ctx.scan_id, "model_id": ctx.model_id, "model_validation": ctx.validation,
            "strategy": ctx.strategy,
        }


@dataclass(frozen=True)
class StreamNote:
    """Something that happened to a stream (``kind``: acfd.schemas.db.STREAM_EVENTS), in one line."""

    source: StreamSource
    kind: str
    message: str
    at: dt.datetime = field(default_factory=db.utcnow)

    def to_dict(self, ctx: ScanContext) -> dict[str, Any]:
        return {"type": "stream_event", "source": self.source.public, "kind": self.kind, "message": self.message,
                "at": _iso(self.at), "scan_id": ctx.scan_id}


WatchEvent = WindowResult | StreamNote


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- the frames stages in threads (in_process) -------------------------------------------------------

class Pool(Protocol):
    """What the watch needs of its decode workers, one per stream (:class:`StreamPool`, :class:`ThreadPool`)."""

    def submit(self, wid: int, video: int, target: str) -> None: ...

    def poll(self, timeout: float = 0.05) -> list[WorkerMessage]: ...

    def pause_clock(self) -> None: ...

    def close(self) -> None: ...


class StreamPool(DecodePool):
    """A :class:`DecodePool` with one worker per stream; closing kills the workers still decoding (a live
    stream never ends on its own, so they would never read the request to stop)."""

    def close(self) -> None:
        for w in self._workers:
            if w.video is not None and w.proc.is_alive():
                w.proc.kill()
        super().close()


@dataclass
class _Job:
    video: int
    cancel: threading.Event
    last_heard: float
    detector: Any
    thread: threading.Thread | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    finished: bool = False  # its thread has returned
    orphan: bool = False  # the pool is closed: the thread closes its detector when it returns


class ThreadPool:
    """The frames stage of each stream in a thread of this process: no process start, no isolation (a
    decoder crash ends the watch). A stream silent for ``timeout_s`` of listening is failed and its thread
    abandoned (it stops at its next frame; a thread blocked inside the decoder cannot be stopped)."""

    def __init__(self, cfg: WorkerConfig, n: int, timeout_s: float) -> None:
        self.cfg = cfg
        self.timeout_s = timeout_s
        self._q: queue.Queue[WorkerMessage] = queue.Queue()
        self._jobs: dict[int, _Job] = {}
        self._abandoned: list[_Job] = []  # timed out: their detectors are closed once their threads end
        self._detectors: list[Any | None] = [None] * n  # one per stream: a detector is not shared by threads
        self._clock = 0.0
        self._last_tick = time.monotonic()

    def _detector(self, wid: int) -> Any:
        from .worker import _detector

        det = self._detectors[wid]
        if det is None:
            det = self._detectors[wid] = _detector(self.cfg)
        return det

    def submit(self, wid: int, video: int, target: str) -> None:
        if wid in self._jobs:
            raise WorkerError(f"stream {wid} is being decoded already")
        job = _Job(video, threading.Event(), self._clock, self._detector(wid))
        self._jobs[wid] = job
        job.thread = threading.Thread(target=self._run, args=(job, target), daemon=True, name=f"acfd-watch-{wid}")
        job.thread.start()

    def _run(self, job: _Job, target: str) -> None:
        from .worker import video_events

        try:
            for ev in video_events(self.cfg, job.detector, target):
                if job.cancel.is_set():
                    return
                self._q.put(WorkerMessage(job.video, ev))
        except BaseException as e:  # a broken face-recognition model: not the stream's fault, stop the watch
            self._q.put(WorkerMessage(-1, StartFailed(_one_line(e))))
        finally:
            with job.lock:
                job.finished = True
                if job.orphan:
                    job.detector.close()

    def _tick(self) -> None:
        now = time.monotonic()
        self._clock += now - self._last_tick
        self._last_tick = now

    def pause_clock(self) -> None:
        self._last_tick = time.monotonic()

    def poll(self, timeout: float = 0.05) -> list[WorkerMessage]:
        self._tick()
        out: list[WorkerMessage] = []
        try:
            out.append(self._q.get(timeout=timeout) if timeout > 0 else self._q.get_nowait())
            while True:
                out.append(self._q.get_nowait())
        except queue.Empty:
            pass
        self._tick()
        by_video = {j.video: wid for wid, j in self._jobs.items()}
        kept = []
        for msg in out:
            if isinstance(msg.event, StartFailed):
                raise WorkerError(f"decoding failed: {msg.event.error}")
            wid = by_video.get(msg.video)
            if wid is None:
                continue  # from an abandoned thread
            self._jobs[wid].last_heard = self._clock
            kept.append(msg)
            if isinstance(msg.event, (Decoded, Failed)):
                del self._jobs[wid]
        for wid, job in list(self._jobs.items()):
            if self._clock - job.last_heard > self.timeout_s:
                job.cancel.set()
                self._detectors[wid] = None  # the abandoned thread keeps its detector
                self._abandoned.append(job)
                del self._jobs[wid]
                kept.append(WorkerMessage(job.video, Failed(
                    f"decoding timed out: no progress for {self.timeout_s:g} s (thread abandoned)")))
        return kept

    def close(self) -> None:
        """Cancel every thread (each stops at its next frame) and close the detectors: those of threads
        still running are closed by the threads themselves when they return."""
        jobs = [*self._jobs.values(), *self._abandoned]
        busy = set()
        for job in jobs:
            job.cancel.set()
            with job.lock:
                if not job.finished:
                    job.orphan = True
                    busy.add(id(job.detector))
        for det in {id(d): d for d in [*self._detectors, *(j.detector for j in jobs)] if d is not None}.values():
            if id(det) not in busy:
                det.close()
        self._jobs, self._abandoned, self._detectors = {}, [], [None] * len(self._detectors)


# -- the loop ----------------------------------------------------------------------------------------

_WAIT, _RUN, _OFF = "wait", "run", "off"


@dataclass
class _Window:
    index: int
    serial: int  # engine routing key (FaceCrop.video)
    grid_end: float
    start_s: float
    started_at: dt.datetime
    faces: list[FaceRecord] = field(default_factory=list)
    n_frames: int = 0
    last_t: float = -math.inf
    pending: int = 0
    ended_at: dt.datetime | None = None
    closed_by: str | None = None  # set when no more frames will come


@dataclass
class _Stream:
    sid: int
    source: StreamSource
    state: str = _WAIT
    retry_at: float = 0.0
    conn: int = -1  # the current connection's id (WorkerMessage.video)
    attempts: int = 0  # connections made
    failures: int = 0  # connections in a row that brought no frame
    got_frame: bool = False  # this connection brought a frame
    info: VideoInfo | None = None
    anchor: float | None = None  # stream time of the grid's origin
    last_t: float | None = None  # stream time of the last frame taken
    next_due: float | None = None  # after a reopen, frames before this are skipped (replays, sampling)
    prev_end: float | None = None  # end (stream time) of the last window closed, on the current clock
    window: _Window | None = None
    closing: deque[_Window] = field(default_factory=deque)
    n_windows: int = 0
    last_error: str = ""
    reset_clock: bool = False  # this connection restarted the clock (said in its first frame's note)


@dataclass
class Stop:
    """Asks a running watch to stop (a signal handler calls :meth:`set`); ``reason`` goes in the ``ended``
    events."""

    event: threading.Event = field(default_factory=threading.Event)
    reason: str = "stopped"

    def set(self, reason: str) -> None:
        self.reason = reason
        self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()


class Watcher:
    """Watches the sources of ``cfg``: :meth:`run` is the loop, a generator of :data:`WatchEvent`.

    ``backend`` may be given (tests, benchmarks), else ``cfg.model`` (or the packaged starter) is loaded;
    ``pool_factory(n)`` replaces the decode workers (tests)."""

    def __init__(self, cfg: WatchConfig, backend: Backend | None = None, progress: bool = True,
                 pool_factory: Callable[[int], Pool] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        from .pipeline import batch_size_for, load_model

        self.starter = False
        if backend is None:
            loaded = load_model(cfg.model, cfg.device, progress, precision=cfg.precision)
            backend, self.starter = loaded.backend, loaded.starter
            cfg = dataclasses.replace(cfg, model=loaded.spec)
        self.cfg = cfg
        self.backend = backend
        self.meta = backend.meta
        self.batch_size = batch_size_for(cfg.batch_size, backend, cfg.device)
        self.frames = FramesConfig(
            sampling=Sampling(cfg.fps), crop_size=self.meta.input_size, crop_margin=self.meta.crop_margin,
            decoder="pyav",  # decord reads a file's whole index first: it cannot follow a live stream
            detector_model=cfg.detector_model, min_face_score=cfg.min_face_score,
            detect_max_side=cfg.detect_max_side, stream=True,
            timeout_s=cfg.timeout_s,  # FFmpeg's open and read timeouts for a URL: a stall is a drop
        )
        self.policy = VerdictPolicy(cfg.strategy, Scale(self.meta.r_minus, self.meta.r_plus, self.meta.threshold),
                                    cfg.min_support)
        self.pool_factory = pool_factory
        self.clock = clock
        self.sources = cfg.streams
        self.infer_busy_s = 0.0

    def _pool(self, n: int) -> Pool:
        if self.pool_factory is not None:
            return self.pool_factory(n)
        wcfg = WorkerConfig(self.frames, self.cfg.worker_memory_mb)
        if self.cfg.in_process:
            return ThreadPool(wcfg, n, self.cfg.timeout_s)
        return StreamPool(wcfg, n, self.cfg.timeout_s)

    # -- the generator -------------------------------------------------------------------------------
    def run(self, stop: Stop | None = None) -> Iterator[WatchEvent]:
        """Windows and stream events as they happen, until ``cfg.duration_s`` has passed, ``stop`` is set,
        or every stream ended or was given up; then the open windows are closed and yielded, and each
        stream still watched gets an ``ended`` event. Close the generator to stop without that."""
        from .local import _Engine

        cfg = self.cfg
        streams = [_Stream(i, s) for i, s in enumerate(self.sources)]
        self._streams = streams
        self._by_conn: dict[int, _Stream] = {}
        self._by_serial: dict[int, _Window] = {}
        self._serial = 0
        self._notes: list[StreamNote] = []
        pool = self._pool(len(streams))
        eng = _Engine(self.backend, self.batch_size)  # type: ignore[arg-type]
        eng.start()
        self._eng = eng
        self._pending = 0
        next_conn = 0
        t0 = self.clock()
        deadline = None if cfg.duration_s is None else t0 + cfg.duration_s
        reason = "every stream ended"
        try:
            while True:
                now = self.clock()
                if stop is not None and stop.is_set():
                    reason = stop.reason
                    break
                if deadline is not None and now >= deadline:
                    reason = f"--duration {_fmt_s(cfg.duration_s or 0)} reached"
                    break
                if all(s.state == _OFF and not s.closing for s in streams):
                    break
                for s in streams:
                    if s.state == _WAIT and now >= s.retry_at:
                        self._by_conn.pop(s.conn, None)  # a late message of the last connection is ignored
                        s.state, s.conn = _RUN, next_conn
                        s.attempts += 1
                        s.got_frame = s.reset_clock = False
                        self._by_conn[next_conn] = s
                        next_conn += 1
                        pool.submit(s.sid, s.conn, s.source.target)
                got = self._take_scores(0.0 if self._pending < cfg.max_pending else 0.2)
                if self._pending >= cfg.max_pending:
                    pool.pause_clock()  # not listening to the workers: not their time
                else:
                    for msg in pool.poll(0.0 if got else 0.05):
                        s = self._by_conn.get(msg.video)
                        if s is not None and s.state == _RUN and s.conn == msg.video:
                            self._on_event(s, msg.event, eng)
                yield from self._emit()
            yield from self._finish(reason, eng)
        finally:
            eng.inq.put(None)
            pool.close()
            eng.join(timeout=30)
            self.infer_busy_s = eng.busy_s

    def _take_scores(self, wait_s: float) -> bool:
        """Route the engine's scores to their windows; True when any came."""
        got = False
        while True:
            try:
                item = self._eng.out.get(timeout=wait_s) if wait_s else self._eng.out.get_nowait()
            except queue.Empty:
                return got
            wait_s = 0.0
            got = True
            if isinstance(item, BaseException):
                if isinstance(item, AcfdError):
                    raise item
                raise ScanError(f"the model failed: {item.__class__.__name__}: {item}") from item
            crops, scores, _dt = item
            self._pending -= len(crops)
            for j, fc in enumerate(crops):
                w = self._by_serial.get(fc.video)
                if w is None:
                    continue
                w.faces[fc.face].score = float(scores.score[j])
                w.pending -= 1
                if w.pending == 0 and w.closed_by is not None:
                    self._by_serial.pop(w.serial, None)

    # -- one stream's events -------------------------------------------------------------------------
    def _note(self, s: _Stream, kind: str, message: str) -> None:
        if s.source.url:  # whatever said it (FFmpeg may quote the URL), never the URL's password
            message = redact(message, s.source.target)
        self._notes.append(StreamNote(s.source, kind, _one_line(message)))

    def _on_event(self, s: _Stream, ev: Any, eng: Any) -> None:
        if isinstance(ev, Opened):
            self._on_opened(s, ev.info)
        elif isinstance(ev, FrameFaces):
            self._on_frame(s, ev, eng)
        elif isinstance(ev, Decoded):
            if s.info is not None and s.info.duration_s is not None:
                self._close_window(s, "ended")
                s.state = _OFF
                self._note(s, db.EVENT_ENDED, "the end of the stream")
            else:
                self._dropped(s, "the live stream ended (no more frames)")
        elif isinstance(ev, Failed):
            self._dropped(s, ev.error)

    def _on_opened(self, s: _Stream, info: VideoInfo) -> None:
        s.info = info
        live = info.duration_s is None
        what = "live" if live else f"finite, {info.duration_s:.1f} s"
        self._note(s, db.EVENT_OPENED, f"attempt {s.attempts}: {info.container}, {info.codec} "
                                       f"{info.width}x{info.height}, {what}")

    def _on_frame(self, s: _Stream, ev: FrameFaces, eng: Any) -> None:
        t = float(ev.time_s)
        live = s.info is None or s.info.duration_s is None
        if not s.got_frame and s.last_t is not None and live and t < s.last_t - REWIND_S:
            # the stream's clock restarted: a new grid at this frame
            s.anchor = s.last_t = s.next_due = s.prev_end = None
            s.reset_clock = True
        if s.last_t is not None and t <= s.last_t + _EPS:
            return  # at or before the last frame taken: a replay after a reopen
        if not s.got_frame and s.next_due is not None and t < s.next_due - _EPS:
            return  # after a reopen the sampling goes on from the last frame taken (so windows never overlap)
        if not s.got_frame:
            s.got_frame, s.failures = True, 0
            if s.reset_clock:
                self._note(s, db.EVENT_OPENED, f"attempt {s.attempts}: the stream's clock restarted "
                                               f"(first frame at {t:.3f} s): a new window grid")
        if s.anchor is None:
            s.anchor = t
        W = self.cfg.window_s
        k = math.floor((t - s.anchor) / W)
        if t < s.anchor + k * W:
            k -= 1
        elif t >= s.anchor + (k + 1) * W:
            k += 1
        grid_start, grid_end = s.anchor + k * W, s.anchor + (k + 1) * W
        w = s.window
        if w is not None and t >= w.grid_end - _EPS:
            self._close_window(s, "time")
            w = None
        if w is None:
            start = grid_start if s.prev_end is None else max(grid_start, min(s.prev_end, t))
            w = s.window = _Window(s.n_windows, self._serial, grid_end, start, db.utcnow())
            self._by_serial[w.serial] = w
            self._serial += 1
            s.n_windows += 1
        w.n_frames += 1
        w.last_t = t
        s.last_t = t
        s.next_due = t + 1.0 / self.cfg.fps
        for k_face, (face, ident) in enumerate(zip(ev.faces, ev.identities, strict=True)):
            assert ev.crops is not None
            w.faces.append(FaceRecord(ev.index, t, face, int(ident)))
            eng.inq.put(FaceCrop(w.serial, len(w.faces) - 1, ev.crops[k_face]))
            w.pending += 1
            self._pending += 1

    def _close_window(self, s: _Stream, why: str) -> None:
        w = s.window
        if w is None:
            return
        s.window = None
        w.closed_by, w.ended_at = why, db.utcnow()
        end = w.grid_end if why == "time" else min(w.grid_end, w.last_t + 1.0 / self.cfg.fps)
        w.grid_end = max(end, w.start_s + _EPS)
        s.prev_end = w.grid_end
        if w.pending == 0:
            self._by_serial.pop(w.serial, None)
        s.closing.append(w)

    def _dropped(self, s: _Stream, error: str) -> None:
        """The connection failed, stalled or (live) ended: reopen after a backoff, or give up."""
        self._close_window(s, "dropped")
        s.last_error = _one_line(error)
        if not s.got_frame:
            s.failures += 1
        if s.failures >= self.cfg.reconnect:
            s.state = _OFF
            self._note(s, db.EVENT_GAVE_UP, f"gave up after {s.failures} attempts in a row without a frame; "
                                            f"last: {s.last_error}")
            return
        wait = self.cfg.backoff(s.failures)
        s.state, s.retry_at = _WAIT, self.clock() + wait
        tries = f"attempt {s.attempts}" + (f", {s.failures} in a row without a frame" if s.failures else "")
        self._note(s, db.EVENT_DROPPED, f"{s.last_error} ({tries}); reopening in {wait:g} s")

    # -- output --------------------------------------------------------------------------------------
    def _emit(self, force: bool = False) -> Iterator[WatchEvent]:
        """The notes, then each stream's closed windows whose faces are all scored, in index order
        (``force``: also those with faces left unscored, which are left out)."""
        notes, self._notes = self._notes, []
        yield from notes
        for s in self._streams:
            while s.closing and (force or s.closing[0].pending == 0):
                w = s.closing.popleft()
                self._by_serial.pop(w.serial, None)
                yield self._result(s, w)

    def _result(self, s: _Stream, w: _Window) -> WindowResult:
        scored = [f for f in w.faces if f.score is not None]
        verdict = window_verdict(scored, w.start_s, w.grid_end, self.policy)
        assert w.ended_at is not None and w.closed_by is not None
        return WindowResult(s.source, w.index, w.started_at, w.ended_at, w.start_s, w.grid_end, w.n_frames, verdict,
                            w.closed_by, len(w.faces) - len(scored))

    def _finish(self, reason: str, eng: Any) -> Iterator[WatchEvent]:
        """Close every open window (``stopped``), wait up to ``drain_s`` for their faces, yield them, and an
        ``ended`` event for each stream still watched."""
        for s in self._streams:
            if s.state != _OFF:
                self._close_window(s, "stopped")
        deadline = time.monotonic() + self.cfg.drain_s
        while self._pending > 0 and time.monotonic() < deadline:
            self._take_scores(min(0.2, max(0.0, deadline - time.monotonic())))
        yield from self._emit(force=True)
        for s in self._streams:
            if s.state != _OFF:
                s.state = _OFF
                self._note(s, db.EVENT_ENDED, reason)
        yield from self._emit()

    @property
    def gave_up(self) -> list[StreamSource]:
        return [s.source for s in getattr(self, "_streams", []) if s.state == _OFF and s.failures >= self.cfg.reconnect]


# -- sinks -------------------------------------------------------------------------------------------

class WindowStoreSink:
    """Stores each window (and the scan's counters) and each stream event, one transaction each."""

    def __init__(self, store: Any, ctx: ScanContext) -> None:
        self.store = store
        self.ctx = ctx

    def write(self, ev: WatchEvent) -> None:
        c = self.ctx
        if isinstance(ev, WindowResult):
            self.store.write_window(c.scan_id, c.model_id, c.threshold, c.strategy, ev)
        else:
            self.store.write_event(c.scan_id, ev)


class WindowJsonlSink:
    """One JSON line per window, flushed at once: flagged windows only (alerts: stdout), or every window and
    stream event (``every``: a ``--jsonl`` file, a complete log). A reader that went away stops the watch
    quietly (:class:`OutputClosed`); a full disk in one line (:class:`ScanOutputError`)."""

    def __init__(self, out: IO[str], ctx: ScanContext, every: bool = False) -> None:
        self.out = out
        self.ctx = ctx
        self.every = every

    def write(self, ev: WatchEvent) -> None:
        import json

        if isinstance(ev, WindowResult):
            if not (self.every or ev.flagged):
                return
        elif not self.every:
            return
        write_line(self.out, json.dumps(ev.to_dict(self.ctx), ensure_ascii=False))


# -- a whole watch -----------------------------------------------------------------------------------

@dataclass
class WatchSummary:
    """What a watch did (also in its ``scans`` row)."""

    scan_id: int
    status: str
    n_sources: int
    n_windows: int = 0
    n_flagged: int = 0
    n_frames: int = 0
    n_faces: int = 0
    gave_up: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    infer_busy_s: float = 0.0

    @property
    def exit_code(self) -> int:
        """Bit 0: a window was flagged; bit 1: a stream was given up (so 0..3)."""
        return (1 if self.n_flagged else 0) | (2 if self.gave_up else 0)


SinkFactory = Callable[[ScanContext], Any]


def watch(watcher: Watcher, sinks: Sequence[SinkFactory] = (), stop: Stop | None = None) -> WatchSummary:
    """Run ``watcher`` into its store (``cfg.db``) and ``sinks``; returns the summary. The ``scans`` row is
    ``done`` when the duration passed or every stream ended, ``interrupted`` when ``stop`` was set (or
    on Ctrl-C), ``failed`` otherwise."""
    from .pipeline import device_name
    from .watch_store import WatchStore

    cfg = watcher.cfg
    t_start = time.perf_counter()
    store = WatchStore(db.open_store(cfg.db))
    b = watcher.backend
    store.mark_dead_scans()
    store.register_model(b.model_id, cfg.model or "", b.name, watcher.meta)
    scan_id = store.start_scan(b.model_id, cfg.strategy, watcher.meta.threshold, b.name,
                               str(getattr(b, "device", cfg.device)), cfg.as_args(), project_version(),
                               device_name=device_name(b))
    store.set_found(scan_id, len(watcher.sources))
    ctx = ScanContext(scan_id, b.model_id, watcher.meta.threshold, cfg.strategy, watcher.meta.validation)
    summary = WatchSummary(scan_id, db.SCAN_FAILED, len(watcher.sources))
    consumers = [WindowStoreSink(store, ctx), *(make(ctx) for make in sinks)]
    status = db.SCAN_FAILED
    try:
        with store.hold_lease(scan_id):
            for ev in watcher.run(stop):
                for sink in consumers:
                    sink.write(ev)
                if isinstance(ev, WindowResult):
                    summary.n_windows += 1
                    summary.n_flagged += ev.flagged
        status = db.SCAN_INTERRUPTED if stop is not None and stop.is_set() else db.SCAN_DONE
    except (KeyboardInterrupt, OutputClosed):
        status = db.SCAN_INTERRUPTED
        raise
    finally:
        wall = time.perf_counter() - t_start
        done = store.finish_scan(scan_id, status, wall)
        summary.status, summary.wall_s = status, wall
        summary.n_frames, summary.n_faces = done.n_frames, done.n_faces
        summary.gave_up = [s.public for s in watcher.gave_up]
        summary.infer_busy_s = watcher.infer_busy_s
        store.engine.dispose()
    return summary
