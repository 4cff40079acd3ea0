"""NIfTI-1/2 (``.nii``, ``.nii.gz``, ``.hdr``/``.img`` pairs): voxels through nibabel, geometry as ITK gives it.

Why SimpleITK (ITK 5.4) alone will not do:

- ITK silently turns NaN and ±Inf voxels into 0, so they could not be refused, and zero-fills the missing
  part of a truncated ``.nii.gz``; nibabel keeps them and raises on a cut stream. Voxels therefore always
  come from nibabel; the NIfTI-1 header still comes from SimpleITK (ITK's qform/sform rules).
- NIfTI-2 is not read by ITK at all: header and voxels come from nibabel, the affine converted RAS -> LPS.
- ITK reports a zero-length NIfTI axis as length 1 (checked here with nibabel first) and needs the right
  extension for NIfTI (a misnamed file is read through a correctly named link in a scratch folder).
"""

from __future__ import annotations

import math
import tempfile
import zlib
from pathlib import Path

import numpy as np

from models.io.errors import EmptyImageError, UnreadableImageError
from models.io.image import Geometry
from models.io.readers.file_format import nifti_version
from models.io.readers.geometry import checked_geometry, floats, fmt_size
from models.io.readers.header import ImageHeader
from models.io.readers.source import ITK_IO, NIFTI, Source

__all__ = ["nifti_source", "nib_header", "nib_pixels"]


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


def _version(path: Path) -> tuple[int, bool]:
    """The NIfTI version (1 or 2) and whether the file is gzip-compressed."""
    with open(path, "rb") as fh:
        head = fh.read(2)
    gz = head == b"\x1f\x8b"
    if gz:
        with open(path, "rb") as fh:
            version = nifti_version(zlib.decompressobj(31).decompress(fh.read(1 << 16), 16))
    else:
        with open(path, "rb") as fh:
            version = nifti_version(fh.read(16))
    return version, gz


def _check_complete(img, shape: tuple[int, ...], path: Path, display: str) -> None:
    """Refuse an uncompressed ``.nii`` shorter than its header says, before any reader touches its voxels."""
    offset = int(getattr(img.dataobj, "offset", 0))
    needed = offset + math.prod(shape) * img.get_data_dtype().itemsize
    have = path.stat().st_size
    if have < needed:
        raise UnreadableImageError(f"the pixel data are truncated: the file has {have} bytes but its header "
                                   f"({fmt_size(shape)} voxels of {img.get_data_dtype()}) needs {needed}",
                                   path=display)


def nifti_source(path: Path, display: str, workdir: Path) -> Source:
    """A checked NIfTI file: header parsed, no zero-size axis, data complete; read by ITK or nibabel."""
    import nibabel as nib

    version, gz = _version(path)
    pair = path.suffix.lower() == ".hdr"
    alias = path if pair else _alias(path, ".nii.gz" if gz else ".nii", workdir)
    try:
        img = nib.load(str(alias))
    except Exception as error:  # noqa: BLE001 - nibabel raises many types for a bad header
        reason = str(error).replace(str(alias), display)
        raise UnreadableImageError(f"has an invalid NIfTI header ({reason})", path=display) from None
    shape = tuple(int(s) for s in img.shape)
    if 0 in shape:
        raise EmptyImageError(f"has a zero-size axis (size {fmt_size(shape)}): it holds no voxels", path=display,
                              hint="export the image again; the file is empty")
    if not gz and not pair:
        _check_complete(img, shape, path, display)
    io = "nibabel" if version == 2 else ITK_IO[NIFTI]
    return Source(NIFTI, [alias], display, io, info={"nifti_version": version})


def _affine_geometry(affine: np.ndarray) -> tuple[tuple, tuple, tuple]:
    """RAS affine (nibabel) -> ITK spacing, LPS origin, orthonormal LPS direction (3-D)."""
    flip = np.diag([-1.0, -1.0, 1.0])
    linear = flip @ affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    spacing = np.where(spacing > 0, spacing, 1.0)
    u, _, vt = np.linalg.svd(linear / spacing)
    direction = u @ vt  # nearest orthonormal matrix (drops any shear)
    return floats(spacing), floats(flip @ affine[:3, 3]), floats(direction)


def nib_header(src: Source) -> ImageHeader:
    """The header of a NIfTI-2 file (which ITK cannot read), in ITK's conventions: LPS, index order."""
    import nibabel as nib

    img = nib.load(str(src.files[0]))
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
                       floats(direction), pixel_type, components, math.prod(size[3:]),
                       info={**src.info, "dims_in_file": len(shape)})


def nib_pixels(src: Source, header: ImageHeader, frame_index: tuple[int, ...]) -> tuple[np.ndarray, Geometry]:
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
    return array, checked_geometry(header.spacing[:ndim], header.origin[:ndim], direction, src.display)
