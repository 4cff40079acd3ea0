"""Which format a file is, from its content; the name is only a fallback.

Uploads are often misnamed (a ``.nii`` that is really gzip-compressed, a DICOM file called ``image``, a
``.dcm`` that is a PDF). Reading by extension would hand such files to the wrong reader and surface its
error, so the signatures are checked first — zip/gzip magic, ``DICM`` at offset 128, the NIfTI
``sizeof_hdr`` 348/540 with its magic, ``NRRD000``, MetaImage ``ObjectType``/``NDims`` lines — and
common non-image formats are named in the refusal. Only when no signature matches does the extension
decide, either to probe for DICOM without its preamble or to say what the file was expected to be.
"""

from __future__ import annotations

import os
import re
import zlib
from pathlib import Path

import numpy as np

from models.io.archive import is_zip
from models.io.errors import NotAnImageError, UnreadableImageError, UnsupportedFormatError
from models.io.readers.source import DICOM, METAIMAGE, NAMES, NIFTI, NRRD, ZIP

__all__ = ["detect_format", "nifti_version"]

_HEAD = 4096  # bytes read for detection: enough for every signature and a MetaImage header's first lines
_EXTENSIONS = {".nii": NIFTI, ".nii.gz": NIFTI, ".hdr": NIFTI, ".dcm": DICOM, ".dicom": DICOM, ".ima": DICOM,
               ".mha": METAIMAGE, ".mhd": METAIMAGE, ".nrrd": NRRD, ".nhdr": NRRD, ".zip": ZIP}

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


def _ext(name: str) -> str:
    """The extension that decides the fallback; ``.nii.gz`` counts as one."""
    lower = name.lower()
    return ".nii.gz" if lower.endswith(".nii.gz") else os.path.splitext(lower)[1]


def _is_nifti(head: bytes) -> bool:
    """A NIfTI-1 or -2 header in either byte order: ``sizeof_hdr`` and the magic must agree."""
    if len(head) >= 348:
        for order in ("<", ">"):
            n = int(np.frombuffer(head[:4], dtype=f"{order}i4")[0])
            if n == 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
                return True
            if n == 540 and head[4:8] in (b"n+2\x00", b"ni2\x00"):
                return True
    return False


def nifti_version(head: bytes) -> int:
    """1 or 2, from the first bytes of a header :func:`detect_format` has already taken for NIfTI."""
    return 2 if head[4:7] in (b"n+2", b"ni2") else 1


def _looks_text(head: bytes) -> bool:
    """Mostly printable UTF-8 without NUL bytes: a text file, or a text header such as MetaImage's."""
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


def _gzip_content(path: Path, display: str, name: str) -> str:
    """NIfTI if the gzip stream starts with a NIfTI header: ``.nii.gz`` is the only compressed file read."""
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
    """Old DICOM files lack the 128-byte preamble and ``DICM``; pydicom can still parse their elements."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), force=True, defer_size=1024, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - anything pydicom cannot parse is simply not DICOM
        return False
    return "SOPClassUID" in ds or ("Rows" in ds and "Columns" in ds)


def _by_signature(head: bytes, path: Path, display: str) -> str | None:
    """The format its signature proves, a refusal for known non-image formats, or ``None``."""
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
    return None


def _by_name(head: bytes, path: Path, display: str) -> str:
    """DICOM without a preamble, or the refusal that fits: text, a format it is named as but is not, unknown."""
    ext = _ext(path.name)
    if ext in (".dcm", ".dicom", ".ima", "") and not _looks_text(head) and _probe_dicom_without_preamble(path):
        return DICOM
    if _looks_text(head):  # never quote it: a manifest could point at a server file, and the message is sent
        raise NotAnImageError(f"is a text file, not an image ({path.stat().st_size} bytes)", path=display)
    if ext in _EXTENSIONS:
        fmt = NAMES[_EXTENSIONS[ext]]
        hint = ("upload the whole .nii.gz again" if ext == ".nii.gz" else None)
        raise UnreadableImageError(f"is named '{path.name}' but is not a {fmt} file (no valid {fmt} header; "
                                   "corrupt, or another format renamed)", path=display, hint=hint)
    raise UnsupportedFormatError(f"unrecognised file format{f' (extension {ext})' if ext else ''}", path=display)


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
    fmt = _by_signature(head, path, display)
    return fmt if fmt is not None else _by_name(head, path, display)
