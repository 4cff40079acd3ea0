"""From the path a user gave — a file, a folder or a zip — to the one :class:`Source` to read.

Zips are unpacked into the caller's scratch folder and then treated as folders. A folder is scanned
recursively; hidden files and OS litter (``__MACOSX``, ``Thumbs.db``, ``DICOMDIR``) are ignored, files that
are not images are skipped but remembered for the message, DICOM files are grouped by
SeriesInstanceUID, and exactly one series or image must remain or be named by ``series=``
(:mod:`~models.io.readers.choose`). Every message names the member as ``archive.zip/member``.
With ``cine=True`` (the cine entry points only) a DICOM series with several phases per slice position
is grouped into frames (:mod:`~models.io.readers.dicom_cine`) instead of refused, and a single
multi-frame file with a temporal dimension is refused as such.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from models.io.archive import extract_zip
from models.io.errors import EmptyArchiveError, NotAnImageError, UnreadableImageError, UnsupportedFormatError
from models.io.readers.choose import choose
from models.io.readers.dicom import check_dicom_pixels, dicom_dataset, dicom_file_source, has_pixels, sop_name
from models.io.readers.dicom_cine import cine_source, refuse_multiframe_cine
from models.io.readers.dicom_series import series_source
from models.io.readers.file_format import detect_format
from models.io.readers.metaimage import check_metaimage
from models.io.readers.nifti import nifti_source
from models.io.readers.nrrd import check_nrrd
from models.io.readers.source import DICOM, ITK_IO, METAIMAGE, NIFTI, NRRD, ZIP, Source

__all__ = ["resolve"]

_IGNORED = {"__macosx", "thumbs.db", "desktop.ini", "dicomdir"}


@dataclass
class _Scan:
    """What a folder holds: DICOM series by UID, other images, and what was skipped (and why, where useful)."""

    groups: dict[str, list] = field(default_factory=dict)  # SeriesInstanceUID -> [(path, dataset)]
    others: list = field(default_factory=list)  # (relative name, format, path)
    not_images: list = field(default_factory=list)  # DICOM objects without pixel data
    skipped: list = field(default_factory=list)  # relative names of files that are not images
    unreadable: list = field(default_factory=list)  # their errors, when they looked like images


def resolve(path: Path, series: str | None, workdir: Path, display: str, *, cine: bool = False) -> Source:
    """The :class:`Source` that ``path`` stands for; ``workdir`` receives unpacked zips and links.

    ``cine``: a DICOM series with several phases per position becomes a cine source (``frames`` set).
    """
    if not path.exists():
        raise UnreadableImageError("no such file or folder", path=display, hint="check the path")
    if path.is_dir():
        return _resolve_folder(path, series, workdir, display, cine)
    fmt = detect_format(path, display=display)
    if fmt == ZIP:
        root = extract_zip(path, workdir, name=display)
        return _resolve_folder(root, series, workdir, display, cine)
    return _single(path, fmt, display, series, workdir, cine=cine)


def _single(path: Path, fmt: str, display: str, series: str | None, workdir: Path,
            dataset=None, cine: bool = False) -> Source:
    """One image file, with the checks of its format done before any reader sees it."""
    if fmt == NIFTI:
        return nifti_source(path, display, workdir)
    if fmt == METAIMAGE:
        check_metaimage(path, display)
        return Source(METAIMAGE, [path], display, ITK_IO[METAIMAGE])
    if fmt == NRRD:
        check_nrrd(path, display)
        return Source(NRRD, [path], display, ITK_IO[NRRD])
    if cine:
        dataset = dataset if dataset is not None else dicom_dataset(path, display)
        refuse_multiframe_cine(dataset, display)
    return dicom_file_source(path, display, series, dataset)


def _ignored(rel: Path) -> bool:
    """Hidden files and OS litter: never images, and never worth naming in a message."""
    return any(part.startswith(".") or part.lower() in _IGNORED for part in rel.parts)


def _scan(root: Path, files: list[Path], display: str) -> _Scan:
    """Sort every file of the folder into series, other images, and skipped files."""
    scan = _Scan()
    for f in files:
        rel = f.relative_to(root).as_posix()
        member = f"{display}/{rel}"
        try:
            fmt = detect_format(f, display=member)
        except UnreadableImageError as error:
            scan.skipped.append(rel)
            scan.unreadable.append(error)
            continue
        except (NotAnImageError, UnsupportedFormatError):
            scan.skipped.append(rel)
            continue
        if fmt == ZIP:
            scan.skipped.append(rel)
        elif fmt == DICOM:
            ds = dicom_dataset(f, member)
            if has_pixels(ds):
                scan.groups.setdefault(str(ds.get("SeriesInstanceUID", "") or ""), []).append((f, ds))
            else:
                scan.not_images.append(f"{rel} ({sop_name(ds)})")
        else:
            scan.others.append((rel, fmt, f))
    return scan


def _candidates(scan: _Scan) -> list[dict]:
    """One entry per DICOM series (``uid`` set) and per other image file (``uid`` None) to choose from."""
    candidates = []
    for uid, items in scan.groups.items():
        ds = items[0][1]
        candidates.append({"uid": uid, "description": str(ds.get("SeriesDescription", "") or ""),
                           "modality": str(ds.get("Modality", "") or ""), "files": len(items), "items": items})
    candidates += [{"uid": None, "name": rel, "format": fmt, "path": f} for rel, fmt, f in scan.others]
    return candidates


def _series(root: Path, chosen: dict, display: str, workdir: Path, cine: bool) -> Source:
    """The chosen DICOM series; a one-file series is read as that file, a longer one checked file by file."""
    items = chosen["items"]
    source = cine_source(items, chosen["uid"], display) if cine else None
    source = source or series_source(items, chosen["uid"], display)
    if source is None:
        path, ds = items[0]
        return _single(path, DICOM, f"{display}/{path.relative_to(root).as_posix()}", None, workdir, ds, cine)
    for path, ds in items:
        check_dicom_pixels(ds, path, f"{display}/{path.relative_to(root).as_posix()}")
    return source


def _resolve_folder(root: Path, series: str | None, workdir: Path, display: str, cine: bool) -> Source:
    """The one series or image of a folder (or unpacked zip) that is there or that ``series`` names."""
    files = [f for f in sorted(root.rglob("*")) if f.is_file() and not _ignored(f.relative_to(root))]
    if not files:
        raise EmptyArchiveError("holds no files", path=display)
    scan = _scan(root, files, display)
    candidates = _candidates(scan)
    if not candidates and scan.unreadable and not scan.not_images:
        raise scan.unreadable[0]
    chosen = choose(candidates, series, display, scan.skipped, scan.not_images)
    if chosen["uid"] is None:
        member = f"{display}/{chosen['name']}"
        return _single(chosen["path"], chosen["format"], member, None, workdir)
    return _series(root, chosen, display, workdir, cine)
