"""Every registered training preset builds, scores and exports: one torch -> ONNX round trip each.

As timm tests every registered model, this walks ``acfd.train.config.PRESETS`` (not a hand-written
list): a preset added to the registry is covered without touching this file. Each preset's model is
built at 64 px with random weights (no network), its LQ branch runs through the engine's
:class:`CropScorer` (torch) and through the exported ONNX graph on ONNX Runtime, and the two must agree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from acfd.engine.export import export_onnx, torch_reference
from acfd.engine.runtime import load
from acfd.train.config import PRESETS, config_hash, resolve_config
from acfd.train.model import NO_PRETRAINING, artifact_meta, build_model, feature_map_size

from tests.engine_helpers import random_crops

SIZE = 64  # 64 px -> a 4x4 block-7 attention map
N = 3

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.mark.slow  # ~2-4 s per preset on 2 shared cores (an Xception export each); still in the default run
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_round_trip_torch_vs_onnxruntime(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = resolve_config(name, image_size=SIZE)
    branch = build_model(cfg, NO_PRETRAINING).lq_branch().eval()
    meta = artifact_meta(cfg)
    # The metadata describes this preset: kind, threshold, map size and hash come from the config.
    expected_kind = "probability" if cfg.model.head == "ce" else "distance"
    expected_att = feature_map_size(SIZE) if cfg.model.attention != "none" else 0
    assert feature_map_size(SIZE) == 4
    assert (meta.preset, meta.score, meta.attention_size) == (name, expected_kind, expected_att)
    assert meta.threshold == cfg.threshold and meta.config_hash == config_hash(cfg)

    path = export_onnx(branch, meta, tmp_path / f"{name}.onnx", with_embedding=True)
    crops = random_crops(N, SIZE, seed=7)
    ref_score, ref_att = torch_reference(branch, meta, crops)
    with load(path, device="cpu") as b:
        assert b.name == "onnxruntime"
        stored = b.meta
        p = b.infer(crops)
    assert (stored.preset, stored.score, stored.attention_size) == (name, expected_kind, expected_att)
    assert stored.threshold == meta.threshold and stored.config_hash == meta.config_hash
    assert stored.precision == "fp32"

    # torch (the engine's CropScorer) and ONNX Runtime agree; the crops give different scores.
    assert p.score.shape == (N,) and np.all(np.isfinite(p.score))
    np.testing.assert_allclose(p.score, ref_score, rtol=1e-4)
    assert np.ptp(ref_score) > 0
    if expected_att:
        assert p.attention is not None and ref_att is not None
        assert p.attention.shape == (N, expected_att, expected_att)
        np.testing.assert_allclose(p.attention, ref_att, atol=1e-3)
        assert float(p.attention.min()) >= 0.0 and float(p.attention.max()) <= 1.0
        assert np.ptp(p.attention) > 0  # a real map, not a constant
    else:
        assert p.attention is None and ref_att is None

    # The score is the right function of the branch output for the preset's head.
    assert p.embedding is not None
    emb = p.embedding.astype(np.float64)
    if cfg.model.head == "ce":
        assert emb.shape == (N, 2)
        e = np.exp(emb - emb.max(axis=1, keepdims=True))
        np.testing.assert_allclose(p.score, e[:, 1] / e.sum(axis=1), rtol=1e-5)
        assert np.all((p.score > 0) & (p.score < 1))
    else:
        assert emb.shape == (N, 2048)
        np.testing.assert_allclose(p.score, np.linalg.norm(emb, axis=1), rtol=1e-5)
