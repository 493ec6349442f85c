"""The store side of ``acfd-scan watch``: the watch's ``scans`` row, its ``windows`` and ``stream_events``.

The ``scans`` row is started, kept alive (lease) and finished with the scan's own
:class:`~acfd.scanner.store.Store` methods; this module adds the two writes a watch makes, each in its
own transaction, so a watch killed at any instant (SIGKILL included) keeps every window and event
stored before it:

- :meth:`WatchStore.write_window`: one ``windows`` row, and the scan's counters (frames, faces,
  flagged windows, stream seconds) in the same transaction, so they always agree with its windows;
- :meth:`WatchStore.write_event`: one ``stream_events`` row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from acfd.schemas import db
from acfd.schemas.db import Scan, StreamEvent, Window
from sqlalchemy import update

from .store import Store

if TYPE_CHECKING:  # annotations only: watch.py imports this module
    from .watch import StreamNote, WindowResult


class WatchStore(Store):
    """A :class:`Store` that also writes a watch's windows and stream events."""

    def write_window(self, scan_id: int, model_id: str, threshold: float, strategy: str, w: WindowResult) -> int:
        """Store one closed window and add it to the scan's counters, in one transaction; returns its id."""
        v = w.verdict
        with db.session(self.engine) as s, s.begin():
            row = Window(
                scan_id=scan_id, model_id=model_id, source=w.source.public, source_key=w.source.key,
                window_index=w.index, started_at=w.started_at, ended_at=w.ended_at,
                start_s=w.start_s, end_s=w.end_s, n_frames=w.n_frames, n_faces=v.n_faces,
                n_identities=len(v.identities), score=v.score, label=v.label, threshold=threshold,
                strategy=strategy,
            )
            s.add(row)
            values = {
                "n_frames": Scan.n_frames + w.n_frames,
                "n_faces": Scan.n_faces + v.n_faces,
                "video_seconds": Scan.video_seconds + (w.end_s - w.start_s),
            }
            if v.flagged:
                values["n_flagged"] = Scan.n_flagged + 1
            s.flush()
            s.execute(update(Scan).where(Scan.id == scan_id).values(**values))
            return row.id

    def write_event(self, scan_id: int, note: StreamNote) -> int:
        """Store one stream event; returns its id."""
        with db.session(self.engine) as s, s.begin():
            row = StreamEvent(scan_id=scan_id, source=note.source.public, at=note.at, kind=note.kind,
                              message=note.message)
            s.add(row)
            s.flush()
            return row.id
