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
A new baseline is one more ``Method`` entry, not a branch in the loop.

*Extra terms* (:class:`ExtraTerm`) are parts of the displacement objective that any method takes on
top of its own, chosen by the run's supervision (``SUPERVISION_TERMS``), never by the method:
label-assisted training adds ``label_weight`` times a soft Dice between the target's mask and the
source's mask warped by the direction's field (:func:`label_dice`). Training masks enter only here:
inference needs images only. For AdaCS the label term trains ``f_θ`` alone. It is not weighted by
``sg[S]`` and it is not part of the scoring objective (Eq. 9): the scores say where the *image*
residual is a trustworthy correspondence signal, and the masks are an annotation of the anatomy,
not a residual to be trusted or not; a score that also discounted label disagreement would learn to
hide exactly the misregistrations the masks point at. Nor does it enter ``μ_t`` (Eq. 5), whose scale
``κ`` was tuned on the image term alone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import nn

from models.baselines import adaframe_data_term, adareg_smoothness, beta_nll_data_term, nll_data_term
from models.defaults import TRAIN_DEFAULTS
from models.losses import (
    ScoringLoss,
    background_mask,
    displacement_data_term,
    one_hot_labels,
    scoring_loss,
    smoothness,
    soft_dice_loss,
    squared_residual,
)
from models.networks.estimator import Deformation, EstimatorConfig
from models.networks.variance import VarianceNet
from models.warp import warp

__all__ = ["Direction", "directions", "BaselineConstants", "DisplacementLoss", "displacement_loss",
           "ScoringTerms", "EQ9", "EQ3", "EQ3_4", "scoring_objective", "score_maps", "log_var_maps",
           "weighted_data", "nll_data", "beta_nll_data", "adaframe_data", "uniform_smoothness",
           "adareg_regulariser", "smoothness_downsize", "ExtraTerm", "label_dice", "label_term",
           "SUPERVISION_TERMS", "Auxiliary", "VARIANCE", "Method", "METHODS"]


@dataclass
class Direction:
    """One direction of a pair: ``warped = source∘φ`` compared with ``target`` where ``bg`` is 1.

    ``disp`` is the displacement ``φ − id`` that made ``warped``; ``source_mask`` and ``target_mask``
    are the pair's integer label maps ``(B, 1, *spatial)`` in this direction's roles, present only
    in label-assisted training (the only terms that read them are extra terms such as the label term).
    """

    target: torch.Tensor
    warped: torch.Tensor
    bg: torch.Tensor
    disp: torch.Tensor | None = None
    source_mask: torch.Tensor | None = None
    target_mask: torch.Tensor | None = None

    @cached_property
    def residual(self) -> torch.Tensor:
        """``r = (warped − target)²``, computed once however many terms read it."""
        return squared_residual(self.warped, self.target)


def directions(moving: torch.Tensor, fixed: torch.Tensor, deformation: Deformation, bidir: bool,
               masks: tuple[torch.Tensor, torch.Tensor] | None = None) -> list[Direction]:
    """Forward direction (``moving -> fixed``), then backward (``fixed -> moving``) when ``bidir``.

    ``masks``: the pair's ``(moving_mask, fixed_mask)`` label maps, for label-assisted training;
    the backward direction swaps their roles as it swaps the images'.
    """
    bg = background_mask(moving, fixed)
    moving_mask, fixed_mask = masks if masks is not None else (None, None)
    out = [Direction(target=fixed, warped=warp(moving, deformation.disp), bg=bg, disp=deformation.disp,
                     source_mask=moving_mask, target_mask=fixed_mask)]
    if bidir:
        out.append(Direction(target=moving, warped=warp(fixed, deformation.disp_inv), bg=bg,
                             disp=deformation.disp_inv, source_mask=fixed_mask, target_mask=moving_mask))
    return out


@dataclass(frozen=True)
class BaselineConstants:
    """The baselines' constants (SPEC "Baselines"; the papers print none of them, these are ours).

    ``TrainConfig`` carries them as flat fields with these defaults.
    """

    # The values and their meaning live in models.defaults (the CLI and the API read them there).
    beta_nll: float = TRAIN_DEFAULTS.beta_nll
    adareg_sigma: float = TRAIN_DEFAULTS.adareg_sigma
    adaframe_a: float = TRAIN_DEFAULTS.adaframe_a
    adaframe_b: float = TRAIN_DEFAULTS.adaframe_b


_DEFAULT_CONSTANTS = BaselineConstants()


# --- data terms: (direction, map or None, constants) -> scalar ---------------------------------------------

DataTerm = Callable[[Direction, torch.Tensor | None, BaselineConstants], torch.Tensor]


def weighted_data(direction: Direction, score: torch.Tensor | None, constants: BaselineConstants) -> torch.Tensor:
    """Eq. 2's ``mean(B · sg[S] · r)``; Eq. 1's ``mean(B · r)`` when there is no score."""
    return displacement_data_term(direction.residual, direction.bg, score)


def nll_data(direction: Direction, log_var: torch.Tensor | None, constants: BaselineConstants) -> torch.Tensor:
    """``mean(B · (r/(2e^s) + s/2))`` with ``s`` from the variance network."""
    return nll_data_term(direction.residual, direction.bg, log_var)


def beta_nll_data(direction: Direction, log_var: torch.Tensor | None, constants: BaselineConstants) -> torch.Tensor:
    """``mean(B · sg[e^{β·s}] · (r/(2e^s) + s/2))`` with ``s`` from the variance network."""
    return beta_nll_data_term(direction.residual, direction.bg, log_var, constants.beta_nll)


def adaframe_data(direction: Direction, unused_map: torch.Tensor | None,
                  constants: BaselineConstants) -> torch.Tensor:
    """``mean(B · w · r)``, ``w`` from the direction's own normalised residual (it reads no map)."""
    return adaframe_data_term(direction.residual, direction.bg, constants.adaframe_a, constants.adaframe_b)


# --- regularisers: (vel, directions, int_downsize, constants) -> scalar ------------------------------------

Regulariser = Callable[[torch.Tensor, list[Direction], int, BaselineConstants], torch.Tensor]


def uniform_smoothness(vel: torch.Tensor, dirs: list[Direction], int_downsize: int,
                       constants: BaselineConstants) -> torch.Tensor:
    """``R(u)``: one value for both directions (the inverse's velocity is ``−vel``, just as smooth)."""
    return smoothness(vel, int_downsize)


def adareg_regulariser(vel: torch.Tensor, dirs: list[Direction], int_downsize: int,
                       constants: BaselineConstants) -> torch.Tensor:
    """AdaReg's ``mean(w · |∇u|²)``, each direction weighted by its own residual, averaged."""
    terms = [adareg_smoothness(vel, direction.residual, direction.bg, int_downsize, constants.adareg_sigma)
             for direction in dirs]
    return torch.stack(terms).mean()


def smoothness_downsize(config: EstimatorConfig) -> int:
    """The factor ``R(u)`` is multiplied by: how many full-resolution voxels one velocity voxel spans.

    That is ``int_downsize`` when the velocity is integrated at ``1/int_downsize`` resolution, and 1
    with ``int_steps == 0``, where the estimator uses its full-resolution flow as the displacement and
    ignores ``int_downsize`` (weighing that field's smoothness by 2 would double ``λ`` unasked).
    """
    return config.int_downsize if config.int_steps > 0 else 1


# --- extra terms: parts any method takes on top of its own, chosen by the run's supervision -------------------

@dataclass(frozen=True)
class ExtraTerm:
    """``weight · mean over directions of term(direction)``, added to the displacement objective and
    logged (unweighted) under ``name``."""

    name: str
    weight: float
    term: Callable[[Direction], torch.Tensor]


def label_dice(direction: Direction, labels: tuple[int, ...]) -> torch.Tensor:
    """``1 − soft Dice`` between the target's mask and the source's mask warped by the direction's field.

    The source mask is warped as one channel per label with linear interpolation, so the term has a
    gradient with respect to the field (a nearest-neighbour warp of label values has none).
    """
    disp, source_mask, target_mask = direction.disp, direction.source_mask, direction.target_mask
    if disp is None or source_mask is None or target_mask is None:
        raise ValueError("the label term needs both masks of every training pair")
    source = one_hot_labels(source_mask, labels, disp.dtype)
    return soft_dice_loss(warp(source, disp), one_hot_labels(target_mask, labels, disp.dtype))


def label_term(labels: tuple[int, ...], weight: float) -> ExtraTerm:
    """Label-assisted training's term. With bidirectional training it is averaged over both directions
    (the fixed mask warped by ``disp_inv`` onto the moving one too), as the image term is: both fields
    come from one velocity, and a label term on one direction only would weigh the two directions'
    image terms unequally against the labels."""
    return ExtraTerm("label_dice", weight, functools.partial(label_dice, labels=tuple(labels)))


#: Supervision name (``models.defaults.SUPERVISIONS``) -> the extra terms it adds, from
#: ``(label_weight, labels)``.
SUPERVISION_TERMS: dict[str, Callable[[float, tuple[int, ...]], tuple[ExtraTerm, ...]]] = {
    "none": lambda weight, labels: (),
    "labels": lambda weight, labels: (label_term(labels, weight),),
}


@dataclass
class DisplacementLoss:
    """``total = data + λ·smooth + Σ weight·extra (+ aux)``; ``aux`` is the estimator's own loss
    (DiffuseMorph's denoising term), None for estimators without one; ``extras`` holds each extra
    term's unweighted value by name."""

    total: torch.Tensor
    data: torch.Tensor
    smooth: torch.Tensor
    aux: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


def displacement_loss(dirs: list[Direction], deformation: Deformation, lam: float, int_downsize: int,
                      scores: list[torch.Tensor] | None = None, *, data_term: DataTerm = weighted_data,
                      regulariser: Regulariser = uniform_smoothness,
                      constants: BaselineConstants = _DEFAULT_CONSTANTS,
                      extras: Sequence[ExtraTerm] = ()) -> DisplacementLoss:
    """The displacement estimator's objective: data term averaged over directions, plus ``λ`` times the
    regulariser, plus each extra term averaged over directions times its weight, plus the estimator's
    ``aux_loss`` when it has one.

    ``scores``: per direction, the ``(B, 1, *spatial)`` map the data term reads (AdaCS's ``S``, NLL's
    ``s``), or None; it weighs the data term only, never an extra term. ``int_downsize``: the
    smoothness factor, :func:`smoothness_downsize` of the estimator. The defaults give Eq. 2, and
    Eq. 1 when ``scores`` is None.
    """
    maps = scores if scores is not None else [None] * len(dirs)
    data = torch.stack([data_term(direction, score, constants) for direction, score in zip(dirs, maps)]).mean()
    smooth = regulariser(deformation.vel, dirs, int_downsize, constants)
    total = data + lam * smooth
    values = {extra.name: torch.stack([extra.term(direction) for direction in dirs]).mean() for extra in extras}
    for extra in extras:
        total = total + extra.weight * values[extra.name]
    # The estimator's own loss (DiffuseMorph's denoising term); read with getattr so that an older
    # Deformation without the field works too.
    aux = getattr(deformation, "aux_loss", None)
    if aux is not None:
        total = total + aux
    return DisplacementLoss(total=total, data=data, smooth=smooth, aux=aux, extras=values)


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
    parts = [scoring_loss(score, direction.residual, direction.bg, weight_tv, weight_reg)
             for direction, score in zip(dirs, scores)]
    mean = lambda name: torch.stack([getattr(part, name) for part in parts]).mean()  # noqa: E731
    return ScoringLoss(scs=mean("scs"), reg=mean("reg"), tv=mean("tv"), total=mean("total"))


# --- the networks whose maps the data term reads ----------------------------------------------------------

def score_maps(scorer: nn.Module, dirs: list[Direction]) -> list[torch.Tensor]:
    """``S = g_ϕ(target)`` per direction, from one batched forward (cheaper than one call per direction)."""
    return list(scorer(torch.cat([direction.target for direction in dirs])).chunk(len(dirs)))


def log_var_maps(net: nn.Module, dirs: list[Direction]) -> list[torch.Tensor]:
    """``s = h_ψ(target, sg[warped])`` per direction, from one batched forward, with a graph to ψ.

    The warped image enters detached: ``f_θ`` learns from the residual in the NLL, not by steering
    the variance network's input.
    """
    targets = torch.cat([direction.target for direction in dirs])
    warped = torch.cat([direction.warped.detach() for direction in dirs])
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


METHODS: dict[str, Method] = {method.name: method for method in (
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
