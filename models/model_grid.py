"""From a pair on the fixed image's grid to the model's input grid, and the field back again.

A model was trained on windows of ``model_shape`` voxels (128×128 crops for ACDC), at a known pixel
spacing or not. At inference we cut a window around the region of interest (the moving mask's
centroid when a mask is given, else the image centre) that covers the same physical field of view
as the training crops when both spacings are known (else the same number of voxels), resize it to
``model_shape``, predict, and map the field back: resize to the window (values rescaled to native
voxels) and paste it into the native grid. Outside the window the field decays smoothly to the
identity (:func:`taper_outside`): cut off at the window's edge, it had a step of up to 2 mm there,
which no tissue has. Arrays are in NumPy (reversed ITK) axis order throughout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from models.data.crop import crop_or_pad, paste_window, window_slices
from models.integrate import resize_field

__all__ = ["ModelGrid", "plan_model_grid", "to_model_grid", "field_to_native", "taper_outside"]

MIN_TAPER_VOXELS, MAX_TAPER_VOXELS = 8, 64


@dataclass(frozen=True)
class ModelGrid:
    """A window of ``window`` native voxels centred on ``center``, seen by the model as ``model_shape``."""

    center: tuple[float, ...]
    window: tuple[int, ...]
    model_shape: tuple[int, ...]


def plan_model_grid(shape: Sequence[int], spacing_mm: Sequence[float] | None, model_shape: Sequence[int] | None,
                    model_spacing_mm: Sequence[float] | None, center: Sequence[float] | None) -> ModelGrid:
    """Choose the window for an image of ``shape``; ``model_shape=None`` means the whole native grid."""
    shape = tuple(int(s) for s in shape)
    if center is None:
        center = tuple((s - 1) / 2 for s in shape)
    if model_shape is None:
        return ModelGrid(tuple((s - 1) / 2 for s in shape), shape, shape)
    model_shape = tuple(int(s) for s in model_shape)
    if len(model_shape) != len(shape):
        raise ValueError(f"the model's grid {model_shape} and the image's {shape} differ in dimension")
    if spacing_mm is None or model_spacing_mm is None:
        window = model_shape
    else:
        window = tuple(max(2, round(m * ms / s)) for m, ms, s in zip(model_shape, model_spacing_mm, spacing_mm))
    return ModelGrid(tuple(_keep_inside(c, w, n) for c, w, n in zip(center, window, shape)), window, model_shape)


def _keep_inside(center: float, window: int, size: int) -> float:
    """Move the window's centre so the window covers as much image and as little padding as it can.

    An image that fits in the window is centred in it (no image voxel lost); otherwise the window
    stays on the region of interest but is shifted to lie inside the image. Zero padding the model
    never saw in training would also skew the per-window intensity normalisation.
    """
    if window >= size:
        return (size - 1) / 2
    start = min(max(math.floor(center + 0.5) - window // 2, 0), size - window)
    return float(start + window // 2)


def to_model_grid(arrays: np.ndarray, grid: ModelGrid) -> torch.Tensor:
    """``(N, *native)`` -> ``(N, 1, *model_shape)`` float32: crop/pad to the window, then resize (linear)."""
    windows = np.stack([crop_or_pad(a, grid.center, grid.window) for a in arrays]).astype(np.float32)
    out = torch.from_numpy(windows)[:, None]
    if grid.window != grid.model_shape:
        mode = "bilinear" if len(grid.window) == 2 else "trilinear"
        out = F.interpolate(out, size=grid.model_shape, mode=mode, align_corners=True)
    return out


def field_to_native(disp: torch.Tensor, grid: ModelGrid, native_shape: Sequence[int]) -> np.ndarray:
    """``(N, ndim, *model_shape)`` voxels of the model grid -> ``(N, ndim, *native)`` native voxels."""
    window = resize_field(disp, grid.window).cpu().numpy()
    pasted = np.stack([paste_window(w, grid.center, (w.shape[0], *native_shape), leading=1) for w in window])
    overlap = window_slices(grid.center, grid.window, tuple(native_shape))
    return pasted if overlap is None else taper_outside(pasted, overlap[0])


def taper_outside(field: np.ndarray, box: tuple[slice, ...]) -> np.ndarray:
    """``field`` ``(N, ndim, *spatial)``, known inside ``box``, carried outside it by its nearest edge value
    times a cosine decay from 1 at the edge to 0 after ``margin`` voxels.

    The margin is long enough that no step between neighbours outside is larger than the largest one
    inside (``π·|u_edge| / (2·margin)`` is the decay's steepest step), between 8 and 64 voxels; with
    steps that small the map stays invertible (positive Jacobian) through the decay.
    """
    spatial = field.shape[2:]
    bounds = [(b.start, b.stop - 1) for b in box]
    if all(lo == 0 and hi == n - 1 for (lo, hi), n in zip(bounds, spatial)):
        return field
    nearest = np.ix_(*[np.clip(np.arange(n), lo, hi) for (lo, hi), n in zip(bounds, spatial)])
    edge = field[(slice(None), slice(None), *nearest)]
    distance = np.sqrt(sum(np.maximum(np.maximum(lo - axis, axis - hi), 0) ** 2.0
                           for axis, (lo, hi) in zip(np.ix_(*[np.arange(n) for n in spatial]), bounds)))
    inside = field[(slice(None), slice(None), *box)]
    steps = [np.abs(np.diff(inside, axis=2 + k)).max() for k in range(len(spatial)) if inside.shape[2 + k] > 1]
    largest_step, largest_edge = max(steps, default=0.0), float(np.abs(edge).max())
    margin = MAX_TAPER_VOXELS if largest_step == 0 else math.pi * largest_edge / (2 * largest_step)
    margin = float(np.clip(margin, MIN_TAPER_VOXELS, MAX_TAPER_VOXELS))
    decay = np.where(distance < margin, 0.5 * (1 + np.cos(np.pi * np.minimum(distance, margin) / margin)), 0.0)
    return (edge * decay).astype(field.dtype)
