"""Registration pairs listed in a CSV manifest, in any image format the readers support.

The CSV has a header row naming its columns (any order, case-insensitive)::

    fixed,moving,fixed_mask,moving_mask,id,subject
    es/case01.nii.gz,ed/case01.mha,es/case01_seg.nrrd,ed/case01_seg.nrrd,case01,patient01
    /abs/path/fixed_dicom.zip,/abs/path/moving_dicom_folder,,,case02,

``fixed`` and ``moving`` are required; ``fixed_mask``, ``moving_mask``, ``id`` and ``subject`` are
optional columns and their cells may be empty. Paths are relative to the CSV's folder and name anything
:func:`models.io.readers.read_image` reads: NIfTI, MetaImage
(``.mha``, ``.mhd`` + ``.raw``), NRRD, DICOM (a file, a folder or a zip). Masks are read with
``kind="label"``. Blank lines are skipped; a missing ``id`` becomes ``rowN`` and a missing ``subject``
the pair's id. Rows are numbered as in a spreadsheet: the header is row 1.

Where files may live. Without ``root`` (``adacs train --data manifest:...``, a local user reading their
own disk) absolute paths and ``~`` work too, and ``..`` may climb out of the CSV's folder. With ``root``
(the service: an uploaded dataset, at upload and in the training worker) the manifest is confined to
that folder, because its cells are untrusted text that would otherwise read any file the server can:
the CSV and every file must resolve (symbolic links followed) inside ``root``; absolute paths, ``~`` and
``..`` components are refused outright, a link that leaves ``root`` (a file cell, or a link inside a
folder cell) as well. Such a refusal is a ``ValueError`` naming the CSV, row and column, never the
path the cell holds or where a link points, so nothing of the server's layout comes back.

Each row becomes one :class:`~models.data.pairs.PairSample` on the **fixed image's grid**: the moving
image (linear) and both masks (nearest, dtype kept) are resampled onto it in physical space with
:func:`models.resample.resample_to`, so files with different sizes, spacings, origins or orientations
line up where the anatomy is (outside the moving image: 0). 2D and 3D pairs are both supported (a 3D
pair stays 3D). The reader's rules apply: a 3D file holding a single slice is the 2D image it holds, a
4D file or a folder/zip with several DICOM series is refused, masks must hold whole numbers (float
masks are cast to the smallest integer dtype), and scalar images must be finite and not constant.
Images come out float32; masks keep the integer dtype the reader gives them.
``spacing_mm`` is the fixed image's spacing in array order (ITK spacing reversed).

``crop=N`` cuts every pair to ``N`` voxels per axis (zero-padded where the window leaves the image),
centred on the centroid of the moving mask's foreground (``moving_mask > 0``, on the fixed grid), or on
the image centre when the row has no moving mask or it is empty. ``crop=None`` (default) keeps the
fixed grid.

Errors name the CSV and the row: ``ValueError`` for a missing or unknown column, an empty required
cell, too many cells, a duplicate id or a path that leaves ``root``,
:class:`~models.io.errors.DimensionMismatchError` (a ``ValueError``) for a 2D/3D mismatch within a row;
``FileNotFoundError`` for a missing file (every row's files are checked before any is read); a file
the reader refuses re-raises its :class:`~models.io.errors.ImageError` (a ``ValueError``) of the same
class with the CSV, row, column and file prepended, chained to the original.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.data.crop import crop_or_pad, mask_centroid
from models.data.pairs import PairSample
from models.io.errors import DimensionMismatchError, ImageError
from models.io.image import LABEL, SCALAR, Image
from models.io.readers import read_image
from models.resample import resample_to

__all__ = ["COLUMNS", "REQUIRED_COLUMNS", "load_manifest", "list_manifest"]

#: Every column a manifest may have, and those it must have.
COLUMNS = ("fixed", "moving", "fixed_mask", "moving_mask", "id", "subject")
REQUIRED_COLUMNS = ("fixed", "moving")
_FILE_COLUMNS = (("fixed", SCALAR), ("moving", SCALAR), ("fixed_mask", LABEL), ("moving_mask", LABEL))


@dataclass
class _Row:
    number: int  # spreadsheet row number (header = 1)
    files: dict[str, Path]  # file column -> resolved path (empty cells left out)
    pair_id: str
    subject: str


def load_manifest(path: str | Path, crop: int | None = None, *, root: str | Path | None = None) -> list[PairSample]:
    """The pairs a CSV manifest lists, in file order (see the module docstring).

    ``root`` confines the CSV and every file it names to that folder (the service passes an uploaded
    dataset's folder); ``None`` lets a local user's manifest name any file they can read.
    """
    if crop is not None and (isinstance(crop, bool) or int(crop) != crop or crop <= 0):
        raise ValueError(f"crop must be a positive integer or None, got {crop!r}")
    inside = None if root is None else Path(root).resolve()
    csv_path = Path(path) if inside is not None else Path(path).expanduser()
    if inside is not None and not csv_path.resolve().is_relative_to(inside):
        raise ValueError("the manifest lies outside the dataset's folder")
    rows = _checked_rows(csv_path, inside)
    return [_make_pair(csv_path, row, crop) for row in rows]


def list_manifest(path: str | Path) -> list[tuple[str, dict[str, Path]]]:
    """``(id, {column: file})`` of every row of a local user's manifest, every file checked to exist but
    none read: ``adacs register --pairs`` registers the rows one by one, each refused alone."""
    csv_path = Path(path).expanduser()
    return [(row.pair_id, row.files) for row in _checked_rows(csv_path, None)]


def _checked_rows(csv_path: Path, inside: Path | None) -> list[_Row]:
    if not csv_path.is_file():
        raise FileNotFoundError(f"manifest {csv_path} does not exist" if not csv_path.exists()
                                else f"manifest {csv_path} is not a file")
    rows = _parse(csv_path, inside)
    for row in rows:  # every file checked before any is read
        for column, file_path in row.files.items():
            if not file_path.exists():
                raise FileNotFoundError(f"{csv_path} row {row.number}: {column} file {file_path} does not exist")
            if inside is not None:
                _no_link_out(file_path, inside, f"{csv_path} row {row.number}: {column}")
    return rows


# ---------------------------------------------------------------------------------------------------
# the CSV


def _parse(csv_path: Path, root: Path | None) -> list[_Row]:
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header: list[str] | None = None
        rows: list[_Row] = []
        seen: dict[str, int] = {}
        for cells in reader:
            number = reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            if header is None:
                header = _header(csv_path, cells, number)
                continue
            row = _row(csv_path, header, cells, number, root)
            if row.pair_id in seen:
                raise ValueError(f"{csv_path} row {number}: id {row.pair_id!r} already used in row {seen[row.pair_id]}")
            seen[row.pair_id] = number
            rows.append(row)
    if header is None:
        raise ValueError(f"{csv_path} is empty: expected a header row {','.join(COLUMNS)}")
    if not rows:
        raise ValueError(f"{csv_path} lists no pairs (only a header)")
    return rows


def _header(csv_path: Path, cells: list[str], number: int) -> list[str]:
    names = [cell.strip().lower() for cell in cells]
    unknown = [name for name in names if name not in COLUMNS]
    if unknown:
        raise ValueError(f"{csv_path} row {number}: unknown column(s) {', '.join(map(repr, unknown))}; "
                         f"expected {','.join(COLUMNS)}")
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ValueError(f"{csv_path} row {number}: column(s) {', '.join(duplicated)} given twice")
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        raise ValueError(f"{csv_path} row {number}: missing column(s) {', '.join(missing)} in the header "
                         f"(expected {','.join(COLUMNS)})")
    return names


def _row(csv_path: Path, header: list[str], cells: list[str], number: int, root: Path | None) -> _Row:
    if len(cells) > len(header):
        raise ValueError(f"{csv_path} row {number}: {len(cells)} cells but the header has {len(header)} columns")
    values = {name: "" for name in COLUMNS}
    values.update({name: cell.strip() for name, cell in zip(header, cells, strict=False)})
    for name in REQUIRED_COLUMNS:
        if not values[name]:
            raise ValueError(f"{csv_path} row {number}: empty {name!r} cell (a path is required)")
    files = {}
    for name, _ in _FILE_COLUMNS:
        if values[name]:
            if root is None:
                files[name] = _local_path(csv_path, values[name])
            else:
                files[name] = _confined_path(csv_path, values[name], root, f"{csv_path} row {number}: {name}")
    pair_id = values["id"] or f"row{number}"
    return _Row(number, files, pair_id, values["subject"] or pair_id)


# ---------------------------------------------------------------------------------------------------
# where a cell's file may be

_ESCAPES = re.compile(r"^(~|[/\\]|[A-Za-z]:)|(^|[/\\])\.\.([/\\]|$)|\x00")
"""A cell that starts at home (``~``), at a root (``/``, ``\\``, ``C:``), climbs (``..``) or holds a NUL."""


def _local_path(csv_path: Path, cell: str) -> Path:
    """A local user's cell: ``~`` expanded, absolute kept, relative taken from the CSV's folder."""
    file_path = Path(cell).expanduser()
    return file_path if file_path.is_absolute() else csv_path.parent / file_path


def _confined_path(csv_path: Path, cell: str, root: Path, where: str) -> Path:
    """An uploaded dataset's cell: refused unless it is relative, never climbs, and resolves inside ``root``.

    The text is checked first (what it means cannot depend on the server), then the resolved path (a
    link in the dataset). The message names ``where`` (CSV, row, column) and the rule, not the cell.
    """
    if _ESCAPES.search(cell):
        raise ValueError(f"{where}: the path must be relative to the manifest's folder, without '~' or '..' "
                         "(absolute paths are refused in an uploaded dataset)")
    file_path = csv_path.parent / cell
    if not file_path.resolve().is_relative_to(root):
        raise ValueError(f"{where}: the path leaves the dataset's folder through a symbolic link")
    return file_path


def _no_link_out(file_path: Path, root: Path, where: str) -> None:
    """A folder cell (a DICOM series) read file by file: none of its links may lead out of ``root``."""
    if not file_path.is_dir():
        return
    for inner in file_path.rglob("*"):
        if inner.is_symlink() and not inner.resolve().is_relative_to(root):
            raise ValueError(f"{where}: the folder holds a symbolic link that leaves the dataset's folder")


# ---------------------------------------------------------------------------------------------------
# reading a row


def _read(csv_path: Path, row: _Row, column: str, kind: str) -> Image:
    """Read one cell's file; a refusal is raised again with the CSV, row and column in front.

    A reader's :class:`ImageError` keeps its class, problem, hint and details (so ``code`` and
    ``http_status`` still say what went wrong); another error becomes one of its own class if it can
    be built from a message, else a ``ValueError``. The original is chained (``__cause__``).
    """
    file_path = row.files[column]
    head = f"{csv_path} row {row.number}: {column}"
    try:
        return read_image(file_path, kind=kind)
    except ImageError as error:
        where = error.path or str(file_path)  # archive members are named inside their zip
        raise type(error)(f"{head} {where}: {error.problem}", hint=error.hint or "", **error.details) from error
    except (ValueError, RuntimeError, OSError) as error:
        message = f"{head} {file_path}: {error}"
        try:
            wrapped = type(error)(message)
        except Exception:  # a class whose constructor wants other arguments
            wrapped = ValueError(message)
        raise (wrapped if str(wrapped) == message else ValueError(message)) from error


def _make_pair(csv_path: Path, row: _Row, crop: int | None) -> PairSample:
    images = {column: _read(csv_path, row, column, kind) for column, kind in _FILE_COLUMNS if column in row.files}
    fixed = images["fixed"]
    for column, image in images.items():
        if image.ndim != fixed.ndim:
            raise DimensionMismatchError(f"{csv_path} row {row.number}: {column} {row.files[column]} is "
                                         f"{image.ndim}D but fixed {row.files['fixed']} is {fixed.ndim}D")
    on_fixed = {column: resample_to(image, fixed).array for column, image in images.items()}
    arrays = {column: (a.astype(np.float32, copy=False) if kind == SCALAR else a)
              for (column, kind) in _FILE_COLUMNS if (a := on_fixed.get(column)) is not None}

    if crop is not None:
        moving_mask = arrays.get("moving_mask")
        center = None if moving_mask is None else mask_centroid(moving_mask > 0, 1)
        if center is None:
            center = tuple((n - 1) / 2 for n in fixed.array.shape)
        size = (int(crop),) * fixed.ndim
        arrays = {column: crop_or_pad(a, center, size) for column, a in arrays.items()}

    def get(column: str) -> np.ndarray | None:
        return None if column not in arrays else np.ascontiguousarray(arrays[column])

    return PairSample(
        moving=get("moving"),  # type: ignore[arg-type]
        fixed=get("fixed"),  # type: ignore[arg-type]
        pair_id=row.pair_id,
        subject_id=row.subject,
        moving_mask=get("moving_mask"),
        fixed_mask=get("fixed_mask"),
        spacing_mm=tuple(float(s) for s in reversed(fixed.geometry.spacing)),
    )
