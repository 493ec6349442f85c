"""Sinks: consumers of a scan's result stream (:data:`~acfd.scanner.results.ScanEvent`).

- :class:`StoreSink` writes each video in one transaction (:class:`~acfd.scanner.store.Store`) and
  counts the unchanged ones in the scan row;
- :class:`JsonlSink` writes one JSON line per video, flushed, for other programs;
- :class:`Tally` keeps what the summary and the exit status need.

The CLI, a validation run and benchmarks feed the same stream to the sinks they need; the store comes
first, so a line printed or written is always a stored result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import IO

from acfd.schemas import db
from acfd.schemas.errors import AcfdError, OutputClosed

from .results import ScanEvent, Timings, Unchanged, VideoResult
from .store import Store


class ScanOutputError(AcfdError):
    """The scan's own output (``--jsonl``) cannot be written: the scan stops (exit 4)."""


@dataclass(frozen=True)
class ScanContext:
    """What every stored or written result of one scan carries."""

    scan_id: int
    model_id: str
    threshold: float
    strategy: str
    validation: str  # the model card's validation state (none, synthetic, real)


class StoreSink:
    """Stores each result: a video's row, detections, verdicts and crops in one transaction; the count
    of unchanged videos in the scan row (written with the next video, or on :meth:`flush`)."""

    def __init__(self, store: Store, ctx: ScanContext, verdict_key: str, error_key: str) -> None:
        self.store = store
        self.ctx = ctx
        self.verdict_key = verdict_key
        self.error_key = error_key
        self._skipped = 0

    def settings_key(self, status: str) -> str:
        """The resume key a row of this status is stored with (another key, another verdict or failure)."""
        return self.error_key if status == db.STATUS_ERROR else self.verdict_key

    def write(self, ev: ScanEvent) -> None:
        if isinstance(ev, Unchanged):
            self._skipped += 1
            return
        self.flush()
        t0 = time.perf_counter()
        c = self.ctx
        ev.video_row_id = self.store.write_video(
            c.scan_id, c.model_id, c.threshold, c.strategy, ev, settings_key=self.settings_key(ev.status)
        )
        ev.timings.store += time.perf_counter() - t0

    def flush(self) -> None:
        if self._skipped:
            self.store.add_skipped(self.ctx.scan_id, self._skipped)
            self._skipped = 0


class JsonlSink:
    """One JSON line per video, flushed as it is stored; a reader that went away ends the scan quietly
    (:class:`OutputClosed`), a full disk in one line (:class:`ScanOutputError`)."""

    def __init__(self, out: IO[str], ctx: ScanContext) -> None:
        self.out = out
        self.ctx = ctx

    def write(self, ev: ScanEvent) -> None:
        if not isinstance(ev, VideoResult):
            return
        c = self.ctx
        write_line(self.out, ev.to_json(c.scan_id, c.model_id, c.threshold, c.strategy, c.validation))


def write_line(out: IO[str], line: str) -> None:
    """One line of JSON output, flushed at once (another program may be waiting for it): a reader that
    went away ends the run quietly (:class:`OutputClosed`), a full disk in one line (:class:`ScanOutputError`)."""
    try:
        out.write(line + "\n")
        out.flush()
    except BrokenPipeError as e:
        raise OutputClosed(str(e)) from e
    except OSError as e:
        from .text import printable

        name = getattr(out, "name", "--jsonl")
        raise ScanOutputError(f"cannot write --jsonl {printable(str(name))}: {e.strerror or e}") from e


@dataclass
class Tally:
    """Counts of the stream for the progress bar and the summary (the store keeps everything)."""

    names: int = 20  # how many flagged unchanged videos are named
    videos: int = 0
    frames: int = 0
    faces: int = 0
    timings: Timings = field(default_factory=Timings)
    unchanged_flagged: int = 0
    unchanged_errors: int = 0
    unchanged_flagged_videos: list[tuple[str, float | None]] = field(default_factory=list)

    def write(self, ev: ScanEvent) -> None:
        if isinstance(ev, Unchanged):
            # the stored result still describes this file: it counts for the exit status
            self.unchanged_flagged += ev.flagged
            if ev.flagged and len(self.unchanged_flagged_videos) < self.names:
                self.unchanged_flagged_videos.append((ev.candidate.display, ev.score))
            self.unchanged_errors += ev.status == db.STATUS_ERROR
            return
        self.videos += 1
        self.frames += ev.n_frames
        self.faces += len(ev.faces)
        self.timings.add(ev.timings)
