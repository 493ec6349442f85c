"""Read-only access to the verdict store: ad-hoc SQL (``acfd-scan query``) and the schema (``acfd-scan schema``).

A query must never be able to change the store, so the store is opened read-only in layers:

- SQLite (the default): the file is opened with the URI ``file:...?mode=ro`` (SQLite itself refuses
  every write), ``PRAGMA query_only=ON`` is set, and an authorizer (``sqlite3.set_authorizer``) lets a
  statement through only if it reads: SELECT/WITH, functions, and introspection PRAGMAs. ATTACH,
  DETACH, DDL, DML, pragma assignments (``query_only=OFF`` included) and ``VACUUM INTO`` are refused
  before they run, so no other file can be created or written either.
- PostgreSQL (psycopg 3), in layers: a statement that does not start with SELECT, WITH, VALUES, TABLE
  or EXPLAIN is refused up front (COMMIT, SET, DO, COPY, CALL, PREPARE, LISTEN, VACUUM, DDL, DML...);
  so is one naming a function whose effect a rollback would not undo or that acts outside the
  database's rows (``_PG_REFUSED``: large objects and server files, advisory locks, settings,
  notifications, other sessions and the server, replication, dblink); the statement is sent alone
  through the extended protocol, which refuses a second one (``SELECT 1; COMMIT; DELETE ...``); it
  runs in a ``READ ONLY`` transaction (PostgreSQL itself refuses INSERT/UPDATE/DELETE, data-modifying
  WITH, SELECT INTO, FOR UPDATE, nextval/setval, EXPLAIN ANALYZE of a write) under a
  ``statement_timeout``, which is always rolled back, on a connection of its own that is closed
  after. This keeps a querier from changing the store by mistake or with a crafted statement; the
  boundary for people who must not write is a role with SELECT only (docs/sql.md, "PostgreSQL").
- Other SQLAlchemy URLs: the query runs in a transaction that is always rolled back, and a statement
  that does not start with SELECT, WITH, VALUES, TABLE or EXPLAIN is refused up front (MySQL commits
  DDL implicitly, so a rollback alone would not undo it).

Before any query the store is checked: a file that is not SQLite, a database without acfd's
``meta.schema_version``, or a schema version this acfd does not read gives one clear
:class:`~acfd.schemas.db.StoreError` line. An older store is not migrated here (that needs a write):
the error says how to upgrade it (``acfd-scan schema --upgrade``, or any scan, which calls ``init_db``).

A query never runs unbounded: on SQLite a progress handler stops it after ``timeout_s`` seconds
(:data:`DEFAULT_TIMEOUT_S` unless told otherwise; 0 or None: no limit) and on Ctrl-C, which then
surfaces as ``KeyboardInterrupt`` (sqlite3 swallows exceptions raised inside its callbacks, so the
signal only sets a flag that the handler reads). On PostgreSQL the server stops it
(``statement_timeout``), and psycopg cancels it on Ctrl-C.

A store in a place this process cannot write (a read-only mount, a folder without write permission)
is still readable: SQLite's WAL mode needs to create ``-shm`` beside the file even to read, so when
that fails and no unmerged ``-wal`` file exists, the file is opened ``immutable`` (every committed row
is in the main file then). With unmerged WAL pages the error says so, instead of blaming the file.
"""

from __future__ import annotations

import csv
import decimal
import io
import json
import math
import os
import re
import signal
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from acfd.schemas import db as store
from acfd.schemas.db import StoreError
from acfd.schemas.errors import Terminated
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from .text import printable

Format = Literal["table", "csv", "json"]
FORMATS: tuple[str, ...] = ("table", "csv", "json")

# Statements other dialects may run (SQLite needs no such list: its authorizer decides per operation).
_READ_STATEMENT = re.compile(r"^\s*(?:--[^\n]*\n\s*|/\*.*?\*/\s*)*(select|with|values|table|explain)\b", re.I | re.S)

# PRAGMAs that only describe the database, whatever their argument (e.g. ``table_info(videos)``).
_INTROSPECTION_PRAGMAS = frozenset(
    {
        "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
        "foreign_key_list", "database_list", "collation_list", "function_list", "module_list",
        "pragma_list", "compile_options",
    }
)  # fmt: skip
# PRAGMAs whose read form (no argument) is harmless; assigning any of them is refused.
_SETTING_PRAGMAS = frozenset(
    {
        "read_uncommitted", "user_version", "schema_version", "application_id", "data_version",
        "encoding", "page_size", "page_count", "freelist_count", "journal_mode", "foreign_keys",
        "query_only", "busy_timeout", "auto_vacuum", "cache_size", "synchronous",
    }
)  # fmt: skip
_ALLOWED_ACTIONS = frozenset(
    {
        sqlite3.SQLITE_SELECT,
        sqlite3.SQLITE_READ,
        sqlite3.SQLITE_FUNCTION,
        sqlite3.SQLITE_RECURSIVE,
        # BEGIN/COMMIT/SAVEPOINT change nothing on a read-only connection; pysqlite and SQLAlchemy issue them.
        sqlite3.SQLITE_TRANSACTION,
        sqlite3.SQLITE_SAVEPOINT,
    }
)
_DENIED_FUNCTIONS = frozenset({"load_extension"})

_REFUSED = "refused: acfd-scan query is read-only; only SELECT statements (and read-only PRAGMAs) may run"

# PostgreSQL functions a query may not name (anywhere in its text, quoted or schema-qualified): those
# whose effect a rollback does not undo or that reach past the store's rows (server files and large
# objects, other sessions and the server, replication, another database through dblink), and those
# that change the session (advisory locks, settings) or signal other sessions. Most need privileges
# a querier should not hold anyway; this keeps them from one who holds the scanner's (or a
# superuser's) role. U&"..." identifiers could spell any name: refused too.
_PG_REFUSED = re.compile(
    r"(?<![\w$])(?:lo_\w+|lowrite|loread|pg_file_\w+|pg_terminate_backend|pg_cancel_backend|pg_reload_conf"
    r"|pg_rotate_logfile\w*|pg_promote|pg_switch_wal|pg_create_restore_point|pg_backup_\w+|pg_start_backup"
    r"|pg_stop_backup|pg_log_backend_memory_contexts|pg_stat_reset\w*|pg_wal_replay_\w+"
    r"|pg_(?:create|drop|copy)_\w*replication_slot|pg_replication_slot_advance|pg_replication_origin_\w+"
    r"|pg_logical_emit_message|pg_logical_slot_\w+|pg_import_system_collations|pg_(?:try_)?advisory_\w+"
    r"|set_config|pg_notify|dblink\w*)(?![\w$])|u&\"",
    re.I,
)


def _authorize(action: int, arg1: str | None, arg2: str | None, _db: str | None, _src: str | None) -> int:
    if action == sqlite3.SQLITE_PRAGMA:
        name = (arg1 or "").lower()
        if name in _INTROSPECTION_PRAGMAS or (name in _SETTING_PRAGMAS and arg2 is None):
            return sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK if action in _ALLOWED_ACTIONS else sqlite3.SQLITE_DENY


# Default limit of one query (seconds). Long enough for any reasonable question about millions of
# rows; short enough that a runaway WITH RECURSIVE does not hold a terminal for ever.
DEFAULT_TIMEOUT_S = 60.0


class QueryGuard:
    """When to stop the running SQLite statement: past its deadline, or after Ctrl-C."""

    def __init__(self, timeout_s: float | None) -> None:
        self.timeout_s = timeout_s or None
        self.deadline: float | None = None
        self.interrupted = False
        self.terminated = False  # the interruption was SIGTERM (exit 143), not Ctrl-C
        self.timed_out = False

    def start(self) -> None:
        self.deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        self.interrupted = self.terminated = self.timed_out = False

    def stop(self) -> int:
        """The progress handler: non-zero aborts the statement (sqlite3 raises "interrupted")."""
        if self.interrupted:
            return 1
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.timed_out = True
            return 1
        return 0


@dataclass(frozen=True)
class ReadOnlyStore:
    """A read-only engine on a verdict store, and where it points (for messages)."""

    engine: Engine
    where: str  # the file path or the URL without its password
    schema_version: int
    guard: QueryGuard | None = None  # SQLite only: stops a statement on timeout or Ctrl-C
    timeout_s: float | None = None  # PostgreSQL: each statement's statement_timeout (None: no limit)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_path(db: str | os.PathLike[str]) -> Path | None:
    """The file of an SQLite target (a plain path or an ``sqlite:///`` URL); None for other URLs."""
    s = os.fspath(db)
    if "://" not in s:
        return Path(s).expanduser().resolve()
    url = _parse_url(s)
    if url.get_backend_name() != "sqlite":
        return None
    if not url.database or url.database == ":memory:":
        raise StoreError(f"{s!r} is an in-memory database: there is nothing to read")
    return Path(url.database).expanduser().resolve()


def _parse_url(s: str) -> URL:
    try:
        return make_url(s)
    except (ArgumentError, ValueError) as e:  # unparsable, or e.g. a port that is not a number
        shown = re.sub(r"//[^/@]*@", "//***@", s)  # the unparsed URL may hold a password
        raise StoreError(f"{shown!r} is not a valid database URL: {_first_line(e)}") from None


def _sqlite_readonly_engine(path: Path, guard: QueryGuard, immutable: bool = False) -> Engine:
    # Percent-quote the path so '?', '#' and '%' in a file name are not read as URI syntax.
    uri = "file:" + urllib.parse.quote(str(path)) + "?mode=ro" + ("&immutable=1" if immutable else "")

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 60000")  # a scan may be committing; wait, don't fail
        conn.execute("PRAGMA query_only = ON")
        conn.set_authorizer(_authorize)
        # Checked every 10k VM steps; aborts the running statement ("interrupted") on timeout or Ctrl-C.
        conn.set_progress_handler(guard.stop, 10_000)
        return conn

    # NullPool: every connect() runs the setup above; nothing is shared across threads.
    return create_engine("sqlite://", creator=connect, poolclass=NullPool)


_CANNOT_WRITE_BESIDE = ("attempt to write a readonly database", "unable to open database file", "readonly database")


def _open_sqlite_checked(path: Path, guard: QueryGuard) -> tuple[Engine, int]:
    """Open and check the store; falls back to ``immutable`` in a read-only place (see the module doc)."""
    engine = _sqlite_readonly_engine(path, guard)
    try:
        return engine, check_store(engine, str(path))
    except StoreError as e:
        engine.dispose()
        if not any(m in str(e) for m in _CANNOT_WRITE_BESIDE):
            raise
        wal = path.with_name(path.name + "-wal")
        try:
            wal_size = wal.stat().st_size
        except OSError:
            wal_size = 0
        if wal_size:
            raise StoreError(
                f"cannot read {path}: it is in WAL mode with {wal_size} bytes of changes in {wal.name} not yet "
                f"merged, and SQLite cannot create {path.name}-shm in {path.parent} (read-only place); open it "
                "once where it is writable (any acfd-scan query there merges them), or copy all its files "
                "elsewhere"
            ) from None
    engine = _sqlite_readonly_engine(path, guard, immutable=True)
    try:
        return engine, check_store(engine, str(path))
    except BaseException:
        engine.dispose()
        raise


def open_readonly(db: str | os.PathLike[str], timeout_s: float | None = DEFAULT_TIMEOUT_S) -> ReadOnlyStore:
    """Open the verdict store at ``db`` (an SQLite file path or any SQLAlchemy URL) for reading only.

    ``timeout_s`` bounds each SQLite statement (0 or None: no limit). Raises :class:`StoreError` (one
    line) when it is missing, not a database, not an acfd store, or of a schema version this acfd
    cannot read as is.
    """
    path = _sqlite_path(db)
    if path is not None:
        if not path.exists():
            raise StoreError(f"no verdict store at {path} (run a scan first, or pass --db)")
        if not path.is_file():
            raise StoreError(f"{path} is not a file")
        if not os.access(path, os.R_OK):
            raise StoreError(f"cannot read {path}: permission denied")
        guard = QueryGuard(timeout_s)
        engine, version = _open_sqlite_checked(path, guard)
        return ReadOnlyStore(engine=engine, where=str(path), schema_version=version, guard=guard)
    url = _parse_url(os.fspath(db))
    where = url.render_as_string(hide_password=True)  # never a password in a message
    # NullPool: every query gets a connection of its own, closed after it (nothing it did to its
    # session outlives it). make_engine names a missing driver's extra, and sets PostgreSQL to UTC.
    engine = store.make_engine(db, poolclass=NullPool, pool_pre_ping=False)
    try:
        version = check_store(engine, where)
    except BaseException:
        engine.dispose()
        raise
    return ReadOnlyStore(engine=engine, where=where, schema_version=version, timeout_s=timeout_s or None)


def _check_reachable(engine: Engine, where: str) -> None:
    """A server that cannot be reached (down, no such database, refused login) is said to be so, in one line."""
    if engine.dialect.name == "sqlite":  # a file: the checks that read it say what is wrong with it
        return
    try:
        engine.connect().close()
    except DBAPIError as e:
        raise StoreError(f"cannot open database {where}: {_first_line(e.orig)}") from e


def check_store(engine: Engine, where: str) -> int:
    """The schema version of the acfd store behind ``engine``; :class:`StoreError` if it cannot be read as is."""
    _check_reachable(engine, where)
    try:
        with engine.connect() as conn:
            insp = inspect(conn)
            tables = set(insp.get_table_names())
            if "meta" not in tables:
                what = "an empty database" if not tables else f"a database with tables {', '.join(sorted(tables)[:6])}"
                raise StoreError(f"{where} is not an acfd verdict store ({what}, no meta table)")
            row = conn.execute(text("SELECT value FROM meta WHERE key = 'schema_version'")).scalar()
            views = set(insp.get_view_names())
    except DBAPIError as e:
        raise StoreError(f"{where} is not a readable SQLite/SQL database: {_first_line(e.orig)}") from e
    except SQLAlchemyError as e:
        raise StoreError(f"cannot read {where}: {_first_line(e)}") from e
    if row is None:
        raise StoreError(f"{where} is not an acfd verdict store (no schema_version in its meta table)")
    try:
        version = int(row)
    except ValueError:
        raise StoreError(f"{where}: schema_version {row!r} is not a number; not an acfd verdict store") from None
    current = store.DB_SCHEMA_VERSION  # read at call time: tests simulate upgrades by patching it
    if version > current:
        raise StoreError(
            f"database schema version {version} is newer than this acfd understands ({current}); upgrade acfd"
        )
    if version < current:
        raise StoreError(
            f"{where} has schema version {version}, older than this acfd's {current}; upgrade it first with "
            f"`acfd-scan schema --upgrade --db {where}` (or any scan), then query it"
        )
    missing = sorted(set(store.Base.metadata.tables) - tables) + sorted({"latest_verdicts"} - views)
    if missing:
        raise StoreError(f"{where} is an incomplete acfd verdict store (missing {', '.join(missing)})")
    return version


def upgrade(db: str | os.PathLike[str]) -> tuple[int, int]:
    """Migrate an older store to this acfd's schema (a write); returns (version before, version after)."""
    path = _sqlite_path(db)
    if path is not None and not path.is_file():  # never create an empty store just to refuse it
        raise StoreError(f"no verdict store at {path}: nothing to upgrade")
    engine = store.make_engine(db)
    try:
        where = str(path or store.safe_url(db))
        before = _stored_version(engine, where)
        if before is None:
            raise StoreError(f"{where} is not an acfd verdict store (no meta.schema_version); nothing to upgrade")
        after = store.init_db(engine)
    finally:
        engine.dispose()
    return before, after


def _stored_version(engine: Engine, where: str) -> int | None:
    _check_reachable(engine, where)
    try:
        with engine.connect() as conn:
            if "meta" not in inspect(conn).get_table_names():
                return None
            row = conn.execute(text("SELECT value FROM meta WHERE key = 'schema_version'")).scalar()
    except DBAPIError as e:
        raise StoreError(f"{where} is not a readable database: {_first_line(e.orig)}") from e
    if row is None:
        return None
    try:
        return int(row)
    except ValueError:
        raise StoreError(f"{where}: schema_version {row!r} is not a number; not an acfd verdict store") from None


def _first_line(e: BaseException | None) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


@dataclass(frozen=True)
class QueryResult:
    """Column names and rows of one query, in the database's own Python types."""

    columns: list[str]
    rows: list[tuple[Any, ...]]


def run_query(ro: ReadOnlyStore, sql: str, params: dict[str, Any] | None = None) -> QueryResult:
    """Run one read-only statement; a write, a second statement or an SQL error is a :class:`StoreError`."""
    if not sql.strip():
        raise StoreError("empty query")
    if not ro.is_sqlite and not _READ_STATEMENT.match(sql):
        raise StoreError(_REFUSED)
    with _interruptible(ro.guard):
        return _run_query(ro, sql, params)


class _interruptible:
    """Start the guard's clock; while the statement runs, Ctrl-C sets its flag (then KeyboardInterrupt)."""

    def __init__(self, guard: QueryGuard | None) -> None:
        self.guard = guard
        self.previous: Any = None
        self.previous_term: Any = None

    def __enter__(self) -> None:
        if self.guard is None:
            return
        self.guard.start()
        if threading.current_thread() is threading.main_thread():
            guard = self.guard

            def on_sigint(_sig: int, _frame: Any) -> None:
                guard.interrupted = True

            def on_sigterm(_sig: int, _frame: Any) -> None:
                guard.interrupted = guard.terminated = True

            self.previous = signal.signal(signal.SIGINT, on_sigint)
            self.previous_term = signal.signal(signal.SIGTERM, on_sigterm)

    def __exit__(self, *exc: Any) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            signal.signal(signal.SIGTERM, self.previous_term)
        if self.guard is not None and self.guard.interrupted:
            raise Terminated() if self.guard.terminated else KeyboardInterrupt()


def _run_postgresql(ro: ReadOnlyStore, sql: str, params: dict[str, Any] | None) -> QueryResult:
    """One statement in a READ ONLY transaction that is rolled back, sent alone (see the module doc)."""
    import psycopg

    named = _PG_REFUSED.search(sql)
    if named:
        raise StoreError(f"{_REFUSED} (postgresql: {named.group(0)} is not allowed in a query)")
    try:
        with ro.engine.connect() as conn:
            raw = conn.connection.driver_connection  # the psycopg connection, idle (no transaction yet)
            assert raw is not None
            raw.read_only = True  # its transactions begin READ ONLY
            try:
                with raw.cursor() as cur:
                    if ro.timeout_s:
                        cur.execute(f"SET LOCAL statement_timeout = {max(1, round(ro.timeout_s * 1000))}")
                    # prepare=True: the extended protocol, which takes exactly one statement (the simple
                    # one would run "SELECT 1; COMMIT; DELETE ..." whole). No parameters: '%' is literal.
                    cur.execute(sql, params or None, prepare=True)
                    columns = [d.name for d in cur.description] if cur.description else []
                    rows = [tuple(r) for r in cur.fetchall()] if cur.description else []
            finally:
                raw.rollback()  # whatever the statement did is not kept
    except psycopg.Error as e:
        msg = _first_line(e)
        state = getattr(e, "sqlstate", None)
        if state in ("25006", "25001"):  # read_only_sql_transaction; read-write mode after a query
            raise StoreError(f"{_REFUSED} (postgresql: {msg})") from e
        if state == "42601" and "multiple commands" in msg:
            raise StoreError("one statement at a time, please (found more than one)") from e
        if state == "57014" and ro.timeout_s:  # query_canceled by statement_timeout
            raise StoreError(
                f"query interrupted after {ro.timeout_s:g} s (the --timeout limit; --timeout 0 for none)"
            ) from None
        raise StoreError(f"query failed: {msg}") from e
    except DBAPIError as e:  # connecting failed
        raise StoreError(f"query failed: {_first_line(e.orig)}") from e
    if not columns:
        raise StoreError(f"{_REFUSED} (the statement returns no rows)")
    return QueryResult(columns=columns, rows=rows)


def _run_query(ro: ReadOnlyStore, sql: str, params: dict[str, Any] | None) -> QueryResult:
    if ro.engine.dialect.name == "postgresql":
        return _run_postgresql(ro, sql, params)
    try:
        with ro.engine.connect() as conn:
            with conn.begin() as tx:
                # exec_driver_sql: the text goes to the driver as written (no ':name' bind parsing).
                res = conn.exec_driver_sql(sql, params or ())
                columns = list(res.keys()) if res.returns_rows else []
                rows = [tuple(r) for r in res] if res.returns_rows else []
                tx.rollback()  # whatever the statement did (nothing, on SQLite) is not kept
    except DBAPIError as e:
        msg = _first_line(e.orig)
        g = ro.guard
        if g is not None and g.interrupted:
            raise (Terminated() if g.terminated else KeyboardInterrupt()) from None
        if g is not None and g.timed_out:
            raise StoreError(
                f"query interrupted after {g.timeout_s:g} s (the --timeout limit; --timeout 0 for none)"
            ) from None
        if isinstance(e.orig, sqlite3.DatabaseError) and (
            "not authorized" in msg or "authorization denied" in msg or "readonly" in msg
        ):
            raise StoreError(f"{_REFUSED} (sqlite: {msg})") from e
        if isinstance(e.orig, sqlite3.ProgrammingError) and "one statement" in msg:
            raise StoreError("one statement at a time, please (found more than one)") from e
        raise StoreError(f"query failed: {msg}") from e
    except SQLAlchemyError as e:
        raise StoreError(f"query failed: {_first_line(e)}") from e
    if not columns:
        # Only a statement that returns no rows gets here (e.g. an allowed BEGIN); nothing was read.
        raise StoreError(f"{_REFUSED} (the statement returns no rows)")
    return QueryResult(columns=columns, rows=rows)


# ---------------------------------------------------------------------------------------------------
# Output formats.

def _cell_text(v: Any, limit_blob: int | None, short_floats: bool = False) -> str:
    if v is None:
        return ""
    if isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        if limit_blob is not None and len(b) > limit_blob:
            return f"<blob {len(b)} B>"
        return "X'" + b.hex() + "'"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.6g}" if short_floats else repr(v)
    return str(v)


def _terminal_safe(s: str) -> str:
    # File names are untrusted: never let one send escape sequences to the analyst's terminal.
    return printable(s)


def _json_value(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, decimal.Decimal):  # PostgreSQL's numeric (SUM of a bigint, ROUND(numeric, n)): a number
        if not v.is_finite():
            return None
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (str, int, float)) or v is None:
        return v
    return str(v)


def format_result(result: QueryResult, fmt: Format = "table", max_width: int = 60) -> str:
    """Render a result as an aligned text table, CSV (RFC 4180) or JSON (a list of objects; blobs as hex)."""
    if fmt == "json":
        return json.dumps(
            [{c: _json_value(v) for c, v in zip(result.columns, row, strict=True)} for row in result.rows],
            indent=1,
            ensure_ascii=False,
        )
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(result.columns)
        for row in result.rows:
            w.writerow([_cell_text(v, None) for v in row])
        return buf.getvalue().rstrip("\n")
    if fmt != "table":
        raise StoreError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    header = [_terminal_safe(c) for c in result.columns]
    body = [[_terminal_safe(_cell_text(v, 32, short_floats=True)) for v in row] for row in result.rows]
    body = [[c if len(c) <= max_width else c[: max_width - 1] + "…" for c in row] for row in body]
    numeric = [
        all(isinstance(row[i], (int, float, decimal.Decimal)) or row[i] is None for row in result.rows)
        and bool(result.rows)
        for i in range(len(header))
    ]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            (c.rjust(w) if num else c.ljust(w)) for c, w, num in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in body]
    out.append(f"({len(body)} row{'s' if len(body) != 1 else ''})")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------
# Schema.


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str
    nullable: bool
    primary_key: bool


@dataclass(frozen=True)
class RelationInfo:
    """A table or a view and its columns."""

    name: str
    kind: Literal["table", "view"]
    columns: list[ColumnInfo]


def schema_from_models() -> list[RelationInfo]:
    """The schema this acfd creates (from the SQLAlchemy models), without any database."""
    out = []
    for t in store.Base.metadata.sorted_tables:
        cols = [ColumnInfo(c.name, str(c.type), bool(c.nullable), bool(c.primary_key)) for c in t.columns]
        out.append(RelationInfo(t.name, "table", cols))
    # The view's columns, from its own SQL run on an empty in-memory store.
    mem = create_engine("sqlite://")
    try:
        store.Base.metadata.create_all(mem)
        with mem.connect() as conn:
            cols = [
                ColumnInfo(c["name"], str(c["type"]), bool(c.get("nullable", True)), False)
                for c in inspect(conn).get_columns("latest_verdicts")
            ]
    finally:
        mem.dispose()
    out.append(RelationInfo("latest_verdicts", "view", cols))
    return sorted(out, key=lambda r: (r.kind != "table", r.name))


def schema_from_db(ro: ReadOnlyStore) -> list[RelationInfo]:
    """The live schema of an open store (tables and views, as the database reports them)."""
    out = []
    with ro.engine.connect() as conn:
        insp = inspect(conn)
        for kind, names in (("table", insp.get_table_names()), ("view", insp.get_view_names())):
            for name in sorted(names):
                pk = set(insp.get_pk_constraint(name).get("constrained_columns") or []) if kind == "table" else set()
                cols = [
                    ColumnInfo(c["name"], str(c["type"]), bool(c.get("nullable", True)), c["name"] in pk)
                    for c in insp.get_columns(name)
                ]
                out.append(RelationInfo(name, kind, cols))  # type: ignore[arg-type]
    return out


def format_schema(relations: list[RelationInfo]) -> str:
    """A plain-text listing: one block per table/view, one line per column."""
    lines: list[str] = []
    for r in relations:
        lines.append(f"{r.kind} {r.name}")
        w = max((len(c.name) for c in r.columns), default=0)
        for c in r.columns:
            flags = " ".join(f for f, on in (("PRIMARY KEY", c.primary_key), ("NOT NULL", not c.nullable)) if on)
            lines.append(f"  {c.name.ljust(w)}  {c.type}{'  ' + flags if flags else ''}")
        lines.append("")
    return "\n".join(lines).rstrip("\n")
