"""The paper's objective, L = L_Dis + lambda_1 L_Gan + lambda_2 L_AT (Eq. 1), and the WGAN-GP critic loss.

Decisions (docs/training.md):

* Batch reduction. The paper writes sums over the batch; we average the per-sample terms by default
  (``LossConfig.reduction = "mean"``) so that the learning rate means the same at any batch size.
  ``"sum"`` reproduces the sums literally; ``"code"`` the authors' code (hinge sums / batch^2, pair
  and attention terms averaged).
* Attention target. The mask (already binary, gray/255 > 0.1, done by the dataset) is brought to the
  map size by area averaging (adaptive average pooling): a cell's value is the fraction of fake pixels
  in it. ``map_target = "binary"`` (default) then thresholds at 0.5 - the very target PBCA scores
  against; ``"soft"`` keeps the fraction as a soft BCE target.
* Eq. (5)'s "log(1 - log M)" is a typo for the standard binary cross entropy; each map's BCE is the
  mean over its N pixels (the 1/N of Eq. 5). The transfer term is || M_H/||M_H|| - M_L/||M_L|| ||_2
  per sample, with the norms clamped at 1e-12 (an all-zero map has no direction).
* Losses are computed in float32 outside autocast (BCE is autocast-unsafe; norms of 2048-d
  embeddings near r+ = 18 lose precision in bf16).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import LossConfig, TrainConfig
from .model import BranchOutput

EPS = 1e-12


# -- building blocks -----------------------------------------------------------------------------
def hinge_terms(c: Tensor, label: Tensor, r_minus: float, r_plus: float) -> Tensor:
    """Per-sample metric hinge of Eq. (6): max(0, ||C|| - r-) for reals, max(0, r+ - ||C||) for fakes."""
    d = c.float().norm(dim=1)
    fake = label.bool()
    return torch.where(fake, F.relu(r_plus - d), F.relu(d - r_minus))


def reduce_batch(x: Tensor, how: str) -> Tensor:
    """Reduce a per-sample term [N] over the batch: sum for ``"sum"``, else ("mean", "code") mean."""
    return x.sum() if how == "sum" else x.mean()


def pair_terms(c_h: Tensor, c_l: Tensor) -> Tensor:
    """Per-sample ||C_h - C_l||_2 (the lambda_3 term of Eq. 6)."""
    return (c_h.float() - c_l.float()).norm(dim=1)


def dis_loss(
    c_h: Tensor | None, c_l: Tensor, label: Tensor, cfg: LossConfig
) -> tuple[Tensor, dict[str, Tensor]]:
    """L_Dis of Eq. (6); single-branch models pass ``c_h=None`` (hinge on C_l only, no pair term)."""
    n = c_l.shape[0]
    parts: dict[str, Tensor] = {}  # unweighted terms; the returned total applies lambda_3
    branches = {"lq": c_l} if c_h is None else {"hq": c_h, "lq": c_l}
    for name, c in branches.items():
        h = hinge_terms(c, label, cfg.r_minus, cfg.r_plus)
        # The authors' code divides each hinge sum by the batch size twice.
        parts[f"metric_{name}"] = h.sum() / (n * n) if cfg.reduction == "code" else reduce_batch(h, cfg.reduction)
    total = sum(parts.values())
    if c_h is not None:
        parts["pair"] = reduce_batch(pair_terms(c_h, c_l), cfg.reduction)
        total = total + cfg.lambda_pair * parts["pair"]
    return total, parts  # type: ignore[return-value]


def mask_to_map(mask: Tensor, size: int | tuple[int, int], binary: bool = True) -> Tensor:
    """Ground-truth mask [N,S,S] (or [N,1,S,S]) in {0,1} -> [N,1,h,w] at the attention-map size.

    Area average (adaptive average pooling), then > 0.5 when ``binary``. Used both for the L_AT
    target and for PBCA, so training and evaluation agree on what a "fake cell" is.
    """
    m = mask.float()
    if m.dim() == 3:
        m = m.unsqueeze(1)
    m = F.adaptive_avg_pool2d(m, size)
    return (m > 0.5).float() if binary else m


def attention_bce(m: Tensor, target: Tensor) -> Tensor:
    """Per-sample pixel BCE of an attention map vs its target, averaged over the map's pixels [N]."""
    m = m.float().clamp(EPS, 1 - 1e-7)  # keep log() finite where the sigmoid saturates
    bce = F.binary_cross_entropy(m, target.float(), reduction="none")
    return bce.flatten(1).mean(dim=1)


def transfer_terms(m_h: Tensor, m_l: Tensor) -> Tensor:
    """Per-sample attention transfer || M_H/||M_H|| - M_L/||M_L|| ||_2 (Eq. 5, third line) [N]."""
    a = m_h.float().flatten(1)
    b = m_l.float().flatten(1)
    a = a / a.norm(dim=1, keepdim=True).clamp_min(EPS)
    b = b / b.norm(dim=1, keepdim=True).clamp_min(EPS)
    return (a - b).norm(dim=1)


def _masked(x: Tensor, valid: Tensor | None, how: str) -> Tensor:
    """Reduce per-sample terms over the samples whose ground truth is valid."""
    if valid is None:
        return reduce_batch(x, how)
    w = valid.to(x.dtype)
    total = (x * w).sum()
    return total if how == "sum" else total / w.sum().clamp_min(1.0)


def at_loss(
    m_h: Tensor | None, m_l: Tensor, mask: Tensor, cfg: LossConfig, valid: Tensor | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """L_AT of Eq. (5): BCE of each map vs the downsampled mask (+ the transfer term when enabled).

    ``valid`` (bool [N]) marks samples whose mask is ground truth; the dataset flags fakes whose mask
    video was missing or short, and their maps get no BCE (the transfer term needs no mask).
    """
    target = mask_to_map(mask, tuple(m_l.shape[-2:]), binary=cfg.map_target == "binary")
    how = cfg.reduction
    parts = {"at_lq": _masked(attention_bce(m_l, target), valid, how)}
    if m_h is not None:
        parts["at_hq"] = _masked(attention_bce(m_h, target), valid, how)
        if cfg.attention_transfer:
            parts["transfer"] = reduce_batch(transfer_terms(m_h, m_l), how)
    return sum(parts.values()), parts  # type: ignore[return-value]


# -- adversarial alignment (WGAN-GP) --------------------------------------------------------------
def ordered_pairs(v_h: Tensor, v_l: Tensor) -> tuple[Tensor, Tensor]:
    """(concat(V_H, V_L), concat(V_L, V_H)) along channels: the critic's "real" and "fake" orders."""
    v_h, v_l = v_h.float(), v_l.float()
    return torch.cat([v_h, v_l], dim=1), torch.cat([v_l, v_h], dim=1)


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """WGAN-GP penalty E[(||grad D(x_hat)||_2 - 1)^2] on random interpolates x_hat of the two orders."""
    alpha = torch.rand((real.shape[0], 1, 1, 1), device=real.device, dtype=real.dtype, generator=generator)
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    d = critic(x_hat)
    (grad,) = torch.autograd.grad(d.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def critic_loss(
    critic: nn.Module, v_h: Tensor, v_l: Tensor, gp_weight: float, generator: torch.Generator | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """Critic objective (minimised): E[D(fake order)] - E[D(real order)] + gp_weight * GP.

    The features are detached: critic updates never move the heads.
    """
    real, fake = ordered_pairs(v_h.detach(), v_l.detach())
    wdist = critic(real).mean() - critic(fake).mean()
    parts = {"wdist": wdist}
    loss = -wdist
    if gp_weight > 0:
        gp = gradient_penalty(critic, real, fake, generator)
        parts["gp"] = gp
        loss = loss + gp_weight * gp
    return loss, parts


def gan_loss(critic: nn.Module, v_h: Tensor, v_l: Tensor) -> Tensor:
    """L_Gan for the heads (Eq. 2, min over the heads): the critic's estimate E[D(real)] - E[D(fake)].

    The heads minimise what the critic maximises, so that D cannot tell the two orders apart.
    Gradients flow into the heads only; callers freeze the critic's parameters for this term.
    """
    real, fake = ordered_pairs(v_h, v_l)
    return critic(real).mean() - critic(fake).mean()


# -- total ------------------------------------------------------------------------------------------
@dataclass
class LossTerms:
    """The total loss to back-propagate and its parts (for logging, as floats via :meth:`floats`)."""

    total: Tensor
    parts: dict[str, Tensor] = field(default_factory=dict)

    def floats(self) -> dict[str, float]:
        out = {"loss": float(self.total.detach())}
        out.update({k: float(v.detach()) for k, v in self.parts.items()})
        return out


def model_loss(
    out_h: BranchOutput | None, out_l: BranchOutput, label: Tensor, mask: Tensor, cfg: TrainConfig,
    critic: nn.Module | None = None, mask_valid: Tensor | None = None,
) -> LossTerms:
    """L for one batch from the branch outputs; ``out_h`` is None for single-branch models.

    For the cross-entropy head L_Dis is replaced by the 2-class cross entropy on the logits. The GAN
    term is added when a critic is given. ``parts`` holds the unweighted terms.
    """
    lc = cfg.loss
    parts: dict[str, Tensor] = {}
    if cfg.model.head == "ce":
        parts["ce"] = F.cross_entropy(out_l.c.float(), label.long())
        total = parts["ce"]
    else:
        total, p = dis_loss(out_h.c if out_h is not None else None, out_l.c, label, lc)
        parts.update(p)
    if out_l.m is not None and lc.lambda_at > 0:
        l_at, p = at_loss(out_h.m if out_h is not None else None, out_l.m, mask, lc, mask_valid)
        parts.update(p)
        total = total + lc.lambda_at * l_at
    if critic is not None and out_h is not None and lc.lambda_gan > 0:
        parts["gan"] = gan_loss(critic, out_h.v, out_l.v)
        total = total + lc.lambda_gan * parts["gan"]
    return LossTerms(total=total, parts=parts)
