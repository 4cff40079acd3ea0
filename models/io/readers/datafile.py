"""Checks shared by the text-header formats (MetaImage, NRRD) before ITK reads their pixels.

A detached header (``.mhd``, ``.nhdr``) names its data file, and an upload is untrusted: a name that
leaves the header's folder (absolute, ``..``) would read a file the user did not upload, so it is refused
(:class:`UnsafePathError`); a missing data file is the usual mistake of uploading the header alone, so the
hint says to upload both. Sizes are compared with what the header needs before ITK reads, so a cut
upload is refused with the byte counts it has and needs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from models.io.errors import EmptyImageError, UnreadableImageError, UnsafePathError, UnsupportedFormatError

__all__ = ["axis_sizes", "data_file", "check_size"]


def axis_sizes(fields: dict[str, str], count_key: str, sizes_key: str, header: str, display: str) -> list[int]:
    """The axis sizes a text header states (``sizes_key``), checked against its axis count (``count_key``)
    and for zero-size axes; ``fields`` is keyed in lower case, ``count_key``/``sizes_key`` are the
    format's own spellings, named in the messages."""
    try:
        count = int(fields[count_key.lower()])
        sizes = [int(v) for v in fields[sizes_key.lower()].split()]
    except (KeyError, ValueError):
        raise UnreadableImageError(f"the {header} header lacks a valid {count_key} or {sizes_key}",
                                   path=display) from None
    if len(sizes) != count:
        raise UnreadableImageError(f"the {header} header says {count_key} = {count} but {sizes_key} has "
                                   f"{len(sizes)} values", path=display)
    if any(s <= 0 for s in sizes):
        raise EmptyImageError(f"has a zero-size axis ({sizes_key} = {' '.join(map(str, sizes))}): it holds no "
                              "voxels", path=display, hint="export the image again; the file is empty")
    return sizes


def data_file(header_path: Path, name: str, field_name: str, display: str) -> Path:
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


def check_size(data_bytes: int, needed: int, display: str, what: str) -> None:
    """Refuse pixel data shorter than the header needs; ``what`` names where they are in the message."""
    if data_bytes < needed:
        raise UnreadableImageError(f"the pixel data are truncated: {what} holds {data_bytes} bytes but the header "
                                   f"needs {needed}", path=display)
