"""Uploads that become a database row and a folder of files: both land, or neither does.

A request copies its uploads into a fresh folder, checks them, then commits the row that points at
the folder. Any failure on the way (a 4xx for bad input, a full disk, a dropped connection, the
database refusing the commit) rolls the session back and removes the folder, so a refused upload
leaves no row without files and no files without a row.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi import UploadFile
from sqlalchemy.orm import Session

from service.storage.atomic import copy_hashing

__all__ = ["all_or_nothing", "save_upload"]


def save_upload(upload: UploadFile, target: Path, max_bytes: int) -> tuple[str, int]:
    """Copy a spooled upload to ``target``: ``(sha256, size)``; a 413 past ``max_bytes``."""
    upload.file.seek(0)
    with open(target, "wb") as handle:
        return copy_hashing(upload.file, handle, max_bytes)


@contextmanager
def all_or_nothing(session: Session, folder: Path) -> Iterator[Path]:
    """Yield ``folder``; if the block raises, roll ``session`` back and delete ``folder``."""
    try:
        yield folder
    except BaseException:
        session.rollback()
        shutil.rmtree(folder, ignore_errors=True)
        raise
