"""Velocity integration (scaling and squaring) and field resizing.

Shapes follow ``models.warp``: fields are ``(B, ndim, *spatial)`` in voxels of their own grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.warp import warp

__all__ = ["integrate_velocity", "resize_field", "VelocityIntegrator"]


def integrate_velocity(vel: torch.Tensor, steps: int) -> torch.Tensor:
    """Exponentiate a stationary velocity field by scaling and squaring.

    ``disp_0 = vel / 2**steps``; then ``steps`` times ``disp <- disp + disp∘(id + disp)``.
    ``steps == 0`` returns ``vel`` unchanged (the field is used as a displacement directly).

    >>> vel = torch.full((1, 2, 8, 8), 0.5)
    >>> torch.allclose(integrate_velocity(vel, 7)[:, :, 2:-2, 2:-2], vel[:, :, 2:-2, 2:-2], atol=1e-5)
    True
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    disp = vel / (2**steps)
    for _ in range(steps):
        disp = disp + warp(disp, disp)
    return disp


def resize_field(field: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Resample a displacement field to a new grid of ``size`` and rescale its values.

    Grids are aligned at their corners (``align_corners=True``, as in ``warp``), so one voxel of the
    old grid along axis ``k`` is ``(new_k - 1) / (old_k - 1)`` voxels of the new grid.
    """
    ndim = field.shape[1]
    old = field.shape[2:]
    if tuple(old) == tuple(size):
        return field
    if len(size) != ndim:
        raise ValueError(f"size {tuple(size)} does not match a {ndim}-D field")
    mode = "bilinear" if ndim == 2 else "trilinear"
    out = F.interpolate(field, size=tuple(size), mode=mode, align_corners=True)
    scale = torch.tensor([(n - 1) / max(o - 1, 1) for n, o in zip(size, old)],
                         device=field.device, dtype=field.dtype)
    return out * scale.view(1, ndim, *([1] * ndim))


class VelocityIntegrator(torch.nn.Module):
    """Integrate a velocity at ``1/downsize`` resolution and return the full-resolution displacement."""

    def __init__(self, steps: int = 7, downsize: int = 2) -> None:
        super().__init__()
        if downsize < 1:
            raise ValueError(f"downsize must be >= 1, got {downsize}")
        self.steps = steps
        self.downsize = downsize

    def low_res_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(max(s // self.downsize, 2) for s in shape)

    def forward(self, vel: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """``vel`` at integration resolution -> displacement ``(B, ndim, *shape)``."""
        return resize_field(integrate_velocity(vel, self.steps), shape)
