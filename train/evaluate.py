"""Evaluation of a run as in the paper's Table 3: ACC, AUC, TAR@0.1%, TAR@0.01%, PBCA.

Only the LQ branch is evaluated - :meth:`TwoBranchXception.lq_branch`, the very module that is
exported - on the test split of the crop cache(s) without class balancing. Scores are the distance
||C_l|| (or P(fake) for the cross-entropy preset); ACC uses the threshold stored in the artifact
metadata for the scanner ((r- + r+)/2 in the paper). Frame level: every crop. Video level: the mean
frame score per video. PBCA: attention map > 0.5 vs the mask at the map size (area average > 0.5),
pooled over all pixels of fakes and reals whose mask is valid. Results go to RUN/metrics.json.

Each evaluation is also appended to the run's model card (RUN/card.json, :func:`acfd.train.card.evaluation`):
the video-level AUC/ACC/TAR, how many real and fake videos, their fingerprint, and whether any of them
were training videos. Fewer than 20 videos per class is recorded but does not validate the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from acfd.schemas.errors import AcfdError
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import metrics
from .fit import batch_inputs, open_datasets, resolve_device
from .losses import mask_to_map
from .model import LQBranch, artifact_meta, load_run, read_card, write_card

RESULTS_FILE = "metrics.json"


class EvaluateError(AcfdError):
    """Evaluation cannot run (no test data, bad run directory)."""


@dataclass
class EvalResult:
    """Frame- and video-level metrics of one run on one split, plus what produced them."""

    run: str
    split: str
    preset: str
    table_row: int | None
    description: str
    config_hash: str
    threshold: float
    score: str
    data: list[str]
    frame: dict[str, Any] = field(default_factory=dict)
    video: dict[str, Any] = field(default_factory=dict)
    # What the model card recorded (an Evaluation as a dict; None when nothing was written), and the
    # validation state of the card after it.
    card_evaluation: dict[str, Any] | None = None
    validation: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN/inf (e.g. AUC of a one-class split) become None."""
        return metrics.jsonable(dict(self.__dict__))  # type: ignore[return-value]


@torch.no_grad()
def predict(
    branch: LQBranch, loader: DataLoader, cfg: Any, device: torch.device, progress: bool = False
) -> dict[str, Any]:
    """Scores, labels, video names and PBCA pixel counts of the LQ branch over a loader."""
    branch.eval()
    scores, labels, videos = [], [], []
    correct = total = 0
    for batch in tqdm(loader, desc="evaluate", disable=not progress, dynamic_ncols=True, leave=False):
        b = batch_inputs(batch, cfg, device)
        out, att = branch(b.x)
        scores.append(LQBranch.score(out, cfg.score_kind).cpu().numpy())
        labels.append(b.label.cpu().numpy())
        videos.extend(batch["video"])
        if att is not None:
            target = mask_to_map(b.mask, tuple(att.shape[-2:]), binary=True)
            hit = ((att.float() > 0.5) == (target > 0.5)).flatten(1)
            if b.mask_valid is not None:  # fakes without a usable mask have no ground truth
                hit = hit[b.mask_valid]
            correct += int(hit.sum())
            total += int(hit.numel())
    return {
        "scores": np.concatenate(scores) if scores else np.zeros(0),
        "labels": np.concatenate(labels) if labels else np.zeros(0, np.int64),
        "videos": videos,
        "pixels": (correct, total) if total else None,
    }


def evaluate(
    run: Path,
    data: list[Path] | tuple[Path, ...],
    split: str = "test",
    batch_size: int = 64,
    device: str = "auto",
    workers: int = 0,
    progress: bool = True,
    dataset: Any = None,
    write: bool = True,
) -> EvalResult:
    """Evaluate the run's LQ branch on ``split`` of the cache(s); writes RUN/metrics.json."""
    run = Path(run)
    dev = resolve_device(device)
    model, cfg = load_run(run, map_location=dev)
    meta = artifact_meta(run)
    if dataset is None:
        if not data:
            raise EvaluateError("no test data: pass --data CACHE")
        dataset = open_datasets(list(data), split, cfg.data.image_size, balance=False)
    if dataset is None or len(dataset) == 0:
        raise EvaluateError(f"the {split!r} split of {', '.join(map(str, data))} is empty")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    pred = predict(model.lq_branch(), loader, cfg, dev, progress)
    y, s, vids = pred["labels"], pred["scores"], pred["videos"]
    threshold = meta.threshold
    frame = metrics.summarize(y, s, threshold, pred["pixels"])
    names, vy, vs = metrics.video_scores(vids, y, s)
    video = metrics.summarize(vy, vs, threshold)
    video["pbca"] = frame["pbca"]  # a pixel metric: the same pooled value at both levels
    res = EvalResult(
        run=str(run), split=split, preset=cfg.preset, table_row=cfg.table_row, description=cfg.description,
        config_hash=meta.config_hash, threshold=threshold, score=meta.score,
        data=[str(d) for d in data], frame=frame, video=video,
    )
    if write:
        if run.is_dir():
            _record_on_card(run, cfg, data, split, names, vy, vs, threshold, res)
        (run / RESULTS_FILE).write_text(json.dumps(res.to_dict(), indent=2, sort_keys=True) + "\n")
    return res


def _record_on_card(
    run: Path, cfg: Any, data: Any, split: str, names: list[str], vy: np.ndarray, vs: np.ndarray,
    threshold: float, res: EvalResult,
) -> None:  # fmt: skip
    """Append this evaluation to RUN/card.json (a run from before model cards gets a minimal card)."""
    from acfd.schemas.card import ModelCard

    from .card import evaluation, threshold_source

    card = read_card(run)
    if card is None:
        card = ModelCard(preset=cfg.preset, image_size=cfg.data.image_size, threshold_source=threshold_source(cfg),
                         notes="card started by `acfd-train evaluate`: the run predates model cards")  # fmt: skip
    fed = "hq" if not cfg.two_branch and cfg.data.input == "hq" else "lq"
    ev = evaluation(card, [Path(d) for d in data], split, names, vy, vs, threshold, fed=fed,
                    settings={"score": res.score, "preset": cfg.preset})  # fmt: skip
    card = card.with_evaluation(ev)
    write_card(run, card)
    res.card_evaluation = metrics.jsonable(ev.to_dict())  # type: ignore[assignment]
    res.validation = card.validation


def _pct(x: Any) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "—"
    return f"{100 * x:.2f}"


def table(res: EvalResult) -> str:
    """A text table laid out like the paper's Table 3 (one row per level: frames, videos)."""
    head = ("No.", "Network / Losses or Modules", "Level", "ACC", "AUC", "TAR0.1%", "TAR0.01%", "PBCA", "n")
    rows = []
    for level, m in (("frame", res.frame), ("video", res.video)):
        rows.append((
            str(res.table_row or "-"), res.description, level, _pct(m["acc"]), _pct(m["auc"]),
            _pct(m["tar_0.1"]), _pct(m["tar_0.01"]), _pct(m["pbca"]), f"{m['n_real']}r/{m['n_fake']}f",
        ))
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:{'<' if i < 3 else '>'}{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    notes = [f"preset {res.preset}, split {res.split}, threshold {res.threshold:g} ({res.score} score)"]
    ev = res.card_evaluation
    if ev is not None:
        why = f": {ev['reason']}" if ev.get("reason") else ""
        notes.append(f"model card: evaluation recorded ({ev['n_real']} real + {ev['n_fake']} fake videos); "
                     f"validation {res.validation}{why}")  # fmt: skip
    fr = res.frame.get("far_resolution")
    if fr is not None and fr > 1e-4:
        notes.append(
            f"{res.frame['n_real']} real frames resolve FAR only down to {100 * fr:.3g}%: TAR at a smaller "
            "FAR is measured at FAR = 0 (threshold above every real score)"
        )
    return "\n".join(lines + notes)
