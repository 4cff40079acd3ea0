"""What a user derives from a displacement field: its Jacobian determinant map and its inverse.

Both work on the field as written (``displacement.nii.gz``: millimetres, ITK's physical LPS space,
fixed point ``p`` maps to ``p + u(p)``), so they are as right for an oblique, anisotropic grid as for
an axis-aligned one. ``sitk.DisplacementFieldJacobianDeterminant`` is not: it differentiates along
the index axes scaled by spacing but ignores the image direction, and reported 0.05–0.2 % folding on
oblique outputs that have none (measured; see tests/test_field_maps.py). Here the field is first
brought to index units, ``u_index = S⁻¹ Dᵀ u_mm``; since ``∂u_mm/∂p = D S (∂u_index/∂i) S⁻¹ Dᵀ``,
``det(I + ∂u_mm/∂p) = det(I + ∂u_index/∂i)`` exactly, and the latter is differentiated on the grid.

The inverse ``v`` lives on the moving image's grid (a point ``q`` of the moving image maps to
``q + v(q)`` in the fixed image) and solves ``v(q) = −u(q + v(q))`` by fixed-point iteration, which
converges where the map is smooth and invertible (``‖∂u/∂p‖ < 1``); the composition's residual is
measured, not assumed, over the fixed voxels that the forward map sends inside the moving grid.
Imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import map_coordinates

from models.metrics import jacobian_determinant

__all__ = ["jacobian_image", "jacobian_summary", "invert_field", "InverseField", "sample_field"]

INVERSE_ITERATIONS = 30
INVERSE_TOLERANCE_MM = 1e-3  # stop once no vector moves by more than this between iterations


def _geometry(image: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ndim = image.GetDimension()
    direction = np.asarray(image.GetDirection(), np.float64).reshape(ndim, ndim)
    return np.asarray(image.GetOrigin(), np.float64), np.asarray(image.GetSpacing(), np.float64), direction


def _vectors(field: sitk.Image) -> np.ndarray:
    """The field's vectors ``(*array_shape, ndim)`` in mm (ITK x, y, z component order)."""
    return sitk.GetArrayFromImage(field).astype(np.float64)


def jacobian_image(field: sitk.Image) -> sitk.Image:
    """``det(∂φ/∂p)`` of ``φ(p) = p + u(p)`` per voxel, on the field's grid (float32; ``≤ 0`` is folding)."""
    _, spacing, direction = _geometry(field)
    u_mm = _vectors(field)  # (*array, ndim), components in ITK order
    u_index = (u_mm @ direction) / spacing  # row-vector form of S⁻¹ Dᵀ u: index units, ITK order
    disp_array = np.moveaxis(u_index[..., ::-1], -1, 0)  # channel k along array axis k
    det = jacobian_determinant(disp_array)
    image = sitk.GetImageFromArray(det.astype(np.float32))
    image.CopyInformation(field)
    return image


def jacobian_summary(det: np.ndarray) -> dict[str, float]:
    """Folding (% of voxels with ``det ≤ 0``) and the spread of ``log det`` over the unfolded voxels:
    the two numbers papers report for a field's regularity."""
    det = np.asarray(det, np.float64)
    positive = det[det > 0]
    return {"folding_pct": round(float(100.0 * np.mean(det <= 0)), 4),
            "log_jacobian_std": round(float(np.std(np.log(positive))), 5) if positive.size else float("nan"),
            "jacobian_min": round(float(det.min()), 5), "jacobian_max": round(float(det.max()), 5)}


def _points(reference: sitk.Image) -> np.ndarray:
    """Physical positions ``(*array_shape, ndim)`` of every voxel of ``reference`` (ITK order)."""
    origin, spacing, direction = _geometry(reference)
    index = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in reference.GetSize()], indexing="ij"),
                     axis=-1)  # (x, y, z, ndim) in index order
    points = origin + (index * spacing) @ direction.T
    return np.transpose(points, (*range(points.ndim - 2, -1, -1), points.ndim - 1))  # to array order


def sample_field(field: sitk.Image, points: np.ndarray, outside: str = "zero") -> np.ndarray:
    """``u`` at physical ``points`` (``(..., ndim)``, ITK order), linearly interpolated. Outside the grid:
    0 (``"zero"``, ITK's DisplacementFieldTransform), or the nearest edge value (``"edge"``)."""
    origin, spacing, direction = _geometry(field)
    continuous = ((points - origin) @ direction) / spacing  # (..., ndim) continuous index, ITK order
    coords = np.moveaxis(continuous[..., ::-1], -1, 0)  # array axis order for map_coordinates
    vectors, mode = _vectors(field), "constant" if outside == "zero" else "nearest"
    return np.stack([map_coordinates(vectors[..., k], coords, order=1, mode=mode, cval=0.0)
                     for k in range(vectors.shape[-1])], axis=-1)


@dataclass
class InverseField:
    """The inverse on the moving grid and how well it undoes the forward map (mm, over the fixed grid's
    voxels whose image falls inside the moving grid)."""

    field: sitk.Image
    residual_mean_mm: float
    residual_max_mm: float
    iterations: int

    def report(self) -> dict[str, float | int]:
        return {"residual_mean_mm": round(self.residual_mean_mm, 5), "residual_max_mm": round(self.residual_max_mm, 5),
                "iterations": self.iterations}


def invert_field(field: sitk.Image, moving_reference: sitk.Image) -> InverseField:
    """``v`` on ``moving_reference``'s grid with ``q ↦ q + v(q)`` the inverse of ``p ↦ p + u(p)``."""
    q = _points(moving_reference)
    # Iterated with u extended by its edge values: a point q whose pre-image is just inside the fixed
    # grid must not see the zero beyond it while it searches.
    v, iterations, change = -sample_field(field, q, "edge"), 1, np.inf
    while iterations < INVERSE_ITERATIONS and change >= INVERSE_TOLERANCE_MM:
        updated = -sample_field(field, q + v, "edge")
        change, v, iterations = float(np.abs(updated - v).max()), updated, iterations + 1
    inverse = sitk.GetImageFromArray(v, isVector=True)
    inverse.CopyInformation(moving_reference)
    mean, largest = _round_trip(field, inverse, moving_reference)
    return InverseField(inverse, mean, largest, iterations)


def _round_trip(field: sitk.Image, inverse: sitk.Image, moving_reference: sitk.Image) -> tuple[float, float]:
    """``|ψ(φ(p)) − p|`` over the fixed grid's voxels that ``φ`` sends inside the moving grid."""
    p = _points(field)
    mapped = p + _vectors(field)
    origin, spacing, direction = _geometry(moving_reference)
    continuous = ((mapped - origin) @ direction) / spacing
    inside = np.all((continuous >= 0) & (continuous <= np.asarray(moving_reference.GetSize()) - 1), axis=-1)
    if not inside.any():
        return float("nan"), float("nan")
    error = np.linalg.norm(mapped[inside] + sample_field(inverse, mapped[inside]) - p[inside], axis=-1)
    return float(error.mean()), float(error.max())
