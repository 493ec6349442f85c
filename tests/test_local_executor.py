"""The local executor's scheduling, with no worker process: a scripted pool plays the frames stage.

The pool hands out each video's events (:mod:`acfd.scanner.stages`) a few per poll, the model is a
numpy function of the crop, so every score, verdict, kept crop and the order of results is known.
One test at the end runs the real frames stage in-process (``--workers 0``) against the process pool.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from acfd.scanner.aggregate import Scale
from acfd.scanner.config import ScanError
from acfd.scanner.decode import Sampling, VideoInfo
from acfd.scanner.discover import Candidate
from acfd.scanner.executor import ExecutorSettings
from acfd.scanner.faces import Face
from acfd.scanner.local import LocalExecutor
from acfd.scanner.results import Unchanged, VideoResult
from acfd.scanner.stages import Decoded, Failed, FrameFaces, FramesConfig, Opened, VerdictPolicy, ready_result
from acfd.scanner.worker import WorkerMessage
from acfd.schemas import db

S = 8  # crop side
SCALE = Scale(0.0, 10.0, 5.0)  # threshold 5: a crop of value v scores v (see Model)


def crop(v: int) -> np.ndarray:
    return np.full((S, S, 3), v, np.uint8)


def face(k: int) -> Face:
    return Face(10.0 * k, 0.0, 10.0 * k + 8, 8.0, 0.9, ())


def info(name: str) -> VideoInfo:
    return VideoInfo("mp4", "h264", 2.0, 10.0, 20, 64, 48, 0, name)


def frame(i: int, values: list[int], ids: list[int]) -> FrameFaces:
    crops = np.stack([crop(v) for v in values]) if values else None
    return FrameFaces(i, i * 0.5, tuple(face(k) for k in range(len(values))), tuple(ids), crops, 0.01, 0.02)


def video(values_per_frame: list[list[int]], ids: list[list[int]] | None = None, mapping: dict[int, int] | None = None,
          name: str = "decord") -> list:
    """A video's events: opened, one frame per entry (crop values), decoded with ``mapping``."""
    ids = ids or [[k for k in range(len(v))] for v in values_per_frame]
    evs: list = [Opened(info(name))]
    evs += [frame(i, v, d) for i, (v, d) in enumerate(zip(values_per_frame, ids, strict=True))]
    evs.append(Decoded(len(values_per_frame), 0.1, 0.2, name, mapping or {}))
    return evs


@dataclass
class ScriptedPool:
    """``n`` workers; a video's events come out ``per_poll`` at a time, from every busy worker."""

    scripts: dict[str, list]  # target -> its events
    n: int = 1
    per_poll: int = 2
    busy: dict[int, tuple[int, deque]] = field(default_factory=dict)
    submitted: list[str] = field(default_factory=list)
    polls: int = 0
    paused: int = 0
    closed: bool = False

    def idle(self) -> list[int]:
        return [w for w in range(self.n) if w not in self.busy]

    def submit(self, wid: int, video: int, target: str) -> None:
        self.submitted.append(Path(target).name)
        self.busy[wid] = (video, deque(self.scripts[Path(target).name]))

    def poll(self, timeout: float = 0.05) -> list[WorkerMessage]:
        self.polls += 1
        out = []
        for wid, (vid, evs) in list(self.busy.items()):
            for _ in range(self.per_poll):
                if not evs:
                    break
                ev = evs.popleft()
                out.append(WorkerMessage(vid, ev))
                if isinstance(ev, (Decoded, Failed)):
                    del self.busy[wid]
                    break
        return out

    def pause_clock(self) -> None:
        self.paused += 1

    def close(self) -> None:
        self.closed = True


@dataclass
class Pred:
    score: np.ndarray
    attention: np.ndarray | None


class Model:
    """Score = the crop's mean value; attention = value/255 on a 2x2 map; records each batch."""

    def __init__(self, delay: threading.Event | None = None, fail_after: int | None = None, short: bool = False):
        self.batches: list[list[int]] = []
        self.delay = delay
        self.fail_after = fail_after
        self.short = short

    def infer(self, crops: np.ndarray) -> Pred:
        if self.delay is not None:
            self.delay.wait(5)
        if self.fail_after is not None and len(self.batches) >= self.fail_after:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        values = crops.reshape(len(crops), -1).mean(axis=1)
        self.batches.append([int(v) for v in values])
        if self.short:
            values = values[:-1]
        att = np.repeat(values[:, None, None] / 255.0, 4, axis=1).reshape(-1, 2, 2)
        return Pred(values.astype(np.float32), att.astype(np.float32))


def settings(**kw: object) -> ExecutorSettings:
    base = dict(
        frames=FramesConfig(Sampling(fps=2), S, 1.3), policy=VerdictPolicy("mean", SCALE, min_support=1),
        keep=2, batch_size=4, n_workers=1, timeout_s=60.0, max_pending=512,
    )
    base.update(kw)
    return ExecutorSettings(**base)  # type: ignore[arg-type]


def cand(tmp_path: Path, name: str) -> Candidate:
    p = tmp_path / name
    p.write_bytes(name.encode() * 10)
    return Candidate(str(p), size=p.stat().st_size, mtime_ns=p.stat().st_mtime_ns)


def run(executor: LocalExecutor, items: list) -> list:
    return list(executor.run(items))


def test_scores_verdicts_and_kept_crops_follow_the_events(tmp_path: Path) -> None:
    scripts = {
        # two tracklets that the decoder's map joins into one person (0), then a second person (1)
        "a.mp4": video([[9, 1], [8, 2], [7]], ids=[[0, 1], [2, 1], [0]], mapping={0: 0, 1: 1, 2: 0}),
        "b.mp4": video([[], []]),  # no face
    }
    pools: list[ScriptedPool] = []

    def factory(n: int) -> ScriptedPool:
        pools.append(ScriptedPool(scripts, n))
        return pools[-1]

    model = Model()
    ex = LocalExecutor(model, settings(), pool_factory=factory)
    a, b = cand(tmp_path, "a.mp4"), cand(tmp_path, "b.mp4")
    got = run(ex, [a, b])
    # each once; b (no face, nothing to score) may finish before a's scores are back
    ra, rb = sorted(got, key=lambda r: r.candidate.path)
    assert (ra.candidate, rb.candidate) == (a, b)
    assert ra.status == db.STATUS_OK and ra.n_frames == 3
    assert [(f.frame_index, f.identity, f.score) for f in ra.faces] == [
        (0, 0, 9.0), (0, 1, 1.0), (1, 0, 8.0), (1, 1, 2.0), (2, 0, 7.0)]
    v = ra.verdict
    assert v is not None and v.label == "fake" and v.score == pytest.approx(8.0)  # person 0: mean(9, 8, 7)
    assert [(i.identity, i.score, i.label, i.n_faces) for i in v.identities] == [
        (0, pytest.approx(8.0), "fake", 3), (1, pytest.approx(1.5), "real", 2)]
    # keep=2 per person after the merge: person 0's two highest (faces 0 and 2), person 1's both
    assert [c.face_index for c in ra.crops] == [0, 1, 2, 3]
    assert [float(c.attention[0, 0]) for c in ra.crops] == pytest.approx([9 / 255, 1 / 255, 8 / 255, 2 / 255])
    assert all(c.jpeg[:2] == b"\xff\xd8" for c in ra.crops)
    assert ra.info is not None and ra.info.decoder == "decord" and ra.content_hash and ra.content_hash.startswith("ht1:")
    assert ra.timings.decode == 0.1 and ra.timings.detect == 0.2 and ra.timings.infer > 0
    assert rb.status == db.STATUS_NO_FACE and rb.verdict is not None and rb.verdict.label == "no_face"
    assert len(pools) == 1 and pools[0].n == 1 and pools[0].closed
    assert sorted(x for b in model.batches for x in b) == [1, 2, 7, 8, 9]
    assert ex.infer_busy_s > 0


def test_known_results_pass_through_in_place_and_workers_start_lazily(tmp_path: Path) -> None:
    made: list[int] = []

    def factory(n: int) -> ScriptedPool:
        made.append(n)
        return ScriptedPool({"c.mp4": video([[3]])}, n)

    ex = LocalExecutor(Model(), settings(n_workers=4), pool_factory=factory)
    bad = ready_result(Candidate(str(tmp_path / "gone.mp4"), error="no such file or directory"), db.STATUS_ERROR,
                       "no such file or directory")
    same = Unchanged(cand(tmp_path, "old.mp4"), db.STATUS_OK, True, 7.5)
    assert run(ex, [bad, same]) == [bad, same] and made == []  # nothing to decode: no worker started
    c = cand(tmp_path, "c.mp4")
    got = run(ex, [bad, c, same])
    # known results are not held back behind a decode; one video to decode: one worker, not four
    assert got[:2] == [bad, same] and got[2].candidate == c and made == [1]
    assert bad.status == db.STATUS_ERROR and bad.faces == [] and bad.content_hash is None


def test_batches_mix_videos_and_results_come_as_videos_finish(tmp_path: Path) -> None:
    scripts = {"long.mp4": video([[1]] * 6), "short.mp4": video([[6]])}
    pool = ScriptedPool(scripts, n=2, per_poll=1)
    model = Model()
    ex = LocalExecutor(model, settings(n_workers=2, batch_size=8), pool_factory=lambda n: pool)
    got = run(ex, [cand(tmp_path, "long.mp4"), cand(tmp_path, "short.mp4")])
    assert [Path(r.candidate.path).name for r in got] == ["short.mp4", "long.mp4"]  # finished first, out first
    assert [f.score for f in got[1].faces] == [1.0] * 6
    assert pool.submitted == ["long.mp4", "short.mp4"]


def test_back_pressure_stops_reading_workers_until_scores_come(tmp_path: Path) -> None:
    gate = threading.Event()
    pool = ScriptedPool({"a.mp4": video([[2]] * 8)}, per_poll=8)
    ex = LocalExecutor(Model(delay=gate), settings(max_pending=3, batch_size=1), pool_factory=lambda n: pool)
    stream = ex.run([cand(tmp_path, "a.mp4")])
    t = threading.Timer(1.0, gate.set)
    t.start()
    try:
        (r,) = list(stream)
    finally:
        t.cancel()
        gate.set()
    # the first poll handed out 8 crops (>= 3 pending): until the model answered, the pool was not read
    # and its timeout clock was paused instead
    assert pool.paused >= 3 and r.status == db.STATUS_OK and [f.score for f in r.faces] == [2.0] * 8


def test_a_failed_video_keeps_no_faces_and_late_scores_are_dropped(tmp_path: Path) -> None:
    evs = video([[9], [9]])[:2] + [Failed("decoder crashed (SIGSEGV); the worker was restarted")]
    pool = ScriptedPool({"bad.mp4": evs, "ok.mp4": video([[4]])}, per_poll=3)
    ex = LocalExecutor(Model(), settings(), pool_factory=lambda n: pool)
    bad, ok = cand(tmp_path, "bad.mp4"), cand(tmp_path, "ok.mp4")
    got = run(ex, [bad, ok])
    assert [(r.candidate, r.status) for r in got] == [(bad, db.STATUS_ERROR), (ok, db.STATUS_OK)]
    assert got[0].error == "decoder crashed (SIGSEGV); the worker was restarted"
    assert got[0].faces == [] and got[0].verdict is None and got[0].crops == []
    assert got[1].verdict is not None and got[1].verdict.score == pytest.approx(4.0)


@pytest.mark.parametrize("model, message", [
    (Model(fail_after=0), "the model failed: RuntimeError: CUDA error: an illegal memory access was encountered"),
    (Model(short=True), "model returned 0 scores for 1 crops"),
])
def test_a_model_failure_stops_the_scan_and_closes_the_pool(tmp_path: Path, model: Model, message: str) -> None:
    pool = ScriptedPool({"a.mp4": video([[1], [2]])}, per_poll=1)
    ex = LocalExecutor(model, settings(batch_size=1), pool_factory=lambda n: pool)
    with pytest.raises(ScanError) as e:
        run(ex, [cand(tmp_path, "a.mp4")])
    assert str(e.value) == message and pool.closed


def test_closing_the_stream_early_stops_the_workers(tmp_path: Path) -> None:
    scripts = {f"{k}.mp4": video([[k]]) for k in range(5)}
    pool = ScriptedPool(scripts)
    ex = LocalExecutor(Model(), settings(), pool_factory=lambda n: pool)
    stream = ex.run([cand(tmp_path, f"{k}.mp4") for k in range(5)])
    first = next(stream)
    stream.close()
    assert isinstance(first, VideoResult) and pool.closed
    assert not any(t.name == "acfd-engine" and t.is_alive() for t in threading.enumerate())


def test_in_process_workers_give_the_process_pool_results(tmp_path: Path, models: dict) -> None:
    """The real frames stage, once in worker processes and once in this process: the same rows."""
    from acfd.engine.runtime import load
    from acfd.scanner.pipeline import ScanConfig, Scanner

    from tests import scan_helpers as H

    (tmp_path / "v").mkdir()
    H.face_video(tmp_path / "v" / "face.mp4", n=6)
    H.two_face_video(tmp_path / "v" / "two.mp4")
    out = {}
    for workers in (0, 1):
        cfg = ScanConfig(paths=(str(tmp_path / "v"),), db=str(tmp_path / f"w{workers}.sqlite"), workers=workers, fps=5)
        s = Scanner(cfg, load(models["fake"])).run()
        assert s.n_ok == 2 and s.n_faces >= 8
        out[workers] = H.rows(tmp_path / f"w{workers}.sqlite",
                              "SELECT v.path, d.frame_index, d.identity, d.x0, d.score FROM detections d "
                              "JOIN videos v ON v.id = d.video_id ORDER BY v.path, d.frame_index, d.x0")
    assert out[0] == out[1]


def test_a_time_window_is_judged_on_its_own_faces() -> None:
    from acfd.scanner.results import FaceRecord
    from acfd.scanner.stages import window_verdict

    # person 0 real (score 1) all along; person 1 fake (score 9) from 4 s on
    faces = [FaceRecord(t, float(t), face(0), 0, 1.0) for t in range(10)]
    faces += [FaceRecord(t, float(t), face(1), 1, 9.0) for t in range(4, 10)]
    policy = VerdictPolicy("mean", SCALE, min_support=2)
    early = window_verdict(faces, 0.0, 4.0, policy)
    assert (early.label, early.score, early.n_faces, early.t_first, early.t_last) == ("real", 1.0, 4, 0.0, 3.0)
    late = window_verdict(faces, 4.0, 8.0, policy)
    assert (late.label, late.score, late.n_faces, [i.identity for i in late.identities]) == ("fake", 9.0, 8, [0, 1])
    assert window_verdict(faces, 20.0, 30.0, policy).label == "no_face"
    with pytest.raises(ScanError, match="must end after it starts"):
        window_verdict(faces, 5.0, 5.0, policy)
    with pytest.raises(ScanError, match="once all its faces are scored"):
        window_verdict([FaceRecord(0, 0.5, face(0), 0)], 0.0, 1.0, policy)


def test_idle_source_does_not_hold_back_a_finished_video(tmp_path: Path) -> None:
    """IDLE in the items (a list still being read): the video in flight is finished and handed out while
    the source has nothing; the next candidate, once it comes, is scanned by the same pool. A source still
    being read starts every worker (more may come)."""
    from acfd.scanner.discover import IDLE

    scripts = {"a.mp4": video([[9], [8]]), "b.mp4": video([[1]])}
    pools: list[ScriptedPool] = []

    def factory(n: int) -> ScriptedPool:
        pools.append(ScriptedPool(scripts, n))
        return pools[-1]

    got: list[str] = []
    waited = False

    def items():  # noqa: ANN202
        nonlocal waited
        yield cand(tmp_path, "a.mp4")
        deadline = time.monotonic() + 20
        while not got and time.monotonic() < deadline:  # the next path comes only once a's result is out
            time.sleep(0.01)  # as the walk waits before it says IDLE
            yield IDLE
        waited = bool(got)
        yield cand(tmp_path, "b.mp4")

    ex = LocalExecutor(Model(), settings(n_workers=2), pool_factory=factory)
    for ev in ex.run(items()):
        got.append(Path(ev.candidate.path).name)
    assert got == ["a.mp4", "b.mp4"] and waited
    assert len(pools) == 1 and pools[0].n == 2 and pools[0].submitted == ["a.mp4", "b.mp4"]


def test_a_finished_source_starts_only_the_workers_it_needs(tmp_path: Path) -> None:
    pools: list[ScriptedPool] = []

    def factory(n: int) -> ScriptedPool:
        pools.append(ScriptedPool({"a.mp4": video([[9]])}, n))
        return pools[-1]

    res = run(LocalExecutor(Model(), settings(n_workers=4), pool_factory=factory), [cand(tmp_path, "a.mp4")])
    assert [Path(r.candidate.path).name for r in res] == ["a.mp4"] and pools[0].n == 1
