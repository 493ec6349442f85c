"""Detection metrics on labelled scores, in numpy: ROC, AUC, TAR at a FAR, ACC, threshold at a FAR.

Shared by ``acfd-train evaluate`` (frames and videos of a test split, re-exported by
``acfd.train.metrics``) and ``acfd-scan validate`` (whole-video scores of the user's own folders).

Conventions:

* Label 1 = fake = positive. A higher score means "more fake" (the distance ||C|| or P(fake)).
* ACC uses the paper's decision rule: fake iff score > threshold (strictly).
* AUC is the Mann-Whitney statistic with average ranks for ties (= the trapezoidal ROC area).
* TAR at FAR f: the largest true positive rate over the ROC's operating points (thresholds at the
  distinct scores, fake iff score >= t) whose false positive rate on reals is <= f. No interpolation
  between operating points: the reported TAR is one a real threshold achieves. With n reals the
  smallest non-zero FAR is 1/n; when 1/n > f only FAR = 0 qualifies, i.e. the threshold must exceed
  every real score - callers report ``1/n`` as the FAR resolution so a reader sees that the data
  cannot resolve that FAR.
* Threshold at FAR f (:func:`threshold_at_far`): the smallest threshold t for the decision rule
  (fake iff score > t) whose false-alarm rate on the reals, #{real > t} / n, is <= f. With the reals'
  scores sorted from the highest, r(1) >= r(2) >= ..., and m = floor(f n) false alarms allowed, that is
  t = r(m+1): a real score, which the rule itself does not flag. Its TAR equals :func:`tar_at_far`'s.

This module imports only numpy.
"""

from __future__ import annotations

import math

import numpy as np


def check_scores(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels as int64 0/1 and scores as finite float64, flat and of equal length (else ValueError)."""
    y = np.asarray(labels).astype(np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{y.size} labels but {s.size} scores")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    return y, s


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), thresholds decreasing; point i predicts fake iff score >= thresholds[i].

    The first point is (0, 0) at threshold +inf. Needs at least one real and one fake.
    """
    y, s = check_scores(labels, scores)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC needs both reals and fakes")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    # Last index of each run of equal scores: the operating point that admits all tied samples.
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    fpr = np.r_[0.0, fp / n_neg]
    tpr = np.r_[0.0, tp / n_pos]
    thr = np.r_[np.inf, s[last]]
    return fpr, tpr, thr


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U / (n_pos n_neg), ties counted half); nan if one class."""
    y, s = check_scores(labels, scores)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size, dtype=np.float64)
    ss = s[order]
    # Average ranks (1-based) over runs of ties.
    starts = np.r_[0, np.nonzero(np.diff(ss))[0] + 1]
    ends = np.r_[starts[1:], ss.size]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def tar_at_far(labels: np.ndarray, scores: np.ndarray, far: float) -> tuple[float, float]:
    """(TAR, threshold) at false-accept rate ``far`` (see the module docstring); nan if one class."""
    y, s = check_scores(labels, scores)
    if y.sum() == 0 or (1 - y).sum() == 0:
        return float("nan"), float("nan")
    fpr, tpr, thr = roc_curve(y, s)
    ok = np.nonzero(fpr <= far + 1e-12)[0]
    best = ok[np.argmax(tpr[ok])]
    return float(tpr[best]), float(thr[best])


def accuracy(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    """Fraction correct under the rule fake iff score > threshold."""
    y, s = check_scores(labels, scores)
    if y.size == 0:
        return float("nan")
    return float(np.mean((s > threshold).astype(np.int64) == y))


def threshold_at_far(labels: np.ndarray, scores: np.ndarray, far: float) -> tuple[float, float, float]:
    """(threshold, TAR, FAR on the reals) of the smallest threshold whose FAR is <= ``far``.

    The rule is fake iff score > threshold; see the module docstring. ``far`` must lie in [0, 1).
    Needs at least one real; TAR is nan without fakes.
    """
    if not 0.0 <= far < 1.0:
        raise ValueError(f"FAR must lie in [0, 1), not {far}")
    y, s = check_scores(labels, scores)
    reals = np.sort(s[y == 0])[::-1]
    if reals.size == 0:
        raise ValueError("a threshold at a FAR needs at least one real score")
    allowed = min(math.floor(far * reals.size + 1e-9), reals.size - 1)  # false alarms the FAR permits
    t = float(reals[allowed])
    fakes = s[y == 1]
    tar = float(np.mean(fakes > t)) if fakes.size else float("nan")
    return t, tar, float(np.mean(reals > t))
