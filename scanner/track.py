"""Track: group the faces of a video's sampled frames into identities, one per person.

Greedy IoU matching between a frame's faces and the live tracks (the last box of each track), with a
centre-distance fallback for sparse sampling (at 1 frame/s a moving head may not overlap its last
box). A track that has not matched for ``max_gap`` sampled frames is closed. Each face gets at most
one track and each track at most one face per frame, so an identity has one score per frame.

Who is who is decided by an :class:`IdentityMethod`, a face descriptor with a distance and two
thresholds. The default, ``face``, is a face-recognition embedding (:mod:`acfd.scanner.identity`,
dlib's ResNet); ``appearance`` is the colour histogram + HOG descriptor used before it (kept for
``bench/identities.py``, which compares the two). Descriptors are used twice:

- **link gate**: a box match between a face and a track is refused when the face's descriptor is
  farther than ``link_distance`` from the track's last face (two people swapping places between
  samples, or a cut to someone else at the same spot): the face starts a new tracklet;
- **merge**: at 1 frame/s people move, turn and leave the frame between samples, so one person
  becomes several tracklets. :meth:`IoUTracker.identity_map` merges, at the end of the video,
  tracklets that never share a sampled frame (faces seen at the same time are never one person) and
  whose faces are alike: agglomerative, average linkage (the mean distance over all face pairs of two
  groups), closest pair first, while it is at most ``merge_distance``. Identities are then renumbered
  0..k-1 in order of first appearance.

Faces the ``face`` method cannot describe (too dark or flat: :data:`acfd.scanner.identity.MIN_CONTRAST`)
link only with each other, by boxes, and their tracklets are never merged.

Thresholds of the ``face`` method, chosen on ``bench/identities.py`` (hand-labelled faces of the
shared street and Hamilton clips and 27 one-person clips, at 1 and 5 frame/s; the figures are in
docs/scanner.md): see :data:`FACE_LINK_DISTANCE` and :data:`FACE_MERGE_DISTANCE`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .faces import Face

# face method: Euclidean distances between dlib descriptors (dlib's own same-person threshold, 0.6, is
# for still photos; video frames vary more in pose, blur and light). Measured with bench/identities.py on
# 1179 hand-labelled faces (29 clips at 5 frame/s; 1 frame/s is a subset): the same person on
# consecutive 5 frame/s samples is 0.19 apart (median; p95 0.43), anywhere in a clip 0.33 (p95 0.52);
# different people are >= 0.50 apart for 99% of pairs, the closest 0.43 (two men of two clips; dlib's
# model is known to tell East Asian faces apart less well).
# Link gate: 0.45 is the largest value at which no cut to another person on the same spot (the bench's
# "cuts") is linked; at 0.48 two are. Merge: the first wrong merge appears at 0.48 (street clip,
# 5 frame/s) and the closest pair of different people's tracklets is 0.46 apart (average linkage); 0.42
# keeps a margin below both, at 0.03-0.08 more identities per person than 0.45.
FACE_LINK_DISTANCE = 0.45
FACE_MERGE_DISTANCE = 0.42
# appearance method (1 - cosine similarity of the histogram/HOG descriptors), as it was: link gate
# similarity 0.70 (same person on consecutive samples: >= 0.70 for 99% of pairs), merge 0.85 (correct
# merges scored 0.86-0.94, wrong ones 0.81-0.84 on the shared clips).
APPEARANCE_LINK_DISTANCE = 1 - 0.70
APPEARANCE_MERGE_DISTANCE = 1 - 0.85
_CENTRAL = 0.7  # share of the crop side kept: the face box is the central 1/margin (1/1.3 = 0.77)
_SIDE = 32  # the region is resized to this before the histograms: crop-size independent, cheap


@dataclass(frozen=True)
class IdentityMethod:
    """How two faces are compared: a descriptor kind, its distance and the two thresholds."""

    name: Literal["face", "appearance"]
    link_distance: float  # a box match is refused when the face is farther than this from the track
    merge_distance: float  # tracklets merge while their mean face-pair distance is at most this

    def __post_init__(self) -> None:
        if self.name not in ("face", "appearance"):
            raise ValueError(f"unknown identity method {self.name!r}: choose face or appearance")
        if not (self.link_distance > 0 and self.merge_distance > 0):
            raise ValueError("identity distances must be positive")

    def distances(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Distances [n, m] between descriptors ``a`` [n, d] and ``b`` [m, d]."""
        if self.name == "appearance":
            return 1.0 - a @ b.T  # unit vectors: 1 - cosine similarity
        from .identity import distances

        return distances(a, b)

    def describe(self, image: np.ndarray, faces: list[Face], crops: np.ndarray | None) -> list[np.ndarray | None]:
        """One descriptor per face of a frame (None where there is none), for :meth:`IoUTracker.update`.

        ``face``: embedded from the full-resolution ``image``; ``appearance``: from the faces' ``crops``.
        """
        if not faces:
            return []
        if self.name == "appearance":
            if crops is None:
                return [None] * len(faces)
            return [appearance(c) for c in crops]
        from .identity import embedder

        return embedder().embed(image, faces)


FACE = IdentityMethod("face", FACE_LINK_DISTANCE, FACE_MERGE_DISTANCE)
APPEARANCE = IdentityMethod("appearance", APPEARANCE_LINK_DISTANCE, APPEARANCE_MERGE_DISTANCE)
METHODS: dict[str, IdentityMethod] = {m.name: m for m in (FACE, APPEARANCE)}


def appearance(crop: np.ndarray) -> np.ndarray:
    """L2-normalised appearance descriptor (float32 [396]: 72 colour + 324 HOG) of one square RGB face crop.

    Half colour, half shape: a Hellinger-mapped (square-rooted) HSV histogram (16 hue x 4 saturation
    + 8 value bins) and a HOG (32x32 window, 16 px blocks, 9 orientations) of the crop's central 70%,
    each L2-normalised and weighted equally, so the cosine of two descriptors is the mean of the
    colour and shape cosines. Colour alone confuses faces in the same light; HOG alone, poses.
    """
    import cv2

    side = crop.shape[0]
    m = int(round(side * (1 - _CENTRAL) / 2))
    region = np.ascontiguousarray(crop[m : side - m, m : side - m])
    region = cv2.resize(region, (_SIDE, _SIDE), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(region, cv2.COLOR_RGB2HSV)
    hs = cv2.calcHist([hsv], [0, 1], None, [16, 4], [0, 180, 0, 256]).ravel()
    v = cv2.calcHist([hsv], [2], None, [8], [0, 256]).ravel()
    colour = np.sqrt(np.concatenate([hs, v]) / (2 * _SIDE * _SIDE))
    colour /= max(float(np.linalg.norm(colour)), 1e-9)
    gray = cv2.cvtColor(region, cv2.COLOR_RGB2GRAY)
    hog = cv2.HOGDescriptor((_SIDE, _SIDE), (16, 16), (8, 8), (8, 8), 9).compute(gray).ravel()
    hog = hog / max(float(np.linalg.norm(hog)), 1e-9)
    return (np.concatenate([colour, hog]) / np.sqrt(2.0)).astype(np.float32)


def merge_tracklets(
    frames: dict[int, set[int]], descriptors: dict[int, list[np.ndarray]], method: IdentityMethod = FACE
) -> dict[int, int]:
    """Map each tracklet to a merged identity, numbered 0..k-1 by first appearance.

    ``frames[t]``: the sampled frames tracklet ``t`` has a face on; ``descriptors[t]``: its faces'
    descriptors (a tracklet without any is never merged). Agglomerative merging, average linkage (the
    mean ``method`` distance over all face pairs of two groups), closest pair first, while it is at most
    ``method.merge_distance``; groups that share a frame are two people and never merge.
    """
    ids = sorted(frames, key=lambda t: (min(frames[t], default=0), t))
    groups: list[list[int]] = [[t] for t in ids]
    gframes = [set(frames[t]) for t in ids]
    feats = [np.stack(descriptors[t]).astype(np.float64) if descriptors.get(t) else None for t in ids]
    n = len(ids)
    # sums[i][j]: the sum of face-pair distances between groups i and j; counts: the number of pairs
    sums = np.zeros((n, n))
    counts = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            fi, fj = feats[i], feats[j]
            if fi is not None and fj is not None:
                sums[i, j] = sums[j, i] = float(method.distances(fi, fj).sum())
                counts[i, j] = counts[j, i] = fi.shape[0] * fj.shape[0]
    alive = [feats[i] is not None for i in range(n)]
    while True:
        best, pair = method.merge_distance, None
        for i in range(n):
            if not alive[i]:
                continue
            for j in range(i + 1, n):
                if not alive[j] or counts[i, j] == 0 or gframes[i] & gframes[j]:
                    continue
                dist = sums[i, j] / counts[i, j]
                if dist <= best:
                    best, pair = dist, (i, j)
        if pair is None:
            break
        i, j = pair
        groups[i] += groups[j]
        groups[j] = []
        gframes[i] |= gframes[j]
        alive[j] = False
        sums[i, :] += sums[j, :]
        sums[:, i] += sums[:, j]
        counts[i, :] += counts[j, :]
        counts[:, i] += counts[:, j]
        sums[i, i] = counts[i, i] = 0.0
    first = sorted((min(min(frames[t], default=0) for t in g), k) for k, g in enumerate(groups) if g)
    out: dict[int, int] = {}
    for new, (_, k) in enumerate(first):
        for t in groups[k]:
            out[t] = new
    return out


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
    look: np.ndarray | None = None  # descriptor of the last face


@dataclass
class IoUTracker:
    """Online tracker: call :meth:`update` with each sampled frame's faces, in time order."""

    min_iou: float = 0.3
    max_centre_distance: float = 0.5  # fallback match: centres closer than half a face, similar size
    max_size_ratio: float = 1.5
    max_gap: int = 2  # sampled frames a track survives without a face (detector misses)
    method: IdentityMethod = FACE  # descriptor, link gate and merge threshold
    _tracks: list[_Track] = field(default_factory=list)
    _next: int = 0
    _frame: int = -1
    _frames: dict[int, set[int]] = field(default_factory=dict)
    _descriptors: dict[int, list[np.ndarray]] = field(default_factory=dict)

    def update(self, faces: list[Face], descriptors: list[np.ndarray | None] | None = None) -> list[int]:
        """Tracklet ids (0, 1, ...) of ``faces`` on the next sampled frame, in the same order.

        ``descriptors``: one per face (``self.method.describe``), or None: boxes only (no link gate,
        and the tracklets are never merged).
        """
        self._frame += 1
        looks: list[np.ndarray | None] = list(descriptors) if descriptors is not None else [None] * len(faces)
        if len(looks) != len(faces):
            raise ValueError(f"{len(faces)} faces but {len(looks)} descriptors")
        live = [t for t in self._tracks if self._frame - t.last_frame <= self.max_gap + 1]
        # The link gate. Faces and tracks with descriptors link only when the descriptors match; those
        # without (boxes only, or faces too dark or flat to tell people apart) link only with each other:
        # a face that can be identified never continues a track that could not be, nor the reverse.
        gate = np.full((len(live), len(faces)), descriptors is None)
        if descriptors is not None:
            t_has = np.array([t.look is not None for t in live], bool)
            f_has = np.array([look is not None for look in looks], bool)
            gate[np.ix_(~t_has, ~f_has)] = True
            ti_has, fi_has = np.flatnonzero(t_has), np.flatnonzero(f_has)
            if len(ti_has) and len(fi_has):
                d = self.method.distances(
                    np.stack([live[ti].look for ti in ti_has]), np.stack([looks[fi] for fi in fi_has])
                )
                gate[np.ix_(ti_has, fi_has)] = d <= self.method.link_distance
        pairs = []
        for ti, t in enumerate(live):
            for fi, f in enumerate(faces):
                if not gate[ti, fi]:
                    continue  # a box match between faces that are clearly two people
                o = iou(t.last, f)
                if o >= self.min_iou:
                    pairs.append((2.0 + o, ti, fi))  # any IoU match beats any distance match
                    continue
                ratio = max(f.width, t.last.width, 1e-6) / max(min(f.width, t.last.width), 1e-6)
                d_c = _centre_distance(t.last, f)
                if d_c <= self.max_centre_distance and ratio <= self.max_size_ratio:
                    pairs.append((1.0 - d_c, ti, fi))
        pairs.sort(key=lambda p: -p[0])
        out: list[int | None] = [None] * len(faces)
        used: set[int] = set()
        for _, ti, fi in pairs:
            if ti in used or out[fi] is not None:
                continue
            used.add(ti)
            t = live[ti]
            t.last, t.last_frame, t.look = faces[fi], self._frame, looks[fi]
            out[fi] = t.identity
        for fi, f in enumerate(faces):
            if out[fi] is None:
                t = _Track(self._next, f, self._frame, looks[fi])
                self._next += 1
                self._tracks.append(t)
                out[fi] = t.identity
        self._tracks = [t for t in self._tracks if self._frame - t.last_frame <= self.max_gap + 1]
        ids = [int(i) for i in out if i is not None]
        for fi, ident in enumerate(ids):
            self._frames.setdefault(ident, set()).add(self._frame)
            look = looks[fi]
            if look is not None:
                self._descriptors.setdefault(ident, []).append(look)
        return ids

    def identity_map(self) -> dict[int, int]:
        """Tracklet id -> person identity (0..k-1) after merging (see :func:`merge_tracklets`)."""
        return merge_tracklets(self._frames, self._descriptors, self.method)

    @property
    def n_identities(self) -> int:
        return self._next
