"""Value checks: what the voxels of a scalar image or a label image must be, and whether images fit together.

Registration needs finite values (a NaN spreads through every interpolation and loss) and contrast (a
constant image has nothing to align: ``allow_constant`` lifts this), so scalar images are refused
otherwise (:class:`NonFiniteValuesError`, :class:`EmptyImageError`). It computes in float32, so float64
voxels beyond float32's range are refused too (:class:`ValuesOutOfRangeError`): the cast would turn them
into Inf, and the refusal would then blame infinite voxels the file does not have. Label images must
hold whole numbers (:class:`NonIntegerMaskError`); float labels, as some tools write them, are cast to the
smallest integer dtype that holds them (unsigned when no label is negative). An all-zero mask is accepted:
a structure may be absent. A mask must lie on its image's grid, and a fixed/moving pair must share
dimensionality.
"""

from __future__ import annotations

import numpy as np

from models.io.errors import (
    DimensionMismatchError,
    EmptyImageError,
    MaskGeometryError,
    NonFiniteValuesError,
    NonIntegerMaskError,
    ValuesOutOfRangeError,
)
from models.io.image import Image
from models.io.readers.geometry import fmt_size, fmt_vec

__all__ = ["FLOAT32_MAX", "as_labels", "check_scalar", "check_float32_range", "check_pair", "check_mask"]

FLOAT32_MAX = float(np.finfo(np.float32).max)


def _smallest_int(lo: float, hi: float) -> np.dtype:
    """The smallest integer dtype holding ``lo..hi``, unsigned when ``lo >= 0``: labels stay compact."""
    for name in (("uint8", "uint16", "uint32", "uint64") if lo >= 0 else ("int8", "int16", "int32", "int64")):
        info = np.iinfo(name)
        if info.min <= lo and hi <= info.max:
            return np.dtype(name)
    return np.dtype("int64")


def _first_index(mask: np.ndarray) -> str:
    """The first offending voxel's index in ITK order (x, y, z), the order of the header's sizes."""
    where = np.argwhere(mask)[0]
    return fmt_size(reversed(where)).replace("×", ", ")


def as_labels(array: np.ndarray, display: str) -> np.ndarray:
    """Label voxels as integers: bool to uint8, integers kept, whole-number floats cast, anything else refused."""
    if array.dtype == bool:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        return array
    finite = np.isfinite(array)
    if not finite.all():
        raise NonIntegerMaskError(f"the mask holds {int((~finite).sum())} NaN/infinite values (first at index "
                                  f"({_first_index(~finite)}))", path=display)
    fractional = array != np.round(array)
    if fractional.any():
        value = float(array[fractional].flat[0])
        raise NonIntegerMaskError(f"the mask holds {int(fractional.sum())} non-integer values, e.g. {value:g} at "
                                  f"index ({_first_index(fractional)}): labels must be whole numbers", path=display)
    lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    return array.astype(_smallest_int(lo, hi))


def check_float32_range(array: np.ndarray, display: str) -> None:
    """Refuse finite voxels that float32, the type registration computes in, cannot hold.

    Only floating types wider than float32 can hold them (int64's range fits in float32's); call this on
    finite voxels, before any cast, so that the message says what the file holds.
    """
    if not np.issubdtype(array.dtype, np.floating) or array.dtype.itemsize <= 4 or not array.size:
        return
    beyond = np.abs(array) > FLOAT32_MAX
    if beyond.any():
        count = int(beyond.sum())
        raise ValuesOutOfRangeError(f"has {count} voxels beyond ±{FLOAT32_MAX:.4g}, the range of 32-bit floats "
                                    f"that registration computes in (first at index ({_first_index(beyond)}))",
                                    path=display, count=count, limit=FLOAT32_MAX)


def _check_finite(array: np.ndarray, display: str) -> None:
    """Refuse NaN/±Inf voxels, counting each kind so the user knows what to replace."""
    if not np.issubdtype(array.dtype, np.floating):
        return
    finite = np.isfinite(array)
    if not finite.all():
        n_nan = int(np.isnan(array).sum())
        n_inf = int((~finite).sum()) - n_nan
        raise NonFiniteValuesError(f"has {n_nan} NaN and {n_inf} infinite voxels (first at index "
                                   f"({_first_index(~finite)}))", path=display, nan=n_nan, inf=n_inf)


def check_scalar(array: np.ndarray, display: str, allow_constant: bool) -> None:
    """Refuse NaN/±Inf voxels, voxels beyond float32's range and, unless ``allow_constant``, no contrast."""
    _check_finite(array, display)
    check_float32_range(array, display)
    if not allow_constant and array.size and array.min() == array.max():
        raise EmptyImageError(f"every voxel has the value {float(array.flat[0]):g}: there is no contrast to register",
                              path=display, hint="check that the right file or series was uploaded")


def _grid(image: Image, with_direction: bool) -> str:
    """An image's grid for a mismatch message; the direction only when it is what differs."""
    text = (f"size {fmt_size(image.size)}, spacing {fmt_vec(image.geometry.spacing)} mm, origin "
            f"{fmt_vec(image.geometry.origin)}")
    return text + (f", direction {fmt_vec(image.geometry.direction)}" if with_direction else "")


def check_pair(fixed: Image, moving: Image) -> None:
    """Refuse a fixed/moving pair of different dimensionality (:class:`DimensionMismatchError`)."""
    if fixed.ndim != moving.ndim:
        raise DimensionMismatchError(f"the fixed image {fixed.source} is {fixed.ndim}-D (size "
                                     f"{fmt_size(fixed.size)}) but the moving image {moving.source} is "
                                     f"{moving.ndim}-D (size {fmt_size(moving.size)})")


def check_mask(mask: Image, image: Image) -> None:
    """Refuse a mask that does not fit its image: dimensionality, grid, or non-integer values."""
    if mask.ndim != image.ndim:
        raise DimensionMismatchError(f"the mask is {mask.ndim}-D (size {fmt_size(mask.size)}) but its image "
                                     f"{image.source} is {image.ndim}-D (size {fmt_size(image.size)})",
                                     path=mask.source, hint="upload the mask that was drawn on this image")
    if not mask.same_grid(image):
        turned = not np.allclose(mask.geometry.direction, image.geometry.direction, atol=1e-4)
        raise MaskGeometryError(f"the mask grid ({_grid(mask, turned)}) differs from the grid of its image "
                                f"{image.source} ({_grid(image, turned)})", path=mask.source)
    array = mask.array
    if np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array) | (array != np.round(np.nan_to_num(array)))
        if bad.any():
            raise NonIntegerMaskError(f"the mask holds {int(bad.sum())} non-integer values, e.g. "
                                      f"{float(array[bad].flat[0]):g}", path=mask.source)
    elif not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise NonIntegerMaskError(f"the mask has voxels of type {array.dtype}, not integer labels", path=mask.source)
