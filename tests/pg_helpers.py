"""A throwaway PostgreSQL cluster for the tests: started once per test session, one database per test.

The server binaries are Debian's (``postgresql`` package; ``.ci/run`` installs them where missing),
found with ``pg_config --bindir`` or under ``/usr/lib/postgresql/*/bin``. ``initdb`` refuses to run as
root, so when the tests run as root the cluster is made and run by the ``postgres`` system user
(``runuser``), in a temporary folder it owns. The server listens on a Unix socket in that folder only
(no TCP port to collide with anything), trusts local connections, and is tuned for speed, not
durability (``fsync=off``, small buffers): a crash loses nothing the tests need. Its time zone is
deliberately not UTC, so that any code reading PostgreSQL times as UTC without saying so shows up.
:meth:`PgCluster.stop` stops it and deletes the folder.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NEEDED = ("initdb", "pg_ctl", "postgres")
SUPERUSER = "acfd_test"  # the cluster's bootstrap superuser (any name works with trust auth)
PORT = 5432  # only names the socket file (.s.PGSQL.5432) in the cluster's own folder: no TCP
# Not UTC, with a 45-minute offset: a time read as if it were UTC is visibly wrong.
SERVER_TIMEZONE = "Pacific/Chatham"
SETTINGS = {
    "listen_addresses": "''",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "shared_buffers": "16MB",
    "max_connections": "60",
    "timezone": f"'{SERVER_TIMEZONE}'",
    "log_timezone": "'UTC'",
    "autovacuum": "off",
}


def find_bindir() -> Path | None:
    """The folder of initdb, pg_ctl and postgres, or None when PostgreSQL's server is not installed."""
    candidates: list[str] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True)
            candidates.append(out.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass

    def version(p: str) -> tuple[int, ...]:
        v = Path(p).parent.name
        return tuple(int(x) for x in v.split(".") if x.isdigit())

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).resolve().parent))
    for c in candidates:
        if c and all(os.access(Path(c) / name, os.X_OK) for name in NEEDED):
            return Path(c)
    return None


def _as_owner(cmd: list[str]) -> list[str]:
    """``cmd`` run as the postgres user when we are root (initdb and postgres refuse root)."""
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser is None:
        raise RuntimeError("running as root and runuser is missing: cannot start PostgreSQL as the postgres user")
    return [runuser, "-u", "postgres", "--", *cmd]


def _run(cmd: list[str], what: str, timeout: float = 120) -> None:
    r = subprocess.run(_as_owner(cmd), capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        tail = (r.stdout + r.stderr).strip().splitlines()[-15:]
        raise RuntimeError(f"{what} failed (exit {r.returncode}):\n" + "\n".join(tail))


@dataclass
class PgCluster:
    """A running throwaway cluster: its binaries, folder (data/, the socket, log) and superuser."""

    bindir: Path
    root: Path
    user: str = SUPERUSER
    _names: Any = field(default_factory=lambda: itertools.count(1), repr=False)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root

    def url(self, database: str = "postgres", user: str | None = None, password: str | None = None) -> str:
        """An SQLAlchemy URL (psycopg 3) for ``database`` over the cluster's Unix socket."""
        auth = user or self.user
        if password is not None:
            auth += f":{password}"
        return f"postgresql+psycopg://{auth}@/{database}?host={self.socket_dir}&port={PORT}"

    def connect(self, database: str = "postgres", user: str | None = None, autocommit: bool = True) -> Any:
        """A plain psycopg connection (the tests' own view of the database, not acfd's)."""
        import psycopg

        return psycopg.connect(host=str(self.socket_dir), port=PORT, dbname=database, user=user or self.user,
                               autocommit=autocommit)  # fmt: skip

    def create_database(self, name: str | None = None) -> str:
        """A new empty database (a copy of template0: nothing from template1); returns its name."""
        name = name or f"acfd_{os.getpid()}_{next(self._names)}"
        with self.connect() as c:
            # FILE_COPY: a tiny template copies faster this way than WAL-logged block by block.
            c.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 STRATEGY FILE_COPY')
        return name

    def drop_database(self, name: str) -> None:
        with self.connect() as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # ends sessions a test left open

    def stop(self) -> None:
        """Stop the server at once (nothing in it is kept) and delete its folder."""
        try:
            if (self.data / "postmaster.pid").exists():
                _run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"], "pg_ctl stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_cluster(bindir: Path) -> PgCluster:
    """initdb + start a cluster in a new temporary folder; stopped and deleted by :meth:`PgCluster.stop`."""
    # Short, in /tmp: a Unix socket path must stay under 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="acfd-pg-", dir="/tmp" if os.path.isdir("/tmp") else None))
    cluster = PgCluster(bindir, root)
    try:
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        _run([str(bindir / "initdb"), "-D", str(cluster.data), "-U", SUPERUSER, "--auth=trust", "--no-sync",
              "--encoding=UTF8", "--locale=C", "--no-instructions"], "initdb")  # fmt: skip
        conf = "".join(f"{k} = {v}\n" for k, v in SETTINGS.items())
        conf += f"unix_socket_directories = '{cluster.socket_dir}'\nport = {PORT}\n"
        with open(cluster.data / "postgresql.conf", "a", encoding="utf-8") as f:  # as root: the file stays the owner's
            f.write(conf)
        _run([str(bindir / "pg_ctl"), "-D", str(cluster.data), "-l", str(root / "server.log"), "-w", "-t", "60",
              "start"], "pg_ctl start")  # fmt: skip
    except BaseException:
        cluster.stop()
        raise
    return cluster


# --- the tests' own view of a database, by its URL -------------------------------------------------


def connect_url(url: str, autocommit: bool = True) -> Any:
    """A plain psycopg connection to the database of an SQLAlchemy URL made by :meth:`PgCluster.url`."""
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return psycopg.connect(host=u.query["host"], port=int(u.query.get("port", PORT)), dbname=u.database,
                           user=u.username, autocommit=autocommit)  # fmt: skip


def rows(url: str, sql: str, *params: object) -> list[tuple]:
    """Run ``sql`` (``%s`` placeholders) on the database of ``url``, committed; its rows ([] if none)."""
    with connect_url(url) as c:
        cur = c.execute(sql, params or None)
        return cur.fetchall() if cur.description else []


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` in it (trust auth ignores it: the tests check it is never shown or kept)."""
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{password}@{host}"
