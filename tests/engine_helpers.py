"""Helpers for the engine tests: a small stand-in LQ branch, real face crops, a tiny training run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from acfd.engine.export import torch_reference
from acfd.schemas.artifact import ArtifactMeta
from acfd.train.config import resolve_config
from acfd.train.model import build_model, save_run
from torch import Tensor, nn

from tests.media import astronaut

STANDIN_SIZE = 64  # three stride-2 convolutions: 64 -> 8 (the attention map side)
STANDIN_ATT = 8


class StandInBranch(nn.Module):
    """Same contract as acfd.train.model.LQBranch (float NCHW -> (embedding|logits, attention|None)),
    a few convolutions instead of Xception so a test exports it in well under a second."""

    def __init__(self, dim: int = 32, attention: bool = True, logits: bool = False, scale: float = 1.0) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.attention = nn.Conv2d(16, 1, 3, padding=1) if attention else None
        self.tail = nn.Conv2d(16, dim, 1)
        self.head = nn.Linear(dim, 2) if logits else None
        self.scale = scale

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        v = self.features(x)
        m = torch.sigmoid(self.attention(v)) if self.attention is not None else None
        if m is not None:
            v = v * m
        c = self.tail(v).mean(dim=(2, 3)) * self.scale
        if self.head is not None:
            c = self.head(c)
        return c, m


def standin(seed: int = 0, **kw: object) -> StandInBranch:
    torch.manual_seed(seed)
    return StandInBranch(**kw).eval()  # type: ignore[arg-type]


def standin_meta(attention: bool = True, probability: bool = False) -> ArtifactMeta:
    if probability:
        return ArtifactMeta(
            input_size=STANDIN_SIZE, attention_size=STANDIN_ATT if attention else 0, score="probability",
            r_minus=0.0, r_plus=1.0, threshold=0.5, preset="standin",
        )
    return ArtifactMeta(input_size=STANDIN_SIZE, attention_size=STANDIN_ATT if attention else 0, preset="standin")


def random_crops(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def face_crops(size: int) -> np.ndarray:
    """Real face crops of the astronaut photo through the scanner's detector and crop rule (margins
    1.2..1.5, and each mirrored)."""
    from acfd.scanner.faces import FaceDetector, crop, crop_box

    img = astronaut()
    with FaceDetector() as det:
        faces = det.detect(img)
    assert faces, "the scanner's detector finds no face in the astronaut photo"
    crops = [crop(img, crop_box(faces[0], margin), size) for margin in (1.2, 1.3, 1.4, 1.5)]
    crops += [c[:, ::-1] for c in crops]
    return np.ascontiguousarray(np.stack(crops))


def scale_embedding(branch: nn.Module, target_norm: float, crops: np.ndarray, meta: ArtifactMeta) -> None:
    """Scale the last batch norm of a real LQBranch so embeddings have about ``target_norm``: a
    randomly initialised Xception gives norms ~1e-3, a trained one ~0.1 (real) to > 18 (fake)."""
    score, _ = torch_reference(branch, meta, crops)
    k = target_norm / float(np.median(score))
    bn = branch.tail.bn4
    with torch.no_grad():
        bn.weight.mul_(k)
        bn.bias.mul_(k)


def tiny_run(run_dir: Path, image_size: int = 96, preset: str = "paper", seed: int = 0) -> Path:
    """A randomly initialised training run (config.json + model.safetensors) at a small input size."""
    torch.manual_seed(seed)
    cfg = resolve_config(preset, image_size=image_size)
    save_run(run_dir, build_model(cfg), cfg)
    return run_dir
