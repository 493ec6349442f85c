"""Faces: one detector and one crop function, shared by training (`acfd-train prepare`) and scanning.

The detector is MediaPipe's BlazeFace through the 1.2 Tasks API, with the two models shipped in
``scanner/models`` as package data (never downloaded). Detection runs on a copy of the frame whose
longer side is at most ``max_side`` pixels; boxes and keypoints are mapped back to full resolution.

Crop rule (the paper's, after FaceForensics++): a square of ``margin`` (1.3) times the longer side of
the face box, centred on the box centre, resized to the model input size. Where the square leaves the
frame the missing pixels are zero (black) - the square is never shifted back inside the frame, so the
face stays centred and the same box crops the HQ frame, the LQ frame and the mask frame identically.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Literal

import cv2
import numpy as np
from acfd.schemas.errors import AcfdError

from .config import DEFAULTS, DETECTORS

MODEL_FILES: dict[str, str] = {
    # BlazeFace short range: 128x128 input, faces within ~2 m of the camera (selfies, talking heads).
    "short": "face_detection_short_range.tflite",
    # BlazeFace full range (sparse): 192x192 input, also small and distant faces (archives, crowds).
    "full": "face_detection_full_range_sparse.tflite",
}

# Detector modes: the two models, or "auto" = full range, then short range on a frame where full range
# finds no face (close-ups that fill the frame, which full range misses; measured in docs/data.md).
DetectorMode = Literal["full", "short", "auto"]
DETECTOR_MODES: tuple[str, ...] = DETECTORS  # scanner.config: "full", "short", "auto"


class FaceDetectorError(AcfdError):
    """The face detector could not be created or was given something that is not an RGB frame."""


@dataclass(frozen=True)
class Face:
    """A detected face in full-resolution pixel coordinates (the box may extend past the frame)."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float
    # (x, y) in MediaPipe's order: right eye, left eye, nose tip, mouth centre, right and left ear tragion.
    keypoints: tuple[tuple[float, float], ...]

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)


@dataclass(frozen=True)
class CropBox:
    """A square region of a frame in integer pixels; it may lie partly outside the frame."""

    x0: int
    y0: int
    side: int


def model_path(model: Literal["short", "full"]) -> Path:
    """Path of the shipped BlazeFace ``.tflite`` for ``model`` ("short" or "full")."""
    if model not in MODEL_FILES:
        raise FaceDetectorError(f"unknown face detector model {model!r}: choose 'short' or 'full'")
    path = Path(str(resources.files("acfd.scanner").joinpath("models", MODEL_FILES[model])))
    if not path.is_file():
        raise FaceDetectorError(f"face detector model missing from the installation: {path}")
    return path


@contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Capture what native code writes to file descriptor 2 (LiteRT logs ~50 lines per model load).

    Only model loading, warm-up and release are wrapped; the text is kept (the yielded list gets it on
    exit) and shown if loading fails.
    """
    out: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (embedded interpreters): capture nothing
        yield out
        return
    with tempfile.TemporaryFile(mode="w+") as buf:
        try:
            os.dup2(buf.fileno(), 2)
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            buf.seek(0)
            out.append(buf.read())


def _check_rgb(frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        got = getattr(frame, "shape", type(frame).__name__), getattr(frame, "dtype", "")
        raise FaceDetectorError(f"expected an HxWx3 uint8 RGB frame, got {got[0]} {got[1]}")


class FaceDetector:
    """BlazeFace via MediaPipe Tasks (IMAGE mode).

    ``model`` is "full" (full range), "short" (short range) or "auto": full range on every frame and,
    on a frame where it finds no face, short range as well (its faces are returned instead). "auto"
    loads both models once (about twice the memory of one, a few MB) and costs the same as "full" on
    frames with a face; a frame without any face pays for both models.

    Construction loads the model(s) and warms them up (tens of ms); reuse one detector for many
    frames. A detector (any mode) is not safe to call from several threads at once: give each thread
    (or process) its own. While a detector is being constructed or closed, the process's native
    stderr (fd 2) is captured for those milliseconds, to keep LiteRT's log lines off the terminal.
    """

    def __init__(
        self,
        model: DetectorMode = DEFAULTS.detector,  # type: ignore[assignment]
        min_score: float = DEFAULTS.min_face_score,
        max_side: int = DEFAULTS.detect_max_side,
    ) -> None:
        if model not in DETECTOR_MODES:
            raise FaceDetectorError(f"unknown face detector {model!r}: choose one of {', '.join(DETECTOR_MODES)}")
        if not 0.0 <= min_score <= 1.0:
            raise FaceDetectorError(f"min_score must lie in [0, 1], got {min_score}")
        if max_side < 32:
            raise FaceDetectorError(f"max_side must be at least 32 pixels, got {max_side}")
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core.base_options import BaseOptions

        self.model = model
        self.min_score = float(min_score)
        self.max_side = int(max_side)

        def options(m: Literal["short", "full"]) -> vision.FaceDetectorOptions:
            return vision.FaceDetectorOptions(
                base_options=BaseOptions(model_asset_path=str(model_path(m))),
                running_mode=vision.RunningMode.IMAGE,
                min_detection_confidence=self.min_score,
            )

        self._detector = None
        self._fallback = None  # "auto": the short-range model, run where the full-range one finds nothing
        err: Exception | None = None
        with _captured_stderr() as log:
            try:
                self._detector = vision.FaceDetector.create_from_options(
                    options("full" if model == "auto" else model)
                )
                if model == "auto":
                    self._fallback = vision.FaceDetector.create_from_options(options("short"))
                # Warm-up: the first call builds the graph (and logs once); keep that out of detect().
                # A black frame has no face, so in "auto" it warms up both models.
                self.detect(np.zeros((64, 64, 3), np.uint8))
            except Exception as e:  # MediaPipe raises RuntimeError/ValueError with long messages
                err = e
        if err is not None:
            self.close()
            detail = " | ".join("".join(log).strip().splitlines()[-3:])
            raise FaceDetectorError(
                f"could not create the {model}-range face detector: {err} [{detail}]"
            ) from err

    def detect(self, frame: np.ndarray) -> list[Face]:
        """Faces in an HxWx3 uint8 RGB frame, highest score first, in full-resolution pixels."""
        import mediapipe as mp

        if self._detector is None:
            raise FaceDetectorError("face detector is closed")
        _check_rgb(frame)
        h, w = frame.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        if scale < 1.0:
            sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
            # Bilinear: 5x cheaper than area averaging at 1080p, and BlazeFace resamples to 128/192 px
            # bilinearly itself; the detector's boxes are the same within a pixel or two.
            small = cv2.resize(frame, (sw, sh), interpolation=cv2.INTER_LINEAR)
        else:
            sw, sh, small = w, h, frame
        # MediaPipe wants a C-contiguous buffer; a slice of a larger frame is not.
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(small))
        result = self._detector.detect(image)
        if not result.detections and self._fallback is not None:
            # Only on an empty result: where full range finds any face, "auto" equals "full" exactly.
            # (Short range under low-confidence full-range faces was measured: on close-ups it finds
            # the same face, on wide shots a different one; docs/data.md.)
            result = self._fallback.detect(image)
        sx, sy = w / sw, h / sh
        faces = []
        for det in result.detections:
            b = det.bounding_box
            score = float(det.categories[0].score) if det.categories else 0.0
            kps = tuple((float(k.x) * sw * sx, float(k.y) * sh * sy) for k in (det.keypoints or ()))
            faces.append(
                Face(
                    x0=b.origin_x * sx,
                    y0=b.origin_y * sy,
                    x1=(b.origin_x + b.width) * sx,
                    y1=(b.origin_y + b.height) * sy,
                    score=score,
                    keypoints=kps,
                )
            )
        faces.sort(key=lambda f: f.score, reverse=True)
        return faces

    def close(self) -> None:
        """Release the MediaPipe graph(s); idempotent."""
        dets = [d for d in (getattr(self, "_detector", None), getattr(self, "_fallback", None)) if d is not None]
        if dets:
            with _captured_stderr():
                for d in dets:
                    d.close()
        self._detector = self._fallback = None

    def __del__(self) -> None:
        # An unclosed MediaPipe detector prints a traceback when collected at interpreter exit.
        for name in ("_detector", "_fallback"):
            det = getattr(self, name, None)
            if det is not None:
                try:
                    det.close()
                except Exception:
                    pass

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def largest_face(faces: list[Face]) -> Face | None:
    """The face with the largest box (ties: higher score), or None. FF++'s rule for one-subject videos."""
    if not faces:
        return None
    return max(faces, key=lambda f: (f.area, f.score))


def crop_box(face: Face, margin: float = 1.3) -> CropBox:
    """Square box of ``margin`` x the longer side of the face box, centred on the box centre."""
    if margin <= 0:
        raise ValueError(f"margin must be positive, got {margin}")
    side = max(1, int(round(margin * max(face.width, face.height))))
    cx, cy = (face.x0 + face.x1) / 2.0, (face.y0 + face.y1) / 2.0
    return CropBox(x0=int(round(cx - side / 2.0)), y0=int(round(cy - side / 2.0)), side=side)


def crop(image: np.ndarray, box: CropBox, size: int) -> np.ndarray:
    """Crop ``box`` from an HxWx3 or HxW uint8 image and resize it to ``size`` x ``size``.

    Parts of the box outside the image are zero; the box is never shifted to fit. Downscaling uses
    area interpolation (no aliasing), upscaling bilinear; the result is deterministic.
    """
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"expected an HxW or HxWx3 uint8 image, got {image.shape} {image.dtype}")
    if box.side < 1 or size < 1:
        raise ValueError(f"crop side and output size must be positive, got {box.side} and {size}")
    h, w = image.shape[:2]
    out = np.zeros((box.side, box.side) + image.shape[2:], np.uint8)
    # Intersection of the box with the image, in image and in box coordinates.
    ix0, iy0 = max(box.x0, 0), max(box.y0, 0)
    ix1, iy1 = min(box.x0 + box.side, w), min(box.y0 + box.side, h)
    if ix1 > ix0 and iy1 > iy0:
        out[iy0 - box.y0 : iy1 - box.y0, ix0 - box.x0 : ix1 - box.x0] = image[iy0:iy1, ix0:ix1]
    if box.side == size:
        return out
    interp = cv2.INTER_AREA if box.side > size else cv2.INTER_LINEAR
    return cv2.resize(out, (size, size), interpolation=interp)
