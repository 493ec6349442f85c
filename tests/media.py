"""Fixture makers shared by tests: real photos shipped by dependencies, and small videos written with PyAV.

Tests never read ../shared/data: everything they use is made here.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import av
import numpy as np


def astronaut() -> np.ndarray:
    """scikit-image's astronaut (Eileen Collins), 512x512 RGB uint8: one real, frontal face."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def no_face_image() -> np.ndarray:
    """A real photo without a face (scikit-image's coffee cup), RGB uint8."""
    from skimage import data

    return np.ascontiguousarray(data.coffee())


def write_video(
    path: Path,
    frames: Iterable[np.ndarray],
    fps: int = 25,
    codec: str = "libx264",
    crf: int | None = 23,
    pix_fmt: str = "yuv420p",
) -> Path:
    """Write RGB uint8 frames (all the same even size) to `path` with PyAV."""
    path = Path(path)
    with av.open(str(path), "w") as out:
        stream = None
        for frame in frames:
            if stream is None:
                stream = out.add_stream(codec, rate=fps)
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = pix_fmt
                if crf is not None:
                    stream.options = {"crf": str(crf)}
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                out.mux(packet)
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
