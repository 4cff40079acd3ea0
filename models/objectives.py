"""Training objectives assembled from the parts in ``models.losses``.

A *direction* is one warp of bidirectional training: forward warps the source onto the target with
``disp``, backward warps the target onto the source with ``disp_inv``. Both directions weigh 0.5.
A *method* says which networks train and how the displacement data term is weighted; the trainer
reads only ``METHODS`` and has no method-specific branch beyond "does it train a scoring network".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.losses import (
    ScoringLoss,
    background_mask,
    displacement_data_term,
    scoring_loss,
    smoothness,
    squared_residual,
)
from models.networks.estimator import Deformation
from models.warp import warp

__all__ = ["Direction", "DisplacementLoss", "Method", "METHODS", "directions", "displacement_loss",
           "scoring_objective"]


@dataclass
class Direction:
    """One direction of a pair: ``warped = source∘φ`` compared with ``target`` where ``bg`` is 1."""

    target: torch.Tensor
    warped: torch.Tensor
    bg: torch.Tensor

    @property
    def residual(self) -> torch.Tensor:
        return squared_residual(self.warped, self.target)


def directions(moving: torch.Tensor, fixed: torch.Tensor, deformation: Deformation,
               bidir: bool) -> list[Direction]:
    """Forward direction (``moving -> fixed``), then backward (``fixed -> moving``) when ``bidir``."""
    bg = background_mask(moving, fixed)
    out = [Direction(target=fixed, warped=warp(moving, deformation.disp), bg=bg)]
    if bidir:
        out.append(Direction(target=moving, warped=warp(fixed, deformation.disp_inv), bg=bg))
    return out


@dataclass
class DisplacementLoss:
    total: torch.Tensor
    data: torch.Tensor
    smooth: torch.Tensor


def displacement_loss(dirs: list[Direction], deformation: Deformation, lam: float, int_downsize: int,
                      scores: list[torch.Tensor] | None = None) -> DisplacementLoss:
    """Eq. 2 (Eq. 1 when ``scores`` is None), the data term averaged over directions."""
    weights = scores if scores is not None else [None] * len(dirs)
    terms = [displacement_data_term(d.residual, d.bg, s) for d, s in zip(dirs, weights)]
    data = torch.stack(terms).mean()
    smooth = smoothness(deformation.vel, int_downsize)
    return DisplacementLoss(total=data + lam * smooth, data=data, smooth=smooth)


def scoring_objective(dirs: list[Direction], scores: list[torch.Tensor], m_t: float,
                      alpha: float) -> ScoringLoss:
    """Eq. 9 averaged over directions; each direction's scores come from its own target."""
    parts = [scoring_loss(s, d.residual, d.bg, m_t, alpha) for d, s in zip(dirs, scores)]
    mean = lambda name: torch.stack([getattr(p, name) for p in parts]).mean()  # noqa: E731
    return ScoringLoss(scs=mean("scs"), reg=mean("reg"), tv=mean("tv"), total=mean("total"))


@dataclass(frozen=True)
class Method:
    """A training method: its name and whether it trains the AdaCS scoring network."""

    name: str
    uses_scoring: bool
    description: str


METHODS: dict[str, Method] = {
    "none": Method("none", False, "vanilla unsupervised registration (Eq. 1)"),
    "adacs": Method("adacs", True, "adaptive correspondence scoring (Eqs. 2-9, Algorithm 1)"),
}
