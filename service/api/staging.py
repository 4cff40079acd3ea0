"""Uploads that become a database row and a folder of files: both land, or neither does.

A request copies its uploads into a fresh folder, checks them, then commits the row that points at
the folder. Any failure on the way (a 4xx for bad input, a full disk, a dropped connection, the
database refusing the commit) rolls the session back and removes the folder, so a refused upload
leaves no row without files and no files without a row.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi import UploadFile
from sqlalchemy.orm import Session

from models.io.errors import ImageError
from service.storage.atomic import copy_hashing

__all__ = ["all_or_nothing", "save_upload", "extension", "named_by_field"]

_EXT = re.compile(r"^\.[a-z0-9]{1,8}$")


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


def extension(filename: str | None) -> str:
    """The upload's extension, kept so the readers' name fallback still works: '.nii.gz', '.zip', ''."""
    suffixes = [s.lower() for s in Path(filename or "").suffixes]
    if len(suffixes) >= 2 and suffixes[-1] == ".gz" and _EXT.match(suffixes[-2]):
        return suffixes[-2] + suffixes[-1]
    return suffixes[-1] if suffixes and _EXT.match(suffixes[-1]) else ""


def named_by_field(error: ImageError, fields: dict[str, Path]) -> ImageError:
    """The same error with every stored path replaced by its form field, e.g. ``moving: ...``.

    The server's folders stay private and the user reads the names they sent. Longer paths go first,
    so an upload stored without an extension (``inputs/moving``) cannot eat ``inputs/moving_mask``.
    """
    problem, path = error.problem, error.path
    for field, stored in sorted(fields.items(), key=lambda item: -len(str(item[1]))):
        problem = problem.replace(str(stored), field)
        path = path.replace(str(stored), field) if path else path
    rebuilt = type(error)(problem, path=path, hint=error.hint, **error.details)
    rebuilt.__cause__ = error
    return rebuilt
