"""The paper's two-branch XceptionNet (Cao et al., §3.2), built on timm ``legacy_xception``.

One file for the model family, blocks first, then the models, then the factory and run I/O:

* :class:`XceptionHead` - stem (conv1..act2) + block1..block7 of a timm Xception; gives V.
* :class:`AttentionLayer` - conv + sigmoid on V -> M [N,1,h,w]; V' = V * M (Eq. 3, 4).
* :class:`XceptionTail` - block8..block12 + conv3..act4 + global average pool; gives C in R^2048.
* :class:`Critic` - WGAN-GP critic on concat(V_H, V_L) / concat(V_L, V_H); 1x1 conv first, no norm.
* :class:`LQBranch` - the standalone test-time network (what gets exported).
* :class:`TwoBranchXception` - HQ head, LQ head, their attention layers, the shared tail, the critic.
* :func:`build_model`, :func:`save_run`, :func:`load_run`, :func:`artifact_meta`.

Layer widths come from timm's ``feature_info``/``num_features``; nothing here hard-codes 728 or 2048.

Initial weights (``pretrained``): ``"imagenet"`` - timm's own pretrained mechanism for legacy_xception
(downloaded once into torch hub's cache, ``$TORCH_HOME/hub/checkpoints``, then reused offline);
``"none"`` - random; or a local weights file. The run's model card (RUN/card.json, see
:mod:`acfd.schemas.card`) records which, and travels in every artifact made from the run.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
import torch.nn.functional as F
from acfd.schemas.artifact import META_KEY, ArtifactError, ArtifactMeta, project_version
from acfd.schemas.card import ModelCard
from acfd.schemas.errors import AcfdError
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from timm.models.xception import SeparableConv2d
from torch import Tensor, nn

from .config import ConfigError, TrainConfig, config_hash

BACKBONE = "legacy_xception"
HEAD_BLOCKS = tuple(f"block{i}" for i in range(1, 8))
TAIL_BLOCKS = tuple(f"block{i}" for i in range(8, 13))
STEM = ("conv1", "bn1", "act1", "conv2", "bn2", "act2")
EXIT = ("conv3", "bn3", "act3", "conv4", "bn4", "act4")
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"
CONFIG_KEY = "acfd.config"
# Values of ``pretrained`` (``fit --pretrained``) that are not a file.
IMAGENET, NO_PRETRAINING = "imagenet", "none"


class ModelError(AcfdError, ValueError):
    """A run directory, checkpoint or backbone weights file cannot be used."""


# -- blocks ----------------------------------------------------------------------------------------
def _xception(num_classes: int = 0) -> nn.Module:
    # pretrained=False: a randomly initialised backbone; ImageNet weights come from imagenet_backbone().
    return timm.create_model(BACKBONE, pretrained=False, num_classes=num_classes)


def mid_channels(backbone: nn.Module) -> int:
    """Width of the block-7 features V: the feature_info entry at reduction 16 (middle flow)."""
    widths = [f["num_chs"] for f in backbone.feature_info if f["reduction"] == 16]
    if not widths:
        raise ModelError(f"{BACKBONE} has no feature map at reduction 16")
    return int(widths[0])


def feature_map_size(image_size: int) -> int:
    """Side of V (and of the attention map) for a square input: conv1 (3x3/2, no pad), conv2 (3x3,
    no pad), then three stride-2 blocks (max-pool 3x3/2, pad 1). 299 -> 19 as in the paper."""
    s = (image_size - 3) // 2 + 1
    s -= 2
    for _ in range(3):
        s = (s - 1) // 2 + 1
    return s


class XceptionHead(nn.Module):
    """E^Head: stem + entry flow + block4..block7 of a timm Xception (separate weights per branch)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        for name in STEM + HEAD_BLOCKS:
            self.add_module(name, copy.deepcopy(getattr(backbone, name)))
        self.out_channels = mid_channels(backbone)

    def forward(self, x: Tensor) -> Tensor:
        for name in STEM + HEAD_BLOCKS:
            x = getattr(self, name)(x)
        return x


class AttentionLayer(nn.Module):
    """AT: a direct-regression attention map, conv + sigmoid (paper §3.4, after Dang et al.).

    ``kind="conv"``: one k x k convolution to one channel (with bias); ``kind="separable"``: the
    authors' code, timm's SeparableConv2d (depthwise k x k + pointwise to 1 channel, no bias).
    """

    def __init__(self, channels: int, kind: str = "conv", kernel_size: int = 3) -> None:
        super().__init__()
        pad = kernel_size // 2
        if kind == "conv":
            self.conv: nn.Module = nn.Conv2d(channels, 1, kernel_size, padding=pad, bias=True)
        elif kind == "separable":
            self.conv = SeparableConv2d(channels, 1, kernel_size, 1, pad)
        else:
            raise ConfigError(f"unknown attention kind {kind!r}")

    def forward(self, v: Tensor) -> Tensor:
        return torch.sigmoid(self.conv(v))


class XceptionTail(nn.Module):
    """E^Tail: block8..block12, conv3..act4 and global average pooling (shared by both branches)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        for name in TAIL_BLOCKS + EXIT:
            self.add_module(name, copy.deepcopy(getattr(backbone, name)))
        self.global_pool = copy.deepcopy(backbone.global_pool)  # timm avg pool + flatten
        self.num_features = int(backbone.num_features)

    def forward(self, x: Tensor) -> Tensor:
        for name in TAIL_BLOCKS + EXIT:
            x = getattr(self, name)(x)
        return self.global_pool(x)


class Critic(nn.Module):
    """WGAN-GP critic D on a channel-concatenated pair of block-7 feature maps.

    The first layer is a 1x1 convolution that fuses the two maps (paper §4.2); no batch norm anywhere,
    since the gradient penalty is defined per sample (Gulrajani et al. 2017).
    """

    def __init__(self, in_channels: int, width: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, 1),
        )

    def forward(self, pair: Tensor) -> Tensor:
        return self.net(pair).squeeze(1)


# -- models ----------------------------------------------------------------------------------------
@dataclass
class BranchOutput:
    """One branch's intermediate results: V (block-7 features), M (attention map or None), C."""

    v: Tensor
    m: Tensor | None
    c: Tensor


def _branch_forward(
    head: XceptionHead, attention: AttentionLayer | None, tail: XceptionTail, classifier: nn.Module | None,
    x: Tensor,
) -> BranchOutput:
    v = head(x)
    if attention is not None:
        m = attention(v)
        c = tail(v * m)
    else:
        m = None
        c = tail(v)
    if classifier is not None:
        c = classifier(c)
    return BranchOutput(v=v, m=m, c=c)


class LQBranch(nn.Module):
    """The test-time network: LQ head -> attention -> shared tail (-> 2-class head for CE presets).

    ``forward(x)`` takes float crops [N,3,S,S] normalised with the artifact's mean/std and returns
    (embedding [N,D] or logits [N,2], attention map [N,1,h,w] or None).
    """

    def __init__(
        self, head: XceptionHead, attention: AttentionLayer | None, tail: XceptionTail,
        classifier: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.head = head
        self.attention = attention
        self.tail = tail
        self.classifier = classifier

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        out = _branch_forward(self.head, self.attention, self.tail, self.classifier, x)
        return out.c, out.m

    @staticmethod
    def score(out: Tensor, kind: str) -> Tensor:
        """Scalar score per crop: ||C|| (distance) or softmax P(fake) (probability)."""
        if kind == "probability":
            return out.float().softmax(dim=1)[:, 1]
        return out.float().norm(dim=1)


class TwoBranchXception(nn.Module):
    """E_H and E_L with a shared tail (paper Fig. 2). With ``branches=1`` only the LQ path exists
    (the single-XceptionNet rows of Table 3); then ``hq_head`` is None."""

    def __init__(self, cfg: TrainConfig, backbone: nn.Module | None = None) -> None:
        super().__init__()
        backbone = backbone if backbone is not None else _xception()
        m = cfg.model
        self.lq_head = XceptionHead(backbone)
        self.hq_head = XceptionHead(backbone) if m.branches == 2 else None
        ch = self.lq_head.out_channels
        self.lq_attention = AttentionLayer(ch, m.attention, m.attention_kernel) if m.attention != "none" else None
        self.hq_attention = (
            AttentionLayer(ch, m.attention, m.attention_kernel)
            if m.attention != "none" and m.branches == 2
            else None
        )
        self.tail = XceptionTail(backbone)
        self.classifier = nn.Linear(self.tail.num_features, 2) if m.head == "ce" else None
        self.critic = Critic(2 * ch, m.critic_width) if m.gan else None

    @property
    def two_branch(self) -> bool:
        return self.hq_head is not None

    def lq(self, x: Tensor) -> BranchOutput:
        return _branch_forward(self.lq_head, self.lq_attention, self.tail, self.classifier, x)

    def hq(self, x: Tensor) -> BranchOutput:
        if self.hq_head is None:
            raise ModelError("this is a single-branch model: it has no HQ branch")
        return _branch_forward(self.hq_head, self.hq_attention, self.tail, self.classifier, x)

    def forward(self, hq: Tensor | None, lq: Tensor) -> tuple[BranchOutput | None, BranchOutput]:
        out_l = self.lq(lq)
        out_h = self.hq(hq) if self.two_branch and hq is not None else None
        return out_h, out_l

    def lq_branch(self) -> LQBranch:
        """The LQ path as a standalone module; shares (not copies) this model's weights."""
        return LQBranch(self.lq_head, self.lq_attention, self.tail, self.classifier)


# -- factory ---------------------------------------------------------------------------------------
def load_backbone_weights(path: Path) -> dict[str, Tensor]:
    """A legacy_xception state dict from a local file (safetensors, or a .pth read with weights_only).

    Accepts timm's ported checkpoint (``fc.*``), Cadene's (``last_linear.*``, 2-D pointwise weights)
    and wrappers that nest the dict under ``state_dict``/``model``/``net`` or prefix ``module.``.
    The classifier is dropped: neither branch uses the ImageNet head.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"backbone weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            sd: dict = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except (SafetensorError, RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as e:
        raise ModelError(f"cannot read backbone weights {path}: {e}") from e
    for key in ("state_dict", "model", "net"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ModelError(f"backbone weights {path} hold no state dict")
    out: dict[str, Tensor] = {}
    for k, v in sd.items():
        if not isinstance(v, Tensor):
            continue
        for prefix in ("module.", "model.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        if k.startswith(("fc.", "last_linear.")):
            continue
        if k.endswith("pointwise.weight") and v.dim() == 2:
            v = v[:, :, None, None]  # Cadene's original file stores 1x1 convs as matrices
        out[k] = v
    return out


def imagenet_source() -> tuple[str, Path | None]:
    """(where timm fetches legacy_xception's ImageNet weights, the file torch hub caches them in).

    Both come from timm's pretrained config, not from this file; the cache path follows torch hub
    (``$TORCH_HOME/hub/checkpoints/<file name of the URL>``) and is None when timm names no URL.
    """
    import torch.hub
    from timm.models import get_pretrained_cfg

    pc = get_pretrained_cfg(BACKBONE)
    url = getattr(pc, "url", None) if pc is not None else None
    if url:
        name = os.path.basename(urlparse(url).path)
        return url, Path(torch.hub.get_dir()) / "checkpoints" / name
    hub = getattr(pc, "hf_hub_id", None) if pc is not None else None
    return (f"Hugging Face hub {hub}" if hub else "nowhere (timm names no weights)"), None


def imagenet_backbone(file: Path | None = None) -> nn.Module:
    """legacy_xception with timm's ImageNet weights, through timm's own pretrained mechanism.

    The first call downloads the file into torch hub's cache; later calls (and offline machines that
    hold the file there) read it from the cache. ``file``: the same weights from a local file instead
    (timm's ``pretrained_cfg_overlay``). The 1000-class head is loaded too - so timm checks every key
    (a strict load: no layer silently stays random) - and then removed.
    """
    overlay = {"file": str(file)} if file is not None else None
    url, cached = imagenet_source()
    where = file if file is not None else cached
    try:
        backbone = timm.create_model(BACKBONE, pretrained=True, pretrained_cfg_overlay=overlay)
    except OSError as e:  # URLError, HTTPError, timeouts, an unreadable file: all OSError
        if file is not None or (cached is not None and cached.is_file()):
            raise ModelError(f"cannot read ImageNet weights {where}: {_first_line(e)}") from e
        put = f"put it at {cached}" if cached is not None else "keep it"
        raise ModelError(
            f"cannot download the ImageNet weights of {BACKBONE} ({_first_line(e)}): on a machine with "
            f"internet, download {url} and {put} (torch hub's cache, under $TORCH_HOME), or pass "
            f"--pretrained FILE with the downloaded file, or --pretrained {NO_PRETRAINING} to start "
            "from random weights"
        ) from e
    except (RuntimeError, ValueError, EOFError, KeyError, pickle.UnpicklingError, SafetensorError) as e:
        raise ModelError(
            f"ImageNet weights {where} are not {BACKBONE} weights ({_first_line(e)}); delete the file "
            "and try again"
        ) from e
    backbone.reset_classifier(0)  # the same module _xception(num_classes=0) builds, with weights
    return backbone


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def parse_pretrained(value: str | Path | None) -> str | Path:
    """``"imagenet"``, ``"none"`` or a weights file (a Path); None means ``"none"``."""
    if value is None:
        return NO_PRETRAINING
    if isinstance(value, Path):
        return value
    if value in (IMAGENET, NO_PRETRAINING):
        return value
    return Path(value)


def backbone_init(pretrained: str | Path | None) -> str:
    """What the model card records: ``imagenet``, ``random`` or ``file:NAME sha256:HEX12``."""
    p = parse_pretrained(pretrained)
    if p == IMAGENET:
        return "imagenet"
    if p == NO_PRETRAINING:
        return "random"
    path = Path(p)
    if not path.is_file():
        raise ModelError(f"backbone weights file {path} does not exist")
    return f"file:{path.name} sha256:{_file_sha256(path)[:12]}"


def build_model(cfg: TrainConfig, pretrained: str | Path | None = NO_PRETRAINING) -> TwoBranchXception:
    """The model for ``cfg``. ``pretrained``: ``"imagenet"`` (timm's weights, :func:`imagenet_backbone`),
    ``"none"`` (random) or a local weights file (:func:`load_backbone_weights`); both heads and the
    tail start from them (attention layers, critic and CE head always start random, as in the paper)."""
    p = parse_pretrained(pretrained)
    if p == IMAGENET:
        return TwoBranchXception(cfg, imagenet_backbone())
    backbone = _xception()
    if p != NO_PRETRAINING:
        sd = load_backbone_weights(Path(p))
        missing, unexpected = backbone.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise ModelError(
                f"{p} is not a {BACKBONE} state dict: "
                f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                f"(e.g. {unexpected[:3]})"
            )
    return TwoBranchXception(cfg, backbone)


# -- runs ------------------------------------------------------------------------------------------
def artifact_meta(source: Path | TrainConfig, model_id: str = "") -> ArtifactMeta:
    """The artifact metadata (``acfd.schemas.artifact.ArtifactMeta``) of a run directory or a resolved config.

    For a run directory ``model_id`` defaults to the sha256 of its model.safetensors, and ``card`` is
    RUN/card.json (None when the run has none); for a model.safetensors file, the card in its header.
    """
    card: ModelCard | None = None
    if isinstance(source, TrainConfig):
        cfg = source
    else:
        run = Path(source)
        cfg = read_config(run)
        weights = run / WEIGHTS_FILE if run.is_dir() else run
        if not model_id and weights.is_file():
            model_id = _file_sha256(weights)
        card = read_card(run)
    ce = cfg.model.head == "ce"
    return ArtifactMeta(
        input_size=cfg.data.image_size,
        mean=tuple(cfg.data.mean),
        std=tuple(cfg.data.std),
        r_minus=0.0 if ce else cfg.loss.r_minus,
        r_plus=1.0 if ce else cfg.loss.r_plus,
        threshold=cfg.resolved_threshold,
        score=cfg.score_kind,
        attention_size=feature_map_size(cfg.data.image_size) if cfg.has_attention else 0,
        preset=cfg.preset,
        config_hash=config_hash(cfg),
        model_id=model_id,
        precision="fp32",
        project_version=project_version(),
        card=card,
    )


def read_card(source: Path) -> ModelCard | None:
    """The model card of a run (RUN/card.json) or of a model.safetensors (its header); None if it has none."""
    source = Path(source)
    if source.is_dir():
        f = source / CARD_FILE
        if not f.is_file():
            return None
        try:
            return ModelCard.from_dict(json.loads(f.read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:  # CardError is a ValueError
            raise ModelError(f"{f} is not a valid model card: {_first_line(e)}") from e
    if not source.is_file():
        return None
    try:
        with safe_open(str(source), framework="pt") as fh:
            meta = (fh.metadata() or {}).get(META_KEY)
    except (SafetensorError, OSError) as e:
        raise ModelError(f"cannot read {source}: {e}") from e
    if meta is None:
        return None
    try:
        return ArtifactMeta.from_json(meta).card
    except ArtifactError as e:
        raise ModelError(f"{source}: {e}") from e


def write_card(run_dir: Path, card: ModelCard) -> Path:
    """Write RUN/card.json atomically (a reader never sees half a card)."""
    f = Path(run_dir) / CARD_FILE
    tmp = f.with_name(f".{f.name}.tmp")
    try:
        tmp.write_text(json.dumps(card.to_dict(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, f)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ModelError(f"cannot write {f}: {e}") from e
    return f


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def state_tensors(model: nn.Module) -> dict[str, Tensor]:
    """The state dict as contiguous CPU tensors, ready for safetensors."""
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def save_weights(path: Path, model: TwoBranchXception, cfg: TrainConfig, card: ModelCard | None = None) -> None:
    """model.safetensors with the resolved config and the artifact metadata (with ``card``) in its header."""
    meta = replace(artifact_meta(cfg), card=card)
    tmp = Path(path).with_suffix(".tmp")
    save_file(state_tensors(model), str(tmp), metadata={CONFIG_KEY: cfg.to_json(), META_KEY: meta.to_json()})
    tmp.replace(path)  # atomic: a crash never leaves a half-written best model


def save_run(run_dir: Path, model: TwoBranchXception, cfg: TrainConfig) -> Path:
    """Write RUN/config.json and RUN/model.safetensors (its header carries RUN/card.json, if any);
    returns the weights path."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, cfg)
    save_weights(run_dir / WEIGHTS_FILE, model, cfg, read_card(run_dir))
    return run_dir / WEIGHTS_FILE


def write_config(run_dir: Path, cfg: TrainConfig) -> None:
    text = json.dumps({**cfg.to_dict(), "config_hash": config_hash(cfg)}, indent=2, sort_keys=True)
    (Path(run_dir) / CONFIG_FILE).write_text(text + "\n")


def read_config(source: Path) -> TrainConfig:
    """The resolved config of a run directory (config.json) or of a model.safetensors header."""
    source = Path(source)
    if source.is_dir():
        f = source / CONFIG_FILE
        if not f.is_file():
            raise ModelError(f"{source} is not a training run: {CONFIG_FILE} is missing")
        try:
            d = json.loads(f.read_text())
        except ValueError as e:
            raise ModelError(f"{f} is not valid JSON: {e}") from e
        if not isinstance(d, dict):
            raise ModelError(f"{f} must hold a JSON object")
        stored = d.pop("config_hash", None)
        cfg = TrainConfig.from_dict(d)
        if stored is not None and stored != config_hash(cfg):
            raise ModelError(f"{f}: config_hash does not match its content (edited by hand?)")
        return cfg
    if source.is_file():
        try:
            with safe_open(str(source), framework="pt") as f:
                meta = f.metadata() or {}
        except (SafetensorError, OSError) as e:
            raise ModelError(f"cannot read {source}: {e}") from e
        if CONFIG_KEY not in meta:
            raise ModelError(f"{source} carries no training config ({CONFIG_KEY} header)")
        return TrainConfig.from_json(meta[CONFIG_KEY])
    raise ModelError(f"{source} does not exist")


def load_run(run_dir: Path, map_location: str | torch.device = "cpu") -> tuple[TwoBranchXception, TrainConfig]:
    """The trained model (eval mode) and its resolved config, from RUN/ or a model.safetensors file."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    weights = run_dir / WEIGHTS_FILE if run_dir.is_dir() else run_dir
    if not weights.is_file():
        raise ModelError(f"{run_dir} holds no trained weights ({WEIGHTS_FILE} is missing)")
    model = TwoBranchXception(cfg)
    try:
        sd = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError) as e:
        raise ModelError(f"cannot read {weights}: {e}") from e
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ModelError(f"{weights} does not match its config ({cfg.preset}): {e}") from e
    return model.to(map_location).eval(), cfg


def normalize(crops: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """uint8 [N,3,S,S] (or already float in 0..255) -> float32 normalised as the artifact says."""
    x = crops.float() / 255.0  # never in place: a float input may be the caller's tensor
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


def resize_crops(crops: Tensor, size: int) -> Tensor:
    """Bilinear resize of a [N,C,S,S] batch to ``size`` (no-op when it already matches)."""
    if crops.shape[-1] == size and crops.shape[-2] == size:
        return crops
    return F.interpolate(crops.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
