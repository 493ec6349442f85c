"""A static HTML report of a verdict store (``acfd-scan report``): no server, no network, no remote resource.

``DIR/index.html`` holds a sortable table of videos (each path's most recent row) with their verdicts
and scores, and for each flagged video (or each video with faces, ``only="all"``): its score over time
(an inline SVG drawn here, threshold line included), its per-identity verdicts, and the stored face
crops beside the same crops with the model's attention map overlaid as a heatmap (``DIR/img/*.jpg``).
Everything is made from what the scan stored; the original videos are only linked (``file://``).

What the verdicts are worth comes first: a banner at the top states the validation state of the
model(s) behind the videos in the report (``models.validation``; a model without a card, such as one
from a store written before cards, is unvalidated), styled by state: a strong warning for ``none``,
a weaker one for ``synthetic``, a plain note for ``real``; and the full model card of each of those
models (``models.card_json``) is shown at the end, every evaluation a row of a table.

File names in an archive are untrusted, so every piece of text from the database is HTML-escaped
(attributes always double-quoted), no database text goes inside ``<script>``, and the page carries a
Content-Security-Policy that allows only its own inline script (by hash), inline styles and images
from the report folder: no remote load, no inline event handler, even if a bug let markup through.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import json
import math
import os
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from acfd.schemas import db as store
from acfd.schemas.card import (
    VALIDATION_NONE,
    VALIDATION_REAL,
    VALIDATION_STATES,
    VALIDATION_SYNTHETIC,
    CardError,
    Evaluation,
    ModelCard,
    validation_banner,
)
from acfd.schemas.db import AttentionMask, Detection, Model, Scan, StoreError, Verdict, Video
from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from .query import ReadOnlyStore, open_readonly

Only = Literal["flagged", "all"]

# Identity colours (Okabe-Ito, readable by colour-blind reviewers); the threshold line is red.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
HEATMAP = cv2.COLORMAP_JET
_IMAGE_NAME = re.compile(r"d\d+_(crop|attention)\.jpg")


@dataclass(frozen=True)
class ReportConfig:
    """What ``build_report`` writes, and where."""

    out: Path
    only: Only = "flagged"
    scan_id: int | None = None  # only the videos of this scan (default: each path's newest row)
    max_crops: int = 12  # attention overlays per video
    alpha: float = 0.6  # heatmap opacity where attention is 1 (scaled by the attention value)
    title: str = "acfd report"

    def __post_init__(self) -> None:
        if self.only not in ("flagged", "all"):
            raise StoreError(f"--only must be 'flagged' or 'all', not {self.only!r}")
        if self.max_crops < 0:
            raise StoreError("max_crops must be >= 0")
        if not 0.0 <= self.alpha <= 1.0:
            raise StoreError("alpha must be in [0, 1]")


@dataclass(frozen=True)
class ReportSummary:
    """What a report holds (for the CLI's one-line summary and for tests)."""

    index: Path
    n_videos: int  # rows in the table
    n_flagged: int
    n_detailed: int  # videos with a plot/crops section
    n_images: int  # crop + overlay files written
    problems: list[str] = field(default_factory=list)  # stored images that could not be decoded
    seconds: float = 0.0
    # (model_id, validation state) of each model behind the report's videos, least validated first
    models: list[tuple[str, str]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------
# Data.


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
    """The models of each path's newest row (the videos the table and the counts describe)."""
    stmt = (
        select(Video.model_id, func.count())
        .where(Video.id.in_(_latest_ids(scan_id)))
        .group_by(Video.model_id)
    )
    counts = {str(m): int(n) for m, n in s.execute(stmt).all()}
    rows = {m.model_id: m for m in s.scalars(select(Model).where(Model.model_id.in_(list(counts))))} if counts else {}
    infos = [_model_info(m, n, rows.get(m)) for m, n in counts.items()]
    return sorted(infos, key=lambda i: (_STATE_RANK[i.state], -i.n_videos, i.model_id))


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


# ---------------------------------------------------------------------------------------------------
# Images.


def overlay_attention(crop_bgr: np.ndarray, attention: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """The crop with ``attention`` (h x w floats in [0, 1]) upsampled to its size and blended in as a heatmap.

    Opacity grows with the attention value (``alpha`` at 1), so what the model ignored stays visible.
    """
    h, w = crop_bgr.shape[:2]
    a = cv2.resize(np.clip(attention.astype(np.float32), 0.0, 1.0), (w, h), interpolation=cv2.INTER_CUBIC)
    a = np.clip(a, 0.0, 1.0)
    heat = cv2.applyColorMap(np.rint(a * 255).astype(np.uint8), HEATMAP).astype(np.float32)
    weight = (alpha * a)[..., None]
    out = crop_bgr.astype(np.float32) * (1.0 - weight) + heat * weight
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _write_images(s: Session, details: list[_Detail], img_dir: Path, alpha: float) -> tuple[int, list[str]]:
    want = {c.detection_id: c for d in details for c in d.crops}
    if img_dir.is_dir():  # a previous report's images (faces) must not linger beside the new one
        for old in img_dir.iterdir():
            if _IMAGE_NAME.fullmatch(old.name):
                old.unlink()
    if not want:
        return 0, []
    img_dir.mkdir(parents=True, exist_ok=True)
    n, problems = 0, []
    for chunk in _chunks(sorted(want), 200):
        for m in s.scalars(select(AttentionMask).where(AttentionMask.detection_id.in_(chunk))):
            c = want[m.detection_id]
            crop = cv2.imdecode(np.frombuffer(m.crop_jpeg or b"", np.uint8), cv2.IMREAD_COLOR)
            if crop is None:
                problems.append(f"detection {m.detection_id}: stored face crop is not a readable JPEG")
                continue
            crop_name = f"d{m.detection_id}_crop.jpg"
            (img_dir / crop_name).write_bytes(m.crop_jpeg)  # as stored: what the model saw
            c.crop_src = f"img/{crop_name}"
            n += 1
            try:
                att = store.decode_mask(m.data, m.h, m.w, m.encoding)
            except StoreError as e:
                problems.append(f"detection {m.detection_id}: {e}")
                continue
            ok, buf = cv2.imencode(".jpg", overlay_attention(crop, att, alpha), [cv2.IMWRITE_JPEG_QUALITY, 92])
            if ok:
                name = f"d{m.detection_id}_attention.jpg"
                (img_dir / name).write_bytes(buf.tobytes())
                c.overlay_src = f"img/{name}"
                n += 1
    for d in details:  # crops whose images failed are not shown
        d.crops = [c for c in d.crops if c.crop_src]
    return n, problems


def _colorbar_data_uri() -> str:
    bar = cv2.applyColorMap(np.tile(np.arange(256, dtype=np.uint8), (10, 1)), HEATMAP)
    ok, buf = cv2.imencode(".png", bar)
    assert ok
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


# ---------------------------------------------------------------------------------------------------
# HTML.


def esc(x: object) -> str:
    """HTML-escape any value for text and double-quoted attribute contexts (quotes included)."""
    return html.escape("" if x is None else str(x), quote=True)


def _num(x: float | None, digits: int = 2) -> str:
    return "" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _nice_step(span: float, target: int = 5) -> float:
    raw = span / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def score_plot(
    points: Sequence[tuple[float, int, float]],
    threshold: float | None,
    t_max: float | None = None,
    width: int = 640,
    height: int = 220,
) -> str:
    """An inline SVG of per-face scores over time, one coloured line per identity, and the threshold line."""
    ml, mr, mt, mb = 48, 16, 14, 34
    pw, ph = width - ml - mr, height - mt - mb
    ts = [p[0] for p in points]
    ys = [p[2] for p in points] + ([threshold] if threshold is not None else [])
    x1 = max([t_max or 0.0, *ts, 1e-6])
    y1 = max([*ys, 1e-6]) * 1.12
    xstep, ystep = _nice_step(x1), _nice_step(y1)
    y1 = math.ceil(y1 / ystep) * ystep

    def sx(t: float) -> float:
        return ml + pw * t / x1

    def sy(v: float) -> float:
        return mt + ph * (1 - v / y1)

    out = [
        f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="score over time">',
        f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ccc"/>',
    ]
    k = 0
    while k * ystep <= y1 + 1e-9:
        v = k * ystep
        out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{sy(v):.1f}" y2="{sy(v):.1f}" stroke="#e4e4e4"/>')
        out.append(f'<text x="{ml - 6}" y="{sy(v) + 4:.1f}" text-anchor="end" class="tick">{esc(f"{v:g}")}</text>')
        k += 1
    k = 0
    while k * xstep <= x1 + 1e-9:
        t = k * xstep
        out.append(f'<text x="{sx(t):.1f}" y="{mt + ph + 16}" text-anchor="middle" class="tick">{esc(f"{t:g}")}</text>')
        k += 1
    out.append(f'<text x="{ml + pw / 2:.0f}" y="{height - 4}" text-anchor="middle" class="axis">time (s)</text>')
    out.append(
        f'<text x="12" y="{mt + ph / 2:.0f}" text-anchor="middle" class="axis" '
        f'transform="rotate(-90 12 {mt + ph / 2:.0f})">score</text>'
    )
    if threshold is not None:
        y = sy(threshold)
        out.append(
            f'<line class="threshold" x1="{ml}" x2="{ml + pw}" y1="{y:.1f}" y2="{y:.1f}" '
            'stroke="#d62728" stroke-width="1.5" stroke-dasharray="6 4"/>'
        )
        out.append(
            f'<text x="{ml + pw - 4}" y="{y - 5:.1f}" text-anchor="end" class="tick" fill="#d62728">'
            f"threshold {esc(_num(threshold))}</text>"
        )
    by_id: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for t, ident, v in points:
        by_id[ident].append((t, v))
    for ident in sorted(by_id):
        colour = PALETTE[ident % len(PALETTE)]
        pts = sorted(by_id[ident])
        poly = " ".join(f"{sx(t):.1f},{sy(v):.1f}" for t, v in pts)
        out.append(f'<g class="identity" data-identity="{ident}">')
        out.append(f'<polyline points="{poly}" fill="none" stroke="{colour}" stroke-width="1.8"/>')
        for t, v in pts:
            out.append(
                f'<circle cx="{sx(t):.1f}" cy="{sy(v):.1f}" r="2.6" fill="{colour}">'
                f"<title>identity {ident} · {esc(_num(t))} s · score {esc(_num(v))}</title></circle>"
            )
        out.append("</g>")
    if not points:
        out.append(f'<text x="{ml + pw / 2:.0f}" y="{mt + ph / 2:.0f}" text-anchor="middle">no face scores</text>')
    out.append("</svg>")
    return "".join(out)


# Static; no database text ever goes in here (data is read from escaped data- attributes).
_SCRIPT = """
(function () {
  'use strict';
  var table = document.getElementById('videos');
  if (table && table.tHead && table.tBodies.length) {
    var tbody = table.tBodies[0];
    var heads = table.tHead.rows[0].cells;
    var key = function (cell, type) {
      var v = cell.getAttribute('data-sort');
      if (v === null) { v = cell.textContent; }
      if (type === 'num') { var f = parseFloat(v); return isNaN(f) ? null : f; }
      return v.toLowerCase();
    };
    var sortBy = function (i, dir) {
      var type = heads[i].getAttribute('data-type');
      var rows = Array.prototype.slice.call(tbody.rows);
      rows.sort(function (a, b) {
        var x = key(a.cells[i], type), y = key(b.cells[i], type);
        if (x === y) { return 0; }
        if (x === null || x === '') { return 1; }   /* empty cells last, either way */
        if (y === null || y === '') { return -1; }
        return (x < y ? -1 : 1) * dir;
      });
      rows.forEach(function (r) { tbody.appendChild(r); });
      for (var j = 0; j < heads.length; j++) { heads[j].removeAttribute('aria-sort'); }
      heads[i].setAttribute('aria-sort', dir > 0 ? 'ascending' : 'descending');
    };
    Array.prototype.forEach.call(heads, function (th, i) {
      var b = th.querySelector('button');
      if (!b) { return; }
      b.addEventListener('click', function () {
        var cur = th.getAttribute('aria-sort');
        var first = th.getAttribute('data-type') === 'num' ? -1 : 1;
        sortBy(i, cur === 'ascending' ? -1 : cur === 'descending' ? 1 : first);
      });
    });
    var wanted = /^#sort=([a-z_]+)(?::(asc|desc))?$/.exec(window.location.hash || '');
    var start = -1, dir = -1;
    Array.prototype.forEach.call(heads, function (th, i) {
      if (wanted && th.getAttribute('data-key') === wanted[1]) { start = i; dir = wanted[2] === 'asc' ? 1 : -1; }
    });
    if (start < 0) {
      Array.prototype.forEach.call(heads, function (th, i) {
        if (th.hasAttribute('data-default-sort')) { start = i; dir = th.getAttribute('data-default-sort') === 'asc' ? 1 : -1; }
      });
    }
    if (start >= 0) { sortBy(start, dir); }
  }
  window.addEventListener('load', function () {
    var broken = 0;
    Array.prototype.forEach.call(document.images, function (img) {
      if (img.complete && img.naturalWidth === 0) { img.classList.add('broken'); broken++; }
    });
    document.body.setAttribute('data-images-broken', String(broken));
  });
})();
"""

_CSS = """
:root { --fake: #c62828; --real: #2e7d32; --noface: #616161; --error: #ef6c00; --line: #e0e0e0; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #212121;
       margin: 0; background: #f5f6f8; }
header { background: #263238; color: #fff; padding: 18px 28px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header .sub { color: #b0bec5; font-size: 13px; word-break: break-all; }
main { padding: 18px 28px 40px; }
.table-wrap { overflow-x: auto; background: #fff; border: 1px solid var(--line); border-radius: 8px; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin: 4px 0 18px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px 16px; min-width: 110px; }
.card b { display: block; font-size: 22px; }
.card span { color: #607d8b; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
h2 { font-size: 18px; margin: 26px 0 10px; }
table { border-collapse: collapse; background: #fff; width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 9px; text-align: left; vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
thead th { background: #eceff1; position: sticky; top: 0; z-index: 1; white-space: nowrap; }
th button { font: inherit; font-weight: 600; background: none; border: 0; padding: 0; cursor: pointer; color: inherit; }
th[aria-sort=ascending] button::after { content: " \\25B2"; font-size: 10px; }
th[aria-sort=descending] button::after { content: " \\25BC"; font-size: 10px; }
td.path { overflow-wrap: anywhere; min-width: 240px; max-width: 480px; }
td.when { white-space: nowrap; }
td.path a.open { font-size: 11px; margin-left: 4px; }
td.err { color: #6d4c41; font-size: 12px; overflow-wrap: anywhere; min-width: 160px; max-width: 300px; }
.badge { display: inline-block; white-space: nowrap; border-radius: 10px; padding: 0 8px; font-size: 12px; font-weight: 600; color: #fff; }
.badge.fake { background: var(--fake); } .badge.real { background: var(--real); }
.badge.no_face, .badge.skipped { background: var(--noface); } .badge.error { background: var(--error); }
section.video { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 14px 18px; margin: 16px 0; }
section.video h3 { margin: 0 0 6px; font-size: 16px; word-break: break-all; }
.facts { color: #546e7a; font-size: 12px; margin-bottom: 8px; }
.row { display: flex; gap: 24px; flex-wrap: wrap; align-items: flex-start; }
.plot .tick { font-size: 11px; fill: #546e7a; } .plot .axis { font-size: 12px; fill: #37474f; }
table.ids { width: auto; } table.ids td, table.ids th { padding: 3px 10px; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
.crops { display: flex; flex-wrap: wrap; gap: 12px; margin-top: 10px; }
figure { margin: 0; background: #fafafa; border: 1px solid var(--line); border-radius: 6px; padding: 6px; }
figure img { width: 128px; height: 128px; display: inline-block; image-rendering: auto; background: #ddd; }
figcaption { font-size: 11px; color: #546e7a; text-align: center; margin-top: 3px; }
img.broken { outline: 2px solid var(--error); }
.legend { font-size: 12px; color: #546e7a; display: flex; align-items: center; gap: 8px; margin: 6px 0; }
.legend img { width: 160px; height: 10px; }
.problems { color: var(--error); font-size: 12px; }
a { color: #1565c0; }
footer { color: #90a4ae; font-size: 12px; margin-top: 30px; }
.banner { border-radius: 8px; padding: 12px 18px; margin: 0 0 16px; }
.banner .which { display: block; font-size: 12px; margin-top: 4px; overflow-wrap: anywhere; }
.banner.validation-none { background: #b71c1c; color: #fff; border: 3px solid #7f0000; font-size: 17px; }
.banner.validation-none .which { color: #ffcdd2; }
.banner.validation-synthetic { background: #fff8e1; color: #5d4037; border: 2px solid #ffb300; font-size: 15px; }
.banner.validation-synthetic .which { color: #795548; }
.banner.validation-real { background: #fff; color: #37474f; border: 1px solid var(--line); }
.banner.validation-real .which { color: #607d8b; }
article.model { background: #fff; border: 1px solid var(--line); border-left: 6px solid #90a4ae; border-radius: 8px;
                padding: 14px 18px; margin: 16px 0; }
article.model.validation-none { border-left-color: #b71c1c; }
article.model.validation-synthetic { border-left-color: #ffb300; }
article.model h3 { margin: 0 0 6px; font-size: 16px; overflow-wrap: anywhere; }
.vstate { display: inline-block; border-radius: 10px; padding: 0 8px; font-size: 12px; font-weight: 600; }
.vstate.validation-none { background: #b71c1c; color: #fff; }
.vstate.validation-synthetic { background: #ffb300; color: #3e2723; }
.vstate.validation-real { background: #cfd8dc; color: #263238; }
.card-summary { font-size: 13px; color: #37474f; overflow-wrap: anywhere; }
table.card-facts, table.evals { width: auto; margin: 8px 0; }
table.card-facts th { background: #eceff1; white-space: nowrap; font-weight: 600; }
table.card-facts td { overflow-wrap: anywhere; max-width: 640px; }
table.evals th { background: #eceff1; white-space: nowrap; }
table.evals td { white-space: nowrap; }
.evals-wrap { overflow-x: auto; }
table.evals td.metrics, table.evals td.data, table.evals td.no { white-space: normal; min-width: 160px; max-width: 320px;
                                                                 overflow-wrap: anywhere; }
td.no { color: #b71c1c; } td.yes { color: var(--real); font-weight: 600; }
"""


def _script_hash() -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(_SCRIPT.encode("utf-8")).digest()).decode("ascii")


def content_security_policy() -> str:
    """The page's CSP: nothing remote; only its own script (by hash), inline styles, local and data: images."""
    return (
        f"default-src 'none'; script-src '{_script_hash()}'; style-src 'unsafe-inline'; "
        # file: beside 'self': some browsers give file:// pages an opaque origin that 'self' does not match.
        "img-src 'self' file: data:; base-uri 'none'; form-action 'none'"
    )


def _badge(label: str | None) -> str:
    return f'<span class="badge {esc(label)}">{esc(label.replace("_", " "))}</span>' if label else ""


def _file_link(path: str) -> str:
    """A file:// link to the original video (absolute paths only); never a remote URL."""
    p = Path(path)
    if not p.is_absolute() or "\ufffd" in path:
        return ""
    try:
        uri = p.as_uri()
    except ValueError:
        return ""
    return f' <a class="open" href="{esc(uri)}" title="open the original file">open</a>'


# (key, header, type, css class)
_COLUMNS = (
    ("path", "Video", "text", "path"),
    ("status", "Status", "text", ""),
    ("label", "Verdict", "text", ""),
    ("score", "Score", "num", "n"),
    ("threshold", "Threshold", "num", "n"),
    ("faces", "Faces", "num", "n"),
    ("identities", "Identities", "num", "n"),
    ("duration", "Duration (s)", "num", "n"),
    ("note", "Error / note", "text", "err"),
    ("scan", "Scan", "num", "n"),
    ("model", "Model", "text", ""),
    ("scanned", "Scanned (UTC)", "text", "when"),
)


def _plural(n: int | None, what: str) -> str:
    return f"{esc(n)} {what}{'' if n == 1 else 's'}"


def _short(model_id: str) -> str:
    return model_id if len(model_id) <= 14 else model_id[:13] + "…"


def _when(t: dt.datetime | None) -> str:
    return "" if t is None else t.strftime("%Y-%m-%d %H:%M")


def _table(rows: list[_Row], detailed: set[int]) -> str:
    head = "".join(
        f'<th scope="col" class="{cls}" data-key="{key}" data-type="{typ}"'
        + (' data-default-sort="desc"' if key == "score" else "")
        + f'><button type="button">{esc(title)}</button></th>'
        for key, title, typ, cls in _COLUMNS
    )
    body = []
    for r in rows:
        v = r.video
        vd = r.verdict
        name = esc(v.path)
        path_cell = f'<a href="#v{v.id}">{name}</a>' if v.id in detailed else name
        score = r.score
        cells = [
            (v.path, path_cell + _file_link(v.path), "path"),
            (v.status, _badge(v.status) if v.status in ("error", "skipped") else esc(v.status), ""),
            (r.label or "", _badge(r.label), ""),
            (_num(score, 6), esc(_num(score)), "n"),
            (_num(vd.threshold, 6) if vd else "", esc(_num(vd.threshold)) if vd else "", "n"),
            (str(v.n_faces), esc(v.n_faces), "n"),
            (str(v.n_identities), esc(v.n_identities), "n"),
            (_num(v.duration_s, 3), esc(_num(v.duration_s, 1)), "n"),
            (v.error or "", esc(v.error), "err"),
            (str(v.scan_id), esc(v.scan_id), "n"),
            (v.model_id, f'<span title="{esc(v.model_id)}">{esc(_short(v.model_id))}</span>', ""),
            (_when(v.scanned_at), esc(_when(v.scanned_at)), "when"),
        ]
        tds = "".join(f'<td class="{cls}" data-sort="{esc(key)}">{content}</td>' for key, content, cls in cells)
        body.append(f'<tr data-label="{esc(r.label or v.status)}">{tds}</tr>')
    return (
        f'<div class="table-wrap"><table id="videos" class="videos"><thead><tr>{head}</tr></thead>'
        f'<tbody>{"".join(body)}</tbody></table></div>'
    )


def _detail_section(d: _Detail) -> str:
    v, vd = d.row.video, d.row.verdict
    threshold = vd.threshold if vd else None
    facts = [
        f"status {esc(v.status)}",
        f"{esc(_num(v.duration_s, 1))} s" if v.duration_s is not None else "",
        f"{esc(v.width)}x{esc(v.height)}" if v.width else "",
        esc(v.codec) if v.codec else "",
        f"{_plural(v.n_faces, 'face')} on {_plural(v.n_frames, 'sampled frame')}",
        f"scan {esc(v.scan_id)}",
        f'model <span title="{esc(v.model_id)}">{esc(_short(v.model_id))}</span>',
        f"strategy {esc(vd.strategy)}" if vd else "",
    ]
    head = (
        f'<section class="video" id="v{v.id}"><h3>{esc(v.path)}</h3>'
        f'<div class="verdict">{_badge(d.row.label)} score <b>{esc(_num(d.row.score))}</b>'
        + (f" (threshold {esc(_num(threshold))})" if threshold is not None else "")
        + f"{_file_link(v.path)}</div>"
        f'<div class="facts">{" · ".join(f for f in facts if f)}</div>'
    )
    ids = "".join(
        f'<tr><td><span class="swatch" style="background:{PALETTE[iv.identity % len(PALETTE)]}"></span>'
        f"{esc(iv.identity)}</td><td>{_badge(iv.label)}</td><td class=\"n\">{esc(_num(iv.score))}</td>"
        f'<td class="n">{esc(iv.n_faces)}</td><td class="n">{esc(_num(iv.t_first, 1))}–{esc(_num(iv.t_last, 1))}</td></tr>'
        for iv in d.identities
        if iv.identity is not None
    )
    ids_table = (
        '<table class="ids"><thead><tr><th>Identity</th><th>Verdict</th><th class="n">Score</th>'
        f'<th class="n">Faces</th><th class="n">Seen (s)</th></tr></thead><tbody>{ids}</tbody></table>'
        if ids
        else "<p>No per-identity verdicts stored.</p>"
    )
    plot = score_plot(d.points, threshold, v.duration_s)
    crops = "".join(
        f'<figure data-identity="{c.identity}"><img src="{esc(c.crop_src)}" alt="face crop, identity {c.identity}" '
        f'width="128" height="128">'
        + (
            f'<img class="overlay" src="{esc(c.overlay_src)}" alt="attention overlay, identity {c.identity}" '
            f'width="128" height="128">'
            if c.overlay_src
            else ""
        )
        + f"<figcaption>identity {c.identity} · {esc(_num(c.time_s, 2))} s · score {esc(_num(c.score))}</figcaption></figure>"
        for c in d.crops
    )
    crops_html = f'<div class="crops">{crops}</div>' if crops else "<p>No face crops stored for this video.</p>"
    return f'{head}<div class="row"><div>{plot}</div><div>{ids_table}</div></div>{crops_html}</section>'


# How each validation state is announced: (lead word, ARIA role); the styles are in _CSS.
_BANNER_LEAD = {
    VALIDATION_NONE: ("WARNING", "alert"),
    VALIDATION_SYNTHETIC: ("Caution", "alert"),
    VALIDATION_REAL: ("Note", "note"),
}


def _banners(models: Sequence[_ModelInfo]) -> str:
    """One banner per validation state among the models behind the report's videos, weakest first."""
    out = []
    for state in sorted({m.state for m in models}, key=_STATE_RANK.__getitem__):
        ms = [m for m in models if m.state == state]
        lead, role = _BANNER_LEAD[state]
        n = sum(m.n_videos for m in ms)
        which = ", ".join(f'<span title="{esc(m.model_id)}">{esc(_short(m.model_id))}</span>' for m in ms)
        out.append(
            f'<div class="banner validation-{state}" role="{role}" data-validation="{state}">'
            f"<b>{lead}: {esc(validation_banner(state))}</b>"
            f'<span class="which">{_plural(n, "video")} in this report from {"this model" if len(ms) == 1 else "these models"}: '
            f"{which} · validation state: {state} · the full model card is under Models, below</span></div>"
        )
    return "".join(out)


def _val(x: object) -> str:
    """A card value as text: numbers short, lists joined; anything else as a string (escaped by callers)."""
    if isinstance(x, bool) or x is None:
        return "" if x is None else str(x).lower()
    if isinstance(x, float):
        return f"{x:.4g}" if math.isfinite(x) else str(x)
    if isinstance(x, (list, tuple)):
        return ", ".join(_val(v) for v in x)
    if isinstance(x, dict):
        return " · ".join(f"{k} {_val(v)}" for k, v in sorted(x.items(), key=lambda kv: str(kv[0])))
    return str(x)


def _metrics(m: object) -> str:
    if not isinstance(m, dict) or not m:
        return ""
    # sorted: artifact metadata is written with sorted keys anyway, so every report lists them alike
    return " · ".join(f"{esc(k)} {esc('n/a' if v is None else _val(v))}" for k, v in sorted(m.items(), key=lambda kv: str(kv[0])))


def _eval_row(e: Evaluation) -> str:
    counts = (
        '<td class="yes">yes</td>'
        if e.validates
        else f'<td class="no">no{": " + esc(e.reason) if e.reason else ""}</td>'
    )
    cells = [
        f"<td>{esc(_val(e.tool))}</td>",
        f"<td>{esc(_val(e.level))}</td>",
        f"<td>{esc(_val(e.fakes))}</td>",
        f'<td class="n">{esc(_val(e.n_real))}</td>',
        f'<td class="n">{esc(_val(e.n_fake))}</td>',
        f'<td class="metrics">{_metrics(e.metrics)}</td>',
        f'<td class="n">{esc(_val(e.threshold))}</td>',
        f'<td class="when">{esc(_val(e.date))}</td>',
        counts,
        f'<td class="data">{esc(_val(e.data))}'
        + (f" <small>(fingerprint {esc(_val(e.fingerprint))})</small>" if e.fingerprint else "")
        + "</td>",
    ]
    return f"<tr>{''.join(cells)}</tr>"


def _model_card(m: _ModelInfo) -> str:
    """The full card of one model (every field the card has, every evaluation a row)."""
    row, card = m.row, m.card
    facts = [f"{_plural(m.n_videos, 'video')} in this report"]
    if row is not None:
        facts += [f"backend {esc(row.backend)}", f"file {esc(row.path)}", f"first seen {esc(_when(row.first_seen))}"]
    head = (
        f'<article class="model validation-{m.state}" data-model-id="{esc(m.model_id)}" data-validation="{m.state}">'
        f'<h3>Model {esc(m.model_id)} <span class="vstate validation-{m.state}">{esc(m.state)}</span></h3>'
        f'<div class="facts">{" · ".join(facts)}</div>'
    )
    if m.problem:
        head += f'<div class="problems">{esc(m.problem)}</div>'
    if card is None:
        return head + (
            "<p>No model card: the artifact was made before model cards (or its store was written by an "
            "acfd without them), so nothing is known about its training data or its accuracy: unvalidated.</p>"
            "</article>"
        )
    threshold = ""
    if row is not None:
        try:
            threshold = _val(json.loads(row.meta_json).get("threshold"))
        except (ValueError, AttributeError):  # meta_json that is not a JSON object: no threshold to show
            threshold = ""
    fields: list[tuple[str, object]] = [
        ("Summary", row.card_summary if row is not None and row.card_summary else card.one_line()),
        ("Preset", card.preset),
        ("Image size (px)", card.image_size),
        ("Training steps", card.steps),
        ("Backbone init", card.backbone_init),
        ("Decision threshold", f"{threshold} ({_val(card.threshold_source)})" if threshold else card.threshold_source),
    ]
    t = card.training
    if t is None:
        fields.append(("Training data", "unknown (the card does not say)"))
    else:
        fields += [
            ("Training data", f"{_val(t.kind)} ({card.trained_on()})"),
            ("Training forgeries", t.forgeries),
            ("Training videos", t.counts if t.counts else "not recorded"),
            ("Training fingerprint", t.fingerprint or "not recorded"),
            ("Training sources", t.sources or "not recorded"),
            ("Training folder", t.root),
        ]
    if card.notes:
        fields.append(("Notes", card.notes))
    facts_rows = "".join(
        f'<tr><th scope="row">{esc(k)}</th><td>{esc(_val(v))}</td></tr>' for k, v in fields if v not in ("", None)
    )
    if card.evaluations:
        evals = (
            '<div class="evals-wrap"><table class="evals"><thead><tr><th>Tool</th><th>Level</th><th>Fakes</th><th class="n">Real videos</th>'
            '<th class="n">Fake videos</th><th>Metrics</th><th class="n">Threshold</th><th>Date (UTC)</th>'
            "<th>Counts for validation</th><th>Data</th></tr></thead><tbody>"
            + "".join(_eval_row(e) for e in card.evaluations)
            + "</tbody></table></div>"
        )
    else:
        evals = "<p>No evaluation recorded: the model has never been measured on labelled videos.</p>"
    return (
        f'{head}<table class="card-facts"><tbody>{facts_rows}</tbody></table>'
        f"<h4>Evaluations ({len(card.evaluations)})</h4>{evals}</article>"
    )


def render_html(
    rows: list[_Row],
    counts: dict[str, int],
    details: list[_Detail],
    scans: list[Scan],
    cfg: ReportConfig,
    where: str,
    problems: list[str],
    models: Sequence[_ModelInfo] = (),
) -> str:
    """The whole page (for tests: every database string in it is escaped)."""
    n = defaultdict(int, counts)
    cards = "".join(
        f'<div class="card"><b>{esc(count)}</b><span>{esc(name)}</span></div>'
        for name, count in (
            ("videos", sum(counts.values())),
            ("flagged", n["fake"]),
            ("real", n["real"]),
            ("no face", n["no_face"]),
            ("errors", n["error"]),
            ("skipped", n["skipped"]),
        )
    )
    scope = "every video with faces" if cfg.only == "all" else "each flagged video"
    scan_rows = "".join(
        f'<tr><td class="n">{esc(s.id)}</td><td>{esc(_when(s.started_at))}</td><td>{esc(s.status)}</td>'
        f'<td><span title="{esc(s.model_id)}">{esc(_short(s.model_id))}</span></td><td>{esc(s.strategy)}</td>'
        f'<td class="n">{esc(_num(s.threshold))}</td><td class="n">{esc(s.n_found)}</td>'
        f'<td class="n">{esc(s.n_flagged)}</td><td class="n">{esc(s.n_error)}</td></tr>'
        for s in scans
    )
    sections = "".join(_detail_section(d) for d in details)
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    problems_html = (
        '<div class="problems">' + "<br>".join(esc(p) for p in problems) + "</div>" if problems else ""
    )
    table_note = (
        "every path's most recent row" if cfg.scan_id is None else f"the videos of scan {cfg.scan_id}"
    ) + ("" if cfg.only == "all" else ", flagged only")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{esc(content_security_policy())}">
<meta name="referrer" content="no-referrer">
<meta name="generator" content="acfd-scan report">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(cfg.title)}</title>
<style>{_CSS}</style>
</head>
<body>
<header><h1>{esc(cfg.title)}</h1><div class="sub">{esc(where)} · generated {esc(generated)}</div></header>
<main>
{_banners(models)}
<div class="cards">{cards}</div>
<details><summary>Scans ({len(scans)})</summary>
<table class="scans"><thead><tr><th class="n">Scan</th><th>Started (UTC)</th><th>Status</th><th>Model</th><th>Strategy</th>
<th class="n">Threshold</th><th class="n">Found</th><th class="n">Flagged</th><th class="n">Errors</th></tr></thead>
<tbody>{scan_rows}</tbody></table></details>
<h2>Videos <small>({esc(table_note)}; click a header to sort)</small></h2>
{_table(rows, {d.row.video.id for d in details})}
<h2>Details <small>({esc(scope)}: {len(details)})</small></h2>
<div class="legend">attention: low <img src="{_colorbar_data_uri()}" alt="heatmap colour scale"> high
· left: the face crop the model saw, right: the same crop with its attention map</div>
{problems_html}
{sections or "<p>Nothing to show.</p>"}
<h2>Models <small>(the model card of each model behind the videos above: {len(models)})</small></h2>
{"".join(_model_card(m) for m in models) or "<p>No model: the report shows no video.</p>"}
<footer>Made by acfd-scan report from the verdict store only; the videos are linked, never loaded.</footer>
</main>
<script>{_SCRIPT}</script>
</body>
</html>
"""


def build_report(db: str | os.PathLike[str] | ReadOnlyStore, cfg: ReportConfig) -> ReportSummary:
    """Write ``cfg.out/index.html`` and ``cfg.out/img/`` from the verdict store ``db`` (opened read-only)."""
    t0 = time.perf_counter()
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise StoreError(f"--out {out} exists and is not a folder")
    ro = db if isinstance(db, ReadOnlyStore) else open_readonly(db)
    try:
        with Session(ro.engine) as s:
            if cfg.scan_id is not None and s.get(Scan, cfg.scan_id) is None:
                raise StoreError(f"no scan {cfg.scan_id} in {ro.where}")
            counts = _counts(s, cfg.scan_id)
            rows = _latest_rows(s, cfg.scan_id, only_fake=cfg.only == "flagged")
            chosen = [r for r in rows if r.label == store.LABEL_FAKE or (cfg.only == "all" and r.video.n_faces > 0)]
            chosen.sort(key=lambda r: -(r.score if r.score is not None else -math.inf))
            details = _details(s, chosen, cfg)
            out.mkdir(parents=True, exist_ok=True)
            n_images, problems = _write_images(s, details, out / "img", cfg.alpha)
            scans = list(s.scalars(select(Scan).order_by(Scan.id)))
            models = _models(s, cfg.scan_id)
            page = render_html(rows, counts, details, scans, cfg, ro.where, problems, models)
        index = out / "index.html"
        tmp = out / ".index.html.tmp"
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, index)  # a reader never sees half a page
    except OSError as e:  # --out not writable, disk full: one line, not a traceback
        raise StoreError(f"cannot write the report to {out}: {e.strerror or e}") from e
    finally:
        if not isinstance(db, ReadOnlyStore):
            ro.dispose()
    return ReportSummary(
        index=index,
        n_videos=len(rows),
        n_flagged=counts.get(store.LABEL_FAKE, 0),
        n_detailed=len(details),
        n_images=n_images,
        problems=problems,
        seconds=time.perf_counter() - t0,
        models=[(m.model_id, m.state) for m in models],
    )
