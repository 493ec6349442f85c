"""Stage 1 of a scan, the frames stage: decode the sampled frames, detect every face, track identities and
crop each face the training way (:func:`frames_with_faces`), as a stream of typed events.

It is what a decode worker (:mod:`acfd.scanner.worker`) runs, so this module imports only what that
needs (numpy, the decoder's module; the face detector, tracker and OpenCV inside the function): a worker
never loads the verdict store's SQLAlchemy models, the aggregation or the CLI. :mod:`acfd.scanner.stages`
re-exports every name here.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .config import DECODERS, DEFAULTS
from .decode import DecodeError, Sampling, VideoInfo


@dataclass(frozen=True)
class FramesConfig:
    """How :func:`frames_with_faces` samples, decodes, detects and crops (the same for every video)."""

    sampling: Sampling
    crop_size: int
    crop_margin: float
    decoder: str = DEFAULTS.decoder  # auto | decord | pyav
    gpu_decode: bool = False
    detector_model: str = DEFAULTS.detector  # full | short | auto (acfd.scanner.faces.DETECTOR_MODES)
    min_face_score: float = DEFAULTS.min_face_score
    detect_max_side: int = DEFAULTS.detect_max_side
    timeout_s: float = DEFAULTS.timeout_s  # FFmpeg's open and read timeouts for a URL (a scan's --timeout)
    # A live stream (acfd-scan watch), which may never end: the tracker keeps no history (bounded memory;
    # no merge at the end, so Decoded maps no identity: the tracklets are the identities).
    stream: bool = False

    def __post_init__(self) -> None:
        if self.decoder not in DECODERS:
            raise DecodeError(f"unknown decoder {self.decoder!r}: choose {', '.join(DECODERS)}")
        if self.crop_size < 8:
            raise DecodeError(f"crop size {self.crop_size} is too small")


@dataclass(frozen=True)
class Opened:
    """The video opened: its facts."""

    info: VideoInfo


@dataclass(frozen=True)
class FrameFaces:
    """One sampled frame: its faces (full-resolution boxes), their identities (tracklets until
    :class:`Decoded` maps them to people) and crops."""

    index: int
    time_s: float
    faces: tuple[Any, ...]  # acfd.scanner.faces.Face
    identities: tuple[int, ...]
    crops: np.ndarray | None  # uint8 [k, S, S, 3], None when no face
    t_decode: float
    t_detect: float


@dataclass(frozen=True)
class Decoded:
    """The video is decoded: totals, the decoder that really ran, and the tracklet -> person map."""

    n_frames: int
    t_decode: float
    t_detect: float
    decoder: str
    identity_map: dict[int, int]


@dataclass(frozen=True)
class Failed:
    """The video cannot be scanned: one line for its error row."""

    error: str


VideoEvent = Opened | FrameFaces | Decoded | Failed


class Detector(Protocol):
    def detect(self, image: np.ndarray) -> list[Any]: ...


def frames_with_faces(cfg: FramesConfig, detector: Detector, target: str, identity: str = "face") -> Iterator[VideoEvent]:
    """Decode, detect, crop and track one video (``target``: what the decoder opens, a path).

    Raises :class:`~acfd.scanner.decode.DecodeError` for a file that cannot be decoded (the caller
    turns it into :class:`Failed`). ``identity``: how faces are told apart (acfd.scanner.track.MODES);
    scans use ``face`` (the face-recognition embedding of the faces its schedule picks),
    ``bench/identities.py`` also the others. A frame is yielded once its ids are final
    (``IoUTracker.settled``): faces that reused their track's descriptor are checked at the track's next
    embedded face, up to ``EmbedSchedule.every_frames`` samples later.
    """
    from .decode import open_frames
    from .faces import crop, crop_box
    from .track import FrameLooks, tracker

    t0 = time.perf_counter()
    info, frames = open_frames(target, cfg.sampling, cfg.decoder, cfg.gpu_decode, timeout_s=cfg.timeout_s,
                               stream=cfg.stream)
    yield Opened(info)
    t_decode_total = time.perf_counter() - t0
    t_detect_total = 0.0
    tr = tracker(identity, history=not cfg.stream)
    held: list[FrameFaces] = []  # frames whose ids may still change, in order (n - len(held) yielded)
    n = 0

    def settled(upto: int) -> Iterator[FrameFaces]:
        while held and n - len(held) < upto:
            r = held.pop(0)
            k = n - len(held) - 1  # its sampled frame number, as the tracker counts
            yield dataclasses.replace(r, identities=tuple(tr.tracklets(k)))
            if cfg.stream:
                tr.forget(k + 1)  # read: a stream running for hours keeps no per-frame ids

    decoder = info.decoder
    last_t = float("-inf")
    while True:
        t0 = time.perf_counter()
        try:
            frame = next(frames, None)
        except DecodeError:
            if cfg.decoder != "auto" or decoder not in ("decord", "decord-gpu"):
                raise  # asked for decord only, or PyAV failed too (a second fallback would loop)
            # decord gave up in the middle of the stream (it is less forgiving of damaged packets):
            # go on with PyAV from the first sampled frame after the last one taken
            decoder += "+pyav"
            _, rest = open_frames(target, cfg.sampling, "pyav")
            frames = (f for f in rest if f.time_s > last_t + 1e-6)
            continue
        t_dec = time.perf_counter() - t0
        t_decode_total += t_dec
        if frame is None:
            break
        last_t = frame.time_s
        t0 = time.perf_counter()
        faces = detector.detect(frame.image)
        crops = None
        if faces:
            crops = np.stack([crop(frame.image, crop_box(f, cfg.crop_margin), cfg.crop_size) for f in faces])
        # t_detect includes the faces' descriptors (about 0.13 s of CPU per embedded face: acfd.scanner.identity)
        ids = tr.observe(faces, FrameLooks(tr.method, frame.image, faces, crops), frame.time_s)
        t_det = time.perf_counter() - t0
        t_detect_total += t_det
        held.append(FrameFaces(frame.index, frame.time_s, tuple(faces), tuple(ids), crops, t_dec, t_det))
        n += 1
        yield from settled(tr.settled)
    if n == 0:
        raise DecodeError("no decodable video frames")
    t0 = time.perf_counter()
    tr.finish()  # the last reused faces are checked (an embedding or so per open track)
    t_detect_total += time.perf_counter() - t0
    yield from settled(n)
    # identities are tracklets until here: the merge maps them to people (0..k-1)
    yield Decoded(n, t_decode_total, t_detect_total, decoder, tr.identity_map())
