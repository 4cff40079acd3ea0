"""Training defaults, in one place, importable without torch.

``models.trainer.TrainConfig`` takes its defaults from :data:`TRAIN_DEFAULTS`, and so do the flags of
``adacs train`` and the API's ``TrainingHyperparameters``. The API process must not import torch, so
this module imports nothing but the standard library; a default changed here changes all three.

Where a default departs from the SPEC, and why (numbers from benchmarks/LOG.md and issue 12):
- ``lr = 1e-3`` for the displacement estimator (the SPEC's 1e-4): at a CPU budget, 1e-4 barely
  leaves the identity, while 1000 updates at 1e-3 reached about 80 % myocardium Dice on unseen ACDC
  patients, as good as the paper's VoxelMorph after 15 times the updates.
- ``scoring_lr = 1e-4``: the AdaCS scoring network keeps the SPEC's rate, because at 1e-3 its sigmoid
  saturated to ``S ≡ 1`` within 50 updates and passed no gradient from then on (AdaCS collapsed to
  vanilla).
- ``warmup_epochs = 20``, ``epochs = 20``, ``steps_per_epoch = 25``: the measured recipe, 1000
  displacement updates of batch 8 (AdaCS: 20 + 20 warm-up epochs and 20 alternating; the baselines
  40 epochs of displacement updates), about 12 CPU minutes on ACDC. The SPEC's 300 epochs of 50
  updates is a GPU budget: ask for it explicitly.

- ``arch = "pyramid"``, ``method = "none"``: the best-measured recipe on ACDC
  (``benchmarks/results/accuracy_frontier.md``, two seeds each): the coarse-to-fine estimator beats
  VoxelMorph by +1.6 myocardium DSC (p = 0.02 over patients) at 1.2x the cost per update, and AdaCS
  did not beat the vanilla objective there (80.3 vs 80.8; README "What AdaCS buys"). AdaCS stays one
  flag away (``method="adacs"``), as do VoxelMorph and the other estimators.

Label-assisted training (``supervision = "labels"``) adds ``label_weight`` times a soft Dice between
the fixed mask and the warped moving mask over ``labels``. ``labels = None`` means every foreground
label present, the only choice that suits any dataset's label numbering. Its weight is measured
against the image term's scale (an MSE of normalised intensities, ~0.003 once trained): on ACDC val
(``benchmarks/results/accuracy_frontier.md``, pyramid, 1000 updates, myocardium label) weight 0.05
gained +1.2 DSC over two seeds (83.6 vs 82.4) while 0.3 lost 0.8 (VoxelMorph: −1.7): at 0.3 the
term outweighs the images many times over and the field bends the neighbouring structures to fit
one mask. The issue's trial also found that all three ACDC labels hurt on 2D slices (through-plane
motion makes a slice's RV and LV masks disagree between frames), so 2D cardiac users should pass
``labels=(2,)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["TrainDefaults", "TRAIN_DEFAULTS", "MAX_MICRO_BATCH", "SUPERVISIONS", "LR_SCHEDULES",
           "IDENTITY_MARGIN_DSC", "default_micro_batch_size", "check_lr_schedule", "check_label_weight",
           "check_labels", "check_supervision"]

#: Largest default micro-batch: the authors accumulate a batch of 8 as two micro-batches of 4.
MAX_MICRO_BATCH = 4

#: How the displacement estimator's learning rate moves over its updates (``models.trainer.lr_factor``).
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")

#: What a training run may learn from besides the images: nothing, or the training masks.
SUPERVISIONS: tuple[str, ...] = ("none", "labels")

#: Validation Dice (percentage points) a run must gain over no registration by the end of its
#: warm-up, or its progress and model card carry a warning that the estimator has barely moved.
IDENTITY_MARGIN_DSC = 1.0


@dataclass(frozen=True)
class TrainDefaults:
    """The default of every training hyperparameter that a user can set (CLI flag, API field)."""

    arch: str = "pyramid"  # the displacement estimator (models.networks; the CLI's --arch, the API's architecture)
    method: str = "none"
    epochs: int = 20
    warmup_epochs: int = 20
    steps_per_epoch: int = 25
    batch_size: int = 8
    micro_batch_size: int = MAX_MICRO_BATCH
    lr: float = 1e-3
    lr_schedule: str = "constant"  # or "cosine": the estimator's lr decays to 0 over its updates
    scoring_lr: float | None = 1e-4  # None: the same as lr
    auxiliary_lr: float | None = None  # None: the same as lr (NLL's variance net trains jointly with f_θ)
    lam: float = 0.01
    alpha: float = 0.02
    beta: float = 1.5
    kappa: float = 50.0
    # The baselines' constants (SPEC "Baselines"; the papers print none of them, these are ours).
    beta_nll: float = 0.5  # β-NLL's exponent: 0 is the NLL, 1 the MSE's gradient
    adareg_sigma: float = 1.0  # AdaReg's σ_r: the local residual's scale in units of the global one
    adaframe_a: float = 2.0  # AdaFrame's sigmoid slope, per standard deviation of the residual
    adaframe_b: float = 1.5  # AdaFrame's threshold, in standard deviations above the image's mean residual
    bidir: bool = True
    seed: int = 0
    supervision: str = "none"
    label_weight: float = 0.05
    labels: tuple[int, ...] | None = None  # None: every foreground label present in the training masks


TRAIN_DEFAULTS = TrainDefaults()


def default_micro_batch_size(batch_size: int) -> int:
    """The micro-batch when none is asked for: the whole batch, up to :data:`MAX_MICRO_BATCH` pairs."""
    return min(MAX_MICRO_BATCH, batch_size)


def check_supervision(supervision: str) -> None:
    """A ValueError naming the choices unless ``supervision`` is one of :data:`SUPERVISIONS`."""
    if supervision not in SUPERVISIONS:
        raise ValueError(f"unknown supervision {supervision!r}; known: {', '.join(SUPERVISIONS)}")


def check_label_weight(weight: float) -> None:
    """The label term's weight is a finite number > 0 (0 would be a label-assisted run without labels)."""
    if not (isinstance(weight, int | float) and math.isfinite(weight) and weight > 0):
        raise ValueError(f"label_weight must be a finite number > 0, got {weight!r}")


def check_labels(labels: Sequence[int] | None) -> None:
    """``None`` (every foreground label), or distinct integer labels >= 1 (0 is the background)."""
    if labels is None:
        return
    if not labels:
        raise ValueError("labels must name at least one label (or be left out for every foreground label)")
    bad = [v for v in labels if isinstance(v, bool) or not isinstance(v, int) or v < 1]
    if bad:
        raise ValueError(f"labels must be integers >= 1 (0 is the background), got {list(labels)}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct, got {list(labels)}")


def check_lr_schedule(schedule: str) -> None:
    """A ValueError naming the choices unless ``schedule`` is one of :data:`LR_SCHEDULES`."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {schedule!r}; known: {', '.join(LR_SCHEDULES)}")
