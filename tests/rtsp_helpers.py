"""A real RTSP server for tests: ``tests/rtsp_server.py`` (GStreamer's gst-rtsp-server) in a child process.

The server runs under the SYSTEM python (PyGObject and the GStreamer typelibs are Debian packages, not
PyPI ones): :func:`missing` says why it cannot run here (a test then skips, naming the packages);
:func:`serve_rtsp` starts it on 127.0.0.1 on a port the kernel picks, waits for its READY line, yields
the URL and stops it (SIGTERM, then SIGKILL) when the block ends. The server also exits when its stdin
closes, so a killed test run leaves no server behind.

A test module uses it as::

    @pytest.fixture(scope="module")
    def rtsp_url(tmp_path_factory):
        skip_without_rtsp()
        clip = H.face_video(tmp_path_factory.mktemp("rtsp") / "clip.mp4", n=30)
        with serve_rtsp(clip) as url:
            yield url
"""

from __future__ import annotations

import functools
import os
import selectors
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER = Path(__file__).with_name("rtsp_server.py")
# What to install (Debian 12): the rest (gstreamer1.0-plugins-base/-good/-bad, the GStreamer typelibs)
# comes in as their dependencies. .ci/run installs them.
PACKAGES = "python3-gi gir1.2-gst-rtsp-server-1.0"
ELEMENTS = ("filesrc", "qtdemux", "h264parse", "rtph264pay")  # tests/rtsp_server.py's pipeline
READY_TIMEOUT_S = 30.0  # the first run of GStreamer on a machine builds its plugin registry (seconds)

_CHECK = f"""
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
missing = [e for e in {ELEMENTS!r} if Gst.ElementFactory.find(e) is None]
print("missing GStreamer elements: " + " ".join(missing) if missing else "ok")
"""


def _env() -> dict[str, str]:
    """The environment for the system python: without the venv's Python settings."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


@functools.cache
def missing() -> str | None:
    """Why the RTSP test server cannot run on this machine (one line), or None when it can."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"no {SYSTEM_PYTHON}"
    try:
        r = subprocess.run([SYSTEM_PYTHON, "-c", _CHECK], capture_output=True, text=True, timeout=60, env=_env())
    except subprocess.TimeoutExpired:
        return "GStreamer did not start within 60 s"
    if r.returncode != 0:
        lines = r.stderr.strip().splitlines()
        return lines[-1] if lines else f"exit status {r.returncode}"
    out = r.stdout.strip()
    return None if out == "ok" else out


def skip_without_rtsp() -> None:
    """Skip the calling test when the server's Debian packages are absent, naming them."""
    why = missing()
    if why is not None:
        pytest.skip(f"RTSP test server unavailable ({why}); install the Debian packages: apt-get install {PACKAGES}")


@contextmanager
def serve_rtsp(clip: Path, loop: bool = False, log: Path | None = None) -> Iterator[str]:
    """Serve ``clip`` (an H.264 MP4) at rtsp://127.0.0.1:PORT/clip for the block; yields that URL.

    ``loop``: the clip plays without end, like a live feed (no duration in the SDP). The server's stderr
    goes to ``log`` (default: next to the clip), and is quoted if it does not start.
    """
    log = log or Path(clip).with_suffix(".rtsp.log")
    args = [SYSTEM_PYTHON, str(SERVER), str(clip), "--host", "127.0.0.1", "--port", "0"] + (["--loop"] if loop else [])
    with open(log, "wb") as err:
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=_env())
    try:
        yield _wait_ready(proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for f in (proc.stdin, proc.stdout):
            f.close()


def _wait_ready(proc: subprocess.Popen, log: Path) -> str:
    """The URL from the server's ``READY rtsp://...`` line; RuntimeError when it dies or takes too long."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"RTSP test server not ready within {READY_TIMEOUT_S:g} s: {_tail(log)}")
            if sel.select(timeout=min(left, 0.5)):
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:  # stdout closed: the server is gone
                    proc.wait(timeout=10)
                    raise RuntimeError(f"RTSP test server exited ({proc.returncode}): {_tail(log)}")
                buf += chunk
    line = buf.split(b"\n", 1)[0].decode()
    if not line.startswith("READY rtsp://"):
        raise RuntimeError(f"RTSP test server said {line!r}: {_tail(log)}")
    return line.split()[1]


def _tail(log: Path, n: int = 5) -> str:
    lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return " | ".join(lines[-n:]) or "(no output)"
