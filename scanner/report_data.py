"""What the report reads from the verdict store: the queries, and the records they fill."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from acfd.schemas import db as store
from acfd.schemas.card import (
    VALIDATION_NONE,
    VALIDATION_REAL,
    VALIDATION_STATES,
    VALIDATION_SYNTHETIC,
    CardError,
    ModelCard,
)
from acfd.schemas.db import AttentionMask, Detection, Model, StreamEvent, Verdict, Video, Window
from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

if TYPE_CHECKING:  # annotations only: report.py imports this module
    from .report import ReportConfig


@dataclass
class _Row:
    video: Video
    verdict: Verdict | None

    @property
    def label(self) -> str | None:
        return self.verdict.label if self.verdict else None

    @property
    def score(self) -> float | None:
        return self.verdict.score if self.verdict else None


@dataclass
class _Crop:
    detection_id: int
    identity: int
    time_s: float
    score: float
    crop_src: str = ""
    overlay_src: str = ""


@dataclass
class _Detail:
    row: _Row
    identities: list[Verdict]
    points: list[tuple[float, int, float]]  # (time_s, identity, score)
    crops: list[_Crop]


def _latest_ids(scan_id: int | None) -> Select[tuple[int]]:
    """Each path's newest ``videos`` row (within one scan, when given)."""
    latest = select(func.max(Video.id)).group_by(Video.path_key)
    return latest if scan_id is None else latest.where(Video.scan_id == scan_id)


def _whole_video_verdict() -> ColumnElement[bool]:
    return (Verdict.video_id == Video.id) & Verdict.identity.is_(None)


def _latest_rows(s: Session, scan_id: int | None, only_fake: bool) -> list[_Row]:
    stmt = select(Video, Verdict).outerjoin(Verdict, _whole_video_verdict()).where(Video.id.in_(_latest_ids(scan_id)))
    if only_fake:  # filtered in SQL: a large archive's many real videos are never loaded
        stmt = stmt.where(Verdict.label == store.LABEL_FAKE)
    return [_Row(v, vd) for v, vd in s.execute(stmt.order_by(Video.path)).all()]


def _counts(s: Session, scan_id: int | None) -> dict[str, int]:
    """How many current rows have each verdict label (or, without a verdict, each status)."""
    kind = func.coalesce(Verdict.label, Video.status)
    stmt = (
        select(kind, func.count())
        .select_from(Video)
        .outerjoin(Verdict, _whole_video_verdict())
        .where(Video.id.in_(_latest_ids(scan_id)))
        .group_by(kind)
    )
    return {k: int(n) for k, n in s.execute(stmt).all()}


# Weakest first: the banner leads with the least validated model.
_STATE_RANK = {VALIDATION_NONE: 0, VALIDATION_SYNTHETIC: 1, VALIDATION_REAL: 2}


@dataclass
class _ModelInfo:
    """A model behind the report's videos, with its card as stored."""

    model_id: str
    n_videos: int  # current rows (each path's newest) made with it
    row: Model | None
    state: str  # none | synthetic | real
    card: ModelCard | None
    problem: str = ""  # why a stored card could not be read
    n_windows: int = 0  # windows of watched streams (acfd-scan watch) in the report made with it


def _model_info(model_id: str, n_videos: int, row: Model | None) -> _ModelInfo:
    """The stored model row read defensively: no card (NULL, as in a store migrated from version 1)
    means unvalidated, and a column and card that disagree count as the weaker of the two."""
    if row is None:
        return _ModelInfo(model_id, n_videos, None, VALIDATION_NONE, None, "not in the models table")
    card, problem = None, ""
    if row.card_json is not None:
        try:
            card = ModelCard.from_dict(json.loads(row.card_json))
        except (ValueError, TypeError, CardError) as e:  # CardError is a ValueError; JSON errors too
            problem = f"stored card is unreadable: {e}"
    column = row.validation if row.validation in VALIDATION_STATES else VALIDATION_NONE
    state = VALIDATION_NONE if card is None else min(column, card.validation, key=_STATE_RANK.__getitem__)
    return _ModelInfo(model_id, n_videos, row, state, card, problem)


def _models(s: Session, scan_id: int | None) -> list[_ModelInfo]:
    """The models of each path's newest row (the videos the table and the counts describe), and of the
    watched streams' windows the report shows."""
    stmt = (
        select(Video.model_id, func.count())
        .where(Video.id.in_(_latest_ids(scan_id)))
        .group_by(Video.model_id)
    )
    counts = {str(m): int(n) for m, n in s.execute(stmt).all()}
    wstmt = select(Window.model_id, func.count()).group_by(Window.model_id)
    if scan_id is not None:
        wstmt = wstmt.where(Window.scan_id == scan_id)
    windows = {str(m): int(n) for m, n in s.execute(wstmt).all()}
    ids = list(dict.fromkeys([*counts, *windows]))
    rows = {m.model_id: m for m in s.scalars(select(Model).where(Model.model_id.in_(ids)))} if ids else {}
    infos = [_model_info(m, counts.get(m, 0), rows.get(m)) for m in ids]
    for i in infos:
        i.n_windows = windows.get(i.model_id, 0)
    return sorted(infos, key=lambda i: (_STATE_RANK[i.state], -i.n_videos, -i.n_windows, i.model_id))


def _pick_crops(cands: list[_Crop], limit: int) -> list[_Crop]:
    """Up to ``limit`` crops, round-robin over identities (most suspicious first), shown by identity and time."""
    by_id: dict[int, list[_Crop]] = defaultdict(list)
    for c in sorted(cands, key=lambda c: -c.score):
        by_id[c.identity].append(c)
    chosen: list[_Crop] = []
    queues = [by_id[k] for k in sorted(by_id)]
    while len(chosen) < limit and any(queues):
        for q in queues:
            if q and len(chosen) < limit:
                chosen.append(q.pop(0))
    return sorted(chosen, key=lambda c: (c.identity, c.time_s))


def _details(s: Session, rows: list[_Row], cfg: ReportConfig) -> list[_Detail]:
    ids = [r.video.id for r in rows]
    if not ids:
        return []
    idents: dict[int, list[Verdict]] = defaultdict(list)
    points: dict[int, list[tuple[float, int, float]]] = defaultdict(list)
    cands: dict[int, list[_Crop]] = defaultdict(list)
    for chunk in _chunks(ids, 500):
        for vd in s.scalars(
            select(Verdict).where(Verdict.video_id.in_(chunk), Verdict.identity.is_not(None)).order_by(Verdict.identity)
        ):
            idents[vd.video_id].append(vd)
        q = select(Detection.video_id, Detection.time_s, Detection.identity, Detection.score)
        for vid, t, ident, score in s.execute(q.where(Detection.video_id.in_(chunk)).order_by(Detection.time_s)):
            points[vid].append((float(t), int(ident), float(score)))
        q2 = (
            select(AttentionMask.detection_id, Detection.video_id, Detection.identity, Detection.time_s, Detection.score)
            .join(Detection, Detection.id == AttentionMask.detection_id)
            .where(Detection.video_id.in_(chunk))
        )
        for det_id, vid, ident, t, score in s.execute(q2):
            cands[vid].append(_Crop(int(det_id), int(ident), float(t), float(score)))
    return [
        _Detail(r, idents[r.video.id], points[r.video.id], _pick_crops(cands[r.video.id], cfg.max_crops))
        for r in rows
    ]


def _chunks(xs: Sequence[int], n: int) -> Iterable[Sequence[int]]:
    for i in range(0, len(xs), n):
        yield xs[i : i + n]


# -- watched streams (acfd-scan watch) ---------------------------------------------------------------------

MAX_STREAM_EVENTS = 200  # events listed per stream (the latest; a stream reconnecting for days has many)


@dataclass
class _WindowRow:
    """One stored window, as the plot needs it."""

    scan_id: int
    index: int
    started_at: dt.datetime
    ended_at: dt.datetime
    start_s: float | None
    end_s: float | None
    score: float | None
    label: str
    threshold: float
    n_frames: int
    n_faces: int


@dataclass
class _EventRow:
    scan_id: int
    at: dt.datetime
    kind: str
    message: str | None


@dataclass
class _StreamInfo:
    """One watched source: its windows in time order and its latest events."""

    source: str
    windows: list[_WindowRow]
    events: list[_EventRow]
    n_events: int  # all its events (``events`` holds the latest MAX_STREAM_EVENTS)

    @property
    def n_flagged(self) -> int:
        return sum(w.label == store.LABEL_FAKE for w in self.windows)


def _streams(s: Session, scan_id: int | None) -> list[_StreamInfo]:
    """Each watched source (by its bytes, ``windows.source_key``) with its windows and events (of one
    scan when ``scan_id`` is given), sources with a flagged window first, then by name."""
    wq = select(Window).order_by(Window.source_key, Window.started_at, Window.id)
    eq = select(StreamEvent).order_by(StreamEvent.at, StreamEvent.id)
    if scan_id is not None:
        wq, eq = wq.where(Window.scan_id == scan_id), eq.where(StreamEvent.scan_id == scan_id)
    by_key: dict[bytes, list[_WindowRow]] = defaultdict(list)
    names: dict[bytes, str] = {}
    for w in s.scalars(wq):
        key = bytes(w.source_key)
        names[key] = w.source
        by_key[key].append(_WindowRow(w.scan_id, w.window_index, w.started_at, w.ended_at, w.start_s, w.end_s,
                                      w.score, w.label, w.threshold, w.n_frames, w.n_faces))
    events: dict[str, list[_EventRow]] = defaultdict(list)
    for e in s.scalars(eq):
        events[e.source].append(_EventRow(e.scan_id, e.at, e.kind, e.message))
    out = []
    seen: set[str] = set()
    for key, rows in by_key.items():
        name = names[key]
        seen.add(name)
        evs = events.get(name, [])
        out.append(_StreamInfo(name, rows, evs[-MAX_STREAM_EVENTS:], len(evs)))
    for name, evs in events.items():  # a source that never gave a window (it never worked): its events
        if name not in seen:
            out.append(_StreamInfo(name, [], evs[-MAX_STREAM_EVENTS:], len(evs)))
    return sorted(out, key=lambda i: (i.n_flagged == 0, i.source))
