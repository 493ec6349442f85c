"""Metadata carried by every exported model artifact (ONNX, TensorRT plan, checkpoint).

The scanner never assumes preprocessing by convention: it reads input size, layout, normalisation,
crop margin and decision threshold from here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from typing import Any

from .card import CardError, ModelCard
from .errors import AcfdError

# Preprocessing: the paper's 299x299 XceptionNet input (Cao et al., "Metric Learning for
# Anti-Compression Facial Forgery Detection"), the face box enlarged 1.3x (FaceForensics++'s crop),
# and the Inception-style normalisation of timm's legacy_xception.
DEFAULT_INPUT_SIZE = 299
DEFAULT_CROP_MARGIN = 1.3
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)
R_MINUS = 0.1
R_PLUS = 18.0

# Key under which the metadata is stored (ONNX metadata_props, engine header, checkpoint sidecar).
META_KEY = "acfd.meta"
SCHEMA_VERSION = 1


def project_version() -> str:
    """The installed acfd version ("" when running from an uninstalled tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("acfd")
    except PackageNotFoundError:
        return ""


class ArtifactError(AcfdError, ValueError):
    """A model artifact is missing, corrupt, of the wrong kind or lacks valid metadata."""


def threshold_problem(score: str, threshold: float) -> str | None:
    """Why ``threshold`` cannot be a decision threshold for scores of kind ``score``, or None.

    A distance threshold is any positive finite number: r- and r+ are the margins training pulls toward,
    not bounds on the scores (a briefly trained model's real faces may all score above r+, and the
    threshold a user measures at a false-alarm rate then lies there too). A probability's lies in (0, 1).
    """
    t = float(threshold)
    if not math.isfinite(t):
        return f"threshold {threshold} must be a finite number"
    if score == "probability" and not 0.0 < t < 1.0:
        return f"threshold {t:.6g} must lie strictly between 0 and 1 (the model scores a probability)"
    if t <= 0.0:
        return f"threshold {t:.6g} must be positive (the model scores a distance, and every face is at >= 0)"
    return None


@dataclass(frozen=True)
class ArtifactMeta:
    """Everything needed to feed a model and read its outputs; stored inside each artifact."""

    input_size: int = DEFAULT_INPUT_SIZE
    # Model input is a batch of RGB uint8 crops, NHWC; normalisation happens inside the graph.
    input_layout: str = "NHWC-uint8-RGB"
    mean: tuple[float, float, float] = DEFAULT_MEAN
    std: tuple[float, float, float] = DEFAULT_STD
    crop_margin: float = DEFAULT_CROP_MARGIN
    r_minus: float = R_MINUS
    r_plus: float = R_PLUS
    # Decision rule of the paper: fake if distance > threshold, by default (r- + r+) / 2.
    threshold: float = (R_MINUS + R_PLUS) / 2
    # "distance": L2 norm of the embedding (metric-loss presets); "probability": P(fake) from a
    # cross-entropy head (r_minus=0, r_plus=1, threshold=0.5).
    score: str = "distance"
    # Side of the attention map output (0: the model has no attention layer, no such output).
    attention_size: int = 19
    preset: str = "paper"
    config_hash: str = ""
    model_id: str = ""
    precision: str = "fp32"
    project_version: str = ""
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, str] = field(default_factory=dict)
    # Provenance and measured quality (acfd.schemas.card); None for artifacts made before cards.
    card: ModelCard | None = None
    # Fields written by a newer acfd that this one does not know: kept and written back unchanged,
    # so an older reader never strips what a newer writer added.
    unknown: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.input_size < 32:
            raise ArtifactError(f"input_size {self.input_size} is too small")
        if self.input_layout != "NHWC-uint8-RGB":
            raise ArtifactError(f"unsupported input layout {self.input_layout!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ArtifactError("mean/std must have 3 entries and std must be positive")
        if self.crop_margin < 1.0:
            raise ArtifactError(f"crop_margin {self.crop_margin} must be >= 1")
        if self.score not in ("distance", "probability"):
            raise ArtifactError(f"unknown score kind {self.score!r}")
        problem = threshold_problem(self.score, self.threshold)
        if problem:
            raise ArtifactError(problem)
        if self.schema_version > SCHEMA_VERSION:
            raise ArtifactError(
                f"artifact metadata version {self.schema_version} is newer than this acfd understands "
                f"({SCHEMA_VERSION}); upgrade acfd"
            )

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("card", "unknown")}
        d["extra"] = dict(self.extra)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        if self.card is not None:
            d["card"] = self.card.to_dict()
        d.update(self.unknown)
        return d

    @property
    def validation(self) -> str:
        """The card's validation state: ``none``, ``synthetic`` or ``real`` (no card: ``none``)."""
        from .card import card_validation

        return card_validation(self.card)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArtifactMeta:
        """Validate the known fields; keep unknown ones (forward compatible) in ``unknown``."""
        names = {f.name for f in fields(cls)} - {"unknown"}
        kw = {k: v for k, v in d.items() if k in names}
        unknown = {k: v for k, v in d.items() if k not in names}
        try:
            for k in ("mean", "std"):
                if k in kw:
                    kw[k] = tuple(float(v) for v in kw[k])
            if kw.get("card") is not None:
                kw["card"] = ModelCard.from_dict(kw["card"])
            if "extra" in kw and not isinstance(kw["extra"], dict):
                raise TypeError("extra must be an object")
            for k in ("input_size", "attention_size", "schema_version"):
                if k in kw and (not isinstance(kw[k], int) or isinstance(kw[k], bool)):
                    raise TypeError(f"{k} must be an integer, not {kw[k]!r}")
            for k in ("crop_margin", "r_minus", "r_plus", "threshold"):
                if k in kw:
                    kw[k] = float(kw[k])
            return cls(**kw, unknown=unknown)
        except (TypeError, ValueError) as e:  # wrong types inside a corrupt header
            if isinstance(e, ArtifactError):
                raise
            msg = str(e) if isinstance(e, CardError) else f"invalid artifact metadata: {e}"
            raise ArtifactError(msg) from e

    @classmethod
    def from_json(cls, s: str | bytes) -> ArtifactMeta:
        try:
            d = json.loads(s)
        except (ValueError, UnicodeDecodeError) as e:
            raise ArtifactError(f"artifact metadata is not valid JSON: {e}") from e
        if not isinstance(d, dict):
            raise ArtifactError("artifact metadata must be a JSON object")
        return cls.from_dict(d)
