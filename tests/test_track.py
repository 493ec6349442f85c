"""Appearance re-association of tracklets (acfd.scanner.track) and its effect on the stored identities."""

from __future__ import annotations

import sqlite3

import cv2
import numpy as np
import pytest
from acfd.scanner.faces import Face
from acfd.scanner.track import MERGE_SIMILARITY, IoUTracker, appearance, merge_tracklets

from tests import scan_helpers as H
from tests.media import astronaut, write_video

CROP = 64


def _person_a() -> np.ndarray:
    """Eileen Collins' face (the astronaut photo), as a square crop."""
    return np.ascontiguousarray(astronaut()[20:260, 110:350])


def _person_b() -> np.ndarray:
    """A second, clearly different 'person': the same photo recoloured (RGB -> BRG) and upside down."""
    return np.ascontiguousarray(_person_a()[::-1, :, [2, 0, 1]])


def _seen(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One sampled view: shifted by a few pixels, brightness changed, resized to the model's crop."""
    dx, dy = rng.integers(-8, 9, size=2)
    view = np.roll(img, (int(dy), int(dx)), axis=(0, 1)).astype(np.float32) * rng.uniform(0.85, 1.15)
    return cv2.resize(np.clip(view, 0, 255).astype(np.uint8), (CROP, CROP), interpolation=cv2.INTER_AREA)


def _face(cx: float, cy: float, side: float = 60.0) -> Face:
    return Face(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2, 0.9, ())


LEFT, RIGHT = (100.0, 150.0), (500.0, 150.0)


def test_descriptor_tells_people_apart_and_ignores_small_changes():
    rng = np.random.default_rng(0)
    a, b = _person_a(), _person_b()
    da = [appearance(_seen(a, rng)) for _ in range(4)]
    db = [appearance(_seen(b, rng)) for _ in range(4)]
    assert all(d.shape == (396,) and d.dtype == np.float32 and abs(np.linalg.norm(d) - 1) < 1e-5 for d in da)
    same = min(float(x @ y) for i, x in enumerate(da) for y in da[i + 1:])
    other = max(float(x @ y) for x in da for y in db)
    assert same >= MERGE_SIMILARITY > other
    # the descriptor does not depend on the crop size (299 in real scans, 64 here)
    big = cv2.resize(a, (299, 299), interpolation=cv2.INTER_AREA)
    small = cv2.resize(a, (64, 64), interpolation=cv2.INTER_AREA)
    assert float(appearance(big) @ appearance(small)) > 0.95


def _run(frames: list[list[tuple[tuple[float, float], np.ndarray]]], rng: np.random.Generator):
    tr = IoUTracker()
    out = []
    for faces in frames:
        fs = [_face(*pos) for pos, _ in faces]
        crops = np.stack([_seen(img, rng) for _, img in faces]) if faces else None
        out.append(tr.update(fs, crops))
    return tr, out


def test_two_people_who_swap_places_and_leave_stay_two_identities():
    rng = np.random.default_rng(1)
    a, b = _person_a(), _person_b()
    frames = (
        [[(LEFT, a), (RIGHT, b)]] * 3  # side by side
        + [[(RIGHT, a), (LEFT, b)]] * 2  # swapped between two samples (1 s apart)
        + [[]] * 4  # both gone, longer than the tracker's max_gap
        + [[(LEFT, b)], [(LEFT, b)], [(RIGHT, a), (LEFT, b)]]  # back, one at a time
    )
    # boxes alone (no crops): the swap is an identity switch (A's face continues B's track)
    boxes_only = IoUTracker()
    switched = [boxes_only.update([_face(*pos) for pos, _ in faces]) for faces in frames]
    assert switched[0] == [0, 1] and switched[3] == [1, 0] and boxes_only.n_identities > 2
    tr, tracklets = _run(frames, rng)
    assert tr.n_identities > 2  # the tracklets: A, B, A', B' (after the swap), B'', A''
    m = tr.identity_map()
    people = [[m[t] for t in ids] for ids in tracklets]
    assert sorted(set(m.values())) == [0, 1]
    assert people[0] == [0, 1]  # numbered by first appearance
    assert all(p == [0, 1] for p in people[:3])
    assert all(p == [0, 1] for p in people[3:5])  # A on the right is still A
    assert people[9] == [1] and people[10] == [1] and people[11] == [0, 1]


def test_people_on_the_same_frame_never_merge():
    rng = np.random.default_rng(2)
    a = _person_a()
    # two identical-looking faces (twins) side by side, then one of them alone far away
    frames = [[(LEFT, a), (RIGHT, a)]] * 3 + [[]] * 4 + [[((300.0, 300.0), a)]]
    tr, tracklets = _run(frames, rng)
    assert tr.n_identities == 3
    m = tr.identity_map()
    assert m[tracklets[0][0]] != m[tracklets[0][1]]
    assert len(set(m.values())) == 2 and m[tracklets[-1][0]] in (m[tracklets[0][0]], m[tracklets[0][1]])


def test_merge_tracklets_rules():
    e = np.eye(4, dtype=np.float32)
    # 0 and 2 alike, 1 different; 3 has no descriptor (no crops given): it is never merged
    frames = {0: {0, 1}, 1: {2}, 2: {5}, 3: {6}}
    desc = {0: [e[0], e[0]], 1: [e[1]], 2: [e[0]]}
    assert merge_tracklets(frames, desc) == {0: 0, 1: 1, 2: 0, 3: 2}
    # average linkage: 2 is like one face of 0 only (mean 0.5 < threshold): no merge
    desc = {0: [e[0], e[1]], 1: [e[2]], 2: [e[0]]}
    assert merge_tracklets(frames, desc) == {0: 0, 1: 1, 2: 2, 3: 3}
    assert merge_tracklets(frames, desc, min_similarity=0.5) == {0: 0, 1: 1, 2: 0, 3: 2}
    assert merge_tracklets({}, {}) == {}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return H.models(tmp_path_factory)


def test_scan_stores_one_identity_for_a_face_that_jumps(models, tmp_path):
    """End to end: the worker's merge map reaches the database, identities renumbered 0..k-1."""
    from acfd.scanner.cli import main
    from click.testing import CliRunner

    face = cv2.resize(astronaut()[:400, 56:456], (100, 100), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(8):  # every frame sampled at 5 fps: left, 3 empty frames (track closed), right
        canvas = np.full((240, 320, 3), 90, np.uint8)
        if i < 2:
            canvas[20:120, 10:110] = face
        elif i >= 5:
            canvas[120:220, 210:310] = face
        frames.append(canvas)
    video = write_video(tmp_path / "jump.mp4", frames, fps=5)
    dbp = tmp_path / "s.sqlite"
    r = CliRunner().invoke(main, ["scan", str(video), "--model", str(models["real"]), "--db", str(dbp),
                                  "--every-frame", "--workers", "1", "--quiet"])
    assert r.exit_code == 0, r.output
    with sqlite3.connect(dbp) as con:
        det = con.execute("SELECT DISTINCT identity FROM detections").fetchall()
        ver = con.execute("SELECT identity, n_faces FROM verdicts WHERE identity IS NOT NULL").fetchall()
    assert det == [(0,)]
    assert ver == [(0, 5)]
