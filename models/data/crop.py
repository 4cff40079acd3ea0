"""Fixed-size windows around a point, and the centroid of a label in a mask.

Both work in array index coordinates and for any number of dimensions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["crop_or_pad", "mask_centroid"]


def _round_half_up(value: float) -> int:
    """Round to the nearest integer, halves upwards (deterministic, unlike banker's ``round``)."""
    return int(math.floor(value + 0.5))


def crop_or_pad(array: np.ndarray, center: Sequence[float], size: Sequence[int]) -> np.ndarray:
    """The window of shape ``size`` centred on ``center``, zero-padded where it leaves ``array``.

    ``center`` is rounded (halves upwards) to the index ``c`` per axis; the window then covers indices
    ``c - size // 2`` to ``c - size // 2 + size - 1``, so the centre lands at index ``size // 2`` of
    the result (for odd and even sizes alike). Parts of the window outside ``array`` are filled with
    zeros. The result is a new array with the dtype of ``array``.
    """
    arr = np.asarray(array)
    if len(center) != arr.ndim or len(size) != arr.ndim:
        raise ValueError(
            f"crop_or_pad: center {tuple(center)} and size {tuple(size)} must both have one entry per axis "
            f"of the array (ndim {arr.ndim})"
        )
    sizes = tuple(int(s) for s in size)
    if any(s <= 0 for s in sizes):
        raise ValueError(f"crop_or_pad: size must be positive, got {tuple(size)}")
    if not all(math.isfinite(float(c)) for c in center):
        raise ValueError(f"crop_or_pad: center must be finite, got {tuple(center)}")

    out = np.zeros(sizes, dtype=arr.dtype)
    src: list[slice] = []
    dst: list[slice] = []
    for c, s, n in zip(center, sizes, arr.shape, strict=True):
        start = _round_half_up(float(c)) - s // 2
        lo, hi = max(start, 0), min(start + s, n)
        if hi <= lo:  # the window misses the array along this axis: all padding
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[tuple(dst)] = arr[tuple(src)]
    return out


def mask_centroid(mask: np.ndarray, label: int) -> tuple[float, ...] | None:
    """Mean index coordinates (one float per axis) of the voxels where ``mask == label``; None if none."""
    coords = np.nonzero(np.asarray(mask) == label)
    if coords[0].size == 0:
        return None
    return tuple(float(np.mean(axis_coords)) for axis_coords in coords)
