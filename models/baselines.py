"""Loss terms of the baselines (SPEC "Baselines"): NLL, β-NLL, AdaReg and AdaFrame, as pure functions.

Shapes as in ``models.losses``: residuals ``r``, masks ``B``, log-variances ``s`` and weights ``w`` are
``(B, 1, *spatial)``; velocities ``(B, ndim, *spatial_low)``. Every "mean" without a stated scope is
over the batch and the whole grid Ω. Each function holds its own stop-gradients (``sg[·]``), so a
test of it is a test of the method; the trainer adds ``λ·R(u)`` (or AdaReg's weighted smoothness).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "nll_data_term",
    "beta_nll_data_term",
    "adareg_weight",
    "weighted_smoothness",
    "adareg_smoothness",
    "adaframe_weight",
    "adaframe_data_term",
]

# Guards a division by a statistic that is exactly 0 (a perfect fit): small enough never to matter otherwise.
_TINY = 1e-12


def _check_same_shape(name: str, tensor: torch.Tensor, residual: torch.Tensor) -> None:
    if tensor.shape != residual.shape:
        raise ValueError(f"{name} must have the residual's shape {tuple(residual.shape)}, got {tuple(tensor.shape)}")


def _gaussian_nll(residual: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """Per-voxel ``r / (2·e^s) + s / 2``: the Gaussian negative log-likelihood up to a constant."""
    return 0.5 * residual * torch.exp(-log_var) + 0.5 * log_var


def nll_data_term(residual: torch.Tensor, bg: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """NLL (Kendall & Gal 2017): ``mean(B · (r / (2·e^s) + s/2))``, ``s = log σ²``.

    No stop-gradient: ``r`` trains the displacement estimator and ``s`` the variance network, jointly.
    """
    _check_same_shape("log_var", log_var, residual)
    return (bg * _gaussian_nll(residual, log_var)).mean()


def beta_nll_data_term(residual: torch.Tensor, bg: torch.Tensor, log_var: torch.Tensor,
                       beta: float = 0.5) -> torch.Tensor:
    """β-NLL (Seitzer et al. 2022): ``mean(B · sg[e^{β·s}] · (r / (2·e^s) + s/2))``, default ``β = 0.5``.

    The factor ``e^{β·s} = σ^{2β}`` is detached: it re-weights each voxel's NLL gradient without
    itself being a target of the optimisation (``β = 0`` is the NLL, ``β = 1`` gives ``r``'s MSE gradient).
    """
    _check_same_shape("log_var", log_var, residual)
    weight = torch.exp(beta * log_var.detach())
    return (bg * weight * _gaussian_nll(residual, log_var)).mean()


def adareg_weight(residual: torch.Tensor, bg: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """AdaReg (Wong & Soatto 2019): ``w(x) = sg[1 − exp(−r(x) / (σ_r · R̄))]``, ``R̄ = mean(B · r)``.

    ``R̄`` is the SPEC's mean: over the batch and all of Ω (one global residual per batch and
    direction). ``w ∈ [0, 1)`` is near 1 where the local residual is large against the global one:
    the smoothness takes over where the data term is unreliable. Returned detached.
    """
    residual = residual.detach()
    global_residual = (bg * residual).mean().clamp_min(_TINY)
    return 1.0 - torch.exp(-residual / (sigma * global_residual))


def weighted_smoothness(vel: torch.Tensor, weight: torch.Tensor, int_downsize: int) -> torch.Tensor:
    """``mean(w · |∇u|²)`` on the velocity grid, normalised like ``R(u)``, times ``int_downsize``.

    ``weight`` ``(B, 1, *spatial)`` lives on the full-resolution fixed grid; it is average-pooled to
    the velocity's grid ``vel.shape[2:]`` (adaptive pooling, so odd sizes work; the pooled cells are
    centred where the velocity's corner-aligned samples are, to within half a low-resolution voxel).
    A forward difference between two velocity voxels takes the mean of their two weights. Like
    ``models.losses.smoothness``, it averages over axes and field components, so ``w ≡ 1`` gives
    exactly ``R(u)`` and ``λ`` keeps its meaning.
    """
    ndim = vel.dim() - 2
    pool = F.adaptive_avg_pool2d if ndim == 2 else F.adaptive_avg_pool3d
    w = pool(weight, tuple(vel.shape[2:]))
    terms = []
    for axis in range(2, 2 + ndim):
        n = vel.shape[axis]
        w_edge = 0.5 * (w.narrow(axis, 0, n - 1) + w.narrow(axis, 1, n - 1))
        terms.append((w_edge * torch.diff(vel, dim=axis).pow(2)).mean())
    return torch.stack(terms).mean() * int_downsize


def adareg_smoothness(vel: torch.Tensor, residual: torch.Tensor, bg: torch.Tensor, int_downsize: int,
                      sigma: float = 1.0) -> torch.Tensor:
    """AdaReg's regulariser ``mean(w · |∇u|²)`` (see :func:`weighted_smoothness` for the grids).

    The full loss is ``L = mean(B · r) + λ · mean(w · |∇u|²)``; ``w`` carries no gradient, so
    the residual reaches this term only as a constant weight.
    """
    return weighted_smoothness(vel, adareg_weight(residual, bg, sigma), int_downsize)


def adaframe_weight(residual: torch.Tensor, bg: torch.Tensor, a: float = 2.0, b: float = 1.5) -> torch.Tensor:
    """AdaFrame (Wong et al. 2021): ``w(x) = sg[1 − sigmoid(a · (r̃(x) − b))]``, ``r̃ = (r − mean r) / std r``.

    The mean and (population) standard deviation are taken per image over the voxels where
    ``B = 1``, so the black outside of an ultrasound sector does not pull the statistics down and
    one badly aligned pair does not re-weight its batch mates. ``w`` falls below 1/2 for residuals
    more than ``b`` standard deviations above the image's mean. Returned detached.
    """
    residual = residual.detach()
    axes = tuple(range(1, residual.dim()))
    count = bg.sum(axes, keepdim=True).clamp_min(1.0)
    mean = (bg * residual).sum(axes, keepdim=True) / count
    std = ((bg * (residual - mean) ** 2).sum(axes, keepdim=True) / count).sqrt()
    normalised = (residual - mean) / std.clamp_min(_TINY)
    return 1.0 - torch.sigmoid(a * (normalised - b))


def adaframe_data_term(residual: torch.Tensor, bg: torch.Tensor, a: float = 2.0, b: float = 1.5) -> torch.Tensor:
    """AdaFrame's data term ``mean(B · w · r)`` with ``w`` from :func:`adaframe_weight` (no gradient).

    The full loss is ``L = mean(B · w · r) + λ · R(u)``.
    """
    return (bg * adaframe_weight(residual, bg, a, b) * residual).mean()
