"""Query and path parameters shared by the routes, bounded in the schema.

Bounds are what the databases can hold (PostgreSQL's INTEGER and BIGINT), so an absurd number is a
422 that names the parameter, never a database error. Ids are UUIDs: anything else is simply not
found (:func:`is_uuid`, checked before the database is asked, which would refuse a NUL byte).
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Path, Query

__all__ = ["Offset", "Limit", "MAX_OFFSET", "MAX_LIMIT", "INT32_MAX", "UUID_PATTERN", "uuid_path", "is_uuid"]

INT32_MAX = 2**31 - 1  # PostgreSQL INTEGER: version numbers
MAX_OFFSET = 10**9  # far beyond any list, well inside BIGINT
MAX_LIMIT = 1000
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"

Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="items to skip (newest first)")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="items to return")]


_UUID = re.compile(UUID_PATTERN)


def uuid_path(what: str) -> object:
    """A path parameter holding the id of ``what`` (a UUID; anything else is a 404 like an unknown id)."""
    return Path(max_length=64, description=f"the {what}'s id (a UUID)",
                examples=["3f2c8a9e-1b7d-4c55-9e0a-6d2b8f1c4e77"])


def is_uuid(text: str) -> bool:
    return bool(_UUID.match(text))
