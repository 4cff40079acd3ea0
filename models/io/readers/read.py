"""The two entry points, :func:`read_header` and :func:`read_image`: resolve, check the header, read, check values.

The order is what makes refusals cheap: the path is resolved and each format's own checks run
(:mod:`~models.io.readers.resolve`), then everything the header can refuse is refused
(:func:`~models.io.readers.header.check_header`) before any pixel is read, and only then are the voxels
read, a singleton axis dropped (:mod:`~models.io.readers.singleton`) and the values checked
(:mod:`~models.io.readers.checks`). Scratch files (unpacked zips, links) live in a temporary folder that
is removed before the function returns.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from models.io.errors import NotACineError, TooManyFramesError, UnreadableImageError
from models.io.image import LABEL, SCALAR, Geometry, Image
from models.io.readers.checks import as_labels, check_scalar
from models.io.readers.dicom_cine import cine_header, frame_source
from models.io.readers.header import DEFAULT_MAX_VOXELS, ImageHeader, check_header
from models.io.readers.itk import itk_header, itk_pixels
from models.io.readers.nifti import nib_header, nib_pixels
from models.io.readers.resolve import resolve
from models.io.readers.singleton import squeeze
from models.io.readers.source import DICOM, NIFTI, Source

__all__ = ["read_header", "read_image", "read_frames", "read_cine_header", "check_cine_header", "DEFAULT_MAX_FRAMES"]

DEFAULT_MAX_FRAMES = 64
"""Frames one cine may have (``ADACS_MAX_CINE_FRAMES``): clinical cine MRI has 20-40 phases."""


def _header(src: Source) -> ImageHeader:
    """NIfTI-2 headers come from nibabel (ITK cannot read them), all others from SimpleITK; a DICOM cine's
    is 4-D, built from its first frame's."""
    if src.frames:
        return cine_header(src)
    if src.io == "nibabel":
        return nib_header(src)
    return itk_header(src)


def _pixels(src: Source, header: ImageHeader, frame_index: tuple[int, ...]) -> tuple[np.ndarray, Geometry]:
    """NIfTI voxels come from nibabel (ITK zeroes NaN/±Inf), all others from SimpleITK."""
    if src.format == NIFTI:
        return nib_pixels(src, header, frame_index)
    return itk_pixels(src, header, frame_index)


def read_header(path: str | Path, *, series: str | None = None) -> ImageHeader:
    """The header of what :func:`read_image` would read, without its pixel data where the format allows.

    Zips are unpacked into a scratch folder (removed again). Raises the same errors as
    :func:`read_image` does before reading pixels, except those of :func:`check_header`.
    """
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="adacs-io-") as tmp:
        return _header(resolve(path, series, Path(tmp), str(path)))


def _values(array: np.ndarray, kind: str, display: str, allow_constant: bool) -> tuple[np.ndarray, dict]:
    """The voxels checked for their kind, and what ``metadata`` records about labels."""
    if kind == LABEL:
        original = array.dtype
        array = as_labels(array, display)
        labels = np.unique(array)
        extra = {"labels": [int(v) for v in labels[:256]], "cast_from": str(original) if original != array.dtype
                 else None}
    else:
        check_scalar(array, display, allow_constant)
        extra = {}
    return array, extra


def read_image(path: str | Path, *, kind: str = SCALAR, series: str | None = None, frame: int | None = None,
               frame_name: str | None = "frame", max_voxels: int = DEFAULT_MAX_VOXELS,
               allow_constant: bool = False) -> Image:
    """Read a file, folder or zip (see :data:`SUPPORTED`) as a 2-D or 3-D :class:`Image`.

    ``kind="label"`` requires whole-number voxels (float masks cast to the smallest integer dtype);
    ``series`` picks a DICOM series (SeriesInstanceUID or a unique prefix) or a file in a folder/zip;
    (ignored for a single non-DICOM file); ``frame`` picks a frame of a 4-D+ image (``frame_name`` is what the
    messages call it; None: this input has no frame choice); ``max_voxels`` limits
    one frame's voxel count; ``allow_constant`` accepts a scalar image whose voxels all have one value.
    ``metadata`` records ``format``, ``dtype`` (the file's), ``size``/``dims`` (the file's), ``frame``,
    ``n_frames``, ``squeezed`` and, for DICOM, the series facts. Raises :class:`ImageError` subclasses.
    """
    if kind not in (SCALAR, LABEL):
        raise ValueError(f"kind must be {SCALAR!r} or {LABEL!r}, got {kind!r}")
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="adacs-io-") as tmp:
        src = resolve(path, series, Path(tmp), str(path))
        header = _header(src)
        frame_index = check_header(header, frame=frame, frame_name=frame_name, max_voxels=max_voxels)
        array, geometry = _pixels(src, header, frame_index)
    if array.ndim != geometry.ndim:  # defensive: a reader returned something unexpected
        raise UnreadableImageError(f"read a {array.ndim}-D array with {geometry.ndim}-D geometry", path=src.display)
    array, geometry, squeezed = squeeze(array, geometry)
    array, extra = _values(array, kind, src.display, allow_constant)
    metadata = {"format": src.format, "dtype": header.pixel_type, "size": header.size, "dims": header.dims,
                "n_frames": header.n_frames, "frame": frame,
                "squeezed": squeezed, **header.info, **extra}
    if src.format == DICOM and len(src.files) > 1:
        metadata["files"] = len(src.files)
    return Image(array, geometry, kind, src.display, metadata)


def read_cine_header(path: str | Path, *, series: str | None = None) -> ImageHeader:
    """The header of the cine :func:`read_frames` would read (``n_frames`` its frame count), no pixels read.

    A 4-D file's header, or a DICOM cine series' (several phases per slice position, see
    :mod:`~models.io.readers.dicom_cine`): ``size`` ``(x, y, positions, phases)``. A normal DICOM series
    (one image per position) gives its 3-D header, a single frame.
    """
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="adacs-io-") as tmp:
        return _header(resolve(path, series, Path(tmp), str(path), cine=True))


def _frame_pixels(src: Source, header: ImageHeader, t: int) -> tuple[np.ndarray, Geometry]:
    """Frame ``t``'s voxels and geometry: a DICOM cine's ``t``-th phase, or one frame of a 4-D+ file."""
    if src.frames:
        return _pixels(frame_source(src, t), header, ())
    return _pixels(src, header, tuple(int(i) for i in np.unravel_index(t, header.size[3:], order="F")))


def check_cine_header(header: ImageHeader, *, max_voxels: int = DEFAULT_MAX_VOXELS,
                      max_frames: int = DEFAULT_MAX_FRAMES) -> None:
    """Refuse from the header what :func:`read_frames` would: not a series of frames, too many of them,
    or frames that :func:`read_image` would refuse one by one (size, voxel type, dimensions)."""
    if header.n_frames < 2:
        raise NotACineError(f"is a single {header.image_ndim or header.dims}-D image (size {list(header.size)}), "
                            "not a series of frames", path=header.path)
    if header.n_frames > max_frames:
        raise TooManyFramesError(f"has {header.n_frames} frames, more than the limit of {max_frames} "
                                 "(max_frames)", path=header.path, hint="register a shorter part of the cycle, or "
                                 "ask the operator to raise ADACS_MAX_CINE_FRAMES", limit=max_frames,
                                 frames=header.n_frames)
    check_header(header, frame=0, frame_name=None, max_voxels=max_voxels)


def read_frames(path: str | Path, *, series: str | None = None, max_voxels: int = DEFAULT_MAX_VOXELS,
                max_frames: int = DEFAULT_MAX_FRAMES) -> list[Image]:
    """Every frame of a 4-D image or DICOM cine series, each a 2-D or 3-D scalar :class:`Image` on one grid.

    The input is resolved and its header checked once (:func:`check_cine_header`), then the frames are
    read in order and each one's values checked as :func:`read_image` checks one frame. A DICOM cine's
    frame ``t`` is its ``t``-th phase at every slice position (:mod:`~models.io.readers.dicom_cine`).
    """
    path = Path(path)
    frames = []
    with tempfile.TemporaryDirectory(prefix="adacs-io-") as tmp:
        src = resolve(path, series, Path(tmp), str(path), cine=True)
        header = _header(src)
        check_cine_header(header, max_voxels=max_voxels, max_frames=max_frames)
        for t in range(header.n_frames):
            array, geometry = _frame_pixels(src, header, t)
            array, geometry, squeezed = squeeze(array, geometry)
            array, _ = _values(array, SCALAR, f"{src.display} (frame {t})", False)
            metadata = {"format": src.format, "dtype": header.pixel_type, "size": header.size, "dims": header.dims,
                        "n_frames": header.n_frames, "frame": t, "squeezed": squeezed, **header.info}
            frames.append(Image(array, geometry, SCALAR, src.display, metadata))
    return frames
