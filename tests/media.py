"""Fixture makers shared by tests: real photos shipped by dependencies, and small videos written with
acfd.train.ffpp.encode_video (PyAV).

Tests never read ../shared/data: everything they use is made here.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from acfd.train.ffpp import encode_video


def astronaut() -> np.ndarray:
    """scikit-image's astronaut (Eileen Collins), 512x512 RGB uint8: one real, frontal face."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def no_face_image() -> np.ndarray:
    """A real photo without a face (scikit-image's coffee cup), RGB uint8."""
    from skimage import data

    return np.ascontiguousarray(data.coffee())


def write_video(path: Path, frames: Iterable[np.ndarray], fps: int = 25, crf: int = 23) -> Path:
    """Write RGB uint8 frames (all the same even size) to `path`: H.264 yuv420p at `crf`."""
    path = Path(path)
    encode_video(path, frames, crf=crf, fps=fps)
    return path


def moving_face_frames(n: int, size: tuple[int, int] = (360, 640), seed: int = 0) -> list[np.ndarray]:
    """`n` frames of the astronaut photo placed on a canvas, drifting a few pixels per frame."""
    rng = np.random.default_rng(seed)
    img = astronaut()[:400, 56:456]  # head and shoulders, 400x400
    h, w = size
    s = min(h, w) - 20
    import cv2

    face = cv2.resize(img, (s, s), interpolation=cv2.INTER_AREA)
    frames = []
    x, y = (w - s) // 2, (h - s) // 2
    for _ in range(n):
        canvas = np.full((h, w, 3), 90, np.uint8)
        dx, dy = rng.integers(-3, 4, size=2)
        x = int(np.clip(x + dx, 0, w - s))
        y = int(np.clip(y + dy, 0, h - s))
        canvas[y : y + s, x : x + s] = face
        frames.append(canvas)
    return frames
