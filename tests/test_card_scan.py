"""The model card travels with every result: for each validation state (none, synthetic, real) a real
scan prints the card and the state on stderr (at the start and in the summary), every JSONL line
carries ``model_validation``, the ``models`` row holds the card, and the report opens with a banner
styled by the state and shows the full card.

The three models are copies of the tiny ONNX test model (``tests/scan_helpers.py``) whose metadata
(``acfd.meta``) carries a card with the evaluations that make each state.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import re
import sqlite3
from html.parser import HTMLParser
from pathlib import Path

import pytest
from acfd.scanner.cli import main
from acfd.scanner.report import ReportConfig, build_report
from acfd.schemas.artifact import META_KEY, ArtifactMeta
from acfd.schemas.card import (
    VALIDATION_BANNERS,
    Evaluation,
    ModelCard,
    TrainingData,
    fingerprint,
    validation_banner,
)
from click.testing import CliRunner

from tests import scan_helpers as H
from tests.report_helpers import MODEL_A, MODEL_B, populate

HOSTILE = '<img src=x onerror=alert(7)>"'
TRAINING = TrainingData(
    kind="synth", forgeries="synthetic", root="/data/synth", fingerprint=fingerprint(["ht1:aa", "ht1:bb"]),
    counts={"original/c23": 12, "selfblend/c23": 12}, video_hashes=("aa", "bb"), sources=("scikit-image astronaut",),
)  # fmt: skip


def _ev(fakes: str, n: int, auc: float, data: str = "held-out folders") -> Evaluation:
    return Evaluation.judged(
        tool="acfd-scan validate", level="video", fakes=fakes, n_real=n, n_fake=n,
        metrics={"auc": auc, "acc": 0.8, "tar_at_far_0.01": None}, threshold=9.05, data=data,
        date="2026-11-20T10:00:00+00:00",
    )  # fmt: skip


def _card(*evaluations: Evaluation) -> ModelCard:
    return ModelCard(preset="test-tiny", image_size=64, steps=24, backbone_init="random", training=TRAINING,
                     evaluations=evaluations)  # fmt: skip


CARDS = {
    # 5 per class is below the 20 a validation needs: recorded, not counted
    "none": _card(_ev("synthetic", 5, 0.91, data=HOSTILE)),
    "synthetic": _card(_ev("synthetic", 5, 0.91), _ev("synthetic", 25, 0.97)),
    "real": _card(_ev("synthetic", 25, 0.97), _ev("real", 30, 0.88)),
}


def with_card(src: Path, dst: Path, card: ModelCard) -> Path:
    """A copy of the ONNX artifact ``src`` whose metadata carries ``card``."""
    import onnx

    model = onnx.load(str(src))
    props = {p.key: p.value for p in model.metadata_props}
    meta = dataclasses.replace(ArtifactMeta.from_json(props[META_KEY]), card=card)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {**props, META_KEY: meta.to_json()})
    onnx.save(model, str(dst))
    return dst


class Page(HTMLParser):
    """Start tags with their attributes, and the page text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def all(self, tag: str, cls: str | None = None) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag and (cls is None or cls in (a.get("class") or "").split())]


def parse(page: str) -> Page:
    p = Page()
    p.feed(page)
    return p


def element_text(page: str, tag: str, cls: str) -> list[str]:
    """The text of each ``<tag class="... cls ...">`` (not nested in itself), markup removed."""
    out = []
    for m in re.finditer(rf'<{tag} class="[^"]*\b{re.escape(cls)}\b[^"]*"[^>]*>(.*?)</{tag}>', page, re.S):
        out.append(html.unescape(re.sub(r"<[^>]+>", "", m.group(1))))
    return out


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """One real scan (a face video and a broken file, 2 frames) per validation state, and its report."""
    root = tmp_path_factory.mktemp("cards")
    base = H.make_model(root / "base.onnx", H.FAKE_BIAS)  # every face scores about 15: fake
    vids = root / "videos"
    vids.mkdir()
    H.face_video(vids / "face.mp4", n=4, fps=10)
    (vids / "broken.mp4").write_bytes(b"not a video\n" * 30)
    out = {}
    for state, card in CARDS.items():
        model = with_card(base, root / f"{state}.onnx", card)
        dbp, jsonl, report = root / f"{state}.sqlite", root / f"{state}.jsonl", root / f"report-{state}"
        r = CliRunner().invoke(main, [str(vids), "--model", str(model), "--db", str(dbp), "--frames", "2",
                                      "--workers", "0", "--jsonl", str(jsonl), "-q"])  # fmt: skip
        rep = CliRunner().invoke(main, ["report", "--db", str(dbp), "--out", str(report), "--only", "all"])
        out[state] = (r, rep, model, dbp, jsonl, report)
    return out


def test_cards_make_the_three_states():
    assert {s: c.validation for s, c in CARDS.items()} == {"none": "none", "synthetic": "synthetic", "real": "real"}


@pytest.mark.parametrize("state", ["none", "synthetic", "real"])
def test_stderr_shows_the_card_at_the_start_and_in_the_summary(scans, state):
    r, _, model, _, _, _ = scans[state]
    assert r.exit_code == 3, r.output  # flagged | errors
    card = CARDS[state]
    model_id = hashlib.sha256(model.read_bytes()).hexdigest()[:12]
    card_line = f"model: {model} ({model_id}): {card.one_line()}"
    lines = r.stderr.splitlines()
    start = lines.index(card_line)
    scan_line = next(i for i, x in enumerate(lines) if re.match(r"scan \d+: ", x))
    assert start < scan_line  # printed before the scan, after the model was loaded
    warning = f"WARNING: {VALIDATION_BANNERS[state]}"
    if state == "real":
        assert "validated on real forgeries: AUC 0.880 on 30 real + 30 real-fake videos" in card_line
        assert not [x for x in lines[:scan_line] if "WARNING" in x]
        assert lines[scan_line - 1] == card_line
    else:
        assert lines[start + 1] == warning
    if state == "none":
        assert lines[start + 1] == "WARNING: unvalidated model: verdicts from an unvalidated model are not evidence"
        assert "UNVALIDATED (5 real and 5 fake videos: at least 20 per class are needed)" in card_line
    if state == "synthetic":
        assert "not evidence" in lines[start + 1] and "synthetic forgeries only" in lines[start + 1]
    # The summary repeats the card and the state, one line each.
    summary = lines[scan_line:]
    assert f"  {card_line}" in summary
    expect = "validated on real forgeries" if state == "real" else warning
    assert f"  validation: {state}: {expect}" in summary
    assert len([x for x in lines if "validation:" in x]) == 1


@pytest.mark.parametrize("state", ["none", "synthetic", "real"])
def test_every_jsonl_line_and_the_models_row_carry_the_state(scans, state):
    _, _, model, dbp, jsonl, _ = scans[state]
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert sorted(Path(x["path"]).name for x in lines) == ["broken.mp4", "face.mp4"]
    assert [x["model_validation"] for x in lines] == [state, state]  # the error line too
    with sqlite3.connect(dbp) as c:
        (row,) = c.execute("SELECT model_id, validation, card_summary, card_json, meta_json FROM models").fetchall()
    model_id, validation, summary, card_json, meta_json = row
    assert model_id == hashlib.sha256(model.read_bytes()).hexdigest()[:16] == lines[0]["model_id"]
    card = CARDS[state]
    assert validation == state
    assert summary == card.one_line()
    assert json.loads(card_json) == card.to_dict()
    assert ModelCard.from_dict(json.loads(meta_json)["card"]) == card


@pytest.mark.parametrize("state", ["none", "synthetic", "real"])
def test_report_banner_and_full_card(scans, state):
    _, rep, _, dbp, _, report = scans[state]
    assert rep.exit_code == 0, rep.output
    page = (report / "index.html").read_text(encoding="utf-8")
    tags = parse(page)
    (banner,) = tags.all("div", "banner")
    assert banner["class"] == f"banner validation-{state}" and banner["data-validation"] == state
    assert banner["role"] == ("note" if state == "real" else "alert")
    (text,) = element_text(page, "div", "banner")
    lead = {"none": "WARNING", "synthetic": "Caution", "real": "Note"}[state]
    assert text.startswith(f"{lead}: {validation_banner(state)}")
    assert "2 videos in this report" in text and f"validation state: {state}" in text
    if state == "none":
        assert "verdicts from an unvalidated model are not evidence" in text
    # The banner comes first in <main>, before the counts.
    assert page.index('class="banner') < page.index('<div class="cards">')
    # The full card: its facts and every evaluation as a row.
    card = CARDS[state]
    (article,) = tags.all("article", "model")
    assert article["data-validation"] == state
    (art_text,) = element_text(page, "article", "model")
    for fact in ("test-tiny", "Image size (px)64", "Training steps24", "Backbone initrandom",
                 "Decision threshold9.05 (default: (r- + r+) / 2)", "Training datasynth (self-blended (synthetic) "
                 "forgeries, 24 videos)", "original/c23 12 · selfblend/c23 12",
                 f"Training fingerprint{TRAINING.fingerprint}", "Training sourcesscikit-image astronaut"):
        assert fact in art_text, fact
    rows = re.findall(r'<table class="evals">.*?<tbody>(.*?)</tbody>', page, re.S)[0].split("<tr>")[1:]
    assert len(rows) == len(card.evaluations)
    for row, ev in zip(rows, card.evaluations, strict=True):
        cells = [html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        assert cells[:5] == ["acfd-scan validate", "video", ev.fakes, str(ev.n_real), str(ev.n_fake)]
        assert cells[5] == f"acc 0.8 · auc {ev.metrics['auc']:.4g} · tar_at_far_0.01 n/a"
        assert cells[6:8] == ["9.05", "2026-11-20T10:00:00+00:00"]
        assert cells[8] == ("yes" if ev.counts else f"no: {ev.reason}")
    # Card text from the artifact is escaped like any other stored text.
    if state == "none":
        assert "<img src=x" not in page and "&lt;img src=x onerror=alert(7)&gt;&quot;" in page
        assert HOSTILE in art_text


def test_report_styles_the_three_states_apart():
    from acfd.scanner.report import _CSS

    styles = {s: re.search(rf"\.banner\.validation-{s} \{{([^}}]*)\}}", _CSS).group(1) for s in CARDS}
    assert len(set(styles.values())) == 3
    assert "#b71c1c" in styles["none"] and "font-size: 17px" in styles["none"]  # strong: red, larger
    assert "#ffb300" in styles["synthetic"]  # weaker: amber
    assert "#b71c1c" not in styles["real"] and "#ffb300" not in styles["real"]  # a plain note


def test_report_of_several_models_leads_with_the_least_validated(tmp_path):
    """Models A (a real-validated card) and B (no card, as after a migration from version 1) behind one report."""
    pop = populate(tmp_path / "acfd.sqlite")
    card = CARDS["real"]
    with sqlite3.connect(pop.path) as c:
        c.execute("UPDATE models SET validation = 'real', card_summary = ?, card_json = ? WHERE model_id = ?",
                  (card.one_line(), json.dumps(card.to_dict()), MODEL_A))  # fmt: skip
        c.execute("UPDATE models SET validation = 'none', card_summary = NULL, card_json = NULL WHERE model_id = ?",
                  (MODEL_B,))  # fmt: skip
    s = build_report(pop.path, ReportConfig(out=tmp_path / "r", only="all"))
    assert s.models == [(MODEL_B, "none"), (MODEL_A, "real")]
    page = (tmp_path / "r" / "index.html").read_text(encoding="utf-8")
    tags = parse(page)
    assert [a["data-validation"] for a in tags.all("div", "banner")] == ["none", "real"]
    assert [a["data-validation"] for a in tags.all("article", "model")] == ["none", "real"]
    none_text, real_text = element_text(page, "div", "banner")
    assert "2 videos" in none_text and "not evidence" in none_text  # scan 2's a_fake and b_real are newest
    assert "7 videos" in real_text
    no_card = element_text(page, "article", "model")[0]
    assert "No model card" in no_card and "unvalidated" in no_card
    # A column that claims more than its card (or no card at all) counts as the weaker.
    with sqlite3.connect(pop.path) as c:
        c.execute("UPDATE models SET validation = 'real' WHERE model_id = ?", (MODEL_B,))
        c.execute("UPDATE models SET validation = 'real', card_json = ? WHERE model_id = ?",
                  (json.dumps(CARDS["synthetic"].to_dict()), MODEL_A))  # fmt: skip
    s = build_report(pop.path, ReportConfig(out=tmp_path / "r2", only="all"))
    assert s.models == [(MODEL_B, "none"), (MODEL_A, "synthetic")]
    # One scan's report names only that scan's models.
    s = build_report(pop.path, ReportConfig(out=tmp_path / "r3", scan_id=2))
    assert s.models == [(MODEL_B, "none")]


def test_card_line_is_one_inert_line():
    """A card comes from an artifact file: its text cannot clear the terminal or split the line."""
    from acfd.scanner.cli import card_line, validation_line, warning_line

    meta = ArtifactMeta(input_size=64, card=dataclasses.replace(CARDS["none"], preset="x\x1b[2J\ny\x9b"))
    line = card_line("m.onnx", "0123456789abcdef", meta)
    assert line.startswith("model: m.onnx (0123456789ab): x\\x1b[2J\\x0ay\\x9b 64 px; ")
    assert not any(c in line for c in "\x1b\n\x9b")
    assert card_line("m.onnx", "0123456789abcdef", ArtifactMeta(input_size=64)) == (
        "model: m.onnx (0123456789ab): no model card (made before cards): unvalidated"
    )
    assert warning_line("real") is None
    assert validation_line("synthetic") == f"validation: synthetic: WARNING: {VALIDATION_BANNERS['synthetic']}"
