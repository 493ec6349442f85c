"""Isolated decode + face workers: native decoder crashes, hangs and runaway memory become error rows.

Each worker is a separate process (``spawn``: no inherited threads or onnxruntime state) that owns a
decoder and a face detector and handles one video at a time: decode the sampled frames, detect every
face, track identities, crop each face the training way, and send per-frame results back on its own
pipe. The parent (:class:`DecodePool`) watches every worker:

- a worker that dies (segfault, abort, the kernel's OOM killer, its own memory limit) is reported as a
  crash for the video it had, and replaced;
- a worker that sends nothing for ``timeout_s`` seconds of the parent listening is killed (a hang) and
  replaced; time the parent spends not reading (back-pressure) is not counted against it.

Workers are long-lived, so the cost of isolation is one process start per worker per scan plus the
pickled crops (about 270 kB per face at 299 px): negligible at 1 frame/s.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np

from .config import DEFAULTS
from .decode import DecodeError, Sampling, _one_line

# Message kinds sent by a worker: (kind, video_id, payload)
MSG_READY = "ready"  # worker started: payload None
MSG_INFO = "info"  # payload VideoInfo
MSG_FRAME = "frame"  # payload FrameResult
MSG_DONE = "done"  # payload (n_frames, t_decode, t_detect, decoder used, {tracklet: identity})
MSG_ERROR = "error"  # payload one-line message


class WorkerError(DecodeError):
    """A worker could not start (bad configuration, detector model missing)."""


@dataclass(frozen=True)
class WorkerConfig:
    """What every worker needs: how to sample, decode, detect and crop."""

    sampling: Sampling
    crop_size: int
    crop_margin: float
    decoder: str = DEFAULTS.decoder  # auto | decord | pyav
    gpu_decode: bool = False
    detector_model: str = DEFAULTS.detector  # full | short | auto (acfd.scanner.faces.DETECTOR_MODES)
    min_face_score: float = DEFAULTS.min_face_score
    detect_max_side: int = DEFAULTS.detect_max_side
    memory_limit_mb: int | None = None  # RLIMIT_AS of each worker; None = no limit
    nice: int = 10  # niceness added in the worker: the engine gets the cores it shares with decoding
    quiet_native_logs: bool = True

    def __post_init__(self) -> None:
        if self.decoder not in ("auto", "decord", "pyav"):
            raise WorkerError(f"unknown decoder {self.decoder!r}: choose auto, decord or pyav")
        if self.crop_size < 8:
            raise WorkerError(f"crop size {self.crop_size} is too small")


@dataclass(frozen=True)
class FrameResult:
    """One sampled frame: its faces (full-resolution boxes), their identities and crops."""

    index: int
    time_s: float
    faces: tuple[Any, ...]  # acfd.scanner.faces.Face
    identities: tuple[int, ...]
    crops: np.ndarray | None  # uint8 [k, S, S, 3], None when no face
    t_decode: float
    t_detect: float


def _process_video(
    cfg: WorkerConfig, detector: Any, vid: int, path: str, conn: Connection, identity: str = "face"
) -> None:
    """Decode, detect, crop and track one video, sending its frames and then the identity map on ``conn``.

    ``identity``: how faces are told apart (acfd.scanner.track.MODES); scans use ``face`` (the
    face-recognition embedding, of the faces its schedule picks), ``bench/identities.py`` also
    ``face-every`` (every face embedded) and the former ``appearance``. The descriptors stay in this
    process: only tracklet ids and the tracklet -> person map are sent. A frame is sent once its ids
    are final (``IoUTracker.settled``): with the schedule, faces that reused their track's descriptor
    are checked at the track's next embedded face, up to ``EmbedSchedule.every_frames`` samples later.
    """
    from .decode import open_frames
    from .faces import crop, crop_box
    from .track import FrameLooks, tracker

    t0 = time.perf_counter()
    info, frames = open_frames(path, cfg.sampling, cfg.decoder, cfg.gpu_decode)
    conn.send((MSG_INFO, vid, info))
    t_decode_total = time.perf_counter() - t0
    t_detect_total = 0.0
    tr = tracker(identity)
    held: list[FrameResult] = []  # frames whose ids may still change, in order (n - len(held) sent)
    n = 0

    def send_settled(upto: int) -> None:
        while held and n - len(held) < upto:
            r = held.pop(0)
            k = n - len(held) - 1  # its sampled frame number, as the tracker counts
            conn.send((MSG_FRAME, vid, dataclasses.replace(r, identities=tuple(tr.tracklets(k)))))

    decoder = info.decoder
    last_t = float("-inf")
    while True:
        t0 = time.perf_counter()
        try:
            frame = next(frames, None)
        except DecodeError:
            if cfg.decoder != "auto" or decoder not in ("decord", "decord-gpu"):
                raise  # asked for decord only, or PyAV failed too (a second fallback would loop)
            # decord gave up in the middle of the stream (it is less forgiving of damaged packets):
            # go on with PyAV from the first sampled frame after the last one taken
            decoder += "+pyav"
            _, rest = open_frames(path, cfg.sampling, "pyav")
            frames = (f for f in rest if f.time_s > last_t + 1e-6)
            continue
        t_dec = time.perf_counter() - t0
        t_decode_total += t_dec
        if frame is None:
            break
        last_t = frame.time_s
        t0 = time.perf_counter()
        faces = detector.detect(frame.image)
        crops = None
        if faces:
            crops = np.stack([crop(frame.image, crop_box(f, cfg.crop_margin), cfg.crop_size) for f in faces])
        # t_detect includes the faces' descriptors (about 0.13 s of CPU per embedded face: acfd.scanner.identity)
        ids = tr.observe(faces, FrameLooks(tr.method, frame.image, faces, crops), frame.time_s)
        t_det = time.perf_counter() - t0
        t_detect_total += t_det
        held.append(FrameResult(frame.index, frame.time_s, tuple(faces), tuple(ids), crops, t_dec, t_det))
        n += 1
        send_settled(tr.settled)
    if n == 0:
        raise DecodeError("no decodable video frames")
    t0 = time.perf_counter()
    tr.finish()  # the last reused faces are checked (an embedding or so per open track)
    t_detect_total += time.perf_counter() - t0
    send_settled(n)
    # identities are tracklets until here: the merge maps them to people (0..k-1)
    conn.send((MSG_DONE, vid, (n, t_decode_total, t_detect_total, decoder, tr.identity_map())))


def worker_main(cfg: WorkerConfig, tasks: Connection, conn: Connection) -> None:
    """Entry point of a worker process: handle (video_id, path) tasks until None arrives."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # MediaPipe/TFLite/absl log every model load to stderr, over the progress bar; errors still show.
    # Their native loggers ignore the usual switches, so the worker's native stderr goes to /dev/null;
    # failures still reach the parent as messages, crashes as exit signals.
    if cfg.quiet_native_logs:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    if cfg.nice:
        # Where decode workers and the engine share CPU cores, the engine should win them: ONNX Runtime's
        # threads wait for each other at every layer, so a descheduled thread stalls them all.
        os.nice(cfg.nice)
    if cfg.memory_limit_mb:
        import resource

        limit = cfg.memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from .faces import FaceDetector
    from .identity import check_installed

    try:  # the face-recognition model loads on the first face; a broken installation fails here, once
        check_installed()
    except Exception as e:
        conn.send((MSG_ERROR, -1, f"face recognition: {_one_line(e)}"))
        return
    try:
        detector = FaceDetector(cfg.detector_model, cfg.min_face_score, cfg.detect_max_side)  # type: ignore[arg-type]
    except Exception as e:
        conn.send((MSG_ERROR, -1, f"face detector: {_one_line(e)}"))
        return
    conn.send((MSG_READY, -1, None))
    try:
        _serve(cfg, detector, tasks, conn)
    finally:
        detector.close()


def _serve(cfg: WorkerConfig, detector: Any, tasks: Connection, conn: Connection) -> None:
    from .identity import IdentityModelError

    while True:
        try:
            task = tasks.recv()
        except EOFError:
            return
        if task is None:
            return
        vid, path = task
        # Under an address-space limit, a decoder that cannot start its threads fails like a bad file:
        # say that the setting may be the cause (and the resume key holds the setting, so a run with a
        # larger limit tries the file again).
        limit_note = (
            f" (under --worker-memory {cfg.memory_limit_mb} MB: the limit may be the cause)" if cfg.memory_limit_mb else ""
        )
        try:
            _process_video(cfg, detector, vid, path, conn)
        except IdentityModelError as e:  # the model, not the file: no error row per video, stop the scan
            conn.send((MSG_ERROR, -1, f"face recognition: {_one_line(e)}"))
            return
        except DecodeError as e:
            conn.send((MSG_ERROR, vid, f"{e}{limit_note}"))
        except MemoryError:
            conn.send((MSG_ERROR, vid, f"out of memory while decoding (worker limit {cfg.memory_limit_mb} MB)"))
        except (BrokenPipeError, EOFError):
            return  # the parent is gone
        except Exception as e:  # any other library failure on this file: an error row, go on
            conn.send((MSG_ERROR, vid, f"{e.__class__.__name__}: {_one_line(e)}{limit_note}"))


@dataclass
class _Worker:
    wid: int
    proc: Any
    tasks: Connection
    conn: Connection
    ready: bool = False
    video: int | None = None
    last_heard: float = 0.0  # on the parent's listening clock
    started: float = 0.0  # on the same clock; the video's timeout starts when the worker is ready


@dataclass
class PoolEvent:
    """What :meth:`DecodePool.poll` reports: a worker message, or a crash/timeout turned into an error."""

    kind: str
    video: int
    payload: Any = None


def _signal_name(code: int | None) -> str:
    if code is None:
        return "unknown"
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit status {code}"


@dataclass
class DecodePool:
    """``n_workers`` isolated worker processes with per-video timeouts and crash recovery."""

    cfg: WorkerConfig
    n_workers: int = 1
    timeout_s: float = 300.0
    start_timeout_s: float = 120.0
    target: Any = None  # the worker's entry point (default worker_main; tests inject faults here)
    _workers: list[_Worker] = field(default_factory=list)
    _clock: float = 0.0  # advances only while the parent listens
    _last_tick: float = 0.0
    restarts: int = 0

    def __post_init__(self) -> None:
        if self.n_workers < 1:
            raise WorkerError("need at least one worker")
        self._ctx = mp.get_context("spawn")
        self._last_tick = time.monotonic()
        self._workers = [self._start(i) for i in range(self.n_workers)]

    def _start(self, wid: int) -> _Worker:
        task_r, task_w = self._ctx.Pipe(duplex=False)
        res_r, res_w = self._ctx.Pipe(duplex=False)
        p = self._ctx.Process(target=self.target or worker_main, args=(self.cfg, task_r, res_w), daemon=True, name=f"acfd-decode-{wid}")
        p.start()
        task_r.close()
        res_w.close()
        return _Worker(wid, p, task_w, res_r, last_heard=self._clock, started=self._clock)

    def _replace(self, w: _Worker) -> None:
        try:
            if w.proc.is_alive():
                w.proc.kill()
            w.proc.join(5)
        except Exception:
            pass
        for c in (w.tasks, w.conn):
            try:
                c.close()
            except OSError:
                pass
        self.restarts += 1
        self._workers[w.wid] = self._start(w.wid)

    def idle(self) -> list[int]:
        """Workers that can take a video now."""
        return [w.wid for w in self._workers if w.video is None]

    def submit(self, wid: int, video: int, path: str) -> None:
        w = self._workers[wid]
        assert w.video is None
        w.video = video
        w.last_heard = self._clock
        w.tasks.send((video, path))

    def pause_clock(self) -> None:
        """Call after the parent stopped reading for a while: that time is not the workers'."""
        self._last_tick = time.monotonic()

    def poll(self, timeout: float = 0.05) -> list[PoolEvent]:
        """Messages from workers, plus synthesized errors for crashed or hung ones."""
        now = time.monotonic()
        self._clock += now - self._last_tick
        self._last_tick = now
        events: list[PoolEvent] = []
        by_conn = {w.conn: w for w in self._workers}
        try:
            ready = wait(list(by_conn), timeout=timeout)
        except OSError:
            ready = []
        for conn in ready:
            w = by_conn[conn]
            # Drain what is there without blocking: several frames may be queued.
            while True:
                try:
                    kind, vid, payload = conn.recv()
                except Exception:  # EOF, a broken pipe, a garbled message: the worker is gone
                    self._crashed(w, events)
                    break
                w.last_heard = self._clock
                if kind == MSG_READY:
                    w.ready = True
                elif kind == MSG_ERROR and vid == -1:
                    raise WorkerError(f"decode worker could not start: {payload}")
                else:
                    events.append(PoolEvent(kind, vid, payload))
                    if kind in (MSG_DONE, MSG_ERROR):
                        w.video = None
                try:
                    more = conn.poll(0)
                except OSError:
                    more = False
                if not more:
                    break
        now = time.monotonic()
        self._clock += now - self._last_tick
        self._last_tick = now
        for w in list(self._workers):
            if self._workers[w.wid] is not w:
                continue
            if not w.proc.is_alive() and not w.conn.poll(0):
                self._crashed(w, events)
            elif w.ready and w.video is not None and self._clock - w.last_heard > self.timeout_s:
                events.append(PoolEvent(MSG_ERROR, w.video, f"decoding timed out: no progress for {self.timeout_s:g} s (worker killed)"))
                w.video = None
                self._replace(w)
            elif not w.ready and self._clock - w.started > self.start_timeout_s:
                raise WorkerError(f"decode worker did not start within {self.start_timeout_s:g} s")
        return events

    def _crashed(self, w: _Worker, events: list[PoolEvent]) -> None:
        if self._workers[w.wid] is not w:
            return
        w.proc.join(1)
        code = w.proc.exitcode
        if not w.ready:
            # It died before it could read a task: never the fault of a file (which would then be stored
            # as an error and skipped by every later run), but of the settings or the machine.
            limit = self.cfg.memory_limit_mb
            hint = f"; --worker-memory {limit} MB may be too small for it" if limit else ""
            raise WorkerError(f"decode worker died while starting ({_signal_name(code)}){hint}")
        if w.video is not None:
            events.append(
                PoolEvent(MSG_ERROR, w.video, f"decoder crashed ({_signal_name(code)}); the worker was restarted")
            )
            w.video = None
        self._replace(w)

    def close(self) -> None:
        """Stop every worker (politely, then by force)."""
        for w in self._workers:
            try:
                w.tasks.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + 5
        for w in self._workers:
            w.proc.join(max(0.0, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(1)
            for c in (w.tasks, w.conn):
                try:
                    c.close()
                except OSError:
                    pass
        self._workers = []

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
