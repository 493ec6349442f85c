"""The report's inline SVG plots: each face's score over time, one line per identity, and the threshold."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

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
