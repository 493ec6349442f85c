"""`PairedCropDataset`: paired HQ/LQ face crops, masks and labels from an `acfd-train prepare` cache.

Crops are read through memory maps of the per-video ``.npy`` arrays (opened lazily in each process,
so the dataset pickles cheaply into DataLoader workers); only frames with status "ok" are used.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from acfd.schemas.errors import AcfdError
from torch.utils.data import Dataset

from .ffpp import REAL, SPLITS
from .prepare import CACHE_FORMAT, MASK_NONE, MASK_OK, OK


class DatasetError(AcfdError):
    """The crop cache is missing or unusable."""


def read_index(cache: Path) -> list[dict[str, str]]:
    """All rows of ``CACHE/index.csv`` (every sampled frame, and one row per video without frames)."""
    path = Path(cache) / "index.csv"
    if not path.is_file():
        raise DatasetError(f"{cache} is not a crop cache (no index.csv): run `acfd-train prepare` first")
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


class PairedCropDataset(Dataset):
    """Paired crops of one split of a prepared cache.

    Items: ``hq``/``lq`` uint8 [3,S,S], ``mask`` float32 [S,S] in {0,1} (zeros for reals), ``label``
    int64 (1 fake), ``video``, ``frame``, ``method`` ("real" for reals) and ``mask_valid`` (bool: False
    for a fake frame whose mask video was missing or too short - its mask is zeros, not ground truth).

    ``balance=True`` repeats the minority class (the reals, in FF++) until both classes have the same
    number of items; evaluation uses ``balance=False``. ``methods`` keeps only those fake methods.
    """

    def __init__(
        self,
        cache: Path,
        split: str,
        image_size: int | None = None,
        balance: bool = True,
        methods: Sequence[str] | None = None,
    ) -> None:
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
        if image_size is not None and image_size < 8:
            raise DatasetError(f"image_size must be >= 8, got {image_size}")
        self.cache = Path(cache)
        meta_path = self.cache / "cache.json"
        if not meta_path.is_file():
            raise DatasetError(f"{cache} is not a crop cache (no cache.json): run `acfd-train prepare` first")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DatasetError(f"cannot read {meta_path}: {e}") from e
        fmt = meta.get("format") if isinstance(meta, dict) else None
        if fmt != CACHE_FORMAT:
            raise DatasetError(f"{cache}: crop cache format {fmt!r}, expected {CACHE_FORMAT}")
        self.stored_size = int(meta["size"])
        self.image_size = image_size or self.stored_size
        self.split = split
        keep = set(methods) if methods is not None else None
        videos: list[str] = []
        vid_of: dict[str, int] = {}
        cols: dict[str, list] = {k: [] for k in ("video", "row", "frame", "label", "method", "mask_valid")}
        method_names: list[str] = []
        method_of: dict[str, int] = {}
        for r in read_index(self.cache):
            if r["split"] != split or r["status"] != OK:
                continue
            if keep is not None and r["method"] != REAL and r["method"] not in keep:
                continue
            v = vid_of.setdefault(r["video"], len(videos))
            if v == len(videos):
                videos.append(r["video"])
            m = method_of.setdefault(r["method"], len(method_names))
            if m == len(method_names):
                method_names.append(r["method"])
            cols["video"].append(v)
            cols["row"].append(int(r["row"]))
            cols["frame"].append(int(r["frame"]))
            cols["label"].append(int(r["label"]))
            cols["method"].append(m)
            cols["mask_valid"].append(r["mask"] in (MASK_OK, MASK_NONE))
        self.videos = videos
        self.method_names = method_names
        self._video = np.asarray(cols["video"], np.int32)
        self._row = np.asarray(cols["row"], np.int32)
        self._frame = np.asarray(cols["frame"], np.int32)
        self._label = np.asarray(cols["label"], np.int64)
        self._method = np.asarray(cols["method"], np.int16)
        self._mask_valid = np.asarray(cols["mask_valid"], bool)
        self._order = self._balanced_order() if balance else np.arange(len(self._label))
        self._maps: dict[tuple[int, str], np.ndarray] = {}

    def _balanced_order(self) -> np.ndarray:
        fake = np.flatnonzero(self._label == 1)
        real = np.flatnonzero(self._label == 0)
        if len(fake) == 0 or len(real) == 0 or len(fake) == len(real):
            return np.arange(len(self._label))
        small, big = (real, fake) if len(real) < len(fake) else (fake, real)
        # Whole repeats of the minority class plus an evenly spread remainder: deterministic.
        reps, rest = divmod(len(big), len(small))
        extra = small[np.linspace(0, len(small) - 1, rest).round().astype(int)] if rest else small[:0]
        return np.sort(np.concatenate([big, np.tile(small, reps), extra]))

    @property
    def labels(self) -> np.ndarray:
        """Label of every item (after balancing), e.g. for samplers and class counts."""
        return self._label[self._order]

    def __len__(self) -> int:
        return len(self._order)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_maps"] = {}  # memory maps are reopened in the worker process
        return state

    def _array(self, v: int, kind: str) -> np.ndarray:
        a = self._maps.get((v, kind))
        if a is None:
            path = self.cache / "crops" / f"{self.videos[v]}.{kind}.npy"
            try:
                a = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise DatasetError(f"cannot read crops {path}: {e}") from e
            self._maps[(v, kind)] = a
        return a

    def _resize(self, img: np.ndarray) -> np.ndarray:
        s = self.image_size
        if s == self.stored_size:
            return img
        interp = cv2.INTER_AREA if s < self.stored_size else cv2.INTER_LINEAR
        return cv2.resize(img, (s, s), interpolation=interp)

    def __getitem__(self, idx: int) -> dict[str, object]:
        i = int(self._order[idx])
        v, row = int(self._video[i]), int(self._row[i])
        hq = self._resize(np.asarray(self._array(v, "hq")[row]))
        lq = self._resize(np.asarray(self._array(v, "lq")[row]))
        label = int(self._label[i])
        if label == 1:
            m = np.asarray(self._array(v, "mask")[row], np.float32)
            if self.image_size != self.stored_size:
                m = (cv2.resize(m, (self.image_size,) * 2, interpolation=cv2.INTER_LINEAR) > 0.5).astype(
                    np.float32
                )
        else:
            m = np.zeros((self.image_size, self.image_size), np.float32)  # reals: no manipulated pixel
        return {
            "hq": torch.from_numpy(np.ascontiguousarray(hq.transpose(2, 0, 1))),
            "lq": torch.from_numpy(np.ascontiguousarray(lq.transpose(2, 0, 1))),
            "mask": torch.from_numpy(m),
            "label": torch.tensor(label, dtype=torch.int64),
            "video": self.videos[v],
            "frame": int(self._frame[i]),
            "method": self.method_names[int(self._method[i])],
            "mask_valid": bool(self._mask_valid[i]),
        }
