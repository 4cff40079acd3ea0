"""MetaImage (``.mha``, or ``.mhd`` with its data file): the header checked before ITK reads the pixels.

The header lines are parsed here, before ITK reads, so that the common faults — no ``ElementDataFile``,
``NDims``/``DimSize`` missing or disagreeing, a zero-size axis, an unknown ``ElementType``, a data file
missing, outside the header's folder or too short — are refused with a message that names the fault.
For compressed data the size the header states (``CompressedDataSize``) is the one checked.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from models.io.errors import UnreadableImageError
from models.io.readers.datafile import axis_sizes, check_size, data_file

__all__ = ["check_metaimage"]

_META_BYTES = {"MET_UCHAR": 1, "MET_CHAR": 1, "MET_USHORT": 2, "MET_SHORT": 2, "MET_UINT": 4, "MET_INT": 4,
               "MET_ULONG_LONG": 8, "MET_LONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}
_META_TYPES = set(_META_BYTES) | {"MET_ULONG", "MET_LONG"}


def _parse(path: Path) -> tuple[dict[str, str], int | None]:
    """The header's fields (keys lower-cased) and its length in bytes, ``None`` without ``ElementDataFile``."""
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
    return fields, header_len


def check_metaimage(path: Path, display: str) -> None:
    """Refuse a MetaImage whose header is incomplete or whose pixel data are missing, unsafe or short."""
    fields, header_len = _parse(path)
    if header_len is None:
        raise UnreadableImageError("the MetaImage header has no ElementDataFile line (incomplete header)",
                                   path=display)
    dims = axis_sizes(fields, "NDims", "DimSize", "MetaImage", display)
    etype = fields.get("elementtype", "").upper()
    if etype not in _META_TYPES:
        raise UnreadableImageError("the MetaImage header has no ElementType or one that is not a MET_ pixel type "
                                   "ITK reads", path=display)
    name = fields["elementdatafile"]
    compressed = fields.get("compresseddata", "false").lower() == "true"
    channels = int(fields.get("elementnumberofchannels", "1") or 1)
    needed = math.prod(dims) * channels * _META_BYTES.get(etype, 0)
    skip = int(fields.get("headersize", "0") or 0)
    if compressed:  # the header states the compressed size: a cut file holds less
        needed = int(fields.get("compresseddatasize", "0") or 0)
    if name.upper() == "LOCAL":
        if skip >= 0:
            check_size(path.stat().st_size - header_len, needed, display, "the file")
        return
    data = data_file(path, name, "ElementDataFile", display)
    if skip >= 0:
        check_size(data.stat().st_size - skip, needed, display, f"'{name}'")
