"""The paper's evaluation metrics (§4.1) in numpy: ACC, AUC, TAR at a FAR, PBCA; video aggregation.

ROC, AUC, TAR at a FAR, ACC and the threshold at a FAR are defined in :mod:`acfd.schemas.metrics`
(shared with ``acfd-scan validate``) and re-exported here. Conventions (docs/training.md):

* Label 1 = fake = positive. A higher score means "more fake" (the distance ||C|| or P(fake)).
* ACC uses the paper's decision rule: fake iff score > threshold (strictly).
* AUC is the Mann-Whitney statistic with average ranks for ties (= the trapezoidal ROC area).
* TAR at FAR f: the largest true positive rate over the ROC's operating points (thresholds at the
  distinct scores, fake iff score >= t) whose false positive rate on reals is <= f. No interpolation
  between operating points: the reported TAR is one a real threshold achieves. With n reals the
  smallest non-zero FAR is 1/n; when 1/n > f only FAR = 0 qualifies, i.e. the threshold must exceed
  every real score - reported together with ``far_resolution`` = 1/n so a reader sees that the
  test set cannot resolve that FAR.
* PBCA: attention map > 0.5 vs the ground-truth mask at the map size, per-pixel accuracy pooled over
  every pixel of every evaluated crop, fakes and reals alike (fakes without a valid mask excluded).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from acfd.schemas.metrics import accuracy, auc, check_scores, roc_curve, tar_at_far, threshold_at_far

FARS = (1e-3, 1e-4)  # TAR@0.1% and TAR@0.01% of Table 3


# The generic metrics live in acfd.schemas.metrics (acfd-scan validate uses them too); re-exported here
# so training code and its tests keep calling acfd.train.metrics.
_check = check_scores

__all__ = [
    "FARS", "accuracy", "auc", "check_scores", "jsonable", "pbca", "roc_curve", "summarize", "tar_at_far",
    "threshold_at_far", "video_scores",
]


def pbca(maps: np.ndarray, targets: np.ndarray) -> float:
    """Pixel-wise binary classification accuracy: (map > 0.5) == target over all pixels."""
    m = np.asarray(maps, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    if m.shape != t.shape:
        raise ValueError(f"maps {m.shape} and targets {t.shape} differ")
    if m.size == 0:
        return float("nan")
    return float(np.mean((m > 0.5) == (t > 0.5)))


def summarize(
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    pixel_correct: tuple[int, int] | None = None,
) -> dict[str, float | int | None]:
    """ACC, AUC, TAR@0.1%, TAR@0.01% (+ their thresholds) and PBCA from (correct, total) pixel counts."""
    y, s = _check(labels, scores)
    n_real = int((1 - y).sum())
    out: dict[str, float | int | None] = {
        "n": int(y.size),
        "n_real": n_real,
        "n_fake": int(y.sum()),
        "threshold": float(threshold),
        "acc": accuracy(y, s, threshold),
        "auc": auc(y, s),
    }
    for far, key in zip(FARS, ("tar_0.1", "tar_0.01"), strict=True):
        tar, thr = tar_at_far(y, s, far)
        out[key] = tar
        out[f"{key}_threshold"] = thr
    out["far_resolution"] = 1.0 / n_real if n_real else None
    out["pbca"] = pixel_correct[0] / pixel_correct[1] if pixel_correct and pixel_correct[1] else None
    return out


def video_scores(
    videos: Sequence[str], labels: np.ndarray, scores: np.ndarray
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Mean frame score per video -> (video names, labels, scores), names sorted."""
    y, s = _check(labels, scores)
    if len(videos) != y.size:
        raise ValueError(f"{len(videos)} video names for {y.size} scores")
    names = sorted(set(videos))
    idx = {v: i for i, v in enumerate(names)}
    inv = np.fromiter((idx[v] for v in videos), dtype=np.int64, count=y.size)
    sums = np.bincount(inv, weights=s, minlength=len(names))
    counts = np.bincount(inv, minlength=len(names))
    vlab = np.bincount(inv, weights=y, minlength=len(names)) / counts
    if not np.all((vlab == 0) | (vlab == 1)):
        bad = [names[i] for i in np.nonzero((vlab > 0) & (vlab < 1))[0][:3]]
        raise ValueError(f"videos with frames of both labels: {bad}")
    return names, vlab.astype(np.int64), sums / counts


def jsonable(x: object) -> object:
    """Replace NaN and infinities (not valid JSON) by None, recursively."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x
