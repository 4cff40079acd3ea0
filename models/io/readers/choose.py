"""Which image of a folder or zip to read: the only one, or the one ``series=`` names.

An upload with several series or images is never read by guessing; the refusal lists them (UID,
description, modality, file count, or file name and format) both in the message and as ``series`` details,
so that a client can offer the choice and pass it back as ``series=``.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

from models.io.errors import DicomNoPixelDataError, MultipleSeriesError, NotAnImageError, UnknownSeriesError
from models.io.readers.source import NAMES

__all__ = ["describe", "choose"]


def describe(candidate: dict) -> str:
    """One candidate as the listing in messages shows it."""
    if candidate["uid"] is not None:
        desc = f" {candidate['description']!r}" if candidate["description"] else ""
        modality = f"{candidate['modality']}, " if candidate["modality"] else ""
        return f"{candidate['uid']}{desc} ({modality}{candidate['files']} file{'s' * (candidate['files'] != 1)})"
    return f"{candidate['name']} ({NAMES[candidate['format']]})"


def _refuse_empty(display: str, skipped: list, not_images: list) -> NoReturn:
    """No candidate at all: say whether there were only pixel-less DICOM objects or no image files."""
    if not_images:
        raise DicomNoPixelDataError(f"holds only DICOM objects without pixel data: {', '.join(not_images[:5])}"
                                    f"{' ...' if len(not_images) > 5 else ''}", path=display)
    shown = ", ".join(skipped[:8]) + (" ..." if len(skipped) > 8 else "")
    raise NotAnImageError(f"holds no image file (found: {shown})", path=display)


def choose(candidates: list[dict], series: str | None, display: str, skipped: list, not_images: list) -> dict:
    """The candidate ``series`` names (UID, unique UID prefix, or file name), or the only one."""
    listing = "; ".join(describe(c) for c in candidates)
    public = [{k: v for k, v in c.items() if k not in ("items", "path")} for c in candidates]
    if series is not None:
        exact = [c for c in candidates if series in (c["uid"], c.get("name"), Path(c.get("name") or "").name)]
        matches = exact or [c for c in candidates if c["uid"] and c["uid"].startswith(series)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise UnknownSeriesError(f"series={series!r} matches {len(matches)} series: "
                                     f"{'; '.join(describe(c) for c in matches)}", path=display,
                                     hint="give more of the SeriesInstanceUID", series=public)
        raise UnknownSeriesError(f"series={series!r} matches none of the series here: {listing or 'none'}",
                                 path=display, hint="pass one of the SeriesInstanceUIDs listed (or a unique prefix)",
                                 series=public)
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        n_series = sum(c["uid"] is not None for c in candidates)
        what = f"{n_series} DICOM series" if n_series == len(candidates) else f"{len(candidates)} images"
        raise MultipleSeriesError(f"holds {what}: {listing}", path=display,
                                  hint="pass series='<SeriesInstanceUID, a unique prefix, or file name>' to choose "
                                  "one, or upload one series at a time", series=public)
    _refuse_empty(display, skipped, not_images)
