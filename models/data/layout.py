"""Which dataset layout an unpacked folder holds, and the data SPEC that loads it.

Users upload a zip of whatever their data looks like; this finds the layout the readers know in it:

* ``manifest``: a ``.csv`` whose header names ``fixed`` and ``moving`` (the shallowest one wins);
* ``acdc``: ``patientNNN`` folders holding ``Info.cfg`` (the official NIfTI release);
* ``camus``: ``patientNNNN`` folders holding ``patientNNNN_{2CH,4CH}_{ED,ES}`` images.

A manifest is looked for first, because it is the user's explicit statement of the pairs (a zip may
hold ACDC folders *and* a manifest that picks some of them). The SPEC path of a folder layout is
the folder *above* the patient folders (above ``training/``, ``testing/`` or ``database_nifti/``
when those hold them), which is what the readers expect. No image is read here.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LAYOUTS", "DetectedLayout", "detect_layout", "dataset_spec"]

LAYOUTS = ("acdc", "camus", "manifest")
_ACDC_PATIENT = re.compile(r"^patient\d{3}$")
_CAMUS_PATIENT = re.compile(r"^patient\d{4}$")
_CAMUS_IMAGE = re.compile(r"^patient\d{4}_(2CH|4CH)_(ED|ES)\.(nii\.gz|nii|mhd|mha)$")
_CONTAINERS = {"training", "testing", "database_nifti"}
MAX_DEPTH = 6  # how deep into the zip's folders a layout is looked for


@dataclass(frozen=True)
class DetectedLayout:
    layout: str
    path: Path  # the folder (acdc, camus) or the CSV (manifest) a SPEC names

    def relative_to(self, root: Path) -> str:
        return self.path.relative_to(root).as_posix()


def _walk(root: Path) -> list[Path]:
    """Every path under ``root`` down to ``MAX_DEPTH``, shallowest first, sorted for determinism."""
    out, level = [], [root]
    for _ in range(MAX_DEPTH):
        level = sorted(child for folder in level if folder.is_dir() and not folder.is_symlink()
                       for child in folder.iterdir() if not child.name.startswith((".", "__MACOSX")))
        out.extend(level)
    return out


def _is_manifest(path: Path) -> bool:
    if path.suffix.lower() != ".csv" or not path.is_file():
        return False
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return {"fixed", "moving"} <= {cell.strip().lower() for cell in header}


def _patients_root(patient: Path) -> Path:
    parent = patient.parent
    return parent.parent if parent.name.lower() in _CONTAINERS else parent


def _find(paths: list[Path], layout: str) -> DetectedLayout | None:
    if layout == "manifest":
        found = next((p for p in paths if _is_manifest(p)), None)
        return DetectedLayout(layout, found) if found else None
    if layout == "acdc":
        found = next((p for p in paths if p.is_dir() and _ACDC_PATIENT.match(p.name) and (p / "Info.cfg").is_file()),
                     None)
    else:
        found = next((p for p in paths if p.is_dir() and _CAMUS_PATIENT.match(p.name)
                      and any(_CAMUS_IMAGE.match(f.name) for f in p.iterdir())), None)
    return DetectedLayout(layout, _patients_root(found)) if found else None


_WHAT = {"manifest": "a .csv whose header names 'fixed' and 'moving'",
         "acdc": "patientNNN folders with Info.cfg and patientNNN_frameXX[_gt].nii.gz (the ACDC release)",
         "camus": "patientNNNN folders with patientNNNN_{2CH,4CH}_{ED,ES}[_gt] images (a CAMUS release)"}


def detect_layout(root: str | Path, layout: str | None = None) -> DetectedLayout:
    """The layout in ``root`` (``layout`` to insist on one); ``ValueError`` naming what was looked for."""
    root = Path(root)
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"unknown dataset layout {layout!r}; known: {', '.join(LAYOUTS)}")
    paths = _walk(root)
    for candidate in ([layout] if layout else ["manifest", "acdc", "camus"]):
        found = _find(paths, candidate)
        if found is not None:
            return found
    wanted = [layout] if layout else list(LAYOUTS)
    raise ValueError("no dataset layout found in the archive: looked for " +
                     "; ".join(f"{name}: {_WHAT[name]}" for name in wanted))


def dataset_spec(layout: str, path: str | Path, size: int | None = None, split: str = "all") -> str:
    """The ``--data`` SPEC of a detected dataset; ``size`` is the crop (acdc, manifest) or grid (camus)."""
    if layout == "manifest":
        return f"manifest:{path}" + (f":crop={size}" if size else "")
    if layout == "acdc":
        return f"acdc:{path}:{split}:crop={size if size else 'none'}"
    if layout == "camus":
        return f"camus:{path}:{split}" + (f":size={size}" if size else "")
    raise ValueError(f"unknown dataset layout {layout!r}; known: {', '.join(LAYOUTS)}")
