"""`acfd-train people`: real faces grouped into persons, held-out persons, `synth --exclude`."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from acfd.train.cli import main
from acfd.train.people import (
    PeopleConfig,
    PeopleError,
    average_linkage,
    group_people,
    linked_persons,
    load_people,
    pick_held_out,
)
from acfd.train.synth import SynthConfig, synthesize
from click.testing import CliRunner

from tests.identity_helpers import astronaut_head, cameraman_head, canvas, hopper_head
from tests.media import no_face_image


def _write(path: Path, rgb: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """Two differently framed photos of the astronaut, one of the cameraman and of Grace Hopper, one without
    a face; in a folder (walked by `people`)."""
    from skimage import data

    d = tmp_path_factory.mktemp("people") / "faces"
    d.mkdir()
    wide = cv2.resize(data.astronaut()[0:400, 40:440], (330, 330), interpolation=cv2.INTER_AREA)
    return {
        "astro_a": _write(d / "astro_a.png", canvas([(astronaut_head(), 40, 30)])),  # head 240 px, grey frame
        "astro_b": _write(d / "astro_b.jpg", wide),  # the whole upper body, face ~70 px, JPEG
        "camera": _write(d / "camera.png", canvas([(cameraman_head(), 300, 40)])),
        "hopper": _write(d / "hopper.png", canvas([(hopper_head(), 200, 20)])),
        "empty": _write(d / "empty.png", no_face_image()),
    }


@pytest.fixture(scope="module")
def grouped(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("people_out")
    res = CliRunner().invoke(main, ["people", str(photos["astro_a"].parent), "--out", str(out / "people.json"),
                                    "--sheets", str(out / "sheets"), "--quiet"])  # fmt: skip
    assert res.exit_code == 0, res.output
    return out, res.output


def _numbers_in_lists(x: object) -> int:
    """How many numbers sit inside JSON lists anywhere in ``x`` (a descriptor would be 128 of them)."""
    if isinstance(x, dict):
        return sum(_numbers_in_lists(v) for v in x.values())
    if isinstance(x, list):
        return sum(isinstance(v, int | float) and not isinstance(v, bool) or _numbers_in_lists(v) for v in x)
    return 0


def test_three_people_the_two_astronauts_together(grouped, photos):
    out, output = grouped
    doc = json.loads((out / "people.json").read_text())
    groups = sorted(sorted(Path(f["path"]).name for f in p["files"]) for p in doc["persons"])
    assert groups == [["astro_a.png", "astro_b.jpg"], ["camera.png"], ["hopper.png"]]
    assert doc["counts"] == {"sources": 5, "with_face": 4, "no_face": 1, "persons": 3, "multi_file_persons": 1,
                             "held_out_persons": 0, "held_out_files": 0}  # fmt: skip
    astro = next(p for p in doc["persons"] if len(p["files"]) == 2)
    # The two photos of one person are well inside dlib's 0.6 (0.09 measured); other people well outside (>= 0.70).
    assert astro["distances"]["max"] < 0.3, astro
    assert all(p["nearest"]["distance"] > 0.65 for p in doc["persons"]), doc["persons"]
    assert doc["no_face"] == [{"path": str(photos["empty"]), "hash": doc["no_face"][0]["hash"],
                               "reason": "no face found in the photo"}]  # fmt: skip
    assert doc["no_face"][0]["hash"].startswith("ht1:")
    assert "4 with a face, in 3 persons (1 with more than one file); 1 without a usable face" in output


def test_no_descriptor_is_written(grouped):
    out, _ = grouped
    doc = json.loads((out / "people.json").read_text())
    # Only scalars (distances) are numbers: no list of numbers anywhere, so no template can hide in one.
    assert _numbers_in_lists(doc) == 0
    text = (out / "people.json").read_text()
    assert "descriptor\": [" not in text and "embedding" not in text
    assert len(text) < 6000, len(text)  # 4 faces x 128 floats would not fit


def test_sheets_show_each_person(grouped):
    out, _ = grouped
    names = sorted(p.name for p in (out / "sheets").iterdir())
    doc = json.loads((out / "people.json").read_text())
    multi = next(p["id"] for p in doc["persons"] if len(p["files"]) == 2)
    assert f"multi_{multi}.png" in names
    assert len([n for n in names if n.startswith(("p", "multi_p"))]) == 3
    sheet = cv2.imread(str(out / "sheets" / f"multi_{multi}.png"))
    assert sheet.shape[1] == 2 * 120  # two thumbnails side by side
    assert sheet[30:130, 10:110].std() > 20  # a face, not an empty cell


def test_same_input_same_file(grouped, photos, tmp_path):
    out, _ = grouped
    again = group_people(PeopleConfig(sources=(photos["astro_a"].parent,), out=tmp_path / "again.json"))
    assert again.persons == 3
    assert (tmp_path / "again.json").read_bytes() == (out / "people.json").read_bytes()


def test_holdout_marks_whole_persons_and_synth_excludes_them(photos, tmp_path):
    people = tmp_path / "people.json"
    s = group_people(PeopleConfig(sources=(photos["astro_a"].parent,), out=people, holdout=0.5, seed=3))
    # round(0.5 * 3 persons) = 2 held out, 1 kept; the persons are far apart, so no kept file is near
    assert (s.held_out_persons, s.persons) == (2, 3)
    assert s.closest_kept is not None and s.closest_kept > 0.65
    p = load_people(people)
    held = {Path(f.path).name for q in p.held_out() for f in q.files}
    kept = {Path(f.path).name for q in p.persons if not q.held_out for f in q.files}
    assert len(kept) in (1, 2) and held.isdisjoint(kept) and len(held | kept) == 4
    assert ("astro_a.png" in held) == ("astro_b.jpg" in held)  # one person: both files on one side

    sources = tuple(photos[k] for k in ("astro_a", "astro_b", "camera", "hopper"))
    summary = synthesize(SynthConfig(out=tmp_path / "synth", videos=2, frames=2, size=64, sources=sources,
                                     exclude=people))  # fmt: skip
    assert sorted(Path(x).name for x in summary.excluded) == sorted(held)
    meta = json.loads((tmp_path / "synth" / "synth.json").read_text())
    used = {Path(v["source"]).name for v in meta["videos"].values()}
    assert used and used <= kept, (used, kept)
    assert sorted(Path(x).name for x in meta["excluded"]) == sorted(held)
    marker = json.loads((tmp_path / "synth" / "acfd-synth.json").read_text())
    assert marker["excluded_held_out"] == len(held)


def test_synth_exclude_refuses_when_nothing_is_left(photos, tmp_path):
    people = tmp_path / "people.json"
    group_people(PeopleConfig(sources=(photos["hopper"], photos["camera"]), out=people, holdout=0.5))
    held = [Path(f.path) for q in load_people(people).held_out() for f in q.files]
    assert len(held) == 1
    res = CliRunner().invoke(main, ["synth", str(tmp_path / "s"), "--videos", "2", "--frames", "2", "--size", "64",
                                    "--source", str(held[0]), "--exclude", str(people)])  # fmt: skip
    assert res.exit_code == 1, res.output
    (line,) = res.output.strip().splitlines()
    assert line.startswith("Error: ") and "every source belongs to a held-out person" in line
    assert not (tmp_path / "s").exists()  # refused before anything was written


def test_synth_exclude_refuses_a_broken_people_file_even_without_sources(tmp_path):
    bad = tmp_path / "people.json"
    bad.write_text("not json")
    res = CliRunner().invoke(main, ["synth", str(tmp_path / "s"), "--videos", "2", "--frames", "2", "--size", "64",
                                    "--exclude", str(bad)])  # fmt: skip
    assert res.exit_code == 1
    assert "is not a people file from `acfd-train people`" in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_average_linkage_does_not_chain():
    # Points at 0, 0.4 and 0.8 on a line: single linkage at 0.5 would chain all three.
    x = np.array([0.0, 0.4, 0.8])
    clusters, between = average_linkage(np.abs(x[:, None] - x[None, :]), 0.5)
    assert clusters == [[0, 1], [2]]
    assert between[0, 1] == pytest.approx(0.6)  # mean of 0.8 and 0.4
    clusters, _ = average_linkage(np.abs(x[:, None] - x[None, :]), 0.61)
    assert clusters == [[0, 1, 2]]


def test_holdout_takes_linked_persons_together():
    # Persons 0 and 1 have one file pair 0.3 apart (average linkage kept them apart); 2 and 3 are far.
    d = np.full((4, 4), 1.0)
    np.fill_diagonal(d, 0.0)
    d[0, 1] = d[1, 0] = 0.3
    clusters = [[0], [1], [2], [3]]
    comps = linked_persons(d, clusters, 0.6)
    assert comps == [[0, 1], [2], [3]]
    seen = set()
    for seed in range(40):
        held = pick_held_out(comps, 4, 0.5, seed)
        assert len(held) == 2 and ({0, 1} <= held or held.isdisjoint({0, 1})), held
        seen.add(frozenset(held))
    assert seen == {frozenset({0, 1}), frozenset({2, 3})}
    with pytest.raises(PeopleError, match="no group of linked persons fits"):
        pick_held_out([[0, 1, 2]], 3, 0.3, 0)


def test_bad_options():
    with pytest.raises(PeopleError, match="--holdout must be in"):
        PeopleConfig(sources=(Path("."),), out=Path("x.json"), holdout=1.0)
    with pytest.raises(PeopleError, match="source not found"):
        PeopleConfig(sources=(Path("/nonexistent/faces"),), out=Path("x.json"))
    with pytest.raises(PeopleError, match="not a people file"):
        load_people(Path(__file__))
