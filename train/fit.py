"""Training loop of the paper (§4.2): Adam, critic updates, early stopping on the validation loss.

``fit(cfg, opts)`` trains on the crop cache(s) of ``acfd-train prepare`` and writes a run directory:

* ``config.json`` - the resolved :class:`TrainConfig` (+ its hash);
* ``card.json`` - the model card (:mod:`acfd.train.card`): initial weights, threshold source, training
  data (kind, counts, content hashes); its ``steps`` follow the saved weights;
* ``model.safetensors`` - the best weights so far (lowest validation loss), config and card in the header;
* ``metrics.jsonl`` - one JSON line per validation (train means, validation loss and LQ AUC/ACC);
* ``checkpoint/`` - the last state for ``--resume``: ``model.safetensors`` (all weights),
  ``optim.safetensors`` (optimizer tensors, flattened; RNG states) and ``state.json`` (step, epoch,
  best loss, patience counter, optimizer hyper-parameters, loss-scaler state).

One step: forward both branches (autocast on CUDA) -> ``n_critic`` critic updates on the detached
block-7 features (WGAN-GP) -> the model update with L = L_Dis + l1 L_Gan + l2 L_AT, where the critic's
parameters are frozen for L_Gan. Data order is a seeded permutation per epoch, so a resumed run sees
exactly the batches it would have seen.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from acfd.schemas.card import ModelCard
from acfd.schemas.errors import AcfdError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler
from tqdm import tqdm

from . import metrics
from .config import TrainConfig, config_hash
from .losses import critic_loss, model_loss
from .model import (
    CARD_FILE,
    CONFIG_FILE,
    NO_PRETRAINING,
    WEIGHTS_FILE,
    LQBranch,
    TwoBranchXception,
    backbone_init,
    build_model,
    normalize,
    read_card,
    resize_crops,
    save_run,
    state_tensors,
    write_card,
    write_config,
)

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
METRICS_FILE = "metrics.jsonl"


class FitError(AcfdError):
    """Training cannot start or continue (no data, nothing to resume, incompatible checkpoint)."""


@dataclass(frozen=True)
class FitOptions:
    """Run-time options of ``fit`` that do not change the result (hence not in the config hash)."""

    out: Path
    data: tuple[Path, ...] = ()
    device: str = "auto"
    resume: bool = False
    # Initial backbone weights: "imagenet" (timm's, what the paper and `acfd-train fit` use), "none"
    # (random; the library default, so that code and tests never reach for the network unasked) or a
    # local weights file. Not used by a resumed run: its weights come from the checkpoint.
    pretrained: str | Path = NO_PRETRAINING
    workers: int = 0
    progress: bool = True
    train_split: str = "train"
    val_split: str = "val"
    # Also checkpoint every this many steps (besides each epoch end), for long epochs.
    checkpoint_every: int = 1000


@dataclass
class FitResult:
    """What a finished ``fit`` did."""

    run_dir: Path
    steps: int
    epochs_done: int
    best_val_loss: float | None
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)


# -- devices, precision ----------------------------------------------------------------------------
def resolve_device(device: str) -> torch.device:
    """"auto" -> CUDA when available, else CPU; an unavailable CUDA request is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        d = torch.device(device)
    except RuntimeError as e:
        raise FitError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from e
    if d.type == "cuda" and not torch.cuda.is_available():
        raise FitError(f"device {device!r} requested but CUDA is not available")
    return d


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """Mixed precision on CUDA only; bf16 falls back to fp16 on GPUs without bf16."""
    if device.type != "cuda" or cfg.optim.amp == "fp32":
        return None
    if cfg.optim.amp == "bf16" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


# -- data ------------------------------------------------------------------------------------------
class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch, started at ``start`` (to resume inside an epoch)."""

    def __init__(self, n: int, seed: int, epoch: int, start: int = 0) -> None:
        self.n, self.seed, self.epoch, self.start = n, seed, epoch, start

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g)[self.start:].tolist())

    def __len__(self) -> int:
        return max(0, self.n - self.start)


def open_datasets(
    caches: Sequence[Path], split: str, image_size: int, balance: bool
) -> Dataset | None:
    """PairedCropDataset(s) of the caches for one split (concatenated); None when the split is empty."""
    from .dataset import PairedCropDataset  # the crop-cache reader (train/dataset.py)

    parts = []
    for c in caches:
        ds = PairedCropDataset(Path(c), split, image_size=image_size, balance=balance)
        if len(ds) > 0:
            parts.append(ds)
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


@dataclass
class Inputs:
    """One batch on the device: images normalised float32 at the config size."""

    hq: Tensor | None  # None for single-branch presets
    x: Tensor  # the LQ crop (or the single branch's input crop, ``data.input``)
    mask: Tensor
    label: Tensor
    mask_valid: Tensor | None


def cache_levels(cache: Path) -> tuple[str | None, str | None]:
    """(HQ level, LQ level) a crop cache was prepared with (its cache.json), None where unknown."""
    try:
        meta = json.loads((Path(cache) / "cache.json").read_text())
    except (OSError, ValueError):
        return None, None
    return meta.get("hq"), meta.get("lq")


def check_levels(cfg: TrainConfig, caches: Sequence[Path]) -> list[str]:
    """Where the caches' compression levels differ from what the preset reproduces (warnings only:
    a user may train any preset on any pairs, but the Table 3 row then no longer applies)."""
    levels = [cache_levels(c) for c in caches]
    problems = []
    if cfg.two_branch:
        hq = sorted({h for h, _ in levels if h is not None})
        if hq and hq != sorted(cfg.data.pair_levels):
            problems.append(f"preset {cfg.preset} pairs HQ {'+'.join(cfg.data.pair_levels)} with LQ, "
                            f"the cache(s) hold HQ {'+'.join(hq)} (one --data per HQ level)")
    fed = {(h if cfg.data.input == "hq" and cfg.model.branches == 1 else lq) for h, lq in levels} - {None}
    if fed and fed != {cfg.data.lq_level}:
        problems.append(f"preset {cfg.preset} trains its test-time branch on {cfg.data.lq_level}, "
                        f"the cache(s) feed it {'+'.join(sorted(fed))}")
    return problems


def batch_inputs(batch: dict[str, Any], cfg: TrainConfig, device: torch.device) -> Inputs:
    """Move a collated dataset batch to ``device``, resize and normalise its crops."""
    size = cfg.data.image_size
    mean, std = cfg.data.mean, cfg.data.std

    def prep(x: Tensor) -> Tensor:
        x = x.to(device, non_blocking=True)
        return normalize(resize_crops(x, size), mean, std)

    label = batch["label"].to(device).long()
    mask = batch["mask"].to(device).float()
    valid = batch["mask_valid"].to(device).bool() if "mask_valid" in batch else None
    if cfg.two_branch:
        return Inputs(prep(batch["hq"]), prep(batch["lq"]), mask, label, valid)
    return Inputs(None, prep(batch[cfg.data.input]), mask, label, valid)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Sequence[tuple[Tensor | None, Tensor]]) -> None:
    """Replace every batch-norm running statistic by the exact average over ``batches`` ("precise BN").

    After a few hundred steps the running averages (momentum 0.1) lag the weights; a short run's
    eval-mode outputs are then meaningless. Used by tests and short CPU demos; long runs do not need it.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    was_training = model.training
    model.train()
    for hq, x in batches:
        model(hq, x)
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom
    model.train(was_training)


# -- checkpoints -----------------------------------------------------------------------------------
def _flatten_optimizer(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Optimizer state as safetensors-ready tensors + JSON-ready scalars and param groups."""
    sd = opt.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, Tensor):
                tensors[f"{prefix}.{pid}.{k}"] = v.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(
    prefix: str, tensors: dict[str, Tensor], info: dict[str, Any]
) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith(prefix + "."):
            _, pid, k = key.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    for pid, st in info.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(st)
    return {"state": state, "param_groups": info["param_groups"]}


@dataclass
class _Progress:
    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    best_val: float | None = None
    bad_validations: int = 0
    stopped_early: bool = False


class Trainer:
    """One training run; ``fit`` drives it. Exposed for tests and for the GPU benchmark."""

    def __init__(
        self, cfg: TrainConfig, opts: FitOptions, model: TwoBranchXception | None = None
    ) -> None:
        self.cfg, self.opts = cfg, opts
        self.device = resolve_device(opts.device)
        torch.manual_seed(cfg.optim.seed)
        np.random.seed(cfg.optim.seed % (2**32))
        init = NO_PRETRAINING if opts.resume else opts.pretrained  # resumed: the checkpoint's weights
        self.model = (model or build_model(cfg, init)).to(self.device)
        # The run's model card; its steps follow every save of the weights (None: no card is kept).
        self.card: ModelCard | None = None
        self.critic = self.model.critic
        main_params = [p for n, p in self.model.named_parameters() if not n.startswith("critic.")]
        o = cfg.optim
        self.opt = torch.optim.Adam(main_params, lr=o.lr, weight_decay=o.weight_decay)
        self.opt_critic = (
            torch.optim.Adam(self.critic.parameters(), lr=o.critic_lr, betas=o.critic_betas)
            if self.critic is not None
            else None
        )
        self.amp = autocast_dtype(cfg, self.device)
        # Loss scaling only for fp16 (bf16 has fp32's exponent range).
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self.gp_gen = torch.Generator(device=self.device).manual_seed(o.seed + 1)
        self.state = _Progress()
        self._train_data: Dataset | None = None

    # -- one step --------------------------------------------------------------------------------
    def _forward(self, hq: Tensor | None, x: Tensor) -> tuple[Any, Any]:
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            return self.model(hq, x)

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One optimisation step (critic updates, then the model); returns the loss terms."""
        self.model.train()
        b = batch_inputs(batch, self.cfg, self.device)
        out_h, out_l = self._forward(b.hq, b.x)
        logs: dict[str, float] = {}
        if self.critic is not None and out_h is not None:
            self.critic.requires_grad_(True)
            for _ in range(self.cfg.loss.n_critic):
                self.opt_critic.zero_grad(set_to_none=True)  # type: ignore[union-attr]
                c_loss, parts = critic_loss(self.critic, out_h.v, out_l.v, self.cfg.loss.gp_weight, self.gp_gen)
                c_loss.backward()
                self.opt_critic.step()  # type: ignore[union-attr]
            logs["critic"] = float(c_loss.detach())
            logs.update({k: float(v.detach()) for k, v in parts.items()})
            # L_Gan moves the heads only: no gradient into the critic from the model's loss.
            self.critic.requires_grad_(False)
        terms = model_loss(out_h, out_l, b.label, b.mask, self.cfg, self.critic, b.mask_valid)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(terms.total).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        if self.critic is not None:
            self.critic.requires_grad_(True)
        logs.update(terms.floats())
        if not math.isfinite(logs["loss"]):
            raise FitError(f"loss became {logs['loss']} at step {self.state.step}; lower --lr or use --amp fp32")
        return logs

    @torch.no_grad()
    def validate(self, loader: DataLoader) -> dict[str, float]:
        """Mean loss terms over the loader (eval mode) + LQ-branch AUC and ACC at the threshold."""
        self.model.eval()
        sums: dict[str, float] = {}
        n = 0
        labels, scores = [], []
        for batch in loader:
            b = batch_inputs(batch, self.cfg, self.device)
            out_h, out_l = self._forward(b.hq, b.x)
            terms = model_loss(out_h, out_l, b.label, b.mask, self.cfg, self.critic, b.mask_valid)
            k_b = b.label.shape[0]
            for k, v in terms.floats().items():
                sums[k] = sums.get(k, 0.0) + v * k_b
            n += k_b
            labels.append(b.label.cpu().numpy())
            scores.append(LQBranch.score(out_l.c, self.cfg.score_kind).cpu().numpy())
        if n == 0:
            return {}
        out = {f"val_{k}": v / n for k, v in sums.items()}
        y, s = np.concatenate(labels), np.concatenate(scores)
        out["val_auc"] = metrics.auc(y, s)
        out["val_acc"] = metrics.accuracy(y, s, self.cfg.resolved_threshold)
        return out

    # -- checkpoints -----------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        d = self.opts.out / CHECKPOINT_DIR
        d.mkdir(parents=True, exist_ok=True)
        tensors, info = _flatten_optimizer("opt", self.opt)
        infos = {"opt": info}
        if self.opt_critic is not None:
            t2, info2 = _flatten_optimizer("critic", self.opt_critic)
            tensors.update(t2)
            infos["critic"] = info2
        tensors["rng.cpu"] = torch.get_rng_state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        tensors["rng.gp"] = self.gp_gen.get_state().cpu()
        save_file(state_tensors(self.model), str(d / "model.tmp"))
        save_file(tensors, str(d / "optim.tmp"))
        state = {
            **self.state.__dict__,
            "optimizers": infos,
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "config_hash": config_hash(self.cfg),
        }
        (d / "state.tmp").write_text(json.dumps(state, indent=1))
        # Rename last: state.json only ever describes complete weight and optimizer files.
        (d / "model.tmp").replace(d / "model.safetensors")
        (d / "optim.tmp").replace(d / "optim.safetensors")
        (d / "state.tmp").replace(d / "state.json")

    def load_checkpoint(self) -> None:
        d = self.opts.out / CHECKPOINT_DIR
        if not (d / "state.json").is_file():
            raise FitError(f"nothing to resume: {d / 'state.json'} is missing")
        state = json.loads((d / "state.json").read_text())
        try:
            self.model.load_state_dict(load_file(str(d / "model.safetensors"), device=str(self.device)))
            tensors = load_file(str(d / "optim.safetensors"))
        except (RuntimeError, OSError, SafetensorError) as e:
            raise FitError(f"cannot resume from {d}: {e}") from e
        infos = state.pop("optimizers")
        self.opt.load_state_dict(_unflatten_optimizer("opt", tensors, infos["opt"]))
        if self.opt_critic is not None:
            self.opt_critic.load_state_dict(_unflatten_optimizer("critic", tensors, infos["critic"]))
        torch.set_rng_state(tensors["rng.cpu"])
        if self.device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        if "rng.gp" in tensors:
            self.gp_gen.set_state(tensors["rng.gp"])
        scaler = state.pop("scaler")
        if scaler and self.scaler.is_enabled():
            self.scaler.load_state_dict(scaler)
        state.pop("config_hash", None)
        self.state = _Progress(**state)

    # -- the loop --------------------------------------------------------------------------------
    def _log(self, record: dict[str, Any]) -> None:
        with open(self.opts.out / METRICS_FILE, "a") as f:
            f.write(json.dumps(metrics.jsonable(record), sort_keys=True) + "\n")

    def _end_of_period(
        self, val_loader: DataLoader | None, train_means: dict[str, float], epoch_done: bool
    ) -> bool:
        """Validate, save the best weights, log, checkpoint; True when early stopping triggers."""
        st = self.state
        if self.cfg.optim.precise_bn and self._train_data is not None:
            self.precise_bn(self._train_data)
        val = self.validate(val_loader) if val_loader is not None else {}
        record: dict[str, Any] = {
            "epoch": st.epoch, "step": st.step, "epoch_done": epoch_done, "time": time.time(),
            **{f"train_{k}": v for k, v in train_means.items()}, **val,
        }
        improved = False
        if "val_loss" in val:
            if st.best_val is None or val["val_loss"] < st.best_val:
                st.best_val, st.bad_validations, improved = val["val_loss"], 0, True
            else:
                st.bad_validations += 1
        else:
            improved = True  # no validation split: keep the latest weights
        if improved:
            self.save_model()
        record["best"] = improved
        stop = st.bad_validations >= self.cfg.optim.patience
        st.stopped_early = stop
        record["stopped_early"] = stop
        self._log(record)
        if self.opts.progress:
            val_txt = (f", val loss {val['val_loss']:.4g}, val AUC {val.get('val_auc', float('nan')):.3f}"
                       if "val_loss" in val else "")  # fmt: skip
            tqdm.write(f"epoch {st.epoch if epoch_done else st.epoch + 1} step {st.step}: train loss {train_means.get('loss', float('nan')):.4g}"
                       f"{val_txt}{' (best, saved)' if improved else ''}{' - early stop' if stop else ''}")
        self.save_checkpoint()
        return stop

    def save_model(self) -> None:
        """RUN/model.safetensors (+ config); the card first, so the weights' header carries its step count."""
        if self.card is not None:
            self.card = replace(self.card, steps=self.state.step)
            write_card(self.opts.out, self.card)
        save_run(self.opts.out, self.model, self.cfg)

    def precise_bn(self, train_data: Dataset) -> None:
        """Exact batch-norm statistics over ``optim.precise_bn`` training batches (seeded order)."""
        bs = min(self.cfg.optim.batch_size, len(train_data))
        sampler = EpochSampler(len(train_data), self.cfg.optim.seed + 7919, self.state.step)
        loader = DataLoader(train_data, batch_size=bs, sampler=sampler, drop_last=True,
                            num_workers=self.opts.workers)  # fmt: skip
        batches = []
        for i, batch in enumerate(loader):
            if i >= self.cfg.optim.precise_bn:
                break
            b = batch_inputs(batch, self.cfg, self.device)
            batches.append((b.hq, b.x))
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            recalibrate_bn(self.model, batches)

    def run(self, train_data: Dataset, val_data: Dataset | None) -> FitResult:
        o, opts, st = self.cfg.optim, self.opts, self.state
        self._train_data = train_data
        if len(train_data) == 0:
            raise FitError("the training split is empty")
        bs = min(o.batch_size, len(train_data))
        steps_per_epoch = len(train_data) // bs  # drop_last: batch norm never sees a batch of one
        val_loader = (
            DataLoader(val_data, batch_size=bs, shuffle=False, num_workers=opts.workers)
            if val_data is not None and len(val_data) > 0
            else None
        )
        history: list[dict[str, Any]] = []
        max_steps = o.max_steps if o.max_steps is not None else o.epochs * steps_per_epoch
        while st.epoch < o.epochs and st.step < max_steps and not st.stopped_early:
            sampler = EpochSampler(len(train_data), o.seed, st.epoch, st.step_in_epoch * bs)
            loader = DataLoader(
                train_data, batch_size=bs, sampler=sampler, drop_last=True, num_workers=opts.workers,
                pin_memory=self.device.type == "cuda", persistent_workers=False,
            )
            sums: dict[str, float] = {}
            count = 0
            bar = tqdm(
                total=steps_per_epoch, initial=st.step_in_epoch, desc=f"epoch {st.epoch + 1}/{o.epochs}",
                disable=not opts.progress, dynamic_ncols=True, leave=False,
            )
            stopped_mid_epoch = False
            for batch in loader:
                logs = self.train_step(batch)
                st.step += 1
                st.step_in_epoch += 1
                count += 1
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + v
                history.append({"step": st.step, **logs})
                bar.update(1)
                bar.set_postfix({k: f"{v:.3g}" for k, v in logs.items() if k in _BAR_KEYS})
                if st.step >= max_steps:
                    stopped_mid_epoch = st.step_in_epoch < steps_per_epoch
                    break
                if opts.checkpoint_every and st.step % opts.checkpoint_every == 0:
                    self.save_checkpoint()
            bar.close()
            means = {k: v / max(count, 1) for k, v in sums.items()}
            if not stopped_mid_epoch:
                st.epoch += 1
                st.step_in_epoch = 0
            if self._end_of_period(val_loader, means, epoch_done=not stopped_mid_epoch):
                break
        if not (opts.out / WEIGHTS_FILE).is_file():  # e.g. resumed a finished run: keep something
            self.save_model()
        return FitResult(opts.out, st.step, st.epoch, st.best_val, st.stopped_early, history)


_BAR_KEYS = ("loss", "metric_lq", "metric_hq", "pair", "at_lq", "transfer", "gan", "gp", "ce")


def fit(
    cfg: TrainConfig,
    opts: FitOptions,
    train_data: Dataset | None = None,
    val_data: Dataset | None = None,
) -> FitResult:
    """Train ``cfg`` into ``opts.out``; datasets default to the caches in ``opts.data``.

    With ``opts.resume`` the run continues from ``opts.out/checkpoint`` (same step count, optimizer
    and RNG state, same data order) under the config saved in the run, whose run length
    (epochs/max_steps) the caller may have extended.
    """
    out = Path(opts.out)
    if out.exists() and not out.is_dir():
        raise FitError(f"{out} is a file, not a run folder")
    if not opts.resume and (out / CHECKPOINT_DIR / "state.json").exists():
        raise FitError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    init = "unknown" if opts.resume else backbone_init(opts.pretrained)  # a missing weights file fails here
    # Everything that can fail on the arguments (data, device, weights, checkpoint) fails before the
    # run folder exists, so a refused fit leaves nothing that looks like a run.
    if train_data is None:
        if not opts.data:
            raise FitError("no training data: pass --data CACHE")
        for problem in check_levels(cfg, opts.data):
            log.warning("%s", problem)
        train_data = open_datasets(opts.data, opts.train_split, cfg.data.image_size, balance=True)
        if train_data is None:
            raise FitError(f"the {opts.train_split!r} split of {', '.join(map(str, opts.data))} is empty")
        val_data = open_datasets(opts.data, opts.val_split, cfg.data.image_size, balance=False)
        if val_data is None:
            log.warning("no %r split: early stopping is off and the last weights are kept", opts.val_split)
    card = read_card(out) if opts.resume and out.is_dir() else None
    if card is None:  # a new run (or a resumed one from before model cards: its initial weights are unknown)
        from .card import new_card

        card = new_card(cfg, init, [Path(c) for c in opts.data])
    trainer = Trainer(cfg, opts)  # builds the model: ImageNet weights that cannot be had fail here
    if opts.resume:
        trainer.load_checkpoint()
    trainer.card = card
    created = _first_missing(out)
    new_config = not (out / CONFIG_FILE).exists()
    new_card_file = not (out / CARD_FILE).exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FitError(f"cannot create the run folder {out}: {e}") from e
    try:
        write_config(out, cfg)
        write_card(out, card)
        return trainer.run(train_data, val_data)
    except BaseException:
        # Failed (or interrupted) before its first weights or checkpoint: nothing to resume or keep.
        # Remove only what this call created; a folder or file that existed before is never touched.
        if not (out / WEIGHTS_FILE).exists() and not (out / CHECKPOINT_DIR).exists():
            if created is not None:
                shutil.rmtree(created, ignore_errors=True)
            else:
                if new_config:
                    (out / CONFIG_FILE).unlink(missing_ok=True)
                if new_card_file:
                    (out / CARD_FILE).unlink(missing_ok=True)
        raise


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` (itself included) that does not exist yet; None if it exists."""
    top = None
    for p in (path, *path.parents):
        if p.exists():
            break
        top = p
    return top


# Fields a resumed run may change: how long it trains, not what it trains.
_RUN_LENGTH = ("epochs", "max_steps")


def resume_config(run_dir: Path, preset: str | None = None, **changes: Any) -> TrainConfig:
    """The config saved in ``run_dir`` with only its run length (epochs, max_steps) changed.

    Any other option that differs from the saved value is an error: a resumed run must train the
    same thing with the same optimizer.
    """
    from dataclasses import replace

    from .model import read_config

    if not (Path(run_dir) / "config.json").is_file():
        raise FitError(f"nothing to resume in {run_dir}: config.json is missing")
    cfg = read_config(Path(run_dir))
    if preset is not None and preset != cfg.preset:
        raise FitError(f"{run_dir} was trained with preset {cfg.preset!r}, not {preset!r}")
    flat = {f: getattr(part, f) for part in (cfg.model, cfg.loss, cfg.data, cfg.optim) for f in part.__dataclass_fields__}
    for k, v in changes.items():
        if v is None or k in _RUN_LENGTH:
            continue
        if k not in flat:
            raise FitError(f"unknown option {k!r}")
        if flat[k] != v:
            raise FitError(f"cannot change {k} on --resume ({flat[k]!r} in the run, {v!r} given)")
    length = {k: changes[k] for k in _RUN_LENGTH if changes.get(k) is not None}
    return replace(cfg, optim=replace(cfg.optim, **length)) if length else cfg
