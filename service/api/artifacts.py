"""Model artifacts over HTTP: unpack an uploaded zip into a scratch folder; stream a stored one as a zip.

Uploads are copied in chunks from FastAPI's spooled file into a scratch folder of the store (never
into the store's objects: the zip itself is not kept), unpacked with ``models.io.archive``'s safe
extraction and handed to the registry's checks. The scratch folder goes whatever happens, so a
refused upload leaves nothing behind. Downloads are zipped on the fly, one chunk at a time.
"""

from __future__ import annotations

import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from models.io.archive import extract_zip
from service.storage import ArtifactStore
from service.storage.atomic import CHUNK, copy_hashing

__all__ = ["unpacked_artifact", "zip_stream"]

# Three files, plus a folder or two if the zip was made from a folder ('zip -r model.zip model/').
MAX_MEMBERS = 16


def _artifact_root(folder: Path) -> Path:
    """The folder holding the files: the zip's root, or its only folder."""
    entries = list(folder.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return folder


@contextmanager
def unpacked_artifact(store: ArtifactStore, upload: BinaryIO, filename: str | None, max_bytes: int) -> Iterator[Path]:
    """The artifact folder unpacked from the zip ``upload``; removed when the block ends."""
    scratch_id = f"upload-{uuid.uuid4().hex}"
    scratch = store.job_dir(scratch_id)
    try:
        archive = scratch / "upload.zip"
        with open(archive, "wb") as target:
            copy_hashing(upload, target, max_bytes)
        # An artifact is a few files of weights that barely compress: a 4x budget is generous, and
        # extract_zip's ratio check stops bombs long before it.
        folder = extract_zip(archive, scratch / "unpacked", max_members=MAX_MEMBERS, max_total_bytes=4 * max_bytes,
                             name=filename or "artifact.zip")
        yield _artifact_root(folder)
    finally:
        store.remove_job_dir(scratch_id)


class _Chunks:
    """A write-only, unseekable sink: zipfile then writes data descriptors and never seeks back."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


def zip_stream(store: ArtifactStore, files: dict[str, tuple[str, int]], modified: datetime) -> Iterator[bytes]:
    """The stored directory ``files`` (a manifest: path -> (sha256, size)) as a zip, in chunks of about
    ``CHUNK`` bytes.

    A zip written without seeking back needs a data descriptor after each member; readers that
    stream (Java's ZipInputStream, ``unzip -``) accept that only for deflated members, hence deflate
    at its fastest level. Members carry the version's creation time, so the same version always
    downloads as the same bytes.
    """
    sink = _Chunks()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name in sorted(files):
            sha, size = files[name]
            info = zipfile.ZipInfo(name, date_time=modified.timetuple()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            info.file_size = size  # lets zipfile choose zip64 up front for large weights
            info.external_attr = 0o644 << 16  # the objects are read-only in the store, the copies need not be
            with store.open(sha) as source, archive.open(info, "w") as target:
                while chunk := source.read(CHUNK):
                    target.write(chunk)
                    if data := sink.take():
                        yield data
    yield sink.take()  # the central directory
