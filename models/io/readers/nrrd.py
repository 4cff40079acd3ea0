"""NRRD (``.nrrd``, or ``.nhdr`` with its data file): the header checked before ITK reads the pixels.

As for MetaImage, the header is parsed here so that its common faults — a line that is not
``field: value``, a required field missing, ``dimension`` and ``sizes`` disagreeing, a zero-size axis, an
unknown type or encoding, no blank line ending an attached header, a data file missing, unsafe or too
short — are refused with a message that names them. Sizes are only checked for raw data without
byte or line skips, where the needed length is known from the header alone.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from models.io.errors import UnreadableImageError
from models.io.readers.datafile import axis_sizes, check_size, data_file

__all__ = ["check_nrrd"]

_TYPE_NAMES = (  # NRRD's spellings of each type, by bytes per value
    ("signed char int8 int8_t uchar unsigned_char uint8 uint8_t", 1),
    ("short short_int signed_short signed_short_int int16 int16_t ushort unsigned_short "
     "unsigned_short_int uint16 uint16_t", 2),
    ("int signed_int int32 int32_t uint unsigned_int uint32 uint32_t float", 4),
    ("longlong long_long long_long_int signed_long_long signed_long_long_int int64 int64_t "
     "ulonglong unsigned_long_long unsigned_long_long_int uint64 uint64_t double", 8),
)
_NRRD_BYTES = {name.replace("_", " "): n for names, n in _TYPE_NAMES for name in names.split()}
_ENCODINGS = ("raw", "gzip", "gz", "ascii", "text", "txt", "bzip2", "bz2", "hex")


def _parse(path: Path, display: str) -> tuple[dict[str, str], int, bool]:
    """The header's fields (keys lower-cased), its length in bytes, and whether a blank line ended it."""
    with open(path, "rb") as fh:
        raw = fh.read(1 << 16)
    lines = raw.split(b"\n")
    if not re.match(rb"NRRD000\d", lines[0]):
        raise UnreadableImageError("bad NRRD header: the first line is not a NRRD magic", path=display)
    fields, header_len, ended = {}, len(lines[0]) + 1, False
    for number, line in enumerate(lines[1:], start=2):
        header_len += len(line) + 1
        text = line.decode("latin-1").rstrip("\r")
        if not text.strip():
            ended = True
            break
        if text.startswith("#") or ":=" in text:
            continue
        key, sep, value = text.partition(":")
        if not sep:
            raise UnreadableImageError(f"bad NRRD header: line {number} is not 'field: value'", path=display)
        fields[key.strip().lower()] = value.strip()
    return fields, header_len, ended


def _sizes(fields: dict[str, str], display: str) -> list[int]:
    """``sizes``, after the required fields are found; checked against ``dimension`` and for zero-size axes."""
    for required in ("type", "dimension", "sizes", "encoding"):
        if required not in fields:
            raise UnreadableImageError(f"bad NRRD header: no {required!r} field", path=display)
    return axis_sizes(fields, "dimension", "sizes", "NRRD", display)


def check_nrrd(path: Path, display: str) -> None:
    """Refuse a NRRD whose header is malformed or whose pixel data are missing, unsafe or short."""
    fields, header_len, ended = _parse(path, display)
    sizes = _sizes(fields, display)
    ntype = " ".join(fields["type"].lower().split())
    if ntype not in _NRRD_BYTES and ntype != "block":
        raise UnreadableImageError("bad NRRD header: the 'type' field names no known pixel type", path=display)
    encoding = fields["encoding"].lower()
    if encoding not in _ENCODINGS:
        raise UnreadableImageError(f"bad NRRD header: the 'encoding' field is none of {', '.join(_ENCODINGS)}",
                                   path=display)
    needed = math.prod(sizes) * _NRRD_BYTES.get(ntype, 0)
    skips = "byte skip" in fields or "byteskip" in fields or "line skip" in fields or "lineskip" in fields
    name = fields.get("data file", fields.get("datafile"))
    if name is not None:
        data = data_file(path, name, "'data file'", display)
        if encoding == "raw" and not skips:
            check_size(data.stat().st_size, needed, display, f"'{name}'")
        return
    if not ended:
        raise UnreadableImageError("bad NRRD header: no blank line ends the header and no 'data file' is named",
                                   path=display)
    if encoding == "raw" and not skips:
        check_size(path.stat().st_size - header_len, needed, display, "the file")
