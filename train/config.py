"""Typed training configuration: one named preset per row of the paper's Table 3, plus ``code``.

A run is described by one frozen :class:`TrainConfig`, validated when it is built and resolved once
(:func:`resolve_config`: preset + command-line overrides + derived threshold). The resolved config is
saved with the run as ``config.json``; its :func:`config_hash` (sha256 of the canonical JSON) travels in
every exported artifact, so a verdict can always be traced to the exact training recipe.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from acfd.schemas.artifact import DEFAULT_MEAN, DEFAULT_STD, R_MINUS, R_PLUS
from acfd.schemas.errors import AcfdError

CONFIG_VERSION = 1

Head = Literal["metric", "ce"]
AttentionKind = Literal["none", "conv", "separable"]
Reduction = Literal["mean", "sum", "code"]
MapTarget = Literal["binary", "soft"]
InputLevel = Literal["lq", "hq"]
Precision = Literal["bf16", "fp16", "fp32"]

_LEVELS = ("raw", "c0", "c23", "c40")


class ConfigError(AcfdError, ValueError):
    """A training configuration is inconsistent or names an unknown preset/field."""


@dataclass(frozen=True)
class ModelConfig:
    """Network topology: the two-branch XceptionNet of Cao et al. (paper §3) and its Table 3 ablations."""

    # 1: a single XceptionNet (the LQ branch alone, Table 3 rows 1-4); 2: the paper's two branches.
    branches: int = 2
    # "metric": embedding C in R^2048 scored by ||C||; "ce": a 2-class linear head, score = P(fake).
    head: Head = "metric"
    # Attention layer after block 7: "conv" (a conv + sigmoid, the paper), "separable" (the authors'
    # code: SeparableConv2d(728->1, 3x3, no bias) + sigmoid), "none".
    attention: AttentionKind = "conv"
    attention_kernel: int = 3
    # WGAN-GP critic on concat(V_H, V_L) vs concat(V_L, V_H) (two branches only).
    gan: bool = True
    critic_width: int = 256

    def __post_init__(self) -> None:
        if self.branches not in (1, 2):
            raise ConfigError(f"model.branches must be 1 or 2, not {self.branches}")
        if self.head not in ("metric", "ce"):
            raise ConfigError(f"model.head must be 'metric' or 'ce', not {self.head!r}")
        if self.attention not in ("none", "conv", "separable"):
            raise ConfigError(f"model.attention must be none/conv/separable, not {self.attention!r}")
        if self.attention_kernel < 1 or self.attention_kernel % 2 == 0:
            raise ConfigError("model.attention_kernel must be a positive odd number")
        if self.gan and self.branches != 2:
            raise ConfigError("model.gan needs two branches (the critic compares V_H with V_L)")
        if self.critic_width < 1:
            raise ConfigError("model.critic_width must be positive")


@dataclass(frozen=True)
class LossConfig:
    """L = L_Dis + lambda_gan L_Gan + lambda_at L_AT, Eq. (1), (5), (6) of the paper."""

    r_minus: float = R_MINUS
    r_plus: float = R_PLUS
    lambda_gan: float = 0.001  # lambda_1
    lambda_at: float = 1.0  # lambda_2
    lambda_pair: float = 0.1  # lambda_3: ||C_h - C_l|| tie between the branches
    # Attention transfer term || M_H/||M_H|| - M_L/||M_L|| || (row 8 vs row 7 of Table 3).
    attention_transfer: bool = True
    gp_weight: float = 10.0  # WGAN-GP lambda; 0 disables the penalty (the authors' code)
    n_critic: int = 1  # critic updates per model update (on the batch's detached features)
    # Batch reduction of the per-sample terms: "mean" (ours: lr independent of the batch size),
    # "sum" (the paper's sums, literally), "code" (the authors' code: sum / batch^2 for the hinges).
    reduction: Reduction = "mean"
    # How the mask is brought to the attention-map size: "binary" = area average then > 0.5 (the same
    # target PBCA scores against), "soft" = the area fraction itself as a soft BCE target.
    map_target: MapTarget = "binary"

    def __post_init__(self) -> None:
        if not 0 <= self.r_minus < self.r_plus:
            raise ConfigError(f"need 0 <= r_minus < r_plus, got {self.r_minus} / {self.r_plus}")
        for name in ("lambda_gan", "lambda_at", "lambda_pair", "gp_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"loss.{name} must be >= 0")
        if self.n_critic < 1:
            raise ConfigError("loss.n_critic must be >= 1")
        if self.reduction not in ("mean", "sum", "code"):
            raise ConfigError(f"loss.reduction must be mean/sum/code, not {self.reduction!r}")
        if self.map_target not in ("binary", "soft"):
            raise ConfigError(f"loss.map_target must be binary/soft, not {self.map_target!r}")


@dataclass(frozen=True)
class DataConfig:
    """What the model sees: crop size and compression levels of the pairs."""

    image_size: int = 299
    # HQ level(s) paired with the LQ level; one crop cache per HQ level (`fit --data` repeated).
    pair_levels: tuple[str, ...] = ("c23",)
    lq_level: str = "c40"
    # Single-branch presets: which crop of each cached pair feeds the branch ("hq" for row 4, c23/c23).
    input: InputLevel = "lq"
    mean: tuple[float, float, float] = DEFAULT_MEAN
    std: tuple[float, float, float] = DEFAULT_STD

    def __post_init__(self) -> None:
        if self.image_size < 32:
            raise ConfigError(f"data.image_size {self.image_size} is too small (>= 32)")
        if not self.pair_levels or any(lv not in _LEVELS for lv in self.pair_levels):
            raise ConfigError(f"data.pair_levels must be a non-empty subset of {_LEVELS}")
        if self.lq_level not in _LEVELS:
            raise ConfigError(f"data.lq_level must be one of {_LEVELS}")
        if self.input not in ("lq", "hq"):
            raise ConfigError(f"data.input must be 'lq' or 'hq', not {self.input!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ConfigError("data.mean/std need 3 entries and a positive std")


@dataclass(frozen=True)
class OptimConfig:
    """Adam, batch, length of training and early stopping (paper §4.2)."""

    lr: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 32
    epochs: int = 20
    max_steps: int | None = None
    # Early stopping: stop after this many validations without a lower validation loss.
    patience: int = 3
    # Critic optimiser: Adam with the WGAN-GP betas (Gulrajani et al. 2017).
    critic_lr: float = 1e-4
    critic_betas: tuple[float, float] = (0.5, 0.9)
    seed: int = 0
    # Mixed precision on CUDA ("bf16" needs no loss scaling; "fp16" uses a GradScaler); CPU runs fp32.
    amp: Precision = "bf16"
    # "Precise BN": before each validation, recompute batch-norm statistics exactly over this many
    # training batches. 0 (the paper) keeps the running averages; short runs from random weights
    # need it, because the averages start at var=1 while the real variances are ~1e-4.
    precise_bn: int = 0

    def __post_init__(self) -> None:
        if not self.lr > 0 or not self.critic_lr > 0:
            raise ConfigError("optim.lr and optim.critic_lr must be positive")
        if self.weight_decay < 0:
            raise ConfigError("optim.weight_decay must be >= 0")
        if self.batch_size < 2:
            raise ConfigError("optim.batch_size must be >= 2 (batch norm, metric pairs)")
        if self.epochs < 1:
            raise ConfigError("optim.epochs must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError("optim.max_steps must be >= 1")
        if self.patience < 1:
            raise ConfigError("optim.patience must be >= 1")
        if len(self.critic_betas) != 2 or not all(0 <= b < 1 for b in self.critic_betas):
            raise ConfigError("optim.critic_betas must be two numbers in [0, 1)")
        if self.precise_bn < 0:
            raise ConfigError("optim.precise_bn must be >= 0")
        if self.amp not in ("bf16", "fp16", "fp32"):
            raise ConfigError(f"optim.amp must be bf16/fp16/fp32, not {self.amp!r}")


@dataclass(frozen=True)
class TrainConfig:
    """The complete, resolved description of one training run."""

    preset: str = "paper"
    # Row of the paper's Table 3 this preset reproduces (None for ``code`` or custom configs).
    table_row: int | None = 9
    description: str = "2-Branch XceptionNet, Metric Loss+Att.Tran.+GAN"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    # Decision threshold on the score: None until resolved; (r- + r+)/2 for metric heads (the paper),
    # 0.5 for cross entropy, 5.0 in the authors' code.
    threshold: float | None = None
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        if self.model.head == "ce" and self.model.branches != 1:
            raise ConfigError("the cross-entropy head is a single-XceptionNet baseline (branches=1)")
        if self.model.branches == 1 and self.loss.attention_transfer and self.model.attention != "none":
            raise ConfigError("attention transfer needs two branches")
        if self.data.input == "hq" and self.model.branches == 2:
            raise ConfigError("data.input='hq' is for single-branch presets (two branches take both)")
        if self.threshold is not None:
            lo, hi = (0.0, 1.0) if self.model.head == "ce" else (self.loss.r_minus, self.loss.r_plus)
            if not lo < self.threshold < hi:
                raise ConfigError(f"threshold {self.threshold} must lie strictly between {lo} and {hi}")

    # -- derived properties -------------------------------------------------------------------
    @property
    def two_branch(self) -> bool:
        return self.model.branches == 2

    @property
    def has_attention(self) -> bool:
        return self.model.attention != "none"

    @property
    def score_kind(self) -> str:
        return "probability" if self.model.head == "ce" else "distance"

    @property
    def resolved_threshold(self) -> float:
        if self.threshold is not None:
            return self.threshold
        if self.model.head == "ce":
            return 0.5
        return (self.loss.r_minus + self.loss.r_plus) / 2

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _lists(asdict(self))

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): the text that is hashed."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        if not isinstance(d, dict):
            raise ConfigError("a training config must be a JSON object")
        version = d.get("version", CONFIG_VERSION)
        if not isinstance(version, int):
            raise ConfigError(f"config version must be an integer, not {version!r}")
        if version > CONFIG_VERSION:
            raise ConfigError(f"config version {version} is newer than this acfd understands")
        sub = {"model": ModelConfig, "loss": LossConfig, "data": DataConfig, "optim": OptimConfig}
        kw: dict[str, Any] = {}
        for k, v in d.items():
            if k in sub:
                kw[k] = _build(sub[k], v)
            else:
                kw[k] = v
        return _build(cls, kw)

    @classmethod
    def from_json(cls, s: str | bytes) -> TrainConfig:
        try:
            d = json.loads(s)
        except (ValueError, UnicodeDecodeError) as e:
            raise ConfigError(f"training config is not valid JSON: {e}") from e
        return cls.from_dict(d)


def _lists(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _lists(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return [_lists(v) for v in x]
    return x


def _build(cls: type, d: Any) -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"{cls.__name__} must be a JSON object")
    known = {f.name: f for f in fields(cls)}
    unknown = set(d) - set(known)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} fields {sorted(unknown)}")
    kw = {}
    for k, v in d.items():
        # JSON has no tuples: restore them where the dataclass declares one.
        kw[k] = tuple(v) if isinstance(v, list) else v
    try:
        return cls(**kw)
    except TypeError as e:
        raise ConfigError(f"invalid {cls.__name__}: {e}") from e


def config_hash(cfg: TrainConfig) -> str:
    """sha256 (hex) of the canonical JSON of the resolved config."""
    return hashlib.sha256(cfg.to_json().encode()).hexdigest()


# -- presets -------------------------------------------------------------------------------------
_SINGLE = ModelConfig(branches=1, gan=False)
_NO_TRANSFER = LossConfig(attention_transfer=False)


def _preset(name: str, row: int | None, text: str, **kw: Any) -> TrainConfig:
    return TrainConfig(preset=name, table_row=row, description=text, **kw)


PRESETS: dict[str, TrainConfig] = {
    p.preset: p
    for p in (
        _preset("single-ce", 1, "Single XceptionNet, Cross Entropy",
                model=replace(_SINGLE, head="ce", attention="none"), loss=_NO_TRANSFER,
                data=DataConfig(pair_levels=("c40",))),
        _preset("single-metric", 2, "Single XceptionNet, Metric Loss",
                model=replace(_SINGLE, attention="none"), loss=_NO_TRANSFER,
                data=DataConfig(pair_levels=("c40",))),
        _preset("single-metric-att", 3, "Single XceptionNet, Metric Loss+Attention",
                model=_SINGLE, loss=_NO_TRANSFER, data=DataConfig(pair_levels=("c40",))),
        # Row 4 trains and tests on c23: the HQ crop of each cached (c23, c40) pair feeds the branch.
        _preset("single-metric-att-c23", 4, "Single XceptionNet, Metric Loss+Attention (c23)",
                model=_SINGLE, loss=_NO_TRANSFER,
                data=DataConfig(pair_levels=("c23",), lq_level="c23", input="hq")),
        _preset("two-branch-metric", 5, "2-Branch XceptionNet, Metric Loss",
                model=ModelConfig(attention="none", gan=False), loss=_NO_TRANSFER),
        _preset("two-branch-metric-gan", 6, "2-Branch XceptionNet, Metric Loss+GAN",
                model=ModelConfig(attention="none", gan=True), loss=_NO_TRANSFER),
        _preset("two-branch-att", 7, "2-Branch XceptionNet, Metric Loss+Attention",
                model=ModelConfig(gan=False), loss=_NO_TRANSFER),
        _preset("two-branch-att-transfer", 8, "2-Branch XceptionNet, Metric Loss+Att.Tran.",
                model=ModelConfig(gan=False)),
        _preset("paper", 9, "2-Branch XceptionNet, Metric Loss+Att.Tran.+GAN"),
        _preset("paper-c0", 10, "2-Branch XceptionNet, Metric Loss+Att.Tran.+GAN (c0,c40)",
                data=DataConfig(pair_levels=("c0",))),
        _preset("paper-both", 11, "2-Branch XceptionNet, Metric Loss+Att.Tran.+GAN (c0,c40)(c23,c40)",
                data=DataConfig(pair_levels=("c0", "c23"))),
        # The authors' public code (qinnzou/detect-fake-image, train_metric_mask.py): no critic is
        # trained (compute_gradient_penalty is defined, never called), r- = 0.01, tie weight 0.2,
        # SeparableConv2d attention, hinge sums divided by batch^2, Adam weight decay 1e-4, batch 64,
        # test threshold 5.0.
        _preset("code", None, "Authors' public code (two branches, metric + attention transfer)",
                model=ModelConfig(attention="separable", gan=False),
                loss=LossConfig(r_minus=0.01, lambda_pair=0.2, gp_weight=0.0, reduction="code"),
                optim=OptimConfig(weight_decay=1e-4, batch_size=64),
                threshold=5.0),
    )
}


def resolve_config(preset: str = "paper", **overrides: Any) -> TrainConfig:
    """The preset with command-line overrides applied and the threshold made explicit.

    Overrides are flat names of fields of the sub-configs (``lr``, ``batch_size``, ``epochs``,
    ``max_steps``, ``seed``, ``image_size``, ``patience``, ``n_critic``...); ``None`` means "keep the
    preset's value". Unknown names are an error, never silently ignored.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    cfg = PRESETS[preset]
    parts: dict[str, dict[str, Any]] = {"model": {}, "loss": {}, "data": {}, "optim": {}}
    top: dict[str, Any] = {}
    owners = {f.name: part for part in parts for f in fields(getattr(cfg, part))}
    for k, v in overrides.items():
        if v is None:
            continue
        if k == "threshold":
            top[k] = float(v)
        elif k in owners:
            parts[owners[k]][k] = tuple(v) if isinstance(v, list) else v
        else:
            raise ConfigError(f"unknown config override {k!r}")
    new = {p: replace(getattr(cfg, p), **kv) for p, kv in parts.items() if kv}
    cfg = replace(cfg, **new, **top)
    return replace(cfg, threshold=cfg.resolved_threshold)
