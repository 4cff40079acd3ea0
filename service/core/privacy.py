"""Stored images are patient data: every file and folder the service makes is its own user's alone.

The processes that write the store (the API, the workers, ``adacs serve``) set the umask to
:data:`PRIVATE_UMASK` when they start, so uploads, outputs, checkpoints, the SQLite database and the
broker's files are created ``0600``/``0700`` whatever library creates them; the store and data
folders are also made ``0700`` explicitly, so a copy made elsewhere with a looser umask is closed
too. The Docker images run as a dedicated unprivileged user with the same umask.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["PRIVATE_UMASK", "PRIVATE_DIR_MODE", "use_private_umask", "make_private_dir"]

PRIVATE_UMASK = 0o077
PRIVATE_DIR_MODE = 0o700


def use_private_umask() -> int:
    """Set this process's umask so new files are owner-only; returns the previous one."""
    return os.umask(PRIVATE_UMASK)


def make_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed and make it ``0700``."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    os.chmod(path, PRIVATE_DIR_MODE)
    return path
