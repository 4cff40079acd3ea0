"""The geometry of stacked DICOM slices, computed from their positions and checked for regularity.

ITK (5.4) stacks a series with missing, duplicated, out-of-order or tilted slices without complaint, and
gives a multi-frame file whose frames descend along the slice normal a negative spacing. The geometry is
therefore computed here from the per-slice ``ImagePositionPatient`` (or the per-frame functional groups):
the slices must be distinct, monotonic, evenly spaced and stacked along the normal
(:class:`InconsistentSeriesError` otherwise), and a descending stack gets a flipped third direction
instead of a negative spacing.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from models.io.errors import InconsistentSeriesError
from models.io.image import Geometry
from models.io.readers.geometry import floats

__all__ = ["unit", "stack_geometry", "multiframe_geometry"]


def unit(v) -> np.ndarray:
    """``v`` scaled to length 1 (DICOM orientation vectors are often not quite unit)."""
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _regular_step(positions: np.ndarray, normal: np.ndarray, along: np.ndarray, display: str, what: str) -> float:
    """The slice spacing, refusing duplicate positions, back-and-forth order and uneven gaps."""
    if np.any(np.abs(along) < 1e-3):
        counts = Counter(np.round(positions @ normal, 2).tolist())
        dup = max(counts.values())
        raise InconsistentSeriesError(f"{what} places {dup} slices at the same position (several echoes, phases or "
                                      "time points in one series?)", path=display)
    if not (np.all(along > 0) or np.all(along < 0)):
        raise InconsistentSeriesError(f"{what} is not in slice order (positions go back and forth)", path=display)
    gaps = np.abs(along)
    step = float(np.median(gaps))
    if np.max(np.abs(gaps - step)) > max(0.02, 0.05 * step):
        raise InconsistentSeriesError(f"{what} has non-uniform slice spacing ({gaps.min():.3g} to {gaps.max():.3g} "
                                      "mm): a slice may be missing", path=display)
    return step


def _check_tilt(positions: np.ndarray, normal: np.ndarray, display: str, what: str) -> None:
    """Refuse a stack sheared off its normal by more than 1°: a grid cannot describe it."""
    total = positions[-1] - positions[0]
    length = abs(float(total @ normal))
    off = float(np.linalg.norm(total - (total @ normal) * normal))
    tilt = math.degrees(math.atan2(off, length))
    if tilt > 1.0:
        raise InconsistentSeriesError(f"{what} is sheared: the slices are offset by {tilt:.1f}° from the slice "
                                      "normal (gantry tilt)", path=display,
                                      hint="correct the gantry tilt (resample to an orthogonal grid) and upload "
                                      "the result")


def stack_geometry(positions: np.ndarray, iop, pixel_spacing, display: str, what: str) -> Geometry:
    """Geometry of slices at ``positions`` (in stacking order) sharing orientation ``iop``; checks regularity."""
    row, col = unit(iop[:3]), unit(iop[3:6])
    normal = np.cross(row, col)
    along = np.diff(positions @ normal)
    step = _regular_step(positions, normal, along, display, what)
    _check_tilt(positions, normal, display, what)
    third = normal if along[0] > 0 else -normal
    direction = np.column_stack([row, col, third])
    spacing = (float(pixel_spacing[1]), float(pixel_spacing[0]), step)
    return Geometry(spacing, floats(positions[0]), floats(direction))


def multiframe_geometry(ds, display: str) -> Geometry | None:
    """Geometry of an enhanced multi-frame object from its functional groups (``None``: trust GDCM)."""
    n = int(ds.get("NumberOfFrames", 1) or 1)
    per = ds.get("PerFrameFunctionalGroupsSequence")
    shared = ds.get("SharedFunctionalGroupsSequence")
    if n < 2 or not per or len(per) != n:
        return None

    def find(group_item, sequence, attribute):
        for item in (group_item, shared[0] if shared else None):
            if item is not None and sequence in item and len(item[sequence].value):
                value = item[sequence][0].get(attribute)
                if value is not None:
                    return value
        return None

    positions = [find(per[k], "PlanePositionSequence", "ImagePositionPatient") for k in range(n)]
    iop = find(per[0], "PlaneOrientationSequence", "ImageOrientationPatient")
    spacing = find(per[0], "PixelMeasuresSequence", "PixelSpacing")
    if iop is None or spacing is None or any(p is None for p in positions):
        return None
    return stack_geometry(np.asarray(positions, dtype=np.float64), [float(v) for v in iop],
                          [float(v) for v in spacing], display, "the multi-frame file")
