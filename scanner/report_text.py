"""Text shared by the report's SVG plots and its page: HTML escaping and number formatting."""

from __future__ import annotations

import html
import math


def esc(x: object) -> str:
    """HTML-escape any value for text and double-quoted attribute contexts (quotes included)."""
    return html.escape("" if x is None else str(x), quote=True)


def _num(x: float | None, digits: int = 2) -> str:
    return "" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"
