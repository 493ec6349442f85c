"""`acfd-scan query` and `report` never hang and read stores in read-only places (issue: the scanner never misleads)."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from acfd.scanner import cli_report
from acfd.scanner.cli import main
from acfd.scanner.query import DEFAULT_TIMEOUT_S, open_readonly, run_query
from click.testing import CliRunner

from tests.report_helpers import populate

RUNAWAY = "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT count(*) FROM r"
ACFD_SCAN = [sys.executable, "-c", "from acfd.scanner.cli import main; main()"]


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    return populate(tmp_path_factory.mktemp("store") / "acfd.sqlite")


def test_ctrl_c_stops_a_runaway_query(populated):
    """Without a timeout, SIGINT must still end the statement: exit 130, quickly, one line."""
    p = subprocess.Popen([*ACFD_SCAN, "query", RUNAWAY, "--db", str(populated.path), "--timeout", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3.0)  # imports, open, and well into the recursion
    assert p.poll() is None, p.communicate()
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130, err
    assert time.monotonic() - t0 < 10
    assert "Traceback" not in err and out == ""
    assert err.strip().splitlines()[-1].startswith("Aborted: what was committed is kept"), err


def test_sigterm_stops_a_runaway_query_like_other_commands(populated):
    p = subprocess.Popen([*ACFD_SCAN, "query", RUNAWAY, "--db", str(populated.path), "--timeout", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3.0)
    assert p.poll() is None, p.communicate()
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("Terminated:") and "Traceback" not in err and out == ""


def test_a_default_timeout_applies_and_is_documented(populated):
    ro = open_readonly(populated.path)
    try:
        assert ro.guard is not None and ro.guard.timeout_s == DEFAULT_TIMEOUT_S
    finally:
        ro.dispose()
    opt = next(p for p in cli_report.query_cmd.params if p.name == "timeout_s")
    assert opt.default == DEFAULT_TIMEOUT_S
    r = CliRunner().invoke(main, ["query", "--help"])
    assert "default: 60" in r.output and "0: no limit" in r.output.replace("\n", " ").replace("  ", " ")


def test_timeout_message_names_the_option(populated):
    r = CliRunner().invoke(main, ["query", RUNAWAY, "--db", str(populated.path), "--timeout", "0.3"])
    assert r.exit_code == 4
    assert r.stderr.strip() == "Error: query interrupted after 0.3 s (the --timeout limit; --timeout 0 for none)"


def test_guard_is_rearmed_per_query(populated):
    ro = open_readonly(populated.path, timeout_s=0.3)
    try:
        with pytest.raises(Exception, match="interrupted"):
            run_query(ro, RUNAWAY)
        assert run_query(ro, "SELECT COUNT(*) FROM videos").rows[0][0] > 0  # the next query runs
    finally:
        ro.dispose()


def _without_write_caps(args: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return args
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv is missing: cannot make a folder read-only")
    drop = "-dac_override,-dac_read_search,-fowner"
    return [setpriv, f"--inh-caps={drop}", f"--bounding-set={drop}", *args]


@pytest.fixture
def readonly_dir(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    yield d
    d.chmod(0o755)


def test_wal_store_in_a_read_only_folder_is_readable(populated, readonly_dir, tmp_path):
    db = readonly_dir / "acfd.sqlite"
    shutil.copyfile(populated.path, db)
    con = sqlite3.connect(db)
    n = con.execute("SELECT COUNT(*) FROM videos").fetchone()[0]
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    assert not (readonly_dir / "acfd.sqlite-wal").exists()
    readonly_dir.chmod(0o555)
    r = subprocess.run(_without_write_caps([*ACFD_SCAN, "query", "SELECT COUNT(*) AS n FROM videos", "--db",
                                            str(db), "--format", "csv"]),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["n", str(n)]
    out = tmp_path / "report"
    r = subprocess.run(_without_write_caps([*ACFD_SCAN, "report", "--db", str(db), "--out", str(out)]),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (out / "index.html").is_file()
    assert sorted(p.name for p in readonly_dir.iterdir()) == ["acfd.sqlite"]  # nothing created there


def test_unmerged_wal_in_a_read_only_folder_says_why(populated, readonly_dir, tmp_path):
    src = tmp_path / "live.sqlite"
    shutil.copyfile(populated.path, src)
    con = sqlite3.connect(src)
    con.execute("PRAGMA wal_autocheckpoint = 0")
    con.execute("UPDATE videos SET error = 'changed' WHERE id = 1")
    con.commit()
    # copy the pair while the writer still holds the WAL (no checkpoint yet), without -shm
    shutil.copyfile(src, readonly_dir / "acfd.sqlite")
    shutil.copyfile(src.with_name("live.sqlite-wal"), readonly_dir / "acfd.sqlite-wal")
    con.close()
    readonly_dir.chmod(0o555)
    r = subprocess.run(_without_write_caps([*ACFD_SCAN, "query", "SELECT 1", "--db",
                                            str(readonly_dir / "acfd.sqlite")]),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 4
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert "not yet merged" in err and "read-only place" in err and "not a readable" not in err
