"""Settings that cannot work are refused before the scan, and a setting's failure is never stored as a file's."""

from __future__ import annotations

import os

import pytest
from acfd.engine.runtime import load
from acfd.scanner.cli import main
from acfd.scanner.pipeline import MIN_WORKER_MEMORY_MB, ScanConfig, Scanner
from acfd.scanner.worker import WorkerError
from click.testing import CliRunner

from tests import scan_helpers as H


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return H.face_video(tmp_path_factory.mktemp("clip") / "clip.mp4", n=6, fps=6)


def dying_worker(cfg, tasks, conn):  # noqa: ANN001, ANN201 - a worker that dies before it is ready
    os._exit(3)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--timeout", "nan"], "--timeout must be a positive number of seconds, not nan"),
        (["--timeout", "inf"], "--timeout must be a positive number of seconds, not inf"),
        (["--worker-memory", "0"], "--worker-memory 0 MB is too small"),
        (["--worker-memory", "1"], f"needs at least {MIN_WORKER_MEMORY_MB} MB"),
    ],
)
def test_impossible_settings_are_refused_before_the_scan(tmp_path, clip, models, args, needle):
    db = tmp_path / "a.sqlite"
    r = CliRunner().invoke(main, [str(clip), "--model", str(models["fake"]), "--db", str(db), "-q", *args])
    assert r.exit_code == 4, r.output
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not db.exists()  # nothing started, nothing stored


def test_an_empty_path_is_refused(tmp_path, models, monkeypatch):
    monkeypatch.chdir(tmp_path)
    H.face_video(tmp_path / "here.mp4", n=2, fps=2)
    r = CliRunner().invoke(main, ["", "--model", str(models["fake"]), "--db", str(tmp_path / "e.sqlite"), "-q"])
    assert r.exit_code == 4
    assert "an empty path was given" in r.stderr and not (tmp_path / "e.sqlite").exists()


def test_a_worker_that_dies_at_start_stops_the_scan_and_blames_no_file(tmp_path, clip, models):
    db = tmp_path / "d.sqlite"
    cfg = ScanConfig(paths=(str(clip),), db=str(db), workers=1, worker_memory_mb=MIN_WORKER_MEMORY_MB)
    with pytest.raises(WorkerError, match=r"decode worker died while starting \(exit status 3\); --worker-memory"):
        Scanner(cfg, load(models["fake"]), worker_target=dying_worker).run()
    assert H.rows(db, "SELECT COUNT(*) FROM videos") == [(0,)]
    assert H.rows(db, "SELECT status FROM scans") == [("failed",)]


def test_more_frames_than_the_video_has_takes_every_frame(tmp_path, clip, models):
    db = tmp_path / "f.sqlite"
    cfg = ScanConfig(paths=(str(clip),), db=str(db), workers=0, fps=None, frames=10**12)
    s = Scanner(cfg, load(models["fake"])).run()
    assert (s.n_ok, s.n_error, s.n_frames) == (1, 0, 6)
