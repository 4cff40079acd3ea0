"""The files of one registration, written the same way by the CLI and by the service's worker.

File names are a contract (README, "Conventions"): ``displacement.nii.gz`` (the field in mm, ITK's
convention, on the fixed grid), ``inverse_displacement.nii.gz`` (the same convention from the moving
grid to the fixed image), ``jacobian.nii.gz`` (det of the map's Jacobian on the fixed grid),
``warped.nii.gz`` and, when a moving mask was given,
``warped_mask.nii.gz``. ``models.register.register_files``, which both call, adds ``report.json``
beside them (and the service a ``preview.png``).
Imports no torch: the files come from SimpleITK images the registration already made.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from models.io.writers import write_image

if TYPE_CHECKING:  # only for the annotation: models.register imports torch
    from models.register import RegistrationResult

__all__ = ["DISPLACEMENT", "INVERSE_DISPLACEMENT", "JACOBIAN", "WARPED", "WARPED_MASK", "REPORT", "DISPLACEMENT_UNITS",
           "write_registration_outputs"]

DISPLACEMENT, WARPED, WARPED_MASK, REPORT = "displacement.nii.gz", "warped.nii.gz", "warped_mask.nii.gz", "report.json"
INVERSE_DISPLACEMENT, JACOBIAN = "inverse_displacement.nii.gz", "jacobian.nii.gz"
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
    paths = {}
    for role, (image, name) in images.items():
        paths[role] = out_dir / name
        write_image(image, paths[role])
    return paths
