"""Every store schema change ships a migration, tested here on a store written by the release before it.

``tests/data/store_v1.sql`` is the SQL dump of a real schema-version-1 store, written by acfd at commit
13e010e (the release before the model card) scanning the files in ``tests/data/store_v1/`` (a face
video, a video without a face, a broken file) with ``store_v1/model.onnx``; ``tests/data/README.md``
says how it was made. The files are kept, not re-made, so that their bytes (and so the model id, the
sizes and the content hashes the dump holds) stay those of that scan whatever the installed torch,
PyAV or acfd version would write today. ``tests/data/store_v2.sql`` is the same for schema version 2:
acfd at commit 6c928ac (the release before the scan lease) scanning copies of the same files.

Checked: readers refuse the old store with the upgrade hint; ``acfd-scan schema --upgrade`` and a
plain scan (``init_db``) both migrate it to the current version (1 -> 4, 2 -> 4), the model row of a
version-1 store becoming unvalidated with no card, old scans getting no lease, and every old row and
verdict unchanged; and a scan resumes across the migration (the unchanged videos are skipped, a
changed one is scanned again beside the old verdicts).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest
from acfd.scanner.cli import main
from acfd.schemas import db as store
from acfd.schemas.hashing import content_hash
from acfd.schemas.settings import key_for_status
from click.testing import CliRunner

DATA = Path(__file__).parent / "data"
DUMP = DATA / "store_v1.sql"
DUMP_V2 = DATA / "store_v2.sql"
FILES = DATA / "store_v1"
# The old tables whose rows must come through a migration unchanged (``models`` gains columns).
OLD_TABLES = ("meta", "scans", "videos", "detections", "verdicts", "attention_masks", "models")
V1_MODEL_COLUMNS = ["model_id", "path", "backend", "meta_json", "first_seen"]


@dataclass
class V1Store:
    db: Path
    videos: Path
    model: Path


def load_v1(root: Path, dump: Path = DUMP) -> V1Store:
    """The v1 dump (or another one of the same files) as an SQLite file under ``root``, its files copied
    beside it, with the videos' stored paths moved to the copies and the copies' mtimes set to the
    stored ones (as if never moved)."""
    root.mkdir(parents=True)
    shutil.copytree(FILES, root / "files")
    videos, model = root / "files" / "videos", root / "files" / "model.onnx"
    dbp = root / "acfd.sqlite"
    con = sqlite3.connect(dbp)
    try:
        con.executescript(dump.read_text(encoding="utf-8"))
        for vid, path, mtime_ns in con.execute("SELECT id, path, mtime_ns FROM videos").fetchall():
            new = videos / Path(path).name
            con.execute("UPDATE videos SET path = ?, path_key = ? WHERE id = ?", (str(new), os.fsencode(new), vid))
            os.utime(new, ns=(mtime_ns, mtime_ns))
        con.commit()
    finally:
        con.close()
    return V1Store(dbp, videos, model)


def rows(dbp: Path, sql: str, *args: object) -> list[tuple]:
    con = sqlite3.connect(dbp)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


# Columns that version 2 added (everything else existed in version 1), and versions 3 and 4.
V2_COLUMNS = {"models": {"validation", "card_summary", "card_json"}, "scans": {"device_name"},
              "videos": {"settings_key"}}
V3_COLUMNS = {"scans": {"lease_until"}}
V4_COLUMNS = {"videos": {"etag"}}


def old_rows(dbp: Path, since: int = 1) -> dict[str, list[tuple]]:
    """Every row of the version-``since`` tables, in that version's columns (for before/after comparisons)."""
    added = [V2_COLUMNS, V3_COLUMNS, V4_COLUMNS][since - 1:]
    out = {}
    for t in OLD_TABLES:
        names = [r[1] for r in rows(dbp, f"PRAGMA table_info({t})") if not any(r[1] in a.get(t, ()) for a in added)]
        cols = ", ".join(names) if t != "models" or since > 1 else ", ".join(V1_MODEL_COLUMNS)
        key = "key" if t == "meta" else "model_id" if t == "models" else "id"
        out[t] = rows(dbp, f"SELECT {cols} FROM {t} ORDER BY {key}")
    return out


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def v1(tmp_path) -> V1Store:
    return load_v1(tmp_path / "v1")


def test_the_fixture_is_a_v1_store_of_these_files(v1):
    """The dump is what the old release wrote, about exactly these files (so resume can find them)."""
    assert rows(v1.db, "SELECT value FROM meta WHERE key = 'schema_version'") == [("1",)]
    cols = [r[1] for r in rows(v1.db, "PRAGMA table_info(models)")]
    assert cols == V1_MODEL_COLUMNS  # no card columns yet
    assert rows(v1.db, "SELECT status, n_found, n_ok, n_no_face, n_error, n_flagged FROM scans") == [
        ("done", 3, 1, 1, 1, 1)
    ]
    ((model_id,),) = rows(v1.db, "SELECT model_id FROM models")
    assert model_id == hashlib.sha256(v1.model.read_bytes()).hexdigest()[:16]
    for path, size, mtime_ns, chash, vmodel in rows(v1.db, "SELECT path, size, mtime_ns, content_hash, model_id FROM videos"):
        st = os.stat(path)
        assert (st.st_size, st.st_mtime_ns, vmodel) == (size, mtime_ns, model_id)
        assert content_hash(path) == chash
    got = rows(v1.db, "SELECT v.path, v.status, vd.label, vd.score, v.n_faces FROM videos v "
                      "LEFT JOIN verdicts vd ON vd.video_id = v.id AND vd.identity IS NULL ORDER BY v.path")  # fmt: skip
    assert [(Path(p).name, s, label, n) for p, s, label, _, n in got] == [
        ("broken.mp4", "error", None, 0), ("face.mp4", "ok", "fake", 2), ("no_face.mp4", "no_face", "no_face", 0),
    ]  # fmt: skip
    assert got[1][3] > 9.05
    assert rows(v1.db, "SELECT COUNT(*) FROM detections") == [(2,)]
    assert rows(v1.db, "SELECT COUNT(*) FROM attention_masks") == [(1,)]


def test_readers_refuse_the_v1_store_with_the_upgrade_hint(v1, tmp_path):
    before = digest(v1.db)
    for cmd in (["query", "SELECT COUNT(*) FROM videos"], ["report", "--out", tmp_path / "r"]):
        r = cli(*cmd, "--db", v1.db)
        assert r.exit_code == 4, r.output
        (line,) = r.stderr.strip().splitlines()
        assert "schema version 1, older than this acfd's 4" in line and "acfd-scan schema --upgrade" in line
    assert digest(v1.db) == before  # refusing migrates nothing


def _check_migrated(v1: V1Store, before: dict[str, list[tuple]], new_scans: int = 0) -> None:
    """Version 3, the model unvalidated without a card, the old scan without a lease, every old row as it was."""
    after = old_rows(v1.db)
    assert after["meta"] == [("schema_version", "4")]
    assert rows(v1.db, "SELECT lease_until FROM scans WHERE id = 1") == [(None,)]
    assert after["scans"][: len(before["scans"])] == before["scans"] and len(after["scans"]) == 1 + new_scans
    for t in ("videos", "detections", "verdicts", "attention_masks", "models"):
        assert after[t] == before[t], t
    assert rows(v1.db, "SELECT validation, card_summary, card_json FROM models") == [("none", None, None)]
    # Each old video row got the resume key of the settings its scan recorded.
    args = json.loads(rows(v1.db, "SELECT args FROM scans WHERE id = 1")[0][0])
    for status, key in rows(v1.db, "SELECT status, settings_key FROM videos WHERE scan_id = 1"):
        assert key == key_for_status(args, status), status
    meta = json.loads(rows(v1.db, "SELECT meta_json FROM models")[0][0])
    assert "card" not in meta and meta["preset"] == "test-tiny"


def test_schema_upgrade_migrates_and_keeps_every_row(v1):
    before = old_rows(v1.db)
    r = cli("schema", "--upgrade", "--db", v1.db)
    assert r.exit_code == 0, r.output
    assert f"upgraded {v1.db} from schema version 1 to 4" in r.stderr
    assert "card_json" in r.stdout and "validation" in r.stdout and "lease_until" in r.stdout
    _check_migrated(v1, before)
    # The readers accept it now, and the view still answers.
    r = cli("query", "SELECT path, label, score, model_id FROM latest_verdicts ORDER BY path", "--db", v1.db,
            "--format", "json")  # fmt: skip
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    # verdict columns: id, video_id, scan_id, model_id, identity, score, label, ...
    face = [v for v in before["verdicts"] if v[4] is None and v[6] == "fake"]
    assert [(Path(x["path"]).name, x["label"]) for x in got] == [("face.mp4", "fake"), ("no_face.mp4", "no_face")]
    assert got[0]["score"] == face[0][5] and got[0]["model_id"] == before["models"][0][0]
    # Upgrading again changes nothing.
    d = digest(v1.db)
    r = cli("schema", "--upgrade", "--db", v1.db)
    assert r.exit_code == 0 and "is up to date" in r.stderr and digest(v1.db) == d


def _rescan(v1: V1Store, *extra: object):
    return cli(v1.videos, "--model", v1.model, "--db", v1.db, "--frames", 2, "--store-crops", 1, "--workers", 1,
               "-q", *extra)  # fmt: skip


def test_scan_resumes_across_the_migration(tmp_path):
    """Migrated by `schema --upgrade` (a) or by the scan itself (b): the same model and files are skipped."""
    a, b = load_v1(tmp_path / "a"), load_v1(tmp_path / "b")
    before_a, before_b = old_rows(a.db), old_rows(b.db)
    assert cli("schema", "--upgrade", "--db", a.db).exit_code == 0
    model_id = before_a["models"][0][0]
    for v1, before in ((a, before_a), (b, before_b)):
        r = _rescan(v1)
        # Nothing new was scanned; the status still reports the stored flag (face.mp4) and error (broken.mp4).
        assert r.exit_code == 3, r.output
        assert rows(v1.db, "SELECT n_found, n_skipped, n_ok, n_no_face, n_error FROM scans WHERE id = 2") == [
            (3, 3, 0, 0, 0)
        ]
        assert "of the skipped (unchanged since scanned): 1 flagged, 1 errors" in r.stderr
        # The model has no card: said at the start and in the summary.
        card_line = f"model: {v1.model} ({model_id[:12]}): no model card (made before cards): unvalidated"
        lines = r.stderr.splitlines()
        start = lines.index(card_line)
        assert lines[start + 1] == "WARNING: unvalidated model: verdicts from an unvalidated model are not evidence"
        assert f"  {card_line}" in lines[start + 2:]
        assert "  validation: none: WARNING: unvalidated model: verdicts from an unvalidated model are not evidence" in lines
        _check_migrated(v1, before, new_scans=1)
    # Both ways give the same store (apart from the paths of the copies and the new scan's times).
    assert old_rows(a.db)["models"] == old_rows(b.db)["models"]
    assert rows(a.db, "SELECT * FROM models") == rows(b.db, "SELECT * FROM models")
    # A changed file is scanned again, beside its old verdicts, under the same model row.
    face = b.videos / "face.mp4"
    st = face.stat()
    os.utime(face, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    r = _rescan(b, "--jsonl", tmp_path / "b.jsonl")
    assert r.exit_code == 3, r.output
    assert rows(b.db, "SELECT n_skipped, n_ok FROM scans WHERE id = 3") == [(2, 1)]
    (line,) = [json.loads(x) for x in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert (line["label"], line["model_id"], line["model_validation"]) == ("fake", model_id, "none")
    faces = rows(b.db, "SELECT vd.score, vd.scan_id FROM verdicts vd JOIN videos v ON v.id = vd.video_id "
                       "WHERE v.path LIKE '%/face.mp4' AND vd.identity IS NULL ORDER BY vd.id")  # fmt: skip
    assert [s for _, s in faces] == [1, 3]
    assert abs(faces[1][0] - faces[0][0]) < 0.05  # the same model on the same two frames
    assert rows(b.db, "SELECT scan_id FROM latest_verdicts WHERE path LIKE '%/face.mp4'") == [(3,)]
    assert rows(b.db, "SELECT COUNT(*) FROM models") == [(1,)]


def test_migration_steps_are_registered_and_idempotent(v1):
    """MIGRATIONS[n] are the steps init_db runs; run again (a crash between steps), they change nothing more."""
    assert store.MIGRATIONS == {1: store._migrate_1_to_2, 2: store._migrate_2_to_3, 3: store._migrate_3_to_4}
    assert store.DB_SCHEMA_VERSION == 4
    engine = store.make_engine(v1.db)
    try:
        assert store.init_db(engine) == 4
        once = rows(v1.db, "SELECT * FROM scans"), rows(v1.db, "SELECT * FROM models"), old_rows(v1.db)
        with engine.begin() as conn:
            store.MIGRATIONS[1](conn)
            store.MIGRATIONS[2](conn)
            store.MIGRATIONS[3](conn)
    finally:
        engine.dispose()
    assert (rows(v1.db, "SELECT * FROM scans"), rows(v1.db, "SELECT * FROM models"), old_rows(v1.db)) == once


# -- version 2 -> 3 ---------------------------------------------------------------------------------


@pytest.fixture
def v2(tmp_path) -> V1Store:
    return load_v1(tmp_path / "v2", DUMP_V2)


def columns(dbp: Path) -> dict[str, list[tuple]]:
    """Each table's columns as (name, type, not null, default, primary key), in order."""
    tables = [t for (t,) in rows(dbp, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    return {t: [r[1:] for r in rows(dbp, f"PRAGMA table_info({t})")] for t in tables}


def test_the_v2_fixture_is_a_v2_store_of_the_same_files(v1, v2):
    """Written by the release before the lease: version 2 columns, no lease, the v1 fixture's model and files."""
    assert rows(v2.db, "SELECT value FROM meta WHERE key = 'schema_version'") == [("2",)]
    scan_cols = [r[1] for r in rows(v2.db, "PRAGMA table_info(scans)")]
    assert "device_name" in scan_cols and "lease_until" not in scan_cols
    assert rows(v2.db, "SELECT status, n_found, n_ok, n_no_face, n_error, n_flagged FROM scans") == [
        ("done", 3, 1, 1, 1, 1)
    ]
    assert rows(v2.db, "SELECT model_id FROM models") == rows(v1.db, "SELECT model_id FROM models")
    args = json.loads(rows(v2.db, "SELECT args FROM scans")[0][0])
    got = rows(v2.db, "SELECT path, size, mtime_ns, content_hash, status, settings_key FROM videos ORDER BY path")
    assert [Path(p).name for p, *_ in got] == ["broken.mp4", "face.mp4", "no_face.mp4"]
    for path, size, mtime_ns, chash, status, key in got:
        st = os.stat(path)
        assert (st.st_size, st.st_mtime_ns, content_hash(path)) == (size, mtime_ns, chash)
        assert key == key_for_status(args, status)  # written by the scan itself, not by a migration
    assert rows(v2.db, "SELECT label FROM verdicts WHERE identity IS NULL ORDER BY video_id") == [("fake",), ("no_face",)]


def test_v2_store_upgrades_to_4_keeping_every_row(v2, tmp_path):
    before, scans_before = old_rows(v2.db, since=2), rows(v2.db, "SELECT * FROM scans")
    r = cli("query", "SELECT COUNT(*) FROM videos", "--db", v2.db)
    assert r.exit_code == 4 and "schema version 2, older than this acfd's 4" in r.stderr
    r = cli("schema", "--upgrade", "--db", v2.db)
    assert r.exit_code == 0, r.output
    assert f"upgraded {v2.db} from schema version 2 to 4" in r.stderr and "lease_until" in r.stdout
    after = old_rows(v2.db, since=2)
    assert after.pop("meta") == [("schema_version", "4")] and before.pop("meta") == [("schema_version", "2")]
    assert after == before
    # The old scan keeps every value and gets no lease (NULL): it is judged by host and pid.
    assert rows(v2.db, "SELECT * FROM scans") == [(*scans_before[0], None)]
    # The migrated store has the layout of a new one: the same columns, types and order in every table.
    fresh = tmp_path / "fresh.sqlite"
    store.open_store(fresh).dispose()
    assert columns(v2.db) == columns(fresh)
    assert columns(v2.db)["scans"][-1] == ("lease_until", "DATETIME", 0, None, 0)
    assert columns(v2.db)["videos"][-1] == ("etag", "TEXT", 0, None, 0)
    assert rows(v2.db, "SELECT COUNT(*) FROM videos WHERE etag IS NOT NULL") == [(0,)]
    assert {"windows", "stream_events"} <= set(columns(v2.db))


def test_an_old_running_scan_is_judged_by_host_and_pid_after_the_migration(v2):
    """A v2 scan left running (no lease) on this host by a process that is gone becomes interrupted."""
    import socket
    import subprocess
    import sys

    from acfd.scanner.store import Store

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    con = sqlite3.connect(v2.db)
    con.execute("UPDATE scans SET status = 'running', finished_at = NULL, host = ?, pid = ?",
                (socket.gethostname(), gone.pid))  # fmt: skip
    con.execute("INSERT INTO scans (started_at, status, args, model_id, strategy, threshold, backend, device, host, "
                "pid, acfd_version, n_found, n_ok, n_no_face, n_error, n_skipped, n_flagged, n_frames, n_faces, "
                "video_seconds) SELECT started_at, 'running', args, model_id, strategy, threshold, backend, device, "
                "'another-host', pid, acfd_version, 0, 0, 0, 0, 0, 0, 0, 0, 0 FROM scans")  # fmt: skip
    con.commit()
    con.close()
    engine = store.open_store(v2.db)  # migrates
    try:
        assert Store(engine).mark_dead_scans() == 1
    finally:
        engine.dispose()
    got = rows(v2.db, "SELECT id, status, lease_until, finished_at IS NOT NULL FROM scans ORDER BY id")
    assert got == [(1, "interrupted", None, 1), (2, "running", None, 0)]


def test_scan_resumes_across_the_2_to_3_migration(v2):
    """A plain scan migrates the v2 store, skips the unchanged files, and its own row has a lease."""
    before = old_rows(v2.db, since=2)
    r = _rescan(v2)
    assert r.exit_code == 3, r.output  # the stored flag (face.mp4) and error (broken.mp4) still count
    assert "of the skipped (unchanged since scanned): 1 flagged, 1 errors" in r.stderr
    assert rows(v2.db, "SELECT id, status, n_found, n_skipped, n_ok, n_error FROM scans ORDER BY id") == [
        (1, "done", 3, 0, 1, 1), (2, "done", 3, 3, 0, 0)
    ]  # fmt: skip
    assert rows(v2.db, "SELECT id FROM scans WHERE lease_until IS NULL") == [(1,)]
    ((started, lease),) = rows(v2.db, "SELECT started_at, lease_until FROM scans WHERE id = 2")
    assert lease > started  # the new scan held a lease (its text sorts as its time: both UTC)
    after = old_rows(v2.db, since=2)
    for t in ("videos", "detections", "verdicts", "attention_masks", "models"):
        assert after[t] == before[t], t
