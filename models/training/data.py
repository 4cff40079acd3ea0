"""The training set in memory, and the seeded draw of the micro-batches of each update.

The whole set is stacked once (images normalised, masks in the smallest integer type that holds
them), and every update draws its pairs with replacement from a generator the checkpoint saves, so
a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from models.data.pairs import PairSample
from models.training.config import TrainConfig

__all__ = ["Batch", "sample_micro_batches", "stack_masks", "supervision_labels"]


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


def sample_micro_batches(generator: torch.Generator, moving: torch.Tensor, fixed: torch.Tensor, cfg: TrainConfig,
                         device: torch.device, masks: tuple[torch.Tensor, torch.Tensor] | None = None,
                         shard: tuple[int, int] = (0, 1)) -> list[Batch]:
    """Draw one update's micro-batches (with replacement) from the seeded sampler.

    ``masks`` (label-assisted training) are indexed with the images' draws, so the draws, and a run
    without masks, are exactly those of a run that never had them.

    ``shard = (rank, world_size)`` across processes: every rank draws the whole update from its copy
    of the generator (all in the same state) and keeps its ``batch_size / world_size`` pairs, cut into
    micro-batches of ``gcd(batch_size / world_size, micro_batch_size)`` pairs. When ``world_size``
    divides ``accum_steps`` these are exactly the one-process micro-batches, rank r's the r-th run of
    them, so N processes compute the same micro-batch losses one process does.
    """
    rank, world_size = shard
    draws = torch.cat([torch.randint(moving.shape[0], (cfg.micro_batch_size,), generator=generator)
                       for _ in range(cfg.accum_steps)])
    share = cfg.batch_size // world_size
    out = []
    for idx in draws[rank * share:(rank + 1) * share].split(math.gcd(share, cfg.micro_batch_size)):
        label_maps = (masks[0][idx].to(device), masks[1][idx].to(device)) if masks is not None else (None, None)
        out.append(Batch(moving[idx].to(device), fixed[idx].to(device), *label_maps))
    return out


def supervision_labels(cfg: TrainConfig, pairs: Sequence[PairSample]) -> tuple[int, ...]:
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


def stack_masks(pairs: Sequence[PairSample]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, 1, *spatial)`` moving and fixed label maps, in the smallest integer type that holds them
    (the whole training set stays in memory, like the images)."""
    moving = np.stack([p.moving_mask for p in pairs])[:, None]
    fixed = np.stack([p.fixed_mask for p in pairs])[:, None]
    dtype = np.uint8 if max(moving.max(), fixed.max()) <= np.iinfo(np.uint8).max else np.int32
    return torch.from_numpy(moving.astype(dtype)), torch.from_numpy(fixed.astype(dtype))
