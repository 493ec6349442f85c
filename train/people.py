"""`acfd-train people`: group face photos and videos into persons, and hold some persons apart.

Each source (a photo, or a video: a few frames spread over it) gets the dlib face descriptor of its
main face (the largest BlazeFace face; :mod:`acfd.scanner.identity`: 5-point alignment and dlib's
face-recognition ResNet); a video's descriptor is the mean over its sampled frames. Sources are grouped
into persons by average linkage (UPGMA) on the Euclidean distances: the two groups whose mean pairwise
distance is smallest are merged while that mean is below ``distance`` (default 0.6, dlib's decision
threshold). Average linkage rather than connected components, so one chance close pair does not chain
many people together. The two errors cost differently: a wrong merge only makes a "person" bigger (two
people who are never paired with each other), a missed merge can put one person on both sides of a
train/validation split. On the 318 faces of docs/data.md, 0.5 split 5 of 16 people with known labels
(LFW, dlib's chips) into two or more persons and 0.6 split one; both merged different people (many
East Asian faces, which dlib's descriptor packs closer, and others at 0.55-0.68), the harmless error.

``--holdout F --seed S`` marks a seeded random share F of the persons as held out: the cross-identity
swap set (:mod:`acfd.train.swaps`) uses only those, ``acfd-train synth --exclude`` skips every source of
theirs, so no person of the validation set is ever trained on. Persons are held out in whole linked
groups (persons with any file pair closer than ``distance``), so no held-out file is that close to a
kept one, even where the grouping split one person in two.

The JSON names every file (path as given and its ``ht1:`` content hash, which is how other commands
find a file again even after a copy or rename), the persons, the distances the grouping used and the
sources without a usable face (with the reason). Descriptors are biometric templates: they live only in
this process's memory and are never written (not to the JSON, not to the sheets).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from acfd.scanner.faces import Face, FaceDetector, crop, crop_box, largest_face
from acfd.scanner.identity import MIN_CONTRAST, embedder
from acfd.schemas.errors import AcfdError
from acfd.schemas.hashing import content_hash

from .ffpp import VIDEO_SUFFIXES, VideoReadError, frame_count, iter_frames

PEOPLE_FORMAT = "acfd-people/1"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
# File pairs of different persons closer than distance + NEAR, or of one person farther than
# distance - NEAR, are listed in the JSON (and drawn on the sheets) as the ones worth checking by eye.
NEAR = 0.1
_NEAR_MAX = 30  # at most this many of each kind
_THUMB = 112


class PeopleError(AcfdError):
    """A people option, source or people file is unusable."""


@dataclass(frozen=True)
class PeopleConfig:
    """Options of ``acfd-train people`` (validated on construction)."""

    sources: tuple[Path, ...]  # photos, videos or folders of them (walked recursively)
    out: Path
    distance: float = 0.6  # average-linkage threshold on dlib descriptor distances
    video_frames: int = 5  # frames sampled per video (evenly spread)
    holdout: float = 0.0  # share of the persons to hold out (0: none)
    seed: int = 0
    sheets: Path | None = None  # folder for contact sheets (PNG), or None
    detector: str = "auto"

    def __post_init__(self) -> None:
        if not self.sources:
            raise PeopleError("give at least one photo, video or folder")
        for s in self.sources:
            if not Path(s).exists():
                raise PeopleError(f"source not found: {s}")
        if not 0.0 < self.distance < 2.0:
            raise PeopleError(f"--distance must be in (0, 2), got {self.distance}")
        if self.video_frames < 1:
            raise PeopleError(f"--frames must be >= 1, got {self.video_frames}")
        if not 0.0 <= self.holdout < 1.0:
            raise PeopleError(f"--holdout must be in [0, 1), got {self.holdout}")
        if self.detector not in ("short", "full", "auto"):
            raise PeopleError(f"detector must be 'short', 'full' or 'auto', got {self.detector!r}")


def is_image(path: Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def expand_sources(paths: Iterable[Path]) -> list[Path]:
    """Photos and videos given, folders walked recursively (sorted); duplicates (same real path) once."""
    out: list[Path] = []
    seen: set[Path] = set()
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(
                q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES and q.is_file()
            )
        elif p.is_file():
            found = [p]
        else:
            raise PeopleError(f"source not found: {p}")
        for q in found:
            r = q.resolve()
            if r not in seen:
                seen.add(r)
                out.append(q)
    if not out:
        raise PeopleError(f"no photo or video ({', '.join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)}) in the sources")
    return out


def read_image(path: Path) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB (greyscale is expanded); PeopleError if unreadable."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise PeopleError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def sample_frames(path: Path, n: int) -> list[np.ndarray]:
    """``n`` frames spread evenly over a video (fewer when it is shorter); PeopleError if unreadable."""
    try:
        total = frame_count(path)
        if total < 1:
            raise PeopleError(f"no frames in {path}")
        wanted = sorted({int(round(x)) for x in np.linspace(0, total - 1, min(n, total))})
        frames = [f for _, f in iter_frames(path, wanted=set(wanted)) if f is not None]
    except VideoReadError as e:
        raise PeopleError(f"cannot read video {e}") from e
    if not frames:
        raise PeopleError(f"no frames decoded from {path}")
    return frames


# --------------------------------------------------------------------------------------------------
# Descriptors (in memory only)


@dataclass
class _Source:
    path: Path
    hash: str
    frames: int = 0  # frames that gave a descriptor (1 for a photo)
    reason: str | None = None  # why it has no descriptor
    thumb: np.ndarray | None = None


def _describe(
    path: Path, det: FaceDetector, video_frames: int, want_thumb: bool
) -> tuple[_Source, np.ndarray | None]:
    """The source's record and its descriptor (None with a reason when it has no usable face)."""
    src = _Source(path=path, hash=content_hash(path) or "")
    try:
        images = [read_image(path)] if is_image(path) else sample_frames(path, video_frames)
    except PeopleError as e:
        src.reason = str(e)
        return src, None
    descs: list[np.ndarray] = []
    faces_seen = 0
    for img in images:
        face = largest_face(det.detect(img))
        if face is None:
            continue
        faces_seen += 1
        d = embedder().embed(img, [face])[0]
        if d is None:
            continue
        descs.append(d)
        if want_thumb and src.thumb is None:
            src.thumb = thumbnail(img, face)
    what = "the photo" if len(images) == 1 and is_image(path) else f"{len(images)} sampled frames"
    if not descs:
        src.reason = (
            f"no face found in {what}" if faces_seen == 0
            else f"face too dark or flat to tell people apart (contrast < {MIN_CONTRAST:g}) in {what}"
        )  # fmt: skip
        return src, None
    src.frames = len(descs)
    return src, np.mean(descs, axis=0)


def thumbnail(img: np.ndarray, face: Face, size: int = _THUMB) -> np.ndarray:
    """A square crop around the face (1.6x its box), ``size`` px: what the sheets show."""
    return crop(img, crop_box(face, 1.6), size)


# --------------------------------------------------------------------------------------------------
# Grouping


def average_linkage(dist: np.ndarray, threshold: float) -> tuple[list[list[int]], np.ndarray]:
    """Average-linkage (UPGMA) clusters of a symmetric distance matrix, merged while below ``threshold``.

    Returns the clusters (sorted index lists, ordered by their first index) and the matrix of average
    distances between them (same order; the diagonal is 0). Ties go to the lowest indices: deterministic.
    """
    n = len(dist)
    if n == 0:
        return [], np.zeros((0, 0))
    d = np.array(dist, np.float64)
    np.fill_diagonal(d, np.inf)
    members: dict[int, list[int]] = {i: [i] for i in range(n)}
    active = np.ones(n, bool)
    while active.sum() > 1:
        masked = np.where(active[:, None] & active[None, :], d, np.inf)
        i, j = divmod(int(np.argmin(masked)), n)  # row-major: i < j, the lowest pair on ties
        if not masked[i, j] < threshold:
            break
        ni, nj = len(members[i]), len(members[j])
        # Lance-Williams update for average linkage: the mean of all member-to-member distances.
        row = (ni * d[i] + nj * d[j]) / (ni + nj)
        d[i], d[:, i] = row, row
        d[i, i] = np.inf
        active[j] = False
        members[i] = sorted(members[i] + members.pop(j))
    keys = sorted(members, key=lambda k: members[k][0])
    between = d[np.ix_(keys, keys)]
    np.fill_diagonal(between, 0.0)
    return [members[k] for k in keys], between


# --------------------------------------------------------------------------------------------------
# The people file


@dataclass(frozen=True)
class PersonFile:
    path: str
    hash: str


@dataclass(frozen=True)
class Person:
    id: str
    files: tuple[PersonFile, ...]
    held_out: bool = False


@dataclass(frozen=True)
class People:
    """A people file as read back: persons with their files, and the sources without a usable face."""

    path: Path
    persons: tuple[Person, ...]
    no_face: tuple[PersonFile, ...] = ()
    holdout: float = 0.0

    def person_of(self) -> dict[str, str]:
        """Content hash -> person id, for every file with a face."""
        return {f.hash: p.id for p in self.persons for f in p.files}

    def held_out(self) -> tuple[Person, ...]:
        return tuple(p for p in self.persons if p.held_out)

    def held_out_hashes(self) -> set[str]:
        return {f.hash for p in self.held_out() for f in p.files}

    def known_hashes(self) -> set[str]:
        """Every file the people file names (with or without a face)."""
        return {f.hash for p in self.persons for f in p.files} | {f.hash for f in self.no_face}


def load_people(path: Path) -> People:
    """Read a people file written by :func:`group_people`; PeopleError with one line if it is not one."""
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(d, dict) or d.get("format") != PEOPLE_FORMAT:
            raise ValueError(f"not an {PEOPLE_FORMAT} file")
        persons = tuple(
            Person(
                id=str(p["id"]),
                files=tuple(PersonFile(str(f["path"]), str(f["hash"])) for f in p["files"]),
                held_out=bool(p.get("held_out", False)),
            )
            for p in d["persons"]
        )
        no_face = tuple(PersonFile(str(f["path"]), str(f["hash"])) for f in d.get("no_face", []))
        holdout = float((d.get("holdout") or {}).get("fraction", 0.0))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PeopleError(f"{path} is not a people file from `acfd-train people` ({e})") from e
    return People(path=path, persons=persons, no_face=no_face, holdout=holdout)


@dataclass
class PeopleSummary:
    out: Path
    sources: int = 0
    with_face: int = 0
    persons: int = 0
    multi_file_persons: int = 0
    held_out_persons: int = 0
    held_out_files: int = 0
    closest_kept: float | None = None  # smallest distance between a held-out file and a kept one
    close_pairs: int = 0  # held-out/kept file pairs closer than the threshold
    distance: float = 0.0
    no_face: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    sheets: int = 0
    seconds: float = 0.0

    def lines(self) -> list[str]:
        out = [
            f"{self.sources} sources: {self.with_face} with a face, in {self.persons} persons "
            f"({self.multi_file_persons} with more than one file); {len(self.no_face)} without a usable face; "
            f"written to {self.out} [{self.seconds:.1f} s]"
        ]
        if self.held_out_persons:
            margin = (f"; nearest kept file at distance {self.closest_kept:.3f}"
                      f"{f', {self.close_pairs} pairs below {self.distance:g} (listed in the JSON)' if self.close_pairs else ''}"
                      if self.closest_kept is not None else "")  # fmt: skip
            out.append(f"held out: {self.held_out_persons} persons ({self.held_out_files} files){margin}")
        if self.no_face:
            first = "; ".join(f"{Path(p).name}: {why}" for p, why in self.no_face[:3])
            more = f"; and {len(self.no_face) - 3} more (all in the JSON)" if len(self.no_face) > 3 else ""
            out.append(f"no usable face: {first}{more}")
        if self.sheets:
            out.append(f"{self.sheets} contact sheets written")
        return out


def linked_persons(dist: np.ndarray, clusters: list[list[int]], threshold: float) -> list[list[int]]:
    """Persons linked through any file pair closer than ``threshold`` (connected components, sorted).

    Average linkage can leave two files of one person in two persons when the rest of their files differ;
    holding out whole components means no held-out file lies within ``threshold`` of a kept file."""
    n = len(clusters)
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a in range(n):
        for b in range(a + 1, n):
            if dist[np.ix_(clusters[a], clusters[b])].min() < threshold:
                parent[find(b)] = find(a)
    comps: dict[int, list[int]] = {}
    for k in range(n):
        comps.setdefault(find(k), []).append(k)
    return sorted(comps.values())


def pick_held_out(components: list[list[int]], n: int, fraction: float, seed: int) -> set[int]:
    """A seeded random share ``fraction`` of the ``n`` persons, taken as whole components: components in a
    seeded random order, each added while it fits in the count (a component larger than what is left is
    passed over, so the count can fall short when most persons are linked together)."""
    if fraction <= 0:
        return set()
    if n < 2:
        raise PeopleError(f"--holdout needs at least 2 persons, found {n}")
    k = min(max(1, int(round(fraction * n))), n - 1)  # both sides keep at least one person
    held: set[int] = set()
    for c in np.random.default_rng(seed).permutation(len(components)):
        if len(held) + len(components[c]) <= k:
            held |= set(components[c])
        if len(held) == k:
            break
    if not held:
        raise PeopleError(
            f"no group of linked persons fits in --holdout {fraction:g} of {n} persons: hold out a larger share"
        )
    return held


def _pairs(
    dist: np.ndarray, label: Sequence[int], threshold: float
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Near-threshold file pairs: (different persons, closest first), (same person, farthest first)."""
    n = len(label)
    iu = np.triu_indices(n, 1)
    d = dist[iu]
    same = np.asarray(label)[iu[0]] == np.asarray(label)[iu[1]]
    cross = np.flatnonzero(~same & (d < threshold + NEAR))
    cross = cross[np.lexsort((cross, d[cross]))][:_NEAR_MAX]
    within = np.flatnonzero(same & (d > threshold - NEAR))
    within = within[np.lexsort((within, -d[within]))][:_NEAR_MAX]
    return ([(int(iu[0][k]), int(iu[1][k])) for k in cross], [(int(iu[0][k]), int(iu[1][k])) for k in within])


def _holdout_doc(
    cfg: PeopleConfig, dist: np.ndarray, label: np.ndarray, held: set[int], pair: Any,
    components: list[list[int]],
) -> dict[str, object] | None:
    """The holdout's seed and share, the linked groups it chose from, and how close the held-out files
    come to the kept ones (by construction not closer than ``distance``)."""
    if cfg.holdout <= 0:
        return None
    is_held = np.isin(label, sorted(held))
    hi, ki = np.flatnonzero(is_held), np.flatnonzero(~is_held)
    cross = dist[np.ix_(hi, ki)]
    close = np.argwhere(cross < cfg.distance)
    close = close[np.lexsort((close[:, 1], close[:, 0], cross[close[:, 0], close[:, 1]]))][:_NEAR_MAX]
    return {
        "fraction": cfg.holdout,
        "seed": cfg.seed,
        "linked_groups": len(components),
        "largest_linked_group": max(map(len, components)),
        "closest_kept_distance": round(float(cross.min()), 4) if cross.size else None,
        "kept_pairs_below_distance": int((cross < cfg.distance).sum()),
        "close_pairs": [pair(int(hi[a]), int(ki[b])) for a, b in close],
    }


def group_people(cfg: PeopleConfig, progress: bool = False) -> PeopleSummary:
    """Describe, group and write ``cfg.out`` (and the sheets); same sources and options, same file."""
    t0 = time.perf_counter()
    paths = expand_sources(cfg.sources)
    records: list[_Source] = []
    descs: list[np.ndarray] = []
    with_face: list[int] = []  # record index of each descriptor
    with FaceDetector(cfg.detector) as det:  # type: ignore[arg-type]
        it: Iterable[Path] = paths
        if progress:
            from tqdm import tqdm

            it = tqdm(paths, desc="faces", unit="file")
        for p in it:
            rec, desc = _describe(p, det, cfg.video_frames, cfg.sheets is not None)
            records.append(rec)
            if desc is not None:
                with_face.append(len(records) - 1)
                descs.append(desc)
    emb = np.stack(descs).astype(np.float64) if descs else np.zeros((0, 128))
    d2 = (emb * emb).sum(1)[:, None] + (emb * emb).sum(1)[None, :] - 2.0 * emb @ emb.T
    dist = np.sqrt(np.maximum(d2, 0.0))
    np.fill_diagonal(dist, 0.0)
    del emb, descs  # the templates are not needed past this point
    clusters, between = average_linkage(dist, cfg.distance)
    components = linked_persons(dist, clusters, cfg.distance) if cfg.holdout > 0 else []
    held = pick_held_out(components, len(clusters), cfg.holdout, cfg.seed)
    width = max(3, len(str(max(0, len(clusters) - 1))))
    ids = [f"p{k:0{width}d}" for k in range(len(clusters))]
    label = np.empty(len(with_face), int)
    for k, c in enumerate(clusters):
        label[c] = k

    def rnd(x: float) -> float:
        return round(float(x), 4)

    persons = []
    for k, c in enumerate(clusters):
        sub = dist[np.ix_(c, c)][np.triu_indices(len(c), 1)]
        others = [j for j in range(len(clusters)) if j != k]
        nearest = min(others, key=lambda j: (between[k, j], j)) if others else None
        persons.append({
            "id": ids[k],
            "held_out": k in held,
            "files": [
                {"path": str(records[with_face[i]].path), "hash": records[with_face[i]].hash,
                 **({"frames": records[with_face[i]].frames} if not is_image(records[with_face[i]].path) else {})}
                for i in c
            ],
            "distances": {"max": rnd(sub.max()), "mean": rnd(sub.mean())} if len(sub) else None,
            "nearest": {"person": ids[nearest], "distance": rnd(between[k, nearest])} if nearest is not None else None,
        })  # fmt: skip
    cross, within = _pairs(dist, label, cfg.distance)

    def pair(i: int, j: int) -> dict[str, object]:
        return {"a": str(records[with_face[i]].path), "b": str(records[with_face[j]].path),
                "distance": rnd(dist[i, j]), "persons": [ids[label[i]], ids[label[j]]]}  # fmt: skip

    no_face = [r for r in records if r.reason is not None]
    doc = {
        "format": PEOPLE_FORMAT,
        "descriptor": "dlib face recognition ResNet v1 (5-point alignment), main (largest) BlazeFace face; "
        "a video: the mean over its sampled frames",
        "detector": cfg.detector,
        "video_frames": cfg.video_frames,
        "linkage": "average",
        "distance": cfg.distance,
        "holdout": _holdout_doc(cfg, dist, label, held, pair, components),
        "counts": {
            "sources": len(records),
            "with_face": len(with_face),
            "no_face": len(no_face),
            "persons": len(clusters),
            "multi_file_persons": sum(len(c) > 1 for c in clusters),
            "held_out_persons": len(held),
            "held_out_files": sum(len(clusters[k]) for k in held),
        },
        "persons": persons,
        "no_face": [{"path": str(r.path), "hash": r.hash, "reason": r.reason} for r in no_face],
        # file pairs worth a look: different persons within NEAR above the threshold, one person within NEAR below
        "near_threshold": {
            "different_persons": [pair(i, j) for i, j in cross],
            "same_person": [pair(i, j) for i, j in within],
        },
    }
    out = Path(cfg.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        tmp.replace(out)
    except OSError as e:
        raise PeopleError(f"cannot write {out}: {e}") from e
    summary = PeopleSummary(
        out=out, sources=len(records), with_face=len(with_face), persons=len(clusters),
        multi_file_persons=doc["counts"]["multi_file_persons"], held_out_persons=len(held),  # type: ignore[index]
        held_out_files=doc["counts"]["held_out_files"],  # type: ignore[index]
        no_face=[(str(r.path), r.reason or "") for r in no_face], distance=cfg.distance,
    )  # fmt: skip
    if doc["holdout"]:
        summary.closest_kept = doc["holdout"]["closest_kept_distance"]  # type: ignore[index]
        summary.close_pairs = doc["holdout"]["kept_pairs_below_distance"]  # type: ignore[index]
    if cfg.sheets is not None:
        thumbs = [records[i].thumb for i in with_face]
        summary.sheets = write_sheets(Path(cfg.sheets), clusters, ids, held, thumbs, records, with_face, dist,
                                      cross, within)  # fmt: skip
    summary.seconds = time.perf_counter() - t0
    return summary


# --------------------------------------------------------------------------------------------------
# Contact sheets


def _label(cell: np.ndarray, lines: Sequence[str], y0: int) -> None:
    for n, text in enumerate(lines):
        cv2.putText(cell, text, (3, y0 + 11 * n), cv2.FONT_HERSHEY_PLAIN, 0.75, (255, 255, 255), 1, cv2.LINE_AA)


def _cell(thumb: np.ndarray | None, path: Path, extra: str = "") -> np.ndarray:
    """A thumbnail with the file's repository and name below it (trimmed to fit)."""
    w = _THUMB + 8
    cell = np.full((_THUMB + 44, w, 3), 40, np.uint8)
    if thumb is not None:
        cell[4 : 4 + _THUMB, 4 : 4 + _THUMB] = thumb
    name = path.name
    parts = name.split("__")
    head = parts[0][:18] if len(parts) > 1 else ""
    tail = parts[-1]
    tail = tail if len(tail) <= 18 else "~" + tail[-17:]
    _label(cell, [t for t in (head, tail, extra) if t], _THUMB + 15)
    return cell


def _row(cells: list[np.ndarray], per_row: int = 8) -> np.ndarray:
    rows = []
    for k in range(0, len(cells), per_row):
        rows.append(np.hstack(cells[k : k + per_row]))
    width = max(r.shape[1] for r in rows)
    return np.vstack([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows])


def _write_png(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise PeopleError(f"cannot write {path}")


def write_sheets(
    folder: Path, clusters: list[list[int]], ids: list[str], held: set[int], thumbs: list[np.ndarray | None],
    records: list[_Source], with_face: list[int], dist: np.ndarray,
    cross: list[tuple[int, int]], within: list[tuple[int, int]],
) -> int:  # fmt: skip
    """One PNG per person (``pNNN.png``, multi-file persons also ``multi_pNNN.png`` first in a listing),
    and ``near_different.png`` / ``near_same.png`` with the near-threshold pairs and their distances."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PeopleError(f"cannot create {folder}: {e}") from e
    n = 0
    for k, c in enumerate(clusters):
        cells = []
        for i in c:
            far = max((dist[i, j] for j in c if j != i), default=None)
            cells.append(_cell(thumbs[i], records[with_face[i]].path, f"max d {far:.2f}" if far is not None else ""))
        sheet = _row(cells)
        title = np.full((18, sheet.shape[1], 3), 0, np.uint8)
        _label(title, [f"{ids[k]}: {len(c)} file{'s' if len(c) > 1 else ''}{' (held out)' if k in held else ''}"], 12)
        name = f"{'multi_' if len(c) > 1 else ''}{ids[k]}.png"
        _write_png(folder / name, np.vstack([title, sheet]))
        n += 1
    for name, pairs in (("near_different.png", cross), ("near_same.png", within)):
        if not pairs:
            continue
        rows = [
            np.hstack([_cell(thumbs[i], records[with_face[i]].path), _cell(thumbs[j], records[with_face[j]].path, f"d {dist[i, j]:.3f}")])
            for i, j in pairs
        ]  # fmt: skip
        grid = _row(rows, per_row=3)
        _write_png(folder / name, grid)
        n += 1
    return n
