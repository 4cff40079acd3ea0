"""The formats the readers know, and :class:`Source`: what a user's path resolves to before any pixel is read.

Resolving (a file, a folder or a zip; which series; which checks) is kept apart from reading so that
:func:`~models.io.readers.read_header` and :func:`~models.io.readers.read_image` resolve once and then take
the header and the pixels from the same, already checked, files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from models.io.image import Geometry

__all__ = ["NIFTI", "DICOM", "METAIMAGE", "NRRD", "ZIP", "NAMES", "ITK_IO", "Source"]

NIFTI, DICOM, METAIMAGE, NRRD, ZIP = "nifti", "dicom", "metaimage", "nrrd", "zip"

# How messages name each format.
NAMES = {NIFTI: "NIfTI", DICOM: "DICOM", METAIMAGE: "MetaImage", NRRD: "NRRD", ZIP: "zip"}

# The SimpleITK ImageIO of each format, set explicitly: ITK then reads the format that detection found,
# whatever the file is called.
ITK_IO = {NIFTI: "NiftiImageIO", DICOM: "GDCMImageIO", METAIMAGE: "MetaImageIO", NRRD: "NrrdImageIO"}


@dataclass
class Source:
    """One readable thing resolved from the user's path: a file, a DICOM series' files in order, or a cine's."""

    format: str
    files: list[Path]
    display: str
    io: str = ""  # SimpleITK ImageIO, or "nibabel"
    geometry: Geometry | None = None  # overrides SimpleITK's (DICOM series and multi-frame)
    series_uid: str | None = None
    info: dict = field(default_factory=dict)
    frames: list[list[Path]] | None = None  # a DICOM cine: each frame's files in slice order (``files`` all of them)
