"""A registration's inputs read and checked in one place: the API before a job exists, the worker again.

The API reads every voxel of an upload in the request, so that whatever the files can refuse (a cut
``.nii.gz``, NaN or out-of-range voxels, a constant image, a mask off its image's grid or with fractional
labels) is a 4xx before any job row is written; the worker reads them again with this same function,
as defence in depth, so both refuse with the same :class:`~models.io.errors.ImageError` subclass and
code. Like the rest of :mod:`models.io.readers`, it imports no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from models.io.image import LABEL, SCALAR, Image
from models.io.readers.checks import check_mask, check_pair
from models.io.readers.header import DEFAULT_MAX_VOXELS
from models.io.readers.read import DEFAULT_MAX_FRAMES, read_frames, read_image

__all__ = ["INPUT_ROLES", "MASK_OF", "read_registration_inputs", "read_cine_inputs"]

INPUT_ROLES = ("fixed", "moving", "moving_mask", "fixed_mask")
MASK_OF = {"moving_mask": "moving", "fixed_mask": "fixed"}
FRAME_ROLES = ("fixed", "moving")  # the images a frame of a 4-D series may be chosen for (`moving_frame`)
"""Each mask role and the image role it must lie on."""


def _kind(role: str) -> str:
    """Masks are label images (whole numbers, nearest-neighbour); the others are scalar images."""
    return LABEL if role in MASK_OF else SCALAR


def _check_roles(paths: Mapping[str, Path]) -> None:
    """A programming error, not a user's: the callers build ``paths`` from their own role names."""
    unknown = set(paths) - set(INPUT_ROLES)
    if unknown or not {"fixed", "moving"} <= set(paths):
        raise ValueError(f"inputs need 'fixed' and 'moving' and may add masks {list(MASK_OF)}, got {sorted(paths)}")


def read_registration_inputs(paths: Mapping[str, Path], *, series: Mapping[str, str | None] | None = None,
                             frames: Mapping[str, int | None] | None = None,
                             max_voxels: int = DEFAULT_MAX_VOXELS) -> dict[str, Image | None]:
    """The four images by role (absent masks ``None``), every voxel read and checked, or an ``ImageError``.

    ``paths`` maps ``fixed``, ``moving`` and optionally ``moving_mask``/``fixed_mask`` to files;
    ``series`` and ``frames`` pick a DICOM series and a frame of a 4-D image per role. Images are read
    in role order (fixed first), each refused from its header before its pixels are read; then the pair
    must share dimensionality and each mask must lie on its image's grid.
    """
    _check_roles(paths)
    series, frames = series or {}, frames or {}
    images: dict[str, Image | None] = dict.fromkeys(INPUT_ROLES)
    for role in INPUT_ROLES:
        if role in paths:
            frame_name = f"{role}_frame" if role in FRAME_ROLES else None
            images[role] = read_image(paths[role], kind=_kind(role), series=series.get(role),
                                      frame=frames.get(role), frame_name=frame_name, max_voxels=max_voxels)
    check_pair(images["fixed"], images["moving"])
    for mask, image in MASK_OF.items():
        if images[mask] is not None:
            check_mask(images[mask], images[image])
    return images


def read_cine_inputs(cine: Path, reference_mask: Path, *, series: str | None = None,
                     max_voxels: int = DEFAULT_MAX_VOXELS,
                     max_frames: int = DEFAULT_MAX_FRAMES) -> tuple[list[Image], Image]:
    """A cine's frames and its reference mask, every voxel read and checked (``ImageError`` otherwise).

    That the mask lies on the frames' grid needs the reference frame's index; the caller checks it
    (``models.cine.register_cine``, and the API before a job exists).
    """
    frames = read_frames(cine, series=series, max_voxels=max_voxels, max_frames=max_frames)
    mask = read_image(reference_mask, kind=LABEL, frame_name=None, max_voxels=max_voxels)
    return frames, mask
