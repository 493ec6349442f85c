"""Every registered training preset builds, scores and exports: one torch -> ONNX round trip each.

As timm tests every registered model, this walks ``acfd.train.config.PRESETS`` (not a hand-written
list): a preset added to the registry is covered without touching this file. Each preset's model is
built at 64 px with random weights (no network) and exported with ``acfd.engine.export.export_onnx``;
the graph's outputs on ONNX Runtime must equal, in FP32 within rtol 1e-4 / atol 1e-4, those of the torch
branch in eval mode on the same uint8 crops normalised by training's own ``normalize`` (and those of the
engine's :class:`CropScorer` in torch). Cost: 2-5 s per preset on 2 shared CPU cores, ~40 s for the 12 of today.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from acfd.engine.export import export_onnx, torch_reference
from acfd.engine.runtime import load
from acfd.train.config import PRESETS, config_hash, resolve_config
from acfd.train.model import NO_PRETRAINING, LQBranch, artifact_meta, build_model, feature_map_size, normalize

from tests.engine_helpers import random_crops

SIZE = 64  # 64 px -> a 4x4 block-7 attention map
N = 3

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.mark.slow  # ~2-4 s per preset on 2 shared cores (an Xception export each); still in the default run
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_round_trip_torch_vs_onnxruntime(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = resolve_config(name, image_size=SIZE)
    model = build_model(cfg, NO_PRETRAINING).eval()
    branch = model.lq_branch()
    meta = artifact_meta(cfg)
    crops = random_crops(N, SIZE, seed=7)
    # The reference, computed without the engine: training's normalisation, the branch, the score.
    x = normalize(torch.from_numpy(crops).permute(0, 3, 1, 2), meta.mean, meta.std)
    # Random weights give embeddings of norm ~1e-3, where any graph scores every crop ~0 (or P ~0.5):
    # scale the last batch norm (before the ReLU, so exactly linear) to tail features of norm ~10,
    # a trained model's range (threshold 9.05), so that the tolerances below separate the crops.
    tail_out: list[torch.Tensor] = []
    hook = model.tail.register_forward_hook(lambda _m, _i, o: tail_out.append(o))
    with torch.no_grad():
        branch(x)
        hook.remove()
        k = 10.0 / float(tail_out[0].norm(dim=1).mean())
        model.tail.bn4.weight.mul_(k)
        model.tail.bn4.bias.mul_(k)
        emb_ref, att_ref = branch(x)
    score_ref = LQBranch.score(emb_ref, cfg.score_kind).numpy()
    # The metadata describes this preset: kind, threshold, map size and hash come from the config.
    expected_kind = "probability" if cfg.model.head == "ce" else "distance"
    expected_att = feature_map_size(SIZE) if cfg.model.attention != "none" else 0
    assert feature_map_size(SIZE) == 4
    assert (meta.preset, meta.score, meta.attention_size) == (name, expected_kind, expected_att)
    assert meta.threshold == cfg.threshold and meta.config_hash == config_hash(cfg)

    path = export_onnx(branch, meta, tmp_path / f"{name}.onnx", with_embedding=True)
    ref_score, ref_att = torch_reference(branch, meta, crops)  # the engine's CropScorer, in torch
    with load(path, device="cpu") as b:
        assert b.name == "onnxruntime"
        stored = b.meta
        p = b.infer(crops)
    assert (stored.preset, stored.score, stored.attention_size) == (name, expected_kind, expected_att)
    assert stored.threshold == meta.threshold and stored.config_hash == meta.config_hash
    assert stored.precision == "fp32"

    # ONNX Runtime vs torch in FP32: scores within rtol 1e-4 + atol 1e-4 (measured: ~5e-7 relative),
    # against both the independent reference and the engine's wrapper; the crops' scores differ by
    # far more than that (distances ~10 apart by ~1, probabilities by ~0.03), so a graph that ignored
    # its input, or normalised it otherwise, would fail.
    assert p.score.shape == (N,) and np.all(np.isfinite(p.score))
    np.testing.assert_allclose(p.score, score_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ref_score, score_ref, rtol=1e-4, atol=1e-4)
    assert np.ptp(score_ref) > 1e-2
    if expected_kind == "distance":
        assert 5.0 < float(score_ref.mean()) < 20.0  # the scaled range: what the tolerances assume
    if expected_att:
        assert p.attention is not None and ref_att is not None and att_ref is not None
        assert p.attention.shape == (N, expected_att, expected_att)
        np.testing.assert_allclose(p.attention, att_ref[:, 0].numpy(), rtol=0, atol=1e-4)
        np.testing.assert_allclose(ref_att, att_ref[:, 0].numpy(), rtol=0, atol=1e-4)
        assert float(p.attention.min()) >= 0.0 and float(p.attention.max()) <= 1.0
        assert np.ptp(p.attention) > 1e-2  # a real map, not a constant
    else:
        assert p.attention is None and ref_att is None and att_ref is None

    # The score is the right function of the branch output for the preset's head.
    assert p.embedding is not None
    e_ref = emb_ref.numpy()
    np.testing.assert_allclose(p.embedding, e_ref, rtol=1e-4, atol=1e-4 * float(np.abs(e_ref).max()))
    emb = p.embedding.astype(np.float64)
    if cfg.model.head == "ce":
        assert emb.shape == (N, 2)
        e = np.exp(emb - emb.max(axis=1, keepdims=True))
        np.testing.assert_allclose(p.score, e[:, 1] / e.sum(axis=1), rtol=1e-5)
        assert np.all((p.score > 0) & (p.score < 1))
    else:
        assert emb.shape == (N, 2048)
        np.testing.assert_allclose(p.score, np.linalg.norm(emb, axis=1), rtol=1e-5)
