"""FaceForensics++ on disk: the folder layout, the split files, and video reading/writing with PyAV.

Layout (FaceForensics++'s download script writes it; ``acfd-train synth`` writes the same)::

    ROOT/original_sequences/<source>/<comp>/videos/NNN.mp4          source: youtube (and actors for DFD)
    ROOT/manipulated_sequences/<Method>/<comp>/videos/TTT_SSS.mp4   comp: raw | c0 | c23 | c40
    ROOT/manipulated_sequences/<Method>/masks/videos/TTT_SSS.mp4
    splits: train.json / val.json / test.json, each a list of ["TTT", "SSS"] pairs

A pair ``[T, S]`` puts the reals ``T`` and ``S`` and the fakes ``T_S`` and ``S_T`` in its split.
Videos that no split file names (or every video, when there are no split files) get a deterministic
split: videos linked by a ``TTT_SSS`` name form one group, groups are ordered by a hash of their ids
and cut 72/14/14 (FF++'s 720/140/140), so a real and its fakes never straddle two splits.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from acfd.schemas.errors import AcfdError

METHODS: tuple[str, ...] = (
    "Deepfakes",
    "Face2Face",
    "FaceSwap",
    "NeuralTextures",
    "FaceShifter",
    "DeepFakeDetection",
)
# Method folder of the self-blended forgeries made by `acfd-train synth`.
SYNTH_METHOD = "SelfBlended"
COMPRESSIONS: tuple[str, ...] = ("raw", "c0", "c23", "c40")
SPLITS: tuple[str, ...] = ("train", "val", "test")
REAL = "real"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov")

_PAIR = re.compile(r"^(\d+)_(\d+)$")
_ID = re.compile(r"^(\d+)$")


class FFppError(AcfdError):
    """The FF++ root or its split files are not usable."""


@dataclass(frozen=True)
class FFVideo:
    """One video of the dataset at the two compression levels a training pair uses."""

    video: str  # unique id: "<source or method>/<name>", e.g. "youtube/000", "Deepfakes/000_003"
    name: str  # file stem, e.g. "000_003"
    method: str  # "real" or the manipulation method folder
    label: int  # 1 fake, 0 real
    split: str
    hq: Path
    lq: Path
    mask: Path | None  # expected mask video for fakes (may not exist); None for reals


def split_counts(n: int) -> tuple[int, int, int]:
    """(train, val, test) group counts for ``n`` groups: FF++'s 72/14/14, val and test non-empty from 3."""
    if n < 3:
        return n, 0, 0
    n_val = max(1, round(0.14 * n))
    n_test = max(1, round(0.14 * n))
    return n - n_val - n_test, n_val, n_test


def ranked_splits(n: int) -> list[str]:
    """The split of each of ``n`` ranked groups: the first 72 % train, then val, then test (``split_counts``)."""
    return [s for s, k in zip(SPLITS, split_counts(n), strict=True) for _ in range(k)]


def read_split_file(path: Path) -> list[tuple[str, str]]:
    """An FF++ split file: a JSON list of ``[target, source]`` id pairs."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FFppError(f"cannot read split file {path}: {e}") from e
    if not isinstance(data, list) or not all(
        isinstance(p, list | tuple) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in data
    ):
        raise FFppError(f'split file {path} is not a list of ["TTT", "SSS"] pairs')
    return [(a, b) for a, b in data]


def find_split_dir(root: Path, splits_dir: Path | None = None) -> Path | None:
    """The folder holding train/val/test.json: ``splits_dir`` if given, else ROOT/splits, else ROOT."""
    if splits_dir is not None:
        if not all((Path(splits_dir) / f"{s}.json").is_file() for s in SPLITS):
            raise FFppError(f"{splits_dir} must hold train.json, val.json and test.json")
        return Path(splits_dir)
    for d in (Path(root) / "splits", Path(root)):
        if all((d / f"{s}.json").is_file() for s in SPLITS):
            return d
    return None


def load_splits(split_dir: Path) -> dict[str, str]:
    """Map of video name (``"000"``, ``"000_003"``) to split, from the three split files."""
    out: dict[str, str] = {}
    for s in SPLITS:
        for a, b in read_split_file(split_dir / f"{s}.json"):
            for name in (a, b, f"{a}_{b}", f"{b}_{a}"):
                if out.setdefault(name, s) != s:
                    raise FFppError(f"video {name} is in both {out[name]} and {s} split files")
    return out


def _ids_of(name: str) -> tuple[str, ...]:
    m = _PAIR.match(name)
    if m:
        return m.group(1), m.group(2)
    if _ID.match(name):
        return (name,)
    return (f"name:{name}",)  # e.g. DeepFakeDetection's actor names: a group of its own


def deterministic_splits(names: Iterable[str]) -> dict[str, str]:
    """Split names so that ids linked through ``TTT_SSS`` share a split; stable across runs and machines."""
    names = sorted(set(names))
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for n in names:
        ids = _ids_of(n)
        for other in ids[1:]:
            parent[find(other)] = find(ids[0])
        find(ids[0])
    groups: dict[str, list[str]] = {}
    for i in list(parent):
        groups.setdefault(find(i), []).append(i)
    order = sorted(groups, key=lambda g: hashlib.sha1(min(groups[g]).encode()).hexdigest())
    split_of_group = dict(zip(order, ranked_splits(len(order)), strict=True))
    return {n: split_of_group[find(_ids_of(n)[0])] for n in names}


def _resolve_comp(base: Path, comp: str) -> Path:
    """``base/comp/videos``; ``raw`` and ``c0`` stand in for each other (both are lossless)."""
    d = base / comp / "videos"
    if not d.is_dir() and comp in ("raw", "c0"):
        alt = base / ("c0" if comp == "raw" else "raw") / "videos"
        if alt.is_dir():
            return alt
    return d


def _videos_in(d: Path) -> list[Path]:
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())


def list_videos(
    root: Path,
    hq: str = "c23",
    lq: str = "c40",
    methods: Iterable[str] | None = None,
    splits_dir: Path | None = None,
) -> list[FFVideo]:
    """Every real and fake video under an FF++ root, with its HQ/LQ/mask paths and split.

    The HQ folder decides which videos exist; a missing LQ file or mask is the caller's to report.
    ``methods=None`` takes every folder under ``manipulated_sequences``.
    """
    root = Path(root)
    for comp in (hq, lq):
        if comp not in COMPRESSIONS:
            raise FFppError(f"unknown compression {comp!r}: choose one of {', '.join(COMPRESSIONS)}")
    orig, manip = root / "original_sequences", root / "manipulated_sequences"
    if not orig.is_dir() and not manip.is_dir():
        raise FFppError(
            f"{root} has neither original_sequences/ nor manipulated_sequences/: not an FF++ root"
        )
    found = sorted(p.name for p in manip.iterdir() if p.is_dir()) if manip.is_dir() else []
    if methods is None:
        chosen = found
    else:
        chosen = list(dict.fromkeys(methods))
        missing = [m for m in chosen if m not in found]
        if missing:
            raise FFppError(
                f"method folder(s) not under {manip}: {', '.join(missing)} (found: {', '.join(found)})"
            )

    entries: list[tuple[str, str, str, Path, Path, Path | None]] = []  # video, name, method, hq, lq, mask
    if orig.is_dir():
        for src in sorted(p for p in orig.iterdir() if p.is_dir()):
            lq_dir = _resolve_comp(src, lq)
            for v in _videos_in(_resolve_comp(src, hq)):
                entries.append((f"{src.name}/{v.stem}", v.stem, REAL, v, lq_dir / v.name, None))
    for m in chosen:
        base = manip / m
        lq_dir = _resolve_comp(base, lq)
        for v in _videos_in(_resolve_comp(base, hq)):
            entries.append(
                (f"{m}/{v.stem}", v.stem, m, v, lq_dir / v.name, base / "masks" / "videos" / v.name)
            )
    if not entries:
        raise FFppError(f"no videos under {root} at compression {hq}")

    split_dir = find_split_dir(root, splits_dir)
    official = load_splits(split_dir) if split_dir else {}
    fallback = deterministic_splits(e[1] for e in entries if e[1] not in official)
    return [
        FFVideo(
            video=vid,
            name=name,
            method=method,
            label=int(method != REAL),
            split=official.get(name) or fallback[name],
            hq=h,
            lq=low,
            mask=mask,
        )
        for vid, name, method, h, low, mask in entries
    ]


# ---------------------------------------------------------------------------------------------------
# Video I/O (PyAV). Frames are streamed, never a whole video in memory.


class VideoReadError(AcfdError):
    """A video cannot be opened or has no video stream."""


def frame_count(path: Path) -> int:
    """Number of frames: the container's count, else by demuxing packets (no decoding)."""
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise VideoReadError(f"{path}: no video stream")
            s = c.streams.video[0]
            if s.frames and s.frames > 0:
                return int(s.frames)
            return sum(1 for p in c.demux(s) if p.size)
    except av.FFmpegError as e:
        raise VideoReadError(f"{path}: {e}") from e


def iter_frames(
    path: Path, fmt: str = "rgb24", wanted: set[int] | None = None
) -> Iterator[tuple[int, np.ndarray | None]]:
    """Yield ``(index, frame)`` for every decoded frame; frames not in ``wanted`` come as None (not converted).

    Raises VideoReadError when the file cannot be opened. A decode error mid-stream (a truncated
    file) ends the iteration quietly: the caller sees fewer frames than expected and reports it.
    """
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as e:
        raise VideoReadError(f"{path}: {e}") from e
    with container:
        if not container.streams.video:
            raise VideoReadError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        i = 0
        try:
            for frame in container.decode(stream):
                if wanted is None or i in wanted:
                    yield i, frame.to_ndarray(format=fmt)
                else:
                    yield i, None
                i += 1
        except av.FFmpegError:
            return


def write_video(path: Path, frames: Iterable[np.ndarray], level: str, fps: int = 25) -> Path:
    """Write RGB frames as FF++ does (``dataset/compress.py``): c0/raw lossless, c23/c40 H.264 CRF 23/40.

    c0 uses ``libx264rgb`` at CRF 0 (lossless RGB, as FF++); the others ``libx264`` yuv420p.
    The file is written to a temporary name and renamed, so a crash never leaves a half video.
    """
    if level in ("c0", "raw", "mask"):
        codec, pix_fmt, crf = "libx264rgb", "rgb24", 0
    elif level in ("c23", "c40"):
        codec, pix_fmt, crf = "libx264", "yuv420p", int(level[1:])
    else:
        raise ValueError(f"unknown compression level {level!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        encode_video(tmp, frames, codec, pix_fmt, crf, fps)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
    return path


def encode_video(
    path: Path,
    frames: Iterable[np.ndarray],
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    crf: int = 23,
    fps: int = 25,
) -> None:
    """Encode RGB uint8 frames (all the same size) to ``path`` in place (``write_video`` is the atomic one)."""
    with av.open(str(path), "w") as out:
        stream = None
        for frame in frames:
            if stream is None:
                stream = out.add_stream(codec, rate=fps)
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = pix_fmt
                # One thread: deterministic output for a given input and fast enough for small videos.
                stream.options = {"crf": str(crf), "threads": "1"}
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        if stream is None:
            raise ValueError(f"no frames to write to {path}")
        out.mux(stream.encode())
