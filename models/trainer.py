"""Algorithm 1 of AdaCS, and the baselines on the same loop, selected by ``TrainConfig.method``.

Reads top to bottom: config, schedule (pure functions of the epoch), the two update steps, the
loop (sample, update, validate, log, checkpoint). Budgets are counted in optimiser updates:
``steps_per_epoch`` updates per epoch, each of ``batch_size`` pairs accumulated over micro-batches of
``micro_batch_size`` (the authors: batch 8 as two micro-batches of 4).

The method (``models.objectives.METHODS``) supplies the parts of the objective; the loop knows only
whether there is a scoring network and whether there is an auxiliary network. Epochs, with
``W = warmup_epochs`` and ``E = epochs``:
- with a scoring network (``adacs`` and its ablations ``adacs-scs-only``, ``adacs-no-tv``): ``W`` of
  the displacement estimator alone (``S ≡ 1``, Eq. 1), ``W`` of the scoring network alone (estimator
  frozen), then ``E`` alternating epochs: one estimator update on Eq. 2, then one scoring update on
  the method's scoring terms with residuals of the just-updated estimator.
- without (``none``, ``nll``, ``beta-nll``, ``adareg``, ``adaframe``): ``W + E`` epochs of
  displacement updates on the method's objective, i.e. exactly as many displacement updates as AdaCS
  makes, so the same flags give a fair comparison (SPEC, Algorithm 1). An auxiliary network (NLL's
  variance U-Net) has its own Adam, stepped in every displacement update on the same loss: the
  joint training of Kendall & Gal (with equal learning rates, exactly one Adam over both networks).

Label-assisted training (``supervision="labels"``) adds an extra term to every displacement update
of every method (``models.objectives.ExtraTerm``): the training masks travel with the sampled pairs,
and only the displacement objective reads them. Defaults live in ``models.defaults``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from models.checkpoint import load_checkpoint, save_checkpoint
from models.data.pairs import MYOCARDIUM, PairSample
from models.defaults import (
    IDENTITY_MARGIN_DSC,
    TRAIN_DEFAULTS,
    check_label_weight,
    check_labels,
    check_lr_schedule,
    check_supervision,
)
from models.inference import eval_mode, predict_disp, stack_pairs, warp_labels
from models.intensity import IntensityConfig
from models.losses import momentum_update, scoring_activation
from models.metrics import dice, folding_percent
from models.networks.estimator import DisplacementEstimator, EstimatorConfig, build_estimator
from models.networks.scoring import ScoringNet
from models.objectives import (
    METHODS,
    SUPERVISION_TERMS,
    BaselineConstants,
    ExtraTerm,
    Method,
    directions,
    displacement_loss,
    score_maps,
    scoring_objective,
    smoothness_downsize,
)

__all__ = ["lr_factor", "displacement_updates", "displacement_updates_before", "TrainConfig", "ProgressEvent",
           "TrainResult", "Batch", "train", "phase_of_epoch", "total_epochs",
           "PHASE_WARMUP_DISPLACEMENT", "PHASE_WARMUP_SCORING", "PHASE_ALTERNATING", "PHASE_DISPLACEMENT"]

PHASE_WARMUP_DISPLACEMENT = "warmup-displacement"
PHASE_WARMUP_SCORING = "warmup-scoring"
PHASE_ALTERNATING = "alternating"
PHASE_DISPLACEMENT = "displacement"  # the only phase of methods without a scoring network


_D = TRAIN_DEFAULTS


@dataclass
class TrainConfig:
    """Hyperparameters of one training run; the worker fills it from a job row.

    Every default a user can set comes from ``models.defaults.TRAIN_DEFAULTS`` (where the departures
    from the SPEC are explained), so the CLI and the API cannot drift from the trainer.
    """

    method: str = _D.method
    epochs: int = _D.epochs
    warmup_epochs: int = _D.warmup_epochs
    steps_per_epoch: int = _D.steps_per_epoch
    batch_size: int = _D.batch_size
    micro_batch_size: int = _D.micro_batch_size
    lr: float = _D.lr
    lr_schedule: str = _D.lr_schedule  # "constant", or "cosine" over the estimator's updates (lr_factor)
    scoring_lr: float | None = _D.scoring_lr  # None: the same as lr
    lam: float = _D.lam
    alpha: float = _D.alpha
    beta: float = _D.beta
    kappa: float = _D.kappa
    # The baselines' constants (SPEC "Baselines"; documented in models.defaults).
    beta_nll: float = _D.beta_nll
    adareg_sigma: float = _D.adareg_sigma
    adaframe_a: float = _D.adaframe_a
    adaframe_b: float = _D.adaframe_b
    auxiliary_lr: float | None = _D.auxiliary_lr  # None: the same as lr (it trains jointly with f_θ)
    bidir: bool = _D.bidir
    seed: int = _D.seed
    # Label-assisted training: "labels" adds label_weight × soft Dice of the warped training masks over
    # `labels` (None: every foreground label in the training masks) to the displacement objective.
    supervision: str = _D.supervision
    label_weight: float = _D.label_weight
    labels: tuple[int, ...] | None = _D.labels
    val_max_pairs: int = 64
    picture_every: int = 0
    device: str = "cpu"
    estimator: EstimatorConfig = field(default_factory=lambda: EstimatorConfig(arch=_D.arch))
    intensity: IntensityConfig = field(default_factory=IntensityConfig)

    def __post_init__(self) -> None:
        # A job row's JSON brings a list: the same labels, compared and stored as one type.
        if self.labels is not None and not isinstance(self.labels, tuple):
            self.labels = tuple(self.labels)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["estimator"] = self.estimator.to_dict()
        out["labels"] = list(self.labels) if self.labels is not None else None
        return out

    @property
    def constants(self) -> BaselineConstants:
        return BaselineConstants(beta_nll=self.beta_nll, adareg_sigma=self.adareg_sigma,
                                 adaframe_a=self.adaframe_a, adaframe_b=self.adaframe_b)

    @property
    def accum_steps(self) -> int:
        return self.batch_size // self.micro_batch_size

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; known: {sorted(METHODS)}")
        if self.micro_batch_size < 1 or self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of micro_batch_size "
                             f"{self.micro_batch_size}")
        if min(self.epochs, self.warmup_epochs) < 0 or self.steps_per_epoch < 1:
            raise ValueError("epochs and warmup_epochs must be >= 0 and steps_per_epoch >= 1")
        if self.adareg_sigma <= 0:
            raise ValueError(f"adareg_sigma must be > 0, got {self.adareg_sigma}")
        check_supervision(self.supervision)
        check_lr_schedule(self.lr_schedule)
        check_label_weight(self.label_weight)
        check_labels(self.labels)
        if self.labels is not None and self.supervision != "labels":
            raise ValueError(f"labels {list(self.labels)} are used only with supervision 'labels', "
                             f"not {self.supervision!r}")


def total_epochs(cfg: TrainConfig) -> int:
    warmups = 2 if METHODS[cfg.method].scoring is not None else 1
    return warmups * cfg.warmup_epochs + cfg.epochs


def displacement_updates(cfg: TrainConfig) -> int:
    """How many updates the displacement estimator gets in the whole run (every phase but the scoring warm-up)."""
    return (cfg.warmup_epochs + cfg.epochs) * cfg.steps_per_epoch


def displacement_updates_before(epoch: int, step: int, cfg: TrainConfig) -> int:
    """The estimator's updates done before update ``step`` of ``epoch``: a pure function of the position,
    so a resumed run continues the schedule exactly where it stopped."""
    scoring_only = [e for e in range(epoch) if phase_of_epoch(e, cfg) == PHASE_WARMUP_SCORING]
    return (epoch - len(scoring_only)) * cfg.steps_per_epoch + step


def lr_factor(done: int, total: int, schedule: str) -> float:
    """The estimator's learning rate, as a fraction of ``lr``, after ``done`` of ``total`` updates.

    ``cosine`` decays from 1 to 0 along half a cosine: a network at a constant rate plateaus while
    its steps still jitter around the optimum (issue 12 measured vanilla flat near 81 % from 1000 to
    3000 updates), and annealing the step lets it settle.
    """
    if schedule == "constant" or total <= 0:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(done, total) / total))


def phase_of_epoch(epoch: int, cfg: TrainConfig) -> str:
    """The phase of a 0-based epoch: a pure function, so resuming needs no phase bookkeeping."""
    if METHODS[cfg.method].scoring is None:
        return PHASE_DISPLACEMENT
    if epoch < cfg.warmup_epochs:
        return PHASE_WARMUP_DISPLACEMENT
    if epoch < 2 * cfg.warmup_epochs:
        return PHASE_WARMUP_SCORING
    return PHASE_ALTERNATING


@dataclass
class ProgressEvent:
    """What the trainer reports through its callback: ``kind`` is ``"step"`` or ``"epoch"``."""

    kind: str
    phase: str
    epoch: int
    total_epochs: int
    step: int
    steps_per_epoch: int
    global_step: int
    total_steps: int
    m_t: float
    losses: dict[str, float]
    val: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0
    warnings: list[str] = field(default_factory=list)  # the run's warnings so far (see _warmup_warnings)


@dataclass
class TrainResult:
    estimator: DisplacementEstimator
    history: list[dict]
    out_dir: Path


class Batch(NamedTuple):
    """One micro-batch: normalised images ``(B, 1, *spatial)`` and, in label-assisted training, the
    pairs' integer label maps of the same shape (None otherwise)."""

    moving: torch.Tensor
    fixed: torch.Tensor
    moving_mask: torch.Tensor | None = None
    fixed_mask: torch.Tensor | None = None

    @property
    def masks(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return None if self.moving_mask is None or self.fixed_mask is None else (self.moving_mask, self.fixed_mask)


def _displacement_update(estimator: DisplacementEstimator, scorer: ScoringNet | None,
                         optimizer: torch.optim.Optimizer, micro: Sequence[Batch | tuple], cfg: TrainConfig,
                         auxiliary: torch.nn.Module | None = None,
                         auxiliary_optimizer: torch.optim.Optimizer | None = None,
                         extras: Sequence[ExtraTerm] = ()) -> dict:
    """One optimiser update of ``f_θ`` on the method's displacement objective.

    ``scorer``: the scoring network whose detached scores weigh the data term (Eq. 2), or None
    (Eq. 1 for AdaCS's warm-up). ``auxiliary``: the method's auxiliary network, updated jointly by
    ``auxiliary_optimizer`` on the same loss, whose maps the data term reads (NLL's ``s``), or None.
    ``extras``: the supervision's extra terms (the label term), which read the batch's masks.
    """
    method = METHODS[cfg.method]
    optimizers = [optimizer] + ([auxiliary_optimizer] if auxiliary_optimizer is not None else [])
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    logs = {"loss_de": 0.0, "data": 0.0, "smooth": 0.0}
    for batch in map(_as_batch, micro):
        moving, fixed = batch.moving, batch.fixed
        deformation = estimator(moving, fixed)
        dirs = directions(moving, fixed, deformation, cfg.bidir, batch.masks)
        maps = None
        if scorer is not None:
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


def _scoring_update(estimator: DisplacementEstimator, scorer: ScoringNet, optimizer: torch.optim.Optimizer,
                    micro: Sequence[Batch | tuple], m_t: float, cfg: TrainConfig) -> dict:
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
    for batch in map(_as_batch, micro):
        moving, fixed = batch.moving, batch.fixed
        # sg[r]: no graph through f_θ, so no gradient can reach θ
        with torch.no_grad(), eval_mode(estimator):
            dirs = directions(moving, fixed, estimator(moving, fixed), cfg.bidir)
        scores = score_maps(scorer, dirs)
        loss = scoring_objective(dirs, scores, m_t, cfg.alpha, terms)
        (loss.total / len(micro)).backward()
        for key, value in (("loss_se", loss.total), ("scs", loss.scs), ("reg", loss.reg), ("tv", loss.tv)):
            logs[key] += value.item() / len(micro)
        logs["score_mean"] += torch.stack(scores).mean().item() / len(micro)
    optimizer.step()
    return logs


def _validate(estimator: DisplacementEstimator, val: tuple | None, label: int) -> dict[str, float]:
    if val is None:
        return {}
    moving, fixed, moving_masks, fixed_masks = val
    disp = predict_disp(estimator, moving, fixed)
    dsc = [dice(warp_labels(mm, d) == label, fm == label)
           for d, mm, fm in zip(disp, moving_masks, fixed_masks)]
    folding = [folding_percent(d.numpy()) for d in disp]
    return {"val_dice": float(np.mean(dsc)), "val_folding_pct": float(np.mean(folding))}


def _identity_dice(val: tuple, label: int) -> float:
    """Validation Dice with no registration: the baseline that gives a validation Dice its meaning
    (and shows whether the displacement warm-up had registered anything before scoring began)."""
    _, _, moving_masks, fixed_masks = val
    return float(np.mean([dice(mm == label, fm == label) for mm, fm in zip(moving_masks, fixed_masks)]))


def _prepare_val(pairs: Sequence[PairSample] | None, cfg: TrainConfig) -> tuple | None:
    pairs = [p for p in (pairs or []) if p.moving_mask is not None and p.fixed_mask is not None]
    if not pairs:
        return None
    pairs = pairs[: cfg.val_max_pairs]
    moving, fixed = stack_pairs(pairs, cfg.intensity)
    return moving, fixed, [p.moving_mask for p in pairs], [p.fixed_mask for p in pairs]


def _as_batch(item: Batch | tuple) -> Batch:
    """A micro-batch as :class:`Batch`, also from a plain ``(moving, fixed)`` tuple."""
    return item if isinstance(item, Batch) else Batch(*item)


def _sample(generator: torch.Generator, moving: torch.Tensor, fixed: torch.Tensor, cfg: TrainConfig,
            device: torch.device, masks: tuple[torch.Tensor, torch.Tensor] | None = None) -> list[Batch]:
    """Draw one update's micro-batches (with replacement) from the seeded sampler.

    ``masks`` (label-assisted training) are indexed with the images' draws, so the draws, and a run
    without masks, are exactly those of a run that never had them.
    """
    out = []
    for _ in range(cfg.accum_steps):
        idx = torch.randint(moving.shape[0], (cfg.micro_batch_size,), generator=generator)
        label_maps = (masks[0][idx].to(device), masks[1][idx].to(device)) if masks is not None else (None, None)
        out.append(Batch(moving[idx].to(device), fixed[idx].to(device), *label_maps))
    return out


def _supervision_labels(cfg: TrainConfig, pairs: Sequence[PairSample]) -> tuple[int, ...]:
    """The labels the label term scores, checked against the training masks before anything trains.

    A label-assisted run refuses pairs without both masks (the term would silently be missing for
    them) and labels that no training mask holds (a typo would train a model without supervision).
    ``cfg.labels = None`` is every foreground label found. An unsupervised run scores none: ``()``.
    """
    if cfg.supervision == "none":
        return ()
    unlabelled = [p.pair_id for p in pairs if p.moving_mask is None or p.fixed_mask is None]
    if unlabelled:
        raise ValueError(f"label-assisted training (supervision 'labels') needs both masks of every training "
                         f"pair, and {len(unlabelled)} of {len(pairs)} have none (e.g. {', '.join(unlabelled[:3])}): "
                         "train on a dataset with masks, or with supervision 'none'")
    found = sorted({int(v) for p in pairs for m in (p.moving_mask, p.fixed_mask) for v in np.unique(m) if v > 0})
    if not found:
        raise ValueError("label-assisted training: the training masks hold no foreground label")
    missing = sorted(set(cfg.labels or ()) - set(found))
    if missing:
        raise ValueError(f"labels {missing} are in no training mask (the masks hold {found})")
    return tuple(cfg.labels) if cfg.labels is not None else tuple(found)


def _stack_masks(pairs: Sequence[PairSample]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, 1, *spatial)`` moving and fixed label maps, in the smallest integer type that holds them
    (the whole training set stays in memory, like the images)."""
    moving = np.stack([p.moving_mask for p in pairs])[:, None]
    fixed = np.stack([p.fixed_mask for p in pairs])[:, None]
    dtype = np.uint8 if max(moving.max(), fixed.max()) <= np.iinfo(np.uint8).max else np.int32
    return torch.from_numpy(moving.astype(dtype)), torch.from_numpy(fixed.astype(dtype))


def _warmup_warnings(epoch: int, n_epochs: int, cfg: TrainConfig, val_metrics: dict[str, float],
                     identity: float | None, updates: int) -> list[str]:
    """A warning when validation Dice has not left the identity's by the end of the warm-up.

    Checked once: after the first ``warmup_epochs`` epochs (the displacement warm-up of every method),
    or after the last epoch of a run without warm-up. A run that fails it has barely moved: the
    learning rate or the budget is too small for this data (lr 1e-4 at a CPU budget did this on ACDC),
    and a user should hear it before waiting for the rest, not infer it from a poor model.
    """
    check_epoch = cfg.warmup_epochs - 1 if cfg.warmup_epochs > 0 else n_epochs - 1
    dsc = val_metrics.get("val_dice")
    if epoch != check_epoch or identity is None or dsc is None or dsc > identity + IDENTITY_MARGIN_DSC:
        return []
    when = "the warm-up" if cfg.warmup_epochs > 0 else "training"
    return [f"validation Dice {dsc:.2f} % after {when} ({updates} updates) has not left the identity's "
            f"{identity:.2f} % (by more than {IDENTITY_MARGIN_DSC:g} point): the estimator has barely moved; "
            f"raise lr (now {cfg.lr:g}) or the budget"]


def _epoch_means(step_logs: list[dict]) -> dict[str, float]:
    keys = {k for logs in step_logs for k in logs if k != "mu_sample"}
    return {k: float(np.mean([logs[k] for logs in step_logs if k in logs])) for k in sorted(keys)}


def train(cfg: TrainConfig, train_pairs: Sequence[PairSample], out_dir: str | Path,
          val_pairs: Sequence[PairSample] | None = None,
          callback: Callable[[ProgressEvent], None] | None = None,
          data_description: dict | None = None, label: int = MYOCARDIUM) -> TrainResult:
    """Train (or resume) a displacement estimator; write checkpoints, history and the artifact.

    ``out_dir/checkpoints/last.pt`` is resumed from when present. ``callback`` receives a
    :class:`ProgressEvent` after every update and every epoch; an exception it raises (a
    cancellation, say) stops training after the last completed checkpoint.
    """
    from models.artifact import save_artifact, write_json_atomic

    cfg.validate()
    out_dir = Path(out_dir)
    method: Method = METHODS[cfg.method]
    device = torch.device(cfg.device)
    labels = _supervision_labels(cfg, train_pairs)  # refuses a label-assisted run without masks, up front
    extras = SUPERVISION_TERMS[cfg.supervision](cfg.label_weight, labels)
    moving_all, fixed_all = stack_pairs(train_pairs, cfg.intensity)
    masks_all = _stack_masks(train_pairs) if extras else None
    cfg.estimator = EstimatorConfig(**{**asdict(cfg.estimator), "ndim": moving_all.dim() - 2})
    val = _prepare_val(val_pairs, cfg)
    identity = _identity_dice(val, label) if val is not None else None

    # Build: the method's networks and their optimisers, the sampler; everything seeded.
    torch.manual_seed(cfg.seed)
    estimator = build_estimator(cfg.estimator).to(device)
    net_shape = (cfg.estimator.ndim, cfg.estimator.enc, cfg.estimator.dec)
    scorer = ScoringNet(*net_shape).to(device) if method.scoring is not None else None
    auxiliary = method.auxiliary.build(*net_shape).to(device) if method.auxiliary is not None else None
    opt_de = torch.optim.Adam(estimator.parameters(), lr=cfg.lr)
    opt_se = torch.optim.Adam(scorer.parameters(), lr=cfg.scoring_lr or cfg.lr) if scorer is not None else None
    opt_aux = torch.optim.Adam(auxiliary.parameters(), lr=cfg.auxiliary_lr or cfg.lr) \
        if auxiliary is not None else None
    sampler = torch.Generator().manual_seed(cfg.seed)
    start_epoch, global_step, m_t, history = 0, 0, 0.0, []

    ckpt_dir = out_dir / "checkpoints"
    state = load_checkpoint(ckpt_dir)
    if state is not None:
        _check_resumable(state["train_config"], cfg)
        estimator.load_state_dict(state["estimator"])
        opt_de.load_state_dict(state["opt_de"])
        if scorer is not None:
            scorer.load_state_dict(state["scorer"])
            opt_se.load_state_dict(state["opt_se"])
        if auxiliary is not None:
            auxiliary.load_state_dict(state["auxiliary"])
            opt_aux.load_state_dict(state["opt_auxiliary"])
        sampler.set_state(state["rng"]["sampler"])
        torch.set_rng_state(state["rng"]["torch"])
        start_epoch, global_step, m_t = state["epoch"], state["global_step"], state["m_t"]
        history = state["history"]

    n_epochs = total_epochs(cfg)
    total_steps = n_epochs * cfg.steps_per_epoch
    wall_start = time.perf_counter() - sum(h["time_s"] for h in history)
    for epoch in range(start_epoch, n_epochs):
        phase = phase_of_epoch(epoch, cfg)
        epoch_start = time.perf_counter()
        step_logs, mu_samples, trace = [], [], []
        warnings = [w for h in history for w in h.get("warnings", ())]
        for step in range(cfg.steps_per_epoch):
            micro = _sample(sampler, moving_all, fixed_all, cfg, device, masks_all)
            logs: dict[str, float] = {}
            if phase != PHASE_WARMUP_SCORING:
                factor = lr_factor(displacement_updates_before(epoch, step, cfg), displacement_updates(cfg),
                                   cfg.lr_schedule)
                for group in opt_de.param_groups:
                    group["lr"] = cfg.lr * factor
                use_scores = scorer if phase == PHASE_ALTERNATING else None
                logs.update(_displacement_update(estimator, use_scores, opt_de, micro, cfg, auxiliary, opt_aux,
                                                 extras))
                # Eqs. 5-7: μ_t is the epoch's running mean; m_t moves after every displacement update.
                mu_samples.append(logs["mu_sample"])
                m_t = momentum_update(m_t, float(np.mean(mu_samples)), epoch, cfg.kappa, cfg.beta)
            if phase in (PHASE_WARMUP_SCORING, PHASE_ALTERNATING):
                logs.update(_scoring_update(estimator, scorer, opt_se, micro, m_t, cfg))
            global_step += 1
            step_logs.append(logs)
            trace.append({"step": global_step, "mu": float(np.mean(mu_samples)) if mu_samples else None,
                          "m_t": m_t})
            if callback is not None:
                callback(ProgressEvent("step", phase, epoch, n_epochs, step + 1, cfg.steps_per_epoch,
                                       global_step, total_steps, m_t, {k: v for k, v in logs.items()
                                                                       if k != "mu_sample"},
                                       elapsed_s=time.perf_counter() - wall_start, warnings=list(warnings)))

        # Evaluate, log, checkpoint: in this order, so a checkpoint always holds its epoch's history.
        val_metrics = _validate(estimator, val, label)
        mu = float(np.mean(mu_samples)) if mu_samples else None
        new_warnings = _warmup_warnings(epoch, n_epochs, cfg, val_metrics, identity, global_step)
        warnings += new_warnings
        record = {"epoch": epoch, "phase": phase, "updates": global_step, "m_t": m_t, "mu": mu,
                  "a_t": scoring_activation(mu, cfg.kappa) if mu is not None else None,
                  "time_s": time.perf_counter() - epoch_start, **_epoch_means(step_logs), **val_metrics,
                  "trace": trace, **({"warnings": new_warnings} if new_warnings else {})}
        history.append(record)
        save_checkpoint(ckpt_dir, {
            "train_config": cfg.to_dict(), "epoch": epoch + 1, "global_step": global_step, "m_t": m_t,
            "estimator": estimator.state_dict(), "opt_de": opt_de.state_dict(),
            "scorer": scorer.state_dict() if scorer is not None else None,
            "opt_se": opt_se.state_dict() if opt_se is not None else None,
            "auxiliary": auxiliary.state_dict() if auxiliary is not None else None,
            "opt_auxiliary": opt_aux.state_dict() if opt_aux is not None else None,
            "rng": {"sampler": sampler.get_state(), "torch": torch.get_rng_state()},
            "history": history,
        }, {"epoch": epoch + 1, "total_epochs": n_epochs, "global_step": global_step, "m_t": m_t,
            "phase": phase, **val_metrics})
        write_json_atomic(out_dir / "history.json", {"config": cfg.to_dict(), "epochs": history})
        if cfg.picture_every and (epoch + 1) % cfg.picture_every == 0:
            _write_pictures(out_dir, epoch, history, estimator, scorer, val, moving_all, fixed_all, cfg)
        if callback is not None:
            callback(ProgressEvent("epoch", phase, epoch, n_epochs, cfg.steps_per_epoch, cfg.steps_per_epoch,
                                   global_step, total_steps, m_t, _epoch_means(step_logs), val_metrics,
                                   elapsed_s=time.perf_counter() - wall_start, warnings=list(warnings)))

    card = _model_card(cfg, method, history, data_description, train_pairs, time.perf_counter() - wall_start,
                       labels)
    if identity is not None:
        card["validation"]["val_dice_identity"] = identity
    save_artifact(out_dir / "model", estimator.cpu(), cfg.estimator, cfg.intensity, card,
                  train_shape=tuple(moving_all.shape[2:]), train_spacing_mm=_typical_spacing(train_pairs))
    return TrainResult(estimator=estimator, history=history, out_dir=out_dir)


def _typical_spacing(pairs: Sequence[PairSample]) -> tuple[float, ...] | None:
    """Median pixel spacing of the training pairs (array order), or None if any pair has none."""
    if not pairs or any(p.spacing_mm is None for p in pairs):
        return None
    return tuple(float(v) for v in np.median(np.array([p.spacing_mm for p in pairs]), axis=0))


def _check_resumable(saved: dict, cfg: TrainConfig) -> None:
    """A checkpoint resumes only the same run; only the number of main epochs may grow.

    A setting missing from the checkpoint was added after it was written, when the run behaved as
    the setting's default does: it counts as the default.
    """
    current, defaults = cfg.to_dict(), TrainConfig().to_dict()
    saved = {**{k: v for k, v in defaults.items() if k not in saved}, **saved}
    differ = [k for k in current if k not in ("epochs", "picture_every", "device", "val_max_pairs")
              and saved.get(k) != current[k]]
    if differ:
        details = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {current[k]!r}" for k in differ)
        raise ValueError(f"cannot resume: the checkpoint was made with different settings ({details}); "
                         "use another --out or the same settings")


def _write_pictures(out_dir: Path, epoch: int, history: list[dict], estimator, scorer, val, moving_all,
                    fixed_all, cfg: TrainConfig) -> None:
    from models.pictures import plot_curves, plot_panel

    moving, fixed = (val[0], val[1]) if val is not None else (moving_all, fixed_all)
    pictures = out_dir / "pictures"
    plot_panel(pictures / f"panel_epoch{epoch + 1:04d}.png", estimator, scorer, moving[:4], fixed[:4],
               title=f"epoch {epoch + 1} ({history[-1]['phase']})")
    plot_curves(pictures / "curves.png", history, title=f"{cfg.method}: m_t and losses")


def _supervision_card(cfg: TrainConfig, labels: tuple[int, ...]) -> dict:
    """What the model learnt from besides images; the labels are those scored, resolved from the masks
    when the config left them open. Inference needs images only, whatever this says."""
    if cfg.supervision == "none":
        return {"kind": "none"}
    return {"kind": cfg.supervision, "label_weight": cfg.label_weight, "labels": list(labels),
            "labels_asked": list(cfg.labels) if cfg.labels is not None else None,
            "term": "label_weight × (1 − soft Dice) of the training masks, moving warped linearly as one-hot "
                    "channels; training only (inference reads images only)"}


def _model_card(cfg: TrainConfig, method: Method, history: list[dict], data: dict | None,
                train_pairs: Sequence[PairSample], wall_s: float, labels: tuple[int, ...] = ()) -> dict:
    last = history[-1] if history else {}
    displacement_updates = sum(cfg.steps_per_epoch for h in history if h["phase"] != PHASE_WARMUP_SCORING)
    return {
        "architecture": cfg.estimator.arch,
        "method": method.name,
        "method_description": method.description,
        "hyperparameters": {k: v for k, v in cfg.to_dict().items() if k not in ("device", "picture_every")},
        "supervision": _supervision_card(cfg, labels),
        "warnings": [w for h in history for w in h.get("warnings", ())],
        "data": {**(data or {}), "n_train_pairs": len(train_pairs)},
        "training": {"epochs": len(history), "displacement_updates": displacement_updates,
                     "updates": last.get("updates", 0), "final_m_t": last.get("m_t"),
                     "wall_time_s": round(wall_s, 2)},
        "validation": {k: last[k] for k in ("val_dice", "val_folding_pct") if k in last},
        "intended_use": "Research use only. Not a medical device; not for clinical decisions.",
        "displacement_convention": "voxel field d on the fixed grid: moving(x + d(x)) is aligned to fixed(x)",
        "metric_units": "val_dice in percent (myocardium, nearest-neighbour warped mask)",
        "created_by": "adacs-registration trainer",
    }
