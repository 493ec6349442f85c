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

The embedding costs about 0.13 s of CPU per face, ten times the detection; most faces of a video plainly
continue their track (same spot, nobody else near, same look), so scans embed only the faces an
:class:`EmbedSchedule` picks (:meth:`IoUTracker.observe`, mode ``face`` of :data:`MODES`): a track's
first face, faces with competition or after a gap, a face whose cheap :class:`Glance` changed, and one
per few seconds. The others reuse their track's descriptor and are checked later, at the track's next
embedded face or its end, against the chain of faces between (their own descriptors computed then, from
the aligned chips kept for them, only as far as needed): reused faces that turn out to be someone else
move to that person's tracklet, so a frame's ids are final only from :attr:`IoUTracker.settled` on and
the worker holds frames until then. ``face-every`` embeds every face (as before the schedule).

Thresholds of the ``face`` method, chosen on ``bench/identities.py`` (hand-labelled faces of the
shared street and Hamilton clips and 27 one-person clips, at 1 and 5 frame/s; the figures are in
docs/scanner.md): see :data:`FACE_LINK_DISTANCE`, :data:`FACE_MERGE_DISTANCE` and :data:`SCHEDULE`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

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


@dataclass(frozen=True)
class EmbedSchedule:
    """Which faces the ``face`` method embeds (:meth:`IoUTracker.observe`); the others reuse their track's
    descriptor.

    A face is not embedded only when it plainly continues one track: it box-matches exactly one live
    track and that track exactly one face of the frame (no one else competes), the track had a face on
    the previous sampled frame (no gap), the face's box overlaps the track's last box by at least
    ``min_iou``, its :class:`Glance` changed by at most ``max_change`` (appearance) and
    ``max_pixel_change`` (aligned pixels) since the track's last embedded face, and that face is fewer
    than ``every_frames`` sampled frames and ``every_seconds`` of stream time back. Every other face is
    embedded: a track's first face, faces after a gap, faces another face or track competes for, a face
    whose look changed (a cut to someone else on the same spot), and so at least one face per
    ``every_frames`` / ``every_seconds`` of a track. The reused faces are checked at their track's next
    embedded face, or its last face when it ends (:meth:`IoUTracker._resolve`, :meth:`IoUTracker._close`):
    the chain of faces between must hold at the link gate, as linking every face would have checked; if
    it does not, the run of reused faces that leads to the later face is moved to that face's tracklet.
    A reused face adds a descriptor to its tracklet (for the merge) only if a check computed it.
    """

    min_iou: float = 0.5
    max_change: float = 0.06  # Glance.change()[0]: 1 - cosine of the appearance descriptors
    max_pixel_change: float = 0.2  # Glance.change()[1]: 1 - normalised correlation of the aligned pixels
    every_frames: int = 16
    every_seconds: float = 3.0

    def __post_init__(self) -> None:
        if not 0 < self.min_iou <= 1:
            raise ValueError(f"schedule min_iou must be in (0, 1], got {self.min_iou}")
        if not (0 <= self.max_change <= 2 and 0 <= self.max_pixel_change <= 2):
            raise ValueError("schedule max_change and max_pixel_change must be in [0, 2]")
        if self.every_frames < 1 or not self.every_seconds > 0:
            raise ValueError("schedule every_frames must be >= 1 and every_seconds > 0")


# Chosen on bench/identities.py (docs/scanner.md): the 26 cuts to another person on the same spot all
# exceed one of the two change thresholds by >= 36% (the closest: appearance 0.046, pixels 0.273), while
# the same person on consecutive 5 frame/s samples exceeds either in 10% of pairs (appearance alone
# cannot do this: its closest cut, 0.046, is the 95th percentile of the same person's steps). A cut that
# both miss is still found by the check of the reused faces; 16 frames / 3 s bound how long that takes
# (and how long the worker holds frames). 8 frames / 2 s embed more for nothing; 32 / 6 s save 1% at
# 5 frame/s and cost fragmentation at 1 frame/s.
SCHEDULE = EmbedSchedule()


@dataclass(frozen=True)
class Glance:
    """A face's cheap look (about 1 ms of CPU on top of the alignment that an embedding needs anyway,
    against 0.13 s for the embedding), compared with the track's last embedded face to see whether the
    face may reuse that face's descriptor."""

    appearance: np.ndarray  # appearance() of the face's crop: colour and shape, unaligned
    pixels: np.ndarray  # identity.chip_pixels() of the aligned chip: the face's own grey levels

    def change(self, ref: Glance) -> tuple[float, float]:
        """(1 - cosine of the appearances, 1 - correlation of the pixels) between this face and ``ref``."""
        return 1.0 - float(self.appearance @ ref.appearance), 1.0 - float(self.pixels @ ref.pixels)


class Looks(Protocol):
    """One frame's faces, described on demand (what :meth:`IoUTracker.observe` asks for)."""

    def glances(self) -> list[Glance | None]:
        """Per face: its :class:`Glance`, or None for a face the method cannot identify (too dark or
        flat: it gets no descriptor, so it is never embedded nor reused)."""
        ...

    def embed(self, indices: list[int]) -> list[np.ndarray | None]:
        """The method's descriptors of the faces at ``indices`` (the expensive step)."""
        ...

    def later(self, indices: list[int]) -> list[Callable[[], np.ndarray | None]]:
        """For the faces at ``indices``: what computes their descriptor later, if it is ever asked for
        (holding only what that needs, not the frame)."""
        ...


class FrameLooks:
    """:class:`Looks` of a decoded frame, from the image and the faces' crops (uint8 [k, S, S, 3]).

    ``face`` method: each face is aligned once (:meth:`acfd.scanner.identity.FaceEmbedder.chips`); its
    glance, its embedding and its deferred embedding all start from that chip.
    """

    def __init__(self, method: IdentityMethod, image: np.ndarray, faces: list[Face], crops: np.ndarray | None):
        self.method, self.image, self.faces, self.crops = method, image, faces, crops
        self._chips: list[np.ndarray | None] | None = None

    def _aligned(self) -> list[np.ndarray | None]:
        if self._chips is None:
            from .identity import embedder

            self._chips = embedder().chips(self.image, self.faces)
        return self._chips

    def glances(self) -> list[Glance | None]:
        if self.method.name != "face":
            raise ValueError("glances are for the face method")
        if self.crops is None:
            raise ValueError("glances need the faces' crops")
        from .identity import chip_pixels

        return [None if chip is None else Glance(appearance(c), chip_pixels(chip))
                for chip, c in zip(self._aligned(), self.crops, strict=True)]

    def embed(self, indices: list[int]) -> list[np.ndarray | None]:
        if self.method.name != "face":
            crops = None if self.crops is None else self.crops[indices]
            return self.method.describe(self.image, [self.faces[i] for i in indices], crops)
        from .identity import embedder

        chips = self._aligned()
        return [embedder().embed_chip(chips[i]) for i in indices]

    def later(self, indices: list[int]) -> list[Callable[[], np.ndarray | None]]:
        if self.method.name != "face":
            return [functools.partial(_given, x) for x in self.embed(indices)]
        from .identity import embedder

        # the aligned 150x150 chip (66 kB) is kept; the ResNet runs on it only if it is asked for
        chips = self._aligned()
        return [functools.partial(embedder().embed_chip, chips[i]) for i in indices]


def _given(x: np.ndarray | None) -> np.ndarray | None:
    return x


class _Reused:
    """A face linked on its track's descriptor: where it is, and its own descriptor, computed on first use
    (when the chain is checked: :meth:`IoUTracker._resolve`)."""

    def __init__(self, make: Callable[[], np.ndarray | None], face: Face):
        self._make: Callable[[], np.ndarray | None] | None = make
        self._look: np.ndarray | None = None
        self.face = face
        self.frame = -1  # sampled frame and index of the face on it, set when linked
        self.slot = -1

    @property
    def done(self) -> bool:
        return self._make is None

    def get(self) -> np.ndarray | None:
        if self._make is not None:
            self._look, self._make = self._make(), None
        return self._look


@dataclass
class _Track:
    identity: int
    last: Face
    last_frame: int
    look: np.ndarray | None = None  # descriptor of the last embedded face (every face, without a schedule)
    anchor: Face | None = None  # that face's box
    embedded_frame: int = 0  # its sampled frame
    embedded_time: float | None = None  # and its stream time (s), when known
    ref: Glance | None = None  # its glance (schedule only)
    pending: list[_Reused] = field(default_factory=list)  # faces reused since that face, not yet checked


@dataclass
class IoUTracker:
    """Online tracker: call :meth:`update` (descriptors given) or :meth:`observe` (described on demand)
    with each sampled frame's faces, in time order, then :meth:`identity_map`.

    With a ``schedule``, the faces a track reuses its descriptor for are checked later (at its next
    embedded face, or when it ends), and a check may move some of them to another tracklet: the ids
    :meth:`observe` returns are provisional until frame :attr:`settled`; :meth:`tracklets` gives the
    current ones, final once :meth:`finish` was called.

    ``history=False`` (a live stream, which never ends): nothing is kept for the end-of-video merge
    (:meth:`identity_map` then maps nothing: the tracklets are the identities), and :meth:`forget`
    drops the ids of frames already read, so memory stays bounded however long the stream runs.
    """

    min_iou: float = 0.3
    max_centre_distance: float = 0.5  # fallback match: centres closer than half a face, similar size
    max_size_ratio: float = 1.5
    max_gap: int = 2  # sampled frames a track survives without a face (detector misses)
    method: IdentityMethod = FACE  # descriptor, link gate and merge threshold
    schedule: EmbedSchedule | None = None  # observe(): which faces to embed; None: every face
    n_embedded: int = 0  # descriptors observe() had the method compute (checks of reused faces included)
    n_reused: int = 0  # faces observe() linked on their track's descriptor
    n_moved: int = 0  # reused faces a check moved to another tracklet
    _tracks: list[_Track] = field(default_factory=list)
    _next: int = 0
    _frame: int = -1
    _frames: dict[int, set[int]] = field(default_factory=dict)
    _descriptors: dict[int, list[np.ndarray]] = field(default_factory=dict)
    _ids: dict[int, list[int]] = field(default_factory=dict)  # sampled frame -> its faces' tracklets
    history: bool = True  # keep each tracklet's frames and descriptors for the merge (False: live streams)
    _forgotten: int = 0  # frames before this one were dropped from _ids (forget)

    def __post_init__(self) -> None:
        if self.schedule is not None and self.method.name != "face":
            raise ValueError("an embedding schedule is for the face method")

    def _box_score(self, last: Face, f: Face) -> float | None:
        """How well face ``f`` continues a track whose last box is ``last`` (higher is better), or None."""
        o = iou(last, f)
        if o >= self.min_iou:
            return 2.0 + o  # any IoU match beats any distance match
        ratio = max(f.width, last.width, 1e-6) / max(min(f.width, last.width), 1e-6)
        d_c = _centre_distance(last, f)
        if d_c <= self.max_centre_distance and ratio <= self.max_size_ratio:
            return 1.0 - d_c
        return None

    def _alive(self, t: _Track, frame: int) -> bool:
        return frame - t.last_frame <= self.max_gap + 1

    def _scores(self, live: list[_Track], faces: list[Face]) -> list[list[float | None]]:
        return [[self._box_score(t.last, f) for f in faces] for t in live]

    def update(self, faces: list[Face], descriptors: list[np.ndarray | None] | None = None) -> list[int]:
        """Tracklet ids (0, 1, ...) of ``faces`` on the next sampled frame, in the same order.

        ``descriptors``: one per face (``self.method.describe``), or None: boxes only (no link gate,
        and the tracklets are never merged).
        """
        looks: list[np.ndarray | None] = list(descriptors) if descriptors is not None else [None] * len(faces)
        if len(looks) != len(faces):
            raise ValueError(f"{len(faces)} faces but {len(looks)} descriptors")
        return self._link(faces, looks, descriptors is None)

    def observe(self, faces: list[Face], looks: Looks, time_s: float | None = None) -> list[int]:
        """:meth:`update` with the faces described on demand: all of them without a ``schedule``, else
        those the schedule asks for (:class:`EmbedSchedule`). ``time_s``: the frame's stream time.
        Returns the faces' tracklet ids as they are now (see :attr:`settled`)."""
        n = len(faces)
        if self.schedule is None:
            desc = looks.embed(list(range(n))) if n else []
            self.n_embedded += sum(d is not None for d in desc)
            return self.update(faces, desc)
        glances = looks.glances() if n else []
        if len(glances) != n:
            raise ValueError(f"{n} faces but {len(glances)} glances")
        reuse = self._reusable(faces, glances, time_s)
        need = [fi for fi in range(n) if fi not in reuse and glances[fi] is not None]
        got = looks.embed(need) if need else []
        if len(got) != len(need):
            raise ValueError(f"asked for {len(need)} descriptors, got {len(got)}")
        desc: list[np.ndarray | None] = [None] * n
        for fi, d in zip(need, got, strict=True):
            desc[fi] = d
        for fi, t in reuse.items():
            desc[fi] = t.look
        self.n_embedded += sum(d is not None for d in got)
        self.n_reused += len(reuse)
        later = looks.later(list(reuse)) if reuse else []
        reused = {fi: _Reused(make, faces[fi]) for fi, make in zip(reuse, later, strict=True)}
        return self._link(faces, desc, False, reused, glances, time_s)

    @property
    def settled(self) -> int:
        """The first sampled frame whose tracklet ids may still change (all before it are final)."""
        return min((t.pending[0].frame for t in self._tracks if t.pending), default=self._frame + 1)

    def tracklets(self, frame: int) -> list[int]:
        """The tracklet ids of the faces of sampled frame ``frame`` (0, 1, ...), as they are now."""
        return list(self._ids.get(frame, []))

    def forget(self, before: int) -> None:
        """Drop the ids of sampled frames before ``before`` (read already; at most :attr:`settled`, whose
        ids are final): without it a tracker keeps one entry per sampled frame for as long as it runs."""
        if before > self.settled:
            raise ValueError(f"frame {before - 1} is not settled yet (settled: {self.settled})")
        while self._forgotten < before:
            self._ids.pop(self._forgotten, None)
            self._forgotten += 1

    def finish(self) -> None:
        """After the last frame: check the reused faces of the tracks still open (ids then final)."""
        for t in self._tracks:
            self._close(t)

    def _reusable(self, faces: list[Face], glances: list[Glance | None], time_s: float | None) -> dict[int, _Track]:
        """The faces of the next frame that may continue their track on its descriptor (the schedule)."""
        s = self.schedule
        assert s is not None
        frame = self._frame + 1
        live = [t for t in self._tracks if self._alive(t, frame)]
        scores = self._scores(live, faces)
        out: dict[int, _Track] = {}
        for fi, f in enumerate(faces):
            g = glances[fi]
            ti = _sole(scores, fi)
            if g is None or ti is None:
                continue
            t = live[ti]
            if t.look is None or t.ref is None or t.last_frame != frame - 1:
                continue
            if frame - t.embedded_frame >= s.every_frames:
                continue
            if time_s is not None and t.embedded_time is not None and time_s - t.embedded_time >= s.every_seconds:
                continue
            if iou(t.last, f) < s.min_iou or _changed(g, t.ref, s):
                continue
            out[fi] = t
        return out

    def _link(
        self,
        faces: list[Face],
        looks: list[np.ndarray | None],
        boxes_only: bool,
        reused: dict[int, _Reused] | None = None,
        glances: list[Glance | None] | None = None,
        time_s: float | None = None,
    ) -> list[int]:
        """Link the next frame's described faces to the live tracks. ``reused``: faces whose descriptor is
        their track's (no embedding of their own: checked later, see :meth:`_resolve`)."""
        self._frame += 1
        reused = reused or {}
        live = [t for t in self._tracks if self._alive(t, self._frame)]
        scores = self._scores(live, faces)
        # The link gate. Faces and tracks with descriptors link only when the descriptors match; those
        # without (boxes only, or faces too dark or flat to tell people apart) link only with each other:
        # a face that can be identified never continues a track that could not be, nor the reverse.
        gate = np.full((len(live), len(faces)), boxes_only)
        moves: dict[int, tuple[_Track, list[_Reused]]] = {}
        if not boxes_only:
            t_has = np.array([t.look is not None for t in live], bool)
            f_has = np.array([look is not None for look in looks], bool)
            gate[np.ix_(~t_has, ~f_has)] = True
            ti_has, fi_has = np.flatnonzero(t_has), np.flatnonzero(f_has)
            if len(ti_has) and len(fi_has):
                d = self.method.distances(
                    np.stack([live[ti].look for ti in ti_has]), np.stack([looks[fi] for fi in fi_has])
                )
                gate[np.ix_(ti_has, fi_has)] = d <= self.method.link_distance
            # An embedded face that alone continues a track with unchecked reused faces, refused by the
            # gate: the chain through those faces decides, as linking every face would have.
            for fi, look in enumerate(looks):
                ti = _sole(scores, fi)
                if ti is None or gate[ti, fi] or look is None or fi in reused:
                    continue
                t = live[ti]
                if t.pending and t.look is not None and t.last_frame == self._frame - 1:
                    ok, moved = self._resolve(t, look)
                    gate[ti, fi] = ok
                    if moved:
                        moves[fi] = (t, moved)
        pairs = [(s, ti, fi) for ti, row in enumerate(scores) for fi, s in enumerate(row) if s is not None and gate[ti, fi]]
        pairs.sort(key=lambda p: -p[0])
        out: list[int | None] = [None] * len(faces)
        used: set[int] = set()
        for _, ti, fi in pairs:
            if ti in used or out[fi] is not None:
                continue
            used.add(ti)
            t = live[ti]
            t.last, t.last_frame = faces[fi], self._frame
            if fi in reused:
                reused[fi].frame, reused[fi].slot = self._frame, fi
                t.pending.append(reused[fi])
            else:
                self._described(t, faces[fi], looks[fi], glances[fi] if glances else None, time_s)
            out[fi] = t.identity
        for fi, f in enumerate(faces):
            if out[fi] is None:
                t = _Track(self._next, f, self._frame)
                self._described(t, f, looks[fi], glances[fi] if glances else None, time_s)
                self._next += 1
                self._tracks.append(t)
                out[fi] = t.identity
        ids = [int(i) for i in out if i is not None]
        self._ids[self._frame] = list(ids)
        for fi, ident in enumerate(ids if self.history else ()):
            self._frames.setdefault(ident, set()).add(self._frame)
            look = looks[fi]
            if look is not None and fi not in reused:
                self._descriptors.setdefault(ident, []).append(look)
        for fi, (t, moved) in moves.items():  # the faces a check gave to the person of face fi
            self._move(t, moved, ids[fi])
        for t in self._tracks:
            if not self._alive(t, self._frame):
                self._close(t)
        self._tracks = [t for t in self._tracks if self._alive(t, self._frame)]
        return ids

    def _near(self, a: np.ndarray, b: np.ndarray) -> bool:
        return float(self.method.distances(a[None], b[None])[0, 0]) <= self.method.link_distance

    def _fetch(self, item: _Reused) -> np.ndarray | None:
        if not item.done:
            self.n_embedded += item.get() is not None
        return item.get()

    def _chain(self, a: np.ndarray, items: list[_Reused], b: np.ndarray, last: bool = False) -> bool:
        """Whether a chain of descriptors leads from ``a`` through some of ``items`` (in order) to ``b``,
        each step within the link gate; descriptors computed as needed, bisecting (``last``: the last
        item first, where a cut just before ``b`` shows at once)."""
        if self._near(a, b):
            return True
        if not items:
            return False
        k = len(items) - 1 if last else len(items) // 2
        m = self._fetch(items[k])
        if m is None:
            return False
        return self._chain(m, items[k + 1 :], b) and self._chain(a, items[:k], m)

    def _tail(self, items: list[_Reused], b: np.ndarray) -> int:
        """The first index of the run of ``items`` that leads to ``b`` step by step (each within the gate
        of the next), walking back from the end; ``len(items)`` when the last one does not."""
        j, x = len(items), b
        for i in range(len(items) - 1, -1, -1):
            m = self._fetch(items[i])
            if m is None or not self._near(m, x):
                break
            j, x = i, m
        return j

    def _resolve(self, t: _Track, look: np.ndarray) -> tuple[bool, list[_Reused]]:
        """An embedded face (``look``) that alone continues track ``t`` failed the gate against the
        track's last embedded face: is it the same person through the reused faces in between? If not,
        the reused faces that lead to it (a cut the glances missed, found walking back from it) are its
        person's, not the track's: returned, to move to its tracklet."""
        assert t.look is not None
        if self._chain(t.look, t.pending, look, last=True):
            return True, []
        j = self._tail(t.pending, look)
        moved, t.pending = t.pending[j:], t.pending[:j]
        if moved:  # the track ends where it was before them
            t.last, t.last_frame = (t.pending[-1].face, t.pending[-1].frame) if t.pending else (t.anchor or t.last, t.embedded_frame)
        return False, moved

    def _close(self, t: _Track) -> None:
        """Track ``t`` ends (or the video does): its reused faces are checked against its last one, and a
        run of them that is someone else becomes a tracklet of its own."""
        while t.pending and t.look is not None:
            last = self._fetch(t.pending[-1])
            if last is None or self._chain(t.look, t.pending[:-1], last):
                break
            j = self._tail(t.pending[:-1], last)
            moved, t.pending = t.pending[j:], t.pending[:j]
            new = self._next
            self._next += 1
            self._move(t, moved, new)
        self._settle(t)

    def _move(self, t: _Track, moved: list[_Reused], to: int) -> None:
        """Reused faces of track ``t`` that are someone else: to tracklet ``to``, with their descriptors."""
        for item in moved:
            self._ids[item.frame][item.slot] = to
            if not self.history:
                continue
            self._frames[t.identity].discard(item.frame)
            self._frames.setdefault(to, set()).add(item.frame)
            look = item.get() if item.done else None
            if look is not None:
                self._descriptors.setdefault(to, []).append(look)
        self.n_moved += len(moved)

    def _settle(self, t: _Track) -> None:
        """The track's reused faces are checked: those whose descriptor was computed join its merge set."""
        for item in t.pending if self.history else ():
            look = item.get() if item.done else None
            if look is not None:
                self._descriptors.setdefault(t.identity, []).append(look)
        t.pending = []

    def _described(
        self, t: _Track, face: Face, look: np.ndarray | None, ref: Glance | None, time_s: float | None
    ) -> None:
        """The track's last face got a descriptor of its own (or is one that has none)."""
        self._settle(t)
        t.look, t.anchor, t.ref, t.embedded_frame, t.embedded_time = look, face, ref, self._frame, time_s

    def identity_map(self) -> dict[int, int]:
        """Tracklet id -> person identity (0..k-1) after merging (see :func:`merge_tracklets`); calls
        :meth:`finish` first."""
        self.finish()
        if not self.history:
            return {}  # nothing kept to merge by: each tracklet stays an identity
        return merge_tracklets(self._frames, self._descriptors, self.method)

    @property
    def n_identities(self) -> int:
        return self._next


def _changed(g: Glance, ref: Glance, s: EmbedSchedule) -> bool:
    """Whether a face's glance moved too far from its track's last embedded face to reuse its descriptor."""
    d_appearance, d_pixels = g.change(ref)
    return d_appearance > s.max_change or d_pixels > s.max_pixel_change


def _sole(scores: list[list[float | None]], fi: int) -> int | None:
    """The one track that face ``fi`` box-matches, when that track box-matches no other face; else None."""
    tracks = [ti for ti, row in enumerate(scores) if row[fi] is not None]
    if len(tracks) != 1:
        return None
    ti = tracks[0]
    return ti if sum(s is not None for s in scores[ti]) == 1 else None


# How faces are told apart, by name: the method and its embedding schedule. Scans use ``face``;
# bench/identities.py compares it with ``face-every`` (every face embedded: as before the schedule) and
# the former ``appearance``.
MODES: dict[str, tuple[IdentityMethod, EmbedSchedule | None]] = {
    "face": (FACE, SCHEDULE),
    "face-every": (FACE, None),
    "appearance": (APPEARANCE, None),
}


def tracker(mode: str = "face", history: bool = True) -> IoUTracker:
    """A new tracker for one video, telling faces apart by ``mode`` (:data:`MODES`); ``history=False``
    for a live stream (bounded memory, no merge: :class:`IoUTracker`)."""
    if mode not in MODES:
        raise ValueError(f"unknown identity mode {mode!r}: choose {', '.join(MODES)}")
    method, schedule = MODES[mode]
    return IoUTracker(method=method, schedule=schedule, history=history)
