"""The verdict store: SQLAlchemy 2.0 models of scans, videos, detections, verdicts and attention masks.

One SQLite file by default (any SQLAlchemy URL works). Every table and column is documented in
``docs/scanner.md``; analysts query it with plain SQL, so names are plain and stable.

- ``scans``: one row per ``acfd-scan`` run (arguments, model, status, counts).
- ``models``: one row per model artifact seen (content hash, backend, metadata JSON).
- ``videos``: one row per file a scan processed (file facts, decode facts, status, error, timings).
- ``detections``: one row per face found on a sampled frame (box, detector score, model score, identity).
- ``verdicts``: per identity (``identity`` set) and per video (``identity`` NULL); label fake|real|no_face.
- ``attention_masks``: for a few stored face crops: the model's attention map and a small JPEG of the crop.
- ``windows``: per time window of a watched stream (``acfd-scan watch``): its verdict as it closed.
- ``stream_events``: a watched stream opened, dropped, given up or ended.
- ``latest_verdicts`` (view): each video path's most recent whole-video verdict.
- ``meta``: key/value, holds ``schema_version`` for migrations.

Writes on SQLite use WAL, foreign keys and ``BEGIN IMMEDIATE`` so several scans can share a file.
On PostgreSQL (``postgresql+psycopg://``, the ``acfd[postgres]`` extra) sessions use UTC, and schema
creation and migration hold an advisory lock, so scans starting at once on a new database wait for one
another instead of failing (docs/sql.md, "PostgreSQL").
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from sqlalchemy import (
    DDL,
    BigInteger,
    CheckConstraint,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from .errors import AcfdError

# Version of the table layout below. Bump it with every change and add a migration step to
# ``MIGRATIONS`` (from version N to N + 1).
DB_SCHEMA_VERSION = 4

# Values of ``videos.status``.
STATUS_OK = "ok"  # decoded, faces found, verdicts stored
STATUS_NO_FACE = "no_face"  # decoded, no face on any sampled frame: an explicit no_face verdict
STATUS_ERROR = "error"  # could not be read or decoded: ``videos.error`` says why, in one line
STATUS_SKIPPED = "skipped"  # not analysed on purpose: the same file (inode) under another path
VIDEO_STATUSES = (STATUS_OK, STATUS_NO_FACE, STATUS_ERROR, STATUS_SKIPPED)

# Values of ``verdicts.label``.
LABEL_FAKE = "fake"
LABEL_REAL = "real"
LABEL_NO_FACE = "no_face"
LABELS = (LABEL_FAKE, LABEL_REAL, LABEL_NO_FACE)

# Values of ``scans.status``.
SCAN_RUNNING = "running"
SCAN_DONE = "done"
SCAN_FAILED = "failed"  # stopped by an error that is not one video's fault
SCAN_INTERRUPTED = "interrupted"  # Ctrl-C, or found dead by a later scan (its lease ran out: killed)
SCAN_STATUSES = (SCAN_RUNNING, SCAN_DONE, SCAN_FAILED, SCAN_INTERRUPTED)

# Values of ``stream_events.kind`` (a stream watched by ``acfd-scan watch``).
EVENT_OPENED = "opened"  # decoding started (first connection, or again after a drop)
EVENT_DROPPED = "dropped"  # the stream failed or stalled: ``message`` says why
EVENT_GAVE_UP = "gave_up"  # reconnecting failed too often: watching this stream stopped
EVENT_ENDED = "ended"  # the stream ended (its end, --duration, Ctrl-C or SIGTERM): ``message`` says which
STREAM_EVENTS = (EVENT_OPENED, EVENT_DROPPED, EVENT_GAVE_UP, EVENT_ENDED)

# Encodings of ``attention_masks.data``.
MASK_PNG = "png"  # 8-bit grayscale PNG, value = round(255 * attention)
MASK_U8 = "u8"  # raw uint8 bytes, row-major h x w, value = round(255 * attention)

# One naming convention for every constraint and index, so migrations can name them (Alembic-style).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class StoreError(AcfdError):
    """The verdict store cannot be opened, is of a newer version, or holds inconsistent data."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Meta(Base):
    """Key/value facts about the database itself (``schema_version``, ``created_by``)."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Model(Base):
    """A model artifact, identified by the hash of its content (``Backend.model_id``)."""

    __tablename__ = "models"

    model_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    backend: Mapped[str] = mapped_column(String(32))
    # ArtifactMeta.to_json(): input size, threshold, radii, preset, config hash, ..., and the card
    meta_json: Mapped[str] = mapped_column(Text)
    first_seen: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The model card (acfd.schemas.card), also inside meta_json, here on its own for SQL (json_extract):
    # its validation state (none | synthetic | real), the card in one line, and the card as JSON.
    # Added in schema version 2.
    validation: Mapped[str] = mapped_column(String(16), default="none", server_default="none")
    card_summary: Mapped[str | None] = mapped_column(Text)
    card_json: Mapped[str | None] = mapped_column(Text)


class Scan(Base):
    """One run of ``acfd-scan``."""

    __tablename__ = "scans"
    __table_args__ = (CheckConstraint(_in("status", SCAN_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), default=SCAN_RUNNING)
    # The scan's settings as JSON (paths, fps/frames, strategy, batch size, device, ...).
    args: Mapped[str] = mapped_column(Text, default="{}")
    model_id: Mapped[str] = mapped_column(ForeignKey("models.model_id"))
    strategy: Mapped[str] = mapped_column(String(32))
    threshold: Mapped[float] = mapped_column(Float)
    backend: Mapped[str] = mapped_column(String(32), default="")
    device: Mapped[str] = mapped_column(String(32), default="")
    host: Mapped[str] = mapped_column(String(255), default="")
    pid: Mapped[int] = mapped_column(Integer, default=0)
    acfd_version: Mapped[str] = mapped_column(String(32), default="")
    # What really ran, e.g. "CPUExecutionProvider on AMD EPYC 7B13" (``device`` is cpu or cuda). Version 2.
    device_name: Mapped[str | None] = mapped_column(Text)
    # Counts, updated as videos are committed and final when the scan finishes.
    n_found: Mapped[int] = mapped_column(Integer, default=0)  # video candidates discovered
    n_ok: Mapped[int] = mapped_column(Integer, default=0)
    n_no_face: Mapped[int] = mapped_column(Integer, default=0)
    n_error: Mapped[int] = mapped_column(Integer, default=0)  # includes unreadable paths
    n_skipped: Mapped[int] = mapped_column(Integer, default=0)  # already scanned, or a duplicate inode
    n_flagged: Mapped[int] = mapped_column(Integer, default=0)  # videos with a whole-video "fake" verdict
    n_frames: Mapped[int] = mapped_column(Integer, default=0)  # frames decoded and searched for faces
    n_faces: Mapped[int] = mapped_column(Integer, default=0)  # detections scored by the model
    video_seconds: Mapped[float] = mapped_column(Float, default=0.0)  # duration of the videos analysed
    wall_s: Mapped[float | None] = mapped_column(Float)
    # While ``running``: until when the scan is known alive (UTC). The scan renews it every third of its
    # lease; a later scan (on any machine) marks a running scan whose lease has passed ``interrupted``.
    # NULL for scans written before version 3 (those are judged by host and pid). Version 3
    # (last, where the migration adds it, so new and migrated stores have one column order).
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    videos: Mapped[list[Video]] = relationship(
        back_populates="scan", cascade="all, delete-orphan", passive_deletes=True
    )


class Video(Base):
    """One file processed by one scan (a re-scan adds a new row; the newest is the current one)."""

    __tablename__ = "videos"
    __table_args__ = (
        UniqueConstraint("scan_id", "path_key"),
        CheckConstraint(_in("status", VIDEO_STATUSES), name="status"),
        CheckConstraint("status != 'error' OR error IS NOT NULL", name="error_has_text"),
        # The resume lookup: same path, size, mtime and model.
        Index(None, "path_key", "model_id", "size", "mtime_ns"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.model_id"))
    # ``path`` is for people (absolute, undecodable bytes shown as U+FFFD); ``path_key`` is the exact
    # file-system bytes (os.fsencode), the identity used for resume and by ``latest_verdicts``.
    path: Mapped[str] = mapped_column(Text, index=True)
    path_key: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int | None] = mapped_column(BigInteger)
    mtime_ns: Mapped[int | None] = mapped_column(BigInteger)
    # "ht1:" + sha256 over the size, the first and the last MiB: cheap, finds copies and renames.
    content_hash: Mapped[str | None] = mapped_column(String(80), index=True)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)  # one line, for status "error" (or why "skipped")
    # acfd.schemas.settings key of the scan settings this row was made with (resume compares it). Version 2.
    settings_key: Mapped[str | None] = mapped_column(String(24))
    # Decoded stream facts (NULL when the file could not be opened).
    container: Mapped[str | None] = mapped_column(String(64))
    codec: Mapped[str | None] = mapped_column(String(64))
    duration_s: Mapped[float | None] = mapped_column(Float)
    fps: Mapped[float | None] = mapped_column(Float)  # average frame rate of the stream
    n_frames_total: Mapped[int | None] = mapped_column(Integer)  # frames in the stream (container's count)
    width: Mapped[int | None] = mapped_column(Integer)  # displayed size, after rotation
    height: Mapped[int | None] = mapped_column(Integer)
    rotation: Mapped[int | None] = mapped_column(Integer)  # degrees counter-clockwise applied for display
    decoder: Mapped[str | None] = mapped_column(String(32))  # pyav, decord, decord-gpu or decord+pyav
    # What the scan did.
    n_frames: Mapped[int] = mapped_column(Integer, default=0)  # frames sampled and searched
    n_faces: Mapped[int] = mapped_column(Integer, default=0)
    n_identities: Mapped[int] = mapped_column(Integer, default=0)
    # Seconds spent per stage on this video (decode in the worker, detect, infer, aggregate + store).
    t_decode: Mapped[float] = mapped_column(Float, default=0.0)
    t_detect: Mapped[float] = mapped_column(Float, default=0.0)
    t_infer: Mapped[float] = mapped_column(Float, default=0.0)
    t_store: Mapped[float] = mapped_column(Float, default=0.0)
    scanned_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # For a URL: the server's ETag (with size = Content-Length and mtime_ns = Last-Modified, the resume
    # key); NULL for files and for servers that give none. Version 4 (last: where the migration adds it).
    etag: Mapped[str | None] = mapped_column(Text)

    scan: Mapped[Scan] = relationship(back_populates="videos")
    detections: Mapped[list[Detection]] = relationship(
        back_populates="video", cascade="all, delete-orphan", passive_deletes=True
    )
    verdicts: Mapped[list[Verdict]] = relationship(
        back_populates="video", cascade="all, delete-orphan", passive_deletes=True
    )


class Detection(Base):
    """One face on one sampled frame, with the model's score for its crop."""

    __tablename__ = "detections"
    __table_args__ = (Index(None, "video_id", "identity"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    video_id: Mapped[int] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    frame_index: Mapped[int] = mapped_column(Integer)  # 0-based index of the frame in decode order
    time_s: Mapped[float] = mapped_column(Float)  # presentation time of the frame
    identity: Mapped[int] = mapped_column(Integer)  # 0, 1, ... per video: faces tracked across frames
    # Face box in displayed full-resolution pixels (may extend past the frame).
    x0: Mapped[float] = mapped_column(Float)
    y0: Mapped[float] = mapped_column(Float)
    x1: Mapped[float] = mapped_column(Float)
    y1: Mapped[float] = mapped_column(Float)
    det_score: Mapped[float] = mapped_column(Float)  # detector confidence
    score: Mapped[float] = mapped_column(Float)  # the model's score (distance ||C||, or P(fake))

    video: Mapped[Video] = relationship(back_populates="detections")
    attention: Mapped[AttentionMask | None] = relationship(
        back_populates="detection", cascade="all, delete-orphan", passive_deletes=True
    )


class Verdict(Base):
    """A decision: per identity (``identity`` set) or for the whole video (``identity`` NULL)."""

    __tablename__ = "verdicts"
    __table_args__ = (
        CheckConstraint(_in("label", LABELS), name="label"),
        # A no_face verdict never carries a made-up score; every other verdict has one.
        CheckConstraint("(label = 'no_face') = (score IS NULL)", name="no_face_no_score"),
        Index(None, "video_id", "identity"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    video_id: Mapped[int] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"))
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.model_id"), index=True)
    identity: Mapped[int | None] = mapped_column(Integer)
    score: Mapped[float | None] = mapped_column(Float)
    label: Mapped[str] = mapped_column(String(16), index=True)
    threshold: Mapped[float] = mapped_column(Float)
    strategy: Mapped[str] = mapped_column(String(32))
    n_faces: Mapped[int] = mapped_column(Integer, default=0)  # frame scores that went into it
    # For a video: the first and last time a face of this identity (or any face) was seen.
    t_first: Mapped[float | None] = mapped_column(Float)
    t_last: Mapped[float | None] = mapped_column(Float)

    video: Mapped[Video] = relationship(back_populates="verdicts")


class Window(Base):
    """A time window of a watched stream (``acfd-scan watch``), judged when it closes."""

    __tablename__ = "windows"
    __table_args__ = (
        CheckConstraint(_in("label", LABELS), name="label"),
        CheckConstraint("(label = 'no_face') = (score IS NULL)", name="no_face_no_score"),
        UniqueConstraint("scan_id", "source_key", "window_index"),
        Index(None, "source_key", "started_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.model_id"))
    # The stream as given, without any user:password (``source``), and its exact bytes (``source_key``).
    source: Mapped[str] = mapped_column(Text)
    source_key: Mapped[bytes] = mapped_column(LargeBinary)
    window_index: Mapped[int] = mapped_column(Integer)  # 0, 1, ... per stream within one watch
    # Wall-clock (UTC) and stream time (the stream's own clock, seconds) of the window's start and end.
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    start_s: Mapped[float | None] = mapped_column(Float)
    end_s: Mapped[float | None] = mapped_column(Float)
    n_frames: Mapped[int] = mapped_column(Integer, default=0)  # frames sampled in the window
    n_faces: Mapped[int] = mapped_column(Integer, default=0)
    n_identities: Mapped[int] = mapped_column(Integer, default=0)
    score: Mapped[float | None] = mapped_column(Float)  # as a video's score: the highest supported identity's
    label: Mapped[str] = mapped_column(String(16), index=True)
    threshold: Mapped[float] = mapped_column(Float)
    strategy: Mapped[str] = mapped_column(String(32))


class StreamEvent(Base):
    """Something that happened to a watched stream: opened, dropped, given up, ended."""

    __tablename__ = "stream_events"
    __table_args__ = (CheckConstraint(_in("kind", STREAM_EVENTS), name="kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(Text)  # without any user:password
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    kind: Mapped[str] = mapped_column(String(16))
    message: Mapped[str | None] = mapped_column(Text)  # one line: why it dropped, which attempt, ...


class AttentionMask(Base):
    """The model's attention map for one stored face crop, plus a small JPEG of the crop itself."""

    __tablename__ = "attention_masks"
    __table_args__ = (CheckConstraint(_in("encoding", (MASK_PNG, MASK_U8)), name="encoding"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    detection_id: Mapped[int] = mapped_column(
        ForeignKey("detections.id", ondelete="CASCADE"), unique=True
    )
    h: Mapped[int] = mapped_column(Integer)
    w: Mapped[int] = mapped_column(Integer)
    encoding: Mapped[str] = mapped_column(String(8))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    # The face crop the model saw (RGB), downscaled to ``crop_size`` and JPEG-encoded.
    crop_size: Mapped[int] = mapped_column(Integer)
    crop_jpeg: Mapped[bytes] = mapped_column(LargeBinary)

    detection: Mapped[Detection] = relationship(back_populates="attention")


# Each video path's most recent whole-video verdict (any model), with the file facts beside it.
LATEST_VERDICTS_SQL = """
CREATE VIEW latest_verdicts AS
SELECT
    v.path AS path,
    v.path_key AS path_key,
    v.id AS video_id,
    v.status AS status,
    v.duration_s AS duration_s,
    v.n_identities AS n_identities,
    vd.id AS verdict_id,
    vd.scan_id AS scan_id,
    vd.model_id AS model_id,
    vd.label AS label,
    vd.score AS score,
    vd.threshold AS threshold,
    vd.strategy AS strategy,
    vd.n_faces AS n_faces,
    v.scanned_at AS scanned_at
FROM verdicts vd
JOIN videos v ON v.id = vd.video_id
WHERE vd.identity IS NULL
  AND vd.id = (
    SELECT MAX(vd2.id)
    FROM verdicts vd2
    JOIN videos v2 ON v2.id = vd2.video_id
    WHERE v2.path_key = v.path_key AND vd2.identity IS NULL
  )
"""



def _view_missing(ddl: Any, target: Any, bind: Any, **kw: Any) -> bool:
    from sqlalchemy import inspect

    return "latest_verdicts" not in inspect(bind).get_view_names()


event.listen(Base.metadata, "after_create", DDL(LATEST_VERDICTS_SQL).execute_if(callable_=_view_missing))
event.listen(Base.metadata, "before_drop", DDL("DROP VIEW IF EXISTS latest_verdicts"))

def _migrate_1_to_2(conn: Any) -> None:
    """Version 2: the model card columns of ``models`` (filled from each model's stored metadata),
    ``scans.device_name``, and ``videos.settings_key`` (filled from each scan's recorded settings)."""
    import json

    from sqlalchemy import inspect, text

    from .card import ModelCard

    cols = {c["name"] for c in inspect(conn).get_columns("models")}
    if "validation" not in cols:
        conn.execute(text("ALTER TABLE models ADD COLUMN validation VARCHAR(16) DEFAULT 'none' NOT NULL"))
    if "card_summary" not in cols:
        conn.execute(text("ALTER TABLE models ADD COLUMN card_summary TEXT"))
    if "card_json" not in cols:
        conn.execute(text("ALTER TABLE models ADD COLUMN card_json TEXT"))
    if "device_name" not in {c["name"] for c in inspect(conn).get_columns("scans")}:
        conn.execute(text("ALTER TABLE scans ADD COLUMN device_name TEXT"))
    if "settings_key" not in {c["name"] for c in inspect(conn).get_columns("videos")}:
        conn.execute(text("ALTER TABLE videos ADD COLUMN settings_key VARCHAR(24)"))
    # Each old row gets the key of the settings its scan recorded, so resume goes on across the upgrade.
    from .settings import key_for_status

    for scan_id, args_json in conn.execute(text("SELECT id, args FROM scans")).all():
        try:
            args = json.loads(args_json or "{}")
        except ValueError:
            continue  # unreadable settings: no key, those videos are scanned again
        if not isinstance(args, dict):
            continue
        for status in ("error", "ok"):
            where = "status = 'error'" if status == "error" else "status != 'error'"
            conn.execute(
                text(f"UPDATE videos SET settings_key = :k WHERE scan_id = :s AND {where}"),
                {"k": key_for_status(args, status), "s": scan_id},
            )
    for model_id, meta_json in conn.execute(text("SELECT model_id, meta_json FROM models")).all():
        try:
            card_d = json.loads(meta_json).get("card")
            card = ModelCard.from_dict(card_d) if card_d else None
        except (ValueError, AttributeError):  # a model row whose metadata cannot be read: no card
            card = None
        if card is not None:
            conn.execute(
                text("UPDATE models SET validation = :v, card_summary = :s, card_json = :j WHERE model_id = :m"),
                {"v": card.validation, "s": card.one_line(), "j": json.dumps(card.to_dict()), "m": model_id},
            )


def _migrate_2_to_3(conn: Any) -> None:
    """Version 3: ``scans.lease_until`` (NULL for old scans, which keep being judged by host and pid)."""
    from sqlalchemy import inspect, text

    if "lease_until" not in {c["name"] for c in inspect(conn).get_columns("scans")}:
        kind = DateTime(timezone=True).compile(dialect=conn.dialect)  # PostgreSQL: TIMESTAMP WITH TIME ZONE
        conn.execute(text(f"ALTER TABLE scans ADD COLUMN lease_until {kind}"))


def _migrate_3_to_4(conn: Any) -> None:
    """Version 4: ``videos.etag`` (NULL for old rows); the ``windows`` and ``stream_events`` tables are
    new, made by ``init_db`` like any missing table."""
    from sqlalchemy import inspect, text

    if "etag" not in {c["name"] for c in inspect(conn).get_columns("videos")}:
        conn.execute(text("ALTER TABLE videos ADD COLUMN etag TEXT"))


# Migration steps: MIGRATIONS[n](connection) upgrades a database from version n to n + 1. Each step
# is tested on a store written by the release before it (tests/test_migrations.py).
MIGRATIONS: dict[int, Any] = {1: _migrate_1_to_2, 2: _migrate_2_to_3, 3: _migrate_3_to_4}


def database_url(db: str | os.PathLike[str]) -> str:
    """An SQLAlchemy URL from a URL or a file path (a path means an SQLite file)."""
    s = os.fspath(db)
    if "://" in s:
        return s
    return f"sqlite:///{Path(s).expanduser().resolve()}"


# The extra that installs the PostgreSQL driver, named in the error when it is missing.
POSTGRES_EXTRA = "pip install 'acfd[postgres]'"
# pg_advisory_xact_lock key held while init_db creates or migrates a PostgreSQL store ("acfd" in ASCII).
SCHEMA_LOCK_KEY = 0x61636664


def engine_url(db: str | os.PathLike[str]) -> str:
    """:func:`database_url`, with PostgreSQL URLs that name no driver (``postgresql://``, ``postgres://``)
    given psycopg 3, the driver ``acfd[postgres]`` installs (SQLAlchemy's own default is psycopg2)."""
    url = database_url(db)
    scheme, sep, rest = url.partition("://")
    if scheme.lower() in ("postgresql", "postgres"):
        return f"postgresql+psycopg{sep}{rest}"
    return url


def check_driver(url: str, shown: str | None = None) -> None:
    """A :class:`StoreError` naming the extra to install when ``url`` needs psycopg and it is missing."""
    scheme = url.partition("://")[0].lower()
    if scheme != "postgresql+psycopg":
        return
    try:
        import psycopg  # noqa: F401  (the optional driver: only its presence is checked here)
    except ImportError:
        raise StoreError(
            f"the PostgreSQL store {shown or safe_url(url)} needs the psycopg driver, which is not installed: "
            f"{POSTGRES_EXTRA}"
        ) from None


def _sqlite_setup(engine: Engine, busy_timeout_ms: int) -> None:
    # pysqlite's own transaction handling starts transactions lazily (deferred) and can deadlock two
    # writers; take the write lock at BEGIN instead (SQLAlchemy docs, "Serializable isolation /
    # Savepoints / Transactional DDL" recipe for pysqlite).
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable at checkpoints, no corruption
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _postgresql_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Times come back in UTC whatever the server's TimeZone, as they are documented (and as SQLite
        # gives them); outside a transaction, so that a rollback cannot undo it.
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        dbapi_connection.execute("SET TIME ZONE 'UTC'")
        dbapi_connection.autocommit = autocommit


def safe_url(url: str | os.PathLike[str]) -> str:
    """``--db`` as it may be shown or stored: a URL's password as ***; a file path as it is."""
    from sqlalchemy.engine import make_url

    url = os.fspath(url)
    if "://" not in url:
        return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # unparsable: it cannot be shown safely either
        return url.split("://", 1)[0] + "://..."


def make_engine(db: str | os.PathLike[str], busy_timeout_ms: int = 60_000, **kw: Any) -> Engine:
    """An engine for ``db`` (a URL or an SQLite file path); SQLite gets WAL, foreign keys, a busy wait;
    PostgreSQL gets UTC sessions and a connection check before each use (a scan lasts hours)."""
    url = engine_url(db)
    check_driver(url, safe_url(db))
    if url.startswith("postgresql"):
        kw.setdefault("pool_pre_ping", True)
    try:
        engine = create_engine(url, **kw)
    except Exception as e:  # bad URL, missing driver
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise StoreError(f"cannot open database {safe_url(db)}: {detail}") from e
    if engine.dialect.name == "sqlite":
        _sqlite_setup(engine, busy_timeout_ms)
    elif engine.dialect.name == "postgresql":
        _postgresql_setup(engine)
    return engine


def init_db(engine: Engine) -> int:
    """Create missing tables and the view, migrate an older database; returns the schema version.

    Raises :class:`StoreError` for a database written by a newer acfd.
    """
    from sqlalchemy import inspect, text
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Until this transaction ends: two scans starting at once on a new (or older) database
                # would both create (or migrate) it, and one would fail; the second waits, then finds it done.
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK_KEY})
            existing = set(inspect(conn).get_table_names())
            if existing and "meta" not in existing:  # someone else's database: never add our tables to it
                raise StoreError(
                    f"{engine.url.database or engine.url} is not an acfd verdict store (it has tables "
                    f"{', '.join(sorted(existing)[:6])} and no meta table); choose another --db"
                )
            if "meta" in existing:
                row = conn.execute(select(Meta.value).where(Meta.key == "schema_version")).scalar()
                version = int(row) if row is not None else DB_SCHEMA_VERSION
                if version > DB_SCHEMA_VERSION:
                    raise StoreError(
                        f"database schema version {version} is newer than this acfd understands "
                        f"({DB_SCHEMA_VERSION}); upgrade acfd"
                    )
                while version < DB_SCHEMA_VERSION:
                    MIGRATIONS[version](conn)
                    version += 1
                    conn.execute(
                        Meta.__table__.update().where(Meta.key == "schema_version").values(value=str(version))
                    )
            if not existing >= set(Base.metadata.tables) or "latest_verdicts" not in inspect(conn).get_view_names():
                Base.metadata.create_all(conn, checkfirst=True)  # the view too, when missing
            if conn.execute(select(Meta.key).where(Meta.key == "schema_version")).first() is None:
                conn.execute(Meta.__table__.insert().values(key="schema_version", value=str(DB_SCHEMA_VERSION)))
            else:
                # A write that changes nothing: a store that cannot be written fails here, before a
                # scan starts, not at its first video.
                conn.execute(
                    Meta.__table__.update().where(Meta.key == "schema_version").values(value=Meta.__table__.c.value)
                )
    except SQLAlchemyError as e:
        detail = (str(getattr(e, "orig", None) or e).strip().splitlines() or [type(e).__name__])[0]  # one line
        if "readonly database" in detail or "read-only" in detail:
            where = engine.url.database or engine.url.render_as_string(hide_password=True)
            fix = ("fix the permissions of the file and its folder" if engine.dialect.name == "sqlite"
                   else "connect as a role that may write it (not a read-only one)")
            raise StoreError(f"the verdict store {where} cannot be written ({detail}): choose another --db, or {fix}") from e
        raise StoreError(f"cannot initialise the verdict store at {engine.url!r}: {detail}") from e
    return DB_SCHEMA_VERSION


def open_store(db: str | os.PathLike[str], **kw: Any) -> Engine:
    """``make_engine`` + ``init_db``: a ready verdict store."""
    engine = make_engine(db, **kw)
    init_db(engine)
    return engine


def session(engine: Engine) -> Session:
    """A session that keeps loaded objects usable after commit."""
    return Session(engine, expire_on_commit=False)


def encode_mask(attention: Any, encoding: str = MASK_PNG) -> bytes:
    """A float attention map in [0, 1] (h x w) as compact bytes (8-bit PNG or raw uint8)."""
    import numpy as np

    a = np.asarray(attention, dtype=np.float32)
    if a.ndim != 2:
        raise StoreError(f"attention map must be 2-D, got shape {a.shape}")
    u8 = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    if encoding == MASK_U8:
        return u8.tobytes()
    if encoding == MASK_PNG:
        import cv2

        ok, buf = cv2.imencode(".png", u8)
        if not ok:
            raise StoreError("PNG encoding of an attention map failed")
        return buf.tobytes()
    raise StoreError(f"unknown mask encoding {encoding!r}")


def decode_mask(data: bytes, h: int, w: int, encoding: str = MASK_PNG) -> Any:
    """The inverse of :func:`encode_mask`: a float32 h x w array in [0, 1] (quantised to 1/255)."""
    import numpy as np

    if encoding == MASK_U8:
        u8 = np.frombuffer(data, dtype=np.uint8)
        if u8.size != h * w:
            raise StoreError(f"mask has {u8.size} bytes, expected {h}x{w}")
        u8 = u8.reshape(h, w)
    elif encoding == MASK_PNG:
        import cv2

        u8 = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
        if u8 is None or u8.shape != (h, w):
            raise StoreError(f"mask PNG is corrupt or not {h}x{w}")
    else:
        raise StoreError(f"unknown mask encoding {encoding!r}")
    return u8.astype(np.float32) / 255.0
