"""`acfd-train prepare`: FF++ reader, paired crops, masks, bad input accounting, resume."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from acfd.train.cli import main
from acfd.train.ffpp import (
    FFppError,
    deterministic_splits,
    list_videos,
    load_splits,
    read_split_file,
    split_counts,
    write_video,
)
from acfd.train.prepare import PrepareConfig, PrepareError, prepare, sample_indices
from click.testing import CliRunner

from tests.data_helpers import FRAMES, VIDEOS, copy_root, frames_of, synth_root
from tests.media import no_face_image

SIZE = 64


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return synth_root(tmp_path_factory)


@pytest.fixture(scope="module")
def cache(root, tmp_path_factory):
    """Prepared through the CLI, as a user would."""
    out = tmp_path_factory.mktemp("cache") / "c"
    args = [
        "prepare",
        "--ffpp",
        str(root),
        "--out",
        str(out),
        "--frames",
        "6",
        "--size",
        str(SIZE),
        "--quiet",
    ]
    args += ["--detector", "short"]  # the full-range model scores faces in 128-px frames lower
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    return out, r.output


def _index(cache):
    with (cache / "index.csv").open() as fh:
        return list(csv.DictReader(fh))


def _arrays(cache, video):
    return {k: np.load(cache / "crops" / f"{video}.{k}.npy") for k in ("hq", "lq", "mask")}


# -- FF++ reader -------------------------------------------------------------------------------------


def test_split_counts_and_sampling():
    assert split_counts(500) == (360, 70, 70)  # FF++: 720/140/140 videos
    assert split_counts(2) == (2, 0, 0)
    assert sample_indices(10, 4) == [0, 3, 6, 9]
    assert sample_indices(3, 5) == [0, 1, 2]
    assert sample_indices(0, 5) == []


def test_list_videos_official_splits(root):
    videos = list_videos(root)
    assert len(videos) == 2 * VIDEOS
    official = load_splits(root / "splits")
    for v in videos:
        assert v.split == official[v.name]
        assert v.hq.parent.parent.name == "c23" and v.lq.parent.parent.name == "c40"
        if v.method == "real":
            assert v.label == 0 and v.mask is None and v.video.startswith("youtube/")
        else:
            assert (
                v.label == 1 and v.mask.parent.parent.name == "masks" and v.video.startswith("SelfBlended/")
            )
    with pytest.raises(FFppError, match="Deepfakes"):
        list_videos(root, methods=["Deepfakes"])
    assert all(v.method == "real" for v in list_videos(root, methods=[]))


def test_deterministic_splits_keep_pairs_together():
    names = [f"{i:03d}" for i in range(20)] + [f"{2 * k:03d}_{2 * k + 1:03d}" for k in range(10)]
    names += [f"{2 * k + 1:03d}_{2 * k:03d}" for k in range(10)]
    s = deterministic_splits(names)
    assert s == deterministic_splits(list(reversed(names)))  # order-independent
    for k in range(10):
        a, b = f"{2 * k:03d}", f"{2 * k + 1:03d}"
        assert s[a] == s[b] == s[f"{a}_{b}"] == s[f"{b}_{a}"]
    counts = {x: sum(1 for n in names if s[n] == x and "_" not in n) // 2 for x in ("train", "val", "test")}
    assert (
        counts
        == dict(zip(("train", "val", "test"), split_counts(10), strict=True))
        == {"train": 8, "val": 1, "test": 1}
    )


def test_split_file_errors(tmp_path):
    (tmp_path / "bad.json").write_text('{"a": 1}')
    with pytest.raises(FFppError, match="pairs"):
        read_split_file(tmp_path / "bad.json")
    for s, pairs in {"train": [["000", "001"]], "val": [["001", "002"]], "test": []}.items():
        (tmp_path / f"{s}.json").write_text(json.dumps(pairs))
    with pytest.raises(FFppError, match="both"):
        load_splits(tmp_path)


def test_no_split_files_gives_deterministic_split(root, tmp_path):
    r = copy_root(root, tmp_path / "r")
    shutil.rmtree(r / "splits")
    videos = list_videos(r)
    by_name = {v.name: v.split for v in videos}
    for v in videos:
        if v.method != "real":
            t, s = v.name.split("_")
            assert by_name[t] == by_name[s] == v.split
    assert {v.split for v in videos} == {"train", "val", "test"}


# -- prepare ---------------------------------------------------------------------------------------


def test_cache_holds_paired_crops_with_masks(cache):
    out, output = cache
    rows = _index(out)
    assert len(rows) == 2 * VIDEOS * 6
    assert all(r["status"] == "ok" for r in rows), {r["status"] for r in rows}
    assert "crops train: 12 real, 12 fake" in output and "crops test: 12 real, 12 fake" in output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos"] == {"ok": 2 * VIDEOS} and summary["frames"] == {"ok": 2 * VIDEOS * 6}
    assert summary["masks"] == {"ok": VIDEOS * 6}
    for video in {r["video"] for r in rows}:
        a = _arrays(out, video)
        assert a["hq"].shape == (6, SIZE, SIZE, 3) and a["lq"].shape == (6, SIZE, SIZE, 3)
        assert a["mask"].shape == (6, SIZE, SIZE) and set(np.unique(a["mask"])) <= {0, 1}
        if video.startswith("youtube/"):
            assert a["mask"].sum() == 0  # reals: empty masks
        else:
            for m in a["mask"]:  # fakes: a face-sized region in every frame, centred in the crop
                assert 0.1 < m.mean() < 0.8
                assert m[SIZE // 2, SIZE // 2] == 1
                assert m[0, 0] == 0
        # HQ (c23) and LQ (c40) crops of the same frame: same content, different compression.
        d = np.abs(a["hq"].astype(float) - a["lq"]).mean(axis=(1, 2, 3))
        assert np.all(d > 0.3) and np.all(d < 15), d
        for h, low in zip(a["hq"], a["lq"], strict=True):
            assert np.corrcoef(h.ravel(), low.ravel())[0, 1] > 0.9


def test_frames_sampled_uniformly_and_boxes_recorded(cache):
    out, _ = cache
    rows = [r for r in _index(out) if r["video"] == "youtube/000"]
    assert [int(r["frame"]) for r in rows] == sample_indices(FRAMES, 6)
    assert [int(r["row"]) for r in rows] == list(range(6))
    for r in rows:
        assert int(r["side"]) > 20 and float(r["score"]) >= 0.5


def test_crop_matches_the_face_pipeline(root, cache):
    """The cached HQ crop is exactly crop(frame, box) of the decoded HQ frame (same function as scanning)."""
    from acfd.scanner.faces import CropBox, crop

    out, _ = cache
    r = next(r for r in _index(out) if r["video"] == "SelfBlended/000_001" and r["frame"] != "0")
    frame = frames_of(root / "manipulated_sequences/SelfBlended/c23/videos/000_001.mp4")[int(r["frame"])]
    box = CropBox(int(r["x0"]), int(r["y0"]), int(r["side"]))
    assert np.array_equal(_arrays(out, "SelfBlended/000_001")["hq"][int(r["row"])], crop(frame, box, SIZE))


def test_rerun_resumes_and_changed_options_refused(root, cache):
    out, _ = cache
    cfg = PrepareConfig(ffpp=root, out=out, frames=6, size=SIZE, detector="short")
    s = prepare(cfg, progress=False)
    assert (s.processed, s.skipped) == (0, 2 * VIDEOS)
    assert s.frames == {"ok": 2 * VIDEOS * 6}
    with pytest.raises(PrepareError, match="size"):
        prepare(PrepareConfig(ffpp=root, out=out, frames=6, size=SIZE + 8, detector="short"), progress=False)
    r = CliRunner().invoke(
        main, ["prepare", "--ffpp", str(root), "--out", str(out), "--frames", "5", "--detector", "short"]
    )
    assert r.exit_code == 1 and "other options" in r.output and "Traceback" not in r.output


def test_unusable_out_is_one_line(root, tmp_path):
    """A damaged cache.json or an --out below a file: one line, exit 1, nothing decoded."""
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "cache.json").write_text("{not json")
    (tmp_path / "file").write_text("")
    for out, what in ((damaged, "cache.json"), (tmp_path / "file" / "c", "cannot write")):
        r = CliRunner().invoke(main, ["prepare", "--ffpp", str(root), "--out", str(out), "--quiet"])
        assert r.exit_code == 1 and what in r.output and "Traceback" not in r.output, r.output


def test_bad_input_counted_never_fatal(root, tmp_path):
    r = copy_root(root, tmp_path / "bad")
    yt, sb = r / "original_sequences/youtube", r / "manipulated_sequences/SelfBlended"
    # 1. truncated HQ file (the mp4 index is at the end: unreadable)
    p = yt / "c23/videos/000.mp4"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    # 2. LQ shorter than HQ: the last sampled frames have no LQ partner
    write_video(yt / "c40/videos/001.mp4", frames_of(yt / "c0/videos/001.mp4")[:3], "c40")
    # 3. missing mask, 4. short mask
    (sb / "masks/videos/000_001.mp4").unlink()
    write_video(sb / "masks/videos/001_000.mp4", frames_of(sb / "masks/videos/001_000.mp4")[:4], "mask")
    # 5. a video without a face, 6. an HQ video whose LQ file is missing, 7. garbage bytes
    coffee = [np.ascontiguousarray(no_face_image()[:256, :256])] * 4
    write_video(yt / "c23/videos/900.mp4", coffee, "c23")
    write_video(yt / "c40/videos/900.mp4", coffee, "c40")
    write_video(yt / "c23/videos/901.mp4", coffee, "c23")
    (yt / "c23/videos/902.mp4").write_bytes(b"not a video at all" * 100)
    (yt / "c40/videos/902.mp4").write_bytes(b"not a video at all" * 100)

    out = tmp_path / "cache"
    s = prepare(PrepareConfig(ffpp=r, out=out, frames=6, size=SIZE, detector="short"), progress=False)
    assert s.processed == 2 * VIDEOS + 3
    assert s.videos == {
        "ok": 2 * VIDEOS - 2,
        "unreadable": 2,
        "truncated": 1,
        "lq_missing": 1,
        "no_face": 1,
    }
    assert s.mask_videos == {"ok": VIDEOS - 2, "missing": 1, "short": 1}
    assert s.frames["no_face"] == 4
    # LQ of 001 has 3 frames (0-2): of the sampled frames 0,1,3,4,6,7 the last four have no LQ partner
    assert s.frames["missing"] == 4
    assert s.masks["missing"] == 6 and s.masks["short"] == 3  # 001_000: mask frames 0..3 of 0,1,3,4,6,7
    rows = {}
    for row in _index(out):
        rows.setdefault(row["video"], []).append(row)
    assert [x["status"] for x in rows["youtube/000"]] == ["unreadable"] and rows["youtube/000"][0][
        "frame"
    ] == "-1"
    assert [x["status"] for x in rows["youtube/902"]] == ["unreadable"]
    assert [x["status"] for x in rows["youtube/901"]] == ["lq_missing"]
    assert {x["status"] for x in rows["youtube/900"]} == {"no_face"}
    assert [x["status"] for x in rows["youtube/001"]] == ["ok"] * 2 + ["missing"] * 4
    assert [x["mask"] for x in rows["SelfBlended/001_000"]] == ["ok"] * 3 + ["short"] * 3
    assert {x["mask"] for x in rows["SelfBlended/000_001"]} == {"missing"}
    rec = json.loads((out / "crops/youtube/000.json").read_text())
    assert rec["status"] == "unreadable" and rec["errors"]
    assert not (out / "crops/youtube/000.hq.npy").exists()
    assert not list(out.rglob(".*tmp"))
    # Short-mask frames keep their crops, with zero masks flagged in the index.
    a = _arrays(out, "SelfBlended/001_000")
    assert a["mask"][:3].sum() > 0 and a["mask"][3:].sum() == 0 and a["hq"][3:].any()
    # A second run resumes: nothing processed, same counts.
    s2 = prepare(PrepareConfig(ffpp=r, out=out, frames=6, size=SIZE, detector="short"), progress=False)
    assert (s2.processed, s2.skipped) == (0, s.processed)
    assert s2.videos == s.videos and s2.frames == s.frames


def test_workers_and_method_filter(root, tmp_path):
    """Two worker processes give the same cache as one in-process detector, crop for crop."""
    caches = {}
    for workers in (2, 1):
        out = tmp_path / f"w{workers}"
        cfg = PrepareConfig(
            ffpp=root, out=out, frames=2, size=32, methods=("SelfBlended",), workers=workers, detector="short"
        )
        s = prepare(cfg, progress=False)
        assert s.processed == 2 * VIDEOS and s.frames == {"ok": 2 * VIDEOS * 2}
        caches[workers] = out
    assert _index(caches[2]) == _index(caches[1])
    for video in {r["video"] for r in _index(caches[1])}:
        for k, a in _arrays(caches[2], video).items():
            assert np.array_equal(a, _arrays(caches[1], video)[k]), (video, k)
