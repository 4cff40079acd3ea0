"""A DICOM cine series: several cardiac phases per slice position, read as frames on one grid.

A cine MR series (one SeriesInstanceUID) holds, for every slice position, one instance per phase. Read
as a normal series it is refused (several slices at one position, :mod:`.dicom_geometry`), and
:func:`~models.io.readers.read_image` keeps refusing it; only the cine entry points
(:func:`~models.io.readers.read.read_cine_header`, :func:`~models.io.readers.read.read_frames`) resolve
with ``cine=True`` and group it here:

- **Positions.** Instances are grouped by ImagePositionPatient projected on the slice normal (within
  0.01 mm; the phases of one position must agree in-plane too), the positions ordered along the normal.
- **Phases.** Within each position the phases are ordered by TriggerTime (0018,1060) where every
  instance has one and they differ within each position, else by TemporalPositionIdentifier (0020,0100)
  likewise, else by InstanceNumber (then file name). Every position must have the same number of phases
  (:class:`InconsistentSeriesError` naming the counts); NumberOfTemporalPositions is only recorded.
- **Frames.** Frame ``t`` is the ``t``-th phase of every position, stacked as a normal series is
  (:func:`~.dicom_geometry.stack_geometry`: spacing from the positions, uneven gaps refused); one
  position gives 2-D frames. The geometry is computed once, so every frame has exactly the same grid.
- **Header.** ``size`` is ``(x, y, positions, phases)``, ``n_frames`` the phase count, so that too many
  frames are refused from headers alone (:func:`~.read.check_cine_header`).

A series with one phase per position is no cine: it resolves as a normal series (and
:func:`~.read.check_cine_header` refuses its single frame). A single multi-frame file with a temporal
dimension (enhanced MR cine, an ultrasound loop) is refused with :class:`UnsupportedFormatError`.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from models.io.errors import InconsistentSeriesError, NotACineError, UnsupportedFormatError
from models.io.image import Geometry
from models.io.readers.dicom import dicom_info
from models.io.readers.dicom_geometry import stack_geometry, unit
from models.io.readers.dicom_series import check_uniform, has_geometry, pixel_spacing, slice_planes
from models.io.readers.geometry import checked_geometry, floats
from models.io.readers.header import ImageHeader
from models.io.readers.itk import itk_header
from models.io.readers.source import DICOM, ITK_IO, Source

__all__ = ["cine_source", "cine_header", "frame_source", "refuse_multiframe_cine"]

_SAME_MM = 0.01  # images closer than this (mm) lie at one slice position
_PHASE_TAGS = ("TriggerTime", "TemporalPositionIdentifier")
_FRAME_TIME_TAGS = (0x00181063, 0x00181065)  # FrameTime, FrameTimeVector: what a FrameIncrementPointer names


def _number(ds, keyword: str) -> float | None:
    """A numeric element's value, ``None`` when it is absent, empty or not a number."""
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _instance(item) -> tuple[int, str]:
    """The tie-breaking order of an instance: InstanceNumber, then file name."""
    path, ds = item
    number = _number(ds, "InstanceNumber")
    return (int(number) if number is not None else 0, str(path))


def _group_positions(items: list, what: str, display: str) -> tuple[list[list[int]], np.ndarray, np.ndarray]:
    """Indices of ``items`` grouped by slice position along the normal (in that order), positions, orientation."""
    positions, iop, normal = slice_planes(items, what, display)
    along = positions @ normal
    groups: list[list[int]] = []
    for i in np.argsort(along, kind="stable"):
        if groups and along[i] - along[groups[-1][0]] < _SAME_MM:
            groups[-1].append(int(i))
        else:
            groups.append([int(i)])
    for group in groups:
        shift = float(np.max(np.linalg.norm(positions[group] - positions[group[0]], axis=1)))
        if shift > _SAME_MM:
            raise InconsistentSeriesError(f"{what} has images at one slice position that are shifted in-plane "
                                          f"by up to {shift:.3g} mm", path=display)
    return groups, positions, iop


def _phase_order(items: list, groups: list[list[int]]) -> tuple[str, list[list[int]]]:
    """The tag that orders the phases, and each position's images in phase order."""
    for tag in _PHASE_TAGS:
        values = [[_number(items[i][1], tag) for i in group] for group in groups]
        if all(None not in v and len(set(v)) == len(v) for v in values):
            return tag, [sorted(group, key=lambda i, t=tag: (_number(items[i][1], t), _instance(items[i])))
                         for group in groups]
    return "InstanceNumber", [sorted(group, key=lambda i: _instance(items[i])) for group in groups]


def _check_phases(items: list, groups: list[list[int]], tag: str, what: str, display: str) -> None:
    """Refuse positions with different phase counts, and echoes (not phases) told apart by nothing else."""
    counts = Counter(len(group) for group in groups)
    if len(counts) > 1:
        listing = ", ".join(f"{n} phase{'s' * (n != 1)} at {c} position{'s' * (c != 1)}"
                            for n, c in counts.most_common())
        raise InconsistentSeriesError(f"{what} has different numbers of phases per slice position ({listing})",
                                      path=display, hint="upload the complete cine series: every slice position "
                                      "needs the same phases", phases_per_position=[len(g) for g in groups])
    if tag != "InstanceNumber" or len(groups[0]) < 2:
        return
    for group in groups:
        echoes = {_number(items[i][1], "EchoTime") for i in group} - {None}
        if len(echoes) > 1:
            raise NotACineError(f"{what} holds images at one slice position that differ in EchoTime and carry "
                                "no TriggerTime or TemporalPositionIdentifier: echoes, not cardiac phases",
                                path=display)


def _refuse_phases_without_geometry(items: list, what: str, display: str) -> None:
    """A series whose images carry several phases but no patient geometry cannot be split into frames."""
    for tag in _PHASE_TAGS:
        if len({_number(ds, tag) for _, ds in items} - {None}) > 1:
            raise InconsistentSeriesError(f"{what} holds several phases ({tag}) but no ImagePositionPatient/"
                                          "ImageOrientationPatient to tell its slice positions apart",
                                          path=display, hint="export the cine with its patient geometry, or as "
                                          "a 4-D NIfTI")


def _frame_geometry(items: list, groups: list[list[int]], positions: np.ndarray, iop: np.ndarray, what: str,
                    display: str) -> Geometry:
    """Every frame's geometry: the positions stacked as a series, or one slice (squeezed to 2-D on reading)."""
    firsts = np.asarray([positions[group[0]] for group in groups])
    spacing = pixel_spacing(items[groups[0][0]][1])
    if len(groups) > 1:
        return stack_geometry(firsts, list(iop), spacing, display, what)
    row, col = unit(iop[:3]), unit(iop[3:6])
    thickness = _number(items[groups[0][0]][1], "SliceThickness")
    depth = thickness if thickness is not None and thickness > 0 else 1.0
    return checked_geometry((spacing[1], spacing[0], depth), firsts[0], np.column_stack([row, col, np.cross(row, col)]),
                            display)


def _timing(items: list, groups: list[list[int]], tag: str) -> dict:
    """What ``metadata`` records about the phases: the trigger time of each (median over positions)."""
    info: dict = {}
    if tag == "TriggerTime":
        info["trigger_times_ms"] = [round(float(np.median([_number(items[g[t]][1], tag) for g in groups])), 3)
                                    for t in range(len(groups[0]))]
    declared = _number(items[0][1], "NumberOfTemporalPositions")
    if declared is not None:
        info["declared_phases"] = int(declared)
    return info


def cine_source(items: list, uid: str, display: str) -> Source | None:
    """A DICOM series (``items``: ``(path, dataset)``) grouped into frames; ``None`` if it has one phase.

    ``None`` leaves the series to :func:`~.dicom_series.series_source` (one file, or one image per
    position: a normal series). Raises :class:`InconsistentSeriesError` and :class:`NotACineError`.
    """
    what = f"series {uid}"
    check_uniform(items, what, display)
    if len(items) < 2:
        return None
    if not has_geometry(items):
        _refuse_phases_without_geometry(items, what, display)
        return None
    groups, positions, iop = _group_positions(items, what, display)
    tag, groups = _phase_order(items, groups)
    _check_phases(items, groups, tag, what, display)
    n_phases = len(groups[0])
    if n_phases == 1:
        return None
    geometry = _frame_geometry(items, groups, positions, iop, what, display)
    frames = [[items[group[t]][0] for group in groups] for t in range(n_phases)]
    info = {**dicom_info(items[0][1], len(items)), "ordered_by": "ImagePositionPatient",
            "phases_ordered_by": tag, "positions": len(groups), "phases": n_phases, **_timing(items, groups, tag)}
    return Source(DICOM, [f for frame in frames for f in frame], display, ITK_IO[DICOM], geometry, uid, info, frames)


def frame_source(src: Source, t: int) -> Source:
    """Frame ``t`` of a cine source as a source of its own: one slice, or a series of slices in order."""
    return Source(DICOM, list(src.frames[t]), src.display, src.io, src.geometry, src.series_uid, dict(src.info))


def cine_header(src: Source) -> ImageHeader:
    """The 4-D header of a cine source, ``(x, y, positions, phases)``, from its first file's header."""
    first = itk_header(frame_source(src, 0))
    geometry = src.geometry
    n_frames = len(src.frames)
    direction = np.eye(4)
    direction[:3, :3] = geometry.matrix
    return ImageHeader(src.display, DICOM, 4, (*first.size[:2], len(src.frames[0]), n_frames),
                       (*geometry.spacing, 1.0), (*geometry.origin, 0.0), floats(direction), first.pixel_type,
                       first.n_components, n_frames, src.series_uid, dict(src.info))


def _temporal_positions(ds) -> int:
    """How many time points a multi-frame object declares: temporal indices, or frames advanced by time."""
    indices = set()
    for item in ds.get("PerFrameFunctionalGroupsSequence") or []:
        for content in item.get("FrameContentSequence") or []:
            indices.add(content.get("TemporalPositionIndex"))
    declared = _number(ds, "NumberOfTemporalPositions")
    count = max(len(indices - {None}), int(declared) if declared is not None else 1)
    pointer = ds.get("FrameIncrementPointer")
    pointers = [] if pointer is None else [pointer] if isinstance(pointer, int) else list(pointer)
    if any(int(p) in _FRAME_TIME_TAGS for p in pointers):
        count = max(count, int(ds.get("NumberOfFrames", 1) or 1))
    return count


def refuse_multiframe_cine(ds, display: str) -> None:
    """Refuse a single multi-frame file with a temporal dimension: its phases are not read as frames."""
    if int(ds.get("NumberOfFrames", 1) or 1) < 2:
        return
    phases = _temporal_positions(ds)
    if phases > 1:
        raise UnsupportedFormatError(f"is a multi-frame DICOM with {phases} time points in one file: reading its "
                                     "phases as frames is not supported", path=display,
                                     hint="export the cine as classic DICOM (one file per slice and phase) or as "
                                     "a 4-D NIfTI")
