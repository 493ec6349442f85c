"""`acfd-scan validate`: the real scanner on labelled folders of `acfd-train synth` videos, metrics by hand,
the card's validation rule, the new artifact (ONNX, TensorRT container, run directory) and bad input.

The synthetic data (22 reals + 22 self-blended fakes, 2 frames of 160 px, c40) is made once per module
by the training library - from the test only: the scanner never imports acfd.train.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from acfd.engine import artifact
from acfd.engine.runtime import load
from acfd.engine.tensorrt import PlanHeader, read_plan, write_plan
from acfd.scanner.cli import main
from acfd.scanner.validate import (
    DATASET_MARKER,
    ValidateConfig,
    ValidateError,
    data_kind,
    find_marker,
    video_metrics,
)
from acfd.schemas.artifact import ArtifactError, ArtifactMeta
from acfd.schemas.card import Evaluation, ModelCard, TrainingData, fingerprint, short_hash
from acfd.schemas.hashing import content_hash
from acfd.schemas.metrics import threshold_at_far
from click.testing import CliRunner

from tests import scan_helpers as H

N_VIDEOS = 22  # per class: every one of them has a face at 160 px (at 128 px, with black around the photo, 2 fakes had none)
FRAMES = ["--frames", "2", "--workers", "0", "-q"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, Path]:
    """(real folder, fake folder) of `acfd-train synth` c40 output."""
    from acfd.train.synth import SynthConfig, synthesize

    root = tmp_path_factory.mktemp("vsynth") / "ffpp"
    synthesize(SynthConfig(out=root, videos=N_VIDEOS, frames=2, size=160, seed=0))
    return (root / "original_sequences" / "youtube" / "c40" / "videos",
            root / "manipulated_sequences" / "SelfBlended" / "c40" / "videos")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The scanner tests' tiny ONNX model (every face scores about 1: below the threshold 9.05)."""
    return H.make_model(tmp_path_factory.mktemp("vmodel") / "tiny.onnx", H.REAL_BIAS)


def _model_copy(tiny: Path, d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(tiny, d / "model.onnx"))


def _subset(src: Path, dst: Path, n: int) -> Path:
    dst.mkdir(parents=True)
    for p in sorted(src.glob("*.mp4"))[:n]:
        shutil.copy(p, dst / p.name)
    return dst


def _run(*args: object) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, ["validate", *(str(a) for a in args)])
    return r.exit_code, r.stdout, r.stderr


def _written(out: str) -> Path:
    line = next(ln for ln in out.splitlines() if ln.startswith("wrote "))
    return Path(line.split()[1])


def _scores(db: Path, folder: Path) -> dict[str, float]:
    """Whole-video scores of the kept validation store's videos under ``folder``."""
    with sqlite3.connect(db) as c:
        q = ("SELECT v.path, vd.score FROM videos v JOIN verdicts vd ON vd.video_id = v.id AND vd.identity IS NULL "
             "WHERE v.status = 'ok' AND v.path LIKE ?")
        return dict(c.execute(q, (f"{folder}/%",)).fetchall())


# -- metrics by hand -------------------------------------------------------------------------------
def test_threshold_at_far_by_hand() -> None:
    y = [0] * 10 + [1] * 4
    s = list(range(10)) + [5.5, 8.5, 9.5, 10.0]  # reals 0..9
    # FAR <= 10%: one real may be above -> t = the 2nd highest real, 8; fakes above 8: 8.5, 9.5, 10
    assert threshold_at_far(y, s, 0.1) == (8.0, pytest.approx(0.75), pytest.approx(0.1))
    # FAR <= 1% with 10 reals: no false alarm allowed -> the highest real, 9 (not flagged: rule is >)
    assert threshold_at_far(y, s, 0.01) == (9.0, pytest.approx(0.5), 0.0)
    # FAR <= 25%: floor(2.5) = 2 false alarms -> the 3rd highest real
    assert threshold_at_far(y, s, 0.25)[0] == 7.0
    # ties at the threshold: reals tied with it are not flagged
    assert threshold_at_far([0, 0, 1], [3.0, 3.0, 3.0], 0.01) == (3.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="at least one real"):
        threshold_at_far([1, 1], [1.0, 2.0], 0.01)


def test_video_metrics_by_hand() -> None:
    # reals 1..4, fakes 3.5, 5, 6; the model's threshold 4.5
    y = np.array([0, 0, 0, 0, 1, 1, 1])
    s = np.array([1.0, 2.0, 3.0, 4.0, 3.5, 5.0, 6.0])
    m = video_metrics(y, s, threshold=4.5, far=0.25)
    # pairs (fake > real) of 12: 3.5 beats 1, 2, 3; 5 and 6 beat all four -> 11/12
    assert m["auc"] == pytest.approx(11 / 12)
    assert m["acc"] == pytest.approx(6 / 7)  # only the fake 3.5 is missed
    # at the model's threshold 4.5: no real above it, two of three fakes above it
    assert m["far_at_threshold"] == 0.0 and m["tpr_at_threshold"] == pytest.approx(2 / 3)
    assert video_metrics(y, s, threshold=2.5, far=0.25)["far_at_threshold"] == 0.5  # reals 3 and 4
    # 4 reals: FAR resolution 25%; at 1% and 0.1% only FAR 0 -> above 4: 5 and 6
    assert m["tar_at_far_0.01"] == pytest.approx(2 / 3) and m["tar_at_far_0.001"] == pytest.approx(2 / 3)
    assert m["far_resolution"] == 0.25
    # FAR <= 25%: one false alarm allowed -> t = 3 (the 2nd highest real); fakes above: all three
    assert m["threshold_at_far"] == 3.0 and m["tar_at_threshold_at_far"] == 1.0 and m["far_achieved"] == 0.25
    assert m["far"] == 0.25
    with pytest.raises(ValidateError, match="at least one real and one fake"):
        video_metrics(np.array([1, 1]), np.array([1.0, 2.0]), 4.5, 0.01)


# -- the command on >= 20 videos per class ----------------------------------------------------------
def test_validate_synthetic_writes_a_new_validated_artifact(tmp_path, synth, tiny) -> None:
    real, fake = synth
    model = _model_copy(tiny, tmp_path / "m")
    before = model.read_bytes()
    db = tmp_path / "v.sqlite"
    rc, out, err = _run("--model", model, "--real", real, "--fake", fake, "--fakes", "synthetic", "--db", db, *FRAMES)
    assert rc == 0, err
    assert model.read_bytes() == before  # never edited in place
    new = _written(out)
    assert new.parent == model.parent and new.name.startswith("model.validated-") and new.suffix == ".onnx"
    assert f"use it: acfd-scan PATH --model {new}" in out
    assert "this evaluation counts; the model is validated on synthetic forgeries" in out

    meta = artifact.read_meta(new)
    assert meta.card is not None and meta.validation == "synthetic"
    ev = meta.card.evaluations[-1]
    assert (ev.tool, ev.level, ev.fakes, ev.counts, ev.reason) == ("acfd-scan validate", "video", "synthetic", True, "")
    assert (ev.n_real, ev.n_fake, ev.n_training_overlap) == (N_VIDEOS, N_VIDEOS, 0)
    assert ev.threshold == meta.threshold == pytest.approx(9.05)
    assert ev.settings["sampling"] == "2 frames per video" and ev.settings["strategy"] == "confident"
    assert ev.kind == "synth" and ev.settings["dataset"] == "synth"  # the fakes lie in an `acfd-train synth` output
    assert "half" not in ev.settings
    assert str(real) in ev.data and str(fake) in ev.data
    vids = sorted(real.glob("*.mp4")) + sorted(fake.glob("*.mp4"))
    assert ev.fingerprint == fingerprint(content_hash(p) for p in vids)

    # The metrics are those of the whole-video scores in the kept validation store.
    rs, fs = _scores(db, real), _scores(db, fake)
    assert len(rs) == len(fs) == N_VIDEOS
    y = np.r_[np.zeros(len(rs)), np.ones(len(fs))]
    s = np.r_[list(rs.values()), list(fs.values())]
    expect = video_metrics(y, s, 9.05, 0.01)
    assert ev.metrics == pytest.approx(expect)
    assert ev.metrics["threshold_at_far"] == pytest.approx(max(rs.values()))  # 22 reals, FAR 1%: none allowed
    table = {ln.split("  ")[0]: ln.split() for ln in out.splitlines() if "  " in ln}
    assert table["AUC"][1] == f"{expect['auc']:.4g}"
    assert table["ACC at threshold 9.05"][4] == f"{100 * expect['acc']:.1f}%"
    assert table["threshold at FAR <= 1.0%"][5] == f"{expect['threshold_at_far']:.6g}"
    assert "22 reals resolve FAR only in steps of 4.5%" in out

    # The new artifact runs like the old one: only the metadata changed.
    crops = np.random.default_rng(0).integers(0, 256, (3, H.MODEL_SIZE, H.MODEL_SIZE, 3), dtype=np.uint8)
    with load(model, device="cpu") as a, load(new, device="cpu") as b:
        assert np.array_equal(a.infer(crops).score, b.infer(crops).score)
        assert b.meta.validation == "synthetic" and a.meta.validation == "none"

    # A scan with the new file stores the card: its models row says "synthetic".
    scan_db = tmp_path / "scan.sqlite"
    one = _subset(real, tmp_path / "one", 1)
    r = CliRunner().invoke(main, [str(one), "--model", str(new), "--db", str(scan_db), *FRAMES])
    assert r.exit_code == 0, r.output
    with sqlite3.connect(scan_db) as c:
        meta_json, validation = c.execute("SELECT meta_json, validation FROM models").fetchone()
    stored = ArtifactMeta.from_json(meta_json)
    assert stored.validation == validation == "synthetic" and stored.card == meta.card


def test_small_set_with_faults_and_training_videos_is_recorded_not_validated(tmp_path, synth, tiny) -> None:
    """Fewer than 20 per class; no-face, broken, duplicate, contradictory and training videos left out."""
    real, fake = synth
    r_dir = _subset(real, tmp_path / "real", 5)  # 000..004
    f_dir = _subset(fake, tmp_path / "fake", 4)
    H.no_face_video(r_dir / "zz_no_face.mp4")
    H.random_bytes(r_dir / "zz_broken.mp4")
    shutil.copy(r_dir / "000.mp4", r_dir / "000_copy.mp4")  # the same content twice counts once
    shutil.copy(r_dir / "003.mp4", f_dir / "zz_real_003.mp4")  # labelled both ways: left out of both
    trained = [r_dir / "001.mp4", r_dir / "002.mp4", sorted(f_dir.glob("*.mp4"))[0]]
    model = tmp_path / "m" / "trained.onnx"
    model.parent.mkdir()
    card = ModelCard(preset="test-tiny", training=TrainingData(
        kind="synth", forgeries="synthetic", video_hashes=tuple(short_hash(content_hash(p)) for p in trained)))
    artifact.write_meta(tiny, model, replace(artifact.read_meta(tiny), card=card))
    rc, out, err = _run("--model", model, "--real", r_dir, "--fake", f_dir, "--fakes", "real", *FRAMES)
    assert rc == 0, err
    lines = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln.startswith(("real ", "fake "))}
    # found, scored, no face, errors, duplicate, in both, training, used
    assert lines["real"][1:9] == ["8", "6", "1", "1", "1", "1", "2", "2"]
    assert lines["fake"][1:9] == ["5", "5", "0", "0", "0", "1", "1", "3"]
    assert "left out of the metrics: 8 videos" in out and "real: 1 no face, 1 errors, 1 duplicates" in out
    assert "ERROR " in out and "zz_broken.mp4" in out
    assert ("does NOT validate the model: 2 real and 3 fake videos: at least 20 per class are needed; "
            "3 labelled videos were training data and were left out") in out

    new = artifact.read_meta(_written(out)).card
    assert new is not None and new.validation == "none"
    assert new.training == card.training and new.preset == "test-tiny"  # the rest of the card is kept
    ev = new.evaluations[-1]
    assert (ev.n_real, ev.n_fake, ev.n_training_overlap, ev.counts, ev.fakes) == (2, 3, 3, False, "real")
    assert "at least 20 per class" in ev.reason and "training data" in ev.reason
    used = [r_dir / "000.mp4", r_dir / "004.mp4", *sorted(f_dir.glob("*.mp4"))[1:4]]
    assert ev.fingerprint == fingerprint(content_hash(p) for p in used)
    assert ev.fingerprint != fingerprint(content_hash(p) for p in [*used, trained[0]])


def test_set_threshold(tmp_path, synth, tiny) -> None:
    real, fake = synth
    r_dir = _subset(real, tmp_path / "real", 4)
    f_dir = _subset(fake, tmp_path / "fake", 3)
    model = _model_copy(tiny, tmp_path / "m")
    out_file = tmp_path / "m" / "tuned.onnx"
    db = tmp_path / "v.sqlite"
    rc, out, err = _run("--model", model, "--real", r_dir, "--fake", f_dir, "--fakes", "synthetic", "--far", "0.3",
                        "--set-threshold", "--out", out_file, "--db", db, *FRAMES)
    assert rc == 0, err
    assert _written(out) == out_file
    meta = artifact.read_meta(out_file)
    reals = sorted(_scores(db, r_dir).values(), reverse=True)
    # 4 reals, FAR <= 30%: one false alarm allowed -> the second highest real score
    assert meta.threshold == pytest.approx(reals[1])
    ev = meta.card.evaluations[-1]
    assert ev.metrics["threshold_at_far"] == meta.threshold and ev.threshold == pytest.approx(9.05)
    assert f"threshold: 9.05 -> {meta.threshold!r} (acfd-scan validate: FAR <= 0.3 on 4 real videos" in out
    assert meta.card.threshold_source == (
        f"acfd-scan validate: FAR <= 0.3 on 4 real videos (fingerprint {ev.fingerprint}), {ev.date[:10]}"
    )
    import onnx

    assert onnx.load(str(out_file)).doc_string.endswith(f"fake if score > {meta.threshold}")
    with load(out_file, device="cpu") as b:
        assert b.meta.threshold == meta.threshold


def test_set_threshold_above_r_plus(tmp_path, synth) -> None:
    # A briefly trained model's faces may all score above r+ (18): the threshold measured at the FAR lies
    # there too, and is a valid decision threshold (r- and r+ are training margins, not score bounds).
    real, fake = synth
    r_dir = _subset(real, tmp_path / "real", 2)
    f_dir = _subset(fake, tmp_path / "fake", 2)
    model = H.make_model(tmp_path / "m" / "high.onnx", 20.0)  # every face scores ~20 > r+ = 18
    rc, out, err = _run("--model", model, "--real", r_dir, "--fake", f_dir, "--fakes", "synthetic",
                        "--set-threshold", *FRAMES)
    assert rc == 0, err
    (new,) = [p for p in model.parent.iterdir() if p.name != "high.onnx"]
    with load(new, device="cpu") as b:
        assert b.meta.threshold > 18.0 and b.meta.card.threshold_source.startswith("acfd-scan validate: FAR <=")


# -- labelled data made by acfd-train ----------------------------------------------------------------
def _marked_set(src: tuple[Path, Path], root: Path, n: int, marker: dict) -> tuple[Path, Path]:
    """``n`` reals and fakes copied into an FF++-layout folder ``root`` with ``marker`` as its dataset marker."""
    real = _subset(src[0], root / "original_sequences" / "youtube" / "c40" / "videos", n)
    fake = _subset(src[1], root / "manipulated_sequences" / "FaceSwapLandmarks" / "c40" / "videos", n)
    (root / DATASET_MARKER).write_text(json.dumps(marker))
    return real, fake


SWAPS_MARKER = {"kind": "swaps", "forgeries": "synthetic", "method": "FaceSwapLandmarks", "half": "selection"}


def test_the_dataset_marker_is_found_above_the_fake_folder(tmp_path) -> None:
    from acfd.train.synth import SYNTH_MARKER

    assert DATASET_MARKER == SYNTH_MARKER  # one name, defined in schemas.card
    deep = tmp_path / "set" / "manipulated_sequences" / "FaceSwapLandmarks" / "c23" / "videos"
    deep.mkdir(parents=True)
    cfg = ValidateConfig(model="m.onnx", real="r", fake=str(deep), fakes="synthetic")
    assert find_marker(str(deep)) is None and data_kind(cfg, str(deep)) == ("", {})
    (tmp_path / "set" / DATASET_MARKER).write_text(json.dumps(SWAPS_MARKER))
    assert data_kind(cfg, str(deep)) == ("swaps", {"dataset": "swaps", "half": "selection"})
    (tmp_path / "set" / DATASET_MARKER).write_text(json.dumps(SWAPS_MARKER | {"half": None}))
    assert data_kind(cfg, str(deep)) == ("swaps", {"dataset": "swaps", "half": "all"})  # every held-out person
    # the nearest marker wins: a synth output inside the swaps folder is a synth set
    (deep.parent / DATASET_MARKER).write_text(json.dumps({"kind": "synth", "forgeries": "synthetic"}))
    assert data_kind(cfg, str(deep)) == ("synth", {"dataset": "synth"})
    # a kind this acfd does not know is recorded in the settings, not as the evaluation's kind
    (deep.parent / DATASET_MARKER).write_text(json.dumps({"kind": "morphs", "forgeries": "real"}))
    assert data_kind(replace(cfg, fakes="real"), str(deep)) == ("", {"dataset": "morphs"})
    (deep.parent / DATASET_MARKER).write_text(json.dumps({"kind": "swaps", "forgeries": "synthetic", "complete": False}))
    with pytest.raises(ValidateError, match="unfinished `acfd-train swaps` output"):
        data_kind(cfg, str(deep))
    (deep.parent / DATASET_MARKER).write_text("[1, 2")
    with pytest.raises(ValidateError, match="not a readable dataset marker"):
        data_kind(cfg, str(deep))


def test_fakes_real_on_a_program_made_set_is_one_line(tmp_path, synth, tiny) -> None:
    real, fake = _marked_set(synth, tmp_path / "set", 2, SWAPS_MARKER)
    model = _model_copy(tiny, tmp_path / "m")
    for f_dir in (fake, synth[1]):  # an `acfd-train swaps` set, an `acfd-train synth` one
        rc, out, err = _run("--model", model, "--real", real, "--fake", f_dir, "--fakes", "real", *FRAMES)
        assert rc == 4 and out == ""
        assert len(err.strip().splitlines()) == 1 and "its fakes are synthetic; use --fakes synthetic" in err, err
        kind = "swaps" if f_dir == fake else "synth"
        assert f"is in an `acfd-train {kind}` output" in err
    assert sorted(p.name for p in model.parent.iterdir()) == ["model.onnx"]  # nothing written


def test_a_swaps_set_is_recorded_with_its_half(tmp_path, synth, tiny) -> None:
    real, fake = _marked_set(synth, tmp_path / "set", 2, SWAPS_MARKER)
    model = _model_copy(tiny, tmp_path / "m")
    rc, out, err = _run("--model", model, "--real", real, "--fake", fake, "--fakes", "synthetic", "--far", "0.3",
                        "--set-threshold", "--out", tmp_path / "m" / "sel.onnx", *FRAMES)
    assert rc == 0, err
    assert "labelled data: an acfd-train swaps set (selection half)" in out
    card = artifact.read_meta(tmp_path / "m" / "sel.onnx").card
    ev = card.evaluations[-1]
    assert (ev.kind, ev.settings["dataset"], ev.settings["half"], ev.fakes) == ("swaps", "swaps", "selection",
                                                                                "synthetic")  # fmt: skip
    assert card.threshold_source == (f"acfd-scan validate: FAR <= 0.3 on 2 real videos of an acfd-train swaps set "
                                     f"(selection half) (fingerprint {ev.fingerprint}), {ev.date[:10]}")  # fmt: skip
    assert ev.one_line().endswith(f" on 2 real + 2 synthetic face-swap videos ({ev.date[:10]})")


# -- bad input --------------------------------------------------------------------------------------
def test_bad_input_is_one_line_exit_4(tmp_path, synth, tiny) -> None:
    real, fake = synth
    model = _model_copy(tiny, tmp_path / "m")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no videos here\n")
    taken = tmp_path / "m" / "taken.onnx"
    taken.write_bytes(b"x")
    cases = {
        "no videos found under the fake folder": ("--real", real, "--fake", empty),
        "fake folder": ("--real", real, "--fake", tmp_path / "missing"),
        "taken.onnx already exists; refusing to overwrite": ("--real", real, "--fake", fake, "--out", taken),
        "must be separate": ("--real", real, "--fake", real),
        "keep the suffix": ("--real", real, "--fake", fake, "--out", tmp_path / "m" / "x.plan"),
    }
    for expect, args in cases.items():
        rc, out, err = _run("--model", model, *args, "--fakes", "real", *FRAMES)
        assert rc == 4, (expect, out, err)
        assert expect in err and len(err.strip().splitlines()) == 1, (expect, err)
        assert out == ""
    assert taken.read_bytes() == b"x"
    assert sorted(p.name for p in model.parent.iterdir()) == ["model.onnx", "taken.onnx"]
    rc, _, err = _run("--model", model, "--real", real, "--fake", fake, "--fakes", "maybe", *FRAMES)
    assert rc == 4 and "maybe" in err


# -- the engine's artifact writers ------------------------------------------------------------------
def test_default_output_name() -> None:
    import datetime as dt

    when = dt.datetime(2026, 12, 2, 1, 2, 3, tzinfo=dt.timezone.utc)
    assert artifact.default_output(Path("/m/model.fp16.onnx"), when) == Path("/m/model.fp16.validated-20261202T010203.onnx")
    # validating a validated file does not grow the name
    again = artifact.default_output(Path("/m/model.validated-20261201T000000.plan"), when)
    assert again == Path("/m/model.validated-20261202T010203.plan")


def test_plan_container_gets_new_meta_engine_bytes_unchanged(tmp_path) -> None:
    import hashlib

    engine = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    meta = ArtifactMeta(input_size=64, attention_size=8, preset="test")
    header = PlanHeader(meta=meta.to_dict(), tensorrt="10.0", gpu="none", compute_capability="0.0", min_batch=1,
                        opt_batch=1, max_batch=1, engine_bytes=len(engine),
                        engine_sha256=hashlib.sha256(engine).hexdigest())
    src = write_plan(tmp_path / "model.plan", header, engine)
    ev = Evaluation.judged(tool="acfd-scan validate", level="video", fakes="real", n_real=20, n_fake=21)
    up = artifact.update_card(src, ModelCard().with_evaluation(ev), threshold=4.0)
    assert up.path.name.startswith("model.validated-") and up.path.suffix == ".plan" and not up.in_place
    h2, e2 = read_plan(up.path)
    assert e2 == engine and h2.tensorrt == "10.0" and h2.engine_sha256 == header.engine_sha256
    m2 = h2.artifact_meta
    assert m2.threshold == 4.0 and m2.validation == "real" and m2.input_size == 64
    assert read_plan(src)[0].artifact_meta == meta  # the original is untouched
    with pytest.raises(ArtifactError, match="already exists"):
        artifact.write_meta(src, up.path, m2)
    with pytest.raises(ArtifactError, match="must be positive"):
        artifact.update_card(src, ModelCard(), dst=tmp_path / "x.plan", threshold=0.0)
    with pytest.raises(ArtifactError, match="finite"):
        artifact.update_card(src, ModelCard(), dst=tmp_path / "x.plan", threshold=float("nan"))
    assert not (tmp_path / "x.plan").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.plan", up.path.name]  # no temporary left


def test_run_directory_card_is_replaced_atomically(tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "model.safetensors").write_bytes(b"weights")
    assert artifact.read_run_card(run) is None
    card = ModelCard(preset="paper").with_evaluation(
        Evaluation.judged(tool="acfd-scan validate", level="video", fakes="synthetic", n_real=25, n_fake=30,
                          metrics={"auc": 0.9, "acc": None}))
    up = artifact.update_card(run, card)
    assert up.path == run / "card.json" and up.in_place and up.threshold is None
    assert artifact.read_run_card(run) == card and json.loads(up.path.read_text())["preset"] == "paper"
    assert (run / "model.safetensors").read_bytes() == b"weights"
    assert sorted(p.name for p in run.iterdir()) == ["card.json", "config.json", "model.safetensors"]
    with pytest.raises(ArtifactError, match="threshold is part of its training config"):
        artifact.update_card(run, card, threshold=5.0)
    with pytest.raises(ArtifactError, match="bare .safetensors"):
        artifact.artifact_kind(run / "model.safetensors")
