"""``acfd-scan validate``: measure a model on the user's own labelled videos and record it in its card.

Two folders, one of real videos and one of fakes, are scanned exactly as ``acfd-scan`` scans an
archive (same sampling, face detector, tracker, crops and aggregation, through :class:`Scanner`), into
a store of their own (a temporary SQLite file unless ``db`` is given, so validation rows never mix
with an archive's verdicts). Each video's whole-video score then counts as one labelled sample:

- videos without a face, and files that could not be scanned, are counted and left out;
- a file whose content (``ht1:`` content hash) appears twice within a folder counts once, and one
  that appears in both folders is left out (its label is contradictory);
- videos the model was trained on (their short content hashes are in the card's training data) are
  counted and left out: a model is not measured on what it learned.

The metrics (AUC, ACC at the model's threshold, TAR at 1% and 0.1% FAR, the threshold at the chosen
FAR; :mod:`acfd.schemas.metrics`) become an :class:`~acfd.schemas.card.Evaluation`, judged by the card's
rule (at least 20 videos per class, none of them training data, to validate). The card with the new
evaluation is written into a new artifact beside the model (:func:`acfd.engine.artifact.update_card`).

When the fake folder lies inside an ``acfd-train swaps`` or ``synth`` output (its marker file in the folder
or a parent), the evaluation says so (``kind`` "swaps" or "synth"; for swaps, which half of the persons
in its settings), and ``--fakes real`` is refused there: a program made those fakes.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from acfd.schemas import db
from acfd.schemas.card import (
    DATASET_MARKER,
    EVAL_SWAPS,
    EVAL_SYNTH,
    FAKES_KINDS,
    FAKES_REAL,
    FAKES_SYNTHETIC,
    MIN_VIDEOS_PER_CLASS,
    Evaluation,
    ModelCard,
    fingerprint,
)
from acfd.schemas.errors import AcfdError
from acfd.schemas.metrics import accuracy, auc, tar_at_far, threshold_at_far

from .aggregate import DEFAULT_STRATEGY, STRATEGIES
from .config import DEFAULTS
from .decode import Sampling
from .discover import discover, display_path
from .faces import DETECTOR_MODES
from .pipeline import ProgressFn, ScanConfig, Scanner, load_backend
from .results import VideoResult

TOOL = "acfd-scan validate"
# The file `acfd-train synth` and `acfd-train swaps` leave in their dataset root (the scanner does not
# import the trainer, so the name is repeated here; a test checks both agree).
DEFAULT_FAR = 0.01
REPORTED_FARS = (0.01, 0.001)  # TAR at 1% and at 0.1% FAR
REAL, FAKE = "real", "fake"


class ValidateError(AcfdError):
    """Validation cannot run or cannot measure anything (bad folders, no scored videos, bad threshold)."""


@dataclass(frozen=True)
class ValidateConfig:
    """Settings of one validation, checked once. Sampling and aggregation options mean what they mean
    for a scan (:class:`ScanConfig`)."""

    model: str
    real: str
    fake: str
    fakes: str  # how the fakes were made: "real" (actual deepfakes) or "synthetic" (made by a program)
    far: float = DEFAULT_FAR
    set_threshold: bool = False
    out: str | None = None  # the new artifact; None: <stem>.validated-<UTC time><suffix> beside the model
    db: str | None = None  # keep the validation scan here; None: a temporary SQLite file
    device: str = DEFAULTS.device
    fps: float | None = DEFAULTS.fps
    frames: int | None = None
    strategy: str = DEFAULT_STRATEGY
    min_support: int | None = None
    detector_model: str = DEFAULTS.detector
    min_face_score: float = DEFAULTS.min_face_score
    decoder: str = DEFAULTS.decoder
    workers: int | None = None
    batch_size: int | None = None
    timeout_s: float = DEFAULTS.timeout_s

    def __post_init__(self) -> None:
        if self.fakes not in FAKES_KINDS:
            raise ValidateError(f"--fakes must be one of {', '.join(FAKES_KINDS)}, not {self.fakes!r}")
        if not 0.0 < self.far < 1.0:
            raise ValidateError(f"--far must lie strictly between 0 and 1, not {self.far}")
        if self.strategy not in STRATEGIES:
            raise ValidateError(f"unknown strategy {self.strategy!r}: choose one of {', '.join(STRATEGIES)}")
        if self.detector_model not in DETECTOR_MODES:
            raise ValidateError(f"unknown face detector {self.detector_model!r}")
        try:
            Sampling(self.fps, self.frames)
        except AcfdError as e:
            raise ValidateError(str(e)) from e

    def scan_config(self, folders: tuple[str, ...], db_url: str) -> ScanConfig:
        """The scan of the labelled folders: recursive, never skipping what a kept store already has."""
        return ScanConfig(
            paths=folders, model=self.model, db=db_url, recursive=True, device=self.device, fps=self.fps,
            frames=self.frames, batch_size=self.batch_size, workers=self.workers, rescan=True,
            strategy=self.strategy, min_support=self.min_support, decoder=self.decoder, timeout_s=self.timeout_s,
            # face crops only serve the HTML report of a kept store
            store_crops=3 if self.db else 0,
            detector_model=self.detector_model, min_face_score=self.min_face_score,
        )

    @property
    def settings(self) -> dict[str, Any]:
        """What shapes a video's score, recorded with the evaluation (JSON types only)."""
        sampling = Sampling(self.fps, self.frames).describe()
        return {
            "sampling": sampling, "strategy": self.strategy, "min_support": self.min_support,
            "detector": self.detector_model, "min_face_score": self.min_face_score,
        }


# -- metrics ---------------------------------------------------------------------------------------
def far_key(far: float) -> str:
    return f"tar_at_far_{far:g}"


def video_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float, far: float) -> dict[str, float | None]:
    """The evaluation's metrics from one score per video (label 1 = fake); see :mod:`acfd.schemas.metrics`.

    ``acc`` is at the model's ``threshold``; ``threshold_at_far`` is the smallest threshold whose
    false-alarm rate on these reals is <= ``far`` (with ``far_achieved`` and ``tar_at_threshold_at_far``
    there); ``far_resolution`` = 1 / reals: a FAR below it cannot be measured on this data, and TAR at
    such a FAR is the TAR at FAR 0. Needs at least one video per class.
    """
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    n_real = int((y == 0).sum())
    if n_real == 0 or int(y.sum()) == 0:
        raise ValidateError("metrics need at least one real and one fake video with a score")
    out: dict[str, float | None] = {"auc": auc(y, s), "acc": accuracy(y, s, threshold)}
    # What the model's own threshold does on these videos: the false-alarm rate on the reals and the share
    # of fakes caught (the figures a user of its verdicts needs; fake = score > threshold, as a scan decides).
    out["far_at_threshold"] = float(np.mean(s[y == 0] > threshold))
    out["tpr_at_threshold"] = float(np.mean(s[y == 1] > threshold))
    for f in REPORTED_FARS:
        out[far_key(f)] = tar_at_far(y, s, f)[0]
    t, tar, far_got = threshold_at_far(y, s, far)
    out.update(
        threshold_at_far=t, far=far, far_achieved=far_got, tar_at_threshold_at_far=tar,
        far_resolution=1.0 / n_real,
    )
    # NaN/inf are not JSON (the card is JSON); None says "not measurable" there
    return {k: (float(v) if v is not None and np.isfinite(v) else None) for k, v in out.items()}


# -- scanning the folders --------------------------------------------------------------------------
@dataclass
class ClassCounts:
    """What happened to one labelled folder's videos."""

    label: str  # "real" or "fake"
    folder: str
    found: int = 0  # video files discovered
    scored: int = 0  # with a whole-video score
    no_face: int = 0
    errors: int = 0  # could not be scanned (error rows), or unreadable for hashing
    duplicates: int = 0  # the same file or content as another video of this folder: counted once
    conflicts: int = 0  # the same content is in the other folder too: left out
    training: int = 0  # training data of the model: left out
    used: int = 0  # in the metrics
    error_examples: list[str] = field(default_factory=list)

    @property
    def left_out(self) -> int:
        return self.found - self.used


@dataclass(frozen=True)
class _Scored:
    path: str
    content_hash: str
    score: float


def _collect(results: list[VideoResult], counts: ClassCounts) -> tuple[dict[str, _Scored], set[str]]:
    """(scored videos of one folder by content hash, every content hash seen there), filling ``counts``.

    The same content twice counts once (the first path in name order keeps it).
    """
    by_hash: dict[str, _Scored] = {}
    seen: set[str] = set()
    for r in sorted(results, key=lambda r: r.candidate.path):
        counts.found += 1
        if r.content_hash:
            seen.add(r.content_hash)
        if r.status == db.STATUS_SKIPPED:  # a second path to a file already scanned (a hard link)
            counts.duplicates += 1
        elif r.status == db.STATUS_NO_FACE:
            counts.no_face += 1
        elif r.status != db.STATUS_OK or r.verdict is None or r.verdict.score is None or not r.content_hash:
            counts.errors += 1
            if len(counts.error_examples) < 5:
                counts.error_examples.append(f"{r.candidate.display}: {r.error or 'unreadable (no content hash)'}")
        elif r.content_hash in by_hash:
            counts.scored += 1
            counts.duplicates += 1
        else:
            counts.scored += 1
            by_hash[r.content_hash] = _Scored(r.candidate.display, r.content_hash, float(r.verdict.score))
    return by_hash, seen


def _label_of(path: str, real_dir: str, fake_dir: str) -> str:
    if path.startswith(real_dir.rstrip(os.sep) + os.sep):
        return REAL
    if path.startswith(fake_dir.rstrip(os.sep) + os.sep):
        return FAKE
    raise ValidateError(f"internal: scanned {display_path(path)}, which is in neither folder")


def _check_folders(cfg: ValidateConfig) -> tuple[str, str]:
    real, fake = (os.path.abspath(os.fsdecode(p)) for p in (cfg.real, cfg.fake))
    for label, p in ((REAL, real), (FAKE, fake)):
        if not os.path.exists(p):
            raise ValidateError(f"{label} folder {display_path(p)} does not exist")
        if not os.path.isdir(p):
            raise ValidateError(f"{label} folder {display_path(p)} is not a folder")
    # Checked as named and with links resolved: each video's label is the folder its path is under.
    for r, f in ((real, fake), (os.path.realpath(real), os.path.realpath(fake))):
        if r == f or r.startswith(f.rstrip(os.sep) + os.sep) or f.startswith(r.rstrip(os.sep) + os.sep):
            raise ValidateError("the real and fake folders must be separate (neither inside the other)")
    for label, p in ((REAL, real), (FAKE, fake)):
        if not any(c.error is None for c in discover((p,), recursive=True)):
            raise ValidateError(f"no videos found under the {label} folder {display_path(p)}")
    return real, fake


@dataclass(frozen=True)
class DatasetMarker:
    """What the marker of an ``acfd-train synth``/``swaps`` dataset around a folder says."""

    path: str  # the marker file
    kind: str  # "swaps", "synth", or another word a newer acfd wrote
    forgeries: str  # "synthetic" or "real"
    half: str | None = None  # swaps: "selection", "test", or None (every held-out person)


def find_marker(folder: str) -> DatasetMarker | None:
    """The dataset marker in ``folder`` or the nearest of its parents (None: not inside such a dataset).

    A marker that cannot be read, or that an interrupted run left (``complete: false``), is a ValidateError:
    a half-written set would be measured as if it were whole."""
    import json

    d = os.path.abspath(folder)
    while True:
        m = os.path.join(d, DATASET_MARKER)
        if os.path.isfile(m):
            break
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent
    try:
        with open(m, encoding="utf-8") as fh:
            doc = json.load(fh)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise ValidateError(f"{display_path(m)} is not a readable dataset marker ({e})") from e
    kind = str(doc.get("kind", EVAL_SYNTH))
    if doc.get("complete") is False:
        raise ValidateError(f"{display_path(d)} is an unfinished `acfd-train {kind}` output (interrupted?): "
                            "run that command again")  # fmt: skip
    half = doc.get("half")
    return DatasetMarker(path=m, kind=kind, forgeries=str(doc.get("forgeries", FAKES_SYNTHETIC)),
                         half=str(half) if half else None)  # fmt: skip


def data_kind(cfg: ValidateConfig, fake_dir: str) -> tuple[str, dict[str, Any]]:
    """(``Evaluation.kind``, settings to record) of the fake folder: "swaps" or "synth" inside an
    ``acfd-train swaps``/``synth`` output (found by its marker), else "" (the user's own folders).

    Fakes a program made, declared ``--fakes real``, are refused: the card would claim a validation on
    real forgeries."""
    marker = find_marker(fake_dir)
    if marker is None:
        return "", {}
    if marker.forgeries == FAKES_SYNTHETIC and cfg.fakes == FAKES_REAL:
        raise ValidateError(
            f"--fakes real, but {display_path(fake_dir)} is in an `acfd-train {marker.kind}` output "
            f"({display_path(marker.path)}): its fakes are synthetic; use --fakes synthetic"
        )
    kind = marker.kind if marker.kind in (EVAL_SWAPS, EVAL_SYNTH) else ""
    settings: dict[str, Any] = {"dataset": marker.kind}
    if marker.kind == EVAL_SWAPS:
        settings["half"] = marker.half or "all"  # the person-level cut the set was made from
    return kind, settings


def _the_set(ev: Evaluation) -> str:
    """``an acfd-train swaps set (selection half)`` for an evaluation on such a set, else ""."""
    if not ev.kind:
        return ""
    half = ev.settings.get("half")
    return f"an acfd-train {ev.kind} set" + (f" ({half} half)" if half and half != "all" else "")


# -- the whole command -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ValidationResult:
    model: str
    model_id: str
    backend: str
    model_threshold: float  # the threshold the model had (ACC is measured at it)
    counts: tuple[ClassCounts, ClassCounts]  # real, fake
    evaluation: Evaluation
    card: ModelCard  # the new card
    written: Path  # the new artifact, or a run directory's card.json
    in_place: bool  # True: a run directory's card.json was replaced
    threshold: float  # the artifact's threshold now
    threshold_set: bool
    db: str | None  # where the validation scan was kept (None: a temporary store, deleted)
    scan_id: int


def validate(cfg: ValidateConfig, progress: ProgressFn | None = None) -> ValidationResult:
    """Scan both folders, measure, and write the card with the new evaluation (see the module docstring).

    ``progress`` is the scan's progress callback (:meth:`Scanner.run`).
    Everything that can be refused is refused before the (long) scans: bad folders, an existing
    output file, ``set_threshold`` on a training run directory.
    """
    from acfd.engine.artifact import (
        KIND_RUN,
        artifact_kind,
        check_threshold,
        check_update,
        read_run_card,
        update_card,
    )

    real_dir, fake_dir = _check_folders(cfg)
    out = check_update(cfg.model, cfg.out, cfg.set_threshold)
    ev_kind, data_settings = data_kind(cfg, fake_dir)
    kind = artifact_kind(cfg.model)
    # The file named, as it is: never its int8 sibling or float source, since its own card gets the result.
    backend = load_backend(cfg.model, cfg.device, precision="artifact")
    meta = backend.meta
    card = meta.card or (read_run_card(cfg.model) if kind == KIND_RUN else None) or ModelCard()

    # One scan over both folders: the decode workers start once (seconds each, mostly MediaPipe).
    results: list[VideoResult] = []
    with tempfile.TemporaryDirectory(prefix="acfd-validate-") as tmp:
        db_url = cfg.db or str(Path(tmp) / "validate.sqlite")
        scanner = Scanner(cfg.scan_config((real_dir, fake_dir), db_url), backend=backend)
        try:
            scanner.run(progress, results.append)
        finally:
            scanner.engine.dispose()
    by_label: dict[str, list[VideoResult]] = {REAL: [], FAKE: []}
    for r in results:
        by_label[_label_of(r.candidate.path, real_dir, fake_dir)].append(r)
    counts = {REAL: ClassCounts(REAL, display_path(real_dir)), FAKE: ClassCounts(FAKE, display_path(fake_dir))}
    found: dict[str, dict[str, _Scored]] = {}
    seen: dict[str, set[str]] = {}
    for label in (REAL, FAKE):
        found[label], seen[label] = _collect(by_label[label], counts[label])

    # The same content labelled both real and fake says nothing about the model: drop it from both.
    for label, other in ((REAL, FAKE), (FAKE, REAL)):
        both = found[label].keys() & seen[other]
        counts[label].conflicts = len(both)
        for h in both:
            del found[label][h]
    # Training videos: the model has seen them, a measurement on them flatters it.
    for label in (REAL, FAKE):
        trained = card.training_overlap(found[label].keys())
        counts[label].training = len(trained)
        for h in trained:
            del found[label][h]
        counts[label].used = len(found[label])

    n_real, n_fake = counts[REAL].used, counts[FAKE].used
    if n_real == 0 or n_fake == 0:
        c = counts[REAL if n_real == 0 else FAKE]
        raise ValidateError(
            f"no {c.label} video left to measure on: of {c.found} found under {c.folder}, {c.no_face} had no "
            f"face, {c.errors} could not be scanned, {c.training} were training data, {c.conflicts} are in "
            "both folders"
        )
    used = [*found[REAL].values(), *found[FAKE].values()]
    labels = np.r_[np.zeros(n_real, np.int64), np.ones(n_fake, np.int64)]
    scores = np.array([v.score for v in used], dtype=np.float64)
    metrics = video_metrics(labels, scores, meta.threshold, cfg.far)
    t_far = metrics["threshold_at_far"]
    assert t_far is not None  # at least one real
    if cfg.set_threshold:
        try:
            check_threshold(meta, t_far)
        except AcfdError as e:
            raise ValidateError(f"--set-threshold: the threshold at FAR <= {cfg.far:g} is unusable: {e}") from e

    ev = Evaluation.judged(
        tool=TOOL, level="video", fakes=cfg.fakes, n_real=n_real, n_fake=n_fake,
        n_training_overlap=counts[REAL].training + counts[FAKE].training, metrics=metrics,
        threshold=meta.threshold, data=f"real: {counts[REAL].folder}; fake: {counts[FAKE].folder}",
        fingerprint=fingerprint(v.content_hash for v in used), settings={**cfg.settings, **data_settings},
        kind=ev_kind,
    )
    new_card = card.with_evaluation(ev)
    if cfg.set_threshold:
        of_set = f" of {_the_set(ev)}" if ev.kind else ""
        new_card = replace(
            new_card,
            threshold_source=(
                f"{TOOL}: FAR <= {cfg.far:g} on {n_real} real videos{of_set} (fingerprint {ev.fingerprint}), "
                f"{ev.date[:10]}"
            ),
        )
    up = update_card(cfg.model, new_card, out if kind != KIND_RUN else None, t_far if cfg.set_threshold else None)
    return ValidationResult(
        model=display_path(os.path.abspath(cfg.model)), model_id=backend.model_id, backend=backend.name,
        model_threshold=meta.threshold, counts=(counts[REAL], counts[FAKE]), evaluation=ev, card=new_card,
        written=up.path, in_place=up.in_place, threshold=meta.threshold if up.threshold is None else up.threshold,
        threshold_set=cfg.set_threshold, db=cfg.db, scan_id=scanner.scan_id,
    )


# -- what the command prints -----------------------------------------------------------------------
def _num(v: float | None, pct: bool = False, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.1f}%" if pct else f"{v:.{digits}g}"


def format_result(res: ValidationResult) -> list[str]:
    """The lines ``acfd-scan validate`` prints: counts per class, metrics, the verdict, what was written."""
    ev, m = res.evaluation, res.evaluation.metrics
    lines = [f"model {res.model} ({res.backend}, id {res.model_id[:12]}), threshold {res.model_threshold:.4g}; "
             f"{ev.settings['sampling']}, strategy {ev.settings['strategy']}"]
    if ev.kind:
        lines.append(f"labelled data: {_the_set(ev)}")
    head = ("class", "found", "scored", "no face", "errors", "duplicate", "in both", "training", "used", "folder")
    rows = [head] + [
        (c.label, c.found, c.scored, c.no_face, c.errors, c.duplicates, c.conflicts, c.training, c.used, c.folder)
        for c in res.counts
    ]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    for r in rows:  # the folder last, not padded: it may be long
        cells = [str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in enumerate(zip(r[:-1], widths, strict=False))]
        lines.append("  ".join([*cells, str(r[-1])]))
    left = sum(c.left_out for c in res.counts)
    if left:
        lines.append(
            f"left out of the metrics: {left} videos ("
            + ", ".join(f"{c.label}: {c.no_face} no face, {c.errors} errors, {c.duplicates} duplicates, "
                        f"{c.conflicts} in both folders, {c.training} training data" for c in res.counts)
            + ")"
        )
    for c in res.counts:
        for e in c.error_examples:
            lines.append(f"  ERROR {e}")
    step = m.get("far_resolution")
    metric_rows = [
        ("AUC", _num(m.get("auc")), ""),
        (f"ACC at threshold {res.model_threshold:.4g}", _num(m.get("acc"), True),
         f"FAR {_num(m.get('far_at_threshold'), True)}, TAR {_num(m.get('tpr_at_threshold'), True)}"
         if m.get("far_at_threshold") is not None else ""),
    ]
    for f in REPORTED_FARS:
        note = ""
        if step is not None and step > f:
            note = f"{ev.n_real} reals resolve FAR only in steps of {_num(step, True)}: this is the TAR at FAR 0"
        metric_rows.append((f"TAR at FAR {_num(f, True)}", _num(m.get(far_key(f)), True), note))
    metric_rows.append((
        f"threshold at FAR <= {_num(m.get('far'), True)}", _num(m.get("threshold_at_far"), digits=6),
        f"FAR {_num(m.get('far_achieved'), True)} and TAR {_num(m.get('tar_at_threshold_at_far'), True)} "
        "on these videos; the smallest threshold with FAR <= the target",
    ))
    w0 = max(len(r[0]) for r in metric_rows)
    w1 = max(len(r[1]) for r in metric_rows)
    lines.append("")
    for name, value, note in metric_rows:
        lines.append(f"{name.ljust(w0)}  {value.rjust(w1)}" + (f"  ({note})" if note else ""))
    lines.append("")
    if ev.counts:
        lines.append(f"validation: this evaluation counts; the model is validated on {res.card.validation} forgeries "
                     f"({ev.n_real} real + {ev.n_fake} {ev.fakes}-fake videos, fingerprint {ev.fingerprint})")
    else:
        lines.append(f"validation: recorded, but does NOT validate the model: {ev.reason} "
                     f"(needs at least {MIN_VIDEOS_PER_CLASS} videos per class, none of them training data)")
    if res.threshold_set:
        # the exact value written, so a reader can compare it with the artifact's metadata
        lines.append(f"threshold: {res.model_threshold!r} -> {res.threshold!r} ({res.card.threshold_source})")
    if res.in_place:
        lines.append(f"wrote the run's model card {res.written} (replaced atomically; weights and config untouched)")
        lines.append(f"use it: acfd-scan PATH --model {res.written.parent}")
    else:
        lines.append(f"wrote {res.written} (a copy of the model with the new card; {Path(res.model).name} is unchanged)")
        lines.append(f"use it: acfd-scan PATH --model {res.written}")
    if res.db:
        lines.append(f"validation scan {res.scan_id} kept in {res.db} (the folder of each video gives its label)")
    return lines
