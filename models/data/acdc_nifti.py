"""ACDC cine-MRI in its official NIfTI layout, as 2D ED -> ES slice pairs.

Layout (the 2017 challenge release and the later humanheart-project release)::

    PATH/[database/][training/|testing/]patientNNN/Info.cfg
    PATH/.../patientNNN/patientNNN_frameXX.nii.gz       one 3D frame (x, y, z), z = short-axis slices
    PATH/.../patientNNN/patientNNN_frameXX_gt.nii.gz    its labels: 0 background, 1 RV, 2 myocardium, 3 LV
    PATH/.../patientNNN/patientNNN_4d.nii.gz            the whole cine (ignored)

``Info.cfg`` holds ``key: value`` lines (``ED: 1``, ``ES: 12``, ``Group: DCM``, ``Height``,
``Weight``, ``NbFrame``); ``ED`` and ``ES`` name the frame numbers ``XX``. The ED frame becomes the
**moving** (source) image, the ES frame the **fixed** (target) image. ``PATH`` may be the release root
(holding ``training/`` and/or ``testing/``, possibly under ``database/``), one of those folders, or any
folder of ``patientNNN`` folders. Uncompressed ``.nii`` files are accepted as well.

Pairs follow the paper's 2D protocol, as :mod:`models.data.acdc_h5` does: volumes are read with
:func:`models.io.readers.read_image` (array order ``(z, y, x)``), slice ``z`` (0-based) becomes pair
``patientNNN_slice_K`` with ``K = z + 1``, only slices whose ``label`` (default the myocardium) is
present in both frames are kept, and each pair is cropped to ``crop x crop`` around the ED centroid of
that label (zero-padded where the window leaves the image; ``crop=None`` keeps the native grid).
``spacing_mm`` is the in-plane spacing in array order, ``(spacing_y, spacing_x)``, so distances come
out in mm. Images are float32 as stored, masks uint8 label maps. Pairs come sorted by patient number,
then slice number.

Splits (``split="train" | "val" | "test" | "all"``), deterministic and documented here once:

* ``test``: the patients of the official test set, i.e. those under a ``testing/`` folder; in a folder
  without ``training/``/``testing/`` sub-folders, the patients numbered 101 or more (the official test
  set is patients 101-150);
* the other patients are sorted by number and the last ``max(1, floor(0.2 * n + 0.5))`` of them (none
  when ``n < 2``) are ``val``, the rest ``train``. For the full release this gives the paper's
  80 / 20 / 50 split: ``train`` = patients 001-080, ``val`` = 081-100, ``test`` = 101-150;
* ``all``: every patient found.

Errors name the offending path: ``FileNotFoundError`` when the folder holds no patients, or a patient
lacks ``Info.cfg``, a frame file or its ``_gt`` file; ``ValueError`` when ``Info.cfg`` has no
integer ``ED``/``ES``, a frame is not a 3D volume, or an image and its labels (or the ED and ES
frames) are not on the same grid; a file the reader refuses raises its
:class:`~models.io.errors.ImageError` (a ``ValueError`` naming the file). Every selected patient's
files are checked to exist before any is read.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.data.crop import crop_or_pad, mask_centroid
from models.data.pairs import MYOCARDIUM, PairSample
from models.io.image import Image
from models.io.readers import read_image

__all__ = ["SPLITS", "TEST_FIRST_PATIENT", "as_label_map", "load_acdc_nifti", "read_info_cfg", "val_count"]

#: The accepted values of ``split``.
SPLITS = ("train", "val", "test", "all")

#: In a folder without ``training/``/``testing/``, patients numbered this or above are ``test``.
TEST_FIRST_PATIENT = 101

VAL_FRACTION = 0.2
_GRID_TOL = 1e-3  # mm (and direction cosines): image and labels must agree to this

_PATIENT_RE = re.compile(r"patient(\d+)")
_FRAME_RE = re.compile(r"(patient\d+)_frame(\d+)(_gt)?\.nii(?:\.gz)?")


@dataclass
class _Patient:
    name: str
    number: int
    folder: Path
    test: bool  # in the official test set (see the split rules)


@dataclass
class _Files:
    """The four files of one patient's pair, checked to exist."""

    ed: int
    es: int
    ed_image: Path
    ed_label: Path
    es_image: Path
    es_label: Path


def load_acdc_nifti(
    path: str | Path, split: str = "all", crop: int | None = 128, label: int = MYOCARDIUM
) -> list[PairSample]:
    """Read the ED -> ES 2D slice pairs of an official-layout ACDC folder (see the module docstring).

    ``crop`` is the side of the square window cut around the ED centroid of ``label`` (``None`` keeps
    the native grid, so pairs may differ in shape); ``label`` must be present in both frames of a slice
    for it to be kept.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown ACDC split {split!r}; expected one of {', '.join(SPLITS)}")
    if crop is not None and (isinstance(crop, bool) or int(crop) != crop or crop <= 0):
        raise ValueError(f"crop must be a positive integer or None, got {crop!r}")

    root = Path(path)
    patients = _scan(root)
    if not patients:
        raise FileNotFoundError(
            f"no ACDC patients (patientNNN folders with Info.cfg and patientNNN_frameXX.nii.gz) found in {root}"
        )
    selected = _select(patients, split)
    files = [_files_of(patient) for patient in selected]  # every file checked before any is read

    pairs: list[PairSample] = []
    for patient, patient_files in zip(selected, files, strict=True):
        pairs.extend(_pairs_of(patient, patient_files, crop, label))
    return pairs


# ---------------------------------------------------------------------------------------------------
# finding the patients and their files


def _patient_folders(folder: Path) -> list[tuple[str, int, Path]]:
    found = []
    for entry in folder.iterdir():
        match = _PATIENT_RE.fullmatch(entry.name)
        if match and entry.is_dir():
            found.append((entry.name, int(match.group(1)), entry))
    return found


def _has_subsets(folder: Path) -> bool:
    return any((folder / sub).is_dir() for sub in ("training", "testing"))


def _scan(root: Path) -> list[_Patient]:
    """Every patient folder under ``root`` (see the layout), sorted by number."""
    if not root.exists():
        raise FileNotFoundError(f"ACDC folder {root} does not exist")
    if not root.is_dir():
        raise FileNotFoundError(f"ACDC path {root} is not a folder")
    base = root
    if not _has_subsets(root) and not _patient_folders(root) and (root / "database").is_dir():
        base = root / "database"  # the humanheart-project release wraps the folders in database/
    subsets = [(base / sub, sub == "testing") for sub in ("training", "testing") if (base / sub).is_dir()]
    patients: dict[str, _Patient] = {}
    if subsets:
        for folder, test in subsets:
            for name, number, patient_folder in _patient_folders(folder):
                if name in patients:
                    raise ValueError(f"patient {name} found twice: {patients[name].folder} and {patient_folder}")
                patients[name] = _Patient(name, number, patient_folder, test)
    else:
        for name, number, patient_folder in _patient_folders(base):
            patients[name] = _Patient(name, number, patient_folder, number >= TEST_FIRST_PATIENT)
    return sorted(patients.values(), key=lambda p: (p.number, p.name))


def val_count(n: int, fraction: float = VAL_FRACTION) -> int:
    """How many of ``n`` sorted patients go to ``val``: ``max(1, floor(fraction * n + 0.5))``, 0 if n < 2."""
    return max(1, math.floor(fraction * n + 0.5)) if n >= 2 else 0


def _select(patients: list[_Patient], split: str) -> list[_Patient]:
    if split == "all":
        return patients
    if split == "test":
        return [p for p in patients if p.test]
    development = [p for p in patients if not p.test]
    n_train = len(development) - val_count(len(development))
    return development[:n_train] if split == "train" else development[n_train:]


def read_info_cfg(path: Path) -> dict[str, str]:
    """The ``key: value`` lines of an ACDC/CAMUS ``Info.cfg`` file (keys and values stripped)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (it names the ED and ES frames)")
    info: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            info[key.strip()] = value.strip()
    return info


def _frame_number(info: dict[str, str], key: str, path: Path) -> int:
    if key not in info:
        raise ValueError(f"{path}: no '{key}:' line (the {key} frame number)")
    text = info[key]
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number != int(number) or number < 0:
        raise ValueError(f"{path}: {key} must be a frame number, got {text!r}")
    return int(number)


def _find_frame(patient: _Patient, frame: int, gt: bool) -> Path:
    """The NIfTI file of ``frame`` (its labels if ``gt``): any zero padding, ``.nii.gz`` or ``.nii``."""
    candidates = []
    for entry in patient.folder.iterdir():
        match = _FRAME_RE.fullmatch(entry.name)
        if match and match.group(1) == patient.name and int(match.group(2)) == frame and bool(match.group(3)) == gt:
            candidates.append(entry)
    if not candidates:
        suffix = "_gt" if gt else ""
        what = "label (gt) file" if gt else "image file"
        expected = patient.folder / f"{patient.name}_frame{frame:02d}{suffix}.nii.gz"
        raise FileNotFoundError(f"ACDC {what} of frame {frame} is missing: expected {expected}")
    return sorted(candidates)[0]  # .nii before .nii.gz: deterministic when both exist


def _files_of(patient: _Patient) -> _Files:
    info_path = patient.folder / "Info.cfg"
    info = read_info_cfg(info_path)
    ed, es = _frame_number(info, "ED", info_path), _frame_number(info, "ES", info_path)
    return _Files(
        ed,
        es,
        _find_frame(patient, ed, gt=False),
        _find_frame(patient, ed, gt=True),
        _find_frame(patient, es, gt=False),
        _find_frame(patient, es, gt=True),
    )


# ---------------------------------------------------------------------------------------------------
# reading and pairing


def as_label_map(array: np.ndarray, source: str) -> np.ndarray:
    """A label array as uint8, refusing non-integer or out-of-range values (named by ``source``)."""
    arr = np.asarray(array)
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
        raise ValueError(f"{source}: a label map must hold whole numbers, found fractional values")
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"{source}: a label map must be numeric, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise ValueError(f"{source}: labels must lie in 0..255, found {arr.min()}..{arr.max()}")
    return arr.astype(np.uint8)


def _read_volume(image_path: Path, label_path: Path) -> tuple[Image, np.ndarray]:
    image = read_image(image_path, kind="scalar")
    labels = read_image(label_path, kind="label")
    if image.ndim != 3:
        raise ValueError(f"{image_path}: expected a 3D volume (x, y, slices), got {image.ndim}D {image.size}")
    if not image.same_grid(labels, tol=_GRID_TOL):
        raise ValueError(
            f"{image_path} and {label_path} are not on the same grid: size {image.size} vs {labels.size}, "
            f"spacing {image.geometry.spacing} vs {labels.geometry.spacing}, "
            f"origin {image.geometry.origin} vs {labels.geometry.origin}"
        )
    return image, as_label_map(labels.array, str(label_path))


def _pairs_of(patient: _Patient, files: _Files, crop: int | None, label: int) -> list[PairSample]:
    ed_image, ed_label = _read_volume(files.ed_image, files.ed_label)
    es_image, es_label = _read_volume(files.es_image, files.es_label)
    if ed_image.array.shape != es_image.array.shape:
        raise ValueError(
            f"ED frame {files.ed_image} {ed_image.size} and ES frame {files.es_image} {es_image.size} "
            "differ in size"
        )
    spacing_x, spacing_y = ed_image.geometry.spacing[:2]
    spacing = (float(spacing_y), float(spacing_x))  # array order of a (y, x) slice
    ed_array = ed_image.array.astype(np.float32, copy=False)
    es_array = es_image.array.astype(np.float32, copy=False)

    pairs = []
    for z in range(ed_array.shape[0]):
        if not (np.any(ed_label[z] == label) and np.any(es_label[z] == label)):
            continue
        slices = [ed_array[z], ed_label[z], es_array[z], es_label[z]]
        if crop is not None:
            center = mask_centroid(ed_label[z], label)
            assert center is not None  # present (checked above)
            slices = [crop_or_pad(s, center, (int(crop), int(crop))) for s in slices]
        moving, moving_mask, fixed, fixed_mask = (np.ascontiguousarray(s) for s in slices)
        pairs.append(
            PairSample(
                moving=moving,
                fixed=fixed,
                pair_id=f"{patient.name}_slice_{z + 1}",
                subject_id=patient.name,
                moving_mask=moving_mask,
                fixed_mask=fixed_mask,
                spacing_mm=spacing,
            )
        )
    return pairs
