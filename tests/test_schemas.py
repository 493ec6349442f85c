from __future__ import annotations

import json

import pytest
from acfd.schemas.artifact import ArtifactError, ArtifactMeta
from acfd.schemas.card import (
    MIN_VIDEOS_PER_CLASS,
    CardError,
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
        '{"threshold": -1.0}',
        '{"threshold": 0.0}',
        '{"score": "probability", "r_minus": 0.0, "r_plus": 1.0, "threshold": 1.5}',
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


def test_training_persons_and_evaluation_kind_round_trip():
    t = TrainingData(kind="synth", forgeries="synthetic", sources=("1adrianb/face-alignment", "YadiraF/PRNet"),
                     persons=212, counts={"real/c23+c40": 10})  # fmt: skip
    swaps = _ev("synthetic", 24, 24, auc=0.81)
    swaps = Evaluation.from_dict(swaps.to_dict() | {"kind": "swaps", "settings": {"half": "selection"}})
    card = ModelCard(preset="paper", training=t, evaluations=(swaps,))
    d = json.loads(json.dumps(card.to_dict()))
    assert d["training"]["persons"] == 212 and d["evaluations"][0]["kind"] == "swaps"
    again = ModelCard.from_dict(d)
    assert again == card
    assert again.training.persons == 212 and again.training.unknown == {}
    assert again.evaluations[0].kind == "swaps" and again.evaluations[0].settings == {"half": "selection"}
    assert again.evaluations[0].unknown == {}  # a known field now, not kept aside as unknown
    # and through an artifact's JSON header
    meta = ArtifactMeta.from_json(ArtifactMeta(preset="paper", card=card).to_json())
    assert meta.card == card


def test_a_card_written_before_persons_and_kind_still_reads():
    old = {"version": 1, "preset": "paper", "training": {"kind": "synth", "forgeries": "synthetic",
                                                        "sources": ["skimage.data.astronaut"]},
           "evaluations": [{"tool": "acfd-scan validate", "level": "video", "fakes": "synthetic", "n_real": 20,
                            "n_fake": 20, "counts": True, "metrics": {"auc": 0.7}, "date": "2025-01-02T00:00:00"}]}
    card = ModelCard.from_dict(old)
    assert card.training.persons == 0  # unknown
    assert card.evaluations[0].kind == ""  # a user's own folders, as far as anyone can tell
    assert card.validation == "synthetic"
    assert "AUC 0.700 on 20 real + 20 synthetic-fake videos (2025-01-02)" in card.one_line()
    assert ModelCard.from_dict(old | {"training": old["training"] | {"persons": None}}).training.persons == 0
    for bad in (-1, "12", 1.5, True):
        with pytest.raises(CardError, match="training persons must be"):
            ModelCard.from_dict(old | {"training": old["training"] | {"persons": bad}})


def test_one_line_names_face_swaps_and_trained_on_words():
    n = MIN_VIDEOS_PER_CLASS
    ev = Evaluation.judged(tool="acfd-scan validate", level="video", fakes="synthetic", n_real=n, n_fake=n + 2,
                           metrics={"auc": 0.8125}, kind="swaps", date="2026-03-04T05:06:07+00:00")  # fmt: skip
    assert ev.one_line() == "AUC 0.812 on 20 real + 22 synthetic face-swap videos (2026-03-04)"
    card = ModelCard(training=TrainingData(kind="synth", forgeries="synthetic", counts={"real/c23+c40": 8}),
                     evaluations=(ev,))  # fmt: skip
    assert card.one_line().endswith(
        "trained on self-blended (synthetic) forgeries, 8 videos; validated on synthetic forgeries: "
        "AUC 0.812 on 20 real + 22 synthetic face-swap videos (2026-03-04)"
    )
    synth = Evaluation.from_dict(ev.to_dict() | {"kind": "synth"})
    assert synth.one_line() == "AUC 0.812 on 20 real + 22 synthetic-fake videos (2026-03-04)"
    on_swaps = ModelCard(training=TrainingData(kind="swaps", forgeries="synthetic", counts={"real/c23+c40": 4}))
    assert on_swaps.trained_on() == "cross-identity face swaps (a validation set), 4 videos"


def test_distance_threshold_may_lie_above_r_plus():
    # r- and r+ are training margins: a briefly trained model's threshold (measured at a FAR) may be 45
    meta = ArtifactMeta.from_json('{"threshold": 45.85}')
    assert meta.threshold == 45.85 and meta.r_plus == 18.0
    assert ArtifactMeta(threshold=0.05).threshold == 0.05  # below r- = 0.1 is a threshold too
