"""The DICOM headers behind an image that was read from DICOM, in the order its slices were stacked.

:func:`~models.io.readers.read_image` keeps voxels and geometry, not datasets: a zip's scratch folder
is gone when it returns, and an ``Image`` crosses process boundaries where pydicom datasets need not.
A DICOM SEG of a mask on that image's grid must reference the very instances, so this resolves the
same path with the same series choice again (:func:`~models.io.readers.resolve.resolve`, which orders
a series along its slice normal exactly as the voxels were read) and reads the headers without their
pixel data, which highdicom does not need.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from models.io.errors import UnreadableImageError
from models.io.readers.resolve import resolve
from models.io.readers.source import DICOM

__all__ = ["dicom_source_datasets"]


def _header(path: Path, display: str):
    """One file's dataset up to its pixel data, every other element read now (the file may vanish next)."""
    import pydicom

    try:
        return pydicom.dcmread(str(path), force=True, stop_before_pixels=True)
    except Exception as error:  # noqa: BLE001 - pydicom raises many types for a broken file
        raise UnreadableImageError(f"the DICOM header cannot be parsed ({type(error).__name__})",
                                   path=display) from None


def dicom_source_datasets(path: str | Path, series: str | None = None) -> list | None:
    """The headers of the DICOM files ``path`` (file, folder or zip) resolves to, in slice order; None if not DICOM.

    One dataset per slice of a series, ``[dataset]`` for a single file (a slice, or a multi-frame volume
    whose frames are in file order). ``series`` picks the series as it did for ``read_image``. Raises
    the readers' :class:`~models.io.errors.ImageError` subclasses.
    """
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="adacs-io-") as tmp:
        src = resolve(path, series, Path(tmp), str(path))
        if src.format != DICOM:
            return None
        return [_header(file, src.display) for file in src.files]
