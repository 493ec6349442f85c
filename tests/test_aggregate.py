"""Aggregation strategies (frame -> identity -> video) and identity tracking."""

from __future__ import annotations

import numpy as np
import pytest
from acfd.scanner.aggregate import DEFAULT_STRATEGY, AggregateError, Scale, aggregate, reduce_scores
from acfd.scanner.faces import Face
from acfd.scanner.track import IoUTracker, iou

DIST = Scale(0.1, 18.0, 9.05)  # the paper's radii and threshold
PROB = Scale(0.0, 1.0, 0.5)


def test_mean_and_topk():
    s = [1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0]
    assert reduce_scores(s, "mean", DIST) == pytest.approx(np.mean(s))
    assert reduce_scores(s, "topk", DIST) == pytest.approx(np.mean([3, 10, 11, 12, 13]))
    assert reduce_scores([4.0, 6.0], "topk", DIST) == pytest.approx(5.0)  # fewer than k: all


def test_confident_follows_the_dfdc_winner_rule():
    # 12 confident fakes out of 20 (> 11 and > 20 // 2.5 = 8): the mean of those only.
    fakes = [0.95] * 12
    s = fakes + [0.1] * 8
    assert reduce_scores(s, "confident", PROB) == pytest.approx(0.95)
    # 11 confident fakes is not more than 11: not the fake branch; not 90% real either: the plain mean.
    s = [0.95] * 11 + [0.1] * 9
    assert reduce_scores(s, "confident", PROB) == pytest.approx(np.mean(s))
    # > 90% confidently real: the mean of those (one outlier ignored).
    s = [0.05] * 19 + [0.9]
    assert reduce_scores(s, "confident", PROB) == pytest.approx(0.05)


def test_confident_maps_distances_by_the_radii():
    # distances: 0.8 of the way from r- to r+ is 14.38; 16.0 is confidently fake, 2.0 confidently real.
    s = [16.0] * 12 + [5.0] * 3
    assert reduce_scores(s, "confident", DIST) == pytest.approx(16.0)
    s = [2.0] * 19 + [30.0]
    assert reduce_scores(s, "confident", DIST) == pytest.approx(2.0)
    assert DEFAULT_STRATEGY == "confident"


def test_video_is_flagged_if_any_identity_is():
    ids = [0, 1, 0, 1, 0, 1]
    times = [0, 0, 1, 1, 2, 2]
    scores = [1.0, 12.0, 2.0, 14.0, 3.0, 13.0]
    v = aggregate(ids, times, scores, "mean", DIST)
    assert [(i.identity, i.label, i.n_faces) for i in v.identities] == [(0, "real", 3), (1, "fake", 3)]
    assert v.identities[0].score == pytest.approx(2.0)
    assert v.label == "fake" and v.flagged and v.score == pytest.approx(13.0) and v.n_faces == 6
    assert (v.t_first, v.t_last) == (0.0, 2.0)
    v = aggregate([0, 0], [0.0, 1.0], [9.0, 9.04], "mean", DIST)
    assert v.label == "real" and not v.flagged  # at the threshold is not above it


def test_no_face_is_explicit_and_scoreless():
    v = aggregate([], [], [], DEFAULT_STRATEGY, DIST)
    assert v.label == "no_face" and v.score is None and v.identities == () and not v.flagged


def test_bad_input():
    with pytest.raises(AggregateError, match="unknown strategy"):
        aggregate([0], [0.0], [1.0], "median-ish", DIST)
    with pytest.raises(AggregateError, match="non-finite"):
        reduce_scores([1.0, float("nan")], "mean", DIST)
    with pytest.raises(AggregateError):
        aggregate([0, 1], [0.0], [1.0, 2.0], "mean", DIST)


def _face(x, y, s=100.0):
    return Face(x, y, x + s, y + s, 0.9, ())


def test_iou():
    assert iou(_face(0, 0), _face(0, 0)) == pytest.approx(1.0)
    assert iou(_face(0, 0), _face(50, 0)) == pytest.approx(50 * 100 / (2 * 10000 - 5000))
    assert iou(_face(0, 0), _face(500, 0)) == 0.0


def test_tracker_keeps_two_people_apart_and_survives_misses():
    t = IoUTracker()
    assert t.update([_face(0, 0), _face(400, 0)]) == [0, 1]
    assert t.update([_face(410, 5), _face(5, 3)]) == [1, 0]  # order of detections does not matter
    assert t.update([_face(12, 4)]) == [0]  # person 1 missed on this frame
    assert t.update([_face(15, 6), _face(420, 8)]) == [0, 1]  # ... and comes back as the same identity
    # a sparse sample: the head moved 40% of its size, no overlap beyond the IoU threshold
    assert t.update([_face(55, 6), _face(420, 8)]) == [0, 1]
    # far away and a different size: a new person
    assert t.update([_face(800, 300, 40)]) == [2]
    assert t.n_identities == 3


def test_tracker_gap_ends_a_track():
    t = IoUTracker(max_gap=1)
    assert t.update([_face(0, 0)]) == [0]
    t.update([])
    t.update([])
    t.update([])
    assert t.update([_face(0, 0)]) == [1]


def test_a_stray_face_cannot_flag_a_video_on_its_own():
    from acfd.scanner.aggregate import default_min_support

    # identity 0: a real person on 10 frames; identity 1: one very suspicious stray detection
    ids = [0] * 10 + [1]
    times = [float(t) for t in range(10)] + [4.0]
    scores = [1.0] * 10 + [17.0]
    v = aggregate(ids, times, scores, "mean", DIST)
    assert v.label == "real" and not v.flagged and v.score == pytest.approx(1.0)
    stray = v.identities[1]
    assert (stray.identity, stray.label, stray.n_faces, stray.supported) == (1, "fake", 1, False)
    assert v.identities[0].supported
    # the old rule (any identity decides) is min_support=1
    assert aggregate(ids, times, scores, "mean", DIST, min_support=1).label == "fake"
    # two faces are enough support in a short video: a second person really seen twice does flag it
    v = aggregate(ids + [1], times + [5.0], scores + [16.0], "mean", DIST)
    assert v.label == "fake" and v.score == pytest.approx(16.5)
    assert [default_min_support(n) for n in (0, 1, 20, 21, 30, 31, 100)] == [2, 2, 2, 3, 3, 4, 10]
    with pytest.raises(AggregateError, match="min_support"):
        aggregate(ids, times, scores, "mean", DIST, min_support=0)


def test_short_videos_still_get_a_verdict():
    # one frame, one face: nothing is supported, so every identity counts (the rule before support)
    v = aggregate([0], [0.0], [15.0], DEFAULT_STRATEGY, DIST)
    assert v.label == "fake" and v.score == pytest.approx(15.0) and not v.identities[0].supported
    v = aggregate([0, 1], [0.0, 0.0], [2.0, 15.0], DEFAULT_STRATEGY, DIST)
    assert v.label == "fake" and [i.label for i in v.identities] == ["real", "fake"]
    v = aggregate([0], [0.0], [3.0], DEFAULT_STRATEGY, DIST)
    assert v.label == "real"


def test_min_support_option_is_validated():
    from acfd.scanner.cli import main
    from acfd.scanner.pipeline import ScanConfig, ScanError
    from click.testing import CliRunner

    assert ScanConfig(paths=("x",)).min_support is None
    assert ScanConfig(paths=("x",), min_support=3).min_support == 3
    with pytest.raises(ScanError, match="min_support"):
        ScanConfig(paths=("x",), min_support=0)
    r = CliRunner().invoke(main, ["scan", "x.mp4", "--model", __file__, "--min-support", "0"])
    assert r.exit_code == 4 and "--min-support" in r.output and "x>=1" in r.output, r.output
