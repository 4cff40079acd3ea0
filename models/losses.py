"""Loss terms of AdaCS (SPEC Eqs. 1-9), as pure functions of tensors.

Shapes: images, residuals, masks and scores are ``(B, 1, *spatial)``; fields ``(B, ndim, *spatial)``.
Every "mean" is over the batch and the whole grid Ω (not only where the background mask is 1).
The stop-gradients of the SPEC live here, not in the training loop, so that a test of these
functions is a test of the method: ``displacement_data_term`` detaches the scores and
``scoring_loss`` detaches the residuals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "background_mask",
    "squared_residual",
    "mean_squared_gradient",
    "smoothness",
    "displacement_data_term",
    "one_hot_labels",
    "soft_dice_loss",
    "ScoringLoss",
    "scoring_loss",
    "scoring_activation",
    "momentum_gamma",
    "momentum_update",
]


def background_mask(moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """``B(x) = 1`` where either image is non-zero: keeps an ultrasound sector's black outside out."""
    return ((moving != 0) | (fixed != 0)).to(moving.dtype)


def squared_residual(warped: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-voxel ``r(x) = (I_S∘φ(x) − I_T(x))²``, ``(B, 1, *spatial)``."""
    return (warped - target) ** 2


def mean_squared_gradient(x: torch.Tensor) -> torch.Tensor:
    """Mean over spatial axes of the mean squared forward difference of ``x`` (any channels).

    This is both the smoothness ``R`` of a field and the total variation ``TV`` of a score map.
    """
    ndim = x.dim() - 2
    terms = [torch.diff(x, dim=axis).pow(2).mean() for axis in range(2, 2 + ndim)]
    return torch.stack(terms).mean()


def smoothness(vel: torch.Tensor, int_downsize: int) -> torch.Tensor:
    """``R(u)``: on the (half-resolution) velocity before integration, times ``int_downsize``.

    The factor follows the authors' code: a difference of one low-resolution voxel spans
    ``int_downsize`` full-resolution voxels.
    """
    return mean_squared_gradient(vel) * int_downsize


def displacement_data_term(residual: torch.Tensor, bg: torch.Tensor,
                           score: torch.Tensor | None = None) -> torch.Tensor:
    """``mean(B · sg[S] · r)`` (Eq. 2); with ``score=None`` it is Eq. 1's ``mean(B · r)``.

    The score is detached: no gradient of the displacement loss may reach the scoring network.
    """
    weight = bg if score is None else bg * score.detach()
    return (weight * residual).mean()


def one_hot_labels(mask: torch.Tensor, labels: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An integer label map ``(B, 1, *spatial)`` as one channel per label in ``labels``: ``(B, L, *spatial)``.

    Channels rather than label values, so that a linear warp blends memberships (0.5 of the
    myocardium) instead of label numbers (1.5 is neither label 1 nor 2), and has a gradient.
    """
    return torch.cat([(mask == label) for label in labels], dim=1).to(dtype)


def soft_dice_loss(warped: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``1 − soft Dice``, per sample and label channel, averaged over the (sample, label) couples present.

    ``warped`` and ``target`` are ``(B, L, *spatial)`` memberships in [0, 1] (a warped one-hot mask and
    the fixed one-hot mask). Per couple, ``Dice = 2·Σ p·q / (Σ p + Σ q)`` over the grid. A label absent
    from both masks of a sample has no overlap to score: it is left out of the mean (it would count as
    a perfect 1 and dilute the others), and with no couple present the loss is 0 (with a graph).

    Known answers (binary masks): identical masks give 0, disjoint ones 1, and ``p = [1, 1, 0, 0]``
    against ``q = [0, 1, 1, 0]`` gives ``1 − 2·1/(2 + 2) = 0.5``.

    >>> p, q = torch.tensor([1., 1., 0., 0.]), torch.tensor([0., 1., 1., 0.])
    >>> float(soft_dice_loss(p.view(1, 1, 2, 2), q.view(1, 1, 2, 2)))
    0.5
    """
    axes = tuple(range(2, warped.dim()))
    overlap = (warped * target).sum(dim=axes)
    total = warped.sum(dim=axes) + target.sum(dim=axes)
    loss = 1.0 - 2.0 * overlap / total.clamp_min(eps)
    present = (total > eps).to(loss.dtype)
    return (loss * present).sum() / present.sum().clamp_min(1.0)


@dataclass
class ScoringLoss:
    """The three terms of Eq. 9 (already weighted: ``total = scs + alpha·reg + tv``)."""

    scs: torch.Tensor
    reg: torch.Tensor
    tv: torch.Tensor
    total: torch.Tensor


def scoring_loss(score: torch.Tensor, residual: torch.Tensor, bg: torch.Tensor,
                 m_t: float, alpha: float) -> ScoringLoss:
    """``L_se = L_scs + α·L_reg + m_t·TV(S)`` (Eqs. 3, 4, 8, 9) for one direction.

    The residual is detached: no gradient of the scoring loss may reach the displacement estimator.
    ``B`` weighs the data term and ``L_reg`` but not ``TV`` (SPEC, Notation).
    """
    scs = (bg * score * residual.detach()).mean()
    reg = (bg * (score - 1.0) ** 2).mean()
    tv = m_t * mean_squared_gradient(score)
    return ScoringLoss(scs=scs, reg=reg, tv=tv, total=scs + alpha * reg + tv)


def scoring_activation(mu: float, kappa: float) -> float:
    """Eq. 6: ``a_t = max(0, cos(π·κ·μ_t))``; the clamp keeps the TV weight non-negative."""
    return max(0.0, math.cos(math.pi * kappa * mu))


def momentum_gamma(epoch: int) -> float:
    """``γ_e = min(1 − 1/(e+1), 0.99)``, ``e`` the 0-based epoch counted from the start of training."""
    return min(1.0 - 1.0 / (epoch + 1), 0.99)


def momentum_update(m_prev: float, mu: float, epoch: int, kappa: float, beta: float) -> float:
    """Eq. 7: ``m_t = γ_e·m_{t−1} + (1 − γ_e)·β·a_t``."""
    gamma = momentum_gamma(epoch)
    return gamma * m_prev + (1.0 - gamma) * beta * scoring_activation(mu, kappa)
