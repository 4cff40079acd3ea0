"""Fixed-size windows around a point, and the centroid of a label in a mask.

Both work in array index coordinates and for any number of dimensions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["crop_or_pad", "mask_centroid", "paste_window", "window_slices"]


def _round_half_up(value: float) -> int:
    """Round to the nearest integer, halves upwards (deterministic, unlike banker's ``round``)."""
    return int(math.floor(value + 0.5))


def window_slices(center: Sequence[float], size: Sequence[int],
                  shape: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]] | None:
    """Where a window of ``size`` centred on ``center`` overlaps an array of ``shape``.

    ``center`` is rounded (halves upwards) to the index ``c`` per axis; the window covers indices
    ``c - size // 2`` to ``c - size // 2 + size - 1``, so the centre lands at index ``size // 2`` of
    the window. Returns ``(array_slices, window_slices)`` of the overlap, or None when there is none.
    Cropping (:func:`crop_or_pad`) and pasting back (:func:`paste_window`) both use it, so they are
    exact inverses on the overlap.
    """
    if len(center) != len(shape) or len(size) != len(shape):
        raise ValueError(
            f"crop_or_pad: center {tuple(center)} and size {tuple(size)} must both have one entry per axis "
            f"of the array (ndim {len(shape)})"
        )
    if any(int(s) <= 0 for s in size):
        raise ValueError(f"crop_or_pad: size must be positive, got {tuple(size)}")
    if not all(math.isfinite(float(c)) for c in center):
        raise ValueError(f"crop_or_pad: center must be finite, got {tuple(center)}")
    src: list[slice] = []
    dst: list[slice] = []
    for c, s, n in zip(center, size, shape, strict=True):
        start = _round_half_up(float(c)) - int(s) // 2
        lo, hi = max(start, 0), min(start + int(s), n)
        if hi <= lo:  # the window misses the array along this axis
            return None
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    return tuple(src), tuple(dst)


def crop_or_pad(array: np.ndarray, center: Sequence[float], size: Sequence[int]) -> np.ndarray:
    """The window of shape ``size`` centred on ``center`` (see :func:`window_slices`), zero-padded
    where it leaves ``array``. The result is a new array with the dtype of ``array``."""
    arr = np.asarray(array)
    overlap = window_slices(center, size, arr.shape)
    out = np.zeros(tuple(int(s) for s in size), dtype=arr.dtype)
    if overlap is not None:
        out[overlap[1]] = arr[overlap[0]]
    return out


def paste_window(window: np.ndarray, center: Sequence[float], shape: Sequence[int],
                 leading: int = 0) -> np.ndarray:
    """The inverse of :func:`crop_or_pad`: a zero array of ``shape`` holding ``window`` where it was cut.

    The first ``leading`` axes (channels, say) are copied whole; the window sits on the others.
    """
    out = np.zeros(tuple(shape), dtype=window.dtype)
    overlap = window_slices(center, window.shape[leading:], tuple(shape)[leading:])
    if overlap is not None:
        whole = (slice(None),) * leading
        out[whole + overlap[0]] = window[whole + overlap[1]]
    return out


def mask_centroid(mask: np.ndarray, label: int) -> tuple[float, ...] | None:
    """Mean index coordinates (one float per axis) of the voxels where ``mask == label``; None if none."""
    coords = np.nonzero(np.asarray(mask) == label)
    if coords[0].size == 0:
        return None
    return tuple(float(np.mean(axis_coords)) for axis_coords in coords)
