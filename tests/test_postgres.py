"""The verdict store on a real PostgreSQL server (a throwaway cluster: tests/pg_helpers.py, conftest.py).

Covered here on PostgreSQL: schema creation, version check and migration (stores of schema versions 1
and 2, as those releases made them on PostgreSQL, holding the rows of tests/data's dumps), scans and
writers starting at once, the lease with the server's timestamps, read-only ``acfd-scan query`` (the
SQLite list of writes, plus PostgreSQL's own escapes, as a superuser: refused, and nothing changes),
docs/sql.md's SELECT-only role recipe, the docs' (and README's) example queries with the same rows,
``acfd-scan report`` (the same page as from SQLite), a scan killed with SIGKILL and resumed, two scans
writing one database at once, passwords never shown or kept, and a missing driver. ``test_store.py``
runs its table, constraint and view tests on PostgreSQL too.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from acfd.scanner.cli import main
from acfd.scanner.store import Store
from acfd.schemas import db as store
from acfd.schemas.artifact import ArtifactMeta
from acfd.schemas.settings import key_for_status
from click.testing import CliRunner
from sqlalchemy import Column, MetaData, Table, create_engine, select

from tests import pg_helpers as PG
from tests import scan_helpers as H
from tests.report_helpers import populate
from tests.test_migrations import DUMP_V2, load_v1
from tests.test_query import WRITE_ATTEMPTS, check_doc_examples

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[1]
SECRET = "s3cret-pw"  # put in URLs (trust auth ignores it); must never be printed or stored


def cli(*args: object, input: str | None = None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def _one_line_error(r, *needles: str) -> str:
    assert r.exit_code == 4, r.output
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    assert SECRET not in r.output
    return err


def _meta() -> ArtifactMeta:
    return ArtifactMeta(input_size=64, attention_size=8, preset="test-tiny", threshold=9.05)


# --- schema, versions, concurrency, lease ---------------------------------------------------------------


def test_new_store_schema_on_postgresql(pg_db):
    engine = store.open_store(pg_db)
    try:
        assert store.init_db(engine) == store.DB_SCHEMA_VERSION  # idempotent
        with engine.connect() as c:
            assert c.exec_driver_sql("SHOW TimeZone").scalar() == "UTC"  # the server's is Pacific/Chatham
    finally:
        engine.dispose()
    types = dict(PG.rows(pg_db, "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
                                "WHERE table_schema = 'public'"))  # fmt: skip
    assert types["scans.lease_until"] == types["videos.scanned_at"] == "timestamp with time zone"
    assert types["videos.path_key"] == types["attention_masks.crop_jpeg"] == "bytea"
    assert types["detections.score"] == "double precision" and types["videos.size"] == "bigint"
    assert PG.rows(pg_db, "SELECT table_name FROM information_schema.views WHERE table_schema = 'public'") == [
        ("latest_verdicts",)
    ]
    assert PG.rows(pg_db, "SELECT value FROM meta") == [(str(store.DB_SCHEMA_VERSION),)]
    # A newer store is refused by the writer and every reader, and left as it was.
    PG.rows(pg_db, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(store.StoreError, match="schema version 99 is newer"):
        store.open_store(pg_db).dispose()
    _one_line_error(cli("query", "SELECT 1", "--db", pg_db), "schema version 99 is newer", "upgrade acfd")
    assert PG.rows(pg_db, "SELECT value FROM meta") == [("99",)]
    # Someone else's database: never add our tables to it.
    PG.rows(pg_db, "DROP TABLE meta CASCADE")
    with pytest.raises(store.StoreError, match="is not an acfd verdict store"):
        store.open_store(pg_db).dispose()


def test_scans_starting_at_once_create_the_schema_and_register_the_model_once(pg_db):
    """Four scans open a new database at the same instant: one creates the schema (advisory lock), the
    others wait and find it; all register the same model (ON CONFLICT DO NOTHING) and start."""
    n = 4
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []
    ids: list[int] = []

    def start() -> None:
        engine = store.make_engine(pg_db)
        try:
            barrier.wait()
            store.init_db(engine)
            st = Store(engine)
            st.mark_dead_scans()
            st.register_model("m1", "m.onnx", "onnxruntime", _meta())
            ids.append(st.start_scan("m1", "confident", 9.05, "onnxruntime", "cpu", {}, "0"))
        except BaseException as e:  # noqa: BLE001  (reported below)
            errors.append(e)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=start) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(ids) == [1, 2, 3, 4]
    assert PG.rows(pg_db, "SELECT model_id, validation FROM models") == [("m1", "none")]
    assert PG.rows(pg_db, "SELECT key, value FROM meta") == [("schema_version", str(store.DB_SCHEMA_VERSION))]


def test_lease_with_postgresql_timestamps(pg_db):
    """The lease is judged in absolute time whatever the zones: the server's is not UTC, the tests'
    own session is the server's, acfd's sessions are UTC."""
    engine = store.open_store(pg_db)
    st = Store(engine)
    try:
        st.register_model("m1", "m.onnx", "onnxruntime", _meta())
        before = store.utcnow()
        sid = st.start_scan("m1", "confident", 9.05, "onnxruntime", "cpu", {}, "0")
        other = st.start_scan("m1", "confident", 9.05, "onnxruntime", "cpu", {}, "0")
        with store.session(engine) as s:
            lease = s.get(store.Scan, sid).lease_until
        assert lease.utcoffset() == dt.timedelta(0)  # aware, UTC
        assert before + dt.timedelta(seconds=59) < lease < store.utcnow() + dt.timedelta(seconds=61)
        # Read by a session in the server's zone (+12:45/+13:45): another offset, the same instant.
        ((raw,),) = PG.rows(pg_db, "SELECT lease_until FROM scans WHERE id = %s", sid)
        assert raw.utcoffset() >= dt.timedelta(hours=12, minutes=45) and raw == lease
        # Held with a short lease: renewed on time; a live lease is never taken for dead.
        with st.hold_lease(sid, lease_s=3.0) as holder:  # renewed now, then every second
            deadline = time.monotonic() + 30
            while holder.renewed < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert st.mark_dead_scans() == 0
        assert holder.renewed >= 2 and holder.failed == 0
        # Run out (as if its process were killed): the next scan marks it interrupted, finished at its lease's end.
        past = store.utcnow() - dt.timedelta(seconds=5)
        PG.rows(pg_db, "UPDATE scans SET lease_until = %s WHERE id = %s", past, sid)
        assert st.mark_dead_scans() == 1
        got = PG.rows(pg_db, "SELECT id, status, finished_at = lease_until FROM scans ORDER BY id")
        assert got == [(sid, "interrupted", True), (other, "running", None)]
        assert st.mark_dead_scans() == 0
    finally:
        engine.dispose()


# --- migration -----------------------------------------------------------------------------------------------

# What each old schema version lacked: today's columns added since (each migration appends them) and tables.
ADDED_SINCE = {
    1: {"models": ["validation", "card_summary", "card_json"], "scans": ["device_name", "lease_until"],
        "videos": ["settings_key", "etag"]},
    2: {"scans": ["lease_until"], "videos": ["etag"]},
}  # fmt: skip
TABLES_SINCE_4 = ("windows", "stream_events")


def old_pg_store(cluster: PG.PgCluster, version: int, sqlite_db: Path) -> str:
    """A PostgreSQL database laid out as acfd at schema ``version`` made it (today's tables less the
    columns and tables added since: on SQLite the dumps of those releases have exactly that layout),
    holding every row of the SQLite store ``sqlite_db`` of that version; returns its URL."""
    url = cluster.url(cluster.create_database())
    engine = store.open_store(url)
    dropped = ADDED_SINCE[version]
    src = create_engine(f"sqlite:///{sqlite_db}")
    try:
        with engine.begin() as c:
            for t in TABLES_SINCE_4:
                c.exec_driver_sql(f"DROP TABLE {t}")
            for t, cols in dropped.items():
                c.exec_driver_sql(f"ALTER TABLE {t} " + ", ".join(f"DROP COLUMN {col}" for col in cols))
            c.exec_driver_sql("DELETE FROM meta")
            for table in store.Base.metadata.sorted_tables:
                if table.name in TABLES_SINCE_4:
                    continue
                cols = [col for col in table.columns if col.name not in dropped.get(table.name, ())]
                with src.connect() as s:  # typed columns: SQLite's text times come back as datetimes
                    data = [dict(r) for r in s.execute(select(*cols)).mappings()]
                if data:
                    c.execute(Table(table.name, MetaData(), *(Column(col.name, col.type) for col in cols)).insert(), data)
                if "id" in table.columns:  # as if the rows had been inserted one by one
                    c.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                                      f"(SELECT COALESCE(MAX(id), 0) + 1 FROM {table.name}), false)")  # fmt: skip
    finally:
        engine.dispose()
        src.dispose()
    assert PG.rows(url, "SELECT value FROM meta") == [(str(version),)]
    return url


def _old_rows(url: str, version: int) -> dict[str, list[tuple]]:
    """Every row of the version-``version`` tables, in that version's columns."""
    out = {}
    for table in store.Base.metadata.sorted_tables:
        if table.name in TABLES_SINCE_4:
            continue
        cols = [c.name for c in table.columns if c.name not in ADDED_SINCE[version].get(table.name, ())]
        key = "key" if table.name == "meta" else "model_id" if table.name == "models" else "id"
        out[table.name] = PG.rows(url, f"SELECT {', '.join(cols)} FROM {table.name} ORDER BY {key}")
    return out


def _layout(url: str) -> dict[str, list[tuple]]:
    """Each table's columns (name, type, nullable, default), in order."""
    out: dict[str, list[tuple]] = {}
    for t, *col in PG.rows(url, "SELECT table_name, column_name, data_type, is_nullable, column_default FROM "
                                "information_schema.columns WHERE table_schema = 'public' ORDER BY table_name, "
                                "ordinal_position"):  # fmt: skip
        out.setdefault(t, []).append(tuple(col))
    return out


def test_old_postgresql_stores_migrate_and_keep_every_row(postgres_cluster, tmp_path):
    for version, dump in ((1, None), (2, DUMP_V2)):
        old = load_v1(tmp_path / f"v{version}", *([dump] if dump else []))
        url = PG.with_password(old_pg_store(postgres_cluster, version, old.db), SECRET)
        before = _old_rows(url, version)
        _one_line_error(cli("query", "SELECT COUNT(*) FROM videos", "--db", url),
                        f"schema version {version}, older than this acfd's 4", "acfd-scan schema --upgrade")  # fmt: skip
        assert _old_rows(url, version) == before  # refusing migrates nothing
        r = cli("schema", "--upgrade", "--db", url)
        assert r.exit_code == 0, r.output
        assert re.search(rf"upgraded postgresql\+psycopg://acfd_test:\*\*\*@/\S+ from schema version {version} to 4",
                         r.stderr), r.stderr  # fmt: skip
        assert SECRET not in r.output and "lease_until" in r.stdout
        after = _old_rows(url, version)
        assert after.pop("meta") == [("schema_version", "4")] and before.pop("meta") == [("schema_version", str(version))]
        assert after == before
        assert PG.rows(url, "SELECT lease_until FROM scans") == [(None,)]  # old scans get no lease
        assert PG.rows(url, "SELECT COUNT(*) FROM videos WHERE etag IS NOT NULL") == [(0,)]
        args = json.loads(PG.rows(url, "SELECT args FROM scans")[0][0])
        for status, key in PG.rows(url, "SELECT status, settings_key FROM videos"):
            assert key == key_for_status(args, status), status
        if version == 1:  # the model row gains the card columns: unvalidated, no card
            assert PG.rows(url, "SELECT validation, card_summary, card_json FROM models") == [("none", None, None)]
        r = cli("query", "SELECT path, label FROM latest_verdicts ORDER BY path", "--db", url, "--format", "json")
        assert r.exit_code == 0, r.output
        assert [(Path(x["path"]).name, x["label"]) for x in json.loads(r.stdout)] == [
            ("face.mp4", "fake"), ("no_face.mp4", "no_face")
        ]  # fmt: skip
    # Migrated from version 2, the store has a new one's layout: the same columns, types and order.
    fresh = postgres_cluster.url(postgres_cluster.create_database())
    store.open_store(fresh).dispose()
    assert _layout(url) == _layout(fresh)
    assert _layout(url)["scans"][-1][:2] == ("lease_until", "timestamp with time zone")
    # Upgrading again changes nothing.
    r = cli("schema", "--upgrade", "--db", url)
    assert r.exit_code == 0 and "is up to date" in r.stderr and SECRET not in r.output


def test_scan_migrates_a_v1_postgresql_store_and_resumes(postgres_cluster, tmp_path):
    """A plain scan migrates the old store itself and skips the files it already holds, unchanged."""
    old = load_v1(tmp_path / "v1")
    url = old_pg_store(postgres_cluster, 1, old.db)
    before = _old_rows(url, 1)
    r = cli(old.videos, "--model", old.model, "--db", url, "--frames", 2, "--store-crops", 1, "--workers", 1, "-q")
    assert r.exit_code == 3, r.output  # the stored flag (face.mp4) and error (broken.mp4) still count
    assert "of the skipped (unchanged since scanned): 1 flagged, 1 errors" in r.stderr
    assert PG.rows(url, "SELECT id, status, n_found, n_skipped, n_ok, lease_until IS NULL FROM scans ORDER BY id") == [
        (1, "done", 3, 0, 1, True), (2, "done", 3, 3, 0, False)
    ]  # fmt: skip
    after = _old_rows(url, 1)
    for t in ("videos", "detections", "verdicts", "attention_masks"):
        assert after[t] == before[t], t


# --- read-only query ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def populated_pg(postgres_cluster):
    """tests/report_helpers.py's store (three scans, known verdicts), on PostgreSQL: (URL, Populated)."""
    name = postgres_cluster.create_database()
    url = postgres_cluster.url(name)
    yield url, populate(url)
    postgres_cluster.drop_database(name)


def pg_state(url: str) -> dict[str, object]:
    """Everything a query could change: every row of every table, the relations of every schema (temporary
    ones too), sequences, large objects, functions, stored settings, prepared transactions, advisory locks
    and the sessions still connected to the database."""
    out: dict[str, object] = {}
    with PG.connect_url(url) as c:
        for t in store.Base.metadata.tables:
            out[t] = c.execute(f"SELECT COUNT(*), md5(COALESCE(string_agg(x::text, '|' ORDER BY x::text), '')) "
                               f"FROM {t} x").fetchone()  # fmt: skip
        for name, sql in {
            "relations": "SELECT string_agg(n.nspname || '.' || c.relname, ',' ORDER BY n.nspname, c.relname) "
                         "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                         "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'",
            "sequences": "SELECT string_agg(sequencename || '=' || COALESCE(last_value::text, '-'), ',' "
                         "ORDER BY sequencename) FROM pg_sequences",
            "large_objects": "SELECT COUNT(*) FROM pg_largeobject_metadata",
            "functions": "SELECT COUNT(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                         "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')",
            "settings": "SELECT COUNT(*) FROM pg_db_role_setting",
            "prepared": "SELECT COUNT(*) FROM pg_prepared_xacts",
            "advisory_locks": "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory'",
            "sessions": "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid <> pg_backend_pid()",
        }.items():  # fmt: skip
            out[name] = c.execute(sql).fetchone()[0]
    return out


def assert_unchanged(url: str, before: dict[str, object]) -> None:
    # A closed session's backend ends a moment after the client leaves (its session locks with it).
    deadline = time.monotonic() + 15
    while (now := pg_state(url)) != before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert now == before


# PostgreSQL's own ways to write, or to escape a read-only transaction. {out} is a path the server could write.
PG_WRITE_ATTEMPTS = [
    "COMMIT",
    "BEGIN READ WRITE",
    "START TRANSACTION READ WRITE",
    "SET default_transaction_read_only = off",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
    "SET TRANSACTION READ WRITE",
    "RESET ALL",
    "CREATE TEMP TABLE t (x int)",
    "CREATE TABLE t AS SELECT 1",
    "SELECT * INTO stolen FROM videos",
    "WITH gone AS (DELETE FROM videos RETURNING id) SELECT COUNT(*) FROM gone",
    "INSERT INTO meta VALUES ('x', 'y') ON CONFLICT DO NOTHING",
    "MERGE INTO meta m USING (VALUES ('schema_version', '99')) AS v(k, x) ON m.key = v.k "
    "WHEN MATCHED THEN UPDATE SET value = v.x",
    "TRUNCATE videos CASCADE",
    "SELECT nextval('scans_id_seq')",
    "SELECT setval('scans_id_seq', 1000)",
    "SELECT * FROM scans FOR UPDATE",
    "EXPLAIN ANALYZE DELETE FROM videos",
    "DO $$ BEGIN DELETE FROM videos; END $$",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'DELETE FROM videos RETURNING 1'",
    "COPY videos TO '{out}'",
    "COPY meta FROM '/etc/hostname'",
    "COPY (SELECT 1) TO STDOUT",
    "SELECT set_config('default_transaction_read_only', 'off', false)",
    "SELECT set_config('transaction_read_only', 'off', true)",
    "SELECT pg_advisory_lock(1)",
    "SELECT pg_try_advisory_lock(1633904228)",
    "SELECT lo_import('/etc/hostname')",
    "SELECT lo_export(lo_import('/etc/hostname'), '{out}')",
    "SELECT pg_catalog.lo_import('/etc/hostname')",
    "SELECT \"lo_import\"('/etc/hostname')",
    "SELECT lo_import /* a gap */ ('/etc/hostname')",
    "SELECT U&\"lo\\005Fimport\"('/etc/hostname')",
    "SELECT lo_from_bytea(0, 'x')",
    "CALL p()",
    "LISTEN ch",
    "NOTIFY ch, 'x'",
    "SELECT pg_notify('ch', 'x')",
    "PREPARE p AS DELETE FROM videos",
    "EXECUTE p",
    "PREPARE TRANSACTION 'x'",
    "VACUUM",
    "VACUUM FULL videos",
    "ANALYZE videos",
    "CLUSTER videos",
    "REINDEX TABLE videos",
    "LOCK TABLE videos",
    "CHECKPOINT",
    "DISCARD ALL",
    "ALTER SYSTEM SET fsync = on",
    "ALTER DATABASE postgres SET default_transaction_read_only = off",
    "GRANT ALL ON videos TO PUBLIC",
    "COMMENT ON TABLE videos IS 'x'",
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()",
    "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()",
    "SELECT pg_reload_conf()",
    "SELECT pg_stat_reset()",
    "SELECT pg_create_restore_point('x')",
    "SELECT dblink_exec('dbname=postgres', 'DELETE FROM videos')",
]  # fmt: skip


def test_query_refuses_every_write_and_changes_nothing(populated_pg, postgres_cluster):
    """The SQLite list of writes and PostgreSQL's escapes, as a superuser: each refused in one line, exit 4,
    and nothing in the database (or on the server's disk, or in another session) changes."""
    url = PG.with_password(populated_pg[0], SECRET)
    out = postgres_cluster.root / "written_by_a_query"
    # A session of our own that must survive every attempt to terminate or cancel other sessions.
    with PG.connect_url(url) as witness:
        witness.execute("SELECT 1")
        before = pg_state(url)
        for sql in [*WRITE_ATTEMPTS, *(s.format(out=out) for s in PG_WRITE_ATTEMPTS)]:
            r = cli("query", sql, "--db", url)
            assert r.stdout == "", (sql, r.stdout)
            err = _one_line_error(r)
            if sql.startswith("SELECT load_extension"):  # not PostgreSQL's: an unknown function
                assert "function load_extension(unknown) does not exist" in err, err
            else:
                assert "refused: acfd-scan query is read-only" in err, (sql, err)
            assert_unchanged(url, before)
            assert not out.exists(), sql
        assert witness.execute("SELECT 1").fetchone() == (1,)  # never terminated
    # Reading still works, and so do the statements a read starts with.
    for sql, want in (("SELECT COUNT(*) AS n FROM videos", [{"n": 13}]), ("VALUES (1)", [{"column1": 1}]),
                      ("TABLE meta", [{"key": "schema_version", "value": "4"}]),
                      ("WITH x AS (SELECT 2 AS n) SELECT n FROM x", [{"n": 2}])):  # fmt: skip
        r = cli("query", sql, "--db", url, "--format", "json")
        assert r.exit_code == 0 and json.loads(r.stdout) == want, (sql, r.output)
    r = cli("query", "EXPLAIN SELECT * FROM latest_verdicts", "--db", url)
    assert r.exit_code == 0 and "Scan" in r.stdout


@pytest.mark.parametrize("sql", [
    "SELECT 1; DELETE FROM videos",
    "SELECT 1; COMMIT; DELETE FROM videos",
    "SELECT 1; COMMIT; BEGIN READ WRITE; DELETE FROM videos; COMMIT",
    "SELECT 1; SET default_transaction_read_only = off",
    "SELECT 1; VACUUM",
])  # fmt: skip
def test_query_runs_one_statement_only(populated_pg, sql):
    url = populated_pg[0]
    before = pg_state(url)
    _one_line_error(cli("query", sql, "--db", url), "one statement at a time")
    assert_unchanged(url, before)


def test_query_output_timeout_and_errors(populated_pg):
    url = populated_pg[0]
    # Times in UTC (the server's zone is not), blobs as hex, numeric as a number, '%' taken literally.
    r = cli("query", "SELECT started_at, SUM(id)::numeric AS s FROM scans WHERE id = 1 GROUP BY started_at", "--db", url,
            "--format", "json")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == [{"started_at": "2026-11-02 12:00:00+00:00", "s": 1}]
    r = cli("query", "-", "--db", url, "--format", "json",
            input="SELECT path_key FROM videos WHERE path LIKE '%a_fake.mp4' ORDER BY id LIMIT 1")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert bytes.fromhex(json.loads(r.stdout)[0]["path_key"]) == b"/archive/a_fake.mp4"
    t0 = time.monotonic()
    _one_line_error(cli("query", "SELECT pg_sleep(30)", "--db", url, "--timeout", "0.3"), "query interrupted after 0.3 s")
    assert time.monotonic() - t0 < 10
    _one_line_error(cli("query", "SELECT nope FROM videos", "--db", url), 'query failed: column "nope" does not exist')


def test_docs_select_only_role_recipe(postgres_cluster, tmp_path):
    """docs/sql.md's two blocks as written: scans write as acfd_scanner, acfd_reader queries and reports
    (tables made after the grants included) and can change nothing, even with psql-like direct access."""
    blocks = re.findall(r"```postgresql\n(.*?)```", (ROOT / "docs" / "sql.md").read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 2
    name = f"verdicts_{os.getpid()}"

    def statements(block: str) -> list[str]:
        text = re.sub(r"--[^\n]*", "", block)
        return [re.sub(r"\bverdicts\b", name, s.strip()) for s in text.split(";") if s.strip()]

    with postgres_cluster.connect() as c:
        for sql in statements(blocks[0]):
            c.execute(sql)
    try:
        with postgres_cluster.connect(name) as c:
            for sql in statements(blocks[1]):
                c.execute(sql)
        scanner = PG.with_password(postgres_cluster.url(name, user="acfd_scanner"), "change-me")
        reader = PG.with_password(postgres_cluster.url(name, user="acfd_reader"), "change-me-too")
        populate(scanner)  # the scanners' role creates the tables, after the grants
        r = cli("query", "SELECT COUNT(*) AS n FROM latest_verdicts WHERE label = 'fake'", "--db", reader,
                "--format", "json")  # fmt: skip
        assert r.exit_code == 0 and json.loads(r.stdout) == [{"n": 3}], r.output
        r = cli("report", "--db", reader, "--out", tmp_path / "report")
        assert r.exit_code == 0 and "3 flagged" in r.stdout, r.output
        _one_line_error(cli("schema", "--upgrade", "--db", reader), "cannot be written")  # init_db's write
        import psycopg

        # Not through acfd (as with psql): the role alone stops it, even out of read-only mode; and a
        # scan's session cannot be terminated.
        with PG.connect_url(reader) as c, PG.connect_url(scanner) as scan_session:
            before = pg_state(scanner)
            for sql in ("SET default_transaction_read_only = off", "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE"):
                c.execute(sql)
            for sql in ("DELETE FROM videos", "UPDATE meta SET value = '9'", "CREATE TABLE public.t (x int)",
                        "CREATE TEMP TABLE t (x int)", "SELECT nextval('scans_id_seq')",
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'acfd_scanner'"):  # fmt: skip
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    c.execute(sql)
                    pytest.fail(f"the reader ran {sql}")
            assert scan_session.execute("SELECT 1").fetchone() == (1,)
            assert_unchanged(scanner, before)
    finally:
        postgres_cluster.drop_database(name)
        with postgres_cluster.connect() as c:
            c.execute("DROP ROLE IF EXISTS acfd_reader")
            c.execute("DROP ROLE IF EXISTS acfd_scanner")


def test_docs_examples_return_the_same_rows(populated_pg):
    """docs/sql.md's (and the README's) example queries, with test_query.py's expected rows."""
    url, populated = populated_pg
    check_doc_examples(url, populated)


def test_report_is_the_same_page_as_from_sqlite(populated_pg, tmp_path):
    url = PG.with_password(populated_pg[0], SECRET)
    lite = populate(tmp_path / "same.sqlite")
    for only in ("all", "flagged"):
        pg_out, lite_out = tmp_path / f"pg-{only}", tmp_path / f"lite-{only}"
        r = cli("report", "--db", url, "--out", pg_out, "--only", only)
        assert r.exit_code == 0, r.output
        assert cli("report", "--db", lite.path, "--out", lite_out, "--only", only).exit_code == 0
        pages = []
        for out, where in ((pg_out, "postgresql+psycopg://acfd_test:***@/"), (lite_out, str(lite.path))):
            page = (out / "index.html").read_text(encoding="utf-8")
            assert where in page and SECRET not in page
            # The store's name and the moment of writing are the only differences.
            page = re.sub(r'(<div class="sub">).*? · generated [0-9: -]+ UTC', r"\1", page)
            pages.append(page)
        assert pages[0] == pages[1]
        names = sorted(p.name for p in (pg_out / "img").iterdir())
        assert names == sorted(p.name for p in (lite_out / "img").iterdir()) and names
        assert all((pg_out / "img" / n).read_bytes() == (lite_out / "img" / n).read_bytes() for n in names)
    r = cli("report", "--db", url, "--out", tmp_path / "one", "--scan", 2)
    assert r.exit_code == 0 and "(2 videos in the table, 2 flagged, 2 with details, 4 images)" in r.stdout, r.output


# --- scans -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return H.face_video(tmp_path_factory.mktemp("clip") / "clip.mp4", n=12, fps=10)


def _count(url: str, sql: str) -> int:
    try:
        return PG.rows(url, sql)[0][0]
    except Exception:  # noqa: BLE001  (the tables are not made yet)
        return 0


@pytest.mark.slow
def test_sigkill_then_restart_loses_and_duplicates_nothing(pg_db, tmp_path, clip, models):
    d = tmp_path / "v"
    d.mkdir()
    for i in range(6):
        shutil.copy(clip, d / f"clip{i}.mp4")
    url = PG.with_password(pg_db, SECRET)
    args = H.cli(d, "--model", models["fake"], "--db", url, "--every-frame", "--workers", 1, "-q")
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and p.poll() is None and _count(pg_db, "SELECT COUNT(*) FROM videos") < 2:
        time.sleep(0.05)
    assert p.poll() is None, "the scan ended before it could be killed"
    p.send_signal(signal.SIGKILL)
    p.wait()
    ((sid, n_ok),) = PG.rows(pg_db, "SELECT id, n_ok FROM scans")
    committed = PG.rows(pg_db, "SELECT COUNT(*) FROM videos WHERE scan_id = %s", sid)[0][0]
    assert 2 <= committed < 6 and n_ok == committed  # counters are committed with each video
    assert PG.rows(pg_db, "SELECT status, lease_until IS NOT NULL FROM scans") == [("running", True)]
    PG.rows(pg_db, "UPDATE scans SET lease_until = '2000-01-01 00:00:00+00'")  # as if its minute had passed
    r = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert r.returncode == 1, r.stderr
    assert SECRET not in r.stderr and "database: postgresql+psycopg://acfd_test:***@/" in r.stderr
    got = PG.rows(pg_db, "SELECT path_key, COUNT(*) FROM videos GROUP BY path_key")
    assert len(got) == 6 and all(c == 1 for _, c in got)  # every clip once: nothing lost, nothing twice
    assert PG.rows(pg_db, "SELECT status, n_ok, n_skipped FROM scans ORDER BY id") == [
        ("interrupted", committed, 0), ("done", 6 - committed, committed)
    ]  # fmt: skip
    assert PG.rows(pg_db, "SELECT COUNT(*) FROM detections")[0][0] == 6 * 12  # every frame, one face each


@pytest.mark.slow
def test_two_scans_write_one_new_database_at_once(pg_db, tmp_path, clip, models):
    """Two processes start on an empty database at the same moment: neither fails creating the schema or
    registering the model; each records its own rows; no video twice within a scan."""
    dirs = []
    for k in range(2):
        d = tmp_path / f"d{k}"
        d.mkdir()
        for i in range(3):
            shutil.copy(clip, d / f"c{i}.mp4")
        dirs.append(d)
    url = PG.with_password(pg_db, SECRET)
    procs = [
        subprocess.Popen(H.cli(d, "--model", models["fake"], "--db", url, "--workers", 1, "-q", "--fps", 5),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for d in dirs
    ]  # fmt: skip
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 1, err
        assert SECRET not in err
    assert PG.rows(pg_db, "SELECT status, COUNT(*) FROM videos GROUP BY status") == [("ok", 6)]
    scans = PG.rows(pg_db, "SELECT id, status, n_ok, args FROM scans ORDER BY id")
    assert [(s, n) for _, s, n, _ in scans] == [("done", 3), ("done", 3)]
    folders = set()
    for sid, _, _, args in scans:
        stored = json.loads(args)
        assert stored["db"].startswith("postgresql+psycopg://acfd_test:***@/") and SECRET not in args
        (folder,) = stored["paths"]
        folders.add(folder)
        assert PG.rows(pg_db, "SELECT COUNT(*), COUNT(DISTINCT path_key), bool_and(path LIKE %s) FROM videos "
                              "WHERE scan_id = %s", f"{folder}/%", sid) == [(3, 3, True)]  # fmt: skip
    assert folders == {str(d) for d in dirs}
    assert PG.rows(pg_db, "SELECT COUNT(*) FROM verdicts WHERE identity IS NULL") == [(6,)]
    assert PG.rows(pg_db, "SELECT COUNT(*) FROM models") == [(1,)]


# --- driver and passwords ---------------------------------------------------------------------------------------


def test_without_psycopg_one_line_names_the_extra(tmp_path, clip, models):
    """As if acfd[postgres] were not installed: every command with a PostgreSQL --db says what to install."""
    code = (
        "import sys\n"
        "sys.modules['psycopg'] = None  # import psycopg raises ImportError\n"
        "from click.testing import CliRunner\n"
        "from acfd.scanner.cli import main\n"
        "for args in (['query', 'SELECT 1', '--db', sys.argv[1]], ['schema', '--upgrade', '--db', sys.argv[2]],\n"
        "             [sys.argv[3], '--model', sys.argv[4], '--db', sys.argv[1], '-q', '--workers', '0']):\n"
        "    r = CliRunner().invoke(main, args)\n"
        "    print(r.exit_code, r.stderr.strip().replace('\\n', ' | '))\n"
    )
    plain = f"postgresql://analyst:{SECRET}@dbhost/verdicts"
    explicit = f"postgresql+psycopg://analyst:{SECRET}@dbhost/verdicts"
    r = subprocess.run([sys.executable, "-c", code, plain, explicit, str(clip), str(models["fake"])],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3, r.stdout
    for line, shown in zip(lines, ("postgresql://analyst:***@dbhost/verdicts",
                                   "postgresql+psycopg://analyst:***@dbhost/verdicts",
                                   "postgresql://analyst:***@dbhost/verdicts"), strict=True):  # fmt: skip
        assert line == (f"4 Error: the PostgreSQL store {shown} needs the psycopg driver, which is not installed: "
                        "pip install 'acfd[postgres]'"), line  # fmt: skip
    assert SECRET not in r.stdout + r.stderr
    assert not (tmp_path / "acfd.sqlite").exists()


def test_a_database_that_cannot_be_reached_is_one_line_without_the_password(postgres_cluster, tmp_path):
    missing = PG.with_password(postgres_cluster.url("no_such_database"), SECRET)
    for cmd in (["query", "SELECT 1"], ["schema"], ["report", "--out", tmp_path / "r"], ["schema", "--upgrade"]):
        err = _one_line_error(cli(*cmd, "--db", missing), "postgresql+psycopg://acfd_test:***@/no_such_database",
                              'database "no_such_database" does not exist')  # fmt: skip
        assert err.startswith("Error: cannot ")
    assert not (tmp_path / "r").exists()
