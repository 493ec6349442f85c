"""The paper's losses against values computed by hand on small tensors."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from acfd.train.config import LossConfig, resolve_config
from acfd.train.losses import (
    at_loss,
    attention_bce,
    critic_loss,
    dis_loss,
    gan_loss,
    gradient_penalty,
    hinge_terms,
    mask_to_map,
    model_loss,
    transfer_terms,
)
from acfd.train.model import BranchOutput
from torch import nn

C_H = torch.tensor([[3.0, 4.0], [0.0, 20.0]])  # norms 5 (real) and 20 (fake)
C_L = torch.tensor([[0.0, 0.0], [0.0, 1.0]])  # norms 0 (real) and 1 (fake)
LABEL = torch.tensor([0, 1])


def test_hinge_terms_by_hand() -> None:
    h = hinge_terms(torch.tensor([[3.0, 4.0], [0.6, 0.8], [0.0, 20.0], [0.0, 0.05]]), torch.tensor([0, 1, 1, 0]), 0.1, 18.0)
    # real ||C||=5: 5-0.1; fake ||C||=1: 18-1; fake beyond r+: 0; real inside r-: 0
    assert h.tolist() == pytest.approx([4.9, 17.0, 0.0, 0.0])


def test_dis_loss_mean_sum_and_code_reductions() -> None:
    # hinge_h = [4.9, 0], hinge_l = [0, 17], pair = [5, 19]
    total, parts = dis_loss(C_H, C_L, LABEL, LossConfig())
    assert parts["metric_hq"].item() == pytest.approx(2.45)
    assert parts["metric_lq"].item() == pytest.approx(8.5)
    assert parts["pair"].item() == pytest.approx(12.0)
    assert total.item() == pytest.approx(2.45 + 8.5 + 0.1 * 12.0)
    total, _ = dis_loss(C_H, C_L, LABEL, LossConfig(reduction="sum"))
    assert total.item() == pytest.approx(4.9 + 17.0 + 0.1 * 24.0)
    # authors' code: hinge sums / batch^2, pair term a batch mean with weight 0.2
    total, _ = dis_loss(C_H, C_L, LABEL, LossConfig(reduction="code", lambda_pair=0.2))
    assert total.item() == pytest.approx(4.9 / 4 + 17.0 / 4 + 0.2 * 12.0)


def test_dis_loss_single_branch_has_no_pair_term() -> None:
    total, parts = dis_loss(None, C_L, LABEL, LossConfig())
    assert set(parts) == {"metric_lq"}
    assert total.item() == pytest.approx(8.5)


def test_mask_to_map_area_then_threshold() -> None:
    m = torch.zeros(1, 4, 4)
    m[0, :2, :2] = 1  # top-left cell fully fake
    m[0, 0, 2:4] = 1  # top-right cell half fake (0.5 is not > 0.5)
    m[0, 2, 0] = m[0, 3, 0] = m[0, 3, 1] = 1  # bottom-left 3/4 fake
    assert mask_to_map(m, 2).view(-1).tolist() == [1.0, 0.0, 1.0, 0.0]
    assert mask_to_map(m, 2, binary=False).view(-1).tolist() == [1.0, 0.5, 0.75, 0.0]


def test_attention_bce_by_hand() -> None:
    m = torch.tensor([[[[0.5, 0.9], [0.1, 0.2]]]])
    t = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    want = -(math.log(0.5) + math.log(0.1) + math.log(0.9) + math.log(0.8)) / 4
    assert attention_bce(m, t).item() == pytest.approx(want, rel=1e-6)


def test_transfer_term_by_hand() -> None:
    a = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    b = torch.tensor([[[[2.0, 2.0], [0.0, 0.0]]]])  # scale does not matter: maps are normalised
    assert transfer_terms(a, b).item() == pytest.approx(math.sqrt(2 - math.sqrt(2)), rel=1e-6)
    assert transfer_terms(a, 3 * a).item() == pytest.approx(0.0, abs=1e-6)


def test_at_loss_sums_both_maps_and_transfer_and_skips_invalid_masks() -> None:
    mask = torch.zeros(2, 4, 4)
    mask[0, :2, :2] = 1
    m_h = torch.full((2, 1, 2, 2), 0.5)
    m_l = torch.tensor([[[[0.9, 0.1], [0.1, 0.1]]], [[[0.9, 0.9], [0.9, 0.9]]]])
    cfg = LossConfig()
    target = mask_to_map(mask, 2)
    bce_l = attention_bce(m_l, target)
    total, parts = at_loss(m_h, m_l, mask, cfg)
    assert parts["at_hq"].item() == pytest.approx(math.log(2), rel=1e-6)  # BCE of 0.5 is ln 2 anywhere
    assert parts["at_lq"].item() == pytest.approx(bce_l.mean().item())
    assert total.item() == pytest.approx(math.log(2) + bce_l.mean().item() + transfer_terms(m_h, m_l).mean().item())
    # second sample's mask is not ground truth (missing mask video): only the first counts
    _, parts = at_loss(m_h, m_l, mask, cfg, valid=torch.tensor([True, False]))
    assert parts["at_lq"].item() == pytest.approx(bce_l[0].item())
    _, parts = at_loss(m_h, m_l, mask, replace(cfg, attention_transfer=False))
    assert "transfer" not in parts


class LinearCritic(nn.Module):
    """D(x) = <w, mean over pixels of x>: its input gradient is w / (h*w) everywhere."""

    def __init__(self, w: list[float]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.mean(dim=(2, 3)) * self.w).sum(dim=1)


def test_wgan_gp_losses_by_hand() -> None:
    d = LinearCritic([1.8, 2.4])  # ||w|| = 3 on a 1x1 map: gradient norm 3 -> penalty (3-1)^2 = 4
    v_h = torch.ones(2, 1, 1, 1)
    v_l = torch.zeros(2, 1, 1, 1)
    # real order concat(V_H, V_L) = (1, 0): D = 1.8; fake order (0, 1): D = 2.4
    loss, parts = critic_loss(d, v_h, v_l, gp_weight=10.0)
    assert parts["wdist"].item() == pytest.approx(1.8 - 2.4)
    assert parts["gp"].item() == pytest.approx(4.0, rel=1e-5)
    assert loss.item() == pytest.approx(2.4 - 1.8 + 10 * 4.0, rel=1e-5)
    loss, parts = critic_loss(d, v_h, v_l, gp_weight=0.0)
    assert "gp" not in parts and loss.item() == pytest.approx(0.6)
    assert gan_loss(d, v_h, v_l).item() == pytest.approx(1.8 - 2.4)
    # the penalty really is applied: it sends gradient into the critic's weights
    d.zero_grad()
    real, fake = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1), torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)
    gradient_penalty(d, real, fake).backward()
    assert d.w.grad is not None and d.w.grad.abs().sum() > 0


def test_gan_loss_moves_heads_not_detached_features() -> None:
    d = LinearCritic([1.0, -1.0])
    v_h = torch.ones(1, 1, 2, 2, requires_grad=True)
    v_l = torch.zeros(1, 1, 2, 2, requires_grad=True)
    gan_loss(d, v_h, v_l).backward()
    assert v_h.grad is not None and v_l.grad is not None
    assert v_h.grad.abs().sum() > 0 and v_l.grad.abs().sum() > 0
    v_h.grad = None
    critic_loss(d, v_h, v_l, gp_weight=10.0)[0].backward()
    assert v_h.grad is None  # critic updates never reach the heads


def _out(c: torch.Tensor, m: torch.Tensor | None, v: torch.Tensor) -> BranchOutput:
    return BranchOutput(v=v, m=m, c=c)


def test_model_loss_is_eq1() -> None:
    cfg = resolve_config("paper")
    mask = torch.zeros(2, 4, 4)
    mask[1, :2, :2] = 1
    m_h = torch.full((2, 1, 2, 2), 0.3)
    m_l = torch.full((2, 1, 2, 2), 0.6)
    v_h, v_l = torch.ones(2, 1, 1, 1), torch.zeros(2, 1, 1, 1)
    d = LinearCritic([1.8, 2.4])
    t = model_loss(_out(C_H, m_h, v_h), _out(C_L, m_l, v_l), LABEL, mask, cfg, d)
    dis = 2.45 + 8.5 + 0.1 * 12.0
    at = at_loss(m_h, m_l, mask, cfg.loss)[0].item()
    assert t.total.item() == pytest.approx(dis + 1.0 * at + 0.001 * (1.8 - 2.4), rel=1e-6)
    assert set(t.floats()) >= {"loss", "metric_hq", "metric_lq", "pair", "at_hq", "at_lq", "transfer", "gan"}


def test_model_loss_cross_entropy_head() -> None:
    cfg = resolve_config("single-ce")
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]])  # P(fake) = 1/2 and 3/4
    t = model_loss(None, _out(logits, None, torch.zeros(2, 1, 1, 1)), LABEL, torch.zeros(2, 4, 4), cfg)
    assert t.total.item() == pytest.approx((math.log(2) - math.log(0.75)) / 2, rel=1e-6)
