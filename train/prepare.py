"""`acfd-train prepare`: paired HQ/LQ face crops and masks from an FF++-shaped dataset, in a crop cache.

For each video: sample frames uniformly, detect the face on the HQ frame (the largest face), crop the
HQ frame, the LQ frame and the mask frame (same index) with the same box, binarise the mask
(gray/255 > 0.1; zeros for reals) and store everything losslessly. Format: docs/data.md.

Every problem is recorded, counted and reported, never fatal and never silent: unreadable or
truncated videos, missing LQ files, missing or short masks, frames without a face. Each video is
written atomically (temporary files, then rename; its JSON record last), so a re-run resumes.

For the model card, each video's record keeps the content hashes (:func:`acfd.schemas.hashing.content_hash`)
of its HQ and LQ files (``hq_hash``, ``lq_hash``), and ``cache.json`` keeps what kind of dataset the
crops came from (``dataset``: FF++ with real forgeries, or ``acfd-train synth`` output, from its marker).
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import chain
from multiprocessing import get_context
from pathlib import Path

import av
import cv2
import numpy as np
from acfd.scanner.faces import DETECTOR_MODES, CropBox, FaceDetector, crop, crop_box, largest_face
from acfd.schemas.card import FAKES_REAL, FAKES_SYNTHETIC
from acfd.schemas.errors import AcfdError
from acfd.schemas.hashing import content_hash

from .ffpp import COMPRESSIONS, REAL, FFVideo, VideoReadError, frame_count, iter_frames, list_videos
from .synth import SYNTH_MARKER

CACHE_FORMAT = "acfd-crops/1"
INDEX_FIELDS = (
    "video",
    "frame",
    "row",
    "label",
    "method",
    "split",
    "status",
    "mask",
    "x0",
    "y0",
    "side",
    "score",
)

# Frame status (index column "status"). Only "ok" frames have crops the dataset uses.
OK, NO_FACE, MISSING = "ok", "no_face", "missing"
# Video status (record "status"; frame -1 rows in the index for videos without frames): ok, no_face (no
# face in any sampled frame), or one of these.
UNREADABLE, LQ_MISSING, TRUNCATED = "unreadable", "lq_missing", "truncated"
# Mask status per frame (index column "mask").
MASK_OK, MASK_NONE, MASK_MISSING, MASK_SHORT = "ok", "none", "missing", "short"


class PrepareError(AcfdError):
    """Options or cache state that make `prepare` impossible (bad input videos are recorded instead)."""


@dataclass(frozen=True)
class PrepareConfig:
    """Options of ``acfd-train prepare`` (validated on construction)."""

    ffpp: Path
    out: Path
    frames: int = 270
    methods: tuple[str, ...] | None = None  # None: every method folder present
    hq: str = "c23"
    lq: str = "c40"
    splits: Path | None = None
    size: int = 299
    detector: str = "auto"  # the scanner's default too: train and scan crop faces the same way
    margin: float = 1.3
    min_score: float = 0.5
    max_side: int = 640
    mask_threshold: float = 0.1
    workers: int = 1

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise PrepareError(f"--frames must be >= 1, got {self.frames}")
        if self.size < 16:
            raise PrepareError(f"--size must be >= 16, got {self.size}")
        for c in (self.hq, self.lq):
            if c not in COMPRESSIONS:
                raise PrepareError(f"unknown compression {c!r}: choose one of {', '.join(COMPRESSIONS)}")
        if self.detector not in DETECTOR_MODES:
            raise PrepareError(f"--detector must be one of {', '.join(DETECTOR_MODES)}, got {self.detector!r}")
        if self.margin < 1.0:
            raise PrepareError(f"crop margin must be >= 1, got {self.margin}")
        if not 0.0 <= self.mask_threshold < 1.0:
            raise PrepareError(f"mask threshold must lie in [0, 1), got {self.mask_threshold}")
        if self.workers < 1:
            raise PrepareError(f"--workers must be >= 1, got {self.workers}")
        if not Path(self.ffpp).is_dir():
            raise PrepareError(f"FF++ root not found: {self.ffpp}")

    def cache_params(self) -> dict[str, object]:
        """What decides the content of a crop; a cache is only resumed with the same values."""
        return {
            "format": CACHE_FORMAT,
            "frames": self.frames,
            "hq": self.hq,
            "lq": self.lq,
            "size": self.size,
            "detector": self.detector,
            "margin": self.margin,
            "min_score": self.min_score,
            "max_side": self.max_side,
            "mask_threshold": self.mask_threshold,
        }


@dataclass
class PrepareSummary:
    """Counts over the whole cache after a run (``processed``/``skipped``: this run)."""

    out: Path
    processed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    videos: Counter = field(default_factory=Counter)  # by video status
    frames: Counter = field(default_factory=Counter)  # by frame status
    masks: Counter = field(default_factory=Counter)  # fake frames (with a face) by mask status
    mask_videos: Counter = field(default_factory=Counter)  # fake videos by mask-video status
    crops: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> {"real": n, "fake": n}

    def to_dict(self) -> dict[str, object]:
        return {
            "out": str(self.out),
            "processed": self.processed,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
            "videos": dict(self.videos),
            "frames": dict(self.frames),
            "masks": dict(self.masks),
            "mask_videos": dict(self.mask_videos),
            "crops": self.crops,
        }

    def lines(self) -> list[str]:
        """A short human-readable report."""
        fmt = lambda c: ", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "none"  # noqa: E731
        out = [
            f"videos: {sum(self.videos.values())} ({fmt(self.videos)}); this run processed {self.processed}, "
            f"skipped {self.skipped} already done, in {self.seconds:.1f} s",
            f"frames: {fmt(self.frames)}",
            f"fake-frame masks: {fmt(self.masks)}; fake mask videos: {fmt(self.mask_videos)}",
        ]
        for s, c in sorted(self.crops.items()):
            out.append(f"crops {s}: {c.get('real', 0)} real, {c.get('fake', 0)} fake")
        return out


def sample_indices(n: int, k: int) -> list[int]:
    """``k`` frame indices spread uniformly over ``n`` frames (all of them when ``n <= k``)."""
    if n <= k:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, k)})


def _scale_box(box: CropBox, s: float) -> CropBox:
    if s == 1.0:
        return box
    return CropBox(int(round(box.x0 * s)), int(round(box.y0 * s)), max(1, int(round(box.side * s))))


def _paths(cache: Path, video: str) -> dict[str, Path]:
    base = cache / "crops" / video
    return {k: base.with_name(f"{base.name}.{k}.npy") for k in ("hq", "lq", "mask")} | {
        "record": base.with_name(f"{base.name}.json")
    }


def _tmp(p: Path) -> Path:
    return p.with_name(f".{p.name}.tmp")


def _iter_or_empty(path: Path | None, fmt: str, wanted: set[int]) -> tuple[Iterator, str]:
    """Frame iterator of a mask video and its status; an empty iterator when missing or unreadable."""
    if path is None:
        return iter(()), MASK_NONE
    if not path.is_file():
        return iter(()), MASK_MISSING
    try:
        it = iter_frames(path, fmt=fmt, wanted=wanted)
        first = next(it)
    except (VideoReadError, StopIteration):
        return iter(()), UNREADABLE
    return chain([first], it), MASK_OK


def prepare_video(v: FFVideo, cfg: PrepareConfig, det: FaceDetector) -> dict[str, object]:
    """Crop one video into the cache; returns (and writes, last) its JSON record. Never raises on bad input."""
    paths = _paths(Path(cfg.out), v.video)
    rec: dict[str, object] = {
        "video": v.video,
        "name": v.name,
        "method": v.method,
        "label": v.label,
        "split": v.split,
        "hq": str(v.hq),
        "lq": str(v.lq),
        "mask_video": str(v.mask) if v.mask else None,
        # content hashes of the source files (None: unreadable or missing), listed by the model card
        "hq_hash": content_hash(v.hq),
        "lq_hash": content_hash(v.lq),
        "status": OK,
        "errors": [],
        "frames": [],
    }
    errors: list[str] = rec["errors"]  # type: ignore[assignment]

    def finish() -> dict[str, object]:
        paths["record"].parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp(paths["record"])
        tmp.write_text(json.dumps(rec), encoding="utf-8")
        tmp.replace(paths["record"])
        return rec

    if not v.lq.is_file():
        rec["status"] = LQ_MISSING
        errors.append(f"LQ video missing: {v.lq}")
        return finish()
    try:
        n = frame_count(v.hq)
    except VideoReadError as e:
        rec["status"] = UNREADABLE
        errors.append(str(e))
        return finish()
    wanted_list = sample_indices(n, cfg.frames)
    wanted = set(wanted_list)
    rec["frames_in_video"] = n
    if not wanted_list:
        rec["status"] = UNREADABLE
        errors.append(f"{v.hq}: no frames")
        return finish()

    rows = len(wanted_list)
    s = cfg.size
    paths["hq"].parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "hq": np.lib.format.open_memmap(_tmp(paths["hq"]), mode="w+", dtype=np.uint8, shape=(rows, s, s, 3)),
        "lq": np.lib.format.open_memmap(_tmp(paths["lq"]), mode="w+", dtype=np.uint8, shape=(rows, s, s, 3)),
        "mask": np.lib.format.open_memmap(_tmp(paths["mask"]), mode="w+", dtype=np.uint8, shape=(rows, s, s)),
    }
    frames: list[dict[str, object]] = rec["frames"]  # type: ignore[assignment]
    try:
        hq_it = iter_frames(v.hq, wanted=wanted)
        lq_it = iter_frames(v.lq, wanted=wanted)
        mask_it, mask_status = _iter_or_empty(v.mask, "gray", wanted)
        rec["mask_status"] = mask_status
        if mask_status in (MASK_MISSING, UNREADABLE):
            errors.append(f"mask video {mask_status}: {v.mask}")
        mask_frames = 0
        row = 0
        decoded = 0
        for i, hq in hq_it:
            decoded += 1
            lq_item = next(lq_it, None)
            mask_item = next(mask_it, None)
            if mask_item is not None:
                mask_frames += 1
            if i not in wanted:
                continue
            entry: dict[str, object] = {"frame": i, "row": row, "status": OK}
            frames.append(entry)
            row += 1
            if lq_item is None or lq_item[1] is None:
                entry["status"] = MISSING
                continue
            face = largest_face(det.detect(hq))
            if face is None:
                entry["status"] = NO_FACE
                continue
            box = crop_box(face, cfg.margin)
            entry.update(x0=box.x0, y0=box.y0, side=box.side, score=round(face.score, 4))
            r = entry["row"]
            arrays["hq"][r] = crop(hq, box, s)
            lq = lq_item[1]
            arrays["lq"][r] = crop(lq, _scale_box(box, lq.shape[1] / hq.shape[1]), s)
            if v.label == 0:
                entry["mask"] = MASK_NONE
            elif mask_item is None or mask_item[1] is None:
                entry["mask"] = MASK_SHORT if mask_status == MASK_OK else MASK_MISSING
            else:
                m = mask_item[1]
                if m.shape != hq.shape[:2]:
                    m = cv2.resize(m, hq.shape[1::-1], interpolation=cv2.INTER_LINEAR)
                arrays["mask"][r] = crop(m, box, s) > cfg.mask_threshold * 255
                entry["mask"] = MASK_OK
        # Sampled frames the decoder never reached: a truncated file or a wrong frame count.
        for i in wanted_list[len(frames) :]:
            frames.append({"frame": i, "row": row, "status": MISSING})
            row += 1
        rec["frames_decoded"] = decoded
        if decoded == 0:
            rec["status"] = UNREADABLE
            errors.append(f"{v.hq}: no frame could be decoded")
        elif not any(f["status"] == OK for f in frames) and any(f["status"] == NO_FACE for f in frames):
            rec["status"] = NO_FACE
            errors.append(f"{v.hq}: no face in any sampled frame")
        elif any(f["status"] == MISSING for f in frames):
            rec["status"] = TRUNCATED
            errors.append(f"{v.hq} or {v.lq}: fewer frames decoded than the {n} announced")
        if mask_status == MASK_OK:
            rec["mask_frames"] = mask_frames
            if mask_frames < decoded:
                rec["mask_status"] = MASK_SHORT
                errors.append(f"mask video has {mask_frames} frames, video {decoded}: {v.mask}")
    except (AcfdError, av.FFmpegError, OSError, ValueError) as e:
        # Whatever a broken file makes the decoder raise is recorded with the video, never fatal.
        rec["status"] = UNREADABLE
        errors.append(f"{type(e).__name__}: {e}")
        rec["frames"] = []
    for a in arrays.values():
        a.flush()
    arrays.clear()  # drop the memory maps before the files are renamed or removed
    for k in ("hq", "lq", "mask"):
        if rec["status"] == UNREADABLE:
            _tmp(paths[k]).unlink(missing_ok=True)
        else:
            _tmp(paths[k]).replace(paths[k])
    return finish()


# --------------------------------------------------------------------------------------------------
# Worker processes: one detector each (a MediaPipe detector is not shared between threads or processes);
# spawned, not forked, because MediaPipe runs threads of its own in the parent.

_worker_state: dict[str, object] = {}


def _worker_init(cfg: PrepareConfig) -> None:
    _worker_state["cfg"] = cfg
    _worker_state["det"] = FaceDetector(cfg.detector, cfg.min_score, cfg.max_side)  # type: ignore[arg-type]


def _worker_run(v: FFVideo) -> dict[str, object]:
    return prepare_video(v, _worker_state["cfg"], _worker_state["det"])  # type: ignore[arg-type]


def dataset_info(root: Path) -> dict[str, object]:
    """What kind of dataset ``root`` is: ``acfd-train synth`` output (its marker file) or FF++.

    ``{"kind": "synth"|"ffpp", "forgeries": "synthetic"|"real", "sources": [...]}``, plus, when the marker
    records them, ``persons`` (distinct persons the footage shows), ``corpora`` (the source repositories
    of the files used) and ``without_corpus`` (used files of no known corpus); a root without the marker
    is taken for FaceForensics++ (real forgeries made by the FF++ methods).
    """
    marker = Path(root) / SYNTH_MARKER
    if not marker.is_file():
        return {"kind": "ffpp", "forgeries": FAKES_REAL, "sources": ["FaceForensics++"]}
    try:
        d = json.loads(marker.read_text(encoding="utf-8"))
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise PrepareError(f"{marker} is not a valid dataset marker ({e})") from e
    if d.get("complete") is False:  # written first by synth/swaps, replaced by the full marker at the end
        raise PrepareError(f"{root} is an unfinished `acfd-train {d.get('kind', 'synth')}` output (interrupted?): "
                           "run that command again")
    forgeries = d.get("forgeries", FAKES_SYNTHETIC)
    if forgeries not in (FAKES_REAL, FAKES_SYNTHETIC):
        raise PrepareError(f"{marker}: forgeries must be real or synthetic, not {forgeries!r}")
    sources = d.get("sources") or []
    info: dict[str, object] = {
        "kind": str(d.get("kind", "synth")),
        "forgeries": forgeries,
        "sources": [str(x) for x in sources] if isinstance(sources, list) else [str(sources)],
    }
    # Who and where the footage came from, when the marker knows (a marker from before acfd recorded them
    # has neither: the keys stay out, read as unknown).
    persons = d.get("persons")
    if isinstance(persons, int) and not isinstance(persons, bool) and persons > 0:
        info["persons"] = persons
    corpora = d.get("corpora")
    if isinstance(corpora, list) and corpora:
        info["corpora"] = [str(x) for x in corpora]
        without = d.get("without_corpus")
        if isinstance(without, list) and without:
            info["without_corpus"] = [str(x) for x in without]
    return info


def _check_cache(cfg: PrepareConfig) -> None:
    out = Path(cfg.out)
    meta = out / "cache.json"
    params = cfg.cache_params()
    try:
        old = json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else None
        if old is not None and not isinstance(old, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise PrepareError(f"{meta} is not a crop cache's cache.json ({e}); use another --out") from e
    if old is not None:
        diff = {k: (old.get(k), v) for k, v in params.items() if old.get(k) != v}
        if diff:
            what = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in diff.items())
            raise PrepareError(f"cache {out} was prepared with other options ({what}); use another --out")
    # "dataset" is not a cache parameter: an older cache (without it) resumes and gains it. Read before the
    # folder is made: a refused root leaves no empty cache behind.
    info = params | {"ffpp": str(cfg.ffpp), "dataset": dataset_info(cfg.ffpp)}
    try:
        out.mkdir(parents=True, exist_ok=True)
        meta.write_text(json.dumps(info, indent=1), encoding="utf-8")
    except OSError as e:
        raise PrepareError(f"cannot write the crop cache {out}: {e}") from e


def _with_hashes(rec: dict[str, object], v: FFVideo, path: Path) -> dict[str, object]:
    """A record from an older acfd gains the content hashes of its files (the model card lists them)."""
    if "hq_hash" in rec and "lq_hash" in rec:
        return rec
    rec = rec | {"hq_hash": content_hash(v.hq), "lq_hash": content_hash(v.lq)}
    tmp = _tmp(path)
    tmp.write_text(json.dumps(rec), encoding="utf-8")
    tmp.replace(path)
    return rec


def _index_rows(rec: dict[str, object]) -> Iterator[dict[str, object]]:
    base = {k: rec[k] for k in ("video", "label", "method", "split")}
    frames = rec.get("frames") or []
    if not frames:  # a video without frames still appears in the index, with its status
        yield base | {
            "frame": -1,
            "row": -1,
            "status": rec["status"],
            "mask": "",
            "x0": "",
            "y0": "",
            "side": "",
        }
        return
    for f in frames:  # type: ignore[union-attr]
        yield base | {
            "frame": f["frame"],
            "row": f["row"],
            "status": f["status"],
            "mask": f.get("mask", ""),
            "x0": f.get("x0", ""),
            "y0": f.get("y0", ""),
            "side": f.get("side", ""),
            "score": f.get("score", ""),
        }


def prepare(cfg: PrepareConfig, progress: bool = True) -> PrepareSummary:
    """Build or resume the crop cache ``cfg.out``; writes index.csv and summary.json; returns the summary."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    videos = list_videos(cfg.ffpp, cfg.hq, cfg.lq, cfg.methods, cfg.splits)
    _check_cache(cfg)
    out = Path(cfg.out)
    records: dict[str, dict[str, object]] = {}
    todo: list[FFVideo] = []
    for v in videos:
        p = _paths(out, v.video)["record"]
        if p.is_file():
            try:
                rec = json.loads(p.read_text(encoding="utf-8"))
            except ValueError:
                rec = None  # a damaged record: redo the video
            if isinstance(rec, dict):
                records[v.video] = _with_hashes(rec, v, p)
                continue
        todo.append(v)
    summary = PrepareSummary(out=out, skipped=len(records))

    bar = tqdm(total=len(todo), desc="prepare", unit="video", disable=not progress)
    try:
        if cfg.workers == 1 or len(todo) <= 1:
            with FaceDetector(cfg.detector, cfg.min_score, cfg.max_side) as det:  # type: ignore[arg-type]
                for v in todo:
                    records[v.video] = prepare_video(v, cfg, det)
                    summary.processed += 1
                    bar.set_postfix_str(f"{v.video}: {records[v.video]['status']}")
                    bar.update()
        else:
            with ProcessPoolExecutor(
                cfg.workers, mp_context=get_context("spawn"), initializer=_worker_init, initargs=(cfg,)
            ) as pool:
                for v, rec in zip(todo, pool.map(_worker_run, todo), strict=True):
                    records[v.video] = rec
                    summary.processed += 1
                    bar.set_postfix_str(f"{v.video}: {rec['status']}")
                    bar.update()
    finally:
        bar.close()

    tmp = out / ".index.csv.tmp"
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=INDEX_FIELDS)
        w.writeheader()
        for v in videos:
            rec = records[v.video]
            summary.videos[str(rec["status"])] += 1
            if rec["label"] == 1 and rec.get("mask_status"):
                summary.mask_videos[str(rec["mask_status"])] += 1
            for row in _index_rows(rec):
                w.writerow(row)
                if row["frame"] == -1:
                    continue
                summary.frames[str(row["status"])] += 1
                if row["status"] == OK:
                    kind = "real" if rec["method"] == REAL else "fake"
                    c = summary.crops.setdefault(str(rec["split"]), {"real": 0, "fake": 0})
                    c[kind] += 1
                    if kind == "fake":
                        summary.masks[str(row["mask"])] += 1
    os.replace(tmp, out / "index.csv")
    summary.seconds = time.perf_counter() - t0
    (out / "summary.json").write_text(json.dumps(summary.to_dict(), indent=1), encoding="utf-8")
    return summary


# --------------------------------------------------------------------------------------------------
# Reading a cache's provenance (the model card's training data and evaluation sets)


@dataclass(frozen=True)
class CachedVideo:
    """One video of a crop cache as the model card sees it."""

    video: str  # cache id, e.g. "youtube/000"
    method: str  # "real" or the manipulation method
    label: int  # 1 fake
    split: str
    crops: int  # frames with a usable crop (0: the video never reached the model)
    hq_hash: str | None  # content hashes of the source files; None when unknown (older cache)
    lq_hash: str | None


def cache_meta(cache: Path) -> dict[str, object]:
    """CACHE/cache.json, or a PrepareError naming the file."""
    f = Path(cache) / "cache.json"
    try:
        d = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PrepareError(f"{f} is not a crop cache's cache.json ({e}); run `acfd-train prepare` first") from e
    if not isinstance(d, dict):
        raise PrepareError(f"{f} is not a crop cache's cache.json (not a JSON object)")
    return d


def cache_dataset(cache: Path) -> dict[str, object]:
    """The ``dataset`` entry of a cache (kind, forgeries, sources) plus its root (``ffpp``).

    A cache from before acfd recorded it: the root's marker decides while the root exists; otherwise
    kind and forgeries are ``unknown``.
    """
    meta = cache_meta(cache)
    root = str(meta.get("ffpp", ""))
    info = meta.get("dataset")
    if not isinstance(info, dict):
        if root and Path(root).is_dir():
            info = dataset_info(Path(root))
        else:
            info = {"kind": "unknown", "forgeries": "unknown", "sources": []}
    return {**info, "root": root}


def cache_videos(cache: Path, splits: tuple[str, ...] | list[str] | None = None) -> list[CachedVideo]:
    """The videos of a cache (of ``splits``; default all), in index order, with their content hashes."""
    path = Path(cache) / "index.csv"
    if not path.is_file():
        raise PrepareError(f"{cache} is not a crop cache (no index.csv): run `acfd-train prepare` first")
    first: dict[str, dict[str, str]] = {}  # video -> its first index row (method, label, split)
    crops: Counter = Counter()  # video -> frames with a usable crop
    with path.open(newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            if splits is not None and r["split"] not in splits:
                continue
            first.setdefault(r["video"], r)
            crops[r["video"]] += r["status"] == OK
    out = []
    for video, r in first.items():
        rec: object = None
        try:
            rec = json.loads(_paths(Path(cache), video)["record"].read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass  # no record: hashes unknown
        rec = rec if isinstance(rec, dict) else {}
        out.append(CachedVideo(
            video=video, method=r["method"], label=int(r["label"]), split=r["split"], crops=crops[video],
            hq_hash=rec.get("hq_hash") or None, lq_hash=rec.get("lq_hash") or None,
        ))  # fmt: skip
    return out
