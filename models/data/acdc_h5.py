"""ACDC cine-MRI in the SSL4MIS / SS-Net HDF5 layout, as 2D ED -> ES slice pairs.

Layout (``PATH`` is the folder given, or the folder holding ``data/``)::

    PATH/data/patientNNN_frame01.h5            whole volume, ED; datasets image (Z,H,W), label (Z,H,W)
    PATH/data/patientNNN_frame02.h5            whole volume, ES
    PATH/data/patientNNN_frame01_slice_K.h5    one 2D slice (H,W) of the ED volume, K = 1..Z
    PATH/data/patientNNN_frame02_slice_K.h5    the same slice of the ES volume
    PATH/train.list, PATH/val.list             optional split lists (lines like ``patient099_frame01``)

``image`` is float32 (min-max normalised per volume by the preprocessing), ``label`` a uint8 map with
0 background, 1 RV, 2 myocardium, 3 LV cavity. ``frame01`` is end-diastole (ED) and becomes the
**moving** (source) image, ``frame02`` is end-systole (ES) and becomes the **fixed** (target) image.
Slice files under ``data/slices/`` (the original SSL4MIS tree) are found as well. No voxel spacing is
stored, so ``spacing_mm`` is None.

Pairs follow the paper's 2D protocol: every volume is split into its Z slices; slice K (1-based, as in
the slice files) becomes pair ``patientNNN_slice_K``; only slices whose myocardium is present in both
frames are kept; each pair is cropped to ``crop x crop`` around the ED myocardium centroid (zero-padded
where the window leaves the image). Pairs come sorted by patient number, then slice number.

Splits (``split="train" | "val" | "all"``):

* with ``train.list`` and/or ``val.list`` present (next to ``data/``, or in the folder given), a
  patient belongs to the split whose list names it; patients that no list names are only in ``all``;
* without lists, if the folder holds both storage kinds, patients stored only as slice files are
  ``train`` and patients stored as volume files are ``val`` (the SS-Net convention);
* without lists and with one storage kind only, patients are sorted by number and the last
  ``max(1, floor(0.2 * n + 0.5))`` of them are ``val`` (none when there is a single patient), the rest
  ``train``.

A patient stored both ways (volume files and slice files) is read from its volume files.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from models.data.crop import crop_or_pad, mask_centroid
from models.data.pairs import MYOCARDIUM, PairSample

__all__ = ["SPLITS", "load_acdc_h5"]

#: The accepted values of ``split``.
SPLITS = ("train", "val", "all")

ED_FRAME = 1  # frame01: end-diastole, the moving image
ES_FRAME = 2  # frame02: end-systole, the fixed image
VAL_FRACTION = 0.2  # share of patients put in ``val`` when neither lists nor storage kinds decide

_FILE_RE = re.compile(r"(patient(\d+))_frame(\d+)(?:_slice_(\d+))?\.h5")
_LIST_RE = re.compile(r"\s*(patient\d+)")

_Frame = tuple[np.ndarray, np.ndarray]  # (image, label) of one frame


@dataclass
class _Patient:
    """The HDF5 files found for one patient: volume files by frame, slice files by frame then K."""

    name: str
    number: int
    volumes: dict[int, Path] = field(default_factory=dict)
    slices: dict[int, dict[int, Path]] = field(default_factory=dict)

    @property
    def stored_as_volume(self) -> bool:
        return bool(self.volumes)


def load_acdc_h5(
    path: str | Path, split: str = "all", crop: int | None = 128, label: int = MYOCARDIUM
) -> list[PairSample]:
    """Read the ED -> ES 2D slice pairs of an SSL4MIS-style ACDC folder (see the module docstring).

    ``path`` is the folder that holds ``data/`` (and the list files) or the ``data/`` folder itself.
    ``crop`` is the side of the square window cut around the ED centroid of ``label``; ``None`` keeps
    the native grid (pairs then differ in shape). ``label`` (default the myocardium) must be present in
    both frames of a slice for it to be kept. Images are float32, masks the full uint8 label maps.

    Raises ``ValueError`` for an unknown split or a malformed file, ``FileNotFoundError`` when the
    folder or its ACDC files are missing or an ED file has no matching ES file (or vice versa).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown ACDC split {split!r}; expected one of {', '.join(SPLITS)}")
    if crop is not None and (isinstance(crop, bool) or int(crop) != crop or crop <= 0):
        raise ValueError(f"crop must be a positive integer or None, got {crop!r}")

    data_dir, list_dirs = _resolve_folders(Path(path))
    patients = _scan(data_dir)
    if not patients:
        raise FileNotFoundError(f"no ACDC HDF5 files (patientNNN_frame01[_slice_K].h5) found in {data_dir}")
    selected = sorted(_select(patients, split, list_dirs), key=lambda p: p.number)
    for patient in selected:  # check every file has its partner before reading any of them
        _check_partners(patient)

    pairs: list[PairSample] = []
    for patient in selected:
        for k, ed, es in _slices_of(patient):
            pair = _make_pair(patient.name, k, ed, es, crop, label)
            if pair is not None:
                pairs.append(pair)
    return pairs


# ---------------------------------------------------------------------------------------------------
# finding the files


def _resolve_folders(path: Path) -> tuple[Path, list[Path]]:
    """The folder holding the HDF5 files, and the folders where list files are looked for (in order)."""
    if not path.exists():
        raise FileNotFoundError(f"ACDC folder {path} does not exist")
    if not path.is_dir():
        raise FileNotFoundError(f"ACDC path {path} is not a folder")
    if (path / "data").is_dir():
        return path / "data", [path]
    # Given the data folder itself: the lists live next to it (or, in a flat folder, inside it).
    list_dirs = [path, path.parent] if path.name == "data" else [path]
    return path, list_dirs


def _scan(data_dir: Path) -> list[_Patient]:
    """Every patient with files in ``data_dir`` (and ``data_dir/slices``), by the file names."""
    patients: dict[str, _Patient] = {}
    folders = [data_dir] + ([data_dir / "slices"] if (data_dir / "slices").is_dir() else [])
    for folder in folders:
        with os.scandir(folder) as entries:
            for entry in entries:
                match = _FILE_RE.fullmatch(entry.name)
                if match is None or not entry.is_file():
                    continue
                name, number, frame, slice_k = match.group(1, 2, 3, 4)
                number, frame = int(number), int(frame)
                file_path = Path(entry.path)
                if frame not in (ED_FRAME, ES_FRAME):
                    raise ValueError(
                        f"{file_path}: unexpected frame {frame}; this layout names ED frame01 and ES frame02"
                    )
                patient = patients.setdefault(name, _Patient(name, number))
                if slice_k is None:
                    patient.volumes[frame] = file_path
                else:
                    patient.slices.setdefault(frame, {})[int(slice_k)] = file_path
    return list(patients.values())


def _read_list(path: Path) -> set[str]:
    names: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _LIST_RE.match(line)
        if match:
            names.add(match.group(1))
    return names


def _select(patients: list[_Patient], split: str, list_dirs: list[Path]) -> list[_Patient]:
    """The patients of ``split`` (see the module docstring for the rules)."""
    if split == "all":
        return patients

    for folder in list_dirs:
        train_list, val_list = folder / "train.list", folder / "val.list"
        if train_list.is_file() or val_list.is_file():
            train = _read_list(train_list) if train_list.is_file() else set()
            val = _read_list(val_list) if val_list.is_file() else set()
            both = sorted(train & val)
            if both:
                raise ValueError(f"patients {', '.join(both)} are in both {train_list} and {val_list}")
            wanted = train if split == "train" else val
            return [p for p in patients if p.name in wanted]

    by_volume = [p.stored_as_volume for p in patients]
    if any(by_volume) and not all(by_volume):
        # SS-Net convention: slice-stored patients train, volume-stored patients validate.
        return [p for p in patients if p.stored_as_volume == (split == "val")]

    ordered = sorted(patients, key=lambda p: p.number)
    n = len(ordered)
    n_val = max(1, math.floor(VAL_FRACTION * n + 0.5)) if n >= 2 else 0
    return ordered[n - n_val :] if split == "val" else ordered[: n - n_val]


def _missing_partner(existing: Path, frame: int) -> FileNotFoundError:
    partner_frame = ES_FRAME if frame == ED_FRAME else ED_FRAME
    kind, other = ("ED", "ES") if frame == ED_FRAME else ("ES", "ED")
    expected = existing.with_name(re.sub(r"_frame\d+", f"_frame{partner_frame:02d}", existing.name, count=1))
    return FileNotFoundError(f"{kind} file {existing} has no matching {other} file (expected {expected})")


def _check_partners(patient: _Patient) -> None:
    """Raise ``FileNotFoundError`` if an ED file of the patient lacks its ES file, or the other way."""
    if patient.stored_as_volume:
        for frame, other in ((ED_FRAME, ES_FRAME), (ES_FRAME, ED_FRAME)):
            if frame in patient.volumes and other not in patient.volumes:
                raise _missing_partner(patient.volumes[frame], frame)
        return
    for frame, other in ((ED_FRAME, ES_FRAME), (ES_FRAME, ED_FRAME)):
        partners = patient.slices.get(other, {})
        for k, file_path in sorted(patient.slices.get(frame, {}).items()):
            if k not in partners:
                raise _missing_partner(file_path, frame)


def _slices_of(patient: _Patient) -> Iterator[tuple[int, _Frame, _Frame]]:
    """Yield ``(K, (ed_image, ed_label), (es_image, es_label))`` for every slice of a patient, K 1-based."""
    if patient.stored_as_volume:
        ed_path, es_path = patient.volumes[ED_FRAME], patient.volumes[ES_FRAME]
        ed_image, ed_label = _read(ed_path, ndim=3)
        es_image, es_label = _read(es_path, ndim=3)
        if ed_image.shape != es_image.shape:
            raise ValueError(f"{ed_path} {ed_image.shape} and {es_path} {es_image.shape} differ in shape")
        for z in range(ed_image.shape[0]):
            yield z + 1, (ed_image[z], ed_label[z]), (es_image[z], es_label[z])
        return

    ed_slices, es_slices = patient.slices[ED_FRAME], patient.slices[ES_FRAME]
    for k in sorted(ed_slices):
        ed = _read(ed_slices[k], ndim=2)
        es = _read(es_slices[k], ndim=2)
        if ed[0].shape != es[0].shape:
            raise ValueError(f"{ed_slices[k]} {ed[0].shape} and {es_slices[k]} {es[0].shape} differ in shape")
        yield k, ed, es


def _read(path: Path, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """``(image float32, label uint8)`` of one HDF5 file, checked for presence, shape and rank."""
    with h5py.File(path, "r") as handle:
        missing = [key for key in ("image", "label") if key not in handle]
        if missing:
            raise ValueError(f"{path} lacks dataset(s) {', '.join(missing)} (needs 'image' and 'label')")
        image = np.asarray(handle["image"][()], dtype=np.float32)
        label = np.asarray(handle["label"][()])
    if image.shape != label.shape:
        raise ValueError(f"{path}: image {image.shape} and label {label.shape} differ in shape")
    if image.ndim != ndim:
        kind = "volume" if ndim == 3 else "slice"
        raise ValueError(f"{path}: a {kind} file should hold {ndim}D arrays, found shape {image.shape}")
    return image, label.astype(np.uint8, copy=False)


# ---------------------------------------------------------------------------------------------------
# making a pair


def _make_pair(
    subject: str,
    k: int,
    ed: _Frame,
    es: _Frame,
    crop: int | None,
    label: int,
) -> PairSample | None:
    (ed_image, ed_label), (es_image, es_label) = ed, es
    if not (np.any(es_label == label) and np.any(ed_label == label)):
        return None
    if crop is not None:
        center = mask_centroid(ed_label, label)
        assert center is not None  # the label is present (checked above)
        size = (int(crop),) * ed_image.ndim
        ed_image, ed_label = crop_or_pad(ed_image, center, size), crop_or_pad(ed_label, center, size)
        es_image, es_label = crop_or_pad(es_image, center, size), crop_or_pad(es_label, center, size)
    return PairSample(
        moving=np.ascontiguousarray(ed_image),
        fixed=np.ascontiguousarray(es_image),
        pair_id=f"{subject}_slice_{k}",
        subject_id=subject,
        moving_mask=np.ascontiguousarray(ed_label),
        fixed_mask=np.ascontiguousarray(es_label),
        spacing_mm=None,
    )
