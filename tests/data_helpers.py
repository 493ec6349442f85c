"""Shared fixtures makers for the data tests: one tiny synthetic FF++ set per test session."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from acfd.train.ffpp import iter_frames
from acfd.train.synth import SynthConfig, synthesize

# Small enough for 2 shared CPU cores: 6 reals + 6 fakes, 8 frames of 128x128 -> 3 pairs, one per split.
VIDEOS, FRAMES, SIZE = 6, 8, 128
_made: dict[str, Path] = {}


def synth_root(tmp_path_factory) -> Path:
    """The session's synthetic FF++ root (built once); treat it as read-only, copy it to damage it."""
    if "root" not in _made:
        root = tmp_path_factory.mktemp("synth") / "ffpp"
        synthesize(SynthConfig(out=root, videos=VIDEOS, frames=FRAMES, size=SIZE, seed=0))
        _made["root"] = root
    return _made["root"]


def copy_root(root: Path, dst: Path) -> Path:
    shutil.copytree(root, dst)
    return dst


def frames_of(path: Path) -> list[np.ndarray]:
    return [f for _, f in iter_frames(path)]
