"""A DICOM series: its files checked to form one volume and put in order along the slice normal.

Series are grouped and ordered from pydicom headers — recursively through a folder, with descriptions and
pixel-data checks, which ``ImageSeriesReader.GetGDCMSeriesIDs`` (one folder, UIDs only) does not give —
and their voxels then read with ``sitk.ImageSeriesReader`` in the order found here. Slices without patient
geometry (secondary captures) fall back to ``InstanceNumber`` order and ITK's unit geometry.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from models.io.errors import InconsistentSeriesError
from models.io.image import Geometry
from models.io.readers.dicom import dicom_info
from models.io.readers.dicom_geometry import stack_geometry, unit
from models.io.readers.source import DICOM, ITK_IO, Source

__all__ = ["series_source", "check_uniform", "has_geometry", "slice_planes", "pixel_spacing"]


def check_uniform(items: list, what: str, display: str) -> None:
    """Refuse multi-frame files mixed with others, and slices of different sizes."""
    frames = [int(ds.get("NumberOfFrames", 1) or 1) for _, ds in items]
    if len(items) > 1 and max(frames) > 1:
        raise InconsistentSeriesError(f"{what} mixes {len(items)} files of which some hold several frames",
                                      path=display, hint="upload the multi-frame files one at a time")
    sizes = Counter((int(ds.get("Rows", 0)), int(ds.get("Columns", 0))) for _, ds in items)
    if len(sizes) > 1:
        listing = ", ".join(f"{c}×{r}: {n} files" for (r, c), n in sizes.most_common())
        raise InconsistentSeriesError(f"{what} mixes slices of different sizes ({listing})", path=display)


def has_geometry(items: list) -> bool:
    """Whether every slice has patient geometry (secondary captures often have none)."""
    return all("ImagePositionPatient" in ds and "ImageOrientationPatient" in ds for _, ds in items)


def slice_planes(items: list, what: str, display: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every slice's ImagePositionPatient, their one ImageOrientationPatient, and its slice normal."""
    iops = np.asarray([[float(v) for v in ds.ImageOrientationPatient] for _, ds in items])
    if np.max(np.abs(iops - iops[0])) > 1e-3:
        raise InconsistentSeriesError(f"{what} mixes slices of different orientations (a localiser in the "
                                      "series?)", path=display)
    positions = np.asarray([[float(v) for v in ds.ImagePositionPatient] for _, ds in items])
    normal = np.cross(unit(iops[0][:3]), unit(iops[0][3:]))
    return positions, iops[0], normal


def pixel_spacing(ds) -> list[float]:
    """A slice's (row, column) spacing as DICOM states it, (1, 1) when it states none."""
    return [float(v) for v in (ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing") or [1.0, 1.0])]


def _by_position(items: list, what: str, display: str) -> tuple[np.ndarray, Geometry]:
    """Slice order along the normal and the stack's geometry; slices must share one orientation."""
    positions, iop, normal = slice_planes(items, what, display)
    order = np.argsort(positions @ normal, kind="stable")
    return order, stack_geometry(positions[order], list(iop), pixel_spacing(items[order[0]][1]), display, what)


def series_source(items: list, uid: str, display: str) -> Source | None:
    """A DICOM series (``items``: ``(path, dataset)``) checked and ordered; one file stays a single file."""
    info = dicom_info(items[0][1], len(items))
    what = f"series {uid}"
    check_uniform(items, what, display)
    if len(items) == 1:
        return None  # read as a single file by the caller
    if has_geometry(items):
        order, geometry = _by_position(items, what, display)
        info["ordered_by"] = "ImagePositionPatient"
    else:  # no patient geometry (secondary captures): instance order, unit geometry
        order = sorted(range(len(items)), key=lambda i: (int(items[i][1].get("InstanceNumber", 0) or 0),
                                                         str(items[i][0])))
        geometry = None
        info["ordered_by"] = "InstanceNumber"
    files = [items[i][0] for i in order]
    return Source(DICOM, files, display, ITK_IO[DICOM], geometry, uid, info)
