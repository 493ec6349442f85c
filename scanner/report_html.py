"""The report's page: its HTML (every database string escaped, attributes double-quoted), its static
script and style, and its Content-Security-Policy."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from acfd.schemas.card import (
    VALIDATION_NONE,
    VALIDATION_REAL,
    VALIDATION_SYNTHETIC,
    Evaluation,
    validation_banner,
)
from acfd.schemas.db import Scan

from .report_data import _STATE_RANK, _Detail, _ModelInfo, _Row, _StreamInfo
from .report_images import _colorbar_data_uri
from .report_svg import PALETTE, WindowMark, score_plot, window_plot
from .report_text import _num, esc

if TYPE_CHECKING:  # annotations only: report.py imports this module
    from .report import ReportConfig


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
section.stream { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 14px 18px; margin: 16px 0; }
section.stream h3 { margin: 0 0 6px; font-size: 16px; overflow-wrap: anywhere; }
table.windows, table.events { width: auto; margin: 6px 0; } table.events td.msg { overflow-wrap: anywhere; max-width: 640px; }
tr.gave_up td, tr.dropped td.kind { color: #b71c1c; }
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


def _utc(t: dt.datetime) -> dt.datetime:
    """A stored time in UTC: SQLite gives it back naive (it is UTC); a server may give it in its own zone."""
    return t if t.tzinfo is None else t.astimezone(dt.timezone.utc)


def _when(t: dt.datetime | None) -> str:
    return "" if t is None else _utc(t).strftime("%Y-%m-%d %H:%M")


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
        n_windows = sum(m.n_windows for m in ms)
        what = _plural(n, "video") + (f" and {_plural(n_windows, 'stream window')}" if n_windows else "")
        which = ", ".join(f'<span title="{esc(m.model_id)}">{esc(_short(m.model_id))}</span>' for m in ms)
        out.append(
            f'<div class="banner validation-{state}" role="{role}" data-validation="{state}">'
            f"<b>{lead}: {esc(validation_banner(state))}</b>"
            f'<span class="which">{what} in this report from {"this model" if len(ms) == 1 else "these models"}: '
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
    facts = [f"{_plural(m.n_videos, 'video')}" + (f" and {_plural(m.n_windows, 'stream window')}" if m.n_windows else "")
             + " in this report"]
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


def _epoch(t: dt.datetime) -> float:
    """A stored UTC time (SQLite gives it back naive) as seconds since the epoch."""
    return (t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t).timestamp()


def _stream_section(i: int, st: _StreamInfo) -> str:
    """One watched source: its window scores over time (flagged windows marked), its flagged windows and
    its stream events."""
    marks = []
    base: tuple[float, float] | None = None  # (wall, stream time) where the current run of windows starts
    prev = None
    for w in st.windows:
        # Windows arrive in bursts (segments, the tracker's hold), so their stored wall times bunch up: a run
        # of windows that follow each other on the stream's clock is laid out by stream time from the wall
        # time of its first window; a drop, a restarted clock or another watch starts a new run.
        follows = (prev is not None and prev.scan_id == w.scan_id and prev.end_s is not None and w.start_s is not None
                   and abs(w.start_s - prev.end_s) < 1e-6)
        if not follows or base is None or w.start_s is None:
            base = (_epoch(w.started_at), w.start_s if w.start_s is not None else 0.0)
        t0 = base[0] + ((w.start_s - base[1]) if w.start_s is not None else 0.0)
        length = (w.end_s - w.start_s) if w.start_s is not None and w.end_s is not None else 0.0
        title = (f"window {w.index} (scan {w.scan_id}) · {_when_s(w.started_at)} UTC · stream {_num(w.start_s, 1)}–"
                 f"{_num(w.end_s, 1)} s · {w.label}" + (f" · score {_num(w.score)}" if w.score is not None else ""))
        marks.append(WindowMark(t0, t0 + max(length, 1e-3), w.score, w.threshold, w.label == "fake", title))
        prev = w
    drops = [(_epoch(e.at), e.kind, f"{e.kind} · {_when_s(e.at)} · {e.message or ''}")
             for e in st.events if e.kind in ("dropped", "gave_up")]
    scans = sorted({w.scan_id for w in st.windows} | {e.scan_id for e in st.events})
    span = ""
    if st.windows:
        span = f"{esc(_when_s(st.windows[0].started_at))} – {esc(_when_s(st.windows[-1].ended_at))} UTC"
    facts = [_plural(len(st.windows), "window"), f"{esc(st.n_flagged)} flagged",
             "scan" + ("s " if len(scans) != 1 else " ") + ", ".join(esc(x) for x in scans), span,
             _plural(st.n_events, "stream event")]
    flagged = [w for w in st.windows if w.label == "fake"]
    flagged_html = ""
    if flagged:
        rows = "".join(
            f'<tr><td class="n">{esc(w.index)}</td><td class="n">{esc(w.scan_id)}</td><td class="when">{esc(_when_s(w.started_at))}</td>'
            f'<td class="n">{esc(_num(w.start_s, 1))}–{esc(_num(w.end_s, 1))}</td><td class="n">{esc(_num(w.score))}</td>'
            f'<td class="n">{esc(_num(w.threshold))}</td><td class="n">{esc(w.n_faces)}</td></tr>'
            for w in flagged[-200:]
        )
        flagged_html = (
            f'<details open><summary>Flagged windows ({len(flagged)}{", the latest 200" if len(flagged) > 200 else ""})</summary>'
            '<table class="windows"><thead><tr><th class="n">Window</th><th class="n">Scan</th><th>Started (UTC)</th>'
            '<th class="n">Stream time (s)</th><th class="n">Score</th><th class="n">Threshold</th><th class="n">Faces</th>'
            f"</tr></thead><tbody>{rows}</tbody></table></details>"
        )
    ev_rows = "".join(
        f'<tr class="{esc(e.kind)}"><td class="when">{esc(_when_s(e.at))}</td><td class="n">{esc(e.scan_id)}</td>'
        f'<td class="kind">{esc(e.kind)}</td><td class="msg">{esc(e.message)}</td></tr>'
        for e in st.events
    )
    shown = f", the latest {len(st.events)}" if st.n_events > len(st.events) else ""
    events_html = (
        f"<details><summary>Stream events ({esc(st.n_events)}{shown})</summary>"
        '<table class="events"><thead><tr><th>At (UTC)</th><th class="n">Scan</th><th>Event</th><th>Message</th></tr>'
        f"</thead><tbody>{ev_rows}</tbody></table></details>"
        if st.events else "<p>No stream events stored.</p>"
    )
    return (
        f'<section class="stream" id="s{i}" data-flagged="{esc(st.n_flagged)}"><h3>{esc(st.source)}</h3>'
        f'<div class="facts">{" · ".join(f for f in facts if f)}</div>'
        f"{window_plot(marks, drops)}{flagged_html}{events_html}</section>"
    )


def _when_s(t: dt.datetime | None) -> str:
    return "" if t is None else _utc(t).strftime("%Y-%m-%d %H:%M:%S")


def render_html(
    rows: list[_Row],
    counts: dict[str, int],
    details: list[_Detail],
    scans: list[Scan],
    cfg: ReportConfig,
    where: str,
    problems: list[str],
    models: Sequence[_ModelInfo] = (),
    streams: Sequence[_StreamInfo] = (),
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
    streams_html = (
        f"<h2>Streams <small>(watched with acfd-scan watch: {len(streams)}; each window's score over time, "
        "flagged windows in red, drops marked on the time axis)</small></h2>"
        + "".join(_stream_section(i, st) for i, st in enumerate(streams))
        if streams else ""
    )
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
{streams_html}
<h2>Models <small>(the model card of each model behind the videos above: {len(models)})</small></h2>
{"".join(_model_card(m) for m in models) or "<p>No model: the report shows no video.</p>"}
<footer>Made by acfd-scan report from the verdict store only; the videos are linked, never loaded.</footer>
</main>
<script>{_SCRIPT}</script>
</body>
</html>
"""
