"""One in-memory image type: voxels plus physical geometry, in ITK's conventions.

Geometry is a value (float64, named fields) and labels are a kind: a ``label`` image is always
resampled nearest-neighbour and keeps its integer dtype. Axis orders, stated once:

- ``Geometry`` is in ITK **index order** ``(x, y[, z])`` and ITK's physical **LPS** space (mm):
  ``point = origin + direction @ (spacing * index)``; column ``k`` of ``direction`` is the physical
  direction of index axis ``k``.
- ``Image.array`` is in **reversed** (NumPy) order ``(z, y, x)`` / ``(y, x)``, exactly what
  ``SimpleITK.GetArrayFromImage`` returns, so ``array.shape == tuple(reversed(size))``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

__all__ = ["Geometry", "Image", "SCALAR", "LABEL"]

SCALAR, LABEL = "scalar", "label"


@dataclass(frozen=True)
class Geometry:
    """Spacing (mm), origin (mm, LPS) and direction cosines, all in ITK index order."""

    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]  # row-major ndim × ndim

    def __post_init__(self) -> None:
        ndim = len(self.spacing)
        if ndim not in (2, 3) or len(self.origin) != ndim or len(self.direction) != ndim * ndim:
            raise ValueError(f"inconsistent geometry: spacing {self.spacing}, origin {self.origin}, "
                             f"direction of {len(self.direction)} values")
        if min(self.spacing) <= 0:
            raise ValueError(f"spacing must be positive, got {self.spacing}")

    @property
    def ndim(self) -> int:
        return len(self.spacing)

    @property
    def matrix(self) -> np.ndarray:
        """Direction cosines as an ``(ndim, ndim)`` float64 array."""
        return np.asarray(self.direction, dtype=np.float64).reshape(self.ndim, self.ndim)

    @classmethod
    def identity(cls, ndim: int, spacing: tuple[float, ...] | None = None) -> Geometry:
        return cls(tuple(float(s) for s in (spacing or (1.0,) * ndim)), (0.0,) * ndim,
                   tuple(float(v) for v in np.eye(ndim).ravel()))

    @classmethod
    def of(cls, image: sitk.Image) -> Geometry:
        return cls(tuple(image.GetSpacing()), tuple(image.GetOrigin()), tuple(image.GetDirection()))

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def index_to_physical(self, index_xyz: np.ndarray) -> np.ndarray:
        """``(..., ndim)`` continuous indices in ITK order -> ``(..., ndim)`` LPS points in mm."""
        scaled = np.asarray(index_xyz, dtype=np.float64) * np.asarray(self.spacing)
        return scaled @ self.matrix.T + np.asarray(self.origin)

    def close_to(self, other: Geometry, tol: float = 1e-4) -> bool:
        return (self.ndim == other.ndim and np.allclose(self.spacing, other.spacing, atol=tol)
                and np.allclose(self.origin, other.origin, atol=tol)
                and np.allclose(self.direction, other.direction, atol=tol))


@dataclass
class Image:
    """Voxels (reversed axis order) + geometry + kind; ``source`` names the input in messages."""

    array: np.ndarray
    geometry: Geometry
    kind: str = SCALAR
    source: str = "<memory>"
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in (SCALAR, LABEL):
            raise ValueError(f"kind must be {SCALAR!r} or {LABEL!r}, got {self.kind!r}")
        if self.array.ndim != self.geometry.ndim:
            raise ValueError(f"{self.source}: a {self.array.ndim}-D array with {self.geometry.ndim}-D geometry")

    @property
    def ndim(self) -> int:
        return self.array.ndim

    @property
    def size(self) -> tuple[int, ...]:
        """Grid size in ITK index order ``(x, y[, z])``."""
        return tuple(reversed(self.array.shape))

    def same_grid(self, other: Image, tol: float = 1e-4) -> bool:
        return self.array.shape == other.array.shape and self.geometry.close_to(other.geometry, tol)

    def to_sitk(self) -> sitk.Image:
        return self.geometry.apply_to(sitk.GetImageFromArray(self.array))

    @classmethod
    def from_sitk(cls, image: sitk.Image, kind: str = SCALAR, source: str = "<memory>") -> Image:
        return cls(sitk.GetArrayFromImage(image), Geometry.of(image), kind, source)

    def with_array(self, array: np.ndarray, kind: str | None = None) -> Image:
        """The same grid holding other voxels (a warped image, a resampled mask)."""
        return Image(array, self.geometry, kind or self.kind, self.source, dict(self.metadata))
