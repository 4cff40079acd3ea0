"""Streaming an upload into the store: hashed on the way, and stopped at the caller's byte limit.

The store's objects are written whole and published by a hard link (``service.storage.local``);
files written in place go through ``models.io.atomic.atomic_write``, the package's one atomic writer.
"""

from __future__ import annotations

import hashlib
from typing import BinaryIO

__all__ = ["copy_hashing", "TooLarge", "CHUNK"]

CHUNK = 1024 * 1024


class TooLarge(ValueError):
    """A stream went past the caller's byte limit (the API answers 413)."""


def copy_hashing(source: BinaryIO, target: BinaryIO, max_bytes: int | None = None) -> tuple[str, int]:
    """Copy ``source`` to ``target`` in chunks; return (hex SHA-256, size). Raises :class:`TooLarge`
    as soon as more than ``max_bytes`` arrive, so an oversized upload is never read to its end."""
    digest, size = hashlib.sha256(), 0
    while chunk := source.read(CHUNK):
        size += len(chunk)
        if max_bytes is not None and size > max_bytes:
            raise TooLarge(f"the upload is larger than the limit of {max_bytes} bytes")
        digest.update(chunk)
        target.write(chunk)
    return digest.hexdigest(), size
