"""Identities (acfd.scanner.track): the link gate, the merge of tracklets into people, and what reaches the store.

The ``face`` method (the default) is tested on real faces of three people from photos that installed
packages ship (tests/identity_helpers.py); the former ``appearance`` method (kept for
bench/identities.py) on one photo and a recoloured copy.
"""

from __future__ import annotations

import pickle
import sqlite3

import cv2
import numpy as np
import pytest
from acfd.scanner.faces import Face, FaceDetector
from acfd.scanner.track import (
    APPEARANCE,
    APPEARANCE_MERGE_DISTANCE,
    FACE,
    IdentityMethod,
    IoUTracker,
    appearance,
    merge_tracklets,
)

from tests import scan_helpers as H
from tests.identity_helpers import astronaut_head, cameraman_head, canvas, hopper_head
from tests.media import astronaut, write_video

CROP = 64


# --- the face method on real faces -------------------------------------------------------------------


@pytest.fixture(scope="module")
def detector():
    with FaceDetector("auto") as d:
        yield d


def _track(detector: FaceDetector, frames: list[np.ndarray], method: IdentityMethod | None = FACE):
    """Detect and track ``frames``; ids of each frame's faces, left to right. ``method`` None: boxes only."""
    tr = IoUTracker(method=method or FACE)
    out = []
    for frame in frames:
        faces = sorted(detector.detect(frame), key=lambda f: f.x0)
        looks = None if method is None else method.describe(frame, faces, None)
        out.append(tr.update(faces, looks))
    return tr, out


LEFT_X, RIGHT_X, TOP = 40, 360, 30


def test_two_people_who_swap_places_keep_their_identities(detector):
    """Faces that swap places between two samples: boxes alone switch identities; the embedding does not."""
    a, b, c = astronaut_head(), cameraman_head(), hopper_head()
    side_by_side = canvas([(a, LEFT_X, TOP), (b, RIGHT_X, TOP)])
    swapped = canvas([(b, LEFT_X, TOP), (a, RIGHT_X, TOP)])
    empty = canvas([])
    third = canvas([(c, LEFT_X, TOP)])  # someone else, where the first two were
    frames = [side_by_side, side_by_side, swapped, swapped, empty, empty, empty, empty, third, third]
    _, boxes_only = _track(detector, frames, None)
    assert boxes_only[:4] == [[0, 1], [0, 1], [0, 1], [0, 1]]  # the switch: B continues A's track
    tr, tracklets = _track(detector, frames)
    assert [len(t) for t in tracklets] == [2, 2, 2, 2, 0, 0, 0, 0, 1, 1]
    assert tracklets[2] == [2, 3] and tracklets[8] == [4]  # the gate refused the switch and the third face
    m = tr.identity_map()
    people = [[m[t] for t in ids] for ids in tracklets]
    # A (left, then right) is 0 and B (right, then left) is 1 all along; the third person is 2
    assert people[:4] == [[0, 1], [0, 1], [1, 0], [1, 0]]
    assert people[8:] == [[2], [2]] and sorted(set(m.values())) == [0, 1, 2]


def test_a_cut_to_someone_else_on_the_same_spot_is_a_new_identity(detector):
    a, c = astronaut_head(), hopper_head()
    frames = [canvas([(a, LEFT_X, TOP)])] * 2 + [canvas([(c, LEFT_X + 10, TOP)])] * 2
    _, boxes_only = _track(detector, frames, None)
    assert boxes_only == [[0]] * 4
    tr, tracklets = _track(detector, frames)
    assert tracklets == [[0], [0], [1], [1]]
    assert tr.identity_map() == {0: 0, 1: 1}


# --- the face method's rules, on given descriptors ---------------------------------------------------


def _face(cx: float, cy: float, side: float = 60.0) -> Face:
    return Face(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2, 0.9, ())


LEFT, RIGHT = (100.0, 150.0), (500.0, 150.0)


def _vec(i: int, scale: float = 1.0) -> np.ndarray:
    """A 128-d descriptor: person ``i`` (people are sqrt(2) * scale apart)."""
    v = np.zeros(128, np.float32)
    v[i] = scale
    return v


def test_faces_without_a_descriptor_only_continue_each_other():
    """A face too dark to identify never continues an identified track, nor the reverse; such tracklets
    link by their boxes and are never merged."""
    tr = IoUTracker()
    at = _face(*LEFT)
    assert tr.update([at], [_vec(0)]) == [0]
    assert tr.update([at], [None]) == [1]  # the same spot, but who is it? a new tracklet
    assert tr.update([at], [None]) == [1]  # dark faces continue each other by boxes
    assert tr.update([at], [None]) == [1]
    assert tr.update([at], [_vec(0, 1.01)]) == [2]  # tracklet 0 has ended (max_gap); 1 is not for it
    assert tr.update([_face(*RIGHT)], [None]) == [3]
    # 0 and 2 are one person; 1 and 3 cannot be told apart from anyone: never merged
    assert tr.identity_map() == {0: 0, 1: 1, 2: 0, 3: 2}
    # descriptors=None: boxes only, as the tracker always did
    boxes = IoUTracker()
    assert [boxes.update([at]) for _ in range(3)] == [[0], [0], [0]]
    assert boxes.identity_map() == {0: 0}
    with pytest.raises(ValueError, match="2 faces but 1 descriptors"):
        boxes.update([at, _face(*RIGHT)], [None])


def test_people_on_the_same_frame_never_merge():
    # identical twins (the same descriptor) side by side, then gone, then one of them alone elsewhere
    tr = IoUTracker()
    for _ in range(3):
        assert tr.update([_face(*LEFT), _face(*RIGHT)], [_vec(0), _vec(0)]) == [0, 1]
    for _ in range(4):
        tr.update([], [])
    assert tr.update([_face(300.0, 300.0)], [_vec(0)]) == [2]
    m = tr.identity_map()
    assert m[0] != m[1] and len(set(m.values())) == 2 and m[2] in (m[0], m[1])


def test_merge_tracklets_rules():
    e = np.eye(4, dtype=np.float32)
    frames = {0: {0, 1}, 1: {2}, 2: {5}, 3: {6}}
    # 0 and 2 alike, 1 different; 3 has no descriptor: never merged
    desc = {0: [e[0], e[0]], 1: [e[1]], 2: [e[0]]}
    for method in (FACE, APPEARANCE):
        assert merge_tracklets(frames, desc, method) == {0: 0, 1: 1, 2: 0, 3: 2}
    # average linkage: 2 is like one of 0's two faces only: mean distance 0.707 (face), 0.5 (appearance)
    desc = {0: [e[0], e[1]], 1: [e[2]], 2: [e[0]]}
    assert merge_tracklets(frames, desc, FACE) == {0: 0, 1: 1, 2: 2, 3: 3}
    assert merge_tracklets(frames, desc, APPEARANCE) == {0: 0, 1: 1, 2: 2, 3: 3}
    loose = IdentityMethod("face", FACE.link_distance, 0.71)
    assert merge_tracklets(frames, desc, loose) == {0: 0, 1: 1, 2: 0, 3: 2}
    assert merge_tracklets(frames, desc, IdentityMethod("appearance", 0.3, 0.5)) == {0: 0, 1: 1, 2: 0, 3: 2}
    # a shared frame keeps two groups apart however alike they are
    assert merge_tracklets({0: {0}, 1: {0}}, {0: [e[0]], 1: [e[0]]}, FACE) == {0: 0, 1: 1}
    assert merge_tracklets({}, {}, FACE) == {}
    with pytest.raises(ValueError, match="unknown identity method"):
        IdentityMethod("voice", 0.5, 0.5)  # type: ignore[arg-type]


def test_worker_keeps_face_descriptors_to_itself(tmp_path, monkeypatch):
    """Embeddings are biometric templates: computed in the worker, never in what it sends (and so never
    in the store, the report or the logs)."""
    from acfd.scanner import identity, worker
    from acfd.scanner.decode import Sampling

    made: list[np.ndarray] = []
    real = identity.FaceEmbedder.embed

    def recording(self, image, faces):  # noqa: ANN001, ANN202
        out = real(self, image, faces)
        made.extend(x for x in out if x is not None)
        return out

    monkeypatch.setattr(identity.FaceEmbedder, "embed", recording)
    frames = [canvas([(astronaut_head(), 20 + 4 * i, 20), (cameraman_head(), 360, 30)]) for i in range(3)]
    video = write_video(tmp_path / "two.mp4", frames, fps=2)

    class Sink:
        def __init__(self) -> None:
            self.msgs: list = []

        def send(self, m: object) -> None:
            self.msgs.append(m)

    cfg = worker.WorkerConfig(sampling=Sampling(fps=2), crop_size=CROP, crop_margin=1.3)
    sink = Sink()
    with FaceDetector(cfg.detector_model) as det:  # type: ignore[arg-type]
        worker._process_video(cfg, det, 1, str(video), sink)  # type: ignore[arg-type]
    frames_sent = [m[2] for m in sink.msgs if m[0] == worker.MSG_FRAME]
    assert [list(f.identities) for f in frames_sent] == [[0, 1]] * 3
    assert sink.msgs[-1][0] == worker.MSG_DONE and sink.msgs[-1][2][4] == {0: 0, 1: 1}
    assert len(made) == 6
    sent = pickle.dumps(sink.msgs)
    for d in made:  # neither the float32 bytes nor any 128-float array travel
        assert d.tobytes() not in sent
    assert not any(isinstance(x, np.ndarray) and x.shape[-1:] == (128,) for f in frames_sent for x in vars(f).values())


# --- the former appearance method (bench/identities.py compares it) ----------------------------------


def _person_a() -> np.ndarray:
    """Eileen Collins' face (the astronaut photo), as a square crop."""
    return np.ascontiguousarray(astronaut()[20:260, 110:350])


def _person_b() -> np.ndarray:
    """A second, clearly different 'person' for the colour/HOG descriptor: the same photo recoloured
    (RGB -> BRG) and upside down (not a face to a face-recognition model: appearance tests only)."""
    return np.ascontiguousarray(_person_a()[::-1, :, [2, 0, 1]])


def _seen(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One sampled view: shifted by a few pixels, brightness changed, resized to the model's crop."""
    dx, dy = rng.integers(-8, 9, size=2)
    view = np.roll(img, (int(dy), int(dx)), axis=(0, 1)).astype(np.float32) * rng.uniform(0.85, 1.15)
    return cv2.resize(np.clip(view, 0, 255).astype(np.uint8), (CROP, CROP), interpolation=cv2.INTER_AREA)


def test_appearance_descriptor_tells_people_apart_and_ignores_small_changes():
    rng = np.random.default_rng(0)
    a, b = _person_a(), _person_b()
    da = [appearance(_seen(a, rng)) for _ in range(4)]
    db = [appearance(_seen(b, rng)) for _ in range(4)]
    assert all(d.shape == (396,) and d.dtype == np.float32 and abs(np.linalg.norm(d) - 1) < 1e-5 for d in da)
    same = max(float(APPEARANCE.distances(x[None], y[None])[0, 0]) for i, x in enumerate(da) for y in da[i + 1:])
    other = min(float(APPEARANCE.distances(x[None], y[None])[0, 0]) for x in da for y in db)
    assert same <= APPEARANCE_MERGE_DISTANCE < other
    # the descriptor does not depend on the crop size (299 in real scans, 64 here)
    big = cv2.resize(a, (299, 299), interpolation=cv2.INTER_AREA)
    small = cv2.resize(a, (64, 64), interpolation=cv2.INTER_AREA)
    assert float(appearance(big) @ appearance(small)) > 0.95
    # describe(): from the crops (the frame is not used), one per face
    crops = np.stack([_seen(a, rng), _seen(b, rng)])
    looks = APPEARANCE.describe(np.zeros((8, 8, 3), np.uint8), [_face(*LEFT), _face(*RIGHT)], crops)
    assert len(looks) == 2 and np.allclose(looks[0], appearance(crops[0]))
    assert APPEARANCE.describe(np.zeros((8, 8, 3), np.uint8), [], None) == []


def test_appearance_method_keeps_people_who_swap_places_apart():
    rng = np.random.default_rng(1)
    a, b = _person_a(), _person_b()
    frames = (
        [[(LEFT, a), (RIGHT, b)]] * 3  # side by side
        + [[(RIGHT, a), (LEFT, b)]] * 2  # swapped between two samples (1 s apart)
        + [[]] * 4  # both gone, longer than the tracker's max_gap
        + [[(LEFT, b)], [(LEFT, b)], [(RIGHT, a), (LEFT, b)]]  # back, one at a time
    )
    tr = IoUTracker(method=APPEARANCE)
    tracklets = []
    for faces in frames:
        fs = [_face(*pos) for pos, _ in faces]
        tracklets.append(tr.update(fs, [appearance(_seen(img, rng)) for _, img in faces]))
    assert tr.n_identities > 2  # the tracklets: A, B, A', B' (after the swap), B'', A''
    m = tr.identity_map()
    people = [[m[t] for t in ids] for ids in tracklets]
    assert sorted(set(m.values())) == [0, 1]
    assert all(p == [0, 1] for p in people[:3])  # numbered by first appearance
    assert all(p == [0, 1] for p in people[3:5])  # A on the right is still A
    assert people[9] == [1] and people[10] == [1] and people[11] == [0, 1]


# --- end to end ----------------------------------------------------------------------------------------


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
