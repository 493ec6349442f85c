"""The training side of the model card (:mod:`acfd.schemas.card`): what ``fit`` and ``evaluate`` record.

``fit`` writes RUN/card.json when a run starts - preset, input size, initial weights, where the
decision threshold comes from, and the training data: the kind of dataset (FF++ or ``acfd-train
synth`` output, from the crop cache), how many train/val videos per method and pair of qualities,
the short content hash of every HQ and LQ file behind them, the corpora the footage came from and
how many distinct persons it shows (where ``synth`` recorded them). ``evaluate`` appends one
:class:`Evaluation` per run on labelled videos; the card derives the model's validation state from
them. The card is copied into every artifact made from the run (safetensors header, ONNX, plan).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from acfd.schemas.card import (
    EVAL_FFPP,
    EVAL_SWAPS,
    EVAL_SYNTH,
    FAKES_REAL,
    FAKES_SYNTHETIC,
    Evaluation,
    ModelCard,
    TrainingData,
    fingerprint,
    short_hash,
)

from . import metrics
from .config import PRESETS, TrainConfig
from .prepare import CachedVideo, cache_dataset, cache_meta, cache_videos

TOOL = "acfd-train evaluate"
TRAINING_SPLITS = ("train", "val")  # the videos a model learned from (val chose its weights)


def threshold_source(cfg: TrainConfig) -> str:
    """Where the decision threshold comes from, in words: the paper's default, a preset, or the config."""
    t = cfg.resolved_threshold
    if cfg.model.head == "ce":
        default, rule = 0.5, "P(fake) > 0.5 (cross-entropy head)"
    else:
        default, rule = (cfg.loss.r_minus + cfg.loss.r_plus) / 2, "(r- + r+) / 2"
    preset = PRESETS.get(cfg.preset)
    if preset is not None and preset.threshold is not None and np.isclose(t, preset.threshold):
        return f"preset {cfg.preset}: {t:g}"
    if np.isclose(t, default):
        return f"default: {rule} = {t:g}"
    return f"config: {t:g}"


def _levels(cache: Path) -> str:
    meta = cache_meta(cache)
    return f"{meta.get('hq', '?')}+{meta.get('lq', '?')}"


def _one_of(values: Sequence[str]) -> str:
    """The common value of ``values``, or "unknown" when they differ or there are none."""
    s = set(values)
    return s.pop() if len(s) == 1 else "unknown"


def training_data(caches: Sequence[Path]) -> tuple[TrainingData, list[str]]:
    """(TrainingData of the train+val videos of ``caches``, notes for the card).

    Only videos that reached the model count (at least one usable crop). ``counts`` keys are
    ``"<method>/<HQ level>+<LQ level>"`` (``"real/c23+c40"``). When any such video has no content hash
    (a cache prepared by an older acfd), ``video_hashes`` stays empty and a note says so: a partial list
    would under-report which videos are training data.
    """
    counts: Counter[str] = Counter()
    hashes: set[str] = set()
    unhashed = 0
    kinds, forgeries, roots, sources = [], [], [], []
    persons: dict[str, int] = {}  # dataset root -> distinct persons its footage shows (0: unknown)
    for c in caches:
        ds = cache_dataset(c)
        kinds.append(str(ds["kind"]))
        forgeries.append(str(ds["forgeries"]))
        if ds["root"] and ds["root"] not in roots:
            roots.append(str(ds["root"]))
        # The corpora (source repositories) where the dataset knows them, else the source names it gives;
        # files of no known corpus are named on their own, so the list never leaves a source out.
        named = [*ds.get("corpora", []), *ds.get("without_corpus", [])] or ds.get("sources", [])  # type: ignore[misc]
        sources += [str(s) for s in named if str(s) not in sources]
        n = ds.get("persons", 0)
        persons[str(ds["root"])] = n if isinstance(n, int) else 0
        levels = _levels(c)
        for v in cache_videos(c, TRAINING_SPLITS):
            if v.crops == 0:
                continue
            counts[f"{v.method}/{levels}"] += 1
            if v.hq_hash and v.lq_hash:
                hashes.update((v.hq_hash, v.lq_hash))
            else:
                unhashed += 1
    notes = []
    kind, fakes = _one_of(kinds), _one_of(forgeries)
    if len(set(kinds)) > 1 or len(set(forgeries)) > 1:
        notes.append(f"trained on mixed data ({', '.join(sorted(set(kinds)))})")
    if unhashed:
        notes.append(
            f"{unhashed} of {sum(counts.values())} training videos have no content hash (crop cache prepared "
            "by an older acfd; re-run `acfd-train prepare` on it to add them): training videos are not listed"
        )
        hashes = set()
    short = tuple(sorted({short_hash(h) for h in hashes}))
    return TrainingData(
        kind=kind,
        forgeries=fakes,
        root=", ".join(roots),
        fingerprint=fingerprint(short) if short else "",
        counts=dict(sorted(counts.items())),
        video_hashes=short,
        sources=tuple(sources),
        # Persons of two datasets may overlap (the same faces in both): a count is only known for one.
        persons=next(iter(persons.values())) if len(persons) == 1 else 0,
    ), notes


def new_card(cfg: TrainConfig, backbone_init: str, caches: Sequence[Path]) -> ModelCard:
    """The card of a run that is about to start (``steps`` 0; ``fit`` updates it with every saved model)."""
    if caches:
        training, notes = training_data(caches)
    else:
        training = TrainingData()
        notes = ["trained on a dataset passed in code: its videos are not recorded"]
    return ModelCard(
        preset=cfg.preset,
        image_size=cfg.data.image_size,
        steps=0,
        backbone_init=backbone_init,
        threshold_source=threshold_source(cfg),
        training=training,
        notes="; ".join(notes),
    )


def with_steps(card: ModelCard, steps: int) -> ModelCard:
    return replace(card, steps=int(steps))


# -- evaluations -----------------------------------------------------------------------------------
def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and np.isfinite(x) else None


def card_metrics(summary: dict[str, Any]) -> dict[str, float | None]:
    """The card's metric names for a :func:`acfd.train.metrics.summarize` result."""
    out = {"auc": _number(summary.get("auc")), "acc": _number(summary.get("acc"))}
    for far, key in zip(metrics.FARS, ("tar_0.1", "tar_0.01"), strict=True):
        out[f"tar_at_far_{far:g}"] = _number(summary.get(key))
    return out


def _id_hash(video: str) -> str:
    # Video ids stand in for content hashes when there are none; hashed, so that fingerprint()'s
    # shortening cannot merge two long ids with a common prefix.
    return hashlib.sha256(video.encode()).hexdigest()


def evaluation(
    card: ModelCard | None,
    caches: Sequence[Path],
    split: str,
    names: Sequence[str],
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    fed: str = "lq",
    settings: dict[str, Any] | None = None,
) -> Evaluation:
    """The card's record of a video-level evaluation (``names``/``labels``/``scores``: one per video).

    Videos whose HQ or LQ file is one of the model's training videos (by content hash) are left out of
    the metrics and counted in ``n_training_overlap``. ``fed``: which file of each pair the evaluated
    branch scored ("lq", or "hq" for the c23 single-branch preset); the fingerprint is over those files'
    content hashes (over the video ids when the cache has no hashes). The validation rule (20 videos per
    class) is :meth:`Evaluation.judged`'s.
    """
    info: dict[str, CachedVideo] = {}
    kinds, datasets = [], []
    for c in caches:
        ds = cache_dataset(c)
        kinds.append(str(ds["forgeries"]))
        datasets.append(str(ds["kind"]))
        for v in cache_videos(c, [split]):
            info.setdefault(v.video, v)
    train = set(card.training.video_hashes) if card is not None and card.training is not None else set()
    keep, overlap, fed_hashes = [], 0, []
    for i, name in enumerate(names):
        v = info.get(name)
        hashes = [h for h in ((v.hq_hash, v.lq_hash) if v else ()) if h]
        if train and any(short_hash(h) in train for h in hashes):
            overlap += 1
            continue
        keep.append(i)
        fed_hash = (v.hq_hash if fed == "hq" else v.lq_hash) if v else None
        fed_hashes.append(fed_hash or None)
    all_hashed = bool(fed_hashes) and all(fed_hashes)
    kept_names = [names[i] for i in keep]
    fp = fingerprint(fed_hashes if all_hashed else [_id_hash(n) for n in kept_names])  # type: ignore[arg-type]
    y = np.asarray(labels)[keep]
    s = np.asarray(scores, np.float64)[keep]
    summary = metrics.summarize(y, s, threshold)
    if kinds:
        fakes = FAKES_REAL if all(k == FAKES_REAL for k in kinds) else FAKES_SYNTHETIC
    else:  # a dataset passed in code: take the training data's word, and the weaker one when unknown
        trained = card.training.forgeries if card is not None and card.training is not None else ""
        fakes = FAKES_REAL if trained == FAKES_REAL else FAKES_SYNTHETIC
    checked = bool(train) and all(info.get(n) and info[n].hq_hash and info[n].lq_hash for n in names)
    st = {
        "split": split,
        "aggregation": "mean frame score per video",
        "training_overlap": "checked by content hash" if checked else "not checked: content hashes unknown",
        "fingerprint_of": "content hashes" if all_hashed else "video ids",
        **(settings or {}),
    }
    data_kind = _one_of(datasets)  # "unknown" for a dataset passed in code, or for mixed ones
    data = f"split {split} of {', '.join(map(str, caches))}" if caches else f"split {split} of a dataset passed in code"
    return Evaluation.judged(
        tool=TOOL,
        level="video",
        fakes=fakes,
        n_real=int((y == 0).sum()),
        n_fake=int((y == 1).sum()),
        n_training_overlap=overlap,
        metrics=card_metrics(summary),
        data=data,
        fingerprint=fp,
        threshold=float(threshold),
        settings=st,
        # what the labelled data was: one kind of dataset this acfd names, else not said
        kind=data_kind if data_kind in (EVAL_SWAPS, EVAL_SYNTH, EVAL_FFPP) else "",
    )
