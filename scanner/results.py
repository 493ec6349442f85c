"""Results of a scan as plain dataclasses: what the pipeline hands to the store, the JSONL and the summary."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .aggregate import VideoVerdict
from .decode import VideoInfo
from .discover import Candidate
from .faces import Face


@dataclass
class FaceRecord:
    """One face on one sampled frame, with the model's score once inferred."""

    frame_index: int
    time_s: float
    face: Face
    identity: int
    score: float | None = None


@dataclass
class StoredCrop:
    """A face crop kept for the report: JPEG thumbnail and attention map of one detection."""

    face_index: int  # index into VideoResult.faces
    jpeg: bytes
    size: int
    attention: np.ndarray | None


@dataclass
class Timings:
    """Seconds per stage (decode and detect run in the worker, infer in the engine thread)."""

    decode: float = 0.0
    detect: float = 0.0
    infer: float = 0.0
    store: float = 0.0

    def add(self, other: Timings) -> None:
        self.decode += other.decode
        self.detect += other.detect
        self.infer += other.infer
        self.store += other.store


@dataclass
class VideoResult:
    """Everything known about one candidate at the end of its processing."""

    candidate: Candidate
    status: str  # acfd.schemas.db.VIDEO_STATUSES
    error: str | None = None
    info: VideoInfo | None = None
    content_hash: str | None = None
    n_frames: int = 0
    faces: list[FaceRecord] = field(default_factory=list)
    verdict: VideoVerdict | None = None
    crops: list[StoredCrop] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    video_row_id: int | None = None

    @property
    def flagged(self) -> bool:
        return self.verdict is not None and self.verdict.flagged

    def to_json(self, scan_id: int | None, model_id: str, threshold: float, strategy: str, validation: str) -> str:
        """One JSONL line for this video; ``validation`` is the model card's state (none, synthetic, real),
        carried on every line so a consumer that reads one line alone still knows what the verdict is worth."""
        d: dict[str, Any] = {
            "path": self.candidate.display,
            "status": self.status,
            "error": self.error,
            "scan_id": scan_id,
            "model_id": model_id,
            "model_validation": validation,
            "strategy": strategy,
            "threshold": threshold,
            "n_frames": self.n_frames,
            "n_faces": len(self.faces),
        }
        if self.info is not None:
            d["duration_s"] = self.info.duration_s
            d["width"], d["height"] = self.info.width, self.info.height
        if self.verdict is not None:
            d["label"] = self.verdict.label
            d["score"] = self.verdict.score
            d["identities"] = [
                {"identity": v.identity, "label": v.label, "score": v.score, "n_faces": v.n_faces,
                 "t_first": v.t_first, "t_last": v.t_last}
                for v in self.verdict.identities
            ]
        return json.dumps(d, ensure_ascii=False)


@dataclass(frozen=True)
class Unchanged:
    """A candidate not scanned again: the store's result for it still holds (same file, model and
    settings). It still counts for the exit status, as its stored result says."""

    candidate: Candidate
    status: str  # the stored status
    flagged: bool  # the stored whole-video verdict is "fake"
    score: float | None  # the stored whole-video score


# What a scan's result stream carries, in order: every candidate exactly once.
ScanEvent = VideoResult | Unchanged


@dataclass
class ScanSummary:
    """Totals of one scan, printed at the end and used for the exit status."""

    scan_id: int
    n_found: int = 0
    n_ok: int = 0
    n_no_face: int = 0
    n_error: int = 0
    n_skipped: int = 0
    n_flagged: int = 0
    n_frames: int = 0
    n_faces: int = 0
    video_seconds: float = 0.0
    wall_s: float = 0.0
    timings: Timings = field(default_factory=Timings)
    infer_busy_s: float = 0.0
    # Videos skipped as already scanned whose stored result is "fake" / an error: they still count
    # for the exit status, which describes every video under the scanned paths, not just this run's.
    unchanged_flagged: int = 0
    unchanged_errors: int = 0
    # the first few unchanged flagged videos: (path, stored whole-video score)
    unchanged_flagged_videos: list[tuple[str, float | None]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """Bit 0: a video is flagged; bit 1: a file could not be scanned (so 0..3)."""
        flagged = self.n_flagged + self.unchanged_flagged
        errors = self.n_error + self.unchanged_errors
        return (1 if flagged else 0) | (2 if errors else 0)
