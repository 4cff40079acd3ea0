"""Geometry values as every reader builds and shows them: float tuples, positive spacings.

Writers disagree on the sign of a spacing (descending DICOM frames, some NIfTI and MetaImage files). Each
reader passes what it found through :func:`checked_geometry`, so every :class:`Geometry` handed on has
positive spacings with the sign folded into the direction, and a zero or non-finite spacing, which no
resampling can use, is refused in one place with one message.
"""

from __future__ import annotations

import numpy as np

from models.io.errors import UnreadableImageError
from models.io.image import Geometry

__all__ = ["floats", "fmt_size", "fmt_vec", "checked_geometry"]


def floats(values) -> tuple[float, ...]:
    """A flat tuple of Python floats: what :class:`Geometry` stores, from arrays, NumPy scalars or lists."""
    return tuple(float(v) for v in np.ravel(values))


def fmt_size(size) -> str:
    """A grid size as messages show it, ``64×64×20``."""
    return "×".join(str(int(s)) for s in size)


def fmt_vec(values) -> str:
    """A spacing, origin or direction as messages show it, ``(1.5, 1.5, 3)``: short enough to compare by eye."""
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def checked_geometry(spacing, origin, direction, display: str) -> Geometry:
    """A :class:`Geometry`, negative spacings folded into the direction; zero spacing refused."""
    given = floats(spacing)
    spacing = np.asarray(given, dtype=np.float64)
    ndim = len(spacing)
    direction = np.array(direction, dtype=np.float64).reshape(ndim, ndim)
    direction[:, spacing < 0] *= -1
    spacing = np.abs(spacing)
    if np.any(spacing == 0) or not np.all(np.isfinite(spacing)):
        raise UnreadableImageError(f"the header states a voxel spacing of {fmt_vec(given)} mm; spacings must be "
                                   "positive", path=display, hint="fix the spacing in the header")
    return Geometry(floats(spacing), floats(origin), floats(direction))
