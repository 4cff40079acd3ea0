"""Typed errors for images that users upload: each says which file, what is wrong and what to do.

Every class derives from :class:`ImageError` (a ``ValueError``, so existing ``except ValueError``
callers keep working) and carries:

- ``path``: the file, folder or archive member concerned (``None`` when an error is about two images);
- ``problem`` and ``hint``: the two halves of the message (``"<path>: <problem> — <hint>"``);
- ``details``: machine-readable facts (sizes, limits, series list) for the API's JSON body;
- ``http_status`` (class attribute) and ``code`` (a stable snake_case name) for the upload service.

HTTP status choices:

- **400** Bad Request: the upload itself is broken or unsafe — unreadable/truncated/corrupt
  (:class:`UnreadableImageError`), a hostile or empty archive, a data-file reference that points outside
  its folder (:class:`UnsafePathError`).
- **413** Content Too Large: :class:`ImageTooLargeError` and :class:`ArchiveTooLargeError` (a limit was
  exceeded; the message names the limit).
- **415** Unsupported Media Type: :class:`UnsupportedFormatError` and :class:`NotAnImageError` (a PDF, a
  text file, a PNG, a DICOM report): the bytes are fine, the kind of file is not one we take.
- **422** Unprocessable Content: a well-formed image that cannot be used as asked — a frame must be
  chosen, NaN/Inf voxels, values beyond the range of 32-bit floats, empty or constant image, vector/complex
  voxels, unusable dimensionality, a mask that does not fit its image, a 2-D/3-D pair, an inconsistent
  DICOM series, a DICOM image object without pixel data, several series where one is needed, or a
  ``series=`` that names none of them.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "SUPPORTED_FORMATS", "ImageError", "UnreadableImageError", "UnsupportedFormatError", "NotAnImageError",
    "DicomNoPixelDataError", "FrameRequiredError", "FrameOutOfRangeError", "NonFiniteValuesError",
    "ValuesOutOfRangeError", "EmptyImageError", "MaskGeometryError", "NonIntegerMaskError", "DimensionMismatchError",
    "UnsupportedDimensionsError", "ImageTooLargeError", "MultipleSeriesError", "UnknownSeriesError",
    "InconsistentSeriesError", "HostileArchiveError", "ArchiveTooLargeError", "EmptyArchiveError",
    "UnsafePathError", "VectorImageError", "DicomSegError", "NotACineError", "TooManyFramesError",
]

SUPPORTED_FORMATS = ("NIfTI (.nii, .nii.gz), DICOM (one file, or one series as a folder or .zip), "
                     "MetaImage (.mha, or .mhd with its .raw), NRRD (.nrrd, or .nhdr with its data file), "
                     "or a .zip holding one of these")


def _rebuild(cls: type[ImageError], problem: str, path: str | None, hint: str | None, details: dict) -> ImageError:
    return cls(problem, path=path, hint=hint, **details)


class ImageError(ValueError):
    """Base class: an input image (or pair) cannot be used; ``str(error)`` is the user-facing message."""

    http_status: ClassVar[int] = 400
    code: ClassVar[str] = "image_error"
    default_hint: ClassVar[str | None] = None

    def __init__(self, problem: str, *, path: Any = None, hint: str | None = None, **details: Any) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        self.hint = hint if hint is not None else self.default_hint
        self.details = details
        message = f"{self.path}: {problem}" if self.path else problem
        if self.hint:
            message = f"{message} — {self.hint}"
        super().__init__(message)

    def __reduce__(self):  # picklable across worker processes despite keyword-only arguments
        return _rebuild, (type(self), self.problem, self.path, self.hint, self.details)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready body for an HTTP error response."""
        return {"error": self.code, "status": self.http_status, "message": str(self), "path": self.path,
                "details": self.details}


class UnreadableImageError(ImageError):
    """The file is empty, truncated or corrupt, or a file it needs (an .mhd's .raw) is missing."""

    code = "unreadable_image"
    default_hint = "upload the file again (the transfer may have been cut) or re-export it from the source"


class UnsupportedFormatError(ImageError):
    """A file format we do not read (PNG, JPEG, TIFF, MINC, a gzip that is not NIfTI, ...)."""

    http_status = 415
    code = "unsupported_format"
    default_hint = f"supported formats: {SUPPORTED_FORMATS}"


class NotAnImageError(ImageError):
    """The file is not an image at all: text, a PDF, a DICOM report, an archive without images."""

    http_status = 415
    code = "not_an_image"
    default_hint = f"upload the image itself; supported formats: {SUPPORTED_FORMATS}"


class DicomNoPixelDataError(NotAnImageError):
    """A DICOM object without pixel data (a structured report, an RT structure set, a stripped image)."""

    http_status = 422
    code = "dicom_no_pixel_data"
    default_hint = "upload the DICOM image series itself (CT, MR, PET...), not a report or a header-only file"


class FrameRequiredError(ImageError):
    """A 4-D (or higher) image where one 3-D frame must be chosen with ``frame=``."""

    http_status = 422
    code = "frame_required"


class FrameOutOfRangeError(FrameRequiredError):
    """``frame=`` names a frame the image does not have."""

    code = "frame_out_of_range"


class NonFiniteValuesError(ImageError):
    """NaN or infinite voxels in a scalar image."""

    http_status = 422
    code = "non_finite_values"
    default_hint = "replace NaN/Inf voxels (e.g. by 0) before uploading"


class ValuesOutOfRangeError(ImageError):
    """Finite voxels too large for 32-bit floats, which registration computes in: the cast would make them Inf."""

    http_status = 422
    code = "values_out_of_range"
    default_hint = "rescale the image into the range of 32-bit floats (about ±3.4e38) before uploading"


class EmptyImageError(ImageError):
    """A zero-size axis, or a scalar image whose voxels all have one value (nothing to register)."""

    http_status = 422
    code = "empty_image"


class MaskGeometryError(ImageError):
    """A mask whose grid (size, spacing, origin or direction) differs from its image's."""

    http_status = 422
    code = "mask_geometry"
    default_hint = "export the mask on the image's grid, or resample it onto the image (nearest neighbour)"


class NonIntegerMaskError(ImageError):
    """A label image whose values are not whole numbers (a probability map, an interpolated mask)."""

    http_status = 422
    code = "non_integer_mask"
    default_hint = "upload integer labels (0 = background); threshold or round a probability map first"


class DimensionMismatchError(ImageError):
    """2-D where 3-D is expected or the reverse (within a pair, or a mask and its image)."""

    http_status = 422
    code = "dimension_mismatch"
    default_hint = "register 2-D with 2-D and 3-D with 3-D images"


class UnsupportedDimensionsError(ImageError):
    """An image that is not 2-D or 3-D after dropping singleton axes (a 1-D profile, a single voxel)."""

    http_status = 422
    code = "unsupported_dimensions"
    default_hint = "upload a 2-D or 3-D image"


class ImageTooLargeError(ImageError):
    """More voxels (or bytes) than the configured limit, which the message names."""

    http_status = 413
    code = "image_too_large"
    default_hint = "crop or downsample the image, or ask for a higher limit"


class MultipleSeriesError(ImageError):
    """A folder or archive with several DICOM series (or images) where one is needed."""

    http_status = 422
    code = "multiple_series"

    @property
    def series(self) -> list[dict]:
        return list(self.details.get("series", []))


class UnknownSeriesError(ImageError):
    """``series=`` names no series (or image) of the folder or archive, or several."""

    http_status = 422
    code = "unknown_series"


class InconsistentSeriesError(ImageError):
    """A DICOM series whose slices do not form one regular volume (missing slice, mixed sizes, tilt)."""

    http_status = 422
    code = "inconsistent_series"
    default_hint = "upload the complete series as exported by the scanner or PACS, one series per upload"


class HostileArchiveError(ImageError):
    """A zip that tries to escape its folder, holds links, or is built like a zip bomb."""

    code = "hostile_archive"
    default_hint = "create the zip again from a plain folder of image files (e.g. 'zip -r scan.zip scan/')"


class ArchiveTooLargeError(HostileArchiveError, ImageTooLargeError):
    """An archive that would unpack to more bytes or members than allowed (the message names the limit)."""

    http_status = 413
    code = "archive_too_large"
    default_hint = "upload fewer or smaller files, or ask for a higher limit"


class EmptyArchiveError(ImageError):
    """A zip (or folder) with no files in it."""

    code = "empty_archive"
    default_hint = "zip the folder that holds the image files, not an empty one"


class UnsafePathError(ImageError):
    """A header (.mhd, .nhdr) whose data-file reference points outside its own folder."""

    code = "unsafe_path"
    default_hint = "the data file must sit next to its header and be named without folders"


class VectorImageError(ImageError):
    """Several components per voxel (RGB, vector field, complex values) where one scalar is expected."""

    http_status = 422
    code = "vector_image"
    default_hint = "upload a single-channel (grey-value) image; split multi-channel data into one image per channel"


class DicomSegError(ImageError):
    """A DICOM SEG cannot reference the fixed series: no patient geometry, mixed studies, or a mask off its slices."""

    http_status = 422
    code = "dicom_seg"
    default_hint = "the NIfTI warped mask is still written; a SEG needs the fixed image as one complete DICOM series"


class NotACineError(ImageError):
    """A cine registration needs a series of frames: a 4-D image, or a DICOM series with several phases."""

    http_status = 422
    code = "not_a_cine"
    default_hint = ("upload the whole cine: a 4-D NIfTI (x, y, z, t) or a DICOM series with several temporal "
                    "phases per slice; register a single pair with POST /v1/registrations")


class TooManyFramesError(ImageError):
    """More frames than one cine job may register (``ADACS_MAX_CINE_FRAMES``)."""

    http_status = 413
    code = "too_many_frames"
