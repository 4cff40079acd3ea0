"""A warped mask as a DICOM Segmentation (SEG) that references the fixed series it lies on.

A hospital viewer or PACS places a SEG over the series it references; a NIfTI mask it cannot place.
The SEG is built by highdicom from the fixed image's own headers
(:func:`~models.io.readers.dicom_sources.dicom_source_datasets`), so it joins the patient's study.

Choices, and why:

- **Frames are matched to slices by geometry, not by list order.** Each source slice's
  ``ImagePositionPatient`` is taken into the mask's index space (DICOM's patient space is LPS, as ITK's
  is: no flip) and must land on a slice of the mask's grid, at its corner; that slice becomes the
  frame highdicom derives from (and references) that source. A mismatch is a :class:`DicomSegError`,
  never a SEG whose frames sit on the wrong slices.
- **BINARY, one segment per label value present**, numbered 1..N in label order (BINARY wants
  consecutive numbers; the label value itself goes into ``SegmentDescription``). The LABELMAP SOP
  class (2024) is not yet read by most viewers.
- **Generic property codes** (SCT "Tissue"): the labels mean what their names say, and the names go
  into ``SegmentLabel``, which is what viewers show.

Imports highdicom only when a SEG is made: the API process never makes one.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from models.io.atomic import atomic_write
from models.io.errors import DicomSegError
from models.io.image import Image

__all__ = ["SOFTWARE", "dicom_seg", "write_dicom_seg"]

SOFTWARE = "adacs-registration"
SERIES_NUMBER = 900  # high, so that viewers list the SEG after the scanner's own series
_TOLERANCE_VOX = 0.25  # slice positions may deviate this much (series are accepted with 5 % uneven gaps)
# Type 2 attributes highdicom copies from the source: present in a conformant file, maybe not in an anonymised one.
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "StudyDate",
          "StudyTime", "ReferringPhysicianName")


def _same(sources: Sequence, keyword: str, what: str) -> None:
    """Every source must carry ``keyword``, all with one value."""
    values = {str(ds.get(keyword, "") or "") for ds in sources}
    if "" in values:
        raise DicomSegError(f"the fixed series has slices without a {keyword}, so a SEG cannot reference {what}")
    if len(values) > 1:
        raise DicomSegError(f"the fixed series' slices belong to {len(values)} different {what} ({keyword})")


def _check_references(sources: Sequence) -> None:
    """What a SEG's references need: one study, series and frame of reference, distinct instances."""
    if not sources:
        raise DicomSegError("no DICOM source slices were given")
    _same(sources, "StudyInstanceUID", "studies")
    _same(sources, "SeriesInstanceUID", "series")
    _same(sources, "FrameOfReferenceUID", "frames of reference")
    uids = [str(ds.get("SOPInstanceUID", "") or "") for ds in sources]
    if "" in uids or len(set(uids)) != len(uids):
        raise DicomSegError("the fixed series' slices lack distinct SOPInstanceUIDs, so a SEG cannot reference them")


def _functional(ds, item, sequence: str, attribute: str):
    """``attribute`` of a multi-frame's per-frame ``item``, else of its shared functional groups."""
    shared = ds.get("SharedFunctionalGroupsSequence")
    for group in (item, shared[0] if shared else None):
        if group is not None and sequence in group and len(group[sequence].value):
            value = group[sequence][0].get(attribute)
            if value is not None:
                return value
    return None


def _frame_geometry(sources: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Each source frame's position ``(n_frames, 3)`` (LPS mm, in source order) and the orientation ``(6,)``."""
    first = sources[0]
    if len(sources) == 1 and int(first.get("NumberOfFrames", 1) or 1) > 1:
        per = first.get("PerFrameFunctionalGroupsSequence") or []
        positions = [_functional(first, item, "PlanePositionSequence", "ImagePositionPatient") for item in per]
        iop = _functional(first, per[0] if per else None, "PlaneOrientationSequence", "ImageOrientationPatient")
    else:
        positions = [ds.get("ImagePositionPatient") for ds in sources]
        iop = first.get("ImageOrientationPatient")
    if not positions or iop is None or any(p is None for p in positions):
        raise DicomSegError("the fixed image has no patient geometry (ImagePositionPatient/ImageOrientationPatient) "
                            "to place a SEG's frames")
    return (np.asarray([[float(v) for v in p] for p in positions], dtype=np.float64),
            np.asarray([float(v) for v in iop], dtype=np.float64))


def _frame_slices(mask: Image, positions: np.ndarray, iop: np.ndarray) -> np.ndarray:
    """The mask slice (index along NumPy axis 0) each source frame lies on, in source order."""
    if mask.ndim == 2:  # one slice read from one single-frame file
        if len(positions) != 1:
            raise DicomSegError(f"a 2-D mask cannot hold the {len(positions)} frames of the fixed image")
        return np.zeros(1, dtype=np.int64)
    g = mask.geometry
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731 - DICOM cosines are often not quite unit
    if not (np.allclose(g.matrix[:, 0], unit(iop[:3]), atol=1e-3) and np.allclose(g.matrix[:, 1], unit(iop[3:]),
                                                                                    atol=1e-3)):
        raise DicomSegError("the mask's in-plane axes are not the fixed series' row and column directions")
    # ITK index (x, y, z) of each position: point = origin + direction @ (spacing * index).
    index = np.linalg.solve(g.matrix * np.asarray(g.spacing), (positions - np.asarray(g.origin)).T).T
    k = np.rint(index[:, 2]).astype(np.int64)
    off = np.max(np.abs(np.column_stack([index[:, :2], index[:, 2] - k])))
    depth = mask.array.shape[0]
    if off > _TOLERANCE_VOX or k.min() < 0 or k.max() >= depth or len(set(k.tolist())) != len(k):
        raise DicomSegError(f"the fixed series' {len(k)} slices do not lie one each on the mask's {depth} slices")
    return k


def _descriptions(values: np.ndarray, label_names: Mapping[str, str], model: str) -> list:
    """One segment description per label value, numbered 1..N, named from ``label_names``."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(name=SOFTWARE, family=codes.cid7162.ArtificialIntelligence,
                                                   version=model[-64:] or "unknown", parameters={"model": model})
    descriptions = []
    for number, value in enumerate(values.tolist(), 1):
        name = str(label_names.get(str(value)) or f"label {value}")[:64]  # SegmentLabel is an LO: 64 characters
        item = hd.seg.SegmentDescription(number, name, codes.SCT.Tissue, codes.SCT.Tissue,
                                         hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm)
        item.SegmentDescription = f"label value {value} of the warped mask"
        descriptions.append(item)
    return descriptions


def _with_type2(sources: Sequence) -> list:
    """The sources, copied where a type 2 attribute highdicom reads is missing, with it added empty."""
    completed = []
    for ds in sources:
        missing = [keyword for keyword in _TYPE2 if keyword not in ds]
        if missing:
            ds = copy.deepcopy(ds)  # a header without pixels: small, and the caller's stays as it was
            for keyword in missing:
                setattr(ds, keyword, "")
        completed.append(ds)
    return completed


def _software_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(SOFTWARE)
    except PackageNotFoundError:
        return "unknown"


def dicom_seg(mask: Image, sources: Sequence, *, label_names: Mapping[str, str] | None = None,
              model: str = "unknown"):
    """A highdicom ``Segmentation`` of ``mask`` (labels on the fixed grid, ``(z, y, x)`` or ``(y, x)``).

    ``sources`` are the fixed image's datasets (pixel data not needed): one per slice of a series, or
    one multi-frame dataset. ``label_names`` (``{"1": "right ventricle"}``) name the segments, else
    ``label k``; ``model`` (a registry reference such as ``cardiac:3``) is the algorithm's version.
    Frames without any label are left out. Raises :class:`DicomSegError`.
    """
    import highdicom as hd

    _check_references(sources)
    positions, iop = _frame_geometry(sources)
    rows, columns = int(sources[0].get("Rows", 0) or 0), int(sources[0].get("Columns", 0) or 0)
    if mask.array.shape[-2:] != (rows, columns):
        raise DicomSegError(f"the mask's slices are {mask.array.shape[-2:]} voxels, the fixed series' "
                            f"{(rows, columns)}")
    stack = mask.array.reshape(-1, rows, columns)  # a 2-D mask is one slice
    frames = stack[_frame_slices(mask, positions, iop)]  # (n_frames, rows, columns), frame i on source i
    values = np.unique(frames[frames != 0])
    if values.size == 0:
        raise DicomSegError("the warped mask holds no label on the fixed image's slices: a SEG needs one segment")
    numbers = np.where(frames != 0, np.searchsorted(values, frames) + 1, 0)
    pixels = numbers.astype(np.uint8 if values.size < 256 else np.uint16)
    try:
        return hd.seg.Segmentation(
            _with_type2(sources), pixels, hd.seg.SegmentationTypeValues.BINARY,
            _descriptions(values, label_names or {}, model), hd.UID(), SERIES_NUMBER, hd.UID(), 1,
            manufacturer=SOFTWARE, manufacturer_model_name=SOFTWARE, software_versions=_software_version(),
            device_serial_number="none", content_label="WARPED_MASK",
            content_description="moving mask warped onto this series", series_description=f"warped mask ({SOFTWARE})")
    except (ValueError, TypeError, AttributeError, KeyError) as error:  # highdicom's refusals of odd sources
        raise DicomSegError(f"highdicom cannot build a SEG on the fixed series ({type(error).__name__})") from error


def write_dicom_seg(mask: Image, sources: Sequence, path: str | Path, *,
                    label_names: Mapping[str, str] | None = None, model: str = "unknown") -> Path:
    """Write :func:`dicom_seg` to ``path`` (a DICOM file, owner-only like every stored output); returns it."""
    seg = dicom_seg(mask, sources, label_names=label_names, model=model)
    path = Path(path)
    with atomic_write(path, "wb") as handle:
        seg.save_as(handle, enforce_file_format=True)
    return path
