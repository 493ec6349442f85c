"""`acfd-train swaps`: cross-identity landmark face swaps between held-out persons, in the FF++ layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from acfd.scanner.faces import FaceDetector, largest_face
from acfd.train.cli import main
from acfd.train.ffpp import iter_frames, list_videos
from acfd.train.people import PeopleConfig, group_people, load_people
from acfd.train.prepare import dataset_info
from acfd.train.swaps import (
    SWAP_METHOD,
    Landmarker,
    SwapConfig,
    SwapError,
    SwapSummary,
    keypoint_error,
    pair_up,
    swap_face,
    triangulate,
)
from click.testing import CliRunner

from tests.identity_helpers import cameraman_head, canvas

FRAMES, SIZE = 4, 160


def _write(path: Path, rgb: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def _frames(path: Path) -> list[np.ndarray]:
    return [f for _, f in iter_frames(path)]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Astronaut (two photos), cameraman, Grace Hopper; seed 0 holds out the astronaut and Hopper (the
    cameraman, kept for training, must not appear); then a swap set asking for 2 pairs."""
    from matplotlib import cbook
    from skimage import data

    base = tmp_path_factory.mktemp("swaps")
    src = base / "faces"
    src.mkdir()
    _write(src / "a_astro1.png", data.astronaut())
    _write(src / "a_astro2.jpg", cv2.resize(data.astronaut()[0:400, 40:440], (330, 330), interpolation=cv2.INTER_AREA))
    _write(src / "b_camera.png", canvas([(cameraman_head(), 300, 40)]))
    shutil.copy(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), src / "c_hopper.jpg")
    people = base / "people.json"
    s = group_people(PeopleConfig(sources=(src,), out=people, holdout=0.6, seed=0))
    assert (s.persons, s.held_out_persons) == (3, 2)
    out = base / "swapset"
    res = CliRunner().invoke(main, ["swaps", str(out), "--source", str(src), "--people", str(people), "--pairs", "2",
                                    "--frames", str(FRAMES), "--size", str(SIZE)])  # fmt: skip
    assert res.exit_code == 0, res.output
    return out, load_people(people), res.output


def test_only_held_out_persons_and_never_one_person_twice(made):
    out, people, output = made
    held = {p.id: {Path(f.path).name for f in p.files} for p in people.held_out()}
    assert sorted(n for v in held.values() for n in v) == ["a_astro1.png", "a_astro2.jpg", "c_hopper.jpg"]
    meta = json.loads((out / "swaps.json").read_text())
    # Three held-out files of two persons make one pair: the second astronaut photo has no partner left,
    # as the other astronaut photo is the same person.
    assert len(meta["pairs"]) == 1
    videos = meta["pairs"][0]["videos"]
    persons = [v["person"] for v in videos.values()]
    assert len(set(persons)) == 2 and set(persons) == set(held)
    assert {Path(v["source"]).name for v in videos.values()} <= held[persons[0]] | held[persons[1]]
    assert meta["left_out"] == 1  # the cameraman: kept for training
    assert meta["unpaired"] == 1
    assert "1 pairs of held-out persons: 2 real + 2 swapped videos (16 frames), 2 persons" in output
    assert "only 1 of 2 pairs" in output and "left out 1 sources of persons not held out" in output
    marker = json.loads((out / "acfd-synth.json").read_text())
    assert (marker["kind"], marker["forgeries"], marker["method"]) == ("swaps", "synthetic", SWAP_METHOD)
    assert marker["persons"] == sorted(held) and marker["held_out_only"] is True
    assert "b_camera.png" not in marker["sources"]


def test_layout_is_ffpp_and_all_test_split(made):
    out, _, _ = made
    vids = list_videos(out, hq="c23", lq="c40")
    assert sorted(v.video for v in vids) == ["FaceSwapLandmarks/000_001", "FaceSwapLandmarks/001_000",
                                             "youtube/000", "youtube/001"]  # fmt: skip
    assert {v.split for v in vids} == {"test"}
    for v in vids:
        assert v.hq.is_file() and v.lq.is_file()
        assert v.label == int(v.method == SWAP_METHOD)
        assert v.mask is None or v.mask.is_file()
    splits = {s: json.loads((out / "splits" / f"{s}.json").read_text()) for s in ("train", "val", "test")}
    assert splits == {"train": [], "val": [], "test": [["000", "001"]]}
    info = dataset_info(out)  # what `prepare` copies into the crop cache (and a model card reads)
    assert (info["kind"], info["forgeries"]) == ("swaps", "synthetic")
    assert len(info["sources"]) == 2 and "c_hopper.jpg" in info["sources"]


@pytest.mark.parametrize("name", ["000_001", "001_000"])
def test_face_replaced_inside_the_mask_only(made, name):
    out, _, _ = made
    target = name.split("_")[0]
    fk = out / "manipulated_sequences" / SWAP_METHOD
    masks = [m[..., 0] > 127 for m in _frames(fk / "masks" / "videos" / f"{name}.mp4")]
    assert len(masks) == FRAMES
    for m in masks:
        assert 0.04 < m.mean() < 0.3, m.mean()  # the face, ~1/3 of the frame wide: jaw to brows
    for level, inside_min, outside_max in (("c0", 12.0, 0.0), ("c40", 12.0, 8.0)):
        reals = _frames(out / "original_sequences" / "youtube" / level / "videos" / f"{target}.mp4")
        fakes = _frames(fk / level / "videos" / f"{name}.mp4")
        assert len(reals) == len(fakes) == FRAMES
        for r, f, m in zip(reals, fakes, masks, strict=True):
            diff = np.abs(r.astype(np.int16) - f).mean(axis=2)
            inside, outside = diff[m].mean(), diff[~m].mean()
            # measured: inside 21-25 (another person's face), outside 0 at c0 (lossless), ~5 at c40
            assert inside > inside_min, (level, inside)
            assert outside <= outside_max, (level, outside)
            if level == "c0":
                assert diff[~m].max() == 0  # outside the mask the fake IS the target


def test_pair_up_never_pairs_a_person_with_themself():
    rng = np.random.default_rng(0)
    for _ in range(300):
        persons = [str(x) for x in rng.integers(0, rng.integers(1, 5), rng.integers(0, 12))]
        bad = {int(k) for k in rng.integers(0, 12, rng.integers(0, 3))}
        asked: list[int] = []

        def usable(k: int, asked: list[int] = asked, bad: set[int] = bad) -> bool:
            asked.append(k)
            return k not in bad

        pairs = list(pair_up(persons, usable))
        used = [k for p in pairs for k in p]
        assert len(used) == len(set(used))  # a candidate is used once
        assert all(persons[a] != persons[b] for a, b in pairs)
        assert not set(used) & bad
        # greedy and complete: what is left over (usable, never paired) is at most one person
        left = {persons[k] for k in range(len(persons)) if k not in used and k not in bad}
        assert len(left) <= 1, (persons, bad, pairs)
    assert list(pair_up(["a", "a", "a", "b"], lambda k: True)) == [(0, 3)]


def test_swap_face_keeps_the_target_outside_and_the_donor_inside():
    rng = np.random.default_rng(1)
    h = w = 96
    ang = np.linspace(0, 2 * np.pi, 17, endpoint=False)
    ring = np.stack([48 + 30 * np.cos(ang), 48 + 34 * np.sin(ang)], 1)
    marks = np.concatenate([ring, 48 + rng.uniform(-18, 18, (51, 2))]).astype(np.float32)  # 68 points
    yy, xx = np.mgrid[0:h, 0:w]
    # A grey ramp (its Laplacian is 0 everywhere) and a grey texture: whatever texture the fake has
    # inside the region came from the donor (Poisson blending keeps the donor's Laplacian there).
    target = np.repeat((40 + xx + yy)[..., None], 3, 2).astype(np.uint8)
    donor = np.repeat((128 + 60 * np.sin(xx / 2.5) * np.cos(yy / 4.0))[..., None], 3, 2).astype(np.uint8)
    fake, region = swap_face(target, marks, donor, marks, triangulate(marks))
    m = region.astype(bool)
    assert 0.28 < m.mean() < 0.4  # the ring's hull (~π·30·34 px of 96², 0.35), eroded by one pixel
    assert np.array_equal(fake[~m], target[~m])
    inner = cv2.erode(region, np.ones((5, 5), np.uint8)).astype(bool)

    def lap(im: np.ndarray) -> np.ndarray:
        return cv2.Laplacian(im.astype(np.float64).mean(2), cv2.CV_64F)[inner]

    assert np.abs(lap(target)).max() == 0
    assert np.abs(lap(fake)).mean() > 3.0  # measured 4.3 (the donor's: 5.4)
    assert np.corrcoef(lap(fake), lap(donor))[0, 1] > 0.7  # measured 0.83 (L*a*b* colour transfer bends it)


def test_landmarks_agree_with_the_detector_or_fail():
    from skimage import data

    img = np.ascontiguousarray(data.astronaut())
    with FaceDetector("full") as det:
        face = largest_face(det.detect(img))
    marks = Landmarker().landmarks(img, face)
    assert marks is not None and marks.shape == (68, 2)
    assert keypoint_error(marks, face) < 0.1
    # the same landmarks half a face to the side fail the check
    assert keypoint_error(marks + np.float32([face.width / 2, 0]), face) > 0.4


def test_options_refused():
    with pytest.raises(SwapError, match="give --source"):
        SwapConfig(out=Path("x"))
    with pytest.raises(SwapError, match="--pairs must be in 1..500"):
        SwapConfig(out=Path("x"), sources=(Path("."),), pairs=0)
    with pytest.raises(SwapError, match="even number >= 64"):
        SwapConfig(out=Path("x"), sources=(Path("."),), size=63)


def test_summary_points_at_swaps_json_and_keeps_the_reasons_as_they_are():
    skipped = [(f"s{i}", f"cannot read image /in/synth.json.{i}.png") for i in range(5)]
    lines = SwapSummary(Path("/out"), pairs=2, skipped=skipped).lines(wanted=2)
    assert lines[1] == ("skipped 5 sources: cannot read image /in/synth.json.0.png; cannot read image "
                        "/in/synth.json.1.png; cannot read image /in/synth.json.2.png; and 2 more (all in swaps.json)")
