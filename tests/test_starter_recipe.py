"""The Makefile's starter recipe end to end on a tiny budget: `make starter-model` on six "persons" made
from the three real faces installed packages ship, then an interrupted test half made again.

people (6 persons, 4 held out) -> swaps: a selection half and a test half of 2 held-out persons each (one
pair of each) -> synth of the 2 kept persons (4 videos) -> prepare (96 px crops, 2 frames) -> fit (64 px,
2 steps) -> FP16 ONNX -> validate on the selection half (c23, then c40 with --far/--set-threshold) ->
validate on the test half (c23, c40). With 2 reals and 2 fakes per evaluation none of them validates the
model: the test checks what is recorded, not a quality.

Three photos are real people (the astronaut, the cameraman, Grace Hopper); three more are made from them
so that dlib's face descriptor puts them 0.64-0.86 from every other one (more than the 0.6 that makes one
person): the astronaut's photographic negative, the same negative with its contrast clipped, and the
astronaut's upper face over Grace Hopper's lower face. Measured on these files; `people` checks it again,
and the test asserts the 6 persons it finds.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from acfd.engine.artifact import read_meta
from acfd.schemas.card import ModelCard
from acfd.schemas.hashing import content_hash

from tests.identity_helpers import astronaut_head, cameraman_head, canvas, hopper_head

pytestmark = pytest.mark.slow  # ~2 minutes on 2 busy cores (fit and the FP16 export most of it)

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)  # the venv running the tests: make must neither build nor pip-install one
FAR = 0.25
KNOBS = {
    "STARTER_HOLDOUT": "0.67",  # 4 of 6 persons: 2 per half, the fewest that make a pair in each
    "STARTER_PAIRS": "1",
    "STARTER_VIDEOS": "4",
    "STARTER_FRAMES": "2",
    "STARTER_STEPS": "2",
    "STARTER_SIZE": "64",
    "STARTER_BATCH": "4",
    "STARTER_CROP": "96",
    "STARTER_FAR": str(FAR),
    "STARTER_SCAN_ARGS": "--workers 0",  # the frames stage in each scan's own process: no worker start-up
}
# The repository each photo came from (a corpus manifest, as ../shared/data/faces has): the card names these.
REPOS = {"astro": "scikit-image/astronaut", "astro_neg": "test/negatives", "astro_negc": "test/negatives",
         "camera": "scikit-image/camera", "hopper": "matplotlib/grace_hopper", "chimera": "test/chimeras"}  # fmt: skip


def _faces(d: Path) -> Path:
    d.mkdir(parents=True)
    a, c, h = astronaut_head(), cameraman_head(), hopper_head()
    chimera = a.copy()
    chimera[130:] = h[130:]  # below the nose: Grace Hopper
    heads = {"astro": a, "camera": c, "hopper": h, "astro_neg": 255 - a,
             "astro_negc": np.clip(255 - a.astype(np.int16), 40, 220).astype(np.uint8), "chimera": chimera}  # fmt: skip
    for name, head in heads.items():
        assert cv2.imwrite(str(d / f"{name}.png"), cv2.cvtColor(canvas([(head, 200, 30)]), cv2.COLOR_RGB2BGR))
    rows = "".join(f"{n}.png,image,{REPOS[n]}\n" for n in heads)
    (d / "manifest.csv").write_text("file,kind,repo\n" + rows)
    return d


def _make(starter: Path, faces: Path) -> tuple[str, list[str]]:
    """Run `make starter-model`; returns (its output, the acfd commands it ran, in order)."""
    if not (VENV / "bin" / "acfd-train").is_file():
        pytest.skip(f"no acfd-train in {VENV}: run the tests from the project's venv")
    # -o: the venv counts as installed even where pyproject.toml is newer than its stamp
    cmd = ["make", "--no-print-directory", "-C", str(ROOT), "-o", "install", "-o", f"{VENV}/.installed",
           f"VENV={VENV}", f"STARTER={starter}", f"FACES={faces}", *(f"{k}={v}" for k, v in KNOBS.items()),
           "starter-model"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    echoed = r.stdout.replace("\\\n", " ")  # make echoes a continued command line as written
    ran = [ln[len(str(VENV / "bin")) + 1 :] for ln in echoed.splitlines() if ln.startswith(f"{VENV}/bin/acfd-")]
    return out, ran


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, Path, str, list[str]]:
    if shutil.which("make") is None:
        pytest.skip("no make")
    base = tmp_path_factory.mktemp("recipe")
    faces = _faces(base / "faces")
    starter = base / "starter"
    out, ran = _make(starter, faces)
    return starter, faces, out, ran


def _step(cmd: str) -> str:
    """A recipe command in short: its tool and what it works on (``validate swaps-test/c23``)."""
    words = cmd.split()
    if words[:2] == ["acfd-scan", "validate"]:
        fake = words[words.index("--fake") + 1]
        return f"validate {Path(fake).parts[-4]}/{Path(fake).name}"
    return f"{words[1]} {Path(words[2]).name}" if words[1] in ("swaps", "synth") else words[1]


def test_every_step_runs_once_in_order(made):
    _, _, _, ran = made
    assert [_step(c) for c in ran] == [
        "people", "synth synth", "prepare", "fit", "export", "swaps swaps-selection", "validate swaps-selection/c23",
        "validate swaps-selection/c40", "swaps swaps-test", "validate swaps-test/c23", "validate swaps-test/c40",
    ]  # fmt: skip
    assert f"--far {FAR} --set-threshold" in ran[7] and "--set-threshold" not in " ".join(ran[:7] + ran[8:])
    assert all("--fakes synthetic" in c for c in ran if c.startswith("acfd-scan"))
    assert all(c.endswith("--workers 0") or " --workers 0 " in c for c in ran if c.startswith("acfd-scan"))


def test_the_card_of_the_starter_model(made):
    starter, faces, _, _ = made
    people = json.loads((starter / "people.json").read_text())
    assert people["counts"]["persons"] == 6 and people["counts"]["held_out_persons"] == 4
    held = {f["hash"]: Path(f["path"]).stem for p in people["persons"] if p["held_out"] for f in p["files"]}
    kept = {Path(f["path"]).stem for p in people["persons"] if not p["held_out"] for f in p["files"]}
    assert len(held) == 4 and len(kept) == 2

    meta = read_meta(starter / "starter.onnx")
    card = meta.card
    assert isinstance(card, ModelCard) and meta.precision == "fp16"
    assert (card.preset, card.image_size, card.steps) == ("paper", 64, 2)

    # Trained on the two kept persons only: their self-blends, none of a held-out person's files.
    t = card.training
    assert t is not None and (t.kind, t.forgeries) == ("synth", "synthetic")
    assert t.persons == 2
    assert t.sources == tuple(sorted({REPOS[n] for n in kept}))  # the corpora, from the manifest
    synth = json.loads((starter / "synth" / "synth.json").read_text())
    used = {v["source"] for v in synth["videos"].values()}
    assert {Path(s).stem for s in used} == kept
    assert not {content_hash(s) for s in used} & held.keys()
    assert sorted(Path(s).stem for s in synth["excluded"]) == sorted(held.values())

    # Four evaluations: selection c23, selection c40 (which set the threshold at FAR), test c23, test c40.
    evs = card.evaluations
    assert len(evs) == 4
    where = [re.search(r"fake: .*/(swaps-\w+)/manipulated_sequences/FaceSwapLandmarks/(c\d\d)$", e.data) for e in evs]
    assert [m.groups() if m else None for m in where] == [
        ("swaps-selection", "c23"), ("swaps-selection", "c40"), ("swaps-test", "c23"), ("swaps-test", "c40")]
    assert [e.kind for e in evs] == ["swaps"] * 4
    assert [e.settings["half"] for e in evs] == ["selection", "selection", "test", "test"]
    persons = {}
    for half in ("selection", "test"):
        marker = json.loads((starter / f"swaps-{half}" / "acfd-synth.json").read_text())
        assert marker["half"] == half
        persons[half] = set(marker["persons"])
    # the halves are two held-out persons each, and no one is in both
    assert len(persons["selection"]) == len(persons["test"]) == 2 and not persons["selection"] & persons["test"]
    held_ids = {p["id"] for p in people["persons"] if p["held_out"]}
    assert persons["selection"] | persons["test"] == held_ids

    sel40 = evs[1]
    assert sel40.metrics["far"] == FAR and sel40.metrics["threshold_at_far"] == meta.threshold
    assert evs[0].metrics["far"] == 0.01  # validate's default: only the c40 step sets a threshold
    assert card.threshold_source.startswith(f"acfd-scan validate: FAR <= {FAR:g} on 2 real videos of an acfd-train "
                                            f"swaps set (selection half) (fingerprint {sel40.fingerprint})")  # fmt: skip
    # the test half is measured at the threshold the selection half chose
    assert evs[2].threshold == evs[3].threshold == meta.threshold != evs[0].threshold
    for e in evs:
        assert (e.n_real, e.n_fake, e.fakes, e.counts) == (2, 2, "synthetic", False)
        assert "at least 20 per class are needed" in e.reason
        assert e.one_line().endswith(f"on 2 real + 2 synthetic face-swap videos ({e.date[:10]})")
    assert card.validation == "none"


def test_an_interrupted_test_half_reruns_only_the_test_steps(made):
    starter, faces, _, _ = made
    earlier = [starter / p for p in ("people.json", "swaps-selection/swaps.json", "synth/synth.json",
                                     "cache/summary.json", "run/done", "model.fp16.onnx", "selected-c23.onnx",
                                     "selected.onnx")]  # fmt: skip
    before = {p: p.stat().st_mtime_ns for p in earlier}
    selected = read_meta(starter / "selected.onnx").card
    (starter / "starter.onnx").unlink()
    (starter / "test-c23.onnx").unlink()
    shutil.rmtree(starter / "swaps-test")

    _, ran = _make(starter, faces)
    assert [_step(c) for c in ran] == ["swaps swaps-test", "validate swaps-test/c23", "validate swaps-test/c40"]
    assert {p: p.stat().st_mtime_ns for p in earlier} == before
    card = read_meta(starter / "starter.onnx").card
    assert card.evaluations[:2] == selected.evaluations  # the selection half's record, untouched
    assert [e.settings["half"] for e in card.evaluations] == ["selection", "selection", "test", "test"]
