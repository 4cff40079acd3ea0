"""Read a safetensors file's header without loading a tensor (and without torch).

The format: 8 bytes little-endian ``N``, then ``N`` bytes of JSON ``{name: {dtype, shape,
data_offsets: [begin, end]}, "__metadata__": {str: str}}``, then the data buffer. Checking that
every tensor's byte range matches its dtype and shape and that the ranges cover the buffer exactly
catches truncated and padded files, so the registry never accepts weights the worker cannot load.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TensorInfo", "SafetensorsHeader", "read_safetensors_header"]

_MAX_HEADER = 100 * 1024 * 1024  # the safetensors library's own limit
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2,
                "BF16": 2, "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]


def read_safetensors_header(path: str | Path) -> SafetensorsHeader:
    """The tensors' names, dtypes and shapes and the file's metadata; ValueError names any defect."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path.name}: {size} bytes is too short for a safetensors file")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(_MAX_HEADER, size - 8):
            raise ValueError(f"{path.name}: header length {length} does not fit a file of {size} bytes")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path.name}: the header is not JSON ({error})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path.name}: the header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise ValueError(f"{path.name}: __metadata__ must be a JSON object")
    tensors = {name: _tensor(path.name, name, entry) for name, entry in header.items()}
    _check_coverage(path.name, header, size - 8 - length)
    return SafetensorsHeader(tensors, dict(metadata))


def _tensor(file: str, name: str, entry: object) -> TensorInfo:
    try:
        dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]  # type: ignore[index]
        shape, begin, end = tuple(int(n) for n in shape), int(begin), int(end)
    except (TypeError, KeyError, ValueError):
        raise ValueError(f"{file}: tensor {name!r} has a malformed header entry") from None
    if dtype not in _DTYPE_BYTES:
        raise ValueError(f"{file}: tensor {name!r} has unknown dtype {dtype!r}")
    if min(shape, default=0) < 0 or end - begin != math.prod(shape) * _DTYPE_BYTES[dtype]:
        raise ValueError(f"{file}: tensor {name!r} spans {end - begin} bytes, not {dtype} x {list(shape)}")
    return TensorInfo(dtype, shape)


def _check_coverage(file: str, header: dict, data_bytes: int) -> None:
    """The byte ranges must tile ``[0, data_bytes)`` without gaps or overlaps."""
    position = 0
    for begin, end in sorted(tuple(entry["data_offsets"]) for entry in header.values()):
        if begin != position:
            raise ValueError(f"{file}: tensor data overlaps or leaves a gap at byte {position}")
        position = end
    if position != data_bytes:
        raise ValueError(f"{file}: the tensors need {position} bytes of data but the file holds {data_bytes} "
                         "(truncated or padded file)")
