"""Writing files so that no reader ever sees half of one, even if the writer dies mid-way.

The recipe: write a temporary file in the destination's folder (same filesystem, so the rename is
atomic), flush and fsync it, rename it into place, fsync the folder. On any error, an exception
raised inside the ``with`` block included, the temporary file is removed and the destination is
untouched. Every file the package writes in place (artifacts, checkpoints, reports, downloads,
broker messages, benchmark tables) goes through :func:`atomic_write`; it imports no torch.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "fsync_dir", "write_json_atomic"]


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


def _create_hidden(path: Path, private: bool) -> tuple[int, Path]:
    """A new hidden file beside ``path``: owner-only (as ``tempfile.mkstemp`` makes it) when
    ``private``, else with the permissions of the process's umask, as ``open`` would create ``path``."""
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    return os.open(tmp, flags, 0o600 if private else 0o666), tmp


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb", private: bool = True) -> Iterator[IO]:
    """Open a temporary file that becomes ``path`` when the block ends without an error.

    ``private`` (the default) leaves the file readable by its owner only: the service's stored
    inputs and outputs are private to its user. A user's own download passes ``private=False``.

    >>> with atomic_write(job_dir / "report.json", "w") as handle:  # doctest: +SKIP
    ...     json.dump(report, handle)
    """
    if "w" not in mode:
        raise ValueError(f"atomic_write needs a write mode ('w' or 'wb'), got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_hidden(path, private)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_json_atomic(path: str | Path, data: dict[str, Any]) -> None:
    """``data`` as indented JSON with sorted keys (diffs of two runs line up), written atomically."""
    with atomic_write(path, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
