"""The model card: what a model was trained on, how it was initialised, and every evaluation it has had.

A card travels inside every artifact (the ``card`` field of :class:`acfd.schemas.artifact.ArtifactMeta`:
safetensors header, ONNX ``metadata_props``, TensorRT plan header) and is stored with the model in
the verdict store (``models.card_json``). From its evaluations it derives the model's *validation
state*, which the scanner prints with every result:

- ``none``: no evaluation on at least :data:`MIN_VIDEOS_PER_CLASS` labelled videos per class that
  were not training data (compared by content hash): verdicts from it are not evidence;
- ``synthetic``: validated, but only on forgeries made by a program (self-blends, scripted swaps);
- ``real``: validated on real forgeries (for example the FaceForensics++ test split).

Readers keep fields they do not know (a newer acfd may add some), and validate the ones they do.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .errors import AcfdError

CARD_VERSION = 1
# Below this many labelled videos per class (after removing training videos) an AUC moves by more
# than 0.1 by chance: such an evaluation is recorded but does not validate the model.
MIN_VIDEOS_PER_CLASS = 20

# At or below this AUC a measured model is said to be close to chance (with 20-40 videos per class an
# AUC moves by about 0.05 by chance alone).
CHANCE_AUC = 0.6

VALIDATION_NONE = "none"
# The file an acfd-made dataset (`acfd-train synth` or `swaps` output) carries at its root: its kind and how
# its forgeries were made. Written by the training stack, read by `prepare` and by `acfd-scan validate`.
DATASET_MARKER = "acfd-synth.json"
VALIDATION_SYNTHETIC = "synthetic"
VALIDATION_REAL = "real"
VALIDATION_STATES = (VALIDATION_NONE, VALIDATION_SYNTHETIC, VALIDATION_REAL)

FAKES_REAL = "real"
FAKES_SYNTHETIC = "synthetic"
FAKES_KINDS = (FAKES_REAL, FAKES_SYNTHETIC)

# Evaluation.kind: what the labelled data was ("" for a user's own folders).
EVAL_SWAPS = "swaps"
EVAL_SYNTH = "synth"
EVAL_FFPP = "ffpp"

# What each state means, in the words the scanner's summary, JSONL consumers and the report use.
VALIDATION_BANNERS = {
    VALIDATION_NONE: "unvalidated model: verdicts from an unvalidated model are not evidence",
    VALIDATION_SYNTHETIC: (
        "validated on synthetic forgeries only: its accuracy on real deepfakes is unknown; "
        "treat verdicts as leads, not evidence"
    ),
    VALIDATION_REAL: "validated on real forgeries",
}

# Content hashes kept in a card are shortened to this many hex digits: enough to tell a few hundred
# thousand videos apart, small enough for a card that lists every training video.
SHORT_HASH = 16


class CardError(AcfdError, ValueError):
    """A model card that is malformed (wrong types, unknown validation words)."""


def short_hash(content_hash: str) -> str:
    """A content hash (``ht1:<sha256 hex>``) shortened for cards; comparisons use this form."""
    h = content_hash.split(":", 1)[-1]
    return h[:SHORT_HASH]


def fingerprint(content_hashes: Iterable[str]) -> str:
    """One id for a set of videos: sha256 over their sorted short content hashes (first 16 hex)."""
    h = hashlib.sha256()
    for s in sorted({short_hash(c) for c in content_hashes}):
        h.update(s.encode())
        h.update(b"\n")
    return h.hexdigest()[:SHORT_HASH]


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def _split_known(cls: type, d: Mapping[str, Any], what: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if not isinstance(d, Mapping):
        raise CardError(f"{what} must be a JSON object, got {type(d).__name__}")
    names = {f.name for f in fields(cls)} - {"unknown"}
    known = {k: v for k, v in d.items() if k in names}
    unknown = {k: v for k, v in d.items() if k not in names}
    return known, unknown


def _to_dict(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(obj):
        if f.name == "unknown":
            continue
        v = getattr(obj, f.name)
        if isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    out.update(getattr(obj, "unknown", {}))
    return out


@dataclass(frozen=True)
class TrainingData:
    """What a model learned from. ``video_hashes``: short content hashes of every train/val video file."""

    kind: str = "unknown"  # "ffpp", "synth" (acfd-train synth), "swaps" (acfd-train swaps), or "unknown"
    forgeries: str = "unknown"  # "real" (FF++ methods), "synthetic" (made by a program), "unknown"
    root: str = ""  # the dataset folder as the trainer named it
    fingerprint: str = ""  # fingerprint() of video_hashes
    counts: dict[str, int] = field(default_factory=dict)  # "method/quality" -> training videos
    video_hashes: tuple[str, ...] = ()
    # Corpora (source repositories) the footage came from, where known, else the source names given to
    # the trainer: their terms bind the weights.
    sources: tuple[str, ...] = ()
    persons: int = 0  # distinct real persons the training footage shows (0: unknown)
    unknown: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.forgeries not in (*FAKES_KINDS, "unknown"):
            raise CardError(f"training forgeries must be real, synthetic or unknown, not {self.forgeries!r}")
        if not all(isinstance(v, int) for v in self.counts.values()):
            raise CardError("training counts must be integers")
        if not isinstance(self.persons, int) or isinstance(self.persons, bool) or self.persons < 0:
            raise CardError(f"training persons must be an integer >= 0, not {self.persons!r}")

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainingData:
        known, unknown = _split_known(cls, d, "card training data")
        for k in ("video_hashes", "sources"):
            if k in known:
                known[k] = tuple(str(x) for x in known[k])
        if "counts" in known:
            known["counts"] = {str(k): int(v) for k, v in dict(known["counts"]).items()}
        if known.get("persons") is None:  # older cards: unknown
            known.pop("persons", None)
        elif not isinstance(known["persons"], int):
            raise CardError(f"training persons must be an integer, not {known['persons']!r}")
        return cls(**known, unknown=unknown)

    @property
    def total_videos(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class Evaluation:
    """One measurement of a model on labelled data (``acfd-scan validate`` or ``acfd-train evaluate``)."""

    tool: str  # "acfd-scan validate" or "acfd-train evaluate"
    level: str  # "video" (one score per video) or "frame"
    fakes: str  # "real" or "synthetic": how the fake videos were made
    n_real: int  # labelled videos used, per class, after removing training videos
    n_fake: int
    metrics: dict[str, float | None] = field(default_factory=dict)  # auc, acc, tar_at_far_0.01, ...
    data: str = ""  # the folders or the split, for people
    fingerprint: str = ""  # fingerprint() of the evaluated videos' content hashes (or of the split)
    date: str = ""  # ISO 8601, UTC
    threshold: float | None = None  # the decision threshold ACC was measured at
    n_training_overlap: int = 0  # labelled videos dropped because the model was trained on them
    counts: bool = False  # whether this evaluation makes the model validated
    reason: str = ""  # why it does not, when it does not
    settings: dict[str, Any] = field(default_factory=dict)  # sampling, aggregation, ...
    # What the labelled data was: "swaps" (acfd-train swaps: cross-identity face swaps), "synth"
    # (self-blends), "ffpp" (the FaceForensics++ layout), or "" (a user's own folders).
    kind: str = ""
    unknown: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.fakes not in FAKES_KINDS:
            raise CardError(f"evaluation fakes must be 'real' or 'synthetic', not {self.fakes!r}")
        if self.n_real < 0 or self.n_fake < 0:
            raise CardError("evaluation counts must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Evaluation:
        known, unknown = _split_known(cls, d, "card evaluation")
        try:
            return cls(**known, unknown=unknown)
        except TypeError as e:  # a required field is missing
            raise CardError(f"invalid card evaluation: {e}") from e

    @classmethod
    def judged(cls, *, level: str, n_real: int, n_fake: int, n_training_overlap: int = 0, **kw: Any) -> Evaluation:
        """An evaluation whose ``counts``/``reason`` follow the validation rule (20 videos per class,
        video level, none of them training data)."""
        reasons = []
        if level != "video":
            reasons.append("measured per frame, not per video")
        if n_real < MIN_VIDEOS_PER_CLASS or n_fake < MIN_VIDEOS_PER_CLASS:
            reasons.append(
                f"{n_real} real and {n_fake} fake videos: at least {MIN_VIDEOS_PER_CLASS} per class "
                "are needed"
            )
        if n_training_overlap:
            reasons.append(f"{n_training_overlap} labelled videos were training data and were left out")
        counts = level == "video" and n_real >= MIN_VIDEOS_PER_CLASS and n_fake >= MIN_VIDEOS_PER_CLASS
        return cls(level=level, n_real=n_real, n_fake=n_fake, n_training_overlap=n_training_overlap,
                   counts=counts, reason="; ".join(reasons), date=kw.pop("date", "") or now_iso(), **kw)

    @property
    def validates(self) -> bool:
        """Whether this evaluation makes a model validated: the rule is checked again on the numbers, so
        a card edited to say ``counts: true`` over 3 videos validates nothing."""
        return (
            self.counts
            and self.level == "video"
            and self.n_real >= MIN_VIDEOS_PER_CLASS
            and self.n_fake >= MIN_VIDEOS_PER_CLASS
        )

    def one_line(self) -> str:
        auc = self.metrics.get("auc")
        auc_s = f"AUC {auc:.3f}" if isinstance(auc, (int, float)) else "AUC n/a"
        if isinstance(auc, (int, float)) and auc <= CHANCE_AUC:
            auc_s += " (close to chance: the model does not tell these fakes apart)"
        what = "synthetic face-swap videos" if self.kind == EVAL_SWAPS else f"{self.fakes}-fake videos"
        return f"{auc_s} on {self.n_real} real + {self.n_fake} {what} ({self.date[:10]})"


@dataclass(frozen=True)
class ModelCard:
    """A model's provenance and measured quality; see the module docstring."""

    version: int = CARD_VERSION
    preset: str = ""
    image_size: int = 0
    steps: int = 0
    backbone_init: str = "unknown"  # "imagenet", "random", or "file:NAME sha256:HEX12"
    threshold_source: str = "default: (r- + r+) / 2"
    training: TrainingData | None = None
    evaluations: tuple[Evaluation, ...] = ()
    notes: str = ""  # free text: what this model is for, its terms
    unknown: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.version, int) or self.version < 1:
            raise CardError(f"card version must be a positive integer, not {self.version!r}")

    # -- (de)serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = _to_dict(self)
        d["training"] = None if self.training is None else self.training.to_dict()
        d["evaluations"] = [e.to_dict() for e in self.evaluations]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelCard:
        known, unknown = _split_known(cls, d, "model card")
        if known.get("training") is not None:
            known["training"] = TrainingData.from_dict(known["training"])
        if "evaluations" in known:
            evs = known["evaluations"]
            if not isinstance(evs, list):
                raise CardError("card evaluations must be a list")
            known["evaluations"] = tuple(Evaluation.from_dict(e) for e in evs)
        try:
            return cls(**known, unknown=unknown)
        except TypeError as e:
            raise CardError(f"invalid model card: {e}") from e

    # -- what it says --------------------------------------------------------------------------------
    @property
    def validation(self) -> str:
        """``real``, ``synthetic`` or ``none`` (see the module docstring)."""
        counting = [e for e in self.evaluations if e.validates]
        if any(e.fakes == FAKES_REAL for e in counting):
            return VALIDATION_REAL
        if counting:
            return VALIDATION_SYNTHETIC
        return VALIDATION_NONE

    def best_evaluation(self) -> Evaluation | None:
        """The evaluation behind the validation state (newest of the strongest kind), else the newest."""
        counting = [e for e in self.evaluations if e.validates]
        pool = [e for e in counting if e.fakes == FAKES_REAL] or counting or list(self.evaluations)
        return max(pool, key=lambda e: e.date) if pool else None

    def trained_on(self) -> str:
        t = self.training
        if t is None:
            return "unknown data"
        kind = {
            "ffpp": "FaceForensics++-layout data",
            "synth": "self-blended (synthetic) forgeries",
            "swaps": "cross-identity face swaps (a validation set)",
        }.get(t.kind, "unknown data")
        return f"{kind}, {t.total_videos} videos" if t.total_videos else kind

    def one_line(self) -> str:
        """The card in one line, as the scanner prints it at the start and in its summary."""
        parts = [
            f"{self.preset or 'unknown preset'} {self.image_size or '?'} px",
            f"{self.steps} steps" if self.steps else "steps unknown",
            f"init {self.backbone_init}",
            f"trained on {self.trained_on()}",
        ]
        ev = self.best_evaluation()
        state = self.validation
        if state == VALIDATION_NONE:
            v = "UNVALIDATED"
            if ev is not None and ev.reason:
                v += f" ({ev.reason})"
        else:
            v = f"validated on {state} forgeries: {ev.one_line()}" if ev else f"validated on {state} forgeries"
        return "; ".join(parts) + "; " + v

    def with_evaluation(self, ev: Evaluation) -> ModelCard:
        return replace(self, evaluations=(*self.evaluations, ev))

    def training_overlap(self, content_hashes: Iterable[str]) -> set[str]:
        """The given content hashes that belong to this model's training videos."""
        if self.training is None:
            return set()
        train = set(self.training.video_hashes)
        return {c for c in content_hashes if short_hash(c) in train}


def validation_banner(state: str) -> str:
    """The sentence shown for a validation state."""
    try:
        return VALIDATION_BANNERS[state]
    except KeyError:
        raise CardError(f"unknown validation state {state!r}") from None


def card_validation(card: ModelCard | None) -> str:
    """The validation state of a possibly missing card (an artifact without a card is unvalidated)."""
    return VALIDATION_NONE if card is None else card.validation
