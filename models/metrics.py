"""Evaluation metrics for registration: overlap, surface distances, Jacobian folding, endpoint error.

Conventions (shared with ``models.warp``, but NumPy and without a batch axis here):

- masks are arrays of spatial shape ``(H, W)`` or ``(D, H, W)``; anything non-zero is foreground;
- a displacement ``disp`` is ``(ndim, *spatial)`` in **voxels**, channel ``k`` along array axis ``k``,
  and the transform is ``x -> x + disp(x)``;
- ``spacing_mm`` is one positive number per array axis, in array-axis order; ``None`` means unit
  spacing, so distances come out in voxels instead of millimetres.

Surface distances follow the usual evaluation convention (the one MONAI uses when it is given no
sub-voxel spacing): the *boundary* of a mask is the mask minus its binary erosion with the
face-connected structuring element (4-neighbourhood in 2D, 6-neighbourhood in 3D), and everything
outside the array counts as background, so a mask touching the array edge has a boundary there.
Face connectivity is chosen because it gives the thinnest boundary that still separates inside
from outside -- every foreground voxel with a background face-neighbour is on it, and nothing else
is -- so the metrics are not inflated by the extra diagonal-contact voxels that a full-connectivity
erosion would add, and the numbers are comparable with MONAI's ``compute_hausdorff_distance``.

Empty masks: both empty is a perfect match (DSC 100, distances 0.0); exactly one empty leaves the
distances undefined, so they are ``nan`` (DSC is 0). Callers aggregate with nan-aware means and
report how many cases were ``nan``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = [
    "dice",
    "surface_distances",
    "hausdorff",
    "hausdorff95",
    "average_surface_distance",
    "jacobian_determinant",
    "folding_percent",
    "endpoint_error",
    "mask_metrics",
]

_NDIMS = (2, 3)


# --------------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------------


def _as_mask_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks as boolean arrays of one 2D or 3D shape; ValueError otherwise."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"masks must have the same shape, got {a.shape} and {b.shape}")
    if a.ndim not in _NDIMS:
        raise ValueError(f"masks must be 2D or 3D, got {a.ndim} dimensions (shape {a.shape})")
    return a.astype(bool, copy=False), b.astype(bool, copy=False)


def _spacing(spacing_mm: Sequence[float] | None, ndim: int) -> np.ndarray:
    """Spacing as a float64 vector of length ``ndim`` (ones for ``None``); ValueError otherwise."""
    if spacing_mm is None:
        return np.ones(ndim, dtype=np.float64)
    spacing = np.asarray(spacing_mm, dtype=np.float64).reshape(-1)
    if spacing.size != ndim:
        raise ValueError(
            f"spacing_mm must have {ndim} values (one per axis), got {spacing.size}: {spacing_mm}"
        )
    if not np.all(np.isfinite(spacing) & (spacing > 0)):
        raise ValueError(f"spacing_mm must be finite and positive, got {spacing_mm}")
    return spacing


def _check_disp(disp: np.ndarray, name: str = "disp") -> np.ndarray:
    """``disp`` as a float array of shape ``(ndim, *spatial)`` with ``ndim == len(spatial)`` in {2, 3}."""
    disp = np.asarray(disp)
    ndim = disp.ndim - 1
    if ndim not in _NDIMS or disp.shape[0] != ndim:
        raise ValueError(
            f"{name} must be (ndim, *spatial) with ndim == len(spatial) in {{2, 3}}, got shape {disp.shape}"
        )
    return disp.astype(np.float64, copy=False)


# --------------------------------------------------------------------------------------------------
# overlap and surface distances
# --------------------------------------------------------------------------------------------------


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice similarity coefficient in percent, ``200 |A ∩ B| / (|A| + |B|)``.

    Args:
        a, b: masks of one spatial shape (2D or 3D); non-zero is foreground.

    Returns:
        A value in ``[0, 100]``; ``100.0`` when both masks are empty (they agree perfectly).
    """
    a, b = _as_mask_pair(a, b)
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 100.0
    return 200.0 * int(np.logical_and(a, b).sum()) / total


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels with at least one face-neighbour in the background (outside counts as background)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _crop_to_union(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to the bounding box of ``a | b`` plus one voxel (clipped to the array).

    Exact, not an approximation: the extra voxel is background, as is everything outside the array,
    so the erosion is unchanged; and every boundary voxel (distances are measured from and to these
    only) lies inside the box. It only saves time on large, mostly empty volumes.
    """
    union = a | b
    if not union.any():
        return a, b
    coords = np.nonzero(union)
    box = tuple(
        slice(max(int(c.min()) - 1, 0), min(int(c.max()) + 2, n))
        for c, n in zip(coords, union.shape, strict=True)
    )
    return a[box], b[box]


def _distances_to(target_boundary: np.ndarray, sources: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Euclidean distance (in spacing units) from each ``sources`` voxel to the nearest target voxel.

    ``inf`` for every source when the target is empty (there is nothing to reach).
    """
    n_sources = int(sources.sum())
    if not target_boundary.any():
        return np.full(n_sources, np.inf)
    if n_sources == 0:
        return np.empty(0)
    edt = ndimage.distance_transform_edt(~target_boundary, sampling=spacing)
    return np.asarray(edt[sources], dtype=np.float64)


def surface_distances(
    a: np.ndarray, b: np.ndarray, spacing_mm: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distances between the boundaries of two masks, in both directions.

    Args:
        a, b: masks of one spatial shape (2D or 3D); non-zero is foreground.
        spacing_mm: voxel size per array axis; ``None`` gives distances in voxels.

    Returns:
        ``(d_ab, d_ba)``: 1-D float64 arrays. ``d_ab`` has one entry per boundary voxel of ``a``
        (the exact Euclidean distance to the nearest boundary voxel of ``b``), ``d_ba`` the
        reverse. A direction whose source is empty is an empty array; a direction whose target is
        empty (but source is not) is all ``inf``.
    """
    a, b = _as_mask_pair(a, b)
    spacing = _spacing(spacing_mm, a.ndim)
    a, b = _crop_to_union(a, b)
    edge_a, edge_b = _boundary(a), _boundary(b)
    return _distances_to(edge_b, edge_a, spacing), _distances_to(edge_a, edge_b, spacing)


def _empty_case(a: np.ndarray, b: np.ndarray) -> float | None:
    """0.0 if both masks are empty, nan if exactly one is, ``None`` if neither is (compute normally)."""
    a_any, b_any = bool(a.any()), bool(b.any())
    if not a_any and not b_any:
        return 0.0
    if a_any != b_any:
        return math.nan
    return None


def _hd(d_ab: np.ndarray, d_ba: np.ndarray) -> float:
    return float(max(d_ab.max(), d_ba.max()))


def _hd95(d_ab: np.ndarray, d_ba: np.ndarray) -> float:
    return float(max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)))


def _asd(d_ab: np.ndarray, d_ba: np.ndarray) -> float:
    return float(np.concatenate([d_ab, d_ba]).mean())


_REDUCERS = {"hd": _hd, "hd95": _hd95, "asd": _asd}


def _surface_metrics(
    a: np.ndarray, b: np.ndarray, spacing_mm: Sequence[float] | None, names: Sequence[str]
) -> dict[str, float]:
    """The named surface metrics of two masks, with the empty-mask rule applied once."""
    a, b = _as_mask_pair(a, b)
    _spacing(spacing_mm, a.ndim)  # validate even when a mask is empty
    special = _empty_case(a, b)
    if special is not None:
        return dict.fromkeys(names, special)
    d_ab, d_ba = surface_distances(a, b, spacing_mm)
    return {name: _REDUCERS[name](d_ab, d_ba) for name in names}


def hausdorff(a: np.ndarray, b: np.ndarray, spacing_mm: Sequence[float] | None = None) -> float:
    """Symmetric Hausdorff distance between the boundaries: ``max(max d_ab, max d_ba)``.

    See :func:`surface_distances` for ``d_ab`` and ``d_ba``. In mm with ``spacing_mm``, voxels with
    ``None``. 0.0 if both masks are empty, nan if exactly one is.
    """
    return _surface_metrics(a, b, spacing_mm, ["hd"])["hd"]


def hausdorff95(a: np.ndarray, b: np.ndarray, spacing_mm: Sequence[float] | None = None) -> float:
    """Robust Hausdorff distance: the larger of the two *directed* 95th percentiles.

    ``max(P95(d_ab), P95(d_ba))`` with linear interpolation between order statistics -- the
    definition of MONAI (``percentile=95``) and of DeepMind's ``surface-distance`` package. (MedPy
    instead takes the 95th percentile of both directions pooled; the two differ when the two
    boundaries have different numbers of voxels.) 0.0 if both masks are empty, nan if exactly one is.
    """
    return _surface_metrics(a, b, spacing_mm, ["hd95"])["hd95"]


def average_surface_distance(
    a: np.ndarray, b: np.ndarray, spacing_mm: Sequence[float] | None = None
) -> float:
    """Average (symmetric) surface distance: the mean of all boundary distances, both directions pooled.

    ``ASD = (sum(d_ab) + sum(d_ba)) / (|∂A| + |∂B|)``, i.e. every boundary voxel of either mask
    counts once -- MONAI's ``compute_average_surface_distance(..., symmetric=True)``. It is *not*
    the mean of the two directed means (SimpleITK's ``AverageHausdorffDistance``), which weights a
    small boundary as much as a large one. 0.0 if both masks are empty, nan if exactly one is.
    """
    return _surface_metrics(a, b, spacing_mm, ["asd"])["asd"]


def mask_metrics(
    pred_mask: np.ndarray, target_mask: np.ndarray, label: int, spacing_mm: Sequence[float] | None = None
) -> dict[str, float]:
    """Overlap and surface metrics of one label of two integer label maps.

    Args:
        pred_mask, target_mask: integer label maps of one spatial shape (2D or 3D).
        label: the label to compare (``pred_mask == label`` vs ``target_mask == label``).
        spacing_mm: voxel size per array axis; ``None`` gives distances in voxels.

    Returns:
        ``{"dsc", "hd", "hd95", "asd"}`` as defined by :func:`dice`, :func:`hausdorff`,
        :func:`hausdorff95` and :func:`average_surface_distance` (the surface distances are
        computed once and shared).
    """
    a, b = _as_mask_pair(np.asarray(pred_mask) == label, np.asarray(target_mask) == label)
    return {"dsc": dice(a, b), **_surface_metrics(a, b, spacing_mm, ["hd", "hd95", "asd"])}


# --------------------------------------------------------------------------------------------------
# displacement fields
# --------------------------------------------------------------------------------------------------


def jacobian_determinant(disp: np.ndarray) -> np.ndarray:
    """Determinant of the Jacobian of ``x -> x + disp(x)``, by central differences.

    ``J = I + grad(disp)`` with ``grad`` from ``np.gradient`` (second-order central differences
    inside, first-order one-sided at the array edges, so an affine field is differentiated exactly
    everywhere). Spacing is not needed: ``disp`` and ``x`` are both in voxels, and rescaling the
    axes to mm conjugates ``J`` by a diagonal matrix, which leaves the determinant unchanged.

    Args:
        disp: ``(ndim, *spatial)`` in voxels, ``ndim`` 2 or 3, every spatial size at least 2.

    Returns:
        float64 array of shape ``spatial``. ``det <= 0`` marks folding (a locally non-invertible map).
    """
    disp = _check_disp(disp)
    ndim = disp.shape[0]
    if min(disp.shape[1:]) < 2:
        raise ValueError(f"every spatial size of disp must be at least 2 to differentiate, got {disp.shape}")
    # jac[i, j] = d disp_i / d x_j, shape (ndim, ndim, *spatial)
    jac = np.stack([np.stack(np.gradient(disp[i]), axis=0) for i in range(ndim)], axis=0)
    jac = jac + np.eye(ndim).reshape(ndim, ndim, *([1] * ndim))
    return np.linalg.det(np.moveaxis(jac, (0, 1), (-2, -1)))


def folding_percent(disp: np.ndarray) -> float:
    """Percentage of voxels whose Jacobian determinant is ``<= 0`` (see :func:`jacobian_determinant`)."""
    return float(100.0 * np.mean(jacobian_determinant(disp) <= 0))


def endpoint_error(
    disp: np.ndarray,
    disp_gt: np.ndarray,
    spacing_mm: Sequence[float] | None = None,
    mask: np.ndarray | None = None,
) -> float:
    """Mean endpoint error: the mean Euclidean norm of ``disp - disp_gt`` over voxels.

    Args:
        disp, disp_gt: ``(ndim, *spatial)`` in voxels, same shape.
        spacing_mm: voxel size per axis; channel ``k`` of the difference is scaled by
            ``spacing_mm[k]`` before taking the norm, so the result is in mm. ``None``: voxels.
        mask: optional boolean array of shape ``spatial``; only voxels where it is true are
            averaged. An all-false mask gives ``nan`` (no voxel to average over).

    Returns:
        The mean error as a float.
    """
    disp = _check_disp(disp, "disp")
    disp_gt = _check_disp(disp_gt, "disp_gt")
    if disp.shape != disp_gt.shape:
        raise ValueError(f"disp and disp_gt must have the same shape, got {disp.shape} and {disp_gt.shape}")
    ndim = disp.shape[0]
    spacing = _spacing(spacing_mm, ndim).reshape(ndim, *([1] * ndim))
    error = np.sqrt(np.sum(((disp - disp_gt) * spacing) ** 2, axis=0))
    if mask is None:
        return float(error.mean())
    mask = np.asarray(mask)
    if mask.shape != error.shape:
        raise ValueError(f"mask must have the spatial shape of disp {error.shape}, got {mask.shape}")
    selected = error[mask.astype(bool, copy=False)]
    return float(selected.mean()) if selected.size else math.nan
