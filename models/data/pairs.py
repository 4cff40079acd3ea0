"""The in-memory unit of registration data: one source (moving) / target (fixed) pair."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MYOCARDIUM", "PairSample"]

#: Label of the myocardium in every dataset we read (ACDC and CAMUS both use 2), and in the phantom.
MYOCARDIUM = 2


@dataclass
class PairSample:
    """One registration pair on a common grid.

    Arrays are NumPy with spatial shape ``(H, W)`` or ``(D, H, W)`` (no channel axis). Images are
    float32 as read (not yet normalised: normalisation belongs to the model, see
    ``models.intensity``); masks are integer label maps (0 background, 2 myocardium).

    ``disp_gt`` (synthetic data only) is ``(ndim, *spatial)`` in voxels, on the fixed grid, and pulls
    the moving image back onto it: ``moving(x + disp_gt(x)) ≈ fixed(x)`` (the convention of
    ``models.warp``), so it is directly comparable with a predicted ``disp``.

    ``tags`` name the nuisances a pair is known to carry by construction (synthetic data only, e.g.
    ``"dropout-fixed"``), so that an evaluation can split its scores by nuisance.
    """

    moving: np.ndarray
    fixed: np.ndarray
    pair_id: str
    subject_id: str
    moving_mask: np.ndarray | None = None
    fixed_mask: np.ndarray | None = None
    spacing_mm: tuple[float, ...] | None = None
    disp_gt: np.ndarray | None = None
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.moving.shape != self.fixed.shape:
            raise ValueError(f"pair {self.pair_id}: moving {self.moving.shape} and fixed {self.fixed.shape} "
                             "differ")
        for name in ("moving_mask", "fixed_mask"):
            mask = getattr(self, name)
            if mask is not None and mask.shape != self.fixed.shape:
                raise ValueError(f"pair {self.pair_id}: {name} {mask.shape} differs from image "
                                 f"{self.fixed.shape}")
        if self.disp_gt is not None and self.disp_gt.shape != (self.ndim, *self.fixed.shape):
            raise ValueError(f"pair {self.pair_id}: disp_gt {self.disp_gt.shape} is not (ndim, *spatial)")

    @property
    def ndim(self) -> int:
        return self.fixed.ndim

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.fixed.shape)
