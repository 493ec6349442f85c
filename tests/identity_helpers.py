"""Real faces of three different people, from photos that installed packages ship (no download).

- Eileen Collins: scikit-image's ``astronaut`` (colour, frontal);
- the cameraman of scikit-image's ``camera`` (greyscale, looking down into his camera);
- Grace Hopper: matplotlib's sample ``grace_hopper.jpg`` (matplotlib is a dependency of MediaPipe).

Each is a 240x240 RGB "head" (the face with some surroundings) to paste into test frames.
"""

from __future__ import annotations

import cv2
import numpy as np

HEAD = 240


def _head(img: np.ndarray, y0: int, x0: int, side: int) -> np.ndarray:
    region = np.ascontiguousarray(img[y0 : y0 + side, x0 : x0 + side])
    return cv2.resize(region, (HEAD, HEAD), interpolation=cv2.INTER_AREA)


def astronaut_head() -> np.ndarray:
    from skimage import data

    return _head(data.astronaut(), 20, 105, 250)  # face box ~(173, 67)-(276, 170) of the 512x512 photo


def cameraman_head() -> np.ndarray:
    from skimage import data

    grey = data.camera()
    return _head(np.stack([grey] * 3, axis=-1), 60, 118, 200)  # face box ~(200, 122)-(277, 199)


def hopper_head() -> np.ndarray:
    from matplotlib import cbook

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    return _head(img, 80, 116, 300)  # face box ~(166, 130)-(365, 329) of the 512x600 photo


def canvas(heads: list[tuple[np.ndarray, int, int]], size: tuple[int, int] = (300, 640), level: int = 90) -> np.ndarray:
    """A grey frame with each ``(head, x, y)`` pasted at (x, y)."""
    out = np.full((*size, 3), level, np.uint8)
    for head, x, y in heads:
        out[y : y + head.shape[0], x : x + head.shape[1]] = head
    return out
