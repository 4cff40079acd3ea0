"""Writing files so that no reader ever sees half of one, even if the writer dies mid-way.

The recipe: write a temporary file in the destination's folder (same filesystem, so the rename is
atomic), flush and fsync it, rename it into place, fsync the folder. On any error the temporary
file is removed and the destination is untouched.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, BinaryIO

__all__ = ["atomic_write", "fsync_dir", "copy_hashing", "TooLarge", "CHUNK"]

CHUNK = 1024 * 1024


class TooLarge(ValueError):
    """A stream went past the caller's byte limit (the API answers 413)."""


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file that becomes ``path`` when the block ends without an error.

    >>> with atomic_write(job_dir / "report.json", "w") as handle:  # doctest: +SKIP
    ...     json.dump(report, handle)
    """
    if "w" not in mode:
        raise ValueError(f"atomic_write needs a write mode ('w' or 'wb'), got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


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
