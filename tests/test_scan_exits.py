"""Honest exit codes: every failure that stops a scan is one line and exit 4 (a traceback only with
--debug); SIGTERM is handled like Ctrl-C (exit 143); a full disk or a read-only store corrupts nothing."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from acfd.scanner import pipeline
from acfd.scanner.cli import main
from click.testing import CliRunner

from tests import scan_helpers as H

NO_WRITE_CAPS = "-dac_override,-dac_read_search,-fowner"


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    for i in range(4):
        H.face_video(d / f"clip{i}.mp4", n=12, fps=6)
    return d


def _cmd(*args: object) -> list[str]:
    return [sys.executable, "-m", "acfd.scanner", *map(str, args)]


def test_unexpected_errors_are_one_line_and_exit_4(tmp_path, clips, models, monkeypatch):
    def boom(self, *a, **k):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(pipeline.Scanner, "run", boom)
    args = [str(clips / "clip0.mp4"), "--model", str(models["fake"]), "--db", str(tmp_path / "b.sqlite"), "-q"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 4
    assert r.stderr.strip().splitlines()[-1] == "Error: unexpected RuntimeError: boom (run with --debug for the traceback)"
    assert "Traceback" not in r.stderr
    r = CliRunner().invoke(main, ["--debug", *args])
    assert isinstance(r.exception, RuntimeError)  # --debug lets the traceback through


def test_read_only_store_is_one_line(tmp_path, clips, models):
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root and setpriv is missing")
    db = tmp_path / "ro.sqlite"
    r = subprocess.run(_cmd(clips / "clip0.mp4", "--model", models["fake"], "--db", db, "-q", "--frames", 2,
                            "--workers", 1), capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    db.chmod(0o444)
    before = db.read_bytes()
    prefix = ["setpriv", f"--inh-caps={NO_WRITE_CAPS}", f"--bounding-set={NO_WRITE_CAPS}"] if os.geteuid() == 0 else []
    r = subprocess.run(prefix + _cmd(clips / "clip1.mp4", "--model", models["fake"], "--db", db, "-q", "--workers", 1),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 4, r.stderr
    err = r.stderr.strip().splitlines()
    assert err[-1].startswith("Error: the verdict store") and "cannot be written" in err[-1], r.stderr
    assert "Traceback" not in r.stderr
    assert db.read_bytes() == before


@pytest.fixture
def tiny_fs(tmp_path):
    d = tmp_path / "tmpfs"
    d.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


def test_disk_full_is_one_line_and_corrupts_nothing(tmp_path, tiny_fs, clips, models):
    db = tiny_fs / "acfd.sqlite"
    args = _cmd(clips, "--model", models["fake"], "--db", db, "-q", "--every-frame", "--workers", 1,
                "--store-crops", 12)
    # Fill the disk to leave a little room: the store's first rows fit, the WAL soon does not.
    with open(tiny_fs / "filler", "wb") as f:
        f.write(b"\0" * (1536 * 1024))
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 4, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: disk full") and "Traceback" not in r.stderr, r.stderr
    # Nothing corrupted: copy the store out (with its WAL) and check it.
    out = tmp_path / "copy"
    out.mkdir()
    for p in tiny_fs.glob("acfd.sqlite*"):
        shutil.copy(p, out / p.name)
    con = sqlite3.connect(out / "acfd.sqlite")
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    n_videos = con.execute("SELECT COUNT(*) FROM videos").fetchone()[0]
    n_ok = con.execute("SELECT COALESCE(SUM(n_ok), 0) FROM scans").fetchone()[0]
    assert n_videos == n_ok  # each video entirely stored or not at all, counters in step
    con.close()


def test_sigterm_is_handled_like_ctrl_c(tmp_path, models):
    # enough work that the scan is still running when the signal comes, even on a fast machine
    clips = tmp_path / "many"
    clips.mkdir()
    for i in range(8):
        H.face_video(clips / f"c{i}.mp4", n=30, fps=10)
    db = tmp_path / "t.sqlite"
    p = subprocess.Popen(_cmd(clips, "--model", models["fake"], "--db", db, "-q", "--every-frame", "--workers", 1),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and p.poll() is None:
        try:
            if db.exists() and H.rows(db, "SELECT COUNT(*) FROM videos") != [(0,)]:
                break  # the first video is committed: the scan is well under way
        except sqlite3.OperationalError:
            pass  # tables not created yet
        time.sleep(0.2)
    assert p.poll() is None, p.communicate()
    p.send_signal(signal.SIGTERM)
    _out, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    assert "Terminated: what was committed is kept" in err and "Traceback" not in err
    assert H.rows(db, "SELECT status FROM scans") == [("interrupted",)]


def test_jsonl_to_a_full_device_is_one_line(tmp_path, clips, models):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    db = tmp_path / "j.sqlite"
    r = subprocess.run(_cmd(clips / "clip0.mp4", "--model", models["fake"], "--db", db, "-q", "--frames", 2,
                            "--workers", 1, "--jsonl", "/dev/full"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 4, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "Error: cannot write --jsonl /dev/full: No space left on device"
    assert "Traceback" not in r.stderr
    assert H.rows(db, "SELECT status FROM scans") == [("failed",)]


def test_jsonl_reader_going_away_ends_the_scan_quietly(tmp_path, clips, models):
    db = tmp_path / "p.sqlite"
    p = subprocess.Popen(_cmd(clips, "--model", models["fake"], "--db", db, "-q", "--frames", 2, "--workers", 1,
                              "--jsonl", "-"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = p.stdout.readline()  # like `| head -n 1`
    p.stdout.close()
    err = p.stderr.read().decode()
    p.wait(timeout=120)
    assert first.startswith(b"{")
    assert p.returncode == 141, err
    assert "Traceback" not in err and "Exception ignored" not in err
    assert H.rows(db, "SELECT status FROM scans") == [("interrupted",)]
    assert H.rows(db, "SELECT COUNT(*) FROM videos")[0][0] >= 1  # what was committed is kept


def test_control_characters_in_names_are_printed_inert(tmp_path, models):
    d = tmp_path / "v"
    d.mkdir()
    H.face_video(d / "clear\x1b[2Jscreen.mp4", n=4, fps=4)
    (d / "title\x1b]0;owned\x07\nsecond.mp4").write_bytes(b"not a video at all" * 10)
    r = subprocess.run(_cmd(d, "--model", models["fake"], "--db", tmp_path / "e.sqlite", "-q", "--frames", 2,
                            "--workers", 1), capture_output=True, text=True, timeout=120)
    assert r.returncode == 3, r.stderr
    assert "\x1b" not in r.stderr and "\x07" not in r.stderr
    flagged = [ln for ln in r.stderr.splitlines() if ln.startswith("  FLAGGED ")]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("  ERROR ")]
    assert len(flagged) == 1 and "clear\\x1b[2Jscreen.mp4" in flagged[0]
    assert len(errors) == 1 and "title\\x1b]0;owned\\x07\\x0asecond.mp4: " in errors[0]
