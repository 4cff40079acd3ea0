"""Read uploaded medical images into :class:`models.io.image.Image`, or refuse them with a typed error.

Formats (see :data:`SUPPORTED`): NIfTI-1/2 (``.nii``, ``.nii.gz``), DICOM (one file — multi-frame files
become a 3-D volume —, a folder or a zip of one series), MetaImage (``.mha``, ``.mhd`` + data file),
NRRD (``.nrrd``, ``.nhdr`` + data file), and a zip of any of these. The format is detected from the
content, the extension only being a fallback, so a misnamed file is still read or clearly refused. Every
failure is an :class:`~models.io.errors.ImageError` whose message names the file (``archive.zip/member``
inside archives), the problem and what to do.

Rules, stated once (each in the module that applies it):

- **Axes.** ``Image.array`` is in reversed (NumPy) order, geometry in ITK index order and LPS mm.
  Negative spacings some writers produce are folded into the direction (:mod:`.geometry`).
- **Singleton axes.** A 3-D grid with exactly one axis of size 1 becomes a 2-D image; two or more are
  refused (:mod:`.singleton`).
- **Frames.** A 4-D+ image needs ``frame=`` unless it has one frame; only that frame is read where the
  format allows (:mod:`.header`, :mod:`.itk`, :mod:`.nifti`). The cine entry points
  (:func:`.read.read_frames`) read every frame, of a 4-D file or of a DICOM cine series (:mod:`.dicom_cine`).
- **Values.** Scalar images must be finite, within float32's range and not constant; label images whole
  numbers, float labels cast to the smallest integer dtype (:mod:`.checks`).
- **Limits.** ``max_voxels`` (per frame) is checked from the header before any pixel is read (:mod:`.read`).

The modules: :mod:`.read` (the entry points), :mod:`.resolve` and :mod:`.choose` (a file, folder or zip
to one :class:`~.source.Source`), :mod:`.detect` (format from content), :mod:`.nifti` (nibabel, and why
ITK is bypassed), :mod:`.dicom`, :mod:`.dicom_series` and :mod:`.dicom_geometry` (pydicom headers, series
grouping and ordering), :mod:`.dicom_cine` (a cine series' phases as frames), :mod:`.metaimage`,
:mod:`.nrrd` and :mod:`.datafile` (header and data-file checks), :mod:`.itk` (SimpleITK reading),
:mod:`.header` (header refusals), :mod:`.singleton`, :mod:`.checks` (values, masks, pairs),
:mod:`.inputs` (a registration's images, read and checked alike by the API and the worker);
:mod:`.geometry` and :mod:`.source` hold what they share. Of the heavy libraries, importing this package
loads SimpleITK and NumPy only: pydicom and nibabel are imported when a file needs them, and torch never
(the API process validates uploads with it).
"""

from __future__ import annotations

from models.io.errors import SUPPORTED_FORMATS
from models.io.readers.checks import check_mask, check_pair
from models.io.readers.file_format import detect_format
from models.io.readers.header import DEFAULT_MAX_VOXELS, ImageHeader, check_header
from models.io.readers.inputs import INPUT_ROLES, read_registration_inputs
from models.io.readers.read import read_header, read_image

__all__ = ["SUPPORTED", "DEFAULT_MAX_VOXELS", "ImageHeader", "read_image", "read_header", "check_header",
           "check_mask", "check_pair", "detect_format", "INPUT_ROLES", "read_registration_inputs"]

SUPPORTED = SUPPORTED_FORMATS
