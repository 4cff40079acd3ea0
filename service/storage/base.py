"""What every artifact store offers, and the canonical manifest that addresses a directory.

Objects are immutable and named by the SHA-256 of their bytes. A directory (a model artifact) is
stored as its files plus a manifest listing ``path -> sha256, size``; the directory's address is
the manifest's SHA-256, so two byte-identical directories get the same address wherever and
whenever they were made. The interface is small on purpose: a local folder implements it now, an
S3 bucket (objects as keys, ``path_of`` through a local cache) can follow.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import BinaryIO, Protocol

__all__ = ["ArtifactStore", "ObjectNotFound", "MANIFEST_FORMAT", "manifest_bytes", "parse_manifest", "check_sha"]

MANIFEST_FORMAT = "adacs-dir/1"
_SHA = re.compile(r"^[0-9a-f]{64}$")


class ObjectNotFound(FileNotFoundError):
    """No object with this digest in the store."""


def check_sha(sha: str) -> str:
    """``sha`` if it is 64 lower-case hex digits; anything else (e.g. ``../x``) never reaches a path."""
    if not isinstance(sha, str) or not _SHA.match(sha):
        raise ValueError(f"not a SHA-256 hex digest: {sha!r}")
    return sha


def manifest_bytes(files: dict[str, tuple[str, int]]) -> bytes:
    """The canonical manifest of ``{relative posix path: (sha256, size)}``: sorted, compact JSON."""
    entries = [{"path": p, "sha256": sha, "size": size} for p, (sha, size) in sorted(files.items())]
    return json.dumps({"format": MANIFEST_FORMAT, "files": entries}, sort_keys=True,
                      separators=(",", ":")).encode("utf-8")


def parse_manifest(data: bytes) -> dict[str, tuple[str, int]]:
    """Inverse of :func:`manifest_bytes`; a ValueError if ``data`` is not a manifest."""
    try:
        doc = json.loads(data)
        if doc.get("format") != MANIFEST_FORMAT:
            raise ValueError
        files = {_check_path(e["path"]): (check_sha(e["sha256"]), int(e["size"])) for e in doc["files"]}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ValueError("this object is not a directory manifest") from None
    return files


def _check_path(path: str) -> str:
    """A manifest path must stay inside its directory when checked out."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in path:
        raise ValueError(path)
    return path


class ArtifactStore(Protocol):
    """Immutable, content-addressed objects plus per-job scratch folders."""

    def put_file(self, path: str | Path) -> str: ...
    def put_bytes(self, data: bytes) -> str: ...
    def put_stream(self, stream: BinaryIO, max_bytes: int | None = None) -> str: ...
    def put_dir(self, path: str | Path) -> str: ...
    def exists(self, sha: str) -> bool: ...
    def open(self, sha: str) -> BinaryIO: ...
    def path_of(self, sha: str) -> Path: ...
    def key_of(self, sha: str) -> str: ...
    def read_manifest(self, sha: str) -> dict[str, tuple[str, int]]: ...
    def checkout_dir(self, sha: str) -> Path: ...
    def delete(self, sha: str) -> bool: ...
    def sweep_tmp(self, max_age_s: float = 24 * 3600) -> int: ...
    def job_dir(self, job_id: str) -> Path: ...
    def remove_job_dir(self, job_id: str) -> None: ...
    def list_job_dirs(self) -> list[Path]: ...
    def dataset_dir(self, dataset_id: str, *, create: bool = True) -> Path: ...
    def remove_dataset_dir(self, dataset_id: str) -> None: ...
    def list_dataset_dirs(self) -> list[Path]: ...
