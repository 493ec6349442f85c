"""Helpers for the model/training tests: a tiny in-memory dataset in the PairedCropDataset item format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset


class TinyPairs(Dataset):
    """``n`` paired crops of side ``size``; fakes carry a high-frequency patch where their mask is 1.

    HQ is the clean image; LQ is a coarsely quantised, slightly blurred copy (a stand-in for heavy
    compression). Half the items are fake. Deterministic for a given seed.
    """

    def __init__(self, n: int = 8, size: int = 64, seed: int = 0, videos: int = 4) -> None:
        rng = np.random.default_rng(seed)
        self.items = []
        for i in range(n):
            label = i % 2
            base = rng.normal(128, 20, (3, size, size)).clip(0, 255)
            mask = np.zeros((size, size), np.float32)
            if label:
                s = size // 2
                y0, x0 = rng.integers(0, size - s, 2)
                patch = rng.choice([30.0, 225.0], (3, s, s))
                base[:, y0:y0 + s, x0:x0 + s] = patch
                mask[y0:y0 + s, x0:x0 + s] = 1
            hq = base.astype(np.uint8)
            lq = (np.round(base / 32) * 32).clip(0, 255)
            lq = (lq + np.roll(lq, 1, axis=2)) / 2
            self.items.append(
                {
                    "hq": torch.from_numpy(hq),
                    "lq": torch.from_numpy(lq.astype(np.uint8)),
                    "mask": torch.from_numpy(mask),
                    "label": torch.tensor(label, dtype=torch.int64),
                    "video": f"v{i % videos}{'f' if label else 'r'}",
                    "frame": i,
                    "method": "Synth" if label else "real",
                    "mask_valid": True,
                }
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


_caches: dict[str, Path] = {}


def crop_cache(tmp_path_factory) -> Path:
    """The session's crop cache: `prepare` (3 frames per video, 64-px crops) on the shared synthetic
    FF++ set of tests/data_helpers.py (6 reals + 6 self-blended fakes, one pair per split)."""
    if "cache" not in _caches:
        from acfd.train.prepare import PrepareConfig, prepare

        from tests.data_helpers import synth_root

        out = tmp_path_factory.mktemp("model-cache") / "cache"
        prepare(PrepareConfig(ffpp=synth_root(tmp_path_factory), out=out, frames=3, size=64), progress=False)
        _caches["cache"] = out
    return _caches["cache"]


def cache_batch(cache: Path, split: str = "train", per_class: int = 4) -> dict:
    """A collated batch of ``per_class`` reals and as many fakes from a crop cache."""
    from acfd.train.dataset import PairedCropDataset
    from torch.utils.data import default_collate

    ds = PairedCropDataset(cache, split, balance=False)
    idx = [*np.flatnonzero(ds.labels == 0)[:per_class], *np.flatnonzero(ds.labels == 1)[:per_class]]
    return default_collate([ds[int(i)] for i in idx])
