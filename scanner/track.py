"""Track: group the faces of a video's sampled frames into identities (one per person on screen).

Greedy IoU matching between a frame's faces and the live tracks (the last box of each track), with a
centre-distance fallback for sparse sampling (at 1 frame/s a moving head may not overlap its last
box). A track that has not matched for ``max_gap`` sampled frames is closed. Each face gets at most
one track and each track at most one face per frame, so an identity has one score per frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .faces import Face


def iou(a: Face, b: Face) -> float:
    """Intersection over union of two face boxes."""
    ix = max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))
    iy = max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))
    inter = ix * iy
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def _centre_distance(a: Face, b: Face) -> float:
    """Distance of the box centres in units of the larger face size."""
    ax, ay = (a.x0 + a.x1) / 2, (a.y0 + a.y1) / 2
    bx, by = (b.x0 + b.x1) / 2, (b.y0 + b.y1) / 2
    size = max(a.width, a.height, b.width, b.height, 1e-6)
    return ((ax - bx) ** 2 + (ay - by) ** 2) ** 0.5 / size


@dataclass
class _Track:
    identity: int
    last: Face
    last_frame: int


@dataclass
class IoUTracker:
    """Online tracker: call :meth:`update` with each sampled frame's faces, in time order."""

    min_iou: float = 0.3
    max_centre_distance: float = 0.5  # fallback match: centres closer than half a face, similar size
    max_size_ratio: float = 1.5
    max_gap: int = 2  # sampled frames a track survives without a face (detector misses)
    _tracks: list[_Track] = field(default_factory=list)
    _next: int = 0
    _frame: int = -1

    def update(self, faces: list[Face]) -> list[int]:
        """Identities (0, 1, ...) of ``faces`` on the next sampled frame, in the same order."""
        self._frame += 1
        live = [t for t in self._tracks if self._frame - t.last_frame <= self.max_gap + 1]
        pairs = []
        for ti, t in enumerate(live):
            for fi, f in enumerate(faces):
                o = iou(t.last, f)
                if o >= self.min_iou:
                    pairs.append((2.0 + o, ti, fi))  # any IoU match beats any distance match
                    continue
                ratio = max(f.width, t.last.width, 1e-6) / max(min(f.width, t.last.width), 1e-6)
                d = _centre_distance(t.last, f)
                if d <= self.max_centre_distance and ratio <= self.max_size_ratio:
                    pairs.append((1.0 - d, ti, fi))
        pairs.sort(key=lambda p: -p[0])
        out: list[int | None] = [None] * len(faces)
        used: set[int] = set()
        for _, ti, fi in pairs:
            if ti in used or out[fi] is not None:
                continue
            used.add(ti)
            t = live[ti]
            t.last, t.last_frame = faces[fi], self._frame
            out[fi] = t.identity
        for fi, f in enumerate(faces):
            if out[fi] is None:
                t = _Track(self._next, f, self._frame)
                self._next += 1
                self._tracks.append(t)
                out[fi] = t.identity
        self._tracks = [t for t in self._tracks if self._frame - t.last_frame <= self.max_gap + 1]
        return [int(i) for i in out if i is not None]

    @property
    def n_identities(self) -> int:
        return self._next
