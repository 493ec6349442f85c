"""A scan's time line for benchmarks: with ``$ACFD_TIMELINE`` naming a file, :func:`mark` appends one line
per event (``name monotonic_seconds pid``); without it, :func:`mark` does nothing.

``bench/scan.py`` runs ``acfd-scan`` with it and reads when the CLI was imported, the model loaded, the
decode workers ready, the first frame and batch came and the last video was committed. The clock is
``time.monotonic()`` (CLOCK_MONOTONIC, one clock for every process on a Linux host), so the decode
workers' marks line up with the scanning process's. This module imports nothing but the standard library:
the workers import it before anything else.
"""

from __future__ import annotations

import os
import time

ENV = "ACFD_TIMELINE"
_path = os.environ.get(ENV)
_seen: set[str] = set()


def enabled() -> bool:
    return bool(_path)


def mark(event: str, once: bool = True) -> None:
    """Note that ``event`` happened now (``once``: only its first time in this process)."""
    if not _path or (once and event in _seen):
        return
    _seen.add(event)
    try:
        with open(_path, "a", encoding="utf-8") as f:  # one short write per line: lines never interleave
            f.write(f"{event} {time.monotonic():.6f} {os.getpid()}\n")
    except OSError:
        pass  # a benchmark's aid must never stop a scan


def read(path: str, t0: float) -> dict[str, tuple[float, float]]:
    """The events of a time line file as ``{event: (first, last)}`` in seconds since ``t0``."""
    out: dict[str, tuple[float, float]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) != 3:
                continue
            t = float(parts[1]) - t0
            first, last = out.get(parts[0], (t, t))
            out[parts[0]] = (min(first, t), max(last, t))
    return out
