"""Training objectives assembled from parts: a data term, its weighting, a regulariser, scoring terms.

A *direction* is one warp of bidirectional training: forward warps the source onto the target with
``disp``, backward warps the target onto the source with ``disp_inv``. Every term is computed per
direction and the directions are averaged (0.5 each).

A *method* (``METHODS``) is a choice of parts, and the trainer calls the parts without knowing
their names:
- ``data_term(direction, map, constants)``: the displacement estimator's data term for one
  direction, reading the per-voxel ``map`` of a second network where the method has one (AdaCS:
  the detached score ``S``; NLL: the log-variance ``s``) and ``None`` otherwise;
- ``regulariser(vel, directions, int_downsize, constants)``: the smoothness, uniform ``R(u)`` or
  residual-weighted (AdaReg), multiplied by ``λ``;
- ``scoring``: which terms of Eq. 9 train the AdaCS scoring network (None: no scoring network);
- ``auxiliary``: a network trained jointly with ``f_θ`` whose maps the data term reads (NLL's
  variance U-Net; None: none).
A new baseline or an extra term is one more ``Method`` entry, not a branch in the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn

from models.baselines import adaframe_data_term, adareg_smoothness, beta_nll_data_term, nll_data_term
from models.losses import (
    ScoringLoss,
    background_mask,
    displacement_data_term,
    scoring_loss,
    smoothness,
    squared_residual,
)
from models.networks.estimator import Deformation
from models.networks.variance import VarianceNet
from models.warp import warp

__all__ = ["Direction", "directions", "BaselineConstants", "DisplacementLoss", "displacement_loss",
           "ScoringTerms", "EQ9", "EQ3", "EQ3_4", "scoring_objective", "score_maps", "log_var_maps",
           "weighted_data", "nll_data", "beta_nll_data", "adaframe_data", "uniform_smoothness",
           "adareg_regulariser", "Auxiliary", "VARIANCE", "Method", "METHODS"]


@dataclass
class Direction:
    """One direction of a pair: ``warped = source∘φ`` compared with ``target`` where ``bg`` is 1."""

    target: torch.Tensor
    warped: torch.Tensor
    bg: torch.Tensor

    @cached_property
    def residual(self) -> torch.Tensor:
        """``r = (warped − target)²``, computed once however many terms read it."""
        return squared_residual(self.warped, self.target)


def directions(moving: torch.Tensor, fixed: torch.Tensor, deformation: Deformation,
               bidir: bool) -> list[Direction]:
    """Forward direction (``moving -> fixed``), then backward (``fixed -> moving``) when ``bidir``."""
    bg = background_mask(moving, fixed)
    out = [Direction(target=fixed, warped=warp(moving, deformation.disp), bg=bg)]
    if bidir:
        out.append(Direction(target=moving, warped=warp(fixed, deformation.disp_inv), bg=bg))
    return out


@dataclass(frozen=True)
class BaselineConstants:
    """The baselines' constants (SPEC "Baselines"; the papers print none of them, these are ours).

    ``TrainConfig`` carries them as flat fields with these defaults.
    """

    beta_nll: float = 0.5  # β-NLL's exponent: 0 is the NLL, 1 the MSE's gradient
    adareg_sigma: float = 1.0  # AdaReg's σ_r: the local residual's scale in units of the global one
    adaframe_a: float = 2.0  # AdaFrame's sigmoid slope, per standard deviation of the residual
    adaframe_b: float = 1.5  # AdaFrame's threshold, in standard deviations above the image's mean residual


_DEFAULT_CONSTANTS = BaselineConstants()


# --- data terms: (direction, map or None, constants) -> scalar ---------------------------------------------

DataTerm = Callable[[Direction, torch.Tensor | None, BaselineConstants], torch.Tensor]


def weighted_data(d: Direction, score: torch.Tensor | None, c: BaselineConstants) -> torch.Tensor:
    """Eq. 2's ``mean(B · sg[S] · r)``; Eq. 1's ``mean(B · r)`` when there is no score."""
    return displacement_data_term(d.residual, d.bg, score)


def nll_data(d: Direction, log_var: torch.Tensor | None, c: BaselineConstants) -> torch.Tensor:
    """``mean(B · (r/(2e^s) + s/2))`` with ``s`` from the variance network."""
    return nll_data_term(d.residual, d.bg, log_var)


def beta_nll_data(d: Direction, log_var: torch.Tensor | None, c: BaselineConstants) -> torch.Tensor:
    """``mean(B · sg[e^{β·s}] · (r/(2e^s) + s/2))`` with ``s`` from the variance network."""
    return beta_nll_data_term(d.residual, d.bg, log_var, c.beta_nll)


def adaframe_data(d: Direction, _: torch.Tensor | None, c: BaselineConstants) -> torch.Tensor:
    """``mean(B · w · r)``, ``w`` from the direction's own normalised residual."""
    return adaframe_data_term(d.residual, d.bg, c.adaframe_a, c.adaframe_b)


# --- regularisers: (vel, directions, int_downsize, constants) -> scalar ------------------------------------

Regulariser = Callable[[torch.Tensor, list[Direction], int, BaselineConstants], torch.Tensor]


def uniform_smoothness(vel: torch.Tensor, dirs: list[Direction], int_downsize: int,
                       c: BaselineConstants) -> torch.Tensor:
    """``R(u)``: one value for both directions (the inverse's velocity is ``−vel``, just as smooth)."""
    return smoothness(vel, int_downsize)


def adareg_regulariser(vel: torch.Tensor, dirs: list[Direction], int_downsize: int,
                       c: BaselineConstants) -> torch.Tensor:
    """AdaReg's ``mean(w · |∇u|²)``, each direction weighted by its own residual, averaged."""
    terms = [adareg_smoothness(vel, d.residual, d.bg, int_downsize, c.adareg_sigma) for d in dirs]
    return torch.stack(terms).mean()


@dataclass
class DisplacementLoss:
    """``total = data + λ·smooth (+ aux)``; ``aux`` is the estimator's own loss (DiffuseMorph's
    denoising term), None for estimators without one."""

    total: torch.Tensor
    data: torch.Tensor
    smooth: torch.Tensor
    aux: torch.Tensor | None = None


def displacement_loss(dirs: list[Direction], deformation: Deformation, lam: float, int_downsize: int,
                      scores: list[torch.Tensor] | None = None, *, data_term: DataTerm = weighted_data,
                      regulariser: Regulariser = uniform_smoothness,
                      constants: BaselineConstants = _DEFAULT_CONSTANTS) -> DisplacementLoss:
    """The displacement estimator's objective: data term averaged over directions, plus ``λ`` times the
    regulariser, plus the estimator's ``aux_loss`` when it has one.

    ``scores``: per direction, the ``(B, 1, *spatial)`` map the data term reads (AdaCS's ``S``, NLL's
    ``s``), or None. The defaults give Eq. 2, and Eq. 1 when ``scores`` is None.
    """
    maps = scores if scores is not None else [None] * len(dirs)
    data = torch.stack([data_term(d, m, constants) for d, m in zip(dirs, maps)]).mean()
    smooth = regulariser(deformation.vel, dirs, int_downsize, constants)
    total = data + lam * smooth
    # The estimator's own loss (DiffuseMorph's denoising term); read with getattr so that an older
    # Deformation without the field works too.
    aux = getattr(deformation, "aux_loss", None)
    if aux is not None:
        total = total + aux
    return DisplacementLoss(total=total, data=data, smooth=smooth, aux=aux)


# --- the scoring network's objective (Eq. 9 and its ablations) ---------------------------------------------

@dataclass(frozen=True)
class ScoringTerms:
    """Which terms of Eq. 9 train the scoring network: ``L_scs`` always, ``L_reg`` and ``L_tv`` optionally."""

    reg: bool = True
    tv: bool = True


EQ9 = ScoringTerms()  # L_scs + α·L_reg + L_tv: AdaCS
EQ3 = ScoringTerms(reg=False, tv=False)  # L_scs alone: Table 3's degenerate ablation (S -> 0)
EQ3_4 = ScoringTerms(tv=False)  # L_scs + α·L_reg: Table 3's ablation without the adaptive TV


def scoring_objective(dirs: list[Direction], scores: list[torch.Tensor], m_t: float, alpha: float,
                      terms: ScoringTerms = EQ9) -> ScoringLoss:
    """Eq. 9 averaged over directions; each direction's scores come from its own target.

    A term switched off by ``terms`` has weight 0 in ``total``; ``reg`` is still reported (unweighted),
    so an ablation's log shows the scores drifting from 1, and ``tv`` reports its weighted value, 0.
    """
    weight_tv = m_t if terms.tv else 0.0
    weight_reg = alpha if terms.reg else 0.0
    parts = [scoring_loss(s, d.residual, d.bg, weight_tv, weight_reg) for d, s in zip(dirs, scores)]
    mean = lambda name: torch.stack([getattr(p, name) for p in parts]).mean()  # noqa: E731
    return ScoringLoss(scs=mean("scs"), reg=mean("reg"), tv=mean("tv"), total=mean("total"))


# --- the networks whose maps the data term reads ----------------------------------------------------------

def score_maps(scorer: nn.Module, dirs: list[Direction]) -> list[torch.Tensor]:
    """``S = g_ϕ(target)`` per direction, from one batched forward (cheaper than one call per direction)."""
    return list(scorer(torch.cat([d.target for d in dirs])).chunk(len(dirs)))


def log_var_maps(net: nn.Module, dirs: list[Direction]) -> list[torch.Tensor]:
    """``s = h_ψ(target, sg[warped])`` per direction, from one batched forward, with a graph to ψ.

    The warped image enters detached: ``f_θ`` learns from the residual in the NLL, not by steering
    the variance network's input.
    """
    targets = torch.cat([d.target for d in dirs])
    warped = torch.cat([d.warped.detach() for d in dirs])
    return list(net(targets, warped).chunk(len(dirs)))


@dataclass(frozen=True)
class Auxiliary:
    """A network trained jointly with ``f_θ`` (its own Adam, stepped in the same update, on the same
    loss) whose per-direction maps the data term reads; it lives in training checkpoints only."""

    name: str
    build: Callable[[int, tuple[int, ...], tuple[int, ...]], nn.Module]  # (ndim, enc, dec) -> network
    maps: Callable[[nn.Module, list[Direction]], list[torch.Tensor]]
    log_key: str  # the step log that holds the maps' mean


VARIANCE = Auxiliary("variance", VarianceNet, log_var_maps, "log_var_mean")


@dataclass(frozen=True)
class Method:
    """A training method: its parts (see the module docstring) and a description for the model card."""

    name: str
    description: str
    data_term: DataTerm = weighted_data
    regulariser: Regulariser = uniform_smoothness
    scoring: ScoringTerms | None = None
    auxiliary: Auxiliary | None = None

    def __post_init__(self) -> None:
        if self.scoring is not None and self.auxiliary is not None:
            raise ValueError(f"method {self.name!r}: the data term reads one map, from the scoring network or "
                             "from an auxiliary network, not both")

    @property
    def uses_scoring(self) -> bool:
        return self.scoring is not None


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("none", "vanilla unsupervised registration (Eq. 1)"),
    Method("adacs", "adaptive correspondence scoring (Eqs. 2-9, Algorithm 1)", scoring=EQ9),
    Method("adacs-scs-only", "AdaCS ablation: the scoring network trains on L_scs alone (Eq. 3; "
                             "degenerates towards S = 0, Table 3)", scoring=EQ3),
    Method("adacs-no-tv", "AdaCS ablation: the scoring network trains on L_scs + α·L_reg (Eqs. 3-4, "
                          "no adaptive TV, Table 3)", scoring=EQ3_4),
    Method("nll", "Gaussian negative log-likelihood with a jointly trained variance U-Net "
                  "(Kendall & Gal 2017)", data_term=nll_data, auxiliary=VARIANCE),
    Method("beta-nll", "β-NLL: the NLL re-weighted per voxel by sg[σ^(2β)], β = beta_nll "
                       "(Seitzer et al. 2022)", data_term=beta_nll_data, auxiliary=VARIANCE),
    Method("adareg", "smoothness weighted up where the residual is large (AdaReg, Wong & Soatto 2019)",
           regulariser=adareg_regulariser),
    Method("adaframe", "data term weighted down where the normalised residual is large "
                       "(AdaFrame, Wong et al. 2021)", data_term=adaframe_data),
)}
