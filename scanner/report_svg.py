"""The report's inline SVG plots: each face's score over time, one line per identity, and the threshold; and
for a watched stream, each window's score over wall-clock time with its flagged windows and drops."""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .report_text import _num, esc

# Identity colours (Okabe-Ito, readable by colour-blind reviewers); the threshold line is red.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


def _nice_step(span: float, target: int = 5) -> float:
    raw = span / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _score_frame(ys: Sequence[float], size: tuple[int, int], area: tuple[float, float, float, float], cls: str,
                 label: str) -> tuple[Callable[[float], float], list[str], list[str]]:
    """What both plots share: the score scale (0 at the bottom, a round top above the largest of ``ys``),
    the ``<svg>`` opening with the plot ``area`` (left, top, width, height), and the horizontal grid lines
    with their labels (drawn after anything that must lie under them)."""
    width, height = size
    ml, mt, pw, ph = area
    y1 = max([*ys, 1e-6]) * 1.12
    ystep = _nice_step(y1)
    y1 = math.ceil(y1 / ystep) * ystep

    def sy(v: float) -> float:
        return mt + ph * (1 - v / y1)

    head = [
        f'<svg class="{cls}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{label}">',
        f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ccc"/>',
    ]
    grid = []
    k = 0
    while k * ystep <= y1 + 1e-9:
        v = k * ystep
        grid.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{sy(v):.1f}" y2="{sy(v):.1f}" stroke="#e4e4e4"/>')
        grid.append(f'<text x="{ml - 6}" y="{sy(v) + 4:.1f}" text-anchor="end" class="tick">{esc(f"{v:g}")}</text>')
        k += 1
    return sy, head, grid


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
    xstep = _nice_step(x1)

    def sx(t: float) -> float:
        return ml + pw * t / x1

    sy, out, grid = _score_frame(ys, (width, height), (ml, mt, pw, ph), "plot", "score over time")
    out += grid
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


# -- watched streams: each window's score over wall-clock time --------------------------------------------

@dataclass(frozen=True)
class WindowMark:
    """One window on the plot: its wall-clock span (seconds since the epoch), score (None: no face),
    threshold, whether it was flagged, and its tooltip."""

    t0: float
    t1: float
    score: float | None
    threshold: float
    flagged: bool
    title: str


_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
               172800, 604800)
MAX_DOTS = 600  # windows drawn as dots (beyond it only the line and the flagged ones, so the page stays light)


def _clock(t: float, span: float) -> str:
    u = dt.datetime.fromtimestamp(t, dt.timezone.utc)
    if span >= 2 * 86400:
        return u.strftime("%m-%d %H:%M")
    return u.strftime("%H:%M" if span >= 1800 else "%H:%M:%S")


def window_plot(marks: Sequence[WindowMark], events: Sequence[tuple[float, str, str]] = (), width: int = 720,
                height: int = 230) -> str:
    """An inline SVG of a watched stream: each window's score over wall-clock time (UTC), a line through
    the windows (broken where the stream was not watched), flagged windows as red bands and red dots, the
    threshold as a dashed red step line, windows without a face as grey ticks at the bottom, and drops
    and given-up moments (``events``: time, kind, tooltip) as grey and red marks on the time axis."""
    ml, mr, mt, mb = 48, 16, 14, 40
    pw, ph = width - ml - mr, height - mt - mb
    times = [m.t0 for m in marks] + [m.t1 for m in marks] + [t for t, _, _ in events]
    x0 = min(times, default=0.0)
    x1 = max([*times, x0 + 1.0])
    span = x1 - x0
    ys = [m.score for m in marks if m.score is not None] + [m.threshold for m in marks]

    def sx(t: float) -> float:
        return ml + pw * (t - x0) / span

    sy, out, grid = _score_frame(ys, (width, height), (ml, mt, pw, ph), "plot stream", "window score over time")
    for m in marks:  # flagged spans first, under everything else
        if m.flagged:
            out.append(f'<rect class="flagged-band" x="{sx(m.t0):.1f}" y="{mt}" width="{max(1.0, sx(m.t1) - sx(m.t0)):.1f}" '
                       f'height="{ph}" fill="#d62728" fill-opacity="0.12"/>')
    out += grid
    step = next((s for s in _TIME_STEPS if span / s <= 6), _TIME_STEPS[-1])
    first = math.ceil(x0 / step) * step
    t = first
    while t <= x1 + 1e-9:
        out.append(f'<text x="{sx(t):.1f}" y="{mt + ph + 16}" text-anchor="middle" class="tick">{esc(_clock(t, span))}</text>')
        t += step
    out.append(f'<text x="{ml + pw / 2:.0f}" y="{height - 6}" text-anchor="middle" class="axis">time (UTC)</text>')
    out.append(f'<text x="12" y="{mt + ph / 2:.0f}" text-anchor="middle" class="axis" '
               f'transform="rotate(-90 12 {mt + ph / 2:.0f})">window score</text>')
    # the threshold: a step line, one level per window (a watch keeps one; several watches may differ)
    if marks:
        d = []
        prev: WindowMark | None = None
        for m in marks:
            join = prev is not None and prev.threshold == m.threshold and m.t0 - prev.t1 <= 2 * (m.t1 - m.t0) + 1
            d.append(f"{'L' if join else 'M'}{sx(m.t0):.1f} {sy(m.threshold):.1f} L{sx(m.t1):.1f} {sy(m.threshold):.1f}")
            prev = m
        last = marks[-1].threshold
        out.append(f'<path class="threshold" d="{" ".join(d)}" fill="none" stroke="#d62728" stroke-width="1.5" '
                   'stroke-dasharray="6 4"/>')
        out.append(f'<text x="{ml + pw - 4}" y="{sy(last) - 5:.1f}" text-anchor="end" class="tick" fill="#d62728">'
                   f"threshold {esc(_num(last))}</text>")
    # the scores: a line through the windows' middles, broken where windows do not follow each other
    runs: list[list[WindowMark]] = []
    for m in marks:
        if m.score is None:
            continue
        p = runs[-1][-1] if runs else None
        if p is not None and m.t0 - p.t1 <= max(p.t1 - p.t0, m.t1 - m.t0) + 1.0:
            runs[-1].append(m)
        else:
            runs.append([m])
    for run in runs:
        pts = " ".join(f"{sx((m.t0 + m.t1) / 2):.1f},{sy(m.score or 0.0):.1f}" for m in run)
        out.append(f'<polyline class="score" points="{pts}" fill="none" stroke="#0072B2" stroke-width="1.6"/>')
    dots = len(marks) <= MAX_DOTS
    for m in marks:
        cx = sx((m.t0 + m.t1) / 2)
        if m.score is None:
            out.append(f'<line class="no-face" x1="{cx:.1f}" x2="{cx:.1f}" y1="{mt + ph - 6}" y2="{mt + ph}" stroke="#9e9e9e" '
                       f'stroke-width="2"><title>{esc(m.title)}</title></line>')
        elif m.flagged:
            out.append(f'<circle class="flagged" cx="{cx:.1f}" cy="{sy(m.score):.1f}" r="3.6" fill="#d62728">'
                       f"<title>{esc(m.title)}</title></circle>")
        elif dots:
            out.append(f'<circle class="window" cx="{cx:.1f}" cy="{sy(m.score):.1f}" r="2.4" fill="#0072B2">'
                       f"<title>{esc(m.title)}</title></circle>")
    for t_ev, kind, title in events:
        colour = "#d62728" if kind == "gave_up" else "#616161"
        x = sx(t_ev)
        out.append(f'<path class="event {esc(kind)}" d="M{x:.1f} {mt + ph + 2} l-4 7 h8 z" fill="{colour}">'
                   f"<title>{esc(title)}</title></path>")
    if not marks:
        out.append(f'<text x="{ml + pw / 2:.0f}" y="{mt + ph / 2:.0f}" text-anchor="middle">no window stored</text>')
    out.append("</svg>")
    return "".join(out)
