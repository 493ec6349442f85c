"""Identity: a face-recognition embedding that tells people apart (dlib's ResNet face descriptor).

Each face is aligned with dlib's 5-point shape predictor (eye corners, nose base) inside its BlazeFace
box and turned into a 128-d descriptor by dlib's face recognition ResNet (``dlib.face_recognition_model_v1``,
trained by its author on about 3 million faces; 99.38% on the LFW benchmark). Two faces of one person
are usually less than :data:`SAME_PERSON_DISTANCE` (0.6, dlib's documented threshold) apart in Euclidean
distance, two people usually more.

The model files ship in the ``face_recognition_models`` package (PyPI, 100 MB; its 5-point predictor
and ResNet are 32 MB of it) and are read from its folder without importing it (its ``__init__`` needs
``pkg_resources``, which current setuptools no longer ships). Nothing is downloaded.

Embeddings are biometric templates: they live only in the memory of the worker process that computed
them, in the tracker of the video it is on (dropped with it at the video's end); they are never stored,
reported, sent between processes or logged.

Cost on a 2-core Xeon (AVX-512, dlib-bin 20.0 without BLAS): about 0.13 s of one core per face, 0.17 s
with the other core busy (the ResNet on a 150x150 chip, :meth:`FaceEmbedder.embed_chip`; the landmarks
and the alignment, :meth:`FaceEmbedder.chips`, about 1.5 ms); importing dlib 0.05 s and loading both
models 0.7 s (about 50 MB), once per worker process, on its first face. Scans align every face but run
the ResNet only on those the tracker's schedule asks for (acfd.scanner.track.EmbedSchedule).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from acfd.schemas.errors import AcfdError

from .faces import Face

SAME_PERSON_DISTANCE = 0.6  # dlib's documented decision threshold for its descriptor (Euclidean)
# Faces whose box has a luminance standard deviation below this (0-255 scale, box resampled to 32x32) get
# no descriptor: too dark or flat for the ResNet to tell people apart. Measured on bench/identities.py:
# the dark audience faces of the Hamilton clip (3.6-9.6) lie 0.18-0.33 apart whether they are one person
# or two (contrast stretching does not help), while every other labelled face measures >= 15.0 (a
# flat-lit studio face) and different people there are >= 0.43 apart.
MIN_CONTRAST = 12.0
_PREDICTOR = "shape_predictor_5_face_landmarks.dat"
_RESNET = "dlib_face_recognition_resnet_model_v1.dat"
# The face is embedded from a region of the frame around its box (the box plus this share of its side
# on every side), not from the whole frame: dlib's chip extraction then touches a small image only.
_CONTEXT = 0.6
# dlib's alignment for its ResNet (the defaults of compute_face_descriptor on a frame and a shape)
_CHIP, _CHIP_PADDING = 150, 0.25
_PIXELS_MARGIN, _PIXELS_SIDE = 0.15, 16  # chip_pixels(): the chip's border left out, and the resample side


def face_contrast(image: np.ndarray, face: Face) -> float:
    """Standard deviation of the luminance (0-255) inside the face box, on a 32x32 resample of it."""
    h, w = image.shape[:2]
    x0, y0 = max(0, int(face.x0)), max(0, int(face.y0))
    x1, y1 = min(w, int(np.ceil(face.x1))), min(h, int(np.ceil(face.y1)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return 0.0
    gray = cv2.cvtColor(np.ascontiguousarray(image[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
    return float(cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32).std())


class IdentityModelError(AcfdError):
    """The face-recognition model (dlib + face_recognition_models) is missing or cannot be loaded."""


def model_files() -> tuple[Path, Path]:
    """Paths of the shipped 5-point shape predictor and face-recognition ResNet."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise IdentityModelError(
            "the face_recognition_models package is not installed (pip install face_recognition_models)"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    paths = (folder / _PREDICTOR, folder / _RESNET)
    for p in paths:
        if not p.is_file():
            raise IdentityModelError(f"face recognition model missing from the installation: {p}")
    return paths


def check_installed() -> None:
    """Raise :class:`IdentityModelError` unless dlib and the model files are installed (loads nothing)."""
    model_files()
    if importlib.util.find_spec("dlib") is None:
        raise IdentityModelError("dlib is not installed (pip install dlib-bin)")


class FaceEmbedder:
    """dlib's 5-point alignment + face-recognition ResNet; load once, call :meth:`embed` per frame.

    Not thread-safe (dlib's network keeps its buffers): one per process, see :func:`embedder`.
    """

    def __init__(self) -> None:
        predictor, resnet = model_files()
        try:
            import dlib
        except ImportError as e:
            raise IdentityModelError(f"dlib is not installed (pip install dlib-bin): {e}") from e
        try:
            self._dlib: Any = dlib
            self._shape = dlib.shape_predictor(str(predictor))
            self._net = dlib.face_recognition_model_v1(str(resnet))
        except RuntimeError as e:
            raise IdentityModelError(f"could not load the face recognition model: {e}") from e

    def embed(self, image: np.ndarray, faces: list[Face]) -> list[np.ndarray | None]:
        """The descriptor (float32 [128]) of each face box of an HxWx3 uint8 RGB frame, or None for a face
        too dark or flat to tell people apart (:data:`MIN_CONTRAST`; not embedded: no time spent)."""
        return [self.embed_chip(c) for c in self.chips(image, faces)]

    def chips(self, image: np.ndarray, faces: list[Face]) -> list[np.ndarray | None]:
        """Each face aligned for the ResNet (uint8 [150, 150, 3], about 1.5 ms: the 5-point landmarks and
        dlib's chip extraction), or None for a face under :data:`MIN_CONTRAST`. :meth:`embed_chip` turns a
        chip into the descriptor :meth:`embed` gives (the same numbers), later if need be."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 uint8 RGB frame, got {image.shape} {image.dtype}")
        out: list[np.ndarray | None] = []
        h, w = image.shape[:2]
        for f in faces:
            if face_contrast(image, f) < MIN_CONTRAST:
                out.append(None)
                continue
            pad = _CONTEXT * max(f.width, f.height, 1.0)
            rx0, ry0 = max(0, int(f.x0 - pad)), max(0, int(f.y0 - pad))
            rx1, ry1 = min(w, int(np.ceil(f.x1 + pad))), min(h, int(np.ceil(f.y1 + pad)))
            region = np.ascontiguousarray(image[ry0:ry1, rx0:rx1])
            box = self._dlib.rectangle(
                int(round(f.x0 - rx0)), int(round(f.y0 - ry0)), int(round(f.x1 - rx0)), int(round(f.y1 - ry0))
            )
            shape = self._shape(region, box)
            out.append(np.asarray(self._dlib.get_face_chip(region, shape, size=_CHIP, padding=_CHIP_PADDING)))
        return out

    def embed_chip(self, chip: np.ndarray | None) -> np.ndarray | None:
        """The descriptor of one aligned chip from :meth:`chips` (the ResNet: about 0.13 s), None for None."""
        if chip is None:
            return None
        return np.asarray(self._net.compute_face_descriptor(chip), np.float32)


@functools.cache
def embedder() -> FaceEmbedder:
    """This process's embedder, loaded on first use (a worker loads it once, on its first face)."""
    return FaceEmbedder()


def chip_pixels(chip: np.ndarray) -> np.ndarray:
    """A cheap look at an aligned chip (:meth:`FaceEmbedder.chips`): the grey levels of its central 70%
    (the face without the padding), 16x16, zero-mean and L2-normalised (float32 [256]), so that the dot
    product of two is their normalised correlation. Alignment takes out position, size and roll, so what
    is left is mostly the face itself, its expression and its light (acfd.scanner.track.Glance)."""
    side = chip.shape[0]
    m = int(side * _PIXELS_MARGIN)
    gray = cv2.cvtColor(np.ascontiguousarray(chip[m : side - m, m : side - m]), cv2.COLOR_RGB2GRAY)
    g = cv2.resize(gray, (_PIXELS_SIDE, _PIXELS_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    g -= g.mean()
    return g / max(float(np.linalg.norm(g)), 1e-6)


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances [n, m] between the rows of ``a`` [n, d] and ``b`` [m, d]."""
    # float64: in float32 the expansion loses the small distances to cancellation (a row's distance to
    # itself came out as 1e-3 on one CPU's BLAS, where the thresholds are a few tenths)
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    d2 = (a64 * a64).sum(1)[:, None] + (b64 * b64).sum(1)[None, :] - 2.0 * (a64 @ b64.T)
    return np.sqrt(np.maximum(d2, 0.0)).astype(np.float32)
