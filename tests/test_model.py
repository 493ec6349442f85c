"""Two-branch XceptionNet: structure from timm, the standalone LQ branch, weights, runs, presets."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import timm
import torch
from acfd.schemas.artifact import ArtifactMeta
from acfd.train.config import PRESETS, ConfigError, TrainConfig, config_hash, resolve_config
from acfd.train.model import (
    Critic,
    LQBranch,
    ModelError,
    TwoBranchXception,
    artifact_meta,
    build_model,
    feature_map_size,
    load_run,
    save_run,
)
from safetensors.torch import save_file
from torch import nn

SIZE = 64


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def paper() -> tuple[TwoBranchXception, TrainConfig]:
    torch.manual_seed(0)
    cfg = resolve_config("paper", image_size=SIZE)
    return build_model(cfg).eval(), cfg


@pytest.fixture(scope="module")
def xception() -> nn.Module:
    torch.manual_seed(1)
    m = timm.create_model("legacy_xception", pretrained=False)
    # Non-trivial BN statistics, so that a wrong copy would show.
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    return m


def test_structure_follows_timm(paper: tuple[TwoBranchXception, TrainConfig], xception: nn.Module) -> None:
    model, _ = paper
    mid = [f["num_chs"] for f in xception.feature_info if f["reduction"] == 16][0]
    assert model.lq_head.out_channels == mid and model.tail.num_features == xception.num_features
    assert model.hq_head is not None and model.hq_head is not model.lq_head
    assert model.hq_head.conv1.weight.data_ptr() != model.lq_head.conv1.weight.data_ptr()
    # heads = stem + block1..7, tail = block8..12 + exit flow
    assert hasattr(model.lq_head, "block7") and not hasattr(model.lq_head, "block8")
    assert hasattr(model.tail, "block8") and hasattr(model.tail, "conv4") and not hasattr(model.tail, "block7")
    critic = model.critic
    assert isinstance(critic, Critic)
    first = critic.net[0]
    assert isinstance(first, nn.Conv2d) and first.kernel_size == (1, 1) and first.in_channels == 2 * mid
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in critic.modules())


def test_forward_shapes_and_attention_size(paper: tuple[TwoBranchXception, TrainConfig]) -> None:
    model, cfg = paper
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        out_h, out_l = model(x, x)
    h = feature_map_size(SIZE)
    assert out_l.v.shape == (2, model.lq_head.out_channels, h, h)
    assert out_l.m.shape == (2, 1, h, h) and float(out_l.m.min()) >= 0 and float(out_l.m.max()) <= 1
    assert float(out_l.m.std()) > 1e-4  # a map that varies over positions/crops, not a constant
    assert out_l.c.shape == (2, model.tail.num_features) and out_h is not None
    # the HQ branch has its own attention layer: same input, same (copied) head weights, other map
    assert out_h.m is not None and not torch.allclose(out_h.m, out_l.m)
    assert torch.equal(out_h.v, out_l.v)  # both heads start from the same backbone weights
    # the distance score is the embedding's L2 norm, per crop
    norms = torch.sqrt((out_l.c.double() ** 2).sum(dim=1))
    torch.testing.assert_close(LQBranch.score(out_l.c, "distance").double(), norms, rtol=1e-6, atol=0)
    assert float(norms[0]) != float(norms[1])
    assert artifact_meta(cfg).attention_size == h
    # 299-px input: 728 x 19 x 19 block-7 features, the paper's 19x19 attention map (Cao et al., §3)
    assert feature_map_size(299) == 19 and feature_map_size(96) == 6


def test_lq_branch_is_the_lq_path(paper: tuple[TwoBranchXception, TrainConfig]) -> None:
    model, _ = paper
    branch = model.lq_branch()
    assert isinstance(branch, LQBranch)
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        _, out_l = model(torch.randn_like(x), x)
        c, m = branch(x)
    assert (c - out_l.c).abs().max().item() == 0.0
    assert (m - out_l.m).abs().max().item() == 0.0
    # shares the weights: no copy that could drift from the trained model
    assert branch.head.block7.rep[1].pointwise.weight.data_ptr() == model.lq_head.block7.rep[1].pointwise.weight.data_ptr()
    assert branch.tail is model.tail


def test_attention_multiplies_block7_features(paper: tuple[TwoBranchXception, TrainConfig]) -> None:
    model, _ = paper
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        out = model.lq(x)
        expect = model.tail(out.v * out.m)
        # a saturated map of zeros must change the embedding (V' = V * M is really used)
        zero = model.tail(out.v * 0)
    assert torch.allclose(out.c, expect)
    assert not torch.allclose(out.c, zero)


def test_single_branch_and_ce_presets() -> None:
    cfg = resolve_config("single-ce", image_size=SIZE)
    model = build_model(cfg).eval()
    assert model.hq_head is None and model.critic is None and model.lq_attention is None
    with torch.no_grad():
        logits, att = model.lq_branch()(torch.randn(2, 3, SIZE, SIZE))
    assert logits.shape == (2, 2) and att is None
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits, _ = model.lq_branch()(x)
        # no attention layer: the 2-class head on the tail of the LQ head, nothing in between
        direct = model.classifier(model.tail(model.lq_head(x)))
    assert torch.equal(logits, direct)
    p = LQBranch.score(logits, "probability")
    e = logits.double().exp()
    torch.testing.assert_close(p.double(), e[:, 1] / e.sum(dim=1), rtol=1e-6, atol=1e-7)
    assert bool(((p > 0) & (p < 1)).all()) and float(p[0]) != float(p[1])
    meta = artifact_meta(cfg)
    assert (meta.score, meta.threshold, meta.attention_size) == ("probability", 0.5, 0)
    with pytest.raises(ModelError):
        model.hq(torch.zeros(1, 3, SIZE, SIZE))


def test_code_preset_is_the_authors_code() -> None:
    cfg = resolve_config("code", image_size=SIZE)
    model = build_model(cfg)
    from timm.models.xception import SeparableConv2d

    assert isinstance(model.lq_attention.conv, SeparableConv2d)
    assert model.lq_attention.conv.pointwise.out_channels == 1 and model.lq_attention.conv.pointwise.bias is None
    assert model.critic is None
    meta = artifact_meta(cfg)
    assert (meta.threshold, meta.r_minus, meta.preset) == (5.0, 0.01, "code")
    assert cfg.loss.lambda_pair == 0.2 and cfg.loss.gp_weight == 0.0


def _check_backbone(model: TwoBranchXception, src: nn.Module) -> None:
    sd = src.state_dict()
    for head in (model.hq_head, model.lq_head):
        assert torch.equal(head.conv1.weight, sd["conv1.weight"])
        assert torch.equal(head.block7.rep[8].running_var, sd["block7.rep.8.running_var"])
    assert torch.equal(model.tail.block8.rep[1].pointwise.weight, sd["block8.rep.1.pointwise.weight"])
    assert torch.equal(model.tail.conv4.pointwise.weight, sd["conv4.pointwise.weight"])


def test_backbone_weights_from_safetensors_and_pth(tmp_path: Path, xception: nn.Module) -> None:
    cfg = resolve_config("paper", image_size=SIZE)
    f = tmp_path / "xception.safetensors"
    save_file({k: v.contiguous() for k, v in xception.state_dict().items()}, str(f))
    _check_backbone(build_model(cfg, f), xception)
    # Cadene-style .pth: nested, "module." prefix, last_linear head, 2-D pointwise weights
    sd = {}
    for k, v in xception.state_dict().items():
        k = k.replace("fc.", "last_linear.")
        sd["module." + k] = v[:, :, 0, 0] if k.endswith("pointwise.weight") else v
    p = tmp_path / "xception.pth"
    torch.save({"state_dict": sd}, p)
    _check_backbone(build_model(cfg, p), xception)


def test_bad_backbone_weights_are_one_clear_error(tmp_path: Path) -> None:
    cfg = resolve_config("paper", image_size=SIZE)
    f = tmp_path / "other.safetensors"
    save_file({"conv1.weight": torch.zeros(32, 3, 3, 3)}, str(f))
    with pytest.raises(ModelError, match="missing"):
        build_model(cfg, f)
    g = tmp_path / "garbage.pth"
    g.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read"):
        build_model(cfg, g)


def test_save_and_load_run(tmp_path: Path, paper: tuple[TwoBranchXception, TrainConfig]) -> None:
    model, cfg = paper
    save_run(tmp_path, model, cfg)
    loaded, cfg2 = load_run(tmp_path)
    assert cfg2 == cfg and config_hash(cfg2) == config_hash(cfg)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(loaded.lq_branch()(x)[0], model.lq_branch()(x)[0])
    meta = artifact_meta(tmp_path)
    assert meta.config_hash == config_hash(cfg) and len(meta.model_id) == 64
    assert meta.threshold == pytest.approx(9.05) and meta.input_size == SIZE
    # the weights file alone carries its config and metadata in its header
    loaded2, cfg3 = load_run(tmp_path / "model.safetensors")
    assert cfg3 == cfg
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        assert ArtifactMeta.from_json(f.metadata()["acfd.meta"]).config_hash == config_hash(cfg)
    # a hand-edited config no longer matches its hash
    d = json.loads((tmp_path / "config.json").read_text())
    d["loss"]["r_plus"] = 20.0
    (tmp_path / "config.json").write_text(json.dumps(d))
    with pytest.raises(ModelError, match="config_hash"):
        load_run(tmp_path)


def test_load_run_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="config.json"):
        load_run(tmp_path)
    (tmp_path / "config.json").write_text("[1]")
    with pytest.raises(ModelError, match="JSON object"):
        load_run(tmp_path)


def test_presets_cover_table3() -> None:
    rows = sorted(p.table_row for p in PRESETS.values() if p.table_row is not None)
    assert rows == list(range(1, 12))
    assert PRESETS["paper"].table_row == 9 and "code" in PRESETS
    hashes = set()
    for name in PRESETS:
        cfg = resolve_config(name)
        assert cfg.threshold is not None
        assert TrainConfig.from_json(cfg.to_json()) == cfg
        hashes.add(config_hash(cfg))
    assert len(hashes) == len(PRESETS)
    p = resolve_config("paper")
    assert p.resolved_threshold == pytest.approx(9.05)
    assert (p.loss.lambda_gan, p.loss.lambda_at, p.loss.lambda_pair) == (0.001, 1.0, 0.1)
    assert (p.optim.lr, p.optim.batch_size, p.data.image_size) == (1e-4, 32, 299)
    assert resolve_config("single-metric-att-c23").data.input == "hq"
    assert resolve_config("paper-both").data.pair_levels == ("c0", "c23")
    assert not resolve_config("two-branch-att").loss.attention_transfer
    assert resolve_config("two-branch-att-transfer").loss.attention_transfer


def test_config_validation_and_hash() -> None:
    a = resolve_config("paper")
    assert config_hash(a) == config_hash(resolve_config("paper"))
    assert config_hash(a) != config_hash(resolve_config("paper", lr=2e-4))
    with pytest.raises(ConfigError, match="unknown preset"):
        resolve_config("nope")
    with pytest.raises(ConfigError, match="unknown config override"):
        resolve_config("paper", learning_rate=1.0)
    with pytest.raises(ConfigError, match="batch_size"):
        resolve_config("paper", batch_size=1)
    with pytest.raises(ConfigError, match="two branches"):
        replace(a, model=replace(a.model, branches=1))
    with pytest.raises(ConfigError, match="threshold"):
        resolve_config("paper", threshold=30.0)
    with pytest.raises(ConfigError, match="unknown"):
        TrainConfig.from_dict({**a.to_dict(), "extra": 1})
    with pytest.raises(ConfigError, match="version"):
        TrainConfig.from_dict({**a.to_dict(), "version": "x"})
