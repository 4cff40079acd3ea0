"""The artifact store on a local folder (the embedded mode, or a volume shared by compose services).

Layout under ``root``::

    objects/ab/abcdef...   immutable objects, read-only, named by their SHA-256
    dirs/<sha>/            directories checked out from a manifest (hard links to the objects)
    jobs/<job_id>/         a job's scratch area: uploads on their way in, outputs on their way out
    datasets/<id>/         an uploaded training set, unpacked (read by training jobs)
    tmp/                   files being written; a crash leaves litter here, never a half object

An object appears only by a hard link (or rename) of a complete, fsynced temporary file, so a
reader sees all of it or nothing, and an existing object is never overwritten. The store holds
patient images: its folders are ``0700`` and its objects ``0400`` (``service.core.privacy``).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

from service.core.privacy import make_private_dir
from service.storage.atomic import copy_hashing
from service.storage.base import ObjectNotFound, check_sha, manifest_bytes, parse_manifest

__all__ = ["LocalArtifactStore"]

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class LocalArtifactStore:
    """Content-addressed objects under ``root`` (created if missing); see the module docstring."""

    def __init__(self, root: str | Path) -> None:
        self.root = make_private_dir(Path(root).resolve())
        for sub in ("objects", "dirs", "jobs", "datasets", "tmp"):
            make_private_dir(self.root / sub)

    # -- writing -------------------------------------------------------------------------------
    def put_stream(self, stream: BinaryIO, max_bytes: int | None = None) -> str:
        """Store everything ``stream`` yields; a :class:`TooLarge` past ``max_bytes`` leaves nothing."""
        fd, tmp = tempfile.mkstemp(dir=self.root / "tmp", prefix="put.")
        try:
            with os.fdopen(fd, "wb") as handle:
                sha, _ = copy_hashing(stream, handle, max_bytes)
                handle.flush()
                os.fsync(handle.fileno())
            self._publish(Path(tmp), sha)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return sha

    def put_file(self, path: str | Path) -> str:
        with open(path, "rb") as handle:
            return self.put_stream(handle)

    def put_bytes(self, data: bytes) -> str:
        return self.put_stream(io.BytesIO(data))

    def put_dir(self, path: str | Path) -> str:
        """Store every file below ``path``, then its manifest; return the manifest's SHA-256.

        Files go in first, so a manifest never names a missing object. Symbolic links and special
        files are refused (they could point outside the directory); empty folders are not kept.
        """
        base = Path(path)
        if not base.is_dir():
            raise NotADirectoryError(f"{base} is not a directory")
        files: dict[str, tuple[str, int]] = {}
        for item in sorted(base.rglob("*")):
            relative = item.relative_to(base).as_posix()
            if item.is_symlink() or not (item.is_file() or item.is_dir()):
                raise ValueError(f"{item}: only regular files can be stored, not links or special files")
            if item.is_file():
                files[relative] = (self.put_file(item), item.stat().st_size)
        return self.put_bytes(manifest_bytes(files))

    def _publish(self, tmp: Path, sha: str) -> None:
        target = self.path_for(sha)
        if target.exists():
            return  # same bytes already stored: nothing to do
        target.parent.mkdir(exist_ok=True)
        os.chmod(tmp, 0o400)  # immutable (accidental writes fail loudly) and private (patient data)
        try:
            os.link(tmp, target)  # unlike rename, never replaces an object a reader may have open
        except FileExistsError:
            return  # a concurrent writer stored the same bytes first
        except OSError:
            os.replace(tmp, target)  # filesystems without hard links
        # Imported here: importing the state layer loads nothing from models/ (tests/service/
        # test_state_boundaries.py); the atomic-write module is the standard library's alone.
        from models.io.atomic import fsync_dir

        fsync_dir(target.parent)

    # -- reading -------------------------------------------------------------------------------
    def path_for(self, sha: str) -> Path:
        """Where object ``sha`` lives or would live (no check that it exists)."""
        check_sha(sha)
        return self.root / "objects" / sha[:2] / sha

    def key_of(self, sha: str) -> str:
        """The object's key relative to the store root: what the database records as ``storage_key``."""
        return self.path_for(sha).relative_to(self.root).as_posix()

    def exists(self, sha: str) -> bool:
        return self.path_for(sha).is_file()

    def path_of(self, sha: str) -> Path:
        """A local path to read object ``sha`` from; :class:`ObjectNotFound` if absent."""
        path = self.path_for(sha)
        if not path.is_file():
            raise ObjectNotFound(f"no object {sha} in the artifact store at {self.root}")
        return path

    def open(self, sha: str) -> BinaryIO:
        return open(self.path_of(sha), "rb")

    def read_manifest(self, sha: str) -> dict[str, tuple[str, int]]:
        """``{relative path: (sha256, size)}`` of the directory stored as ``sha``."""
        return parse_manifest(self.path_of(sha).read_bytes())

    def checkout_dir(self, sha: str) -> Path:
        """A read-only folder holding the directory ``sha`` (made once, then reused).

        Built in a temporary folder and renamed into place, so a concurrent caller sees either no
        folder or a complete one; the files are hard links to the objects (no copy of the weights).
        """
        target = self.root / "dirs" / check_sha(sha)
        if target.is_dir():
            return target
        files = self.read_manifest(sha)
        staging = Path(tempfile.mkdtemp(dir=self.root / "tmp", prefix=f"dir.{sha[:12]}."))
        try:
            for relative, (file_sha, _) in files.items():
                destination = staging / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(self.path_of(file_sha), destination)
                except OSError:
                    shutil.copyfile(self.path_of(file_sha), destination)
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    # -- removing ------------------------------------------------------------------------------
    def delete(self, sha: str) -> bool:
        """Remove object ``sha`` (and its checked-out folder, if it is a manifest).

        Objects are shared by every directory and job that stored the same bytes: call this only
        for objects nothing references any more (the registry checks before it deletes).
        """
        shutil.rmtree(self.root / "dirs" / check_sha(sha), ignore_errors=True)
        try:
            self.path_for(sha).unlink()
        except FileNotFoundError:
            return False
        return True

    def sweep_tmp(self, max_age_s: float = 24 * 3600) -> int:
        """Remove temporary files older than ``max_age_s`` left by crashed writers; return how many."""
        cutoff, removed = time.time() - max_age_s, 0
        for item in (self.root / "tmp").iterdir():
            if item.lstat().st_mtime < cutoff:
                shutil.rmtree(item) if item.is_dir() else item.unlink(missing_ok=True)
                removed += 1
        return removed

    # -- job scratch areas ---------------------------------------------------------------------
    def job_dir(self, job_id: str) -> Path:
        """The job's scratch folder (created); write into it with ``models.io.atomic.atomic_write``."""
        if not _JOB_ID.match(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        path = self.root / "jobs" / job_id
        path.mkdir(exist_ok=True)
        return path

    def remove_job_dir(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def list_job_dirs(self) -> list[Path]:
        """Every folder under ``jobs/`` (jobs' folders, model uploads' ``upload-*`` scratch), for retention."""
        return _folders(self.root / "jobs")

    # -- datasets ------------------------------------------------------------------------------
    def dataset_dir(self, dataset_id: str, *, create: bool = True) -> Path:
        """The unpacked dataset's folder (created unless ``create`` is False)."""
        if not _JOB_ID.match(dataset_id):
            raise ValueError(f"not a dataset id: {dataset_id!r}")
        path = self.root / "datasets" / dataset_id
        if create:
            path.mkdir(exist_ok=True)
        return path

    def remove_dataset_dir(self, dataset_id: str) -> None:
        shutil.rmtree(self.dataset_dir(dataset_id, create=False), ignore_errors=True)

    def list_dataset_dirs(self) -> list[Path]:
        """Every folder under ``datasets/``, for retention."""
        return _folders(self.root / "datasets")


def _folders(parent: Path) -> list[Path]:
    """The folders directly in ``parent``, by name; links are left out (never followed, never removed)."""
    return sorted(p for p in parent.iterdir() if p.is_dir() and not p.is_symlink())
