"""What ``preview.png`` shows, as arrays: the slices chosen, the crop, per-slice Dice. No drawing here.

Everything is on the fixed grid and three-dimensional (a 2-D image is one slice): arrays are
``(slices, rows, columns)`` in NumPy order, rows along ITK's y and columns along x. The masks are
the moving mask resampled onto the fixed grid (nearest: "before"), the warped moving mask
("after") and the fixed mask; the field's in-plane components are in voxels, rows then columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import binary_fill_holes

from models.resample import resample_to

if TYPE_CHECKING:  # models.register imports torch
    from models.register import RegisteredFiles

__all__ = ["MAX_SLICES", "PreviewData", "gather", "choose_slices", "crop_box", "drawing_order"]

#: At most this many slices (rows of the montage) are drawn; a longer stack shows an evenly spaced subset.
MAX_SLICES = 10
#: Around the masks' bounding box, this fraction of its extent (and at least ``MIN_MARGIN_MM``) is kept.
MARGIN = 0.3
MIN_MARGIN_MM = 10.0


@dataclass
class PreviewData:
    """The preview's inputs on the fixed grid, 3-D (see the module docstring); absent masks are None."""

    fixed: np.ndarray
    moving: np.ndarray | None  # the moving image on the fixed grid: only without a moving mask (then shown)
    warped: np.ndarray
    jacobian: np.ndarray
    disp: np.ndarray  # (2, slices, rows, columns): in-plane displacement in voxels, rows then columns
    spacing: tuple[float, float]  # mm between rows, between columns
    volume: bool  # a 3-D image (slices are numbered), not a 2-D one
    moving_mask: np.ndarray | None = None  # on the fixed grid: "before"
    warped_mask: np.ndarray | None = None  # "after"
    fixed_mask: np.ndarray | None = None
    names: dict[int, str] | None = None  # label value -> name
    dice: dict[int, tuple[float | None, float | None]] | None = None  # label -> whole-image Dice (after, before)

    @property
    def masks(self) -> list[np.ndarray]:
        return [m for m in (self.moving_mask, self.warped_mask, self.fixed_mask) if m is not None]

    @property
    def labels(self) -> list[int]:
        """Label values present in any mask, ascending."""
        found: set[int] = set()
        for mask in self.masks:
            found.update(int(v) for v in np.unique(mask) if v != 0)
        return sorted(found)


def _as_volume(array: np.ndarray, volume: bool) -> np.ndarray:
    return array if volume else array[None]


def gather(done: RegisteredFiles) -> PreviewData:
    """The arrays of a finished registration (``models.register.RegisteredFiles``), on the fixed grid."""
    fixed, result = done.images["fixed"], done.result
    volume = fixed.ndim == 3

    def on_fixed(role: str) -> np.ndarray | None:
        image = done.images.get(role)
        return None if image is None else _as_volume(resample_to(image, fixed).array, volume)

    disp = np.asarray(result.disp_vox)
    disp = disp[1:] if volume else disp[:, None]  # in-plane components (rows, columns); a 2-D one gains a slice axis
    spacing = fixed.geometry.spacing  # ITK order (x, y[, z])
    names, dice = {}, {}
    for key, entry in (done.report.get("labels") or {}).items():
        names[int(key)] = str(entry.get("name") or f"label {key}")
        dice[int(key)] = ((entry.get("after") or {}).get("dice"), (entry.get("before") or {}).get("dice"))
    warped_mask = result.warped_mask
    outlined = done.images.get("moving_mask") is not None and warped_mask is not None
    return PreviewData(
        fixed=_as_volume(fixed.array, volume), moving=None if outlined else on_fixed("moving"),
        warped=_as_volume(result.warped.array, volume),
        jacobian=_as_volume(sitk.GetArrayFromImage(result.jacobian), volume), disp=disp,
        spacing=(float(spacing[1]), float(spacing[0])), volume=volume,
        moving_mask=on_fixed("moving_mask"),
        warped_mask=None if warped_mask is None else _as_volume(warped_mask.array, volume),
        fixed_mask=on_fixed("fixed_mask"), names=names, dice=dice)


def choose_slices(depth: int, masks: list[np.ndarray], limit: int = MAX_SLICES) -> list[int]:
    """The slices drawn: those where some mask has a label (all of them without masks or labels), at
    most ``limit`` evenly spaced ones, the first and last of them included."""
    candidates = np.arange(depth)
    if masks:
        labelled = np.zeros(depth, bool)
        for mask in masks:
            labelled |= mask.reshape(depth, -1).any(axis=1)
        if labelled.any():
            candidates = candidates[labelled]
    if len(candidates) > limit:
        candidates = candidates[np.unique(np.round(np.linspace(0, len(candidates) - 1, limit)).astype(int))]
    return [int(z) for z in candidates]


def crop_box(shape: tuple[int, int], masks: list[np.ndarray], slices: list[int],
             spacing: tuple[float, float]) -> tuple[slice, slice]:
    """Rows and columns shown: the masks' bounding box over ``slices`` with a margin, widened to a
    square in millimetres (panels are square) as far as the image allows; the whole slice without masks."""
    union = np.zeros(shape, bool)
    for mask in masks:
        union |= mask[slices].any(axis=0)
    if not union.any():
        return slice(0, shape[0]), slice(0, shape[1])
    box = []
    for axis in range(2):
        hit = np.flatnonzero(union.any(axis=1 - axis))
        box.append([float(hit[0]), float(hit[-1] + 1)])
    extent_mm = [(hi - lo) * s for (lo, hi), s in zip(box, spacing)]
    margin_mm = max(MARGIN * max(extent_mm), MIN_MARGIN_MM)
    side_mm = max(extent_mm) + 2 * margin_mm
    out = []
    for (lo, hi), s, size in zip(box, spacing, shape):
        half = min(side_mm / s, size) / 2
        centre = min(max((lo + hi) / 2, half), size - half)  # slide inwards rather than shrink at an edge
        start = int(np.floor(centre - half + 1e-6))
        out.append(slice(max(start, 0), min(start + int(round(2 * half)), size)))
    return out[0], out[1]


def drawing_order(masks: list[np.ndarray], labels: list[int], slices: list[int],
                  crop: tuple[slice, slice]) -> list[int]:
    """Labels in the order their outlines are drawn: the ones enclosing the most area (holes filled)
    first, so an inner structure's boundary (the LV cavity inside the myocardium) stays on top where
    two labels share it."""
    def enclosed(label: int) -> int:
        region = np.zeros((crop[0].stop - crop[0].start, crop[1].stop - crop[1].start), bool)
        for mask in masks:
            region |= (mask[slices][:, crop[0], crop[1]] == label).any(axis=0)
        return int(np.count_nonzero(binary_fill_holes(region)))

    return sorted(labels, key=lambda label: (-enclosed(label), label))
