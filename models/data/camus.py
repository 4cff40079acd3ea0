"""CAMUS 2D echocardiography, as ED -> ES pairs on a square isotropic model grid.

Both public releases are read::

    original (challenge):  PATH/[training/|testing/]patientNNNN/patientNNNN_{2CH,4CH}_{ED,ES}.mhd (+ .raw)
                           PATH/.../patientNNNN/patientNNNN_{2CH,4CH}_{ED,ES}_gt.mhd
    newer (humanheart):    PATH/database_nifti/patientNNNN/patientNNNN_{2CH,4CH}_{ED,ES}[_gt].nii.gz
                           PATH/database_split/subgroup_{training,validation,testing}.txt

and any folder of ``patientNNNN`` folders holding such files (``.nii.gz``, ``.nii``, ``.mhd`` or
``.mha``; the first found in that order is used). Everything else in the patient folders
(``Info_2CH.cfg``, ``Info_4CH.cfg``, ``*_sequence*`` files) is ignored: the ED and ES frames are
files of their own. Labels: 0 background, 1 LV endocardium (cavity), 2 myocardium, 3 left atrium.
The **ED** frame of a view becomes the **moving** (source) image, the **ES** frame the **fixed**
(target) image; one pair per patient and view, ``pair_id`` ``patientNNNN_2CH``, ``subject_id``
``patientNNNN``, sorted by patient number then view (``2CH`` before ``4CH``). ``view`` selects
``"2CH"``, ``"4CH"`` or ``"both"`` (default).

Model grid. The images are ~549 x 778 pixels of ~0.15-0.3 mm, often anisotropic. Both frames of a pair
are resampled, in physical space, onto one ``size x size`` grid (default 128) built from the ED image:
isotropic, with spacing ``s = max(extent) / size`` where ``extent`` is the physical width and height of
the ED image (pixel count x spacing, edges included); same direction cosines as the ED image; centred
on the ED image's centre. The long side of the image thus fills the grid exactly and the short side is
centred with zero padding on both sides: the aspect ratio is kept, nothing is stretched.
``spacing_mm`` is ``(s, s)``. Images are smoothed before downsampling (Gaussian, ``sigma = (s /
spacing - 1) / 2`` pixels along each axis where ``s`` is coarser than the pixels) and linearly
interpolated, as float32; label maps are resampled nearest-neighbour and stay uint8. An ES frame on a
different grid from its ED frame still lands where its anatomy is (physical-space resampling). Files
are read with :func:`models.io.readers.read_image`, so a 3D file with a single slice is the 2D image it
holds.

Masks: a view whose ED and ES ``_gt`` files are both absent (the original release withholds the test
set's) gives a pair with ``moving_mask`` and ``fixed_mask`` None; exactly one of them absent is an error.

Splits (``split="train" | "val" | "test" | "all"``), deterministic:

* with the official lists ``subgroup_training.txt``, ``subgroup_validation.txt``,
  ``subgroup_testing.txt`` present (in ``PATH/database_split/`` or ``PATH`` itself): ``train``,
  ``val`` and ``test`` are the patients they name; patients no list names are only in ``all``;
* otherwise ``test`` is the original challenge's test set: the patients under a ``testing/`` folder,
  or, in a folder without ``training/``/``testing/``, the patients numbered 451 or more; the other
  patients are sorted by number and the last ``max(1, floor(0.2 * n + 0.5))`` (none when ``n < 2``)
  are ``val``, the rest ``train`` (450 patients: 0001-0360 train, 0361-0450 val);
* ``all``: every patient found.

Errors name the offending path: ``FileNotFoundError`` for no patients, a missing ED/ES image of a
requested view (with ``view="both"`` every selected patient needs both views) or a missing partner
``_gt`` file; ``ValueError`` for an image that is not 2D or labels not on their image's grid; a file
the reader refuses raises its :class:`~models.io.errors.ImageError` (a ``ValueError`` naming the file).
Every selected patient's files are checked to exist before any is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from models.data.acdc_nifti import as_label_map, val_count
from models.data.pairs import PairSample
from models.io.image import LABEL, SCALAR, Geometry, Image
from models.io.readers import read_image
from models.resample import resample_to

__all__ = ["SPLITS", "TEST_FIRST_PATIENT", "VIEWS", "load_camus", "model_grid"]

#: The accepted values of ``split``.
SPLITS = ("train", "val", "test", "all")
#: The views of CAMUS; ``view="both"`` takes them in this order.
VIEWS = ("2CH", "4CH")
#: Without split lists or ``training/``/``testing/`` folders, patients numbered this or above are ``test``.
TEST_FIRST_PATIENT = 451

_EXTENSIONS = (".nii.gz", ".nii", ".mhd", ".mha")
_LIST_FILES = {"train": "subgroup_training.txt", "val": "subgroup_validation.txt", "test": "subgroup_testing.txt"}
_GRID_TOL = 1e-3


@dataclass
class _Patient:
    name: str
    number: int
    folder: Path
    in_testing: bool  # under a testing/ folder


@dataclass
class _ViewFiles:
    view: str
    ed: Path
    es: Path
    ed_gt: Path | None
    es_gt: Path | None


def load_camus(path: str | Path, split: str = "all", view: str = "both", size: int = 128) -> list[PairSample]:
    """Read the ED -> ES pairs of a CAMUS folder on a ``size x size`` grid (see the module docstring)."""
    if split not in SPLITS:
        raise ValueError(f"unknown CAMUS split {split!r}; expected one of {', '.join(SPLITS)}")
    views = _views(view)
    if isinstance(size, bool) or int(size) != size or size <= 1:
        raise ValueError(f"size must be an integer of at least 2, got {size!r}")

    root = Path(path)
    patients, layout_split = _scan(root)
    if not patients:
        raise FileNotFoundError(
            f"no CAMUS patients (patientNNNN folders with patientNNNN_2CH_ED / _4CH_ED images) found in {root}"
        )
    selected = _select(patients, split, root, layout_split)
    files = [[_files_of(patient, v) for v in views] for patient in selected]  # check before reading

    pairs = []
    for patient, patient_files in zip(selected, files, strict=True):
        for view_files in patient_files:
            pairs.append(_make_pair(patient, view_files, int(size)))
    return pairs


def _views(view: str) -> tuple[str, ...]:
    text = str(view).strip().upper()
    if text == "BOTH":
        return VIEWS
    if text in VIEWS:
        return (text,)
    raise ValueError(f"unknown CAMUS view {view!r}; expected 2CH, 4CH or both")


# ---------------------------------------------------------------------------------------------------
# finding the patients and their files


def _patient_number(name: str) -> int | None:
    digits = name[len("patient"):]
    return int(digits) if name.startswith("patient") and digits.isdigit() else None


def _scan(root: Path) -> tuple[list[_Patient], bool]:
    """The patient folders under ``root`` (sorted by number), and whether training/testing folders exist."""
    if not root.exists():
        raise FileNotFoundError(f"CAMUS folder {root} does not exist")
    if not root.is_dir():
        raise FileNotFoundError(f"CAMUS path {root} is not a folder")
    subsets = [(root / sub, sub == "testing") for sub in ("training", "testing") if (root / sub).is_dir()]
    folders = [(root, False), (root / "database_nifti", False), *subsets]
    patients: dict[str, _Patient] = {}
    for folder, in_testing in folders:
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            number = _patient_number(entry.name)
            if number is None or not entry.is_dir():
                continue
            if entry.name in patients:
                raise ValueError(f"patient {entry.name} found twice: {patients[entry.name].folder} and {entry}")
            patients[entry.name] = _Patient(entry.name, number, entry, in_testing)
    return sorted(patients.values(), key=lambda p: (p.number, p.name)), bool(subsets)


def _read_list(path: Path) -> set[str]:
    names = set()
    for line in path.read_text(errors="replace").splitlines():
        word = line.strip().split()[0] if line.strip() else ""
        if _patient_number(word) is not None:
            names.add(word)
    return names


def _split_lists(root: Path) -> dict[str, set[str]] | None:
    for folder in (root / "database_split", root):
        paths = {split: folder / name for split, name in _LIST_FILES.items()}
        if any(p.is_file() for p in paths.values()):
            lists = {split: _read_list(p) if p.is_file() else set() for split, p in paths.items()}
            for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
                both = sorted(lists[a] & lists[b])
                if both:
                    raise ValueError(f"patients {', '.join(both[:5])} are in both {paths[a]} and {paths[b]}")
            return lists
    return None


def _select(patients: list[_Patient], split: str, root: Path, layout_split: bool) -> list[_Patient]:
    if split == "all":
        return patients
    lists = _split_lists(root)
    if lists is not None:
        return [p for p in patients if p.name in lists[split]]
    if layout_split:
        test = [p.in_testing for p in patients]
    else:
        test = [p.number >= TEST_FIRST_PATIENT for p in patients]
    if split == "test":
        return [p for p, t in zip(patients, test, strict=True) if t]
    development = [p for p, t in zip(patients, test, strict=True) if not t]
    n_train = len(development) - val_count(len(development))
    return development[:n_train] if split == "train" else development[n_train:]


def _find(folder: Path, stem: str) -> Path | None:
    for extension in _EXTENSIONS:
        candidate = folder / f"{stem}{extension}"
        if candidate.is_file():
            return candidate
    return None


def _files_of(patient: _Patient, view: str) -> _ViewFiles:
    found: dict[str, Path | None] = {}
    for frame in ("ED", "ES"):
        stem = f"{patient.name}_{view}_{frame}"
        image = _find(patient.folder, stem)
        if image is None:
            raise FileNotFoundError(
                f"CAMUS {view} {frame} image of {patient.name} is missing: expected "
                f"{patient.folder / stem}{{{','.join(_EXTENSIONS)}}}"
            )
        found[frame] = image
        found[frame + "_gt"] = _find(patient.folder, stem + "_gt")
    ed_gt, es_gt = found["ED_gt"], found["ES_gt"]
    if (ed_gt is None) != (es_gt is None):
        have, lack = ("ED", "ES") if es_gt is None else ("ES", "ED")
        raise FileNotFoundError(
            f"CAMUS {view} {have} labels of {patient.name} have no {lack} partner: expected "
            f"{patient.folder / f'{patient.name}_{view}_{lack}_gt'}{{{','.join(_EXTENSIONS)}}}"
        )
    return _ViewFiles(view, found["ED"], found["ES"], ed_gt, es_gt)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------
# the model grid


def model_grid(image: Image, size: int = 128) -> Geometry:
    """The isotropic ``size x size`` grid covering ``image`` (see the module docstring)."""
    geometry = image.geometry
    extent = np.asarray(image.size, dtype=np.float64) * np.asarray(geometry.spacing)
    spacing = float(extent.max()) / size
    centre = geometry.index_to_physical((np.asarray(image.size, dtype=np.float64) - 1) / 2)
    origin = centre - geometry.matrix @ np.full(image.ndim, spacing * (size - 1) / 2)
    return Geometry((spacing,) * image.ndim, tuple(float(v) for v in origin), geometry.direction)


def _resample(image: Image, reference: Image) -> Image:
    """``image`` on ``reference``'s grid; scalar images low-pass filtered first when downsampled."""
    if image.kind == SCALAR:
        target = reference.geometry.spacing[0]
        sigmas = [max(0.0, (target / s - 1) / 2) for s in reversed(image.geometry.spacing)]  # array order
        array = image.array.astype(np.float32, copy=False)
        if any(sigma > 0 for sigma in sigmas):
            array = gaussian_filter(array, sigmas, mode="nearest")
        image = image.with_array(np.ascontiguousarray(array, dtype=np.float32))
    return resample_to(image, reference)


def _read_frame(path: Path, kind: str) -> Image:
    image = read_image(path, kind=kind)
    if image.ndim != 2:
        raise ValueError(f"{path}: expected a 2D CAMUS image, got {image.ndim}D of size {image.size}")
    if kind == LABEL:
        image = image.with_array(as_label_map(image.array, str(path)))
    return image


def _make_pair(patient: _Patient, files: _ViewFiles, size: int) -> PairSample:
    ed = _read_frame(files.ed, SCALAR)
    es = _read_frame(files.es, SCALAR)
    grid = model_grid(ed, size)
    reference = Image(np.zeros((size, size), np.float32), grid, SCALAR, f"{patient.name} {files.view} model grid")
    masks: list[np.ndarray | None] = [None, None]
    if files.ed_gt is not None and files.es_gt is not None:
        for k, (frame, gt_path) in enumerate(((ed, files.ed_gt), (es, files.es_gt))):
            labels = _read_frame(gt_path, LABEL)
            if not frame.same_grid(labels, tol=_GRID_TOL):
                raise ValueError(
                    f"{gt_path} is not on the grid of {frame.source}: size {labels.size} vs {frame.size}, "
                    f"spacing {labels.geometry.spacing} vs {frame.geometry.spacing}"
                )
            masks[k] = np.ascontiguousarray(_resample(labels, reference).array)
    return PairSample(
        moving=np.ascontiguousarray(_resample(ed, reference).array, dtype=np.float32),
        fixed=np.ascontiguousarray(_resample(es, reference).array, dtype=np.float32),
        pair_id=f"{patient.name}_{files.view}",
        subject_id=patient.name,
        moving_mask=masks[0],
        fixed_mask=masks[1],
        spacing_mm=(grid.spacing[0], grid.spacing[0]),
    )
