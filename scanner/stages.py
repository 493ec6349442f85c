"""The scanner's stages as plain functions over typed values: no processes, threads, pipes or store.

A video goes through three stages; an executor (:mod:`acfd.scanner.local`, later a cluster one)
only decides where and when each runs:

1. :func:`frames_with_faces` (in :mod:`acfd.scanner.frames`, re-exported here): decode the sampled
   frames, detect every face, track identities and crop each face the training way. It yields :class:`Opened`, then one :class:`FrameFaces` per
   sampled frame (once its identities are settled), then :class:`Decoded` with the identity map.
2. :func:`score_batch`: run the model on a batch of crops, from any videos.
3. :func:`finish_video`: aggregate one video's scored faces into its verdicts
   (:func:`window_verdict`: the same for a time window of a stream).

:class:`VideoWork` is the state of one video between the stages (faces waiting for scores, the crops
kept for the report), so an executor's scheduling is bookkeeping over these values and can be tested
without processes.
"""

from __future__ import annotations

import dataclasses
import heapq
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from acfd.schemas import db

from .aggregate import Scale, VideoVerdict, aggregate
from .config import DEFAULTS, ScanError
from .discover import Candidate

# Stage 1 lives in .frames, which a decode worker imports without the rest (no store, no aggregation);
# its names are the stages' too.
from .frames import (  # noqa: F401
    Decoded,
    Detector,
    Failed,
    FrameFaces,
    FramesConfig,
    Opened,
    VideoEvent,
    frames_with_faces,
)
from .results import FaceRecord, StoredCrop, VideoResult

THUMB_SIZE = 128  # side of the JPEG thumbnail stored with a kept crop
JPEG_QUALITY = 85


# -- stage 2: score a batch --------------------------------------------------------------------------

class Prediction(Protocol):
    score: np.ndarray
    attention: np.ndarray | None


class Model(Protocol):
    """What :func:`score_batch` needs of a backend (``acfd.engine`` backends have it)."""

    def infer(self, crops: np.ndarray) -> Prediction: ...


@dataclass(frozen=True)
class Scores:
    """The model's output for a batch: one score per crop, and attention maps when the model has them."""

    score: np.ndarray  # float32 [n]
    attention: np.ndarray | None  # float32 [n, h, w]


def score_batch(model: Model, crops: np.ndarray) -> Scores:
    """Run the model on ``crops`` (uint8 [n, S, S, 3]); a model that answers for another number of crops
    is an error of the model, not of a video."""
    pred = model.infer(crops)
    score = np.asarray(pred.score, dtype=np.float32).reshape(-1)
    att = None if pred.attention is None else np.asarray(pred.attention, dtype=np.float32)
    if score.shape[0] != len(crops):
        raise ScanError(f"model returned {score.shape[0]} scores for {len(crops)} crops")
    return Scores(score, att)


# -- between the stages: one video's state -----------------------------------------------------------

def thumbnail(crop: np.ndarray) -> bytes:
    """A crop as the JPEG thumbnail stored for the report."""
    import cv2

    small = cv2.resize(crop, (THUMB_SIZE, THUMB_SIZE), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ScanError("JPEG encoding of a face crop failed")
    return buf.tobytes()


@dataclass(frozen=True)
class FaceCrop:
    """A face waiting for its score: which video, which face of it, the crop."""

    video: int
    face: int
    crop: np.ndarray


_Kept = tuple[float, int, StoredCrop]  # (score, face index, crop): min-heap entries per identity


@dataclass
class VideoWork:
    """One video between the stages: faces found so far, how many still wait for a score, and the
    ``keep`` highest-scoring crops of each identity (thumbnail + attention, for the report)."""

    video: int
    item: Candidate
    keep: int = DEFAULTS.store_crops
    result: VideoResult = field(init=False)
    pending: int = 0  # faces handed to scoring, not yet scored
    decoded: bool = False
    failed: bool = False
    kept: dict[int, list[_Kept]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.result = VideoResult(self.item, db.STATUS_OK)

    @property
    def complete(self) -> bool:
        """Nothing more will come for this video: it can be finished."""
        return self.failed or (self.decoded and self.pending == 0)

    def on_event(self, ev: VideoEvent) -> list[FaceCrop]:
        """Take one event of :func:`frames_with_faces` (or a failure); returns the faces to score."""
        r = self.result
        if isinstance(ev, Opened):
            r.info = ev.info
        elif isinstance(ev, FrameFaces):
            r.n_frames += 1
            r.timings.decode += ev.t_decode
            r.timings.detect += ev.t_detect
            out = []
            for k, (face, ident) in enumerate(zip(ev.faces, ev.identities, strict=True)):
                r.faces.append(FaceRecord(ev.index, ev.time_s, face, ident))
                assert ev.crops is not None
                out.append(FaceCrop(self.video, len(r.faces) - 1, ev.crops[k]))
            self.pending += len(out)
            return out
        elif isinstance(ev, Decoded):
            if ev.identity_map:
                self._merge_identities(ev.identity_map)
            r.timings.decode, r.timings.detect = ev.t_decode, ev.t_detect
            if r.info is not None and r.info.decoder != ev.decoder:
                r.info = dataclasses.replace(r.info, decoder=ev.decoder)
            self.decoded = True
        elif isinstance(ev, Failed):
            self.failed = True
            r.status, r.error = db.STATUS_ERROR, ev.error
        else:  # pragma: no cover - a new event kind must be handled here
            raise TypeError(f"unknown video event {ev!r}")
        return []

    def on_score(self, face: int, crop: np.ndarray | bytes, score: float, attention: np.ndarray | None,
                 infer_s: float) -> None:
        """A face's score (and its share of the batch's time); keeps its crop if among the highest.
        ``crop``: the crop, or its :func:`thumbnail` made already (where the crop stayed on another node)."""
        if self.failed:
            return
        self.pending -= 1
        self.result.faces[face].score = float(score)
        self.result.timings.infer += infer_s
        if self.keep == 0:
            return
        heap = self.kept.setdefault(self.result.faces[face].identity, [])
        if len(heap) < self.keep or score > heap[0][0]:
            jpeg = crop if isinstance(crop, bytes) else thumbnail(crop)
            entry = (float(score), face, StoredCrop(face, jpeg, THUMB_SIZE,
                                                    None if attention is None else attention.copy()))
            if len(heap) < self.keep:
                heapq.heappush(heap, entry)
            else:
                heapq.heapreplace(heap, entry)

    def _merge_identities(self, mapping: dict[int, int]) -> None:
        """Apply the tracklet -> person map to the faces and the kept crops."""
        for f in self.result.faces:
            f.identity = mapping.get(f.identity, f.identity)
        merged: dict[int, list[_Kept]] = {}
        for old, heap in self.kept.items():
            merged.setdefault(mapping.get(old, old), []).extend(heap)
        self.kept = {}
        for ident, entries in merged.items():
            top = heapq.nlargest(self.keep, entries, key=lambda e: (e[0], e[1]))
            heapq.heapify(top)
            self.kept[ident] = top


# -- stage 3: finish a video -------------------------------------------------------------------------

@dataclass(frozen=True)
class VerdictPolicy:
    """How scored faces become verdicts: the aggregation strategy, the model's scale, the support an
    identity needs (None: max(2, 10% of face frames))."""

    strategy: str
    scale: Scale
    min_support: int | None = None


def finish_video(work: VideoWork, policy: VerdictPolicy | None) -> VideoResult:
    """The video's verdicts from its scored faces (faces are in frame order: one decoder, in order),
    and the content hash of its file; an error keeps no faces (``policy`` is only needed for a video
    that was decoded)."""
    t0 = time.perf_counter()
    r = work.result
    if r.status not in (db.STATUS_ERROR, db.STATUS_SKIPPED):
        if policy is None:
            raise ScanError("a decoded video needs a verdict policy")
        if r.faces:
            r.verdict = aggregate(
                [f.identity for f in r.faces], [f.time_s for f in r.faces], [float(f.score) for f in r.faces],
                policy.strategy, policy.scale, policy.min_support,
            )
            r.status = db.STATUS_OK
        else:
            r.verdict = aggregate([], [], [], policy.strategy, policy.scale)
            r.status = db.STATUS_NO_FACE
        r.crops = sorted((sc for heap in work.kept.values() for _, _, sc in heap), key=lambda sc: sc.face_index)
    else:
        r.faces, r.crops, r.verdict = [], [], None
    r.content_hash = work.item.content_hash()
    r.timings.store += time.perf_counter() - t0
    return r


def window_verdict(faces: Sequence[FaceRecord], start_s: float, end_s: float, policy: VerdictPolicy) -> VideoVerdict:
    """The verdict of a time window (a live stream's, where a video never ends): the scored faces with
    ``start_s <= time_s < end_s``, aggregated as a video's are (``no_face`` when there are none)."""
    if not end_s > start_s:
        raise ScanError(f"a window must end after it starts ({start_s:g} s .. {end_s:g} s)")
    inside = [f for f in faces if start_s <= f.time_s < end_s]
    if any(f.score is None for f in inside):
        raise ScanError("a window can be judged only once all its faces are scored")
    return aggregate([f.identity for f in inside], [f.time_s for f in inside], [float(f.score) for f in inside],  # type: ignore[arg-type]
                     policy.strategy, policy.scale, policy.min_support)


def ready_result(item: Candidate, status: str, error: str) -> VideoResult:
    """A result known without decoding (an unreadable path, a second path of one file), finished."""
    work = VideoWork(-1, item, keep=0)
    work.result.status, work.result.error = status, error
    return finish_video(work, None)
