"""The packaged starter model: a scan without ``--model`` or ``$ACFD_MODEL`` uses it and says what it is
(first line, from its card, and in the summary); a model that is named (even a copy of the starter) gets
no such line; an install without it stops with one message that says how to get a model; ``--help``
says the same; the wheel ships it (package data).

The "starter" here is the tiny ONNX test model (``tests/scan_helpers.py``) with a starter-like card; the
resolver (``acfd.scanner.pipeline.starter_model_path``) is pointed at it.
"""

from __future__ import annotations

import fnmatch
import shutil
import sqlite3
from pathlib import Path

import pytest
from acfd.scanner import pipeline
from acfd.scanner.cli import main, starter_line
from acfd.schemas.card import Evaluation, ModelCard, TrainingData, fingerprint
from click.testing import CliRunner

from tests import scan_helpers as H
from tests.test_card_scan import with_card

ROOT = Path(__file__).resolve().parents[1]
PERSONS = 111
SWAPS = "starter/swaps-test/{}/{}"


def _swaps_ev(level: str, auc: float, n: int, date: str) -> Evaluation:
    """A validation on acfd-train swaps output at one compression level, as the Makefile's recipe makes it."""
    data = (f"real: {SWAPS.format('original_sequences/youtube', level)}; "
            f"fake: {SWAPS.format('manipulated_sequences/FaceSwapLandmarks', level)}")  # fmt: skip
    return Evaluation.judged(
        tool="acfd-scan validate", level="video", fakes="synthetic", n_real=n, n_fake=n + 1,
        metrics={"auc": auc, "acc": 0.7}, threshold=9.05, data=data, date=date, kind="swaps",
    )  # fmt: skip


TRAINING = TrainingData(
    kind="synth", forgeries="synthetic", root="starter/synth", fingerprint=fingerprint(["ht1:aa"]),
    counts={"original/c23": 240, "selfblend/c23": 240}, video_hashes=("aa",), persons=PERSONS,
)  # fmt: skip
# c23 first, then c40 (newest): best_evaluation() is the c40 one
CARD = ModelCard(
    preset="paper", image_size=128, steps=900, backbone_init="random", training=TRAINING,
    evaluations=(_swaps_ev("c23", 0.912, 24, "2026-11-20T10:00:00+00:00"),
                 _swaps_ev("c40", 0.873, 22, "2026-11-20T11:00:00+00:00")),
)  # fmt: skip
EXPECTED = (
    f"starter model: trained on self-blends of {PERSONS} real people; validated on synthetic face swaps only, "
    "AUC 0.873 on 22 real + 23 fake videos at c40 (H.264 CRF 40); a starter, not an oracle "
    "(acfd-scan --help: other models)"
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The starter (a fake-calling tiny model with CARD) and a folder with one face video."""
    root = tmp_path_factory.mktemp("starter")
    base = H.make_model(root / "base.onnx", H.FAKE_BIAS)
    (root / "pkg").mkdir()
    starter = with_card(base, root / "pkg" / "starter.onnx", CARD)
    vids = root / "videos"
    vids.mkdir()
    H.face_video(vids / "face.mp4", n=4, fps=10)
    return starter, vids


@pytest.fixture
def use_starter(monkeypatch):
    """Point the packaged-starter resolver at a path; no $ACFD_MODEL."""
    monkeypatch.delenv("ACFD_MODEL", raising=False)

    def point(path: Path) -> None:
        monkeypatch.setattr(pipeline, "starter_model_path", lambda: path)

    return point


def _scan(vids: Path, db: Path, *extra: str):
    return CliRunner().invoke(main, [str(vids), "--db", str(db), "--frames", "2", "--workers", "0", "-q", *extra])


def test_scan_without_a_model_uses_the_starter_and_says_so_first(setup, use_starter, tmp_path):
    starter, vids = setup
    use_starter(starter)
    dbp = tmp_path / "s.sqlite"
    r = _scan(vids, dbp)
    assert r.exit_code == 1, r.output  # the starter (FAKE_BIAS) flags the face
    lines = r.stderr.splitlines()
    assert lines[0] == EXPECTED
    assert lines[1].startswith(f"model: {starter} (") and lines[1].endswith(CARD.one_line())
    # the summary repeats it, just before the card line
    i = lines.index(f"  {EXPECTED}")
    assert i > 2 and lines[i + 1] == f"  {lines[1]}"
    assert lines.count(EXPECTED) == 1 and len([x for x in lines if "starter model:" in x]) == 2
    # the store records the starter's path as the model used
    with sqlite3.connect(dbp) as c:
        assert c.execute("SELECT path FROM models").fetchall() == [(str(starter),)]
        assert c.execute("SELECT label FROM latest_verdicts").fetchall() == [("fake",)]


def test_a_named_model_gets_no_starter_line_even_a_copy(setup, use_starter, tmp_path, monkeypatch):
    starter, vids = setup
    use_starter(starter)  # the starter is there: only naming a model keeps it out
    copy = shutil.copy(starter, tmp_path / "mine.onnx")
    r = _scan(vids, tmp_path / "a.sqlite", "--model", str(copy))
    assert r.exit_code == 1, r.output
    assert "starter model" not in r.stderr
    assert r.stderr.splitlines()[0].startswith(f"model: {copy} (")
    monkeypatch.setenv("ACFD_MODEL", str(copy))
    r = _scan(vids, tmp_path / "b.sqlite")
    assert r.exit_code == 1, r.output
    assert "starter model" not in r.stderr
    assert r.stderr.splitlines()[0].startswith(f"model: {copy} (")


def test_a_missing_starter_stops_with_how_to_get_a_model(use_starter, tmp_path):
    missing = tmp_path / "pkg" / "starter.onnx"
    use_starter(missing)
    video = tmp_path / "v.mp4"
    video.write_bytes(b"")
    dbp = tmp_path / "d.sqlite"
    r = CliRunner().invoke(main, [str(video), "--db", str(dbp)])
    assert r.exit_code == 4, r.output
    err = r.stderr.strip().splitlines()
    assert len(err) == 3, err  # our own lines, printed as lines
    assert err[0].startswith(f"Error: no model: the starter model is missing from this install ({missing}); ")
    text = " ".join(err)
    for way in ("--model", "$ACFD_MODEL", "acfd-train", "make starter-model", "make demo", "#sha256=", "hf://"):
        assert way in text, way
    assert "Traceback" not in r.output and "Usage:" not in r.output
    assert not dbp.exists()
    with pytest.raises(pipeline.NoModelError, match="starter model is missing"):
        pipeline.default_model()


def test_a_damaged_starter_says_reinstall_in_one_line(use_starter, tmp_path):
    # what a clone without Git LFS leaves where a large file should be: a short text pointer
    damaged = tmp_path / "pkg" / "starter.onnx"
    damaged.parent.mkdir()
    damaged.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 41957556\n")
    use_starter(damaged)
    video = tmp_path / "v.mp4"
    video.write_bytes(b"")
    r = CliRunner().invoke(main, [str(video), "--db", str(tmp_path / "d.sqlite")])
    assert r.exit_code == 4, r.output
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: the packaged starter model is damaged (")
    assert str(damaged) in err[0] and err[0].endswith("reinstall acfd, or give --model (or $ACFD_MODEL)")
    # a damaged model the user named is their file: the plain error, no advice to reinstall acfd
    r = CliRunner().invoke(main, [str(video), "--db", str(tmp_path / "e.sqlite"), "--model", str(damaged)])
    assert r.exit_code == 4 and "reinstall" not in r.stderr and str(damaged) in r.stderr


def test_default_model_is_the_starter_when_present(use_starter, tmp_path):
    f = tmp_path / "starter.onnx"
    f.write_bytes(b"x")
    use_starter(f)
    assert pipeline.default_model() == str(f)


@pytest.mark.parametrize("args", [["--help"], ["scan", "--help"]])
def test_help_says_which_model_and_how_to_get_another(args):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "without --model (or $ACFD_MODEL) a scan uses the starter model packaged with acfd" in text
    assert "validated on synthetic face swaps only, never on real deepfakes" in text
    assert "a starter, not an oracle" in text and "STARTER-NOTICE.md" in text
    for way in ("acfd-train", "make starter-model", "make demo", "#sha256=<hex>", "hf://org/repo@<commit>"):
        assert way in text, way


def test_the_wheel_ships_the_starter_and_its_notice():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    globs = conf["tool"]["setuptools"]["package-data"]["acfd.scanner"]
    assert conf["tool"]["setuptools"]["package-dir"]["acfd.scanner"] == "scanner"
    # the resolver (not patched here) points into the package, at a file the globs ship
    path = pipeline.starter_model_path()
    rel = path.relative_to(ROOT / "scanner").as_posix()
    assert rel == "models/starter.onnx"
    for name in (rel, f"models/{pipeline.STARTER_NOTICE}"):
        assert any(fnmatch.fnmatch(name, g) for g in globs), name
    notice = path.with_name(pipeline.STARTER_NOTICE).read_text(encoding="utf-8")
    # the restricted sources are named with their terms, and the way to other terms
    for fact in ("research and evaluation use", "YadiraF/DECA", "deepinsight/insightface", "CC BY-NC-SA 4.0",
                 "filby89/spectre", "KwaiVGI/LivePortrait", "self-blended", "held out", "make starter-model"):
        assert fact in notice, fact


def test_starter_line_stays_true_when_the_card_knows_less():
    # persons unknown (0): no number; one person: singular
    t0 = TrainingData(kind="synth", forgeries="synthetic")
    assert starter_line(ModelCard(training=t0)).startswith(
        "starter model: trained on self-blends of real people; never evaluated: its verdicts are not evidence; "
    )
    one = ModelCard(training=TrainingData(kind="synth", forgeries="synthetic", persons=1))
    assert "self-blends of 1 real person;" in starter_line(one)
    # an evaluation too small to validate, of unknown kind and level, close to chance
    small = Evaluation.judged(tool="acfd-scan validate", level="video", fakes="synthetic", n_real=5, n_fake=5,
                              metrics={"auc": 0.55}, data="real: a; fake: b", date="2026-11-20T10:00:00+00:00")
    line = starter_line(ModelCard(training=t0, evaluations=(small,)))
    assert ("not validated (5 real and 5 fake videos: at least 20 per class are needed): AUC 0.550 (close to "
            "chance) on 5 real + 5 fake videos of synthetic forgeries;") in line
    assert "at c" not in line  # no level named by the folders: none claimed
    # mixed levels: none claimed either
    mixed = Evaluation.from_dict({**CARD.evaluations[1].to_dict(), "data": "real: x/c23; fake: y/c40"})
    assert "AUC 0.873 on 22 real + 23 fake videos;" in starter_line(ModelCard(training=TRAINING, evaluations=(mixed,)))
    # no card at all, and data that is not self-blends
    assert starter_line(None).startswith("starter model: no model card: training data unknown; never evaluated")
    ff = ModelCard(training=TrainingData(kind="ffpp", forgeries="real", counts={"Deepfakes/c23": 720}))
    assert starter_line(ff).startswith("starter model: trained on FaceForensics++-layout data, 720 videos; ")
    # card text is inert
    hostile = ModelCard(training=t0, evaluations=(Evaluation.from_dict({**small.to_dict(), "reason": "x\x1b[2J\ny"}),))
    assert "\x1b" not in starter_line(hostile) and "\n" not in starter_line(hostile)
