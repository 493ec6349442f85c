from __future__ import annotations

import json

import pytest
from acfd.schemas.artifact import ArtifactError, ArtifactMeta
from acfd.schemas.card import (
    MIN_VIDEOS_PER_CLASS,
    Evaluation,
    ModelCard,
    TrainingData,
    fingerprint,
    short_hash,
    validation_banner,
)


def test_meta_roundtrip_and_default_threshold():
    meta = ArtifactMeta(config_hash="abc", preset="paper")
    back = ArtifactMeta.from_json(meta.to_json())
    assert back == meta
    assert back.threshold == pytest.approx((0.1 + 18.0) / 2)
    assert back.card is None and back.validation == "none"


@pytest.mark.parametrize(
    "payload",
    [
        "not json",
        "[1, 2]",
        '{"threshold": 30.0}',
        '{"schema_version": 99}',
        '{"input_size": "299"}',
        '{"card": {"evaluations": "many"}}',
        '{"card": {"evaluations": [{"tool": "x", "level": "video", "fakes": "sometimes", "n_real": 1, "n_fake": 1}]}}',
        '{"card": [1]}',
    ],
)
def test_meta_rejects_bad_headers(payload):
    with pytest.raises(ArtifactError):
        ArtifactMeta.from_json(payload)


def test_meta_keeps_unknown_fields_from_newer_writers():
    """Forward compatible: a field this acfd does not know survives a read and a write back."""
    d = ArtifactMeta(preset="paper").to_dict()
    d["calibration"] = {"method": "isotonic", "points": [1, 2, 3]}
    d["card"] = {"preset": "paper", "future_field": 7, "training": {"kind": "ffpp", "new": "x"}}
    meta = ArtifactMeta.from_json(json.dumps(d))
    assert meta.unknown == {"calibration": {"method": "isotonic", "points": [1, 2, 3]}}
    assert meta.card is not None and meta.card.unknown == {"future_field": 7}
    assert meta.card.training is not None and meta.card.training.unknown == {"new": "x"}
    again = json.loads(meta.to_json())
    assert again["calibration"] == d["calibration"]
    assert again["card"]["future_field"] == 7 and again["card"]["training"]["new"] == "x"


def _ev(fakes: str, n_real: int, n_fake: int, overlap: int = 0, level: str = "video", auc: float = 0.9) -> Evaluation:
    return Evaluation.judged(tool="acfd-scan validate", level=level, fakes=fakes, n_real=n_real, n_fake=n_fake,
                             n_training_overlap=overlap, metrics={"auc": auc})


def test_validation_states_follow_the_rule():
    card = ModelCard(preset="paper", image_size=64, steps=24, backbone_init="random")
    assert card.validation == "none"
    n = MIN_VIDEOS_PER_CLASS
    small = card.with_evaluation(_ev("real", n - 1, n + 5))
    assert small.validation == "none"
    assert "at least 20 per class" in small.evaluations[0].reason
    assert "UNVALIDATED" in small.one_line() and "19 real" in small.one_line()
    frame = card.with_evaluation(_ev("real", 100, 100, level="frame"))
    assert frame.validation == "none"
    synth = card.with_evaluation(_ev("synthetic", n, n, auc=0.8))
    assert synth.validation == "synthetic"
    assert "validated on synthetic forgeries: AUC 0.800 on 20 real + 20 synthetic-fake" in synth.one_line()
    real = synth.with_evaluation(_ev("real", 30, 40, overlap=3, auc=0.7))
    assert real.validation == "real"
    assert real.best_evaluation().metrics["auc"] == 0.7
    assert "close to chance" not in real.one_line()
    assert "AUC 0.550 (close to chance" in card.with_evaluation(_ev("synthetic", n, n, auc=0.55)).one_line()
    assert "3 labelled videos were training data" in real.evaluations[-1].reason
    assert validation_banner("none").endswith("verdicts from an unvalidated model are not evidence")
    # round trip keeps the state
    assert ModelCard.from_dict(json.loads(json.dumps(real.to_dict()))) == real


def test_training_overlap_by_content_hash():
    h1, h2, h3 = ("ht1:" + c * 64 for c in "abc")
    card = ModelCard(training=TrainingData(kind="synth", forgeries="synthetic",
                                           video_hashes=(short_hash(h1), short_hash(h2))))
    assert card.training_overlap([h1, h3]) == {h1}
    assert fingerprint([h1, h2]) == fingerprint([short_hash(h2), h1]) != fingerprint([h1])


def test_a_hand_edited_counts_flag_validates_nothing():
    """The rule is checked on the numbers, not on the stored flag."""
    forged = Evaluation(tool="x", level="video", fakes="real", n_real=3, n_fake=3, counts=True)
    frame = Evaluation(tool="x", level="frame", fakes="real", n_real=50, n_fake=50, counts=True)
    card = ModelCard(evaluations=(forged, frame))
    assert card.validation == "none"
    assert ModelCard(evaluations=(_ev("real", 20, 20),)).validation == "real"
