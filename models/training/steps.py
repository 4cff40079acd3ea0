"""The two optimiser updates of Algorithm 1: one of the displacement estimator ``f_θ`` and one of
the scoring network ``g_ϕ``, each accumulated over the update's micro-batches.

The method (``models.objectives.METHODS``) supplies the parts of the objective; an update knows only
whether there is a scoring network and whether there is an auxiliary network. Across processes
(:mod:`models.training.distributed`), the network an update differentiates comes wrapped in DDP and
each process passes its share of the update's micro-batches; the others come bare.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn.parallel import DistributedDataParallel

from models.inference import eval_mode
from models.networks.estimator import DisplacementEstimator
from models.networks.scoring import ScoringNet
from models.objectives import (
    METHODS,
    ExtraTerm,
    directions,
    displacement_loss,
    score_maps,
    scoring_objective,
    smoothness_downsize,
)
from models.training.config import TrainConfig
from models.training.data import Batch
from models.training.distributed import sync_gradients

__all__ = ["displacement_update", "scoring_update", "shared_scores", "Scores"]

#: Per micro-batch, the scoring network's maps ``S = g_ϕ(target)`` for each direction.
Scores = Sequence[list[torch.Tensor]]


def shared_scores(scorer: torch.nn.Module | None, micro: Sequence[Batch | tuple], cfg: TrainConfig) -> Scores | None:
    """The scores of an alternating step, computed once with their graph, or None where that does not pay.

    ``S = g_ϕ(target)`` reads the target images alone, and ``ϕ`` does not change during the displacement
    update, so the displacement update's (detached) weights and the scoring update's maps are the same
    numbers: one scorer forward serves both, and the results are those of two (tested). Not across
    processes (a DDP module must run each forward right before its backward) nor over several
    micro-batches (every micro-batch's graph would be held through the displacement update).
    """
    if scorer is None or len(micro) != 1 or isinstance(scorer, DistributedDataParallel):
        return None
    batch = _as_batch(micro[0])
    targets = [batch.fixed, batch.moving] if cfg.bidir else [batch.fixed]
    return [list(scorer(torch.cat(targets)).chunk(len(targets)))]


def displacement_update(estimator: DisplacementEstimator, scorer: ScoringNet | None,
                        optimizer: torch.optim.Optimizer, micro: Sequence[Batch | tuple], cfg: TrainConfig,
                        auxiliary: torch.nn.Module | None = None,
                        auxiliary_optimizer: torch.optim.Optimizer | None = None,
                        extras: Sequence[ExtraTerm] = (), scores: Scores | None = None) -> dict:
    """One optimiser update of ``f_θ`` on the method's displacement objective.

    ``scorer``: the scoring network whose detached scores weigh the data term (Eq. 2), or None
    (Eq. 1 for AdaCS's warm-up). ``auxiliary``: the method's auxiliary network, updated jointly by
    ``auxiliary_optimizer`` on the same loss, whose maps the data term reads (NLL's ``s``), or None.
    ``extras``: the supervision's extra terms (the label term), which read the batch's masks.
    ``scores``: the scorer's maps per micro-batch already computed (:func:`shared_scores`); used detached.
    """
    method = METHODS[cfg.method]
    optimizers = [optimizer] + ([auxiliary_optimizer] if auxiliary_optimizer is not None else [])
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    logs = {"loss_de": 0.0, "data": 0.0, "smooth": 0.0}
    for i, batch in enumerate(map(_as_batch, micro)):
        for net in (estimator, auxiliary):  # across processes: gradients are averaged at the last micro-batch
            sync_gradients(net, i == len(micro) - 1)
        moving, fixed = batch.moving, batch.fixed
        deformation = estimator(moving, fixed)
        dirs = directions(moving, fixed, deformation, cfg.bidir, batch.masks)
        maps = None
        if scorer is not None and scores is not None:
            maps = [score.detach() for score in scores[i]]  # sg[S]: the scores are constants for f_θ
        elif scorer is not None:
            with torch.no_grad():  # sg[S]: the scores are constants for f_θ
                maps = score_maps(scorer, dirs)
        if auxiliary is not None:  # trained jointly: its maps keep their graph
            maps = method.auxiliary.maps(auxiliary, dirs)
            logs[method.auxiliary.log_key] = logs.get(method.auxiliary.log_key, 0.0) + \
                torch.stack([m.detach().mean() for m in maps]).mean().item() / len(micro)
        loss = displacement_loss(dirs, deformation, cfg.lam, smoothness_downsize(cfg.estimator), maps,
                                 data_term=method.data_term, regulariser=method.regulariser,
                                 constants=cfg.constants, extras=extras)
        (loss.total / len(micro)).backward()
        for key, value in (("loss_de", loss.total), ("data", loss.data), ("smooth", loss.smooth),
                           ("aux", loss.aux), *loss.extras.items()):
            if value is not None:
                logs[key] = logs.get(key, 0.0) + value.item() / len(micro)
    for opt in optimizers:
        opt.step()
    # μ's scale (SPEC Eq. 5): the data term averaged over directions, halved again when bidirectional.
    # Methods without a scoring network log m_t of their own data term as a diagnostic only. The image
    # data term alone: κ was tuned on its scale, and an extra term (labels) is not a residual.
    logs["mu_sample"] = logs["data"] / (2 if cfg.bidir else 1)
    return logs


def scoring_update(estimator: DisplacementEstimator, scorer: ScoringNet, optimizer: torch.optim.Optimizer,
                   micro: Sequence[Batch | tuple], m_t: float, cfg: TrainConfig,
                   scores: Scores | None = None) -> dict:
    """One optimiser update of ``g_ϕ`` on the method's scoring terms (Eq. 9 for AdaCS) with residuals
    of the current (frozen) ``f_θ``.

    The training masks, when the run has them, are not read here: Eq. 9 scores *image* residuals,
    and the label term trains ``f_θ`` alone (why: ``models.objectives``, "Extra terms"). So
    label-assisted AdaCS changes only what ``f_θ`` learns, and the scoring update is the SPEC's.

    The residuals come from ``f_θ`` in eval mode, i.e. from the registration it would return: an
    estimator whose training forward is stochastic (DiffuseMorph noises its target) would otherwise
    teach ``g_ϕ`` where the *noised* registration fails, and on ACDC that scored the heart itself
    as unreliable (AdaCS with DiffuseMorph fell from 69.5 to 56.2 DSC; benchmarks/LOG.md).
    """
    terms = METHODS[cfg.method].scoring
    optimizer.zero_grad(set_to_none=True)
    logs = {"loss_se": 0.0, "scs": 0.0, "reg": 0.0, "tv": 0.0, "score_mean": 0.0}
    for i, batch in enumerate(map(_as_batch, micro)):
        sync_gradients(scorer, i == len(micro) - 1)
        moving, fixed = batch.moving, batch.fixed
        # sg[r]: no graph through f_θ, so no gradient can reach θ
        with torch.no_grad(), eval_mode(estimator):
            dirs = directions(moving, fixed, estimator(moving, fixed), cfg.bidir)
        maps = scores[i] if scores is not None else score_maps(scorer, dirs)
        loss = scoring_objective(dirs, maps, m_t, cfg.alpha, terms)
        (loss.total / len(micro)).backward()
        for key, value in (("loss_se", loss.total), ("scs", loss.scs), ("reg", loss.reg), ("tv", loss.tv)):
            logs[key] += value.item() / len(micro)
        logs["score_mean"] += torch.stack(maps).mean().item() / len(micro)
    optimizer.step()
    return logs


def _as_batch(item: Batch | tuple) -> Batch:
    """A micro-batch as :class:`Batch`, also from a plain ``(moving, fixed)`` tuple."""
    return item if isinstance(item, Batch) else Batch(*item)
