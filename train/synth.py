"""`acfd-train synth`: an FF++-shaped dataset of real face footage and self-blended forgeries.

Reals are the given videos or photos (by default scikit-image's astronaut photo), framed around the
face; photos are animated with small natural motion (drift, sway, breathing-like zoom, sensor noise),
with different motion, framing and colour per video.

Fakes are self-blended images (SBI; Shiohara & Yamasaki, CVPR 2022) made consistent over a video:
a colour-, scale- and position-jittered copy of each frame is blended back into the frame inside a
mask built from the face's landmark hull (BlazeFace keypoints and box), deformed by a smooth elastic
field and with a blurred boundary. The blend region is written as the mask video. Every video is
written at c0 (lossless), c23 and c40 from the same frames, as FaceForensics++ did.

Method folder: ``manipulated_sequences/SelfBlended``. Split files go to ``OUT/splits``. The marker
``OUT/acfd-synth.json`` says the dataset is synthetic (``prepare`` copies it into the crop cache, so
a model card never mistakes self-blended forgeries for real ones).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path

import cv2
import numpy as np
from acfd.scanner.faces import Face, FaceDetector, crop, crop_box, largest_face
from acfd.schemas.card import DATASET_MARKER
from acfd.schemas.errors import AcfdError

from .ffpp import SPLITS, SYNTH_METHOD, iter_frames, ranked_splits, write_video
from .people import is_image

LEVELS: tuple[str, ...] = ("c0", "c23", "c40")
# Marker in the dataset root: what kind of data this is (an FF++ root has none).
SYNTH_MARKER = DATASET_MARKER  # (schemas.card: the scanner reads it too)
DEFAULT_SOURCE = "skimage.data.astronaut"


class SynthError(AcfdError):
    """A synth option or source is unusable."""


def clip_options_problem(frames: int, size: int, detector: str) -> str | None:
    """What is wrong with the clip options `synth` and `swaps` share (frames, square frame side, face
    detector), or None."""
    if frames < 1:
        return f"--frames must be >= 1, got {frames}"
    if size < 64 or size % 2:
        return f"frame size must be an even number >= 64, got {size}"
    if detector not in ("short", "full"):
        return f"detector must be 'short' or 'full', got {detector!r}"
    return None


@dataclass(frozen=True)
class SynthConfig:
    """Options of ``acfd-train synth`` (validated on construction)."""

    out: Path
    videos: int = 8  # real videos; as many fakes (pairs T_S and S_T)
    frames: int = 16
    seed: int = 0
    sources: tuple[Path, ...] = ()  # photos, videos or folders of them; empty: the astronaut photo
    size: int = 256  # frame side in pixels (square)
    fps: int = 25
    detector: str = "full"
    exclude: Path | None = None  # a people file: every source of its held-out persons is left out

    def __post_init__(self) -> None:
        if self.videos < 2 or self.videos % 2:
            raise SynthError(f"--videos must be an even number >= 2 (FF++ pairs), got {self.videos}")
        if self.videos > 1000:
            raise SynthError("--videos must be at most 1000 (three-digit FF++ ids)")
        problem = clip_options_problem(self.frames, self.size, self.detector)
        if problem:
            raise SynthError(problem)
        for s in self.sources:
            if not Path(s).exists():
                raise SynthError(f"source not found: {s}")
        if self.exclude is not None and not Path(self.exclude).is_file():
            raise SynthError(f"people file not found: {self.exclude}")


@dataclass
class SynthSummary:
    out: Path
    reals: int = 0
    fakes: int = 0
    frames: int = 0
    seconds: float = 0.0
    splits: dict[str, int] = field(default_factory=dict)
    sources: int = 0  # distinct sources the videos were made from
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, why), in the order met
    excluded: list[str] = field(default_factory=list)  # sources of held-out persons (--exclude), left out
    unknown: list[str] = field(default_factory=list)  # sources the --exclude people file does not name
    persons: int = 0  # distinct persons the used sources show (--exclude's people file); 0: unknown
    persons_alone: int = 0  # used sources without a person in the people file, counted as one person each
    corpora: list[str] = field(default_factory=list)  # source repositories of the used files (corpus manifests)
    without_corpus: list[str] = field(default_factory=list)  # used files no corpus manifest names (when any does)

    def skipped_line(self, first: int = 3) -> str | None:
        """``skipped N sources: why; why; ...`` (the first few reasons), or None when none was skipped."""
        return _skipped_text(self.skipped, first)


def excluded_sources(sources: Sequence[Path], people_file: Path) -> tuple[list[Path], list[str], list[str]]:
    """``(kept, excluded, unknown)``: the sources of the people file's held-out persons are excluded (matched
    by content hash, so a copy or a renamed file is found too); sources the file does not name are kept
    and listed as unknown (their persons were never compared with the held-out ones)."""
    kept, excluded, unknown, _ = _exclude(sources, people_file)
    return kept, excluded, unknown


def _exclude(
    sources: Sequence[Path], people_file: Path
) -> tuple[list[Path], list[str], list[str], dict[Path, str | None]]:
    """:func:`excluded_sources` plus the person id of each kept source (None: not in the people file)."""
    from acfd.schemas.hashing import content_hash

    from .people import PeopleError, load_people

    try:
        people = load_people(Path(people_file))
    except PeopleError as e:
        raise SynthError(str(e)) from e
    held, known, person_of = people.held_out_hashes(), people.known_hashes(), people.person_of()
    kept, excluded, unknown = [], [], []
    person: dict[Path, str | None] = {}
    for s in sources:
        h = content_hash(s) or ""
        if h in held:
            excluded.append(str(s))
            continue
        if h not in known:
            unknown.append(str(s))
        kept.append(Path(s))
        person[Path(s)] = person_of.get(h)  # a file without a usable face has no person either
    return kept, excluded, unknown, person


def count_persons(used: Sequence[Path | None], person: dict[Path, str | None]) -> tuple[int, int]:
    """``(persons, counted_alone)``: distinct persons among the ``used`` sources (None: the astronaut photo),
    by the people file's person ids; a source the people file gives no person counts as one person of its
    own (``counted_alone`` of them), so the figure can overcount people but never undercount them."""
    ids: set[str] = set()
    alone = 0
    for s in used:
        pid = person.get(Path(s)) if s is not None else None
        if pid is None:
            alone += 1
        else:
            ids.add(pid)
    return len(ids) + alone, alone


# A corpus folder may carry this file: one row per file (``file``: its path relative to the folder) with the
# source repository (``repo``) it came from; the repositories' terms bind a model trained on the files.
CORPUS_MANIFEST = "manifest.csv"


def corpus_of(roots: Sequence[Path]) -> dict[Path, str]:
    """Resolved file path -> source repository, from the :data:`CORPUS_MANIFEST` of each folder in ``roots``
    that has one with ``file`` and ``repo`` columns (others are passed over: a manifest is optional)."""
    import csv

    out: dict[Path, str] = {}
    for root in roots:
        m = Path(root) / CORPUS_MANIFEST
        if not Path(root).is_dir() or not m.is_file():
            continue
        try:
            with m.open(newline="", encoding="utf-8") as fh:
                rows = csv.DictReader(fh)
                if not {"file", "repo"} <= set(rows.fieldnames or ()):
                    continue
                for r in rows:
                    if r["file"] and r["repo"]:
                        out[(Path(root) / r["file"]).resolve()] = r["repo"].strip()
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise SynthError(f"cannot read the corpus manifest {m}: {e}") from e
    return out


def mark_unfinished(out: Path, kind: str) -> None:
    """The marker as it stands until the dataset is complete: `prepare` refuses a root an interrupted run left
    (without it, a half-written root has no marker and would pass for FF++). The last step rewrites it."""
    marker = {"kind": kind, "forgeries": "synthetic", "complete": False}
    (out / SYNTH_MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")


def _skipped_text(skipped: Sequence[tuple[str, str]], first: int = 3, meta: str = "synth.json") -> str | None:
    """``skipped N sources: why; ...`` with the first few reasons; ``meta`` names the file that lists them all."""
    if not skipped:
        return None
    n = len(skipped)
    reasons = "; ".join(why for _, why in skipped[:first])
    more = f"; and {n - first} more (all in {meta})" if n > first else ""
    return f"skipped {n} source{'s' if n > 1 else ''}: {reasons}{more}"


# --------------------------------------------------------------------------------------------------
# Reals


def _default_source() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def _read_image(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SynthError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _main_face(det: FaceDetector, img: np.ndarray, what: str) -> Face:
    face = largest_face(det.detect(img))
    if face is None:
        raise SynthError(f"no face found in {what}")
    return face


def _animate_photo(
    img: np.ndarray, face: Face, n: int, size: int, rng: np.random.Generator, border: int = cv2.BORDER_CONSTANT
) -> list[np.ndarray]:
    """``n`` frames of a photo seen by a slowly moving camera, face ~1/3 of the frame.

    Where the frame reaches past the photo, ``border`` fills it (OpenCV's border mode). Black by default:
    mirroring a small photo repeats its face around it, real copies beside a self-blended one, which is
    footage no camera makes; and `swaps` (the held-apart set) frames its photos the same way, so training
    and validation videos differ in how the face was forged, not in how the frame was filled."""
    fw = max(face.width, face.height)
    cx, cy = (face.x0 + face.x1) / 2, (face.y0 + face.y1) / 2
    base = rng.uniform(0.28, 0.40) * size / fw  # face width as a fraction of the frame
    centre = np.array([size * (0.5 + rng.uniform(-0.06, 0.06)), size * (0.47 + rng.uniform(-0.05, 0.05))])
    flip = rng.random() < 0.5
    gains = rng.uniform(0.88, 1.12, 3)
    gamma = rng.uniform(0.85, 1.15)
    noise = rng.uniform(1.0, 3.0)
    # Smooth motion: a damped random walk for position and roll, a slow sinusoid for zoom.
    pos, vel, ang, avel = np.zeros(2), rng.normal(0, 0.6, 2), rng.uniform(-3, 3), rng.normal(0, 0.3)
    z_amp, z_freq, z_phase = rng.uniform(0.01, 0.04), rng.uniform(0.03, 0.12), rng.uniform(0, 2 * np.pi)
    lut = np.clip(255.0 * (np.arange(256) / 255.0) ** gamma, 0, 255)
    src = img[:, ::-1] if flip else img
    if flip:
        cx = img.shape[1] - 1 - cx
    frames = []
    for t in range(n):
        vel = 0.85 * vel + rng.normal(0, 0.5, 2)
        pos = np.clip(pos + vel, -0.05 * size, 0.05 * size)
        avel = 0.85 * avel + rng.normal(0, 0.15)
        ang = float(np.clip(ang + avel, -5, 5))
        scale = base * (1 + z_amp * np.sin(z_freq * 2 * np.pi * t + z_phase))
        m = cv2.getRotationMatrix2D((cx, cy), ang, scale)
        m[:, 2] += centre + pos - np.array([cx, cy])
        frame = cv2.warpAffine(src, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)
        f = lut[frame] * gains + rng.normal(0, noise, frame.shape)
        frames.append(np.clip(f + 0.5, 0, 255).astype(np.uint8))
    return frames


def _frame_video(path: Path, det: FaceDetector, n: int, size: int) -> list[np.ndarray]:
    """The first ``n`` frames of a video, framed on the face found in its first frames (fixed box)."""
    raw = [fr for _, fr in islice(iter_frames(path), n)]
    if not raw:
        raise SynthError(f"no frames decoded from {path}")
    face = None
    for fr in raw[: min(len(raw), 10)]:
        face = largest_face(det.detect(fr))
        if face is not None:
            break
    if face is None:
        raise SynthError(f"no face found in the first frames of {path}")
    box = crop_box(face, margin=3.0)  # face ~1/3 of the frame, as the animated photos
    return [crop(fr, box, size) for fr in raw]


# --------------------------------------------------------------------------------------------------
# Self-blended fakes


@dataclass(frozen=True)
class BlendParams:
    """Per-video SBI parameters, so the forgery is consistent over time."""

    shift: tuple[float, float, float]  # RGB offsets added to the source copy
    contrast: float
    scale: float  # source copy scale about the face centre
    dx: float  # source copy translation, in face widths
    dy: float
    sharpen: float  # >0 sharpen, <0 blur the source copy (frequency mismatch)
    hull_scale: float
    elastic: np.ndarray  # (g, g, 2) coarse displacement field in face widths
    blur1: float  # boundary blur sigmas in face widths
    blur2: float
    ratio: float  # blend ratio (mask maximum)


def sample_blend(rng: np.random.Generator) -> BlendParams:
    """Random SBI parameters; every forgery differs from its source in colour and in geometry."""
    shift = rng.uniform(8, 22, 3) * rng.choice([-1, 1], 3)
    scale = 1 + rng.choice([-1, 1]) * rng.uniform(0.02, 0.06)
    g = 5
    field = cv2.GaussianBlur(rng.normal(0, 1, (g, g, 2)).astype(np.float32), (3, 3), 0.8)
    field *= rng.uniform(0.04, 0.09) / max(1e-6, float(np.abs(field).max()))
    return BlendParams(
        shift=tuple(float(s) for s in shift),
        contrast=float(rng.uniform(0.9, 1.1)),
        scale=float(scale),
        dx=float(rng.uniform(-0.04, 0.04)),
        dy=float(rng.uniform(-0.04, 0.04)),
        sharpen=float(rng.choice([-1.0, 0.0, 1.0]) * rng.uniform(0.3, 0.8)),
        hull_scale=float(rng.uniform(0.92, 1.08)),
        elastic=field,
        blur1=float(rng.uniform(0.03, 0.07)),
        blur2=float(rng.uniform(0.03, 0.07)),
        ratio=float(rng.choice([0.5, 0.75, 1.0, 1.0])),
    )


def hull_points(face: Face) -> np.ndarray:
    """Landmark hull of a BlazeFace face: its six keypoints plus brow, jaw and chin points from the box."""
    w, h = face.width, face.height
    cx = (face.x0 + face.x1) / 2
    extra = [
        (face.x0 + 0.12 * w, face.y0 + 0.12 * h),  # brows
        (face.x1 - 0.12 * w, face.y0 + 0.12 * h),
        (face.x0 + 0.10 * w, face.y0 + 0.60 * h),  # cheeks / jaw
        (face.x1 - 0.10 * w, face.y0 + 0.60 * h),
        (face.x0 + 0.25 * w, face.y1 - 0.02 * h),
        (face.x1 - 0.25 * w, face.y1 - 0.02 * h),
        (cx, face.y1 + 0.04 * h),  # chin
    ]
    return np.array(list(face.keypoints) + extra, np.float32)


def blend_mask(face: Face, shape: tuple[int, int], p: BlendParams) -> np.ndarray:
    """Soft blend mask in [0, 1] (HxW float32): deformed landmark hull with a blurred boundary, max 1."""
    h, w = shape
    fw = max(face.width, face.height, 1.0)
    pts = hull_points(face)
    centre = pts.mean(axis=0)
    pts = centre + (pts - centre) * p.hull_scale
    hull = cv2.convexHull(pts.astype(np.float32))
    mask = np.zeros((h, w), np.float32)
    cv2.fillConvexPoly(mask, np.round(hull).astype(np.int32), 1.0, lineType=cv2.LINE_AA)
    # Elastic deformation: the coarse field, spread over 3 face widths around the face, warps the hull.
    g = p.elastic.shape[0]
    k = 3.0 * fw / (g - 1)
    m = np.array([[k, 0, centre[0] - 1.5 * fw], [0, k, centre[1] - 1.5 * fw]], np.float32)
    disp = [
        cv2.warpAffine(
            p.elastic[..., c] * fw, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT
        )
        for c in range(2)
    ]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    mask = cv2.remap(mask, xs + disp[0], ys + disp[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    # SBI's two-stage blur: blur, keep only the fully-inside part, blur again, normalise.
    mask = cv2.GaussianBlur(mask, (0, 0), max(0.5, p.blur1 * fw))
    mask[mask < 0.99] = 0
    mask = cv2.GaussianBlur(mask, (0, 0), max(0.5, p.blur2 * fw))
    peak = float(mask.max())
    return mask / peak if peak > 0 else mask


def self_blend(frame: np.ndarray, face: Face, p: BlendParams) -> tuple[np.ndarray, np.ndarray]:
    """One SBI forgery: ``(fake frame uint8, blend region in [0, 1])``."""
    src = frame.astype(np.float32)
    mean = src.mean(axis=(0, 1))
    src = (src - mean) * p.contrast + mean + np.array(p.shift, np.float32)
    if p.sharpen:
        blurred = cv2.GaussianBlur(src, (0, 0), 1.2)
        src = (
            src + p.sharpen * (src - blurred)
            if p.sharpen > 0
            else (1 + p.sharpen) * src - p.sharpen * blurred
        )
    fw = max(face.width, face.height, 1.0)
    cx, cy = (face.x0 + face.x1) / 2, (face.y0 + face.y1) / 2
    m = cv2.getRotationMatrix2D((cx, cy), 0.0, p.scale)
    m[:, 2] += (p.dx * fw, p.dy * fw)
    src = cv2.warpAffine(src, m, frame.shape[1::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    region = blend_mask(face, frame.shape[:2], p)
    alpha = (region * p.ratio)[..., None]
    fake = alpha * np.clip(src, 0, 255) + (1 - alpha) * frame.astype(np.float32)
    return np.clip(fake + 0.5, 0, 255).astype(np.uint8), region


def fill_from_nearest(found: Sequence[Face | None]) -> list[Face] | None:
    """Each missed frame (None) takes the face of the nearest frame with one (the earlier on a tie);
    None when no frame has a face."""
    known = [i for i, f in enumerate(found) if f is not None]
    if not known:
        return None
    return [found[i] or found[min(known, key=lambda k: abs(k - i))] for i in range(len(found))]  # type: ignore[misc]


def _track(det: FaceDetector, frames: Sequence[np.ndarray], what: str) -> list[Face]:
    """The main face of every frame; a frame where the detector misses takes its nearest neighbour's."""
    faces = fill_from_nearest([largest_face(det.detect(f)) for f in frames])
    if faces is None:
        raise SynthError(f"no face found in any frame of {what}")
    return faces


def _source_frames(
    det: FaceDetector, src: Path | None, k: int, photos: dict[int, tuple[np.ndarray, Face]],
    vid: str, source_name: str, cfg: SynthConfig,
) -> tuple[list[np.ndarray], list[Face]]:  # fmt: skip
    """Real frames of video ``vid`` from source ``k`` and the main face of each; SynthError if unusable."""
    if src is not None and not is_image(src):
        frames = _frame_video(src, det, cfg.frames, cfg.size)
    else:
        if k not in photos:
            img = _read_image(src) if src else _default_source()
            photos[k] = (img, _main_face(det, img, str(src) if src else "the astronaut photo"))
        # Seeded by the video index, not the source: a skipped source leaves the other videos' motion as is.
        frames = _animate_photo(*photos[k], cfg.frames, cfg.size, np.random.default_rng([cfg.seed, int(vid)]))
    return frames, _track(det, frames, f"video {vid} ({source_name})")


# --------------------------------------------------------------------------------------------------


def _persons_and_corpora(summary: SynthSummary) -> dict[str, object]:
    """What the marker and synth.json say about who and where the training footage came from."""
    return {
        # distinct persons among the used sources (0: unknown, no --exclude people file)
        "persons": summary.persons,
        # of those, used sources the people file gives no person (each counted as one person)
        "persons_counted_alone": summary.persons_alone,
        # source repositories of the used files, from the source folders' manifest.csv ([]: none known)
        "corpora": summary.corpora,
        # used files no manifest names, while some manifest named others
        "without_corpus": summary.without_corpus,
    }


def _pairs_and_splits(n: int, rng: np.random.Generator) -> dict[str, list[list[str]]]:
    pairs = [[f"{2 * k:03d}", f"{2 * k + 1:03d}"] for k in range(n // 2)]
    order = rng.permutation(len(pairs))
    out: dict[str, list[list[str]]] = {s: [] for s in SPLITS}
    for s, k in zip(ranked_splits(len(pairs)), order, strict=True):
        out[s].append(pairs[k])
    return out


def synthesize(cfg: SynthConfig) -> SynthSummary:
    """Write the dataset to ``cfg.out``; returns counts. Same config and seed -> same frames."""
    t0 = time.perf_counter()
    out = Path(cfg.out)
    real_dir = out / "original_sequences" / "youtube"
    fake_dir = out / "manipulated_sequences" / SYNTH_METHOD
    summary = SynthSummary(out=out)
    manifest: dict[str, object] = {
        "config": {**asdict(cfg), "out": str(out), "sources": [str(s) for s in cfg.sources],
                   "exclude": str(cfg.exclude) if cfg.exclude is not None else None}
    }  # fmt: skip
    chosen: list[Path] = []
    if cfg.sources:
        from .people import PeopleError, expand_sources

        try:
            chosen = expand_sources(cfg.sources)
        except PeopleError as e:
            raise SynthError(str(e)) from e
    person: dict[Path, str | None] = {}
    if cfg.exclude is not None:  # read even without sources: a broken people file is an error, not "0 left out"
        kept, summary.excluded, summary.unknown, person = _exclude(chosen, cfg.exclude)
        if chosen and not kept:
            raise SynthError(f"every source belongs to a held-out person of {cfg.exclude}: none is left to train on")
        chosen = kept
    corpus = corpus_of([s for s in cfg.sources if Path(s).is_dir()])
    try:  # after the checks above: a refused run leaves no folder behind
        out.mkdir(parents=True, exist_ok=True)
        mark_unfinished(out, "synth")
    except OSError as e:
        raise SynthError(f"cannot create {out}: {e}") from e
    videos_meta: dict[str, object] = {}
    root_rng = np.random.default_rng(cfg.seed)
    splits = _pairs_and_splits(cfg.videos, root_rng)
    partner = {a: b for pair in sum(splits.values(), []) for a, b in (pair, pair[::-1])}

    with FaceDetector(cfg.detector) as det:  # type: ignore[arg-type]
        sources: list[Path | None] = list(chosen) or [None]  # None: the astronaut photo
        photos: dict[int, tuple[np.ndarray, Face]] = {}  # source index -> photo and its face, read once
        dropped: set[int] = set()  # sources skipped: unreadable, or no face found
        used: set[int] = set()
        nxt = 0  # sources are taken in turn; with no source skipped, video i uses source i % len(sources)
        for i in range(cfg.videos):
            vid = f"{i:03d}"
            while True:
                live = [k for k in ((nxt + j) % len(sources) for j in range(len(sources))) if k not in dropped]
                if not live:
                    raise SynthError(
                        f"too few usable sources: 0 of {len(sources)} left, the videos need at least one "
                        f"({_skipped_text(summary.skipped)})"
                    )
                k = live[0]
                nxt = k + 1
                src = sources[k]
                source_name = str(src) if src else DEFAULT_SOURCE
                # One bad source among hundreds must not stop the run: skip it, report it, take the next.
                try:
                    frames, faces = _source_frames(det, src, k, photos, vid, source_name, cfg)
                except SynthError as e:
                    dropped.add(k)
                    photos.pop(k, None)
                    summary.skipped.append((source_name, str(e)))
                    continue
                used.add(k)
                break
            for level in LEVELS:
                write_video(real_dir / level / "videos" / f"{vid}.mp4", frames, level, cfg.fps)
            summary.reals += 1
            summary.frames += len(frames)

            # The fake TTT_SSS: target TTT self-blended (SBI needs no second identity; SSS names the pair).
            params = sample_blend(np.random.default_rng([cfg.seed, i, 1]))
            fakes, masks = [], []
            for frame, face in zip(frames, faces, strict=True):
                fake, region = self_blend(frame, face, params)
                fakes.append(fake)
                masks.append(np.repeat(np.round(region * 255).astype(np.uint8)[..., None], 3, axis=2))
            name = f"{vid}_{partner[vid]}"
            for level in LEVELS:
                write_video(fake_dir / level / "videos" / f"{name}.mp4", fakes, level, cfg.fps)
            write_video(fake_dir / "masks" / "videos" / f"{name}.mp4", masks, "mask", cfg.fps)
            summary.fakes += 1
            summary.frames += len(fakes)
            p = asdict(params)
            p["elastic"] = np.round(params.elastic, 4).tolist()
            meta: dict[str, object] = {"source": source_name, "frames": len(frames), "fake": name, "blend": p}
            if src is not None and cfg.exclude is not None:
                meta["person"] = person.get(Path(src))  # None: not in the people file
            if src is not None and corpus:
                meta["corpus"] = corpus.get(Path(src).resolve())
            videos_meta[vid] = meta

    summary.sources = len(used)
    used_sources = [sources[k] for k in sorted(used)]
    if cfg.exclude is not None:
        summary.persons, summary.persons_alone = count_persons(used_sources, person)
    if corpus:
        repos = [corpus.get(Path(s).resolve()) if s is not None else None for s in used_sources]
        summary.corpora = sorted({r for r in repos if r})
        summary.without_corpus = [Path(s).name if s is not None else DEFAULT_SOURCE
                                  for s, r in zip(used_sources, repos, strict=True) if not r]  # fmt: skip
    split_dir = out / "splits"
    split_dir.mkdir(parents=True, exist_ok=True)
    for s, pairs in splits.items():
        (split_dir / f"{s}.json").write_text(json.dumps(pairs), encoding="utf-8")
        summary.splits[s] = len(pairs)
    manifest["videos"] = videos_meta
    manifest["method"] = SYNTH_METHOD
    manifest["skipped"] = [{"source": source, "reason": why} for source, why in summary.skipped]
    manifest["excluded"] = summary.excluded  # held-out persons' sources (--exclude)
    manifest["not_in_people_file"] = summary.unknown
    manifest.update(_persons_and_corpora(summary))
    (out / "synth.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    marker = {
        "kind": "synth",
        "forgeries": "synthetic",
        "method": SYNTH_METHOD,
        # the sources the videos were made from (skipped ones are not), by file name
        "sources": [Path(sources[k]).name if sources[k] is not None else DEFAULT_SOURCE for k in sorted(used)],
        "seed": cfg.seed,
    }
    if cfg.exclude is not None:
        marker["excluded_held_out"] = len(summary.excluded)
    marker.update(_persons_and_corpora(summary))
    (out / SYNTH_MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
    summary.seconds = time.perf_counter() - t0
    return summary
