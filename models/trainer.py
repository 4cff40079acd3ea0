"""Algorithm 1 of AdaCS, and the baselines on the same loop, selected by ``TrainConfig.method``.

Reads top to bottom: build the method's networks (or resume them), then one loop over epochs
(sample, update, validate, log, checkpoint), then the artifact. Budgets are counted in optimiser
updates: ``steps_per_epoch`` updates per epoch, each of ``batch_size`` pairs accumulated over
micro-batches of ``micro_batch_size`` (the authors: batch 8 as two micro-batches of 4). The parts
live in :mod:`models.training`: the config, the schedule (pure functions of the epoch), the training
set and its sampler, the two update steps, validation and the model card.

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

In a torch.distributed process group (:mod:`models.training.distributed`) the same loop is one rank
of a data-parallel run: each rank draws its share of every update and trains DDP-wrapped networks;
rank 0 alone validates, checkpoints, writes and reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from models.checkpoint import load_checkpoint, restore_rng, rng_state, save_checkpoint
from models.data.pairs import MYOCARDIUM, PairSample
from models.inference import stack_pairs
from models.io.atomic import write_json_atomic
from models.losses import momentum_update, scoring_activation
from models.networks.estimator import DisplacementEstimator
from models.networks.registry import build_estimator
from models.networks.scoring import ScoringNet
from models.objectives import METHODS, SUPERVISION_TERMS, ExtraTerm, Method
from models.training.card import model_card, typical_spacing
from models.training.config import TrainConfig, check_resumable
from models.training.data import Batch, sample_micro_batches, stack_masks, supervision_labels
from models.training.distributed import Group, StopRequested, unwrap
from models.training.schedule import (
    PHASE_ALTERNATING,
    PHASE_DISPLACEMENT,
    PHASE_WARMUP_DISPLACEMENT,
    PHASE_WARMUP_SCORING,
    displacement_updates,
    displacement_updates_before,
    lr_factor,
    phase_of_epoch,
    total_epochs,
)
from models.training.steps import displacement_update, scoring_update, shared_scores
from models.training.validation import identity_dice, validate, validation_set, warmup_warnings

__all__ = ["lr_factor", "displacement_updates", "displacement_updates_before", "TrainConfig", "ProgressEvent",
           "TrainResult", "Batch", "train", "phase_of_epoch", "total_epochs",
           "PHASE_WARMUP_DISPLACEMENT", "PHASE_WARMUP_SCORING", "PHASE_ALTERNATING", "PHASE_DISPLACEMENT"]


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
    warnings: list[str] = field(default_factory=list)  # the run's warnings so far (see warmup_warnings)


@dataclass
class TrainResult:
    estimator: DisplacementEstimator
    history: list[dict]
    out_dir: Path


@dataclass
class _Networks:
    """The method's networks and an Adam for each: the displacement estimator ``f_θ`` always, the
    scoring network ``g_ϕ`` (AdaCS) and the auxiliary network (NLL's variance U-Net) when it has one."""

    estimator: DisplacementEstimator
    estimator_optimizer: torch.optim.Optimizer
    scorer: ScoringNet | None = None
    scorer_optimizer: torch.optim.Optimizer | None = None
    auxiliary: torch.nn.Module | None = None
    auxiliary_optimizer: torch.optim.Optimizer | None = None

    @classmethod
    def build(cls, cfg: TrainConfig, method: Method, device: torch.device) -> _Networks:
        """Freshly initialised from torch's global RNG, in a fixed order, so a seed fixes them all."""
        estimator = build_estimator(cfg.estimator).to(device)
        nets = cls(estimator, torch.optim.Adam(estimator.parameters(), lr=cfg.lr))
        shape = (cfg.estimator.ndim, cfg.estimator.enc, cfg.estimator.dec)
        if method.scoring is not None:
            nets.scorer = ScoringNet(*shape).to(device)
            nets.scorer_optimizer = torch.optim.Adam(nets.scorer.parameters(), lr=cfg.scoring_lr or cfg.lr)
        if method.auxiliary is not None:
            nets.auxiliary = method.auxiliary.build(*shape).to(device)
            nets.auxiliary_optimizer = torch.optim.Adam(nets.auxiliary.parameters(), lr=cfg.auxiliary_lr or cfg.lr)
        return nets

    def wrapped(self, group: Group) -> _Networks:
        """The same networks and optimisers, each network in DDP when ``group`` spans processes (for the
        updates alone: validation, pictures and checkpoints read the bare modules of ``self``)."""
        return replace(self, estimator=group.wrap(self.estimator), scorer=group.wrap(self.scorer),
                       auxiliary=group.wrap(self.auxiliary))

    def _by_key(self) -> list[tuple[str, torch.nn.Module | torch.optim.Optimizer | None]]:
        # The checkpoint's keys: a stored format. "opt_de" and "opt_se" (the displacement estimator's and
        # the scoring network's optimisers) are the names every checkpoint so far was written with.
        return [("estimator", self.estimator), ("opt_de", self.estimator_optimizer), ("scorer", self.scorer),
                ("opt_se", self.scorer_optimizer), ("auxiliary", self.auxiliary),
                ("opt_auxiliary", self.auxiliary_optimizer)]

    def state_dict(self) -> dict:
        """Every network's and optimiser's state under its checkpoint key (None for a network the method lacks)."""
        return {key: part.state_dict() if part is not None else None for key, part in self._by_key()}

    def load_state_dict(self, state: dict) -> None:
        for key, part in self._by_key():
            if part is not None:
                part.load_state_dict(state[key])


@dataclass
class _Loop:
    """Where a run stands between epochs: with the networks and the generators, what a checkpoint holds."""

    epoch: int = 0  # the next epoch to run
    global_step: int = 0
    m_t: float = 0.0
    history: list[dict] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        return [w for h in self.history for w in h.get("warnings", ())]


@dataclass
class _TrainingSet:
    """The training pairs in memory, ``(N, 1, *spatial)``, the seeded generator that draws from them,
    the device the drawn micro-batches go to, and this process's share of each draw (rank, world size)."""

    moving: torch.Tensor
    fixed: torch.Tensor
    masks: tuple[torch.Tensor, torch.Tensor] | None
    sampler: torch.Generator
    device: torch.device
    shard: tuple[int, int] = (0, 1)

    def draw(self, cfg: TrainConfig) -> list[Batch]:
        return sample_micro_batches(self.sampler, self.moving, self.fixed, cfg, self.device, self.masks, self.shard)


def _build(cfg: TrainConfig, group: Group, images: tuple[torch.Tensor, torch.Tensor],
           masks: tuple[torch.Tensor, torch.Tensor] | None, ckpt_dir: Path) -> tuple[_Networks, _TrainingSet, _Loop]:
    """The method's networks and optimisers, the sampler and the loop state, all seeded (identically
    on every rank), then resumed from the last checkpoint when there is one."""
    if cfg.batch_size % group.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} must be a multiple of the {group.world_size} processes")
    device = group.device(torch.device(cfg.device))
    torch.manual_seed(cfg.seed)
    nets = _Networks.build(cfg, METHODS[cfg.method], device)
    data = _TrainingSet(*images, masks, torch.Generator().manual_seed(cfg.seed), device, (group.rank, group.world_size))
    loop = _resume(ckpt_dir, cfg, nets, data, group)
    group.seed(cfg.seed, loop.epoch)
    return nets, data, loop


def _resume(ckpt_dir: Path, cfg: TrainConfig, nets: _Networks, data: _TrainingSet, group: Group) -> _Loop:
    """The loop state of the last checkpoint, with networks, optimisers and generators restored from it;
    a fresh start when there is none. A checkpoint of another run's settings is refused. Across
    processes rank 0 reads it and sends it to the others."""
    state = group.broadcast(load_checkpoint(ckpt_dir) if group.is_main else None)
    if state is None:
        return _Loop()
    check_resumable(state["train_config"], cfg)
    nets.load_state_dict(state)
    restore_rng(state["rng"], data.sampler, data.device)
    return _Loop(state["epoch"], state["global_step"], state["m_t"], state["history"])


def _checkpoint(cfg: TrainConfig, loop: _Loop, nets: _Networks, data: _TrainingSet) -> dict:
    return {"train_config": cfg.to_dict(), "epoch": loop.epoch, "global_step": loop.global_step, "m_t": loop.m_t,
            **nets.state_dict(), "rng": rng_state(data.sampler, data.device), "history": loop.history}


@dataclass
class _Reporter:
    """Sends :class:`ProgressEvent` to the caller's callback (if any), timed from the run's first epoch.

    Across processes only rank 0 has a callback; every rank calls this at the same points and learns
    there whether rank 0's callback raised (a cancellation), so that all stop after the same update.
    """

    callback: Callable[[ProgressEvent], None] | None
    cfg: TrainConfig
    n_epochs: int
    wall_start: float
    group: Group = field(default_factory=Group)
    stopped: Exception | None = None

    def __call__(self, kind: str, phase: str, epoch: int, step: int, loop: _Loop, losses: dict[str, float],
                 val: dict[str, float], warnings: list[str]) -> None:
        if self.callback is not None:
            try:
                self.callback(ProgressEvent(kind, phase, epoch, self.n_epochs, step, self.cfg.steps_per_epoch,
                                            loop.global_step, self.n_epochs * self.cfg.steps_per_epoch, loop.m_t,
                                            losses, val, elapsed_s=self.elapsed_s(), warnings=list(warnings)))
            except Exception as error:
                if self.group.world_size == 1:
                    raise
                self.stopped = error
        if self.group.any(self.stopped is not None):
            raise self.stopped or StopRequested(f"rank 0 stopped training after update {loop.global_step}")

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.wall_start


def _run_epoch(epoch: int, phase: str, cfg: TrainConfig, nets: _Networks, data: _TrainingSet,
               extras: Sequence[ExtraTerm], loop: _Loop, report: _Reporter) -> tuple[list[dict], list[float], list]:
    """The epoch's updates: per update, the logs; the epoch's ``μ`` samples; the ``(step, μ, m_t)`` trace.

    ``nets`` are the networks as trained (in DDP across processes); each update's logs are averaged
    over the processes, so that every rank moves ``m_t`` alike."""
    step_logs, mu_samples, trace = [], [], []
    warnings = loop.warnings
    for step in range(cfg.steps_per_epoch):
        micro = data.draw(cfg)
        logs: dict[str, float] = {}
        # One scorer forward for both updates of an alternating step, where that pays (steps.shared_scores).
        shared = shared_scores(nets.scorer, micro, cfg) if phase == PHASE_ALTERNATING else None
        if phase != PHASE_WARMUP_SCORING:
            factor = lr_factor(displacement_updates_before(epoch, step, cfg), displacement_updates(cfg),
                               cfg.lr_schedule)
            for group in nets.estimator_optimizer.param_groups:
                group["lr"] = cfg.lr * factor
            use_scores = unwrap(nets.scorer) if phase == PHASE_ALTERNATING else None
            logs.update(report.group.mean(displacement_update(nets.estimator, use_scores, nets.estimator_optimizer,
                                                              micro, cfg, nets.auxiliary, nets.auxiliary_optimizer,
                                                              extras, shared)))
            # Eqs. 5-7: μ_t is the epoch's running mean; m_t moves after every displacement update.
            mu_samples.append(logs["mu_sample"])
            loop.m_t = momentum_update(loop.m_t, float(np.mean(mu_samples)), epoch, cfg.kappa, cfg.beta)
        if phase in (PHASE_WARMUP_SCORING, PHASE_ALTERNATING):
            logs.update(report.group.mean(scoring_update(unwrap(nets.estimator), nets.scorer, nets.scorer_optimizer,
                                                         micro, loop.m_t, cfg, shared)))
        loop.global_step += 1
        step_logs.append(logs)
        trace.append({"step": loop.global_step, "mu": float(np.mean(mu_samples)) if mu_samples else None,
                      "m_t": loop.m_t})
        report("step", phase, epoch, step + 1, loop, {k: v for k, v in logs.items() if k != "mu_sample"}, {},
               warnings)
    return step_logs, mu_samples, trace


def _epoch_record(epoch: int, phase: str, cfg: TrainConfig, loop: _Loop, step_logs: list[dict],
                  mu_samples: list[float], trace: list, val_metrics: dict[str, float], warnings: list[str],
                  time_s: float) -> dict:
    """The epoch's line of the history: position, ``m_t``, ``μ`` and ``a_t``, mean losses, validation."""
    mu = float(np.mean(mu_samples)) if mu_samples else None
    return {"epoch": epoch, "phase": phase, "updates": loop.global_step, "m_t": loop.m_t, "mu": mu,
            "a_t": scoring_activation(mu, cfg.kappa) if mu is not None else None,
            "time_s": time_s, **_epoch_means(step_logs), **val_metrics,
            "trace": trace, **({"warnings": warnings} if warnings else {})}


def train(cfg: TrainConfig, train_pairs: Sequence[PairSample], out_dir: str | Path,
          val_pairs: Sequence[PairSample] | None = None,
          callback: Callable[[ProgressEvent], None] | None = None,
          data_description: dict | None = None, label: int = MYOCARDIUM) -> TrainResult:
    """Train (or resume) a displacement estimator; write checkpoints, history and the artifact.

    ``out_dir/checkpoints/last.pt`` is resumed from when present. ``callback`` receives a
    :class:`ProgressEvent` after every update and every epoch; an exception it raises (a
    cancellation, say) stops training after the last completed checkpoint. ``cfg`` is not changed.

    In a process group (:mod:`models.training.distributed`: ``launch`` or torchrun), this is one rank
    of a data-parallel run: each rank takes ``batch_size / world_size`` pairs of every update, and
    rank 0 alone validates and writes (others may pass no validation pairs and no callback).
    """
    cfg.validate()
    group = Group.current()
    out_dir, ckpt_dir = Path(out_dir), Path(out_dir) / "checkpoints"
    labels = supervision_labels(cfg, train_pairs)  # refuses a label-assisted run without masks, up front
    extras = SUPERVISION_TERMS[cfg.supervision](cfg.label_weight, labels)
    moving_all, fixed_all = stack_pairs(train_pairs, cfg.intensity)
    masks_all = stack_masks(train_pairs) if extras else None
    # The run's own copy, which knows the data's dimension: the caller's config stays as it was given.
    cfg = replace(cfg, estimator=replace(cfg.estimator, ndim=moving_all.dim() - 2))
    val = validation_set(val_pairs, cfg) if group.is_main else None
    identity = identity_dice(val, label) if val is not None else None

    # Build: the method's networks and their optimisers, the sampler; everything seeded. The updates
    # go through `trained` (DDP across processes); validation and checkpoints read the bare `nets`.
    nets, data, loop = _build(cfg, group, (moving_all, fixed_all), masks_all, ckpt_dir)
    trained = nets.wrapped(group)

    n_epochs = total_epochs(cfg)
    report = _Reporter(callback, cfg, n_epochs, time.perf_counter() - sum(h["time_s"] for h in loop.history), group)
    for epoch in range(loop.epoch, n_epochs):
        phase, epoch_start = phase_of_epoch(epoch, cfg), time.perf_counter()
        step_logs, mu_samples, trace = _run_epoch(epoch, phase, cfg, trained, data, extras, loop, report)

        # Evaluate, log, checkpoint: in this order, so a checkpoint always holds its epoch's history.
        val_metrics = validate(nets.estimator, val, label)
        new_warnings = warmup_warnings(epoch, n_epochs, cfg, val_metrics, identity, loop.global_step)
        loop.history.append(_epoch_record(epoch, phase, cfg, loop, step_logs, mu_samples, trace, val_metrics,
                                          new_warnings, time.perf_counter() - epoch_start))
        loop.epoch = epoch + 1
        if group.is_main:
            save_checkpoint(ckpt_dir, _checkpoint(cfg, loop, nets, data),
                            {"epoch": loop.epoch, "total_epochs": n_epochs, "global_step": loop.global_step,
                             "m_t": loop.m_t, "phase": phase, **val_metrics})
            write_json_atomic(out_dir / "history.json", {"config": cfg.to_dict(), "epochs": loop.history})
            if cfg.picture_every and (epoch + 1) % cfg.picture_every == 0:
                _write_pictures(out_dir, epoch, loop.history, nets, val, data, cfg, identity)
        report("epoch", phase, epoch, cfg.steps_per_epoch, loop, _epoch_means(step_logs), val_metrics,
               loop.warnings)

    if group.is_main:
        _save_model(out_dir, cfg, nets.estimator, loop.history, data_description, train_pairs, report.elapsed_s(),
                    labels, identity, tuple(moving_all.shape[2:]), group.world_size)
    return TrainResult(estimator=nets.estimator, history=loop.history, out_dir=out_dir)


def _save_model(out_dir: Path, cfg: TrainConfig, estimator: DisplacementEstimator, history: list[dict],
                data_description: dict | None, train_pairs: Sequence[PairSample], wall_s: float,
                labels: tuple[int, ...], identity: float | None, train_shape: tuple[int, ...],
                processes: int = 1) -> None:
    """The artifact: the estimator alone (never the scoring or auxiliary network) and its model card."""
    from models.artifact import save_artifact

    card = model_card(cfg, METHODS[cfg.method], history, data_description, train_pairs, wall_s, labels)
    card["training"]["processes"] = processes  # the wall time's meaning: one process per device
    if identity is not None:
        card["validation"]["val_dice_identity"] = identity
    save_artifact(out_dir / "model", estimator.cpu(), cfg.estimator, cfg.intensity, card,
                  train_shape=train_shape, train_spacing_mm=typical_spacing(train_pairs))


def _write_pictures(out_dir: Path, epoch: int, history: list[dict], nets: _Networks, val: tuple | None,
                    data: _TrainingSet, cfg: TrainConfig, identity: float | None) -> None:
    from models.pictures import plot_curves, plot_panel

    moving, fixed = (val[0], val[1]) if val is not None else (data.moving, data.fixed)
    pictures = out_dir / "pictures"
    which = "validation set" if val is not None else "training set"
    plot_panel(pictures / f"panel_epoch{epoch + 1:04d}.png", nets.estimator, nets.scorer, moving[:4], fixed[:4],
               title=f"{cfg.method}, epoch {epoch + 1} ({history[-1]['phase']}), {which}")
    plot_curves(pictures / "curves.png", history, title=cfg.method, identity_dice=identity)


def _epoch_means(step_logs: list[dict]) -> dict[str, float]:
    keys = {k for logs in step_logs for k in logs if k != "mu_sample"}
    return {k: float(np.mean([logs[k] for logs in step_logs if k in logs])) for k in sorted(keys)}
