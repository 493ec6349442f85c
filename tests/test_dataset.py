"""`PairedCropDataset` over a cache written by `acfd-train prepare` (item format: docs/data.md)."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import torch
from acfd.train.dataset import DatasetError, PairedCropDataset
from acfd.train.prepare import PrepareConfig, prepare
from torch.utils.data import DataLoader

from tests.data_helpers import VIDEOS, copy_root, synth_root

SIZE = 48
FRAMES = 4


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache with two fake methods (SelfBlended and a copy named Deepfakes): fakes = 2 x reals."""
    root = copy_root(synth_root(tmp_path_factory), tmp_path_factory.mktemp("ds") / "ffpp")
    m = root / "manipulated_sequences"
    shutil.copytree(m / "SelfBlended", m / "Deepfakes")
    out = root.parent / "cache"
    s = prepare(PrepareConfig(ffpp=root, out=out, frames=FRAMES, size=SIZE, detector="short"), progress=False)
    assert s.frames == {"ok": 3 * VIDEOS * FRAMES}
    return out


def test_items_follow_the_contract(cache):
    ds = PairedCropDataset(cache, "train", balance=False)
    # train: one pair -> 2 reals, 2 SelfBlended, 2 Deepfakes videos, FRAMES frames each
    assert len(ds) == 6 * FRAMES
    seen = set()
    for i in range(len(ds)):
        it = ds[i]
        assert it["hq"].dtype == torch.uint8 and it["hq"].shape == (3, SIZE, SIZE)
        assert it["lq"].dtype == torch.uint8 and it["lq"].shape == (3, SIZE, SIZE)
        assert it["mask"].dtype == torch.float32 and it["mask"].shape == (SIZE, SIZE)
        assert set(it["mask"].unique().tolist()) <= {0.0, 1.0}
        assert it["label"].dtype == torch.int64
        assert it["mask_valid"] is True
        if it["method"] == "real":
            assert it["label"].item() == 0 and it["mask"].sum() == 0 and it["video"].startswith("youtube/")
        else:
            assert it["label"].item() == 1 and it["mask"].mean() > 0.1
            assert it["method"] in ("SelfBlended", "Deepfakes") and it["video"].startswith(it["method"] + "/")
        # The pixels are the cached crop, channels first.
        stored = np.load(cache / "crops" / f"{it['video']}.hq.npy")
        assert any(np.array_equal(it["hq"].permute(1, 2, 0).numpy(), s) for s in stored)
        assert not torch.equal(it["hq"], it["lq"])
        seen.add((it["video"], it["frame"]))
    assert len(seen) == len(ds)


def test_balance_oversamples_reals(cache):
    plain = PairedCropDataset(cache, "train", balance=False)
    assert (plain.labels == 1).sum() == 2 * (plain.labels == 0).sum()
    bal = PairedCropDataset(cache, "train", balance=True)
    assert (bal.labels == 1).sum() == (bal.labels == 0).sum() == (plain.labels == 1).sum()
    reals = [(bal[i]["video"], bal[i]["frame"]) for i in range(len(bal)) if bal.labels[i] == 0]
    assert len(set(reals)) == (plain.labels == 0).sum()  # every real used, each twice
    assert all(reals.count(r) == 2 for r in set(reals))
    one = PairedCropDataset(cache, "train", balance=True, methods=["SelfBlended"])
    assert len(one) == 4 * FRAMES and {one[i]["method"] for i in range(len(one))} == {"real", "SelfBlended"}


def test_splits_are_disjoint(cache):
    vids = {
        s: {PairedCropDataset(cache, s, balance=False)[i]["video"] for i in range(4 * FRAMES)}
        for s in ("val", "test")
    }
    train = PairedCropDataset(cache, "train", balance=False)
    vids["train"] = {train[i]["video"] for i in range(len(train))}
    assert (
        not (vids["train"] & vids["val"])
        and not (vids["train"] & vids["test"])
        and not (vids["val"] & vids["test"])
    )


def test_image_size_resizes(cache):
    ds = PairedCropDataset(cache, "val", image_size=32, balance=False)
    it = next(ds[i] for i in range(len(ds)) if ds[i]["label"] == 1)
    assert it["hq"].shape == (3, 32, 32) and it["mask"].shape == (32, 32)
    assert set(it["mask"].unique().tolist()) == {0.0, 1.0}


def test_pickles_and_batches(cache):
    ds = PairedCropDataset(cache, "test", balance=False)
    a = ds[3]
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[3]["lq"], a["lq"])
    batch = next(iter(DataLoader(ds, batch_size=5, shuffle=False)))
    assert batch["hq"].shape == (5, 3, SIZE, SIZE) and batch["label"].shape == (5,)
    assert len(batch["video"]) == 5


def test_errors(tmp_path, cache):
    with pytest.raises(DatasetError, match="prepare"):
        PairedCropDataset(tmp_path, "train")
    with pytest.raises(DatasetError, match="split"):
        PairedCropDataset(cache, "training")
    (tmp_path / "cache.json").write_text("[1, 2]")
    with pytest.raises(DatasetError, match="format"):
        PairedCropDataset(tmp_path, "train")
    (tmp_path / "cache.json").write_text("{not json")
    with pytest.raises(DatasetError, match="cannot read"):
        PairedCropDataset(tmp_path, "train")
