"""Resume honours what was asked: other verdict settings analyse again; other limits retry failed files;
the rerun's summary names the flagged videos it skipped; the scan row says what really ran."""

from __future__ import annotations

import subprocess
import sys

import pytest
from acfd.schemas.settings import error_key, key_for_status, verdict_key

from tests import scan_helpers as H


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("v")
    H.face_video(d / "face.mp4", n=6, fps=6)
    (d / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    return d


def _scan(*args: object) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "acfd.scanner", *map(str, args), "-q", "--workers", "0"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def _last_scan(db) -> tuple:
    return H.rows(db, "SELECT n_ok, n_error, n_skipped, device, device_name FROM scans ORDER BY id DESC LIMIT 1")[0]


def test_keys_are_canonical():
    base = {"fps": 1.0, "frames": None, "strategy": "confident"}
    assert verdict_key(base) == verdict_key({**base, "fps": 1, "workers": 7, "batch_size": 3, "store_crops": 9})
    assert verdict_key(base) != verdict_key({**base, "fps": 2.0})
    assert verdict_key({"fps": None, "frames": 8}) == verdict_key({"fps": 1.0, "frames": 8})
    assert verdict_key({"fps": 1000.0}) == verdict_key({"fps": 5000.0})  # both: every frame
    assert verdict_key(base) == verdict_key({**base, "timeout_s": 3.0})  # limits do not change verdicts
    assert error_key(base) != error_key({**base, "timeout_s": 3.0})
    assert key_for_status(base, "error") == error_key(base) and key_for_status(base, "ok") == verdict_key(base)


def test_rerun_with_other_settings_analyses_again(tmp_path, folder, models):
    db = tmp_path / "r.sqlite"
    m = models["fake"]
    r = _scan(folder, "--model", m, "--db", db, "--frames", 2)
    assert r.returncode == 3, r.stderr
    n_ok, n_error, n_skipped, device, device_name = _last_scan(db)
    assert (n_ok, n_error, n_skipped) == (1, 1, 0)
    assert device == "cpu" and device_name.startswith("onnxruntime CPUExecutionProvider on ")

    r = _scan(folder, "--model", m, "--db", db, "--frames", 2)  # same settings: all skipped
    assert _last_scan(db)[:3] == (0, 0, 2)
    assert r.returncode == 3  # the stored verdicts still describe the files
    assert "flagged in the store for these paths: 1 (0 in this run, 1 unchanged since an earlier scan)" in r.stderr
    unchanged = [ln for ln in r.stderr.splitlines() if ln.startswith("  FLAGGED (unchanged) ")]
    assert len(unchanged) == 1 and "face.mp4 (score 15)" in unchanged[0]

    _scan(folder, "--model", m, "--db", db, "--frames", 3)  # other sampling: both analysed again
    assert _last_scan(db)[:3] == (1, 1, 0)
    _scan(folder, "--model", m, "--db", db, "--frames", 3, "--strategy", "mean")  # other aggregation
    assert _last_scan(db)[:3] == (1, 1, 0)

    # A limit changes only whether a file fails: the error row is retried, the verdict is kept.
    _scan(folder, "--model", m, "--db", db, "--frames", 3, "--strategy", "mean", "--timeout", "200")
    assert _last_scan(db)[:3] == (0, 1, 1)
    rows = H.rows(db, "SELECT path, settings_key FROM videos WHERE id IN (SELECT MAX(id) FROM videos GROUP BY path)")
    assert {p.rsplit("/", 1)[-1]: k[:3] for p, k in rows} == {"broken.mp4": "e1:", "face.mp4": "v1:"}


def test_more_unchanged_flagged_points_at_this_models_verdicts(tmp_path, folder, models):
    """Past the names shown, the summary's query selects this model's verdicts, not every model's."""
    db = tmp_path / "m.sqlite"
    m = models["fake"]
    _scan(folder, "--model", m, "--db", db, "--frames", 2)
    # no names at all in the summary (SUMMARY_NAMES = 0), so the one unchanged flagged video is "more"
    code = ("import sys; import acfd.scanner.pipeline as p; p.SUMMARY_NAMES = 0; from acfd.scanner.cli import main; "
            "main(sys.argv[1:])")
    r = subprocess.run([sys.executable, "-c", code, str(folder), "--model", str(m), "--db", str(db), "--frames", "2",
                        "-q", "--workers", "1"], capture_output=True, text=True, timeout=180)
    assert r.returncode == 3, r.stderr
    (model_id,) = H.rows(db, "SELECT DISTINCT model_id FROM videos")[0]
    hint = [ln for ln in r.stderr.splitlines() if "more flagged unchanged videos" in ln]
    assert hint == [f"  ... 1 more flagged unchanged videos: SELECT path, score FROM latest_verdicts "
                    f"WHERE model_id = '{model_id}' AND label = 'fake'"]
    assert H.rows(db, hint[0].split(": ", 1)[1])[0][0].endswith("face.mp4")  # the query runs and finds it
