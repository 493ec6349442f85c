"""Aggregate: frame scores -> one score per identity -> one verdict per video.

Scores are the model's (distance ||C|| for metric presets, P(fake) for cross-entropy presets);
a score above the artifact's threshold means fake. Strategies reduce one identity's frame scores:

- ``mean``: the mean.
- ``topk``: the mean of the ``k`` highest scores (``k`` = 5, all when fewer): catches forgeries
  present in only part of the video.
- ``confident`` (default): the DFDC winner's rule (selimsef, ``confident_strategy``): with scores
  mapped to [0, 1] by the artifact's radii (r- -> 0, r+ -> 1; probabilities stay as they are),
  if more than 11 frames and more than 40% of them are confidently fake (> 0.8), the mean of those;
  else if more than 90% are confidently real (< 0.2), the mean of those; else the mean of all.
  It keeps a few noisy frames from flipping a clear case and keeps clear evidence from being diluted.

The video's score is the highest score among the *supported* identities, so a video is flagged when
any supported identity is. An identity is supported when it has at least ``min_support`` faces
(default :func:`default_min_support`: max(2, 10% of the video's sampled frames that have a face)):
a stray detection (a face seen on one sampled frame, a false positive, a tracklet the tracker could
not join) still gets its own verdict but cannot make the video ``fake`` on its own. When no identity
is supported (a one-frame clip, a face glimpsed once) every identity counts, so short videos still
get a verdict. A video without faces gets an explicit ``no_face`` verdict and no score.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from acfd.schemas.errors import AcfdError

# The verdict labels (acfd.schemas.db's LABEL_*) are imported where they are used: the CLI imports this
# module for the strategies' names before a scan starts, and the store's SQLAlchemy models cost 0.3 s.

DEFAULT_STRATEGY = "confident"
TOPK = 5
# The DFDC winner's constants (predict_folder.py / kernel_utils.confident_strategy).
CONFIDENT_FAKE = 0.8
CONFIDENT_REAL = 0.2
CONFIDENT_MIN_FAKES = 11
CONFIDENT_FAKE_DIVISOR = 2.5  # more than n // 2.5 (40%) of the frames confidently fake
CONFIDENT_REAL_FRACTION = 0.9
# Support rule: an identity needs this many faces (and this share of the face-bearing frames) to flag
# a video on its own. Two faces: at 1 frame/s a person on screen for 2 s is already evidence; 10%: at
# higher sampling rates one stray second of a 30 s clip (5+ faces at 5 frame/s) is still a stray.
MIN_SUPPORT_FACES = 2
MIN_SUPPORT_FRACTION = 0.1


class AggregateError(AcfdError):
    """Unknown strategy or invalid scores."""


@dataclass(frozen=True)
class Scale:
    """Where scores live: ``low`` maps to 0 and ``high`` to 1 for the confident rule (r-, r+)."""

    low: float
    high: float
    threshold: float


def _mean(scores: np.ndarray, scale: Scale) -> float:
    return float(scores.mean())


def _topk(scores: np.ndarray, scale: Scale, k: int = TOPK) -> float:
    return float(np.sort(scores)[-k:].mean())


def _confident(scores: np.ndarray, scale: Scale) -> float:
    c = np.clip((scores - scale.low) / (scale.high - scale.low), 0.0, 1.0)
    n = len(scores)
    fakes = c > CONFIDENT_FAKE
    n_fake = int(np.count_nonzero(fakes))
    if n_fake > n // CONFIDENT_FAKE_DIVISOR and n_fake > CONFIDENT_MIN_FAKES:
        return float(scores[fakes].mean())
    reals = c < CONFIDENT_REAL
    if np.count_nonzero(reals) > CONFIDENT_REAL_FRACTION * n:
        return float(scores[reals].mean())
    return float(scores.mean())


STRATEGIES: dict[str, Callable[[np.ndarray, Scale], float]] = {
    "confident": _confident,
    "mean": _mean,
    "topk": _topk,
}


def reduce_scores(scores: Sequence[float], strategy: str, scale: Scale) -> float:
    """One identity's score from its frame scores."""
    fn = STRATEGIES.get(strategy)
    if fn is None:
        raise AggregateError(f"unknown strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    a = np.asarray(scores, dtype=np.float64)
    if a.size == 0:
        raise AggregateError("no scores to aggregate")
    if not np.all(np.isfinite(a)):
        raise AggregateError("non-finite frame score (model output NaN or inf)")
    return fn(a, scale)


@dataclass(frozen=True)
class IdentityVerdict:
    identity: int
    score: float
    label: str
    n_faces: int
    t_first: float
    t_last: float
    supported: bool = True  # enough faces to decide the video's label (see the module docstring)


@dataclass(frozen=True)
class VideoVerdict:
    score: float | None  # None exactly for no_face
    label: str
    n_faces: int
    t_first: float | None
    t_last: float | None
    identities: tuple[IdentityVerdict, ...]

    @property
    def flagged(self) -> bool:
        from acfd.schemas.db import LABEL_FAKE

        return self.label == LABEL_FAKE


def default_min_support(n_face_frames: int) -> int:
    """Faces an identity needs to decide a video: max(2, ceil(10% of the frames with a face))."""
    return max(MIN_SUPPORT_FACES, math.ceil(MIN_SUPPORT_FRACTION * n_face_frames - 1e-9))


def aggregate(
    identities: Sequence[int], times: Sequence[float], scores: Sequence[float], strategy: str, scale: Scale,
    min_support: int | None = None,
) -> VideoVerdict:
    """The verdicts of one video from its faces (parallel sequences: identity, time, score).

    ``min_support``: faces an identity needs to make the video ``fake`` on its own (None: the
    default rule, :func:`default_min_support` of the number of distinct face times; 1: every
    identity counts, the rule before support existed).
    """
    from acfd.schemas.db import LABEL_FAKE, LABEL_NO_FACE, LABEL_REAL

    if not (len(identities) == len(times) == len(scores)):
        raise AggregateError("identities, times and scores differ in length")
    if strategy not in STRATEGIES:
        raise AggregateError(f"unknown strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    if min_support is not None and min_support < 1:
        raise AggregateError(f"min_support must be >= 1, got {min_support}")
    if len(scores) == 0:
        return VideoVerdict(None, LABEL_NO_FACE, 0, None, None, ())
    ids = np.asarray(identities)
    ts = np.asarray(times, dtype=np.float64)
    sc = np.asarray(scores, dtype=np.float64)
    need = default_min_support(len(np.unique(ts))) if min_support is None else min_support
    out = []
    for ident in sorted(set(ids.tolist())):
        m = ids == ident
        s = reduce_scores(sc[m], strategy, scale)
        label = LABEL_FAKE if s > scale.threshold else LABEL_REAL
        n = int(m.sum())
        out.append(IdentityVerdict(int(ident), s, label, n, float(ts[m].min()), float(ts[m].max()), n >= need))
    # No identity with enough support (a very short clip): fall back to every identity.
    deciding = [v for v in out if v.supported] or out
    top = max(deciding, key=lambda v: v.score)
    return VideoVerdict(top.score, top.label, len(sc), float(ts.min()), float(ts.max()), tuple(out))
