"""Face crops for int8 calibration, cut the scanner's way from a folder of photos and videos.

``acfd-train export --int8 --calibrate DIR`` quantises a model's activations to the ranges they take on
real faces. The crops come from every photo and video under DIR (recursively, sorted), through the
scanner's own face detector (BlazeFace, ``auto`` mode) and crop rule (square box enlarged by the
artifact's ``crop_margin``, zero padding, resized to its ``input_size``): the crops the model will see
when scanning. Every face found counts; a video gives a few frames spread over its length.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from acfd.schemas.errors import AcfdError

from .ffpp import VIDEO_SUFFIXES

DEFAULT_LIMIT = 256
FRAMES_PER_VIDEO = 8


class CalibrationError(AcfdError):
    """A calibration folder that gives no usable face crops."""


@dataclass(frozen=True)
class CalibrationSet:
    crops: np.ndarray  # uint8 [N,S,S,3] RGB
    photos: int  # files read
    videos: int
    skipped: int  # files that could not be read
    folder: Path

    def describe(self) -> str:
        """Where the crops came from, for the artifact's metadata."""
        return (f"{len(self.crops)} face crops from {self.photos} photos and {self.videos} videos in "
                f"{self.folder.name or self.folder}")  # fmt: skip


def _files(folder: Path) -> list[Path]:
    from .people import IMAGE_SUFFIXES

    wanted = IMAGE_SUFFIXES + VIDEO_SUFFIXES
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in wanted and p.is_file())


def calibration_crops(
    folder: Path, size: int, margin: float, limit: int = DEFAULT_LIMIT, frames_per_video: int = FRAMES_PER_VIDEO
) -> CalibrationSet:
    """Up to ``limit`` face crops (``size`` px, box x ``margin``) from the photos and videos under ``folder``.

    A folder with no photo or video, or none with a face, is one :class:`CalibrationError` line.
    """
    from acfd.scanner.faces import FaceDetector, crop, crop_box

    from .people import PeopleError, is_image, read_image, sample_frames

    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f"calibration folder {folder} does not exist (or is not a folder)")
    if limit < 1:
        raise CalibrationError(f"the calibration crop limit must be >= 1, not {limit}")
    files = _files(folder)
    if not files:
        raise CalibrationError(
            f"no photos or videos in {folder}: calibration needs real face photos or videos (.jpg, .png, .mp4, ...)"
        )
    crops: list[np.ndarray] = []
    photos = videos = skipped = 0
    with FaceDetector() as det:
        for f in files:
            if len(crops) >= limit:
                break
            try:
                frames = [read_image(f)] if is_image(f) else sample_frames(f, frames_per_video)
            except PeopleError:
                skipped += 1
                continue
            if is_image(f):
                photos += 1
            else:
                videos += 1
            for frame in frames:
                for face in det.detect(frame):
                    crops.append(crop(frame, crop_box(face, margin), size))
    if not crops:
        raise CalibrationError(
            f"no faces found in the {photos} photos and {videos} videos of {folder}"
            + (f" ({skipped} unreadable)" if skipped else "")
            + ": calibration needs real face crops"
        )
    return CalibrationSet(np.ascontiguousarray(np.stack(crops[:limit])), photos, videos, skipped, folder)
