"""Inputs that are not regular files: never opened (a FIFO would block), always accounted for by a row."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests import scan_helpers as H

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX only")


def _scan(*args: object) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "acfd.scanner", *map(str, args), "--workers", "0", "-q", "--frames", "2"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_fifo_on_the_command_line_is_an_error_row_not_a_hang(tmp_path, models):
    fifo = tmp_path / "x.mp4"
    os.mkfifo(fifo)
    r = _scan(fifo, "--model", models["fake"], "--db", tmp_path / "f.sqlite")
    assert r.returncode == 2, r.stderr
    assert H.by_name(tmp_path / "f.sqlite")["x.mp4"][:2] == ("error", "not a regular file (a FIFO)")


def test_special_files_in_a_folder_get_error_rows(tmp_path, models):
    d = tmp_path / "v"
    d.mkdir()
    H.face_video(d / "good.mp4", n=4, fps=4)
    os.mkfifo(d / "pipe.mp4")
    os.mkfifo(d / "pipe.txt")  # not named like a video: not a candidate, no row
    sock = socket.socket(socket.AF_UNIX)
    # AF_UNIX paths are limited to ~108 bytes: bind from inside the folder
    cwd = os.getcwd()
    os.chdir(d)
    try:
        sock.bind("sock.mkv")
    finally:
        os.chdir(cwd)
    try:
        r = _scan(d, "--model", models["fake"], "--db", tmp_path / "s.sqlite")
    finally:
        sock.close()
    assert r.returncode == 3, r.stderr  # flagged (the "fake" model) and errors
    got = H.by_name(tmp_path / "s.sqlite")
    assert set(got) == {"good.mp4", "pipe.mp4", "sock.mkv"}
    assert got["pipe.mp4"][:2] == ("error", "not a regular file (a FIFO)")
    assert got["sock.mkv"][:2] == ("error", "not a regular file (a socket)")
    assert got["good.mp4"][0] == "ok"
