"""``acfd-scan query``, ``acfd-scan schema`` and ``acfd-scan report``: thin click commands over
:mod:`.query` and :mod:`.report`. They are registered on ``acfd-scan`` in :mod:`.cli`.

Library errors (:class:`~acfd.schemas.errors.AcfdError`) become one line through the group.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .text import printable

DEFAULT_DB = "acfd.sqlite"


@click.command("query")
@click.argument("sql")
@click.option("--db", default=DEFAULT_DB, show_default=True, help="Verdict store: an SQLite file or an SQLAlchemy URL.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Stop a query that runs longer than this many seconds; 0: no limit. Ctrl-C also stops it.")
def query_cmd(sql: str, db: str, fmt: str, timeout_s: float) -> None:
    """Run one read-only SQL statement on the verdict store and print the rows ('-' reads SQL from stdin).

    The store is opened read-only: INSERT, UPDATE, DELETE, DDL, ATTACH and pragma assignments are
    refused and change nothing. Tables, the latest_verdicts view and example queries: docs/sql.md,
    or `acfd-scan schema`.
    """
    from .query import format_result, open_readonly, run_query

    if sql == "-":
        sql = sys.stdin.read()
    ro = open_readonly(db, timeout_s=timeout_s)
    try:
        result = run_query(ro, sql)
    finally:
        ro.dispose()
    click.echo(format_result(result, fmt))  # type: ignore[arg-type]


@click.command("schema")
@click.option("--db", default=DEFAULT_DB, show_default=True,
              help="Verdict store to describe; when the default file does not exist, the built-in schema is shown.")
@click.option("--models", "from_models", is_flag=True, help="Show the schema this acfd creates, without a database.")
@click.option("--upgrade", is_flag=True, help="Migrate an older store to this acfd's schema version first (writes).")
def schema_cmd(db: str, from_models: bool, upgrade: bool) -> None:
    """Print the tables, views and columns of the verdict store (see docs/sql.md for their meaning)."""
    from acfd.schemas.db import DB_SCHEMA_VERSION, safe_url

    from .query import format_schema, open_readonly, schema_from_db, schema_from_models
    from .query import upgrade as run_upgrade

    ctx = click.get_current_context()
    default_db = ctx.get_parameter_source("db") == click.core.ParameterSource.DEFAULT
    if from_models or (default_db and not upgrade and "://" not in db and not Path(db).exists()):
        click.echo(f"-- acfd verdict store, schema version {DB_SCHEMA_VERSION} (from the models)")
        click.echo(format_schema(schema_from_models()))
        return
    if upgrade:
        before, after = run_upgrade(db)
        shown = safe_url(db)  # never a URL's password
        msg = f"upgraded {shown} from schema version {before} to {after}" if before != after else f"{shown} is up to date"
        click.echo(f"-- {printable(msg)}", err=True)
    ro = open_readonly(db)
    try:
        click.echo(f"-- {printable(ro.where)}, schema version {ro.schema_version}")
        click.echo(format_schema(schema_from_db(ro)))
    finally:
        ro.dispose()


@click.command("report")
@click.option("--db", default=DEFAULT_DB, show_default=True, help="Verdict store: an SQLite file or an SQLAlchemy URL.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for index.html and img/ (created; an existing report there is replaced).")
@click.option("--only", type=click.Choice(["flagged", "all"]), default="flagged", show_default=True,
              help="flagged: table and details of flagged videos; all: every video, details for those with faces.")
@click.option("--scan", "scan_id", type=int, default=None, help="Only the videos of this scan id.")
@click.option("--max-crops", type=click.IntRange(min=0), default=12, show_default=True,
              help="Face crops with attention overlays per video.")
@click.option("--title", default="acfd report", show_default=True)
def report_cmd(db: str, out: Path, only: str, scan_id: int | None, max_crops: int, title: str) -> None:
    """Write a static HTML report (no server, no network): sortable verdict table, score plots, attention overlays."""
    from .report import ReportConfig, build_report

    s = build_report(db, ReportConfig(out=out, only=only, scan_id=scan_id, max_crops=max_crops, title=title))  # type: ignore[arg-type]
    click.echo(
        f"report: {printable(s.index)} ({s.n_videos} videos in the table, {s.n_flagged} flagged, {s.n_detailed} with details, "
        f"{s.n_images} images"
        + (f"; {s.n_streams} watched streams, {s.n_windows} windows" if s.n_streams else "")
        + f") [{s.seconds:.1f} s]"
    )
    for p in s.problems[:20]:
        click.echo(f"  warning: {printable(p)}", err=True)


COMMANDS = (query_cmd, schema_cmd, report_cmd)
