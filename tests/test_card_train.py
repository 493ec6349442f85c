"""The model card on the training side: synth -> prepare -> fit -> evaluate -> export/build, by value."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from acfd.engine.backends import TorchBackend, read_onnx_meta
from acfd.engine.export import build_run
from acfd.engine.tensorrt import PlanHeader, read_plan, write_plan
from acfd.schemas.card import MIN_VIDEOS_PER_CLASS, ModelCard, fingerprint, short_hash
from acfd.schemas.hashing import content_hash
from acfd.train.card import threshold_source, training_data
from acfd.train.cli import main
from acfd.train.config import resolve_config
from acfd.train.evaluate import evaluate
from acfd.train.model import artifact_meta, read_card
from acfd.train.prepare import PrepareConfig, prepare
from click.testing import CliRunner

from tests.data_helpers import synth_root
from tests.model_helpers import crop_cache

pytestmark = pytest.mark.usefixtures("torch_one_thread")

FAKE = "SelfBlended"


def split_videos(root: Path, *splits: str) -> dict[str, list[tuple[str, str]]]:
    """(method folder, file stem) of every real and fake in ``splits``, from the split files themselves."""
    out: dict[str, list[tuple[str, str]]] = {"real": [], "fake": []}
    for s in splits:
        for a, b in json.loads((root / "splits" / f"{s}.json").read_text()):
            out["real"] += [("youtube", a), ("youtube", b)]
            out["fake"] += [(FAKE, f"{a}_{b}"), (FAKE, f"{b}_{a}")]
    return out


def video_file(root: Path, folder: str, stem: str, level: str) -> Path:
    base = "original_sequences" if folder == "youtube" else "manipulated_sequences"
    return root / base / folder / level / "videos" / f"{stem}.mp4"


def hashes_of(root: Path, videos: dict[str, list[tuple[str, str]]], levels: tuple[str, ...]) -> set[str]:
    return {content_hash(video_file(root, f, s, lv)) for kind in videos.values() for f, s in kind for lv in levels}


def card_of(run: Path) -> ModelCard:
    return ModelCard.from_dict(json.loads((run / "card.json").read_text()))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return crop_cache(tmp_path_factory)  # synth (6 reals + 6 fakes, one pair per split) -> prepare


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth_root(tmp_path_factory)


@pytest.fixture(scope="module")
def run(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("card-run") / "run"
    r = CliRunner().invoke(main, ["fit", "--data", str(cache), "--out", str(out), "--image-size", "32",
                                  "--batch-size", "4", "--max-steps", "2", "--precise-bn", "1", "--quiet",
                                  "--pretrained", "none"])  # fmt: skip
    assert r.exit_code == 0, r.output
    return out, r.output


def test_synth_marker_and_prepare_record_kind_and_hashes(root: Path, cache: Path) -> None:
    marker = json.loads((root / "acfd-synth.json").read_text())
    assert marker["kind"] == "synth" and marker["forgeries"] == "synthetic"
    assert marker["sources"] == ["skimage.data.astronaut"] and marker["seed"] == 0
    meta = json.loads((cache / "cache.json").read_text())
    assert meta["dataset"] == {"kind": "synth", "forgeries": "synthetic", "sources": ["skimage.data.astronaut"]}
    rec = json.loads((cache / "crops" / "youtube" / "000.json").read_text())
    assert rec["hq_hash"] == content_hash(video_file(root, "youtube", "000", "c23"))
    assert rec["lq_hash"] == content_hash(video_file(root, "youtube", "000", "c40"))
    assert rec["hq_hash"] != rec["lq_hash"]


def test_fit_writes_the_card(run: tuple[Path, str], root: Path, cache: Path) -> None:
    out, output = run
    card = card_of(out)
    assert (card.preset, card.image_size, card.steps, card.backbone_init) == ("paper", 32, 2, "random")
    assert card.threshold_source == "default: (r- + r+) / 2 = 9.05"
    t = card.training
    assert t is not None
    assert (t.kind, t.forgeries, t.root, t.sources) == ("synth", "synthetic", str(root), ("skimage.data.astronaut",))
    train_val = split_videos(root, "train", "val")
    assert t.counts == {"real/c23+c40": len(train_val["real"]), f"{FAKE}/c23+c40": len(train_val["fake"])}
    n_videos = len(train_val["real"]) + len(train_val["fake"])
    assert len(t.video_hashes) == 2 * n_videos == 16  # HQ and LQ file of each
    assert set(t.video_hashes) == {short_hash(h) for h in hashes_of(root, train_val, ("c23", "c40"))}
    assert t.fingerprint == fingerprint(t.video_hashes)
    assert card.evaluations == () and card.validation == "none" and card.notes == ""
    # the weights' header, artifact_meta and the torch backend carry the same card
    assert read_card(out / "model.safetensors") == card
    assert artifact_meta(out).card == card
    with TorchBackend(out, device="cpu").load() as backend:
        assert backend.meta.card == card
    assert f"model card ({out}/card.json): " in output and "UNVALIDATED" in output


def test_threshold_source_words() -> None:
    assert threshold_source(resolve_config("code")) == "preset code: 5"
    assert threshold_source(resolve_config("single-ce")) == "default: P(fake) > 0.5 (cross-entropy head) = 0.5"
    assert threshold_source(resolve_config("paper", threshold=4.0)) == "config: 4"


def test_evaluate_appends_an_unvalidated_evaluation(
    run: tuple[Path, str], root: Path, cache: Path, tmp_path: Path
) -> None:
    out = shutil.copytree(run[0], tmp_path / "run")
    before = card_of(out)
    res = evaluate(out, [cache], progress=False)
    card = card_of(out)
    assert card.evaluations[:-1] == before.evaluations and len(card.evaluations) == 1
    ev = card.evaluations[0]
    test = split_videos(root, "test")
    assert (ev.tool, ev.level, ev.fakes, ev.kind) == ("acfd-train evaluate", "video", "synthetic", "synth")
    assert (ev.n_real, ev.n_fake, ev.n_training_overlap) == (len(test["real"]), len(test["fake"]), 0)
    assert (res.video["n_real"], res.video["n_fake"]) == (ev.n_real, ev.n_fake)
    assert ev.n_real < MIN_VIDEOS_PER_CLASS and not ev.counts and f"at least {MIN_VIDEOS_PER_CLASS}" in ev.reason
    assert card.validation == "none" and res.validation == "none"
    assert set(ev.metrics) == {"auc", "acc", "tar_at_far_0.001", "tar_at_far_0.0001"}
    assert ev.metrics["auc"] == pytest.approx(res.video["auc"]) and ev.metrics["acc"] == pytest.approx(res.video["acc"])
    assert ev.threshold == pytest.approx(9.05) and ev.data == f"split test of {cache}"
    assert ev.fingerprint == fingerprint(hashes_of(root, test, ("c40",)))  # the LQ files the branch scored
    assert ev.settings["training_overlap"] == "checked by content hash"
    # the training split: every video is training data, left out and counted
    evaluate(out, [cache], split="train", progress=False)
    ev2 = card_of(out).evaluations[1]
    n_train = sum(len(v) for v in split_videos(root, "train").values())
    assert (ev2.n_training_overlap, ev2.n_real, ev2.n_fake) == (n_train, 0, 0)
    assert ev2.metrics["auc"] is None and "were training data" in ev2.reason


@pytest.mark.slow  # two real exports (~20 s on 2 cores, most of it the FP16 graph's dynamo trace)
def test_export_and_build_carry_the_card(run: tuple[Path, str], tmp_path: Path) -> None:
    out = run[0]
    card = card_of(out)
    r = build_run(out, tmp_path / "models")
    assert read_onnx_meta(r.onnx_fp32.path).card == card
    meta16 = read_onnx_meta(r.onnx_fp16.path)
    assert meta16.precision == "fp16" and meta16.card == card
    # the plan header holds the FP16 ONNX's metadata as build_engine writes it (no TensorRT needed here)
    engine = b"engine bytes"
    header = PlanHeader(meta=meta16.to_dict(), tensorrt="10.0", gpu="test", compute_capability="9.0", min_batch=1,
                        opt_batch=2, max_batch=4, engine_bytes=len(engine),
                        engine_sha256=hashlib.sha256(engine).hexdigest())  # fmt: skip
    h, _ = read_plan(write_plan(tmp_path / "m.plan", header, engine))
    assert h.artifact_meta.card == card


def test_an_older_cache_without_hashes_or_kind(cache: Path, root: Path, tmp_path: Path) -> None:
    old = shutil.copytree(cache, tmp_path / "old")
    meta = json.loads((old / "cache.json").read_text())
    del meta["dataset"]
    (old / "cache.json").write_text(json.dumps(meta))
    for f in (old / "crops").rglob("*.json"):
        rec = json.loads(f.read_text())
        rec.pop("hq_hash"), rec.pop("lq_hash")
        f.write_text(json.dumps(rec))
    t, notes = training_data([old])
    assert t.video_hashes == () and t.fingerprint == "" and t.counts == training_data([cache])[0].counts
    assert t.kind == "synth"  # the root's marker still decides while the root exists
    assert len(notes) == 1 and "no content hash" in notes[0]
    # resuming prepare on it adds the hashes back (nothing is decoded again)
    s = prepare(PrepareConfig(ffpp=root, out=old, frames=3, size=64), progress=False)
    assert s.processed == 0
    t2, notes2 = training_data([old])
    assert t2.video_hashes == training_data([cache])[0].video_hashes and notes2 == []
    assert json.loads((old / "cache.json").read_text())["dataset"]["kind"] == "synth"


def _hand_cache(d: Path, root: str, dataset: dict | None) -> Path:
    """A crop cache with no videos, whose cache.json records ``dataset`` (None: a cache from before it did)."""
    d.mkdir(parents=True)
    meta = {"ffpp": root} | ({"dataset": dataset} if dataset is not None else {})
    (d / "cache.json").write_text(json.dumps(meta))
    (d / "index.csv").write_text("video,label,method,split,frame,row,status,mask,x0,y0,side,score\n")
    return d


def test_training_data_names_corpora_and_counts_persons(tmp_path: Path) -> None:
    new = {"kind": "synth", "forgeries": "synthetic", "sources": ["a.png", "b.png", "h.png"], "persons": 2,
           "corpora": ["nasa/astronaut", "scikit-image/scikit-image"], "without_corpus": ["h.png"]}
    old = {"kind": "synth", "forgeries": "synthetic", "sources": ["a.png", "b.png"]}  # before persons/corpora
    a = _hand_cache(tmp_path / "a", "/data/s1", new)
    t, _ = training_data([a])
    # the repositories, and the file no manifest named; not the file names the corpora stand for
    assert t.sources == ("nasa/astronaut", "scikit-image/scikit-image", "h.png") and t.persons == 2
    t_old, _ = training_data([_hand_cache(tmp_path / "b", "/data/s2", old)])
    assert (t_old.sources, t_old.persons) == (("a.png", "b.png"), 0)
    # a second cache of the same root (other levels) shows the same persons; two roots may share people
    assert training_data([a, _hand_cache(tmp_path / "a2", "/data/s1", new)])[0].persons == 2
    both, _ = training_data([a, tmp_path / "b"])
    assert both.persons == 0
    assert both.sources == ("nasa/astronaut", "scikit-image/scikit-image", "h.png", "a.png", "b.png")
    # a cache that recorded no dataset, whose root is gone: unknown, as before
    gone, _ = training_data([_hand_cache(tmp_path / "c", str(tmp_path / "missing"), None)])
    assert (gone.kind, gone.sources, gone.persons) == ("unknown", (), 0)
