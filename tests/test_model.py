"""Two-branch XceptionNet: structure from timm, the standalone LQ branch, weights, runs, presets."""

from __future__ import annotations

import copy
import json
import math
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


# -- values, not shapes ----------------------------------------------------------------------------
def test_attention_conv_by_hand() -> None:
    """A 3x3 conv (zero padding) + sigmoid on a constant map: every value is computable by hand."""
    from acfd.train.model import AttentionLayer

    layer = AttentionLayer(4, "conv", 3).eval()
    with torch.no_grad():
        layer.conv.weight.fill_(0.1)
        layer.conv.bias.fill_(-0.5)
        m = layer(torch.ones(1, 4, 5, 5))
    assert m.shape == (1, 1, 5, 5)
    # 4 channels x (3x3 taps inside the map) x 0.1 - 0.5: corners see 2x2 taps, edges 2x3, inside 3x3
    corner, edge, inside = (1 / (1 + math.exp(-(4 * k * 0.1 - 0.5))) for k in (4, 6, 9))
    expect = torch.full((5, 5), inside)
    expect[0, :] = expect[-1, :] = expect[:, 0] = expect[:, -1] = edge
    expect[0, 0] = expect[0, -1] = expect[-1, 0] = expect[-1, -1] = corner
    torch.testing.assert_close(m[0, 0], expect, rtol=0, atol=1e-6)
    assert (corner, edge, inside) == pytest.approx((0.7503, 0.8699, 0.9569), abs=1e-4)
    # the authors' separable form: depthwise 3x3 (weights 1) then pointwise to 1 channel (weights 0.25)
    sep = AttentionLayer(4, "separable", 3).eval()
    with torch.no_grad():
        sep.conv.conv1.weight.fill_(1.0)
        sep.conv.pointwise.weight.fill_(0.25)
        ms = sep(torch.ones(1, 4, 5, 5))
    # each channel: k ones; pointwise: 4 x 0.25 x k = k, no bias
    torch.testing.assert_close(ms[0, 0, 2, 2], torch.tensor(1 / (1 + math.exp(-9))), rtol=0, atol=1e-6)
    torch.testing.assert_close(ms[0, 0, 0, 0], torch.tensor(1 / (1 + math.exp(-4))), rtol=0, atol=1e-6)


def test_model_attention_is_the_sigmoid_of_its_conv(paper: tuple[TwoBranchXception, TrainConfig]) -> None:
    model, _ = paper
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out_h, out_l = model(x, x)
        pre_l = torch.nn.functional.conv2d(
            out_l.v, model.lq_attention.conv.weight, model.lq_attention.conv.bias, padding=1
        )
        pre_h = model.hq_attention.conv(out_h.v)
    # M = sigmoid(conv(V)), each branch through its own layer
    torch.testing.assert_close(out_l.m, torch.sigmoid(pre_l), rtol=0, atol=1e-6)
    torch.testing.assert_close(out_h.m, torch.sigmoid(pre_h), rtol=0, atol=1e-6)
    # the logits are not all saturated, so the comparison above is not 0 == 0 or 1 == 1
    assert float(pre_l.abs().min()) < 5.0 and 0.0 < float(out_l.m.min()) and float(out_l.m.max()) < 1.0


def test_eval_forward_is_deterministic_and_per_crop(paper: tuple[TwoBranchXception, TrainConfig]) -> None:
    """Eval mode: the same crop gives the same embedding every time and whatever else is in its batch
    (batch norm uses running statistics); train mode does not (batch statistics)."""
    model, _ = paper
    branch = model.lq_branch()
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        c1, m1 = branch(x)
        c2, m2 = branch(x.clone())
        c_one, m_one = branch(x[1:2])
    assert torch.equal(c1, c2) and torch.equal(m1, m2)
    torch.testing.assert_close(c_one[0], c1[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(m_one[0], m1[1], rtol=1e-5, atol=1e-6)
    trained = copy.deepcopy(model).train()  # a copy: train mode updates running statistics
    with torch.no_grad():
        c_train, _ = trained.lq_branch()(x)
    assert (c_train - c1).abs().max().item() > 1e-3


def test_lq_only_forward_is_the_lq_part_of_the_two_branch_forward(
    paper: tuple[TwoBranchXception, TrainConfig],
) -> None:
    model, _ = paper
    g = torch.Generator().manual_seed(8)
    x, other = torch.randn(2, 3, SIZE, SIZE, generator=g), torch.randn(2, 3, SIZE, SIZE, generator=g)
    with torch.no_grad():
        none_h, only_l = model(None, x)
        out_h, out_l = model(other, x)
        c, m = model.lq_branch()(x)
    assert none_h is None and out_h is not None
    # the HQ input has no influence on the LQ outputs; LQBranch is that path
    for a, b in ((only_l.v, out_l.v), (only_l.m, out_l.m), (only_l.c, out_l.c), (only_l.c, c), (only_l.m, m)):
        assert torch.equal(a, b)
    assert not torch.allclose(out_h.c, out_l.c)  # other input, other embedding
    # the HQ path: HQ head, HQ attention, then the same tail
    with torch.no_grad():
        assert torch.equal(out_h.c, model.tail(out_h.v * out_h.m))


def test_tail_is_shared_and_heads_are_distinct_parameters(paper: tuple[TwoBranchXception, TrainConfig]) -> None:
    model, _ = paper
    assert model.hq_head is not None and model.hq_attention is not None
    ids = {name: {id(p) for p in mod.parameters()} for name, mod in (
        ("lq_head", model.lq_head), ("hq_head", model.hq_head), ("lq_att", model.lq_attention),
        ("hq_att", model.hq_attention), ("tail", model.tail),
    )}  # fmt: skip
    assert not ids["lq_head"] & ids["hq_head"] and not ids["lq_att"] & ids["hq_att"]
    ptrs = lambda mod: {p.data_ptr() for p in mod.parameters()}  # noqa: E731
    assert not ptrs(model.lq_head) & ptrs(model.hq_head)  # no storage shared either
    # the tail is one set of tensors: counted once among the model's parameters
    n = sum(1 for _ in model.parameters())
    assert n == sum(len(v) for v in ids.values()) + len(list(model.critic.parameters()))
    # a loss on one branch reaches that branch's head and the (shared) tail, never the other head
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(9))
    try:
        for side, own, other in (("hq", model.hq_head, model.lq_head), ("lq", model.lq_head, model.hq_head)):
            model.zero_grad(set_to_none=True)
            out = model.hq(x) if side == "hq" else model.lq(x)
            out.c.norm(dim=1).sum().backward()
            assert all(p.grad is None for p in other.parameters()), side
            assert float(own.conv1.weight.grad.abs().sum()) > 0, side
            assert float(model.tail.conv4.pointwise.weight.grad.abs().sum()) > 0, side
    finally:
        model.zero_grad(set_to_none=True)
