"""Isolated decode + face workers: native decoder crashes, hangs and runaway memory become error rows.

Each worker is a separate process (a new interpreter, not a fork: no inherited threads or onnxruntime
state; it imports the frames stage and its libraries, never the CLI, the store or the model's runtime)
that owns a decoder and a face detector and handles one video at a time: decode the sampled frames, detect every
face, track identities, crop each face the training way, and send per-frame results back on its own
pipe. The parent (:class:`DecodePool`) watches every worker:

- a worker that dies (segfault, abort, the kernel's OOM killer, its own memory limit) is reported as a
  crash for the video it had, and replaced;
- a worker that sends nothing for ``timeout_s`` seconds of the parent listening is killed (a hang) and
  replaced; time the parent spends not reading (back-pressure) is not counted against it.

The work itself is the frames stage (:func:`acfd.scanner.frames.frames_with_faces`); a worker only
runs it and sends its typed events (:class:`WorkerMessage`). :class:`InProcessPool` runs the same stage
in the scanning process, without isolation (``--workers 0``).

Workers are long-lived, so the cost of isolation is one process start per worker per scan plus the
pickled crops (about 270 kB per face at 299 px): negligible at 1 frame/s. A scan starts its workers
first, so that their start (MediaPipe's import, the detector, the decoder's library and dlib's models,
about a second of one core) overlaps the loading of its model (:class:`acfd.scanner.pipeline.Scanner`).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from . import timeline
from .decode import DecodeError, _one_line
from .frames import Decoded, Detector, Failed, FramesConfig, VideoEvent, frames_with_faces


class WorkerError(DecodeError):
    """A worker could not start (bad configuration, detector model missing)."""


@dataclass(frozen=True)
class WorkerConfig:
    """What every worker needs: the frames stage's settings, and the process's own limits."""

    frames: FramesConfig
    memory_limit_mb: int | None = None  # RLIMIT_AS of each worker; None = no limit
    nice: int = 10  # niceness added in the worker: the engine gets the cores it shares with decoding
    quiet_native_logs: bool = True


@dataclass(frozen=True)
class Ready:
    """The worker started (its detector loaded) and takes videos."""


@dataclass(frozen=True)
class StartFailed:
    """The worker cannot work at all (a broken installation): the scan stops, no video is to blame."""

    error: str


@dataclass(frozen=True)
class WorkerMessage:
    """What goes up a worker's pipe, and what :meth:`DecodePool.poll` returns: an event of one video
    (``video`` as handed out), or the worker's own news (``video`` -1)."""

    video: int
    event: VideoEvent | Ready | StartFailed


def failure(cfg: WorkerConfig, e: Exception) -> Failed:
    """A video's failure as its error row's line."""
    # Under an address-space limit, a decoder that cannot start its threads fails like a bad file: say
    # that the setting may be the cause (the resume key holds the setting, so a run with a larger
    # limit tries the file again).
    limit = cfg.memory_limit_mb
    limit_note = f" (under --worker-memory {limit} MB: the limit may be the cause)" if limit else ""
    if isinstance(e, DecodeError):
        return Failed(f"{e}{limit_note}")
    if isinstance(e, MemoryError):
        return Failed(f"out of memory while decoding (worker limit {limit} MB)")
    return Failed(f"{e.__class__.__name__}: {_one_line(e)}{limit_note}")  # any other library failure


def video_events(cfg: WorkerConfig, detector: Detector, target: str) -> Iterator[VideoEvent]:
    """The frames stage on one video, its failure as a last :class:`Failed` event (one line for the
    error row). A broken face-recognition model is not the file's fault: it is raised."""
    from .identity import IdentityModelError  # cv2 and dlib: only where frames are decoded

    try:
        yield from frames_with_faces(cfg.frames, detector, target)
    except IdentityModelError:
        raise
    except Exception as e:
        yield failure(cfg, e)


def _process_video(cfg: WorkerConfig, detector: Detector, vid: int, target: str, conn: Connection) -> None:
    """Send one video's events up the pipe as they come (the parent scores frames while later ones decode)."""
    for ev in video_events(cfg, detector, target):
        conn.send(WorkerMessage(vid, ev))


def _detector(cfg: WorkerConfig) -> Any:
    """The face detector, after checking that face recognition is installed (it loads on the first
    face; a broken installation fails here, once). Raises :class:`WorkerError`."""
    from .faces import FaceDetector
    from .identity import check_installed

    try:
        check_installed()
    except Exception as e:
        raise WorkerError(f"face recognition: {_one_line(e)}") from e
    f = cfg.frames
    try:
        return FaceDetector(f.detector_model, f.min_face_score, f.detect_max_side)  # type: ignore[arg-type]
    except Exception as e:
        raise WorkerError(f"face detector: {_one_line(e)}") from e


def _warm_up(cfg: WorkerConfig) -> None:
    """Load now what the first video would load (the decoder's library, dlib's face-recognition models:
    about 0.6 s): a worker starts while its scan loads the model, and would otherwise wait for its first
    video idle and load them after. A failure here is left to that video to meet and report, as before."""
    try:
        import av  # noqa: F401 - PyAV reads every video's facts

        from .decode import decoder_available, decord_first
        from .identity import embedder

        f = cfg.frames
        # otherwise the few files decord still gets (a container without an index) import it when they
        # come: 0.4 s of CPU not spent at every start
        if decord_first(f.decoder, f.sampling, f.gpu_decode):
            decoder_available("decord")  # imports it
        embedder()
    except Exception:
        pass


def worker_main(cfg: WorkerConfig, tasks: Connection, conn: Connection) -> None:
    """Entry point of a worker process: handle (video_id, target) tasks until None arrives."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    timeline.mark("worker_main")
    # MediaPipe/TFLite/absl log every model load to stderr, over the progress bar; errors still show.
    # Their native loggers ignore the usual switches, so the worker's native stderr goes to /dev/null;
    # failures still reach the parent as messages, crashes as exit signals.
    if cfg.quiet_native_logs:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    if cfg.memory_limit_mb:
        import resource

        limit = cfg.memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        detector = _detector(cfg)
    except WorkerError as e:
        conn.send(WorkerMessage(-1, StartFailed(str(e))))
        return
    _warm_up(cfg)
    timeline.mark("worker_loaded")
    if cfg.nice:
        # Where decode workers and the engine share CPU cores, the engine should win them: ONNX Runtime's
        # threads wait for each other at every layer, so a descheduled thread stalls them all. Only from
        # here: the start (MediaPipe's import, the detector) runs while the scan loads its model, and
        # both are what the first batch waits for.
        os.nice(cfg.nice)
    conn.send(WorkerMessage(-1, Ready()))
    try:
        _serve(cfg, detector, tasks, conn)
    finally:
        detector.close()
    # Done: leave without the interpreter's teardown (unloading MediaPipe, TFLite, dlib and OpenCV took
    # 0.3-0.5 s, which a scan's end waited for); nothing of the worker's needs it, its pipes are flushed.
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


def _serve(cfg: WorkerConfig, detector: Any, tasks: Connection, conn: Connection) -> None:
    from .identity import IdentityModelError

    while True:
        try:
            task = tasks.recv()
        except EOFError:
            return
        if task is None:
            return
        if isinstance(task, FramesConfig):  # the settings of the videos from now on (DecodePool.configure)
            cfg = dataclasses.replace(cfg, frames=task)
            continue
        vid, target = task
        try:
            _process_video(cfg, detector, vid, target, conn)
        except IdentityModelError as e:  # the model, not the file: no error row per video, stop the scan
            conn.send(WorkerMessage(-1, StartFailed(f"face recognition: {_one_line(e)}")))
            return
        except (BrokenPipeError, EOFError):
            return  # the parent is gone
        except Exception as e:  # outside the stage (e.g. a frame too large to send): still this video's
            conn.send(WorkerMessage(vid, failure(cfg, e)))


class InProcessPool:
    """The frames stage in the scanning process itself (``--workers 0``): no process to start, and no
    isolation: a decoder that crashes takes the scan with it, and a hang is not timed out. For
    debugging (a breakpoint in the stage) and for tests of the scheduling; the same interface as
    :class:`DecodePool`, one video at a time, one event per :meth:`poll`."""

    def __init__(self, cfg: WorkerConfig, detector: Detector | None = None) -> None:
        self.cfg = cfg
        self._own = detector is None
        self._detector: Any = _detector(cfg) if detector is None else detector
        self._video: int | None = None
        self._events: Iterator[VideoEvent] | None = None

    def idle(self) -> list[int]:
        return [0] if self._video is None else []

    def submit(self, wid: int, video: int, target: str) -> None:
        assert self._video is None and wid == 0
        self._video, self._events = video, video_events(self.cfg, self._detector, target)

    def pause_clock(self) -> None:
        """Nothing to do: no timeouts here."""

    def poll(self, timeout: float = 0.0) -> list[WorkerMessage]:
        from .identity import IdentityModelError

        if self._video is None or self._events is None:
            time.sleep(timeout)  # nothing to decode: wait as a pool would, not spin against the engine
            return []
        try:
            ev = next(self._events)
        except IdentityModelError as e:
            raise WorkerError(f"face recognition: {_one_line(e)}") from e
        msg = WorkerMessage(self._video, ev)
        if isinstance(ev, (Decoded, Failed)):
            self._video, self._events = None, None
        return [msg]

    def close(self) -> None:
        if self._own:
            self._detector.close()


class _Spawned:
    """One worker process: a new interpreter that runs ``target(cfg, tasks, conn)`` over two pipes, with the
    part of :class:`multiprocessing.Process` that :class:`DecodePool` uses.

    Not multiprocessing's ``spawn``: that also runs the parent's main script again in the child (so that
    what it defines can be unpickled), and for ``acfd-scan`` that script is the CLI. A worker imports this
    module, the frames stage and its libraries, and the module of ``target`` (``sys.path`` is the parent's).
    """

    def __init__(self, target: Any, cfg: WorkerConfig) -> None:
        task_r, task_w = os.pipe()
        res_r, res_w = os.pipe()
        code = "import sys; from acfd.scanner.worker import _spawned_main; _spawned_main(int(sys.argv[1]), int(sys.argv[2]))"
        flags = subprocess._args_from_interpreter_flags()  # -X, -O ... as multiprocessing passes them on
        try:
            self._popen = subprocess.Popen([sys.executable, *flags, "-c", code, str(task_r), str(res_w)],
                                           pass_fds=(task_r, res_w), stdin=subprocess.DEVNULL)
        except BaseException:
            for fd in (task_w, res_r):
                os.close(fd)
            raise
        finally:
            os.close(task_r)
            os.close(res_w)
        self.tasks = Connection(task_w, readable=False)
        self.conn = Connection(res_r, writable=False)
        try:
            self.tasks.send(list(sys.path))  # first, so that the next message's target can be found
            self.tasks.send((target, cfg))
        except OSError:
            pass  # it died at once: DecodePool.poll says so, as for a worker that dies while starting

    def is_alive(self) -> bool:
        return self._popen.poll() is None

    def kill(self) -> None:
        if self._popen.poll() is None:
            self._popen.kill()

    def join(self, timeout: float | None = None) -> None:
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    @property
    def exitcode(self) -> int | None:
        """As multiprocessing's: the exit status, minus the signal number when a signal ended it."""
        return self._popen.poll()


def _spawned_main(task_fd: int, result_fd: int) -> None:
    """The child's side of :class:`_Spawned`."""
    tasks = Connection(task_fd, writable=False)
    conn = Connection(result_fd, readable=False)
    sys.path[:] = tasks.recv()
    target, cfg = tasks.recv()
    target(cfg, tasks, conn)


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


def _detector_settings(f: FramesConfig) -> tuple[object, ...]:
    return f.detector_model, f.min_face_score, f.detect_max_side


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
        self._last_tick = time.monotonic()
        self._workers = [self._start(i) for i in range(self.n_workers)]

    def _start(self, wid: int) -> _Worker:
        timeline.mark("worker_spawn")
        p = _Spawned(self.target or worker_main, self.cfg)
        return _Worker(wid, p, p.tasks, p.conn, last_heard=self._clock, started=self._clock)

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

    def configure(self, frames: FramesConfig) -> None:
        """The frames settings of the videos submitted from now on, sent to every worker (a replacement
        starts with them). A scan starts its workers before its model is loaded and gives them the model's
        crop size here; the detector's settings cannot change (each worker loaded its detector at start)."""
        old = self.cfg.frames
        if frames == old:
            return
        if _detector_settings(frames) != _detector_settings(old):
            raise WorkerError("the face detector's settings of running workers cannot change")
        self.cfg = dataclasses.replace(self.cfg, frames=frames)
        for w in self._workers:
            try:
                w.tasks.send(frames)
            except OSError:
                pass  # it died: poll() reports it and its replacement starts with these settings

    def idle(self) -> list[int]:
        """Workers that can take a video now."""
        return [w.wid for w in self._workers if w.video is None]

    def submit(self, wid: int, video: int, target: str) -> None:
        w = self._workers[wid]
        assert w.video is None
        w.video = video
        w.last_heard = self._clock
        w.tasks.send((video, target))

    def pause_clock(self) -> None:
        """Call after the parent stopped reading for a while: that time is not the workers'."""
        self._last_tick = time.monotonic()

    def poll(self, timeout: float = 0.05) -> list[WorkerMessage]:
        """Messages from workers, plus synthesized errors for crashed or hung ones."""
        now = time.monotonic()
        self._clock += now - self._last_tick
        self._last_tick = now
        events: list[WorkerMessage] = []
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
                    msg = conn.recv()
                    if not isinstance(msg, WorkerMessage):
                        raise TypeError(f"not a worker message: {type(msg).__name__}")
                except Exception:  # EOF, a broken pipe, a garbled message: the worker is gone
                    self._crashed(w, events)
                    break
                w.last_heard = self._clock
                ev = msg.event
                if isinstance(ev, Ready):
                    w.ready = True
                    timeline.mark("worker_ready")
                elif isinstance(ev, StartFailed):
                    raise WorkerError(f"decode worker could not start: {ev.error}")
                else:
                    events.append(msg)
                    if isinstance(ev, (Decoded, Failed)):
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
                events.append(WorkerMessage(
                    w.video, Failed(f"decoding timed out: no progress for {self.timeout_s:g} s (worker killed)")))
                w.video = None
                self._replace(w)
            elif not w.ready and self._clock - w.started > self.start_timeout_s:
                raise WorkerError(f"decode worker did not start within {self.start_timeout_s:g} s")
        return events

    def _crashed(self, w: _Worker, events: list[WorkerMessage]) -> None:
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
                WorkerMessage(w.video, Failed(f"decoder crashed ({_signal_name(code)}); the worker was restarted"))
            )
            w.video = None
        self._replace(w)

    def close(self) -> None:
        """Stop every worker (politely, then by force). One still starting is killed at once: it holds
        nothing yet, and would otherwise finish loading its detector only to read the request to stop."""
        for w in self._workers:
            if not w.ready and w.proc.is_alive():
                w.proc.kill()
                continue
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
