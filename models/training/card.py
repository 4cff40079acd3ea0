"""The model card a finished training writes beside the weights: what the model is, how and on
what it was trained, how it validated, and what it is for."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.data.pairs import PairSample
from models.objectives import Method
from models.training.config import TrainConfig
from models.training.schedule import PHASE_WARMUP_SCORING

__all__ = ["model_card", "typical_spacing"]


def model_card(cfg: TrainConfig, method: Method, history: list[dict], data: dict | None,
               train_pairs: Sequence[PairSample], wall_s: float, labels: tuple[int, ...] = ()) -> dict:
    last = history[-1] if history else {}
    displacement_updates = sum(cfg.steps_per_epoch for h in history if h["phase"] != PHASE_WARMUP_SCORING)
    return {
        "architecture": cfg.estimator.arch,
        "method": method.name,
        "method_description": method.description,
        "hyperparameters": {k: v for k, v in cfg.to_dict().items() if k not in ("device", "picture_every")},
        "supervision": supervision_card(cfg, labels),
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


def supervision_card(cfg: TrainConfig, labels: tuple[int, ...]) -> dict:
    """What the model learnt from besides images; the labels are those scored, resolved from the masks
    when the config left them open. Inference needs images only, whatever this says."""
    if cfg.supervision == "none":
        return {"kind": "none"}
    return {"kind": cfg.supervision, "label_weight": cfg.label_weight, "labels": list(labels),
            "labels_asked": list(cfg.labels) if cfg.labels is not None else None,
            "term": "label_weight × (1 − soft Dice) of the training masks, moving warped linearly as one-hot "
                    "channels; training only (inference reads images only)"}


def typical_spacing(pairs: Sequence[PairSample]) -> tuple[float, ...] | None:
    """Median pixel spacing of the training pairs (array order), or None if any pair has none."""
    if not pairs or any(p.spacing_mm is None for p in pairs):
        return None
    return tuple(float(v) for v in np.median(np.array([p.spacing_mm for p in pairs]), axis=0))
