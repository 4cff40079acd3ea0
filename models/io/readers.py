"""Read uploaded medical images into :class:`models.io.image.Image`, or refuse them with a typed error.

Formats (see :data:`SUPPORTED`): NIfTI-1/2 (``.nii``, ``.nii.gz``), DICOM (one file — multi-frame files
become a 3-D volume —, a folder or a zip of one series), MetaImage (``.mha``, ``.mhd`` + data file),
NRRD (``.nrrd``, ``.nhdr`` + data file), and a zip of any of these. The format is detected from the
content (zip/gzip magic, ``DICM`` at offset 128, NIfTI ``sizeof_hdr`` 348/540 with its magic, ``NRRD000``,
MetaImage ``ObjectType``/``NDims`` lines), the extension only being a fallback, so a misnamed file is
still read or clearly refused. Every failure is an :class:`~models.io.errors.ImageError` whose message
names the file (``archive.zip/member`` inside archives), the problem and what to do.

Rules, stated once:

- **Axes.** ``Image.array`` is in reversed (NumPy) order, geometry in ITK index order and LPS mm.
  Negative spacings some writers produce (descending DICOM frames) are folded into the direction.
- **Singleton axes.** A 3-D grid with exactly one axis of size 1 (a 2-D slice stored as X×Y×1, a
  single DICOM slice, a coronal slice stored as X×1×Z) becomes a 2-D image over the two other index
  axes. Its geometry: drop the physical axis the singleton index axis points along most; if the two
  in-plane axes have no component along it (below 1e-5: the slice lies in a plane of the LPS axes, flips
  allowed), the remaining 2×2 block of the direction is the 2-D direction and the origin keeps those two
  coordinates (``"submatrix"``); otherwise (an oblique slice, whose in-plane axes mix in the dropped
  axis) the 2-D frame is the slice's own: direction identity, origin = the 3-D origin projected on the two in-plane axes
  (``"in-plane"``), which keeps in-plane distances exact and is the same for all slices of one plane.
  ``metadata["squeezed"]`` records the axis, the mode and the 3-D geometry. Two or more singleton
  axes (a 1-D profile) are refused (:class:`UnsupportedDimensionsError`).
- **Frames.** An image with more than three axes has ``prod(size[3:])`` frames (a 5-D ``X×Y×Z×T×E``
  has ``T·E``, numbered with T fastest); one must be chosen with ``frame=`` (``FrameRequiredError``)
  unless there is only one. Only the chosen frame is read where the format allows.
- **Values.** Scalar images must be finite (``NonFiniteValuesError``) and not constant
  (``EmptyImageError``: registration needs contrast; ``allow_constant=True`` lifts this). Label images
  must hold whole numbers (``NonIntegerMaskError``); float labels are cast to the smallest fitting
  integer dtype (unsigned when no label is negative); an all-zero mask is accepted (a structure may be
  absent) — ``metadata["labels"]`` lists the labels found.
- **Limits.** ``max_voxels`` (per frame) is checked from the header before any pixel is read.

What SimpleITK (ITK 5.4) could not do, and the workaround here:

- NIfTI voxels are read with nibabel, the geometry with SimpleITK (NIfTI-1; ITK's qform/sform rules):
  ITK silently turns NaN and ±Inf voxels into 0 (so they could not be refused) and zero-fills the
  missing part of a truncated ``.nii.gz``; nibabel keeps them and raises on a cut stream.
- NIfTI-2 is not read by ITK at all: header and voxels come from nibabel, affine converted RAS -> LPS.
- ITK reports a zero-length NIfTI axis as length 1 (checked with nibabel first) and needs the right
  extension for NIfTI (misnamed files are read through a correctly named link in a scratch folder).
- Multi-frame DICOM whose frames descend along the slice normal come back with a negative spacing:
  the geometry is computed from the per-frame positions (pydicom) and the sign folded into the direction.
- ITK stacks DICOM series with missing, duplicated, mixed-size or tilted slices without complaint:
  checked here (:class:`InconsistentSeriesError`). Truncated DICOM pixel data, uncompressed MetaImage
  and NRRD data, and the compressed size a MetaImage header states are checked before ITK reads.

DICOM series are grouped and ordered (along the slice normal) from pydicom headers — recursively, with
descriptions and pixel-data checks, which ``ImageSeriesReader.GetGDCMSeriesIDs`` (one folder, UIDs
only) does not give — and their voxels read with ``sitk.ImageSeriesReader``.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from models.io.archive import extract_zip, is_zip
from models.io.errors import (
    SUPPORTED_FORMATS,
    DicomNoPixelDataError,
    DimensionMismatchError,
    EmptyArchiveError,
    EmptyImageError,
    FrameOutOfRangeError,
    FrameRequiredError,
    ImageTooLargeError,
    InconsistentSeriesError,
    MaskGeometryError,
    MultipleSeriesError,
    NonFiniteValuesError,
    NonIntegerMaskError,
    NotAnImageError,
    UnknownSeriesError,
    UnreadableImageError,
    UnsafePathError,
    UnsupportedDimensionsError,
    UnsupportedFormatError,
    VectorImageError,
)
from models.io.image import LABEL, SCALAR, Geometry, Image

__all__ = ["SUPPORTED", "DEFAULT_MAX_VOXELS", "ImageHeader", "read_image", "read_header", "check_header",
           "check_mask", "check_pair", "detect_format"]

SUPPORTED = SUPPORTED_FORMATS
DEFAULT_MAX_VOXELS = 256**3 * 4
NIFTI, DICOM, METAIMAGE, NRRD, ZIP = "nifti", "dicom", "metaimage", "nrrd", "zip"
_NAMES = {NIFTI: "NIfTI", DICOM: "DICOM", METAIMAGE: "MetaImage", NRRD: "NRRD", ZIP: "zip"}
_IO = {NIFTI: "NiftiImageIO", DICOM: "GDCMImageIO", METAIMAGE: "MetaImageIO", NRRD: "NrrdImageIO"}
_EXTENSIONS = {".nii": NIFTI, ".nii.gz": NIFTI, ".hdr": NIFTI, ".dcm": DICOM, ".dicom": DICOM, ".ima": DICOM,
               ".mha": METAIMAGE, ".mhd": METAIMAGE, ".nrrd": NRRD, ".nhdr": NRRD, ".zip": ZIP}
_IGNORED = {"__macosx", "thumbs.db", "desktop.ini", "dicomdir"}
_HEAD = 4096

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


# --------------------------------------------------------------------------------------------- header


@dataclass(frozen=True)
class ImageHeader:
    """What a file says about its image, without its pixels (sizes etc. in ITK index order, LPS)."""

    path: str
    format: str
    dims: int
    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]  # row-major dims × dims
    pixel_type: str  # NumPy dtype name of one component, e.g. "int16"
    n_components: int = 1
    n_frames: int = 1
    series_uid: str | None = None
    info: dict = field(default_factory=dict)

    @property
    def n_voxels(self) -> int:
        """Voxels in one (3-D or 2-D) frame."""
        return math.prod(self.size[:3])

    @property
    def image_ndim(self) -> int | None:
        """Dimensionality of the image :func:`read_image` returns (singleton axes dropped), if 2 or 3."""
        spatial = self.size[:3]
        n = sum(1 for s in spatial if s != 1)
        return n if n in (2, 3) else None


def _fmt_size(size) -> str:
    return "×".join(str(int(s)) for s in size)


def _floats(values) -> tuple[float, ...]:
    return tuple(float(v) for v in np.ravel(values))


def _fmt_vec(values) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def _reason(error: Exception, *names: tuple[str, str]) -> str:
    """The informative last line of a SimpleITK/ITK exception, without pointers and scratch paths."""
    lines = [ln.strip() for ln in str(error).strip().splitlines() if ln.strip()]
    text = lines[-1] if lines else type(error).__name__
    text = re.sub(r"^(sitk::ERROR|ITK ERROR):\s*", "", text)
    text = re.sub(r"\w+ImageIO\(0x[0-9a-fA-F]+\):\s*", "", text)
    for real, shown in names:
        text = text.replace(real, shown)
    return text[:300]


# ------------------------------------------------------------------------------------------ detection


def _ext(name: str) -> str:
    lower = name.lower()
    return ".nii.gz" if lower.endswith(".nii.gz") else os.path.splitext(lower)[1]


def _is_nifti(head: bytes) -> bool:
    if len(head) >= 348:
        for order in ("<", ">"):
            n = int(np.frombuffer(head[:4], dtype=f"{order}i4")[0])
            if n == 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
                return True
            if n == 540 and head[4:8] in (b"n+2\x00", b"ni2\x00"):
                return True
    return False


def _nifti_version(head: bytes) -> int:
    return 2 if head[4:7] in (b"n+2", b"ni2") else 1


def _looks_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 4:  # only a multi-byte character cut at the end is forgiven
            return False
        text = head[: error.start].decode("utf-8")
    printable = sum(ch.isprintable() or ch in "\r\n\t\f" for ch in text)
    return printable >= 0.95 * max(len(text), 1)


_MAGIC = [  # (prefix, offset, class, description)
    (b"%PDF", 0, NotAnImageError, "a PDF document"),
    (b"\x89PNG\r\n\x1a\n", 0, UnsupportedFormatError, "a PNG picture (no physical geometry)"),
    (b"\xff\xd8\xff", 0, UnsupportedFormatError, "a JPEG picture (no physical geometry)"),
    (b"GIF8", 0, UnsupportedFormatError, "a GIF picture"),
    (b"II*\x00", 0, UnsupportedFormatError, "a TIFF image"),
    (b"MM\x00*", 0, UnsupportedFormatError, "a TIFF image"),
    (b"\x89HDF\r\n\x1a\n", 0, UnsupportedFormatError, "an HDF5 file (MINC 2?)"),
    (b"CDF\x01", 0, UnsupportedFormatError, "a netCDF file (MINC 1?)"),
    (b"BZh", 0, UnsupportedFormatError, "a bzip2-compressed file; only .zip archives and .nii.gz are read"),
    (b"7z\xbc\xaf\x27\x1c", 0, UnsupportedFormatError, "a 7-Zip archive; only .zip archives are read"),
    (b"Rar!", 0, UnsupportedFormatError, "a RAR archive; only .zip archives are read"),
    (b"ustar", 257, UnsupportedFormatError, "a tar archive; only .zip archives are read"),
]


def _gzip_content(path: Path, display: str, name: str) -> str:
    with open(path, "rb") as fh:
        compressed = fh.read(1 << 16)
    try:
        inner = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(compressed, 1024)
    except zlib.error as error:
        raise UnreadableImageError(f"is gzip-compressed but its data are corrupt ({error})", path=display) from None
    if _is_nifti(inner):
        return NIFTI
    if len(inner) < 348 and not _looks_text(inner):
        raise UnreadableImageError("is gzip-compressed but ends before a full NIfTI header", path=display)
    if _ext(name) in (".nii.gz", ".nii"):
        raise UnreadableImageError("is gzip-compressed but the content is not a NIfTI image (no NIfTI header)",
                                   path=display)
    raise UnsupportedFormatError("is a gzip-compressed file that is not a NIfTI image (only .nii.gz is read "
                                 "compressed)", path=display)


def _probe_dicom_without_preamble(path: Path) -> bool:
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), force=True, defer_size=1024, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - anything pydicom cannot parse is simply not DICOM
        return False
    return "SOPClassUID" in ds or ("Rows" in ds and "Columns" in ds)


def detect_format(path: str | Path, *, display: str | None = None) -> str:
    """``"nifti" | "dicom" | "metaimage" | "nrrd" | "zip"`` from the content, the name as a fallback.

    Raises :class:`UnreadableImageError` (empty, corrupt gzip, named like a format it is not),
    :class:`NotAnImageError` (text, PDF) or :class:`UnsupportedFormatError` (other formats).
    """
    path = Path(path)
    display = display or str(path)
    with open(path, "rb") as fh:
        head = fh.read(_HEAD)
    if not head:
        raise UnreadableImageError("the file is empty (0 bytes)", path=display)
    if is_zip(head):
        return ZIP
    if head[:2] == b"\x1f\x8b":
        return _gzip_content(path, display, path.name)
    if head[128:132] == b"DICM":
        return DICOM
    if _is_nifti(head):
        return NIFTI
    if re.match(rb"NRRD000\d", head):
        return NRRD
    text_part = head.split(b"ElementDataFile")[0][:1024]  # binary pixels may follow a short header
    if (re.match(rb"\s*\w+\s*=", text_part) and _looks_text(text_part)
            and re.search(rb"^\s*(ObjectType|NDims)\s*=", text_part, re.MULTILINE)):
        return METAIMAGE
    for magic, offset, cls, what in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            raise cls(f"is {what}, not a medical image", path=display)
    ext = _ext(path.name)
    if ext in (".dcm", ".dicom", ".ima", "") and not _looks_text(head) and _probe_dicom_without_preamble(path):
        return DICOM
    if _looks_text(head):
        first = head.decode("utf-8", "replace").strip().splitlines()[0][:40] if head.strip() else ""
        raise NotAnImageError(f"is a text file, not an image (it starts with {first!r})", path=display)
    if ext in _EXTENSIONS:
        fmt = _NAMES[_EXTENSIONS[ext]]
        hint = ("upload the whole .nii.gz again" if ext == ".nii.gz" else None)
        raise UnreadableImageError(f"is named '{path.name}' but is not a {fmt} file (no valid {fmt} header; "
                                   "corrupt, or another format renamed)", path=display, hint=hint)
    raise UnsupportedFormatError(f"unrecognised file format{f' (extension {ext})' if ext else ''}", path=display)


# ------------------------------------------------------------------------------------------ sources


@dataclass
class _Source:
    """One readable thing resolved from the user's path: a file, or a DICOM series' files in order."""

    format: str
    files: list[Path]
    display: str
    io: str = ""  # SimpleITK ImageIO, or "nibabel"
    geometry: Geometry | None = None  # overrides SimpleITK's (DICOM series and multi-frame)
    series_uid: str | None = None
    info: dict = field(default_factory=dict)


def _alias(path: Path, ext: str, workdir: Path) -> Path:
    """``path`` under a name ending in ``ext`` (readers that trust extensions), via a link in ``workdir``."""
    if path.name.lower().endswith(ext):
        return path
    link = Path(tempfile.mkdtemp(dir=workdir)) / f"image{ext}"
    try:
        link.symlink_to(path.resolve())
    except OSError:  # pragma: no cover - file systems without links
        import shutil

        shutil.copyfile(path, link)
    return link


def _resolve(path: Path, series: str | None, workdir: Path, display: str) -> _Source:
    if not path.exists():
        raise UnreadableImageError("no such file or folder", path=display, hint="check the path")
    if path.is_dir():
        return _resolve_folder(path, series, workdir, display)
    fmt = detect_format(path, display=display)
    if fmt == ZIP:
        root = extract_zip(path, workdir, name=display)
        return _resolve_folder(root, series, workdir, display)
    return _single(path, fmt, display, series, workdir)


def _single(path: Path, fmt: str, display: str, series: str | None, workdir: Path,
            dataset=None) -> _Source:
    if fmt == NIFTI:
        return _nifti_source(path, display, workdir)
    if fmt == METAIMAGE:
        _check_metaimage(path, display)
        return _Source(METAIMAGE, [path], display, _IO[METAIMAGE])
    if fmt == NRRD:
        _check_nrrd(path, display)
        return _Source(NRRD, [path], display, _IO[NRRD])
    ds = dataset if dataset is not None else _dicom_dataset(path, display)
    _check_dicom_pixels(ds, path, display)
    uid = str(ds.get("SeriesInstanceUID", "")) or None
    if series and not (uid or "").startswith(series):
        raise UnknownSeriesError(f"series={series!r} does not match this file's SeriesInstanceUID {uid}",
                                 path=display, hint="leave series unset for a single file, or upload the "
                                 "folder/zip that holds the series you want")
    return _Source(DICOM, [path], display, _IO[DICOM], _multiframe_geometry(ds, display), uid,
                   _dicom_info(ds, 1))


# ------------------------------------------------------------------------------------------- NIfTI


def _nifti_source(path: Path, display: str, workdir: Path) -> _Source:
    import nibabel as nib

    with open(path, "rb") as fh:
        head = fh.read(2)
    gz = head == b"\x1f\x8b"
    if gz:
        with open(path, "rb") as fh:
            version = _nifti_version(zlib.decompressobj(31).decompress(fh.read(1 << 16), 16))
    else:
        with open(path, "rb") as fh:
            version = _nifti_version(fh.read(16))
    pair = path.suffix.lower() == ".hdr"
    alias = path if pair else _alias(path, ".nii.gz" if gz else ".nii", workdir)
    try:
        img = nib.load(str(alias))
    except Exception as error:  # noqa: BLE001 - nibabel raises many types for a bad header
        reason = str(error).replace(str(alias), display)
        raise UnreadableImageError(f"has an invalid NIfTI header ({reason})", path=display) from None
    shape = tuple(int(s) for s in img.shape)
    if 0 in shape:
        raise EmptyImageError(f"has a zero-size axis (size {_fmt_size(shape)}): it holds no voxels", path=display,
                              hint="export the image again; the file is empty")
    if not gz and not pair:
        offset = int(getattr(img.dataobj, "offset", 0))
        needed = offset + math.prod(shape) * img.get_data_dtype().itemsize
        have = path.stat().st_size
        if have < needed:
            raise UnreadableImageError(f"the pixel data are truncated: the file has {have} bytes but its header "
                                       f"({_fmt_size(shape)} voxels of {img.get_data_dtype()}) needs {needed}",
                                       path=display)
    io = "nibabel" if version == 2 else _IO[NIFTI]
    return _Source(NIFTI, [alias], display, io, info={"nifti_version": version})


def _nib_image(src: _Source):
    import nibabel as nib

    return nib.load(str(src.files[0]))


def _affine_geometry(affine: np.ndarray) -> tuple[tuple, tuple, tuple]:
    """RAS affine (nibabel) -> ITK spacing, LPS origin, orthonormal LPS direction (3-D)."""
    flip = np.diag([-1.0, -1.0, 1.0])
    linear = flip @ affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    spacing = np.where(spacing > 0, spacing, 1.0)
    u, _, vt = np.linalg.svd(linear / spacing)
    direction = u @ vt  # nearest orthonormal matrix (drops any shear)
    return _floats(spacing), _floats(flip @ affine[:3, 3]), _floats(direction)


def _nib_header(src: _Source) -> ImageHeader:
    img = _nib_image(src)
    shape = tuple(int(s) for s in img.shape)
    dtype = img.get_data_dtype()
    components = 1
    if dtype.names:  # RGB(A) NIfTI types
        components = len(dtype.names)
    elif len(shape) == 5 and img.header.get_intent()[0] == "vector":
        components = shape[4]
    spacing3, origin3, direction3 = _affine_geometry(img.affine)
    size = shape + (1,) * (3 - len(shape))  # a 2-D NIfTI is an X×Y×1 grid, squeezed like any other
    n = len(size)
    extra = tuple(float(z) for z in img.header.get_zooms()[3:n]) + (1.0,) * (n - max(len(shape), 3))
    direction = np.eye(n)
    direction[:3, :3] = np.asarray(direction3).reshape(3, 3)
    pixel_type = str(dtype.base if dtype.names else dtype)
    return ImageHeader(src.display, NIFTI, n, size, spacing3 + extra, origin3 + (0.0,) * (n - 3),
                       _floats(direction), pixel_type, components, math.prod(size[3:]),
                       info={**src.info, "dims_in_file": len(shape)})


def _nib_pixels(src: _Source, header: ImageHeader, frame_index: tuple[int, ...]) -> tuple[np.ndarray, Geometry]:
    """NIfTI voxels through nibabel: SimpleITK turns NaN/±Inf into 0 and zero-fills truncated .nii.gz data."""
    import nibabel as nib

    try:
        img = nib.load(str(src.files[0]), mmap=False)
        n = len(img.shape)
        index = (slice(None),) * min(n, 3) + tuple(frame_index)[: max(n - 3, 0)]
        data = np.asanyarray(img.dataobj[index])
    except (EOFError, OSError, zlib.error, ValueError) as error:
        reason = str(error).replace(str(src.files[0]), src.display)
        raise UnreadableImageError(f"the pixel data cannot be read ({reason}); the file may be truncated or corrupt",
                                   path=src.display) from None
    ndim = min(header.dims, 3)
    data = data.reshape(header.size[:ndim])  # only singleton axes differ between the readers' shapes
    array = np.ascontiguousarray(data.transpose(tuple(reversed(range(ndim)))))  # nibabel: x fastest -> no copy
    direction = np.asarray(header.direction).reshape(header.dims, header.dims)[:ndim, :ndim]
    return array, _geometry(header.spacing[:ndim], header.origin[:ndim], direction, src.display)


# --------------------------------------------------------------------------------- MetaImage / NRRD


_META_BYTES = {"MET_UCHAR": 1, "MET_CHAR": 1, "MET_USHORT": 2, "MET_SHORT": 2, "MET_UINT": 4, "MET_INT": 4,
               "MET_ULONG_LONG": 8, "MET_LONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}
_META_TYPES = set(_META_BYTES) | {"MET_ULONG", "MET_LONG"}


def _data_file(header_path: Path, name: str, field_name: str, display: str) -> Path:
    """The data file a detached header names, refusing names that leave the header's folder."""
    if name.upper() == "LIST" or "%" in name:
        raise UnsupportedFormatError(f"{field_name} names a list or pattern of files ({name!r})", path=display,
                                     hint="save the image as one file (.mha or .nrrd) and upload that")
    folder = header_path.parent.resolve()
    if os.path.isabs(name) or re.match(r"^[A-Za-z]:", name):
        raise UnsafePathError(f"{field_name} is an absolute path ({name!r})", path=display)
    target = (folder / name).resolve()
    if not target.is_relative_to(folder):
        raise UnsafePathError(f"{field_name} {name!r} points outside the folder of the header", path=display)
    if not target.is_file():
        raise UnreadableImageError(f"its pixel data file {name!r} (named by {field_name}) is missing",
                                   path=display, hint=f"upload '{header_path.name}' together with '{name}', "
                                   "e.g. both in one .zip")
    return target


def _check_size(data_bytes: int, needed: int, display: str, what: str) -> None:
    if data_bytes < needed:
        raise UnreadableImageError(f"the pixel data are truncated: {what} holds {data_bytes} bytes but the header "
                                   f"needs {needed}", path=display)


def _check_metaimage(path: Path, display: str) -> None:
    with open(path, "rb") as fh:
        raw = fh.read(1 << 16)
    fields, header_len = {}, None
    pos = 0
    for line in raw.splitlines(keepends=True):
        pos += len(line)
        match = re.match(rb"\s*(\w+)\s*=\s*(.*?)\s*$", line)
        if not match:
            continue
        key, value = match.group(1).decode("latin-1"), match.group(2).decode("latin-1")
        fields[key.lower()] = value
        if key.lower() == "elementdatafile":
            header_len = pos
            break
    if header_len is None:
        raise UnreadableImageError("the MetaImage header has no ElementDataFile line (incomplete header)",
                                   path=display)
    try:
        ndims = int(fields["ndims"])
        dims = [int(v) for v in fields["dimsize"].split()]
    except (KeyError, ValueError):
        raise UnreadableImageError("the MetaImage header lacks a valid NDims or DimSize", path=display) from None
    if len(dims) != ndims:
        raise UnreadableImageError(f"the MetaImage header says NDims = {ndims} but DimSize has {len(dims)} values",
                                   path=display)
    if any(d <= 0 for d in dims):
        raise EmptyImageError(f"has a zero-size axis (DimSize = {' '.join(map(str, dims))}): it holds no voxels",
                              path=display, hint="export the image again; the file is empty")
    etype = fields.get("elementtype", "").upper()
    if etype not in _META_TYPES:
        raise UnreadableImageError(f"the MetaImage header has an unknown ElementType {etype or '(none)'!r}",
                                   path=display)
    name = fields["elementdatafile"]
    compressed = fields.get("compresseddata", "false").lower() == "true"
    channels = int(fields.get("elementnumberofchannels", "1") or 1)
    needed = math.prod(dims) * channels * _META_BYTES.get(etype, 0)
    skip = int(fields.get("headersize", "0") or 0)
    if compressed:  # the header states the compressed size: a cut file holds less
        needed = int(fields.get("compresseddatasize", "0") or 0)
    if name.upper() == "LOCAL":
        if skip >= 0:
            _check_size(path.stat().st_size - header_len, needed, display, "the file")
        return
    data = _data_file(path, name, "ElementDataFile", display)
    if skip >= 0:
        _check_size(data.stat().st_size - skip, needed, display, f"'{name}'")


_NRRD_BYTES = {}
for _names, _n in (("signed char int8 int8_t uchar unsigned_char uint8 uint8_t", 1),
                   ("short short_int signed_short signed_short_int int16 int16_t ushort unsigned_short "
                    "unsigned_short_int uint16 uint16_t", 2),
                   ("int signed_int int32 int32_t uint unsigned_int uint32 uint32_t float", 4),
                   ("longlong long_long long_long_int signed_long_long signed_long_long_int int64 int64_t "
                    "ulonglong unsigned_long_long unsigned_long_long_int uint64 uint64_t double", 8)):
    for _name in _names.split():
        _NRRD_BYTES[_name.replace("_", " ")] = _n


def _check_nrrd(path: Path, display: str) -> None:
    with open(path, "rb") as fh:
        raw = fh.read(1 << 16)
    lines = raw.split(b"\n")
    if not re.match(rb"NRRD000\d", lines[0]):
        raise UnreadableImageError("bad NRRD header: the first line is not a NRRD magic", path=display)
    fields, header_len, ended = {}, len(lines[0]) + 1, False
    for line in lines[1:]:
        header_len += len(line) + 1
        text = line.decode("latin-1").rstrip("\r")
        if not text.strip():
            ended = True
            break
        if text.startswith("#") or ":=" in text:
            continue
        key, sep, value = text.partition(":")
        if not sep:
            raise UnreadableImageError(f"bad NRRD header: the line {text[:60]!r} is not 'field: value'",
                                       path=display)
        fields[key.strip().lower()] = value.strip()
    for required in ("type", "dimension", "sizes", "encoding"):
        if required not in fields:
            raise UnreadableImageError(f"bad NRRD header: no {required!r} field", path=display)
    try:
        dimension = int(fields["dimension"])
        sizes = [int(v) for v in fields["sizes"].split()]
    except ValueError:
        raise UnreadableImageError("bad NRRD header: 'dimension' or 'sizes' is not a list of integers",
                                   path=display) from None
    if len(sizes) != dimension:
        raise UnreadableImageError(f"bad NRRD header: dimension is {dimension} but sizes has {len(sizes)} values",
                                   path=display)
    if any(s <= 0 for s in sizes):
        raise EmptyImageError(f"has a zero-size axis (sizes: {' '.join(map(str, sizes))}): it holds no voxels",
                              path=display, hint="export the image again; the file is empty")
    ntype = " ".join(fields["type"].lower().split())
    if ntype not in _NRRD_BYTES and ntype != "block":
        raise UnreadableImageError(f"bad NRRD header: unknown type {fields['type']!r}", path=display)
    encoding = fields["encoding"].lower()
    if encoding not in ("raw", "gzip", "gz", "ascii", "text", "txt", "bzip2", "bz2", "hex"):
        raise UnreadableImageError(f"bad NRRD header: unknown encoding {fields['encoding']!r}", path=display)
    needed = math.prod(sizes) * _NRRD_BYTES.get(ntype, 0)
    skips = "byte skip" in fields or "byteskip" in fields or "line skip" in fields or "lineskip" in fields
    name = fields.get("data file", fields.get("datafile"))
    if name is not None:
        data = _data_file(path, name, "'data file'", display)
        if encoding == "raw" and not skips:
            _check_size(data.stat().st_size, needed, display, f"'{name}'")
        return
    if not ended:
        raise UnreadableImageError("bad NRRD header: no blank line ends the header and no 'data file' is named",
                                   path=display)
    if encoding == "raw" and not skips:
        _check_size(path.stat().st_size - header_len, needed, display, "the file")


# -------------------------------------------------------------------------------------------- DICOM


def _dicom_dataset(path: Path, display: str):
    import pydicom

    try:
        return pydicom.dcmread(str(path), force=True, defer_size=1024)
    except Exception as error:  # noqa: BLE001 - pydicom raises many types for a broken file
        raise UnreadableImageError(f"the DICOM header cannot be parsed ({error})", path=display) from None


def _has_pixels(ds) -> bool:
    return any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


def _sop_name(ds) -> str:
    sop = ds.get("SOPClassUID")
    name = getattr(sop, "name", "") if sop is not None else ""
    return name if name and name != str(sop) else (f"SOP class {sop}" if sop else "object of unknown SOP class")


def _check_dicom_pixels(ds, path: Path, display: str) -> None:
    if not _has_pixels(ds):
        name, modality = _sop_name(ds), str(ds.get("Modality", "") or "")
        if "Rows" in ds and "Columns" in ds and " SR " not in f" {name} ":
            raise DicomNoPixelDataError(f"is a DICOM image header ({name}) without pixel data (no PixelData "
                                        "element)", path=display, hint="export the images again with their pixel "
                                        "data; some anonymisers and 'header only' exports drop them")
        what = "structured report" if modality == "SR" or " SR " in f" {name} " else "object"
        raise DicomNoPixelDataError(f"is a DICOM {what} ({name}{f', modality {modality}' if modality else ''}) "
                                    "with no pixel data: not an image", path=display)
    if "PixelData" not in ds:
        return
    element = ds.get_item("PixelData", keep_deferred=True)
    length = getattr(element, "length", None)
    tell = getattr(element, "value_tell", None)
    if length is not None and tell is not None and length != 0xFFFFFFFF:
        have = path.stat().st_size - tell
        if have < length:
            raise UnreadableImageError(f"the pixel data are truncated: the file holds {max(have, 0)} of the {length} "
                                       "bytes its PixelData element declares", path=display)
    else:
        value = getattr(element, "value", None)
        length = len(value) if isinstance(value, bytes | bytearray) else None
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if length is not None and syntax is not None and not syntax.is_compressed:
        try:
            needed = (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
                      * int(ds.get("NumberOfFrames", 1) or 1) * int(ds.BitsAllocated) + 7) // 8
        except (AttributeError, TypeError, ValueError):
            return
        if length < needed:
            raise UnreadableImageError(f"the pixel data are truncated: {length} bytes where {int(ds.Rows)}×"
                                       f"{int(ds.Columns)} pixels × {int(ds.get('NumberOfFrames', 1) or 1)} frame(s) "
                                       f"need {needed}", path=display)


def _dicom_info(ds, n_files: int) -> dict:
    return {"series_uid": str(ds.get("SeriesInstanceUID", "")) or None,
            "series_description": str(ds.get("SeriesDescription", "") or ""),
            "modality": str(ds.get("Modality", "") or ""), "sop_class": _sop_name(ds), "files": n_files}


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _stack_geometry(positions: np.ndarray, iop, pixel_spacing, display: str, what: str) -> Geometry:
    """Geometry of slices at ``positions`` (in stacking order) sharing orientation ``iop``; checks regularity."""
    row, col = _unit(iop[:3]), _unit(iop[3:6])
    normal = np.cross(row, col)
    along = np.diff(positions @ normal)
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
    total = positions[-1] - positions[0]
    length = abs(float(total @ normal))
    off = float(np.linalg.norm(total - (total @ normal) * normal))
    tilt = math.degrees(math.atan2(off, length))
    if tilt > 1.0:
        raise InconsistentSeriesError(f"{what} is sheared: the slices are offset by {tilt:.1f}° from the slice "
                                      "normal (gantry tilt)", path=display,
                                      hint="correct the gantry tilt (resample to an orthogonal grid) and upload "
                                      "the result")
    third = normal if along[0] > 0 else -normal
    direction = np.column_stack([row, col, third])
    spacing = (float(pixel_spacing[1]), float(pixel_spacing[0]), step)
    return Geometry(spacing, _floats(positions[0]), _floats(direction))


def _multiframe_geometry(ds, display: str) -> Geometry | None:
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
    return _stack_geometry(np.asarray(positions, dtype=np.float64), [float(v) for v in iop],
                           [float(v) for v in spacing], display, "the multi-frame file")


def _series_source(items: list, uid: str, display: str) -> _Source | None:
    """A DICOM series (``items``: ``(path, dataset)``) checked and ordered; one file stays a single file."""
    info = _dicom_info(items[0][1], len(items))
    what = f"series {uid}"
    frames = [int(ds.get("NumberOfFrames", 1) or 1) for _, ds in items]
    if len(items) > 1 and max(frames) > 1:
        raise InconsistentSeriesError(f"{what} mixes {len(items)} files of which some hold several frames",
                                      path=display, hint="upload the multi-frame files one at a time")
    sizes = Counter((int(ds.get("Rows", 0)), int(ds.get("Columns", 0))) for _, ds in items)
    if len(sizes) > 1:
        listing = ", ".join(f"{c}×{r}: {n} files" for (r, c), n in sizes.most_common())
        raise InconsistentSeriesError(f"{what} mixes slices of different sizes ({listing})", path=display)
    if len(items) == 1:
        return None  # read as a single file by the caller
    oriented = all("ImagePositionPatient" in ds and "ImageOrientationPatient" in ds for _, ds in items)
    if oriented:
        iops = np.asarray([[float(v) for v in ds.ImageOrientationPatient] for _, ds in items])
        if np.max(np.abs(iops - iops[0])) > 1e-3:
            raise InconsistentSeriesError(f"{what} mixes slices of different orientations (a localiser in the "
                                          "series?)", path=display)
        positions = np.asarray([[float(v) for v in ds.ImagePositionPatient] for _, ds in items])
        normal = np.cross(_unit(iops[0][:3]), _unit(iops[0][3:]))
        order = np.argsort(positions @ normal, kind="stable")
        first = items[order[0]][1]
        spacing = first.get("PixelSpacing") or first.get("ImagerPixelSpacing") or [1.0, 1.0]
        geometry = _stack_geometry(positions[order], list(iops[0]), [float(v) for v in spacing], display, what)
        info["ordered_by"] = "ImagePositionPatient"
    else:  # no patient geometry (secondary captures): instance order, unit geometry
        order = sorted(range(len(items)), key=lambda i: (int(items[i][1].get("InstanceNumber", 0) or 0),
                                                         str(items[i][0])))
        geometry = None
        info["ordered_by"] = "InstanceNumber"
    files = [items[i][0] for i in order]
    return _Source(DICOM, files, display, _IO[DICOM], geometry, uid, info)


# ------------------------------------------------------------------------------------------- folders


def _ignored(rel: Path) -> bool:
    return any(part.startswith(".") or part.lower() in _IGNORED for part in rel.parts)


def _describe(candidate: dict) -> str:
    if candidate["uid"] is not None:
        desc = f" {candidate['description']!r}" if candidate["description"] else ""
        modality = f"{candidate['modality']}, " if candidate["modality"] else ""
        return f"{candidate['uid']}{desc} ({modality}{candidate['files']} file{'s' * (candidate['files'] != 1)})"
    return f"{candidate['name']} ({_NAMES[candidate['format']]})"


def _resolve_folder(root: Path, series: str | None, workdir: Path, display: str) -> _Source:
    files = [f for f in sorted(root.rglob("*")) if f.is_file() and not _ignored(f.relative_to(root))]
    if not files:
        raise EmptyArchiveError("holds no files", path=display)
    groups: dict[str, list] = {}
    others, not_images, skipped, unreadable = [], [], [], []
    for f in files:
        rel = f.relative_to(root).as_posix()
        member = f"{display}/{rel}"
        try:
            fmt = detect_format(f, display=member)
        except UnreadableImageError as error:
            skipped.append(rel)
            unreadable.append(error)
            continue
        except (NotAnImageError, UnsupportedFormatError):
            skipped.append(rel)
            continue
        if fmt == ZIP:
            skipped.append(rel)
        elif fmt == DICOM:
            ds = _dicom_dataset(f, member)
            if _has_pixels(ds):
                groups.setdefault(str(ds.get("SeriesInstanceUID", "") or ""), []).append((f, ds))
            else:
                not_images.append(f"{rel} ({_sop_name(ds)})")
        else:
            others.append((rel, fmt, f))
    candidates = []
    for uid, items in groups.items():
        ds = items[0][1]
        candidates.append({"uid": uid, "description": str(ds.get("SeriesDescription", "") or ""),
                           "modality": str(ds.get("Modality", "") or ""), "files": len(items), "items": items})
    candidates += [{"uid": None, "name": rel, "format": fmt, "path": f} for rel, fmt, f in others]
    if not candidates and unreadable and not not_images:
        raise unreadable[0]
    chosen = _choose(candidates, series, display, skipped, not_images)
    if chosen["uid"] is None:
        member = f"{display}/{chosen['name']}"
        return _single(chosen["path"], chosen["format"], member, None, workdir)
    items = chosen["items"]
    source = _series_source(items, chosen["uid"], display)
    if source is None:
        path, ds = items[0]
        return _single(path, DICOM, f"{display}/{path.relative_to(root).as_posix()}", None, workdir, ds)
    for path, ds in items:
        _check_dicom_pixels(ds, path, f"{display}/{path.relative_to(root).as_posix()}")
    return source


def _choose(candidates: list[dict], series: str | None, display: str, skipped: list, not_images: list) -> dict:
    listing = "; ".join(_describe(c) for c in candidates)
    public = [{k: v for k, v in c.items() if k not in ("items", "path")} for c in candidates]
    if series is not None:
        exact = [c for c in candidates if series in (c["uid"], c.get("name"), Path(c.get("name") or "").name)]
        matches = exact or [c for c in candidates if c["uid"] and c["uid"].startswith(series)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise UnknownSeriesError(f"series={series!r} matches {len(matches)} series: "
                                     f"{'; '.join(_describe(c) for c in matches)}", path=display,
                                     hint="give more of the SeriesInstanceUID", series=public)
        raise UnknownSeriesError(f"series={series!r} matches none of the series here: {listing or 'none'}",
                                 path=display, hint="pass one of the SeriesInstanceUIDs listed (or a unique prefix)",
                                 series=public)
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        n_series = sum(c["uid"] is not None for c in candidates)
        what = f"{n_series} DICOM series" if n_series == len(candidates) else f"{len(candidates)} images"
        raise MultipleSeriesError(f"holds {what}: {listing}", path=display,
                                  hint="pass series='<SeriesInstanceUID, a unique prefix, or file name>' to choose "
                                  "one, or upload one series at a time", series=public)
    if not_images:
        raise DicomNoPixelDataError(f"holds only DICOM objects without pixel data: {', '.join(not_images[:5])}"
                                    f"{' ...' if len(not_images) > 5 else ''}", path=display)
    shown = ", ".join(skipped[:8]) + (" ..." if len(skipped) > 8 else "")
    raise NotAnImageError(f"holds no image file (found: {shown})", path=display)


# ------------------------------------------------------------------------------------ header reading


def _sitk_reader(src: _Source) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(src.files[0]))
    reader.SetImageIO(src.io)
    return reader


def _header(src: _Source) -> ImageHeader:
    if src.io == "nibabel":
        return _nib_header(src)
    reader = _sitk_reader(src)
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise UnreadableImageError(f"the {_NAMES[src.format]} header cannot be read "
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
        folded = _geometry(spacing, origin, direction, src.display)
        spacing, origin, direction = folded.spacing, folded.origin, folded.direction
    info = dict(src.info)
    return ImageHeader(src.display, src.format, dims, size, spacing, origin, direction, pixel_type,
                       reader.GetNumberOfComponents(), math.prod(size[3:]), src.series_uid, info)


def check_header(header: ImageHeader, *, frame: int | None = None,
                 max_voxels: int = DEFAULT_MAX_VOXELS) -> tuple[int, ...]:
    """Refuse what :func:`read_image` would refuse from the header alone; returns the frame's index.

    Raises :class:`EmptyImageError`, :class:`VectorImageError`, :class:`UnsupportedDimensionsError`,
    :class:`FrameRequiredError` / :class:`FrameOutOfRangeError`, :class:`ImageTooLargeError`.
    """
    display, size = header.path, header.size
    if any(s == 0 for s in size):
        raise EmptyImageError(f"has a zero-size axis (size {_fmt_size(size)}): it holds no voxels", path=display,
                              hint="export the image again; the file is empty")
    if header.pixel_type.startswith("complex"):
        raise VectorImageError(f"has complex-valued voxels ({header.pixel_type})", path=display,
                               hint="upload the magnitude image")
    if header.n_components > 1:
        raise VectorImageError(f"has {header.n_components} components per voxel ({header.pixel_type}), where one "
                               "grey value per voxel is expected", path=display, components=header.n_components)
    n_frames = header.n_frames
    if header.dims > 3 and n_frames > 1 and frame is None:
        raise FrameRequiredError(f"is a {header.dims}-D image of size {_fmt_size(size)}, i.e. {n_frames} frames "
                                 f"of {_fmt_size(size[:3])}", path=display, n_frames=n_frames,
                                 hint=f"choose one 3-D frame with the frame parameter (frame=0 to {n_frames - 1})")
    if frame is not None and not 0 <= frame < n_frames:
        hint = f"choose a frame from 0 to {n_frames - 1}" if n_frames > 1 else "leave frame unset"
        raise FrameOutOfRangeError(f"frame={frame} is out of range: the image has {n_frames} frame"
                                   f"{'s' * (n_frames != 1)}", path=display, n_frames=n_frames, hint=hint)
    voxels = header.n_voxels
    if voxels > max_voxels:
        raise ImageTooLargeError(f"has {voxels:,} voxels ({_fmt_size(size[:3])}), more than the limit of "
                                 f"{max_voxels:,} voxels (max_voxels)", path=display, limit=max_voxels,
                                 voxels=voxels)
    if header.image_ndim is None:
        raise UnsupportedDimensionsError(f"is not a 2-D or 3-D image (size {_fmt_size(size[:3])})", path=display)
    extra = size[3:]
    if not extra:
        return ()
    return tuple(int(i) for i in np.unravel_index(frame or 0, extra, order="F"))


def read_header(path: str | Path, *, series: str | None = None) -> ImageHeader:
    """The header of what :func:`read_image` would read, without its pixel data where the format allows.

    Zips are unpacked into a scratch folder (removed again). Raises the same errors as
    :func:`read_image` does before reading pixels, except those of :func:`check_header`.
    """
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="adacs-io-") as tmp:
        return _header(_resolve(path, series, Path(tmp), str(path)))


# ------------------------------------------------------------------------------------- pixel reading


def _geometry(spacing, origin, direction, display: str) -> Geometry:
    """A :class:`Geometry`, negative spacings folded into the direction; zero spacing refused."""
    given = _floats(spacing)
    spacing = np.asarray(given, dtype=np.float64)
    ndim = len(spacing)
    direction = np.array(direction, dtype=np.float64).reshape(ndim, ndim)
    direction[:, spacing < 0] *= -1
    spacing = np.abs(spacing)
    if np.any(spacing == 0) or not np.all(np.isfinite(spacing)):
        raise UnreadableImageError(f"the header states a voxel spacing of {_fmt_vec(given)} mm; spacings must be "
                                   "positive", path=display, hint="fix the spacing in the header")
    return Geometry(_floats(spacing), _floats(origin), _floats(direction))


def _geometry_of(image: sitk.Image, display: str) -> Geometry:
    return _geometry(image.GetSpacing(), image.GetOrigin(), image.GetDirection(), display)


def _pixels(src: _Source, header: ImageHeader, frame_index: tuple[int, ...]) -> tuple[np.ndarray, Geometry]:
    if src.format == NIFTI:
        return _nib_pixels(src, header, frame_index)
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


def _squeeze(array: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, Geometry, dict | None]:
    """Drop the one singleton index axis of a 3-D grid (see the module docstring for the geometry rule)."""
    size = tuple(reversed(array.shape))
    ones = [k for k in range(len(size)) if size[k] == 1]
    if geometry.ndim != 3 or len(ones) != 1:
        return array, geometry, None
    axis = ones[0]
    keep = [k for k in range(3) if k != axis]
    matrix = geometry.matrix
    dropped = int(np.argmax(np.abs(matrix[:, axis])))
    rows = [i for i in range(3) if i != dropped]
    block = matrix[np.ix_(rows, keep)]
    origin = np.asarray(geometry.origin)
    if np.abs(matrix[dropped, keep]).max() < 1e-5:  # the slice plane has nothing along the dropped axis
        direction, origin2, mode = block, origin[rows], "submatrix"
    else:
        direction, origin2, mode = np.eye(2), matrix[:, keep].T @ origin, "in-plane"
    spacing = tuple(float(geometry.spacing[k]) for k in keep)
    squeezed = Geometry(spacing, _floats(origin2), _floats(direction))
    info = {"axis": axis, "mode": mode, "spacing": geometry.spacing, "origin": geometry.origin,
            "direction": geometry.direction}
    return np.squeeze(array, axis=2 - axis), squeezed, info


def _smallest_int(lo: float, hi: float) -> np.dtype:
    for name in (("uint8", "uint16", "uint32", "uint64") if lo >= 0 else ("int8", "int16", "int32", "int64")):
        info = np.iinfo(name)
        if info.min <= lo and hi <= info.max:
            return np.dtype(name)
    return np.dtype("int64")


def _first_index(mask: np.ndarray) -> str:
    where = np.argwhere(mask)[0]
    return _fmt_size(reversed(where)).replace("×", ", ")


def _as_labels(array: np.ndarray, display: str) -> np.ndarray:
    if array.dtype == bool:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        return array
    finite = np.isfinite(array)
    if not finite.all():
        raise NonIntegerMaskError(f"the mask holds {int((~finite).sum())} NaN/infinite values (first at index "
                                  f"({_first_index(~finite)}))", path=display)
    fractional = array != np.round(array)
    if fractional.any():
        value = float(array[fractional].flat[0])
        raise NonIntegerMaskError(f"the mask holds {int(fractional.sum())} non-integer values, e.g. {value:g} at "
                                  f"index ({_first_index(fractional)}): labels must be whole numbers", path=display)
    lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    return array.astype(_smallest_int(lo, hi))


def _check_scalar(array: np.ndarray, display: str, allow_constant: bool) -> None:
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            n_nan = int(np.isnan(array).sum())
            n_inf = int((~finite).sum()) - n_nan
            raise NonFiniteValuesError(f"has {n_nan} NaN and {n_inf} infinite voxels (first at index "
                                       f"({_first_index(~finite)}))", path=display, nan=n_nan, inf=n_inf)
    if not allow_constant and array.size and array.min() == array.max():
        raise EmptyImageError(f"every voxel has the value {float(array.flat[0]):g}: there is no contrast to register",
                              path=display, hint="check that the right file or series was uploaded")


def read_image(path: str | Path, *, kind: str = SCALAR, series: str | None = None, frame: int | None = None,
               max_voxels: int = DEFAULT_MAX_VOXELS, allow_constant: bool = False) -> Image:
    """Read a file, folder or zip (see :data:`SUPPORTED`) as a 2-D or 3-D :class:`Image`.

    ``kind="label"`` requires whole-number voxels (float masks cast to the smallest integer dtype);
    ``series`` picks a DICOM series (SeriesInstanceUID or a unique prefix) or a file in a folder/zip;
    (ignored for a single non-DICOM file); ``frame`` picks a frame of a 4-D+ image; ``max_voxels`` limits
    one frame's voxel count; ``allow_constant`` accepts a scalar image whose voxels all have one value.
    ``metadata`` records ``format``, ``dtype`` (the file's), ``size``/``dims`` (the file's), ``frame``,
    ``n_frames``, ``squeezed`` and, for DICOM, the series facts. Raises :class:`ImageError` subclasses.
    """
    if kind not in (SCALAR, LABEL):
        raise ValueError(f"kind must be {SCALAR!r} or {LABEL!r}, got {kind!r}")
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="adacs-io-") as tmp:
        src = _resolve(path, series, Path(tmp), str(path))
        header = _header(src)
        frame_index = check_header(header, frame=frame, max_voxels=max_voxels)
        array, geometry = _pixels(src, header, frame_index)
    if array.ndim != geometry.ndim:  # defensive: a reader returned something unexpected
        raise UnreadableImageError(f"read a {array.ndim}-D array with {geometry.ndim}-D geometry", path=src.display)
    array, geometry, squeezed = _squeeze(array, geometry)
    if kind == LABEL:
        original = array.dtype
        array = _as_labels(array, src.display)
        labels = np.unique(array)
        extra = {"labels": [int(v) for v in labels[:256]], "cast_from": str(original) if original != array.dtype
                 else None}
    else:
        _check_scalar(array, src.display, allow_constant)
        extra = {}
    metadata = {"format": src.format, "dtype": header.pixel_type, "size": header.size, "dims": header.dims,
                "n_frames": header.n_frames, "frame": frame,
                "squeezed": squeezed, **header.info, **extra}
    if src.format == DICOM and len(src.files) > 1:
        metadata["files"] = len(src.files)
    return Image(array, geometry, kind, src.display, metadata)


# ------------------------------------------------------------------------------------------- checks


def _grid(image: Image, with_direction: bool) -> str:
    text = (f"size {_fmt_size(image.size)}, spacing {_fmt_vec(image.geometry.spacing)} mm, origin "
            f"{_fmt_vec(image.geometry.origin)}")
    return text + (f", direction {_fmt_vec(image.geometry.direction)}" if with_direction else "")


def check_pair(fixed: Image, moving: Image) -> None:
    """Refuse a fixed/moving pair of different dimensionality (:class:`DimensionMismatchError`)."""
    if fixed.ndim != moving.ndim:
        raise DimensionMismatchError(f"the fixed image {fixed.source} is {fixed.ndim}-D (size "
                                     f"{_fmt_size(fixed.size)}) but the moving image {moving.source} is "
                                     f"{moving.ndim}-D (size {_fmt_size(moving.size)})")


def check_mask(mask: Image, image: Image) -> None:
    """Refuse a mask that does not fit its image: dimensionality, grid, or non-integer values."""
    if mask.ndim != image.ndim:
        raise DimensionMismatchError(f"the mask is {mask.ndim}-D (size {_fmt_size(mask.size)}) but its image "
                                     f"{image.source} is {image.ndim}-D (size {_fmt_size(image.size)})",
                                     path=mask.source, hint="upload the mask that was drawn on this image")
    if not mask.same_grid(image):
        turned = not np.allclose(mask.geometry.direction, image.geometry.direction, atol=1e-4)
        raise MaskGeometryError(f"the mask grid ({_grid(mask, turned)}) differs from the grid of its image "
                                f"{image.source} ({_grid(image, turned)})", path=mask.source)
    array = mask.array
    if np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array) | (array != np.round(np.nan_to_num(array)))
        if bad.any():
            raise NonIntegerMaskError(f"the mask holds {int(bad.sum())} non-integer values, e.g. "
                                      f"{float(array[bad].flat[0]):g}", path=mask.source)
    elif not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise NonIntegerMaskError(f"the mask has voxels of type {array.dtype}, not integer labels", path=mask.source)

