"""One DICOM file: its pydicom dataset, whether it holds complete pixel data, and the facts we report.

pydicom reads the headers because it parses preamble-less files with ``force=True``, gives the SOP class a
name to put in a message, and tells how long the pixel data should be. A file without pixel data, or with
fewer bytes than declared or needed, is therefore refused here, before ITK reads it, with what it is and
the byte counts (:class:`DicomNoPixelDataError`, :class:`UnreadableImageError`); reports and other objects
without pixels are named as such rather than failing as "unreadable".
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

from models.io.errors import DicomNoPixelDataError, UnknownSeriesError, UnreadableImageError
from models.io.readers.dicom_geometry import multiframe_geometry
from models.io.readers.source import DICOM, ITK_IO, Source

__all__ = ["dicom_dataset", "has_pixels", "sop_name", "check_dicom_pixels", "dicom_info", "dicom_file_source"]


def dicom_dataset(path: Path, display: str):
    """The file's dataset, large values deferred (the pixels are read by ITK later)."""
    import pydicom

    try:
        return pydicom.dcmread(str(path), force=True, defer_size=1024)
    except Exception as error:  # noqa: BLE001 - pydicom raises many types for a broken file
        raise UnreadableImageError(f"the DICOM header cannot be parsed ({error})", path=display) from None


def has_pixels(ds) -> bool:
    """Whether the dataset holds pixel data of any of the three kinds DICOM has."""
    return any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


def sop_name(ds) -> str:
    """The SOP class as a reader would say it (``CT Image Storage``), or its UID when pydicom has no name."""
    sop = ds.get("SOPClassUID")
    name = getattr(sop, "name", "") if sop is not None else ""
    return name if name and name != str(sop) else (f"SOP class {sop}" if sop else "object of unknown SOP class")


def _refuse_without_pixels(ds, display: str) -> NoReturn:
    """Say what a pixel-less object is: an image header whose pixels were dropped, a report, or another object."""
    name, modality = sop_name(ds), str(ds.get("Modality", "") or "")
    if "Rows" in ds and "Columns" in ds and " SR " not in f" {name} ":
        raise DicomNoPixelDataError(f"is a DICOM image header ({name}) without pixel data (no PixelData "
                                    "element)", path=display, hint="export the images again with their pixel "
                                    "data; some anonymisers and 'header only' exports drop them")
    what = "structured report" if modality == "SR" or " SR " in f" {name} " else "object"
    raise DicomNoPixelDataError(f"is a DICOM {what} ({name}{f', modality {modality}' if modality else ''}) "
                                "with no pixel data: not an image", path=display)


def _declared_length(element, path: Path, display: str) -> int | None:
    """The PixelData length, refusing a file cut before the end its element declares; ``None`` if unknown."""
    length = getattr(element, "length", None)
    tell = getattr(element, "value_tell", None)
    if length is not None and tell is not None and length != 0xFFFFFFFF:
        have = path.stat().st_size - tell
        if have < length:
            raise UnreadableImageError(f"the pixel data are truncated: the file holds {max(have, 0)} of the {length} "
                                       "bytes its PixelData element declares", path=display)
        return length
    value = getattr(element, "value", None)
    return len(value) if isinstance(value, bytes | bytearray) else None


def _check_frame_bytes(ds, length: int | None, display: str) -> None:
    """Refuse uncompressed pixel data shorter than rows × columns × samples × frames × bits need."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if length is not None and syntax is not None and not syntax.is_compressed:
        try:
            needed = (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
                      * int(ds.get("NumberOfFrames", 1) or 1) * int(ds.BitsAllocated) + 7) // 8
        except (AttributeError, TypeError, ValueError):
            return
        if length < needed:
            raise UnreadableImageError(f"the pixel data are truncated: {length} bytes where {int(ds.Rows)}×"
                                       f"{int(ds.Columns)} pixels × {int(ds.get('NumberOfFrames', 1) or 1)} frame(s) "
                                       f"need {needed}", path=display)


def check_dicom_pixels(ds, path: Path, display: str) -> None:
    """Refuse a DICOM file without pixel data, or whose pixel data are shorter than declared or needed."""
    if not has_pixels(ds):
        _refuse_without_pixels(ds, display)
    if "PixelData" not in ds:
        return
    length = _declared_length(ds.get_item("PixelData", keep_deferred=True), path, display)
    _check_frame_bytes(ds, length, display)


def dicom_info(ds, n_files: int) -> dict:
    """The series facts ``metadata`` records, so that a caller can tell which series it got."""
    return {"series_uid": str(ds.get("SeriesInstanceUID", "")) or None,
            "series_description": str(ds.get("SeriesDescription", "") or ""),
            "modality": str(ds.get("Modality", "") or ""), "sop_class": sop_name(ds), "files": n_files}


def dicom_file_source(path: Path, display: str, series: str | None, dataset=None) -> Source:
    """One DICOM file (a slice, or a multi-frame volume) as a checked :class:`Source`.

    ``dataset`` is the file's dataset when the caller has parsed it already; ``series``, if given, must
    prefix the file's SeriesInstanceUID.
    """
    ds = dataset if dataset is not None else dicom_dataset(path, display)
    check_dicom_pixels(ds, path, display)
    uid = str(ds.get("SeriesInstanceUID", "")) or None
    if series and not (uid or "").startswith(series):
        raise UnknownSeriesError(f"series={series!r} does not match this file's SeriesInstanceUID {uid}",
                                 path=display, hint="leave series unset for a single file, or upload the "
                                 "folder/zip that holds the series you want")
    return Source(DICOM, [path], display, ITK_IO[DICOM], multiframe_geometry(ds, display), uid, dicom_info(ds, 1))
