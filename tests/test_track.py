"""Identities (acfd.scanner.track): the link gate, the merge of tracklets into people, the embedding
schedule, and what reaches the store.

The ``face`` method (the default) is tested on real faces of three people from photos that installed
packages ship (tests/identity_helpers.py), with its schedule (``face``) and with every face embedded
(``face-every``); the schedule's rules also on given descriptors; the former ``appearance`` method
(kept for bench/identities.py) on one photo and a recoloured copy.
"""

from __future__ import annotations

import pickle
import sqlite3

import cv2
import numpy as np
import pytest
from acfd.scanner import identity
from acfd.scanner.faces import Face, FaceDetector, crop, crop_box
from acfd.scanner.track import (
    APPEARANCE,
    APPEARANCE_MERGE_DISTANCE,
    FACE,
    SCHEDULE,
    EmbedSchedule,
    FrameLooks,
    Glance,
    IdentityMethod,
    IoUTracker,
    appearance,
    merge_tracklets,
    tracker,
)

from tests.identity_helpers import astronaut_head, cameraman_head, canvas, hopper_head
from tests.media import astronaut, write_video

CROP = 64


# --- the face method on real faces -------------------------------------------------------------------


@pytest.fixture(scope="module")
def detector():
    with FaceDetector("auto") as d:
        yield d


@pytest.fixture
def resnet_calls(monkeypatch):
    """Counts the face-recognition ResNet's runs (FaceEmbedder.embed_chip on a chip)."""
    calls = [0]
    real = identity.FaceEmbedder.embed_chip

    def counting(self, chip):  # noqa: ANN001, ANN202
        calls[0] += chip is not None
        return real(self, chip)

    monkeypatch.setattr(identity.FaceEmbedder, "embed_chip", counting)
    return calls


def _track(detector: FaceDetector, frames: list[np.ndarray], mode: str | None = "face", fps: float = 1.0):
    """Detect and track ``frames`` (``fps`` apart) as the worker does; the final tracklet ids of each
    frame's faces, left to right. ``mode`` None: boxes only."""
    tr = tracker(mode or "face")
    for i, frame in enumerate(frames):
        faces = sorted(detector.detect(frame), key=lambda f: f.x0)
        if mode is None:
            tr.update(faces)
            continue
        crops = np.stack([crop(frame, crop_box(f), CROP) for f in faces]) if faces else None
        tr.observe(faces, FrameLooks(tr.method, frame, faces, crops), i / fps)
    tr.finish()
    return tr, [tr.tracklets(i) for i in range(len(frames))]


LEFT_X, RIGHT_X, TOP = 40, 360, 30
MODES = ["face", "face-every"]


@pytest.mark.parametrize("mode", MODES)
def test_two_people_who_swap_places_keep_their_identities(detector, mode):
    """Faces that swap places between two samples: boxes alone switch identities; the embedding does not."""
    a, b, c = astronaut_head(), cameraman_head(), hopper_head()
    side_by_side = canvas([(a, LEFT_X, TOP), (b, RIGHT_X, TOP)])
    swapped = canvas([(b, LEFT_X, TOP), (a, RIGHT_X, TOP)])
    empty = canvas([])
    third = canvas([(c, LEFT_X, TOP)])  # someone else, where the first two were
    frames = [side_by_side, side_by_side, swapped, swapped, empty, empty, empty, empty, third, third]
    _, boxes_only = _track(detector, frames, None)
    assert boxes_only[:4] == [[0, 1], [0, 1], [0, 1], [0, 1]]  # the switch: B continues A's track
    tr, tracklets = _track(detector, frames, mode)
    assert [len(t) for t in tracklets] == [2, 2, 2, 2, 0, 0, 0, 0, 1, 1]
    assert tracklets[2] == [2, 3] and tracklets[8] == [4]  # the gate refused the switch and the third face
    m = tr.identity_map()
    people = [[m[t] for t in ids] for ids in tracklets]
    # A (left, then right) is 0 and B (right, then left) is 1 all along; the third person is 2
    assert people[:4] == [[0, 1], [0, 1], [1, 0], [1, 0]]
    assert people[8:] == [[2], [2]] and sorted(set(m.values())) == [0, 1, 2]


@pytest.mark.parametrize("mode", MODES)
def test_a_cut_to_someone_else_on_the_same_spot_is_a_new_identity(detector, mode, resnet_calls):
    a, c = astronaut_head(), hopper_head()
    frames = [canvas([(a, LEFT_X, TOP)])] * 3 + [canvas([(c, LEFT_X + 10, TOP)])] * 3
    _, boxes_only = _track(detector, frames, None)
    assert boxes_only == [[0]] * 6
    resnet_calls[0] = 0
    tr, tracklets = _track(detector, frames, mode, fps=5.0)
    assert tracklets == [[0], [0], [0], [1], [1], [1]]
    assert tr.identity_map() == {0: 0, 1: 1}
    # face-every: all 6 faces. face: not the two that plainly continue the first face; at the cut, the
    # new face (its glance changed) and the last reused face before it (a cut, or a drift that the chain
    # of faces would bridge?); after it, the new person's faces while the first track is still open on
    # that spot (two tracks compete for them)
    assert resnet_calls[0] == tr.n_embedded == (6 if mode == "face-every" else 5)


def test_the_schedule_skips_the_embeddings_of_a_face_that_stays(detector, resnet_calls):
    """An unambiguous static face: embedded once per ``every_seconds`` of stream time (and per
    ``every_frames`` samples at most) and its last face once the track ends (the check of the faces
    reused since); the other samples reuse its descriptor. Identities as with every face embedded."""
    a = astronaut_head()
    frames = [canvas([(a, LEFT_X + (i % 2), TOP)]) for i in range(8)]  # 1 frame/s, a pixel of jitter
    tr, tracklets = _track(detector, frames, "face")
    assert tracklets == [[0]] * 8 and tr.identity_map() == {0: 0}
    assert SCHEDULE.every_seconds == 3.0
    assert resnet_calls[0] == tr.n_embedded == 4  # at 0, 3 and 6 s, and the last face (7 s)
    assert tr.n_reused == 5 and tr.n_moved == 0
    # at 8 frame/s every_frames binds: 16 samples, then the 17th is embedded (and the last)
    resnet_calls[0] = 0
    tr, tracklets = _track(detector, frames * 3, "face", fps=8.0)
    assert tracklets == [[0]] * 24 and resnet_calls[0] == 3
    # a second person coming in far away is a new track: embedded; the first face still is not
    two = canvas([(a, LEFT_X, TOP), (hopper_head(), RIGHT_X, TOP)])
    resnet_calls[0] = 0
    tr, tracklets = _track(detector, frames[:2] + [two, two], "face", fps=5.0)
    assert tracklets == [[0], [0], [0, 1], [0, 1]]
    assert resnet_calls[0] == 4  # each one's first face and last face
    resnet_calls[0] = 0
    tr, _ = _track(detector, frames, "face-every")
    assert resnet_calls[0] == tr.n_embedded == 8


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


class _Given:
    """Looks of one frame from given descriptors (None: too dark to identify) and glances (default: the
    same for every face: the glance sees no change); ``asked`` counts the descriptors the tracker used."""

    SAME = Glance(np.array([1.0, 0.0]), np.array([1.0, 0.0]))

    def __init__(self, looks: list, asked: list[int], glances: list | None = None):
        self.looks, self.asked = looks, asked
        self._glances = glances or [None if x is None else self.SAME for x in looks]

    def glances(self) -> list:
        return self._glances

    def embed(self, indices: list[int]) -> list:
        self.asked[0] += len(indices)
        return [self.looks[i] for i in indices]

    def later(self, indices: list[int]) -> list:
        return [lambda i=i: self.embed([i])[0] for i in indices]


def _turn(i: int, step: float = 0.2) -> np.ndarray:
    """A descriptor that turns by ``step`` radians per frame: ~``step`` apart per frame, more over several."""
    v = np.zeros(128, np.float32)
    v[0], v[1] = np.cos(i * step), np.sin(i * step)
    return v


def test_schedule_embeds_new_contested_changed_and_returning_faces():
    asked = [0]
    tr = IoUTracker(schedule=EmbedSchedule(every_frames=4, every_seconds=100.0))
    at, near_it = _face(*LEFT), _face(LEFT[0] + 12, LEFT[1])

    def step(faces, looks, glances=None):  # noqa: ANN001, ANN202
        before = asked[0]
        ids = tr.observe(faces, _Given(looks, asked, glances), None)
        return ids, asked[0] - before

    assert step([at], [_vec(0)]) == ([0], 1)  # a new track: embedded
    assert step([at], [_vec(0)]) == ([0], 0)  # plainly the same face: reused
    assert step([at], [_vec(0)]) == ([0], 0)
    assert step([at], [_vec(0)]) == ([0], 0)
    assert step([at], [_vec(0)]) == ([0], 1)  # 4 frames since the last embedded face
    # two faces on the spot of one track: both embedded; the one that is someone else is a new tracklet
    assert step([at, near_it], [_vec(0), _vec(1)]) == ([0, 1], 2)
    # while that other track is open (max_gap: 3 frames), it competes for the face on this spot
    assert [step([at], [_vec(0)]) for _ in range(3)] == [([0], 1)] * 3
    assert step([at], [_vec(0)]) == ([0], 0)  # closed: plainly the same face again
    # the glance changed (appearance beyond max_change): embedded
    changed = Glance(np.array([0.0, 1.0]), np.array([1.0, 0.0]))
    assert step([at], [_vec(0)], [changed]) == ([0], 1)
    assert step([at], [_vec(0)], [changed]) == ([0], 0)  # the reference is now the changed look
    assert step([], []) == ([], 0)
    assert step([at], [_vec(0)]) == ([0], 1)  # after a gap: embedded
    # a face too dark to identify: never embedded, never reused, a tracklet of its own
    assert step([at], [None]) == ([2], 0)
    assert step([at], [None]) == ([2], 0)
    assert tr.n_embedded == asked[0] == 9 and tr.n_reused == 5
    assert tr.identity_map() == {0: 0, 1: 1, 2: 2}
    with pytest.raises(ValueError, match="schedule is for the face method"):
        IoUTracker(method=APPEARANCE, schedule=SCHEDULE)
    with pytest.raises(ValueError, match="every_frames"):
        EmbedSchedule(every_frames=0)
    with pytest.raises(ValueError, match="min_iou"):
        EmbedSchedule(min_iou=0.0)


def test_schedule_follows_a_drifting_face_through_its_reused_faces():
    """A face that changes slowly (0.2 per frame, 0.78 over 4): the periodic embedding fails the link gate
    against the last embedded face, so the chain is checked through the reused faces in between, as
    linking every face would have: one tracklet, as with every face embedded."""
    looks = [_turn(i) for i in range(9)]
    assert float(np.linalg.norm(looks[4] - looks[0])) > FACE.link_distance
    every = IoUTracker()
    assert [every.update([_face(*LEFT)], [x]) for x in looks] == [[0]] * 9
    asked = [0]
    tr = IoUTracker(schedule=EmbedSchedule(every_frames=4, every_seconds=100.0))
    assert [tr.observe([_face(*LEFT)], _Given([x], asked)) for x in looks] == [[0]] * 9
    # embedded: frames 0, 4 and 8; through the chain: frame 3 (next to 4), then 2 (0 -> 2 -> 3 holds),
    # and for frame 8 the same two steps back (7, 6)
    assert asked[0] == tr.n_embedded == 7
    assert tr.identity_map() == {0: 0}


def test_schedule_splits_a_cut_its_glance_misses_where_it_happened():
    """Another person on the same spot whom the glance does not tell apart: the next periodic embedding
    fails the gate and the chain, and walking back from it finds the reused faces that are the new
    person: they move to its tracklet, so the final ids split exactly at the cut. The ids observe()
    returned for them were provisional: frames from ``settled`` on may still change."""
    a, b = _vec(0), _vec(1)
    asked = [0]
    tr = IoUTracker(schedule=EmbedSchedule(every_frames=4, every_seconds=100.0))
    provisional, settled = [], []
    for x in [a] * 5 + [b] * 5:
        provisional.append(tr.observe([_face(*LEFT)], _Given([x], asked)))
        settled.append(tr.settled)
    assert provisional == [[0]] * 8 + [[1]] * 2
    # frames 1-3 and 5-7 reused a's descriptor until the embedded frames 4 and 8 checked them
    assert settled == [1, 1, 1, 1, 5, 5, 5, 5, 9, 9]
    tr.finish()
    assert [tr.tracklets(i) for i in range(10)] == [[0]] * 5 + [[1]] * 5 and tr.n_moved == 3
    assert tr.settled == 10
    assert tr.identity_map() == {0: 0, 1: 1}
    # embedded: 0, 4, 8 and the last face (9, at the end); checked: 7, 6, 5 (walking back from 8)
    assert asked[0] == tr.n_embedded == 7


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
    from acfd.scanner import identity, stages
    from acfd.scanner.decode import Sampling

    made: list[np.ndarray] = []
    real = identity.FaceEmbedder.embed_chip

    def recording(self, chip):  # noqa: ANN001, ANN202
        out = real(self, chip)
        if out is not None:
            made.append(out)
        return out

    monkeypatch.setattr(identity.FaceEmbedder, "embed_chip", recording)
    frames = [canvas([(astronaut_head(), 20 + 4 * i, 20), (cameraman_head(), 360, 30)]) for i in range(3)]
    video = write_video(tmp_path / "two.mp4", frames, fps=2)

    cfg = stages.FramesConfig(sampling=Sampling(fps=2), crop_size=CROP, crop_margin=1.3)
    with FaceDetector(cfg.detector_model) as det:  # type: ignore[arg-type]
        events = list(stages.frames_with_faces(cfg, det, str(video)))  # type: ignore[arg-type]
    frames_sent = [e for e in events if isinstance(e, stages.FrameFaces)]
    assert [list(f.identities) for f in frames_sent] == [[0, 1]] * 3
    assert isinstance(events[-1], stages.Decoded) and events[-1].identity_map == {0: 0, 1: 1}
    assert len(made) == 4  # each face's first and (checking the one reused between) last sample
    sent = pickle.dumps(events)  # what a worker sends up its pipe
    for d in made:  # neither the float32 bytes nor any 128-float array travel
        assert d.tobytes() not in sent
    assert not any(isinstance(x, np.ndarray) and x.shape[-1:] == (128,) for f in frames_sent for x in vars(f).values())


def test_worker_sends_frames_once_their_ids_are_final(tmp_path, monkeypatch, resnet_calls):
    """A cut that the glance cannot see (here: a glance that never changes) is found when the reused
    faces are checked, at the end of the track; the worker holds those frames until then and sends
    them with their final ids."""
    from acfd.scanner import stages, track
    from acfd.scanner.decode import Sampling

    still = Glance(np.ones(1), np.ones(1))
    monkeypatch.setattr(track.FrameLooks, "glances", lambda self: [still for _ in self.faces])
    monkeypatch.setitem(track.MODES, "face", (FACE, EmbedSchedule(min_iou=0.3)))  # the two boxes: IoU 0.37
    frames = [canvas([(astronaut_head(), LEFT_X, TOP)])] * 3 + [canvas([(hopper_head(), LEFT_X + 10, TOP)])] * 3
    video = write_video(tmp_path / "cut.mp4", frames, fps=5)

    cfg = stages.FramesConfig(sampling=Sampling(fps=5), crop_size=CROP, crop_margin=1.3)
    with FaceDetector(cfg.detector_model) as det:  # type: ignore[arg-type]
        events = list(stages.frames_with_faces(cfg, det, str(video)))  # type: ignore[arg-type]
    sent = [e for e in events if isinstance(e, stages.FrameFaces)]
    assert [f.index for f in sent] == list(range(6))
    assert [list(f.identities) for f in sent] == [[0]] * 3 + [[1]] * 3
    assert isinstance(events[-1], stages.Decoded) and events[-1].identity_map == {0: 0, 1: 1}
    # the first face; at the end the last one, then back from it (4, 3, and 2: not the same person)
    assert resnet_calls[0] == 5


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
                                  "--every-frame", "--workers", "0", "--quiet"])
    assert r.exit_code == 0, r.output
    with sqlite3.connect(dbp) as con:
        det = con.execute("SELECT DISTINCT identity FROM detections").fetchall()
        ver = con.execute("SELECT identity, n_faces FROM verdicts WHERE identity IS NOT NULL").fetchall()
    assert det == [(0,)]
    assert ver == [(0, 5)]
