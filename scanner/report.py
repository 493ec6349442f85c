"""A static HTML report of a verdict store (``acfd-scan report``): no server, no network, no remote resource.

``DIR/index.html`` holds a sortable table of videos (each path's most recent row) with their verdicts
and scores, and for each flagged video (or each video with faces, ``only="all"``): its score over time
(an inline SVG drawn here, threshold line included), its per-identity verdicts, and the stored face
crops beside the same crops with the model's attention map overlaid as a heatmap (``DIR/img/*.jpg``).
Everything is made from what the scan stored; the original videos are only linked (``file://``).
Watched streams (``acfd-scan watch``) get a Streams section: per source, each window's score over
wall-clock time (threshold, flagged windows marked, drops on the time axis), its flagged windows and
its stream events.

What the verdicts are worth comes first: a banner at the top states the validation state of the
model(s) behind the videos in the report (``models.validation``; a model without a card, such as one
from a store written before cards, is unvalidated), styled by state: a strong warning for ``none``,
a weaker one for ``synthetic``, a plain note for ``real``; and the full model card of each of those
models (``models.card_json``) is shown at the end, every evaluation a row of a table.

File names in an archive are untrusted, so every piece of text from the database is HTML-escaped
(attributes always double-quoted), no database text goes inside ``<script>``, and the page carries a
Content-Security-Policy that allows only its own inline script (by hash), inline styles and images
from the report folder: no remote load, no inline event handler, even if a bug let markup through.

The work is split by job: ``report_data`` (the queries), ``report_images`` (crops and overlays),
``report_svg`` (the score plots), ``report_html`` (the page, its escaping and CSP; ``report_text``
holds the escaping shared with the plots); this module keeps the public API and puts them together.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from acfd.schemas import db as store
from acfd.schemas.db import Scan, StoreError
from sqlalchemy import select
from sqlalchemy.orm import Session

from .query import ReadOnlyStore, open_readonly
from .report_data import _counts, _Crop, _details, _latest_rows, _models, _pick_crops, _streams
from .report_html import _COLUMNS, _CSS, content_security_policy, render_html
from .report_images import HEATMAP, _write_images, overlay_attention
from .report_svg import PALETTE, score_plot
from .report_text import esc

# What other modules and the tests import from here (the names now live in the report_* modules).
__all__ = [
    "HEATMAP",
    "PALETTE",
    "Only",
    "ReportConfig",
    "ReportSummary",
    "build_report",
    "content_security_policy",
    "esc",
    "overlay_attention",
    "render_html",
    "score_plot",
    "_COLUMNS",
    "_CSS",
    "_Crop",
    "_pick_crops",
]

Only = Literal["flagged", "all"]


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
    n_streams: int = 0  # watched sources with a Streams section (acfd-scan watch)
    n_windows: int = 0  # their windows


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
            streams = _streams(s, cfg.scan_id)
            page = render_html(rows, counts, details, scans, cfg, ro.where, problems, models, streams)
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
        n_streams=len(streams),
        n_windows=sum(len(st.windows) for st in streams),
    )
