"""The files of one registration, written the same way by the CLI and by the service's worker.

File names are a contract (README, "Conventions"): ``displacement.nii.gz`` (the field in mm, ITK's
convention, on the fixed grid), ``inverse_displacement.nii.gz`` (the same convention from the moving
grid to the fixed image), ``jacobian.nii.gz`` (det of the map's Jacobian on the fixed grid),
``warped.nii.gz`` and, when a moving mask was given,
``warped_mask.nii.gz``, and then, if the fixed image came as DICOM, ``warped_mask_seg.dcm`` (the warped
mask as a DICOM SEG referencing the fixed series, :mod:`models.io.dicom_seg`).
``models.register.register_files``, which both call, adds ``report.json``
beside them (and the service a ``preview.png``).
Imports no torch: the files come from SimpleITK images the registration already made (reading them
back, :func:`read_registration_outputs`, builds ``models.register``'s result and imports it then).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import SimpleITK as sitk

from models.io.dicom_seg import write_dicom_seg
from models.io.errors import DicomSegError
from models.io.image import LABEL, Image
from models.io.readers.dicom_sources import dicom_source_datasets
from models.io.readers.source import DICOM
from models.io.writers import displacement_voxels, write_image

if TYPE_CHECKING:  # only for the annotation: models.register imports torch
    from models.register import RegistrationResult

__all__ = ["DISPLACEMENT", "INVERSE_DISPLACEMENT", "JACOBIAN", "WARPED", "WARPED_MASK", "WARPED_MASK_SEG", "REPORT",
           "DISPLACEMENT_UNITS", "write_registration_outputs", "read_registration_outputs", "write_warped_mask_seg"]

DISPLACEMENT, WARPED, WARPED_MASK, REPORT = "displacement.nii.gz", "warped.nii.gz", "warped_mask.nii.gz", "report.json"
INVERSE_DISPLACEMENT, JACOBIAN = "inverse_displacement.nii.gz", "jacobian.nii.gz"
WARPED_MASK_SEG = "warped_mask_seg.dcm"
DISPLACEMENT_UNITS = "mm, ITK LPS physical space, fixed point p -> p + u(p)"
"""What report.json says of the displacement file's values (README, "Conventions")."""


def write_registration_outputs(out_dir: str | Path, result: RegistrationResult) -> dict[str, Path]:
    """Write the field, the warped image and the warped mask into ``out_dir`` (created).

    Returns ``{"displacement": path, "inverse_displacement": path, "jacobian": path, "warped": path
    [, "warped_mask": path]}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = {"displacement": (result.field_mm, DISPLACEMENT),
              "inverse_displacement": (result.inverse_mm, INVERSE_DISPLACEMENT),
              "jacobian": (result.jacobian, JACOBIAN), "warped": (result.warped.to_sitk(), WARPED)}
    if result.warped_mask is not None:
        images["warped_mask"] = (result.warped_mask.to_sitk(), WARPED_MASK)
    paths = {role: out_dir / name for role, (_, name) in images.items()}
    # Compressing is most of the cost (a 64³ registration's files: about a third of its time after
    # the forward); ITK's writer releases the GIL, so the files are written side by side.
    with ThreadPoolExecutor(max_workers=len(images)) as pool:
        list(pool.map(write_image, (image for image, _ in images.values()), paths.values()))
    return paths


def read_registration_outputs(out_dir: str | Path, report: dict[str, Any]) -> RegistrationResult:
    """The registration that :func:`write_registration_outputs` wrote into ``out_dir``, read back.

    For what is made later from a finished registration (its preview, drawn when first asked for):
    the field in voxels comes back from the millimetre file to float32 precision.
    """
    from models.register import RegistrationResult  # models.register imports this module

    out_dir = Path(out_dir)
    read = lambda name: sitk.ReadImage(str(out_dir / name))  # noqa: E731
    field_mm = read(DISPLACEMENT)
    mask = out_dir / WARPED_MASK
    return RegistrationResult(
        disp_vox=displacement_voxels(field_mm), field_mm=field_mm, warped=Image.from_sitk(read(WARPED)),
        warped_mask=Image.from_sitk(read(WARPED_MASK), LABEL) if mask.exists() else None,
        jacobian=read(JACOBIAN), inverse_mm=read(INVERSE_DISPLACEMENT), report=dict(report))


def write_warped_mask_seg(out_dir: str | Path, result: RegistrationResult, fixed: Image, fixed_path: Path,
                          fixed_series: str | None, model: str) -> tuple[Path | None, dict[str, Any] | None]:
    """``warped_mask_seg.dcm`` when the fixed image came as DICOM and a moving mask was warped onto it.

    The fixed input is resolved again (``fixed_path``, ``fixed_series``: as it was read) for the headers
    the SEG references; segments are named as ``report.json`` names the labels. Returns the file (None
    when none was written) and what the report says of it: None when no SEG was due (no mask, or a
    fixed image that was not DICOM), else ``{"written": True}`` or ``{"written": False, "reason": ...}``
    when the series cannot carry one (no patient geometry, slices of several studies...): the
    registration's other outputs stand.
    """
    if result.warped_mask is None or fixed.metadata.get("format") != DICOM:
        return None, None
    names = {value: entry.get("name") for value, entry in result.report.get("labels", {}).items()}
    try:
        sources = dicom_source_datasets(fixed_path, fixed_series) or []
        path = write_dicom_seg(result.warped_mask, sources, Path(out_dir) / WARPED_MASK_SEG, label_names=names,
                               model=model)
    except DicomSegError as error:
        return None, {"written": False, "reason": error.problem}
    return path, {"written": True}
