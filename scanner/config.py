"""The scanner's defaults, in one table: what `acfd-scan`, `acfd-scan validate`, :class:`ScanConfig`,
the decode workers and :class:`~acfd.scanner.faces.FaceDetector` use when nothing else is said.

Each default was written in three places before (the CLI options, the config dataclass and the worker),
and the face detector's own default differed from a scan's; now they all read :data:`DEFAULTS`, which is
validated once, on import of this module (it imports only ``acfd.schemas``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from acfd.schemas.errors import AcfdError


class ScanError(AcfdError):
    """The scan cannot run (bad settings, model or database); not one video's fault."""


DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
DECODERS: tuple[str, ...] = ("auto", "decord", "pyav")
# The model's arithmetic on a CPU (acfd.engine.precision): auto picks the fastest the artifact and CPU allow.
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "int8", "bf16")
# BlazeFace models: full range, short range, or auto = full range, then short range on a frame where
# full range finds no face (acfd.scanner.faces)
DETECTORS: tuple[str, ...] = ("full", "short", "auto")


@dataclass(frozen=True)
class ScanDefaults:
    """The defaults of a scan (and of everything that must see faces as a scan does)."""

    fps: float = 1.0  # frames sampled per second of video
    device: str = "auto"  # the model's device: a CUDA GPU when there is one
    decoder: str = "auto"  # a sample on a CPU: PyAV's fast path; every frame and GPU: decord (acfd.scanner.decode)
    detector: str = "auto"  # the same as acfd-train prepare, so training crops and scanned crops agree
    min_face_score: float = 0.5  # BlazeFace's score below which a detection is dropped
    detect_max_side: int = 640  # frames are downscaled to at most this side for detection
    timeout_s: float = 300.0  # a decode worker silent this long on one video is killed (error row)
    store_crops: int = 3  # face crops (JPEG + attention map) stored per identity, most suspicious first

    def __post_init__(self) -> None:
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise ValueError(f"default fps must be positive, not {self.fps}")
        for name, value, allowed in (("device", self.device, DEVICES), ("decoder", self.decoder, DECODERS),
                                     ("detector", self.detector, DETECTORS)):  # fmt: skip
            if value not in allowed:
                raise ValueError(f"default {name} {value!r} is not one of {allowed}")
        if not 0.0 <= self.min_face_score <= 1.0:
            raise ValueError(f"default min_face_score must be in [0, 1], not {self.min_face_score}")
        if self.detect_max_side < 64 or self.timeout_s <= 0 or self.store_crops < 0:
            raise ValueError("default detect_max_side >= 64, timeout_s > 0 and store_crops >= 0 are required")


DEFAULTS = ScanDefaults()
