"""Face detector and crop function on real photos shipped by scikit-image."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from acfd.scanner.faces import (
    CropBox,
    Face,
    FaceDetector,
    FaceDetectorError,
    crop,
    crop_box,
    largest_face,
    model_path,
)

from tests.media import astronaut, no_face_image

# Eileen Collins' face in skimage's 512x512 astronaut: forehead to chin, ear to ear (measured by hand
# from the photo: eyes at y ~105, mouth at y ~150, face spans x ~175-275).
FACE_CENTRE = (225.0, 130.0)


@pytest.fixture(scope="module")
def detector():
    with FaceDetector("full") as d:
        yield d


def test_shipped_models_exist():
    for m in ("short", "full"):
        assert model_path(m).stat().st_size > 50_000
    with pytest.raises(FaceDetectorError):
        model_path("huge")  # type: ignore[arg-type]


@pytest.mark.parametrize("model", ["short", "full"])
def test_astronaut_box_on_the_face(model):
    with FaceDetector(model) as d:
        faces = d.detect(astronaut())
    assert len(faces) == 1
    f = faces[0]
    assert f.score > 0.8
    cx, cy = (f.x0 + f.x1) / 2, (f.y0 + f.y1) / 2
    assert abs(cx - FACE_CENTRE[0]) < 20 and abs(cy - FACE_CENTRE[1]) < 25
    assert 80 < f.width < 130 and 80 < f.height < 130
    assert len(f.keypoints) == 6
    (rex, rey), (lex, ley), (nx, ny), (mx, my) = f.keypoints[:4]
    # Eyes above nose above mouth; image-right eye (subject's left) to the right.
    assert rey < ny < my and ley < ny
    assert lex > rex
    for x, y in f.keypoints[:4]:
        assert f.x0 <= x <= f.x1 and f.y0 <= y <= f.y1


def test_downscaled_detection_maps_back_to_full_resolution(detector):
    img = astronaut()
    big = cv2.resize(img, (1536, 1536), interpolation=cv2.INTER_CUBIC)  # 3x; detector runs at 640
    f_small = detector.detect(img)[0]
    f_big = detector.detect(big)[0]
    for a, b in [
        (f_small.x0, f_big.x0),
        (f_small.y0, f_big.y0),
        (f_small.x1, f_big.x1),
        (f_small.y1, f_big.y1),
    ]:
        assert abs(a * 3 - b) < 12
    for (ax, ay), (bx, by) in zip(f_small.keypoints, f_big.keypoints, strict=True):
        assert abs(ax * 3 - bx) < 12 and abs(ay * 3 - by) < 12


def test_non_square_frame_and_offset(detector):
    canvas = np.full((360, 900, 3), 60, np.uint8)
    canvas[0:360, 500:860] = cv2.resize(astronaut()[:400, 56:456], (360, 360), interpolation=cv2.INTER_AREA)
    f = detector.detect(canvas)[0]
    # Face centre in the 400x400 cut at (~169, ~130), scaled 0.9, offset x by 500.
    cx, cy = (f.x0 + f.x1) / 2, (f.y0 + f.y1) / 2
    assert abs(cx - (500 + 169 * 0.9)) < 20 and abs(cy - 130 * 0.9) < 25


def test_no_face_in_coffee(detector):
    assert detector.detect(no_face_image()) == []


def test_detect_rejects_non_rgb(detector):
    with pytest.raises(FaceDetectorError):
        detector.detect(np.zeros((64, 64), np.uint8))
    with pytest.raises(FaceDetectorError):
        detector.detect(np.zeros((64, 64, 3), np.float32))


def test_closed_detector_raises():
    d = FaceDetector("short")
    d.close()
    d.close()  # idempotent
    with pytest.raises(FaceDetectorError):
        d.detect(astronaut())


def close_up() -> np.ndarray:
    """The astronaut's face cut from brows to chin and upscaled to 256x256: it fills the frame.

    Full range finds no face here (measured: nothing above 0.5), short range finds it - the case of the
    224x224 talking-head clips where full range misses about a fifth of the frames.
    """
    return cv2.resize(np.ascontiguousarray(astronaut()[80:170, 180:270]), (256, 256), interpolation=cv2.INTER_CUBIC)


@pytest.fixture(scope="module")
def auto_detector():
    with FaceDetector("auto") as d:
        yield d


def test_auto_falls_back_to_short_range_on_a_close_up(detector, auto_detector):
    frame = close_up()
    assert detector.detect(frame) == []  # a real full-range miss, not a forced one
    with FaceDetector("short") as short:
        expected = short.detect(frame)
    faces = auto_detector.detect(frame)
    assert len(faces) == 1 and faces == expected
    f = faces[0]
    assert f.score >= 0.5
    # The face fills the frame: a box most of the frame wide, centred near the middle.
    assert f.width > 0.6 * 256
    assert abs((f.x0 + f.x1) / 2 - 128) < 40 and abs((f.y0 + f.y1) / 2 - 128) < 50


def test_auto_equals_full_where_full_finds_a_face(detector, auto_detector):
    canvas = np.full((360, 900, 3), 60, np.uint8)
    canvas[0:360, 500:860] = cv2.resize(astronaut()[:400, 56:456], (360, 360), interpolation=cv2.INTER_AREA)
    for frame in (astronaut(), canvas):
        full = detector.detect(frame)
        assert len(full) == 1
        assert auto_detector.detect(frame) == full  # same boxes, scores and keypoints, exactly


def test_auto_finds_nothing_without_a_face(auto_detector):
    assert auto_detector.detect(no_face_image()) == []
    assert auto_detector.detect(np.zeros((120, 160, 3), np.uint8)) == []


def test_unknown_detector_mode_is_a_clear_error():
    with pytest.raises(FaceDetectorError, match="auto"):
        FaceDetector("medium")  # type: ignore[arg-type]


def test_closed_auto_detector_raises():
    d = FaceDetector("auto")
    d.close()
    d.close()
    with pytest.raises(FaceDetectorError):
        d.detect(close_up())


def test_crop_box_square_centred():
    face = Face(100.0, 50.0, 200.0, 130.0, 0.9, ())
    b = crop_box(face, 1.3)
    assert b.side == 130
    assert b == CropBox(x0=85, y0=25, side=130)
    assert crop_box(face, 1.0).side == 100


def test_crop_deterministic_and_on_face(detector):
    img = astronaut()
    box = crop_box(detector.detect(img)[0])
    a = crop(img, box, 128)
    b = crop(img, crop_box(detector.detect(img)[0]), 128)
    assert a.shape == (128, 128, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    # The crop is the face: the detector finds one face filling most of the crop.
    f = detector.detect(cv2.resize(a, (256, 256)))[0]
    assert (f.x1 - f.x0) > 256 / 1.3 * 0.6
    assert abs((f.x0 + f.x1) / 2 - 128) < 30


def test_crop_inside_equals_slice():
    img = np.random.default_rng(0).integers(0, 256, (100, 120, 3), dtype=np.uint8)
    box = CropBox(10, 20, 40)
    assert np.array_equal(crop(img, box, 40), img[20:60, 10:50])


def test_crop_border_zero_padded_not_shifted():
    img = np.random.default_rng(1).integers(1, 256, (100, 120, 3), dtype=np.uint8)  # no zeros inside
    box = CropBox(-10, -5, 40)
    out = crop(img, box, 40)
    assert np.all(out[:5] == 0) and np.all(out[:, :10] == 0)
    # Not shifted: the in-frame part is exactly the image's top-left corner.
    assert np.array_equal(out[5:, 10:], img[0:35, 0:30])
    # Bottom-right corner beyond the frame.
    out2 = crop(img, CropBox(100, 80, 40), 40)
    assert np.array_equal(out2[:20, :20], img[80:100, 100:120])
    assert np.all(out2[20:] == 0) and np.all(out2[:, 20:] == 0)
    # Entirely outside: all zeros.
    assert not crop(img, CropBox(500, 500, 16), 8).any()


def test_crop_mask_same_box_as_rgb():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (90, 90, 3), dtype=np.uint8)
    mask = np.zeros((90, 90), np.uint8)
    mask[30:60, 40:70] = 255
    box = CropBox(20, 10, 60)
    m = crop(mask, box, 30)
    assert m.shape == (30, 30) and m.dtype == np.uint8
    # The mask rectangle [30:60, 40:70] in box coords is rows 20..50, cols 20..50; halved: 10..25.
    assert m[12:23, 12:23].min() == 255
    assert m[:8].max() == 0 and m[:, :8].max() == 0 and m[27:].max() == 0
    # Same box, same geometry for the RGB frame: pixel (row 35, col 45) lands at the same place.
    assert np.array_equal(crop(img, box, 60)[25, 25], img[35, 45])


def test_crop_rejects_bad_input():
    with pytest.raises(ValueError):
        crop(np.zeros((10, 10, 4), np.uint8), CropBox(0, 0, 5), 5)
    with pytest.raises(ValueError):
        crop(np.zeros((10, 10, 3), np.float32), CropBox(0, 0, 5), 5)


def test_largest_face():
    small = Face(0, 0, 10, 10, 0.99, ())
    big = Face(0, 0, 50, 40, 0.6, ())
    assert largest_face([small, big]) is big
    assert largest_face([]) is None


def test_training_and_scanning_default_to_the_same_detector():
    """prepare's crops and the scanner's crops must come from the same detector unless told otherwise."""
    from dataclasses import fields

    from acfd.scanner.cli import scan_cmd
    from acfd.scanner.pipeline import ScanConfig
    from acfd.scanner.stages import FramesConfig
    from acfd.train.cli import prepare as prepare_cmd
    from acfd.train.prepare import PrepareConfig

    def default(cls, name):  # noqa: ANN001, ANN202
        return next(f.default for f in fields(cls) if f.name == name)

    def cli_option(cmd, name):  # noqa: ANN001, ANN202
        return next(p for p in cmd.params if p.name == name)

    prep, scan = cli_option(prepare_cmd, "detector"), cli_option(scan_cmd, "detector_model")
    assert prep.default == scan.default == "auto"
    assert default(PrepareConfig, "detector") == default(ScanConfig, "detector_model") == "auto"
    assert default(FramesConfig, "detector_model") == "auto"
    assert set(prep.type.choices) == set(scan.type.choices) == {"full", "short", "auto"}


def test_prepare_config_accepts_auto_and_rejects_unknown(tmp_path):
    from acfd.train.prepare import PrepareConfig, PrepareError

    cfg = PrepareConfig(ffpp=tmp_path, out=tmp_path / "cache", detector="auto")
    assert cfg.cache_params()["detector"] == "auto"  # recorded in cache.json: a changed detector is refused
    with pytest.raises(PrepareError, match="auto"):
        PrepareConfig(ffpp=tmp_path, out=tmp_path / "cache", detector="medium")
