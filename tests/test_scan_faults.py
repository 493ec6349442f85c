"""Faults the scan must survive: decoder crash, hang and runaway memory in a worker, SIGKILL of the
whole scan and a restart, two scans writing one database, a file root cannot read."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest
from acfd.engine.runtime import load
from acfd.scanner.pipeline import ScanConfig, Scanner

from tests import scan_helpers as H

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return H.face_video(tmp_path_factory.mktemp("clip") / "clip.mp4", n=12, fps=10)


def test_crash_hang_and_oom_become_error_rows(tmp_path, clip, models):
    d = tmp_path / "v"
    d.mkdir()
    for name in ("a_good.mp4", "crash.mp4", "hang.mp4", "oom.mp4", "z_good.mp4"):
        shutil.copy(clip, d / name)
    cfg = ScanConfig(paths=(str(d),), db=str(tmp_path / "f.sqlite"), workers=1, timeout_s=3.0,
                     worker_memory_mb=8000)
    t0 = time.monotonic()
    s = Scanner(cfg, load(models["fake"]), worker_target=H.faulty_worker_main).run()
    got = H.by_name(tmp_path / "f.sqlite")
    assert got["a_good.mp4"][:2] == ("ok", None) and got["z_good.mp4"][:2] == ("ok", None)
    assert got["crash.mp4"][:2] == ("error", "decoder crashed (SIGABRT); the worker was restarted")
    assert got["hang.mp4"][:2] == ("error", "decoding timed out: no progress for 3 s (worker killed)")
    assert got["oom.mp4"][:2] == ("error", "out of memory while decoding (worker limit 8000 MB)")
    assert (s.n_ok, s.n_error, s.exit_code) == (2, 3, 3)
    assert time.monotonic() - t0 < 90


def test_sigkill_then_restart_loses_and_duplicates_nothing(tmp_path, clip, models):
    d = tmp_path / "v"
    d.mkdir()
    for i in range(6):
        shutil.copy(clip, d / f"clip{i}.mp4")
    dbp = tmp_path / "k.sqlite"
    args = H.cli(d, "--model", models["fake"], "--db", dbp, "--every-frame", "--workers", 1, "-q")
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    n = 0
    while time.monotonic() < deadline and p.poll() is None:
        if dbp.exists():
            try:
                n = H.rows(dbp, "SELECT COUNT(*) FROM videos")[0][0]
            except Exception:  # tables not created yet
                n = 0
            if n >= 2:
                break
        time.sleep(0.05)
    assert p.poll() is None, "the scan ended before it could be killed"
    p.send_signal(signal.SIGKILL)
    p.wait()
    first = H.rows(dbp, "SELECT id, n_ok FROM scans")
    committed = H.rows(dbp, "SELECT COUNT(*) FROM videos WHERE scan_id = ?", first[0][0])[0][0]
    assert 2 <= committed < 6
    assert first[0][1] == committed  # counters are committed with each video
    # The killed scan is found dead by its lease (scans.lease_until), not by its pid: let it run out,
    # as if the lease's minute had passed.
    assert H.rows(dbp, "SELECT status, lease_until IS NOT NULL FROM scans") == [("running", 1)]
    H.rows(dbp, "UPDATE scans SET lease_until = '2000-01-01 00:00:00.000000'")  # committed on leaving
    r = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert r.returncode == 1, r.stderr
    rows = H.rows(dbp, "SELECT path, COUNT(*) FROM videos GROUP BY path_key")
    assert len(rows) == 6 and all(c == 1 for _, c in rows)  # every clip once: nothing lost, nothing twice
    scans = H.rows(dbp, "SELECT status, n_ok, n_skipped FROM scans ORDER BY id")
    assert scans == [("interrupted", committed, 0), ("done", 6 - committed, committed)]
    assert H.rows(dbp, "SELECT COUNT(*) FROM detections")[0][0] == 6 * 12  # every frame, one face each


def test_two_scans_write_one_database_at_once(tmp_path, clip, models):
    dirs = []
    for k in range(2):
        d = tmp_path / f"d{k}"
        d.mkdir()
        for i in range(3):
            shutil.copy(clip, d / f"c{i}.mp4")
        dirs.append(d)
    dbp = tmp_path / "shared.sqlite"
    procs = [
        subprocess.Popen(H.cli(d, "--model", models["fake"], "--db", dbp, "--workers", 1, "-q", "--fps", 5),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for d in dirs
    ]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 1, err
    assert H.rows(dbp, "SELECT status, COUNT(*) FROM videos GROUP BY status") == [("ok", 6)]
    assert H.rows(dbp, "SELECT status, n_ok FROM scans") == [("done", 3), ("done", 3)]
    assert H.rows(dbp, "SELECT COUNT(*) FROM verdicts WHERE identity IS NULL") == [(6,)]


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX only")
def test_unreadable_file(tmp_path, clip, models):
    d = tmp_path / "v"
    d.mkdir()
    shutil.copy(clip, d / "fine.mp4")
    locked = d / "locked.mp4"
    shutil.copy(clip, locked)
    locked.chmod(0)
    args = H.cli(d, "--model", models["fake"], "--db", tmp_path / "u.sqlite", "--workers", 1, "-q")
    if os.geteuid() == 0:
        # root reads anything (CAP_DAC_OVERRIDE): run the scan without that capability instead
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and setpriv is missing: cannot make a file unreadable")
        drop = "-dac_override,-dac_read_search"
        args = [setpriv, f"--inh-caps={drop}", f"--bounding-set={drop}", *args]
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert r.returncode == 3, r.stderr
    got = H.by_name(tmp_path / "u.sqlite")
    assert got["locked.mp4"][:2] == ("error", "permission denied (cannot open for reading)")
    assert got["fine.mp4"][0] == "ok"
    assert "ERROR" in r.stderr and "locked.mp4: permission denied" in r.stderr
