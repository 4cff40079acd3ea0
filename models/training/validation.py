"""Validation during training: Dice of the warped masks after every epoch, the identity's Dice
that gives it a meaning, and the warning when the warm-up has not left the identity."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.data.pairs import PairSample
from models.defaults import IDENTITY_MARGIN_DSC
from models.inference import predict_disp, stack_pairs, warp_labels
from models.metrics import dice, folding_percent
from models.networks.estimator import DisplacementEstimator
from models.training.config import TrainConfig

__all__ = ["identity_dice", "validate", "validation_set", "warmup_warnings"]


def validation_set(pairs: Sequence[PairSample] | None, cfg: TrainConfig) -> tuple | None:
    """``(moving, fixed, moving_masks, fixed_masks)`` of the first ``val_max_pairs`` pairs with both masks
    (images stacked ``(N, 1, *spatial)``, masks as arrays), or None when no pair has them."""
    pairs = [p for p in (pairs or []) if p.moving_mask is not None and p.fixed_mask is not None]
    if not pairs:
        return None
    pairs = pairs[: cfg.val_max_pairs]
    moving, fixed = stack_pairs(pairs, cfg.intensity)
    return moving, fixed, [p.moving_mask for p in pairs], [p.fixed_mask for p in pairs]


def validate(estimator: DisplacementEstimator, val: tuple | None, label: int) -> dict[str, float]:
    if val is None:
        return {}
    moving, fixed, moving_masks, fixed_masks = val
    disp = predict_disp(estimator, moving, fixed)
    dsc = [dice(warp_labels(mm, d) == label, fm == label)
           for d, mm, fm in zip(disp, moving_masks, fixed_masks)]
    folding = [folding_percent(d.numpy()) for d in disp]
    return {"val_dice": float(np.mean(dsc)), "val_folding_pct": float(np.mean(folding))}


def identity_dice(val: tuple, label: int) -> float:
    """Validation Dice with no registration: the baseline that gives a validation Dice its meaning
    (and shows whether the displacement warm-up had registered anything before scoring began)."""
    _, _, moving_masks, fixed_masks = val
    return float(np.mean([dice(mm == label, fm == label) for mm, fm in zip(moving_masks, fixed_masks)]))


def warmup_warnings(epoch: int, n_epochs: int, cfg: TrainConfig, val_metrics: dict[str, float],
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
