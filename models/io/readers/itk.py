"""Headers and pixels through SimpleITK: MetaImage, NRRD, DICOM and the NIfTI-1 header.

ITK's exceptions carry C++ prefixes, object addresses and the scratch paths of our links; :func:`_reason`
keeps their informative last line under the names the user uploaded, so the message is about the upload.
Of a 4-D+ image only the chosen frame is read (``SetExtractIndex``), so a long series costs one frame.
The geometry a :class:`Source` already carries (DICOM series and multi-frame files, computed from pydicom
headers) replaces ITK's: ITK gives multi-frame files whose frames descend along the normal a negative spacing.
"""

from __future__ import annotations

import math
import re

import numpy as np
import SimpleITK as sitk

from models.io.errors import UnreadableImageError
from models.io.image import Geometry
from models.io.readers.geometry import checked_geometry
from models.io.readers.header import ImageHeader
from models.io.readers.source import DICOM, NAMES, Source

__all__ = ["itk_header", "itk_pixels"]

_SITK_DTYPES = {
    sitk.sitkUInt8: "uint8", sitk.sitkInt8: "int8", sitk.sitkUInt16: "uint16", sitk.sitkInt16: "int16",
    sitk.sitkUInt32: "uint32", sitk.sitkInt32: "int32", sitk.sitkUInt64: "uint64", sitk.sitkInt64: "int64",
    sitk.sitkFloat32: "float32", sitk.sitkFloat64: "float64",
    sitk.sitkComplexFloat32: "complex64", sitk.sitkComplexFloat64: "complex128",
    sitk.sitkVectorUInt8: "uint8", sitk.sitkVectorInt8: "int8", sitk.sitkVectorUInt16: "uint16",
    sitk.sitkVectorInt16: "int16", sitk.sitkVectorUInt32: "uint32", sitk.sitkVectorInt32: "int32",
    sitk.sitkVectorUInt64: "uint64", sitk.sitkVectorInt64: "int64", sitk.sitkVectorFloat32: "float32",
    sitk.sitkVectorFloat64: "float64",
}


def _reason(error: Exception, *names: tuple[str, str]) -> str:
    """The informative last line of a SimpleITK/ITK exception, without pointers and scratch paths."""
    lines = [ln.strip() for ln in str(error).strip().splitlines() if ln.strip()]
    text = lines[-1] if lines else type(error).__name__
    text = re.sub(r"^(sitk::ERROR|ITK ERROR):\s*", "", text)
    text = re.sub(r"\w+ImageIO\(0x[0-9a-fA-F]+\):\s*", "", text)
    for real, shown in names:
        text = text.replace(real, shown)
    return text[:300]


def _sitk_reader(src: Source) -> sitk.ImageFileReader:
    """A reader of the source's first file with its ImageIO fixed (never guessed from the name)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(src.files[0]))
    reader.SetImageIO(src.io)
    return reader


def itk_header(src: Source) -> ImageHeader:
    """The header as ITK reads it; a DICOM series counts its files as the third axis."""
    reader = _sitk_reader(src)
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise UnreadableImageError(f"the {NAMES[src.format]} header cannot be read "
                                   f"({_reason(error, (str(src.files[0]), src.display))})", path=src.display) from None
    pixel_id = reader.GetPixelID()
    pixel_type = _SITK_DTYPES.get(pixel_id, sitk.GetPixelIDValueAsString(pixel_id))
    size, dims = tuple(reader.GetSize()), reader.GetDimension()
    spacing, origin, direction = tuple(reader.GetSpacing()), tuple(reader.GetOrigin()), tuple(reader.GetDirection())
    if src.format == DICOM and len(src.files) > 1:
        size, dims = (size[0], size[1], len(src.files)), 3
    if src.geometry is not None:
        spacing, origin, direction = src.geometry.spacing, src.geometry.origin, src.geometry.direction
    elif dims in (2, 3) and min(spacing) <= 0:  # as the pixels will be: negative spacing folded, zero refused
        folded = checked_geometry(spacing, origin, direction, src.display)
        spacing, origin, direction = folded.spacing, folded.origin, folded.direction
    info = dict(src.info)
    return ImageHeader(src.display, src.format, dims, size, spacing, origin, direction, pixel_type,
                       reader.GetNumberOfComponents(), math.prod(size[3:]), src.series_uid, info)


def _geometry_of(image: sitk.Image, display: str) -> Geometry:
    """The image's geometry, through :func:`checked_geometry` like every other reader's."""
    return checked_geometry(image.GetSpacing(), image.GetOrigin(), image.GetDirection(), display)


def itk_pixels(src: Source, header: ImageHeader, frame_index: tuple[int, ...]) -> tuple[np.ndarray, Geometry]:
    """The voxels (one frame of a 4-D+ file) in NumPy order, and their geometry."""
    try:
        if src.format == DICOM and len(src.files) > 1:
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames([str(f) for f in src.files])
            reader.SetImageIO(src.io)
        else:
            reader = _sitk_reader(src)
            if frame_index:
                reader.SetExtractIndex([0, 0, 0, *frame_index])
                reader.SetExtractSize([*header.size[:3], *([0] * len(frame_index))])
        image = reader.Execute()
    except RuntimeError as error:
        raise UnreadableImageError(f"the pixel data cannot be read ({_reason(error, (str(src.files[0]), src.display))}"
                                   "); the file may be truncated or corrupt", path=src.display) from None
    array = sitk.GetArrayFromImage(image)
    if src.geometry is not None and image.GetDimension() == 3:
        return array, src.geometry
    return array, _geometry_of(image, src.display)
