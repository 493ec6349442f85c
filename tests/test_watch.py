"""`acfd-scan watch`: live streams judged window by window.

Real streams: a thread encodes the astronaut's moving face in real time into a live HLS playlist with
PyAV (no ffmpeg CLI; 1-s segments, no #EXT-X-ENDLIST while it runs), watched as a file and over HTTP
(Python's http.server on 127.0.0.1, stopped and started again by the test). The tiny test models
(tests/scan_helpers.py) call every face fake (~15) or real (~1). The window, reconnect and clock rules
are also checked with a scripted pool (no decoder), where every time is known.
"""

from __future__ import annotations

import functools
import io
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from acfd.scanner.cli import main
from acfd.scanner.config import ScanError
from acfd.scanner.decode import VideoInfo
from acfd.scanner.faces import Face
from acfd.scanner.stages import Decoded, Failed, FrameFaces, Opened
from acfd.scanner.track import IoUTracker
from acfd.scanner.watch import Stop, WatchConfig, Watcher, WindowJsonlSink, parse_seconds, watch
from acfd.scanner.worker import WorkerMessage
from acfd.schemas.artifact import ArtifactMeta
from acfd.schemas.errors import AcfdError
from click.testing import CliRunner

from tests import scan_helpers as H
from tests.media import moving_face_frames

WINDOW_FIELDS = {"type", "source", "window_index", "label", "score", "threshold", "started_at", "ended_at", "start_s",
                 "end_s", "n_frames", "n_faces", "n_identities", "closed_by", "identities", "scan_id", "model_id",
                 "model_validation", "strategy"}


# -- a live HLS stream, written in real time --------------------------------------------------------------

class LiveHLS:
    """Encodes ``fps`` frames per second of a moving face, in real time, into ``folder/live.m3u8`` (PyAV's
    HLS muxer: 1-s segments, the last 6 listed). ``pause()`` stops writing (the stream stalls, its clock
    goes on where it stopped when ``resume()`` is called); ``stop()`` ends the thread (no ENDLIST)."""

    def __init__(self, folder: Path, fps: int = 10, size: tuple[int, int] = (180, 320)) -> None:
        self.folder = Path(folder)
        self.playlist = self.folder / "live.m3u8"
        self.fps, self.size = fps, size
        self.frames = moving_face_frames(20, size=size)
        self._stop, self._pause = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="live-hls")
        self.error: BaseException | None = None

    def _run(self) -> None:
        import av

        try:
            out = av.open(str(self.playlist), "w", format="hls", options={"hls_time": "1", "hls_list_size": "6"})
            s = out.add_stream("libx264", rate=self.fps)
            s.height, s.width = self.size
            s.pix_fmt = "yuv420p"
            s.options = {"g": str(self.fps), "preset": "ultrafast", "tune": "zerolatency"}
            t0, i = time.monotonic(), 0
            while not self._stop.is_set():
                if self._pause.is_set():
                    time.sleep(0.05)
                    t0 += 0.05
                    continue
                f = av.VideoFrame.from_ndarray(self.frames[i % len(self.frames)], format="rgb24")
                f.pts, f.time_base = i, Fraction(1, self.fps)
                for p in s.encode(f):
                    out.mux(p)
                i += 1
                wait = t0 + i / self.fps - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e

    def segments(self) -> int:
        """Segments written so far (the playlist lists the last 6)."""
        return len(list(self.folder.glob("live*.ts")))

    def start(self, min_segments: int = 2) -> LiveHLS:
        self._thread.start()
        deadline = time.monotonic() + 30
        while self.segments() < min_segments:
            assert self.error is None, self.error
            assert time.monotonic() < deadline, "the live playlist did not grow"
            time.sleep(0.1)
        return self

    def pause(self) -> None:
        self._pause.set()

    def resume(self) -> None:
        self._pause.clear()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


class Server:
    """http.server over a folder on 127.0.0.1, stopped and started again on the same port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = 0
        self.srv: ThreadingHTTPServer | None = None

    def start(self) -> Server:
        self.srv = ThreadingHTTPServer(("127.0.0.1", self.port), functools.partial(Quiet, directory=str(self.folder)))
        self.srv.daemon_threads = True
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.srv is not None:
            self.srv.shutdown()
            self.srv.server_close()
            self.srv = None


def db_rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        return c.execute(sql).fetchall()


def windows_of(db: Path, source: str | None = None) -> list[tuple]:
    where = "" if source is None else f" WHERE source = '{source}'"
    return db_rows(db, "SELECT window_index, start_s, end_s, n_frames, n_faces, n_identities, score, label, "
                       f"started_at, ended_at, threshold FROM windows{where} ORDER BY source, window_index")


def events_of(db: Path) -> list[tuple[str, str, str]]:
    return db_rows(db, "SELECT source, kind, message FROM stream_events ORDER BY id")


def check_grid(wins: list[tuple], window_s: float, fps: float) -> None:
    """Consecutive indexes; full windows span exactly window_s with window_s * fps frames; each window
    starts where the one before ended; the last one (cut by the stop) ends within its grid cell."""
    assert [w[0] for w in wins] == list(range(len(wins)))
    for a, b in zip(wins, wins[1:], strict=False):
        assert b[1] == pytest.approx(a[2]), (a, b)
    for w in wins[:-1]:
        assert w[2] - w[1] == pytest.approx(window_s) and w[3] == round(window_s * fps), w
    last = wins[-1]
    assert 0 < last[2] - last[1] <= window_s + 1e-9
    assert last[3] == pytest.approx((last[2] - last[1]) * fps)  # cut just after its last frame
    for w in wins:
        assert w[8] <= w[9], w  # started_at <= ended_at


# -- settings ----------------------------------------------------------------------------------------------

def test_parse_seconds():
    assert [parse_seconds(x) for x in ("10s", "2m", "1h", "90", "2.5", "1h30m", " 3S ", "1m30s")] == [
        10, 120, 3600, 90, 2.5, 5400, 3, 90]
    for bad in ("", "10x", "s", "-5", "0", "0s", "1e9999", "m10", "10 s 5"):
        with pytest.raises(ScanError, match="time|more than 0"):
            parse_seconds(bad, "--window")


def test_config_refuses_what_cannot_work(tmp_path):
    clip = tmp_path / "a.m3u8"
    clip.write_text("#EXTM3U\n")
    cases = [
        (dict(sources=()), "at least one source"),
        (dict(sources=(str(tmp_path / "missing.m3u8"),)), "missing.m3u8: no such file"),
        (dict(sources=(str(tmp_path),)), "is a folder"),
        (dict(sources=("ftp://example.org/live.m3u8",)), "unsupported scheme 'ftp'"),
        (dict(sources=(str(clip), str(tmp_path / "." / "a.m3u8"))), "given twice"),
        (dict(sources=(str(clip),), window_s=0.5, fps=1.0), "holds no sampled frame"),
        (dict(sources=(str(clip),), duration_s=0.0), "--duration"),
        (dict(sources=(str(clip),), reconnect=0), "--reconnect"),
        (dict(sources=(str(clip),), in_process=True, worker_memory_mb=8000), "--in-process"),
    ]
    for kw, msg in cases:
        with pytest.raises(AcfdError, match=msg) as e:
            WatchConfig(**kw)  # type: ignore[arg-type]
        assert "\n" not in str(e.value)
    # a password is never shown: the stored args hold the public URL
    cfg = WatchConfig(sources=("http://user:s3cret@127.0.0.1:9/live.m3u8",))
    assert cfg.as_args()["sources"] == ["http://127.0.0.1:9/live.m3u8"]
    assert "s3cret" not in json.dumps(cfg.as_args())


def test_defaults_come_from_the_scanner_table():
    """The options a watch shares with a scan default to acfd.scanner.config.DEFAULTS (its stall timeout is
    its own: a live feed is expected every segment)."""
    from acfd.scanner.cli_watch import watch_cmd
    from acfd.scanner.config import DEFAULTS
    from acfd.scanner.watch import WATCH_TIMEOUT_S

    opts = {p.name: p.default for p in watch_cmd.params}
    assert (opts["fps"], opts["device"], opts["detector_model"], opts["min_face_score"], opts["timeout_s"]) == (
        DEFAULTS.fps, DEFAULTS.device, DEFAULTS.detector, DEFAULTS.min_face_score, WATCH_TIMEOUT_S)
    cfg = WatchConfig(sources=(__file__,))
    assert (cfg.fps, cfg.device, cfg.detector_model, cfg.min_face_score, cfg.detect_max_side) == (
        DEFAULTS.fps, DEFAULTS.device, DEFAULTS.detector, DEFAULTS.min_face_score, DEFAULTS.detect_max_side)


def test_stream_tracker_memory_stays_bounded():
    """A tracker in stream mode keeps nothing per frame once read, and the same ids as a video's tracker."""
    rng = np.random.default_rng(0)
    people = rng.normal(size=(3, 128))
    people /= np.linalg.norm(people, axis=1, keepdims=True) * 3  # 0.47 apart or more: three people
    a, b = IoUTracker(), IoUTracker(history=False)
    n = 3000
    for i in range(n):
        k = (i // 50) % 3 + 1  # 1..3 faces, the cast changing every 50 frames
        faces = [Face(100.0 * j + i % 7, 10.0, 100.0 * j + 60 + i % 7, 70.0, 0.9, ()) for j in range(k)]
        looks = [people[j] + rng.normal(scale=0.01, size=128) for j in range(k)]
        assert a.update(faces, looks) == b.update(faces, looks)
        assert a.tracklets(i) == b.tracklets(i)
        b.forget(i + 1)
    assert len(a._ids) == n and sum(len(v) for v in a._descriptors.values()) > n  # a video's tracker keeps all
    assert len(b._ids) == 0 and not b._frames and not b._descriptors
    assert b.identity_map() == {}  # no merge: the tracklets are the identities
    with pytest.raises(ValueError, match="not settled"):
        b.forget(n + 5)


# -- the rules, with a scripted pool ------------------------------------------------------------------------

@dataclass
class Pred:
    score: np.ndarray
    attention: np.ndarray | None = None


class MeanModel:
    """A crop's score is its mean pixel value."""

    meta = ArtifactMeta(input_size=32, attention_size=0, preset="test")
    name = "numpy"
    model_id = "test:mean"
    max_batch = None

    def infer(self, crops: np.ndarray) -> Pred:
        return Pred(crops.reshape(len(crops), -1).mean(axis=1).astype(np.float32))


def _info(duration: float | None) -> VideoInfo:
    return VideoInfo("hls", "h264", duration, 10.0, None, 64, 48, 0, "pyav")


def _frames(times: list[float], value: int = 20) -> list[FrameFaces]:
    crop = np.full((1, 8, 8, 3), value, np.uint8)
    face = Face(0.0, 0.0, 8.0, 8.0, 0.9, ())
    return [FrameFaces(i, t, (face,), (0,), crop, 0.0, 0.0) if value else FrameFaces(i, t, (), (), None, 0.0, 0.0)
            for i, t in enumerate(times)]


def _ts(a: float, b: float) -> list[float]:
    return [round(a + 0.5 * k, 3) for k in range(int(round((b - a) / 0.5)) + 1)]


class ScriptedPool:
    """Each stream (worker) plays its connections in turn: a list of events each; none left: refused."""

    def __init__(self, scripts: dict[int, list[list]]) -> None:
        self.scripts = {w: deque(c) for w, c in scripts.items()}
        self.running: dict[int, tuple[int, deque]] = {}
        self.submits: dict[int, list[float]] = {w: [] for w in scripts}
        self.closed = False

    def submit(self, wid: int, video: int, target: str) -> None:
        self.submits[wid].append(time.monotonic())
        conn = self.scripts[wid].popleft() if self.scripts[wid] else [Failed("cannot open: Connection refused")]
        self.running[wid] = (video, deque(conn))

    def poll(self, timeout: float = 0.05) -> list[WorkerMessage]:
        out = []
        for wid, (video, q) in list(self.running.items()):
            if q:
                ev = q.popleft()
                out.append(WorkerMessage(video, ev))
                if isinstance(ev, (Decoded, Failed)):
                    del self.running[wid]
        if not out:
            time.sleep(timeout)
        return out

    def pause_clock(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_windows_reconnects_and_clocks_scripted(tmp_path):
    names = ["replay", "restart", "dead", "vod", "quiet", "odd"]
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    scripts = {
        # dropped after 103.0; reopened a few segments back: frames up to the last taken one are skipped
        0: [[Opened(_info(None)), *_frames(_ts(100, 103)), Failed("connection reset")],
            [Opened(_info(None)), *_frames(_ts(101, 105.5))]],
        # reopened with its clock restarted (an encoder restart): a new grid at the new first frame
        1: [[Opened(_info(None)), *_frames(_ts(100, 101.5)), Failed("connection reset")],
            [Opened(_info(None)), *_frames(_ts(2, 3.5))]],
        2: [],  # never opens: given up after --reconnect attempts, waits doubling
        3: [[Opened(_info(2.0)), *_frames(_ts(0, 1.5)), Decoded(4, 0, 0, "pyav", {})]],  # finite: ended
        4: [[Opened(_info(None)), *_frames(_ts(0, 1.5), value=0)]],  # frames without a face
        # frame times off the sampling grid (a 29.97 frame/s source): sampled frames closer than 1/fps
        5: [[Opened(_info(None)), *_frames([0.0, 0.48, 0.97, 1.45, 1.94, 2.42])]],
    }
    pool = ScriptedPool(scripts)
    cfg = WatchConfig(sources=tuple(str(tmp_path / n) for n in names), db=str(tmp_path / "w.sqlite"), window_s=2.0,
                      fps=2.0, duration_s=1.5, reconnect=3, backoff_s=0.05, strategy="mean", min_support=1)
    watcher = Watcher(cfg, backend=MeanModel(), pool_factory=lambda n: pool)
    every, alerts = io.StringIO(), io.StringIO()
    s = watch(watcher, [lambda ctx: WindowJsonlSink(every, ctx, every=True), lambda ctx: WindowJsonlSink(alerts, ctx)])
    lines = [json.loads(x) for x in every.getvalue().splitlines()]
    wins = {}
    for d in lines:
        if d["type"] == "window":
            wins.setdefault(Path(d["source"]).name, []).append(
                (d["window_index"], d["start_s"], d["end_s"], d["n_frames"], d["closed_by"], d["label"], d["score"]))
    assert wins["replay"] == [(0, 100.0, 102.0, 4, "time", "fake", 20.0), (1, 102.0, 103.5, 3, "dropped", "fake", 20.0),
                              (2, 103.5, 104.0, 1, "time", "fake", 20.0), (3, 104.0, 106.0, 4, "stopped", "fake", 20.0)]
    assert wins["restart"] == [(0, 100.0, 102.0, 4, "dropped", "fake", 20.0), (1, 2.0, 4.0, 4, "stopped", "fake", 20.0)]
    assert wins["vod"] == [(0, 0.0, 2.0, 4, "ended", "fake", 20.0)]
    assert wins["quiet"] == [(0, 0.0, 2.0, 4, "stopped", "no_face", None)]
    assert wins["odd"] == [(0, 0.0, 2.0, 5, "time", "fake", 20.0), (1, 2.0, 2.92, 1, "stopped", "fake", 20.0)]
    assert "dead" not in wins
    kinds = {n: [(d["kind"], d["message"]) for d in lines if d["type"] == "stream_event" and d["source"].endswith(n)]
             for n in names}
    assert [k for k, _ in kinds["replay"]] == ["opened", "dropped", "opened", "ended"]
    assert kinds["replay"][1][1] == "connection reset (attempt 1); reopening in 0.05 s"
    assert kinds["replay"][3][1] == "--duration 1.5 s reached"
    assert [k for k, _ in kinds["restart"]] == ["opened", "dropped", "opened", "opened", "ended"]
    assert "clock restarted (first frame at 2.000 s)" in kinds["restart"][3][1]
    assert kinds["dead"] == [
        ("dropped", "cannot open: Connection refused (attempt 1, 1 in a row without a frame); reopening in 0.05 s"),
        ("dropped", "cannot open: Connection refused (attempt 2, 2 in a row without a frame); reopening in 0.1 s"),
        ("gave_up", "gave up after 3 attempts in a row without a frame; last: cannot open: Connection refused"),
    ]
    gaps = np.diff(pool.submits[2])
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and len(pool.submits[2]) == 3
    assert kinds["vod"][-1] == ("ended", "the end of the stream")
    # stdout gets the flagged windows only; the store every window and event, the scan row the counts
    assert [json.loads(x)["label"] for x in alerts.getvalue().splitlines()] == ["fake"] * 9
    assert s.exit_code == 3 and s.n_windows == 10 and s.n_flagged == 9 and s.gave_up == [str(tmp_path / "dead")]
    db = tmp_path / "w.sqlite"
    assert len(windows_of(db)) == 10 and len(events_of(db)) == sum(len(v) for v in kinds.values())
    assert db_rows(db, "SELECT status, n_found, n_flagged, n_frames, n_faces, video_seconds FROM scans") == [
        ("done", 6, 9, 34, 30, pytest.approx(16.92))]
    assert pool.closed


# -- real streams ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def watched(models, tmp_path_factory):
    """8 s of a live playlist watched as a file (in-process), fake model, 2-s windows at 2 frame/s."""
    d = tmp_path_factory.mktemp("watch")
    live = LiveHLS(d).start()
    n0 = live.segments()
    assert "#EXT-X-ENDLIST" not in live.playlist.read_text()
    cfg = WatchConfig(sources=(str(live.playlist),), model=str(models["fake"]), db=str(d / "w.sqlite"), window_s=2.0,
                      fps=2.0, duration_s=8.0, in_process=True, timeout_s=10.0)
    alerts = io.StringIO()
    t0 = time.time()
    s = watch(Watcher(cfg, progress=False), [lambda ctx: WindowJsonlSink(alerts, ctx)])
    wall = time.time() - t0
    grew = live.segments() - n0  # it went on growing while watched
    live.stop()
    return d / "w.sqlite", s, alerts.getvalue(), live, wall, grew


def test_live_playlist_windows(watched):
    db, s, alerts, live, wall, grew = watched
    assert grew >= 6 and "#EXT-X-ENDLIST" not in live.playlist.read_text()  # it was live
    wins = windows_of(db)
    assert len(wins) >= 3, wins
    check_grid(wins, 2.0, 2.0)
    crop_score = H.FAKE_BIAS  # the tiny model: |mean of the normalised crop + 15|, within 1 of 15
    for w in wins:
        assert w[4] == w[3] and w[5] == 1 and w[7] == "fake" and abs(w[6] - crop_score) < 1 and w[10] == 9.05, w
    lines = [json.loads(x) for x in alerts.splitlines()]
    assert [d["window_index"] for d in lines] == [w[0] for w in wins]  # every window flagged, printed in order
    for d, w in zip(lines, wins, strict=True):
        assert set(d) == WINDOW_FIELDS and d["type"] == "window" and d["source"] == str(live.playlist)
        assert (d["start_s"], d["end_s"], d["score"], d["label"]) == (w[1], w[2], w[6], "fake")
        assert d["model_validation"] == "none" and d["identities"][0]["n_faces"] == w[4]
    assert [d["closed_by"] for d in lines] == ["time"] * (len(lines) - 1) + ["stopped"]
    assert [(k, m) for _, k, m in events_of(db)] == [
        ("opened", "attempt 1: hls, h264 320x180, live"), ("ended", "--duration 8 s reached")]
    scan = db_rows(db, "SELECT status, n_found, n_flagged, n_frames, n_faces, args FROM scans")[0]
    assert scan[:5] == ("done", 1, len(wins), sum(w[3] for w in wins), sum(w[4] for w in wins))
    assert json.loads(scan[5])["command"] == "watch" and s.exit_code == 1
    assert 8.0 <= wall < 20


def test_query_schema_and_report_know_streams(watched, tmp_path):
    db = watched[0]
    r = CliRunner().invoke(main, ["schema", "--db", str(db)])
    assert r.exit_code == 0, r.output
    assert "table windows" in r.output and "table stream_events" in r.output and "  source_key" in r.output
    r = CliRunner().invoke(main, ["query", "--db", str(db), "--format", "json",
                                  "SELECT w.window_index, w.label, e.kind FROM windows w JOIN stream_events e "
                                  "ON e.source = w.source AND e.kind = 'opened' ORDER BY w.window_index"])
    assert r.exit_code == 0, r.output
    assert [(x["window_index"], x["label"], x["kind"]) for x in json.loads(r.output)] == [
        (w[0], "fake", "opened") for w in windows_of(db)]
    # the report: a Streams section with the plot (threshold, every window flagged) and the events
    from acfd.scanner.report import ReportConfig, build_report

    rep = build_report(db, ReportConfig(out=tmp_path / "rep"))
    page = (tmp_path / "rep" / "index.html").read_text()
    n = len(windows_of(db))
    assert (rep.n_streams, rep.n_windows) == (1, n)
    assert f'<section class="stream" id="s0" data-flagged="{n}">' in page
    assert page.count('class="flagged"') == n and page.count('class="flagged-band"') == n
    assert 'class="threshold"' in page and "threshold 9.05" in page
    assert "--duration 8 s reached" in page and "1 stream window" not in page
    assert f"{n} stream windows in this report" in page  # the model's banner counts the windows


def test_report_streams_escapes_and_marks_drops(tmp_path):
    """A hostile source name is text; drops and a given-up stream are marked; a source that never gave
    a window still shows its events."""
    import datetime as dt

    from acfd.scanner.report import ReportConfig, build_report
    from acfd.schemas import db as store

    path = tmp_path / "s.sqlite"
    engine = store.open_store(path)
    evil = "/feeds/<img src=x onerror=alert(1)>.m3u8"
    t0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.timezone.utc)
    with store.session(engine) as s, s.begin():
        s.add(store.Model(model_id="m1", path="/m.onnx", backend="onnxruntime", meta_json="{}"))
        s.add(store.Scan(id=1, model_id="m1", strategy="mean", threshold=9.05, status="done", args="{}"))
        for k, score in enumerate([3.0, 12.0, None, 4.0]):
            s.add(store.Window(scan_id=1, model_id="m1", source=evil, source_key=evil.encode(), window_index=k,
                               started_at=t0 + dt.timedelta(seconds=10 * k), ended_at=t0 + dt.timedelta(seconds=10 * k + 10),
                               start_s=10.0 * k, end_s=10.0 * k + 10, n_frames=10, n_faces=0 if score is None else 10,
                               n_identities=0 if score is None else 1, score=score,
                               label="no_face" if score is None else ("fake" if score > 9.05 else "real"),
                               threshold=9.05, strategy="mean"))
        s.add(store.StreamEvent(scan_id=1, source=evil, at=t0 + dt.timedelta(seconds=25), kind="dropped",
                                message="<script>alert(2)</script> (attempt 1); reopening in 1 s"))
        s.add(store.StreamEvent(scan_id=1, source="rtsp://cam.local/x", at=t0 + dt.timedelta(seconds=40), kind="gave_up",
                                message="gave up after 10 attempts in a row without a frame"))
    engine.dispose()
    build_report(path, ReportConfig(out=tmp_path / "rep"))
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "<img src=x" not in page and "<script>alert" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;.m3u8" in page and "&lt;script&gt;alert(2)&lt;/script&gt;" in page
    first = page.index(evil.replace("<", "&lt;").replace(">", "&gt;"))
    assert first < page.index("rtsp://cam.local/x")  # the source with a flagged window comes first
    assert page.count('class="flagged"') == 1 and page.count('class="window"') == 2 and page.count('class="no-face"') == 1
    assert page.count('class="event dropped"') == 1 and page.count('class="event gave_up"') == 1
    assert "0 windows" in page and "no window stored" in page  # the camera that never worked


def test_cli_real_model_and_a_source_given_up(models, tmp_path):
    """A live stream judged real beside a file that is no video: it is given up after --reconnect
    attempts (one stderr line), the live one is unaffected; exit 2 (given up, nothing flagged)."""
    live = LiveHLS(tmp_path).start()
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video " * 100)
    db = tmp_path / "w.sqlite"
    r = CliRunner().invoke(main, ["watch", str(live.playlist), str(junk), "--window", "2s", "--fps", "2", "--duration", "6s",
                                  "--model", str(models["real"]), "--db", str(db), "--reconnect", "2", "--in-process"])
    live.stop()
    assert r.exit_code == 2, r.output + r.stderr
    assert r.stdout == ""  # nothing flagged: no alert
    gave_up = [ln for ln in r.stderr.splitlines() if ln.startswith("gave_up:")]
    assert gave_up == [f"gave_up: {junk}: gave up after 2 attempts in a row without a frame; last: not a readable "
                       "video container (Invalid data found when processing input)"]
    assert f"  GAVE UP {junk}" in r.stderr.splitlines()
    wins = windows_of(db, str(live.playlist))
    assert len(wins) >= 2 and windows_of(db, str(junk)) == []
    check_grid(wins, 2.0, 2.0)
    assert all(w[7] == "real" and abs(w[6] - H.REAL_BIAS) < 1 for w in wins), wins
    assert [k for src, k, _ in events_of(db) if src == str(junk)] == ["dropped", "gave_up"]
    assert [k for src, k, _ in events_of(db) if src == str(live.playlist)] == ["opened", "ended"]


def test_http_server_restarted_mid_stream(models, tmp_path):
    """The HTTP server of a live playlist goes away for 4 s and comes back: the stream drops, is opened
    again, and its windows go on (indexes consecutive); the URL's password is nowhere."""
    live = LiveHLS(tmp_path).start()
    server = Server(tmp_path).start()
    url = f"http://viewer:s3cret@127.0.0.1:{server.port}/live.m3u8"
    public = f"http://127.0.0.1:{server.port}/live.m3u8"
    cfg = WatchConfig(sources=(url,), model=str(models["fake"]), db=str(tmp_path / "w.sqlite"), window_s=2.0, fps=2.0,
                      duration_s=17.0, in_process=True, timeout_s=8.0, reconnect=10)
    marks: dict[str, float] = {}

    def outage() -> None:
        time.sleep(5)
        server.stop()
        marks["down"] = time.time()
        time.sleep(4)
        server.start()
        marks["up"] = time.time()

    t = threading.Thread(target=outage, daemon=True)
    t.start()
    every = io.StringIO()
    s = watch(Watcher(cfg, progress=False), [lambda ctx: WindowJsonlSink(every, ctx, every=True)])
    t.join()
    live.stop()
    server.stop()
    db = tmp_path / "w.sqlite"
    evs = [(k, m) for _, k, m in events_of(db)]
    kinds = [k for k, _ in evs]
    assert kinds[0] == "opened" and kinds[-1] == "ended" and "dropped" in kinds, evs
    first_drop = kinds.index("dropped")
    assert "opened" in kinds[first_drop:], evs  # reopened after the drop
    wins = windows_of(db)
    assert [w[0] for w in wins] == list(range(len(wins))) and s.n_windows == len(wins)
    reopened = db_rows(db, "SELECT at FROM stream_events WHERE kind = 'opened' ORDER BY id")[-1][0]
    after = [w for w in wins if w[8] >= reopened]
    assert len(after) >= 2 and all(w[7] == "fake" for w in wins)  # windows after the restart
    for a, b in zip(wins, wins[1:], strict=False):
        assert b[1] >= a[2] - 1e-9  # never overlapping, even across the drop
    everything = every.getvalue() + str(db_rows(db, "SELECT * FROM stream_events")) + str(db_rows(db, "SELECT args, source "
                                                                                                  "FROM scans, windows"))
    assert "s3cret" not in everything and "viewer" not in everything
    assert {x[0] for x in db_rows(db, "SELECT DISTINCT source FROM windows")} == {public}


def test_sigterm_commits_the_open_window(models, tmp_path):
    """SIGTERM to `python -m acfd.scanner watch` (worker processes): the open window is stored, the
    stream's 'ended' event says SIGTERM, the scan is 'interrupted', exit 143."""
    live = LiveHLS(tmp_path).start()
    db = tmp_path / "w.sqlite"
    p = subprocess.Popen(
        [sys.executable, "-m", "acfd.scanner", "watch", str(live.playlist), "--window", "2s", "--fps", "2",
         "--model", str(models["fake"]), "--db", str(db), "--timeout", "15"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 60
        n = 0
        while n < 2:
            assert p.poll() is None and time.monotonic() < deadline, p.communicate(timeout=5)
            time.sleep(0.3)
            try:
                n = db_rows(db, "SELECT COUNT(*) FROM windows")[0][0]
            except sqlite3.Error:
                n = 0
        time.sleep(0.6)  # into the next window
        import datetime as dt

        sent = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).isoformat(sep=" ")
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
        live.stop()
    assert p.returncode == 143, err
    assert err.splitlines()[-1] == "Terminated: the open windows were committed."
    wins = windows_of(db)
    check_grid(wins, 2.0, 2.0)
    assert wins[-1][9] >= sent  # the open window, closed by the signal
    lines = [json.loads(x) for x in out.splitlines()]
    assert [d["window_index"] for d in lines] == [w[0] for w in wins] and lines[-1]["closed_by"] == "stopped"
    assert set(lines[0]) == WINDOW_FIELDS
    assert [(k, m) for _, k, m in events_of(db)][-1] == ("ended", "SIGTERM")
    assert db_rows(db, "SELECT status FROM scans") == [("interrupted",)]


def test_stalled_stream_times_out_in_process(tmp_path):
    """--in-process: a live stream that stops delivering is failed after --timeout, its thread left."""
    from acfd.scanner.decode import Sampling
    from acfd.scanner.stages import FramesConfig
    from acfd.scanner.watch import ThreadPool
    from acfd.scanner.worker import WorkerConfig

    live = LiveHLS(tmp_path).start()
    pool = ThreadPool(WorkerConfig(FramesConfig(Sampling(2.0), 64, 1.3, decoder="pyav", stream=True)), 1, timeout_s=2.5)
    try:
        pool.submit(0, 7, str(live.playlist))
        got: list = []
        deadline = time.monotonic() + 30
        while not any(isinstance(m.event, FrameFaces) for m in got):
            assert time.monotonic() < deadline
            got += pool.poll(0.1)
        live.pause()
        t0 = time.monotonic()
        while not any(isinstance(m.event, Failed) for m in got):
            assert time.monotonic() - t0 < 30
            got += pool.poll(0.1)
        stalled = time.monotonic() - t0
        fail = next(m for m in got if isinstance(m.event, Failed))
        assert fail.video == 7 and fail.event.error == "decoding timed out: no progress for 2.5 s (thread abandoned)"
        assert 2.5 <= stalled < 10
        assert isinstance(got[0].event, Opened) and got[0].event.info.duration_s is None
    finally:
        live.resume()
        pool.close()
        live.stop()


def test_stop_sets_interrupted(tmp_path):
    """A watch stopped by its Stop (what the CLI's signal handler sets) is interrupted, its windows kept."""
    (tmp_path / "s").write_bytes(b"x")
    pool = ScriptedPool({0: [[Opened(_info(None)), *_frames(_ts(0, 2.5))]]})
    cfg = WatchConfig(sources=(str(tmp_path / "s"),), db=str(tmp_path / "w.sqlite"), window_s=2.0, fps=2.0,
                      strategy="mean", min_support=1)
    stop = Stop()
    threading.Timer(0.8, stop.set, args=("Ctrl-C (SIGINT)",)).start()
    s = watch(Watcher(cfg, backend=MeanModel(), pool_factory=lambda n: pool), [], stop)
    assert s.status == "interrupted" and s.n_windows == 2 and s.exit_code == 1
    assert events_of(tmp_path / "w.sqlite")[-1][1:] == ("ended", "Ctrl-C (SIGINT)")
