"""RTSP inputs against a real RTSP server (GStreamer's gst-rtsp-server, ``tests/rtsp_server.py``) on 127.0.0.1.

The server relays the clip's own H.264 frames (no re-encoding), so what a client decodes must be the
clip, frame for frame. Skipped, naming the Debian packages, where the server cannot run (``.ci/run``
installs them).
"""

from __future__ import annotations

import importlib.util
import sqlite3
import time
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from tests import scan_helpers as H
from tests.rtsp_helpers import serve_rtsp, skip_without_rtsp

N_FRAMES, FPS = 30, 10  # a 3 s clip, 320x240


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    skip_without_rtsp()
    return H.face_video(tmp_path_factory.mktemp("rtsp") / "clip.mp4", n=N_FRAMES, fps=FPS)


@pytest.fixture(scope="module")
def clip_frames(clip) -> list[np.ndarray]:
    with av.open(str(clip)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def rtsp_url(clip):
    with serve_rtsp(clip) as url:
        yield url


def read_rtsp(url: str, limit: int | None = None) -> tuple[int | None, list[tuple[float | None, np.ndarray]]]:
    """(container duration in microseconds or None, [(frame time, RGB frame)]) of ``url`` over RTSP/TCP."""
    frames = []
    with av.open(url, options={"rtsp_transport": "tcp"}, timeout=10) as c:
        for f in c.decode(video=0):
            frames.append((f.time, f.to_ndarray(format="rgb24")))
            if limit is not None and len(frames) >= limit:
                break
        return c.duration, frames


def test_pyav_receives_the_clip_frame_for_frame(rtsp_url, clip_frames):
    assert rtsp_url.startswith("rtsp://127.0.0.1:") and rtsp_url.endswith("/clip")
    duration, frames = read_rtsp(rtsp_url)
    assert duration == N_FRAMES * 1_000_000 // FPS  # the SDP's range: a finite source of 3 s
    assert len(frames) == N_FRAMES
    first = frames[0][1]
    assert first.shape == (240, 320, 3)
    assert abs(float(first.mean()) - float(clip_frames[0].mean())) < 0.5
    # The server relays the file's H.264 frames untouched: the same decoder gives the same pixels.
    for i, ((_, got), want) in enumerate(zip(frames, clip_frames, strict=True)):
        assert np.array_equal(got, want), i
    times = [t for t, _ in frames[1:]]  # FFmpeg gives the very first RTP frame no timestamp
    assert times == pytest.approx([i / FPS for i in range(1, N_FRAMES)], abs=1e-3)


def test_a_looping_server_is_a_live_feed_without_a_seam(clip, clip_frames):
    """``--loop`` (for tests of ``acfd-scan watch``): no duration, time goes on across the loop, frames repeat."""
    n = N_FRAMES + 5
    with serve_rtsp(clip, loop=True) as url:
        duration, frames = read_rtsp(url, limit=n)
    assert duration is None
    assert len(frames) == n
    assert [t for t, _ in frames[1:]] == pytest.approx([i / FPS for i in range(1, n)], abs=1e-3)
    for i, (_, got) in enumerate(frames):
        assert np.array_equal(got, clip_frames[i % N_FRAMES]), i


def _needs_url_support() -> None:
    if importlib.util.find_spec("acfd.scanner.urls") is None:
        pytest.skip("needs URL support in acfd-scan (acfd.scanner.urls)")


def test_the_scanners_decoder_gets_every_frame_even_when_it_reads_slowly(rtsp_url):
    """A reader slower than real time (face detection on each frame) must still get the whole clip: RTP
    over UDP (FFmpeg's default transport) loses its last half second that way, RTP over the RTSP
    connection (TCP) loses nothing."""
    _needs_url_support()
    from acfd.scanner.decode import Sampling, open_frames

    info, frames = open_frames(rtsp_url, Sampling(fps=None, every=True))
    assert (info.container, info.codec, info.width, info.height, info.duration_s) == ("rtsp", "h264", 320, 240, 3.0)
    times = []
    for f in frames:
        times.append(f.time_s)
        time.sleep(0.05)
    assert times == pytest.approx([i / FPS for i in range(N_FRAMES)], abs=1e-3)


def test_acfd_scan_reads_an_rtsp_url(rtsp_url, models, tmp_path):
    _needs_url_support()
    from acfd.scanner.cli import main

    db = tmp_path / "rtsp.sqlite"
    r = CliRunner().invoke(main, [rtsp_url, "--model", str(models["fake"]), "--db", str(db),
                                  "--workers", "0", "--fps", "2", "-q"])
    assert r.exit_code == 1, r.output  # flagged by the "fake" model, no error
    with sqlite3.connect(db) as c:
        c.row_factory = sqlite3.Row
        rows = [dict(x) for x in c.execute(
            "SELECT v.*, vd.label AS label, vd.score AS score FROM videos v "
            "LEFT JOIN verdicts vd ON vd.video_id = v.id AND vd.identity IS NULL")]
        times = [t for (t,) in c.execute("SELECT time_s FROM detections ORDER BY frame_index")]
    assert len(rows) == 1
    v = rows[0]
    assert (v["path"], v["status"], v["error"], v["decoder"], v["container"]) == (rtsp_url, "ok", None, "pyav", "rtsp")
    assert (v["width"], v["height"], v["duration_s"]) == (320, 240, pytest.approx(3.0))
    # 2 frames a second of the whole 3 s clip, one face in each
    assert (v["n_frames"], v["n_faces"]) == (6, 6)
    assert times == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5], abs=1e-3)
    assert v["label"] == "fake" and v["score"] == pytest.approx(15.03, abs=0.02)  # the fake model: |mean(crop) + 15|
