"""The local executor: the stages on this machine, with isolated decode workers and one engine thread.

Three kinds of workers run at once, joined by bounded buffers:

- decode workers (processes, :class:`~acfd.scanner.worker.DecodePool`): the frames stage, one video
  per worker at a time; crashes and hangs become error rows;
- the engine thread (:class:`_Engine`): takes crops from any videos, fills batches of ``batch_size``
  and scores them (:func:`~acfd.scanner.stages.score_batch`; onnxruntime and torch release the GIL);
- the generator's own thread: hands out videos as workers free up (pulling items lazily), routes
  worker events and scores into each video's :class:`~acfd.scanner.stages.VideoWork`, and yields a
  video's result once it is complete (:func:`~acfd.scanner.stages.finish_video`).

When the engine falls behind (``max_pending`` crops waiting), the generator stops reading from the
workers (back-pressure); they then block on their pipes, so memory stays bounded. The pool is anything
with the :class:`Pool` interface, so the scheduling is tested with the frames stage run in-process.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import numpy as np
from acfd.schemas.errors import AcfdError

from . import timeline
from .config import ScanError
from .discover import Candidate, Idle
from .executor import Executor, ExecutorSettings
from .results import ScanEvent
from .stages import FaceCrop, FrameFaces, Model, Scores, VideoWork, finish_video, score_batch
from .worker import DecodePool, InProcessPool, WorkerConfig, WorkerMessage


class Pool(Protocol):
    """What the local executor needs of its decode workers (:class:`DecodePool`, :class:`InProcessPool`)."""

    def idle(self) -> list[int]: ...

    def submit(self, wid: int, video: int, target: str) -> None: ...

    def poll(self, timeout: float = 0.05) -> list[WorkerMessage]: ...

    def pause_clock(self) -> None: ...

    def close(self) -> None: ...


_Batch = tuple[list[FaceCrop], Scores, float]  # crops, their scores, seconds the model took


class _Engine(threading.Thread):
    """Batches crops from any videos and scores them; results (or the model's failure) go to ``out``."""

    def __init__(self, model: Model, batch_size: int) -> None:
        super().__init__(name="acfd-engine", daemon=True)
        self.model = model
        self.batch_size = batch_size
        self.inq: queue.Queue[FaceCrop | None] = queue.Queue()
        self.out: queue.Queue[_Batch | BaseException] = queue.Queue()
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
                scores = score_batch(self.model, np.stack([it.crop for it in items]))
            except BaseException as e:  # a model failure stops the scan: it is not one video's fault
                self.out.put(e)
                return
            dt = time.perf_counter() - t0
            timeline.mark("first_batch")
            self.busy_s += dt
            self.batches += 1
            self.out.put((items, scores, dt))


_END = object()


class LocalExecutor(Executor):
    """The stages on this machine (see the module docstring). ``pool_factory(n)`` replaces the decode
    workers (tests); ``worker_target`` replaces the worker process's entry point (fault injection).
    ``started``: decode workers started ahead (a scan starts them before it loads its model, so that their
    start overlaps the load), taken by the first :meth:`run` and given its frames settings then."""

    def __init__(self, model: Model, settings: ExecutorSettings, pool_factory: Callable[[int], Pool] | None = None,
                 worker_target: Any = None, started: DecodePool | None = None) -> None:
        self.model = model
        self.settings = settings
        self.pool_factory = pool_factory
        self.worker_target = worker_target
        self.infer_busy_s = 0.0
        self._started = started

    def close(self) -> None:
        """Stop the workers started ahead if no run took them (a scan with nothing to decode)."""
        started, self._started = self._started, None
        if started is not None:
            started.close()

    def _pool(self, n: int) -> Pool:
        started, self._started = self._started, None
        if started is not None:
            started.configure(self.settings.frames)
            return started
        if self.pool_factory is not None:
            return self.pool_factory(n)
        s = self.settings
        wcfg = WorkerConfig(s.frames, s.memory_limit_mb)
        if s.n_workers == 0:
            return InProcessPool(wcfg)
        return DecodePool(wcfg, n, s.timeout_s, target=self.worker_target)

    def run(self, items: Iterable[Candidate | ScanEvent | Idle]) -> Iterator[ScanEvent]:
        try:
            yield from self._run(items)
        finally:
            self.close()

    def _run(self, items: Iterable[Candidate | ScanEvent | Idle]) -> Iterator[ScanEvent]:
        s = self.settings
        source = iter(items)
        jobs: dict[int, VideoWork] = {}  # videos handed to a worker, not yet finished
        todo: deque[Candidate] = deque()  # candidates pulled, not yet handed to a worker
        exhausted = False

        def pull(n: int) -> Iterator[ScanEvent]:
            """Pull items until ``n`` candidates wait (or none is left), passing known results on; on IDLE
            (the source has nothing yet) come back later when there is work to go on with."""
            nonlocal exhausted
            while not exhausted and len(todo) < n:
                x = next(source, _END)
                if x is _END:
                    exhausted = True
                elif isinstance(x, Idle):
                    if todo or jobs:
                        return
                elif isinstance(x, Candidate):
                    todo.append(x)
                else:
                    yield x  # type: ignore[misc]

        # Start only as many workers as there are videos to decode (up to n_workers): a resumed scan
        # with nothing left starts none, a one-video scan one; a source still being read (IDLE) all of
        # them, since more may come. (Workers started ahead are taken as they are, or stopped when nothing
        # is left to decode.)
        yield from pull(max(1, s.n_workers))
        if not todo:
            return
        timeline.mark("executor_start")
        pool = self._pool(min(max(1, s.n_workers), len(todo)) if exhausted else max(1, s.n_workers))
        eng = _Engine(self.model, s.batch_size)
        eng.start()
        next_id = 0
        n_pending = 0  # crops handed to the engine, not yet scored
        try:
            while todo or jobs or not exhausted:
                for wid in pool.idle():
                    if not todo:
                        yield from pull(1)
                    if not todo:
                        break
                    c = todo.popleft()
                    jobs[next_id] = VideoWork(next_id, c, keep=s.keep)
                    pool.submit(wid, next_id, c.target)
                    next_id += 1
                finished: list[VideoWork] = []
                # Scores first: they free memory and may complete videos.
                wait_s = 0.0 if n_pending < s.max_pending else 0.2
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
                    crops, scores, dt = got
                    n_pending -= len(crops)
                    share = dt / len(crops)
                    for j, fc in enumerate(crops):
                        work = jobs.get(fc.video)
                        if work is None:
                            continue
                        att = None if scores.attention is None else scores.attention[j]
                        work.on_score(fc.face, fc.crop, float(scores.score[j]), att, share)
                        if work.complete:
                            finished.append(work)
                if n_pending >= s.max_pending:
                    pool.pause_clock()  # we were not listening to the workers: not their time
                else:
                    for msg in pool.poll(0.02 if not finished else 0.0):
                        work = jobs.get(msg.video)
                        if work is None:
                            continue
                        if isinstance(msg.event, FrameFaces):
                            timeline.mark("first_frame")
                        for fc in work.on_event(msg.event):  # type: ignore[arg-type]
                            n_pending += 1
                            eng.inq.put(fc)
                        if work.complete:
                            finished.append(work)
                for work in finished:
                    if jobs.pop(work.video, None) is None:
                        continue  # completed twice in one round (a score and then its failure)
                    yield finish_video(work, s.policy)
        finally:
            eng.inq.put(None)
            pool.close()
            eng.join(timeout=30)
            self.infer_busy_s = eng.busy_s
            timeline.mark("executor_closed")
