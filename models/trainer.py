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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from models.checkpoint import load_checkpoint, save_checkpoint
from models.data.pairs import MYOCARDIUM, PairSample
from models.inference import eval_mode, predict_disp, stack_pairs, warp_labels
from models.intensity import IntensityConfig
from models.losses import momentum_update, scoring_activation
from models.metrics import dice, folding_percent
from models.networks.estimator import DisplacementEstimator, EstimatorConfig, build_estimator
from models.networks.scoring import ScoringNet
from models.objectives import (
    METHODS,
    BaselineConstants,
    Method,
    directions,
    displacement_loss,
    score_maps,
    scoring_objective,
)

__all__ = ["TrainConfig", "ProgressEvent", "TrainResult", "train", "phase_of_epoch", "total_epochs",
           "PHASE_WARMUP_DISPLACEMENT", "PHASE_WARMUP_SCORING", "PHASE_ALTERNATING", "PHASE_DISPLACEMENT"]

PHASE_WARMUP_DISPLACEMENT = "warmup-displacement"
PHASE_WARMUP_SCORING = "warmup-scoring"
PHASE_ALTERNATING = "alternating"
PHASE_DISPLACEMENT = "displacement"  # the only phase of methods without a scoring network


@dataclass
class TrainConfig:
    """Hyperparameters of one training run (SPEC defaults); the worker fills it from a job row."""

    method: str = "adacs"
    epochs: int = 300
    warmup_epochs: int = 20
    steps_per_epoch: int = 50
    batch_size: int = 8
    micro_batch_size: int = 4
    lr: float = 1e-4
    scoring_lr: float | None = None  # None: the same as lr (the SPEC's 1e-4 for both networks)
    lam: float = 0.01
    alpha: float = 0.02
    beta: float = 1.5
    kappa: float = 50.0
    # The baselines' constants (SPEC "Baselines"; documented in models.objectives.BaselineConstants).
    beta_nll: float = BaselineConstants.beta_nll
    adareg_sigma: float = BaselineConstants.adareg_sigma
    adaframe_a: float = BaselineConstants.adaframe_a
    adaframe_b: float = BaselineConstants.adaframe_b
    auxiliary_lr: float | None = None  # None: the same as lr (the auxiliary network trains jointly with f_θ)
    bidir: bool = True
    seed: int = 0
    val_max_pairs: int = 64
    picture_every: int = 0
    device: str = "cpu"
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    intensity: IntensityConfig = field(default_factory=IntensityConfig)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["estimator"] = self.estimator.to_dict()
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


def total_epochs(cfg: TrainConfig) -> int:
    warmups = 2 if METHODS[cfg.method].scoring is not None else 1
    return warmups * cfg.warmup_epochs + cfg.epochs


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


@dataclass
class TrainResult:
    estimator: DisplacementEstimator
    history: list[dict]
    out_dir: Path


Batch = tuple[torch.Tensor, torch.Tensor]


def _displacement_update(estimator: DisplacementEstimator, scorer: ScoringNet | None,
                         optimizer: torch.optim.Optimizer, micro: Sequence[Batch], cfg: TrainConfig,
                         auxiliary: torch.nn.Module | None = None,
                         auxiliary_optimizer: torch.optim.Optimizer | None = None) -> dict:
    """One optimiser update of ``f_θ`` on the method's displacement objective.

    ``scorer``: the scoring network whose detached scores weigh the data term (Eq. 2), or None
    (Eq. 1 for AdaCS's warm-up). ``auxiliary``: the method's auxiliary network, updated jointly by
    ``auxiliary_optimizer`` on the same loss, whose maps the data term reads (NLL's ``s``), or None.
    """
    method = METHODS[cfg.method]
    optimizers = [optimizer] + ([auxiliary_optimizer] if auxiliary_optimizer is not None else [])
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    logs = {"loss_de": 0.0, "data": 0.0, "smooth": 0.0}
    for moving, fixed in micro:
        deformation = estimator(moving, fixed)
        dirs = directions(moving, fixed, deformation, cfg.bidir)
        maps = None
        if scorer is not None:
            with torch.no_grad():  # sg[S]: the scores are constants for f_θ
                maps = score_maps(scorer, dirs)
        if auxiliary is not None:  # trained jointly: its maps keep their graph
            maps = method.auxiliary.maps(auxiliary, dirs)
            logs[method.auxiliary.log_key] = logs.get(method.auxiliary.log_key, 0.0) + \
                torch.stack([m.detach().mean() for m in maps]).mean().item() / len(micro)
        loss = displacement_loss(dirs, deformation, cfg.lam, cfg.estimator.int_downsize, maps,
                                 data_term=method.data_term, regulariser=method.regulariser,
                                 constants=cfg.constants)
        (loss.total / len(micro)).backward()
        for key, value in (("loss_de", loss.total), ("data", loss.data), ("smooth", loss.smooth),
                           ("aux", loss.aux)):
            if value is not None:
                logs[key] = logs.get(key, 0.0) + value.item() / len(micro)
    for opt in optimizers:
        opt.step()
    # μ's scale (SPEC Eq. 5): the data term averaged over directions, halved again when bidirectional.
    # Methods without a scoring network log m_t of their own data term as a diagnostic only.
    logs["mu_sample"] = logs["data"] / (2 if cfg.bidir else 1)
    return logs


def _scoring_update(estimator: DisplacementEstimator, scorer: ScoringNet, optimizer: torch.optim.Optimizer,
                    micro: Sequence[Batch], m_t: float, cfg: TrainConfig) -> dict:
    """One optimiser update of ``g_ϕ`` on the method's scoring terms (Eq. 9 for AdaCS) with residuals
    of the current (frozen) ``f_θ``.

    The residuals come from ``f_θ`` in eval mode, i.e. from the registration it would return: an
    estimator whose training forward is stochastic (DiffuseMorph noises its target) would otherwise
    teach ``g_ϕ`` where the *noised* registration fails, and on ACDC that scored the heart itself
    as unreliable (AdaCS with DiffuseMorph fell from 69.5 to 56.2 DSC; benchmarks/LOG.md).
    """
    terms = METHODS[cfg.method].scoring
    optimizer.zero_grad(set_to_none=True)
    logs = {"loss_se": 0.0, "scs": 0.0, "reg": 0.0, "tv": 0.0, "score_mean": 0.0}
    for moving, fixed in micro:
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


def _sample(generator: torch.Generator, moving: torch.Tensor, fixed: torch.Tensor, cfg: TrainConfig,
            device: torch.device) -> list[Batch]:
    """Draw one update's micro-batches (with replacement) from the seeded sampler."""
    out = []
    for _ in range(cfg.accum_steps):
        idx = torch.randint(moving.shape[0], (cfg.micro_batch_size,), generator=generator)
        out.append((moving[idx].to(device), fixed[idx].to(device)))
    return out


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
    moving_all, fixed_all = stack_pairs(train_pairs, cfg.intensity)
    cfg.estimator = EstimatorConfig(**{**asdict(cfg.estimator), "ndim": moving_all.dim() - 2})
    val = _prepare_val(val_pairs, cfg)

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
        for step in range(cfg.steps_per_epoch):
            micro = _sample(sampler, moving_all, fixed_all, cfg, device)
            logs: dict[str, float] = {}
            if phase != PHASE_WARMUP_SCORING:
                use_scores = scorer if phase == PHASE_ALTERNATING else None
                logs.update(_displacement_update(estimator, use_scores, opt_de, micro, cfg, auxiliary, opt_aux))
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
                                       elapsed_s=time.perf_counter() - wall_start))

        # Evaluate, log, checkpoint: in this order, so a checkpoint always holds its epoch's history.
        val_metrics = _validate(estimator, val, label)
        mu = float(np.mean(mu_samples)) if mu_samples else None
        record = {"epoch": epoch, "phase": phase, "updates": global_step, "m_t": m_t, "mu": mu,
                  "a_t": scoring_activation(mu, cfg.kappa) if mu is not None else None,
                  "time_s": time.perf_counter() - epoch_start, **_epoch_means(step_logs), **val_metrics,
                  "trace": trace}
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
                                   elapsed_s=time.perf_counter() - wall_start))

    card = _model_card(cfg, method, history, data_description, train_pairs, time.perf_counter() - wall_start)
    if val is not None:
        card["validation"]["val_dice_identity"] = _identity_dice(val, label)
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


def _model_card(cfg: TrainConfig, method: Method, history: list[dict], data: dict | None,
                train_pairs: Sequence[PairSample], wall_s: float) -> dict:
    last = history[-1] if history else {}
    displacement_updates = sum(cfg.steps_per_epoch for h in history if h["phase"] != PHASE_WARMUP_SCORING)
    return {
        "architecture": cfg.estimator.arch,
        "method": method.name,
        "method_description": method.description,
        "hyperparameters": {k: v for k, v in cfg.to_dict().items() if k not in ("device", "picture_every")},
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
