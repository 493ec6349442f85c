"""Every store schema change ships a migration, tested here on a store written by the release before it.

``tests/data/store_v1.sql`` is the SQL dump of a real schema-version-1 store, written by acfd at commit
13e010e (the release before the model card) scanning the files in ``tests/data/store_v1/`` (a face
video, a video without a face, a broken file) with ``store_v1/model.onnx``; ``tests/data/README.md``
says how it was made. The files are kept, not re-made, so that their bytes (and so the model id, the
sizes and the content hashes the dump holds) stay those of that scan whatever the installed torch,
PyAV or acfd version would write today.

Checked: readers refuse the old store with the upgrade hint; ``acfd-scan schema --upgrade`` and a
plain scan (``init_db``) both migrate it to version 2, the model row becoming unvalidated with no card
and every old row and verdict unchanged; and a scan resumes across the migration (the unchanged
videos are skipped, a changed one is scanned again beside the old verdicts).
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
FILES = DATA / "store_v1"
# The old tables whose rows must come through a migration unchanged (``models`` gains columns).
OLD_TABLES = ("meta", "scans", "videos", "detections", "verdicts", "attention_masks", "models")
V1_MODEL_COLUMNS = ["model_id", "path", "backend", "meta_json", "first_seen"]


@dataclass
class V1Store:
    db: Path
    videos: Path
    model: Path


def load_v1(root: Path) -> V1Store:
    """The v1 dump as an SQLite file under ``root``, its files copied beside it, with the videos' stored
    paths moved to the copies and the copies' mtimes set to the stored ones (as if never moved)."""
    root.mkdir(parents=True)
    shutil.copytree(FILES, root / "files")
    videos, model = root / "files" / "videos", root / "files" / "model.onnx"
    dbp = root / "acfd.sqlite"
    con = sqlite3.connect(dbp)
    try:
        con.executescript(DUMP.read_text(encoding="utf-8"))
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


# Columns that version 2 added (everything else existed in version 1).
V2_COLUMNS = {"models": {"validation", "card_summary", "card_json"}, "scans": {"device_name"},
              "videos": {"settings_key"}}


def old_rows(dbp: Path) -> dict[str, list[tuple]]:
    """Every row of the version-1 tables, in version 1's columns (for before/after comparisons)."""
    out = {}
    for t in OLD_TABLES:
        names = [r[1] for r in rows(dbp, f"PRAGMA table_info({t})") if r[1] not in V2_COLUMNS.get(t, set())]
        cols = ", ".join(names) if t != "models" else ", ".join(V1_MODEL_COLUMNS)
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
        assert "schema version 1, older than this acfd's 2" in line and "acfd-scan schema --upgrade" in line
    assert digest(v1.db) == before  # refusing migrates nothing


def _check_migrated(v1: V1Store, before: dict[str, list[tuple]], new_scans: int = 0) -> None:
    """Version 2, the model unvalidated without a card, every old row as it was."""
    after = old_rows(v1.db)
    assert after["meta"] == [("schema_version", "2")]
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
    assert f"upgraded {v1.db} from schema version 1 to 2" in r.stderr
    assert "card_json" in r.stdout and "validation" in r.stdout
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


def test_migration_step_is_registered_and_idempotent(v1):
    """MIGRATIONS[1] is the step init_db runs; run twice (a crash between steps), it changes nothing more."""
    assert store.MIGRATIONS[1] is store._migrate_1_to_2 and store.DB_SCHEMA_VERSION == 2
    engine = store.make_engine(v1.db)
    try:
        assert store.init_db(engine) == 2
        once = old_rows(v1.db), rows(v1.db, "SELECT validation, card_summary, card_json FROM models")
        with engine.begin() as conn:
            store.MIGRATIONS[1](conn)
    finally:
        engine.dispose()
    assert (old_rows(v1.db), rows(v1.db, "SELECT validation, card_summary, card_json FROM models")) == once
