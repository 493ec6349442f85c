"""`acfd-scan query` / `schema`: read-only SQL on the verdict store, store checks, and docs/sql.md's examples."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from acfd.scanner.cli import main
from acfd.scanner.query import (
    QueryResult,
    format_result,
    open_readonly,
    run_query,
    schema_from_db,
    schema_from_models,
)
from acfd.schemas import db as store
from acfd.schemas.db import StoreError
from click.testing import CliRunner

from tests.report_helpers import ARCHIVE, MODEL_A, MODEL_B, XSS_NAME, populate

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "sql.md"


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    return populate(tmp_path_factory.mktemp("store") / "acfd.sqlite")


@pytest.fixture
def store_copy(populated, tmp_path):
    """A private copy of the populated store (for tests that try to damage it)."""
    dst = tmp_path / "copy.sqlite"
    shutil.copyfile(populated.path, dst)
    return dst


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _counts(path: Path) -> dict[str, int]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in store.Base.metadata.tables}
    finally:
        con.close()


def _sqlite(path: Path, *statements: str) -> Path:
    """Run ``statements`` on the SQLite file ``path`` (created if missing) and commit."""
    con = sqlite3.connect(path)
    try:
        for sql in statements:
            con.execute(sql)
        con.commit()
    finally:
        con.close()
    return path


def _names(path: Path) -> list[str]:
    con = sqlite3.connect(path)
    try:
        return [r[0] for r in con.execute("SELECT name FROM sqlite_master")]
    finally:
        con.close()


def cli(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input)


# --- reading ------------------------------------------------------------------------------------


def test_query_formats_return_the_rows(populated):
    sql = "SELECT path, label, score FROM latest_verdicts WHERE label = 'fake' ORDER BY score DESC"
    r = cli("query", sql, "--db", str(populated.path), "--format", "json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [(x["path"], x["score"]) for x in rows] == populated.flagged
    assert {x["label"] for x in rows} == {"fake"}

    r = cli("query", sql, "--db", str(populated.path), "--format", "csv")
    assert r.exit_code == 0, r.output
    back = list(csv.reader(io.StringIO(r.stdout)))
    assert back[0] == ["path", "label", "score"]
    assert [(p, float(s)) for p, _, s in back[1:]] == populated.flagged

    r = cli("query", sql, "--db", str(populated.path))
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["path", "label", "score"]
    assert f"{ARCHIVE}/{XSS_NAME}" in lines[4] and lines[4].rstrip().endswith("10.5")
    assert lines[-1] == "(3 rows)"


def test_file_names_with_uri_characters(populated, tmp_path):
    odd = tmp_path / "a ?#%20&mode=rw.sqlite"  # must not be read as URI syntax (or as mode=rw)
    shutil.copyfile(populated.path, odd)
    before = _digest(odd)
    r = cli("query", "SELECT COUNT(*) AS n FROM videos", "--db", str(odd), "--format", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == [{"n": 13}]
    r = cli("query", "DELETE FROM videos", "--db", str(odd))
    assert r.exit_code == 4, r.output
    assert r.stderr.startswith("Error: refused: acfd-scan query is read-only") and r.stdout == ""
    assert _digest(odd) == before


def test_query_reads_sql_from_stdin_and_shows_blobs_as_hex(populated):
    r = cli("query", "-", "--db", str(populated.path), "--format", "json",
            input="SELECT path_key FROM videos WHERE path LIKE '%a_fake.mp4' ORDER BY id LIMIT 1")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert bytes.fromhex(json.loads(r.stdout)[0]["path_key"]) == f"{ARCHIVE}/a_fake.mp4".encode()


def test_table_output_neutralises_terminal_escapes():
    res = QueryResult(["path", "blob", "x"], [("/a/\x1b[2Jevil\n.mp4", b"\x00" * 100, 1.0 / 3)])
    out = format_result(res, "table")
    assert "\x1b" not in out and "\\x1b[2Jevil\\x0a.mp4" in out
    assert "<blob 100 B>" in out and "0.333333" in out
    # Machine formats keep the exact value.
    assert json.loads(format_result(res, "json"))[0]["path"] == "/a/\x1b[2Jevil\n.mp4"


# --- writes are refused ---------------------------------------------------------------------------


# Writes `acfd-scan query` must refuse, changing nothing; tests/test_postgres.py runs them on PostgreSQL too.
WRITE_ATTEMPTS = [
    "INSERT INTO meta (key, value) VALUES ('x', 'y')",
    "UPDATE verdicts SET label = 'real' WHERE label = 'fake'",
    "DELETE FROM videos",
    "DROP TABLE detections",
    "DROP VIEW latest_verdicts",
    "CREATE TABLE t (x)",
    "CREATE TEMP TABLE t (x)",
    "ALTER TABLE videos ADD COLUMN x TEXT",
    "WITH x AS (SELECT 1) INSERT INTO meta SELECT 'k', 'v' FROM x",
    "REPLACE INTO meta (key, value) VALUES ('schema_version', '99')",
    "PRAGMA query_only = OFF",
    "PRAGMA journal_mode = DELETE",
    "PRAGMA wal_checkpoint(TRUNCATE)",
    "VACUUM",
    "REINDEX",
    "ANALYZE",
    "SELECT load_extension('/tmp/x.so')",
]


@pytest.mark.parametrize("sql", WRITE_ATTEMPTS)
def test_query_refuses_writes_and_changes_nothing(store_copy, sql):
    before, counts = _digest(store_copy), _counts(store_copy)
    r = cli("query", sql, "--db", str(store_copy))
    assert r.exit_code == 4
    assert r.stdout == ""
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "read-only" in err
    assert _digest(store_copy) == before and _counts(store_copy) == counts


def test_attach_cannot_create_or_write_another_file(store_copy, tmp_path):
    before = _digest(store_copy)
    other = tmp_path / "other.sqlite"
    for sql in (
        f"ATTACH DATABASE '{other}' AS o",
        f"ATTACH DATABASE 'file:{other}?mode=rwc' AS o",
        f"VACUUM INTO '{other}'",
    ):
        r = cli("query", sql, "--db", str(store_copy))
        assert r.exit_code == 4 and "read-only" in r.stderr, (sql, r.output)
    assert not other.exists()
    assert _digest(store_copy) == before


def test_one_statement_at_a_time(store_copy):
    before = _digest(store_copy)
    r = cli("query", "SELECT 1; DELETE FROM videos", "--db", str(store_copy))
    assert r.exit_code == 4 and "one statement at a time" in r.stderr
    assert _digest(store_copy) == before and _counts(store_copy)["videos"] > 0


def test_sql_errors_are_one_line(populated):
    r = cli("query", "SELECT nope FROM videos", "--db", str(populated.path))
    assert r.exit_code == 4 and r.stderr.strip() == "Error: query failed: no such column: nope"


def test_runaway_query_stops_at_timeout(populated):
    sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c"
    r = cli("query", sql, "--db", str(populated.path), "--timeout", "0.3")
    assert r.exit_code == 4 and "interrupted" in r.stderr


def test_introspection_pragmas_are_allowed(populated):
    ro = open_readonly(populated.path)
    try:
        cols = {row[1] for row in run_query(ro, "PRAGMA table_info(videos)").rows}
        assert {"path", "path_key", "status", "error"} <= cols
        assert run_query(ro, "PRAGMA journal_mode").rows == [("wal",)]
    finally:
        ro.dispose()


# --- what is not a readable store ---------------------------------------------------------------


def _one_line_error(r, *needles: str) -> None:
    assert r.exit_code == 4, r.output
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err


def test_missing_file(tmp_path):
    r = cli("query", "SELECT 1", "--db", str(tmp_path / "nope.sqlite"))
    _one_line_error(r, "no verdict store at")
    assert not (tmp_path / "nope.sqlite").exists()  # read-only: never created


def test_unrelated_sqlite_file_is_refused(tmp_path):
    other = _sqlite(tmp_path / "other.sqlite", "CREATE TABLE videos (name TEXT)")
    before = _digest(other)
    for cmd in (["query", "SELECT * FROM videos"], ["report", "--out", str(tmp_path / "r")], ["schema"]):
        _one_line_error(cli(*cmd, "--db", str(other)), "not an acfd verdict store", "videos")
    assert _digest(other) == before


def test_non_sqlite_file_is_refused(tmp_path):
    bogus = tmp_path / "notes.sqlite"
    bogus.write_bytes(b"this is not a database, just some text that is long enough " * 20)
    _one_line_error(cli("query", "SELECT 1", "--db", str(bogus)), "not a readable SQLite", "file is not a database")
    _one_line_error(cli("report", "--db", str(bogus), "--out", str(tmp_path / "r")), "not a readable SQLite")
    assert not (tmp_path / "r").exists()


def test_meta_without_schema_version_is_refused(tmp_path):
    p = _sqlite(tmp_path / "m.sqlite", "CREATE TABLE meta (key TEXT, value TEXT)")
    _one_line_error(cli("query", "SELECT 1", "--db", str(p)), "not an acfd verdict store", "schema_version")
    _sqlite(p, "INSERT INTO meta VALUES ('schema_version', 'abc')")
    for cmd in (["query", "SELECT 1"], ["schema", "--upgrade"]):
        _one_line_error(cli(*cmd, "--db", str(p)), "schema_version 'abc' is not a number")


def test_newer_store_is_refused_everywhere(store_copy, tmp_path):
    _sqlite(store_copy, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    before = _digest(store_copy)
    for cmd in (["query", "SELECT 1"], ["schema"], ["report", "--out", str(tmp_path / "r")]):
        _one_line_error(cli(*cmd, "--db", str(store_copy)), "schema version 99 is newer", "upgrade acfd")
    # The scanner's own opening (init_db) refuses it too, without touching it.
    with pytest.raises(StoreError, match="newer than this acfd"):
        store.open_store(store_copy)
    assert _digest(store_copy) == before


def test_older_store_is_refused_then_upgraded(store_copy, monkeypatch):
    """Simulate the next schema version: readers refuse the old store; `schema --upgrade` migrates it."""
    cur = store.DB_SCHEMA_VERSION
    nxt = cur + 1

    def next_step(conn):
        conn.exec_driver_sql("ALTER TABLE videos ADD COLUMN reviewer_note TEXT")

    monkeypatch.setattr(store, "DB_SCHEMA_VERSION", nxt)
    monkeypatch.setitem(store.MIGRATIONS, cur, next_step)
    before = _digest(store_copy)
    r = cli("query", "SELECT COUNT(*) FROM videos", "--db", str(store_copy))
    _one_line_error(r, f"schema version {cur}, older than this acfd's {nxt}", "acfd-scan schema --upgrade")
    assert _digest(store_copy) == before  # refusing does not migrate

    r = cli("schema", "--upgrade", "--db", str(store_copy))
    assert r.exit_code == 0, r.output
    assert "upgraded" in r.stderr and f"from schema version {cur} to {nxt}" in r.stderr
    assert "reviewer_note" in r.stdout
    con = sqlite3.connect(store_copy)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(nxt),)
    assert con.execute("SELECT COUNT(*) FROM videos WHERE reviewer_note IS NULL").fetchone()[0] > 0
    con.close()
    r = cli("query", "SELECT COUNT(*) AS n FROM latest_verdicts", "--db", str(store_copy), "--format", "json")
    assert r.exit_code == 0 and json.loads(r.stdout) == [{"n": 7}]


def test_upgrade_refuses_a_foreign_database(tmp_path):
    other = _sqlite(tmp_path / "other.sqlite", "CREATE TABLE t (x)")
    _one_line_error(cli("schema", "--upgrade", "--db", str(other)), "not an acfd verdict store")
    assert _names(other) == ["t"]  # nothing was added
    # A path with no file is refused, and not created.
    _one_line_error(cli("schema", "--upgrade", "--db", str(tmp_path / "none.sqlite")), "no verdict store at")
    assert list(tmp_path.iterdir()) == [other]


@pytest.mark.parametrize(
    "url,needle",
    [
        ("://x", "is not a valid database URL"),
        ("postgresql://analyst:s3cret@db:notaport/acfd", "is not a valid database URL"),
        ("postgresql://analyst:s3cret@db/acfd", "cannot open database postgresql://analyst:***@db/acfd"),
        ("sqlite:///:memory:", "in-memory database"),
    ],
)
def test_bad_urls_are_one_line_without_the_password(url, needle):
    r = cli("query", "SELECT 1", "--db", url)
    _one_line_error(r, needle)
    assert "s3cret" not in r.output


# --- schema ---------------------------------------------------------------------------------------


def test_schema_from_models_and_from_db_agree(populated, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no acfd.sqlite here: the models' schema is shown
    r = cli("schema")
    assert r.exit_code == 0, r.output
    assert "(from the models)" in r.stdout
    for t in ("table scans", "table videos", "table detections", "table verdicts", "table attention_masks",
              "view latest_verdicts"):  # fmt: skip
        assert t in r.stdout
    r2 = cli("schema", "--db", str(populated.path))
    assert r2.exit_code == 0, r2.output
    assert f"schema version {store.DB_SCHEMA_VERSION}" in r2.stdout.splitlines()[0]
    ro = open_readonly(populated.path)
    try:
        live = {(x.kind, x.name): [c.name for c in x.columns] for x in schema_from_db(ro)}
    finally:
        ro.dispose()
    models = {(x.kind, x.name): [c.name for c in x.columns] for x in schema_from_models()}
    assert live == models
    assert ("view", "latest_verdicts") in live and "label" in live[("view", "latest_verdicts")]
    # An explicit --db that does not exist is an error, not a silent fallback.
    _one_line_error(cli("schema", "--db", str(tmp_path / "missing.sqlite")), "no verdict store")


# --- docs/sql.md ------------------------------------------------------------------------------------


def doc_queries() -> dict[str, str]:
    """Every ```sql block of docs/sql.md, keyed by its first comment line."""
    blocks = re.findall(r"```sql\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    out = {}
    for b in blocks:
        first = b.strip().splitlines()[0]
        assert first.startswith("-- "), f"each example starts with a '-- question' line: {first!r}"
        assert sqlite3.complete_statement(b), f"a complete statement: {first}"  # run_query refuses two
        out[first[3:]] = b
    return out


def test_docs_examples_return_the_expected_rows(populated):
    check_doc_examples(populated.path, populated)


def check_doc_examples(db: object, populated) -> None:
    """Run every example of docs/sql.md on the store ``db`` (``populated``'s contents) and check its rows."""
    queries = doc_queries()
    ro = open_readonly(db)
    try:
        res = {k: run_query(ro, q) for k, q in queries.items()}  # every example runs, read-only
    finally:
        ro.dispose()

    def rows(prefix: str) -> list[dict]:
        (key,) = [k for k in res if k.startswith(prefix)]
        return [dict(zip(res[key].columns, r, strict=True)) for r in res[key].rows]

    flagged = rows("flagged videos")
    assert [(r["path"], r["score"]) for r in flagged] == populated.flagged
    assert [r["model_id"] for r in flagged] == [MODEL_B, MODEL_A, MODEL_A]
    assert flagged[0]["margin"] == pytest.approx(14.0 - 9.05)

    multi = rows("videos with more than one identity")
    assert [(r["path"], r["identity"], r["label"]) for r in multi] == [
        (f"{ARCHIVE}/two_people.mp4", 0, "real"),
        (f"{ARCHIVE}/two_people.mp4", 1, "fake"),
    ]
    assert [r["score"] for r in multi] == [2.1, 12.0]

    errors = rows("errors")
    assert [(r["path"], r["scan_id"]) for r in errors] == [(f"{ARCHIVE}/broken.mp4", 1)]
    assert "Invalid data" in errors[0]["error"]

    assert [r["path"] for r in rows("no-face videos")] == [f"{ARCHIVE}/empty_room.mp4"]

    changed_scans = rows("what changed between two scans")
    assert [(r["path"], r["label_before"], r["score_before"], r["label_after"], r["score_after"])
            for r in changed_scans] == [(f"{ARCHIVE}/c_real.mp4", "real", 8.0, "fake", 9.6)]  # fmt: skip

    changed_models = rows("what changed between two models")
    # Model A's latest verdict of c_real.mp4 is scan 3's (8.1), not scan 1's.
    assert [(r["path"], r["old_label"], r["old_score"], r["new_label"], r["new_score"])
            for r in changed_models] == [(f"{ARCHIVE}/c_real.mp4", "real", 8.1, "fake", 9.6)]  # fmt: skip

    over_time = rows("one video's face scores over time")
    assert len(over_time) == 16 and {r["identity"] for r in over_time} == {0, 1}
    ident1 = [r["time_s"] for r in over_time if r["identity"] == 1]
    assert ident1 == sorted(ident1) and len(ident1) == 8

    assert [r["id"] for r in rows("the scans")] == [3, 2, 1]
    assert len(res) == 8, "a new example needs its expected values here"


def test_docs_describe_every_table_and_column():
    text = DOC.read_text(encoding="utf-8")
    missing = [
        f"{t.name}.{c.name}"
        for t in store.Base.metadata.tables.values()
        for c in [*t.columns]
        if f"`{c.name}`" not in text
    ]
    missing += [f"table {t}" for t in store.Base.metadata.tables if f"`{t}`" not in text]
    missing += [f"label {x}" for x in store.LABELS if f"`{x}`" not in text]
    missing += [f"status {x}" for x in store.VIDEO_STATUSES + store.SCAN_STATUSES if f"`{x}`" not in text]
    assert not missing, missing


def test_init_db_refuses_foreign_and_non_sqlite_files(tmp_path):
    """The scanner's writable opening (``open_store``) never adds acfd tables to someone else's database."""
    other = _sqlite(tmp_path / "other.sqlite", "CREATE TABLE videos (name TEXT)")
    with pytest.raises(StoreError, match=r"not an acfd verdict store \(it has tables videos") as e:
        store.open_store(other)
    assert "\n" not in str(e.value)
    assert _names(other) == ["videos"]
    bogus = tmp_path / "bogus.sqlite"
    bogus.write_bytes(b"not a database at all " * 50)
    with pytest.raises(StoreError, match="file is not a database") as e:
        store.open_store(bogus)
    assert "\n" not in str(e.value)
    # An empty file or a new path is a new store.
    store.open_store(tmp_path / "new.sqlite").dispose()
    ro = open_readonly(tmp_path / "new.sqlite")
    assert ro.schema_version == store.DB_SCHEMA_VERSION
    ro.dispose()


@pytest.mark.parametrize(
    "sql,ok",
    [
        ("SELECT 1", True),
        ("  with x AS (SELECT 1) SELECT * FROM x", True),
        ("-- flagged\nSELECT path FROM latest_verdicts", True),
        ("/* a\ncomment */ EXPLAIN SELECT 1", True),
        ("VALUES (1)", True),
        ("INSERT INTO meta VALUES ('a', 'b')", False),
        ("delete from videos", False),
        ("-- SELECT\nDROP TABLE videos", False),
        ("select1", False),
        ("CREATE TABLE x AS SELECT 1", False),
    ],
)
def test_other_databases_accept_only_read_statements(sql, ok):
    """Non-SQLite stores have no authorizer: only statements that start as reads reach the database
    (and they run in a transaction that is rolled back, READ ONLY on PostgreSQL)."""
    from acfd.scanner.query import _READ_STATEMENT

    assert bool(_READ_STATEMENT.match(sql)) is ok


def test_readme_lists_the_tested_examples():
    """The README's example queries are the ones test_docs_examples_return_the_expected_rows runs."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sql\n(.*?)```", readme, re.S)
    assert len(blocks) >= 6
    assert sorted(blocks) == sorted(doc_queries().values())
