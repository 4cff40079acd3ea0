"""Zip archives: unpack an uploaded one safely, where every member is checked before a byte is
written, and write one from a folder (:func:`write_zip`, what the client uploads for a folder).

Refused (:class:`HostileArchiveError`): names with ``..`` components, absolute names (``/x``, ``\\x``,
``C:x``), NUL bytes, duplicate names, symbolic links and other special files (from the Unix mode in
``external_attr``), members whose compressed data overlap (the "non-recursive" zip-bomb trick), and
compression ratios above ``max_ratio`` once more than 1 MiB would be unpacked. Deflate cannot exceed
about 1032:1, so the default ratio of 1000 stops bzip2/LZMA bombs while leaving very compressible masks
alone; the byte limit caps everything else. Too many members or too many bytes raise
:class:`ArchiveTooLargeError` (413), a subclass of :class:`HostileArchiveError`.

Sizes come from the central directory and are enforced again while streaming, so a member whose data
inflate to more than its header declares is stopped at the declared size (and then fails its CRC).
Everything is written into a fresh hidden folder inside ``dest_dir`` that is renamed into place only
when all members are out, and removed on any failure: a failing extraction leaves ``dest_dir`` as it was.

:func:`write_zip` is the one way the package (and its tests) builds an archive: a folder's files in
sorted order, named by their POSIX paths relative to it, then any extra members.
"""

from __future__ import annotations

import io
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import BinaryIO, TypeVar

from models.io.errors import (
    ArchiveTooLargeError,
    EmptyArchiveError,
    HostileArchiveError,
    UnreadableImageError,
)

__all__ = ["extract_zip", "is_zip", "write_zip", "zip_bytes", "MAX_MEMBERS", "MAX_TOTAL_BYTES", "MAX_RATIO"]

MAX_MEMBERS = 10_000
MAX_TOTAL_BYTES = 4 * 1024**3
MAX_RATIO = 1000.0
RATIO_FLOOR_BYTES = 1024**2  # ratios are only judged once this much would be unpacked
_CHUNK = 1024**2
_DRIVE = re.compile(r"^[A-Za-z]:")
ZipTarget = TypeVar("ZipTarget", str, Path, BinaryIO)


def is_zip(head: bytes) -> bool:
    """Local-file-header or empty-archive magic at the start of a file."""
    return head[:4] in (b"PK\x03\x04", b"PK\x05\x06")


def _fmt_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"  # pragma: no cover


def _member_parts(name: str, display: str) -> tuple[str, ...]:
    """Validated path components of a member name (separators ``/`` and ``\\``)."""
    if "\x00" in name:
        raise HostileArchiveError(f"member name {name!r} contains a NUL byte", path=display)
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise HostileArchiveError(f"member {name!r} has an absolute path", path=display)
    parts = tuple(p for p in re.split(r"[/\\]+", name) if p not in ("", "."))
    if ".." in parts:
        raise HostileArchiveError(f"member {name!r} climbs out of the archive folder with '..'", path=display)
    return parts


def _check_members(zf: zipfile.ZipFile, archive_bytes: int, display: str, max_members: int,
                   max_total_bytes: int, max_ratio: float) -> list[tuple[zipfile.ZipInfo, tuple[str, ...]]]:
    infos = zf.infolist()
    if not infos:
        raise EmptyArchiveError("the zip archive has no members", path=display)
    if len(infos) > max_members:
        raise ArchiveTooLargeError(f"the zip archive has {len(infos)} members, more than the limit of {max_members}",
                                   path=display, limit=max_members, members=len(infos))
    checked, seen = [], set()
    total = compressed = 0
    for info in infos:
        parts = _member_parts(info.filename, display)
        mode = info.external_attr >> 16  # Unix mode bits, when the zip was made on Unix
        if mode:
            kind = stat.S_IFMT(mode)
            if kind == stat.S_IFLNK:
                raise HostileArchiveError(f"member {info.filename!r} is a symbolic link", path=display)
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise HostileArchiveError(f"member {info.filename!r} is a special file (mode {oct(mode)})",
                                          path=display)
        if info.flag_bits & 0x1:
            raise UnreadableImageError(f"member {info.filename!r} is encrypted", path=display,
                                       hint="upload an archive without a password")
        if not parts:
            continue
        key = "/".join(parts).lower()  # case-insensitive file systems would merge these
        if key in seen:
            raise HostileArchiveError(f"member name {info.filename!r} occurs twice", path=display)
        seen.add(key)
        if info.is_dir():
            checked.append((info, parts))
            continue
        total += info.file_size
        compressed += info.compress_size
        if info.file_size > RATIO_FLOOR_BYTES and info.file_size > max_ratio * max(info.compress_size, 1):
            raise HostileArchiveError(
                f"member {info.filename!r} would inflate {info.compress_size} bytes to {_fmt_bytes(info.file_size)} "
                f"(compression ratio {info.file_size / max(info.compress_size, 1):.0f}:1, limit {max_ratio:.0f}:1), "
                "typical of a zip bomb", path=display, limit=max_ratio)
        checked.append((info, parts))
    if total > max_total_bytes:
        raise ArchiveTooLargeError(f"the zip archive would unpack to {_fmt_bytes(total)}, more than the limit of "
                                   f"{_fmt_bytes(max_total_bytes)}", path=display, limit=max_total_bytes, bytes=total)
    if compressed > archive_bytes:
        raise HostileArchiveError("the zip members' compressed data overlap (a zip-bomb construction)", path=display)
    if total > RATIO_FLOOR_BYTES and total > max_ratio * max(archive_bytes, 1):
        raise HostileArchiveError(f"the zip archive ({_fmt_bytes(archive_bytes)}) would unpack to {_fmt_bytes(total)} "
                                  f"(ratio {total / max(archive_bytes, 1):.0f}:1, limit {max_ratio:.0f}:1), typical "
                                  "of a zip bomb", path=display, limit=max_ratio)
    return checked


def _stream(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: int, display: str) -> int:
    """Copy one member, never writing more than its declared size or the remaining budget."""
    written = 0
    with zf.open(info) as src, open(target, "xb") as dst:
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            if written > info.file_size:
                raise HostileArchiveError(f"member {info.filename!r} holds more data than its header declares "
                                          f"({info.file_size} bytes)", path=display)
            if written > budget:
                raise ArchiveTooLargeError(f"the zip archive unpacks to more than the limit of "
                                           f"{_fmt_bytes(budget)}", path=display)
            dst.write(chunk)
    return written


def _free_name(dest_dir: Path, stem: str) -> Path:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "archive"
    candidate, n = dest_dir / stem, 1
    while candidate.exists():
        candidate, n = dest_dir / f"{stem}-{n}", n + 1
    return candidate


def extract_zip(path_or_bytes: str | Path | bytes, dest_dir: str | Path, *, max_members: int = MAX_MEMBERS,
                max_total_bytes: int = MAX_TOTAL_BYTES, max_ratio: float = MAX_RATIO,
                name: str | None = None) -> Path:
    """Unpack a zip (a path or its bytes) into a new folder inside ``dest_dir`` and return that folder.

    The folder is named after the archive (``scan.zip`` -> ``dest_dir/scan``, ``-1``, ``-2``... if taken;
    ``name`` overrides, and names the archive in messages when bytes are given). Raises
    :class:`HostileArchiveError` / :class:`ArchiveTooLargeError` / :class:`EmptyArchiveError` /
    :class:`UnreadableImageError` (not a zip, truncated, encrypted, bad CRC) before anything is left behind.
    """
    if isinstance(path_or_bytes, bytes | bytearray | memoryview):
        data = bytes(path_or_bytes)
        display = name or "<uploaded zip>"
        opener, archive_bytes = (lambda: io.BytesIO(data)), len(data)
        stem = PurePosixPath(name).stem if name else "archive"
    else:
        source = Path(path_or_bytes)
        display = name or str(source)
        if not source.is_file():
            raise UnreadableImageError("no such file", path=display, hint="check the path")
        opener, archive_bytes = (lambda: open(source, "rb")), source.stat().st_size
        stem = PurePosixPath(name).stem if name else source.stem
    dest_dir = Path(dest_dir)
    try:
        with opener() as fh, zipfile.ZipFile(fh) as zf:
            members = _check_members(zf, archive_bytes, display, max_members, max_total_bytes, max_ratio)
            dest_dir.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=dest_dir))
            try:
                budget = max_total_bytes
                for info, parts in members:
                    target = staging.joinpath(*parts)
                    if info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    budget -= _stream(zf, info, target, budget, display)
                final = _free_name(dest_dir, stem)
                staging.rename(final)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
    except zipfile.BadZipFile as error:
        raise UnreadableImageError(f"not a valid zip archive or a corrupt one ({error})", path=display) from None
    except (NotImplementedError, zlib.error, EOFError) as error:
        raise UnreadableImageError(f"a zip member cannot be unpacked ({error})", path=display) from None
    except OSError as error:
        if isinstance(error, FileExistsError):
            raise HostileArchiveError(f"two members unpack to the same file ({error.filename})", path=display) from None
        raise UnreadableImageError(f"the zip archive cannot be unpacked ({error.strerror or error})",
                                   path=display) from None
    return final


def write_zip(target: ZipTarget, folder: str | Path | None = None, *, prefix: str = "",
              members: Mapping[str | zipfile.ZipInfo, bytes | str] | None = None,
              compression: int = zipfile.ZIP_DEFLATED) -> ZipTarget:
    """Write a zip to ``target`` (a path or a binary file opened for writing) and return ``target``.

    First ``folder``'s files, recursively and in sorted order (so the same folder gives the same
    archive), each named ``prefix`` + its POSIX path relative to ``folder``; then ``members``, a name
    (or a ``ZipInfo``, for full control over a member's header) -> its content.
    """
    with zipfile.ZipFile(target, "w", compression) as archive:
        if folder is not None:
            for path in sorted(Path(folder).rglob("*")):
                if path.is_file():
                    archive.write(path, prefix + path.relative_to(folder).as_posix())
        for name, data in (members or {}).items():
            archive.writestr(name, data)
    return target


def zip_bytes(folder: str | Path | None = None, *, prefix: str = "",
              members: Mapping[str | zipfile.ZipInfo, bytes | str] | None = None,
              compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """:func:`write_zip` into memory: the archive's bytes, e.g. the body of an upload."""
    buffer = io.BytesIO()
    write_zip(buffer, folder, prefix=prefix, members=members, compression=compression)
    return buffer.getvalue()
