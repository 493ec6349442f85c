"""`acfd-train synth`: FF++ layout, lossless c0, compression levels, self-blended fakes and their masks."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from acfd.scanner.faces import Face
from acfd.train.cli import main
from acfd.train.ffpp import write_video
from acfd.train.synth import SynthConfig, SynthError, blend_mask, sample_blend, self_blend, synthesize
from click.testing import CliRunner

from tests import media
from tests.data_helpers import FRAMES, SIZE, VIDEOS, frames_of, synth_root
from tests.media import astronaut, moving_face_frames, no_face_image


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return synth_root(tmp_path_factory)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return 10 * np.log10(255.0**2 / max(mse, 1e-9))


def test_layout_and_splits(root):
    reals = root / "original_sequences" / "youtube"
    fakes = root / "manipulated_sequences" / "SelfBlended"
    for level in ("c0", "c23", "c40"):
        assert sorted(p.stem for p in (reals / level / "videos").iterdir()) == [
            f"{i:03d}" for i in range(VIDEOS)
        ]
        assert len(list((fakes / level / "videos").glob("*.mp4"))) == VIDEOS
    assert len(list((fakes / "masks" / "videos").glob("*.mp4"))) == VIDEOS
    pairs = {s: json.loads((root / "splits" / f"{s}.json").read_text()) for s in ("train", "val", "test")}
    assert {s: len(p) for s, p in pairs.items()} == {"train": 1, "val": 1, "test": 1}
    ids = sorted(i for p in pairs.values() for pair in p for i in pair)
    assert ids == [f"{i:03d}" for i in range(VIDEOS)]
    # Every pair [T, S] has its two fakes T_S and S_T.
    for p in pairs.values():
        t, s = p[0]
        assert (fakes / "c23" / "videos" / f"{t}_{s}.mp4").is_file()
        assert (fakes / "c23" / "videos" / f"{s}_{t}.mp4").is_file()


def test_frames_sizes_and_levels(root):
    base = root / "original_sequences" / "youtube"
    c0, c23, c40 = (frames_of(base / lv / "videos" / "002.mp4") for lv in ("c0", "c23", "c40"))
    assert len(c0) == len(c23) == len(c40) == FRAMES
    assert c0[0].shape == (SIZE, SIZE, 3)
    # Same frames, more loss at c40 than at c23 (c0 is the lossless reference).
    p23 = np.mean([_psnr(a, b) for a, b in zip(c0, c23, strict=True)])
    p40 = np.mean([_psnr(a, b) for a, b in zip(c0, c40, strict=True)])
    assert 20 < p40 < p23, (p23, p40)
    # Natural motion: consecutive frames differ, but only a little.
    d = np.abs(c0[0].astype(int) - c0[1]).mean()
    assert 0.5 < d < 40


def test_c0_is_lossless(tmp_path):
    frames = [np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8) for i in range(3)]
    p = write_video(tmp_path / "x.mp4", frames, "c0")
    assert all(np.array_equal(a, b) for a, b in zip(frames, frames_of(p), strict=True))
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically, no leftovers


def test_reals_differ_between_videos(root):
    base = root / "original_sequences" / "youtube" / "c0" / "videos"
    a, b = frames_of(base / "000.mp4")[0], frames_of(base / "001.mp4")[0]
    assert np.abs(a.astype(int) - b).mean() > 10


def test_fake_is_real_blended_inside_mask(root):
    split = json.loads((root / "splits" / "train.json").read_text())
    t, s = split[0]
    real = frames_of(root / "original_sequences/youtube/c0/videos" / f"{t}.mp4")
    fake = frames_of(root / "manipulated_sequences/SelfBlended/c0/videos" / f"{t}_{s}.mp4")
    mask = frames_of(root / "manipulated_sequences/SelfBlended/masks/videos" / f"{t}_{s}.mp4")
    assert len(fake) == len(mask) == len(real)
    for r, f, m in zip(real, fake, mask, strict=True):
        g = m[..., 0]
        inside, outside = g > 200, g == 0
        assert 0.03 < inside.mean() < 0.5  # a face-sized region
        diff = np.abs(f.astype(int) - r).mean(axis=2)
        assert diff[outside].mean() < 0.5  # untouched outside the blend region
        assert diff[inside].mean() > 4  # visibly altered inside it


def test_same_seed_same_data_other_seed_other_data(tmp_path, root):
    cfg = SynthConfig(out=tmp_path / "a", videos=2, frames=3, size=SIZE, seed=0)
    synthesize(cfg)
    again = frames_of(tmp_path / "a/original_sequences/youtube/c0/videos/000.mp4")
    first = frames_of(root / "original_sequences/youtube/c0/videos/000.mp4")[:3]  # seed 0, video 0
    assert all(np.array_equal(a, b) for a, b in zip(again, first, strict=True))
    synthesize(SynthConfig(out=tmp_path / "b", videos=2, frames=3, size=SIZE, seed=1))
    other = frames_of(tmp_path / "b/original_sequences/youtube/c0/videos/000.mp4")
    assert np.abs(other[0].astype(int) - first[0]).mean() > 5


def test_blend_mask_on_face():
    face = Face(40.0, 30.0, 90.0, 85.0, 0.9, ((55, 50), (75, 50), (65, 60), (65, 72), (42, 55), (88, 55)))
    p = sample_blend(np.random.default_rng(3))
    m = blend_mask(face, (128, 128), p)
    assert m.dtype == np.float32 and m.shape == (128, 128)
    assert m.max() == pytest.approx(1.0) and m.min() >= 0
    assert m[60, 65] > 0.9  # nose
    assert m[5, 5] == 0 and m[120, 120] == 0 and m[60, 5] == 0
    img = cv2.resize(astronaut(), (128, 128))
    fake, region = self_blend(img, face, p)
    assert np.array_equal(region, m)
    assert np.abs(fake.astype(int) - img)[region == 0].max() <= 1


def test_sources_photo_and_video(tmp_path):
    photo = tmp_path / "face.png"
    cv2.imwrite(str(photo), cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR))
    clip = media.write_video(tmp_path / "clip.mp4", moving_face_frames(6, (180, 320)), crf=18)
    s = synthesize(SynthConfig(out=tmp_path / "o", videos=2, frames=4, size=96, sources=(photo, clip)))
    assert (s.reals, s.fakes) == (2, 2)
    v1 = frames_of(tmp_path / "o/original_sequences/youtube/c0/videos/001.mp4")
    assert len(v1) == 4 and v1[0].shape == (96, 96, 3)
    meta = json.loads((tmp_path / "o/synth.json").read_text())
    assert meta["videos"]["000"]["source"].endswith("face.png")
    assert meta["videos"]["001"]["source"].endswith("clip.mp4")


def _faceless_sources(tmp_path):
    """A photo without a face (scikit-image's coffee) and a short flat-grey video."""
    photo = tmp_path / "coffee.png"
    cv2.imwrite(str(photo), cv2.cvtColor(no_face_image(), cv2.COLOR_RGB2BGR))
    clip = media.write_video(tmp_path / "grey.mp4", [np.full((96, 96, 3), 128, np.uint8)] * 3, crf=18)
    return photo, clip


def test_sources_without_face_are_skipped_and_reported(tmp_path):
    photo, clip = _faceless_sources(tmp_path)
    face = tmp_path / "face.png"
    cv2.imwrite(str(face), cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR))
    r = CliRunner().invoke(main, ["synth", str(tmp_path / "o"), "--videos", "2", "--frames", "2", "--size", "96",
                                  "--source", str(photo), "--source", str(clip), "--source", str(face)])
    assert r.exit_code == 0, r.output
    assert "2 real + 2 self-blended videos (8 frames) from 1 source in" in r.output
    assert (f"skipped 2 sources: no face found in {photo}; no face found in the first frames of {clip}\n"
            in r.output)
    meta = json.loads((tmp_path / "o/synth.json").read_text())
    assert [v["source"] for v in meta["videos"].values()] == [str(face), str(face)]
    assert meta["skipped"] == [
        {"source": str(photo), "reason": f"no face found in {photo}"},
        {"source": str(clip), "reason": f"no face found in the first frames of {clip}"},
    ]
    # A skipped source changes no other video: video 000 is the one made from the face photo alone.
    s = synthesize(SynthConfig(out=tmp_path / "alone", videos=2, frames=2, size=96, sources=(face,)))
    assert (s.sources, s.skipped, s.skipped_line()) == (1, [], None)
    for vid in ("000", "001"):
        a = frames_of(tmp_path / f"o/original_sequences/youtube/c0/videos/{vid}.mp4")
        b = frames_of(tmp_path / f"alone/original_sequences/youtube/c0/videos/{vid}.mp4")
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_too_few_usable_sources_is_one_line(tmp_path):
    photo, clip = _faceless_sources(tmp_path)
    with pytest.raises(SynthError) as e:
        synthesize(SynthConfig(out=tmp_path / "o", videos=2, frames=2, size=96, sources=(photo,)))
    assert str(e.value) == (f"too few usable sources: 0 of 1 left, the videos need at least one "
                            f"(skipped 1 source: no face found in {photo})")
    r = CliRunner().invoke(main, ["synth", str(tmp_path / "p"), "--videos", "2", "--frames", "2",
                                  "--size", "96", "--source", str(photo), "--source", str(clip)])
    assert r.exit_code == 1
    assert r.output == (f"Error: too few usable sources: 0 of 2 left, the videos need at least one (skipped 2 "
                        f"sources: no face found in {photo}; no face found in the first frames of {clip})\n")
    assert not list((tmp_path / "p").rglob("*.mp4"))  # nothing written for a video without a source


def test_skipped_line_lists_the_first_few():
    from acfd.train.synth import SynthSummary

    s = SynthSummary(out=Path("x"), skipped=[(f"{i}.jpg", f"no face found in {i}.jpg") for i in range(5)])
    assert s.skipped_line() == ("skipped 5 sources: no face found in 0.jpg; no face found in 1.jpg; "
                                "no face found in 2.jpg; and 2 more (all in synth.json)")


def test_missed_frames_take_the_nearest_face_earlier_on_a_tie():
    from acfd.train.synth import fill_from_nearest

    a, b = (Face(float(x), 0.0, x + 10.0, 10.0, 0.9, ()) for x in (1, 2))
    assert fill_from_nearest([None, a, None, None, b, None]) == [a, a, a, b, b, b]
    assert fill_from_nearest([a, None, b]) == [a, a, b]  # tie: the earlier frame's face
    assert fill_from_nearest([None, None]) is None


def test_an_interrupted_synth_is_refused_by_prepare(tmp_path, monkeypatch):
    # Ctrl-C mid-run leaves a half-written root; without the unfinished marker it would pass for FF++.
    import acfd.train.synth as synth_mod
    from acfd.train.prepare import PrepareConfig, PrepareError, prepare

    write_video_, calls = synth_mod.write_video, []

    def interrupted(*args, **kwargs):  # the third video never comes: the root holds a real/fake pair
        calls.append(1)
        if len(calls) > 6:
            raise KeyboardInterrupt
        return write_video_(*args, **kwargs)

    monkeypatch.setattr(synth_mod, "write_video", interrupted)
    root = tmp_path / "s"
    with pytest.raises(KeyboardInterrupt):
        synthesize(SynthConfig(out=root, videos=2, frames=2, size=64))
    assert json.loads((root / "acfd-synth.json").read_text())["complete"] is False
    with pytest.raises(PrepareError, match="unfinished `acfd-train synth` output"):
        prepare(PrepareConfig(ffpp=root, out=tmp_path / "cache", frames=2), progress=False)
    assert not (tmp_path / "cache").exists()
    monkeypatch.undo()
    synthesize(SynthConfig(out=root, videos=2, frames=2, size=64))  # run again: the full marker replaces it
    assert "complete" not in json.loads((root / "acfd-synth.json").read_text())


def test_cli_synth_and_option_errors(tmp_path):
    r = CliRunner().invoke(
        main, ["synth", str(tmp_path / "o"), "--videos", "2", "--frames", "2", "--size", "96"]
    )
    assert r.exit_code == 0, r.output
    assert "2 real + 2 self-blended videos" in r.output
    assert len(frames_of(tmp_path / "o/manipulated_sequences/SelfBlended/c40/videos/000_001.mp4")) == 2
    bad = CliRunner().invoke(main, ["synth", str(tmp_path / "p"), "--videos", "3"])
    assert bad.exit_code == 1
    assert "even" in bad.output and "Traceback" not in bad.output
    (tmp_path / "file").write_text("")
    below_file = CliRunner().invoke(main, ["synth", str(tmp_path / "file" / "o"), "--videos", "2"])
    assert below_file.exit_code == 1
    assert "cannot create" in below_file.output and "Traceback" not in below_file.output


def test_persons_and_corpora_of_the_used_sources(tmp_path):
    """--exclude's people file counts the persons behind the videos, a corpus folder's manifest.csv names
    the repositories of the files used; both reach the marker, synth.json and what `prepare` copies."""
    from acfd.schemas.hashing import content_hash
    from acfd.train.prepare import dataset_info

    from tests.identity_helpers import astronaut_head, cameraman_head, canvas, hopper_head

    corpus = tmp_path / "faces"
    (corpus / "images").mkdir(parents=True)
    (corpus / "extra").mkdir()
    files = {
        "images/astro_a.png": canvas([(astronaut_head(), 40, 30)]),
        "images/astro_b.png": canvas([(astronaut_head()[:, ::-1], 300, 50)]),  # the same person, mirrored
        "images/camera.png": canvas([(cameraman_head(), 300, 40)]),  # held out
        "extra/hopper.png": canvas([(hopper_head(), 200, 20)]),  # neither in the people file nor the manifest
    }
    for name, rgb in files.items():
        assert cv2.imwrite(str(corpus / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    (corpus / "manifest.csv").write_text(
        "file,kind,repo,path\n"
        "images/astro_a.png,image,nasa/astronaut,a.png\n"
        "images/astro_b.png,image,scikit-image/scikit-image,b.png\n"
        "images/camera.png,image,mit/cameraman,c.png\n"
        "images/gone.png,image,some/other,g.png\n"  # a row for a file not there: never used, never named
    )

    def entry(name: str) -> dict[str, str]:
        return {"path": str(corpus / name), "hash": content_hash(corpus / name)}

    people = tmp_path / "people.json"
    people.write_text(json.dumps({"format": "acfd-people/1", "persons": [
        {"id": "p000", "files": [entry("images/astro_a.png"), entry("images/astro_b.png")], "held_out": False},
        {"id": "p001", "files": [entry("images/camera.png")], "held_out": True},
    ], "no_face": [], "holdout": {"fraction": 0.5, "seed": 0}}))  # fmt: skip

    s = synthesize(SynthConfig(out=tmp_path / "o", videos=4, frames=2, size=96, sources=(corpus,), exclude=people))
    assert s.skipped == [] and s.sources == 3
    assert [Path(x).name for x in s.excluded] == ["camera.png"]
    # astro_a and astro_b are one person; hopper, whom the people file does not know, counts as one more
    assert (s.persons, s.persons_alone) == (2, 1)
    assert s.corpora == ["nasa/astronaut", "scikit-image/scikit-image"] and s.without_corpus == ["hopper.png"]
    expect = {"persons": 2, "persons_counted_alone": 1, "corpora": ["nasa/astronaut", "scikit-image/scikit-image"],
              "without_corpus": ["hopper.png"]}  # fmt: skip
    marker = json.loads((tmp_path / "o" / "acfd-synth.json").read_text())
    meta = json.loads((tmp_path / "o" / "synth.json").read_text())
    for doc in (marker, meta):
        assert {k: doc[k] for k in expect} == expect
    assert marker["sources"] == ["hopper.png", "astro_a.png", "astro_b.png"]  # file names, as before
    per_video = {Path(v["source"]).name: (v["person"], v["corpus"]) for v in meta["videos"].values()}
    assert per_video == {"hopper.png": (None, None), "astro_a.png": ("p000", "nasa/astronaut"),
                         "astro_b.png": ("p000", "scikit-image/scikit-image")}  # fmt: skip
    info = dataset_info(tmp_path / "o")
    assert (info["persons"], info["corpora"], info["without_corpus"]) == (2, expect["corpora"], ["hopper.png"])

    # Without a people file the persons are unknown (0), without a manifest the corpora are; an older
    # reader's view of the dataset (no persons, no corpora) is what `prepare` keeps then.
    astro = tmp_path / "astro.png"
    cv2.imwrite(str(astro), cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR))
    s2 = synthesize(SynthConfig(out=tmp_path / "p", videos=2, frames=2, size=96, sources=(astro,)))
    assert (s2.persons, s2.corpora, s2.without_corpus) == (0, [], [])
    marker2 = json.loads((tmp_path / "p" / "acfd-synth.json").read_text())
    assert (marker2["persons"], marker2["corpora"]) == (0, [])
    assert dataset_info(tmp_path / "p") == {"kind": "synth", "forgeries": "synthetic", "sources": ["astro.png"]}
