"""Spatial transformer: resample an image at ``x + disp(x)``.

Conventions used everywhere in ``models/``:

- images are ``(B, C, *spatial)`` with ``spatial = (H, W)`` or ``(D, H, W)``;
- a displacement ``disp`` is ``(B, ndim, *spatial)`` in **voxels**, channel ``k`` being the
  displacement along tensor axis ``2 + k`` (so channel 0 is H in 2D and D in 3D);
- ``warp(moving, disp)(x) = moving(x + disp(x))``: the field lives on the fixed grid and
  pulls the moving image back onto it (ITK's DisplacementFieldTransform convention, in voxels).

We call ``grid_sample`` directly instead of MONAI's ``Warp``: the two are bit-identical with
``padding_mode="zeros"`` (checked in tests/test_warp.py), but ``Warp`` defaults to border padding
and rebuilds its reference grid on every call, and we cache ours per (shape, device, dtype).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

__all__ = ["identity_grid", "warp", "SpatialTransformer"]

_MODES = {"linear", "nearest"}


@functools.lru_cache(maxsize=32)
def _cached_identity(shape: tuple[int, ...], device: str, dtype: torch.dtype) -> torch.Tensor:
    axes = [torch.arange(n, device=device, dtype=dtype) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


def identity_grid(shape: tuple[int, ...], device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Voxel coordinates of a grid, ``(ndim, *shape)``; channel ``k`` is the index along axis ``k``."""
    return _cached_identity(tuple(int(s) for s in shape), str(device), dtype)


def warp(moving: torch.Tensor, disp: torch.Tensor, mode: str = "linear") -> torch.Tensor:
    """Sample ``moving`` at ``x + disp(x)``; outside the image is zero.

    Args:
        moving: ``(B, C, *spatial)``.
        disp: ``(B, ndim, *spatial)`` in voxels, same spatial shape as the output grid.
        mode: ``"linear"`` (bi/trilinear) or ``"nearest"`` (for label maps).

    Returns:
        ``(B, C, *disp.shape[2:])``.

    >>> moving = torch.arange(4.0).reshape(1, 1, 2, 2)
    >>> warp(moving, torch.zeros(1, 2, 2, 2)).equal(moving)
    True
    """
    ndim = disp.shape[1]
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {sorted(_MODES)}, got {mode!r}")
    if ndim not in (2, 3) or disp.dim() != ndim + 2:
        raise ValueError(f"disp must be (B, ndim, *spatial) with ndim 2 or 3, got shape {tuple(disp.shape)}")
    if moving.dim() != disp.dim():
        raise ValueError(f"moving {tuple(moving.shape)} and disp {tuple(disp.shape)} differ in rank")
    spatial = disp.shape[2:]
    coords = identity_grid(tuple(spatial), disp.device, disp.dtype).unsqueeze(0) + disp
    in_shape = moving.shape[2:]
    # align_corners=True maps voxel 0 to -1 and voxel n-1 to +1.
    scale = torch.tensor([2.0 / max(n - 1, 1) for n in in_shape], device=disp.device, dtype=disp.dtype)
    coords = coords * scale.view(1, ndim, *([1] * ndim)) - 1.0
    # grid_sample wants the last dim ordered (x, y[, z]) = reversed tensor axes.
    grid = coords.movedim(1, -1).flip(-1)
    gs_mode = "bilinear" if mode == "linear" else "nearest"
    return F.grid_sample(moving, grid.to(moving.dtype), mode=gs_mode, padding_mode="zeros",
                         align_corners=True)


class SpatialTransformer(torch.nn.Module):
    """Module holder for :func:`warp` (no parameters)."""

    def __init__(self, mode: str = "linear") -> None:
        super().__init__()
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {sorted(_MODES)}, got {mode!r}")
        self.mode = mode

    def forward(self, moving: torch.Tensor, disp: torch.Tensor) -> torch.Tensor:
        return warp(moving, disp, self.mode)
